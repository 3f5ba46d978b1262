// Package sandbox holds one sandbox: the control plane (the task's init,
// built from the bundle), the workspace every containerd exec runs in, the
// registry of those execs, the namespaces user containers join, and the
// cgroup holding it all. The task service translates containerd calls into
// operations on it.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/internal/cgroup"
	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/internal/reserve"
	"github.com/sandbox-shim/sandbox-shim/internal/secureexec"
	"github.com/sandbox-shim/sandbox-shim/internal/usercontainer"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// StateDirName is the directory under the bundle holding libcontainer's
// state. Keeping it in the bundle ties it to one containerd's state dir, so
// two daemons on a host never share it, and the delete action can find it.
const StateDirName = "libcontainer"

// ReaperName is the reaper's binary: next to the shim, or in PATH.
const ReaperName = "sandbox-reaper"

// Config is what Create needs from containerd's CreateTaskRequest.
type Config struct {
	ID        string
	Namespace string
	Bundle    string
	Rootfs    []mount.Mount
	Stdio     process.Stdio
}

// Events are the sandbox's callbacks to the task service.
type Events struct {
	// OnExit is called once for every process that exits, the init last.
	OnExit func(*Sandbox, *process.Process)
	// OnOOM is called for each OOM kill in the sandbox.
	OnOOM func(*Sandbox)
}

// Sandbox is one task.
type Sandbox struct {
	ID        string
	Namespace string
	Bundle    string

	bundleSpec   *specs.Spec
	settings     spec.Settings
	reaperBinary string
	cgroup       *cgroup.Sandbox
	cgroupPaths  spec.CgroupPaths
	namespaces   *namespaces
	// reservation holds the reserved ports for the sandbox's whole life: a
	// control plane that closes its copies or restarts leaves no window.
	reservation *reserve.Reservation
	protections Protections

	controlPlane *libcontainer.Container
	init         *process.Process
	events       Events
	// watching ends the OOM watches once the init exited.
	watching context.Context

	// hostMemory bounds what user code leaves behind in a workspace
	// without a memory limit (spec.WorkspaceOptions).
	hostMemory int64
	// joinedIPCSysctls are those of the IPC namespace the bundle joins (a
	// pod's), for the workspace's own (spec.WorkspaceOptions).
	joinedIPCSysctls map[string]string
	// resetting is held by a workspace reset, and by Delete to wait for one.
	resetting sync.Mutex
	// stopping is closed once the sandbox is going away.
	stopping chan struct{}
	stopOnce sync.Once

	mu sync.Mutex
	// workspace is the current one; a reset replaces it.
	workspace *workspace
	// workspaceLimits are the workspace's limits as the last Update left
	// them: a reset builds the fresh workspace with them. (settings stays
	// as Create parsed it, read without the lock.)
	workspaceLimits workspaceLimits
	// resources are the sandbox cgroup's, as last set.
	resources *cgroups.Resources
	started   bool
	paused    bool
	execs     map[string]*containerdExec

	api     *API
	apiOnce sync.Once
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

// reaperPath finds the reaper next to the running shim binary, else in
// PATH: a shim started by an absolute runtime path (copied elsewhere) still
// finds the one installed with it in containerd's PATH.
func reaperPath() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	next := filepath.Join(filepath.Dir(self), ReaperName)
	if _, err := os.Stat(next); err == nil {
		return next, nil
	}
	p, err := exec.LookPath(ReaperName)
	if err != nil {
		return "", fmt.Errorf("workspace reaper %s not found next to the shim (%s) or in PATH: install it beside the shim", ReaperName, next)
	}
	return filepath.Abs(p)
}

// Create validates the bundle, places the sandbox cgroup, mounts the rootfs
// and starts the control plane's init, which then waits on libcontainer's
// exec FIFO until Start.
func Create(ctx context.Context, cfg Config, events Events) (_ *Sandbox, retErr error) {
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
	hostPids, err := cgroup.HostPidsLimit(paths.Sandbox)
	if err != nil {
		return nil, fail(nil, err)
	}
	settings, err := spec.ParseSettings(s, spec.Limits{Pids: hostPids, NoCrossNamespacePrlimit: !hasCapability(unix.CAP_SYS_RESOURCE)})
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	hostMemory, err := cgroup.HostMemoryLimit(paths.Sandbox)
	if err != nil {
		return nil, fail(nil, err)
	}
	// A pod's sandbox (pause) container gets no API, so no API directory.
	apiDir := api.ControlPlaneHostDir(cfg.Namespace, cfg.ID)
	if settings.PodSandbox {
		apiDir = ""
	}
	// Convert everything before touching the host: a bad bundle leaves nothing.
	controlPlane, err := spec.ControlPlane(cfg.ID, cfg.Bundle, s, paths, apiDir)
	if err != nil {
		return nil, fail(errdefs.ErrInvalidArgument, err)
	}
	reaper, err := reaperPath()
	if err != nil {
		return nil, fail(errdefs.ErrFailedPrecondition, err)
	}
	logger := log.G(ctx).WithField("id", cfg.ID)
	network, err := reserveNetwork(s, settings)
	if err != nil {
		return nil, fail(nil, err)
	}
	// The init holds the namespace once it runs; the shim keeps the
	// reservation (Delete closes it).
	defer func() {
		network.release()
		if retErr != nil {
			network.reservation.Close()
		}
	}()
	if network.made != nil {
		// Again, now joining the namespace the shim made.
		if controlPlane, err = spec.ControlPlane(cfg.ID, cfg.Bundle, network.bundle, paths, apiDir); err != nil {
			return nil, fail(errdefs.ErrInvalidArgument, err)
		}
	}
	network.handOver(controlPlane, logger)
	// The control plane's bind mount of the API directory needs it before
	// its init starts; the API server adds the sockets.
	if apiDir != "" {
		uid, gid, err := spec.HostUser(s, s.Process.User)
		if err != nil {
			return nil, fail(errdefs.ErrInvalidArgument, err)
		}
		if err := prepareHostDir(cfg.Namespace, cfg.ID, specs.User{UID: uid, GID: gid}); err != nil {
			return nil, fail(nil, err)
		}
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(api.HostDir(cfg.Namespace, cfg.ID))
		}
	}()
	if s.Process.User.UID == settings.UID {
		logger.Warnf("workspace user %d is the control plane's user: same-uid protections (signals, ptrace, /proc, RLIMIT_NPROC) are weaker; set %s", settings.UID, api.AnnotationUser)
	}
	if settings.GroupFromUID {
		logger.Infof("image user %d has gid 0: user code runs as %d:%d instead (never in root's group)", settings.UID, settings.UID, settings.GID)
	}

	cg, err := cgroup.CreateSandbox(paths.Sandbox, controlPlane.SandboxResources)
	if err != nil {
		return nil, fail(nil, err)
	}
	defer func() {
		if retErr != nil {
			_ = cg.Destroy()
		}
	}()
	protections, err := confineUserNetwork(ctx, cfg.ID, paths.User, settings, network)
	if err != nil {
		return nil, fail(nil, err)
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
	// 0711, as libcontainer makes each container's state directory: a
	// secure container's rootfs view lies below, and the root of a user
	// namespace (a host uid of its own) must pass through to it.
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, fail(nil, fmt.Errorf("state directory: %w", err))
	}
	c, err := libcontainer.Create(root, cfg.ID, controlPlane.Container)
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
		ID: cfg.ID, Namespace: cfg.Namespace, Bundle: cfg.Bundle,
		bundleSpec: s, settings: settings, reaperBinary: reaper, cgroup: cg, cgroupPaths: paths,
		hostMemory:   hostMemory,
		controlPlane: c, events: events,
		reservation: network.reservation, protections: protections,
		workspace: newWorkspace(),
		stopping:  make(chan struct{}),
		resources: controlPlane.SandboxResources,
		execs:     map[string]*containerdExec{},
	}
	sb.workspaceLimits = workspaceLimits{memory: settings.MemoryLimit, pids: settings.PidsLimit, memoryAnnotated: settings.MemoryFromAnnotation}
	p := process.New(cfg.ID, cfg.Stdio)
	p.BeforeExit(sb.endWithInit)
	// Set before it starts: its exit may be reported at once.
	sb.init = p
	if err := p.Start(c.Start, controlPlane.Init, sb.initExited); err != nil {
		return nil, fail(nil, fmt.Errorf("start init %q: %w", s.Process.Args[0], err))
	}
	sb.recordInitPid() // for the delete action after a shim crash (exitstatus.go)
	// The init waits on the exec FIFO: its namespaces are there to hold.
	_, userNamespace := spec.BundleUserNamespace(s)
	ns, err := openNamespaces(p.Pid(), userNamespace)
	if err == nil && p.Status() == process.Stopped {
		// Reaped meanwhile: the pid may already be another process'.
		ns.close()
		err = errors.New("the control plane's init exited before its namespaces were held")
	}
	if err != nil {
		_ = usercontainer.Destroy(c)
		<-p.Done()
		return nil, fail(nil, err)
	}
	sb.namespaces = ns
	sb.joinedIPCSysctls = joinedIPCSysctls(ctx, sb.ID, s)
	watching, stopWatching := context.WithCancel(context.WithoutCancel(ctx))
	sb.watching = watching
	go func() {
		<-p.Done()
		stopWatching()
	}()
	// Right at create: the cgroup already holds the waiting init, and a
	// fast OOM must not be missed.
	sb.watchOOM(paths.Sandbox)
	return sb, nil
}

// watchOOM reports OOM kills in the cgroup at p until the init exited.
func (sb *Sandbox) watchOOM(p string) {
	if sb.events.OnOOM == nil {
		return
	}
	if err := cgroup.WatchOOM(sb.watching, p, func() { sb.events.OnOOM(sb) }); err != nil {
		log.G(sb.watching).WithError(err).WithField("id", sb.ID).Warn("OOM kills are not reported")
	}
}

// endWithInit runs when the control plane's init exited, before that is
// recorded: the sandbox lives as long as its control plane, so the
// workspace goes with it, and its execs' exits are reported before the
// init's, as containerd expects.
func (sb *Sandbox) endWithInit() {
	sb.mu.Lock()
	started := sb.started
	// Under the lock StartExec claims with: no exec starts after this.
	sb.stop()
	ws := sb.workspace
	sb.mu.Unlock()
	if started {
		<-ws.ready
		ws.closeRunner()
		if ws := ws.container; ws != nil {
			ws.Kill()
			ws.WaitStopped(workspaceStopTimeout)
		}
	}
	for _, e := range sb.liveExecs() {
		<-e.Done()
	}
}

// workspaceStopTimeout bounds the wait for a killed workspace's reaper.
const workspaceStopTimeout = 5 * time.Second

// initExited reports the init's exit, the sandbox's last.
func (sb *Sandbox) initExited(p *process.Process) {
	sb.recordInitExit(p) // final now, even if this shim dies before it reports it (exitstatus.go)
	if sb.events.OnExit != nil {
		sb.events.OnExit(sb, p)
	}
}

// Protections are the sandbox's network guards as set up at Create.
func (sb *Sandbox) Protections() Protections { return sb.protections }

// Init is the control plane's init process.
func (sb *Sandbox) Init() *process.Process { return sb.init }

// Started tells whether Start ran.
func (sb *Sandbox) Started() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.started
}

// Start releases the control plane from libcontainer's exec FIFO and
// schedules the workspace build.
func (sb *Sandbox) Start(ctx context.Context) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.started {
		return fmt.Errorf("sandbox %s: %w: already started", sb.ID, errdefs.ErrFailedPrecondition)
	}
	if sb.init.Status() == process.Stopped {
		return fmt.Errorf("sandbox %s: %w: init exited before start", sb.ID, errdefs.ErrFailedPrecondition)
	}
	if err := sb.controlPlane.Exec(); err != nil {
		return fmt.Errorf("sandbox %s: start: %w", sb.ID, err)
	}
	sb.started = true
	sb.scheduleWorkspace(ctx)
	return nil
}

// stop marks the sandbox as going away.
func (sb *Sandbox) stop() { sb.stopOnce.Do(func() { close(sb.stopping) }) }

func (sb *Sandbox) stopped() bool {
	select {
	case <-sb.stopping:
		return true
	default:
		return sb.init.Status() == process.Stopped
	}
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
		if pids, err := sb.cgroup.Pids(); err == nil {
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
	if err := sb.controlPlane.Signal(sig); err != nil {
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
	pids, err := sb.cgroup.Pids()
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", sb.ID, err)
	}
	return pids, nil
}

// Stats are the sandbox cgroup's metrics.
func (sb *Sandbox) Stats() (any, error) {
	stats, err := sb.cgroup.Stats()
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", sb.ID, err)
	}
	return stats, nil
}

// Pause freezes the whole sandbox.
func (sb *Sandbox) Pause() error {
	if !sb.Started() {
		return fmt.Errorf("sandbox %s: pause: %w: not started", sb.ID, errdefs.ErrFailedPrecondition)
	}
	<-sb.currentWorkspace().ready
	if err := sb.cgroup.Freeze(true); err != nil {
		return fmt.Errorf("sandbox %s: pause: %w", sb.ID, err)
	}
	sb.mu.Lock()
	sb.paused = true
	sb.mu.Unlock()
	return nil
}

// Resume thaws it.
func (sb *Sandbox) Resume() error {
	if err := sb.cgroup.Freeze(false); err != nil {
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

// workspaceLimits are the workspace's memory and pids limits; an annotated
// memory limit no longer follows the sandbox's.
type workspaceLimits struct {
	memory, pids    int64
	memoryAnnotated bool
}

// UpdateRequest is a containerd task Update.
type UpdateRequest struct {
	// Resources are the sandbox's new limits; nil leaves them.
	Resources *specs.LinuxResources
	// Annotations may set the workspace's memory limit and ask for a
	// workspace reset (spec.ParseWorkspaceUpdate).
	Annotations map[string]string
}

// Update applies new resources to the sandbox cgroup and the workspace's.
// A workspace memory limit derived from the sandbox's follows it; an
// annotated one stays, unless the Update's own annotation sets it. A reset
// it asks for comes last, so the fresh workspace has the new limits.
func (sb *Sandbox) Update(ctx context.Context, req UpdateRequest) error {
	fail := func(kind, err error) error {
		if kind != nil {
			return fmt.Errorf("sandbox %s: update: %w: %w", sb.ID, kind, err)
		}
		return fmt.Errorf("sandbox %s: update: %w", sb.ID, err)
	}
	if req.Resources == nil && len(req.Annotations) == 0 {
		return fail(errdefs.ErrInvalidArgument, errors.New("neither resources nor annotations"))
	}
	sb.mu.Lock()
	res := *sb.resources
	if req.Resources != nil {
		if err := spec.UpdateResources(&res, req.Resources); err != nil {
			sb.mu.Unlock()
			return fail(errdefs.ErrInvalidArgument, err)
		}
	}
	upd, err := spec.ParseWorkspaceUpdate(req.Annotations, max(res.Memory, 0))
	if err != nil {
		sb.mu.Unlock()
		return fail(errdefs.ErrInvalidArgument, err)
	}
	err = sb.updateLimits(&res, req.Resources, upd)
	sb.mu.Unlock()
	if err != nil {
		return fail(nil, err)
	}
	if upd.Reset {
		return sb.ResetWorkspace(ctx)
	}
	return nil
}

// updateLimits sets res on the sandbox cgroup and the workspace limits
// that follow from it and upd, under sb.mu. r is the Update's resources
// (nil: none).
func (sb *Sandbox) updateLimits(res *cgroups.Resources, r *specs.LinuxResources, upd spec.WorkspaceUpdate) error {
	if r != nil {
		if err := sb.cgroup.Set(res); err != nil {
			return err
		}
		sb.resources = res
	}
	// The workspace's limits follow the sandbox's, so the control plane keeps
	// its reserve: memory unless annotated, pids never above the new cap.
	limits := sb.workspaceLimits
	switch {
	case upd.MemoryLimit > 0:
		limits.memory, limits.memoryAnnotated = upd.MemoryLimit, true
	case r != nil && r.Memory != nil && r.Memory.Limit != nil && !limits.memoryAnnotated:
		limits.memory = spec.DefaultWorkspaceMemory(*r.Memory.Limit)
	}
	if r != nil && r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > 0 {
		capped, _ := spec.WorkspacePidsMax(*r.Pids.Limit)
		limits.pids = max(min(sb.settings.PidsLimit, capped), 1)
	}
	if limits == sb.workspaceLimits {
		return nil
	}
	sb.workspaceLimits = limits
	// A workspace not built yet (or being reset) is built with them.
	ws := sb.workspace
	select {
	case <-ws.ready:
	default:
		return nil
	}
	if ws.container == nil {
		return nil
	}
	wres := ws.container.Resources()
	wres.Memory = limits.memory
	pids := limits.pids
	wres.PidsLimit = &pids
	return ws.container.SetResources(wres)
}

// Delete tears the sandbox down. The init must have exited, or never been
// started.
func (sb *Sandbox) Delete(ctx context.Context) error {
	sb.stop()
	if sb.Started() {
		if sb.init.Status() != process.Stopped {
			return fmt.Errorf("sandbox %s: %w: task is running", sb.ID, errdefs.ErrFailedPrecondition)
		}
		// A reset under way finishes first (it builds nothing once stopped).
		sb.resetting.Lock()
		<-sb.currentWorkspace().ready
		sb.resetting.Unlock()
	}
	var errs []error
	if ws := sb.currentWorkspace(); isReady(ws) {
		ws.closeRunner()
	}
	if ws := sb.readyWorkspace(); ws != nil {
		if err := ws.Destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	sb.currentWorkspace().closePlatformPtmx()
	sb.namespaces.close()
	sb.reservation.Close()
	if err := cleanup(sb.Namespace, sb.ID, sb.Bundle, sb.controlPlane, sb.cgroup); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanup removes everything a sandbox left on the host: its containers
// (killing what still runs), cgroups, state, rootfs mount and API
// directory (its sockets and audit trail). Used by Delete and, with nil
// arguments, by the shim's delete action after a crash.
func cleanup(namespace, id, bundle string, controlPlane *libcontainer.Container, cg *cgroup.Sandbox) error {
	var errs []error
	root := StateRoot(bundle)
	if controlPlane == nil && cg != nil {
		// After a crash: everything the shim ran, at once, so the rest is
		// quick (containerd gives the delete action 5 s).
		if err := cg.KillAll(crashKillTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	if controlPlane == nil {
		for _, cid := range []string{id + workspaceSuffix, id} {
			c, err := libcontainer.Load(root, cid)
			if err != nil {
				if !errors.Is(err, libcontainer.ErrNotExist) && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("load %s: %w", cid, err))
				}
				continue
			}
			if cid == id {
				controlPlane = c
			} else if err := usercontainer.Destroy(c); err != nil {
				errs = append(errs, fmt.Errorf("destroy %s: %w", cid, err))
			}
		}
	}
	if controlPlane != nil {
		if err := usercontainer.Destroy(controlPlane); err != nil {
			errs = append(errs, fmt.Errorf("destroy control plane: %w", err))
		}
	}
	if cg != nil {
		if err := cg.Destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		errs = append(errs, fmt.Errorf("unmount rootfs: %w", err))
	}
	secureexec.Cleanup(root)
	if err := os.RemoveAll(root); err != nil {
		errs = append(errs, err)
	}
	if err := removeHostDir(namespace, id); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("sandbox %s: cleanup: %w", id, errors.Join(errs...))
	}
	return nil
}

// crashKillTimeout bounds the wait for a dead shim's processes to go.
const crashKillTimeout = 2 * time.Second

// CleanupDead is the shim's delete action: the shim that served the
// sandbox is gone, so everything is found again from the bundle.
func CleanupDead(namespace, id, bundle string) error {
	var cg *cgroup.Sandbox
	if paths, err := bundleCgroups(namespace, id, bundle); err == nil {
		if c, err := cgroup.LoadSandbox(paths.Sandbox); err == nil {
			cg = c
		}
	}
	return cleanup(namespace, id, bundle, nil, cg)
}

// bundleCgroups are the sandbox's cgroups as the bundle spec places them.
// Only the cgroups path is decoded: the delete action runs after every
// shim exit, on the path of every container's removal, and decoding the
// whole spec in a fresh process costs it a millisecond or more.
func bundleCgroups(namespace, id, bundle string) (spec.CgroupPaths, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return spec.CgroupPaths{}, fmt.Errorf("read bundle spec: %w", err)
	}
	var placement struct {
		Linux *struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(b, &placement); err != nil {
		return spec.CgroupPaths{}, fmt.Errorf("parse bundle spec: %w", err)
	}
	s := &specs.Spec{}
	if placement.Linux != nil {
		s.Linux = &specs.Linux{CgroupsPath: placement.Linux.CgroupsPath}
	}
	return spec.Cgroups(s, namespace, id)
}
