package reserve

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// newNetns makes a network namespace for the test and returns it open.
func newNetns(t *testing.T) *os.File {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	f, err := NewNetworkNamespace()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// bindVariants tries the binds an attacker would, in ns, and returns those
// that succeeded.
func bindVariants(t *testing.T, ns *os.File, port int) []string {
	var got []string
	err := inNamespace(ns, func() error {
		type variant struct {
			name     string
			family   int
			addr     unix.Sockaddr
			v6only   bool
			reuse    bool
			reusePor bool
		}
		var vs []variant
		for _, opt := range []struct{ reuse, reusePort bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
			vs = append(vs,
				variant{"0.0.0.0", unix.AF_INET, &unix.SockaddrInet4{Port: port}, false, opt.reuse, opt.reusePort},
				variant{"127.0.0.1", unix.AF_INET, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}, false, opt.reuse, opt.reusePort},
				variant{"[::]", unix.AF_INET6, &unix.SockaddrInet6{Port: port}, false, opt.reuse, opt.reusePort},
				variant{"[::] v6only", unix.AF_INET6, &unix.SockaddrInet6{Port: port}, true, opt.reuse, opt.reusePort},
				variant{"::1", unix.AF_INET6, &unix.SockaddrInet6{Port: port, Addr: [16]byte{15: 1}}, true, opt.reuse, opt.reusePort},
			)
		}
		for _, v := range vs {
			fd, err := unix.Socket(v.family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			if v.family == unix.AF_INET6 && v.v6only {
				_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
			if v.reuse {
				_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
			if v.reusePor {
				_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
			if err := unix.Bind(fd, v.addr); err == nil {
				got = append(got, v.name)
			} else if !errors.Is(err, unix.EADDRINUSE) && !errors.Is(err, unix.EADDRNOTAVAIL) {
				t.Errorf("bind %s: %v", v.name, err)
			}
			unix.Close(fd)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestMakeHoldsEveryAddress(t *testing.T) {
	ns := newNetns(t)
	res, err := Make(Request{SandboxID: "test", NetworkNamespace: ns, Ports: []uint16{18080, 18888}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if got := res.Ports(); len(got) != 2 || got[0] != 18080 || got[1] != 18888 {
		t.Fatalf("ports %v", got)
	}
	if res.EphemeralLow == 0 || res.EphemeralHigh < res.EphemeralLow {
		t.Errorf("ephemeral range %d-%d", res.EphemeralLow, res.EphemeralHigh)
	}
	for _, l := range res.Listeners {
		if !l.DualStack {
			t.Errorf("port %d is not dual-stack", l.Port)
		}
		fd := int(l.File.Fd())
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
			t.Errorf("port %d not listening: %v %v", l.Port, v, err)
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); err != nil || v != 0 {
			t.Errorf("port %d has SO_REUSEPORT %v %v", l.Port, v, err)
		}
		if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err != nil || v != 0 {
			t.Errorf("port %d is v6only %v %v", l.Port, v, err)
		}
		if got := bindVariants(t, ns, int(l.Port)); len(got) > 0 {
			t.Errorf("port %d: binds got through, even as root: %v", l.Port, got)
		}
	}
	// The socket is in ns, not the test's namespace: the port is free here.
	if l, err := net.Listen("tcp", "127.0.0.1:18080"); err != nil {
		t.Errorf("port taken in the caller's namespace: %v", err)
	} else {
		l.Close()
	}
	// Released, the port is free again in ns: the test above meant something.
	res.Close()
	if got := bindVariants(t, ns, 18080); len(got) == 0 {
		t.Error("no bind works once the reservation is closed")
	}
}

func TestMakeRefusesDuplicatesAndTakenPorts(t *testing.T) {
	ns := newNetns(t)
	if _, err := Make(Request{SandboxID: "test", NetworkNamespace: ns, Ports: []uint16{18080, 18080}}); err == nil {
		t.Error("duplicate port accepted")
	}
	first, err := Make(Request{SandboxID: "test", NetworkNamespace: ns, Ports: []uint16{18080}})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := Make(Request{SandboxID: "test", NetworkNamespace: ns, Ports: []uint16{18888, 18080}}); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("second reservation of 18080: %v, want EADDRINUSE", err)
	}
	// The failed one left 18888 free.
	again, err := Make(Request{SandboxID: "test", NetworkNamespace: ns, Ports: []uint16{18888}})
	if err != nil {
		t.Fatalf("18888 still held after a failed Make: %v", err)
	}
	again.Close()
}

func TestSendReceive(t *testing.T) {
	ns := newNetns(t)
	res, err := Make(Request{SandboxID: "test", NetworkNamespace: ns, Ports: []uint16{18080, 18888}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		defer c.Close()
	}
	if err := Send(conns[0], res); err != nil {
		t.Fatal(err)
	}
	got, err := Receive(conns[1])
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if p := got.Ports(); len(p) != 2 || p[0] != 18080 || p[1] != 18888 || !got.Listeners[0].DualStack {
		t.Fatalf("received %+v", got.Listeners)
	}
	// Both copies are the same socket: a connection made in ns reaches the
	// received one.
	l, err := net.FileListener(got.Listeners[0].File)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = inNamespace(ns, func() error {
		c, err := net.Dial("tcp", "[::ffff:127.0.0.1]:18080")
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// A socket that is not a listener is refused.
	plain, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if _, _, err := conns[0].WriteMsgUnix([]byte("18080"), unix.UnixRights(plain), nil); err != nil {
		t.Fatal(err)
	}
	unix.Close(plain)
	if _, err := Receive(conns[1]); err == nil {
		t.Error("a socket that does not listen was accepted")
	}
}

// TestMakeWithoutIPv6: in a namespace with IPv6 disabled the ports are still
// held against every IPv4 bind.
func TestMakeWithoutIPv6(t *testing.T) {
	ns := newNetns(t)
	if err := inNamespace(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0)
	}); err != nil {
		t.Skipf("cannot disable IPv6 in the namespace: %v", err)
	}
	res, err := Make(Request{NetworkNamespace: ns, Ports: []uint16{18080}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	got := bindVariants(t, ns, 18080)
	for _, g := range got {
		if g == "0.0.0.0" || g == "127.0.0.1" {
			t.Errorf("IPv4 bind %s got through without IPv6", g)
		}
	}
	t.Logf("dual-stack %v; binds that worked: %v", res.Listeners[0].DualStack, got)
}

// TestNewUserNetworkNamespace: the network namespace is owned by the new
// user namespace (so a container in it can mount sysfs), which is not the
// test's own; ports can be reserved in it; no holder process is left.
func TestNewUserNetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	before := childCount(t)
	user, network, err := NewUserNetworkNamespace(
		[]syscall.SysProcIDMap{{ContainerID: 0, HostID: 320000, Size: 65536}},
		[]syscall.SysProcIDMap{{ContainerID: 0, HostID: 320000, Size: 65536}})
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	defer network.Close()
	owner, err := unix.IoctlRetInt(int(network.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(owner)
	var ownerStat, userStat, selfStat unix.Stat_t
	if err := unix.Fstat(owner, &ownerStat); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(user.Fd()), &userStat); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat("/proc/self/ns/user", &selfStat); err != nil {
		t.Fatal(err)
	}
	if ownerStat.Ino != userStat.Ino {
		t.Errorf("network namespace owned by user namespace %d, want the new one %d", ownerStat.Ino, userStat.Ino)
	}
	if userStat.Ino == selfStat.Ino {
		t.Error("the new user namespace is the test's own")
	}
	r, err := Make(Request{NetworkNamespace: network, Ports: []uint16{8080}})
	if err != nil {
		t.Fatalf("reserve in the new namespace: %v", err)
	}
	r.Close()
	if after := childCount(t); after != before {
		t.Errorf("%d children before, %d after: the holder was left", before, after)
	}
}

func childCount(t *testing.T) int {
	t.Helper()
	n := 0
	lists, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, l := range lists {
		b, _ := os.ReadFile(l)
		n += len(strings.Fields(string(b)))
	}
	return n
}
