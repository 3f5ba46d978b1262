package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// runOnPty runs cmd with a fresh pty of the given size as its controlling terminal and
// stdio (as a user's shell would), and returns everything written to the terminal and the
// exit code.
func runOnPty(t *testing.T, cmd *exec.Cmd, rows, cols uint16, timeout time.Duration) (string, int) {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatalf("new pty: %v", err)
	}
	defer master.Close()
	if err := master.Resize(console.WinSize{Height: rows, Width: cols}); err != nil {
		t.Fatalf("resize pty: %v", err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		slave.Close()
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	slave.Close()

	var out syncBuffer
	readDone := make(chan struct{})
	go func() {
		// Reading the master fails with EIO once every slave fd is closed.
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
		}
		close(readDone)
	}()
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waitDone:
	case <-time.After(timeout):
		cmd.Process.Kill() //nolint:errcheck // it is our own child
		<-waitDone
		t.Fatalf("%v did not finish within %v", cmd.Args, timeout)
	}
	select {
	case <-readDone:
	case <-time.After(2 * time.Second):
		// A leftover holder of the slave keeps the master open; what was read is enough.
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code = ee.ExitCode()
	} else if werr != nil {
		t.Fatalf("wait %v: %v", cmd.Args, werr)
	}
	return out.String(), code
}

func ctrCmd(ctx context.Context, args ...string) *exec.Cmd {
	return d.Ctr(ctx, args...)
}

// TestCtrRunTTY runs `ctr run -t --rm` on a pty: the container gets a terminal sized like
// the user's, and ctr exits with the container's exit code.
func TestCtrRunTTY(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	d.CleanupContainer(t, id)
	ctrTTY(t, ctx, 27, 93, 4, "run", "-t", "--rm", "--runtime", runtimeName,
		"--fifo-dir", d.FIFODir(), harness.Image, id)
	if _, err := d.Client.LoadContainer(ctx, id); err == nil {
		t.Fatalf("ctr run --rm left container %s", id)
	}
}

// waitSize prints size=<rows cols> once the terminal has a size: ctr task exec -t sizes
// the exec's terminal only after starting it.
const waitSize = `i=0; while [ $i -lt 100 ]; do s=$(stty size 2>/dev/null); case "$s" in ""|"0 0") sleep 0.05; i=$((i+1));; *) break;; esac; done; echo "size=$s"`

// ctrTTY runs `ctr args... sh -c <script>` on a rows x cols pty, and checks that it exits
// with code and that the script had that terminal, at that size, as its stdio.
func ctrTTY(t *testing.T, ctx context.Context, rows, cols uint16, code int, args ...string) {
	t.Helper()
	what := "ctr " + strings.Join(args, " ")
	script := fmt.Sprintf(`readlink /proc/self/fd/0; [ -t 0 ] && echo isatty-yes; %s; exit %d`, waitSize, code)
	out, got := runOnPty(t, ctrCmd(ctx, append(args, "sh", "-c", script)...), rows, cols, 30*time.Second)
	if got != code {
		t.Fatalf("%s exit code = %d, want %d; output %q", what, got, code, out)
	}
	if !ptsRe.MatchString(out) || !strings.Contains(out, "isatty-yes") {
		t.Fatalf("%s: stdio is not a terminal: %q", what, out)
	}
	if size := fmt.Sprintf("size=%d %d", rows, cols); !strings.Contains(out, size) {
		t.Fatalf("%s: terminal size is not the user's (%s): %q", what, size, out)
	}
}

// TestCtrExecTTY runs `ctr task exec -t` on a pty into a running container.
func TestCtrExecTTY(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"))
	startTask(t, ctx, c, nullIO())
	ctrTTY(t, ctx, 33, 101, 6, "task", "exec", "-t", "--exec-id", "ctr-tty",
		"--fifo-dir", d.FIFODir(), id)
	// Without -t the exec gets pipes, and ctr passes the exit code through.
	cmd := ctrCmd(ctx, "task", "exec", "--exec-id", "ctr-notty",
		"--fifo-dir", d.FIFODir(), id, "sh", "-c", `[ -t 1 ] || echo not-a-tty; exit 2`)
	outb, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("ctr task exec without -t: err %v, output %q", err, outb)
	}
	if !strings.Contains(string(outb), "not-a-tty") {
		t.Fatalf("ctr task exec without -t: output %q", outb)
	}
}
