package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
)

// userCgroup makes a real cgroup standing for a user container's, as
// libcontainer's State.CgroupPaths names it, and removes it at the end.
func userCgroup(t *testing.T) map[string]string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: writes cgroupfs")
	}
	name := fmt.Sprintf("sst-unit-%d-%s", os.Getpid(), strings.ToLower(t.Name()))
	paths := map[string]string{}
	if cgroups.IsCgroup2UnifiedMode() {
		paths[""] = filepath.Join("/sys/fs/cgroup", name)
	} else {
		paths["pids"] = filepath.Join("/sys/fs/cgroup/pids", name)
		// Co-mounted controllers share one directory, as libcontainer
		// reports them.
		cpu := filepath.Join("/sys/fs/cgroup/cpu", name)
		paths["cpu"], paths["cpuacct"] = cpu, cpu
	}
	for _, p := range paths {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(p) })
	}
	return paths
}

// TestExecLeaf: a leaf gets the exec's pids limit, takes over a directory
// a killed shim left, names every co-mounted controller for libcontainer,
// and goes on Remove (twice is fine).
func TestExecLeaf(t *testing.T) {
	paths := userCgroup(t)
	pidsDir := paths["pids"]
	if pidsDir == "" {
		pidsDir = paths[""]
	}
	stale := filepath.Join(pidsDir, "exec-1")
	if err := os.Mkdir(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(stale) })
	leaf, err := NewExecLeaf(paths, "exec-1", 48)
	if err != nil {
		t.Fatalf("leaf over a stale directory: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(stale, "pids.max"))
	if err != nil || strings.TrimSpace(string(b)) != "48" {
		t.Fatalf("pids.max = %q (%v), want 48", b, err)
	}
	for c := range paths {
		if leaf.SubCgroupPaths[c] != "exec-1" {
			t.Errorf("SubCgroupPaths %v does not name %q", leaf.SubCgroupPaths, c)
		}
	}
	leaf.Remove()
	leaf.Remove()
	for _, p := range paths {
		if _, err := os.Stat(filepath.Join(p, "exec-1")); !os.IsNotExist(err) {
			t.Errorf("%s/exec-1 left after Remove: %v", p, err)
		}
	}
}

// TestExecLeafFailsWithoutParent: a user container whose cgroup is gone
// gets an error, and nothing is left.
func TestExecLeafFailsWithoutParent(t *testing.T) {
	paths := userCgroup(t)
	gone := map[string]string{}
	for c, p := range paths {
		gone[c] = filepath.Join(p, "missing")
	}
	if _, err := NewExecLeaf(gone, "exec-1", 8); err == nil {
		t.Fatal("leaf under a missing cgroup was made")
	}
}
