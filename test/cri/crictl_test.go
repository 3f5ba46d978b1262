// Package cri drives the shim through containerd's CRI with crictl, as the
// kubelet would: the "sandbox" runtime handler end to end (issue 11).
package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

type crictl struct {
	t *testing.T
	d *harness.Daemon
}

// run runs crictl and returns its stdout; a failure fails the test.
func (c crictl) run(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.d.Crictl(ctx, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("crictl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// tryRun runs crictl and returns its combined output and error.
func (c crictl) tryRun(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := c.d.Crictl(ctx, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// startCRI starts a CRI daemon for the test and writes a pod config
// named name (its logs in the test's directory), which it returns with the
// directory.
func startCRI(t *testing.T, name string) (c crictl, pod, dir string) {
	t.Helper()
	d := harness.StartCRITest(context.Background(), t)
	dir = t.TempDir()
	pod = writeJSON(t, filepath.Join(dir, "pod.json"), map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": "sst-pod-" + name, "attempt": 0},
		"log_directory": dir,
		// An IPC sysctl of the pod's namespace, which each workspace's own IPC
		// namespace must start from.
		"linux": map[string]any{"cgroup_parent": d.CgroupParent(), "sysctls": map[string]string{"fs.mqueue.msg_max": "100"}},
	})
	return crictl{t: t, d: d}, pod, dir
}

func writeJSON(t *testing.T, path string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCrictl: a pod on the sandbox handler, through its whole life with
// crictl: runp, create, start, exec (streamed and -s), logs, stats, stop,
// rm, stopp, rmp. The container's command is its control plane; an exec
// lands in the workspace (uid 1000, not the control plane's root) and
// cannot see the control plane's processes.
func TestCrictl(t *testing.T) {
	c, pod, dir := startCRI(t, "agent")
	// A volume the agent shares with the code it runs, and its service
	// account token, which stays the agent's.
	volume, token := filepath.Join(dir, "workspace"), filepath.Join(dir, "token")
	for _, p := range []string{volume, token} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(volume, "task.txt"), []byte("shared-task\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(token, "token"), []byte("sa-token-secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	container := writeJSON(t, filepath.Join(dir, "container.json"), map[string]any{
		"mounts": []map[string]any{
			{"container_path": "/workspace", "host_path": volume},
			{"container_path": "/var/run/secrets/kubernetes.io/serviceaccount", "host_path": token, "readonly": true},
		},
		"metadata": map[string]any{"name": "agent"},
		"image":    map[string]any{"image": harness.Image},
		// The control plane: says it started, then serves nothing.
		"command":  []string{"/bin/sh", "-c", "echo control-plane-up; exec sleep 3600"},
		"log_path": "agent.log",
		"linux":    map[string]any{},
	})

	podID := c.run("runp", "--runtime", harness.SandboxHandler, pod)
	if podID == "" {
		t.Fatal("runp printed no pod id")
	}
	if out := c.run("inspectp", "-o", "go-template", "--template", "{{.status.state}}", podID); out != "SANDBOX_READY" {
		t.Fatalf("pod state %q", out)
	}
	// The pod's sandbox (pause) container runs under the shim as a plain
	// container: no API, no workspace (no reaper in its cgroup).
	if _, err := os.Stat(filepath.Join("/run/io.sandbox", harness.CRINamespace, podID)); !os.IsNotExist(err) {
		t.Errorf("the pause container has an API directory: %v", err)
	}
	if pids := reapersIn(t, podID); len(pids) > 0 {
		t.Errorf("the pause container has a workspace: reapers %v", pids)
	}
	ctrID := c.run("create", podID, container, pod)
	c.run("start", ctrID)
	waitRunning(t, c, ctrID)

	// exec -s (ExecSync) and a streamed exec both land in the workspace.
	if out := c.run("exec", "-s", ctrID, "id", "-u"); out != "1000" {
		t.Errorf("exec -s id -u = %q, want 1000 (the workspace's user)", out)
	}
	// (The check above can see a workspace: the app container has one.)
	if len(reapersIn(t, ctrID)) == 0 {
		t.Error("no workspace reaper found for the app container")
	}
	if out := c.run("exec", ctrID, "sh", "-c", "id -u; echo to-stderr >&2"); !strings.Contains(out, "1000") {
		t.Errorf("exec id -u = %q, want 1000", out)
	}
	// The control plane's processes are not in the workspace's PID namespace.
	if out := c.run("exec", "-s", ctrID, "ps", "-o", "args"); strings.Contains(out, "sleep 3600") {
		t.Errorf("the workspace sees the control plane:\n%s", out)
	}
	// The shared volume is there, the token is not.
	if out := c.run("exec", "-s", ctrID, "sh", "-c", "cat /workspace/task.txt; cat /var/run/secrets/kubernetes.io/serviceaccount/token 2>&1; true"); !strings.Contains(out, "shared-task") || strings.Contains(out, "sa-token-secret") {
		t.Errorf("workspace volumes: %q, want the shared volume and no token", out)
	}
	// The pod's IPC sysctls hold in the workspace's IPC namespace too.
	if out := c.run("exec", "-s", ctrID, "cat", "/proc/sys/fs/mqueue/msg_max"); out != "100" {
		t.Errorf("fs.mqueue.msg_max in the workspace = %q, want the pod's 100", out)
	}
	// An exec's exit status comes back.
	if out, err := c.tryRun("exec", "-s", ctrID, "sh", "-c", "exit 3"); err == nil {
		t.Errorf("exec exit 3 succeeded: %s", out)
	}

	// Guarantee 1 holds in a pod: kill -9 -1 from an exec leaves the
	// control plane running, not restarted.
	_, _ = c.tryRun("exec", "-s", ctrID, "sh", "-c", "kill -9 -1")
	time.Sleep(500 * time.Millisecond)
	if st := c.run("inspect", "-o", "go-template", "--template", "{{.status.state}}", ctrID); st != "CONTAINER_RUNNING" {
		t.Errorf("state after kill -9 -1 from an exec: %q", st)
	}
	if out := c.run("exec", "-s", ctrID, "echo", "still-serving"); out != "still-serving" {
		t.Errorf("exec after kill -9 -1: %q", out)
	}

	// The container's sandbox API, at the documented host path: an
	// execSecure canary reaches its command, from sandboxctl's own env.
	sandboxctl, err := harness.RepoBinary("sandboxctl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/run/io.sandbox", harness.CRINamespace, ctrID, "api.sock")); err != nil {
		t.Errorf("the container's API socket: %v", err)
	}
	secure := exec.Command(sandboxctl, "-n", harness.CRINamespace, "exec-secure", ctrID, "--env", "SST_CANARY", "--",
		"sh", "-c", `test "$SST_CANARY" = cri-canary-51 && id -u`)
	secure.Env = append(os.Environ(), "SST_CANARY=cri-canary-51")
	if out, err := secure.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "1000" {
		t.Errorf("sandboxctl exec-secure in the pod's container: %v: %s", err, out)
	}
	if out := c.run("exec", "-s", ctrID, "sh", "-c", "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'"); strings.Contains(out, "cri-canary-51") {
		t.Errorf("the workspace sees the canary:\n%s", out)
	}

	if out := c.run("logs", ctrID); !strings.Contains(out, "control-plane-up") {
		t.Errorf("logs = %q, want the control plane's output", out)
	}
	if out := c.run("stats", "-o", "json", ctrID); !strings.Contains(out, ctrID) {
		t.Errorf("stats has no entry for the container:\n%s", out)
	}

	c.run("stop", "--timeout", "5", ctrID)
	if st := c.run("inspect", "-o", "go-template", "--template", "{{.status.state}}", ctrID); st != "CONTAINER_EXITED" {
		t.Errorf("state after stop %q", st)
	}
	c.run("rm", ctrID)
	c.run("stopp", podID)
	c.run("rmp", podID)
	if out := c.run("pods", "-q"); out != "" {
		t.Errorf("pods left: %s", out)
	}
}

// reapersIn lists the sandbox-reaper processes whose cgroup names id.
func reapersIn(t *testing.T, id string) []string {
	t.Helper()
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "sandbox-reaper") {
			continue
		}
		if cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup")); err == nil && strings.Contains(string(cg), id) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestCrictlTwoContainers: in a pod whose app containers both ask for the
// default reserved ports, the first one created holds them in the pod's
// network namespace (its control plane gets them as fds 3..); the second
// starts too, holding none; user code in either workspace can neither bind
// them nor connect to them.
func TestCrictlTwoContainers(t *testing.T) {
	c, pod, dir := startCRI(t, "two")
	podID := c.run("runp", "--runtime", harness.SandboxHandler, pod)
	var ids []string
	for _, name := range []string{"first", "second"} {
		cfg := writeJSON(t, filepath.Join(dir, name+".json"), map[string]any{
			"metadata": map[string]any{"name": name},
			"image":    map[string]any{"image": harness.Image},
			// The control plane reports the descriptors it was handed.
			"command":  []string{"/bin/sh", "-c", `echo "listen_fds=${LISTEN_FDS:-none}"; exec sleep 3600`},
			"log_path": name + ".log",
			"linux":    map[string]any{},
		})
		id := c.run("create", podID, cfg, pod)
		c.run("start", id)
		ids = append(ids, id)
	}
	deadline := time.Now().Add(20 * time.Second)
	logs := make([]string, 2)
	for i, id := range ids {
		for !strings.Contains(logs[i], "listen_fds=") && time.Now().Before(deadline) {
			logs[i] = c.run("logs", id)
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !strings.Contains(logs[0], "listen_fds=2") {
		t.Errorf("first container's control plane: %q, want the two default reserved ports", logs[0])
	}
	if !strings.Contains(logs[1], "listen_fds=none") {
		t.Errorf("second container's control plane: %q, want none (its sibling holds them)", logs[1])
	}
	for i, id := range ids {
		for _, attack := range [][]string{{"bind-reserved", "0.0.0.0", "8080", "8888"}, {"connect-reserved", "direct", "127.0.0.1", "8080", "8888"}} {
			out, err := c.tryRun(append([]string{"exec", "-s", id, "/usr/local/bin/attacker"}, attack...)...)
			if err != nil || strings.Contains(out, "BREACH") || !strings.Contains(out, "BLOCKED") {
				t.Errorf("container %d: %s got through (%v):\n%s", i, attack[0], err, out)
			}
		}
	}
}

// TestCrictlRunAsUser: a container's securityContext.runAsUser runs its
// control plane as that user, and user code as the same unprivileged
// user (the image's or pod's user when not root), never as root.
func TestCrictlRunAsUser(t *testing.T) {
	c, pod, dir := startCRI(t, "runas")
	podID := c.run("runp", "--runtime", harness.SandboxHandler, pod)
	cfg := writeJSON(t, filepath.Join(dir, "container.json"), map[string]any{
		"metadata": map[string]any{"name": "agent"},
		"image":    map[string]any{"image": harness.Image},
		"command":  []string{"sleep", "3600"},
		"log_path": "agent.log",
		"linux": map[string]any{"security_context": map[string]any{
			"run_as_user": map[string]any{"value": 2000}, "run_as_group": map[string]any{"value": 3000},
		}},
	})
	id := c.run("create", podID, cfg, pod)
	c.run("start", id)
	pid := c.run("inspect", "-o", "go-template", "--template", "{{.info.pid}}", id)
	status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUid:\t2000\t") {
		t.Errorf("control plane (pid %s) does not run as 2000:\n%s", pid, status)
	}
	if out := c.run("exec", "-s", id, "id", "-u"); out != "2000" {
		t.Errorf("user code runs as %q, want 2000 (the container's unprivileged user)", out)
	}
}

// TestCrictlResourcesAndTerminal: a container's CRI memory limit caps its sandbox cgroup,
// and the workspace gets less than all of it (the control plane keeps a reserve); a
// terminal exec (crictl exec -it) runs on a pty.
func TestCrictlResourcesAndTerminal(t *testing.T) {
	c, pod, dir := startCRI(t, "limits")
	podID := c.run("runp", "--runtime", harness.SandboxHandler, pod)
	const limit = 256 << 20
	cfg := writeJSON(t, filepath.Join(dir, "container.json"), map[string]any{
		"metadata": map[string]any{"name": "agent"},
		"image":    map[string]any{"image": harness.Image},
		"command":  []string{"sleep", "3600"},
		"log_path": "agent.log",
		"linux":    map[string]any{"resources": map[string]any{"memory_limit_in_bytes": limit, "cpu_period": 100000, "cpu_quota": 50000}},
	})
	id := c.run("create", podID, cfg, pod)
	c.run("start", id)
	read := func(p string) int64 {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		if _, err := fmt.Sscan(string(b), &n); err != nil {
			t.Fatalf("%s: %q", p, b)
		}
		return n
	}
	// cgroup v1 (this machine kind) or the unified hierarchy.
	memory, workspaceMemory, quota := func() (string, string, string) {
		if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
			sandbox := filepath.Join("/sys/fs/cgroup/memory", c.d.CgroupParent(), id)
			return filepath.Join(sandbox, "memory.limit_in_bytes"), filepath.Join(sandbox, "user", "memory.limit_in_bytes"),
				filepath.Join("/sys/fs/cgroup/cpu", c.d.CgroupParent(), id, "cpu.cfs_quota_us")
		}
		sandbox := filepath.Join("/sys/fs/cgroup", c.d.CgroupParent(), id)
		return filepath.Join(sandbox, "memory.max"), filepath.Join(sandbox, "user", "memory.max"), filepath.Join(sandbox, "cpu.max")
	}()
	if got := read(memory); got != limit {
		t.Errorf("sandbox memory limit %d, want the container's %d", got, limit)
	}
	c.run("exec", "-s", id, "true") // builds the workspace
	if got := read(workspaceMemory); got >= limit || got <= 0 {
		t.Errorf("workspace memory limit %d, want below the sandbox's %d", got, limit)
	}
	// cpu.cfs_quota_us, or cpu.max's first field.
	if got := read(quota); got != 50000 {
		t.Errorf("sandbox cpu quota %d, want 50000", got)
	}
	tty := exec.Command("script", "-qec", "stty rows 30 cols 90; "+c.d.CrictlPath()+" --config "+c.d.CrictlConfigPath()+
		" exec -it "+id+" sh -c '[ -t 0 ] && [ -t 1 ] && echo isatty-yes; sleep 1; stty size; id -u'", "/dev/null")
	tty.Stdin = strings.NewReader("")
	if b, err := tty.CombinedOutput(); err != nil || !strings.Contains(string(b), "isatty-yes") || !strings.Contains(string(b), "30 90") || !strings.Contains(string(b), "1000") {
		t.Errorf("crictl exec -it: %v: %q", err, b)
	}
}
