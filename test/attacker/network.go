package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	attacks["bind-reserved"] = bindReserved
	attacks["connect-reserved"] = connectReserved
	attacks["hold-binds"] = holdBinds
	attacks["exhaust-ports"] = exhaustPorts
	attacks["squat-unix"] = squatUnix
}

// bindAddress is one address user code may try a port on.
type bindAddress struct {
	name   string
	family int
	addr   func(port int) unix.Sockaddr
	v6only bool
}

// bindAddresses are every address of the shared network namespace a
// reserved port could be taken on: the wildcards (v6 dual-stack and
// v6only), loopbacks, the v4-mapped loopback and the sandbox's own address.
func bindAddresses(sandboxAddr string) []bindAddress {
	v4 := func(ip net.IP) func(int) unix.Sockaddr {
		var a [4]byte
		copy(a[:], ip.To4())
		return func(p int) unix.Sockaddr { return &unix.SockaddrInet4{Port: p, Addr: a} }
	}
	v6 := func(ip net.IP) func(int) unix.Sockaddr {
		var a [16]byte
		copy(a[:], ip.To16())
		return func(p int) unix.Sockaddr { return &unix.SockaddrInet6{Port: p, Addr: a} }
	}
	out := []bindAddress{
		{"0.0.0.0", unix.AF_INET, v4(net.IPv4zero), false},
		{"127.0.0.1", unix.AF_INET, v4(net.IPv4(127, 0, 0, 1)), false},
		{"[::] dual-stack", unix.AF_INET6, v6(net.IPv6unspecified), false},
		{"[::] v6only", unix.AF_INET6, v6(net.IPv6unspecified), true},
		{"::1", unix.AF_INET6, v6(net.IPv6loopback), true},
		{"::ffff:127.0.0.1", unix.AF_INET6, v6(net.IPv4(127, 0, 0, 1)), false},
	}
	if ip := net.ParseIP(sandboxAddr); ip != nil {
		if ip.To4() != nil {
			out = append(out, bindAddress{sandboxAddr, unix.AF_INET, v4(ip), false})
		} else {
			out = append(out, bindAddress{sandboxAddr, unix.AF_INET6, v6(ip), true})
		}
	}
	return out
}

var socketOptions = []struct {
	name             string
	reuse, reusePort bool
}{{"no option", false, false}, {"SO_REUSEADDR", true, false}, {"SO_REUSEPORT", false, true}, {"SO_REUSEADDR+SO_REUSEPORT", true, true}}

// bindListen binds and listens one TCP socket; it returns the open fd.
func bindListen(a bindAddress, port int, reuse, reusePort bool) (int, error) {
	fd, err := unix.Socket(a.family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if a.family == unix.AF_INET6 {
		v := 0
		if a.v6only {
			v = 1
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v)
	}
	if reuse {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	if reusePort {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if err := unix.Bind(fd, a.addr(port)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen: %w", err)
	}
	return fd, nil
}

// bindReserved: SANDBOX_ADDR PORT... tries every address and option on each
// port, with plain syscalls and through io_uring; any bind is a breach.
func bindReserved(args []string) []string {
	if len(args) < 2 {
		return []string{"usage: bind-reserved SANDBOX_ADDR PORT..."}
	}
	var out []string
	tried := 0
	for _, p := range args[1:] {
		port, _ := strconv.Atoi(p)
		for _, a := range bindAddresses(args[0]) {
			for _, o := range socketOptions {
				tried++
				fd, err := bindListen(a, port, o.reuse, o.reusePort)
				if err == nil {
					unix.Close(fd)
					out = append(out, fmt.Sprintf("bound and listening on %s port %d with %s", a.name, port, o.name))
					continue
				}
				fmt.Printf("%s:%d %s: %v\n", a.name, port, o.name, err)
			}
		}
	}
	fmt.Printf("tried %d binds\n", tried)
	// io_uring would bind and listen as ring operations, past seccomp's
	// view of bind(2): it must not be there at all.
	params := make([]byte, 120)
	if fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 8, uintptr(unsafe.Pointer(&params[0])), 0); errno == 0 {
		unix.Close(int(fd))
		out = append(out, "io_uring is available: binds could go through it")
	} else {
		fmt.Printf("io_uring_setup: %v (no ring to bind through)\n", errno)
	}
	return out
}

// connectTargets are the local addresses of a port: every way user code
// could reach a local listener.
func connectTargets(sandboxAddr, port string) []string {
	out := []string{"127.0.0.1:" + port, "[::1]:" + port, "[::ffff:127.0.0.1]:" + port, "0.0.0.0:" + port, "[::]:" + port, "localhost:" + port}
	if sandboxAddr != "" && sandboxAddr != "-" {
		out = append(out, net.JoinHostPort(sandboxAddr, port))
	}
	return out
}

// connectReserved: [--via=reexec|doublefork] SANDBOX_ADDR PORT... connects
// to each port on every local address, directly or from a re-executed or
// double-forked process. It prints one "connect ADDR: ok|error" line each;
// any ok is a breach.
func connectReserved(args []string) []string {
	via := "direct"
	if len(args) > 0 && strings.HasPrefix(args[0], "--via=") {
		via = strings.TrimPrefix(args[0], "--via=")
		args = args[1:]
	}
	if len(args) < 2 {
		return []string{"usage: connect-reserved [--via=reexec|doublefork] SANDBOX_ADDR PORT..."}
	}
	var lines []string
	switch via {
	case "direct":
		lines = connectAll(args)
	case "reexec", "doublefork":
		var err error
		if lines, err = connectElsewhere(via, args); err != nil {
			return []string{err.Error()}
		}
	default:
		return []string{"unknown --via " + via}
	}
	var out []string
	for _, l := range lines {
		fmt.Println(l)
		if strings.HasSuffix(l, ": ok") {
			out = append(out, l)
		}
	}
	return out
}

func connectAll(args []string) []string {
	var lines []string
	for _, port := range args[1:] {
		for _, target := range connectTargets(args[0], port) {
			network := "tcp"
			if strings.HasPrefix(target, "localhost:") {
				// Both resolutions of localhost.
				for _, n := range []string{"tcp4", "tcp6"} {
					lines = append(lines, connectLine(n, target))
				}
				continue
			}
			lines = append(lines, connectLine(network, target))
		}
	}
	return lines
}

func connectLine(network, target string) string {
	c, err := net.DialTimeout(network, target, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Sprintf("connect %s %s: ok", network, target)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Sprintf("connect %s %s: %v", network, target, errno)
	}
	return fmt.Sprintf("connect %s %s: %v", network, target, err)
}

// connectElsewhere runs the connects in a re-executed attacker, or in a
// grandchild whose parent exited at once (reparented to the workspace's
// reaper), and collects its lines through a pipe.
func connectElsewhere(via string, args []string) ([]string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", append([]string{"connect-child", via}, args...)...)
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	w.Close()
	_ = cmd.Wait()
	var lines []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		lines = append(lines, sc.Text()+" (via "+via+")")
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("the %s child reported nothing", via)
	}
	return lines, nil
}

// connectChild is the re-executed side: "doublefork" starts one more
// process in a new session and exits before it connects.
func connectChild(via string, args []string) {
	out := os.NewFile(3, "results")
	if via == "doublefork" {
		cmd := exec.Command("/proc/self/exe", append([]string{"connect-child", "reexec"}, args...)...)
		cmd.ExtraFiles = []*os.File{out}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0) // the grandchild goes on alone
	}
	for _, l := range connectAll(args) {
		fmt.Fprintln(out, l)
	}
}

// holdBinds: SANDBOX_ADDR PORT... takes every bind it can next to the
// reserved ports (the ports around each, on every address and option) and
// the reserved ports themselves (which must fail), prints READY and holds
// them until killed.
func holdBinds(args []string) []string {
	if len(args) < 2 {
		return []string{"usage: hold-binds SANDBOX_ADDR PORT..."}
	}
	var breaches []string
	held := 0
	for _, p := range args[1:] {
		port, _ := strconv.Atoi(p)
		for _, near := range []int{port - 2, port - 1, port, port + 1, port + 2} {
			for _, a := range bindAddresses(args[0]) {
				for _, o := range socketOptions {
					if _, err := bindListen(a, near, o.reuse, o.reusePort); err == nil {
						held++
						if near == port {
							breaches = append(breaches, fmt.Sprintf("holding %s port %d (%s)", a.name, port, o.name))
						}
					}
				}
			}
		}
	}
	fmt.Printf("holding %d listening sockets next to the reserved ports\n", held)
	if len(breaches) > 0 {
		return breaches
	}
	fmt.Println("READY")
	holdForever()
	return nil
}

// squatUnix: NAME PATH binds the abstract name @NAME and the path PATH
// before the control plane, and tries to connect to PATH. It reports what
// it got and holds what it bound until killed; the test judges from
// outside whether the control plane was affected.
func squatUnix(args []string) []string {
	if len(args) != 2 {
		return []string{"usage: squat-unix NAME PATH"}
	}
	var out []string
	if _, err := net.Listen("unix", "@"+args[0]); err == nil {
		fmt.Printf("bound @%s\n", args[0])
	} else {
		fmt.Printf("bind @%s: %v\n", args[0], err)
	}
	if _, err := net.Listen("unix", args[1]); err == nil {
		out = append(out, "bound the control plane's path socket "+args[1])
	} else {
		fmt.Printf("bind %s: %v\n", args[1], err)
	}
	if c, err := net.DialTimeout("unix", args[1], time.Second); err == nil {
		c.Close()
		out = append(out, "connected to the control plane's path socket "+args[1])
	} else {
		fmt.Printf("connect %s: %v\n", args[1], err)
	}
	if len(out) > 0 {
		return out
	}
	fmt.Println("READY")
	holdForever()
	return nil
}
