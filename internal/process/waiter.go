package process

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// handshakeTimeout bounds the wait for a waiter's answer: a waiter that
// stops answering (frozen, stopped) fails the exec instead of hanging it.
const handshakeTimeout = 10 * time.Second

// ErrWaiterGone means the pooled process died before it was used (user
// code can kill it): the caller starts the exec the slow way instead.
var ErrWaiterGone = errors.New("pooled exec is gone")

// Waiter is an exec started ahead of need: it already sits in the
// workspace's namespaces and cgroups, under the reaper's uid, and waits for
// one request on its socket. Using it costs no cgroup migration, which
// during a fork bomb takes up to hundreds of milliseconds per hierarchy.
// The reaper forks most waiters (see Forker); StartWaiter builds one with
// libcontainer when it cannot.
type Waiter struct {
	proc waiterProcess
	sock *os.File
	pid  int

	mu     sync.Mutex
	owner  *Process
	taken  bool
	exited bool
	done   chan struct{}
	onGone func()
}

// waiterProcess is how the shim signals and waits for a waiter's process:
// through libcontainer for one it started, through the reaper's reports
// and a pidfd for one the reaper forked.
type waiterProcess interface {
	signal(os.Signal) error
	// wait returns the exit status (see exitCode) once the process exited.
	wait() int
}

// libcontainerProcess is a waiter libcontainer started: the shim's child.
type libcontainerProcess struct{ lp *libcontainer.Process }

func (l libcontainerProcess) signal(sig os.Signal) error { return l.lp.Signal(sig) }
func (l libcontainerProcess) wait() int                  { return waitStatus(l.lp.Wait()) }

// WaiterStart is how to start one waiter with libcontainer.
type WaiterStart struct {
	// Process is the waiter's libcontainer process; its socket end is
	// appended to ExtraFiles (fd 3 when it has none).
	Process *libcontainer.Process
	// Run starts it (a user container's Run).
	Run func(*libcontainer.Process) error
	// Hello is the first packet a waiter of the right protocol sends: a
	// helper binary of another version is refused before any request.
	Hello string
	// OnGone runs if the waiter exits without having been used.
	OnGone func()
}

// StartWaiter starts a waiter with libcontainer (a join of the workspace's
// namespaces and cgroups: the slow path) and waits for its hello.
func StartWaiter(ws WaiterStart) (*Waiter, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("waiter socket: %w", err)
	}
	sock, child := os.NewFile(uintptr(fds[0]), "waiter-shim"), os.NewFile(uintptr(fds[1]), "waiter")
	lp := ws.Process
	lp.ExtraFiles = append(lp.ExtraFiles, child)
	err = ws.Run(lp)
	child.Close()
	if err != nil {
		sock.Close()
		return nil, err
	}
	pid, err := lp.Pid()
	if err != nil {
		sock.Close()
		_ = lp.Signal(syscall.SIGKILL)
		return nil, err
	}
	w := newWaiter(libcontainerProcess{lp}, sock, pid, ws.OnGone)
	setReceiveTimeout(sock, handshakeTimeout)
	msg, fd, err := recvMessage(sock)
	if fd != nil {
		fd.Close()
	}
	if err := w.checkHello(msg, err, ws.Hello); err != nil {
		return nil, err
	}
	return w, nil
}

func newWaiter(proc waiterProcess, sock *os.File, pid int, onGone func()) *Waiter {
	w := &Waiter{proc: proc, sock: sock, pid: pid, done: make(chan struct{}), onGone: onGone}
	go w.reap()
	return w
}

// checkHello ends the waiter unless its first packet (msg, or the error
// reading it) is the hello of this shim's protocol.
func (w *Waiter) checkHello(msg string, err error, hello string) error {
	if err == nil && msg != hello {
		err = fmt.Errorf("waiter answered %q, not %q: the sandbox-reaper binary does not match this shim (install the one built with it)", msg, hello)
	}
	if err != nil {
		w.Discard()
		_ = w.proc.signal(syscall.SIGKILL)
		return fmt.Errorf("waiter hello: %w", err)
	}
	return nil
}

func setReceiveTimeout(sock *os.File, d time.Duration) {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	_ = unix.SetsockoptTimeval(int(sock.Fd()), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// reap is the one wait on the waiter's pid; once an exec owns it, the exit
// is the exec's.
func (w *Waiter) reap() {
	status := w.proc.wait()
	w.mu.Lock()
	w.exited = true
	owner, onGone := w.owner, w.onGone
	w.mu.Unlock()
	close(w.done)
	if owner == nil {
		w.sock.Close()
		if onGone != nil {
			onGone()
		}
		return
	}
	owner.exitedWith(status)
}

// Kill ends the waiter's process.
func (w *Waiter) Kill() { _ = w.proc.signal(syscall.SIGKILL) }

// Done is closed once the waiter's process was reaped.
func (w *Waiter) Done() <-chan struct{} { return w.done }

// Pid is the waiter's pid, which the exec keeps.
func (w *Waiter) Pid() int { return w.pid }

// Alive tells whether the waiter can still be used.
func (w *Waiter) Alive() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.exited && !w.taken
}

// Discard ends an unused waiter: closing its socket makes it exit.
func (w *Waiter) Discard() {
	w.mu.Lock()
	taken := w.taken
	w.taken = true
	w.mu.Unlock()
	if !taken {
		w.sock.Close()
	}
}

// take claims the waiter for p, once.
func (w *Waiter) take(p *Process) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.exited || w.taken {
		return ErrWaiterGone
	}
	w.taken = true
	w.owner = p
	return nil
}

// StartIn runs the claimed process in a waiter: stdio is set up here, the
// encoded request (spec.ExecRequest, whose terminal flag must match
// p.Stdio.Terminal) goes over the socket with the stdio descriptors, and
// the waiter answers with the pty master (terminal only) and then either an
// error or, by closing the socket on exec, success. ErrWaiterGone leaves p
// untouched for another waiter.
func (p *Process) StartIn(w *Waiter, req []byte, onExit func(*Process)) (retErr error) {
	p.mu.Lock()
	io, child := p.io, p.waiterFiles
	p.mu.Unlock()
	if io == nil {
		return errors.New("exec stdio not opened")
	}
	if err := w.take(p); err != nil {
		return err
	}
	p.mu.Lock()
	p.onExit = onExit
	p.signal = w.proc.signal
	p.pid = w.pid
	p.status = Running
	p.mu.Unlock()
	defer p.endStart()
	defer func() {
		if retErr != nil {
			// The waiter exits 127 after reporting; that exit is no exec's.
			p.mu.Lock()
			p.onExit = nil
			p.mu.Unlock()
			_ = w.proc.signal(syscall.SIGKILL)
			w.sock.Close()
			p.setExited(-1)
		}
	}()
	p.mu.Lock()
	p.waiterFiles = nil
	p.mu.Unlock()
	if !p.Stdio.Terminal {
		io.copyPipes()
	}
	fds := make([]int, len(child))
	for i, f := range child {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	sock := int(w.sock.Fd())
	// A message must fit the socket's send buffer whole; the shim is root.
	_ = unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, len(req)+64<<10)
	setReceiveTimeout(w.sock, handshakeTimeout)
	err := unix.Sendmsg(sock, req, oob, nil, 0)
	io.closeChildFiles()
	if err != nil {
		return fmt.Errorf("send exec request: %w", err)
	}
	for {
		msg, fd, err := recvMessage(w.sock)
		if errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("exec did not start within %v", handshakeTimeout)
		}
		if err != nil {
			return fmt.Errorf("exec request: %w", err)
		}
		switch {
		case msg == "":
			// EOF: the socket closed on exec.
			w.sock.Close()
			return nil
		case msg[0] == 'E':
			return errors.New(msg[1:])
		case msg[0] == 'M' && fd != nil && p.Stdio.Terminal:
			if err := io.attachConsole(fd); err != nil {
				return err
			}
			// The waiter holds the exec until the master is being read.
			if _, err := unix.Write(sock, []byte("A")); err != nil {
				return fmt.Errorf("exec request: %w", err)
			}
		default:
			if fd != nil {
				fd.Close()
			}
			return fmt.Errorf("exec request: unexpected answer %q", msg)
		}
	}
}

// OpenStdio opens an exec's stdio (FIFOs or log URIs, and the pipes a
// waiter gets) before a waiter is taken: a bad path or a client that never
// opens its end costs no waiter, and a retry with another waiter reuses it.
func (p *Process) OpenStdio() error {
	io, child, err := newWaiterStdio(p.Stdio)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.io, p.waiterFiles = io, child
	p.mu.Unlock()
	return nil
}

func recvMessage(sock *os.File) (string, *os.File, error) {
	buf := make([]byte, 2048)
	oob := make([]byte, unix.CmsgSpace(4*4)+unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		var fd *os.File
		if oobn > 0 {
			scms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return "", nil, err
			}
			for _, scm := range scms {
				fds, err := unix.ParseUnixRights(&scm)
				if err != nil {
					continue
				}
				for i, f := range fds {
					if i == 0 && fd == nil {
						fd = os.NewFile(uintptr(f), "pty-master")
					} else {
						unix.Close(f)
					}
				}
			}
		}
		return string(buf[:n]), fd, nil
	}
}
