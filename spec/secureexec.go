package spec

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// SecureExecOptions is what one secure exec's container needs besides the
// bundle spec: the workspace's options (its settings, the sandbox's
// network and UTS namespaces, the reaper), with CgroupPath naming the
// container's own leaf below the workspace's cgroup.
type SecureExecOptions struct {
	Workspace WorkspaceOptions
	// Homes are the workspace user's home directories (SecureHome,
	// PasswdHome): a fresh tmpfs covers each. None: the command's HOME is
	// the private /tmp.
	Homes []string
	// Rootfs, when set, is the host path of the container's own
	// copy-on-write view of the bundle's rootfs, which the caller made: what
	// the command writes there stays its own and goes with it.
	Rootfs string
}

// secureVariant is how a secure exec's container differs from the
// workspace: everything else comes from the same code (userContainerSpec).
type secureVariant struct {
	homes []string
}

// SecureExecSpec derives a secure exec's container from the bundle spec
// with the workspace's code: the same rootfs, user, seccomp profile,
// masked paths, rlimits (no core dumps) and oom_score_adj, its own PID,
// mount and IPC namespaces in the sandbox's network and UTS namespaces,
// the reaper as pid 1, and:
//   - its own cgroup leaf (o.Workspace.CgroupPath) with the pids an exec of
//     the workspace gets (ExecPidsLimit) and the workspace's memory limit;
//   - a private /tmp and a private HOME (a fresh tmpfs over o.Home), each
//     a quarter of the leftover budget, so dotfiles user code planted in
//     the workspace's HOME (.npmrc, .gitconfig, usercustomize.py) are not
//     read;
//   - no platform pty instance: a secure exec has no terminal;
//   - no cgroup filesystem.
func SecureExecSpec(s *specs.Spec, o SecureExecOptions) (*specs.Spec, error) {
	if o.Workspace.CgroupPath == "" {
		return nil, errors.New("secure exec needs a cgroup leaf")
	}
	var homes []string
	for _, h := range o.Homes {
		if !path.IsAbs(h) || path.Clean(h) == "/" || path.Clean(h) == "/tmp" {
			return nil, fmt.Errorf("secure exec HOME %q: not a directory a tmpfs can cover", h)
		}
		if h = path.Clean(h); !slices.Contains(homes, h) {
			homes = append(homes, h)
		}
	}
	if o.Rootfs != "" && !path.IsAbs(o.Rootfs) {
		return nil, fmt.Errorf("secure exec rootfs %q is not an absolute path", o.Rootfs)
	}
	w, err := userContainerSpec(s, o.Workspace, &secureVariant{homes: homes})
	if err != nil {
		return nil, err
	}
	if o.Rootfs != "" {
		root := *w.Root
		root.Path = o.Rootfs
		w.Root = &root
	}
	return w, nil
}

// SecureExec returns the libcontainer config of one secure exec's container.
func SecureExec(id, bundle string, s *specs.Spec, o SecureExecOptions) (*configs.Config, error) {
	w, err := SecureExecSpec(s, o)
	if err != nil {
		return nil, err
	}
	return convert(id, bundle, w)
}

// SecureExecCopy is the config of another secure exec container of the
// sandbox whose config c is (from SecureExec, with its cgroup leaf and
// without a rootfs view of its own): the same, in its own cgroup leaf and,
// when rootfs is set, on its own copy-on-write view of the rootfs.
// Converting the bundle spec again for each container cost a tenth of its
// shim-side CPU. What libcontainer may change in a config it is given (the
// cgroup's resources: the freezer state) is the copy's own; the rest is
// shared and only read.
func SecureExecCopy(c *configs.Config, cgroupPath, rootfs string) (*configs.Config, error) {
	if cgroupPath == "" {
		return nil, errors.New("secure exec needs a cgroup leaf")
	}
	if rootfs != "" && !path.IsAbs(rootfs) {
		return nil, fmt.Errorf("secure exec rootfs %q is not an absolute path", rootfs)
	}
	if c == nil || c.Cgroups == nil || c.Cgroups.Resources == nil {
		return nil, errors.New("secure exec copy of an incomplete config")
	}
	out := *c
	cgroup := *c.Cgroups
	resources := *c.Cgroups.Resources
	cgroup.Resources = &resources
	cgroup.Path = path.Clean(cgroupPath)
	out.Cgroups = &cgroup
	if rootfs != "" {
		out.Rootfs = rootfs
	}
	return &out, nil
}

// apply changes the workspace's spec w and mounts into a secure exec's.
func (v *secureVariant) apply(w *specs.Spec, mounts *workspaceMountConfig, st Settings) {
	pids := ExecPidsLimit(st.PidsLimit)
	w.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
	mounts.noPlatformPty = true
	// A one-off command has no use for cgroupfs, and on cgroup v1 its ~12
	// hierarchies were an eighth of the container's start CPU (2.5 ms).
	mounts.noCgroupfs = true
	// /tmp and HOME share what the workspace's /tmp alone would get.
	quarter := tmpfsCap(mounts.caps.Budget / 4)
	mounts.caps.Tmp = quarter
	if len(v.homes) > 0 {
		mounts.homes, mounts.homeCap = v.homes, quarter
		mounts.homeOwner = Identity{UID: st.UID, GID: st.GID}
	}
}

// homeMount is the private HOME: empty, the workspace user's alone.
func homeMount(c workspaceMountConfig, home string) specs.Mount {
	opts := []string{"nosuid", "nodev", "mode=0700",
		"uid=" + strconv.FormatUint(uint64(c.homeOwner.UID), 10), "gid=" + strconv.FormatUint(uint64(c.homeOwner.GID), 10)}
	return specs.Mount{Destination: home, Type: "tmpfs", Source: "tmpfs", Options: append(opts, c.homeCap.options()...)}
}

// SecureHome is the directory a secure exec's private HOME covers: the
// HOME of the bundle's env (what every exec of the workspace gets), when
// it is an absolute path other than / and /tmp; else "" (HOME is then the
// private /tmp).
func SecureHome(env []string) string {
	home := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "HOME="); ok {
			home = v
		}
	}
	if !path.IsAbs(home) {
		return ""
	}
	if home = path.Clean(home); home == "/" || home == "/tmp" {
		return ""
	}
	return home
}

// PasswdHome is the home directory of uid in an /etc/passwd, when it is
// an absolute path other than / and /tmp; else "". Programs that look up
// their user (ssh's config, getpwuid) read it, not $HOME.
func PasswdHome(passwd []byte, uid uint32) string {
	want := strconv.FormatUint(uint64(uid), 10)
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 || f[2] != want {
			continue
		}
		home := f[5]
		if !path.IsAbs(home) {
			return ""
		}
		if home = path.Clean(home); home == "/" || home == "/tmp" {
			return ""
		}
		return home
	}
	return ""
}

// SecureHomeEnv is the HOME a secure exec's command gets: the private
// HOME's directory, or /tmp.
func SecureHomeEnv(home string) string {
	if home == "" {
		return "HOME=/tmp"
	}
	return "HOME=" + home
}

// Within tells whether dir is home or below it: a cwd there would be in
// the private HOME, which hides the workspace's files.
func Within(dir, home string) bool {
	if home == "" || !path.IsAbs(dir) {
		return false
	}
	return within(path.Clean(dir), home)
}
