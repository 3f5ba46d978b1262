package integration

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// TestKillInitTrap sends SIGTERM to an init that traps it: the trap runs and its exit code
// is reported.
func TestKillInitTrap(t *testing.T) {
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("sh", "-c",
		`trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done`))
	var out syncBuffer
	task, exitCh := startTask(t, ctx, c, ioCreator(nil, &out, io.Discard, false))
	out.waitFor(t, "ready", stepTimeout)
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatalf("kill: %v", err)
	}
	st := waitExit(t, exitCh, stepTimeout)
	if st.ExitCode() != 7 {
		t.Fatalf("exit code = %d, want 7 (from the trap)", st.ExitCode())
	}
	deleteProcess(t, ctx, task)
	if !strings.Contains(out.String(), "got-term") {
		t.Fatalf("trap did not run: output %q", out.String())
	}
}

// TestKillExec kills one exec process and leaves the other exec and the init running.
func TestKillExec(t *testing.T) {
	ctx := testCtx(t)
	task, initExit := runningContainer(t)
	p1, ch1 := startExec(t, ctx, task, "victim", nullIO(), false, "sleep", "120")
	p2, ch2 := startExec(t, ctx, task, "bystander", nullIO(), false, "sleep", "120")

	if err := p1.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill exec: %v", err)
	}
	if st := waitExit(t, ch1, stepTimeout); st.ExitCode() != 137 {
		t.Fatalf("killed exec exit code = %d, want 137", st.ExitCode())
	}
	notExited(t, ch2, 200*time.Millisecond, "other exec")
	notExited(t, initExit, 0, "init")
	if s := taskStatus(t, ctx, p2); s != client.Running {
		t.Fatalf("other exec status = %q, want running", s)
	}
	if s := taskStatus(t, ctx, task); s != client.Running {
		t.Fatalf("init status = %q, want running", s)
	}
	if s := taskStatus(t, ctx, p1); s != client.Stopped {
		t.Fatalf("killed exec status = %q, want stopped", s)
	}
	deleteProcess(t, ctx, p1)

	// Task.Kill with an exec id reaches that exec only.
	if err := task.Kill(ctx, syscall.SIGTERM, client.WithKillExecID("bystander")); err != nil {
		t.Fatalf("kill by exec id: %v", err)
	}
	if st := waitExit(t, ch2, stepTimeout); st.ExitCode() != 143 {
		t.Fatalf("exec killed by TERM exit code = %d, want 143", st.ExitCode())
	}
	notExited(t, initExit, 100*time.Millisecond, "init")
}

// TestKillAll kills every process of the task with one Kill(SIGKILL, WithKillAll): exec'd
// processes, their background children and orphans die, Pids becomes empty and the task
// exits. (Runtimes that put execs outside the init's pid namespace must do this
// themselves; runc gets it from the kernel.)
func TestKillAll(t *testing.T) {
	ctx := testCtx(t)
	task, initExit := runningContainer(t)
	_, execExit := startExec(t, ctx, task, "bg", nullIO(), false,
		"sh", "-c", "sleep 201 & sleep 202 & wait")
	// This exec leaves an orphan behind and exits at once.
	_, _, code := runExec(t, ctx, task, "orphan", "sh", "-c", "sleep 203 >/dev/null 2>&1 </dev/null &")
	if code != 0 {
		t.Fatalf("orphan exec exit code %d", code)
	}

	// All the sleeps must be visible in Pids before the kill.
	var sleeps []uint32
	if !poll(stepTimeout, func() bool {
		sleeps = sleeps[:0]
		for pid := range pidSet(t, ctx, task) {
			if cmd := procCmdline(int(pid)); strings.HasPrefix(cmd, "sleep 20") {
				sleeps = append(sleeps, pid)
			}
		}
		return len(sleeps) == 3
	}) {
		t.Fatalf("expected 3 background sleeps in Pids, got %v (pids %s)", sleeps, pidList(t, task))
	}

	if err := task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil {
		t.Fatalf("kill all: %v", err)
	}
	if st := waitExit(t, initExit, stepTimeout); st.ExitCode() != 137 {
		t.Fatalf("init exit code after kill-all = %d, want 137", st.ExitCode())
	}
	if st := waitExit(t, execExit, stepTimeout); st.ExitCode() != 137 {
		t.Fatalf("exec exit code after kill-all = %d, want 137", st.ExitCode())
	}
	for _, pid := range sleeps {
		if !poll(stepTimeout, func() bool { s, _ := procState(int(pid)); return s == "" }) {
			s, ppid := procState(int(pid))
			t.Fatalf("background process %d survived kill-all (state %s, ppid %d)", pid, s, ppid)
		}
	}
	if !poll(stepTimeout, func() bool {
		infos, err := task.Pids(ctx)
		return err == nil && len(infos) == 0
	}) {
		infos, err := task.Pids(ctx)
		t.Fatalf("Pids after kill-all: %v (err %v), want none", infos, err)
	}
}

// pidList formats the task's pids with their command lines, for failure messages.
func pidList(t *testing.T, task client.Task) string {
	infos, err := task.Pids(testCtx(t))
	if err != nil {
		return err.Error()
	}
	var s []string
	for _, i := range infos {
		s = append(s, fmt.Sprintf("%d:%q", i.Pid, procCmdline(int(i.Pid))))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}
