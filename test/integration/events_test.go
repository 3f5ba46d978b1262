package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
)

// taskEvent is one decoded /tasks/ event of the container under test.
type taskEvent struct {
	topic string
	event any
}

// eventLog collects the daemon's /tasks/ events for one container id.
type eventLog struct {
	mu     sync.Mutex
	events []taskEvent
	errs   []error
}

// subscribe starts collecting; the subscription ends with the test.
func subscribe(t *testing.T, id string) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	t.Cleanup(cancel)
	ch, errCh := d.Client.Subscribe(ctx,
		fmt.Sprintf(`namespace==%q,topic~="^/tasks/"`, d.Namespace))
	l := &eventLog{}
	go func() {
		for {
			select {
			case env := <-ch:
				if env == nil {
					return
				}
				v, err := typeurl.UnmarshalAny(env.Event)
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, fmt.Errorf("decode %s: %w", env.Topic, err))
				} else if c, ok := v.(interface{ GetContainerID() string }); ok && c.GetContainerID() == id {
					l.events = append(l.events, taskEvent{env.Topic, v})
				}
				l.mu.Unlock()
			case err := <-errCh:
				if err != nil && ctx.Err() == nil {
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
				}
				return
			}
		}
	}()
	// Subscribe returns before the server registers the subscriber; give it a moment so
	// the first event is not lost.
	time.Sleep(100 * time.Millisecond)
	return l
}

func (l *eventLog) snapshot() []taskEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]taskEvent(nil), l.events...)
}

func (l *eventLog) topics() string {
	var s []string
	for _, e := range l.snapshot() {
		s = append(s, e.topic)
	}
	return strings.Join(s, " ")
}

// wait returns the index and event of the first event with the topic that match accepts.
func (l *eventLog) wait(t *testing.T, topic string, match func(any) bool, timeout time.Duration) (int, any) {
	t.Helper()
	idx, ev := -1, any(nil)
	poll(timeout, func() bool {
		for i, e := range l.snapshot() {
			if e.topic == topic && (match == nil || match(e.event)) {
				idx, ev = i, e.event
				return true
			}
		}
		return false
	})
	if idx < 0 {
		l.mu.Lock()
		errs := l.errs
		l.mu.Unlock()
		t.Fatalf("no %s event within %v; got %q (errors %v)", topic, timeout, l.topics(), errs)
	}
	return idx, ev
}

// TestEvents checks the events a task's life publishes, their order and their contents.
func TestEvents(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	events := subscribe(t, id)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"))
	task, exitCh := startTask(t, ctx, c, nullIO())
	pid := task.Pid()
	_, _, code := runExec(t, ctx, task, "ev-exec", "sh", "-c", "exit 9")
	if code != 9 {
		t.Fatalf("exec exit code %d", code)
	}
	if err := task.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := task.Resume(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	waitExit(t, exitCh, stepTimeout)
	deleteProcess(t, ctx, task)

	iCreate, ev := events.wait(t, "/tasks/create", nil, stepTimeout)
	if e := ev.(*eventtypes.TaskCreate); e.Pid != pid || e.Bundle == "" {
		t.Errorf("create event pid %d bundle %q, want pid %d and a bundle", e.Pid, e.Bundle, pid)
	}
	iStart, ev := events.wait(t, "/tasks/start", nil, stepTimeout)
	if e := ev.(*eventtypes.TaskStart); e.Pid != pid {
		t.Errorf("start event pid %d, want %d", e.Pid, pid)
	}
	iAdded, _ := events.wait(t, "/tasks/exec-added", func(v any) bool {
		return v.(*eventtypes.TaskExecAdded).ExecID == "ev-exec"
	}, stepTimeout)
	iStarted, ev := events.wait(t, "/tasks/exec-started", func(v any) bool {
		return v.(*eventtypes.TaskExecStarted).ExecID == "ev-exec"
	}, stepTimeout)
	execPid := ev.(*eventtypes.TaskExecStarted).Pid
	if execPid == 0 {
		t.Error("exec-started event without pid")
	}
	iExecExit, ev := events.wait(t, "/tasks/exit", func(v any) bool {
		return v.(*eventtypes.TaskExit).ID == "ev-exec"
	}, stepTimeout)
	if e := ev.(*eventtypes.TaskExit); e.ExitStatus != 9 || e.Pid != execPid {
		t.Errorf("exec exit event status %d pid %d, want 9 and %d", e.ExitStatus, e.Pid, execPid)
	}
	iPaused, _ := events.wait(t, "/tasks/paused", nil, stepTimeout)
	iResumed, _ := events.wait(t, "/tasks/resumed", nil, stepTimeout)
	iExit, ev := events.wait(t, "/tasks/exit", func(v any) bool {
		return v.(*eventtypes.TaskExit).ID == id
	}, stepTimeout)
	if e := ev.(*eventtypes.TaskExit); e.ExitStatus != 137 || e.Pid != pid {
		t.Errorf("init exit event status %d pid %d, want 137 and %d", e.ExitStatus, e.Pid, pid)
	}
	_, ev = events.wait(t, "/tasks/delete", func(v any) bool {
		e := v.(*eventtypes.TaskDelete)
		return e.ID == "" || e.ID == id
	}, stepTimeout)
	if e := ev.(*eventtypes.TaskDelete); e.ExitStatus != 137 || e.Pid != pid {
		t.Errorf("delete event status %d pid %d, want 137 and %d", e.ExitStatus, e.Pid, pid)
	}

	// Only orderings a runtime guarantees: the runc shim publishes an init's exit
	// asynchronously, so it may follow /tasks/delete.
	for _, o := range []struct {
		a, b   string
		ia, ib int
	}{
		{"create", "start", iCreate, iStart},
		{"start", "exec-added", iStart, iAdded},
		{"exec-added", "exec-started", iAdded, iStarted},
		{"exec-started", "exec exit", iStarted, iExecExit},
		{"paused", "resumed", iPaused, iResumed},
		{"start", "exit", iStart, iExit},
	} {
		if o.ia >= o.ib {
			t.Errorf("event %s (#%d) not before %s (#%d); all: %s", o.a, o.ia, o.b, o.ib, events.topics())
		}
	}
	// Each lifecycle event is published once.
	counts := map[string]int{}
	for _, e := range events.snapshot() {
		counts[e.topic]++
	}
	for _, topic := range []string{"/tasks/create", "/tasks/start", "/tasks/paused", "/tasks/resumed", "/tasks/delete"} {
		if counts[topic] != 1 {
			t.Errorf("%d %s events, want 1; all: %s", counts[topic], topic, events.topics())
		}
	}
}

// TestOOMEvent runs a memory hog in a container with a small limit and expects /tasks/oom.
func TestOOMEvent(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	events := subscribe(t, id)
	c := newContainer(t, ctx, id, oci.WithMemoryLimit(32*mib), oci.WithProcessArgs("sh", "-c",
		`head -c 300m /dev/zero | tail; echo hog-done; sleep 120`))
	var out syncBuffer
	task, exitCh := startTask(t, ctx, c, ioCreator(nil, &out, &out, false))
	events.wait(t, "/tasks/oom", nil, 30*time.Second)
	// The hog was killed, not the container: its shell goes on.
	out.waitFor(t, "hog-done", stepTimeout)
	notExited(t, exitCh, 0, "init")
	if s := taskStatus(t, ctx, task); s != "running" {
		t.Fatalf("status after oom = %q, want running", s)
	}
}
