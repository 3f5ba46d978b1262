package spec

import (
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/api"
)

// UserNamespace is the user namespace a bundle puts the sandbox in: a CRI
// pod's (joined by path, its mappings given too), or one libcontainer
// makes from the mappings (`ctr run --uidmap`).
type UserNamespace struct {
	// Path is the namespace the bundle joins, "" when it asks for a new one.
	Path string
	// UIDMappings and GIDMappings map container ids to host ids.
	UIDMappings, GIDMappings []specs.LinuxIDMapping
}

// BundleUserNamespace is the bundle's user namespace; false when the
// sandbox runs in the host's.
func BundleUserNamespace(s *specs.Spec) (UserNamespace, bool) {
	if s == nil || s.Linux == nil {
		return UserNamespace{}, false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			return UserNamespace{Path: ns.Path, UIDMappings: s.Linux.UIDMappings, GIDMappings: s.Linux.GIDMappings}, true
		}
	}
	return UserNamespace{}, false
}

// HostID is the host id of container id id under mappings; false when
// the mappings name mappings but not id. No mappings is the host's own
// namespace: every id is itself.
func HostID(mappings []specs.LinuxIDMapping, id uint32) (uint32, bool) {
	if len(mappings) == 0 {
		return id, true
	}
	for _, m := range mappings {
		if id >= m.ContainerID && uint64(id) < uint64(m.ContainerID)+uint64(m.Size) {
			return m.HostID + (id - m.ContainerID), true
		}
	}
	return 0, false
}

// HostUser is the host uid and gid of user u of the bundle's container:
// what owns, on the host, what the control plane must open (its API
// directory and socket).
func HostUser(s *specs.Spec, u specs.User) (uid, gid uint32, err error) {
	ns, ok := BundleUserNamespace(s)
	if !ok {
		return u.UID, u.GID, nil
	}
	uid, uidOK := HostID(ns.UIDMappings, u.UID)
	gid, gidOK := HostID(ns.GIDMappings, u.GID)
	if !uidOK || !gidOK {
		return 0, 0, fmt.Errorf("user %d:%d is not mapped by the bundle's user namespace (uids %s, gids %s)",
			u.UID, u.GID, formatMappings(ns.UIDMappings), formatMappings(ns.GIDMappings))
	}
	return uid, gid, nil
}

// checkUserNamespace refuses, at Create, a user namespace whose mappings
// leave out an id the sandbox's own containers run as: the workspace's
// user and group (and so every secure exec's) and the reaper's, which
// user code never gets. Without the check the workspace would fail at its
// first exec instead. A pod's sandbox (pause) container has no workspace.
// The mappings must be in the bundle, also when it joins a namespace by
// path.
func checkUserNamespace(s *specs.Spec, st Settings) error {
	ns, ok := BundleUserNamespace(s)
	if !ok {
		return nil
	}
	// The shim maps ids itself (the API directory's owner), from the
	// bundle: CRI and ctr give the mappings with a namespace's path too.
	if len(ns.UIDMappings) == 0 || len(ns.GIDMappings) == 0 {
		return fmt.Errorf("the bundle's user namespace comes without uid and gid mappings (linux.uidMappings, linux.gidMappings)")
	}
	if st.PodSandbox {
		return nil
	}
	reaper := ReaperUID(st)
	for _, id := range []struct {
		what     string
		mappings []specs.LinuxIDMapping
		id       uint32
	}{
		{"uid " + fmt.Sprint(st.UID) + " (the workspace user; " + api.AnnotationUser + " sets it)", ns.UIDMappings, st.UID},
		{"gid " + fmt.Sprint(st.GID) + " (the workspace group; " + api.AnnotationUser + " sets it)", ns.GIDMappings, st.GID},
		{"uid " + fmt.Sprint(reaper) + " (the workspace reaper's)", ns.UIDMappings, reaper},
		{"gid " + fmt.Sprint(reaper) + " (the workspace reaper's)", ns.GIDMappings, reaper},
	} {
		if _, ok := HostID(id.mappings, id.id); !ok {
			return fmt.Errorf("the bundle's user namespace does not map %s: its mappings are %s; map at least ids 0-65535",
				id.what, formatMappings(id.mappings))
		}
	}
	return nil
}

// WithUserNamespacePath is s joining the user namespace at path instead of
// making one: libcontainer reads the mappings there, so s gives none.
func WithUserNamespacePath(s *specs.Spec, path string) *specs.Spec {
	c := *s
	linux := *s.Linux
	linux.Namespaces = joinNamespace(s.Linux.Namespaces, specs.UserNamespace, path)
	linux.UIDMappings, linux.GIDMappings = nil, nil
	c.Linux = &linux
	return &c
}

// joinNamespace is namespaces with the one of type t joined at path.
func joinNamespace(namespaces []specs.LinuxNamespace, t specs.LinuxNamespaceType, path string) []specs.LinuxNamespace {
	out := make([]specs.LinuxNamespace, len(namespaces))
	copy(out, namespaces)
	for i := range out {
		if out[i].Type == t {
			out[i].Path = path
		}
	}
	return out
}

func formatMappings(mappings []specs.LinuxIDMapping) string {
	if len(mappings) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(mappings))
	for _, m := range mappings {
		parts = append(parts, fmt.Sprintf("%d:%d:%d", m.ContainerID, m.HostID, m.Size))
	}
	return strings.Join(parts, ",")
}
