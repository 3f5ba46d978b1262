package attack

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/client"
)

// TestSecretNoForcedFallback: user code fills the workspace's pids, so no
// secure container can be built, hoping that a call allowing the insecure
// fallback then runs its secret in the workspace. The call fails
// (Unavailable) instead; nothing ran, and the audit trail records no
// unisolated call. A sandbox where secure execution is off by annotation
// still takes the fallback (client_test covers it).
func TestSecretNoForcedFallback(t *testing.T) {
	ctx := testCtx(t)
	sb := newSandbox(t, ctx, controlPlaneArgs, oci.WithAnnotations(map[string]string{
		api.AnnotationPidsLimit: "40", api.AnnotationSecureExecPool: "0",
	}))
	c := client.ForSandbox(d.Namespace, sb.id)
	t.Cleanup(func() { _ = c.Close() })
	if ok, err := c.HasSecureExecution(ctx); err != nil || !ok {
		t.Fatalf("secure execution before the attack: %v %v", ok, err)
	}
	// Two execs, each up to its share of the pids: together all of them.
	for range 2 {
		sb.background(t, ctx, "sh", "-c", "while :; do setsid sleep 1000 & done 2>/dev/null")
	}
	if !poll(20*time.Second, func() bool {
		return sb.cgroupFile("pids", "pids.current") == sb.cgroupFile("pids", "pids.max")
	}) {
		t.Fatalf("the workspace's pids never filled: %s of %s", sb.cgroupFile("pids", "pids.current"), sb.cgroupFile("pids", "pids.max"))
	}
	canary := newCanary(t)
	res, err := c.ExecSecure(ctx, client.Shell(`echo "$SST_CANARY" > /tmp/leak; echo ran`), client.SecureOptions{
		Env: map[string]string{canaryKey: canary}, AllowInsecureFallback: true, Timeout: 20 * time.Second,
	})
	if err == nil {
		t.Fatalf("BREACH: execSecure ran (isolated=%v, warnings %v, stdout %q) while no secure container could be built", res.Isolated, res.Warnings, res.Stdout)
	}
	if connect.CodeOf(err) != connect.CodeUnavailable || strings.Contains(err.Error(), canary) {
		t.Errorf("error %v: want unavailable, without the value", err)
	}
	records, err := c.Audit(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		if !r.Isolated {
			t.Errorf("BREACH: an unisolated call in the audit trail: %v", r)
		}
	}
}
