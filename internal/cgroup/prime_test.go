package cgroup

import (
	"os"
	"testing"
)

// The shim's placement must not change: the move is into the cgroup it is in.
func TestPrimeMigrationKeepsPlacement(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("moving a process between cgroups needs root")
	}
	before, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if err := primeMigration(); err != nil {
		t.Fatalf("prime: %v", err)
	}
	after, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Fatalf("cgroups changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
