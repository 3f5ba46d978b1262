package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// HostPidsLimit is the lowest pids.max of the existing cgroups above the
// sandbox's (a pod's, say), 0 if none sets one: the bundle does not state
// it, but the sandbox shares it with its siblings and so must leave the
// control plane room in it too.
func HostPidsLimit(sandboxCgroup string) (int64, error) {
	root := "/sys/fs/cgroup/pids"
	if cgroups.IsCgroup2UnifiedMode() {
		root = "/sys/fs/cgroup"
	}
	return lowestLimit(root, sandboxCgroup, "pids.max")
}

// HostMemoryLimit is the host's memory, or the lowest memory limit of the
// existing cgroups above the sandbox's (a pod's, say) if that is lower:
// what bounds a sandbox without a memory limit of its own. 0 if unknown.
func HostMemoryLimit(sandboxCgroup string) (int64, error) {
	root, file := "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
	if cgroups.IsCgroup2UnifiedMode() {
		root, file = "/sys/fs/cgroup", "memory.max"
	}
	lowest, err := lowestLimit(root, sandboxCgroup, file)
	if err != nil {
		return 0, err
	}
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err == nil {
		if total := int64(info.Totalram) * int64(info.Unit); total > 0 && (lowest == 0 || total < lowest) {
			lowest = total
		}
	}
	return lowest, nil
}

// noLimit is where a cgroup v1 limit file's "unlimited" starts (the
// kernel writes its page counter's maximum, about 2^63).
const noLimit = 1 << 62

// lowestLimit is the lowest value of file (pids.max, memory.max, ...) in
// the existing ancestors of cg (a cgroupfs path) under root, 0 if none
// sets one.
func lowestLimit(root, cg, file string) (int64, error) {
	var lowest int64
	for p := path.Dir(path.Clean(cg)); ; p = path.Dir(p) {
		f := filepath.Join(root, p, file)
		b, err := os.ReadFile(f)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return 0, fmt.Errorf("read ancestor limit: %w", err)
		default:
			if v := strings.TrimSpace(string(b)); v != "max" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("parse %s: %w", f, err)
				}
				if n < noLimit && (lowest == 0 || n < lowest) {
					lowest = n
				}
			}
		}
		if p == "/" {
			return lowest, nil
		}
	}
}
