package attack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// reservedPorts are the defaults the shim reserves.
var reservedPorts = []string{"8080", "8888"}

// withNetwork gives the sandbox a network namespace the harness made, with
// a non-loopback address and a peer namespace behind a veth, as CRI hands
// a pod's namespace to a runtime by path. Removed when the test ends.
func withNetwork(t *testing.T) (*harness.SandboxNetwork, oci.SpecOpts) {
	t.Helper()
	n, err := harness.NewSandboxNetwork()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	return n, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: n.Path()})
}

func withAnnotation(key, value string) oci.SpecOpts {
	return oci.WithAnnotations(map[string]string{key: value})
}

// TestReservedPortsBind: as user code, every bind of a reserved port fails: 0.0.0.0,
// 127.0.0.1, the sandbox's own IPv4 and IPv6 addresses, [::] dual-stack and v6only, ::1 and
// ::ffff:127.0.0.1, each with no option, SO_REUSEADDR, SO_REUSEPORT and both, each followed
// by listen; io_uring is refused. Both in a namespace the shim made and in one it was given.
func TestReservedPortsBind(t *testing.T) {
	ctx := testCtx(t)
	network, netns := withNetwork(t)
	for name, opts := range map[string][]oci.SpecOpts{"shim-made netns": nil, "given netns": {netns}} {
		t.Run(name, func(t *testing.T) {
			sb := newSandbox(t, ctx, controlPlaneArgs, opts...)
			for _, addr := range []string{network.SandboxIPv4, network.SandboxIPv6} {
				res := sb.attack(t, ctx, false, "bind-reserved", append([]string{addr}, reservedPorts...)...)
				expectBlocked(t, "bind-reserved "+addr, res)
				if !strings.Contains(res.stdout, "tried 56 binds") {
					t.Errorf("the attacker did not try every variant:\n%s", res.stdout)
				}
			}
			sb.checkAlive(t, ctx, "after binding the reserved ports")
		})
	}
}

// TestReservedPortsReachControlPlane: while user code holds every bind it can get on the
// addresses and ports around the reserved ones, connections from outside the workspace to
// 127.0.0.1, ::1, localhost (both resolutions) and the sandbox's addresses, and from the
// peer namespace to the sandbox's addresses, reach the control plane on each reserved port.
func TestReservedPortsReachControlPlane(t *testing.T) {
	ctx := testCtx(t)
	network, netns := withNetwork(t)
	sb := newSandbox(t, ctx, controlPlaneArgs, netns)
	hold := sb.background(t, ctx, append([]string{attackerPath, "hold-binds", network.SandboxIPv4}, reservedPorts...)...)
	if !poll(20*time.Second, func() bool { return strings.Contains(hold.stdout.String(), "READY") }) {
		t.Fatalf("hold-binds never got ready:\n%s%s", hold.stdout, hold.stderr)
	}
	t.Logf("user code: %s", strings.TrimSpace(hold.stdout.String()))
	localhost := sandboxLocalhost(t, sb.pid)
	for _, port := range reservedPorts {
		targets := []struct{ network, addr string }{
			{"tcp", "127.0.0.1:" + port}, {"tcp", "[::1]:" + port},
			{"tcp", net.JoinHostPort(network.SandboxIPv4, port)}, {"tcp", net.JoinHostPort(network.SandboxIPv6, port)},
		}
		for _, ip := range localhost {
			targets = append(targets, struct{ network, addr string }{"tcp", net.JoinHostPort(ip, port)})
		}
		for _, target := range targets {
			body, err := harness.HTTPGetAt(sb.pid, target.network, target.addr, "/", 3*time.Second)
			if err != nil || strings.TrimSpace(body) != controlPlaneBody {
				t.Errorf("BREACH: %s %s from the sandbox's namespace: body %q, err %v", target.network, target.addr, body, err)
			}
		}
		for _, addr := range []string{network.SandboxIPv4, network.SandboxIPv6} {
			body, err := getFromPeer(network, net.JoinHostPort(addr, port))
			if err != nil || strings.TrimSpace(body) != controlPlaneBody {
				t.Errorf("BREACH: %s:%s from the peer namespace: body %q, err %v", addr, port, body, err)
			}
		}
	}
	sb.checkAlive(t, ctx, "while user code holds binds next to the reserved ports")
}

// sandboxLocalhost is what localhost resolves to in the sandbox (its /etc/hosts): both
// 127.0.0.1 and ::1 in the attack image.
func sandboxLocalhost(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/hosts", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && slices.Contains(f[1:], "localhost") {
			out = append(out, f[0])
		}
	}
	if len(out) != 2 {
		t.Fatalf("localhost resolves to %v in the sandbox, want 127.0.0.1 and ::1", out)
	}
	return out
}

// getFromPeer fetches / from addr out of the peer namespace: from outside the sandbox.
func getFromPeer(n *harness.SandboxNetwork, addr string) (string, error) {
	var body string
	err := n.InPeer(func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		b, err := readAll(c)
		if err != nil {
			return err
		}
		if _, rest, ok := strings.Cut(b, "\r\n\r\n"); ok {
			body = rest
		}
		return nil
	})
	return body, err
}

func readAll(c net.Conn) (string, error) {
	var sb strings.Builder
	r := bufio.NewReader(c)
	_, err := r.WriteTo(&sb)
	return sb.String(), err
}

// TestReservedPortsHeldByShim: a control plane that closes its copies of the sockets (or
// was never able to use them) leaves no window: the shim holds them, user code still cannot
// bind, and a client still reaches a listening socket (queued, nobody accepting).
func TestReservedPortsHeldByShim(t *testing.T) {
	ctx := testCtx(t)
	network, netns := withNetwork(t)
	sb := startSandbox(t, ctx, []string{"/bin/sh", "-c", "exec 3>&- 4>&-; exec sleep 3600"}, false, netns)
	if poll(2*time.Second, func() bool {
		_, err3 := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", sb.pid))
		_, err4 := os.Readlink(fmt.Sprintf("/proc/%d/fd/4", sb.pid))
		return err3 != nil && err4 != nil
	}) == false {
		t.Fatal("the control plane still holds fds 3 and 4: the test would prove nothing")
	}
	expectBlocked(t, "bind-reserved after the control plane closed its copies",
		sb.attack(t, ctx, false, "bind-reserved", append([]string{network.SandboxIPv4}, reservedPorts...)...))
	for _, port := range reservedPorts {
		c, err := dialFromPeer(network, net.JoinHostPort(network.SandboxIPv4, port))
		if err != nil {
			t.Errorf("port %s refuses connections with the control plane's copies closed: %v", port, err)
			continue
		}
		c.Close()
	}
}

func dialFromPeer(n *harness.SandboxNetwork, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.InPeer(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	return c, err
}

// TestReservedPortsConnect: user code cannot connect to a reserved port on any local
// address (v4, v6, v4-mapped, 0.0.0.0, localhost both ways, the sandbox's address), nor can
// a process it re-executes or double-forks; with the user-connect annotation it can.
func TestReservedPortsConnect(t *testing.T) {
	ctx := testCtx(t)
	network, netns := withNetwork(t)
	sb := newSandbox(t, ctx, controlPlaneArgs, netns)
	for _, via := range []string{"--via=direct", "--via=reexec", "--via=doublefork"} {
		res := sb.attack(t, ctx, false, "connect-reserved", append([]string{via, network.SandboxIPv4}, reservedPorts...)...)
		expectBlocked(t, "connect-reserved "+via, res)
		if n := strings.Count(res.stdout, "operation not permitted"); n != 16 {
			t.Errorf("%s: %d connects refused by the policy, want 16 (8 targets x 2 ports):\n%s", via, n, res.stdout)
		}
	}
	sb.checkAlive(t, ctx, "after connecting to the reserved ports")

	allowed := newSandbox(t, ctx, controlPlaneArgs, withAnnotation(api.AnnotationReservedPortsUserConnect, "allow"))
	res := allowed.attack(t, ctx, false, "connect-reserved", append([]string{"-"}, reservedPorts...)...)
	for _, port := range reservedPorts {
		for _, target := range []string{"tcp 127.0.0.1:", "tcp [::1]:", "tcp [::ffff:127.0.0.1]:", "tcp4 localhost:", "tcp6 localhost:"} {
			if !strings.Contains(res.stdout, "connect "+target+port+": ok") {
				t.Errorf("with %s=allow, user code could not connect to %s%s:\n%s", api.AnnotationReservedPortsUserConnect, target, port, res.stdout)
			}
		}
	}
	allowed.checkAlive(t, ctx, "after connecting with the annotation")
}

// TestReservedPortsAfterReset: a workspace reset removes the user cgroup with the old
// workspace; the fresh workspace is held by the network policy all the same.
func TestReservedPortsAfterReset(t *testing.T) {
	ctx := testCtx(t)
	network, netns := withNetwork(t)
	sb := newSandbox(t, ctx, controlPlaneArgs, netns)
	if err := sb.task.Update(ctx, client.WithAnnotations(map[string]string{"io.sandbox.workspace.reset": "true"})); err != nil {
		t.Fatalf("reset: %v", err)
	}
	res := sb.attack(t, ctx, false, "connect-reserved", append([]string{"--via=direct", network.SandboxIPv4}, reservedPorts...)...)
	expectBlocked(t, "connect-reserved after a reset", res)
	if n := strings.Count(res.stdout, "operation not permitted"); n != 16 {
		t.Errorf("after a reset, %d connects refused by the policy, want 16:\n%s", n, res.stdout)
	}
	sb.checkAlive(t, ctx, "after connecting to the reserved ports from a fresh workspace")
}

// TestReservedPortsHandOver: the control plane gets the sockets at fds 3 and 4 with
// LISTEN_FDS=2, LISTEN_PID=1 and LISTEN_FDNAMES=8080:8888, they are the shim's own sockets
// (same inodes), binding the port itself fails with EADDRINUSE, and user code has fds 0-2
// only.
func TestReservedPortsHandOver(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	body, err := harness.HTTPGet(sb.pid, 8080, "/fds", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane /fds:\n%s", body)
	for _, want := range []string{"LISTEN_FDS=2\n", "LISTEN_PID=1\n", "LISTEN_FDNAMES=8080:8888\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("control plane env lacks %q", strings.TrimSpace(want))
		}
	}
	shim := shimOf(t, sb.id)
	held := socketInodes(shim)
	listeners := map[string]bool{}
	for i, port := range reservedPorts {
		socket := "socket:[" + listenerInode(t, sb.pid, port) + "]"
		listeners[socket] = true
		fd := 3 + i
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", sb.pid, fd)); err != nil || target != socket {
			t.Errorf("control plane fd %d is %q (%v), want the listener on %s, %s", fd, target, err, port, socket)
		}
		if !held[socket] {
			t.Errorf("the shim (pid %d) holds no copy of the listener on %s (%s)", shim, port, socket)
		}
	}
	// Nowhere else: not the workspace's reaper, not its pooled execs. And every one of them
	// sits in the cgroup2 directory the network programs are attached to.
	for _, pid := range sb.workspacePids() {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if !regexp.MustCompile(`(?m)^0::/.*/` + regexp.QuoteMeta(sb.id) + `/user(/.*)?$`).Match(b) {
			t.Errorf("workspace process %d (%s) is not in the user cgroup on cgroup2:\n%s", pid, procCmdline(pid), b)
		}
		for socket := range socketInodes(pid) {
			if listeners[socket] {
				t.Errorf("BREACH: workspace process %d (%s) holds a reserved port's socket %s", pid, procCmdline(pid), socket)
			}
		}
	}
	if body, err := harness.HTTPGet(sb.pid, 8080, "/bind?port=8080", 3*time.Second); err == nil || !strings.Contains(body, "address already in use") {
		t.Errorf("the control plane could bind 8080 itself: %q %v", body, err)
	}
	expectBlocked(t, "fds", sb.attack(t, ctx, false, "fds"))
	// The shim said at Create what is enforced and what is not.
	logged := ""
	poll(5*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(d.Dir, "containerd.log"))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, sb.id) && strings.Contains(line, "reserved ports 8080,8888 held") {
				logged = line
			}
		}
		return logged != ""
	})
	t.Logf("shim log at Create: %s", logged)
	for _, want := range []string{"dual-stack", "nor connect to them", "ephemeral range 32768-60999 refused", "bind(0) served from 16384-32767", "at most 4096 UDP and 8192 TCP sockets", "not enforced:", "sendto"} {
		if !strings.Contains(logged, want) {
			t.Errorf("the shim's Create log does not say %q: %q", want, logged)
		}
	}
	sb.checkAlive(t, ctx, "after the hand-over checks")
}

// shimOf is the pid of the shim serving the sandbox id.
func shimOf(t *testing.T, id string) int {
	t.Helper()
	pids, err := d.ShimPIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if strings.Contains(" "+procCmdline(p)+" ", " "+id+" ") {
			return p
		}
	}
	t.Fatalf("no shim serves %s (shims %v)", id, pids)
	return 0
}

// socketInodes lists the "socket:[N]" targets of pid's fds.
func socketInodes(pid int) map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			out[target] = true
		}
	}
	return out
}

// listenerInode is the inode of the socket listening on port in pid's namespace
// (/proc/PID/net/tcp6, state 0A).
func listenerInode(t *testing.T, pid int, port string) string {
	t.Helper()
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X", p)
	for _, file := range []string{"tcp6", "tcp"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 9 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
				return f[9]
			}
		}
	}
	t.Fatalf("nothing listens on %s in the namespace of %d", port, pid)
	return ""
}

// TestNoRuntimeAbstractSockets: no abstract unix socket is visible in the workspace's
// /proc/net/unix (the sandbox's namespace): the shim and the hook never use any.
func TestNoRuntimeAbstractSockets(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	table := sb.run(t, ctx, "cat", "/proc/net/unix").stdout
	var abstract []string
	for _, line := range strings.Split(table, "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 8 && strings.HasPrefix(f[7], "@") {
			abstract = append(abstract, f[7])
		}
	}
	if len(abstract) > 0 {
		t.Errorf("abstract unix sockets in the sandbox's network namespace: %v", abstract)
	}
	if !strings.HasPrefix(table, "Num") {
		t.Fatalf("no /proc/net/unix table: %q", table)
	}
}

// TestUnixSocketSquat: abstract names cannot be defended here (no hook refuses a bind of
// one; BPF LSM programs cannot be loaded on these hosts), so the control plane serves on a
// path socket in a root-only directory. User code squats the abstract name and tries the
// path: the path stays the control plane's, and it still answers there.
func TestUnixSocketSquat(t *testing.T) {
	ctx := testCtx(t)
	// In the shared rootfs (not /run, which the workspace gets as a private tmpfs): the
	// root-only directory is what must keep user code out.
	const path = "/srv/agent/agent.sock"
	sb := newSandbox(t, ctx, append(append([]string{}, controlPlaneArgs...), "-unix", path))
	squat := sb.background(t, ctx, attackerPath, "squat-unix", "agent.sock", path)
	if !poll(10*time.Second, func() bool {
		return strings.Contains(squat.stdout.String(), "READY") || strings.Contains(squat.stdout.String(), "BREACH")
	}) {
		t.Fatalf("squat-unix never finished:\n%s%s", squat.stdout, squat.stderr)
	}
	out := squat.stdout.String()
	t.Logf("user code:\n%s", out)
	if strings.Contains(out, "BREACH") {
		t.Errorf("BREACH: %s", out)
	}
	// From outside, through the control plane's root.
	sockPath := filepath.Join(fmt.Sprintf("/proc/%d/root", sb.pid), path)
	c, err := net.DialTimeout("unix", sockPath, 3*time.Second)
	if err != nil {
		t.Fatalf("the control plane's path socket does not answer: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	if b, _ := readAll(c); !strings.HasSuffix(strings.TrimSpace(b), controlPlaneBody) {
		t.Errorf("the path socket answered %q", b)
	}
	sb.checkAlive(t, ctx, "after squatting unix socket names")
}

// TestEphemeralPortExhaustion: while user code binds every TCP and UDP port it can (explicit
// binds in the ephemeral range, bind(0), UDP's autobind at sendto, in dozens of processes),
// the control plane still connects out over TCP and resolves names over UDP to a resolver in
// the peer namespace. The same attack on a runc container (user code as uid 1000 beside the
// same control plane) is run first, to show it is real there.
func TestEphemeralPortExhaustion(t *testing.T) {
	// Two attacks of up to 64 processes each: longer than testTimeout on a loaded machine
	// (filling the last ports of a range is slow: the kernel searches it for each).
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), d.Namespace), 6*time.Minute)
	t.Cleanup(cancel)
	runcNetwork, runcNetns := withNetwork(t)
	baseline := exhaustAndCheck(t, ctx, "runc", runcNetwork, func() (int, func(args ...string) *proc) {
		return runcSandbox(t, ctx, runcNetns)
	})
	if baseline.failures == 0 {
		t.Errorf("under runc the attack left the control plane's outbound traffic alone: it proves nothing")
	}
	network, netns := withNetwork(t)
	var sb *sandbox
	res := exhaustAndCheck(t, ctx, harness.SandboxRuntime, network, func() (int, func(args ...string) *proc) {
		sb = newSandbox(t, ctx, controlPlaneArgs, netns)
		return sb.pid, func(args ...string) *proc { return sb.background(t, ctx, args...) }
	})
	if res.tcpAny < 1000 || res.tcpAny > 8192 {
		t.Errorf("user code bound %d TCP sockets, want between 1000 (else the attack proves nothing) and the limit of 8192", res.tcpAny)
	}
	if res.tcp != 0 {
		t.Errorf("user code holds %d TCP ports of the ephemeral range", res.tcp)
	}
	if res.udp > 4096 {
		t.Errorf("user code holds %d UDP ports of the ephemeral range, more than the limit of 4096", res.udp)
	}
	if res.failures > 0 {
		t.Errorf("%d of 40 outbound operations of the control plane failed during the attack", res.failures)
	}
	sb.checkAlive(t, ctx, "during the port exhaustion")
}

// exhaustion is what one run of exhaust-ports took and what it did to the control plane.
type exhaustion struct {
	tcp, udp, tcpAny, udpAny int
	failures                 int
}

// exhaustAndCheck starts a control plane (start returns its pid and a way to run user code
// beside it), checks its outbound TCP and DNS, runs exhaust-ports as user code, and checks
// again while the ports are held.
func exhaustAndCheck(t *testing.T, ctx context.Context, runtime string, network *harness.SandboxNetwork, start func() (int, func(args ...string) *proc)) exhaustion {
	t.Helper()
	tcpServer, dns := peerServers(t, network)
	pid, background := start()
	low, high := ephemeralRange(t, network.Path())
	check := func() (failures int) {
		for i := 0; i < 20; i++ {
			if _, err := harness.HTTPGet(pid, 8080, "/dial?addr="+tcpServer, 5*time.Second); err != nil {
				failures++
			}
			if body, err := harness.HTTPGet(pid, 8080, "/resolve?name=sandbox.test&server="+dns, 8*time.Second); err != nil || strings.TrimSpace(body) != dnsAnswer {
				failures++
			}
		}
		return failures
	}
	if n := check(); n > 0 {
		t.Fatalf("%s: %d of 40 outbound operations fail without any attack", runtime, n)
	}
	hog := background(attackerPath, "exhaust-ports", strconv.Itoa(low), strconv.Itoa(high))
	if !poll(3*time.Minute, func() bool { return strings.Contains(hog.stdout.String(), "READY") }) {
		t.Fatalf("%s: exhaust-ports never got ready:\n%s%s", runtime, hog.stdout, hog.stderr)
	}
	summary := regexp.MustCompile(`holding ephemeral ports .*`).FindString(hog.stdout.String())
	var r exhaustion
	fmt.Sscanf(summary[strings.Index(summary, "tcp"):], "tcp %d udp %d (sockets bound anywhere: tcp %d udp %d)", &r.tcp, &r.udp, &r.tcpAny, &r.udpAny)
	r.failures = check()
	t.Logf("%s: ephemeral range %d-%d (%d ports): user code held tcp %d, udp %d of them (sockets bound: tcp %d, udp %d); the control plane's outbound operations failed %d of 40",
		runtime, low, high, high-low+1, r.tcp, r.udp, r.tcpAny, r.udpAny, r.failures)
	_ = hog.remove()
	return r
}

// runcSandbox runs the agent as the init of a runc container in netns and returns its pid
// and a way to run user code (uid 1000) in it, as a plain container would.
func runcSandbox(t *testing.T, ctx context.Context, netns oci.SpecOpts) (int, func(args ...string) *proc) {
	t.Helper()
	id := harness.TestID(t)
	c := d.TestContainer(t, ctx, id, attackImage, harness.RuncRuntime,
		oci.WithProcessArgs(agentPath, "-root", "/www", "-listen", ":8080"), netns)
	task, err := c.NewTask(ctx, ioCreator(io.Discard, io.Discard, false))
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := task.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb := &sandbox{id: id, task: task, pid: int(task.Pid()), proc: *s.Process}
	sb.proc.User = specs.User{UID: 1000, GID: 1000}
	sb.proc.Capabilities = &specs.LinuxCapabilities{}
	if !poll(10*time.Second, func() bool { _, err := httpGet(sb.pid, time.Second); return err == nil }) {
		t.Fatal("the runc control plane never answered")
	}
	return sb.pid, func(args ...string) *proc { return sb.background(t, ctx, args...) }
}

// ephemeralRange reads ip_local_port_range in the namespace at path.
func ephemeralRange(t *testing.T, path string) (int, int) {
	t.Helper()
	var low, high int
	err := harness.InNetns(path, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		if err == nil {
			_, err = fmt.Sscan(string(b), &low, &high)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return low, high
}

const dnsAnswer = "10.0.0.42"

// peerServers runs, in the peer namespace, a TCP server that accepts and closes, and a DNS
// resolver answering every A query with dnsAnswer; it returns their addresses.
func peerServers(t *testing.T, n *harness.SandboxNetwork) (tcpAddr, dnsAddr string) {
	t.Helper()
	var l net.Listener
	var pc net.PacketConn
	err := n.InPeer(func() error {
		var err error
		if l, err = net.Listen("tcp", net.JoinHostPort(n.PeerIPv4, "7777")); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", net.JoinHostPort(n.PeerIPv4, "53"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); pc.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	go serveDNS(pc)
	return l.Addr().String(), pc.LocalAddr().String()
}

// serveDNS answers A queries with dnsAnswer and anything else with no records.
func serveDNS(pc net.PacketConn) {
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < 12 {
			continue
		}
		q := buf[12:n]
		end := 0
		for end < len(q) && q[end] != 0 {
			end += int(q[end]) + 1
		}
		if end+5 > len(q) {
			continue
		}
		question := q[:end+5]
		qtype := int(question[end+1])<<8 | int(question[end+2])
		resp := append([]byte{buf[0], buf[1], 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}, question...)
		if qtype == 1 {
			resp[7] = 1
			ip := net.ParseIP(dnsAnswer).To4()
			resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ip[0], ip[1], ip[2], ip[3])
		}
		_, _ = pc.WriteTo(resp, from)
	}
}
