package attack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

const (
	// testTimeout bounds one test; stepTimeout one exec or one cleanup step.
	testTimeout = 90 * time.Second
	stepTimeout = 15 * time.Second
	// maxExecTime is what a new exec may take after any attack (the bound).
	maxExecTime = time.Second
	// attackerPath is where the image holds the attacker.
	attackerPath = "/usr/local/bin/attacker"
	// agentPath is the stand-in control plane (test/agent).
	agentPath = "/usr/local/bin/agent"
	// reaperCmdline is the workspace's pid 1.
	reaperCmdline = "/dev/.sandbox-reaper"
	// workspaceUID is the default user of user code.
	workspaceUID = "1000"
)

// workspaceMachinery tells the shim's own processes in the workspace apart
// from anything else: pooled execs waiting for a request, and libcontainer's
// init (the shim binary) while it sets one up.
func workspaceMachinery(cmdline string) bool {
	return strings.TrimSpace(cmdline) == reaperCmdline+" --wait-exec" ||
		cmdline == "containerd-shim-sandbox-v1 init" // no host path
}

// controlPlaneArgs is the task's init: the control plane.
// It adopts the reserved ports 8080 and 8888 from LISTEN_FDS.
var controlPlaneArgs = []string{agentPath, "-root", "/www"}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), d.Namespace), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// cleanupCtx is for cleanups: the test's context may be spent by then.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(namespaces.WithNamespace(context.Background(), d.Namespace), 30*time.Second)
}

var seq atomic.Int64

func ioCreator(stdout, stderr io.Writer, tty bool) cio.Creator {
	return d.IO(nil, stdout, stderr, tty)
}

// sandbox is one task of io.sandbox.v1 whose init is the control plane.
type sandbox struct {
	id     string
	task   client.Task
	exitCh <-chan client.ExitStatus
	exited *client.ExitStatus
	// pid and startTime identify the control plane's init on the host.
	pid       int
	startTime uint64
	// proc is the init's process spec; execs start from it (as root, which the shim overrides).
	proc   specs.Process
	cpLog  *harness.SyncBuffer
	userCg map[string]string // controller -> the workspace's cgroup dir
}

// newSandbox starts a sandbox from the attack image with args (the control plane) and waits
// until the control plane answers. The container and task are removed when the test ends.
func newSandbox(t *testing.T, ctx context.Context, args []string, opts ...oci.SpecOpts) *sandbox {
	t.Helper()
	return startSandbox(t, ctx, args, true, opts...)
}

// startSandbox is newSandbox; with serving false it does not wait for an HTTP answer (for a
// control plane that serves nothing).
func startSandbox(t *testing.T, ctx context.Context, args []string, serving bool, opts ...oci.SpecOpts) *sandbox {
	t.Helper()
	id := harness.TestID(t)
	c := d.TestContainer(t, ctx, id, attackImage, harness.SandboxRuntime,
		append([]oci.SpecOpts{oci.WithProcessArgs(args...)}, opts...)...)
	sb := &sandbox{id: id, cpLog: &harness.SyncBuffer{}}
	var err error
	sb.task, err = c.NewTask(ctx, ioCreator(sb.cpLog, sb.cpLog, false))
	if err != nil {
		t.Fatalf("new task %s: %v", id, err)
	}
	if sb.exitCh, err = sb.task.Wait(ctx); err != nil {
		t.Fatalf("wait task %s: %v", id, err)
	}
	if err := sb.task.Start(ctx); err != nil {
		t.Fatalf("start task %s: %v", id, err)
	}
	sb.pid = int(sb.task.Pid())
	if _, sb.startTime, err = procStat(sb.pid); err != nil {
		t.Fatalf("control plane pid %d: %v", sb.pid, err)
	}
	s, err := sb.task.Spec(ctx)
	if err != nil {
		t.Fatalf("task spec: %v", err)
	}
	sb.proc = *s.Process
	// The control plane must have a network namespace of its own, or the HTTP check from
	// outside could reach something else listening on the host's port 8080.
	if same, err := sameNetns(sb.pid); err != nil || same {
		t.Fatalf("control plane %d is not in a network namespace of its own (same=%v, err=%v)", sb.pid, same, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for serving {
		body, err := httpGet(sb.pid, time.Second)
		if err == nil && body == controlPlaneBody {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane never answered: body %q, err %v; its output: %q", body, err, sb.cpLog.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The shim builds the workspace after Start; the first exec waits for it.
	if res, err := sb.exec(ctx, false, stepTimeout, "/bin/true"); err != nil || res.code != 0 {
		t.Fatalf("first exec: exit %d, %v", res.code, err)
	}
	sb.userCg = userCgroups(id)
	if sb.userCg["pids"] == "" || sb.userCg["memory"] == "" {
		t.Fatalf("no workspace pids/memory cgroup found for %s (%v)", id, sb.userCg)
	}
	return sb
}

// userCgroups finds the workspace leaf (<sandbox>/user) in every v1 hierarchy, following the
// /<namespace>/<id> cgroupsPath of containerd's default spec.
func userCgroups(id string) map[string]string {
	m := map[string]string{}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.Namespace, id, "user"))
	for _, dir := range dirs {
		ctrl := filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(dir))))
		m[ctrl] = dir
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", d.Namespace, id, "user")); err == nil {
		m["unified"] = filepath.Join("/sys/fs/cgroup", d.Namespace, id, "user")
	}
	return m
}

// cgroupFile reads one file of the workspace cgroup, trimmed ("" if missing).
func (sb *sandbox) cgroupFile(ctrl, name string) string {
	dir, ok := sb.userCg[ctrl]
	if !ok {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b))
}

// workspacePids lists the host pids in the workspace cgroup and any sub-cgroups the shim
// makes under it (one per exec), but not the secure exec containers' (secure-N, each
// with a reaper and a waiter of its own, below the same user cgroup).
func (sb *sandbox) workspacePids() []int {
	for _, ctrl := range []string{"pids", "memory", "freezer", "unified"} {
		dir, ok := sb.userCg[ctrl]
		if !ok {
			continue
		}
		var pids []int
		_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() && p != dir && strings.HasPrefix(e.Name(), "secure-") {
				return filepath.SkipDir
			}
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
		return pids
	}
	return nil
}

// reaper returns the host pid and start time of the workspace's pid 1.
func (sb *sandbox) reaper(t *testing.T) (int, uint64) {
	t.Helper()
	for _, p := range sb.workspacePids() {
		if procCmdline(p) == reaperCmdline {
			_, start, err := procStat(p)
			if err == nil {
				return p, start
			}
		}
	}
	t.Fatalf("no %s in the workspace cgroup %v", reaperCmdline, sb.userCg)
	return 0, 0
}

// procStat returns the state letter and start time (clock ticks since boot) of a host pid.
func procStat(pid int) (string, uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, fmt.Errorf("bad /proc/%d/stat: %q", pid, s)
	}
	// Fields after the comm start at field 3 (state); starttime is field 22.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", 0, fmt.Errorf("short /proc/%d/stat: %q", pid, s)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return f[0], start, err
}

func procCmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

func sameNetns(pid int) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &a); err != nil {
		return false, err
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &b); err != nil {
		return false, err
	}
	return a.Ino == b.Ino && a.Dev == b.Dev, nil
}

// httpGet fetches / from the control plane, from the host through its network namespace.
func httpGet(pid int, timeout time.Duration) (string, error) {
	body, err := harness.HTTPGet(pid, 8080, "/", timeout)
	return strings.TrimSpace(body), err
}

// execResult is the outcome of one exec.
type execResult struct {
	stdout, stderr string
	code           uint32
	dur            time.Duration // from the Exec call to the exit event
}

// proc is an exec started in the background.
type proc struct {
	p      client.Process
	ch     <-chan client.ExitStatus
	stdout *harness.SyncBuffer
	stderr *harness.SyncBuffer
	begin  time.Time
}

// startExec starts args in the sandbox's workspace as a containerd exec.
func (sb *sandbox) startExec(ctx context.Context, tty bool, args ...string) (*proc, error) {
	spec := sb.proc
	spec.Args = args
	spec.Terminal = tty
	spec.ConsoleSize = nil
	if tty {
		spec.ConsoleSize = &specs.Box{Height: 24, Width: 80}
	}
	pr := &proc{stdout: &harness.SyncBuffer{}, stderr: &harness.SyncBuffer{}, begin: time.Now()}
	id := fmt.Sprintf("x%d", seq.Add(1))
	var errw io.Writer = pr.stderr
	if tty {
		errw = nil
	}
	p, err := sb.task.Exec(ctx, id, &spec, ioCreator(pr.stdout, errw, tty))
	if err != nil {
		return nil, fmt.Errorf("exec %v: %w", args, err)
	}
	pr.p = p
	if pr.ch, err = p.Wait(ctx); err != nil {
		pr.remove()
		return nil, fmt.Errorf("wait exec %v: %w", args, err)
	}
	if err := p.Start(ctx); err != nil {
		pr.remove()
		return nil, fmt.Errorf("start exec %v: %w", args, err)
	}
	return pr, nil
}

// wait waits for the exit, then deletes the process (which drains its output).
func (pr *proc) wait(timeout time.Duration) (execResult, error) {
	var st client.ExitStatus
	select {
	case st = <-pr.ch:
	case <-time.After(timeout):
		pid := int(pr.p.Pid())
		state, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		pr.remove()
		return execResult{stdout: pr.stdout.String(), stderr: pr.stderr.String()},
			fmt.Errorf("exec did not exit within %v (pid %d: %q, wchan %q, cmdline %q)", timeout, pid, state, wchan, procCmdline(pid))
	}
	dur := time.Since(pr.begin)
	harness.DrainIO(pr.p, 5*time.Second)
	if err := pr.remove(); err != nil {
		return execResult{}, err
	}
	if err := st.Error(); err != nil {
		return execResult{}, fmt.Errorf("exit status: %w", err)
	}
	return execResult{stdout: pr.stdout.String(), stderr: pr.stderr.String(), code: st.ExitCode(), dur: dur}, nil
}

// remove kills (if still running) and deletes the exec, bounded in time.
func (pr *proc) remove() error {
	ctx, cancel := cleanupCtx()
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := pr.p.Delete(ctx, client.WithProcessKill)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete exec %s: %w", pr.p.ID(), err)
		}
		return nil
	case <-time.After(stepTimeout):
		return fmt.Errorf("delete exec %s did not return within %v", pr.p.ID(), stepTimeout)
	}
}

// exec runs args to completion in the workspace.
func (sb *sandbox) exec(ctx context.Context, tty bool, timeout time.Duration, args ...string) (execResult, error) {
	pr, err := sb.startExec(ctx, tty, args...)
	if err != nil {
		return execResult{}, err
	}
	return pr.wait(timeout)
}

// background starts a long-running exec that the test removes at its end.
func (sb *sandbox) background(t *testing.T, ctx context.Context, args ...string) *proc {
	t.Helper()
	pr, err := sb.startExec(ctx, false, args...)
	if err != nil {
		t.Fatalf("background exec: %v", err)
	}
	t.Cleanup(func() { _ = pr.remove() })
	return pr
}

// exited waits up to timeout for the background exec to exit.
func (pr *proc) exited(timeout time.Duration) (client.ExitStatus, bool) {
	select {
	case st := <-pr.ch:
		return st, true
	case <-time.After(timeout):
		return client.ExitStatus{}, false
	}
}

// run runs args in the workspace and fails the test if the exec itself fails.
func (sb *sandbox) run(t *testing.T, ctx context.Context, args ...string) execResult {
	t.Helper()
	res, err := sb.exec(ctx, false, stepTimeout, args...)
	if err != nil {
		t.Fatalf("exec %v: %v", args, err)
	}
	return res
}

// attack runs the attacker's subcommand as user code and returns what it reported.
func (sb *sandbox) attack(t *testing.T, ctx context.Context, tty bool, name string, args ...string) execResult {
	t.Helper()
	res, err := sb.exec(ctx, tty, 60*time.Second, append([]string{attackerPath, name}, args...)...)
	if err != nil {
		t.Fatalf("attack %s: %v", name, err)
	}
	t.Logf("attacker %s: exit %d in %v\n%s%s", name, res.code, res.dur.Round(time.Millisecond), res.stdout, res.stderr)
	return res
}

// expectBlocked fails unless the attacker reported that the attack was stopped.
func expectBlocked(t *testing.T, name string, res execResult) {
	t.Helper()
	out := res.stdout + res.stderr
	if res.code != 0 || strings.Contains(out, "BREACH") || !strings.Contains(out, "BLOCKED") {
		t.Errorf("BREACH: attack %s got through (exit %d):\n%s", name, res.code, out)
	}
}

// checkAlive checks from outside, after an attack, that (b) the control plane's init is the
// same live process, (a) it still serves, and (c) a new exec works within maxExecTime. It
// returns the new exec's wall time.
func (sb *sandbox) checkAlive(t *testing.T, ctx context.Context, when string) time.Duration {
	t.Helper()
	// (b) same process, alive, not stopped.
	if sb.exited == nil {
		select {
		case st := <-sb.exitCh:
			sb.exited = &st
		default:
		}
	}
	if sb.exited != nil {
		t.Errorf("%s: the control plane exited with %d (%v); its output: %q", when, sb.exited.ExitCode(), sb.exited.Error(), sb.cpLog.String())
	}
	if st, err := sb.task.Status(ctx); err != nil || st.Status != client.Running {
		t.Errorf("%s: containerd reports the task as %q (%v)", when, st.Status, err)
	}
	state, start, err := procStat(sb.pid)
	switch {
	case err != nil:
		t.Errorf("%s: control plane pid %d is gone: %v", when, sb.pid, err)
	case start != sb.startTime:
		t.Errorf("%s: pid %d is another process now (start time %d, was %d)", when, sb.pid, start, sb.startTime)
	case state == "Z" || state == "X" || state == "T" || state == "t":
		t.Errorf("%s: control plane pid %d is in state %s", when, sb.pid, state)
	case !strings.HasPrefix(procCmdline(sb.pid), agentPath):
		t.Errorf("%s: control plane pid %d runs %q", when, sb.pid, procCmdline(sb.pid))
	}
	// (a) it answers.
	if body, err := httpGet(sb.pid, 3*time.Second); err != nil || body != controlPlaneBody {
		t.Errorf("%s: control plane does not answer: body %q, err %v", when, body, err)
	}
	// (c) a new exec works, quickly.
	res, err := sb.exec(ctx, false, stepTimeout, "/bin/true")
	switch {
	case err != nil:
		t.Errorf("%s: new exec failed: %v", when, err)
	case res.code != 0:
		t.Errorf("%s: new exec /bin/true exited %d: %s", when, res.code, res.stdout+res.stderr)
	case res.dur >= maxExecTime:
		t.Errorf("%s: new exec took %v (limit %v)", when, res.dur, maxExecTime)
	}
	t.Logf("%s: control plane alive and answering; new exec /bin/true took %v", when, res.dur.Round(100*time.Microsecond))
	return res.dur
}

// killWorkspaceFromHost freezes the workspace cgroup, SIGKILLs everything in it but the
// reaper, and thaws it: the test's own way out when user code cannot be stopped from inside.
func (sb *sandbox) killWorkspaceFromHost(t *testing.T, reaper int) {
	t.Helper()
	freezer := sb.userCg["freezer"]
	if freezer != "" {
		_ = os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("FROZEN"), 0)
	}
	deadline := time.Now().Add(stepTimeout)
	for time.Now().Before(deadline) {
		left := 0
		for _, p := range sb.workspacePids() {
			if p != reaper {
				left++
				_ = unix.Kill(p, unix.SIGKILL)
			}
		}
		if left == 0 {
			break
		}
		if freezer != "" {
			_ = os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("THAWED"), 0)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if freezer != "" {
		_ = os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("THAWED"), 0)
	}
}

// waitWorkspaceIdle waits until only the reaper is left in the workspace cgroup.
func (sb *sandbox) waitWorkspaceIdle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		// User processes only: the reaper and the pooled execs stay.
		var user []int
		for _, pid := range sb.workspacePids() {
			if c := procCmdline(pid); c != reaperCmdline && !workspaceMachinery(c) {
				user = append(user, pid)
			}
		}
		if len(user) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d user processes still in the workspace after %v", len(user), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signalled tells whether st is a death by signal sig (containerd reports 128+sig).
func signalled(st client.ExitStatus, sig syscall.Signal) bool {
	return st.ExitCode() == 128+uint32(sig)
}

var errNotFound = errors.New("not found")

// fieldOf returns the value of "key<sep>value" in a key-value file such as /proc/PID/status.
func fieldOf(text, key string) (string, error) {
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			k, v, ok = strings.Cut(line, " ")
		}
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: %w", key, errNotFound)
}

// poll calls f until it reports true or timeout passes.
func poll(timeout time.Duration, f func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
