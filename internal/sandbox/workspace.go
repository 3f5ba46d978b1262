package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer"

	"github.com/sandbox-shim/sandbox-shim/internal/cgroup"
	"github.com/sandbox-shim/sandbox-shim/internal/secureexec"
	"github.com/sandbox-shim/sandbox-shim/internal/usercontainer"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// workspaceSuffix names the workspace container next to the control plane.
const workspaceSuffix = ".workspace"

// workspaceBuildDelay is how long after Start the workspace is built when
// no exec asks for it earlier.
const workspaceBuildDelay = 50 * time.Millisecond

// workspacePoolSize is how many pre-built execs wait in the workspace. Each
// is one idle process; four cover a burst of execs while a fork bomb slows
// the building of the next.
const workspacePoolSize = 4

// workspace is the user container every containerd exec runs in, built
// after Start, and again by each reset.
type workspace struct {
	ready     chan struct{} // closed once built, or failed to be
	container *usercontainer.Container
	err       error
	buildNow  chan struct{}
	buildOnce sync.Once
	// ptmx is the platform pty instance's ptmx (platformpty.go).
	ptmx     *os.File
	ptmxOnce sync.Once
	// runner runs execSecure calls in containers below this workspace's
	// cgroup (secure.go); nil, with runnerErr, when it could not start.
	runner     *secureexec.Runner
	runnerErr  error
	runnerOnce sync.Once
}

func newWorkspace() *workspace {
	return &workspace{ready: make(chan struct{}), buildNow: make(chan struct{})}
}

// currentWorkspace is the workspace now: a reset replaces it.
func (sb *Sandbox) currentWorkspace() *workspace {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.workspace
}

// scheduleWorkspace builds the workspace while the control plane boots, so
// Start's latency stays the control plane's and the first exec waits for
// it. It starts a moment later (or at once for an exec): a one-shot task
// that is already gone by then needs none, and building one only to tear it
// down would slow every short-lived task.
func (sb *Sandbox) scheduleWorkspace(ctx context.Context) {
	ws := sb.workspace // under sb.mu (Start)
	if sb.settings.PodSandbox {
		// Nothing to build: its "workspace" is the error execs get.
		sb.buildWorkspace(ctx, ws)
		return
	}
	go func() {
		select {
		case <-time.After(workspaceBuildDelay):
		case <-ws.buildNow:
		case <-sb.stopping:
		}
		sb.buildWorkspace(ctx, ws)
	}()
}

// workspaceSettings are the settings a workspace is built with: the
// bundle's, with the limits as the last Update left them.
func (sb *Sandbox) workspaceSettings() spec.Settings {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	st := sb.settings
	l := sb.workspaceLimits
	st.MemoryLimit, st.PidsLimit, st.MemoryFromAnnotation = l.memory, l.pids, l.memoryAnnotated
	return st
}

func (sb *Sandbox) buildWorkspace(ctx context.Context, ws *workspace) {
	defer close(ws.ready)
	id := sb.ID + workspaceSuffix
	fail := func(err error) {
		ws.err = err
		log.G(ctx).WithError(err).WithField("id", sb.ID).Error("workspace unavailable: execs will fail")
	}
	if sb.settings.PodSandbox {
		ws.err = errors.New("a pod's sandbox (pause) container has no workspace: exec into the pod's app containers")
		return
	}
	// A control plane that already exited (a one-shot task) needs none.
	if sb.stopped() {
		ws.err = errors.New("the control plane has exited")
		return
	}
	settings := sb.workspaceSettings()
	cfg, err := spec.Workspace(id, sb.Bundle, sb.bundleSpec, spec.WorkspaceOptions{
		Settings:         settings,
		NetNS:            sb.namespaces.path(sb.namespaces.network),
		UTSNS:            sb.namespaces.path(sb.namespaces.uts),
		UserNS:           sb.namespaces.path(sb.namespaces.user),
		CgroupPath:       sb.cgroupPaths.User,
		Reaper:           sb.reaperBinary,
		HostMemory:       sb.hostMemory,
		JoinedIPCSysctls: sb.joinedIPCSysctls,
	})
	if err != nil {
		fail(fmt.Errorf("workspace config: %w", err))
		return
	}
	reaper, err := spec.ReaperProcess(settings, sb.bundleSpec.Process)
	if err != nil {
		fail(fmt.Errorf("workspace reaper: %w", err))
		return
	}
	c, err := usercontainer.Create(context.WithoutCancel(ctx), usercontainer.Config{
		SandboxID: sb.ID,
		ID:        id,
		StateRoot: StateRoot(sb.Bundle),
		Container: cfg,
		Reaper:    reaper,
		Waiter: func() (*libcontainer.Process, error) {
			return spec.WaiterProcess(settings, sb.bundleSpec.Process)
		},
		WaiterStdin:   func() *os.File { return ws.platformPtmx(ctx, StateRoot(sb.Bundle), id) },
		ExecPidsLimit: spec.ExecPidsLimit(settings.PidsLimit),
		PoolSize:      workspacePoolSize,
	})
	if err != nil {
		fail(err)
		return
	}
	ws.container = c
	ws.runner, ws.runnerErr = sb.startRunner(ctx, settings)
	// The workspace's own memory limit OOMs in its leaf, which the sandbox
	// cgroup's notifications do not report on cgroup v1 (v2's do).
	if !cgroup.ParentCountsChildren() {
		sb.watchOOM(sb.cgroupPaths.User)
	}
}

// buildWorkspaceNow skips the build delay: an exec is waiting.
func (sb *Sandbox) buildWorkspaceNow() {
	ws := sb.currentWorkspace()
	ws.buildOnce.Do(func() { close(ws.buildNow) })
}

// waitWorkspace waits until the workspace is built, or ctx ends.
func (sb *Sandbox) waitWorkspace(ctx context.Context) (*workspace, error) {
	ws := sb.currentWorkspace()
	select {
	case <-ws.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if ws.err != nil {
		return nil, fmt.Errorf("%w: workspace unavailable: %w", errdefs.ErrFailedPrecondition, ws.err)
	}
	if !ws.container.Running() {
		return nil, fmt.Errorf("%w: workspace has exited", errdefs.ErrFailedPrecondition)
	}
	return ws, nil
}

// readyWorkspace is the workspace if it was built, else nil.
func (sb *Sandbox) readyWorkspace() *usercontainer.Container {
	ws := sb.currentWorkspace()
	select {
	case <-ws.ready:
		return ws.container
	default:
		return nil
	}
}

// ResetWorkspace kills the workspace, and so every exec in it (their exits
// are reported as usual) and everything it left in memory (its /tmp and
// /dev/shm, its IPC namespace), and builds a fresh one from the bundle
// with the limits as they are now. It needs no memory from the workspace:
// the platform's way back into one that user code filled. The control
// plane is untouched.
func (sb *Sandbox) ResetWorkspace(ctx context.Context) error {
	sb.resetting.Lock()
	defer sb.resetting.Unlock()
	fail := func(err error) error { return fmt.Errorf("sandbox %s: reset workspace: %w", sb.ID, err) }
	old := sb.currentWorkspace()
	if !sb.Started() {
		return fail(fmt.Errorf("%w: task not started", errdefs.ErrFailedPrecondition))
	}
	sb.buildWorkspaceNow()
	<-old.ready
	fresh := newWorkspace()
	sb.mu.Lock()
	// Under the lock endWithInit stops the sandbox with: either it sees
	// the fresh workspace, or no fresh one is built.
	if sb.stopped() {
		sb.mu.Unlock()
		return fail(fmt.Errorf("%w: task is stopped", errdefs.ErrFailedPrecondition))
	}
	sb.workspace = fresh
	sb.mu.Unlock()
	begin := time.Now()
	// Its secure containers sit below the user cgroup the old workspace's
	// destruction removes: they go first.
	old.closeRunner()
	if c := old.container; c != nil {
		c.Kill()
		c.WaitStopped(workspaceStopTimeout)
		// Also removes the old cgroup leaf and its exec leaves: the old
		// execs' leaves are gone with it (DeleteExec knows).
		if err := c.Destroy(); err != nil {
			log.G(ctx).WithError(err).WithField("id", sb.ID).Warn("reset: destroy the old workspace")
		}
	}
	old.closePlatformPtmx()
	// Destroy removed the user cgroup, and the network policy with it.
	if err := sb.reconfineUserNetwork(); err != nil {
		fresh.err = err
		close(fresh.ready)
		return fail(err)
	}
	sb.buildWorkspace(ctx, fresh)
	if fresh.err != nil {
		return fail(fresh.err)
	}
	log.G(ctx).WithField("id", sb.ID).Infof("workspace reset in %v", time.Since(begin).Round(time.Millisecond))
	return nil
}
