package sandbox

import (
	"context"
	"fmt"

	"github.com/containerd/log"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/internal/secureexec"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// startRunner starts the execSecure runner of a workspace just built:
// its secure containers share the workspace's namespaces paths, settings
// and user cgroup. A sandbox annotated io.sandbox.secure-exec=disabled
// still gets one, which fails closed and keeps the audit trail.
func (sb *Sandbox) startRunner(ctx context.Context, settings spec.Settings) (*secureexec.Runner, error) {
	cfg := secureexec.Config{
		SandboxID:        sb.ID,
		Namespace:        sb.Namespace,
		StateRoot:        StateRoot(sb.Bundle),
		Bundle:           sb.Bundle,
		BundleSpec:       sb.bundleSpec,
		Settings:         settings,
		NetNS:            sb.namespaces.path(sb.namespaces.network),
		UTSNS:            sb.namespaces.path(sb.namespaces.uts),
		UserNS:           sb.namespaces.path(sb.namespaces.user),
		UserCgroup:       sb.cgroupPaths.User,
		Reaper:           sb.reaperBinary,
		HostMemory:       sb.hostMemory,
		JoinedIPCSysctls: sb.joinedIPCSysctls,
		PoolSize:         settings.SecureExecPoolSize,
		AuditPath:        auditPath(sb.Namespace, sb.ID),
		Audit:            sb.API().audit,
	}
	if settings.SecureExecDisabled {
		cfg.Disabled = fmt.Sprintf("disabled for this sandbox by %s=disabled", api.AnnotationSecureExec)
	}
	r, err := secureexec.New(context.WithoutCancel(ctx), cfg)
	if err != nil {
		err = fmt.Errorf("secure execution: %w", err)
		log.G(ctx).WithError(err).WithField("id", sb.ID).Warn("execSecure unavailable: calls fail unless they allow the insecure fallback")
		return nil, err
	}
	return r, nil
}

// closeRunner kills the workspace's secure containers, in flight or
// pooled, once: before the workspace (and so the user cgroup) goes.
func (ws *workspace) closeRunner() {
	ws.runnerOnce.Do(func() {
		if ws.runner != nil {
			ws.runner.Close()
		}
	})
}

// isReady tells whether the workspace was built (or failed to be).
func isReady(ws *workspace) bool {
	select {
	case <-ws.ready:
		return true
	default:
		return false
	}
}
