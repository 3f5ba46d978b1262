package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// Timeouts for single steps; every wait in the suite is bounded by one of them.
const (
	stepTimeout = 10 * time.Second
	testTimeout = 60 * time.Second
)

func isRunc() bool { return runtimeName == harness.RuncRuntime }

// skipUnderRunc skips a test of something only io.sandbox.v1 does.
func skipUnderRunc(t *testing.T, why string) {
	t.Helper()
	if isRunc() {
		t.Skip("runc shim: " + why)
	}
}

// testCtx returns a namespaced context that ends with the test (or after testTimeout).
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), d.Namespace), testTimeout)
	t.Cleanup(cancel)
	if _, dup := logHooked.LoadOrStore(t, true); !dup {
		t.Cleanup(func() { logTailOnFailure(t) })
	}
	return ctx
}

// logHooked records the tests that already show the log on failure.
var logHooked sync.Map

// logTailOnFailure shows the end of containerd's log (which holds the shims' logs too)
// when the test failed, since the harness removes it at the end of the run.
func logTailOnFailure(t *testing.T) {
	if !t.Failed() {
		return
	}
	b, err := os.ReadFile(filepath.Join(d.Dir, "containerd.log"))
	if err != nil {
		t.Logf("containerd log: %v", err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var keep []string
	for _, l := range lines {
		if !strings.Contains(l, "cgroup v1 is deprecated") {
			keep = append(keep, l)
		}
	}
	if len(keep) > 40 {
		keep = keep[len(keep)-40:]
	}
	t.Logf("containerd log tail:\n%s", strings.Join(keep, "\n"))
}

// newID returns a container id unique within the run and readable in logs.
func newID(t *testing.T) string { return harness.TestID(t) }

// newContainer creates a container from the test image with the runtime under test and
// registers its removal (task included) at the end of the test.
func newContainer(t *testing.T, ctx context.Context, id string, opts ...oci.SpecOpts) client.Container {
	t.Helper()
	return d.TestContainer(t, ctx, id, harness.Image, runtimeName, opts...)
}

// syncBuffer adds waitFor to harness.SyncBuffer.
type syncBuffer struct{ harness.SyncBuffer }

// waitFor polls the buffer until it contains s.
func (b *syncBuffer) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	if !poll(timeout, func() bool { return strings.Contains(b.String(), s) }) {
		t.Fatalf("output does not contain %q after %v; got %q", s, timeout, b.String())
	}
}

// poll calls f every 20ms until it returns true or timeout passes.
func poll(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ioCreator returns a cio.Creator with the FIFOs in the daemon's private dir.
func ioCreator(stdin io.Reader, stdout, stderr io.Writer, tty bool) cio.Creator {
	return d.IO(stdin, stdout, stderr, tty)
}

// nullIO discards the process's output.
func nullIO() cio.Creator { return ioCreator(nil, io.Discard, io.Discard, false) }

// newTask creates the task and checks that it is in Created state with a pid.
func newTask(t *testing.T, ctx context.Context, c client.Container, ioc cio.Creator) client.Task {
	t.Helper()
	task, err := c.NewTask(ctx, ioc)
	if err != nil {
		t.Fatalf("new task %s: %v", c.ID(), err)
	}
	return task
}

// startTask creates and starts a task and returns it with its exit channel.
func startTask(t *testing.T, ctx context.Context, c client.Container, ioc cio.Creator) (client.Task, <-chan client.ExitStatus) {
	t.Helper()
	task := newTask(t, ctx, c, ioc)
	exitCh, err := waitAndStart(ctx, task)
	if err != nil {
		t.Fatalf("task %s: %v", c.ID(), err)
	}
	return task, exitCh
}

// waitAndStart starts p, listening for its exit first so that a quick one is not missed.
func waitAndStart(ctx context.Context, p client.Process) (<-chan client.ExitStatus, error) {
	ch, err := p.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait: %w", err)
	}
	if err := p.Start(ctx); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	return ch, nil
}

// waitExit returns the exit status or fails the test after timeout.
func waitExit(t *testing.T, ch <-chan client.ExitStatus, timeout time.Duration) client.ExitStatus {
	t.Helper()
	select {
	case st := <-ch:
		if err := st.Error(); err != nil {
			t.Fatalf("exit status error: %v", err)
		}
		return st
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %v", timeout)
	}
	return client.ExitStatus{}
}

// notExited fails the test if the process exits within d.
func notExited(t *testing.T, ch <-chan client.ExitStatus, dur time.Duration, what string) {
	t.Helper()
	select {
	case st := <-ch:
		t.Fatalf("%s exited unexpectedly with %d", what, st.ExitCode())
	case <-time.After(dur):
	}
}

// processSpec derives an exec process spec from the container's init process.
func processSpec(t *testing.T, ctx context.Context, task client.Task, tty bool, args ...string) *specs.Process {
	t.Helper()
	spec, err := task.Spec(ctx)
	if err != nil {
		t.Fatalf("task spec: %v", err)
	}
	p := *spec.Process
	p.Args = args
	p.Terminal = tty
	p.ConsoleSize = nil
	return &p
}

// startExec execs args in the task and returns the started process with its exit channel.
func startExec(t *testing.T, ctx context.Context, task client.Task, execID string, ioc cio.Creator, tty bool, args ...string) (client.Process, <-chan client.ExitStatus) {
	t.Helper()
	p, err := task.Exec(ctx, execID, processSpec(t, ctx, task, tty, args...), ioc)
	if err != nil {
		t.Fatalf("exec %s %v: %v", execID, args, err)
	}
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), d.Namespace), stepTimeout)
		defer cancel()
		p.Delete(dctx, client.WithProcessKill) //nolint:errcheck // best effort; the task cleanup follows
	})
	ch, err := waitAndStart(ctx, p)
	if err != nil {
		t.Fatalf("exec %s %v: %v", execID, args, err)
	}
	return p, ch
}

// runExec runs args to completion in the task and returns stdout, stderr and exit code.
func runExec(t *testing.T, ctx context.Context, task client.Task, execID string, args ...string) (string, string, uint32) {
	t.Helper()
	var stdout, stderr syncBuffer
	p, ch := startExec(t, ctx, task, execID, ioCreator(nil, &stdout, &stderr, false), false, args...)
	st := waitExit(t, ch, stepTimeout)
	deleteProcess(t, ctx, p)
	return stdout.String(), stderr.String(), st.ExitCode()
}

// deleteProcess deletes an exited process; Delete also drains its stdio, which is bounded
// here so a shim that never closes the FIFOs fails the test instead of hanging it.
func deleteProcess(t *testing.T, ctx context.Context, p client.Process) *client.ExitStatus {
	t.Helper()
	type result struct {
		st  *client.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		harness.DrainIO(p, 5*time.Second)
		st, err := p.Delete(ctx)
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("delete %s: %v", p.ID(), r.err)
		}
		return r.st
	case <-time.After(stepTimeout):
		t.Fatalf("delete %s did not return within %v (stdio not closed?)", p.ID(), stepTimeout)
	}
	return nil
}

// taskStatus returns the task's status or fails.
func taskStatus(t *testing.T, ctx context.Context, p client.Process) client.ProcessStatus {
	t.Helper()
	st, err := p.Status(ctx)
	if err != nil {
		t.Fatalf("status %s: %v", p.ID(), err)
	}
	return st.Status
}

// pidSet returns the pids the runtime reports for the task.
func pidSet(t *testing.T, ctx context.Context, task client.Task) map[uint32]client.ProcessInfo {
	t.Helper()
	infos, err := task.Pids(ctx)
	if err != nil {
		t.Fatalf("pids %s: %v", task.ID(), err)
	}
	m := make(map[uint32]client.ProcessInfo, len(infos))
	for _, i := range infos {
		m[i.Pid] = i
	}
	return m
}

// procState returns the State letter of /proc/<pid>/status and its PPid ("" if gone).
func procState(pid int) (state string, ppid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			state, _, _ = strings.Cut(v, " ")
		case "PPid":
			ppid, _ = strconv.Atoi(v)
		}
	}
	return state, ppid
}

// procCmdline returns argv of a host pid joined by spaces.
func procCmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// waitCmdline polls pid's cmdline until it reads want or timeout passes,
// and returns the last one read.
func waitCmdline(pid int, want string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		got := procCmdline(pid)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readInContainer reads a file inside the mount namespace of a container process through
// /proc/<pid>/root, which works even while the process is frozen.
func readInContainer(pid uint32, path string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pid, path))
	return string(b), err
}

// bundleDir is where containerd puts the task's bundle.
func bundleDir(id string) string {
	return filepath.Join(d.StateDir, "io.containerd.runtime.v2.task", d.Namespace, id)
}

// cgroupDirs lists the existing cgroup dirs of the container, one per v1 hierarchy (or the
// unified one), following the /<ns>/<id> cgroupsPath that containerd's default spec sets.
func cgroupDirs(id string) []string {
	matches, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.Namespace, id))
	if m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", d.Namespace, id)); len(m) > 0 {
		matches = append(matches, m...)
	}
	return matches
}

// shimPIDs returns the live shim pids as a set.
func shimPIDs(t *testing.T) map[int]bool {
	t.Helper()
	pids, err := d.ShimPIDs()
	if err != nil {
		t.Fatalf("shim pids: %v", err)
	}
	m := make(map[int]bool, len(pids))
	for _, p := range pids {
		m[p] = true
	}
	return m
}

// errNames fails unless err is non-nil and mentions every one of words.
func errNames(t *testing.T, err error, what string, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: expected an error, got none", what)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: error does not name %q: %v", what, w, err)
		}
	}
}
