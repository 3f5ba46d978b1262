package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Tests of the workspace every exec runs in (io.sandbox.v1 only).

func withAnnotations(kv ...string) oci.SpecOpts {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return oci.WithAnnotations(m)
}

func cgroupFile(t *testing.T, ctrl, id, leaf, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, d.Namespace, id, leaf, file))
	if err != nil {
		t.Fatalf("read %s cgroup file: %v", file, err)
	}
	return strings.TrimSpace(string(b))
}

// TestWorkspaceIdentity: execs run as 1000:1000 without capabilities, with
// no_new_privs, a raised oom_score_adj and no core dumps, whatever their
// spec asks (here: root with the image's default capabilities).
func TestWorkspaceIdentity(t *testing.T) {
	skipUnderRunc(t, "the workspace is io.sandbox.v1's")
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	out, _, code := runExec(t, ctx, task, "id", "sh", "-c",
		`id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; cat /proc/self/oom_score_adj; ulimit -H -c`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	want := []string{"1000", "1000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
		"CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000", "NoNewPrivs:\t1", "1000", "0"}
	got := strings.Split(strings.TrimSpace(out), "\n")
	for _, w := range want {
		found := false
		for _, g := range got {
			if strings.TrimSpace(g) == w {
				found = true
			}
		}
		if !found {
			t.Errorf("missing %q in:\n%s", w, out)
		}
	}
}

// TestWorkspaceUserAnnotation: io.sandbox.user picks the uid:gid.
func TestWorkspaceUserAnnotation(t *testing.T) {
	skipUnderRunc(t, "the workspace is io.sandbox.v1's")
	ctx := testCtx(t)
	id := newID(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"), withAnnotations("io.sandbox.user", "2345:3456"))
	task, _ := startTask(t, ctx, c, nullIO())
	out, _, _ := runExec(t, ctx, task, "id", "sh", "-c", "id -u; id -g")
	if strings.Fields(out)[0] != "2345" || strings.Fields(out)[1] != "3456" {
		t.Fatalf("id = %q, want 2345 3456", out)
	}
}

// TestWorkspaceInvisibleControlPlane: the control plane is not in the
// workspace's process list nor its procfs, and the workspace's pid 1 is the
// reaper.
func TestWorkspaceInvisibleControlPlane(t *testing.T) {
	skipUnderRunc(t, "the workspace is io.sandbox.v1's")
	ctx := testCtx(t)
	id := newID(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sh", "-c", "exec sleep 4242"))
	task, _ := startTask(t, ctx, c, nullIO())
	out, _, _ := runExec(t, ctx, task, "ps", "ps", "-o", "pid,args")
	if strings.Contains(out, "4242") {
		t.Fatalf("control plane visible in the workspace:\n%s", out)
	}
	if !strings.Contains(out, "1 /dev/.sandbox-reaper") {
		t.Fatalf("pid 1 is not the reaper:\n%s", out)
	}
	// Its processes exist, seen from the host.
	if got := procCmdline(int(task.Pid())); got != "sleep 4242" {
		t.Fatalf("control plane on the host runs %q", got)
	}
}

// TestWorkspaceLimits: the user leaf has the pids limit and a memory limit
// leaving the control plane a reserve; annotations override both.
func TestWorkspaceLimits(t *testing.T) {
	skipUnderRunc(t, "the workspace is io.sandbox.v1's")
	ctx := testCtx(t)
	for _, c := range []struct {
		name              string
		opts              []oci.SpecOpts
		wantPids, wantMem string
	}{
		{"defaults", []oci.SpecOpts{oci.WithMemoryLimit(512 * mib)}, "1024", "402653184"},
		{"annotated", []oci.SpecOpts{oci.WithMemoryLimit(512 * mib),
			withAnnotations("io.sandbox.user.pids-limit", "77", "io.sandbox.user.memory-limit", "100m")}, "77", "104857600"},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := newID(t)
			ctr := newContainer(t, ctx, id, append(c.opts, oci.WithProcessArgs("sleep", "120"))...)
			task, _ := startTask(t, ctx, ctr, nullIO())
			runExec(t, ctx, task, "warm", "true") // the workspace exists once an exec ran
			if got := cgroupFile(t, "pids", id, "user", "pids.max"); got != c.wantPids {
				t.Errorf("pids.max = %s, want %s", got, c.wantPids)
			}
			if got := cgroupFile(t, "memory", id, "user", "memory.limit_in_bytes"); got != c.wantMem {
				t.Errorf("user memory limit = %s, want %s", got, c.wantMem)
			}
			if got := cgroupFile(t, "memory", id, "", "memory.limit_in_bytes"); got != "536870912" {
				t.Errorf("sandbox memory limit = %s", got)
			}
			if got := cgroupFile(t, "cpu", id, "user", "cpu.shares"); got != "512" {
				t.Errorf("user cpu.shares = %s, want 512", got)
			}
			// The control plane sits in its own leaf.
			procs := cgroupFile(t, "pids", id, "control", "cgroup.procs")
			if !strings.Contains(procs, strconv.Itoa(int(task.Pid()))) {
				t.Errorf("control plane %d not in the control leaf: %q", task.Pid(), procs)
			}
		})
	}
}

// TestWorkspaceOOM: an exec exceeding the workspace limit is OOM-killed,
// an OOM event is published, and the control plane runs on.
func TestWorkspaceOOM(t *testing.T) {
	skipUnderRunc(t, "the workspace is io.sandbox.v1's")
	ctx := testCtx(t)
	id := newID(t)
	events := subscribe(t, id)
	c := newContainer(t, ctx, id, oci.WithMemoryLimit(96*mib), oci.WithProcessArgs("sleep", "120"))
	task, exitCh := startTask(t, ctx, c, nullIO())
	_, _, code := runExec(t, ctx, task, "hog", "sh", "-c", "head -c 400m /dev/zero | tail")
	if code == 0 {
		t.Fatal("memory hog was not killed")
	}
	events.wait(t, "/tasks/oom", nil, 30*time.Second)
	notExited(t, exitCh, 0, "control plane")
	if out, _, code := runExec(t, ctx, task, "after", "echo", "ok"); code != 0 || out != "ok\n" {
		t.Fatalf("exec after OOM: %q %d", out, code)
	}
}

// TestBadAnnotations: an invalid value fails Create with an error naming the
// annotation and the value, leaves nothing behind, and the shim serves on.
func TestBadAnnotations(t *testing.T) {
	skipUnderRunc(t, "the annotations are io.sandbox.v1's")
	ctx := testCtx(t)
	for _, kv := range [][2]string{
		{"io.sandbox.user", "root"},
		{"io.sandbox.user", "0:0"},
		{"io.sandbox.user.pids-limit", "lots"},
		{"io.sandbox.user.pids-limit", "-3"},
		{"io.sandbox.user.memory-limit", "12xb"},
		{"io.sandbox.user.env", "NOT-A-NAME"},
		{"io.sandbox.user.mounts", "relative/dir"},
		{"io.sandbox.user.mounts", "/not/a/mount"},
	} {
		id := newID(t)
		c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"), withAnnotations(kv[0], kv[1]))
		_, err := c.NewTask(ctx, nullIO())
		errNames(t, err, kv[0]+"="+kv[1], kv[0], `"`+kv[1]+`"`)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s=%s: want InvalidArgument, got %v", kv[0], kv[1], err)
		}
		if dirs := cgroupDirs(id); len(dirs) > 0 {
			t.Errorf("%s=%s left cgroups %v", kv[0], kv[1], dirs)
		}
	}
	task, _ := runningContainer(t)
	if out, _, _ := runExec(t, ctx, task, "ok", "echo", "served"); out != "served\n" {
		t.Fatalf("shim stopped serving: %q", out)
	}
}

// TestWorkspaceExecSpecCannotEscalate: an exec spec asking for root, all
// capabilities and privileges still runs as the workspace user.
func TestWorkspaceExecSpecCannotEscalate(t *testing.T) {
	skipUnderRunc(t, "the workspace is io.sandbox.v1's")
	ctx := testCtx(t)
	task, _ := runningContainer(t)
	spec := processSpec(t, ctx, task, false, "sh", "-c", "id -u; grep CapEff /proc/self/status")
	spec.User.UID, spec.User.GID = 0, 0
	spec.NoNewPrivileges = false
	spec.Capabilities.Effective = append(spec.Capabilities.Effective, "CAP_SYS_ADMIN", "CAP_SYS_PTRACE")
	spec.Capabilities.Bounding = spec.Capabilities.Effective
	spec.Capabilities.Permitted = spec.Capabilities.Effective
	var out syncBuffer
	p, err := task.Exec(ctx, "escalate", spec, ioCreator(nil, &out, &out, false))
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := p.Wait(ctx)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitExit(t, ch, stepTimeout)
	deleteProcess(t, ctx, p)
	if !strings.HasPrefix(out.String(), "1000\n") || !strings.Contains(out.String(), "CapEff:\t0000000000000000") {
		t.Fatalf("exec escalated: %q", out.String())
	}
}

// TestUpdateCapsWorkspace: when Update lowers the sandbox's limits, the workspace's follow,
// so the control plane keeps its reserve.
func TestUpdateCapsWorkspace(t *testing.T) {
	skipUnderRunc(t, "the workspace is io.sandbox.v1's")
	ctx := testCtx(t)
	id := newID(t)
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sleep", "120"), oci.WithMemoryLimit(512*mib), oci.WithPidsLimit(400))
	task, _ := startTask(t, ctx, c, nullIO())
	runExec(t, ctx, task, "warm", "true")
	if got := cgroupFile(t, "pids", id, "user", "pids.max"); got != "300" {
		t.Fatalf("user pids.max before = %s, want 300", got)
	}
	mem, pids := int64(256*mib), int64(64)
	if err := task.Update(ctx, client.WithResources(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &mem}, Pids: &specs.LinuxPids{Limit: &pids},
	})); err != nil {
		t.Fatal(err)
	}
	if got := cgroupFile(t, "pids", id, "", "pids.max"); got != "64" {
		t.Errorf("sandbox pids.max = %s, want 64", got)
	}
	if got := cgroupFile(t, "pids", id, "user", "pids.max"); got != "48" {
		t.Errorf("user pids.max after = %s, want 48", got)
	}
	if got := cgroupFile(t, "memory", id, "user", "memory.limit_in_bytes"); got != strconv.Itoa(192*mib) {
		t.Errorf("user memory limit after = %s, want %d", got, 192*mib)
	}
}
