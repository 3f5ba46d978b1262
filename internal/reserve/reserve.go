// Package reserve makes the reserved control-plane ports: one listening TCP
// socket per port in a sandbox's network namespace, on the dual-stack
// wildcard address, never SO_REUSEPORT, so that no other socket of the
// namespace can bind the port on any address with any option. Make is the one
// entry point; the shim calls it before the control plane exists, and the OCI
// hook (hooks/) calls it from a container's OCI state. Whoever holds the
// sockets holds the ports: the holder keeps them open for the sandbox's life.
package reserve

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Request is one reservation to make.
type Request struct {
	// SandboxID names the sandbox (or container) in errors; empty for a
	// caller that names it itself.
	SandboxID string
	// NetworkNamespace is the namespace to make the sockets in; nil is the
	// caller's own.
	NetworkNamespace *os.File
	// Ports to reserve, each once.
	Ports []uint16
}

// Listener is one reserved port.
type Listener struct {
	Port uint16
	// File is the listening socket.
	File *os.File
	// DualStack is false where the namespace has no IPv6 and the socket
	// listens on 0.0.0.0 only.
	DualStack bool
}

// Reservation is the listeners of one Request, in its order.
type Reservation struct {
	Listeners []Listener
	// Ephemeral is the namespace's ip_local_port_range.
	EphemeralLow, EphemeralHigh uint16
}

// backlog is the listeners' queue; the kernel caps it at net.core.somaxconn.
const backlog = 4096

// Make creates the listeners of req. On error none is left open.
func Make(req Request) (*Reservation, error) {
	fail := func(err error) (*Reservation, error) {
		if req.SandboxID == "" {
			return nil, fmt.Errorf("reserve ports: %w", err)
		}
		return nil, fmt.Errorf("sandbox %s: reserve ports: %w", req.SandboxID, err)
	}
	seen := map[uint16]bool{}
	for _, p := range req.Ports {
		if p == 0 || seen[p] {
			return fail(fmt.Errorf("port %d is zero or listed twice", p))
		}
		seen[p] = true
	}
	var res *Reservation
	err := inNamespace(req.NetworkNamespace, func() error {
		var err error
		res, err = listenAll(req.Ports)
		return err
	})
	if err != nil {
		return fail(err)
	}
	return res, nil
}

func listenAll(ports []uint16) (_ *Reservation, retErr error) {
	res := &Reservation{}
	defer func() {
		if retErr != nil {
			res.Close()
		}
	}()
	for _, port := range ports {
		l, err := listen(port)
		if err != nil {
			return nil, fmt.Errorf("port %d: %w", port, err)
		}
		res.Listeners = append(res.Listeners, l)
	}
	low, high, err := ephemeralRange()
	if err != nil {
		return nil, err
	}
	res.EphemeralLow, res.EphemeralHigh = low, high
	return res, nil
}

// listen makes one listener: [::] with IPV6_V6ONLY off, which takes the port
// on every IPv4 and IPv6 address at once; 0.0.0.0 where IPv6 is missing.
func listen(port uint16) (Listener, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	dualStack := err == nil
	if err == nil {
		if err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet6{Port: int(port)})
		}
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			// IPv6 disabled in the namespace (disable_ipv6): fall back.
			unix.Close(fd)
			dualStack = false
		} else if err != nil {
			unix.Close(fd)
			return Listener{}, fmt.Errorf("bind [::]:%d: %w", port, err)
		}
	} else if !errors.Is(err, unix.EAFNOSUPPORT) {
		return Listener{}, fmt.Errorf("socket: %w", err)
	}
	if !dualStack {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return Listener{}, fmt.Errorf("socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port)}); err != nil {
			unix.Close(fd)
			return Listener{}, fmt.Errorf("bind 0.0.0.0:%d: %w", port, err)
		}
	}
	// Bound but not listening is no reservation: another SO_REUSEADDR
	// socket could still bind and listen first.
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return Listener{}, fmt.Errorf("listen on %d: %w", port, err)
	}
	return Listener{Port: port, File: os.NewFile(uintptr(fd), "reserved-port-"+strconv.Itoa(int(port))), DualStack: dualStack}, nil
}

// ephemeralRange reads ip_local_port_range of the calling thread's network
// namespace (procfs resolves /proc/sys/net by the opening thread's).
func ephemeralRange() (uint16, uint16, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, fmt.Errorf("ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("ephemeral port range: %q", b)
	}
	low, err1 := strconv.ParseUint(f[0], 10, 16)
	high, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("ephemeral port range: %q", b)
	}
	return uint16(low), uint16(high), nil
}

// inNamespace runs f on a locked thread in the network namespace ns (nil:
// the caller's). Sockets belong to the namespace they were made in, so f's
// sockets stay there after the thread goes back. A thread that cannot go
// back stays locked and dies with its goroutine.
func inNamespace(ns *os.File, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if ns == nil {
			defer runtime.UnlockOSThread()
			errc <- f()
			return
		}
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		err = f()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Files are the listening sockets, in order: the control plane's fds 3...
func (r *Reservation) Files() []*os.File {
	var out []*os.File
	for _, l := range r.Listeners {
		out = append(out, l.File)
	}
	return out
}

// Ports are the reserved ports, in order.
func (r *Reservation) Ports() []uint16 {
	var out []uint16
	for _, l := range r.Listeners {
		out = append(out, l.Port)
	}
	return out
}

// Close releases the ports (once every other copy is closed too).
func (r *Reservation) Close() {
	if r == nil {
		return
	}
	for _, l := range r.Listeners {
		l.File.Close()
	}
}
