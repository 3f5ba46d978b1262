// Package sandbox holds one sandbox: the control plane (the task's init,
// built from the bundle), the workspace every exec runs in, and the cgroup
// holding both. The task service translates containerd calls into
// operations on it.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ccgroups "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/cgroups"
	cgmanager "github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// StateDirName is the directory under the bundle holding libcontainer's
// state. Keeping it in the bundle ties it to one containerd's state dir, so
// two daemons on a host never share it, and the delete action can find it.
const StateDirName = "libcontainer"

// workspaceSuffix names the workspace container next to the control plane.
const workspaceSuffix = ".workspace"

// workspaceBuildDelay is how long after Start the workspace is built when
// no exec asks for it earlier.
const workspaceBuildDelay = 50 * time.Millisecond

// ReaperName is the workspace reaper's binary, installed next to the shim.
const ReaperName = "sandbox-reaper"

// Config is what Create needs from containerd's CreateTaskRequest.
type Config struct {
	ID        string
	Namespace string
	Bundle    string
	Rootfs    []mount.Mount
	Stdio     process.Stdio
}

// Sandbox is one task.
type Sandbox struct {
	ID     string
	Bundle string

	settings spec.Settings
	spec     *specs.Spec
	paths    spec.CgroupPaths
	cgroup   cgroups.Manager
	res      *cgroups.Resources // the sandbox cgroup's, as last set
	reaper   string

	cp     *libcontainer.Container
	init   *process.Process
	onExit func(*Sandbox, *process.Process)

	// The workspace is built at Start; execs wait for wsReady.
	wsReady chan struct{}
	ws      *libcontainer.Container
	wsInit  *process.Process
	wsErr   error

	// buildNow starts the workspace build without its delay.
	buildNow  chan struct{}
	buildOnce sync.Once

	// Pre-built execs (see pool.go), refilled until stopping is closed.
	pool     []*pooled
	poolWake chan struct{}
	stopping chan struct{}
	stopOnce sync.Once

	execSeq atomic.Uint64
	// execCleanup removes an exec's sub-cgroups once it is deleted.
	execCleanup map[string]func()

	mu      sync.Mutex
	started bool
	paused  bool
	execs   map[string]*process.Process
}

// StateRoot is libcontainer's root for a bundle.
func StateRoot(bundle string) string { return filepath.Join(bundle, StateDirName) }

// ReadSpec reads the bundle's config.json.
func ReadSpec(bundle string) (*specs.Spec, error) {
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read bundle spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse bundle spec %s: %w", p, err)
	}
	return &s, nil
}

// reaperPath finds the reaper next to the running shim binary.
func reaperPath() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(self), ReaperName)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("workspace reaper %s not found (install it next to the shim): %w", p, err)
	}
	return p, nil
}

// Create validates the bundle, places the sandbox cgroup, mounts the rootfs
// and starts the control plane's init, which then waits on libcontainer's
// exec FIFO until Start. onExit is called once for every process that exits,
// the init last.
func Create(ctx context.Context, cfg Config, onExit func(*Sandbox, *process.Process)) (_ *Sandbox, retErr error) {
	fail := func(kind error, err error) error {
		if kind != nil {
			return fmt.Errorf("sandbox %s: %w: %w", cfg.ID, kind, err)
		}
		return fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	s, err := ReadSpec(cfg.Bundle)
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	paths, err := spec.Cgroups(s, cfg.Namespace, cfg.ID)
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	limits, err := hostLimits(paths.Sandbox)
	if err != nil {
		return nil, fail(nil, err)
	}
	settings, err := spec.ParseSettings(s, limits)
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	// Convert everything before touching the host: a bad bundle leaves nothing.
	full, err := spec.ControlPlane(cfg.ID, cfg.Bundle, s)
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	cps, err := spec.ControlPlaneSpec(s, paths.Control)
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	cpCfg, err := spec.ControlPlane(cfg.ID, cfg.Bundle, cps)
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	lp, err := spec.Process(s.Process)
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	lp.Init = true
	reaper, err := reaperPath()
	if err != nil {
		return nil, fail(errdefs.ErrFailedPrecondition, err)
	}
	if s.Process.User.UID == settings.UID {
		log.G(ctx).WithField("id", cfg.ID).Warnf("workspace user %d is the control plane's user: same-uid protections (signals, ptrace, /proc, RLIMIT_NPROC) are weaker; set %s", settings.UID, spec.AnnotationUser)
	}

	// The sandbox cgroup carries the bundle's limits; the leaves sit under it.
	res := full.Cgroups.Resources
	cg, err := cgmanager.New(&cgroups.Cgroup{Path: paths.Sandbox, Resources: res})
	if err != nil {
		return nil, fail(nil, fmt.Errorf("sandbox cgroup: %w", err))
	}
	if err := cg.Apply(-1); err != nil {
		return nil, fail(nil, fmt.Errorf("create sandbox cgroup %s: %w", paths.Sandbox, err))
	}
	defer func() {
		if retErr != nil {
			_ = cg.Destroy()
		}
	}()
	if err := cg.Set(res); err != nil {
		return nil, fail(nil, fmt.Errorf("set sandbox cgroup %s: %w", paths.Sandbox, err))
	}

	rootfs := filepath.Join(cfg.Bundle, "rootfs")
	if len(cfg.Rootfs) > 0 {
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, fail(nil, err)
		}
		if err := mount.All(cfg.Rootfs, rootfs); err != nil {
			return nil, fail(nil, fmt.Errorf("mount rootfs: %w", err))
		}
		defer func() {
			if retErr != nil {
				_ = mount.UnmountRecursive(rootfs, 0)
			}
		}()
	}
	root := StateRoot(cfg.Bundle)
	c, err := libcontainer.Create(root, cfg.ID, cpCfg)
	if err != nil {
		return nil, fail(nil, fmt.Errorf("create control plane: %w", err))
	}
	defer func() {
		if retErr != nil {
			_ = c.Destroy()
			_ = os.RemoveAll(root)
		}
	}()
	sb := &Sandbox{
		ID: cfg.ID, Bundle: cfg.Bundle,
		settings: settings, spec: s, paths: paths, cgroup: cg, res: res, reaper: reaper,
		cp: c, onExit: onExit,
		wsReady:     make(chan struct{}),
		poolWake:    make(chan struct{}, 1),
		buildNow:    make(chan struct{}),
		stopping:    make(chan struct{}),
		execs:       map[string]*process.Process{},
		execCleanup: map[string]func(){},
	}
	p, err := process.New(cfg.ID, lp, cfg.Stdio)
	if err != nil {
		return nil, fail(nil, err)
	}
	if err := p.Start(c.Start, sb.initExited); err != nil {
		return nil, fail(nil, fmt.Errorf("start init %q: %w", s.Process.Args[0], err))
	}
	sb.init = p
	sb.recordInitPid() // for the delete action after a shim crash (exitstatus.go)
	return sb, nil
}

// initExited runs when the control plane's init exits: the sandbox lives
// as long as its control plane, so the workspace goes with it, and its
// execs' exits are reported before the init's, as containerd expects.
func (sb *Sandbox) initExited(p *process.Process) {
	sb.recordInitExit(p) // final now, even if this shim dies before it reports it (exitstatus.go)
	sb.mu.Lock()
	started := sb.started
	sb.mu.Unlock()
	sb.stop()
	if started {
		<-sb.wsReady
		sb.killWorkspace()
	}
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

func (sb *Sandbox) killWorkspace() {
	if sb.ws == nil {
		return
	}
	// SIGKILL to the reaper ends its whole PID namespace.
	if err := sb.ws.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		log.L.WithError(err).WithField("id", sb.ID).Warn("kill workspace")
	}
}

func (sb *Sandbox) execExited(p *process.Process) {
	if sb.onExit != nil {
		sb.onExit(sb, p)
	}
}

// Init is the control plane's init process.
func (sb *Sandbox) Init() *process.Process { return sb.init }

// Started tells whether Start ran.
func (sb *Sandbox) Started() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.started
}

// Start builds the workspace (joining the control plane's network and UTS
// namespaces, pinned by open descriptors so a fast-exiting init cannot race
// it) and releases the control plane from libcontainer's exec FIFO.
func (sb *Sandbox) Start(ctx context.Context) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.started {
		return fmt.Errorf("sandbox %s: %w: already started", sb.ID, errdefs.ErrFailedPrecondition)
	}
	if sb.init.Status() == process.Stopped {
		return fmt.Errorf("sandbox %s: %w: init exited before start", sb.ID, errdefs.ErrFailedPrecondition)
	}
	pid := sb.init.Pid()
	net, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return fmt.Errorf("sandbox %s: control plane network namespace: %w", sb.ID, err)
	}
	uts, err := os.Open(fmt.Sprintf("/proc/%d/ns/uts", pid))
	if err != nil {
		net.Close()
		return fmt.Errorf("sandbox %s: control plane UTS namespace: %w", sb.ID, err)
	}
	if err := sb.cp.Exec(); err != nil {
		net.Close()
		uts.Close()
		return fmt.Errorf("sandbox %s: start: %w", sb.ID, err)
	}
	sb.started = true
	// The workspace builds while the control plane boots, so Start's
	// latency stays the control plane's and the first exec waits for it. It
	// starts a moment later (or at once for an exec): a one-shot task that
	// is already gone by then needs none, and building one only to tear it
	// down would slow every short-lived task.
	go func() {
		select {
		case <-time.After(workspaceBuildDelay):
		case <-sb.buildNow:
		case <-sb.stopping:
		}
		sb.buildWorkspace(net, uts)
	}()
	return nil
}

func (sb *Sandbox) buildWorkspace(net, uts *os.File) {
	defer close(sb.wsReady)
	defer net.Close()
	defer uts.Close()
	self := os.Getpid()
	cfg, err := spec.Workspace(sb.ID+workspaceSuffix, sb.Bundle, sb.spec, spec.WorkspaceOptions{
		Settings:   sb.settings,
		NetNS:      fmt.Sprintf("/proc/%d/fd/%d", self, net.Fd()),
		UTSNS:      fmt.Sprintf("/proc/%d/fd/%d", self, uts.Fd()),
		CgroupPath: sb.paths.User,
		Reaper:     sb.reaper,
	})
	if err != nil {
		sb.wsErr = fmt.Errorf("workspace config: %w", err)
		return
	}
	// A control plane that already exited (a one-shot task) needs no
	// workspace: skip building one only to tear it down.
	if sb.stopped() {
		sb.wsErr = errors.New("the control plane has exited")
		return
	}
	ws, err := libcontainer.Create(StateRoot(sb.Bundle), sb.ID+workspaceSuffix, cfg)
	if err != nil {
		sb.wsErr = fmt.Errorf("create workspace: %w", err)
		return
	}
	// The reaper runs under its own uid, so user code cannot signal,
	// renice or prlimit it either.
	ruid := spec.ReaperUID(sb.settings)
	lp, err := spec.Process(&specs.Process{
		Args: []string{spec.ReaperPath}, Cwd: "/",
		User: specs.User{UID: ruid, GID: ruid},
	})
	if err != nil {
		_ = ws.Destroy()
		sb.wsErr = err
		return
	}
	lp.Init = true
	p, err := process.New("", lp, process.Stdio{})
	if err == nil {
		err = p.Start(ws.Run, nil)
	}
	if err != nil {
		_ = ws.Destroy()
		sb.wsErr = fmt.Errorf("start workspace: %w", err)
		log.L.WithError(err).WithField("id", sb.ID).Error("workspace unavailable: execs will fail")
		return
	}
	sb.ws, sb.wsInit = ws, p
	go sb.fillPool(ws)
	sb.wakePool()
}

// stop ends the pool's refilling: the sandbox is going away.
func (sb *Sandbox) stop() { sb.stopOnce.Do(func() { close(sb.stopping) }) }

func (sb *Sandbox) stopped() bool {
	select {
	case <-sb.stopping:
		return true
	default:
		return sb.init.Status() == process.Stopped
	}
}

// workspace waits until the workspace is built, or ctx ends.
func (sb *Sandbox) workspace(ctx context.Context) (*libcontainer.Container, error) {
	select {
	case <-sb.wsReady:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if sb.wsErr != nil {
		return nil, fmt.Errorf("%w: workspace unavailable: %w", errdefs.ErrFailedPrecondition, sb.wsErr)
	}
	if sb.wsInit.Status() == process.Stopped {
		return nil, fmt.Errorf("%w: workspace has exited", errdefs.ErrFailedPrecondition)
	}
	return sb.ws, nil
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

// Exec registers an exec; it will run in the workspace as the workspace
// user whatever user, capabilities or privileges its spec asks for.
func (sb *Sandbox) Exec(ctx context.Context, execID string, ps *specs.Process, stdio process.Stdio) (*process.Process, error) {
	lp, err := spec.WorkspaceProcess(ps, sb.spec.Process, sb.settings)
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

// StartExec runs a registered exec in the workspace.
func (sb *Sandbox) StartExec(ctx context.Context, execID string) (*process.Process, error) {
	fail := func(kind, err error) (*process.Process, error) {
		if kind != nil {
			return nil, fmt.Errorf("sandbox %s: exec %q: %w: %w", sb.ID, execID, kind, err)
		}
		return nil, fmt.Errorf("sandbox %s: exec %q: %w", sb.ID, execID, err)
	}
	p, err := sb.Process(execID)
	if err != nil {
		return nil, err
	}
	switch {
	case !sb.Started():
		return fail(errdefs.ErrFailedPrecondition, errors.New("task not started"))
	case sb.init.Status() == process.Stopped:
		return fail(errdefs.ErrFailedPrecondition, errors.New("task is stopped"))
	case sb.Paused():
		return fail(errdefs.ErrFailedPrecondition, errors.New("sandbox is paused"))
	}
	if err := p.Claim(); err != nil {
		return fail(errdefs.ErrFailedPrecondition, err)
	}
	sb.buildOnce.Do(func() { close(sb.buildNow) })
	ws, err := sb.workspace(ctx)
	if err != nil {
		p.Abandon()
		return fail(nil, err)
	}
	if err := sb.startInWaiter(ws, execID, p); err != nil {
		p.Abandon()
		if errors.Is(err, process.ErrBadRequest) {
			return fail(errdefs.ErrInvalidArgument, err)
		}
		return fail(nil, err)
	}
	return p, nil
}

// DeleteExec forgets a stopped (or never started) exec.
func (sb *Sandbox) DeleteExec(execID string) (*process.Process, error) {
	p, err := sb.Process(execID)
	if err != nil {
		return nil, err
	}
	if st := p.Status(); st == process.Running || st == process.Starting {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w: still %s", sb.ID, execID, errdefs.ErrFailedPrecondition, st)
	}
	sb.mu.Lock()
	delete(sb.execs, execID)
	cleanup := sb.execCleanup[execID]
	delete(sb.execCleanup, execID)
	sb.mu.Unlock()
	p.Close()
	if cleanup != nil {
		cleanup()
	}
	return p, nil
}

// Kill signals one process, or with all every process of the sandbox,
// control plane and workspace alike.
func (sb *Sandbox) Kill(execID string, sig syscall.Signal, all bool) error {
	if execID != "" {
		p, err := sb.Process(execID)
		if err != nil {
			return err
		}
		return sb.signalErr(execID, p.Signal(sig))
	}
	if all {
		if pids, err := sb.cgroup.GetAllPids(); err == nil {
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
	if err := sb.cp.Signal(sig); err != nil {
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

// Pids lists every process of the sandbox (both leaves of its cgroup).
func (sb *Sandbox) Pids() ([]int, error) {
	pids, err := sb.cgroup.GetAllPids()
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

// Pause freezes the whole sandbox.
func (sb *Sandbox) Pause() error {
	if !sb.Started() {
		return fmt.Errorf("sandbox %s: pause: %w: not started", sb.ID, errdefs.ErrFailedPrecondition)
	}
	<-sb.wsReady
	if err := sb.cgroup.Freeze(cgroups.Frozen); err != nil {
		_ = sb.cgroup.Freeze(cgroups.Thawed)
		return fmt.Errorf("sandbox %s: pause: %w", sb.ID, err)
	}
	sb.mu.Lock()
	sb.paused = true
	sb.mu.Unlock()
	return nil
}

// Resume thaws it.
func (sb *Sandbox) Resume() error {
	if err := sb.cgroup.Freeze(cgroups.Thawed); err != nil {
		return fmt.Errorf("sandbox %s: resume: %w", sb.ID, err)
	}
	sb.mu.Lock()
	sb.paused = false
	sb.mu.Unlock()
	return nil
}

// Paused tells whether the sandbox is frozen.
func (sb *Sandbox) Paused() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.paused
}

// Update applies new resources to the sandbox cgroup. A workspace memory
// limit derived from the sandbox's follows it; an annotated one stays.
func (sb *Sandbox) Update(r *specs.LinuxResources) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	res := *sb.res
	if err := spec.UpdateResources(&res, r); err != nil {
		return fmt.Errorf("sandbox %s: update: %w: %w", sb.ID, errdefs.ErrInvalidArgument, err)
	}
	if err := sb.cgroup.Set(&res); err != nil {
		return fmt.Errorf("sandbox %s: update: %w", sb.ID, err)
	}
	sb.res = &res
	// The workspace's limits follow the sandbox's, so the control plane keeps
	// its reserve: memory unless annotated, pids never above the new cap.
	ws := sb.readyWorkspace()
	if ws == nil {
		return nil
	}
	wcfg := ws.Config()
	wres := *wcfg.Cgroups.Resources
	changed := false
	if r.Memory != nil && r.Memory.Limit != nil && !sb.settings.MemoryFromAnnotation {
		wres.Memory = spec.DefaultWorkspaceMemory(*r.Memory.Limit)
		changed = true
	}
	if r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > 0 {
		capped, _ := spec.WorkspacePidsMax(*r.Pids.Limit)
		limit := max(min(sb.settings.PidsLimit, capped), 1)
		wres.PidsLimit = &limit
		changed = true
	}
	if !changed {
		return nil
	}
	cg := *wcfg.Cgroups
	cg.Resources = &wres
	wcfg.Cgroups = &cg
	if err := ws.Set(wcfg); err != nil {
		return fmt.Errorf("sandbox %s: update workspace limits: %w", sb.ID, err)
	}
	return nil
}

func (sb *Sandbox) readyWorkspace() *libcontainer.Container {
	select {
	case <-sb.wsReady:
		return sb.ws
	default:
		return nil
	}
}

// Delete tears the sandbox down. The init must have exited, or never been
// started.
func (sb *Sandbox) Delete(ctx context.Context) error {
	sb.stop()
	if sb.Started() {
		if sb.init.Status() != process.Stopped {
			return fmt.Errorf("sandbox %s: %w: task is running", sb.ID, errdefs.ErrFailedPrecondition)
		}
		<-sb.wsReady
	}
	var errs []error
	if ws := sb.readyWorkspace(); ws != nil {
		if err := destroy(ws); err != nil {
			errs = append(errs, fmt.Errorf("destroy workspace: %w", err))
		}
	}
	if err := Cleanup(sb.ID, sb.Bundle, sb.cp, sb.cgroup); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Cleanup removes everything a sandbox left on the host: its containers
// (killing what still runs), cgroups, state and rootfs mount. Used by Delete
// and, with nil arguments, by the shim's delete action after a crash.
func Cleanup(id, bundle string, cp *libcontainer.Container, cg cgroups.Manager) error {
	var errs []error
	root := StateRoot(bundle)
	if cp == nil {
		for _, cid := range []string{id + workspaceSuffix, id} {
			c, err := libcontainer.Load(root, cid)
			if err != nil {
				if !errors.Is(err, libcontainer.ErrNotExist) && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("load %s: %w", cid, err))
				}
				continue
			}
			if cid == id {
				cp = c
			} else if err := destroy(c); err != nil {
				errs = append(errs, fmt.Errorf("destroy %s: %w", cid, err))
			}
		}
	}
	if cp != nil {
		if err := destroy(cp); err != nil {
			errs = append(errs, fmt.Errorf("destroy control plane: %w", err))
		}
	}
	if cg != nil {
		if err := cg.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox cgroup: %w", err))
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

// destroy kills what still runs in c (its whole PID namespace, through its
// init) and removes it: libcontainer refuses to destroy a running container.
func destroy(c *libcontainer.Container) error {
	if st, err := c.Status(); err == nil && st != libcontainer.Stopped {
		_ = c.Signal(unix.SIGKILL)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if st, err := c.Status(); err != nil || st == libcontainer.Stopped {
				break
			}
		}
	}
	return c.Destroy()
}

// Cgroup loads the sandbox cgroup with containerd's cgroups library, whose
// stats types containerd's metrics API carries.
func (sb *Sandbox) Cgroup() (any, error) { return loadCgroup(sb.paths.Sandbox) }

func loadCgroup(path string) (any, error) {
	if ccgroups.Mode() == ccgroups.Unified {
		return cgroupsv2.Load(path)
	}
	return cgroup1.Load(cgroup1.StaticPath(path))
}

// CleanupDead is the shim's delete action: the shim that served the
// sandbox is gone, so everything is found again from the bundle.
func CleanupDead(namespace, id, bundle string) error {
	var cg cgroups.Manager
	if s, err := ReadSpec(bundle); err == nil {
		if paths, err := spec.Cgroups(s, namespace, id); err == nil {
			if m, err := cgmanager.New(&cgroups.Cgroup{Path: paths.Sandbox, Resources: &cgroups.Resources{}}); err == nil {
				cg = m
			}
		}
	}
	return Cleanup(id, bundle, nil, cg)
}

// WorkspaceReady is closed once the workspace was built (or failed to be).
func (sb *Sandbox) WorkspaceReady() <-chan struct{} { return sb.wsReady }

// UserCgroup loads the workspace's leaf: its own memory limit OOMs there,
// which the sandbox cgroup's notifications do not report on cgroup v1.
func (sb *Sandbox) UserCgroup() (any, error) { return loadCgroup(sb.paths.User) }
