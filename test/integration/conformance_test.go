package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// Conformance with what containerd's own client integration suite and
// critest expect of any runtime: each test passes on the stock runc shim.

// shimPIDOf returns the pid of the shim server serving container id: the
// daemon's shim whose argv has "-id <id>".
func shimPIDOf(t *testing.T, id string) int {
	t.Helper()
	var found int
	ok := poll(stepTimeout, func() bool {
		pids, err := d.ShimPIDs()
		if err != nil {
			return false
		}
		for _, pid := range pids {
			args := strings.Fields(procCmdline(pid))
			if i := slices.Index(args, "-id"); i >= 0 && i+1 < len(args) && args[i+1] == id {
				found = pid
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no shim process with -id %s among %v", id, shimPIDs(t))
	}
	return found
}

// procCgroups maps each cgroup v1 controller (or "" for the unified
// hierarchy) of pid to its cgroup path, from /proc/<pid>/cgroup.
func procCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("read cgroups of pid %d: %v", pid, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			m[ctrl] = parts[2]
		}
	}
	return m
}

// errKind names the errdefs class of err, as the client sees it (the
// client turns gRPC codes back into errdefs errors).
func errKind(err error) string {
	for _, k := range []struct {
		name string
		is   func(error) bool
	}{
		{"NotFound", errdefs.IsNotFound},
		{"FailedPrecondition", errdefs.IsFailedPrecondition},
		{"InvalidArgument", errdefs.IsInvalidArgument},
		{"AlreadyExists", errdefs.IsAlreadyExists},
		{"NotImplemented", errdefs.IsNotImplemented},
		{"Unavailable", errdefs.IsUnavailable},
		{"Canceled", errdefs.IsCanceled},
		{"DeadlineExceeded", errdefs.IsDeadlineExceeded},
		{"Internal", errdefs.IsInternal},
	} {
		if k.is(err) {
			return "errdefs " + k.name
		}
	}
	return "no errdefs class: Unknown"
}

// rmdirCgroup removes one cgroup directory, retrying while the kernel still
// reports it busy after its last task left; one already gone is fine.
func rmdirCgroup(dir string) error {
	var err error
	for i := 0; i < 100; i++ {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("rmdir %s: %w", dir, err)
}

// TestShimCgroup (containerd's TestShimInCgroup): a task created with
// WithShimCgroup has its shim process placed in that existing cgroup.
func TestShimCgroup(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	// Below the daemon's namespace cgroup, so the harness would catch it too.
	cgPath := "/" + d.Namespace + "/shim-" + id
	var (
		cg1 cgroup1.Cgroup
		cg2 *cgroupsv2.Manager
		err error
	)
	unified := cgroups.Mode() == cgroups.Unified
	if unified {
		cg2, err = cgroupsv2.NewManager("/sys/fs/cgroup", cgPath, &cgroupsv2.Resources{})
	} else {
		cg1, err = cgroup1.New(cgroup1.StaticPath(cgPath), &specs.LinuxResources{})
	}
	if err != nil {
		t.Fatalf("create shim cgroup %s: %v", cgPath, err)
	}
	// Registered before the container, so it runs after the task is gone:
	// the shim exits once its last task is deleted, emptying the cgroup.
	t.Cleanup(func() {
		var err error
		poll(stepTimeout, func() bool {
			if unified {
				err = cg2.Delete()
			} else {
				err = cg1.Delete()
			}
			return err == nil
		})
		if err != nil {
			t.Errorf("remove shim cgroup %s: %v", cgPath, err)
		}
	})

	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"))
	task, err := c.NewTask(ctx, nullIO(), client.WithShimCgroup(cgPath))
	if err != nil {
		t.Fatalf("new task with shim cgroup %s: %v", cgPath, err)
	}
	if _, err := waitAndStart(ctx, task); err != nil {
		t.Fatalf("task: %v", err)
	}

	pid := shimPIDOf(t, id)
	got := procCgroups(t, pid)
	if unified {
		if got[""] != cgPath {
			t.Fatalf("shim pid %d is in cgroup %q, want the shim cgroup %q", pid, got[""], cgPath)
		}
		procs, err := cg2.Procs(false)
		if err != nil {
			t.Fatalf("list shim cgroup: %v", err)
		}
		if !slices.Contains(procs, uint64(pid)) {
			t.Fatalf("shim cgroup %s holds %v, not the shim pid %d", cgPath, procs, pid)
		}
		return
	}
	for _, ctrl := range []string{"devices", "pids", "memory", "cpu"} {
		if got[ctrl] != cgPath {
			t.Errorf("shim pid %d: %s cgroup is %q, want the shim cgroup %q", pid, ctrl, got[ctrl], cgPath)
		}
	}
	procs, err := cg1.Processes(cgroup1.Devices, false)
	if err != nil {
		t.Fatalf("list shim cgroup: %v", err)
	}
	var in []int
	for _, p := range procs {
		in = append(in, p.Pid)
	}
	if !slices.Contains(in, pid) {
		t.Fatalf("devices cgroup %s holds %v, not the shim pid %d", cgPath, in, pid)
	}
}

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("open %s: %v", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		t.Fatalf("create %s: %v", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("close %s: %v", dst, err)
	}
}

// TestAbsoluteRuntimePath (containerd's TestContainerStartWithAbsRuntimePath):
// a container whose runtime is the absolute path of a copy of the shim
// binary, alone in its directory, starts and runs an exec. The daemon's
// environment is the harness's (PATH has the repo's bin/ first).
func TestAbsoluteRuntimePath(t *testing.T) {
	ctx := testCtx(t)
	var src string
	if isRunc() {
		root, err := harness.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		src = filepath.Join(root, "_output", "bin", "containerd-shim-runc-v2")
	} else {
		var err error
		if src, err = harness.ShimBinary(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir() // removed when the test ends, after the container (LIFO)
	shim := filepath.Join(dir, filepath.Base(src))
	copyFile(t, src, shim, 0o755)

	c := containerWithRuntimePath(t, ctx, shim)

	task, err := c.NewTask(ctx, nullIO())
	if err != nil {
		t.Fatalf("new task with runtime %s (alone in %s): %v", shim, dir, err)
	}
	if _, err := waitAndStart(ctx, task); err != nil {
		t.Fatalf("task with runtime %s: %v", shim, err)
	}
	out, stderr, code, err := tryExec(t, ctx, task, "echo", processSpec(t, ctx, task, false, "echo", "ok"))
	if err != nil {
		t.Fatalf("exec under runtime %s (alone in %s): %v", shim, dir, err)
	}
	if code != 0 || out != "ok\n" {
		t.Fatalf("exec `echo ok` under runtime %s: exit %d, stdout %q, stderr %q; want exit 0 and \"ok\\n\"", shim, code, out, stderr)
	}
}

// tryExec runs ps in the task to completion and returns its stdout, stderr
// and exit code, or the error Exec or Start answered.
func tryExec(t *testing.T, ctx context.Context, task client.Task, execID string, ps *specs.Process) (string, string, uint32, error) {
	t.Helper()
	var stdout, stderr syncBuffer
	p, err := task.Exec(ctx, execID, ps, ioCreator(nil, &stdout, &stderr, false))
	if err != nil {
		return "", "", 0, fmt.Errorf("exec %s %v: %w", execID, ps.Args, err)
	}
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stepTimeout)
		defer cancel()
		p.Delete(dctx, client.WithProcessKill) //nolint:errcheck // best effort; the task cleanup follows
	})
	ch, err := waitAndStart(ctx, p)
	if err != nil {
		return "", "", 0, fmt.Errorf("exec %s %v: %w", execID, ps.Args, err)
	}
	st := waitExit(t, ch, stepTimeout)
	deleteProcess(t, ctx, p)
	return stdout.String(), stderr.String(), st.ExitCode(), nil
}

// TestStaleExecCgroups: a shim that was SIGKILLed leaves its execs'
// sub-cgroups (user/exec-N in the pids and cpu hierarchies) behind; a new
// sandbox with the same cgroup path must still run execs. io.sandbox.v1's
// cgroup layout: the runc shim has no such sub-cgroups.
func TestStaleExecCgroups(t *testing.T) {
	skipUnderRunc(t, "user/exec-N sub-cgroups are io.sandbox.v1's layout")
	if cgroups.Mode() == cgroups.Unified {
		t.Skip("cgroup v2: execs share the workspace leaf, there are no exec sub-cgroups")
	}
	ctx := testCtx(t)
	id := newID(t)
	// The sandbox cgroup is containerd's default /<namespace>/<id>, the
	// workspace's leaf its user/ child.
	var made []string // every directory this test created, parents first
	for _, ctrl := range []string{"pids", "cpu"} {
		dir := "/sys/fs/cgroup/" + ctrl
		for _, part := range []string{d.Namespace, id, "user"} {
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err == nil {
				made = append(made, dir)
			} else if !errors.Is(err, os.ErrExist) {
				t.Fatalf("create %s: %v", dir, err)
			}
		}
		for i := 1; i <= 8; i++ {
			sub := filepath.Join(dir, fmt.Sprintf("exec-%d", i))
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatalf("create stale exec cgroup %s: %v", sub, err)
			}
			made = append(made, sub)
		}
	}
	// Runs after the container's removal: whatever the shim left of them goes.
	t.Cleanup(func() {
		for i := len(made) - 1; i >= 0; i-- {
			if err := rmdirCgroup(made[i]); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})

	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"))
	task, _ := startTask(t, ctx, c, nullIO())
	for i := 1; i <= 2; i++ {
		execID := fmt.Sprintf("after-stale-%d", i)
		out, stderr, code, err := tryExec(t, ctx, task, execID, processSpec(t, ctx, task, false, "echo", "ok"))
		if err != nil {
			t.Fatalf("exec %d with stale user/exec-1..8 cgroups present: %v (want it to run: stale exec cgroups of a dead shim must not block new execs)", i, err)
		}
		if code != 0 || out != "ok\n" {
			t.Fatalf("exec %d with stale exec cgroups: exit %d, stdout %q, stderr %q; want exit 0 and \"ok\\n\"", i, code, out, stderr)
		}
	}
}

// withSysctls sets Linux.Sysctl.
func withSysctls(kv map[string]string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		s.Linux.Sysctl = kv
		return nil
	}
}

// TestIPCSysctlsInExec (critest's namespaced sysctls): the container's IPC
// sysctls are what an exec sees, and the host's values stay as they were.
func TestIPCSysctlsInExec(t *testing.T) {
	ctx := testCtx(t)
	sysctls := []struct{ key, file, want string }{
		{"kernel.shm_rmid_forced", "/proc/sys/kernel/shm_rmid_forced", "1"},
		{"kernel.msgmax", "/proc/sys/kernel/msgmax", "16384"},
		{"fs.mqueue.msg_max", "/proc/sys/fs/mqueue/msg_max", "20"},
	}
	kv := map[string]string{}
	host := map[string]string{}
	var files []string
	for _, s := range sysctls {
		kv[s.key] = s.want
		files = append(files, s.file)
		b, err := os.ReadFile(s.file)
		if err != nil {
			t.Fatalf("read host %s: %v", s.file, err)
		}
		host[s.file] = strings.TrimSpace(string(b))
	}
	hostUnchanged := func(when string) {
		t.Helper()
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Errorf("read host %s %s: %v", f, when, err)
				continue
			}
			if got := strings.TrimSpace(string(b)); got != host[f] {
				t.Errorf("host %s is %s %s, was %s: the container's sysctl leaked to the host", f, got, when, host[f])
			}
		}
	}

	id := newID(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"), withSysctls(kv))
	task, exitCh := startTask(t, ctx, c, nullIO())
	out, stderr, code := runExec(t, ctx, task, "sysctls", append([]string{"cat"}, files...)...)
	if code != 0 {
		t.Fatalf("exec cat %v: exit %d, stderr %q", files, code, stderr)
	}
	got := strings.Fields(out)
	if len(got) != len(sysctls) {
		t.Fatalf("exec read %q from %v, want one value per file", out, files)
	}
	for i, s := range sysctls {
		if got[i] != s.want {
			t.Errorf("exec sees %s = %s, want %s (the container's Linux.Sysctl; host has %s)", s.key, got[i], s.want, host[s.file])
		}
	}
	hostUnchanged("while the container runs")
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	waitExit(t, exitCh, stepTimeout)
	deleteProcess(t, ctx, task)
	hostUnchanged("after the task was deleted")
}

// TestResizeWithoutTerminal: ResizePty of a running process that has no
// terminal (an exec, and the init) is accepted and does nothing, as the runc
// shim answers (critest and CRI resize whatever a client asks).
func TestResizeWithoutTerminal(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	p, _ := startExec(t, ctx, task, "no-tty", nullIO(), false, "sleep", "60")
	if err := p.Resize(ctx, 100, 40); err != nil {
		t.Errorf("resize of a running exec without a terminal: %v (%s); want nil, as the runc shim answers", err, errKind(err))
	}
	if err := task.Resize(ctx, 100, 40); err != nil {
		t.Errorf("resize of a running init without a terminal: %v (%s); want nil, as the runc shim answers", err, errKind(err))
	}
	if s := taskStatus(t, ctx, p); s != client.Running {
		t.Errorf("exec status after resize = %q, want running", s)
	}
}

// pidsString lists pids with their host command lines, for failure messages.
func pidsString(infos []client.ProcessInfo) string {
	var b strings.Builder
	for _, i := range infos {
		fmt.Fprintf(&b, " %d(%s)", i.Pid, procCmdline(int(i.Pid)))
	}
	return strings.TrimSpace(b.String())
}

// TestPidsAndStatsAfterInitExit: between the init's exit and Delete, Pids
// and Metrics answer without error, as the runc shim does: Pids lists no
// process (every process of the task, an exec included, was gone before the
// exit was reported) and Metrics still returns the cgroup's stats. Calls
// made while the task is torn down succeed too. After Delete both answer
// NotFound.
func TestPidsAndStatsAfterInitExit(t *testing.T) {
	ctx := testCtx(t)
	task, exitCh := runningContainer(t)
	startExec(t, ctx, task, "sleeper", nullIO(), false, "sleep", "60")

	// Ask for pids and stats all through the teardown.
	var (
		mu   sync.Mutex
		errs []string
		stop = make(chan struct{})
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := task.Pids(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("Pids: %v (%s)", err, errKind(err)))
				mu.Unlock()
			}
			if _, err := task.Metrics(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("Metrics: %v (%s)", err, errKind(err)))
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("kill: %v", err)
	}
	waitExit(t, exitCh, stepTimeout)

	infos, err := task.Pids(ctx)
	if err != nil {
		t.Errorf("Pids after the init exited: %v (%s); want success, as the runc shim answers", err, errKind(err))
	} else if len(infos) != 0 {
		t.Errorf("Pids after the init's exit was reported lists %s; want none: the runc shim reports the init's exit only once all the task's processes (execs included) are gone", pidsString(infos))
	}
	m, err := task.Metrics(ctx)
	if err != nil {
		t.Errorf("Metrics after the init exited: %v (%s); want the cgroup's stats, as the runc shim answers", err, errKind(err))
	} else if m.Data == nil {
		t.Errorf("Metrics after the init exited has no data")
	}
	time.Sleep(300 * time.Millisecond) // the teardown after the exit
	close(stop)
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d Pids/Metrics calls around the init's exit failed (want none, as with the runc shim); first: %s", len(errs), errs[0])
	}

	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := task.Pids(ctx); !errdefs.IsNotFound(err) {
		t.Errorf("Pids after Delete: %v (%s), want NotFound", err, errKind(err))
	}
	if _, err := task.Metrics(ctx); !errdefs.IsNotFound(err) {
		t.Errorf("Metrics after Delete: %v (%s), want NotFound", err, errKind(err))
	}
}

// TestInitExitAfterExecs: when the init dies, Wait on it returns only once
// every exec of the task has exited: the exec then reads as stopped (killed,
// 137) and its process is gone from the host, as with the runc shim.
func TestInitExitAfterExecs(t *testing.T) {
	ctx := testCtx(t)
	task, exitCh := runningContainer(t)
	p, _ := startExec(t, ctx, task, "sleeper", nullIO(), false, "sleep", "60")
	execPid := int(p.Pid())
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	waitExit(t, exitCh, stepTimeout)
	st, err := p.Status(ctx)
	if err != nil {
		t.Fatalf("exec status after the init exited: %v", err)
	}
	if st.Status != client.Stopped {
		t.Errorf("exec is %q when the init's Wait returned (host pid %d alive: %v); want stopped: the init's exit comes after its execs'", st.Status, execPid, alive(execPid))
	} else if st.ExitStatus != 137 {
		t.Errorf("exec exit status = %d, want 137 (SIGKILL)", st.ExitStatus)
	}
	if alive(execPid) {
		t.Errorf("exec pid %d (%s) still alive when the init's Wait returned", execPid, procCmdline(execPid))
	}
}

// TestMismatchedReaperRefused: a sandbox-reaper that does not speak this
// shim's exec protocol (another version installed beside it) fails execs
// with an error naming it, at once, instead of a hung or silently wrong
// exec; the control plane keeps running.
func TestMismatchedReaperRefused(t *testing.T) {
	skipUnderRunc(t, "the reaper is io.sandbox's")
	ctx := testCtx(t)
	src, err := harness.ShimBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	shim := filepath.Join(dir, filepath.Base(src))
	copyFile(t, src, shim, 0o755)
	// As pid 1 it idles; as a waiter it never says hello.
	script := "#!/bin/sh\n[ $# -eq 0 ] && exec sleep 1000000\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "sandbox-reaper"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := containerWithRuntimePath(t, ctx, shim)
	task, err := c.NewTask(ctx, nullIO())
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	exitCh, err := waitAndStart(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	_, _, _, err = tryExec(t, ctx, task, "echo", processSpec(t, ctx, task, false, "echo", "ok"))
	if err == nil || !strings.Contains(err.Error(), "sandbox-reaper") {
		t.Fatalf("exec with a mismatched reaper: %v, want an error naming sandbox-reaper", err)
	}
	if d := time.Since(started); d > stepTimeout {
		t.Errorf("the refusal took %v", d)
	}
	notExited(t, exitCh, 0, "control plane")
}

// containerWithRuntimePath creates a sleeping container run by the shim
// binary at the absolute path shim, removed when the test ends.
func containerWithRuntimePath(t *testing.T, ctx context.Context, shim string) client.Container {
	t.Helper()
	id := newID(t)
	return imageContainer(t, ctx, id, func(img client.Image) []client.NewContainerOpts {
		return []client.NewContainerOpts{
			client.WithNewSnapshot(id, img),
			client.WithRuntime(shim, nil),
			client.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "120")),
		}
	})
}

// imageContainer creates container id from the test image with the options
// opts gives for it (snapshot, runtime, spec), removed when the test ends.
func imageContainer(t *testing.T, ctx context.Context, id string, opts func(client.Image) []client.NewContainerOpts) client.Container {
	t.Helper()
	img, err := d.Client.GetImage(ctx, harness.Image)
	if err != nil {
		t.Fatalf("get image: %v", err)
	}
	c, err := d.Client.NewContainer(ctx, id, append([]client.NewContainerOpts{client.WithImage(img)}, opts(img)...)...)
	if err != nil {
		t.Fatalf("new container %s: %v", id, err)
	}
	d.CleanupContainer(t, id)
	return c
}

// TestResizeBeforeStart: nerdctl exec -it resizes a terminal exec before
// it starts it; the runc shim answers nil, and so must this one (an error
// there is printed to every nerdctl user).
func TestResizeBeforeStart(t *testing.T) {
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	var out syncBuffer
	p, err := task.Exec(ctx, "tty-early", processSpec(t, ctx, task, true, "sh", "-c", "stty size"), ioCreator(nil, &out, nil, true))
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	t.Cleanup(func() { p.Delete(context.WithoutCancel(ctx), client.WithProcessKill) }) //nolint:errcheck // best effort
	if err := p.Resize(ctx, 120, 40); err != nil {
		t.Fatalf("resize before start: %v (%s); want nil, as the runc shim answers", err, errKind(err))
	}
	ch, err := waitAndStart(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if st := waitExit(t, ch, stepTimeout); st.ExitCode() != 0 {
		t.Fatalf("exec exit %d, output %q", st.ExitCode(), out.String())
	}
}
