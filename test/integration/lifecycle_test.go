package integration

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

// TestInitLifecycle walks the init process through Create, Start, State, Wait and Delete.
func TestInitLifecycle(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	// The init waits for a file that the test creates, so Running can be observed.
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sh", "-c",
		`echo hello-init; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo bye-init`))
	var stdout syncBuffer
	task := newTask(t, ctx, c, ioCreator(nil, &stdout, &stdout, false))

	if st := taskStatus(t, ctx, task); st != client.Created {
		t.Fatalf("status after create = %q, want %q", st, client.Created)
	}
	pid := task.Pid()
	if pid == 0 {
		t.Fatal("task pid is 0 after create")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		t.Fatalf("init pid %d not alive after create: %v", pid, err)
	}
	if out := stdout.String(); out != "" {
		t.Fatalf("init produced output before Start: %q", out)
	}

	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	stdout.waitFor(t, "hello-init", stepTimeout)
	if st := taskStatus(t, ctx, task); st != client.Running {
		t.Fatalf("status after start = %q, want %q", st, client.Running)
	}
	// Loading the task again (State through a fresh handle) reports the same pid.
	again, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("load task: %v", err)
	}
	if again.Pid() != pid {
		t.Fatalf("reloaded task pid = %d, want %d", again.Pid(), pid)
	}
	notExited(t, exitCh, 200*time.Millisecond, "init")

	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/tmp/go", pid), nil, 0o644); err != nil {
		t.Fatalf("signal init through its root: %v", err)
	}
	st := waitExit(t, exitCh, stepTimeout)
	if st.ExitCode() != 0 {
		t.Fatalf("exit code = %d, want 0", st.ExitCode())
	}
	if s := taskStatus(t, ctx, task); s != client.Stopped {
		t.Fatalf("status after exit = %q, want %q", s, client.Stopped)
	}
	del := deleteProcess(t, ctx, task)
	if del == nil || del.ExitCode() != 0 {
		t.Fatalf("delete returned %+v, want exit code 0", del)
	}
	if got := stdout.String(); got != "hello-init\nbye-init\n" {
		t.Fatalf("init output = %q", got)
	}
	if _, err := c.Task(ctx, nil); !errdefs.IsNotFound(err) {
		t.Fatalf("task still present after delete: err = %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		if s, _ := procState(int(pid)); s != "" {
			t.Fatalf("init pid %d still exists after delete (state %s)", pid, s)
		}
	}
}

// TestExitCodes checks that exit statuses reach containerd unchanged and that death by a
// signal is reported as 128+signal, as runc's shim does.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		kill syscall.Signal
		want uint32
	}{
		{name: "exit0", args: []string{"true"}, want: 0},
		{name: "exit3", args: []string{"sh", "-c", "exit 3"}, want: 3},
		{name: "exit255", args: []string{"sh", "-c", "exit 255"}, want: 255},
		{name: "sigkill", args: []string{"sleep", "60"}, kill: syscall.SIGKILL, want: 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := newContainer(t, ctx, newID(t), oci.WithProcessArgs(tc.args...))
			task, exitCh := startTask(t, ctx, c, nullIO())
			if tc.kill != 0 {
				notExited(t, exitCh, 100*time.Millisecond, "init")
				if err := task.Kill(ctx, tc.kill); err != nil {
					t.Fatalf("kill: %v", err)
				}
			}
			st := waitExit(t, exitCh, stepTimeout)
			if st.ExitCode() != tc.want {
				t.Fatalf("exit code = %d, want %d", st.ExitCode(), tc.want)
			}
			if del := deleteProcess(t, ctx, task); del.ExitCode() != tc.want {
				t.Fatalf("delete reports exit code %d, want %d", del.ExitCode(), tc.want)
			}
		})
	}
}
