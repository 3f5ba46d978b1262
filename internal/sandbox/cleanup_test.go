package sandbox

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sandbox-shim/sandbox-shim/spec"
)

// The delete action decodes only the cgroups path: it must place the
// sandbox where Create's full decode did, with a path and without one.
func TestBundleCgroupsMatchesTheFullSpec(t *testing.T) {
	for name, config := range map[string]string{
		"cgroupsPath": `{"ociVersion":"1.2.0","process":{"args":["/bin/true"],"user":{"uid":0,"gid":0}},"linux":{"cgroupsPath":"/k8s/pod-1/c","namespaces":[{"type":"pid"}]}}`,
		"no path":     `{"ociVersion":"1.2.0","linux":{"namespaces":[{"type":"pid"}]}}`,
		"no linux":    `{"ociVersion":"1.2.0"}`,
	} {
		t.Run(name, func(t *testing.T) {
			bundle := t.TempDir()
			if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(config), 0o600); err != nil {
				t.Fatal(err)
			}
			full, err := ReadSpec(bundle)
			if err != nil {
				t.Fatal(err)
			}
			want, err := spec.Cgroups(full, "ns", "id")
			if err != nil {
				t.Fatal(err)
			}
			got, err := bundleCgroups("ns", "id", bundle)
			if err != nil || got != want {
				t.Fatalf("bundleCgroups = %+v, %v; want %+v", got, err, want)
			}
		})
	}
}

func TestBundleCgroupsRefusesWhatCreateRefuses(t *testing.T) {
	for name, config := range map[string]string{
		"relative path": `{"linux":{"cgroupsPath":"k8s/pod"}}`,
		"root cgroup":   `{"linux":{"cgroupsPath":"/"}}`,
		"malformed":     `{"linux":`,
	} {
		t.Run(name, func(t *testing.T) {
			bundle := t.TempDir()
			if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(config), 0o600); err != nil {
				t.Fatal(err)
			}
			if got, err := bundleCgroups("ns", "id", bundle); err == nil {
				t.Fatalf("bundleCgroups = %+v; want an error", got)
			}
		})
	}
	if _, err := bundleCgroups("ns", "id", t.TempDir()); err == nil {
		t.Fatal("no config.json: want an error")
	}
}
