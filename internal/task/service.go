// Package task is the shim's containerd task service. It stays thin: each
// call is translated into an operation on a sandbox, and errors become
// containerd's errdefs at this boundary.
package task

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/internal/apiserver"
	"github.com/sandbox-shim/sandbox-shim/internal/orphans"
	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/internal/sandbox"
)

// idleTrimDelay is how long after Start the shim returns unused heap to
// the kernel: long enough for the workspace build and the waiter pool.
const idleTrimDelay = time.Second

// orphanInterval is how long a zombie child must stay unclaimed before the
// orphan reaper takes it.
const orphanInterval = 2 * time.Second

var (
	_     = shim.TTRPCService(&service{})
	empty = &ptypes.Empty{}
)

type service struct {
	ctx       context.Context
	publisher shim.Publisher
	shutdown  shutdown.Service
	events    chan any
	// forwarded is closed once the forwarder returned. sendClosed (under
	// sendMu) is set before: later events are dropped (logged), never
	// blocked on, and every event queued before is published.
	forwarded  chan struct{}
	sendMu     sync.RWMutex
	sendClosed bool

	// lifecycle serialises Create/Delete against Shutdown.
	lifecycle sync.Mutex
	mu        sync.Mutex
	sandboxes map[string]*sandbox.Sandbox
	// apis serve each sandbox's API, from Create to Delete.
	apis map[string]*apiserver.Server
	// starting holds, per process being started or created, a gate its
	// exit event waits for: open once its create or start event was
	// published (or the call failed), so containerd never sees an exit
	// before them, and no other call or exit waits for this one.
	starting map[*process.Process]*eventGate
	// creating holds the gate of each sandbox whose Create is in flight:
	// its init may exit before Create returns the init to us.
	creating map[string]*eventGate
}

// eventGate holds a process' exit event until every call that registered
// it (concurrent Starts of one exec, say) has published its own event.
type eventGate struct {
	calls int
	open  chan struct{}
	// created: the call was a Create, and it succeeded (one that failed
	// leaves an exit that is nobody's).
	created bool
}

// NewTaskService returns the task service for one shim process.
func NewTaskService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) (taskAPI.TTRPCTaskService, error) {
	s := &service{
		ctx:       ctx,
		publisher: publisher,
		shutdown:  sd,
		events:    make(chan any, 128),
		forwarded: make(chan struct{}),
		sandboxes: map[string]*sandbox.Sandbox{},
		apis:      map[string]*apiserver.Server{},
		starting:  map[*process.Process]*eventGate{},
		creating:  map[string]*eventGate{},
	}
	go orphans.Run(ctx, orphanInterval)
	// Events still queued at shutdown are published before the shim exits:
	// the library exits right after the shutdown callbacks return.
	stop := make(chan struct{})
	go s.forward(stop)
	sd.RegisterCallback(func(ctx context.Context) error {
		close(stop)
		select {
		case <-s.forwarded:
		case <-ctx.Done():
		}
		return nil
	})
	// A shim going away with sandboxes left (killed by containerd) stops
	// serving their APIs: calls in flight end, their commands are killed.
	sd.RegisterCallback(func(context.Context) error {
		s.mu.Lock()
		apis := slices.Collect(maps.Values(s.apis))
		s.mu.Unlock()
		for _, a := range apis {
			a.Close()
		}
		return nil
	})
	if address, err := shim.ReadAddress("address"); err == nil {
		sd.RegisterCallback(func(context.Context) error {
			return shim.RemoveSocket(address)
		})
	}
	return s, nil
}

// RegisterTTRPC implements shim.TTRPCService.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

func (s *service) forward(stop <-chan struct{}) {
	ctx := context.WithoutCancel(s.ctx)
	defer close(s.forwarded)
	defer s.publisher.Close()
	publish := func(e any) {
		if err := s.publisher.Publish(ctx, runtime.GetTopic(e), e); err != nil {
			log.G(ctx).WithError(err).Error("post event")
		}
	}
	for {
		select {
		case e := <-s.events:
			publish(e)
		case <-stop:
			// Close sending while still publishing (a sender may wait on a
			// full queue), then publish what was queued before.
			closed := make(chan struct{})
			go func() {
				s.sendMu.Lock()
				s.sendClosed = true
				s.sendMu.Unlock()
				close(closed)
			}()
			for {
				select {
				case e := <-s.events:
					publish(e)
				case <-closed:
					for {
						select {
						case e := <-s.events:
							publish(e)
						default:
							return
						}
					}
				}
			}
		}
	}
}

func (s *service) send(e any) {
	s.sendMu.RLock()
	defer s.sendMu.RUnlock()
	if s.sendClosed {
		log.G(s.ctx).WithField("topic", runtime.GetTopic(e)).Warn("shim is shutting down: event dropped")
		return
	}
	s.events <- e
}

// holdExit registers a call about key in gates: an exit waiting on the
// gate waits until the returned func ran for every such call.
func holdExit[K comparable](mu *sync.Mutex, gates map[K]*eventGate, key K) (*eventGate, func()) {
	mu.Lock()
	g := gates[key]
	if g == nil {
		g = &eventGate{open: make(chan struct{})}
		gates[key] = g
	}
	g.calls++
	mu.Unlock()
	return g, func() {
		mu.Lock()
		defer mu.Unlock()
		if g.calls--; g.calls == 0 {
			delete(gates, key)
			close(g.open)
		}
	}
}

// beginStart registers a Start of p: its exit event waits until the
// returned func ran (after the start event was sent, or the start failed).
func (s *service) beginStart(p *process.Process) func() {
	_, release := holdExit(&s.mu, s.starting, p)
	return release
}

func (s *service) get(id string) (*sandbox.Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "sandbox %s does not exist", id)
	}
	return sb, nil
}

func (s *service) process(id, execID string) (*sandbox.Sandbox, *process.Process, error) {
	sb, err := s.get(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := sb.Process(execID)
	if err != nil {
		return nil, nil, errgrpc.ToGRPC(err)
	}
	return sb, p, nil
}

// onExit publishes a process' exit; the sandbox calls it once per process.
func (s *service) onExit(sb *sandbox.Sandbox, p *process.Process) {
	s.mu.Lock()
	creating, starting := s.creating[sb.ID], s.starting[p]
	s.mu.Unlock()
	if creating != nil {
		<-creating.open
	}
	if starting != nil {
		<-starting.open
	}
	if creating != nil && !creating.created {
		// Its Create failed: containerd never heard of this task.
		return
	}
	status, at := p.Exit()
	execID := p.ID
	if p == sb.Init() {
		execID = sb.ID
	}
	s.send(&eventstypes.TaskExit{
		ContainerID: sb.ID,
		ID:          execID,
		Pid:         uint32(p.Pid()),
		ExitStatus:  uint32(status),
		ExitedAt:    protobuf.ToTimestamp(at),
	})
}

// onOOM publishes an OOM kill in the sandbox.
func (s *service) onOOM(sb *sandbox.Sandbox) {
	s.send(&eventstypes.TaskOOM{ContainerID: sb.ID})
}

// ignoredOptions logs once per shim that runc's own options do not apply.
var ignoredOptions sync.Once

// checkOptions reads the runc shim's options, which containerd and CRI
// hand every runtime: the systemd cgroup driver is refused (cgroupsPath
// must be a cgroupfs path), and runc-specific ones are ignored, logged.
func checkOptions(ctx context.Context, r *taskAPI.CreateTaskRequest) error {
	if r.Options == nil {
		return nil
	}
	v, err := typeurl.UnmarshalAny(r.Options)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w: task options: %w", r.ID, errdefs.ErrInvalidArgument, err)
	}
	opts, ok := v.(*options.Options)
	if !ok {
		return nil
	}
	if opts.SystemdCgroup {
		return fmt.Errorf("sandbox %s: %w: SystemdCgroup = true: the systemd cgroup driver is not supported by io.sandbox.v1; use the cgroupfs driver", r.ID, errdefs.ErrInvalidArgument)
	}
	if opts.BinaryName != "" || opts.Root != "" {
		ignoredOptions.Do(func() {
			log.G(ctx).WithField("id", r.ID).Warnf("runc options BinaryName=%q Root=%q are ignored: io.sandbox.v1 runs libcontainer in-process and keeps its state in the bundle", opts.BinaryName, opts.Root)
		})
	}
	return nil
}

// Create builds the sandbox and its (not yet started) init.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	if r.Checkpoint != "" {
		// Not NotImplemented: containerd reads that from Create as "downgrade
		// the task API and retry".
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "sandbox %s: restore from checkpoint is not supported by io.sandbox.v1", r.ID)
	}
	s.mu.Lock()
	_, exists := s.sandboxes[r.ID]
	s.mu.Unlock()
	if exists {
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "sandbox %s already exists", r.ID)
	}
	if err := checkOptions(ctx, r); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	var mounts []mount.Mount
	for _, m := range r.Rootfs {
		mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	gate, release := holdExit(&s.mu, s.creating, r.ID)
	defer release()
	sb, err := sandbox.Create(ctx, sandbox.Config{
		ID:        r.ID,
		Namespace: ns,
		Bundle:    r.Bundle,
		Rootfs:    mounts,
		Stdio:     process.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	}, sandbox.Events{OnExit: s.onExit, OnOOM: s.onOOM})
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	// Served from now: the control plane may call it as soon as it starts.
	// A pod's sandbox (pause) container has none: nothing runs there.
	var server *apiserver.Server
	if !sb.PodSandbox() {
		uid, gid := sb.ControlPlaneUser()
		server, err = apiserver.Serve(apiserver.Config{
			Namespace: ns, SandboxID: r.ID, Backend: sb.API(),
			ControlPlaneUID: uid, ControlPlaneGID: gid,
		})
	}
	if err != nil {
		if derr := sb.Delete(ctx); derr != nil {
			log.G(ctx).WithError(derr).WithField("id", r.ID).Warn("remove the sandbox whose API did not start")
		}
		<-sb.Init().Done()
		sb.Init().Close()
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err))
	}
	s.mu.Lock()
	s.sandboxes[r.ID] = sb
	if server != nil {
		s.apis[r.ID] = server
	}
	gate.created = true
	s.mu.Unlock()
	pid := uint32(sb.Init().Pid())
	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid:         pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: pid}, nil
}

// Start starts the init, or an exec when ExecID is set.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := sb.Process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	published := s.beginStart(p)
	defer published()
	if r.ExecID == "" {
		if err := sb.Start(ctx); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		pid := uint32(sb.Init().Pid())
		s.send(&eventstypes.TaskStart{ContainerID: r.ID, Pid: pid})
		// Once the workspace and its waiters are built the shim mostly
		// idles for the sandbox's life: hand back the heap the setup used.
		time.AfterFunc(idleTrimDelay, debug.FreeOSMemory)
		return &taskAPI.StartResponse{Pid: pid}, nil
	}
	if _, err := sb.StartExec(ctx, r.ExecID); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: uint32(p.Pid())})
	return &taskAPI.StartResponse{Pid: uint32(p.Pid())}, nil
}

// Delete removes an exec, or the whole sandbox for the init.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		p, err := sb.DeleteExec(r.ExecID)
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		status, at := p.Exit()
		return &taskAPI.DeleteResponse{Pid: uint32(p.Pid()), ExitStatus: uint32(status), ExitedAt: protobuf.ToTimestamp(at)}, nil
	}
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	if err := sb.Delete(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	init := sb.Init()
	if !sb.Started() {
		// Never started: Destroy killed it; let its reaper record that.
		<-init.Done()
	}
	init.Close()
	s.mu.Lock()
	delete(s.sandboxes, r.ID)
	server := s.apis[r.ID]
	delete(s.apis, r.ID)
	s.mu.Unlock()
	if server != nil {
		server.Close()
	}
	status, at := init.Exit()
	s.send(&eventstypes.TaskDelete{
		ContainerID: r.ID,
		Pid:         uint32(init.Pid()),
		ExitStatus:  uint32(status),
		ExitedAt:    protobuf.ToTimestamp(at),
	})
	return &taskAPI.DeleteResponse{Pid: uint32(init.Pid()), ExitStatus: uint32(status), ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Exec registers an exec process.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "sandbox %s: exec without an exec id", r.ID)
	}
	if r.Spec == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "sandbox %s: exec %q has no process spec", r.ID, r.ExecID)
	}
	var ps specs.Process
	if err := typeurl.UnmarshalTo(r.Spec, &ps); err != nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "sandbox %s: exec %q: bad process spec: %v", r.ID, r.ExecID, err)
	}
	if _, err := sb.Exec(ctx, r.ExecID, &ps, process.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

// ResizePty resizes a process' terminal.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	switch err := p.Resize(r.Width, r.Height); {
	case err == nil, errors.Is(err, process.ErrNoTerminal), errors.Is(err, process.ErrNotStarted):
		// As the runc shim: resizing a process without a terminal, or
		// before its terminal exists (nerdctl exec -it resizes before
		// Start), is a no-op; the spec's console size applies at start.
		return empty, nil
	default:
		return nil, errgrpc.ToGRPC(fmt.Errorf("sandbox %s: resize %q: %w", r.ID, r.ExecID, err))
	}
}

// State reports a process.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	sb, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	var st task.Status
	switch p.Status() {
	case process.Created, process.Starting:
		st = task.Status_CREATED
	case process.Running:
		st = task.Status_RUNNING
		if r.ExecID == "" && !sb.Started() {
			st = task.Status_CREATED
		} else if sb.Paused() {
			st = task.Status_PAUSED
		}
	default:
		st = task.Status_STOPPED
	}
	status, at := p.Exit()
	id := p.ID
	if r.ExecID == "" {
		id = sb.ID
	}
	return &taskAPI.StateResponse{
		ID:         id,
		Bundle:     sb.Bundle,
		Pid:        uint32(p.Pid()),
		Status:     st,
		Stdin:      p.Stdio.Stdin,
		Stdout:     p.Stdio.Stdout,
		Stderr:     p.Stdio.Stderr,
		Terminal:   p.Stdio.Terminal,
		ExitStatus: uint32(status),
		ExitedAt:   protobuf.ToTimestamp(at),
		ExecID:     r.ExecID,
	}, nil
}

// Pause freezes the sandbox.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if err := sb.Pause(); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskPaused{ContainerID: r.ID})
	return empty, nil
}

// Resume thaws it.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if err := sb.Resume(); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskResumed{ContainerID: r.ID})
	return empty, nil
}

// Kill signals a process, or every process of the sandbox.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if err := sb.Kill(r.ExecID, syscall.Signal(r.Signal), r.All); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// Pids lists the sandbox's processes, naming exec ids where known.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	pids, err := sb.Pids()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	execs := sb.ExecIDs()
	var out []*task.ProcessInfo
	for _, pid := range pids {
		info := &task.ProcessInfo{Pid: uint32(pid)}
		if id, ok := execs[pid]; ok {
			a, err := typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: id})
			if err != nil {
				return nil, errgrpc.ToGRPC(fmt.Errorf("sandbox %s: marshal process %d info: %w", r.ID, pid, err))
			}
			info.Info = a
		}
		out = append(out, info)
	}
	return &taskAPI.PidsResponse{Processes: out}, nil
}

// CloseIO closes a process' stdin.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		if err := p.CloseStdin(); err != nil {
			return nil, errgrpc.ToGRPCf(errdefs.ErrUnknown, "sandbox %s: close stdin of %q: %v", r.ID, r.ExecID, err)
		}
	}
	return empty, nil
}

// Checkpoint is not supported: a sandbox's secrets must never reach an image.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "sandbox %s: checkpoint is not supported by io.sandbox.v1", r.ID)
}

// Update applies new cgroup resources, and what its annotations ask of the
// workspace (a memory limit, a reset).
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	req := sandbox.UpdateRequest{Annotations: r.Annotations}
	if r.Resources != nil {
		var res specs.LinuxResources
		if err := typeurl.UnmarshalTo(r.Resources, &res); err != nil {
			return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "sandbox %s: update: bad resources: %v", r.ID, err)
		}
		req.Resources = &res
	}
	if err := sb.Update(ctx, req); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// Wait blocks until the process exited, or the caller gives up.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		return nil, errgrpc.ToGRPC(ctx.Err())
	}
	status, at := p.Exit()
	return &taskAPI.WaitResponse{ExitStatus: uint32(status), ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Connect tells containerd (again, after its restart) who serves the task.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid int
	if sb, err := s.get(r.ID); err == nil {
		pid = sb.Init().Pid()
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: uint32(pid)}, nil
}

// Shutdown exits the shim once it serves no sandbox.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	s.mu.Lock()
	n := len(s.sandboxes)
	s.mu.Unlock()
	if n > 0 {
		return empty, nil
	}
	s.shutdown.Shutdown()
	return empty, nil
}

// Stats returns the sandbox's cgroup metrics.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	sb, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	stats, err := sb.Stats()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	data, err := typeurl.MarshalAny(stats)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("sandbox %s: marshal stats: %w", r.ID, err))
	}
	return &taskAPI.StatsResponse{Stats: typeurl.MarshalProto(data)}, nil
}
