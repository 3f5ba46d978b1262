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

// Waiter is an exec libcontainer started ahead of need: it already sits in
// the workspace's namespaces and cgroups, as the workspace user, and waits
// for one request on its socket. Using it costs no cgroup migration, which
// during a fork bomb takes up to hundreds of milliseconds per hierarchy.
type Waiter struct {
	lp   *libcontainer.Process
	sock *os.File
	pid  int

	mu     sync.Mutex
	owner  *Process
	taken  bool
	exited bool
	done   chan struct{}
	onGone func()
}

// WaiterStart is how to start one waiter.
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

// StartWaiter starts a waiter and waits for its hello.
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
	w := &Waiter{lp: lp, sock: sock, pid: pid, done: make(chan struct{}), onGone: ws.OnGone}
	go w.reap()
	tv := unix.NsecToTimeval(handshakeTimeout.Nanoseconds())
	_ = unix.SetsockoptTimeval(int(sock.Fd()), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	msg, fd, err := recvMessage(sock)
	if fd != nil {
		fd.Close()
	}
	if err == nil && msg != ws.Hello {
		err = fmt.Errorf("waiter answered %q, not %q: the sandbox-reaper binary does not match this shim (install the one built with it)", msg, ws.Hello)
	}
	if err != nil {
		w.Discard()
		_ = lp.Signal(syscall.SIGKILL)
		return nil, fmt.Errorf("waiter hello: %w", err)
	}
	return w, nil
}

// reap is the one wait on the waiter's pid; once an exec owns it, the exit
// is the exec's.
func (w *Waiter) reap() {
	ps, _ := w.lp.Wait()
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
	owner.exitedWith(ps)
}

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
	p.lp = w.lp
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
			_ = w.lp.Signal(syscall.SIGKILL)
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
	tv := unix.NsecToTimeval(handshakeTimeout.Nanoseconds())
	_ = unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
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
	oob := make([]byte, unix.CmsgSpace(4*4))
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
