package cri

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// usernsHostBase is where the pod's ids start on the host: far from any
// id of this machine's.
const usernsHostBase = 300000

// TestCrictlUserNamespace: a pod in a user namespace of its own (the
// kubelet's hostUsers: false), on the sandbox handler. The control plane
// is root of that namespace only; an exec lands in the workspace, in the
// same namespace, as its uid 1000 (host uid base+1000), sees the rootfs
// owned as in the image, and cannot kill the control plane; execSecure
// works there too.
func TestCrictlUserNamespace(t *testing.T) {
	c, pod, container := startUsernsPod(t, "userns", 65536)
	podID := c.run("runp", "--runtime", harness.SandboxHandler, pod)
	ctrID := c.run("create", podID, container, pod)
	c.run("start", ctrID)
	waitRunning(t, c, ctrID)

	wantMap := []string{"0", "300000", "65536"}
	pid := c.run("inspect", "-o", "go-template", "--template", "{{.info.pid}}", ctrID)
	if got := readUIDMap(t, filepath.Join("/proc", pid, "uid_map")); strings.Join(got, " ") != strings.Join(wantMap, " ") {
		t.Errorf("control plane uid_map %v, want %v", got, wantMap)
	}
	if status, err := os.ReadFile(filepath.Join("/proc", pid, "status")); err != nil || !strings.Contains(string(status), "\nUid:\t300000\t") {
		t.Errorf("control plane (pid %s) is not host uid 300000 (root of the pod's namespace): %v\n%s", pid, err, status)
	}
	// The workspace: the pod's namespace, its user 1000, the image's owners.
	if out := c.run("exec", "-s", ctrID, "sh", "-c", "id -u; cat /proc/self/uid_map; stat -c %u:%g /bin/busybox"); strings.Join(strings.Fields(out), " ") != "1000 0 300000 65536 0:0" {
		t.Errorf("workspace: %q, want uid 1000, the pod's mapping and a root-owned rootfs", out)
	}
	if out := c.run("exec", "-s", ctrID, "sh", "-c", "touch /etc/owned-by-user 2>&1 || echo refused"); !strings.Contains(out, "refused") {
		t.Errorf("user code wrote into the image's root-owned /etc: %q", out)
	}
	if out := c.run("exec", "-s", ctrID, "ps", "-o", "args"); strings.Contains(out, "sleep 3600") {
		t.Errorf("the workspace sees the control plane:\n%s", out)
	}
	_, _ = c.tryRun("exec", "-s", ctrID, "sh", "-c", "kill -9 -1")
	time.Sleep(500 * time.Millisecond)
	if st := c.run("inspect", "-o", "go-template", "--template", "{{.status.state}}", ctrID); st != "CONTAINER_RUNNING" {
		t.Errorf("state after kill -9 -1 from an exec: %q", st)
	}
	if out := c.run("exec", "-s", ctrID, "echo", "still-serving"); out != "still-serving" {
		t.Errorf("exec after kill -9 -1: %q", out)
	}
	// The sandbox API at its host path, its control-plane side owned by
	// the control plane's host uid; execSecure in the namespace.
	if fi, err := os.Stat(api.ControlPlaneHostDir(harness.CRINamespace, ctrID)); err != nil {
		t.Errorf("control plane's API directory: %v", err)
	} else if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != usernsHostBase {
		t.Errorf("control plane's API directory owned by host uid %d, want %d", uid, usernsHostBase)
	}
	sandboxctl, err := harness.RepoBinary("sandboxctl")
	if err != nil {
		t.Fatal(err)
	}
	secure := exec.Command(sandboxctl, "-n", harness.CRINamespace, "exec-secure", ctrID, "--env", "SST_CANARY", "--",
		"sh", "-c", `test "$SST_CANARY" = userns-canary-7 && id -u && cat /proc/self/uid_map`)
	secure.Env = append(os.Environ(), "SST_CANARY=userns-canary-7")
	if out, err := secure.CombinedOutput(); err != nil || strings.Join(strings.Fields(string(out)), " ") != "1000 0 300000 65536" {
		t.Errorf("sandboxctl exec-secure in the user namespace: %v: %s", err, out)
	}
	if out := c.run("exec", "-s", ctrID, "sh", "-c", "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'"); strings.Contains(out, "userns-canary-7") {
		t.Errorf("the workspace sees the canary:\n%s", out)
	}
	if out := c.run("logs", ctrID); !strings.Contains(out, "control-plane-up") {
		t.Errorf("logs = %q", out)
	}
	c.run("stop", "--timeout", "5", ctrID)
	c.run("rm", ctrID)
	c.run("stopp", podID)
	c.run("rmp", podID)
}

// TestCrictlUserNamespaceRefused: a pod whose mapping leaves out the
// workspace's user is refused at start (the shim's Create), with an error naming it, and
// the daemon goes on serving.
func TestCrictlUserNamespaceRefused(t *testing.T) {
	c, pod, container := startUsernsPod(t, "userns-small", 500)
	podID := c.run("runp", "--runtime", harness.SandboxHandler, pod)
	// CRI makes the task (the shim's Create) at start.
	id := c.run("create", podID, container, pod)
	out, err := c.tryRun("start", id)
	if err == nil {
		t.Fatalf("a container whose user namespace leaves out the workspace user started: %s", out)
	}
	if !strings.Contains(out, "does not map uid 1000 (the workspace user") {
		t.Errorf("error does not name the unmapped workspace user: %s", out)
	}
	// The daemon and the pod go on.
	if out := c.run("inspectp", "-o", "go-template", "--template", "{{.status.state}}", podID); out != "SANDBOX_READY" {
		t.Errorf("pod state after the refused start: %q", out)
	}
	c.run("rm", id)
	c.run("stopp", podID)
	c.run("rmp", podID)
}

// startUsernsPod starts a CRI daemon and writes the config of pod name, in
// a user namespace of its own mapping length ids from usernsHostBase, and
// of its container (whose command is the control plane's and says it
// started), which CRI requires to ask for the same namespace.
func startUsernsPod(t *testing.T, name string, length int) (c crictl, pod, container string) {
	t.Helper()
	c, _, dir := startCRI(t, name)
	mapping := []map[string]any{{"container_id": 0, "host_id": usernsHostBase, "length": length}}
	namespaceOptions := map[string]any{"userns_options": map[string]any{"mode": 0 /* POD */, "uids": mapping, "gids": mapping}}
	pod = writeJSON(t, filepath.Join(dir, "userns-pod.json"), map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": "sst-pod-" + name, "attempt": 0},
		"log_directory": dir,
		"linux": map[string]any{"cgroup_parent": c.d.CgroupParent(),
			"security_context": map[string]any{"namespace_options": namespaceOptions}},
	})
	container = writeJSON(t, filepath.Join(dir, "userns-container.json"), map[string]any{
		"metadata": map[string]any{"name": "agent"},
		"image":    map[string]any{"image": harness.Image},
		"command":  []string{"/bin/sh", "-c", "echo control-plane-up; exec sleep 3600"},
		"log_path": "agent.log",
		"linux":    map[string]any{"security_context": map[string]any{"namespace_options": namespaceOptions}},
	})
	return c, pod, container
}

func waitRunning(t *testing.T, c crictl, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := c.run("inspect", "-o", "go-template", "--template", "{{.status.state}}", id)
		if st == "CONTAINER_RUNNING" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container state %q after 30s", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readUIDMap(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}
