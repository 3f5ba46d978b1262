package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Tests that what the control plane holds (env, volumes, /dev/shm, pids)
// stays out of user code's reach (io.sandbox.v1 only).

// TestExecEnvWithoutControlPlaneSecrets: containerd builds an exec's env
// from the control plane's, so its secrets would reach every exec; only
// the keys io.sandbox.user.env names (and PATH and the like) pass, and what
// the exec sets itself passes.
func TestExecEnvWithoutControlPlaneSecrets(t *testing.T) {
	skipUnderRunc(t, "runc execs inherit the container env")
	for _, c := range []struct {
		name, ann, wantURL string
	}{
		{"default", "", ""},
		{"annotated", "API_URL", "http://cp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := testCtx(t)
			opts := []oci.SpecOpts{oci.WithEnv([]string{"CP_API_KEY=s3cret", "API_URL=http://cp", "TZ=UTC"})}
			if c.ann != "" {
				opts = append(opts, withAnnotations("io.sandbox.user.env", c.ann))
			}
			task, _ := runningContainer(t, opts...)
			// The control plane has them (once its init has exec'd: Start may return first).
			var env string
			var err error
			if !poll(stepTimeout, func() bool {
				env, err = readInContainer(task.Pid(), "/proc/1/environ")
				return err == nil && strings.Contains(env, "CP_API_KEY=s3cret")
			}) {
				t.Fatalf("control plane env %q, %v", env, err)
			}
			out, _, code := runExec(t, ctx, task, "env", "sh", "-c", `echo "key=$CP_API_KEY url=$API_URL tz=$TZ path=$PATH"`)
			want := "key= url=" + c.wantURL + " tz=UTC path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
			if code != 0 || out != want {
				t.Fatalf("exec env: %q (exit %d), want %q", out, code, want)
			}
			// An exec that sets a value itself keeps it.
			ps := processSpec(t, ctx, task, false, "sh", "-c", `echo "key=$CP_API_KEY"`)
			ps.Env = append(ps.Env, "CP_API_KEY=mine")
			var stdout syncBuffer
			p, err := task.Exec(ctx, "own", ps, ioCreator(nil, &stdout, &stdout, false))
			if err != nil {
				t.Fatal(err)
			}
			ch, err := waitAndStart(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			waitExit(t, ch, stepTimeout)
			deleteProcess(t, ctx, p)
			if stdout.String() != "key=mine\n" {
				t.Fatalf("exec's own value lost: %q", stdout.String())
			}
		})
	}
}

// TestWorkspaceMountAllowList: a bundle's data volume is shared with user
// code, with its options; its credentials (a service account token, a
// Secret volume) are the control plane's unless io.sandbox.user.mounts
// names them; /etc/hosts is kept read-only and devpts is capped.
func TestWorkspaceMountAllowList(t *testing.T) {
	skipUnderRunc(t, "runc execs share the container's mounts")
	ctx := testCtx(t)
	token, data := t.TempDir(), t.TempDir()
	// A Secret volume where the kubelet puts them.
	named := filepath.Join(t.TempDir(), "pods", "uid", "volumes", "kubernetes.io~secret", "creds")
	if err := os.MkdirAll(named, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	for _, f := range []struct{ path, data string }{
		{filepath.Join(token, "token"), "s3cret\n"}, {filepath.Join(data, "f"), "shared\n"},
		{filepath.Join(named, "password"), "named-credential\n"}, {hosts, "127.0.0.1 localhost\n"},
	} {
		if err := os.WriteFile(f.path, []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const tokenDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	task, _ := runningContainer(t, oci.WithMounts([]specs.Mount{
		{Destination: tokenDir, Type: "bind", Source: token, Options: []string{"rbind", "ro"}},
		{Destination: "/mnt/data", Type: "bind", Source: data, Options: []string{"rbind", "ro"}},
		{Destination: "/mnt/creds", Type: "bind", Source: named, Options: []string{"rbind", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"rbind", "rw"}},
	}), withAnnotations("io.sandbox.user.mounts", "/mnt/creds"))
	if got, err := readInContainer(task.Pid(), tokenDir+"/token"); err != nil || got != "s3cret\n" {
		t.Fatalf("control plane lost its token: %q %v", got, err)
	}
	out, _, code := runExec(t, ctx, task, "ls", "sh", "-c", "cat "+tokenDir+"/token; cat /mnt/data/f; cat /mnt/creds/password; cat /etc/hosts")
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "shared\n") || !strings.Contains(out, "named-credential") || !strings.Contains(out, "localhost") {
		t.Fatalf("workspace sees %q (exit %d): want the data volume, the named credential and /etc/hosts, not the token", out, code)
	}
	if _, _, code := runExec(t, ctx, task, "write", "sh", "-c", "echo x > /mnt/data/new"); code == 0 {
		t.Error("a read-only data volume is writable in the workspace")
	}
	mi, _, _ := runExec(t, ctx, task, "mountinfo", "cat", "/proc/self/mountinfo")
	for _, line := range strings.Split(mi, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		switch f[4] {
		case "/etc/hosts":
			if !strings.HasPrefix(f[5], "ro") {
				t.Errorf("/etc/hosts writable in the workspace: %s", line)
			}
		case "/dev/pts":
			if !strings.Contains(line, "max=256") {
				t.Errorf("devpts not capped: %s", line)
			}
		case tokenDir:
			t.Errorf("service account token mounted in the workspace: %s", line)
		}
	}
}

// withSharedShm makes /dev/shm a bind of dir, as CRI does with the pod's
// shm (shared by every container of the pod).
func withSharedShm(dir string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		for i, m := range s.Mounts {
			if m.Destination == "/dev/shm" {
				s.Mounts[i] = specs.Mount{Destination: "/dev/shm", Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}
			}
		}
		return nil
	}
}

// TestWorkspaceShmPrivate: user code's /dev/shm is its own, whether the
// bundle's is a tmpfs (ctr) or a bind of the pod's (CRI).
func TestWorkspaceShmPrivate(t *testing.T) {
	skipUnderRunc(t, "runc execs share the container's /dev/shm")
	for _, bind := range []bool{false, true} {
		t.Run(map[bool]string{false: "tmpfs", true: "bind"}[bind], func(t *testing.T) {
			ctx := testCtx(t)
			var opts []oci.SpecOpts
			dir := t.TempDir()
			if bind {
				if err := os.Chmod(dir, 0o1777); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "cp-file"), []byte("cp\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				opts = append(opts, withSharedShm(dir))
			}
			task, _ := runningContainer(t, opts...)
			out, _, code := runExec(t, ctx, task, "shm", "sh", "-c", "echo ws > /dev/shm/ws-file && ls /dev/shm")
			if code != 0 || strings.TrimSpace(out) != "ws-file" {
				t.Fatalf("workspace /dev/shm: %q (exit %d), want only its own file", out, code)
			}
			if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(int(task.Pid())), "root/dev/shm/ws-file")); !os.IsNotExist(err) {
				t.Fatalf("the control plane's /dev/shm has the workspace's file (%v)", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "ws-file")); !os.IsNotExist(err) {
				t.Fatalf("the pod's shm has the workspace's file (%v)", err)
			}
			if out, _, _ := runExec(t, ctx, task, "mount", "grep", " /dev/shm ", "/proc/self/mountinfo"); !strings.Contains(out, ",size=") || !strings.Contains(out, ",nr_inodes=") || !strings.Contains(out, "noexec") {
				t.Errorf("workspace /dev/shm is not the bounded tmpfs: %q", out)
			}
		})
	}
}

// TestWorkspacePidsBelowSandbox: under a sandbox pids limit the workspace
// gets at most three quarters of it, so user code holding every pid it can
// get (a fork bomb, then pid fillers) leaves the control plane able to fork. The control plane forks a subshell every
// tick; busybox sh exits when a fork fails.
func TestWorkspacePidsBelowSandbox(t *testing.T) {
	skipUnderRunc(t, "the workspace is io.sandbox.v1's")
	ctx := testCtx(t)
	id := newID(t)
	var ticks syncBuffer
	c := newContainer(t, ctx, id, oci.WithPidsLimit(64),
		oci.WithProcessArgs("sh", "-c", "while :; do (echo tick); sleep 0.05; done"))
	task, exitCh := startTask(t, ctx, c, ioCreator(nil, &ticks, &ticks, false))
	runExec(t, ctx, task, "warm", "true")
	if got := cgroupFile(t, "pids", id, "user", "pids.max"); got != "48" {
		t.Fatalf("workspace pids.max = %s under a sandbox limit of 64, want 48", got)
	}
	// A fork bomb whose processes hold their pids (the classic f|f& churns
	// and can die out at its limit, freeing them), then fillers that take
	// every pid left.
	userPids := func() int {
		n, _ := strconv.Atoi(cgroupFile(t, "pids", id, "user", "pids.current"))
		return n
	}
	startExec(t, ctx, task, "bomb", nullIO(), false, "sh", "-c", "f(){ f|f& sleep 30; }; f")
	last := -1
	if !poll(stepTimeout, func() bool {
		n := userPids()
		stable := n == last && n > 8
		last = n
		time.Sleep(300 * time.Millisecond)
		return stable
	}) {
		t.Fatalf("fork bomb did not settle: user pids.current %d", userPids())
	}
	for _, fill := range []string{"fill1", "fill2"} {
		startExec(t, ctx, task, fill, nullIO(), false, "sh", "-c", "while :; do sleep 60 & done")
	}
	if !poll(stepTimeout, func() bool { return userPids() >= 44 }) {
		t.Fatalf("workspace pids not exhausted: user pids.current %d", userPids())
	}
	before := strings.Count(ticks.String(), "tick")
	notExited(t, exitCh, 2*time.Second, "control plane under a fork bomb")
	after := strings.Count(ticks.String(), "tick")
	if after-before < 5 || strings.Contains(ticks.String(), "fork") {
		t.Fatalf("control plane forked %d times in 2s under a fork bomb; output tail %q", after-before, tail(ticks.String(), 200))
	}
	if got := cgroupFile(t, "pids", id, "", "pids.current"); got == "64" {
		t.Errorf("sandbox pids exhausted: %s", got)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
