package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// prepareHostDir makes the sandbox's directory on the host (0700 root:
// the host's API socket, the audit trail) and in it the control plane's
// (0700, the control plane's user's), which the control plane sees at
// api.ControlPlaneSocketDir. One a dead shim left is taken over, its
// modes and owners set again. controlPlane is the control plane's user on
// the host (mapped through its user namespace).
func prepareHostDir(namespace, id string, controlPlane specs.User) error {
	dir := api.HostDir(namespace, id)
	fail := func(err error) error { return fmt.Errorf("API directory %s: %w", dir, err) }
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return fail(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fail(err)
	}
	cp := api.ControlPlaneHostDir(namespace, id)
	if err := os.Mkdir(cp, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fail(err)
	}
	for _, d := range []struct {
		path     string
		uid, gid int
	}{{dir, 0, 0}, {cp, int(controlPlane.UID), int(controlPlane.GID)}} {
		if fi, err := os.Lstat(d.path); err != nil || !fi.IsDir() {
			return fail(fmt.Errorf("%s is not a directory", d.path))
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			return fail(err)
		}
		if err := os.Chmod(d.path, 0o700); err != nil {
			return fail(err)
		}
	}
	return nil
}

// removeHostDir removes the sandbox's directory, and its namespace's once
// empty.
func removeHostDir(namespace, id string) error {
	dir := api.HostDir(namespace, id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove API directory: %w", err)
	}
	// Another sandbox of the namespace may still have one: then it stays.
	_ = os.Remove(filepath.Dir(dir))
	return nil
}

// auditPath is the sandbox's audit trail, beside its API socket.
func auditPath(namespace, id string) string {
	return filepath.Join(api.HostDir(namespace, id), "audit.jsonl")
}

// PodSandbox tells whether this is a pod's sandbox (pause) container: no
// workspace, no secure exec, no API.
func (sb *Sandbox) PodSandbox() bool { return sb.settings.PodSandbox }

// ControlPlaneUser is the control plane's uid and gid: they own its API
// socket.
func (sb *Sandbox) ControlPlaneUser() (uid, gid int) {
	// Mapped at Create already (prepareHostDir), so it cannot fail here.
	u, g, _ := spec.HostUser(sb.bundleSpec, sb.bundleSpec.Process.User)
	return int(u), int(g)
}
