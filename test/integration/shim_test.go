package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// newShims returns the shim pids alive now that were not in before.
func newShims(t *testing.T, before map[int]bool) []int {
	t.Helper()
	var pids []int
	for p := range shimPIDs(t) {
		if !before[p] {
			pids = append(pids, p)
		}
	}
	sort.Ints(pids)
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	s, _ := procState(pid)
	return s != "" && s != "Z"
}

// allGone polls until none of pids is alive and reports whether that happened within timeout.
func allGone(pids []int, timeout time.Duration) bool {
	return poll(timeout, func() bool {
		for _, p := range pids {
			if alive(p) {
				return false
			}
		}
		return true
	})
}

// TestConnectAfterRestart restarts containerd under a running task: the new daemon
// reconnects to the shim (Connect) and the task answers State, Exec, Kill and Delete.
func TestConnectAfterRestart(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	before := shimPIDs(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sh", "-c",
		`trap 'exit 3' TERM; while :; do sleep 0.05; done`))
	task, _ := startTask(t, ctx, c, nullIO())
	pid := task.Pid()
	shims := newShims(t, before)
	if len(shims) == 0 {
		t.Fatal("no new shim process for the task")
	}

	if err := d.Restart(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	for _, s := range shims {
		if !alive(s) {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s))
			t.Fatalf("shim %d died with containerd (stat %q; shims before %v, new %v)", s, st, before, shims)
		}
	}
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("load container after restart: %v", err)
	}
	task, err = c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("load task after restart: %v", err)
	}
	if task.Pid() != pid {
		t.Fatalf("task pid after restart = %d, want %d", task.Pid(), pid)
	}
	if s := taskStatus(t, ctx, task); s != client.Running {
		t.Fatalf("status after restart = %q, want running", s)
	}
	out, _, code := runExec(t, ctx, task, "after-restart", "sh", "-c", "echo exec-ok; exit 2")
	if code != 2 || out != "exec-ok\n" {
		t.Fatalf("exec after restart: code %d, out %q", code, out)
	}
	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatalf("wait after restart: %v", err)
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatalf("kill after restart: %v", err)
	}
	if st := waitExit(t, exitCh, stepTimeout); st.ExitCode() != 3 {
		t.Fatalf("exit code after restart = %d, want 3", st.ExitCode())
	}
	if st := deleteProcess(t, ctx, task); st.ExitCode() != 3 {
		t.Fatalf("delete after restart reports %d, want 3", st.ExitCode())
	}
	if !allGone(shims, 5*time.Second) {
		t.Fatalf("shim %v still alive after its task was deleted", shims)
	}
}

// TestShimShutdown checks that the shim process exits once its last task is deleted.
func TestShimShutdown(t *testing.T) {
	ctx := testCtx(t)
	before := shimPIDs(t)
	id := newID(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"))
	task, exitCh := startTask(t, ctx, c, nullIO())
	startExec(t, ctx, task, "e", nullIO(), false, "sleep", "120")
	shims := newShims(t, before)
	if len(shims) == 0 {
		t.Fatal("no new shim process for the task")
	}
	if err := task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil {
		t.Fatalf("kill: %v", err)
	}
	waitExit(t, exitCh, stepTimeout)
	for _, s := range shims {
		if !alive(s) {
			t.Fatalf("shim %d exited before the task was deleted", s)
		}
	}
	deleteProcess(t, ctx, task)
	if !allGone(shims, 5*time.Second) {
		t.Fatalf("shim %v still alive 5s after its last task was deleted", shims)
	}
	// With no task left in the namespace, no shim of this daemon may remain.
	resp, err := d.Client.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		t.Fatalf("list tasks: %v", err)
	}
	if len(resp.Tasks) == 0 {
		if !poll(5*time.Second, func() bool { return len(shimPIDs(t)) == 0 }) {
			t.Fatalf("shims alive with no task: %v", shimPIDs(t))
		}
	}
}

// footprint records where a running task leaves traces on the host.
type footprint struct {
	id, bundle, socket, stateDir string
	cgroups                      []string
	shims                        []int
}

// libcontainerStateDir is where the runtime keeps libcontainer's state for the container.
func libcontainerStateDir(id string) string {
	if isRunc() {
		// The runc shim's default runc root.
		return filepath.Join("/run/containerd/runc", d.Namespace, id)
	}
	return filepath.Join(bundleDir(id), "libcontainer", id)
}

// shimSocket reads the shim's socket path from the bundle's bootstrap.json.
func shimSocket(t *testing.T, bundle string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json"))
	if err != nil {
		t.Fatalf("read bootstrap.json: %v", err)
	}
	var bs struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(b, &bs); err != nil {
		t.Fatalf("parse bootstrap.json %q: %v", b, err)
	}
	path, ok := strings.CutPrefix(bs.Address, "unix://")
	if !ok {
		t.Fatalf("shim address %q is not a unix socket", bs.Address)
	}
	return path
}

// mountsMentioning returns the mountinfo lines naming any of words.
func mountsMentioning(words ...string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{err.Error()}
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if w != "" && strings.Contains(l, w) {
				lines = append(lines, l)
				break
			}
		}
	}
	return lines
}

// takeFootprint records the traces of a running task, checking that each exists (so that
// their absence later means something).
func takeFootprint(t *testing.T, id string, shimsBefore map[int]bool) footprint {
	t.Helper()
	f := footprint{id: id, bundle: bundleDir(id), stateDir: libcontainerStateDir(id)}
	if _, err := os.Stat(f.bundle); err != nil {
		t.Fatalf("bundle dir: %v", err)
	}
	f.socket = shimSocket(t, f.bundle)
	if _, err := os.Stat(f.socket); err != nil {
		t.Fatalf("shim socket: %v", err)
	}
	if _, err := os.Stat(f.stateDir); err != nil {
		t.Fatalf("libcontainer state dir: %v", err)
	}
	f.cgroups = cgroupDirs(id)
	if len(f.cgroups) == 0 {
		t.Fatalf("no cgroup dir /sys/fs/cgroup/*/%s/%s", d.Namespace, id)
	}
	if len(mountsMentioning(id, f.bundle)) == 0 {
		t.Fatalf("no mount mentions the container or its bundle %s", f.bundle)
	}
	f.shims = newShims(t, shimsBefore)
	if len(f.shims) == 0 {
		t.Fatal("no new shim process for the task")
	}
	return f
}

// leftovers lists what is left of a deleted container.
func (f footprint) leftovers() []string {
	var left []string
	for _, m := range mountsMentioning(f.id, f.bundle) {
		left = append(left, "mount: "+m)
	}
	for _, cg := range cgroupDirs(f.id) {
		left = append(left, "cgroup: "+cg)
	}
	for _, p := range []string{f.bundle, f.stateDir, f.socket} {
		if _, err := os.Lstat(p); err == nil {
			left = append(left, "path: "+p)
		}
	}
	for _, s := range f.shims {
		if alive(s) {
			left = append(left, fmt.Sprintf("shim process %d: %s", s, procCmdline(s)))
		}
	}
	return left
}

// assertNoLeftovers waits a few seconds for the traces of a deleted container to go.
func assertNoLeftovers(t *testing.T, f footprint) {
	t.Helper()
	var left []string
	if !poll(5*time.Second, func() bool { left = f.leftovers(); return len(left) == 0 }) {
		t.Fatalf("leftovers of deleted container %s:\n  %s", f.id, strings.Join(left, "\n  "))
	}
}

// TestTeardownLeavesNothing deletes a task that had an exec and a bind mount, then checks
// that no mount, cgroup, bundle, libcontainer state, socket or shim process remains.
func TestTeardownLeavesNothing(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "f"), []byte("from-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := shimPIDs(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"), oci.WithMounts([]specs.Mount{{
		Destination: "/mnt/host", Type: "bind", Source: hostDir, Options: []string{"rbind", "ro"},
	}}), withAnnotations("io.sandbox.user.mounts", "/mnt/host"))
	task, exitCh := startTask(t, ctx, c, nullIO())
	startExec(t, ctx, task, "bg", nullIO(), false, "sleep", "120")
	if out, _, _ := runExec(t, ctx, task, "cat", "cat", "/mnt/host/f"); out != "from-host\n" {
		t.Fatalf("bind mount not visible: %q", out)
	}
	f := takeFootprint(t, id, before)

	if err := task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil {
		t.Fatalf("kill: %v", err)
	}
	waitExit(t, exitCh, stepTimeout)
	deleteProcess(t, ctx, task)
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		t.Fatalf("delete container: %v", err)
	}
	assertNoLeftovers(t, f)
}

// TestTeardownOfCreatedTask deletes a task that was created but never started.
func TestTeardownOfCreatedTask(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	before := shimPIDs(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"))
	task := newTask(t, ctx, c, nullIO())
	f := takeFootprint(t, id, before)
	pid := task.Pid()
	delCtx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if _, err := task.Delete(delCtx, client.WithProcessKill); err != nil {
		t.Fatalf("delete created task: %v", err)
	}
	if alive(int(pid)) {
		t.Fatalf("init %d of the created task still alive after delete", pid)
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		t.Fatalf("delete container: %v", err)
	}
	assertNoLeftovers(t, f)
}

// TestShimCrashCleanup kills the shim of a running task with an exec: containerd runs the
// shim's delete action, which must kill the control plane and the workspace and remove the
// cgroups, mounts and state, with the task reported gone.
func TestShimCrashCleanup(t *testing.T) {
	skipUnderRunc(t, "containerd-shim-runc-v2 leaves a killed shim's socket behind")
	ctx := testCtx(t)
	id := newID(t)
	before := shimPIDs(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"))
	task, exitCh := startTask(t, ctx, c, nullIO())
	p, _ := startExec(t, ctx, task, "bg", nullIO(), false, "sleep", "121")
	f := takeFootprint(t, id, before)
	victims := []int{int(task.Pid()), int(p.Pid())}
	for _, s := range f.shims {
		if err := syscall.Kill(s, syscall.SIGKILL); err != nil {
			t.Fatalf("kill shim %d: %v", s, err)
		}
	}
	// The client's Wait ends with the shim's connection (an error, not a status).
	select {
	case <-exitCh:
	case <-time.After(stepTimeout):
		t.Fatal("Wait did not return after the shim died")
	}
	if !poll(stepTimeout, func() bool { return !alive(victims[0]) && !alive(victims[1]) }) {
		t.Fatalf("container processes %v outlived their shim's cleanup", victims)
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		t.Fatalf("delete container: %v", err)
	}
	assertNoLeftovers(t, f)
}
