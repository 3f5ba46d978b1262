package attack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"
)

// TestIdentity: user code runs as uid/gid 1000 with no capabilities, no_new_privs and seccomp,
// although the exec's spec (copied from the control plane's) asks for root.
func TestIdentity(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	if sb.proc.User.UID != 0 {
		t.Fatalf("the exec spec should ask for root to make this test meaningful, asks for %d", sb.proc.User.UID)
	}
	if out := strings.TrimSpace(sb.run(t, ctx, "id", "-u").stdout); out != workspaceUID {
		t.Errorf("id -u = %q, want %s", out, workspaceUID)
	}
	if out := strings.TrimSpace(sb.run(t, ctx, "id", "-g").stdout); out != workspaceUID {
		t.Errorf("id -g = %q, want %s", out, workspaceUID)
	}
	status := sb.run(t, ctx, "cat", "/proc/self/status").stdout
	for key, want := range map[string]string{
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
		"NoNewPrivs": "1", "Seccomp": "2",
	} {
		if got, err := fieldOf(status, key); err != nil || got != want {
			t.Errorf("/proc/self/status %s = %q (%v), want %s", key, got, err, want)
		}
	}
	if adj := strings.TrimSpace(sb.run(t, ctx, "cat", "/proc/self/oom_score_adj").stdout); adj != "1000" {
		t.Errorf("user code's oom_score_adj = %q, want 1000", adj)
	}
	sb.checkAlive(t, ctx, "after identity checks")
}

// TestControlPlaneInvisible: the workspace's ps and the attacker's /proc walk list only the
// workspace's own processes: the reaper and user code, never the control plane.
func TestControlPlaneInvisible(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	sb.background(t, ctx, "sleep", "60")
	time.Sleep(100 * time.Millisecond) // the sleep is running once its exec started; let it exec
	ps := sb.run(t, ctx, "ps", "-o", "pid,user,args")
	t.Logf("ps in the workspace:\n%s", ps.stdout)
	if strings.Contains(ps.stdout, agentPath) {
		t.Errorf("BREACH: the control plane is visible to user code:\n%s", ps.stdout)
	}
	for _, want := range []string{"sleep 60", reaperCmdline} {
		if !strings.Contains(ps.stdout, want) {
			t.Errorf("ps does not list %q: the check would prove nothing:\n%s", want, ps.stdout)
		}
	}
	res := sb.attack(t, ctx, false, "pids")
	if res.code != 0 {
		t.Errorf("attacker pids exited %d", res.code)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		if line == "BLOCKED" || line == "" {
			continue
		}
		_, cmd, _ := strings.Cut(line, " ")
		seen[cmd] = true
		if cmd != reaperCmdline && cmd != "sleep 60" && !workspaceMachinery(cmd) {
			t.Errorf("BREACH: user code sees a process that is not the workspace's: %q", line)
		}
	}
	if !seen[reaperCmdline] || !seen["sleep 60"] {
		t.Errorf("attacker pids missed the workspace's own processes (saw %v)", seen)
	}
	sb.checkAlive(t, ctx, "after listing processes")
}

// TestKillMinusOne: busybox `kill -9 -1` kills user code (the victim) but not the control plane.
func TestKillMinusOne(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	victim := sb.background(t, ctx, "sleep", "60")
	time.Sleep(100 * time.Millisecond)
	res := sb.run(t, ctx, "kill", "-9", "-1")
	t.Logf("kill -9 -1: exit %d %s%s", res.code, res.stdout, res.stderr)
	if st, ok := victim.exited(5 * time.Second); !ok || !signalled(st, syscall.SIGKILL) {
		t.Errorf("kill -9 -1 did not kill user code's sleep (exited=%v, code %d): the attack did not run", ok, st.ExitCode())
	}
	sb.checkAlive(t, ctx, "after kill -9 -1")
}

// TestSignalAll: every signal 1-64 to every visible pid and to -1.
func TestSignalAll(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	reaper, rstart := sb.reaper(t)
	victim := sb.background(t, ctx, "sleep", "60")
	time.Sleep(100 * time.Millisecond)
	expectBlocked(t, "signal-all", sb.attack(t, ctx, false, "signal-all"))
	if _, ok := victim.exited(5 * time.Second); !ok {
		t.Errorf("signal-all did not reach user code's sleep: the attack did not run")
	}
	sb.checkReaper(t, reaper, rstart)
	sb.checkAlive(t, ctx, "after signal-all")
}

// TestKillInit: user code cannot kill the workspace's pid 1, and after `kill -9 -1` inside
// the workspace the workspace still takes execs.
func TestKillInit(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	reaper, rstart := sb.reaper(t)
	expectBlocked(t, "kill-init", sb.attack(t, ctx, false, "kill-init"))
	for _, sig := range []string{"-KILL", "-TERM", "-STOP", "-INT", "-HUP"} {
		sb.run(t, ctx, "kill", sig, "1")
	}
	sb.checkReaper(t, reaper, rstart)
	victim := sb.background(t, ctx, "sleep", "60")
	time.Sleep(100 * time.Millisecond)
	sb.run(t, ctx, "kill", "-9", "-1")
	if st, ok := victim.exited(5 * time.Second); !ok || !signalled(st, syscall.SIGKILL) {
		t.Errorf("kill -9 -1 did not kill user code's sleep (exited=%v, code %d)", ok, st.ExitCode())
	}
	sb.checkReaper(t, reaper, rstart)
	sb.checkAlive(t, ctx, "after kill-init and kill -9 -1")
}

// checkReaper fails if the workspace's pid 1 is not the same live process.
func (sb *sandbox) checkReaper(t *testing.T, pid int, start uint64) {
	t.Helper()
	state, s, err := procStat(pid)
	if err != nil || s != start || state == "Z" || state == "T" || procCmdline(pid) != reaperCmdline {
		t.Errorf("the workspace reaper %d is gone or replaced (state %q, start %d/%d, err %v)", pid, state, s, start, err)
	}
}

// bombAlive is how many processes the workspace holds while a fork bomb counts as running.
const bombAlive = 250

// TestForkBomb: while a fork bomb fills the workspace's pids limit, the control plane answers
// and new execs start; after user code kills it from inside, everything is back.
func TestForkBomb(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		// The classic: short-lived shells that each start two more. It burns out in about
		// a second once the pids limit stops it, so the first shell keeps re-arming it.
		{"pipe", "f(){ f | f & }; while :; do f; done"},
		// Every shell loops forever forking: the pids limit stays full and every process
		// is runnable, so it also starves the CPU. Shells die when a fork fails, so the
		// first one re-arms it too.
		{"loop", "f(){ while :; do f & done; }; while :; do f; done"},
		// No forking once started: 512 spinning shells (a doubling tree, so they all start
		// within a second), under the pids limit: CPU starvation without pid exhaustion.
		{"spin", "g(){ if [ $1 -gt 0 ]; then g $(($1-1)) & g $(($1-1)); fi; while :; do :; done; }; g 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			// Limits as a platform sets them (here 1.5 of the machine's 2 CPUs): without
			// a CPU limit a bomb's fork churn can stall the whole host, not just the sandbox.
			sb := newSandbox(t, ctx, controlPlaneArgs, oci.WithCPUCFS(150000, 100000), oci.WithMemoryLimit(512<<20))
			reaper, rstart := sb.reaper(t)
			t.Logf("workspace pids.max = %s", sb.cgroupFile("pids", "pids.max"))
			launch := func() {
				sb.background(t, ctx, "/bin/sh", "-c", "exec </dev/null >/dev/null 2>&1; "+tc.script+"; sleep 600")
			}
			launch()
			// Either way the bomb is stopped at the end, whatever failed.
			t.Cleanup(func() { sb.killWorkspaceFromHost(t, reaper) })
			// pids.current counts the whole workspace subtree, forks in flight included.
			current := func() int {
				n, _ := strconv.Atoi(sb.cgroupFile("pids", "pids.current"))
				return n
			}
			peak := 0
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				peak = max(peak, current())
			}
			t.Logf("bomb after 3s: pids.current %d (peak %d), pids.events %q",
				current(), peak, sb.cgroupFile("pids", "pids.events"))
			if peak < bombAlive {
				t.Fatalf("the fork bomb did not take off (peak %d processes)", peak)
			}
			// A shell bomb can burn itself out once every fork fails (even the
			// re-arming shell dies on a failed fork): relaunch it, as an
			// attacker would, so that each check really runs during a bomb.
			ensureBomb := func(i int) {
				for try := 0; current() < bombAlive; try++ {
					if try == 3 {
						t.Fatalf("the fork bomb keeps dying down (%d processes) before check %d", current(), i)
					}
					t.Logf("the fork bomb died down (%d processes) before check %d: relaunching it", current(), i)
					launch()
					for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && current() < bombAlive; {
						time.Sleep(50 * time.Millisecond)
					}
				}
			}
			var durs []time.Duration
			for i := 1; i <= 3; i++ {
				// "During" means it: the bomb still holds many pids when the check starts.
				ensureBomb(i)
				durs = append(durs, sb.checkAlive(t, ctx, fmt.Sprintf("during the fork bomb (%d/3)", i)))
				// For comparison only: the same process start on the host, outside the sandbox.
				begin := time.Now()
				herr := exec.Command("/bin/true").Run()
				t.Logf("  workspace pids.current now: %d; host fork+exec /bin/true took %v (%v)", current(), time.Since(begin).Round(100*time.Microsecond), herr)
			}
			t.Logf("REPORT fork bomb %s: new exec during the bomb took %v", tc.name, durs)
			// Kill from inside, as user code or the platform through an exec would.
			killed := time.Now()
			res, err := sb.exec(ctx, false, stepTimeout, "/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do kill -9 -1; done")
			if err != nil {
				t.Errorf("exec to kill the fork bomb: %v", err)
			} else {
				t.Logf("kill -9 -1 x10 from inside: exit %d in %v", res.code, res.dur.Round(time.Millisecond))
			}
			if err := sb.waitWorkspaceIdle(10 * time.Second); err != nil {
				t.Errorf("after kill -9 -1: %v", err)
				sb.killWorkspaceFromHost(t, reaper)
			}
			t.Logf("workspace idle %v after the kill", time.Since(killed).Round(time.Millisecond))
			sb.checkReaper(t, reaper, rstart)
			after := sb.checkAlive(t, ctx, "after the fork bomb was killed")
			t.Logf("REPORT fork bomb %s: new exec after the bomb was killed took %v", tc.name, after)
		})
	}
}

// memoryLimit is the sandbox's memory limit in the memory tests.
const memoryLimit = 256 << 20

// TestMemoryExhaustion: user code allocating without bound is OOM-killed, the control plane
// is not: with the default workspace limit (the sandbox's minus a reserve), and with the
// workspace allowed the whole sandbox limit, where only oom_score_adj steers the OOM killer.
func TestMemoryExhaustion(t *testing.T) {
	for _, tc := range []struct {
		name string
		ann  map[string]string
	}{
		{"workspace-limit", nil},
		{"sandbox-limit", map[string]string{"io.sandbox.user.memory-limit": "256m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			opts := []oci.SpecOpts{oci.WithMemoryLimit(memoryLimit)}
			if tc.ann != nil {
				opts = append(opts, oci.WithAnnotations(tc.ann))
			}
			sb := newSandbox(t, ctx, controlPlaneArgs, opts...)
			t.Logf("workspace memory.limit_in_bytes = %s", sb.cgroupFile("memory", "memory.limit_in_bytes"))
			memhog(t, ctx, sb)
			sb.checkAlive(t, ctx, "after memhog")
		})
	}
}

// memhog runs the attacker's memhog and expects it to be OOM-killed.
func memhog(t *testing.T, ctx context.Context, sb *sandbox) {
	t.Helper()
	res := sb.attack(t, ctx, false, "memhog")
	if res.code != 128+uint32(syscall.SIGKILL) {
		t.Errorf("memhog was not OOM-killed: exit %d, output %q", res.code, res.stdout)
	}
	oom := sb.cgroupFile("memory", "memory.oom_control")
	t.Logf("workspace memory.oom_control: %q, max_usage %s", strings.ReplaceAll(oom, "\n", "; "), sb.cgroupFile("memory", "memory.max_usage_in_bytes"))
}

// TestOOMScoreAdj: user code cannot raise the control plane's oom_score_adj (it cannot see
// it); then it exhausts the sandbox's memory and is the one killed.
func TestOOMScoreAdj(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs, oci.WithMemoryLimit(memoryLimit),
		oci.WithAnnotations(map[string]string{"io.sandbox.user.memory-limit": "256m"}))
	adjFile := fmt.Sprintf("/proc/%d/oom_score_adj", sb.pid)
	before, err := os.ReadFile(adjFile)
	if err != nil {
		t.Fatal(err)
	}
	expectBlocked(t, "oom-adj", sb.attack(t, ctx, false, "oom-adj"))
	if after, _ := os.ReadFile(adjFile); string(after) != string(before) {
		t.Errorf("BREACH: the control plane's oom_score_adj changed from %q to %q", before, after)
	}
	memhog(t, ctx, sb)
	sb.checkAlive(t, ctx, "after oom-adj and memhog")
}

// TestAttacker runs the attacker's attacks on other processes and on kernel interfaces, each
// as user code, each followed by the outside checks.
func TestAttacker(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	reaper, rstart := sb.reaper(t)
	for _, name := range []string{"ptrace", "proc-mem", "vm-read", "pidfd", "prlimit", "cgroup", "io-uring", "sysrq"} {
		t.Run(name, func(t *testing.T) {
			expectBlocked(t, name, sb.attack(t, ctx, false, name))
			sb.checkReaper(t, reaper, rstart)
			if name == "cgroup" {
				sb.checkNotFrozen(t)
			}
			sb.checkAlive(t, ctx, "after "+name)
		})
	}
}

// checkNotFrozen fails if any freezer above or at the control plane is frozen.
func (sb *sandbox) checkNotFrozen(t *testing.T) {
	t.Helper()
	dir := filepath.Join("/sys/fs/cgroup/freezer", d.Namespace, sb.id)
	for _, p := range []string{dir, filepath.Join(dir, "control")} {
		b, err := os.ReadFile(filepath.Join(p, "freezer.state"))
		if err != nil {
			continue
		}
		if s := strings.TrimSpace(string(b)); s != "THAWED" {
			t.Errorf("BREACH: %s is %s", p, s)
		}
	}
}

// TestInheritedFDs: user code's descriptors are exactly 0, 1 and 2, with and without a
// terminal, although the control plane holds a listening socket and an extra open file.
func TestInheritedFDs(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, []string{"/bin/sh", "-c",
		"exec 9</www/index.html; exec " + strings.Join(controlPlaneArgs, " ")})
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", sb.pid))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fds {
		names = append(names, f.Name())
	}
	if !slices.Contains(names, "9") {
		t.Fatalf("the control plane does not hold fd 9 (%v): the test would prove nothing", names)
	}
	t.Logf("control plane fds: %v", names)
	expectBlocked(t, "fds", sb.attack(t, ctx, false, "fds"))
	expectBlocked(t, "fds (tty)", sb.attack(t, ctx, true, "fds"))
	sb.checkAlive(t, ctx, "after fds")
}

// TestTIOCSTI: user code on a terminal exec cannot push input into it.
func TestTIOCSTI(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	if tty := strings.TrimSpace(sb.run(t, ctx, "cat", "/proc/sys/dev/tty/legacy_tiocsti").stdout); tty != "" {
		t.Logf("dev.tty.legacy_tiocsti = %s", tty)
	}
	res := sb.attack(t, ctx, true, "tiocsti")
	expectBlocked(t, "tiocsti", res)
	sb.checkAlive(t, ctx, "after tiocsti")
}

// TestAbstractSocket: the control plane's abstract unix socket (abstract sockets belong to
// the network namespace, which the workspace shares) is out of user code's reach, while
// user code's own abstract sockets work.
func TestAbstractSocket(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, []string{"/bin/sh", "-c",
		attackerPath + " serve-abstract cp-admin & exec " + strings.Join(controlPlaneArgs, " ")})
	if !poll(5*time.Second, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", sb.pid))
		return strings.Contains(string(b), "@cp-admin")
	}) {
		t.Fatal("the control plane's @cp-admin socket never appeared: the test would prove nothing")
	}
	expectBlocked(t, "abstract", sb.attack(t, ctx, false, "abstract", "cp-admin"))
	sb.checkAlive(t, ctx, "after the abstract socket attempt")
}
