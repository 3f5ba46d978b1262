package cgroup

import (
	"os"
	"path/filepath"
	"testing"
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
		got, err := lowestPidsMax(root, c.cg)
		if err != nil || got != c.want {
			t.Errorf("lowestPidsMax(%s) = %d, %v; want %d", c.cg, got, err, c.want)
		}
	}
	if _, err := lowestPidsMax(root, "/bad/c1"); err == nil {
		t.Error("unparsable pids.max accepted")
	}
}
