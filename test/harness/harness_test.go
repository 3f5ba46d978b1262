package harness_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// run runs args in a new container of the test image with runtime rt and
// returns its stdout, stderr and exit code.
func run(ctx context.Context, t *testing.T, d *harness.Daemon, rt, id string, args ...string) (string, string, uint32) {
	t.Helper()
	c, err := d.NewContainer(ctx, id, harness.Image, rt, oci.WithProcessArgs(args...))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Delete(ctx, client.WithSnapshotCleanup)
	var stdout, stderr bytes.Buffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr), cio.WithFIFODir(d.FIFODir())))
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	defer task.Delete(ctx, client.WithProcessKill)
	ch, err := task.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	var code uint32
	select {
	case st := <-ch:
		code = st.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("task did not exit")
	}
	// Delete closes the IO, so the buffers are complete afterwards.
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete task: %v", err)
	}
	return stdout.String(), stderr.String(), code
}

func TestRuncEcho(t *testing.T) {
	ctx := context.Background()
	d, err := harness.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = d.Stop()
		}
	}()

	if out, errOut, code := run(ctx, t, d, harness.RuncRuntime, "echo", "echo", "hi"); out != "hi\n" || code != 0 {
		t.Fatalf("echo hi: stdout %q stderr %q code %d", out, errOut, code)
	}
	// The image from test/image: users, /tmp sticky, home owned by user.
	out, errOut, code := run(ctx, t, d, harness.RuncRuntime, "image",
		"sh", "-c", "id user; stat -c '%a %U' /tmp /home/user; ls /bin/sh /usr/bin/wc")
	want := "uid=1000(user) gid=1000(user) groups=1000(user)\n1777 root\n755 user\n/bin/sh\n/usr/bin/wc\n"
	if out != want || code != 0 {
		t.Fatalf("image check: stdout %q (want %q) stderr %q code %d", out, want, errOut, code)
	}
	if b, err := d.Ctr(ctx, "images", "ls", "-q").Output(); err != nil || !strings.Contains(string(b), harness.Image) {
		t.Fatalf("ctr images ls: %q %v", b, err)
	}

	// A running task survives a daemon restart and is still reachable.
	c, err := d.NewContainer(ctx, "sleeper", harness.Image, harness.RuncRuntime, oci.WithProcessArgs("sleep", "1000"))
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	shims, err := d.ShimPIDs()
	if err != nil || len(shims) != 1 {
		t.Fatalf("ShimPIDs = %v, %v; want one", shims, err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := d.ShimPIDs()
	if err != nil || len(after) != 1 || after[0] != shims[0] {
		t.Fatalf("ShimPIDs after restart = %v, %v; want %v", after, err, shims)
	}
	c, err = d.Client.LoadContainer(ctx, "sleeper")
	if err != nil {
		t.Fatal(err)
	}
	task, err = c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Fatalf("status after restart: %v %v", st, err)
	}
	taskPID := int(task.Pid())

	// Stop leaves the running task to Stop, which must clean up everything.
	dir, ns := d.Dir, d.Namespace
	stopped = true
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", dir, err)
	}
	for _, pid := range append(shims, taskPID) {
		if harness.Alive(pid) {
			t.Errorf("pid %d still alive", pid)
		}
	}
	if m, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(m, []byte(dir)) {
		t.Errorf("mounts under %s remain", dir)
	}
	for _, ctl := range []string{"memory", "pids", "cpu", "unified"} {
		if _, err := os.Stat("/sys/fs/cgroup/" + ctl + "/" + ns); !os.IsNotExist(err) {
			t.Errorf("cgroup %s/%s remains: %v", ctl, ns, err)
		}
	}
}
