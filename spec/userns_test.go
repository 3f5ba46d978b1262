package spec

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var podMapping = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}}

// withUserNamespace is s in a user namespace joined at path ("" for a new
// one) with mappings.
func withUserNamespace(s *specs.Spec, path string, mappings []specs.LinuxIDMapping) *specs.Spec {
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: path})
	s.Linux.UIDMappings, s.Linux.GIDMappings = mappings, mappings
	return s
}

func TestHostID(t *testing.T) {
	two := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 1000}, {ContainerID: 1000, HostID: 500000, Size: 10}}
	for _, c := range []struct {
		mappings []specs.LinuxIDMapping
		id, want uint32
		ok       bool
	}{
		{nil, 42, 42, true},
		{two, 0, 100000, true},
		{two, 999, 100999, true},
		{two, 1000, 500000, true},
		{two, 1009, 500009, true},
		{two, 1010, 0, false},
		{[]specs.LinuxIDMapping{{ContainerID: 4294967295, HostID: 1, Size: 1}}, 4294967295, 1, true},
	} {
		if got, ok := HostID(c.mappings, c.id); got != c.want || ok != c.ok {
			t.Errorf("HostID(%v, %d) = %d, %v; want %d, %v", c.mappings, c.id, got, ok, c.want, c.ok)
		}
	}
}

func TestHostUser(t *testing.T) {
	s := withUserNamespace(bundle(t), "", podMapping)
	if uid, gid, err := HostUser(s, specs.User{UID: 0, GID: 5}); err != nil || uid != 300000 || gid != 300005 {
		t.Errorf("HostUser(0:5) = %d:%d %v, want 300000:300005", uid, gid, err)
	}
	if _, _, err := HostUser(s, specs.User{UID: 70000}); err == nil || !strings.Contains(err.Error(), "70000") {
		t.Errorf("unmapped user: %v", err)
	}
	if uid, gid, err := HostUser(bundle(t), specs.User{UID: 7, GID: 8}); err != nil || uid != 7 || gid != 8 {
		t.Errorf("no user namespace: %d:%d %v", uid, gid, err)
	}
}

// TestParseSettingsUserNamespace: a mapping that leaves out the workspace
// user or the reaper is refused at Create, naming the id; a pod's sandbox
// container, which has no workspace, only needs mappings at all.
func TestParseSettingsUserNamespace(t *testing.T) {
	if _, err := ParseSettings(withUserNamespace(bundle(t), "/proc/1/ns/user", podMapping), Limits{}); err != nil {
		t.Errorf("a pod's 65536 ids: %v", err)
	}
	small := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 500}}
	_, err := ParseSettings(withUserNamespace(bundle(t), "", small), Limits{})
	if err == nil || !strings.Contains(err.Error(), "uid 1000 (the workspace user") || !strings.Contains(err.Error(), "0:300000:500") {
		t.Errorf("workspace user unmapped: %v", err)
	}
	noReaper := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 2000}}
	if _, err := ParseSettings(withUserNamespace(bundle(t), "", noReaper), Limits{}); err == nil || !strings.Contains(err.Error(), "reaper") {
		t.Errorf("reaper unmapped: %v", err)
	}
	if _, err := ParseSettings(withUserNamespace(bundle(t), "/proc/1/ns/user", nil), Limits{}); err == nil || !strings.Contains(err.Error(), "mappings") {
		t.Errorf("no mappings: %v", err)
	}
	pause := withUserNamespace(bundle(t), "", small)
	pause.Annotations = map[string]string{criContainerType: "sandbox"}
	if _, err := ParseSettings(pause, Limits{}); err != nil {
		t.Errorf("pod sandbox container with a small mapping: %v", err)
	}
	st, err := ParseSettings(withUserNamespace(bundle(t), "", podMapping), Limits{NoCrossNamespacePrlimit: true})
	if err != nil || !st.SelfRlimits {
		t.Errorf("without CAP_SYS_RESOURCE in a user namespace: SelfRlimits %v, %v", st.SelfRlimits, err)
	}
	if st, _ := ParseSettings(bundle(t), Limits{NoCrossNamespacePrlimit: true}); st.SelfRlimits {
		t.Error("SelfRlimits without a user namespace")
	}
}

// TestWorkspaceUserNamespace: the workspace joins the control plane's user
// namespace by path, with no mappings of its own; with SelfRlimits it asks
// libcontainer for no rlimits.
func TestWorkspaceUserNamespace(t *testing.T) {
	s := withUserNamespace(bundle(t), "", podMapping)
	o := workspaceOptions(t, s)
	if _, err := WorkspaceSpec(s, o); err == nil {
		t.Error("built without the control plane's user namespace")
	}
	o.UserNS = "/proc/42/fd/9"
	w, err := WorkspaceSpec(s, o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(w.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: o.UserNS}) {
		t.Errorf("namespaces %v do not join %s", w.Linux.Namespaces, o.UserNS)
	}
	if w.Linux.UIDMappings != nil || w.Linux.GIDMappings != nil {
		t.Errorf("workspace has mappings of its own: %v %v", w.Linux.UIDMappings, w.Linux.GIDMappings)
	}
	if len(s.Linux.UIDMappings) == 0 {
		t.Error("WorkspaceSpec changed the bundle")
	}
	if len(w.Process.Rlimits) == 0 {
		t.Error("no rlimits for the reaper")
	}
	o.Settings.SelfRlimits = true
	if w, _ = WorkspaceSpec(s, o); len(w.Process.Rlimits) != 0 {
		t.Errorf("SelfRlimits: rlimits %v", w.Process.Rlimits)
	}
	if r, err := ReaperProcess(o.Settings, s.Process); err != nil || len(r.Rlimits) != 0 {
		t.Errorf("SelfRlimits: reaper rlimits %v %v", r.Rlimits, err)
	}
}

func TestWithUserNamespacePath(t *testing.T) {
	s := withUserNamespace(bundle(t), "", podMapping)
	j := WithUserNamespacePath(s, "/proc/1/fd/4")
	if ns, ok := BundleUserNamespace(j); !ok || ns.Path != "/proc/1/fd/4" || ns.UIDMappings != nil {
		t.Errorf("joined: %+v", ns)
	}
	if ns, _ := BundleUserNamespace(s); ns.Path != "" || len(ns.UIDMappings) != 1 {
		t.Errorf("input changed: %+v", ns)
	}
}
