//go:build seccomp

package usercontainer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	_ "github.com/opencontainers/cgroups/devices" // device rules for the cgroupfs manager
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/internal/seccompprogram"
	"github.com/sandbox-shim/sandbox-shim/internal/usercontainer/containertest"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// TestMain lets this test binary be the containers' init, as the shim
// binary is: libcontainer re-executes it as "init".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
	os.Exit(m.Run())
}

// init lets it compile seccomp profiles as the shim binary does: on the
// main thread, before anything else.
func init() {
	if len(os.Args) > 1 && os.Args[1] == seccompprogram.Arg {
		seccompprogram.Main()
	}
}

// workspace is a real user container built as the sandbox builds its
// workspace: from a bundle spec, in the host's network namespace, with the
// reaper compiled from libexec and a busybox rootfs.
type workspace struct {
	container *Container
	settings  spec.Settings
	base      *specs.Process
	cgroup    string // the user container's cgroupfs path
}

func newWorkspace(t *testing.T, opts ...func(*Config)) *workspace {
	t.Helper()
	dir := t.TempDir()
	bundle, _ := containertest.Rootfs(t, dir, "sh", "id", "cat", "sleep")
	reaper := containertest.Reaper(t, dir)
	s := specconv.Example()
	s.Process.Terminal = false
	settings, err := spec.ParseSettings(s, spec.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// One directory per test, subtests included.
	parent := fmt.Sprintf("/sst-unit-%d-%s", os.Getpid(), strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-"))
	t.Cleanup(func() { containertest.RemoveCgroup(t, parent) })
	userCgroup := parent + "/user"
	cfg, err := spec.Workspace("ws", bundle, s, spec.WorkspaceOptions{
		Settings: settings, NetNS: "/proc/self/ns/net", UTSNS: "/proc/self/ns/uts",
		CgroupPath: userCgroup, Reaper: reaper,
	})
	if err != nil {
		t.Fatal(err)
	}
	pid1, err := spec.ReaperProcess(settings, s.Process)
	if err != nil {
		t.Fatal(err)
	}
	ucfg := Config{
		SandboxID: "unit", ID: "ws", StateRoot: filepath.Join(dir, "state"),
		Container: cfg, Reaper: pid1,
		Waiter:        func() (*libcontainer.Process, error) { return spec.WaiterProcess(settings, s.Process) },
		ExecPidsLimit: 64, PoolSize: 2,
	}
	for _, o := range opts {
		o(&ucfg)
	}
	c, err := Create(t.Context(), ucfg)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Destroy(); err != nil {
			t.Errorf("destroy: %v", err)
		}
	})
	return &workspace{container: c, settings: settings, base: s.Process, cgroup: userCgroup}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// run execs args in the workspace as a containerd exec would reach it and
// returns its stdout and exit status.
func (w *workspace) run(t *testing.T, ps *specs.Process) (string, int) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "stdout")
	if err := unix.Mkfifo(out, 0o600); err != nil {
		t.Fatal(err)
	}
	read := make(chan string, 1)
	go func() {
		f, err := os.Open(out) // meets the shim's blocking writer
		if err != nil {
			read <- err.Error()
			return
		}
		b, _ := io.ReadAll(f)
		f.Close()
		read <- string(b)
	}()
	req, err := spec.WorkspaceExec(ps, w.base, w.settings)
	if err != nil {
		t.Fatal(err)
	}
	p := process.New("e", process.Stdio{Stdout: out})
	exited := make(chan struct{})
	e, err := w.container.Exec(p, req, func(*process.Process) { close(exited) })
	if err != nil {
		t.Fatalf("exec %v: %v", ps.Args, err)
	}
	defer e.Release()
	defer p.Close()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("exec %v did not exit", ps.Args)
	}
	status, _ := p.Exit()
	return <-read, status
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !f(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestExecRunsAsRequested: what a waiter is sent is what runs: the
// workspace user with the request's groups, in an exec leaf of its own.
func TestExecRunsAsRequested(t *testing.T) {
	w := newWorkspace(t)
	out, status := w.run(t, &specs.Process{
		Args: []string{"sh", "-c", "id -u; id -g; id -G; cat /proc/self/cgroup"},
		Env:  []string{"PATH=/bin"}, Cwd: "/",
		User: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 2000}},
	})
	if status != 0 {
		t.Fatalf("exit %d, output %q", status, out)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || lines[0] != "1000" || lines[1] != "1000" || lines[2] != "1000 2000" {
		t.Fatalf("identity %q, want uid 1000, gid 1000, groups 1000 2000", lines)
	}
	if !strings.Contains(out, w.cgroup+"/exec-") {
		t.Errorf("exec not in an exec leaf under %s:\n%s", w.cgroup, out)
	}
}

// TestBadRequestCostsNoWaiter: a request no waiter may run (root) is
// refused as invalid before a waiter is taken, and the next exec runs.
func TestBadRequestCostsNoWaiter(t *testing.T) {
	w := newWorkspace(t)
	waitFor(t, "a full pool", func() bool { return w.container.waiters.Len() == 2 })
	p := process.New("root", process.Stdio{})
	_, err := w.container.Exec(p, spec.ExecRequest{Args: []string{"id"}, Identity: spec.Identity{UID: 0, GID: 0}}, nil)
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("exec as root: %v, want invalid argument", err)
	}
	if n := w.container.waiters.Len(); n != 2 {
		t.Fatalf("%d waiters ready after a refused request, want 2", n)
	}
	if out, status := w.run(t, &specs.Process{Args: []string{"sh", "-c", "echo ok"}, Env: []string{"PATH=/bin"}}); status != 0 || out != "ok\n" {
		t.Fatalf("exec after the refusal: %q, %d", out, status)
	}
}

// TestKillEndsTheContainer: Kill ends the whole container (the reaper and
// every waiter), and Destroy removes its cgroup.
func TestKillEndsTheContainer(t *testing.T) {
	w := newWorkspace(t)
	waitFor(t, "a full pool", func() bool { return w.container.waiters.Len() == 2 })
	w.container.Kill()
	w.container.WaitStopped(5 * time.Second)
	if w.container.Running() {
		t.Fatal("reaper still running after Kill")
	}
	if err := w.container.Destroy(); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if d := filepath.Join("/sys/fs/cgroup/pids", w.cgroup); exists(d) {
		t.Errorf("%s still exists after Destroy", d)
	}
}

// killPooledWaiters SIGKILLs every waiter ready in the pool from the host,
// as the OOM killer kills them when the workspace's memory is full.
func (w *workspace) killPooledWaiters() {
	p := w.container.waiters
	p.Each(func(wt *waiter) { _ = unix.Kill(wt.process.Pid(), unix.SIGKILL) })
}

// TestWaitersDyingDegradeThePool: waiters that keep dying before use stop
// the refills after maxPoolFailures (no rebuild loop); an exec still runs,
// built on demand, and its success restarts the refills; so do new limits.
func TestWaitersDyingDegradeThePool(t *testing.T) {
	w := newWorkspace(t)
	c := w.container
	waitFor(t, "a full pool", func() bool { return c.waiters.Len() == 2 })
	for deadline := time.Now().Add(20 * time.Second); !c.waiters.Degraded(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pool never degraded while its waiters kept dying")
		}
		w.killPooledWaiters()
	}
	// Degraded: nothing is built ahead any more.
	before := c.forks.Load()
	time.Sleep(300 * time.Millisecond)
	if n := c.forks.Load() - before; n > 1 {
		t.Fatalf("%d waiters built after the pool degraded", n)
	}
	if n := c.waiters.Len(); n > 1 {
		t.Fatalf("%d waiters ready in a degraded pool", n)
	}
	out, status := w.run(t, &specs.Process{Args: []string{"sh", "-c", "echo ok"}, Env: []string{"PATH=/bin"}})
	if status != 0 || out != "ok\n" {
		t.Fatalf("exec on demand in a degraded pool: %q, %d", out, status)
	}
	if c.waiters.Degraded() {
		t.Fatal("still degraded after an exec built on demand worked")
	}
	waitFor(t, "the refill after the exec", func() bool { return c.waiters.Len() == 2 })

	// Degrade again; new limits restart the refills.
	for deadline := time.Now().Add(20 * time.Second); !c.waiters.Degraded(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pool never degraded again")
		}
		w.killPooledWaiters()
	}
	if err := c.SetResources(c.Resources()); err != nil {
		t.Fatalf("set resources: %v", err)
	}
	if c.waiters.Degraded() {
		t.Fatal("still degraded after SetResources")
	}
	waitFor(t, "the refill after SetResources", func() bool { return c.waiters.Len() == 2 })
}

// TestForkedWaiter: a pooled waiter is the reaper's child (not the
// shim's), in an exec leaf of its own, under the reaper's uid with only
// the three capabilities it needs, no_new_privs and seccomp; Kill reaches
// it by pidfd, and its exit status (a signal) is the exec's.
func TestForkedWaiter(t *testing.T) {
	w := newWorkspace(t)
	c := w.container
	waitFor(t, "a full pool", func() bool { return c.waiters.Len() == 2 })
	var pid int
	c.waiters.Each(func(wt *waiter) { pid = wt.process.Pid() })
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PPid":       fmt.Sprint(c.reaper.Pid()),
		"Uid":        "65534\t65534\t65534\t65534",
		"CapEff":     "00000000000001c0", // setgid, setuid, setpcap
		"CapBnd":     "00000000000001c0",
		"NoNewPrivs": "1",
		"Seccomp":    "2",
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if exp, ok := want[k]; ok {
			if got := strings.TrimSpace(v); got != exp {
				t.Errorf("waiter %s = %q, want %q", k, got, exp)
			}
			delete(want, k)
		}
	}
	if len(want) > 0 {
		t.Errorf("waiter status lacks %v", want)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if !strings.Contains(string(cg), w.cgroup+"/exec-") {
		t.Errorf("waiter not in an exec leaf:\n%s", cg)
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if len(fds) != 4 {
		t.Errorf("waiter holds %d descriptors, want 0-3", len(fds))
	}

	// A long exec, killed: its status is the signal's, reported once.
	p, exited := startSleep(t, w)
	if err := p.Signal(unix.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	expectKilled(t, p, exited, "killed exec")
	if err := p.Signal(unix.SIGKILL); !errors.Is(err, process.ErrFinished) {
		t.Fatalf("signal after exit: %v, want ErrFinished", err)
	}
}

// TestKillReportsRunningExecs: when the container is killed (its reaper,
// which would report its children's exits, dies first), a running exec is
// still reported exited, by the kernel's SIGKILL.
func TestKillReportsRunningExecs(t *testing.T) {
	w := newWorkspace(t)
	p, exited := startSleep(t, w)
	w.container.Kill()
	expectKilled(t, p, exited, "exec of a killed container")
}

// startSleep runs a long exec in w; exited closes when it is reported.
func startSleep(t *testing.T, w *workspace) (*process.Process, <-chan struct{}) {
	t.Helper()
	req, err := spec.WorkspaceExec(&specs.Process{Args: []string{"sleep", "60"}, Env: []string{"PATH=/bin"}}, w.base, w.settings)
	if err != nil {
		t.Fatal(err)
	}
	p := process.New("sleep", process.Stdio{})
	exited := make(chan struct{})
	e, err := w.container.Exec(p, req, func(*process.Process) { close(exited) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Release)
	return p, exited
}

// expectKilled waits for p's reported exit and checks it is SIGKILL's.
func expectKilled(t *testing.T, p *process.Process, exited <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s not reported exited", what)
	}
	if st, _ := p.Exit(); st != 137 {
		t.Fatalf("%s: exit status %d, want 137", what, st)
	}
}

// TestForkRefusedFallsBack: when the reaper cannot fork (here a pids
// limit of its own), waiters are started by libcontainer instead, as the
// shim's children, and execs still run.
func TestForkRefusedFallsBack(t *testing.T) {
	w := newWorkspace(t)
	c := w.container
	waitFor(t, "a full pool", func() bool { return c.waiters.Len() == 2 })
	// The reaper alone in a pids cgroup with room for itself: its forks
	// fail, libcontainer's joins of the exec leaves do not.
	jail := filepath.Join("/sys/fs/cgroup/pids", w.cgroup, "reaper-jail")
	if err := os.Mkdir(jail, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ name, value string }{{"pids.max", "1"}, {"cgroup.procs", fmt.Sprint(c.reaper.Pid())}} {
		if err := os.WriteFile(filepath.Join(jail, f.name), []byte(f.value), 0); err != nil {
			t.Fatal(err)
		}
	}
	forked := c.forks.Load()
	cat := &specs.Process{Args: []string{"cat", "/proc/self/cgroup"}, Env: []string{"PATH=/bin"}}
	for i := range 4 {
		out, status := w.run(t, cat)
		if status != 0 || !strings.Contains(out, w.cgroup+"/exec-") {
			t.Fatalf("exec %d with the reaper unable to fork: %q, %d", i, out, status)
		}
	}
	if n := c.forks.Load() - forked; n != 0 {
		t.Fatalf("%d waiters forked by a reaper unable to fork", n)
	}
	waitFor(t, "a refill by libcontainer", func() bool { return c.waiters.Len() == 2 })
	c.waiters.Each(func(wt *waiter) {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", wt.process.Pid()))
		if !strings.Contains(string(status), fmt.Sprintf("PPid:\t%d\n", os.Getpid())) {
			t.Errorf("waiter %d is not the shim's child: not built by libcontainer", wt.process.Pid())
		}
	})
}

// TestSeccompProgram: a container whose profile was compiled ahead runs
// under the very filter libcontainer installs from the profile (read back
// from a waiter of each: forked by the reaper, under what the reaper
// runs), with its flags, and so does what it execs.
func TestSeccompProgram(t *testing.T) {
	var filters [2][]unix.SockFilter
	// The filter flags show in the kernel's store-bypass mitigation.
	var speculation [2]string
	for i, ahead := range []bool{false, true} {
		t.Run(fmt.Sprintf("ahead=%v", ahead), func(t *testing.T) {
			w := newWorkspace(t, func(c *Config) {
				if !ahead {
					return
				}
				prog, err := seccompprogram.Compile(c.Container.Seccomp)
				if err != nil {
					t.Fatal(err)
				}
				c.SeccompProgram, c.Container.Seccomp = prog.Bytes(), nil
			})
			// Not the reaper: the shim waits for it, and a wait in this
			// process would take the tracer's stop.
			deadline := time.Now().Add(10 * time.Second)
			var pid int
			for pid == 0 && time.Now().Before(deadline) {
				w.container.waiters.Each(func(wt *waiter) {
					if wt.process != nil && w.container.forks.Load() > 0 {
						pid = wt.process.Pid()
					}
				})
				time.Sleep(10 * time.Millisecond)
			}
			if pid == 0 {
				t.Fatal("no forked waiter in the pool")
			}
			f, err := seccompprogram.Installed(pid)
			if err != nil {
				t.Fatal(err)
			}
			filters[i] = f
			out, code := w.run(t, &specs.Process{Args: []string{"cat", "/proc/self/status"}, Cwd: "/"})
			if code != 0 {
				t.Fatalf("exit %d: %s", code, out)
			}
			for _, line := range strings.Split(out, "\n") {
				if v, ok := strings.CutPrefix(line, "Speculation_Store_Bypass:"); ok {
					speculation[i] = strings.TrimSpace(v)
				}
			}
			for _, want := range []string{"Seccomp:\t2", "Seccomp_filters:\t1", "NoNewPrivs:\t1"} {
				if !strings.Contains(out, want+"\n") {
					t.Errorf("exec's status lacks %q:\n%s", want, out)
				}
			}
		})
	}
	if len(filters[0]) == 0 || fmt.Sprint(filters[0]) != fmt.Sprint(filters[1]) {
		t.Errorf("filters differ: libcontainer's %d instructions, compiled ahead %d", len(filters[0]), len(filters[1]))
	}
	if speculation[0] != speculation[1] {
		t.Errorf("store-bypass mitigation: libcontainer's filter %q, compiled ahead %q", speculation[0], speculation[1])
	}
	t.Logf("%d instructions; store-bypass mitigation %q", len(filters[0]), speculation[0])
}

// TestSeccompProgramRefusedWithAProfile: one filter, never both.
func TestSeccompProgramRefusedWithAProfile(t *testing.T) {
	dir := t.TempDir()
	_, err := Create(t.Context(), Config{SandboxID: "unit", ID: "both", StateRoot: dir,
		Container: &configs.Config{Seccomp: &configs.Seccomp{}}, SeccompProgram: []byte{1}})
	if err == nil || !strings.Contains(err.Error(), "one filter only") {
		t.Fatalf("got %v", err)
	}
}
