package manager

import (
	"fmt"
	"runtime/debug"
	"slices"
	"strings"

	// Registers the type URL containerd and CRI decode features.Features by
	// (types.containerd.io/opencontainers/runtime-spec/1/features/Features).
	_ "github.com/containerd/containerd/v2/core/runtime"
	"github.com/opencontainers/runc/libcontainer/capabilities"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/specconv"
	runcfeatures "github.com/opencontainers/runc/types/features"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// runcModule is the module whose libcontainer runs the containers.
const runcModule = "github.com/opencontainers/runc"

// unsupportedNamespaces are namespaces libcontainer knows that this shim
// cannot give a bundle.
var unsupportedNamespaces = []string{
	// The workspace gets none: user code would not see the offsets, and
	// with offsets the workspace cannot even be built, so no exec runs.
	string(specs.TimeNamespace),
}

// ociFeatures is what `runc features` reports, cut down to what this shim
// does with a bundle. The control plane is converted by libcontainer's
// specconv exactly as runc converts it, so its lists (mount options
// including rro, hooks, capabilities, memory policies, seccomp) are runc's;
// what the workspace or the shim itself cannot follow is left out.
func ociFeatures() *features.Features {
	sc, libseccompVersion := seccompFeatures()
	return buildFeatures(sc, libseccompVersion, builtVersion(runcModule))
}

// buildFeatures is ociFeatures without the host and build queries: sc is
// nil when seccomp is not compiled in, runcVersion "" when unknown.
func buildFeatures(sc *features.Seccomp, libseccompVersion, runcVersion string) *features.Features {
	enabled, disabled := true, false
	f := &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		// The control plane's hooks run as under runc; the workspace runs none.
		Hooks:        configs.KnownHookNames(),
		MountOptions: specconv.KnownMountOptions(),
		Linux: &features.Linux{
			Namespaces:   supportedNamespaces(specconv.KnownNamespaces()),
			Capabilities: capabilities.KnownCapabilities(),
			Cgroup: &features.Cgroup{
				V1: &enabled,
				V2: &enabled,
				// cgroupsPath must be a cgroupfs path (spec.Cgroups).
				Systemd:     &disabled,
				SystemdUser: &disabled,
				Rdma:        &enabled,
			},
			Seccomp: sc,
			// libcontainer applies the bundle's profile and labels to the
			// control plane as under runc; user code has the workspace's
			// own confinement.
			Apparmor: &features.Apparmor{Enabled: &enabled},
			Selinux:  &features.Selinux{Enabled: &enabled},
			// libcontainer sets RDT up from the bundle for both containers.
			IntelRdt: &features.IntelRdt{Enabled: &enabled, Schemata: &enabled, Monitoring: &enabled},
			MemoryPolicy: &features.MemoryPolicy{
				Modes: specconv.KnownMemoryPolicyModes(),
				Flags: specconv.KnownMemoryPolicyFlags(),
			},
			// containerd gives CRI user namespaces only with idmap mounts.
			// libcontainer makes them for the control plane as under runc;
			// user containers keep the bundle's mounts with their mappings,
			// in the control plane's user namespace.
			MountExtensions: &features.MountExtensions{IDMap: &features.IDMap{Enabled: &enabled}},
			// The workspace, in the control plane's network namespace, would
			// try to move the devices a second time and fail to build.
			NetDevices: &features.NetDevices{Enabled: &disabled},
		},
		// libcontainer hands this annotation to hooks as the bundle path.
		// Checkpointing (org.criu.config) and systemd properties are not
		// supported, so their annotations are never read.
		PotentiallyUnsafeConfigAnnotations: []string{"bundle"},
	}
	annotations := map[string]string{}
	// The runc release whose libcontainer converts and runs the bundle: the
	// annotation exists for runtimes to name their most compatible runc.
	// No checkpoint annotation: checkpoint and restore are not implemented.
	if runcVersion != "" {
		annotations[runcfeatures.AnnotationRuncVersion] = runcVersion
	}
	if libseccompVersion != "" {
		annotations[runcfeatures.AnnotationLibseccompVersion] = libseccompVersion
	}
	if len(annotations) > 0 {
		f.Annotations = annotations
	}
	return f
}

// supportedNamespaces drops unsupportedNamespaces from known.
func supportedNamespaces(known []string) []string {
	return slices.DeleteFunc(slices.Clone(known), func(ns string) bool {
		return slices.Contains(unsupportedNamespaces, ns)
	})
}

// seccompFeatures is libcontainer's seccomp support in this build: nil
// without the seccomp build tag. SupportedFlags asks the kernel and
// libseccomp, cheaply.
func seccompFeatures() (*features.Seccomp, string) {
	if !seccomp.Enabled {
		return nil, ""
	}
	enabled := true
	sc := &features.Seccomp{
		Enabled:        &enabled,
		Actions:        seccomp.KnownActions(),
		Operators:      seccomp.KnownOperators(),
		Archs:          seccomp.KnownArchs(),
		KnownFlags:     seccomp.KnownFlags(),
		SupportedFlags: seccomp.SupportedFlags(),
	}
	major, minor, patch := seccomp.Version()
	return sc, fmt.Sprintf("%d.%d.%d", major, minor, patch)
}

// builtVersion is the version of module in this binary ("1.4.3"), "" when
// the build carries no module information (as in test binaries).
func builtVersion(module string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return moduleVersion(info, module)
}

// moduleVersion finds module among info's dependencies, following a
// replacement.
func moduleVersion(info *debug.BuildInfo, module string) string {
	for _, dep := range info.Deps {
		if dep.Path == module {
			if dep.Replace != nil {
				dep = dep.Replace
			}
			return strings.TrimPrefix(dep.Version, "v")
		}
	}
	return ""
}
