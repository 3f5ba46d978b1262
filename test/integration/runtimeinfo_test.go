package integration

import (
	"runtime"
	"slices"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// TestRuntimeInfo asks containerd for the runtime's info the way containerd's
// own integration/client TestRuntimeInfo and CRI do (the introspection
// service, which runs the shim binary with -info): the OCI features must be
// there, decode as features.Features, and describe a runc-compatible runtime.
func TestRuntimeInfo(t *testing.T) {
	ctx := testCtx(t)
	began := time.Now()
	rti, err := d.Client.RuntimeInfo(ctx, runtimeName, nil)
	if err != nil {
		t.Fatalf("runtime info: %v", err)
	}
	// containerd runs -info on demand (CRI at every start); it must stay cheap.
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("runtime info took %v", took)
	}
	if rti.Name != runtimeName {
		t.Errorf("runtime name %q, want %q", rti.Name, runtimeName)
	}
	if rti.Version.Version == "" {
		t.Error("runtime info has no version")
	}
	feat, ok := rti.Features.(*features.Features)
	if !ok {
		t.Fatalf("features are %T, want *features.Features", rti.Features)
	}
	if feat.OCIVersionMin != "1.0.0" || feat.OCIVersionMax != specs.Version {
		t.Errorf("OCI versions %q..%q, want 1.0.0..%s", feat.OCIVersionMin, feat.OCIVersionMax, specs.Version)
	}
	// "rro" is what containerd's TestRuntimeInfo and CRI look for.
	for _, o := range []string{"rro", "rbind", "ro", "nosuid", "nodev", "noexec", "rprivate", "tmpcopyup"} {
		if !slices.Contains(feat.MountOptions, o) {
			t.Errorf("mount option %q missing from %v", o, feat.MountOptions)
		}
	}
	for _, h := range []string{"createRuntime", "createContainer", "startContainer", "poststart", "poststop"} {
		if !slices.Contains(feat.Hooks, h) {
			t.Errorf("hook %q missing from %v", h, feat.Hooks)
		}
	}
	l := feat.Linux
	if l == nil {
		t.Fatal("features have no linux section")
	}
	for _, ns := range []string{"cgroup", "ipc", "mount", "network", "pid", "uts"} {
		if !slices.Contains(l.Namespaces, ns) {
			t.Errorf("namespace %q missing from %v", ns, l.Namespaces)
		}
	}
	for _, c := range []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"} {
		if !slices.Contains(l.Capabilities, c) {
			t.Errorf("capability %q missing from %v", c, l.Capabilities)
		}
	}
	if l.Cgroup == nil || !isTrue(l.Cgroup.V1) || !isTrue(l.Cgroup.V2) {
		t.Errorf("cgroup features %+v, want v1 and v2", l.Cgroup)
	}
	s := l.Seccomp
	if s == nil || !isTrue(s.Enabled) {
		t.Fatalf("seccomp not enabled: %+v", s)
	}
	if !slices.Contains(s.Actions, "SCMP_ACT_ERRNO") || !slices.Contains(s.Operators, "SCMP_CMP_MASKED_EQ") {
		t.Errorf("seccomp actions %v / operators %v incomplete", s.Actions, s.Operators)
	}
	if arch, ok := map[string]string{"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}[runtime.GOARCH]; ok && !slices.Contains(s.Archs, arch) {
		t.Errorf("seccomp archs %v lack the host's %s", s.Archs, arch)
	}
	if !slices.Contains(s.SupportedFlags, "SECCOMP_FILTER_FLAG_TSYNC") {
		t.Errorf("seccomp supported flags %v lack TSYNC", s.SupportedFlags)
	}
	for _, a := range []string{"io.github.seccomp.libseccomp.version", "org.opencontainers.runc.version"} {
		if feat.Annotations[a] == "" {
			t.Errorf("no %s in annotations %v", a, feat.Annotations)
		}
	}

	t.Run("only-what-io.sandbox-supports", func(t *testing.T) {
		skipUnderRunc(t, "runc supports time namespaces, systemd cgroups and net devices")
		// CRI gives pods user namespaces (hostUsers: false) only to a
		// runtime that has both.
		if !slices.Contains(l.Namespaces, "user") {
			t.Errorf("user namespace not advertised: %v", l.Namespaces)
		}
		if m := l.MountExtensions; m == nil || m.IDMap == nil || !isTrue(m.IDMap.Enabled) {
			t.Error("idmap mounts not advertised")
		}
		// The workspace would not share a time namespace's offsets.
		if slices.Contains(l.Namespaces, "time") {
			t.Errorf("time namespace advertised: %v", l.Namespaces)
		}
		if isTrue(l.Cgroup.Systemd) || isTrue(l.Cgroup.SystemdUser) {
			t.Errorf("systemd cgroup driver advertised: %+v", l.Cgroup)
		}
		if n := l.NetDevices; n != nil && isTrue(n.Enabled) {
			t.Error("net devices advertised")
		}
		if _, ok := feat.Annotations["org.opencontainers.runc.checkpoint.enabled"]; ok {
			t.Errorf("checkpoint advertised in %v", feat.Annotations)
		}
	})
}

func isTrue(b *bool) bool { return b != nil && *b }
