package sandbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/internal/usercontainer"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// containerdExec is one exec containerd registered: its process, the
// request built from its spec, and once started its place in the workspace.
type containerdExec struct {
	process *process.Process
	request spec.ExecRequest
	running *usercontainer.Exec
	// workspace is the one it runs in: a reset removes that one's leaves.
	workspace *workspace
}

// Process returns the init ("") or an exec by id.
func (sb *Sandbox) Process(execID string) (*process.Process, error) {
	if execID == "" {
		return sb.init, nil
	}
	e, err := sb.exec(execID)
	if err != nil {
		return nil, err
	}
	return e.process, nil
}

func (sb *Sandbox) exec(execID string) (*containerdExec, error) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	e, ok := sb.execs[execID]
	if !ok {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w", sb.ID, execID, errdefs.ErrNotFound)
	}
	return e, nil
}

// Exec registers an exec; it will run in the workspace as the workspace
// user whatever user, capabilities or privileges its spec asks for.
func (sb *Sandbox) Exec(ctx context.Context, execID string, ps *specs.Process, stdio process.Stdio) (*process.Process, error) {
	fail := func(kind, err error) (*process.Process, error) {
		if kind != nil {
			return nil, fmt.Errorf("sandbox %s: exec %q: %w: %w", sb.ID, execID, kind, err)
		}
		return nil, fmt.Errorf("sandbox %s: exec %q: %w", sb.ID, execID, err)
	}
	req, err := spec.WorkspaceExec(ps, sb.bundleSpec.Process, sb.settings)
	if err != nil {
		return fail(errdefs.ErrInvalidArgument, err)
	}
	// The pty comes from containerd's request, not the spec.
	req.Terminal = stdio.Terminal
	// Refuse what no waiter could run now, not at Start.
	if _, err := req.Encode(); err != nil {
		return fail(errdefs.ErrInvalidArgument, err)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if _, ok := sb.execs[execID]; ok {
		return fail(errdefs.ErrAlreadyExists, errors.New("exec id in use"))
	}
	if sb.stopped() {
		return fail(errdefs.ErrFailedPrecondition, errors.New("task is stopped"))
	}
	p := process.New(execID, stdio)
	sb.execs[execID] = &containerdExec{process: p, request: req}
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
	e, err := sb.exec(execID)
	if err != nil {
		return nil, err
	}
	p := e.process
	switch {
	case !sb.Started():
		return fail(errdefs.ErrFailedPrecondition, errors.New("task not started"))
	case sb.Paused():
		return fail(errdefs.ErrFailedPrecondition, errors.New("sandbox is paused"))
	}
	// Checked and claimed under the lock endWithInit takes to list the
	// execs it waits for: an exec either is in that list or never starts.
	sb.mu.Lock()
	stopped := sb.stopped()
	var claimErr error
	if !stopped {
		claimErr = p.Claim()
	}
	sb.mu.Unlock()
	if stopped {
		return fail(errdefs.ErrFailedPrecondition, errors.New("task is stopped"))
	}
	if claimErr != nil {
		// Another Start has it: wait for that one, as the runc shim's
		// per-process lock does (its caller may clean up the FIFOs the
		// moment this one returns).
		select {
		case <-p.Started():
		case <-ctx.Done():
		}
		return fail(errdefs.ErrFailedPrecondition, claimErr)
	}
	sb.buildWorkspaceNow()
	ws, err := sb.waitWorkspace(ctx)
	if err != nil {
		p.Abandon()
		return fail(nil, err)
	}
	running, err := ws.container.Exec(p, e.request, sb.execExited)
	if err != nil {
		p.Abandon()
		return fail(nil, err)
	}
	sb.mu.Lock()
	e.running, e.workspace = running, ws
	sb.mu.Unlock()
	return p, nil
}

func (sb *Sandbox) execExited(p *process.Process) {
	if sb.events.OnExit != nil {
		sb.events.OnExit(sb, p)
	}
}

// DeleteExec forgets a stopped (or never started) exec.
func (sb *Sandbox) DeleteExec(execID string) (*process.Process, error) {
	e, err := sb.exec(execID)
	if err != nil {
		return nil, err
	}
	p := e.process
	if st := p.Status(); st == process.Running || st == process.Starting {
		return nil, fmt.Errorf("sandbox %s: exec %q: %w: still %s", sb.ID, execID, errdefs.ErrFailedPrecondition, st)
	}
	sb.mu.Lock()
	delete(sb.execs, execID)
	running := e.running
	// A reset destroyed the old workspace's leaves; a leaf of the same
	// name may now be a fresh workspace's.
	if e.workspace != sb.workspace {
		running = nil
	}
	sb.mu.Unlock()
	p.Close()
	if running != nil {
		running.Release()
	}
	return p, nil
}

// ExecIDs maps live exec pids to their ids.
func (sb *Sandbox) ExecIDs() map[int]string {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	m := map[int]string{}
	for id, e := range sb.execs {
		if pid := e.process.Pid(); pid != 0 {
			m[pid] = id
		}
	}
	return m
}

// liveExecs are the execs starting or running.
func (sb *Sandbox) liveExecs() []*process.Process {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	var live []*process.Process
	for _, e := range sb.execs {
		if st := e.process.Status(); st == process.Running || st == process.Starting {
			live = append(live, e.process)
		}
	}
	return live
}
