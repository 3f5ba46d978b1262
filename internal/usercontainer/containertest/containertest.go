// Package containertest builds what tests of real user containers need:
// the reaper compiled from libexec, a busybox rootfs, and the removal of
// the cgroups they leave. Tests only; it runs the host's cc.
package containertest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Reaper compiles libexec/reaper into dir and returns its path.
func Reaper(t *testing.T, dir string) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "..", "..", "..", "libexec", "reaper", "reaper.c")
	out := filepath.Join(dir, "sandbox-reaper")
	if b, err := exec.Command("cc", "-static", "-O2", "-o", out, src).CombinedOutput(); err != nil {
		t.Fatalf("build the reaper: %v: %s", err, b)
	}
	return out
}

// Rootfs makes bundle/rootfs under dir with busybox and the applets named,
// readable by user code, and returns the bundle and rootfs paths.
func Rootfs(t *testing.T, dir string, applets ...string) (bundle, rootfs string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds real containers")
	}
	bundle = filepath.Join(dir, "bundle")
	rootfs = filepath.Join(bundle, "rootfs")
	bin := filepath.Join(rootfs, "bin")
	for _, d := range []string{bin, filepath.Join(rootfs, "proc"), filepath.Join(rootfs, "dev"), filepath.Join(rootfs, "sys"), filepath.Join(rootfs, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static (make apt installs it): %v", err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), busybox, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range applets {
		if err := os.Symlink("busybox", filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	// TempDir makes 0700 directories: user code must reach its own root.
	for _, d := range []string{dir, bundle, rootfs} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bundle, rootfs
}

// RemoveCgroup removes a test cgroup tree, deepest first, from every
// hierarchy.
func RemoveCgroup(t *testing.T, p string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", p))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", p))
	for _, d := range dirs {
		var all []string
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			if err := os.Remove(all[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Logf("remove test cgroup: %v", err)
			}
		}
	}
}
