// Package sandbox holds one sandbox: the libcontainer container built from the
// task's bundle, its init and its exec processes. The task service translates
// containerd calls into operations on it.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// StateDirName is the directory under the bundle holding libcontainer's
// state. Keeping it in the bundle ties it to one containerd's state dir, so
// two daemons on a host never share it, and Stop can find it from the bundle.
const StateDirName = "libcontainer"

// Config is what Create needs from containerd's CreateTaskRequest.
type Config struct {
	ID     string
	Bundle string
	Rootfs []mount.Mount
	Stdio  process.Stdio
}

// Sandbox is one task.
type Sandbox struct {
	ID     string
	Bundle string

	container *libcontainer.Container
	init      *process.Process
	onExit    func(*Sandbox, *process.Process)

	mu      sync.Mutex
	started bool
	execs   map[string]*process.Process
}

// StateRoot is libcontainer's root for a bundle.
func StateRoot(bundle string) string { return filepath.Join(bundle, StateDirName) }

// ReadSpec reads the bundle's config.json.
func ReadSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read bundle spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse bundle spec %s: %w", filepath.Join(bundle, "config.json"), err)
	}
	return &s, nil
}

// Create mounts the rootfs, builds the container and starts its init, which
// then waits on libcontainer's exec FIFO until Start. onExit is called once
// for every process that exits, init last.
func Create(ctx context.Context, cfg Config, onExit func(*Sandbox, *process.Process)) (_ *Sandbox, retErr error) {
	s, err := ReadSpec(cfg.Bundle)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	rootfs := filepath.Join(cfg.Bundle, "rootfs")
	if len(cfg.Rootfs) > 0 {
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
		}
		if err := mount.All(cfg.Rootfs, rootfs); err != nil {
			return nil, fmt.Errorf("sandbox %s: mount rootfs: %w", cfg.ID, err)
		}
		defer func() {
			if retErr != nil {
				_ = mount.UnmountRecursive(rootfs, 0)
			}
		}()
	}
	lcfg, err := spec.ControlPlane(cfg.ID, cfg.Bundle, s)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w: %w", cfg.ID, errdefs.ErrInvalidArgument, err)
	}
	lp, err := spec.Process(s.Process)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w: %w", cfg.ID, errdefs.ErrInvalidArgument, err)
	}
	lp.Init = true
	root := StateRoot(cfg.Bundle)
	c, err := libcontainer.Create(root, cfg.ID, lcfg)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: create container: %w", cfg.ID, err)
	}
	defer func() {
		if retErr != nil {
			_ = c.Destroy()
			_ = os.RemoveAll(root)
		}
	}()
	sb := &Sandbox{ID: cfg.ID, Bundle: cfg.Bundle, container: c, onExit: onExit, execs: map[string]*process.Process{}}
	p, err := process.New(cfg.ID, lp, cfg.Stdio)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	if err := p.Start(c.Start, sb.initExited); err != nil {
		return nil, fmt.Errorf("sandbox %s: start init %q: %w", cfg.ID, s.Process.Args[0], err)
	}
	sb.init = p
	return sb, nil
}

// initExited waits for the execs' exits to be reported first: containerd
// expects the init's exit last.
func (sb *Sandbox) initExited(p *process.Process) {
	sb.mu.Lock()
	var running []*process.Process
	for _, e := range sb.execs {
		if e.Status() == process.Running {
			running = append(running, e)
		}
	}
	sb.mu.Unlock()
	for _, e := range running {
		<-e.Done()
	}
	if sb.onExit != nil {
		sb.onExit(sb, p)
	}
}

func (sb *Sandbox) execExited(p *process.Process) {
	if sb.onExit != nil {
		sb.onExit(sb, p)
	}
}

// Init is the task's init process.
func (sb *Sandbox) Init() *process.Process { return sb.init }

// Started tells whether Start ran.
func (sb *Sandbox) Started() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.started
}

// Start releases the init from libcontainer's exec FIFO.
func (sb *Sandbox) Start(ctx context.Context) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.started {
		return fmt.Errorf("sandbox %s: %w: already started", sb.ID, errdefs.ErrFailedPrecondition)
	}
	if sb.init.Status() == process.Stopped {
		return fmt.Errorf("sandbox %s: %w: init exited before start", sb.ID, errdefs.ErrFailedPrecondition)
	}
	if err := sb.container.Exec(); err != nil {
		return fmt.Errorf("sandbox %s: start: %w", sb.ID, err)
	}
	sb.started = true
	return nil
}

// Process returns the init ("") or an exec by id.
func (sb *Sandbox) Process(execID string) (*process.Process, error) {
	if execID == "" {
		return sb.init, nil
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	p, ok := sb.execs[execID]
	if !ok {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w", sb.ID, execID, errdefs.ErrNotFound)
	}
	return p, nil
}

// Exec registers an exec process; StartExec runs it.
func (sb *Sandbox) Exec(ctx context.Context, execID string, ps *specs.Process, stdio process.Stdio) (*process.Process, error) {
	lp, err := spec.Process(ps)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w: %w", sb.ID, execID, errdefs.ErrInvalidArgument, err)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if _, ok := sb.execs[execID]; ok {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w", sb.ID, execID, errdefs.ErrAlreadyExists)
	}
	if sb.init.Status() == process.Stopped {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w: task is stopped", sb.ID, execID, errdefs.ErrFailedPrecondition)
	}
	p, err := process.New(execID, lp, stdio)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w", sb.ID, execID, err)
	}
	sb.execs[execID] = p
	return p, nil
}

// StartExec runs a registered exec inside the running container.
func (sb *Sandbox) StartExec(ctx context.Context, execID string) (*process.Process, error) {
	p, err := sb.Process(execID)
	if err != nil {
		return nil, err
	}
	if p.Status() != process.Created {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w: already started", sb.ID, execID, errdefs.ErrFailedPrecondition)
	}
	if err := p.Start(sb.container.Run, sb.execExited); err != nil {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w", sb.ID, execID, err)
	}
	return p, nil
}

// DeleteExec forgets a stopped (or never started) exec.
func (sb *Sandbox) DeleteExec(execID string) (*process.Process, error) {
	p, err := sb.Process(execID)
	if err != nil {
		return nil, err
	}
	if p.Status() == process.Running {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w: still running", sb.ID, execID, errdefs.ErrFailedPrecondition)
	}
	sb.mu.Lock()
	delete(sb.execs, execID)
	sb.mu.Unlock()
	p.Close()
	return p, nil
}

// Kill signals one process, or with all every process of the container.
func (sb *Sandbox) Kill(execID string, sig syscall.Signal, all bool) error {
	if execID != "" {
		p, err := sb.Process(execID)
		if err != nil {
			return err
		}
		return sb.signalErr(execID, p.Signal(sig))
	}
	if all {
		pids, err := sb.container.Processes()
		if err == nil {
			for _, pid := range pids {
				_ = unix.Kill(pid, sig)
			}
		}
	}
	if sb.init.Status() == process.Stopped {
		if all {
			return nil
		}
		return sb.signalErr("", process.ErrFinished)
	}
	if err := sb.container.Signal(sig); err != nil {
		if errors.Is(err, libcontainer.ErrNotRunning) || errors.Is(err, os.ErrProcessDone) {
			if all {
				// The signal to every pid above may have ended the init.
				return nil
			}
			return sb.signalErr("", process.ErrFinished)
		}
		return fmt.Errorf("sandbox %s: kill: %w", sb.ID, err)
	}
	return nil
}

func (sb *Sandbox) signalErr(execID string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, process.ErrFinished):
		return fmt.Errorf("sandbox %s: process %q: %w: %w", sb.ID, execID, errdefs.ErrNotFound, err)
	case errors.Is(err, process.ErrNotStarted):
		return fmt.Errorf("sandbox %s: process %q: %w: %w", sb.ID, execID, errdefs.ErrFailedPrecondition, err)
	}
	return fmt.Errorf("sandbox %s: process %q: %w", sb.ID, execID, err)
}

// Pids lists every process in the container's cgroup.
func (sb *Sandbox) Pids() ([]int, error) {
	pids, err := sb.container.Processes()
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: pids: %w", sb.ID, err)
	}
	return pids, nil
}

// ExecIDs maps live exec pids to their ids.
func (sb *Sandbox) ExecIDs() map[int]string {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	m := map[int]string{}
	for id, p := range sb.execs {
		if pid := p.Pid(); pid != 0 {
			m[pid] = id
		}
	}
	return m
}

// Pause freezes the container.
func (sb *Sandbox) Pause() error {
	if err := sb.container.Pause(); err != nil {
		return fmt.Errorf("sandbox %s: pause: %w", sb.ID, err)
	}
	return nil
}

// Resume thaws it.
func (sb *Sandbox) Resume() error {
	if err := sb.container.Resume(); err != nil {
		return fmt.Errorf("sandbox %s: resume: %w", sb.ID, err)
	}
	return nil
}

// Paused tells whether the container is frozen.
func (sb *Sandbox) Paused() bool {
	st, err := sb.container.Status()
	return err == nil && st == libcontainer.Paused
}

// Update applies new resources to the container's cgroup.
func (sb *Sandbox) Update(r *specs.LinuxResources) error {
	cfg := sb.container.Config()
	if cfg.Cgroups == nil || cfg.Cgroups.Resources == nil {
		return fmt.Errorf("sandbox %s: update: %w: container has no cgroup", sb.ID, errdefs.ErrFailedPrecondition)
	}
	res := *cfg.Cgroups.Resources
	if err := spec.UpdateResources(&res, r); err != nil {
		return fmt.Errorf("sandbox %s: update: %w: %w", sb.ID, errdefs.ErrInvalidArgument, err)
	}
	cg := *cfg.Cgroups
	cg.Resources = &res
	cfg.Cgroups = &cg
	if err := sb.container.Set(cfg); err != nil {
		return fmt.Errorf("sandbox %s: update: %w", sb.ID, err)
	}
	return nil
}

// Cgroup loads the container's cgroup with containerd's cgroups library,
// whose stats types containerd's metrics API carries.
func (sb *Sandbox) Cgroup() (any, error) {
	cfg := sb.container.Config()
	if cfg.Cgroups == nil {
		return nil, fmt.Errorf("sandbox %s: %w: no cgroup", sb.ID, errdefs.ErrNotFound)
	}
	if cgroups.Mode() == cgroups.Unified {
		path := cfg.Cgroups.Path
		if path == "" {
			return nil, fmt.Errorf("sandbox %s: %w: no cgroup path", sb.ID, errdefs.ErrNotFound)
		}
		return cgroupsv2.Load(path)
	}
	return cgroup1.Load(cgroup1.StaticPath(cfg.Cgroups.Path))
}

// Delete destroys the container and unmounts the rootfs. The init must
// have exited, or never been started.
func (sb *Sandbox) Delete(ctx context.Context) error {
	if sb.Started() && sb.init.Status() != process.Stopped {
		return fmt.Errorf("sandbox %s: %w: task is running", sb.ID, errdefs.ErrFailedPrecondition)
	}
	return Cleanup(sb.ID, sb.Bundle, sb.container)
}

// Cleanup removes everything a sandbox left on the host: its containers
// (killing what still runs), cgroups, state and rootfs mount. Used by Delete
// and by the shim's delete action after a crash.
func Cleanup(id, bundle string, c *libcontainer.Container) error {
	var errs []error
	root := StateRoot(bundle)
	if c == nil {
		if lc, err := libcontainer.Load(root, id); err == nil {
			c = lc
		} else if !errors.Is(err, libcontainer.ErrNotExist) {
			errs = append(errs, fmt.Errorf("load container: %w", err))
		}
	}
	if c != nil {
		if err := c.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroy container: %w", err))
		}
	}
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		errs = append(errs, fmt.Errorf("unmount rootfs: %w", err))
	}
	if err := os.RemoveAll(root); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("sandbox %s: cleanup: %w", id, errors.Join(errs...))
	}
	return nil
}
