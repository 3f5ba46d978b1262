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
	return lowestPidsMax(root, sandboxCgroup)
}

// lowestPidsMax is the lowest pids.max of the existing ancestors of cg
// (a cgroupfs path) under root, 0 if none sets one.
func lowestPidsMax(root, cg string) (int64, error) {
	var lowest int64
	for p := path.Dir(path.Clean(cg)); ; p = path.Dir(p) {
		f := filepath.Join(root, p, "pids.max")
		b, err := os.ReadFile(f)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return 0, fmt.Errorf("read ancestor pids limit: %w", err)
		default:
			if v := strings.TrimSpace(string(b)); v != "max" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("parse %s: %w", f, err)
				}
				if lowest == 0 || n < lowest {
					lowest = n
				}
			}
		}
		if p == "/" {
			return lowest, nil
		}
	}
}
