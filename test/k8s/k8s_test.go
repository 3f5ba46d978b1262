// Package k8s runs the shim under a real kubelet (make k8s-test): a RuntimeClass, a pod on
// it, kubectl exec with and without a terminal, logs, probes and the guarantees inside the
// pod (issue 11).
package k8s

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

func TestPodOnRuntimeClass(t *testing.T) {
	if os.Getenv("SST_K8S_TEST") == "" {
		t.Skip("make k8s-test runs it (it builds the Kubernetes binaries first)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d := harness.StartCRITest(ctx, t)
	c, err := harness.StartKubernetes(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop kubernetes: %v", err)
		}
	})
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := c.Kubectl(ctx, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	kubectl("apply", "-f", filepath.Join(root, "deploy", "runtimeclass.yaml"))
	// applyPod creates a pod from its manifest and waits until it is ready.
	applyPod := func(name, manifest string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), name+".yaml")
		if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
			t.Fatal(err)
		}
		kubectl("apply", "-f", path)
		kubectl("wait", "--for=condition=Ready", "pod/"+name, "--timeout=60s")
	}
	applyPod("agent", `apiVersion: v1
kind: Pod
metadata:
  name: agent
  annotations:
    io.sandbox.user.pids-limit: "256"
spec:
  nodeName: `+harness.NodeName+`
  runtimeClassName: sandbox
  containers:
    - name: agent
      image: `+harness.Image+`
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "echo control-plane-up; exec sleep 3600"]
      readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
      livenessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
      resources: {limits: {memory: 512Mi, cpu: "1"}}
      volumeMounts: [{name: work, mountPath: /workspace}]
  volumes: [{name: work, emptyDir: {}}]
`)

	if out := kubectl("exec", "agent", "--", "id", "-u"); out != "1000" {
		t.Errorf("kubectl exec id -u = %q, want 1000 (the workspace)", out)
	}
	// The emptyDir is shared with user code; the service account token is not.
	out := kubectl("exec", "agent", "--", "sh", "-c", "touch /workspace/x && echo volume-ok; cat /var/run/secrets/kubernetes.io/serviceaccount/token 2>/dev/null | wc -c")
	if !strings.Contains(out, "volume-ok") || !strings.HasSuffix(out, "\n0") {
		t.Errorf("volumes in the workspace: %q, want the emptyDir and no token", out)
	}
	if out := kubectl("logs", "agent"); !strings.Contains(out, "control-plane-up") {
		t.Errorf("kubectl logs = %q", out)
	}
	// A terminal exec, under a pty of script's with a size set; kubectl sends the size once
	// the command runs (as with runc), so stty reads it a moment later.
	tty := exec.CommandContext(ctx, "script", "-qec",
		"stty rows 24 cols 80; "+c.KubectlPath()+" --kubeconfig "+c.Kubeconfig+" exec -it agent -- sh -c '[ -t 0 ] && [ -t 1 ] && echo isatty-yes; sleep 1; stty size'", "/dev/null")
	tty.Stdin = strings.NewReader("")
	if b, err := tty.CombinedOutput(); err != nil || !strings.Contains(string(b), "isatty-yes") || !strings.Contains(string(b), "24 80") {
		t.Errorf("kubectl exec -it: %v: %q", err, b)
	}
	// Guarantee 1 in the pod: kill -9 -1 leaves the control plane up, 0 restarts.
	_, _ = c.Kubectl(ctx, "exec", "agent", "--", "sh", "-c", "kill -9 -1").CombinedOutput()
	time.Sleep(3 * time.Second)
	if out := kubectl("get", "pod", "agent", "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.phase}"); out != "0 Running" {
		t.Errorf("after kill -9 -1: %q, want 0 restarts and Running", out)
	}
	// Guarantee 2: a reserved port cannot be bound from the workspace.
	if out, err := c.Kubectl(ctx, "exec", "agent", "--", "/usr/local/bin/attacker", "bind-reserved", "0.0.0.0", "8080").CombinedOutput(); err != nil || !strings.Contains(string(out), "BLOCKED") || strings.Contains(string(out), "BREACH") {
		t.Errorf("bind of reserved port 8080 from the workspace: %v\n%s", err, out)
	}
	// Guarantee 3: an execSecure canary stays in its command.
	id := strings.TrimPrefix(kubectl("get", "pod", "agent", "-o", "jsonpath={.status.containerStatuses[0].containerID}"), "containerd://")
	sandboxctl, err := harness.RepoBinary("sandboxctl")
	if err != nil {
		t.Fatal(err)
	}
	secure := exec.CommandContext(ctx, sandboxctl, "-n", harness.CRINamespace, "exec-secure", id, "--env", "SST_CANARY", "--", "sh", "-c", `test "$SST_CANARY" = k8s-canary-73 && echo seen`)
	secure.Env = append(os.Environ(), "SST_CANARY=k8s-canary-73")
	if b, err := secure.CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "seen" {
		t.Errorf("execSecure in the pod: %v: %s", err, b)
	}
	if out := kubectl("exec", "agent", "--", "sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; env"); strings.Contains(out, "k8s-canary-73") {
		t.Error("the workspace sees the execSecure canary")
	}
	kubectl("delete", "pod", "agent", "--grace-period=2", "--wait=true")

	// hostUsers: false, a user namespace of the pod's own: the kubelet
	// gives it ids of its choosing, user code runs in it as uid 1000.
	applyPod("agent-userns", `apiVersion: v1
kind: Pod
metadata:
  name: agent-userns
spec:
  nodeName: `+harness.NodeName+`
  runtimeClassName: sandbox
  hostUsers: false
  containers:
    - name: agent
      image: `+harness.Image+`
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "echo control-plane-up; exec sleep 3600"]
`)
	out = kubectl("exec", "agent-userns", "--", "sh", "-c", "id -u; cat /proc/self/uid_map")
	if f := strings.Fields(out); len(f) != 4 || f[0] != "1000" || f[1] != "0" || f[2] == "0" {
		t.Errorf("exec in a hostUsers: false pod: %q, want uid 1000 and a mapping of ids 0.. to other host ids", out)
	}
	_, _ = c.Kubectl(ctx, "exec", "agent-userns", "--", "sh", "-c", "kill -9 -1").CombinedOutput()
	time.Sleep(3 * time.Second)
	if out := kubectl("get", "pod", "agent-userns", "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.phase}"); out != "0 Running" {
		t.Errorf("hostUsers: false pod after kill -9 -1: %q, want 0 restarts and Running", out)
	}
	kubectl("delete", "pod", "agent-userns", "--grace-period=2", "--wait=true")
}
