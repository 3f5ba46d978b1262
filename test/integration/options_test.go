package integration

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// withRuncOptions sets the task options containerd and CRI hand a runtime.
func withRuncOptions(o *options.Options) client.NewTaskOpts {
	return func(_ context.Context, _ *client.Client, ti *client.TaskInfo) error {
		ti.Options = o
		return nil
	}
}

// TestSystemdCgroupRefused: the systemd cgroup driver fails Create with an
// error naming it, and leaves the shim serving.
func TestSystemdCgroupRefused(t *testing.T) {
	skipUnderRunc(t, "runc supports the systemd driver where systemd runs")
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t))
	_, err := c.NewTask(ctx, nullIO(), withRuncOptions(&options.Options{SystemdCgroup: true}))
	if err == nil || !strings.Contains(err.Error(), "systemd cgroup driver") {
		t.Fatalf("NewTask with SystemdCgroup = %v, want an error naming the systemd cgroup driver", err)
	}
	task, _ := runningContainer(t)
	if out, _, code := runExec(t, ctx, task, "after", "echo", "served"); code != 0 || out != "served\n" {
		t.Fatalf("exec after a refused Create: %q %d", out, code)
	}
}

// TestRuncOptionsIgnored: runc's own options (its binary, its state root)
// mean nothing to a shim that runs libcontainer in-process: a task created
// with them runs.
func TestRuncOptionsIgnored(t *testing.T) {
	skipUnderRunc(t, "the runc shim runs the binary it is given")
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("sleep", "60"))
	task, err := c.NewTask(ctx, nullIO(), withRuncOptions(&options.Options{BinaryName: "/nonexistent/runc", Root: "/nonexistent/root"}))
	if err != nil {
		t.Fatalf("NewTask with runc options: %v", err)
	}
	if _, err := waitAndStart(ctx, task); err != nil {
		t.Fatal(err)
	}
	if out, _, code := runExec(t, ctx, task, "e1", "echo", "ok"); code != 0 || out != "ok\n" {
		t.Fatalf("exec: %q %d", out, code)
	}
}
