package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The CRI side of a test daemon (StartCRI): containerd's CRI plugin on the
// daemon's own socket, with the sandbox runtime as the handler "sandbox"
// and runc as "runc" (the default), a CNI bridge of its own, the pause
// image pinned as the sandbox image, and crictl to drive it.

// CRINamespace is where CRI keeps its containers and images.
const CRINamespace = "k8s.io"

// PauseImage is the pinned sandbox image (versions.mk PAUSE_IMAGE).
const PauseImage = "docker.io/sandbox-shim/pause:test"

// SandboxHandler and RuncHandler are the CRI runtime handlers.
const (
	SandboxHandler = "sandbox"
	RuncHandler    = "runc"
)

// cniBinDir is where Debian's containernetworking-plugins installs;
// cniCacheDir where libcni caches results (not configurable in CRI).
const (
	cniBinDir   = "/usr/lib/cni"
	cniCacheDir = "/var/lib/cni"
)

// criSetup is what a CRI daemon changed on the host, to put back.
type criSetup struct {
	// network and bridge name the CNI network and its bridge device.
	network, bridge string
	// ipForward is net.ipv4.ip_forward as it was: the bridge plugin turns
	// it on.
	ipForward []byte
	// CgroupParent is the cgroup every pod of the tests is placed under.
	cgroupParent string
	// cniCache tells whether libcni's cache dir was there before.
	cniCache bool
	// namespaceCgroup tells whether a /k8s.io cgroup was there before.
	namespaceCgroup bool
}

// StartCRI starts a test daemon with CRI (see above). Pods must use
// CgroupParent as their cgroup parent, so that Stop finds what they left.
func StartCRI(ctx context.Context) (*Daemon, error) {
	for _, p := range []string{filepath.Join(cniBinDir, "bridge"), filepath.Join(cniBinDir, "host-local"), filepath.Join(cniBinDir, "loopback")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("CNI plugin %s missing (Debian containernetworking-plugins, `make deps`): %w", p, err)
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, "_output", "bin", "crictl")); err != nil {
		return nil, fmt.Errorf("crictl missing (run `make deps`): %w", err)
	}
	pauseTar := filepath.Join(root, "_output", "pause.tar")
	if _, err := os.Stat(pauseTar); err != nil {
		return nil, fmt.Errorf("%s missing (run `make image`): %w", pauseTar, err)
	}
	ipForward, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return nil, err
	}
	seq := daemonSeq.Add(1)
	cri := &criSetup{
		network:      fmt.Sprintf("sst-%d-%d", os.Getpid(), seq),
		bridge:       fmt.Sprintf("sst%d", (os.Getpid()*8+int(seq))%100000),
		ipForward:    ipForward,
		cgroupParent: fmt.Sprintf("/sst-cri-%d-%d", os.Getpid(), seq),
	}
	if _, err := os.Stat(cniCacheDir); err == nil {
		cri.cniCache = true
	}
	cri.namespaceCgroup = len(cgroupTree(CRINamespace)) > 0
	d, err := start(ctx, CRINamespace, cri)
	if err != nil {
		return nil, err
	}
	if err := d.importImageNamed(ctx, pauseTar, PauseImage); err != nil {
		_ = d.Stop()
		return nil, err
	}
	if err := os.WriteFile(d.crictlConfig(), []byte(fmt.Sprintf(
		"runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", d.Address, d.Address)), 0o600); err != nil {
		_ = d.Stop()
		return nil, err
	}
	return d, nil
}

// StartCRITest starts a CRI test daemon for t (StartCRI) and stops it when
// t ends; a daemon that cannot start fails t.
func StartCRITest(ctx context.Context, t testing.TB) *Daemon {
	t.Helper()
	d, err := StartCRI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
	})
	return d
}

// CgroupParent is the cgroup the tests' pods are placed under (CRI mode).
func (d *Daemon) CgroupParent() string {
	if d.cri == nil {
		return ""
	}
	return d.cri.cgroupParent
}

func (d *Daemon) crictlConfig() string { return filepath.Join(d.Dir, "crictl.yaml") }

// CrictlPath and CrictlConfigPath are crictl and its config for this daemon, for a
// command run under a pty.
func (d *Daemon) CrictlPath() string       { return filepath.Join(d.root, "_output", "bin", "crictl") }
func (d *Daemon) CrictlConfigPath() string { return d.crictlConfig() }

// Crictl is crictl against this daemon's CRI.
func (d *Daemon) Crictl(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(d.root, "_output", "bin", "crictl"), append([]string{"--config", d.crictlConfig()}, args...)...)
	cmd.Env = d.env
	return cmd
}

// writeCRIConfig is the config's CRI part and the CNI network's conflist.
func (d *Daemon) writeCRIConfig(b *strings.Builder) error {
	cniDir := filepath.Join(d.Dir, "cni")
	if err := os.MkdirAll(cniDir, 0o700); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.231.%d.0/24"}]], "dataDir": %q}
    }
  ]
}
`, d.cri.network, d.cri.bridge, daemonSeq.Load()%200, filepath.Join(d.Dir, "ipam"))
	if err := os.WriteFile(filepath.Join(cniDir, "10-sst.conflist"), []byte(conflist), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(b, "\n[plugins.'io.containerd.grpc.v1.cri']\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n")
	fmt.Fprintf(b, "\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = %q\n", snapshotter)
	fmt.Fprintf(b, "  [plugins.'io.containerd.cri.v1.images'.pinned_images]\n    sandbox = %q\n", PauseImage)
	// Read at each pull, so MirrorRegistry can add hosts to a running daemon.
	fmt.Fprintf(b, "  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = %q\n", d.registryHostsDir())
	// No CAP_SYS_RESOURCE here (see ENVIRONMENT): oom_score_adj cannot go
	// below the daemon's. Pod network namespaces under the private state.
	fmt.Fprintf(b, "\n[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n  enable_cdi = false\n")
	fmt.Fprintf(b, "  [plugins.'io.containerd.cri.v1.runtime'.cni]\n    bin_dirs = [%q]\n    conf_dir = %q\n    max_conf_num = 1\n", cniBinDir, cniDir)
	fmt.Fprintf(b, "  [plugins.'io.containerd.cri.v1.runtime'.containerd]\n    default_runtime_name = %q\n", RuncHandler)
	fmt.Fprintf(b, "    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s]\n      runtime_type = \"io.containerd.runc.v2\"\n", RuncHandler)
	// runc's state stays in the daemon's dir, never a host CRI's.
	fmt.Fprintf(b, "      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s.options]\n        Root = %q\n", RuncHandler, filepath.Join(d.Dir, "runc"))
	fmt.Fprintf(b, "    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s]\n      runtime_type = %q\n", SandboxHandler, SandboxRuntime)
	b.WriteString("      pod_annotations = [\"io.sandbox.*\"]\n      container_annotations = [\"io.sandbox.*\"]\n")
	return nil
}

func (d *Daemon) registryHostsDir() string { return filepath.Join(d.Dir, "certs.d") }

// MirrorRegistry makes CRI pull every image named after one of hosts from
// the plain-HTTP registry at addr (host:port) instead, and only from there:
// a test never reaches a public registry.
func (d *Daemon) MirrorRegistry(addr string, hosts ...string) error {
	for _, host := range hosts {
		dir := filepath.Join(d.registryHostsDir(), host)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		config := fmt.Sprintf("server = %q\n", "http://"+addr)
		if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(config), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// stopCRI removes every pod through CRI, so that CNI releases what it set
// up, before the daemon goes.
func (d *Daemon) stopCRI() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := d.Crictl(ctx, "pods", "-q").Output()
	if err != nil {
		return fmt.Errorf("crictl pods: %w", err)
	}
	var errs []error
	for _, id := range strings.Fields(string(out)) {
		if b, err := d.Crictl(ctx, "stopp", id).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("crictl stopp %s: %v: %s", id, err, bytes.TrimSpace(b)))
		}
		if b, err := d.Crictl(ctx, "rmp", "-f", id).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("crictl rmp %s: %v: %s", id, err, bytes.TrimSpace(b)))
		}
	}
	return errors.Join(errs...)
}

// restoreCRIHost puts back what the CNI network changed: its bridge, its
// cached results, ip_forward.
func (d *Daemon) restoreCRIHost() error {
	var errs []error
	if _, err := os.Stat(filepath.Join("/sys/class/net", d.cri.bridge)); err == nil {
		if b, err := exec.Command("ip", "link", "del", d.cri.bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %v: %s", d.cri.bridge, err, b))
		}
	}
	// libcni caches each attachment's result under /var/lib/cni, named
	// after the network.
	cached, _ := filepath.Glob(filepath.Join(cniCacheDir, "results", d.cri.network+"-*"))
	for _, p := range cached {
		errs = append(errs, os.Remove(p))
	}
	if !d.cri.cniCache {
		_ = os.Remove(filepath.Join(cniCacheDir, "results"))
		_ = os.Remove(cniCacheDir)
	}
	if now, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil && !bytes.Equal(now, d.cri.ipForward) {
		errs = append(errs, os.WriteFile("/proc/sys/net/ipv4/ip_forward", d.cri.ipForward, 0o644))
	}
	return errors.Join(errs...)
}
