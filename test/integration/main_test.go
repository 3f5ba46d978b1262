// Package integration runs the task API of a containerd runtime (our shim by default) against
// a private containerd started by test/harness.
//
// SANDBOX_TEST_RUNTIME selects the runtime; io.containerd.runc.v2 validates the suite itself.
package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

var (
	// d is the one daemon shared by every test; tests run sequentially because some of them
	// restart it or count shim processes.
	d *harness.Daemon
	// runtimeName is the containerd runtime under test.
	runtimeName string
)

func TestMain(m *testing.M) {
	runtimeName = os.Getenv("SANDBOX_TEST_RUNTIME")
	if runtimeName == "" {
		runtimeName = harness.SandboxRuntime
	}
	os.Exit(harness.RunTests(m, "integration", 2*time.Minute, func(ctx context.Context, daemon *harness.Daemon) error {
		d = daemon
		if err := ensureUnpacked(ctx); err != nil {
			return fmt.Errorf("prepare image: %w", err)
		}
		fmt.Fprintf(os.Stderr, "runtime under test: %s (containerd dir %s)\n", runtimeName, d.Dir)
		return nil
	}))
}

// ensureUnpacked makes sure the test image has a snapshot, so the first test does not pay
// for unpacking inside its own timeout.
func ensureUnpacked(ctx context.Context) error {
	ctx = namespaces.WithNamespace(ctx, d.Namespace)
	img, err := d.Client.GetImage(ctx, harness.Image)
	if err != nil {
		return fmt.Errorf("get image %s: %w", harness.Image, err)
	}
	ok, err := img.IsUnpacked(ctx, "")
	if err != nil {
		return fmt.Errorf("check unpacked: %w", err)
	}
	if !ok {
		if err := img.Unpack(ctx, ""); err != nil {
			return fmt.Errorf("unpack %s: %w", harness.Image, err)
		}
	}
	return nil
}
