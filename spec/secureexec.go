package spec

import (
	"errors"
	"fmt"
	"path"
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
	// Home is the workspace's HOME (SecureHome): a fresh tmpfs covers it.
	// "" gives no HOME mount; the command's HOME is then the private /tmp.
	Home string
}

// secureVariant is how a secure exec's container differs from the
// workspace: everything else comes from the same code (userContainerSpec).
type secureVariant struct {
	home string
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
//   - no platform pty instance: a secure exec has no terminal.
func SecureExecSpec(s *specs.Spec, o SecureExecOptions) (*specs.Spec, error) {
	if o.Workspace.CgroupPath == "" {
		return nil, errors.New("secure exec needs a cgroup leaf")
	}
	if o.Home != "" && (!path.IsAbs(o.Home) || path.Clean(o.Home) == "/" || path.Clean(o.Home) == "/tmp") {
		return nil, fmt.Errorf("secure exec HOME %q: not a directory a tmpfs can cover", o.Home)
	}
	home := ""
	if o.Home != "" {
		home = path.Clean(o.Home)
	}
	return userContainerSpec(s, o.Workspace, &secureVariant{home: home})
}

// SecureExec returns the libcontainer config of one secure exec's container.
func SecureExec(id, bundle string, s *specs.Spec, o SecureExecOptions) (*configs.Config, error) {
	w, err := SecureExecSpec(s, o)
	if err != nil {
		return nil, err
	}
	return convert(id, bundle, w)
}

// apply changes the workspace's spec w and mounts into a secure exec's.
func (v *secureVariant) apply(w *specs.Spec, mounts *workspaceMountConfig, st Settings) {
	pids := ExecPidsLimit(st.PidsLimit)
	w.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
	mounts.noPlatformPty = true
	// /tmp and HOME share what the workspace's /tmp alone would get.
	quarter := tmpfsCap(mounts.caps.Budget / 4)
	mounts.caps.Tmp = quarter
	if v.home != "" {
		mounts.home, mounts.homeCap = v.home, quarter
		mounts.homeOwner = Identity{UID: st.UID, GID: st.GID}
	}
}

// homeMount is the private HOME: empty, the workspace user's alone.
func homeMount(c workspaceMountConfig) specs.Mount {
	opts := []string{"nosuid", "nodev", "mode=0700",
		"uid=" + strconv.FormatUint(uint64(c.homeOwner.UID), 10), "gid=" + strconv.FormatUint(uint64(c.homeOwner.GID), 10)}
	return specs.Mount{Destination: c.home, Type: "tmpfs", Source: "tmpfs", Options: append(opts, c.homeCap.options()...)}
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
