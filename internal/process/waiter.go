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

// NewWaiterSocket returns the shim's and the waiter's ends of its socket;
// the waiter's end goes into lp.ExtraFiles (fd 3).
func NewWaiterSocket() (shim, waiter *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("waiter socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "waiter-shim"), os.NewFile(uintptr(fds[1]), "waiter"), nil
}

// StartWaiter starts lp (whose ExtraFiles hold child) with run. onGone runs
// if the waiter exits without having been used.
func StartWaiter(lp *libcontainer.Process, run func(*libcontainer.Process) error, sock, child *os.File, onGone func()) (*Waiter, error) {
	err := run(lp)
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
	w := &Waiter{lp: lp, sock: sock, pid: pid, done: make(chan struct{}), onGone: onGone}
	go w.reap()
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
