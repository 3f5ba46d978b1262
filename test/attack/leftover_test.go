package attack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Memory that outlives user processes (tmpfs files, SysV and POSIX IPC)
// must never take what the platform's next exec and its cleanup need, and
// the platform has ways back in that need no memory from the workspace:
// Update raising the limit, and a workspace reset.

const (
	// platformExecs is how many execs in a row must work after the attack.
	platformExecs = 6
	// cleanupCmd is the platform's cleanup: it must run, and free the memory.
	cleanupCmd = "rm -rf /tmp/* /dev/shm/* /dev/mqueue/* && " + attackerPath + " ipc-remove"
	// resetAnnotation asks an Update to rebuild the workspace.
	resetAnnotation = "io.sandbox.workspace.reset"
	// unlimitedBound is the most memory the kernel may keep for user code
	// of a sandbox without a memory limit (docs/security.md).
	unlimitedBound = 1 << 30
	// leftoverSlack is what else the workspace cgroup may be charged for
	// around the attack (page cache of binaries, the waiters).
	leftoverSlack = 32 << 20
)

// leftoverCtx is a test context long enough for filling, six execs and a cleanup.
func leftoverCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), d.Namespace), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// userMemory is the workspace cgroup's memory usage and OOM kill count, from the host.
func (sb *sandbox) userMemory(t *testing.T) (usage int64, oomKills int64) {
	t.Helper()
	if dir, ok := sb.userCg["memory"]; ok {
		usage, _ = strconv.ParseInt(sb.cgroupFile("memory", "memory.usage_in_bytes"), 10, 64)
		kills, err := fieldOf(sb.cgroupFile("memory", "memory.oom_control"), "oom_kill")
		if err != nil {
			t.Fatalf("no oom_kill counter in %s/memory.oom_control", dir)
		}
		oomKills, _ = strconv.ParseInt(kills, 10, 64)
		return usage, oomKills
	}
	usage, _ = strconv.ParseInt(sb.cgroupFile("unified", "memory.current"), 10, 64)
	kills, _ := fieldOf(sb.cgroupFile("unified", "memory.events"), "oom_kill")
	oomKills, _ = strconv.ParseInt(kills, 10, 64)
	return usage, oomKills
}

// platformRounds runs platformExecs small execs in a row and reports each outcome;
// it fails the test unless all succeed.
func (sb *sandbox) platformRounds(t *testing.T, ctx context.Context, when string) {
	t.Helper()
	var outcomes []string
	failed := 0
	for i := 0; i < platformExecs; i++ {
		res, err := sb.exec(ctx, false, stepTimeout, "sh", "-c", "echo exec-ok")
		switch {
		case err != nil:
			failed++
			outcomes = append(outcomes, "error: "+err.Error())
		case res.code != 0 || strings.TrimSpace(res.stdout) != "exec-ok":
			failed++
			outcomes = append(outcomes, fmt.Sprintf("exit %d %q", res.code, res.stdout+res.stderr))
		default:
			outcomes = append(outcomes, "ok in "+res.dur.Round(time.Millisecond).String())
		}
	}
	t.Logf("%s: %d/%d platform execs succeeded: %s", when, platformExecs-failed, platformExecs, strings.Join(outcomes, "; "))
	if failed > 0 {
		t.Errorf("%s: %d of %d platform execs failed", when, failed, platformExecs)
	}
}

// recovered checks that platformExecs execs in a row succeed, that the cleanup then frees what
// user code left (down to baseline), and that nothing was OOM-killed meanwhile.
func (sb *sandbox) recovered(t *testing.T, ctx context.Context, when string, baseline int64) {
	t.Helper()
	_, kills := sb.userMemory(t)
	sb.platformRounds(t, ctx, when)
	sb.cleanupLeftover(t, ctx, baseline)
	_, after := sb.userMemory(t)
	t.Logf("%s: %d OOM kills in the workspace during the execs and the cleanup", when, after-kills)
	if after != kills {
		t.Errorf("%s: %d OOM kills in the workspace", when, after-kills)
	}
}

// cleanupLeftover runs the platform's cleanup command and checks from the host that it freed what
// the attack left, down to baseline plus slack.
func (sb *sandbox) cleanupLeftover(t *testing.T, ctx context.Context, baseline int64) {
	t.Helper()
	res, err := sb.exec(ctx, false, 30*time.Second, "sh", "-c", cleanupCmd)
	if err != nil || res.code != 0 {
		t.Errorf("cleanup command failed: exit %d, %v: %s", res.code, err, res.stdout+res.stderr)
		return
	}
	var usage int64
	freed := poll(10*time.Second, func() bool {
		usage, _ = sb.userMemory(t)
		return usage <= baseline+leftoverSlack
	})
	t.Logf("after cleanup: workspace charged %d MiB (baseline %d MiB)", usage>>20, baseline>>20)
	if !freed {
		t.Errorf("cleanup left %d MiB charged to the workspace (baseline %d MiB)", usage>>20, baseline>>20)
	}
}

// fillLeftover runs the attacker's fill-leftover to its end (or its OOM kill).
func (sb *sandbox) fillLeftover(t *testing.T, ctx context.Context) {
	t.Helper()
	res, err := sb.exec(ctx, false, 2*time.Minute, attackerPath, "fill-leftover")
	if err != nil {
		t.Logf("fill-leftover: %v", err)
		return
	}
	t.Logf("fill-leftover: exit %d in %v\n%s%s", res.code, res.dur.Round(time.Millisecond), res.stdout, res.stderr)
}

// TestLeftoverMemory: user code fills tmpfs /tmp and /dev/shm (data and inodes), SysV shm,
// message queues and semaphores, and POSIX message queues as far as it can, then exits or
// is killed by kill -9 -1. Six platform execs in a row still succeed, a cleanup command frees
// the memory, and nothing is OOM-killed meanwhile.
func TestLeftoverMemory(t *testing.T) {
	for _, end := range []string{"exit", "kill-9-1"} {
		t.Run(end, func(t *testing.T) {
			ctx := leftoverCtx(t)
			sb := newSandbox(t, ctx, controlPlaneArgs, oci.WithMemoryLimit(memoryLimit))
			limit, _ := strconv.ParseInt(sb.cgroupFile("memory", "memory.limit_in_bytes"), 10, 64)
			baseline, kills := sb.userMemory(t)
			if end == "exit" {
				sb.fillLeftover(t, ctx)
			} else {
				hog := sb.background(t, ctx, attackerPath, "fill-leftover", "hold")
				if !poll(time.Minute, func() bool {
					st, err := hog.p.Status(ctx)
					return err != nil || st.Status == client.Stopped || strings.Contains(hog.stdout.String(), "holding")
				}) {
					t.Logf("fill-leftover never got to hold: %q", hog.stdout.String())
				}
				t.Logf("fill-leftover (holding):\n%s", hog.stdout.String())
				res, err := sb.exec(ctx, false, stepTimeout, "kill", "-9", "-1")
				t.Logf("kill -9 -1: exit %d, %v", res.code, err)
				if st, ok := hog.exited(10 * time.Second); !ok || !signalled(st, syscall.SIGKILL) {
					t.Errorf("kill -9 -1 did not end the holder (exited %v, code %d)", ok, st.ExitCode())
				}
			}
			filled, killsFilled := sb.userMemory(t)
			t.Logf("workspace limit %d MiB; charged %d MiB before, %d MiB after the attack; OOM kills during it %d",
				limit>>20, baseline>>20, filled>>20, killsFilled-kills)
			if killsFilled != kills {
				t.Errorf("%d OOM kills in the workspace during the attack (memory the kernel keeps reached its limit)", killsFilled-kills)
			}
			sb.recovered(t, ctx, "after the attack", baseline)
			sb.checkAlive(t, ctx, "after filling leftover memory")
		})
	}
}

// TestLeftoverMemoryUnlimited: without any memory limit, what the kernel keeps for user code
// is still bounded (unlimitedBound), and the cleanup frees it.
func TestLeftoverMemoryUnlimited(t *testing.T) {
	ctx := leftoverCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	baseline, _ := sb.userMemory(t)
	sb.fillLeftover(t, ctx)
	filled, _ := sb.userMemory(t)
	t.Logf("no memory limit: charged %d MiB before, %d MiB after the attack (bound %d MiB)", baseline>>20, filled>>20, unlimitedBound>>20)
	if filled-baseline > unlimitedBound+leftoverSlack {
		t.Errorf("user code left %d MiB that outlives it in a sandbox without a limit (bound %d MiB)", (filled-baseline)>>20, unlimitedBound>>20)
	}
	sb.recovered(t, ctx, "after the attack", baseline)
	sb.checkAlive(t, ctx, "after filling leftover memory without a limit")
}

// TestPtyExhaustion: while user code holds every pty it can open, a terminal exec from the
// platform still gets one, and user code cannot open the platform's.
func TestPtyExhaustion(t *testing.T) {
	ctx := leftoverCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs)
	holder := sb.background(t, ctx, attackerPath, "hold-ptys", "/dev/.sandbox-platform/pts/ptmx", "/dev/.sandbox-platform")
	if !poll(30*time.Second, func() bool { return strings.Contains(holder.stdout.String(), "holding") }) {
		t.Fatalf("hold-ptys never held: %q", holder.stdout.String())
	}
	out := holder.stdout.String()
	t.Logf("hold-ptys:\n%s", out)
	if strings.Contains(out, "BREACH") {
		t.Errorf("BREACH: user code opened the platform's pty instance:\n%s", out)
	}
	var held int
	if _, err := fmt.Sscanf(out, "held %d ptys", &held); err != nil || held < 200 {
		t.Errorf("user code held only %d ptys (%v): the attack did not exhaust its pool", held, err)
	}
	for i := 0; i < 3; i++ {
		res, err := sb.exec(ctx, true, stepTimeout, "sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo tty-ok; tty")
		if err != nil {
			t.Fatalf("terminal exec %d while user code holds every pty: %v", i, err)
		}
		t.Logf("terminal exec %d: exit %d %q", i, res.code, res.stdout)
		if !strings.Contains(res.stdout, "tty-ok") {
			t.Errorf("terminal exec %d has no terminal: %q", i, res.stdout)
		}
	}
	// What a program sees of such a terminal: job control works (the pty is the session's
	// controlling terminal); ttyname fails, since user code cannot reach the slave's path.
	res, err := sb.exec(ctx, true, stepTimeout, "sh", "-ic", "sleep 0.2 & fg %1 && echo jobctl-ok; echo hi >/dev/tty && echo devtty-ok; stty size; tty; readlink /proc/self/fd/0; exit 0")
	if err != nil {
		t.Fatalf("job control exec: %v", err)
	}
	t.Logf("a shell on the platform's pty: exit %d %q", res.code, res.stdout)
	for _, want := range []string{"jobctl-ok", "devtty-ok", "24 80"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("a shell on the platform's pty did not print %q (job control, /dev/tty, window size): %q", want, res.stdout)
		}
	}
	sb.checkAlive(t, ctx, "while user code holds every pty")
}

// TestUpdateRecoversFullWorkspace: the platform lowers the workspace's memory limit below what
// the kernel keeps for user code, user code fills it, and an Update raising the limit again
// raises the workspace cgroup's limit: execs work again. Both ways: the Update's own
// io.sandbox.user.memory-limit annotation (the workspace's limit was annotated), and new
// sandbox resources (the workspace's limit derives from the sandbox's).
func TestUpdateRecoversFullWorkspace(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ann           map[string]string
		lower, raise  client.UpdateTaskOpts
		lowered, want int64 // the workspace's limit after each
	}{
		{
			name:  "annotation",
			ann:   map[string]string{"io.sandbox.user.memory-limit": "256m"},
			lower: client.WithAnnotations(map[string]string{"io.sandbox.user.memory-limit": "64m"}), lowered: 64 << 20,
			raise: client.WithAnnotations(map[string]string{"io.sandbox.user.memory-limit": "256m"}), want: 256 << 20,
		},
		{
			name:  "resources",
			lower: updateMemory(96 << 20), lowered: 64 << 20, // 96 MiB less the control plane's 32
			raise: updateMemory(2 * memoryLimit), want: 2*memoryLimit - 2*memoryLimit/4,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := leftoverCtx(t)
			sb := newSandbox(t, ctx, controlPlaneArgs, oci.WithMemoryLimit(2*memoryLimit), oci.WithAnnotations(tc.ann))
			baseline, kills := sb.userMemory(t)
			update := func(what string, opt client.UpdateTaskOpts, want int64) {
				t.Helper()
				if err := sb.task.Update(ctx, opt); err != nil {
					t.Fatalf("%s the workspace's memory limit: %v", what, err)
				}
				got, _ := strconv.ParseInt(sb.cgroupFile("memory", "memory.limit_in_bytes"), 10, 64)
				t.Logf("%s: workspace memory.limit_in_bytes = %d MiB", what, got>>20)
				if got != want {
					t.Fatalf("%s: workspace limit is %d, want %d", what, got, want)
				}
			}
			update("lower", tc.lower, tc.lowered)
			sb.fillLeftover(t, ctx)
			filled, killsFilled := sb.userMemory(t)
			t.Logf("after the attack: charged %d MiB (baseline %d MiB), %d OOM kills", filled>>20, baseline>>20, killsFilled-kills)
			ok := 0
			for i := 0; i < 3; i++ {
				if res, err := sb.exec(ctx, false, stepTimeout, "sh", "-c", "echo exec-ok"); err == nil && res.code == 0 {
					ok++
				}
			}
			t.Logf("while full at %d MiB: %d/3 execs succeeded", tc.lowered>>20, ok)
			update("raise", tc.raise, tc.want)
			_, killsRaised := sb.userMemory(t)
			t.Logf("OOM kills while full: %d", killsRaised-kills)
			sb.recovered(t, ctx, "after raising the limit", baseline)
			// A limit above the sandbox's is refused, naming the annotation, and changes nothing.
			err := sb.task.Update(ctx, client.WithAnnotations(map[string]string{"io.sandbox.user.memory-limit": "4g"}))
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(fmt.Sprint(err), "io.sandbox.user.memory-limit") {
				t.Errorf("update above the sandbox limit: %v, want invalid argument naming the annotation", err)
			}
			if got := sb.cgroupFile("memory", "memory.limit_in_bytes"); got != strconv.FormatInt(tc.want, 10) {
				t.Errorf("a refused update changed the workspace limit to %s", got)
			}
			sb.checkAlive(t, ctx, "after raising the limit")
		})
	}
}

// TestWorkspaceReset: an Update with io.sandbox.workspace.reset kills the workspace and builds
// a fresh one, with an empty /tmp and IPC namespace: a running exec ends (its exit is
// reported), the control plane is untouched, the memory is free, new execs work.
func TestWorkspaceReset(t *testing.T) {
	ctx := leftoverCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs, oci.WithMemoryLimit(memoryLimit))
	baseline, _ := sb.userMemory(t)
	sb.fillLeftover(t, ctx)
	sleeper := sb.background(t, ctx, "sleep", "600")
	filled, _ := sb.userMemory(t)
	reaper, _ := sb.reaper(t)

	// A bad value is refused, naming the annotation, and resets nothing.
	err := sb.task.Update(ctx, client.WithAnnotations(map[string]string{resetAnnotation: "maybe"}))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(fmt.Sprint(err), resetAnnotation) {
		t.Errorf("reset=maybe: %v, want invalid argument naming %s", err, resetAnnotation)
	}
	if again, _ := sb.reaper(t); again != reaper {
		t.Errorf("a refused reset replaced the workspace")
	}

	begin := time.Now()
	if err := sb.task.Update(ctx, client.WithAnnotations(map[string]string{resetAnnotation: "true"})); err != nil {
		t.Fatalf("reset: %v", err)
	}
	t.Logf("reset took %v", time.Since(begin).Round(time.Millisecond))
	st, exited := sleeper.exited(10 * time.Second)
	if !exited || !signalled(st, syscall.SIGKILL) {
		t.Errorf("the exec running in the old workspace did not end with SIGKILL (exited %v, code %d)", exited, st.ExitCode())
	}
	sb.platformRounds(t, ctx, "after the reset")
	if again, _ := sb.reaper(t); again == reaper {
		t.Errorf("the workspace's reaper is still pid %d: not rebuilt", reaper)
	}
	if res := sb.run(t, ctx, "ls", "-A", "/tmp", "/dev/shm"); strings.Contains(res.stdout, "fill-") {
		t.Errorf("the reset kept the old /tmp or /dev/shm: %q", res.stdout)
	}
	if res := sb.run(t, ctx, "sh", "-c", "cat /proc/sysvipc/msg /proc/sysvipc/sem /proc/sysvipc/shm | grep -vc key"); strings.TrimSpace(res.stdout) != "0" {
		t.Errorf("SysV IPC objects survived the reset: %q lines", res.stdout)
	}
	var usage int64
	if !poll(10*time.Second, func() bool { usage, _ = sb.userMemory(t); return usage <= baseline+leftoverSlack }) {
		t.Errorf("after the reset the workspace is charged %d MiB (baseline %d, filled %d)", usage>>20, baseline>>20, filled>>20)
	}
	t.Logf("charged %d MiB filled, %d MiB after the reset (baseline %d MiB)", filled>>20, usage>>20, baseline>>20)

	// One Update raising the sandbox's limit and resetting: the fresh workspace has the new
	// limit, and caps sized from it.
	tmpSize := func() string {
		res := sb.run(t, ctx, "grep", " /tmp ", "/proc/self/mountinfo")
		_, size, _ := strings.Cut(res.stdout, ",size=")
		size, _, _ = strings.Cut(size, ",")
		return size
	}
	before := tmpSize()
	if err := sb.task.Update(ctx, updateMemory(2*memoryLimit), client.WithAnnotations(map[string]string{resetAnnotation: "true"})); err != nil {
		t.Fatalf("update and reset: %v", err)
	}
	sb.userCg = userCgroups(sb.id)
	after := tmpSize()
	limit := sb.cgroupFile("memory", "memory.limit_in_bytes")
	t.Logf("update to %d MiB and reset: workspace limit %s, /tmp size %s (was %s)", (2*memoryLimit)>>20, limit, after, before)
	if limit != strconv.Itoa(2*memoryLimit-(2*memoryLimit/4)) || after == before || after == "" {
		t.Errorf("the fresh workspace did not get the new limit and caps: limit %s, /tmp size %s (was %s)", limit, after, before)
	}
	sb.checkAlive(t, ctx, "after the reset")
}

// updateMemory is an Update of the sandbox's memory limit.
func updateMemory(limit int64) client.UpdateTaskOpts {
	return client.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
}

// platformReserve is the least the workspace's limit keeps beyond what user code can leave
// behind (spec's leftoverReserveMin).
const platformReserve = 48 << 20

// TestPlatformExecMemory measures what the platform needs of the workspace's memory for one
// exec of a small command and the rebuild of the waiter it used (libcontainer's init, a Go
// program, runs in the workspace cgroup): the peak charge above the idle workspace. It must
// fit the reserve the caps leave.
func TestPlatformExecMemory(t *testing.T) {
	ctx := leftoverCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs, oci.WithMemoryLimit(memoryLimit))
	dir, ok := sb.userCg["memory"]
	if !ok {
		t.Skip("needs cgroup v1's memory.max_usage_in_bytes")
	}
	var worst int64
	for i := 0; i < 5; i++ {
		time.Sleep(time.Second) // the pool refilled after the last exec
		idle, _ := sb.userMemory(t)
		if err := os.WriteFile(filepath.Join(dir, "memory.max_usage_in_bytes"), []byte("0"), 0); err != nil {
			t.Fatalf("reset max usage: %v", err)
		}
		sb.run(t, ctx, "sh", "-c", "rm -f /tmp/nothing")
		time.Sleep(time.Second) // the waiter it used is rebuilt
		peak, _ := strconv.ParseInt(sb.cgroupFile("memory", "memory.max_usage_in_bytes"), 10, 64)
		t.Logf("exec %d: idle %.1f MiB, peak %.1f MiB: the exec and its rebuild took %.1f MiB",
			i, float64(idle)/(1<<20), float64(peak)/(1<<20), float64(peak-idle)/(1<<20))
		worst = max(worst, peak-idle)
	}
	if worst > platformReserve/2 {
		t.Errorf("an exec and a waiter rebuild took %d MiB, more than half the reserve of %d MiB", worst>>20, platformReserve>>20)
	}
}
