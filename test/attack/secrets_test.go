package attack

// Guarantee 3, credential exposure (THREATS.md section 3): a secret passed to execSecure
// reaches that command and nothing else. Every test runs the attack as user code in the
// workspace (test/attacker hunt, plant, api-socket), calls execSecure through the Go client
// on the host's API socket, and checks the outcome from outside: what the hunter found,
// what the host's files and processes hold, the exit status the API reported.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/client"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

const (
	// canaryKey is the env key every test passes its canary under.
	canaryKey = "SST_CANARY"
	// canaryPrefix is test/attacker's: the hunter looks for it followed by 32 hex digits,
	// so it never needs (and never has in its argv) the canary itself.
	canaryPrefix = "sst-canary-"
	// plantMarker is what every hook test/attacker plant writes prints when it runs.
	plantMarker = "PLANTED-HOOK-RAN"
)

// newCanary returns a fresh secret: the prefix and 32 random hex digits.
func newCanary(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return canaryPrefix + hex.EncodeToString(b)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// secureSandbox starts a sandbox whose control plane is the agent and returns it with a
// client on its host API socket, once the API says secure execution is available.
func secureSandbox(t *testing.T, ctx context.Context) (*sandbox, *client.Client) {
	t.Helper()
	sb := newSandbox(t, ctx, controlPlaneArgs)
	c := client.ForSandbox(d.Namespace, sb.id)
	t.Cleanup(func() { _ = c.Close() })
	var lastErr error
	if !poll(20*time.Second, func() bool {
		ok, err := c.HasSecureExecution(ctx)
		lastErr = err
		return err == nil && ok
	}) {
		info, _ := c.Info(ctx)
		t.Fatalf("secure execution not available on %s: %v (info %v)", api.HostSocketPath(d.Namespace, sb.id), lastErr, info)
	}
	return sb, c
}

// secureExec runs cmd through execSecure with the canary (and any more env) and fails the
// test if the call itself fails.
func secureExec(t *testing.T, ctx context.Context, c *client.Client, cmd client.Command, opts client.SecureOptions) *client.Result {
	t.Helper()
	res, err := c.ExecSecure(ctx, cmd, opts)
	if err != nil {
		t.Fatalf("execSecure %v: %v", cmd, err)
	}
	if !res.Isolated {
		t.Fatalf("execSecure %v ran without isolation (warnings %v)", cmd, res.Warnings)
	}
	return res
}

// startHunter starts the hunter in the workspace and waits for its first full round.
func (sb *sandbox) startHunter(t *testing.T, ctx context.Context, duration time.Duration) *proc {
	t.Helper()
	h := sb.background(t, ctx, attackerPath, "hunt", "-for", duration.String())
	if !poll(30*time.Second, func() bool { return strings.Contains(h.stdout.String(), "round 1 done") }) {
		t.Fatalf("the hunter never finished a round:\n%s%s", h.stdout, h.stderr)
	}
	return h
}

// stopHunter stops a hunt (SIGTERM: it reports and exits) and fails the test on any find.
func stopHunter(t *testing.T, ctx context.Context, h *proc, when string) {
	t.Helper()
	if err := h.p.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatalf("stop the hunter: %v", err)
	}
	st, ok := h.exited(30 * time.Second)
	out := h.stdout.String() + h.stderr.String()
	if !ok {
		t.Fatalf("the hunter did not stop:\n%s", out)
	}
	t.Logf("hunter %s (exit %d):\n%s", when, st.ExitCode(), lastLines(out, 6))
	if st.ExitCode() != 0 || strings.Contains(out, "FOUND") || !strings.Contains(out, "BLOCKED") {
		t.Errorf("BREACH: user code found a canary %s:\n%s", when, out)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// hostProcessesWith returns the host processes whose environ or cmdline holds one of the
// canaries (this test binary aside: it holds them in memory, never in its env or argv).
func hostProcessesWith(canaries ...string) map[int]string {
	found := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		for _, f := range []string{"environ", "cmdline"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err != nil {
				continue
			}
			for _, c := range canaries {
				if strings.Contains(string(b), c) {
					found[pid] = fmt.Sprintf("%s in /proc/%d/%s (%s)", c, pid, f, procCmdline(pid))
				}
			}
		}
	}
	return found
}

// hostScanRoots are what the host's files are searched under: the test containerd's root,
// state, logs and shim sockets live in d.Dir (below /run); the API's directory and audit
// file in api.HostRunDir (below /run).
var hostScanRoots = []string{"/run", "/tmp", "/var"}

// maxScanFile bounds the files searched; larger ones are counted and skipped.
const maxScanFile = 16 << 20

// hostFilesWith searches every regular file below hostScanRoots (and d.Dir, the shim log
// and the audit file, named to make sure they are there) for the canaries. Kernel trees are
// not below them; special files and files over maxScanFile are skipped.
func hostFilesWith(t *testing.T, canaries ...string) []string {
	t.Helper()
	own := testOutputFiles()
	var found []string
	files, skipped := 0, 0
	var bytesRead int64
	for _, root := range hostScanRoots {
		_ = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if e.IsDir() {
				if p == "/run/udev" { // device database, nothing of ours
					return filepath.SkipDir
				}
				return nil
			}
			if !e.Type().IsRegular() || own[p] {
				return nil
			}
			info, err := e.Info()
			if err != nil {
				return nil
			}
			if info.Size() > maxScanFile {
				skipped++
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			files++
			bytesRead += int64(len(b))
			for _, c := range canaries {
				if strings.Contains(string(b), c) {
					found = append(found, fmt.Sprintf("%s in %s", c, p))
				}
			}
			return nil
		})
	}
	t.Logf("host files searched: %d (%d MiB) below %v, %d over %d MiB skipped", files, bytesRead>>20, hostScanRoots, skipped, maxScanFile>>20)
	return found
}

// testOutputFiles are the files this test's output goes to (go test's and ours): a
// breach report quotes the canary it found, and must not count as a second one.
func testOutputFiles() map[string]bool {
	own := map[string]bool{}
	for _, pid := range []int{os.Getpid(), os.Getppid()} {
		for _, fd := range []int{1, 2} {
			if p, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); err == nil {
				own[p] = true
			}
		}
	}
	return own
}

// checkNowhereOnHost fails the test if a canary is in a host file or a host process' env
// or argv, and checks that the logs and the audit file it must have searched exist.
func (sb *sandbox) checkNowhereOnHost(t *testing.T, canaries ...string) {
	t.Helper()
	for _, p := range []string{filepath.Join(d.Dir, "containerd.log"), filepath.Join(api.HostDir(d.Namespace, sb.id), "audit.jsonl")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("expected %s to search: %v", p, err)
		}
	}
	for _, f := range hostFilesWith(t, canaries...) {
		t.Errorf("BREACH: canary on the host: %s", f)
	}
	for _, f := range hostProcessesWith(canaries...) {
		t.Errorf("BREACH: canary in a host process after the call: %s", f)
	}
}

// shimMemoryWith counts the canaries still in the sandbox's shim's memory: a measurement
// (the Go HTTP and protobuf stacks copy the request into buffers the shim cannot clear),
// logged, not asserted. The shim is root on the host: nothing in the sandbox can read it.
func (sb *sandbox) shimMemoryWith(t *testing.T, canaries ...string) int {
	t.Helper()
	pids, err := d.ShimPIDs()
	if err != nil {
		t.Logf("shim pids: %v", err)
		return -1
	}
	for _, pid := range pids {
		if !strings.Contains(procCmdline(pid), " -id "+sb.id) {
			continue
		}
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		mem, merr := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
		if err != nil || merr != nil {
			return -1
		}
		defer mem.Close()
		n := 0
		for _, line := range strings.Split(string(maps), "\n") {
			var lo, hi uint64
			var perm string
			if _, err := fmt.Sscanf(line, "%x-%x %s", &lo, &hi, &perm); err != nil || perm[0] != 'r' || hi-lo > 1<<30 {
				continue
			}
			buf := make([]byte, hi-lo)
			got, _ := mem.ReadAt(buf, int64(lo))
			for _, c := range canaries {
				n += strings.Count(string(buf[:got]), c)
			}
		}
		return n
	}
	return -1
}

// TestSecretCanary: the command sees its canary; a hunter in the workspace scanning every
// /proc/*/environ, cmdline, mem and open file, /proc/net/unix, SysV shm and every file it
// can read (/tmp, HOME, /var/tmp, /dev/shm, the rootfs) during and after the call finds
// nothing, though the command writes the canary where tools keep credentials (/tmp, HOME,
// /dev/shm: private to it) and leaves a child holding it in its env; from the host, the command is
// in a PID namespace of its own (not a child of the workspace's) while it runs and gone
// after; no host file (/run, /tmp, /var: the containerd root, state and log, the shim log,
// the audit file) and no host process holds the canary; plain execs afterwards do not see it;
// the audit record has the key, not the value.
func TestSecretCanary(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)

	// The host search must be able to find a canary: one written to the daemon's dir.
	probe := newCanary(t)
	probeFile := filepath.Join(d.Dir, "probe-canary")
	if err := os.WriteFile(probeFile, []byte(probe), 0o600); err != nil {
		t.Fatal(err)
	}
	if f := hostFilesWith(t, probe); len(f) != 1 {
		t.Fatalf("the host search does not find a planted canary: %v", f)
	}
	os.Remove(probeFile)

	// The hunter must find a canary user code can reach: in the env and memory of a process
	// of its own exec (sibling execs are other Landlock domains, which may not even read
	// each other's environ), passed by the API's Exec (never a containerd record).
	exposed := newCanary(t)
	control, err := c.Exec(ctx, client.Shell("sleep 3 & exec "+attackerPath+" hunt -for 0"), client.ExecOptions{Env: map[string]string{"EXPOSED": exposed}})
	if err != nil {
		t.Fatalf("API exec: %v", err)
	}
	if out := string(control.Stdout); control.ExitCode != 1 || !strings.Contains(out, exposed) || !strings.Contains(out, "/environ") || !strings.Contains(out, "/mem") {
		t.Fatalf("the hunter does not find a canary in a workspace process' env and memory (exit %d):\n%s", control.ExitCode, out)
	}

	hunter := sb.startHunter(t, ctx, 2*time.Minute)
	canary := newCanary(t)
	cmd := client.Shell(`printf %s "$SST_CANARY" | sha256sum
mkdir -p "$HOME/.docker"
for f in /tmp/token "$HOME/.docker/config.json" "$HOME/.npmrc" /dev/shm/token; do
  printf '%s' "$SST_CANARY" > "$f" 2>/dev/null && echo "wrote $f"
done
sleep 4 &
wait`)
	type outcome struct {
		res *client.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := c.ExecSecure(ctx, cmd, client.SecureOptions{Env: map[string]string{canaryKey: canary}, Timeout: time.Minute})
		done <- outcome{res, err}
	}()
	// From the host, while it runs: the processes holding the canary, and their PID
	// namespaces (siblings of the workspace's: as deep, not one deeper).
	var during map[int]string
	poll(10*time.Second, func() bool { during = hostProcessesWith(canary); return len(during) >= 2 })
	if len(during) == 0 {
		t.Errorf("no host process held the canary during the call: the host-side check cannot see the command")
	}
	reaperPid, _ := sb.reaper(t)
	wsDepth, wsNS := pidNamespace(t, reaperPid)
	for pid := range during {
		depth, ns := pidNamespace(t, pid)
		if depth != wsDepth || ns == wsNS {
			t.Errorf("BREACH: secure process %d is in PID namespace %s at depth %d; the workspace's is %s at depth %d", pid, ns, depth, wsNS, wsDepth)
		}
	}
	t.Logf("during the call, on the host: %d processes with the canary in their env", len(during))
	o := <-done
	if o.err != nil {
		t.Fatalf("execSecure: %v", o.err)
	}
	res := o.res
	t.Logf("execSecure: exit %d in %v, call %s, stdout:\n%s", res.ExitCode, res.Duration, res.CallID, res.Stdout)
	if res.ExitCode != 0 || !res.Isolated || !strings.Contains(string(res.Stdout), sha256Hex(canary)) {
		t.Fatalf("the command did not see its canary (exit %d, isolated %v): %s %s", res.ExitCode, res.Isolated, res.Stdout, res.Stderr)
	}
	if left := hostProcessesWith(canary); len(left) > 0 {
		t.Errorf("BREACH: processes of the secure command outlived it: %v", left)
	}
	time.Sleep(500 * time.Millisecond) // the hunter gets another round after the call
	stopHunter(t, ctx, hunter, "during and after the call")

	// Plain execs afterwards: a containerd exec hunting once, an API exec printing its env.
	after := sb.attack(t, ctx, false, "hunt", "-for", "0")
	expectBlocked(t, "hunt after the call", after)
	plain, err := c.Exec(ctx, client.Argv("/bin/sh", "-c", "env; cat /tmp/token /dev/shm/token $HOME/.npmrc 2>&1"), client.ExecOptions{})
	if err != nil {
		t.Fatalf("API exec: %v", err)
	}
	if strings.Contains(string(plain.Stdout)+string(plain.Stderr), canary) {
		t.Errorf("BREACH: a plain API exec after the call sees the canary:\n%s", plain.Stdout)
	}

	records, err := c.Audit(ctx, 0)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	var rec string
	for _, r := range records {
		if r.GetCallId() == res.CallID {
			rec = r.String()
			if !slices.Contains(r.GetEnvKeys(), canaryKey) {
				t.Errorf("audit record lacks the key %s: %s", canaryKey, rec)
			}
		}
		if strings.Contains(r.String(), canary) {
			t.Errorf("BREACH: the audit trail holds the canary: %s", r)
		}
	}
	if rec == "" {
		t.Errorf("no audit record for call %s in %d records", res.CallID, len(records))
	}
	t.Logf("audit: %s", rec)

	sb.checkNowhereOnHost(t, canary)
	t.Logf("measured: the shim's memory still holds the canary %d times after the call (buffers of the HTTP and protobuf stacks; -1: not read)", sb.shimMemoryWith(t, canary))
	sb.checkAlive(t, ctx, "after the secret hunt")
}

// TestSecretWrittenFiles: the secure command writes its canary into every directory it can
// write (as tools write credential caches: /tmp, HOME, /var/tmp, /dev/shm, any directory of
// the rootfs open to its user). None of it reaches the workspace or stays on the host: what
// it writes is its own and goes with it.
func TestSecretWrittenFiles(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	canary := newCanary(t)
	res := secureExec(t, ctx, c, client.Shell(`for d in $(find / -type d 2>/dev/null | grep -v -e '^/proc' -e '^/sys'); do
  [ -w "$d" ] && printf '%s' "$SST_CANARY" > "$d/.sst-token" 2>/dev/null && echo "wrote $d"
done; true`), client.SecureOptions{Env: map[string]string{canaryKey: canary}, Timeout: time.Minute})
	t.Logf("the secure command wrote into:\n%s", res.Stdout)
	if !strings.Contains(string(res.Stdout), "wrote /tmp") {
		t.Fatalf("the secure command could not even write its /tmp:\n%s%s", res.Stdout, res.Stderr)
	}
	hunt := sb.attack(t, ctx, false, "hunt", "-for", "0")
	expectBlocked(t, "hunt for files a secure command wrote", hunt)
	sb.checkNowhereOnHost(t, canary)
}

// pidNamespace returns how many PID namespaces deep a host pid is (the NSpid entries) and
// its namespace.
func pidNamespace(t *testing.T, pid int) (int, string) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, ""
	}
	nspid, _ := fieldOf(string(status), "NSpid")
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	return len(strings.Fields(nspid)), ns
}

// TestSecretDaemonGone: a daemon the secure command double-forks (setsid, and a plain
// background child), holding the canary in its env, is gone from the host when the call
// returns: after a normal exit and after a timeout.
func TestSecretDaemonGone(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	for _, tc := range []struct {
		name    string
		script  string
		timeout time.Duration
	}{
		{"exit", `(setsid sleep 300 </dev/null >/dev/null 2>&1 &); (sleep 301 </dev/null >/dev/null 2>&1 &); sleep 2; echo forked`, time.Minute},
		{"timeout", `(setsid sleep 300 </dev/null >/dev/null 2>&1 &); (sleep 301 </dev/null >/dev/null 2>&1 &); echo forked; sleep 300`, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			canary := newCanary(t)
			done := make(chan *client.Result, 1)
			go func() {
				res, err := c.ExecSecure(ctx, client.Shell(tc.script), client.SecureOptions{Env: map[string]string{canaryKey: canary}, Timeout: tc.timeout})
				if err != nil {
					t.Errorf("execSecure: %v", err)
				}
				done <- res
			}()
			// The daemons exist (sh, its two sleeps): the check below can see them.
			var during map[int]string
			if !poll(10*time.Second, func() bool { during = hostProcessesWith(canary); return len(during) >= 3 }) {
				t.Errorf("the daemons never showed up on the host: %v", during)
			}
			res := <-done
			if res == nil {
				return
			}
			t.Logf("execSecure: exit %d signal %d timed out %v in %v; %d processes held the canary during the call", res.ExitCode, res.Signal, res.TimedOut, res.Duration, len(during))
			if tc.name == "timeout" && !res.TimedOut {
				t.Errorf("the call did not time out: %+v", res)
			}
			if left := hostProcessesWith(canary); len(left) > 0 {
				gone := poll(5*time.Second, func() bool { return len(hostProcessesWith(canary)) == 0 })
				t.Errorf("BREACH: daemons outlived the call when it returned: %v (gone within 5s after: %v)", left, gone)
			}
			for pid := range during {
				if st, _, err := procStat(pid); err == nil && st != "Z" {
					t.Errorf("BREACH: pid %d (%s) of the call still runs", pid, procCmdline(pid))
				}
			}
			sb.checkNowhereOnHost(t, canary)
		})
	}
	sb.checkAlive(t, ctx, "after the daemons")
}

// TestSecretConcurrentCalls: twenty concurrent calls, each with its own canary under the same
// key, each see exactly their own (containerd CVE-2021-21334 class: env crossing between
// concurrent execs).
func TestSecretConcurrentCalls(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	const calls = 20
	canaries := make([]string, calls)
	for i := range canaries {
		canaries[i] = newCanary(t)
	}
	results := make([]*client.Result, calls)
	errs := make([]error, calls)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = c.ExecSecure(ctx,
				client.Shell(`printf %s "$SST_CANARY" | sha256sum; env | grep -c sst-canary-; sleep 0.2`),
				client.SecureOptions{Env: map[string]string{canaryKey: canaries[i], fmt.Sprintf("SST_CALL_%d", i): "x"}, Timeout: time.Minute})
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	var durations []time.Duration
	for i, res := range results {
		if errs[i] != nil {
			t.Errorf("call %d: %v", i, errs[i])
			continue
		}
		durations = append(durations, res.Duration)
		out := string(res.Stdout)
		if !strings.Contains(out, sha256Hex(canaries[i])) {
			t.Errorf("BREACH: call %d did not see its own canary: %q", i, out)
		}
		if f := strings.Fields(out); len(f) < 3 || f[len(f)-1] != "1" {
			t.Errorf("BREACH: call %d sees more or less than one canary in its env: %q", i, out)
		}
		for j, other := range canaries {
			if j != i && strings.Contains(out, sha256Hex(other)) {
				t.Errorf("BREACH: call %d saw call %d's canary", i, j)
			}
		}
	}
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	if len(durations) > 0 {
		t.Logf("%d concurrent execSecure calls: wall %v, median %v, max %v", calls, wall.Round(time.Millisecond),
			durations[len(durations)/2].Round(time.Millisecond), durations[len(durations)-1].Round(time.Millisecond))
	}
	sb.checkNowhereOnHost(t, canaries...)
	sb.checkAlive(t, ctx, "after twenty concurrent calls")
}

// TestSecretCoreDump: the secure command raises its core limit (it cannot: the hard limit is
// 0), then a child shell kills itself with SIGSEGV in /var/tmp (a directory of the rootfs,
// writable by everyone) and in /tmp: no core file is written, none is in the workspace
// afterwards, and no host file holds the canary (the host's core_pattern is logged).
func TestSecretCoreDump(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	pattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	t.Logf("host core_pattern: %q", strings.TrimSpace(string(pattern)))
	canary := newCanary(t)
	res := secureExec(t, ctx, c, client.Shell(`ulimit -c unlimited 2>&1; echo "core limit $(ulimit -c)"
grep -i 'core file' /proc/self/limits
for dir in /var/tmp /tmp; do
  cd $dir && sh -c 'kill -SEGV $$'; echo "child status $?"
  ls -a $dir | grep -i core && echo "CORE WRITTEN in $dir"
done
true`), client.SecureOptions{Env: map[string]string{canaryKey: canary}, Timeout: time.Minute})
	out := string(res.Stdout) + string(res.Stderr)
	t.Logf("secure command:\n%s", out)
	if !strings.Contains(out, "child status 139") {
		t.Errorf("the child did not die of SIGSEGV: %s", out)
	}
	if !strings.Contains(out, "core limit 0") || strings.Contains(out, "CORE WRITTEN") {
		t.Errorf("BREACH: the secure command could raise its core limit or wrote a core: %s", out)
	}
	ws := sb.run(t, ctx, "/bin/sh", "-c", "ls -a /var/tmp /tmp / /home/user")
	if strings.Contains(ws.stdout, "core") {
		t.Errorf("BREACH: a core file in the workspace:\n%s", ws.stdout)
	}
	sb.checkNowhereOnHost(t, canary)
}

// TestSecretPlantedHome: user code plants, in HOME, the files that make tools hand over
// credentials or run user code (.npmrc, .gitconfig with include, askpass, credential helper,
// ssh command; usercustomize.py and sitecustomize.py in every user site-packages; .profile,
// .bashrc, .shrc; the steal script they call), and sets nothing else. A secure login shell
// (which reads ~/.profile) sees none of them: its HOME is its own. The image has no Python,
// npm or git: that those tools are not handed the files is shown by the files not being
// visible (ls and cat fail), not by running the tools. Afterwards no hook ran (no marker,
// no dump in a dir the workspace reads) and the hunter finds nothing.
func TestSecretPlantedHome(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	planted := sb.attack(t, ctx, false, "plant")
	expectBlocked(t, "plant", planted)
	var files []string
	for _, line := range strings.Split(planted.stdout, "\n") {
		if p, ok := strings.CutPrefix(line, "planted "); ok {
			files = append(files, p)
		}
	}
	if len(files) < 10 {
		t.Fatalf("plant wrote only %d files:\n%s", len(files), planted.stdout)
	}
	canary := newCanary(t)
	var script strings.Builder
	script.WriteString("echo \"HOME=$HOME\"; ls -a \"$HOME\"\n")
	for _, f := range files {
		rel := strings.TrimPrefix(f, "/home/user/")
		fmt.Fprintf(&script, "for p in %q \"$HOME/%s\"; do cat \"$p\" >/dev/null 2>&1 && echo \"VISIBLE $p\"; done\n", f, rel)
	}
	script.WriteString("ls -a /var/tmp /tmp /dev/shm 2>&1\n")
	res := secureExec(t, ctx, c, client.Argv("/bin/sh", "-l", "-c", script.String()),
		client.SecureOptions{Env: map[string]string{canaryKey: canary}, Timeout: time.Minute})
	out := string(res.Stdout) + string(res.Stderr)
	t.Logf("secure login shell (exit %d):\n%s", res.ExitCode, lastLines(out, 12))
	if strings.Contains(out, "VISIBLE") || strings.Contains(out, plantMarker) {
		t.Errorf("BREACH: the secure command saw or ran planted files:\n%s", out)
	}
	// Nothing was dumped where user code can read it.
	ws := sb.run(t, ctx, "/bin/sh", "-c", "ls -a /tmp /var/tmp /dev/shm /home/user")
	if strings.Contains(ws.stdout, "stolen-env") {
		t.Errorf("BREACH: a planted hook dumped the environment:\n%s", ws.stdout)
	}
	expectBlocked(t, "hunt after the planted files", sb.attack(t, ctx, false, "hunt", "-for", "0"))
	sb.checkNowhereOnHost(t, canary)
}

// TestSecretHookVariables: loader and interpreter hook variables set as sandbox env vars
// (BASH_ENV, ENV, LD_PRELOAD, PYTHONSTARTUP, NODE_OPTIONS, GIT_CONFIG_GLOBAL, pointing at a
// planted script) reach plain execs but not a secure command; the call's own env can still
// set one.
func TestSecretHookVariables(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	expectBlocked(t, "plant", sb.attack(t, ctx, false, "plant"))
	hooks := map[string]string{
		"BASH_ENV": "/home/user/.bash_env", "ENV": "/home/user/.shrc", "LD_PRELOAD": "/home/user/.steal.sh",
		"PYTHONSTARTUP": "/home/user/.steal.sh", "NODE_OPTIONS": "--require /home/user/.steal.sh",
		"GIT_CONFIG_GLOBAL": "/home/user/.gitconfig", "PERL5OPT": "-M/home/user/.steal.sh",
	}
	if _, err := c.SetEnvVars(ctx, hooks); err != nil {
		t.Fatalf("setEnvVars: %v", err)
	}
	plain, err := c.Exec(ctx, client.Argv("/bin/sh", "-c", "env"), client.ExecOptions{})
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if !strings.Contains(string(plain.Stdout), "BASH_ENV=") {
		t.Fatalf("the sandbox env vars did not reach a plain exec:\n%s", plain.Stdout)
	}
	res := secureExec(t, ctx, c, client.Argv("/bin/sh", "-c", "env"),
		client.SecureOptions{Env: map[string]string{"PYTHONPATH": "/opt/call-set"}, Timeout: time.Minute})
	out := string(res.Stdout)
	for k := range hooks {
		if strings.Contains(out, k+"=") {
			t.Errorf("BREACH: the sandbox's %s reached the secure command", k)
		}
	}
	if !strings.Contains(out, "PYTHONPATH=/opt/call-set") {
		t.Errorf("the call's own PYTHONPATH did not reach its command:\n%s", out)
	}
	if strings.Contains(out, plantMarker) || strings.Contains(string(res.Stderr), plantMarker) {
		t.Errorf("BREACH: a planted hook ran in the secure command")
	}
}

// TestSecretAPISocketUnreachable: neither the workspace nor a secure command can reach the
// sandbox API: no /run/sandbox/api.sock or /run/io.sandbox, nothing through /proc/PID/root,
// and no socket listed in /proc/net/unix (which shows the control plane's, as the network
// namespace is shared) that connects answers the API or is named api.sock. The same check
// run on the host does find the API (the check can see it where it is).
func TestSecretAPISocketUnreachable(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	expectBlocked(t, "api-socket from the workspace", sb.attack(t, ctx, false, "api-socket"))
	res := secureExec(t, ctx, c, client.Argv(attackerPath, "api-socket"), client.SecureOptions{Timeout: time.Minute})
	t.Logf("api-socket from a secure container (exit %d):\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	if res.ExitCode != 0 || strings.Contains(string(res.Stdout), "BREACH") {
		t.Errorf("BREACH: a secure command reached the API:\n%s", res.Stdout)
	}
	// The same attacker on the host, as root, finds the host socket: the check works.
	bin := filepath.Join(t.TempDir(), "attacker")
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./test/attacker")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build attacker: %v: %s", err, out)
	}
	host, _ := exec.CommandContext(ctx, bin, "api-socket").CombinedOutput()
	if !strings.Contains(string(host), "the sandbox API answered on "+api.HostSocketPath(d.Namespace, sb.id)) {
		t.Errorf("api-socket run on the host did not find %s:\n%s", api.HostSocketPath(d.Namespace, sb.id), host)
	}
}

// TestSecretReservedPort: a secure command cannot bind the reserved ports: its cgroup leaf
// is below the user cgroup, where the port rules are.
func TestSecretReservedPort(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	res := secureExec(t, ctx, c, client.Argv(attackerPath, "bind-reserved", "-", "8080", "8888"), client.SecureOptions{Timeout: time.Minute})
	t.Logf("bind-reserved from a secure container (exit %d):\n%s", res.ExitCode, lastLines(string(res.Stdout), 4))
	if res.ExitCode != 0 || strings.Contains(string(res.Stdout), "BREACH") || !strings.Contains(string(res.Stdout), "BLOCKED") {
		t.Errorf("BREACH: a secure command bound a reserved port:\n%s%s", res.Stdout, res.Stderr)
	}
	sb.checkAlive(t, ctx, "after a secure command tried the reserved ports")
}

// TestSecretAbstractSocket: the network namespace (where abstract unix sockets live) is
// shared. A secure command serving an abstract socket (as ssh-agent -a @name or a
// credential helper might) must not be reachable from the workspace. The other way (a
// secure command connecting to a name user code squats) is logged: the command chooses
// what it connects to.
func TestSecretAbstractSocket(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	name := fmt.Sprintf("sst-secure-%d", seq.Add(1))
	done := make(chan *client.Result, 1)
	go func() {
		res, err := c.ExecSecure(ctx, client.Shell(attackerPath+" serve-abstract "+name+" & sleep 4; echo served"), client.SecureOptions{Timeout: time.Minute})
		if err != nil {
			t.Errorf("execSecure: %v", err)
		}
		done <- res
	}()
	time.Sleep(1500 * time.Millisecond)
	ws := sb.attack(t, ctx, false, "abstract", name)
	if res := <-done; res != nil {
		t.Logf("secure server: exit %d %s", res.ExitCode, res.Stdout)
	}
	expectBlocked(t, "connect from the workspace to a secure command's abstract socket", ws)

	squat := fmt.Sprintf("sst-workspace-%d", seq.Add(1))
	sb.background(t, ctx, attackerPath, "serve-abstract", squat)
	time.Sleep(500 * time.Millisecond)
	res := secureExec(t, ctx, c, client.Argv(attackerPath, "abstract", squat), client.SecureOptions{Timeout: time.Minute})
	t.Logf("measured: a secure command connecting to user code's abstract socket @%s: exit %d\n%s", squat, res.ExitCode, res.Stdout)
}

// TestSecretArgvRedacted: a caller that puts the value in argv as well (it should not) gets
// it redacted in the audit trail, and it stays off the host's files and out of the
// workspace (the secure command's argv is in its own PID namespace).
func TestSecretArgvRedacted(t *testing.T) {
	ctx := testCtx(t)
	sb, c := secureSandbox(t, ctx)
	hunter := sb.startHunter(t, ctx, 2*time.Minute)
	canary := newCanary(t)
	res := secureExec(t, ctx, c, client.Argv("/bin/sh", "-c", `[ "$1" = "$SST_CANARY" ] && echo same; sleep 2`, "sh", canary),
		client.SecureOptions{Env: map[string]string{canaryKey: canary}, Timeout: time.Minute})
	if !strings.Contains(string(res.Stdout), "same") {
		t.Fatalf("the command did not get its argv and env: %s %s", res.Stdout, res.Stderr)
	}
	stopHunter(t, ctx, hunter, "while the canary was in the secure command's argv")
	records, err := c.Audit(ctx, 0)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	found := false
	for _, r := range records {
		if r.GetCallId() == res.CallID {
			found = true
			if !slices.Contains(r.GetArgv(), "[REDACTED]") {
				t.Errorf("audit argv not redacted: %v", r.GetArgv())
			}
		}
		if strings.Contains(r.String(), canary) {
			t.Errorf("BREACH: the audit trail holds the canary")
		}
	}
	if !found {
		t.Errorf("no audit record for call %s", res.CallID)
	}
	sb.checkNowhereOnHost(t, canary)
}
