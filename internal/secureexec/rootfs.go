package secureexec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// RootfsDirName holds, under a runner's state directory, the mount point
// of each secure container's private rootfs.
const RootfsDirName = "secure-rootfs"

// stateDirPrefix names each runner's state directory under the sandbox's
// libcontainer state root: a small tmpfs holding its containers'
// libcontainer state and rootfs mount points. Every container costs a few
// inodes there (its state directory, exec FIFO, state.json, mount
// points), and allocating inodes on a disk filesystem that keeps deleting
// them is slow (ext4's search past recently deleted inodes took ~3 ms of
// CPU per container here).
const stateDirPrefix = "secure-state-"

// stateDirSize bounds a runner's state tmpfs: a container's state is a few
// KiB.
const stateDirSize = 8 << 20

var runnerSeq atomic.Uint64

// newStateDir mounts a runner's state tmpfs, or returns "" (the caller
// then keeps its state on the sandbox's state root) where it cannot.
func newStateDir(stateRoot string) string {
	dir := filepath.Join(stateRoot, stateDirPrefix+strconv.FormatUint(runnerSeq.Add(1), 10))
	// 0711 down to each rootfs view: a container in a user namespace
	// resolves its rootfs path as the namespace's root, a host uid of its
	// own. The layers stay 0700 and are detached.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return ""
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0711,size="+strconv.Itoa(stateDirSize)); err != nil {
		_ = os.Remove(dir)
		return ""
	}
	return dir
}

// releaseStateDir detaches a runner's state tmpfs (with the rootfs views
// below it) and removes its mount point.
func releaseStateDir(dir string) {
	if dir == "" {
		return
	}
	_ = unix.Unmount(dir, unix.MNT_DETACH)
	_ = os.Remove(dir)
}

// privateRootfs is a secure container's own copy-on-write view of the
// bundle's rootfs: an overlay whose lower layer is the bundle's rootfs and
// whose upper layer is a fresh tmpfs. What the command writes anywhere in
// the rootfs (a tool caching a credential in /var/tmp, a project dir, a
// config file) lands in that tmpfs: in memory, charged to its cgroup,
// invisible to the workspace, gone with the container. Volumes shared with
// user code (data volumes, credentials io.sandbox.user.mounts names) stay shared.
type privateRootfs struct {
	merged string
}

// newPrivateRootfs mounts the view at <stateDir>/secure-rootfs/<id>. The
// tmpfs holding the upper layer is detached right after the overlay is
// made, so no path on the host reaches the command's writes but the
// merged view, which release detaches once the container is dead.
func newPrivateRootfs(stateDir, id, lower string, sizeBytes int64) (_ *privateRootfs, retErr error) {
	if strings.ContainsAny(lower, ",:\\") {
		return nil, fmt.Errorf("private rootfs: bundle rootfs path %q has characters an overlay mount cannot take", lower)
	}
	base := filepath.Join(stateDir, RootfsDirName)
	if err := os.MkdirAll(base, 0o711); err != nil {
		return nil, fmt.Errorf("private rootfs: %w", err)
	}
	merged := filepath.Join(base, id)
	layers := merged + ".layers"
	for _, d := range []string{merged, layers} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("private rootfs: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			_ = unix.Unmount(merged, unix.MNT_DETACH)
			_ = unix.Unmount(layers, unix.MNT_DETACH)
			_ = os.Remove(merged)
			_ = os.Remove(layers)
		}
	}()
	data := "mode=0700"
	if sizeBytes > 0 {
		data += ",size=" + strconv.FormatInt(sizeBytes, 10)
	}
	if err := unix.Mount("tmpfs", layers, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return nil, fmt.Errorf("private rootfs: tmpfs: %w", err)
	}
	upper, work := filepath.Join(layers, "upper"), filepath.Join(layers, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("private rootfs: %w", err)
		}
	}
	// The upper layer's root must look like the rootfs' own root (mode,
	// owner): the merged root takes them from it.
	if st, err := os.Stat(lower); err == nil {
		if sys, ok := st.Sys().(*unix.Stat_t); ok {
			_ = os.Chown(upper, int(sys.Uid), int(sys.Gid))
			_ = os.Chmod(upper, st.Mode().Perm())
		}
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("private rootfs: overlay over %s: %w", lower, err)
	}
	// The overlay holds its layers; no host path needs to.
	if err := unix.Unmount(layers, unix.MNT_DETACH); err != nil {
		return nil, fmt.Errorf("private rootfs: detach its layers: %w", err)
	}
	_ = os.Remove(layers)
	return &privateRootfs{merged: merged}, nil
}

// path is the view's host path, "" for none.
func (p *privateRootfs) path() string {
	if p == nil {
		return ""
	}
	return p.merged
}

// bundleRootfs is the bundle's rootfs as a host path.
func bundleRootfs(bundle string, s *specs.Spec) string {
	if s.Root == nil {
		return filepath.Join(bundle, "rootfs")
	}
	if filepath.IsAbs(s.Root.Path) {
		return s.Root.Path
	}
	return filepath.Join(bundle, s.Root.Path)
}

// release detaches the view from the host and removes its mount point:
// called once the container is dead, the memory goes with the last
// reference.
func (p *privateRootfs) release() {
	if p == nil {
		return
	}
	if err := unix.Unmount(p.merged, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return
	}
	_ = os.Remove(p.merged)
}

// Cleanup detaches every runner state directory (and the rootfs views in
// it) a shim left under stateRoot: the delete action after a crash, and
// Delete. They would keep the bundle busy.
func Cleanup(stateRoot string) {
	entries, err := os.ReadDir(stateRoot)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stateDirPrefix) {
			releaseStateDir(filepath.Join(stateRoot, e.Name()))
		}
	}
}

// readPasswd reads the rootfs' /etc/passwd without following a link out
// of it (user code may own parts of the rootfs), at most 1 MiB.
func readPasswd(rootfs string) []byte {
	root, err := os.Open(rootfs)
	if err != nil {
		return nil
	}
	defer root.Close()
	fd, err := unix.Openat2(int(root.Fd()), "etc/passwd", &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "passwd")
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return b
}
