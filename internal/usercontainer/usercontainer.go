// Package usercontainer runs one user container: the workspace every
// containerd exec runs in now, one secure exec later. It creates the
// container with libcontainer, runs the reaper as its pid 1, keeps waiters
// (pre-built execs the reaper forks, each in a per-exec cgroup leaf) ready
// in a pool, and kills and destroys it. Everything about the container's
// shape comes from spec; nothing here decides who user code runs as.
package usercontainer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/internal/cgroup"
	"github.com/sandbox-shim/sandbox-shim/internal/pool"
	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// Config is one user container to build.
type Config struct {
	// SandboxID names the sandbox in errors and logs.
	SandboxID string
	// ID is the container's libcontainer id, StateRoot libcontainer's root.
	ID, StateRoot string
	// Container is the container's libcontainer config (spec.Workspace).
	Container *configs.Config
	// Reaper is its pid 1 (spec.ReaperProcess); its control socket is
	// appended to ExtraFiles (fd 3).
	Reaper *libcontainer.Process
	// Waiter builds the process of one waiter started by libcontainer
	// (spec.WaiterProcess), the slow path taken when the reaper cannot
	// fork; it is called once per such waiter, since a libcontainer
	// process runs once.
	Waiter func() (*libcontainer.Process, error)
	// WaiterStdin, when set, gives what every waiter has as fd 0 (the
	// workspace's platform ptmx, which a terminal exec reopens for its pty);
	// it is called once the container runs, and may return nil (/dev/null).
	WaiterStdin func() *os.File
	// ExecPidsLimit is each exec's share of the container's pids.
	ExecPidsLimit int64
	// PoolSize is how many waiters are kept ready; 0 builds each on demand.
	PoolSize int
	// SeccompProgram, when set, is the container's seccomp profile compiled
	// ahead (internal/seccompprogram), which Container must then not carry:
	// the reaper installs it before anything else (spec.ReaperSeccompArg,
	// fd 4) and every process of the container inherits it, without
	// libseccomp running in the container's init.
	SeccompProgram []byte
	// OneExec makes a container for a single exec (a secure exec): its one
	// waiter is forked by Create, stays in the container's own cgroup (no
	// per-exec leaf: the container is the exec's), and no other is built;
	// a second Exec is refused. PoolSize and ExecPidsLimit are unused.
	OneExec bool
}

// Container is one running user container.
type Container struct {
	cfg       Config
	container *libcontainer.Container
	reaper    *process.Process
	forker    *process.Forker
	cgroups   map[string]string // libcontainer's CgroupPaths
	waiters   *pool.Pool[*waiter]
	execSeq   atomic.Uint64
	forks     atomic.Uint64 // waiters the reaper forked
	leaves    leaves
	activity  activity
	// single is a OneExec container's waiter until its exec takes it.
	single atomic.Pointer[waiter]
}

// waiter is one pre-built exec and its cgroup leaf.
type waiter struct {
	process *process.Waiter
	leaf    *cgroup.ExecLeaf
	// release gives the leaf back, once, whichever path ends the waiter's
	// use of it.
	release func()
}

// Create builds the container and starts its reaper and its waiter pool.
func Create(ctx context.Context, cfg Config) (_ *Container, retErr error) {
	fail := func(err error) error { return fmt.Errorf("sandbox %s: %s: %w", cfg.SandboxID, cfg.ID, err) }
	if len(cfg.SeccompProgram) > 0 && cfg.Container.Seccomp != nil {
		return nil, fail(errors.New("a seccomp program and a seccomp profile: one filter only"))
	}
	c, err := libcontainer.Create(cfg.StateRoot, cfg.ID, cfg.Container)
	if err != nil {
		return nil, fail(fmt.Errorf("create: %w", err))
	}
	defer func() {
		if retErr != nil {
			_ = Destroy(c)
		}
	}()
	control, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fail(fmt.Errorf("reaper control socket: %w", err))
	}
	shimEnd, reaperEnd := os.NewFile(uintptr(control[0]), "reaper-control"), os.NewFile(uintptr(control[1]), "reaper-control")
	cfg.Reaper.ExtraFiles = append(cfg.Reaper.ExtraFiles, reaperEnd)
	if len(cfg.SeccompProgram) > 0 {
		program, err := seccompPipe(cfg.SeccompProgram)
		if err != nil {
			reaperEnd.Close()
			shimEnd.Close()
			return nil, fail(err)
		}
		defer program.Close()
		cfg.Reaper.ExtraFiles = append(cfg.Reaper.ExtraFiles, program)
		cfg.Reaper.Args = append(slices.Clip(cfg.Reaper.Args), spec.ReaperSeccompArg)
	}
	reaper := process.New("", process.Stdio{})
	err = reaper.Start(c.Run, cfg.Reaper, nil)
	reaperEnd.Close()
	if err != nil {
		shimEnd.Close()
		return nil, fail(fmt.Errorf("start reaper: %w", err))
	}
	forker, err := process.NewForker(shimEnd, helloTimeout)
	if err != nil {
		return nil, fail(err)
	}
	defer func() {
		if retErr != nil {
			forker.Close()
		}
	}()
	// A OneExec container has no leaves below it: its cgroup holds the
	// reaper and the exec, as a leaf may on cgroup v2 too.
	if !cfg.OneExec {
		if err := cgroup.PlaceReaper(cfg.Container.Cgroups.Path, reaper.Pid()); err != nil {
			return nil, fail(err)
		}
	}
	st, err := c.State()
	if err != nil {
		return nil, fail(fmt.Errorf("state: %w", err))
	}
	uc := &Container{cfg: cfg, container: c, reaper: reaper, forker: forker, cgroups: st.CgroupPaths}
	uc.waiters = pool.New(pool.Config[*waiter]{
		Size: cfg.PoolSize,
		Build: func(ctx context.Context) (*waiter, error) {
			uc.activity.waitQuiet(ctx)
			return uc.newWaiter(true)
		},
		Alive:   func(w *waiter) bool { return w.process.Alive() },
		Discard: func(w *waiter) { w.process.Discard() },
		OnBuildError: func(err error) {
			log.G(ctx).WithError(err).WithField("id", cfg.SandboxID).Debug("build pooled exec")
		},
		MaxFailures: maxPoolFailures(cfg.PoolSize),
		OnDegraded: func(err error) {
			log.G(ctx).WithError(err).WithField("id", cfg.SandboxID).Warnf(
				"sandbox degraded: pre-built execs of %s keep failing or dying before use (out of memory?); "+
					"no more are built ahead, execs are built on demand until its limits change or one succeeds", cfg.ID)
		},
	})
	if cfg.OneExec {
		w, err := uc.newWaiter(false)
		if err != nil {
			return nil, fail(fmt.Errorf("build exec: %w", err))
		}
		uc.single.Store(w)
		return uc, nil
	}
	if cfg.PoolSize > 0 {
		go uc.waiters.Run(context.WithoutCancel(ctx))
	}
	return uc, nil
}

// seccompPipe returns the read end of a pipe holding program, whole: at
// most the kernel's 4096 instructions (32 KiB), within a pipe's buffer.
func seccompPipe(program []byte) (*os.File, error) {
	if len(program) > 32<<10 {
		return nil, fmt.Errorf("seccomp program of %d bytes: over 4096 instructions", len(program))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("seccomp program pipe: %w", err)
	}
	defer w.Close()
	if _, err := w.Write(program); err != nil {
		r.Close()
		return nil, fmt.Errorf("seccomp program pipe: %w", err)
	}
	return r, nil
}

// newWaiter builds one waiter in a cgroup leaf of its own: forked by the
// reaper and moved into the leaf, or, when the reaper cannot fork (its
// pids limit), started by libcontainer as before. A pooled one that dies
// unused leaves the pool, and another is built.
func (c *Container) newWaiter(pooled bool) (*waiter, error) {
	w := &waiter{release: func() {}}
	if !c.cfg.OneExec {
		leaf, err := c.leaves.take(c)
		if err != nil {
			return nil, err
		}
		w = &waiter{leaf: leaf, release: sync.OnceFunc(func() { c.leaves.release(leaf) })}
	}
	onGone := func() {
		w.release()
		if pooled {
			c.waiters.Remove(w)
		}
	}
	pw, err := c.forker.Fork(process.ForkStart{Hello: waiterHello, Timeout: handshakeTimeout, OnGone: onGone, Stdin: c.waiterStdin()})
	if errors.Is(err, process.ErrForkRefused) {
		log.L.WithError(err).WithField("id", c.cfg.SandboxID).Debug("exec built by libcontainer")
		return c.startWaiter(w, onGone)
	}
	if err != nil {
		w.release()
		return nil, err
	}
	c.forks.Add(1)
	if w.leaf == nil {
		w.process = pw
		return w, nil
	}
	if err := w.leaf.Add(pw.Pid()); err != nil {
		// Its OnGone releases the leaf once it exited.
		pw.Discard()
		pw.Kill()
		return nil, err
	}
	w.process = pw
	return w, nil
}

func (c *Container) waiterStdin() *os.File {
	if c.cfg.WaiterStdin == nil {
		return nil
	}
	return c.cfg.WaiterStdin()
}

// startWaiter is the slow path: libcontainer joins the container's
// namespaces and the leaf's cgroups.
func (c *Container) startWaiter(w *waiter, onGone func()) (*waiter, error) {
	lp, err := c.cfg.Waiter()
	if err != nil {
		w.release()
		return nil, err
	}
	if w.leaf != nil {
		lp.SubCgroupPaths = w.leaf.SubCgroupPaths
	}
	if stdin := c.waiterStdin(); stdin != nil {
		lp.Stdin = stdin
	}
	pw, err := process.StartWaiter(process.WaiterStart{
		Process: lp,
		Run:     c.container.Run,
		Hello:   waiterHello,
		OnGone:  onGone,
	})
	if err != nil {
		w.release()
		return nil, err
	}
	w.process = pw
	return w, nil
}

// helloTimeout bounds the wait for the reaper's hello; handshakeTimeout
// the wait for a fork and a waiter's hello.
const (
	helloTimeout     = 10 * time.Second
	handshakeTimeout = 10 * time.Second
)

// maxPoolFailures is how many waiters may fail or die unused in a row
// before the pool stops building them ahead: two pools' worth (at least 4).
// User code cannot kill a waiter (another uid), so a row of dead ones means
// the kernel keeps killing them (the workspace's memory is full); after two
// generations, with the backoff between them (10 ms doubling, about 1.3 s
// for 8), rebuilding again only feeds the OOM killer.
func maxPoolFailures(size int) int { return max(4, 2*size) }

// waiterHello is what a waiter speaking spec.ExecRequest's layout sends
// first (see libexec/reaper).
var waiterHello = "R" + strconv.Itoa(spec.ExecRequestVersion)

// Exec is one exec running in the container.
type Exec struct {
	release func()
	exited  <-chan struct{}
	// leaf is its cgroup leaf (none in a OneExec container, whose whole
	// container is the exec's).
	leaf *cgroup.ExecLeaf
}

// KillAll kills the exec and every process it started (its leaf's): the
// sandbox API's timeout and cancel.
func (e *Exec) KillAll() error {
	if e.leaf == nil {
		return errors.New("the exec has no cgroup leaf of its own: kill its container")
	}
	return e.leaf.KillAll()
}

// Exited is closed once the exec's process exited, before its output has
// drained (a daemon it left may still hold its stdout).
func (e *Exec) Exited() <-chan struct{} { return e.exited }

// Release gives the exec's cgroup leaf back once the exec exited: it
// serves a later waiter if no orphan of the exec is left in it. Nothing
// is removed here (a cgroup rmdir can wait for an RCU grace period while
// another move is in flight); the leaves go with the container's cgroup.
func (e *Exec) Release() { e.release() }

// waiterAttempts bounds the retries when the waiter taken is found dead.
const waiterAttempts = 4

// Exec runs req as p in a pooled waiter, or in one built for it when the
// pool is empty (the slow path: a fork and a cgroup move per hierarchy).
// Either way an exec runs through the same waiter code, with the same
// checks; a request no waiter could run is refused before one is taken.
func (c *Container) Exec(p *process.Process, req spec.ExecRequest, onExit func(*process.Process)) (*Exec, error) {
	encoded, err := req.Encode()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	// The request may carry a secure exec's secrets: once sent (or not),
	// this copy goes.
	defer clear(encoded)
	if err := p.OpenStdio(); err != nil {
		return nil, err
	}
	// Refills wait while this exec starts, and exits if it is short.
	c.activity.begin(p)
	exited := func(p *process.Process) {
		c.activity.end(p)
		if onExit != nil {
			onExit(p)
		}
	}
	for attempt := 1; ; attempt++ {
		if c.cfg.OneExec {
			return c.execOnce(p, encoded, exited)
		}
		w, pooled := c.waiters.Take()
		if !pooled {
			if w, err = c.newWaiter(false); err != nil {
				c.activity.end(p)
				return nil, fmt.Errorf("build exec: %w", err)
			}
		}
		err := p.StartIn(w.process, encoded, exited)
		if errors.Is(err, process.ErrWaiterGone) {
			// It died unused: its OnGone releases its leaf.
			if attempt < waiterAttempts {
				continue
			}
			c.activity.end(p)
			return nil, err
		}
		if err != nil {
			c.activity.end(p)
			// Its leaf is released once the killed waiter is reaped.
			go func() { <-w.process.Done(); w.release() }()
			return nil, err
		}
		if pooled {
			c.waiters.Used()
		} else {
			// A waiter built on demand worked: building ahead may work again.
			c.waiters.Resume()
		}
		return &Exec{release: w.release, exited: w.process.Done(), leaf: w.leaf}, nil
	}
}

// ErrUsed refuses a second exec in a OneExec container.
var ErrUsed = errors.New("container already ran its exec")

// execOnce runs the exec of a OneExec container in its one waiter.
func (c *Container) execOnce(p *process.Process, encoded []byte, exited func(*process.Process)) (*Exec, error) {
	w := c.single.Swap(nil)
	if w == nil {
		c.activity.end(p)
		return nil, ErrUsed
	}
	if err := p.StartIn(w.process, encoded, exited); err != nil {
		c.activity.end(p)
		return nil, err
	}
	return &Exec{release: w.release, exited: w.process.Done(), leaf: w.leaf}, nil
}

// Ready tells whether a OneExec container can still run its exec: its
// reaper runs and its waiter waits.
func (c *Container) Ready() bool {
	w := c.single.Load()
	return w != nil && w.process.Alive() && c.Running()
}

// Running tells whether the reaper, and so the container, still runs.
func (c *Container) Running() bool { return c.reaper.Status() == process.Running }

// Kill ends the container: SIGKILL to the reaper ends its whole PID
// namespace. Waiters stop being built.
func (c *Container) Kill() {
	c.waiters.Close()
	if w := c.single.Swap(nil); w != nil {
		w.process.Discard()
	}
	if err := c.container.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		log.L.WithError(err).WithField("id", c.cfg.SandboxID).Warnf("kill %s", c.cfg.ID)
	}
}

// WaitStopped waits up to timeout for the reaper, and so the container's
// PID namespace, to be gone after Kill.
func (c *Container) WaitStopped(timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.reaper.Done():
	case <-t.C:
		log.L.WithField("id", c.cfg.SandboxID).Warnf("%s still running %v after kill", c.cfg.ID, timeout)
	}
}

// Destroy kills what still runs and removes the container and its cgroup.
func (c *Container) Destroy() error {
	c.waiters.Close()
	defer c.forker.Close()
	if err := Destroy(c.container); err != nil {
		return fmt.Errorf("sandbox %s: destroy %s: %w", c.cfg.SandboxID, c.cfg.ID, err)
	}
	return nil
}

// Resources are the container's cgroup limits as last set.
func (c *Container) Resources() cgroups.Resources {
	return *c.container.Config().Cgroups.Resources
}

// SetResources applies new cgroup limits to the container.
func (c *Container) SetResources(res cgroups.Resources) error {
	cfg := c.container.Config()
	cg := *cfg.Cgroups
	cg.Resources = &res
	cfg.Cgroups = &cg
	if err := c.container.Set(cfg); err != nil {
		return fmt.Errorf("sandbox %s: set limits of %s: %w", c.cfg.SandboxID, c.cfg.ID, err)
	}
	// New limits may keep waiters alive where the old ones did not.
	c.waiters.Resume()
	return nil
}

// destroyTimeout bounds the wait for a killed container's init to go.
const destroyTimeout = 5 * time.Second

// Destroy kills what still runs in c (its whole PID namespace, through its
// init) and removes it: libcontainer refuses to destroy a running
// container. The sandbox uses it for the control plane too.
func Destroy(c *libcontainer.Container) error {
	if st, err := c.Status(); err == nil && st != libcontainer.Stopped {
		_ = c.Signal(syscall.SIGKILL)
		for deadline := time.Now().Add(destroyTimeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if st, err := c.Status(); err != nil || st == libcontainer.Stopped {
				break
			}
		}
	}
	return c.Destroy()
}

// Config is the container's libcontainer config, as the sandbox reports
// its protections from it.
func (c *Container) Config() configs.Config { return c.container.Config() }
