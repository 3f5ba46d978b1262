package integration

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// Log URIs (containerd's cio.LogFile, cio.BinaryIO, `ctr run --log-uri`,
// nerdctl): the shim sends the task's output to a file or a logging binary
// instead of FIFOs.

// helloBoth writes one line to each stream.
var helloBoth = []string{"sh", "-c", "echo hello-stdout; echo hello-stderr >&2"}

// helloBothToFile is helloBoth for a file:// log. The runc shim closes the
// file both streams share as soon as stdout ends, dropping stderr still in
// flight: under it stderr goes first, and stdout ends a moment later.
func helloBothToFile() []string {
	if isRunc() {
		return []string{"sh", "-c", "echo hello-stderr >&2; sleep 0.2; echo hello-stdout"}
	}
	return helloBoth
}

// TestLogFile: a file:// URI gets both streams, appended, the file and its
// directories created.
func TestLogFile(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "logs", "nested", "task.log")
	var first string
	for i := range 2 {
		c := newContainer(t, ctx, newID(t), oci.WithProcessArgs(helloBothToFile()...))
		task, exitCh := startTask(t, ctx, c, cio.LogFile(path))
		if st := waitExit(t, exitCh, stepTimeout); st.ExitCode() != 0 {
			t.Fatalf("run %d: exit code %d", i, st.ExitCode())
		}
		deleteProcess(t, ctx, task)
		got := readFile(t, path)
		want := strings.Repeat("hello-stdout\nhello-stderr\n", i+1)
		if sortLines(got) != sortLines(want) {
			t.Fatalf("run %d: log file holds %q, want the lines of %q", i, got, want)
		}
		if i == 0 {
			first = got
		} else if !strings.HasPrefix(got, first) {
			t.Fatalf("second run did not append: %q after %q", got, first)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("log file mode %v, want 0644", fi.Mode().Perm())
	}
}

// TestLogFileExec: an exec's file:// URI works as the init's does.
func TestLogFileExec(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	path := filepath.Join(t.TempDir(), "exec.log")
	p, ch := startExec(t, ctx, task, "logged", cio.LogFile(path), false, helloBothToFile()...)
	if st := waitExit(t, ch, stepTimeout); st.ExitCode() != 0 {
		t.Fatalf("exec exit code %d", st.ExitCode())
	}
	deleteProcess(t, ctx, p)
	if got, want := sortLines(readFile(t, path)), sortLines("hello-stdout\nhello-stderr\n"); got != want {
		t.Fatalf("log file holds %q, want %q", got, want)
	}
}

// TestLogBinary: a binary:// URI starts the logger with the URI's query as
// arguments, CONTAINER_ID and CONTAINER_NAMESPACE as its only environment,
// the task's stdout and stderr on fds 3 and 4 and no other descriptor of the
// shim; the logger is gone (reaped, not a zombie) once the task is deleted.
func TestLogBinary(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	dir := t.TempDir()
	c := newContainer(t, ctx, id, oci.WithProcessArgs(helloBoth...))
	task, exitCh := startTask(t, ctx, c, cio.BinaryIO(testLogger(t), map[string]string{"dir": dir}))
	if st := waitExit(t, exitCh, stepTimeout); st.ExitCode() != 0 {
		t.Fatalf("exit code %d", st.ExitCode())
	}
	deleteProcess(t, ctx, task)
	assertLoggerGone(t, dir, 0)
	assertLogged(t, dir, "hello-stdout\n", "hello-stderr\n")
	assertLoggerEnv(t, dir, id)
	if !isRunc() {
		// The runc shim passes a few descriptors of its own on.
		assertLoggerFDs(t, dir)
	}
}

// TestLogBinaryExec: an exec's binary:// URI starts a logger of its own,
// named by the exec id (as the runc shim names it), ended with the exec.
func TestLogBinaryExec(t *testing.T) {
	ctx := testCtx(t)
	task, initExit := runningContainer(t)
	dir := t.TempDir()
	p, ch := startExec(t, ctx, task, "logged", cio.BinaryIO(testLogger(t), map[string]string{"dir": dir}), false, helloBoth...)
	if st := waitExit(t, ch, stepTimeout); st.ExitCode() != 0 {
		t.Fatalf("exec exit code %d", st.ExitCode())
	}
	deleteProcess(t, ctx, p)
	assertLoggerGone(t, dir, 0)
	assertLogged(t, dir, "hello-stdout\n", "hello-stderr\n")
	assertLoggerEnv(t, dir, "logged")
	notExited(t, initExit, 0, "init")
}

// TestLogBinaryTerminal: with a terminal the logger gets the pty's output on
// fd 3 and an empty stderr, as the runc shim does it.
func TestLogBinaryTerminal(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	c := newContainer(t, ctx, newID(t), oci.WithTTY, oci.WithProcessArgs("sh", "-c", "echo hello-tty; echo tty-stderr >&2"))
	task, exitCh := startTask(t, ctx, c, cio.TerminalBinaryIO(testLogger(t), map[string]string{"dir": dir}))
	if st := waitExit(t, exitCh, stepTimeout); st.ExitCode() != 0 {
		t.Fatalf("exit code %d", st.ExitCode())
	}
	deleteProcess(t, ctx, task)
	// The runc shim never waits for a terminal's logger: its output may
	// still be on the way after the delete.
	var out string
	poll(stepTimeout, func() bool {
		out = readFile(t, filepath.Join(dir, "stdout"))
		return strings.Contains(out, "tty-stderr")
	})
	if !strings.Contains(out, "hello-tty\r\n") || !strings.Contains(out, "tty-stderr\r\n") {
		t.Fatalf("logger's stdout %q, want the terminal's two lines", out)
	}
	if isRunc() {
		// The runc shim leaves a terminal's logger waiting for stderr's EOF.
		return
	}
	assertLoggerGone(t, dir, 0)
	if errOut := readFile(t, filepath.Join(dir, "stderr")); errOut != "" {
		t.Fatalf("logger's stderr %q, want nothing", errOut)
	}
}

// TestLogFileTerminal: a terminal's output goes to a file:// log too (the
// runc shim takes the URI for a FIFO path then).
func TestLogFileTerminal(t *testing.T) {
	skipUnderRunc(t, "no file:// log with a terminal")
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "tty.log")
	u, err := url.Parse("file://" + path)
	if err != nil {
		t.Fatal(err)
	}
	c := newContainer(t, ctx, newID(t), oci.WithTTY, oci.WithProcessArgs("sh", "-c", "echo hello-tty; echo tty-stderr >&2"))
	task, exitCh := startTask(t, ctx, c, cio.TerminalLogURI(u))
	if st := waitExit(t, exitCh, stepTimeout); st.ExitCode() != 0 {
		t.Fatalf("exit code %d", st.ExitCode())
	}
	deleteProcess(t, ctx, task)
	if got, want := readFile(t, path), "hello-tty\r\ntty-stderr\r\n"; got != want {
		t.Fatalf("log file holds %q, want %q", got, want)
	}
}

// TestLogURICtr: `ctr run --log-uri`, with a file and with a logging
// binary.
func TestLogURICtr(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, uri   string
		out, errOut string // the files to read
	}{
		{"file", "file://" + filepath.Join(dir, "ctr.log"), filepath.Join(dir, "ctr.log"), filepath.Join(dir, "ctr.log")},
		{"binary", loggerURI(t, "binary", dir), filepath.Join(dir, "stdout"), filepath.Join(dir, "stderr")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			id := newID(t)
			d.CleanupContainer(t, id)
			args := append([]string{"run", "--rm", "--runtime", runtimeName, "--log-uri", tc.uri, harness.Image, id}, helloBothToFile()...)
			cmd := d.Ctr(ctx, args...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("ctr run: %v: %s", err, out)
			}
			if out := readFile(t, tc.out); !strings.Contains(out, "hello-stdout\n") {
				t.Fatalf("stdout not in %s: %q", tc.out, out)
			}
			if out := readFile(t, tc.errOut); !strings.Contains(out, "hello-stderr\n") {
				t.Fatalf("stderr not in %s: %q", tc.errOut, out)
			}
			assertLoggerGone(t, dir, 0)
		})
	}
}

// TestLogBadURI: an unknown scheme, a missing logging binary or one that
// exits before it is ready fail the task's creation with an error naming the
// URI, and leave no logger behind; the runtime keeps serving.
func TestLogBadURI(t *testing.T) {
	for _, tc := range []struct {
		name        string
		uri         func(t *testing.T, dir string) string
		words       []string // named by the error under either runtime
		code        func(error) bool
		sandboxOnly string // why the runc shim accepts it
	}{
		{"unknown-scheme", func(*testing.T, string) string { return "nosuch:///var/log/x" }, []string{"nosuch"}, errdefs.IsInvalidArgument, ""},
		{"missing-binary", func(*testing.T, string) string { return "binary:///no/such/logger?a=b" }, []string{"/no/such/logger"}, errdefs.IsFailedPrecondition, ""},
		{"not-ready", func(t *testing.T, dir string) string {
			return loggerURI(t, "binary-v2", dir, "mode", "exit-before-ready")
		}, nil, errdefs.IsFailedPrecondition, ""},
		{"died-at-start", func(t *testing.T, dir string) string {
			return loggerURI(t, "binary", dir, "mode", "exit-before-ready")
		}, []string{"exiting before ready, as asked"}, errdefs.IsFailedPrecondition, "a plain binary logger's exit counts as ready"},
		{"file-with-host", func(*testing.T, string) string { return "file://somehost/var/log/x" }, nil, errdefs.IsInvalidArgument, "it writes to /var/log/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sandboxOnly != "" {
				skipUnderRunc(t, tc.sandboxOnly)
			}
			ctx := testCtx(t)
			dir := t.TempDir()
			uri := tc.uri(t, dir)
			c := newContainer(t, ctx, newID(t), oci.WithProcessArgs(helloBoth...))
			_, err := c.NewTask(ctx, logURI(t, uri))
			checkLogURIError(t, err, "create", uri, tc.words, tc.code)
			assertLoggerGone(t, dir, 5*time.Second)
			failedCreateLeavesNothing(t, ctx, c)
			assertContainerWorks(t, ctx)
		})
	}
}

// TestLogBadURIExec: an exec with a bad log URI fails by name, its shim
// keeps no logger, zombie or descriptor of it, and the next exec works.
func TestLogBadURIExec(t *testing.T) {
	ctx := testCtx(t)
	task, initExit := runningContainer(t)
	shim := parentPID(t, int(task.Pid()))
	// The first exec builds the workspace and its pool of execs: their
	// descriptors are the baseline.
	if _, _, code := runExec(t, ctx, task, "warmup", "true"); code != 0 {
		t.Fatalf("warm-up exec: code %d", code)
	}
	steadyFDs(t, shim)
	for i, tc := range []struct {
		uri   func(dir string) string
		words []string
		code  func(error) bool
	}{
		{func(string) string { return "nosuch:///var/log/x" }, []string{"nosuch"}, errdefs.IsInvalidArgument},
		{func(string) string { return "binary:///no/such/logger" }, []string{"/no/such/logger"}, errdefs.IsFailedPrecondition},
		{func(dir string) string { return loggerURI(t, "binary-v2", dir, "mode", "exit-before-ready") }, nil, errdefs.IsFailedPrecondition},
	} {
		dir := t.TempDir()
		uri := tc.uri(dir)
		before := steadyFDs(t, shim)
		execID := fmt.Sprintf("bad%d", i)
		p, err := task.Exec(ctx, execID, processSpec(t, ctx, task, false, helloBoth...), logURI(t, uri))
		if err == nil {
			err = p.Start(ctx)
			p.Delete(ctx, client.WithProcessKill) //nolint:errcheck // it never ran
		}
		checkLogURIError(t, err, "exec", uri, tc.words, tc.code)
		assertLoggerGone(t, dir, 5*time.Second)
		var zombies []string
		if !poll(5*time.Second, func() bool { zombies = zombieChildren(shim); return len(zombies) == 0 }) {
			t.Fatalf("zombie children of the shim after a failed exec: %v", zombies)
		}
		if isRunc() {
			// The runc shim kills a logger that was not ready without
			// waiting for it: its pidfd stays until garbage collection.
			continue
		}
		var after []string
		if !poll(5*time.Second, func() bool { after = openFDs(t, shim); return len(after) <= len(before) }) {
			t.Fatalf("shim holds %d descriptors after a failed exec, %d before; new: %v", len(after), len(before), newFDs(before, after))
		}
	}
	if out, _, code := runExec(t, ctx, task, "good", "echo", "good-exec"); code != 0 || out != "good-exec\n" {
		t.Fatalf("good exec after bad ones: code %d, out %q", code, out)
	}
	notExited(t, initExit, 0, "init")
}

// TestLogBinaryNeverReady: a logger that never signals readiness fails the
// exec after a timeout, and is killed and reaped.
func TestLogBinaryNeverReady(t *testing.T) {
	skipUnderRunc(t, "it waits for the logger without a timeout")
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	dir := t.TempDir()
	uri := loggerURI(t, "binary", dir, "mode", "never-ready")
	p, err := task.Exec(ctx, "never", processSpec(t, ctx, task, false, helloBoth...), logURI(t, uri))
	if err == nil {
		err = p.Start(ctx)
		p.Delete(ctx, client.WithProcessKill) //nolint:errcheck // it never ran
	}
	errNames(t, err, "exec with a logger that is never ready", uri, "did not signal ready within")
	assertLoggerGone(t, dir, 0)
}

var (
	loggerOnce sync.Once
	loggerPath string
	loggerErr  error
)

// testLogger builds test/logger once per run, into the daemon's private dir.
func testLogger(t *testing.T) string {
	t.Helper()
	loggerOnce.Do(func() {
		root, err := harness.RepoRoot()
		if err != nil {
			loggerErr = err
			return
		}
		path := filepath.Join(d.Dir, "test-logger")
		cmd := exec.Command("go", "build", "-o", path, "./test/logger")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			loggerErr = fmt.Errorf("build test logger: %w: %s", err, out)
			return
		}
		loggerPath = path
	})
	if loggerErr != nil {
		t.Fatal(loggerErr)
	}
	return loggerPath
}

// loggerURI is a URI of the test logger writing to dir, with extra key
// value arguments.
func loggerURI(t *testing.T, scheme, dir string, kv ...string) string {
	t.Helper()
	q := url.Values{"dir": {dir}}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return (&url.URL{Scheme: scheme, Path: testLogger(t), RawQuery: q.Encode()}).String()
}

// logURI is cio.LogURI for a URI given as a string.
func logURI(t *testing.T, uri string) cio.Creator {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatalf("parse %s: %v", uri, err)
	}
	return cio.LogURI(u)
}

// assertLogged checks what the test logger wrote for each stream.
func assertLogged(t *testing.T, dir, stdout, stderr string) {
	t.Helper()
	if got := readFile(t, filepath.Join(dir, "stdout")); got != stdout {
		t.Fatalf("logger's stdout %q, want %q", got, stdout)
	}
	if got := readFile(t, filepath.Join(dir, "stderr")); got != stderr {
		t.Fatalf("logger's stderr %q, want %q", got, stderr)
	}
}

// assertLoggerEnv checks that the logger's environment is exactly the two
// variables containerd's logging package reads.
func assertLoggerEnv(t *testing.T, dir, id string) {
	t.Helper()
	got := sortLines(readFile(t, filepath.Join(dir, "env")))
	want := sortLines("CONTAINER_ID=" + id + "\nCONTAINER_NAMESPACE=" + d.Namespace + "\n")
	if got != want {
		t.Fatalf("logger's environment %q, want %q", got, want)
	}
}

// assertLoggerFDs checks that the logger inherited stdio and fds 3 to 5,
// which are pipes, and nothing else.
func assertLoggerFDs(t *testing.T, dir string) {
	t.Helper()
	fds := readFile(t, filepath.Join(dir, "fds"))
	for _, line := range strings.Split(strings.TrimSpace(fds), "\n") {
		fd, target, _ := strings.Cut(line, " ")
		n, err := strconv.Atoi(fd)
		switch {
		case err != nil:
			t.Fatalf("logger's descriptors: %q", fds)
		case n >= 3 && n <= 5:
			if !strings.HasPrefix(target, "pipe:") {
				t.Fatalf("logger's fd %d is %s, want a pipe; all:\n%s", n, target, fds)
			}
		case n > 5:
			t.Fatalf("logger inherited fd %d (%s); all:\n%s", n, target, fds)
		}
	}
}

// assertLoggerGone checks, within timeout, that the logger which wrote its
// pid into dir (if it got that far) is gone, not even a zombie, and that no
// process runs the test logger with dir.
func assertLoggerGone(t *testing.T, dir string, timeout time.Duration) {
	t.Helper()
	var left []string
	gone := func() bool {
		left = nil
		if b, err := os.ReadFile(filepath.Join(dir, "pid")); err == nil {
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if state, ppid := procState(pid); state != "" {
				left = append(left, fmt.Sprintf("logger pid %d state %s parent %d", pid, state, ppid))
			}
		}
		for _, pid := range processesMentioning(dir) {
			left = append(left, fmt.Sprintf("pid %d: %s", pid, procCmdline(pid)))
		}
		return len(left) == 0
	}
	if !poll(timeout, gone) {
		t.Fatalf("logger left behind: %v", left)
	}
}

// processesMentioning lists the processes whose argv holds s.
func processesMentioning(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// parentPID is the parent of pid: for a task's init, its shim.
func parentPID(t *testing.T, pid int) int {
	t.Helper()
	_, ppid := procState(pid)
	if ppid == 0 {
		t.Fatalf("no parent for pid %d", pid)
	}
	return ppid
}

// openFDs lists pid's descriptors as "fd target".
func openFDs(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("descriptors of %d: %v", pid, err)
	}
	var fds []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fds = append(fds, e.Name()+" "+target)
	}
	return fds
}

// steadyFDs returns pid's descriptors once their number held for half a
// second (a pool refilling after an exec settles).
func steadyFDs(t *testing.T, pid int) []string {
	t.Helper()
	last := openFDs(t, pid)
	stable := time.Now()
	for deadline := time.Now().Add(stepTimeout); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		now := openFDs(t, pid)
		if len(now) != len(last) {
			last, stable = now, time.Now()
		} else if time.Since(stable) >= 500*time.Millisecond {
			return now
		}
	}
	t.Fatalf("descriptors of %d never settled: %v", pid, last)
	return nil
}

// newFDs lists the descriptors in after that are not in before.
func newFDs(before, after []string) []string {
	var added []string
	for _, fd := range after {
		if !slices.Contains(before, fd) {
			added = append(added, fd)
		}
	}
	return added
}

// zombieChildren lists pid's children that are zombies, as "pid (name)".
func zombieChildren(pid int) []string {
	lists, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var zombies []string
	for _, l := range lists {
		b, _ := os.ReadFile(l)
		for _, f := range strings.Fields(string(b)) {
			child, _ := strconv.Atoi(f)
			if state, _ := procState(child); state == "Z" {
				name, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child))
				zombies = append(zombies, fmt.Sprintf("%d (%s)", child, strings.TrimSpace(string(name))))
			}
		}
	}
	return zombies
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// sortLines sorts the lines of s: the two streams are copied concurrently,
// so their order in one file is not fixed.
func sortLines(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// checkLogURIError wants err (from a create or exec with a bad log URI)
// to name words; under io.sandbox.v1 also the whole URI, with the error
// code code reports (the runc shim names only parts of the URI, and
// answers Unknown).
func checkLogURIError(t *testing.T, err error, what, uri string, words []string, code func(error) bool) {
	t.Helper()
	errNames(t, err, what+" with log URI "+uri, words...)
	t.Logf("error: %v", err)
	if isRunc() {
		return
	}
	errNames(t, err, what+" with log URI", uri)
	if !code(err) {
		t.Fatalf("error code: %v", err)
	}
}
