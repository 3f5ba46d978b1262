// Package attack runs the threat catalogue's "taking down the control plane" attacks
// (/work/shared/THREATS.md section 1) as user code against the real shim: every attack is a
// containerd exec into a sandbox whose control plane is test/agent (an HTTP server on the
// reserved ports), and every attack is
// followed by checks from outside that the control plane still serves, is the same process,
// and that the sandbox still takes new execs.
package attack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// attackImage holds busybox, the attacker at /usr/local/bin/attacker and /www/index.html.
const attackImage = "docker.io/sandbox-shim/attack:latest"

// controlPlaneBody is what the control plane serves.
const controlPlaneBody = "control-plane-ok"

// d is the one daemon shared by every test; tests run sequentially because a fork bomb or
// a memory hog would disturb the timing of anything running next to it.
var d *harness.Daemon

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, "attack", 3*time.Minute, setup))
}

// setup makes daemon the suite's d, and builds and imports the attack image into it.
func setup(ctx context.Context, daemon *harness.Daemon) error {
	d = daemon
	if _, err := harness.ShimBinary(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "attack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	image, err := buildImage(ctx, tmp)
	if err != nil {
		return fmt.Errorf("build attack image: %w", err)
	}
	if err := importImage(ctx, image); err != nil {
		return fmt.Errorf("import attack image: %w", err)
	}
	fmt.Fprintf(os.Stderr, "attack suite against %s (containerd dir %s)\n", harness.SandboxRuntime, d.Dir)
	return nil
}

// buildImage builds the static attacker and the attack image into dir, so the suite never
// writes into the shared _output.
func buildImage(ctx context.Context, dir string) (string, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err
	}
	attacker := filepath.Join(dir, "attacker")
	agent := filepath.Join(dir, "agent")
	for bin, pkg := range map[string]string{attacker: "./test/attacker", agent: "./test/agent"} {
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %w: %s", pkg, err, out)
		}
	}
	index := filepath.Join(dir, "index.html")
	if err := os.WriteFile(index, []byte(controlPlaneBody), 0o644); err != nil {
		return "", fmt.Errorf("write index.html: %w", err)
	}
	// localhost both ways, as most images have it (the busybox image has no /etc/hosts).
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644); err != nil {
		return "", fmt.Errorf("write hosts: %w", err)
	}
	tar := filepath.Join(dir, "attack-image.tar")
	img := exec.CommandContext(ctx, "go", "run", "./test/image", "-o", tar, "-name", attackImage,
		"-add", attacker+":/usr/local/bin/attacker", "-add", agent+":/usr/local/bin/agent", "-add", index+":/www/index.html",
		"-add", hosts+":/etc/hosts")
	img.Dir = root
	if out, err := img.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build image: %w: %s", err, out)
	}
	return tar, nil
}

// importImage imports and unpacks the attack image, so no test pays for unpacking.
func importImage(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx = namespaces.WithNamespace(ctx, d.Namespace)
	imgs, err := d.Client.Import(ctx, f)
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	for _, img := range imgs {
		if err := client.NewImage(d.Client, img).Unpack(ctx, "overlayfs"); err != nil {
			return fmt.Errorf("unpack %s: %w", img.Name, err)
		}
	}
	if _, err := d.Client.GetImage(ctx, attackImage); err != nil {
		return fmt.Errorf("get %s after import: %w", attackImage, err)
	}
	return nil
}
