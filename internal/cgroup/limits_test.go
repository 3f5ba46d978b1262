package cgroup

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLowestPidsMax(t *testing.T) {
	root := t.TempDir()
	write := func(dir, v string) {
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "pids.max"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("k8s", "max")
	write("k8s/pod1", "300")
	write("k8s/pod1/deep", "200")
	write("k8s/pod2", "max")
	write("k8s/pod1/c1", "5") // the sandbox's own: not an ancestor
	write("bad", "lots")
	for _, c := range []struct {
		cg   string
		want int64
	}{
		{"/k8s/pod1/c1", 300},
		{"/k8s/pod1/deep/c1", 200},
		{"/k8s/pod2/c1", 0},
		{"/k8s/missing/c1", 0},
		{"/ns/c1", 0},
		{"/c1", 0},
	} {
		got, err := lowestLimit(root, c.cg, "pids.max")
		if err != nil || got != c.want {
			t.Errorf("lowestLimit(%s) = %d, %v; want %d", c.cg, got, err, c.want)
		}
	}
	if _, err := lowestLimit(root, "/bad/c1", "pids.max"); err == nil {
		t.Error("unparsable pids.max accepted")
	}
}

// TestLowestMemoryLimit: cgroup v1 writes "unlimited" as a huge number, which is no limit.
func TestLowestMemoryLimit(t *testing.T) {
	root := t.TempDir()
	for dir, v := range map[string]string{"k8s": "9223372036854771712", "k8s/pod1": "536870912", "k8s/pod2": "9223372036854771712"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dir, "memory.limit_in_bytes"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for cg, want := range map[string]int64{"/k8s/pod1/c1": 536870912, "/k8s/pod2/c1": 0} {
		if got, err := lowestLimit(root, cg, "memory.limit_in_bytes"); err != nil || got != want {
			t.Errorf("lowestLimit(%s) = %d, %v; want %d", cg, got, err, want)
		}
	}
}

// TestHostMemoryLimit: on this host, at most the machine's memory.
func TestHostMemoryLimit(t *testing.T) {
	n, err := HostMemoryLimit("/sandbox-shim-test/none")
	if err != nil || n <= 0 {
		t.Fatalf("HostMemoryLimit = %d, %v", n, err)
	}
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		t.Fatal(err)
	}
	if total := int64(info.Totalram) * int64(info.Unit); n > total {
		t.Errorf("HostMemoryLimit %d above the host's memory %d", n, total)
	}
}
