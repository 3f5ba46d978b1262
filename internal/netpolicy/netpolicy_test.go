package netpolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/internal/reserve"
)

const probeEnv = "NETPOLICY_TEST_PROBE"

var testPolicy = Policy{
	ReservedPorts: []uint16{18888, 18080},
	Ephemeral:     PortRange{Low: 40000, High: 49999},
	// Small, so the test reaches them.
	UDPSocketLimit: 16,
	TCPSocketLimit: 24,
}

func TestMain(m *testing.M) {
	if os.Getenv(probeEnv) != "" {
		probe()
		return
	}
	os.Exit(m.Run())
}

// probeResult is what the probe, run inside the confined cgroup, saw.
type probeResult map[string]string

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

func bindTCP(family int, addr unix.Sockaddr) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, addr); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func localPort(fd int) int {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return -1
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return -1
}

// probe runs in the confined cgroup and the test's network namespace.
func probe() {
	r := probeResult{}
	for _, port := range []int{18080, 18888} {
		_, err := bindTCP(unix.AF_INET, &unix.SockaddrInet4{Port: port})
		r[fmt.Sprintf("bind4-%d", port)] = errString(err)
		_, err = bindTCP(unix.AF_INET6, &unix.SockaddrInet6{Port: port})
		r[fmt.Sprintf("bind6-%d", port)] = errString(err)
	}
	_, err := bindTCP(unix.AF_INET, &unix.SockaddrInet4{Port: 45000})
	r["bind4-ephemeral"] = errString(err)
	_, err = bindTCP(unix.AF_INET6, &unix.SockaddrInet6{Port: 40000})
	r["bind6-ephemeral"] = errString(err)
	_, err = bindTCP(unix.AF_INET, &unix.SockaddrInet4{Port: 39999})
	r["bind4-below-ephemeral"] = errString(err)
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		var sa unix.Sockaddr = &unix.SockaddrInet4{}
		if family == unix.AF_INET6 {
			sa = &unix.SockaddrInet6{}
		}
		fd, err := bindTCP(family, sa)
		r[fmt.Sprintf("bind0-%d", family)] = errString(err)
		r[fmt.Sprintf("bind0-%d-port", family)] = fmt.Sprint(localPort(fd))
	}
	for name, addr := range map[string]string{
		"connect-127.0.0.1": "127.0.0.1:18080", "connect-::1": "[::1]:18080",
		"connect-mapped": "[::ffff:127.0.0.1]:18080", "connect-0.0.0.0": "0.0.0.0:18080",
		"connect-free": "127.0.0.1:18081",
	} {
		c, err := net.Dial("tcp", addr)
		if c != nil {
			c.Close()
		}
		r[name] = errString(err)
	}
	udp := 0
	for i := 0; i < 64; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			r["udp-error"] = errString(err)
			break
		}
		udp++
		_ = fd // held until exit
	}
	r["udp-sockets"] = fmt.Sprint(udp)
	tcp := 0
	for i := 0; i < 64; i++ {
		if _, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0); err != nil {
			r["tcp-error"] = errString(err)
			break
		}
		tcp++
	}
	r["tcp-sockets"] = fmt.Sprint(tcp)
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

// TestApply confines a real process in a fresh cgroup and network namespace
// and checks every rule from inside it.
func TestApply(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cgroupPath := fmt.Sprintf("/sst-netpolicy-%d", os.Getpid())
	p := testPolicy
	p.SandboxID = "test"
	p.CgroupPath = cgroupPath + "/user"
	st, err := Apply(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The probe's cgroup empties once it is reaped, which may lag a moment.
		for i := 0; i < 100 && os.Remove(st.Cgroup) != nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if err := os.Remove(filepath.Dir(st.Cgroup)); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	if !st.Enforced || !st.ReservedConnect || st.UserBindRange != (PortRange{23616, 39999}) || st.TCPSocketLimit != 24 {
		t.Fatalf("status %+v", st)
	}
	out, err := runConfined(t, st.Cgroup)
	if err != nil {
		t.Fatalf("probe: %v: %s", err, out)
	}
	var r probeResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	t.Logf("probe: %v", r)
	perm := unix.EPERM.Error()
	for key, want := range map[string]string{
		"bind4-18080": perm, "bind6-18080": perm, "bind4-18888": perm, "bind6-18888": perm,
		"bind4-ephemeral": perm, "bind6-ephemeral": perm, "bind4-below-ephemeral": "ok",
		"bind0-2": "ok", "bind0-10": "ok",
		"connect-127.0.0.1": perm, "connect-::1": perm, "connect-mapped": perm, "connect-0.0.0.0": perm,
		"connect-free": unix.ECONNREFUSED.Error(),
		"udp-sockets":  "16", "udp-error": perm, "tcp-error": perm,
	} {
		if r[key] != want {
			t.Errorf("%s: %q, want %q", key, r[key], want)
		}
	}
	// Three TCP sockets of the probe are still open (the binds that worked).
	if r["tcp-sockets"] != "21" {
		t.Errorf("tcp-sockets: %q, want 21 (limit 24, 3 open)", r["tcp-sockets"])
	}
	for _, key := range []string{"bind0-2-port", "bind0-10-port"} {
		var port int
		fmt.Sscan(r[key], &port)
		if port < 23616 || port > 39999 || port == 18080 || port == 18888 {
			t.Errorf("%s: bind(0) got port %d, want one in 23616-39999", key, port)
		}
	}
}

// runConfined runs the probe in cgroup dir, in a new network namespace that
// holds a listener on the reserved port 18080 made outside the cgroup.
func runConfined(t *testing.T, dir string) ([]byte, error) {
	t.Helper()
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	type result struct {
		out []byte
		err error
	}
	ns, err := reserve.NewNetworkNamespace()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in the new netns
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		l, err := net.Listen("tcp", "[::]:18080")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer l.Close()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), probeEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		ch <- result{out, err}
	}()
	r := <-ch
	return r.out, r.err
}
