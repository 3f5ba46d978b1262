package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestPids checks that Pids lists the init and an exec'd process, the latter tagged with its
// exec id.
func TestPids(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	p, _ := startExec(t, ctx, task, "pids-exec", nullIO(), false, "sleep", "120")

	pids := pidSet(t, ctx, task)
	initInfo, ok := pids[task.Pid()]
	if !ok {
		t.Fatalf("Pids %v does not include the init pid %d", pidList(t, task), task.Pid())
	}
	execInfo, ok := pids[p.Pid()]
	if !ok {
		t.Fatalf("Pids %v does not include the exec pid %d", pidList(t, task), p.Pid())
	}
	// Start returns once the process exists; it may still be finishing its
	// setup (seccomp, exec) for a moment.
	if got := waitCmdline(int(p.Pid()), "sleep 120", 2*time.Second); got != "sleep 120" {
		t.Fatalf("exec pid %d runs %q, want the exec'd sleep", p.Pid(), got)
	}
	if execInfo.Info == nil {
		if isRunc() {
			t.Fatal("runc shim reports no Info for the exec pid")
		}
		t.Logf("runtime gives no Info for exec pids")
	} else {
		var pd options.ProcessDetails
		if err := typeurl.UnmarshalTo(execInfo.Info, &pd); err != nil {
			t.Fatalf("exec pid info: %v", err)
		}
		if pd.ExecID != "pids-exec" {
			t.Fatalf("exec pid info has exec id %q, want pids-exec", pd.ExecID)
		}
	}
	if initInfo.Info != nil {
		var pd options.ProcessDetails
		if err := typeurl.UnmarshalTo(initInfo.Info, &pd); err == nil && pd.ExecID != "" {
			t.Fatalf("init pid tagged with exec id %q", pd.ExecID)
		}
	}
	// A process that exits leaves the list.
	if err := p.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill exec: %v", err)
	}
	if !poll(stepTimeout, func() bool { _, ok := pidSet(t, ctx, task)[p.Pid()]; return !ok }) {
		t.Fatalf("killed exec pid %d still in Pids", p.Pid())
	}
}

// metrics fetches and decodes the task's cgroup metrics.
func metrics(t *testing.T, ctx context.Context, task client.Task) any {
	t.Helper()
	m, err := task.Metrics(ctx)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if m.Data == nil {
		t.Fatal("metrics carry no data")
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		t.Fatalf("decode metrics (%s): %v", m.Data.GetTypeUrl(), err)
	}
	return v
}

// memUsageLimit returns memory usage and limit from v1 or v2 metrics.
func memUsageLimit(t *testing.T, v any) (usage, limit, pids uint64) {
	t.Helper()
	switch m := v.(type) {
	case *v1.Metrics:
		if m.Memory == nil || m.Memory.Usage == nil || m.Pids == nil {
			t.Fatalf("v1 metrics lack memory or pids: %v", m)
		}
		return m.Memory.Usage.Usage, m.Memory.Usage.Limit, m.Pids.Current
	case *v2.Metrics:
		if m.Memory == nil || m.Pids == nil {
			t.Fatalf("v2 metrics lack memory or pids: %v", m)
		}
		return m.Memory.Usage, m.Memory.UsageLimit, m.Pids.Current
	default:
		t.Fatalf("metrics of unexpected type %T", v)
	}
	return 0, 0, 0
}

// TestMetrics checks that Metrics returns cgroup metrics with live memory and pids figures.
func TestMetrics(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	startExec(t, ctx, task, "m1", nullIO(), false, "sleep", "120")
	usage, _, pids := memUsageLimit(t, metrics(t, ctx, task))
	if usage == 0 {
		t.Error("memory usage is 0")
	}
	if pids < 1 {
		t.Errorf("pids current = %d, want >= 1", pids)
	}
}

const mib = 1 << 20

// memoryLimitFile reads memory.limit_in_bytes (v1) or memory.max (v2) of the container's
// cgroup (/<ns>/<id>, containerd's default cgroupsPath).
func memoryLimitFile(t *testing.T, id string) uint64 {
	t.Helper()
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup/memory", d.Namespace, id, "memory.limit_in_bytes"),
		filepath.Join("/sys/fs/cgroup", d.Namespace, id, "memory.max"),
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatalf("parse %s: %v", p, err)
		}
		return v
	}
	t.Fatalf("no memory limit file for the cgroup of %s (dirs %v)", id, cgroupDirs(id))
	return 0
}

// TestUpdate changes the memory limit of a running task and reads it back from the metrics
// and from the cgroup.
func TestUpdate(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"), oci.WithMemoryLimit(64*mib))
	task, _ := startTask(t, ctx, c, nullIO())
	if got := memoryLimitFile(t, id); got != 64*mib {
		t.Fatalf("initial memory limit = %d, want %d", got, 64*mib)
	}

	limit := int64(48 * mib)
	if err := task.Update(ctx, client.WithResources(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit},
	})); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got := memoryLimitFile(t, id); got != uint64(limit) {
		t.Fatalf("memory limit in cgroup after update = %d, want %d", got, limit)
	}
	if _, got, _ := memUsageLimit(t, metrics(t, ctx, task)); got != uint64(limit) {
		t.Fatalf("memory limit in metrics after update = %d, want %d", got, limit)
	}
	// The task keeps running under the new limit.
	if _, _, code := runExec(t, ctx, task, "after", "true"); code != 0 {
		t.Fatalf("exec after update: exit code %d", code)
	}
}

// readCounter reads the counter file the pause test's init keeps writing.
func readCounter(pid uint32) int {
	s, err := readInContainer(pid, "/tmp/c")
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return -1
	}
	return n
}

// TestPauseResume freezes a counting process and thaws it: it stops counting while paused
// and continues from where it was.
func TestPauseResume(t *testing.T) {
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("sh", "-c",
		`i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; sleep 0.01; done`))
	task, exitCh := startTask(t, ctx, c, nullIO())
	pid := task.Pid()
	if !poll(stepTimeout, func() bool { return readCounter(pid) >= 5 }) {
		t.Fatalf("counter did not start: %d", readCounter(pid))
	}

	if err := task.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if s := taskStatus(t, ctx, task); s != client.Paused {
		t.Fatalf("status after pause = %q, want paused", s)
	}
	before := readCounter(pid)
	time.Sleep(300 * time.Millisecond)
	if after := readCounter(pid); after != before {
		t.Fatalf("counter moved while paused: %d -> %d", before, after)
	}
	if s, _ := procState(int(pid)); s != "D" && s != "S" && s != "T" {
		t.Logf("paused init state %q", s)
	}

	if err := task.Resume(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if s := taskStatus(t, ctx, task); s != client.Running {
		t.Fatalf("status after resume = %q, want running", s)
	}
	if !poll(stepTimeout, func() bool { return readCounter(pid) > before+3 }) {
		t.Fatalf("counter did not continue after resume: paused at %d, now %d", before, readCounter(pid))
	}
	notExited(t, exitCh, 0, "init")
}

// TestCheckpointUnsupported checks that Checkpoint fails (our shim: NotImplemented) and
// leaves the task running.
func TestCheckpointUnsupported(t *testing.T) {
	ctx := testCtx(t)
	task, exitCh := runningContainer(t)
	_, err := task.Checkpoint(ctx)
	if isRunc() {
		if _, lerr := exec.LookPath("criu"); lerr == nil {
			t.Skip("criu is installed: runc can checkpoint")
		}
		if err == nil {
			t.Fatal("checkpoint without criu succeeded under runc")
		}
	} else if !errdefs.IsNotImplemented(err) {
		t.Fatalf("checkpoint error = %v, want NotImplemented", err)
	}
	t.Logf("checkpoint error: %v", err)
	if s := taskStatus(t, ctx, task); s != client.Running {
		t.Fatalf("status after failed checkpoint = %q, want running", s)
	}
	if out, _, code := runExec(t, ctx, task, "after", "echo", "alive"); code != 0 || out != "alive\n" {
		t.Fatalf("exec after failed checkpoint: code %d, out %q", code, out)
	}
	notExited(t, exitCh, 0, "init")
}
