package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// createAndStart creates and starts the container's task and returns the first error; a
// task that was created is deleted again.
func createAndStart(t *testing.T, ctx context.Context, c client.Container) error {
	t.Helper()
	task, err := c.NewTask(ctx, nullIO())
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(ctx, stepTimeout)
		defer cancel()
		task.Delete(dctx, client.WithProcessKill) //nolint:errcheck // cleanup of a failed start
	}()
	if _, err := task.Wait(ctx); err != nil {
		return err
	}
	return task.Start(ctx)
}

// execAndStart execs spec in the task and starts it, and returns the first error; an exec
// that was created is deleted again.
func execAndStart(ctx context.Context, task client.Task, execID string, spec *specs.Process) error {
	p, err := task.Exec(ctx, execID, spec, nullIO())
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(ctx, stepTimeout)
		defer cancel()
		p.Delete(dctx) //nolint:errcheck // the exec never ran
	}()
	return p.Start(ctx)
}

// assertContainerWorks runs a fresh container to completion and checks its output: the
// runtime is still serving after a failure.
func assertContainerWorks(t *testing.T, ctx context.Context) {
	t.Helper()
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("echo", "still-serving"))
	var out syncBuffer
	task, exitCh := startTask(t, ctx, c, ioCreator(nil, &out, &out, false))
	if st := waitExit(t, exitCh, stepTimeout); st.ExitCode() != 0 {
		t.Fatalf("follow-up container exit code %d", st.ExitCode())
	}
	deleteProcess(t, ctx, task)
	if out.String() != "still-serving\n" {
		t.Fatalf("follow-up container output %q", out.String())
	}
}

// failedCreateLeavesNothing checks that a container whose task could not be created or
// started leaves no bundle, cgroup or mount once the container is deleted.
func failedCreateLeavesNothing(t *testing.T, ctx context.Context, c client.Container) {
	t.Helper()
	id := c.ID()
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		t.Fatalf("delete container after failed task: %v", err)
	}
	f := footprint{id: id, bundle: bundleDir(id), stateDir: libcontainerStateDir(id)}
	assertNoLeftovers(t, f)
}

// TestMissingInitBinary: the error names the binary and the runtime keeps working.
func TestMissingInitBinary(t *testing.T) {
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("/no/such/init-binary", "arg"))
	err := createAndStart(t, ctx, c)
	errNames(t, err, "create/start with a missing init binary", "/no/such/init-binary")
	t.Logf("error: %v", err)
	failedCreateLeavesNothing(t, ctx, c)
	assertContainerWorks(t, ctx)
}

// TestMissingExecBinary: the exec fails naming the binary; the task still runs good execs.
func TestMissingExecBinary(t *testing.T) {
	ctx := testCtx(t)
	task, initExit := runningContainer(t)
	err := execAndStart(ctx, task, "bad", processSpec(t, ctx, task, false, "/no/such/exec-binary"))
	errNames(t, err, "exec of a missing binary", "/no/such/exec-binary")
	t.Logf("error: %v", err)
	out, _, code := runExec(t, ctx, task, "good", "echo", "good-exec")
	if code != 0 || out != "good-exec\n" {
		t.Fatalf("good exec after a bad one: code %d, out %q", code, out)
	}
	notExited(t, initExit, 0, "init")
}

// TestBadCwd: a working directory that cannot exist is reported by name, for the init and
// for an exec.
func TestBadCwd(t *testing.T) {
	t.Run("init", func(t *testing.T) {
		ctx := testCtx(t)
		// A regular file can be neither created as a directory nor entered.
		c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("true"), oci.WithProcessCwd("/etc/passwd"))
		err := createAndStart(t, ctx, c)
		errNames(t, err, "create/start with a bad cwd", "/etc/passwd")
		t.Logf("error: %v", err)
		failedCreateLeavesNothing(t, ctx, c)
	})
	t.Run("exec", func(t *testing.T) {
		ctx := testCtx(t)
		task, _ := runningContainer(t)
		spec := processSpec(t, ctx, task, false, "true")
		spec.Cwd = "/no/such/cwd"
		err := execAndStart(ctx, task, "badcwd", spec)
		errNames(t, err, "exec with a bad cwd", "/no/such/cwd")
		t.Logf("error: %v", err)
		if _, _, code := runExec(t, ctx, task, "good", "true"); code != 0 {
			t.Fatalf("good exec after a bad cwd: code %d", code)
		}
	})
}

// TestUnknownExecID: requests naming an exec id the task does not have fail with NotFound,
// and a duplicate exec id fails with AlreadyExists.
func TestUnknownExecID(t *testing.T) {
	ctx := testCtx(t)
	task, initExit := runningContainer(t)
	id := task.ID()
	if _, err := task.LoadProcess(ctx, "no-such-exec", nil); !errdefs.IsNotFound(err) {
		t.Errorf("LoadProcess(unknown) error = %v, want NotFound", err)
	}
	ts := d.Client.TaskService()
	for name, call := range map[string]func() error{
		"State": func() error {
			_, err := ts.Get(ctx, &tasks.GetRequest{ContainerID: id, ExecID: "no-such-exec"})
			return err
		},
		"Kill": func() error {
			_, err := ts.Kill(ctx, &tasks.KillRequest{ContainerID: id, ExecID: "no-such-exec", Signal: uint32(syscall.SIGKILL)})
			return err
		},
		"Delete": func() error {
			_, err := ts.DeleteProcess(ctx, &tasks.DeleteProcessRequest{ContainerID: id, ExecID: "no-such-exec"})
			return err
		},
		"ResizePty": func() error {
			_, err := ts.ResizePty(ctx, &tasks.ResizePtyRequest{ContainerID: id, ExecID: "no-such-exec", Width: 80, Height: 24})
			return err
		},
		"CloseIO": func() error {
			_, err := ts.CloseIO(ctx, &tasks.CloseIORequest{ContainerID: id, ExecID: "no-such-exec", Stdin: true})
			return err
		},
	} {
		if err := errgrpc.ToNative(call()); !errdefs.IsNotFound(err) {
			t.Errorf("%s of an unknown exec id: error = %v, want NotFound", name, err)
		}
	}

	// An exec id in use cannot be taken twice.
	startExec(t, ctx, task, "dup", nullIO(), false, "sleep", "120")
	p, err := task.Exec(ctx, "dup", processSpec(t, ctx, task, false, "true"), nullIO())
	if err == nil {
		err = p.Start(ctx)
	}
	if !errdefs.IsAlreadyExists(err) {
		t.Errorf("exec with a duplicate id: error = %v, want AlreadyExists", err)
	}
	notExited(t, initExit, 0, "init")
}

// TestMalformedBundle: specs the runtime cannot honour fail at create with an error naming
// the problem, and leave nothing behind.
func TestMalformedBundle(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  oci.SpecOpts
		want string
	}{
		{
			name: "unknown-namespace",
			opt:  oci.WithLinuxNamespace(specs.LinuxNamespace{Type: "bogusns"}),
			want: "bogusns",
		},
		{
			name: "missing-mount-source",
			opt: oci.WithMounts([]specs.Mount{{
				Destination: "/mnt/x", Type: "bind", Source: "/no/such/mount-source", Options: []string{"rbind"},
			}}),
			want: "/no/such/mount-source",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("true"), tc.opt)
			err := createAndStart(t, ctx, c)
			errNames(t, err, "create with "+tc.name, tc.want)
			t.Logf("error: %v", err)
			failedCreateLeavesNothing(t, ctx, c)
		})
	}
	assertContainerWorks(t, testCtx(t))
}

// TestConcurrentContainers creates, starts, execs into, kills and deletes several tasks at
// the same time; each keeps its own output and exit code.
func TestConcurrentContainers(t *testing.T) {
	const n = 3
	ctx := testCtx(t)
	var cs []client.Container
	for i := 0; i < n; i++ {
		cs = append(cs, newContainer(t, ctx, newID(t), oci.WithProcessArgs("sh", "-c",
			fmt.Sprintf(`trap 'exit %d' TERM; echo init-%d; while :; do sleep 0.05; done`, 10+i, i))))
	}
	var started atomic.Int32
	errs := make(chan error, n)
	for i, c := range cs {
		go func() { errs <- runConcurrently(ctx, c, i, n, &started) }()
	}
	for range cs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// runConcurrently is one container's part of TestConcurrentContainers; it returns errors
// instead of failing because it runs outside the test goroutine.
func runConcurrently(ctx context.Context, c client.Container, i, n int, started *atomic.Int32) error {
	id := c.ID()
	var out syncBuffer
	task, err := c.NewTask(ctx, ioCreator(nil, &out, &out, false))
	if err != nil {
		return fmt.Errorf("%s: new task: %w", id, err)
	}
	exitCh, err := waitAndStart(ctx, task)
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	started.Add(1)
	// All tasks run at once before any is stopped.
	if !poll(stepTimeout, func() bool { return started.Load() == int32(n) }) {
		return fmt.Errorf("%s: only %d of %d tasks started", id, started.Load(), n)
	}
	spec, err := task.Spec(ctx)
	if err != nil {
		return fmt.Errorf("%s: spec: %w", id, err)
	}
	pspec := *spec.Process
	pspec.Args = []string{"sh", "-c", "echo exec-" + id}
	var execOut syncBuffer
	p, err := task.Exec(ctx, "who", &pspec, ioCreator(nil, &execOut, &execOut, false))
	if err != nil {
		return fmt.Errorf("%s: exec: %w", id, err)
	}
	pExit, err := waitAndStart(ctx, p)
	if err != nil {
		return fmt.Errorf("%s: exec: %w", id, err)
	}
	select {
	case st := <-pExit:
		if st.ExitCode() != 0 {
			return fmt.Errorf("%s: exec exit code %d", id, st.ExitCode())
		}
	case <-time.After(stepTimeout):
		return fmt.Errorf("%s: exec did not exit", id)
	}
	if _, err := p.Delete(ctx); err != nil {
		return fmt.Errorf("%s: delete exec: %w", id, err)
	}
	if got := execOut.String(); got != "exec-"+id+"\n" {
		return fmt.Errorf("%s: exec output %q", id, got)
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		return fmt.Errorf("%s: kill: %w", id, err)
	}
	select {
	case st := <-exitCh:
		if st.ExitCode() != uint32(10+i) {
			return fmt.Errorf("%s: exit code %d, want %d", id, st.ExitCode(), 10+i)
		}
	case <-time.After(stepTimeout):
		return fmt.Errorf("%s: init did not exit", id)
	}
	if _, err := task.Delete(ctx); err != nil {
		return fmt.Errorf("%s: delete: %w", id, err)
	}
	if got, want := out.String(), fmt.Sprintf("init-%d\n", i); got != want {
		return fmt.Errorf("%s: init output %q, want %q", id, got, want)
	}
	return nil
}

// TestConcurrentStartOfOneExec starts one exec from several goroutines at once: exactly one
// Start succeeds, the others fail cleanly, and the shim keeps serving (a double start used
// to panic it, taking the control plane down).
func TestConcurrentStartOfOneExec(t *testing.T) {
	ctx := testCtx(t)
	task, exitCh := runningContainer(t)
	p, err := task.Exec(ctx, "twice", processSpec(t, ctx, task, false, "sleep", "5"), nullIO())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.Start(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 4 concurrent Starts succeeded, want exactly 1", ok)
	}
	if _, err := p.Delete(ctx, client.WithProcessKill); err != nil {
		t.Fatalf("delete exec: %v", err)
	}
	notExited(t, exitCh, 0, "init")
	if out, _, code := runExec(t, ctx, task, "after", "echo", "served"); code != 0 || out != "served\n" {
		t.Fatalf("shim stopped serving: %q %d", out, code)
	}
}
