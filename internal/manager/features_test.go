package manager

import (
	"context"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// featuresTypeURL is what containerd's client, task manager and CRI decode
// RuntimeInfo.Features by.
const featuresTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"

func TestBuildFeaturesLeavesOutWhatTheShimRefuses(t *testing.T) {
	f := buildFeatures(nil, "", "")
	if slices.Contains(f.Linux.Namespaces, "time") {
		t.Errorf("time namespace advertised: %v", f.Linux.Namespaces)
	}
	// CRI gives pods user namespaces only with both.
	if !slices.Contains(f.Linux.Namespaces, "user") {
		t.Errorf("user namespace not advertised: %v", f.Linux.Namespaces)
	}
	// Everything else libcontainer knows is kept.
	for _, ns := range specconv.KnownNamespaces() {
		if !slices.Contains(unsupportedNamespaces, ns) && !slices.Contains(f.Linux.Namespaces, ns) {
			t.Errorf("namespace %q missing: %v", ns, f.Linux.Namespaces)
		}
	}
	if e := f.Linux.MountExtensions.IDMap.Enabled; e == nil || !*e {
		t.Errorf("idmap mounts: %v, want enabled", e)
	}
	if e := f.Linux.NetDevices.Enabled; e == nil || *e {
		t.Errorf("net devices: %v, want explicitly disabled", e)
	}
	cg := f.Linux.Cgroup
	if !*cg.V1 || !*cg.V2 || *cg.Systemd || *cg.SystemdUser {
		t.Errorf("cgroup features %+v, want cgroupfs v1 and v2 only", cg)
	}
	if f.Linux.Seccomp != nil {
		t.Errorf("seccomp advertised without seccomp support: %+v", f.Linux.Seccomp)
	}
	if f.Annotations != nil {
		t.Errorf("annotations %v without any version known", f.Annotations)
	}
	if !slices.Equal(f.PotentiallyUnsafeConfigAnnotations, []string{"bundle"}) {
		t.Errorf("potentially unsafe annotations %v", f.PotentiallyUnsafeConfigAnnotations)
	}
}

func TestBuildFeaturesKeepsRuncConversion(t *testing.T) {
	f := buildFeatures(nil, "2.5.4", "1.4.3")
	if f.OCIVersionMin != "1.0.0" || f.OCIVersionMax != specs.Version {
		t.Errorf("OCI versions %s..%s", f.OCIVersionMin, f.OCIVersionMax)
	}
	// The control plane's mounts go through specconv: its options, rro included.
	if !slices.Equal(f.MountOptions, specconv.KnownMountOptions()) || !slices.Contains(f.MountOptions, "rro") {
		t.Errorf("mount options %v", f.MountOptions)
	}
	if !slices.Contains(f.Hooks, "createRuntime") || !slices.Contains(f.Linux.Capabilities, "CAP_SYS_ADMIN") {
		t.Errorf("hooks %v, capabilities %v", f.Hooks, f.Linux.Capabilities)
	}
	want := map[string]string{
		"org.opencontainers.runc.version":      "1.4.3",
		"io.github.seccomp.libseccomp.version": "2.5.4",
	}
	if !reflect.DeepEqual(f.Annotations, want) {
		t.Errorf("annotations %v, want %v", f.Annotations, want)
	}
}

func TestSeccompFeaturesFollowTheBuild(t *testing.T) {
	sc, version := seccompFeatures()
	if !seccomp.Enabled {
		if sc != nil || version != "" {
			t.Errorf("seccomp %+v %q without seccomp support", sc, version)
		}
		return
	}
	if sc == nil || !*sc.Enabled || !slices.Contains(sc.Actions, "SCMP_ACT_ERRNO") || len(sc.Archs) == 0 {
		t.Fatalf("seccomp features %+v", sc)
	}
	if version == "" || strings.HasPrefix(version, "0.") {
		t.Errorf("libseccomp version %q", version)
	}
}

func TestModuleVersion(t *testing.T) {
	info := &debug.BuildInfo{Deps: []*debug.Module{
		{Path: "github.com/other/module", Version: "v9.9.9"},
		{Path: runcModule, Version: "v1.4.3"},
		{Path: "github.com/replaced/module", Version: "v1.0.0", Replace: &debug.Module{Path: "github.com/fork/module", Version: "v1.0.1"}},
	}}
	for module, want := range map[string]string{
		runcModule:                   "1.4.3",
		"github.com/replaced/module": "1.0.1",
		"example.com/not-built-in":   "",
	} {
		if got := moduleVersion(info, module); got != want {
			t.Errorf("version of %s: %q, want %q", module, got, want)
		}
	}
}

// TestInfo checks what containerd receives: name, version, and features
// under the type URL containerd decodes, quickly.
func TestInfo(t *testing.T) {
	began := time.Now()
	info, err := New("io.sandbox.v1").Info(context.Background(), strings.NewReader(""))
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("info took %v", took)
	}
	if info.Name != "io.sandbox.v1" || info.Version.GetVersion() != Version {
		t.Errorf("name %q version %v", info.Name, info.Version)
	}
	if info.Features == nil {
		t.Fatal("no features")
	}
	if info.Features.GetTypeUrl() != featuresTypeURL {
		t.Errorf("features type URL %q, want %q", info.Features.GetTypeUrl(), featuresTypeURL)
	}
	v, err := typeurl.UnmarshalAny(info.Features)
	if err != nil {
		t.Fatalf("decode features: %v", err)
	}
	f, ok := v.(*features.Features)
	if !ok {
		t.Fatalf("features decode as %T", v)
	}
	if !reflect.DeepEqual(f, ociFeatures()) {
		t.Errorf("decoded features %+v differ from ociFeatures", f)
	}
}
