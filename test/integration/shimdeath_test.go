package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

// When a shim dies, containerd runs the shim binary's delete action and
// publishes its answer as the task's /tasks/exit and /tasks/delete events,
// then forgets the task: a later Delete finds nothing (containerd v2.4 hands
// the delete action's status to no caller). CRI and other event consumers
// record a container's exit status from those events, so they must carry
// the init's real exit, not a made-up one.

// killShims SIGKILLs the shim processes.
func killShims(t *testing.T, shims []int) {
	t.Helper()
	if len(shims) == 0 {
		t.Fatal("no new shim process for the task")
	}
	for _, s := range shims {
		if err := syscall.Kill(s, syscall.SIGKILL); err != nil {
			t.Fatalf("kill shim %d: %v", s, err)
		}
	}
}

// deadShimDelete waits for the /tasks/delete event that containerd's
// cleanup after the dead shim publishes, then for the task to be gone.
func deadShimDelete(t *testing.T, ctx context.Context, events *eventLog, id string) *eventtypes.TaskDelete {
	t.Helper()
	_, ev := events.wait(t, "/tasks/delete", nil, 30*time.Second)
	del := ev.(*eventtypes.TaskDelete)
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("load container: %v", err)
	}
	var taskErr error
	if !poll(stepTimeout, func() bool { _, taskErr = c.Task(ctx, nil); return errdefs.IsNotFound(taskErr) }) {
		t.Fatalf("task still known %v after its shim's cleanup: %v", stepTimeout, taskErr)
	}
	return del
}

// initExits returns the /tasks/exit events of the init, waiting until there are want.
func initExits(t *testing.T, events *eventLog, id string, want int) []*eventtypes.TaskExit {
	t.Helper()
	var exits []*eventtypes.TaskExit
	poll(stepTimeout, func() bool {
		exits = exits[:0]
		for _, e := range events.snapshot() {
			if x, ok := e.event.(*eventtypes.TaskExit); ok && e.topic == "/tasks/exit" && x.ID == id {
				exits = append(exits, x)
			}
		}
		return len(exits) >= want
	})
	if len(exits) < want {
		t.Fatalf("%d init exit events, want %d; all: %s", len(exits), want, events.topics())
	}
	return exits
}

// TestShimDeathAfterInitExit: the init exits with 7, then its shim is killed
// before the task is deleted. The delete action must report the recorded
// exit: status 7, the init's pid and its exit time.
func TestShimDeathAfterInitExit(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	events := subscribe(t, id)
	before := shimPIDs(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sh", "-c", "exit 7"))
	task, exitCh := startTask(t, ctx, c, nullIO())
	pid := task.Pid()
	st := waitExit(t, exitCh, stepTimeout)
	if st.ExitCode() != 7 {
		t.Fatalf("init exit code %d, want 7", st.ExitCode())
	}
	// The shim's own exit event first, so the one after its death is told apart.
	initExits(t, events, id, 1)
	killShims(t, newShims(t, before))

	del := deadShimDelete(t, ctx, events, id)
	if del.ExitStatus != 7 || del.Pid != pid {
		t.Errorf("delete event after the shim's death: status %d pid %d, want 7 and %d", del.ExitStatus, del.Pid, pid)
	}
	if at := del.ExitedAt.AsTime(); !at.Equal(st.ExitTime()) {
		t.Errorf("delete event exit time %v, want the init's %v", at, st.ExitTime())
	}
	for i, x := range initExits(t, events, id, 2) {
		if x.ExitStatus != 7 || x.Pid != pid {
			t.Errorf("init exit event #%d: status %d pid %d, want 7 and %d", i, x.ExitStatus, x.Pid, pid)
		}
	}
	if _, err := task.Delete(ctx); !errdefs.IsNotFound(err) {
		t.Errorf("delete after the shim's cleanup: %v, want not found", err)
	}
}

// TestShimDeathWhileInitRuns: the shim is killed under a running init. The
// delete action kills the init and reports 128+SIGKILL with the init's pid.
func TestShimDeathWhileInitRuns(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	events := subscribe(t, id)
	before := shimPIDs(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"))
	task, _ := startTask(t, ctx, c, nullIO())
	pid := task.Pid()
	shims := newShims(t, before)
	killedAt := time.Now()
	killShims(t, shims)

	del := deadShimDelete(t, ctx, events, id)
	if del.ExitStatus != 137 || del.Pid != pid {
		t.Errorf("delete event after the shim's death: status %d pid %d, want 137 and %d", del.ExitStatus, del.Pid, pid)
	}
	if at := del.ExitedAt.AsTime(); at.Before(killedAt) || at.After(time.Now()) {
		t.Errorf("delete event exit time %v, want between the kill (%v) and now", at, killedAt)
	}
	exits := initExits(t, events, id, 1)
	if x := exits[len(exits)-1]; x.ExitStatus != 137 || x.Pid != pid {
		t.Errorf("init exit event: status %d pid %d, want 137 and %d", x.ExitStatus, x.Pid, pid)
	}
	if !poll(stepTimeout, func() bool { return !alive(int(pid)) }) {
		t.Errorf("init %d outlived its shim's cleanup", pid)
	}
}
