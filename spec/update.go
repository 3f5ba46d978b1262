package spec

import (
	"fmt"
	"strings"

	"github.com/docker/go-units"

	"github.com/sandbox-shim/sandbox-shim/api"
)

// WorkspaceUpdate is what the annotations of a task Update ask of the
// workspace.
type WorkspaceUpdate struct {
	// MemoryLimit is the workspace's new memory limit; 0 leaves it.
	MemoryLimit int64
	// Reset rebuilds the workspace.
	Reset bool
}

// ParseWorkspaceUpdate reads an Update's annotations; sandboxLimit is the
// sandbox's memory limit after the Update (0: none). Other annotations are
// left to whoever else reads them; a bad value fails the whole Update.
func ParseWorkspaceUpdate(ann map[string]string, sandboxLimit int64) (WorkspaceUpdate, error) {
	var u WorkspaceUpdate
	if v, ok := ann[api.AnnotationMemoryLimit]; ok {
		n, err := parseMemoryLimit(v, sandboxLimit)
		if err != nil {
			return WorkspaceUpdate{}, err
		}
		u.MemoryLimit = n
	}
	if v, ok := ann[api.AnnotationWorkspaceReset]; ok {
		switch strings.TrimSpace(v) {
		case "true":
			u.Reset = true
		case "false", "":
		default:
			return WorkspaceUpdate{}, &AnnotationError{api.AnnotationWorkspaceReset, v, `want "true"`}
		}
	}
	return u, nil
}

// parseMemoryLimit reads io.sandbox.user.memory-limit: a size of at least
// minMemoryLimit, at most the sandbox's limit (0: none).
func parseMemoryLimit(v string, sandboxLimit int64) (int64, error) {
	n, err := units.RAMInBytes(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0, &AnnotationError{api.AnnotationMemoryLimit, v, "want a size in bytes, e.g. 536870912 or 512m"}
	}
	if n < minMemoryLimit {
		return 0, &AnnotationError{api.AnnotationMemoryLimit, v, "must be at least 4 MiB"}
	}
	if sandboxLimit > 0 && n > sandboxLimit {
		return 0, &AnnotationError{api.AnnotationMemoryLimit, v, fmt.Sprintf("exceeds the sandbox memory limit of %d bytes", sandboxLimit)}
	}
	return n, nil
}
