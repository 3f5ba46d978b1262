package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
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
	// The runc shim exits right after the last Delete of its group and may drop events it
	// has not forwarded yet; a companion container in the same shim group keeps it alive.
	// Runtimes without shim groups must deliver the events before exiting anyway.
	group := oci.WithAnnotations(map[string]string{"io.containerd.runc.v2.group": id})
	companion := newContainer(t, ctx, newID(t), oci.WithProcessArgs("sleep", "120"), group)
	startTask(t, ctx, companion, nullIO())
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"), group)
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
	// The runc shim publishes the init's exit asynchronously, after Wait returns.
	events.wait(t, "/tasks/exit", func(v any) bool { return v.(*eventtypes.TaskExit).ID == id }, stepTimeout)
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

// TestOOMEvent runs a memory hog in a container with a small memory limit, as the init and
// as an exec, and expects /tasks/oom.
func TestOOMEvent(t *testing.T) {
	const hog = `head -c 300m /dev/zero | tail`
	t.Run("init", func(t *testing.T) {
		ctx := testCtx(t)
		id := newID(t)
		events := subscribe(t, id)
		c := newContainer(t, ctx, id, oci.WithMemoryLimit(32*mib), oci.WithProcessArgs("sh", "-c", hog+"; sleep 120"))
		startTask(t, ctx, c, nullIO())
		events.wait(t, "/tasks/oom", nil, 30*time.Second)
	})
	t.Run("exec", func(t *testing.T) {
		ctx := testCtx(t)
		id := newID(t)
		events := subscribe(t, id)
		c := newContainer(t, ctx, id, oci.WithMemoryLimit(32*mib), oci.WithProcessArgs("sleep", "120"))
		task, _ := startTask(t, ctx, c, nullIO())
		_, ch := startExec(t, ctx, task, "hog", nullIO(), false, "sh", "-c", hog)
		events.wait(t, "/tasks/oom", nil, 30*time.Second)
		// The OOM killer ended tail (or the whole shell): either way 128+SIGKILL.
		if st := waitExit(t, ch, 30*time.Second); st.ExitCode() != 137 {
			t.Fatalf("hog exit code %d, want 137", st.ExitCode())
		}
	})
}

// unreadFIFOs is a cio.IO whose stdout and stderr FIFOs nobody opens until
// release: a shim that opens its writer blocking (as both shims do) is held
// in that exec's Start meanwhile.
type unreadFIFOs struct{ cfg cio.Config }

func (u *unreadFIFOs) Config() cio.Config { return u.cfg }
func (u *unreadFIFOs) Cancel()            {}
func (u *unreadFIFOs) Wait()              {}
func (u *unreadFIFOs) Close() error       { return nil }

// release opens the read sides, letting a blocked Start go on.
func (u *unreadFIFOs) release(t *testing.T) {
	for _, p := range []string{u.cfg.Stdout, u.cfg.Stderr} {
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			t.Errorf("open %s: %v", p, err)
			continue
		}
		t.Cleanup(func() { f.Close() })
	}
}

func newUnreadFIFOs(t *testing.T) *unreadFIFOs {
	dir := t.TempDir()
	u := &unreadFIFOs{cfg: cio.Config{Stdout: filepath.Join(dir, "stdout"), Stderr: filepath.Join(dir, "stderr")}}
	for _, p := range []string{u.cfg.Stdout, u.cfg.Stderr} {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// TestExitEventNotHeldBySlowStart: while one exec's Start hangs (its
// output FIFOs are not opened), another exec's exit is still published at
// once: exits wait only for their own start event, never for another
// process' Start.
func TestExitEventNotHeldBySlowStart(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	events := subscribe(t, task.ID())
	// Warm up: the first exec waits for the workspace build.
	if out, _, code := runExec(t, ctx, task, "warm", "echo", "ok"); code != 0 || out != "ok\n" {
		t.Fatalf("warm-up exec: %q %d", out, code)
	}
	_, shortExit := startExec(t, ctx, task, "short", nullIO(), false, "sleep", "1")
	fifos := newUnreadFIFOs(t)
	slow, err := task.Exec(ctx, "slow", processSpec(t, ctx, task, false, "true"), func(string) (cio.IO, error) { return fifos, nil })
	if err != nil {
		t.Fatalf("exec slow: %v", err)
	}
	slowDone := make(chan error, 1)
	go func() { slowDone <- slow.Start(ctx) }()
	started := time.Now()
	waitExit(t, shortExit, stepTimeout)
	events.wait(t, "/tasks/exit", func(v any) bool { return v.(*eventtypes.TaskExit).ID == "short" }, 3*time.Second)
	if d := time.Since(started); d > 3*time.Second {
		t.Fatalf("exit event of a 1 s exec took %v while another Start hung", d)
	}
	fifos.release(t)
	select {
	case <-slowDone:
	case <-time.After(stepTimeout):
		t.Fatal("the held Start never returned")
	}
	if _, err := slow.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("delete slow exec: %v", err)
	}
}
