// Package process runs one container process (a task's init or an exec)
// through libcontainer and owns everything about it: stdio, the single wait
// on its pid, and its exit status.
package process

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/opencontainers/runc/libcontainer"
)

// Status is where a process is in its life.
type Status int

const (
	Created Status = iota
	// Starting: a Start call claimed the process (see Claim).
	Starting
	Running
	Stopped
)

func (s Status) String() string {
	switch s {
	case Created, Starting:
		return "created"
	case Running:
		return "running"
	default:
		return "stopped"
	}
}

// ErrNotStarted and ErrFinished say why a process cannot take a signal;
// ErrNoTerminal why it cannot be resized.
var (
	ErrNotStarted = errors.New("process not started")
	ErrFinished   = errors.New("process already finished")
	ErrNoTerminal = errors.New("process has no terminal")
)

// Process is one process libcontainer runs.
type Process struct {
	// ID is containerd's exec id, or the task id for the init.
	ID    string
	Stdio Stdio

	lp *libcontainer.Process
	// signal reaches the running process: libcontainer's for an init, the
	// waiter's (a pidfd) for an exec.
	signal func(os.Signal) error
	io     *stdio
	// waiterFiles are an exec's stdio ends for its waiter, from OpenStdio
	// until StartIn sends them.
	waiterFiles []*os.File

	mu         sync.Mutex
	status     Status
	pid        int
	exitStatus int
	exitedAt   time.Time
	done       chan struct{}
	// startDone is closed when Start or StartIn returned: an exit seen
	// before must wait for stdio to be in place.
	startDone  chan struct{}
	startOnce  sync.Once
	onExit     func(*Process)
	beforeExit func()
}

func (p *Process) setIO(io *stdio) {
	p.mu.Lock()
	p.io = io
	p.mu.Unlock()
}

func (p *Process) stdio() *stdio {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.io
}

// New prepares a process; nothing runs, and no stdio is opened, until it
// starts (Start, or StartIn a pooled waiter).
func New(id string, cfg Stdio) *Process {
	// A logging binary knows the process by this id, as in the runc shim:
	// the task id for the init, the exec id for an exec.
	cfg.logID = id
	return &Process{ID: id, Stdio: cfg, done: make(chan struct{}), startDone: make(chan struct{})}
}

// ErrAlreadyStarted is returned to a second Start of one process.
var ErrAlreadyStarted = errors.New("process already started")

// Claim moves a created process to Starting, once: concurrent Start calls
// for one exec must not both run it.
func (p *Process) Claim() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != Created {
		return ErrAlreadyStarted
	}
	p.status = Starting
	return nil
}

// Started is closed once the process' start finished, whether it ran,
// failed or was abandoned.
func (p *Process) Started() <-chan struct{} { return p.startDone }

// Abandon ends a claimed process that will not start.
func (p *Process) Abandon() {
	p.setExited(-1)
	p.endStart()
}

func (p *Process) endStart() { p.startOnce.Do(func() { close(p.startDone) }) }

// Start starts lp with run (libcontainer's Container.Start for an init,
// Container.Run for a user container's reaper). From then on this Process
// is the only waiter on its pid: onExit runs once it exited and its output
// drained.
func (p *Process) Start(run func(*libcontainer.Process) error, lp *libcontainer.Process, onExit func(*Process)) error {
	defer p.endStart()
	p.mu.Lock()
	p.lp = lp
	p.mu.Unlock()
	io, err := newStdio(p.Stdio, p.lp)
	if err != nil {
		p.setExited(-1)
		return err
	}
	p.setIO(io)
	if err := run(p.lp); err != nil {
		p.io.close()
		p.setExited(-1)
		return err
	}
	pid, err := p.lp.Pid()
	if err != nil {
		p.io.close()
		p.setExited(-1)
		return fmt.Errorf("process pid: %w", err)
	}
	p.mu.Lock()
	p.pid = pid
	p.signal = lp.Signal
	p.status = Running
	p.mu.Unlock()
	ioErr := p.io.started()
	p.mu.Lock()
	p.onExit = onExit
	p.mu.Unlock()
	go p.reap()
	if ioErr != nil {
		_ = p.lp.Signal(syscall.SIGKILL)
		return ioErr
	}
	return nil
}

// reap is the one wait on the process. libcontainer waits for its own
// helper processes, and the shim library's SIGCHLD reaper is disabled, so no
// other code path can take this exit status away.
func (p *Process) reap() {
	p.exitedWith(waitStatus(p.lp.Wait()))
}

// unknownExit is the status of a process whose wait status was lost.
const unknownExit = 255

// waitStatus is the exit status of a process libcontainer waited for.
func waitStatus(ps *os.ProcessState, _ error) int {
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			return exitCode(ws)
		}
	}
	return unknownExit
}

// exitCode is the status containerd reports: the exit code, or 128 plus
// the signal that killed the process.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// exitedWith records the exit once stdio is in place and drained, then
// reports it.
func (p *Process) exitedWith(status int) {
	<-p.startDone
	if io := p.stdio(); io != nil {
		io.wait()
	}
	p.mu.Lock()
	onExit, beforeExit := p.onExit, p.beforeExit
	p.mu.Unlock()
	if beforeExit != nil {
		beforeExit()
	}
	p.setExited(status)
	if onExit != nil {
		onExit(p)
	}
}

// BeforeExit sets f to run once the process exited, before its exit is
// recorded: a task's init is not reported exited (Wait, State, the exit
// event) while processes that die with it still run, as containerd expects.
func (p *Process) BeforeExit(f func()) {
	p.mu.Lock()
	p.beforeExit = f
	p.mu.Unlock()
}

func (p *Process) setExited(status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == Stopped {
		return
	}
	p.status = Stopped
	p.exitStatus = status
	p.exitedAt = time.Now()
	close(p.done)
}

// Pid is the host pid, 0 before start.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// Status reports the life stage.
func (p *Process) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Exit returns the exit status and time; valid once Done is closed.
func (p *Process) Exit() (int, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitStatus, p.exitedAt
}

// Done is closed when the process exited (or failed to start).
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process itself.
func (p *Process) Signal(sig os.Signal) error {
	switch p.Status() {
	case Created, Starting:
		return ErrNotStarted
	case Stopped:
		return ErrFinished
	}
	p.mu.Lock()
	signal := p.signal
	p.mu.Unlock()
	if err := signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return ErrFinished
		}
		return err
	}
	return nil
}

// CloseStdin implements containerd's CloseIO.
func (p *Process) CloseStdin() error {
	if io := p.stdio(); io != nil {
		return io.closeStdin()
	}
	return nil
}

// Resize implements containerd's ResizePty.
func (p *Process) Resize(width, height uint32) error {
	if !p.Stdio.Terminal {
		return ErrNoTerminal
	}
	io := p.stdio()
	if io == nil {
		return ErrNotStarted
	}
	return io.resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// Close releases stdio; the process must have exited or never started.
func (p *Process) Close() {
	if io := p.stdio(); io != nil {
		io.close()
	}
}
