// Package usercontainer runs one user container: the workspace every
// containerd exec runs in now, one secure exec later. It creates the
// container with libcontainer, runs the reaper as its pid 1, keeps waiters
// (pre-built execs, each in a per-exec cgroup leaf) ready in a pool, and
// kills and destroys it. Everything about the container's shape comes from
// spec; nothing here decides who user code runs as.
package usercontainer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
	// Reaper is its pid 1 (spec.ReaperProcess).
	Reaper *libcontainer.Process
	// Waiter builds the process of one waiter (spec.WaiterProcess); it is
	// called once per waiter, since a libcontainer process runs once.
	Waiter func() (*libcontainer.Process, error)
	// ExecPidsLimit is each exec's share of the container's pids.
	ExecPidsLimit int64
	// PoolSize is how many waiters are kept ready; 0 builds each on demand.
	PoolSize int
}

// Container is one running user container.
type Container struct {
	cfg       Config
	container *libcontainer.Container
	reaper    *process.Process
	cgroups   map[string]string // libcontainer's CgroupPaths
	waiters   *pool.Pool[*waiter]
	execSeq   atomic.Uint64
}

// waiter is one pre-built exec and its cgroup leaf.
type waiter struct {
	process *process.Waiter
	leaf    *cgroup.ExecLeaf
}

// Create builds the container and starts its reaper and its waiter pool.
func Create(ctx context.Context, cfg Config) (_ *Container, retErr error) {
	fail := func(err error) error { return fmt.Errorf("sandbox %s: %s: %w", cfg.SandboxID, cfg.ID, err) }
	c, err := libcontainer.Create(cfg.StateRoot, cfg.ID, cfg.Container)
	if err != nil {
		return nil, fail(fmt.Errorf("create: %w", err))
	}
	defer func() {
		if retErr != nil {
			_ = Destroy(c)
		}
	}()
	reaper := process.New("", process.Stdio{})
	if err := reaper.Start(c.Run, cfg.Reaper, nil); err != nil {
		return nil, fail(fmt.Errorf("start reaper: %w", err))
	}
	if err := cgroup.PlaceReaper(cfg.Container.Cgroups.Path, reaper.Pid()); err != nil {
		return nil, fail(err)
	}
	st, err := c.State()
	if err != nil {
		return nil, fail(fmt.Errorf("state: %w", err))
	}
	uc := &Container{cfg: cfg, container: c, reaper: reaper, cgroups: st.CgroupPaths}
	uc.waiters = pool.New(pool.Config[*waiter]{
		Size:    cfg.PoolSize,
		Build:   func(context.Context) (*waiter, error) { return uc.newWaiter(true) },
		Alive:   func(w *waiter) bool { return w.process.Alive() },
		Discard: func(w *waiter) { w.process.Discard() },
		OnBuildError: func(err error) {
			log.G(ctx).WithError(err).WithField("id", cfg.SandboxID).Debug("build pooled exec")
		},
	})
	if cfg.PoolSize > 0 {
		go uc.waiters.Run(context.WithoutCancel(ctx))
	}
	return uc, nil
}

// newWaiter builds one waiter in a cgroup leaf of its own. A pooled one
// that dies unused (user code may kill it) leaves the pool, and another is
// built.
func (c *Container) newWaiter(pooled bool) (*waiter, error) {
	name := "exec-" + strconv.FormatUint(c.execSeq.Add(1), 10)
	leaf, err := cgroup.NewExecLeaf(c.cgroups, name, c.cfg.ExecPidsLimit)
	if err != nil {
		return nil, err
	}
	lp, err := c.cfg.Waiter()
	if err != nil {
		leaf.Remove()
		return nil, err
	}
	lp.SubCgroupPaths = leaf.SubCgroupPaths
	w := &waiter{leaf: leaf}
	pw, err := process.StartWaiter(process.WaiterStart{
		Process: lp,
		Run:     c.container.Run,
		Hello:   waiterHello,
		OnGone: func() {
			leaf.Remove()
			if pooled {
				c.waiters.Remove(w)
			}
		},
	})
	if err != nil {
		leaf.Remove()
		return nil, err
	}
	w.process = pw
	return w, nil
}

// waiterHello is what a waiter speaking spec.ExecRequest's layout sends
// first (see libexec/reaper).
var waiterHello = "R" + strconv.Itoa(spec.ExecRequestVersion)

// Exec is one exec running in the container.
type Exec struct {
	leaf *cgroup.ExecLeaf
}

// Release removes the exec's cgroup leaf; call it once the exec exited.
func (e *Exec) Release() { e.leaf.Remove() }

// waiterAttempts bounds the retries when the waiter taken is found dead.
const waiterAttempts = 4

// Exec runs req as p in a pooled waiter, or in one built for it when the
// pool is empty (the slow path: a cgroup migration per hierarchy). Either
// way an exec runs through the same waiter code, with the same checks; a
// request no waiter could run is refused before one is taken.
func (c *Container) Exec(p *process.Process, req spec.ExecRequest, onExit func(*process.Process)) (*Exec, error) {
	encoded, err := req.Encode()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	if err := p.OpenStdio(); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		w, ok := c.waiters.Take()
		if !ok {
			if w, err = c.newWaiter(false); err != nil {
				return nil, fmt.Errorf("build exec: %w", err)
			}
		}
		err := p.StartIn(w.process, encoded, onExit)
		if errors.Is(err, process.ErrWaiterGone) {
			// It died unused: its OnGone removes its leaf.
			if attempt < waiterAttempts {
				continue
			}
			return nil, err
		}
		if err != nil {
			// Its leaf goes once the killed waiter is reaped.
			go func() { <-w.process.Done(); w.leaf.Remove() }()
			return nil, err
		}
		return &Exec{leaf: w.leaf}, nil
	}
}

// Running tells whether the reaper, and so the container, still runs.
func (c *Container) Running() bool { return c.reaper.Status() == process.Running }

// Kill ends the container: SIGKILL to the reaper ends its whole PID
// namespace. Waiters stop being built.
func (c *Container) Kill() {
	c.waiters.Close()
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
