package integration

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// runningContainer starts a container whose init sleeps, for tests that only exec.
func runningContainer(t *testing.T, opts ...oci.SpecOpts) (client.Task, <-chan client.ExitStatus) {
	t.Helper()
	ctx := testCtx(t)
	opts = append([]oci.SpecOpts{oci.WithProcessArgs("sleep", "120")}, opts...)
	c := newContainer(t, ctx, newID(t), opts...)
	return startTask(t, ctx, c, nullIO())
}

// TestExecOutput checks that an exec's stdout and stderr arrive separately and its exit
// code is reported.
func TestExecOutput(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	stdout, stderr, code := runExec(t, ctx, task, "out",
		"sh", "-c", "echo out-line; echo err-line >&2; echo out-2; exit 5")
	if stdout != "out-line\nout-2\n" {
		t.Errorf("stdout = %q", stdout)
	}
	if stderr != "err-line\n" {
		t.Errorf("stderr = %q", stderr)
	}
	if code != 5 {
		t.Errorf("exit code = %d, want 5", code)
	}
	// The exec sees the container's filesystem and environment, not the host's.
	stdout, _, code = runExec(t, ctx, task, "env", "sh", "-c", `echo "$PATH"; ls /bin/busybox`)
	if code != 0 || !strings.Contains(stdout, "/bin") || !strings.Contains(stdout, "/bin/busybox") {
		t.Errorf("exec in container: code %d, stdout %q", code, stdout)
	}
	// A large output is delivered completely.
	stdout, _, code = runExec(t, ctx, task, "big", "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x")
	if code != 0 || len(stdout) != 300000 || strings.Trim(stdout, "x") != "" {
		t.Errorf("big output: code %d, %d bytes", code, len(stdout))
	}
}

// TestExecExitBySignal checks that an exec killed by its own signal reports 128+signal.
func TestExecExitBySignal(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	_, _, code := runExec(t, ctx, task, "selfterm", "sh", "-c", "kill -TERM $$; sleep 5")
	if code != 143 {
		t.Fatalf("exit code = %d, want 143", code)
	}
}

// TestStdinInitAndCloseIO streams stdin to an init `cat`, then closes it with CloseIO and
// expects cat to exit.
func TestStdinInitAndCloseIO(t *testing.T) {
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("cat"))
	stdinR, stdinW := io.Pipe()
	var stdout syncBuffer
	task, exitCh := startTask(t, ctx, c, ioCreator(stdinR, &stdout, io.Discard, false))
	feedCat(t, ctx, task, exitCh, stdinW, &stdout, "ping-1\n", "ping-2\n")
}

// TestStdinExecAndCloseIO does the same for an exec'd `cat`.
func TestStdinExecAndCloseIO(t *testing.T) {
	ctx := testCtx(t)
	task, initExit := runningContainer(t)
	stdinR, stdinW := io.Pipe()
	var stdout syncBuffer
	p, ch := startExec(t, ctx, task, "cat", ioCreator(stdinR, &stdout, io.Discard, false), false, "cat")
	feedCat(t, ctx, p, ch, stdinW, &stdout, "hello exec\n")
	// Closing an exec's stdin leaves the init alone.
	notExited(t, initExit, 100*time.Millisecond, "init")
}

// feedCat writes lines one by one to the stdin of p, a running `cat`, and waits for each
// to come back on stdout; then it closes stdin (also with CloseIO) and expects cat to exit 0.
func feedCat(t *testing.T, ctx context.Context, p client.Process, exitCh <-chan client.ExitStatus, stdin io.WriteCloser, stdout *syncBuffer, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(stdin, l); err != nil {
			t.Fatalf("write stdin: %v", err)
		}
		stdout.waitFor(t, l, stepTimeout)
	}
	notExited(t, exitCh, 200*time.Millisecond, "cat before CloseIO")

	stdin.Close()
	if err := p.CloseIO(ctx, client.WithStdinCloser); err != nil {
		t.Fatalf("close io: %v", err)
	}
	st := waitExit(t, exitCh, stepTimeout)
	if st.ExitCode() != 0 {
		t.Fatalf("cat exit code = %d, want 0", st.ExitCode())
	}
	deleteProcess(t, ctx, p)
	if got, want := stdout.String(), strings.Join(lines, ""); got != want {
		t.Fatalf("stdout = %q, want %q", got, want)
	}
}

// ptsRe matches a pty's path: the control plane's in /dev/pts, an exec's in the platform's
// own devpts instance (docs/security.md#terminals).
var ptsRe = regexp.MustCompile(`/pts/[0-9]+`)

// ttyScript prints the terminal's path and isatty-yes, then waits for a line and prints the
// terminal's size. (`tty` cannot name an exec's terminal: its directory is closed to user code.)
const ttyScript = `readlink /proc/self/fd/0; [ -t 0 ] && [ -t 1 ] && echo isatty-yes; read x; stty size`

// checkTTYResize checks that p, running ttyScript, is on a terminal, resizes that to w x h
// and checks that stty reports the new size.
func checkTTYResize(t *testing.T, ctx context.Context, p client.Process, exitCh <-chan client.ExitStatus, stdin io.Writer, out *syncBuffer, w, h uint32) {
	t.Helper()
	out.waitFor(t, "isatty-yes", stepTimeout)
	if !ptsRe.MatchString(out.String()) {
		t.Fatalf("stdin is not a pty: %q", out.String())
	}
	if err := p.Resize(ctx, w, h); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
	st := waitExit(t, exitCh, stepTimeout)
	if st.ExitCode() != 0 {
		t.Fatalf("exit code %d; output %q", st.ExitCode(), out.String())
	}
	deleteProcess(t, ctx, p)
	if !strings.Contains(out.String(), fmt.Sprintf("%d %d", h, w)) {
		t.Fatalf("stty size after resize to %dx%d not found in %q", w, h, out.String())
	}
}

// TestTTYInit runs the init on a terminal: tty names a pts, isatty holds for stdin and
// stdout, and ResizePty on the task sets the size stty reports.
func TestTTYInit(t *testing.T) {
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithTTY, oci.WithProcessArgs("sh", "-c", ttyScript))
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var out syncBuffer
	task, exitCh := startTask(t, ctx, c, ioCreator(stdinR, &out, nil, true))
	checkTTYResize(t, ctx, task, exitCh, stdinW, &out, 97, 31)
	// A terminal translates \n into \r\n on output.
	if !strings.Contains(out.String(), "isatty-yes\r\n") {
		t.Fatalf("output is not from a terminal (no CRLF): %q", out.String())
	}
}

// TestTTYExecResize runs an exec on a terminal and resizes it before stty reads the size.
func TestTTYExecResize(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var out syncBuffer
	p, ch := startExec(t, ctx, task, "tty", ioCreator(stdinR, &out, nil, true), true, "sh", "-c", ttyScript)
	checkTTYResize(t, ctx, p, ch, stdinW, &out, 120, 40)
	// A second resize of a live exec works too: stty reports the new size.
	stdinR2, stdinW2 := io.Pipe()
	defer stdinW2.Close()
	var out2 syncBuffer
	p2, ch2 := startExec(t, ctx, task, "tty2", ioCreator(stdinR2, &out2, nil, true), true,
		"sh", "-c", `echo ready; read x; stty size; read x; stty size`)
	out2.waitFor(t, "ready", stepTimeout)
	for _, sz := range []struct{ w, h uint32 }{{80, 24}, {132, 50}} {
		if err := p2.Resize(ctx, sz.w, sz.h); err != nil {
			t.Fatalf("resize: %v", err)
		}
		if _, err := io.WriteString(stdinW2, "go\n"); err != nil {
			t.Fatalf("write stdin: %v", err)
		}
		out2.waitFor(t, fmt.Sprintf("%d %d", sz.h, sz.w), stepTimeout)
	}
	waitExit(t, ch2, stepTimeout)
	deleteProcess(t, ctx, p2)
}
