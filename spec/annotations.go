package spec

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/api"
)

// Defaults for the workspace.
const (
	DefaultPidsLimit = 1024
	// minPidsLimit: the reaper is one of them; anything below a handful
	// cannot run a shell.
	minPidsLimit = 8
	// minMemoryLimit keeps a typo ("64" meaning MiB) from starving every exec.
	minMemoryLimit = 4 << 20
)

// Settings is the sandbox configuration read from the bundle.
type Settings struct {
	// PodSandbox tells that the bundle is a pod's sandbox (pause) container
	// under CRI: it holds the pod's namespaces and runs nothing of the
	// platform's, so it gets no workspace, no secure exec and no API.
	PodSandbox bool
	// PodContainer tells that the bundle is an app container of a pod
	// under CRI: it shares the pod's network namespace with its siblings.
	PodContainer bool
	// UID and GID of every workspace process.
	UID, GID uint32
	// UserFromAnnotation tells whether io.sandbox.user chose the user.
	UserFromAnnotation bool
	// SelfRlimits: the user containers' processes set their own rlimits
	// (the reaper and waiters RLIMIT_CORE 0, each exec its request's),
	// since the shim cannot set them across the sandbox's user namespace
	// (Limits.NoCrossNamespacePrlimit).
	SelfRlimits bool
	// GroupFromUID tells that the image user's gid was 0 and GID is its uid.
	GroupFromUID bool
	// PidsLimit caps the workspace's processes.
	PidsLimit int64
	// MemoryLimit caps the workspace's memory, in bytes; 0 is unlimited.
	MemoryLimit int64
	// MemoryFromAnnotation tells whether MemoryLimit was set explicitly (an
	// Update of the sandbox's limit then leaves it alone).
	MemoryFromAnnotation bool
	// ControlUID is the bundle process' (the control plane's) uid: the
	// reaper's uid avoids it.
	ControlUID uint32
	// UserEnv are the env keys an exec may inherit from the control plane.
	UserEnv []string
	// UserMounts are the bundle mount destinations (clean, absolute) the
	// workspace keeps even when they carry credentials (data volumes it
	// keeps anyway).
	UserMounts []string
	// ReservedPorts are the control plane's TCP ports, in the annotation's
	// order (the order of its fds from 3); none when empty.
	ReservedPorts []uint16
	// UserConnect lets user code connect to the reserved ports.
	UserConnect bool
	// SecureExecDisabled is set by io.sandbox.secure-exec=disabled:
	// execSecure then fails closed.
	SecureExecDisabled bool
	// SecureExecPoolSize is how many secure containers are built ahead.
	SecureExecPoolSize int
}

// Secure exec pool sizes (io.sandbox.secure-exec.pool-size): each ready
// container is a few idle processes and their cgroups.
const (
	DefaultSecureExecPoolSize = 2
	MaxSecureExecPoolSize     = 8
)

// Limits are limits on the sandbox that the bundle does not state. The
// caller reads them from the host, so this package stays pure.
type Limits struct {
	// Pids is the lowest pids.max among the sandbox cgroup's ancestors;
	// 0 is none.
	Pids int64
	// NoCrossNamespacePrlimit tells that the shim lacks CAP_SYS_RESOURCE:
	// it cannot set the rlimits of a process in another user namespace.
	NoCrossNamespacePrlimit bool
}

// AnnotationError names the annotation and the value that was refused.
type AnnotationError struct {
	Key, Value, Reason string
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q: %s", e.Key, e.Value, e.Reason)
}

// ParseSettings reads the io.sandbox.* annotations of s; l carries the
// limits of the cgroups above the sandbox. It never returns a partial
// result: any bad value fails the whole sandbox.
func ParseSettings(s *specs.Spec, l Limits) (Settings, error) {
	st := Settings{PidsLimit: DefaultPidsLimit}
	ann := s.Annotations
	st.PodSandbox = ann[criContainerType] == "sandbox"
	st.PodContainer = ann[criContainerType] == "container"
	if s.Process != nil {
		st.ControlUID = s.Process.User.UID
	}
	if v, ok := ann[api.AnnotationUser]; ok {
		uid, gid, err := parseUser(v)
		if err != nil {
			return Settings{}, &AnnotationError{api.AnnotationUser, v, err.Error()}
		}
		st.UID, st.GID, st.UserFromAnnotation = uid, gid, true
	} else if s.Process != nil && s.Process.User.UID != 0 {
		st.UID, st.GID = s.Process.User.UID, s.Process.User.GID
		if st.GID == 0 {
			// An image USER 1001 (or a pod runAsUser without runAsGroup)
			// gives gid 0: user code never gets root's group, so it gets a
			// group of its own, numbered like its uid.
			st.GID, st.GroupFromUID = st.UID, true
		}
	} else {
		st.UID, st.GID = api.DefaultUID, api.DefaultGID
	}
	if _, ok := reaperUID(st); !ok {
		return Settings{}, fmt.Errorf("no uid left for the workspace reaper: %v are all taken by the workspace user %d:%d or the control plane's uid %d",
			reaperUIDs, st.UID, st.GID, st.ControlUID)
	}
	if err := checkUserNamespace(s, st); err != nil {
		return Settings{}, err
	}
	if _, ok := BundleUserNamespace(s); ok && l.NoCrossNamespacePrlimit {
		st.SelfRlimits = true
	}
	sandboxPids := SandboxPidsLimit(s, l)
	wsPids, reserve := WorkspacePidsMax(sandboxPids)
	if sandboxPids > 0 && wsPids < minPidsLimit {
		return Settings{}, fmt.Errorf("sandbox pids limit %d leaves the workspace fewer than %d pids after the control plane's reserve of %d",
			sandboxPids, minPidsLimit, reserve)
	}
	if v, ok := ann[api.AnnotationPidsLimit]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 1 {
			return Settings{}, &AnnotationError{api.AnnotationPidsLimit, v, "want a positive integer"}
		}
		if n < minPidsLimit {
			return Settings{}, &AnnotationError{api.AnnotationPidsLimit, v, fmt.Sprintf("must be at least %d", minPidsLimit)}
		}
		if sandboxPids > 0 && n > wsPids {
			return Settings{}, &AnnotationError{api.AnnotationPidsLimit, v, fmt.Sprintf(
				"exceeds %d, what the sandbox pids limit of %d leaves after the control plane's reserve of %d", wsPids, sandboxPids, reserve)}
		}
		st.PidsLimit = n
	} else if sandboxPids > 0 {
		st.PidsLimit = min(DefaultPidsLimit, wsPids)
	}
	sandboxLimit := SandboxMemoryLimit(s)
	if v, ok := ann[api.AnnotationMemoryLimit]; ok {
		n, err := parseMemoryLimit(v, sandboxLimit)
		if err != nil {
			return Settings{}, err
		}
		st.MemoryLimit, st.MemoryFromAnnotation = n, true
	} else {
		st.MemoryLimit = DefaultWorkspaceMemory(sandboxLimit)
	}
	if v, ok := ann[api.AnnotationEnv]; ok {
		for _, k := range splitList(v) {
			if !envName.MatchString(k) {
				return Settings{}, &AnnotationError{api.AnnotationEnv, v, fmt.Sprintf("%q is not an env name (want comma-separated names like API_URL)", k)}
			}
			st.UserEnv = append(st.UserEnv, k)
		}
	}
	if v, ok := ann[api.AnnotationMounts]; ok {
		for _, d := range splitList(v) {
			if !path.IsAbs(d) {
				return Settings{}, &AnnotationError{api.AnnotationMounts, v, fmt.Sprintf("%q is not an absolute path (want comma-separated mount destinations)", d)}
			}
			d = path.Clean(d)
			if !slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool { return path.Clean(m.Destination) == d }) {
				return Settings{}, &AnnotationError{api.AnnotationMounts, v, fmt.Sprintf("%q is not a mount of the bundle", d)}
			}
			st.UserMounts = append(st.UserMounts, d)
		}
	}
	if err := parseReservedPorts(ann, &st); err != nil {
		return Settings{}, err
	}
	if err := parseSecureExec(ann, &st); err != nil {
		return Settings{}, err
	}
	return st, nil
}

// parseSecureExec reads io.sandbox.secure-exec and its pool size.
func parseSecureExec(ann map[string]string, st *Settings) error {
	st.SecureExecPoolSize = DefaultSecureExecPoolSize
	if v, ok := ann[api.AnnotationSecureExec]; ok {
		switch strings.TrimSpace(v) {
		case "enabled":
		case "disabled":
			st.SecureExecDisabled = true
		default:
			return &AnnotationError{api.AnnotationSecureExec, v, `want "enabled" or "disabled"`}
		}
	}
	if v, ok := ann[api.AnnotationSecureExecPool]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > MaxSecureExecPoolSize {
			return &AnnotationError{api.AnnotationSecureExecPool, v, fmt.Sprintf("want an integer from 0 to %d", MaxSecureExecPoolSize)}
		}
		st.SecureExecPoolSize = n
	}
	return nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// splitList splits a comma-separated annotation, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// SandboxPidsLimit is the lowest of the bundle's pids limit and the
// ancestors' (l.Pids), 0 if neither is set.
func SandboxPidsLimit(s *specs.Spec, l Limits) int64 {
	var n int64
	if s.Linux != nil && s.Linux.Resources != nil && s.Linux.Resources.Pids != nil && s.Linux.Resources.Pids.Limit != nil {
		n = max(*s.Linux.Resources.Pids.Limit, 0)
	}
	if l.Pids > 0 && (n == 0 || l.Pids < n) {
		n = l.Pids
	}
	return n
}

// WorkspacePidsMax is the most pids the workspace may have under a sandbox
// pids limit (0: none, no cap) and the reserve kept for the control plane:
// a quarter, at least 4, so a fork bomb in the workspace leaves the control
// plane able to fork.
func WorkspacePidsMax(sandboxLimit int64) (limit, reserve int64) {
	if sandboxLimit <= 0 {
		return 0, 0
	}
	reserve = max(sandboxLimit/4, 4)
	return sandboxLimit - reserve, reserve
}

func parseUser(v string) (uint32, uint32, error) {
	u, g, hasGID := strings.Cut(strings.TrimSpace(v), ":")
	uid, err := strconv.ParseUint(u, 10, 31)
	if err != nil {
		return 0, 0, fmt.Errorf("want numeric uid[:gid]")
	}
	gid := uid
	if hasGID {
		if gid, err = strconv.ParseUint(g, 10, 31); err != nil {
			return 0, 0, fmt.Errorf("want numeric uid[:gid]")
		}
	}
	if uid == 0 || gid == 0 {
		return 0, 0, fmt.Errorf("user code never runs as root (uid or gid 0)")
	}
	return uint32(uid), uint32(gid), nil
}

// SandboxMemoryLimit is the sandbox's memory limit from the spec, 0 if none.
func SandboxMemoryLimit(s *specs.Spec) int64 {
	if s.Linux == nil || s.Linux.Resources == nil || s.Linux.Resources.Memory == nil || s.Linux.Resources.Memory.Limit == nil {
		return 0
	}
	if l := *s.Linux.Resources.Memory.Limit; l > 0 {
		return l
	}
	return 0
}

// DefaultWorkspaceMemory leaves the control plane a reserve of a quarter of
// the sandbox's limit, at least 32 MiB and at most 512 MiB, so user code
// hits its own limit before the sandbox's. Without a sandbox limit the
// workspace is unlimited too.
func DefaultWorkspaceMemory(sandboxLimit int64) int64 {
	if sandboxLimit <= 0 {
		return 0
	}
	reserve := sandboxLimit / 4
	reserve = max(reserve, 32<<20)
	reserve = min(reserve, 512<<20)
	if sandboxLimit-reserve < minMemoryLimit {
		return max(sandboxLimit/2, 1)
	}
	return sandboxLimit - reserve
}

// ExecPidsLimit is how many of the workspace's pids one exec's process tree
// may hold. Each exec gets its own sub-cgroup with this limit, below the
// workspace's, so a fork bomb started by one exec leaves the rest (a
// quarter, 16 to 256) for the next exec: the platform can always get back in.
func ExecPidsLimit(workspaceLimit int64) int64 {
	reserve := min(max(workspaceLimit/4, 16), 256)
	if n := workspaceLimit - reserve; n >= workspaceLimit/2 {
		return n
	}
	return max(workspaceLimit/2, 1)
}
