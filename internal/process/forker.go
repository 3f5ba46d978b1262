package process

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ForkerHello is what a reaper that forks waiters sends first on its
// control socket (see libexec/reaper).
const ForkerHello = "C1"

// ErrForkRefused means the reaper could not fork (its pids limit is
// reached, or it is out of memory): the caller builds the waiter the slow
// way instead.
var ErrForkRefused = errors.New("reaper could not fork a waiter")

// Forker asks a user container's reaper, which already sits in every
// namespace of the container, to fork waiters: a fork of a small static
// program instead of a libcontainer join (the shim binary re-executed as
// runc init, about ten cgroup moves). The reaper is their parent, so it
// reports their exits over the control socket; the shim holds a pidfd of
// each for signals, so a reused pid can never be hit.
type Forker struct {
	sock *os.File
	// fd is sock's descriptor, taken once: read blocks on it while Close
	// runs, and only read closes it (after the loop), so the number is
	// never reused under a blocked receive.
	fd int

	mu       sync.Mutex
	cookie   uint64
	pending  map[uint64]chan forkReply
	children map[int32]*forkedChild // by pid in the container
	err      error                  // once the control socket is gone
	// sendMu keeps one request at a time on the socket, and guards closed.
	sendMu sync.Mutex
	closed bool
}

type forkReply struct {
	child *forkedChild
	errno syscall.Errno
}

// forkedChild is one process the reaper forked for the shim.
type forkedChild struct {
	nspid  int32
	exited chan struct{}
	status int

	mu    sync.Mutex
	pidfd int // -1 once the exit was seen
}

// NewForker takes the shim's end of a reaper's control socket and waits up
// to timeout for its hello.
func NewForker(sock *os.File, timeout time.Duration) (*Forker, error) {
	setReceiveTimeout(sock, timeout)
	msg, fd, err := recvMessage(sock)
	if fd != nil {
		fd.Close()
	}
	if err == nil && msg != ForkerHello {
		err = fmt.Errorf("answered %q, not %q", msg, ForkerHello)
	}
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("reaper hello: %w: the sandbox-reaper binary does not match this shim (install the one built with it)", err)
	}
	setReceiveTimeout(sock, 0)
	f := &Forker{sock: sock, fd: int(sock.Fd()), pending: map[uint64]chan forkReply{}, children: map[int32]*forkedChild{}}
	go f.read()
	return f, nil
}

// read takes the reaper's answers and exit reports until the socket ends,
// which happens when the reaper (and with it every process it forked) dies.
func (f *Forker) read() {
	buf := make([]byte, 64)
	var readErr error
	for {
		n, _, _, _, err := unix.Recvmsg(f.fd, buf, nil, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			readErr = err
			break
		}
		msg := buf[:n]
		switch {
		case n == 13 && (msg[0] == 'P' || msg[0] == 'E'):
			cookie := binary.NativeEndian.Uint64(msg[1:9])
			value := int32(binary.NativeEndian.Uint32(msg[9:13]))
			f.mu.Lock()
			ch := f.pending[cookie]
			delete(f.pending, cookie)
			var reply forkReply
			if msg[0] == 'P' {
				// Registered before the next packet is read: the reaper sends a
				// child's "P" before its "X".
				reply.child = &forkedChild{nspid: value, exited: make(chan struct{}), pidfd: -1}
				f.children[value] = reply.child
			} else {
				reply.errno = syscall.Errno(value)
			}
			f.mu.Unlock()
			if ch != nil {
				ch <- reply
			}
		case n == 9 && msg[0] == 'X':
			pid := int32(binary.NativeEndian.Uint32(msg[1:5]))
			status := syscall.WaitStatus(binary.NativeEndian.Uint32(msg[5:9]))
			f.mu.Lock()
			c := f.children[pid]
			delete(f.children, pid)
			f.mu.Unlock()
			if c != nil {
				c.exit(exitCode(status))
			}
		}
	}
	if readErr == nil {
		readErr = errors.New("reaper closed its control socket")
	}
	f.sendMu.Lock()
	f.closed = true
	f.sock.Close()
	f.sendMu.Unlock()
	f.mu.Lock()
	f.err = fmt.Errorf("reaper control: %w", readErr)
	children, pending := f.children, f.pending
	f.children, f.pending = map[int32]*forkedChild{}, map[uint64]chan forkReply{}
	f.mu.Unlock()
	for _, ch := range pending {
		close(ch)
	}
	// The reaper is gone, so the kernel kills its whole PID namespace: each
	// child's exit is that SIGKILL, once its pidfd says it is over.
	for _, c := range children {
		go c.awaitKill()
	}
}

// Close drops the control socket; the reaper then only reaps. Call it once
// the container is gone: exits are no longer reported after it.
func (f *Forker) Close() {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if !f.closed {
		// Ends read's receive, which then closes the socket.
		f.closed = true
		_ = unix.Shutdown(f.fd, unix.SHUT_RDWR)
	}
}

// ForkStart is how to fork one waiter.
type ForkStart struct {
	// Hello is the waiter's first packet (see WaiterStart).
	Hello string
	// Timeout bounds the wait for the reaper's answer and the hello.
	Timeout time.Duration
	// OnGone runs if the waiter exits without having been used.
	OnGone func()
	// Stdin becomes the waiter's fd 0 (the workspace's platform ptmx, see
	// libexec/reaper); nil leaves the reaper's /dev/null.
	Stdin *os.File
}

// Fork asks the reaper for one waiter and waits for its hello, which
// carries the waiter's host pid and a pidfd (SCM_CREDENTIALS, SCM_PIDFD).
func (f *Forker) Fork(fs ForkStart) (*Waiter, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("waiter socket: %w", err)
	}
	sock := os.NewFile(uintptr(fds[0]), "waiter-shim")
	// The hello tells who sent it: the kernel adds the sender's pid (as the
	// host sees it) and a pidfd of the sender.
	_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	passPidfd := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSPIDFD, 1) == nil
	rights := []int{fds[1]}
	if fs.Stdin != nil {
		rights = append(rights, int(fs.Stdin.Fd()))
	}
	reply, err := f.request(rights, fs.Timeout)
	unix.Close(fds[1])
	if err != nil {
		sock.Close()
		return nil, err
	}
	child := reply.child
	setReceiveTimeout(sock, fs.Timeout)
	msg, hostPid, pidfd, err := recvHello(sock)
	_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 0)
	if passPidfd {
		_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSPIDFD, 0)
	}
	if err == nil && hostPid <= 0 {
		err = errors.New("hello without the sender's pid")
	}
	if err == nil && pidfd < 0 {
		// Kernels before 6.5 have no SCM_PIDFD: the pid cannot have been
		// reused yet, since the reaper reports the child's exit first and
		// that report has not come (checked below).
		if pidfd, err = unix.PidfdOpen(hostPid, 0); err != nil {
			err = fmt.Errorf("pidfd of waiter %d: %w", hostPid, err)
		}
	}
	if err != nil {
		sock.Close()
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		// Closing its socket makes a waiter that never said hello exit; the
		// reaper reports it and that report is dropped here.
		return nil, fmt.Errorf("waiter hello: %w", err)
	}
	child.mu.Lock()
	select {
	case <-child.exited:
		child.mu.Unlock()
		unix.Close(pidfd)
		sock.Close()
		return nil, ErrWaiterGone
	default:
	}
	child.pidfd = pidfd
	child.mu.Unlock()
	go child.watch(hostPid)
	if msg != fs.Hello {
		// Ended here, not through OnGone: it never was a waiter.
		_ = child.signal(syscall.SIGKILL)
		sock.Close()
		return nil, fmt.Errorf("waiter hello: waiter answered %q, not %q: the sandbox-reaper binary does not match this shim (install the one built with it)", msg, fs.Hello)
	}
	return newWaiter(child, sock, hostPid, fs.OnGone), nil
}

// request sends one fork request with the waiter's socket end and waits
// for the reaper's answer.
func (f *Forker) request(rights []int, timeout time.Duration) (forkReply, error) {
	ch := make(chan forkReply, 1)
	f.mu.Lock()
	if f.err != nil {
		err := f.err
		f.mu.Unlock()
		return forkReply{}, err
	}
	f.cookie++
	cookie := f.cookie
	f.pending[cookie] = ch
	f.mu.Unlock()
	msg := make([]byte, 9)
	msg[0] = 'F'
	binary.NativeEndian.PutUint64(msg[1:], cookie)
	f.sendMu.Lock()
	var err error = unix.EPIPE
	if !f.closed {
		err = unix.Sendmsg(f.fd, msg, unix.UnixRights(rights...), nil, 0)
	}
	f.sendMu.Unlock()
	if err != nil {
		f.forget(cookie)
		return forkReply{}, fmt.Errorf("reaper control: %w", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case reply, ok := <-ch:
		if !ok {
			return forkReply{}, f.closedErr()
		}
		if reply.child == nil {
			return forkReply{}, fmt.Errorf("%w: %w", ErrForkRefused, reply.errno)
		}
		return reply, nil
	case <-t.C:
		// A late answer finds no one waiting; its waiter, whose socket end
		// is closed by then, exits at once.
		f.forget(cookie)
		return forkReply{}, fmt.Errorf("reaper did not answer a fork within %v", timeout)
	}
}

func (f *Forker) forget(cookie uint64) {
	f.mu.Lock()
	delete(f.pending, cookie)
	f.mu.Unlock()
}

func (f *Forker) closedErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	return errors.New("reaper control closed")
}

// recvHello reads a waiter's hello with the credentials the kernel added.
func recvHello(sock *os.File) (msg string, pid, pidfd int, err error) {
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4)+unix.CmsgSpace(4*4))
	pid, pidfd = -1, -1
	var n, oobn int
	for {
		n, oobn, _, _, err = unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return "", -1, -1, err
	}
	scms, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return "", -1, -1, err
	}
	for _, scm := range scms {
		if scm.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch scm.Header.Type {
		case unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(&scm); err == nil {
				pid = int(cred.Pid)
			}
		case unix.SCM_PIDFD:
			if len(scm.Data) >= 4 {
				pidfd = int(int32(binary.NativeEndian.Uint32(scm.Data)))
			}
		case unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(&scm); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}
	return string(buf[:n]), pid, pidfd, nil
}

// exit records the status the reaper reported.
func (c *forkedChild) exit(status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.exited:
		return
	default:
	}
	c.status = status
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
	close(c.exited)
}

// watch reports the child's exit as soon as it is a zombie, from its
// /proc entry, without waiting for the reaper: the reaper shares the
// workspace's CPU (and its quota) with user code, so during a fork bomb
// its report can come late. The reaper's report stays the fallback.
func (c *forkedChild) watch(hostPid int) {
	c.mu.Lock()
	fd := -1
	if c.pidfd >= 0 {
		fd, _ = unix.FcntlInt(uintptr(c.pidfd), unix.F_DUPFD_CLOEXEC, 0)
	}
	c.mu.Unlock()
	if fd < 0 {
		return
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return
	}
	// The runtime's poller waits for the pidfd to become readable (the
	// process exited), without a thread per waiter.
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0 || (err != nil && err != unix.EINTR)
	})
	if status, ok := c.zombieStatus(hostPid); ok {
		c.exit(status)
	}
}

// zombieStatus reads the exit status of the exited, not yet reaped child
// from /proc/PID/stat (exit_code, Linux 3.5). It is the child's only if
// the child is still unreaped after the read (its pid cannot have been
// reused while it is a zombie), which the pidfd tells.
func (c *forkedChild) zombieStatus(hostPid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", hostPid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	// Fields after the comm start with field 3 (state); exit_code is 52.
	f := strings.Fields(s[i+1:])
	if len(f) < 50 || f[0] != "Z" {
		return 0, false
	}
	code, err := strconv.Atoi(f[49])
	if err != nil {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pidfd < 0 || unix.PidfdSendSignal(c.pidfd, 0, nil, 0) != nil {
		return 0, false
	}
	return exitCode(syscall.WaitStatus(code)), true
}

// awaitKill waits until the child is gone after its reaper died, and
// reports the SIGKILL the kernel ended it with.
func (c *forkedChild) awaitKill() {
	c.mu.Lock()
	fd := -1
	if c.pidfd >= 0 {
		fd, _ = unix.Dup(c.pidfd)
	}
	c.mu.Unlock()
	if fd >= 0 {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(pfd, -1); err != unix.EINTR {
				break
			}
		}
		unix.Close(fd)
	}
	c.exit(128 + int(unix.SIGKILL))
}

// signal sends sig through the pidfd: never to another process that
// reused the pid.
func (c *forkedChild) signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("unsupported signal %v", sig)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pidfd < 0 {
		return os.ErrProcessDone
	}
	err := unix.PidfdSendSignal(c.pidfd, s, nil, 0)
	if err == unix.ESRCH {
		return os.ErrProcessDone
	}
	return err
}

func (c *forkedChild) wait() int {
	<-c.exited
	return c.status
}
