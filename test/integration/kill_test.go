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

// TestKillAll signals every process of the task: a TERM reaches exec'd processes and their
// background children (the init, pid 1 of its namespace without a handler, ignores it),
// then a KILL ends the whole task.
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
	initPid := task.Pid()

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
		t.Fatalf("expected 3 background sleeps in Pids, got %v (pids %v)", sleeps, pidList(t, task))
	}

	if err := task.Kill(ctx, syscall.SIGTERM, client.WithKillAll); err != nil {
		t.Fatalf("kill all TERM: %v", err)
	}
	if st := waitExit(t, execExit, stepTimeout); st.ExitCode() != 143 {
		t.Fatalf("exec after kill-all TERM exit code = %d, want 143", st.ExitCode())
	}
	for _, pid := range sleeps {
		pid := pid
		if !poll(stepTimeout, func() bool { s, _ := procState(int(pid)); return s == "" || s == "Z" }) {
			t.Fatalf("background process %d (%s) survived kill-all TERM", pid, procCmdline(int(pid)))
		}
	}
	if !poll(stepTimeout, func() bool {
		for pid := range pidSet(t, ctx, task) {
			if pid != initPid && strings.HasPrefix(procCmdline(int(pid)), "sleep 20") {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("Pids still lists killed processes: %v", pidList(t, task))
	}
	notExited(t, initExit, 100*time.Millisecond, "init (ignores TERM)")

	// A new background process, then KILL to all: nothing survives and the task exits.
	_, bgExit := startExec(t, ctx, task, "bg2", nullIO(), false, "sh", "-c", "sleep 204 & wait")
	if err := task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil {
		t.Fatalf("kill all KILL: %v", err)
	}
	if st := waitExit(t, initExit, stepTimeout); st.ExitCode() != 137 {
		t.Fatalf("init exit code after kill-all KILL = %d, want 137", st.ExitCode())
	}
	if st := waitExit(t, bgExit, stepTimeout); st.ExitCode() != 137 {
		t.Fatalf("exec exit code after kill-all KILL = %d, want 137", st.ExitCode())
	}
	if !poll(stepTimeout, func() bool {
		infos, err := task.Pids(ctx)
		return err == nil && len(infos) == 0
	}) {
		infos, err := task.Pids(ctx)
		t.Fatalf("Pids after kill-all KILL: %v (err %v), want none", infos, err)
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
