package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer"

	"github.com/sandbox-shim/sandbox-shim/internal/cgroup"
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
// once after Start.
type workspace struct {
	ready     chan struct{} // closed once built, or failed to be
	container *usercontainer.Container
	err       error
	buildNow  chan struct{}
	buildOnce sync.Once
}

func newWorkspace() workspace {
	return workspace{ready: make(chan struct{}), buildNow: make(chan struct{})}
}

// scheduleWorkspace builds the workspace while the control plane boots, so
// Start's latency stays the control plane's and the first exec waits for
// it. It starts a moment later (or at once for an exec): a one-shot task
// that is already gone by then needs none, and building one only to tear it
// down would slow every short-lived task.
func (sb *Sandbox) scheduleWorkspace(ctx context.Context) {
	go func() {
		select {
		case <-time.After(workspaceBuildDelay):
		case <-sb.workspace.buildNow:
		case <-sb.stopping:
		}
		sb.buildWorkspace(ctx)
	}()
}

func (sb *Sandbox) buildWorkspace(ctx context.Context) {
	defer close(sb.workspace.ready)
	id := sb.ID + workspaceSuffix
	fail := func(err error) {
		sb.workspace.err = err
		log.G(ctx).WithError(err).WithField("id", sb.ID).Error("workspace unavailable: execs will fail")
	}
	// A control plane that already exited (a one-shot task) needs none.
	if sb.stopped() {
		sb.workspace.err = errors.New("the control plane has exited")
		return
	}
	cfg, err := spec.Workspace(id, sb.Bundle, sb.bundleSpec, spec.WorkspaceOptions{
		Settings:   sb.settings,
		NetNS:      sb.namespaces.path(sb.namespaces.network),
		UTSNS:      sb.namespaces.path(sb.namespaces.uts),
		CgroupPath: sb.cgroupPaths.User,
		Reaper:     sb.reaperBinary,
	})
	if err != nil {
		fail(fmt.Errorf("workspace config: %w", err))
		return
	}
	reaper, err := spec.ReaperProcess(sb.settings, sb.bundleSpec.Process)
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
			return spec.WaiterProcess(sb.settings, sb.bundleSpec.Process)
		},
		ExecPidsLimit: spec.ExecPidsLimit(sb.settings.PidsLimit),
		PoolSize:      workspacePoolSize,
	})
	if err != nil {
		fail(err)
		return
	}
	sb.workspace.container = c
	// The workspace's own memory limit OOMs in its leaf, which the sandbox
	// cgroup's notifications do not report on cgroup v1 (v2's do).
	if !cgroup.ParentCountsChildren() {
		sb.watchOOM(sb.cgroupPaths.User)
	}
}

// buildWorkspaceNow skips the build delay: an exec is waiting.
func (sb *Sandbox) buildWorkspaceNow() {
	sb.workspace.buildOnce.Do(func() { close(sb.workspace.buildNow) })
}

// waitWorkspace waits until the workspace is built, or ctx ends.
func (sb *Sandbox) waitWorkspace(ctx context.Context) (*usercontainer.Container, error) {
	select {
	case <-sb.workspace.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if sb.workspace.err != nil {
		return nil, fmt.Errorf("%w: workspace unavailable: %w", errdefs.ErrFailedPrecondition, sb.workspace.err)
	}
	if !sb.workspace.container.Running() {
		return nil, fmt.Errorf("%w: workspace has exited", errdefs.ErrFailedPrecondition)
	}
	return sb.workspace.container, nil
}

// readyWorkspace is the workspace if it was built, else nil.
func (sb *Sandbox) readyWorkspace() *usercontainer.Container {
	select {
	case <-sb.workspace.ready:
		return sb.workspace.container
	default:
		return nil
	}
}
