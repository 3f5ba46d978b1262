package spec

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/docker/go-units"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Annotations that configure a sandbox.
const (
	AnnotationUser        = "io.sandbox.user"
	AnnotationPidsLimit   = "io.sandbox.user.pids-limit"
	AnnotationMemoryLimit = "io.sandbox.user.memory-limit"
)

// Defaults for the workspace.
const (
	DefaultUID       = 1000
	DefaultGID       = 1000
	DefaultPidsLimit = 1024
	// minMemoryLimit keeps a typo ("64" meaning MiB) from starving every exec.
	minMemoryLimit = 4 << 20
)

// Settings is the sandbox configuration read from the bundle.
type Settings struct {
	// UID and GID of every workspace process.
	UID, GID uint32
	// UserFromAnnotation tells whether io.sandbox.user chose the user.
	UserFromAnnotation bool
	// PidsLimit caps the workspace's processes.
	PidsLimit int64
	// MemoryLimit caps the workspace's memory, in bytes; 0 is unlimited.
	MemoryLimit int64
	// MemoryFromAnnotation tells whether MemoryLimit was set explicitly (an
	// Update of the sandbox's limit then leaves it alone).
	MemoryFromAnnotation bool
}

// AnnotationError names the annotation and the value that was refused.
type AnnotationError struct {
	Key, Value, Reason string
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q: %s", e.Key, e.Value, e.Reason)
}

// ParseSettings reads the io.sandbox.* annotations of s. It never returns a
// partial result: any bad value fails the whole sandbox.
func ParseSettings(s *specs.Spec) (Settings, error) {
	st := Settings{PidsLimit: DefaultPidsLimit}
	ann := s.Annotations
	if v, ok := ann[AnnotationUser]; ok {
		uid, gid, err := parseUser(v)
		if err != nil {
			return Settings{}, &AnnotationError{AnnotationUser, v, err.Error()}
		}
		st.UID, st.GID, st.UserFromAnnotation = uid, gid, true
	} else if s.Process != nil && s.Process.User.UID != 0 {
		st.UID, st.GID = s.Process.User.UID, s.Process.User.GID
	} else {
		st.UID, st.GID = DefaultUID, DefaultGID
	}
	if v, ok := ann[AnnotationPidsLimit]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 1 {
			return Settings{}, &AnnotationError{AnnotationPidsLimit, v, "want a positive integer"}
		}
		// The reaper is one of them; anything below a handful cannot run a shell.
		if n < 8 {
			return Settings{}, &AnnotationError{AnnotationPidsLimit, v, "must be at least 8"}
		}
		st.PidsLimit = n
	}
	sandboxLimit := SandboxMemoryLimit(s)
	if v, ok := ann[AnnotationMemoryLimit]; ok {
		n, err := units.RAMInBytes(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return Settings{}, &AnnotationError{AnnotationMemoryLimit, v, "want a size in bytes, e.g. 536870912 or 512m"}
		}
		if n < minMemoryLimit {
			return Settings{}, &AnnotationError{AnnotationMemoryLimit, v, "must be at least 4 MiB"}
		}
		if sandboxLimit > 0 && n > sandboxLimit {
			return Settings{}, &AnnotationError{AnnotationMemoryLimit, v, fmt.Sprintf("exceeds the sandbox memory limit of %d bytes", sandboxLimit)}
		}
		st.MemoryLimit, st.MemoryFromAnnotation = n, true
	} else {
		st.MemoryLimit = DefaultWorkspaceMemory(sandboxLimit)
	}
	return st, nil
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
