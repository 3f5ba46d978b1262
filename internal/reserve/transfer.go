package reserve

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxTransferPorts bounds one transfer, so Receive's buffers are fixed.
const maxTransferPorts = 64

// Send hands the reservation's sockets to the peer of conn (a unix socket)
// in one message: the ports as text ("8080,8888"), the sockets as
// SCM_RIGHTS in the same order. The sender's copies stay open.
func Send(conn *net.UnixConn, r *Reservation) error {
	if len(r.Listeners) == 0 || len(r.Listeners) > maxTransferPorts {
		return fmt.Errorf("send reservation: %d ports (want 1 to %d)", len(r.Listeners), maxTransferPorts)
	}
	var names []string
	var fds []int
	for _, l := range r.Listeners {
		names = append(names, strconv.Itoa(int(l.Port)))
		fds = append(fds, int(l.File.Fd()))
	}
	if _, _, err := conn.WriteMsgUnix([]byte(strings.Join(names, ",")), unix.UnixRights(fds...), nil); err != nil {
		return fmt.Errorf("send reservation: %w", err)
	}
	return nil
}

// Receive reads one Send from conn. Every socket received is checked to be a
// listening TCP socket bound to the port named for it.
func Receive(conn *net.UnixConn) (_ *Reservation, retErr error) {
	buf := make([]byte, 6*maxTransferPorts)
	oob := make([]byte, unix.CmsgSpace(4*maxTransferPorts))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("receive reservation: %w", err)
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("receive reservation: %w", err)
	}
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err == nil {
			fds = append(fds, got...)
		}
	}
	res := &Reservation{}
	defer func() {
		if retErr != nil {
			for _, fd := range fds[len(res.Listeners):] {
				unix.Close(fd)
			}
			res.Close()
		}
	}()
	names := strings.Split(string(buf[:n]), ",")
	if len(names) != len(fds) {
		return nil, fmt.Errorf("receive reservation: %d ports named, %d sockets", len(names), len(fds))
	}
	for i, name := range names {
		port, err := strconv.ParseUint(name, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("receive reservation: port %q", name)
		}
		if err := checkListener(fds[i], uint16(port)); err != nil {
			return nil, fmt.Errorf("receive reservation: %w", err)
		}
		res.Listeners = append(res.Listeners, Listener{
			Port: uint16(port), File: os.NewFile(uintptr(fds[i]), "reserved-port-"+name), DualStack: isIPv6(fds[i]),
		})
	}
	return res, nil
}

func checkListener(fd int, port uint16) error {
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || listening != 1 {
		return fmt.Errorf("socket for port %d is not listening (%v)", port, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return err
	}
	var bound int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		bound = a.Port
	case *unix.SockaddrInet6:
		bound = a.Port
	default:
		return errors.New("socket is not TCP/IP")
	}
	if bound != int(port) {
		return fmt.Errorf("socket named %d is bound to %d", port, bound)
	}
	return nil
}

func isIPv6(fd int) bool {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	return err == nil && domain == unix.AF_INET6
}
