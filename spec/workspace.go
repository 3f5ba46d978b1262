package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/api"
)

// ReaperPath is where the workspace's pid 1 is bind-mounted. It sits on the
// container's own /dev tmpfs, so nothing is written into the shared rootfs.
const ReaperPath = "/dev/.sandbox-reaper"

// WorkspacePtyMax caps the ptys of the workspace's devpts: the kernel's pty
// pool (kernel.pty.max) is shared by the whole node.
const WorkspacePtyMax = 256

// PlatformPtyDir holds the devpts instance terminal execs take their pty
// from: a tmpfs of mode 0700 owned by the reaper's uid, so user code can
// neither open its ptmx nor exhaust it, whatever it holds of the
// workspace's own /dev/pts.
const PlatformPtyDir = "/dev/.sandbox-platform"

// PlatformPtmx is the platform devpts instance's ptmx. The shim opens it
// from the host side and hands it to every waiter as fd 0, which a
// terminal exec reopens (libexec/reaper): a waiter has taken the user's
// identity by then, so it could not open this path itself.
const PlatformPtmx = PlatformPtyDir + "/pts/ptmx"

// PlatformPtyMax caps the platform's instance: one pty per terminal exec
// running at once.
const PlatformPtyMax = 64

// workspaceCPUShares is the workspace leaf's cpu weight; the control plane's
// leaf keeps the default 1024.
const workspaceCPUShares = 512

// workspaceOOMScoreAdj makes the kernel pick user code first.
const workspaceOOMScoreAdj = 1000

// reaperUIDs are the reaper's candidate uids, in order of preference:
// nobody first.
var reaperUIDs = []uint32{65534, 65533, 65532}

// ReaperUID is the workspace reaper's uid (and gid): the first candidate
// that is neither the workspace user's uid or gid nor the control plane's
// uid, so neither can signal, renice or prlimit it. ParseSettings refuses
// settings that leave none.
func ReaperUID(st Settings) uint32 {
	if u, ok := reaperUID(st); ok {
		return u
	}
	return reaperUIDs[len(reaperUIDs)-1] - 1
}

func reaperUID(st Settings) (uint32, bool) {
	for _, u := range reaperUIDs {
		if u != st.UID && u != st.GID && u != st.ControlUID {
			return u, true
		}
	}
	return 0, false
}

// WorkspaceOptions is what the workspace needs besides the bundle spec.
type WorkspaceOptions struct {
	Settings Settings
	// NetNS and UTSNS are paths to the control plane's namespaces.
	NetNS, UTSNS string
	// UserNS is the path to the control plane's user namespace, which a
	// bundle with one needs: user code runs under the same mappings (the
	// rootfs and volumes are owned by ids they map) and as a user of that
	// namespace, with no capability in it.
	UserNS string
	// CgroupPath is the workspace's leaf under the sandbox cgroup.
	CgroupPath string
	// Reaper is the host path of the sandbox-reaper binary.
	Reaper string
	// HostMemory is the host's memory, or the lowest memory limit of the
	// cgroups above the sandbox's if lower (0: unknown): it bounds what
	// user code may leave behind in a workspace without a memory limit.
	HostMemory int64
	// JoinedIPCSysctls are the IPC sysctls of the IPC namespace the bundle
	// joins, when it joins one (a pod's, which CRI set from the pod's
	// sysctls): the workspace's own namespace starts from them, under the
	// bundle's own.
	JoinedIPCSysctls map[string]string
}

// runc's defaults (and containerd's): kernel interfaces user code must not
// read or write.
var (
	defaultMaskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	defaultReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// WorkspaceSpec derives the workspace's OCI spec from the bundle's: same
// rootfs, own PID, mount, IPC and cgroup namespaces, the control plane's
// network and UTS namespaces, a private /tmp, no capabilities, and the
// reaper as pid 1.
func WorkspaceSpec(s *specs.Spec, o WorkspaceOptions) (*specs.Spec, error) {
	return userContainerSpec(s, o, nil)
}

// userContainerSpec builds every user container: the workspace (secure
// nil), or one secure exec's container, which differs only where secure
// says (secureexec.go).
func userContainerSpec(s *specs.Spec, o WorkspaceOptions, secure *secureVariant) (*specs.Spec, error) {
	if o.NetNS == "" || o.UTSNS == "" {
		return nil, errors.New("workspace needs the control plane's network and UTS namespaces")
	}
	if o.Reaper == "" {
		return nil, errors.New("workspace needs the reaper binary")
	}
	var w specs.Spec
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, err
	}
	if w.Linux == nil {
		return nil, errors.New("bundle spec has no linux section")
	}
	// Identity: never root, nothing to escalate with.
	w.Process = &specs.Process{
		Args:            []string{ReaperPath},
		Env:             []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cwd:             "/",
		User:            specs.User{UID: o.Settings.UID, GID: o.Settings.GID},
		Capabilities:    &specs.LinuxCapabilities{},
		NoNewPrivileges: true,
		Rlimits:         processRlimits(o.Settings, s.Process),
	}
	adj := workspaceOOMScoreAdj
	w.Process.OOMScoreAdj = &adj
	// The hostname belongs to the shared UTS namespace: set by the control plane.
	w.Hostname, w.Domainname = "", ""
	// Hooks are the control plane's (reservations and the like).
	w.Hooks = nil
	// Namespaces.
	w.Linux.Namespaces = []specs.LinuxNamespace{
		{Type: specs.PIDNamespace},
		{Type: specs.MountNamespace},
		{Type: specs.IPCNamespace},
		{Type: specs.NetworkNamespace, Path: o.NetNS},
		{Type: specs.UTSNamespace, Path: o.UTSNS},
	}
	if hasNamespace(s, specs.CgroupNamespace) {
		w.Linux.Namespaces = append(w.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	if hasNamespace(s, specs.UserNamespace) {
		if o.UserNS == "" {
			return nil, errors.New("workspace needs the control plane's user namespace")
		}
		// Joined, never made: a namespace of its own would own none of the
		// pod's (network, UTS), so sysfs could not be mounted. libcontainer
		// reads the mappings from the namespace.
		w.Linux.Namespaces = append(w.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: o.UserNS})
		w.Linux.UIDMappings, w.Linux.GIDMappings = nil, nil
	}
	// IPC sysctls touch the workspace's own IPC namespace only; the rest
	// (network ones above all) would rewrite namespaces shared with the
	// control plane. They cap what outlives user processes.
	caps := WorkspaceLeftoverCaps(o.Settings.MemoryLimit, o.HostMemory)
	ipc := map[string]string{}
	maps.Copy(ipc, ipcSysctls(o.JoinedIPCSysctls))
	maps.Copy(ipc, ipcSysctls(s.Linux.Sysctl))
	w.Linux.Sysctl = caps.Sysctls(ipc)
	w.Linux.MaskedPaths = union(w.Linux.MaskedPaths, defaultMaskedPaths)
	w.Linux.ReadonlyPaths = union(w.Linux.ReadonlyPaths, defaultReadonlyPaths)
	w.Linux.Seccomp = WorkspaceSeccomp()
	w.Linux.CgroupsPath = o.CgroupPath
	w.Linux.Resources = workspaceResources(s, o.Settings)
	mounts := workspaceMountConfig{
		reaper: o.Reaper, user: o.Settings.UserMounts, caps: caps, platformUID: ReaperUID(o.Settings)}
	if secure != nil {
		secure.apply(&w, &mounts, o.Settings)
	}
	w.Mounts = workspaceMounts(s.Mounts, mounts)
	return &w, nil
}

// Workspace returns the libcontainer config of the workspace container.
func Workspace(id, bundle string, s *specs.Spec, o WorkspaceOptions) (*configs.Config, error) {
	w, err := WorkspaceSpec(s, o)
	if err != nil {
		return nil, err
	}
	return convert(id, bundle, w)
}

// userEnvKeys are the control plane's env keys every exec keeps: they
// describe the environment, not the control plane's secrets.
var userEnvKeys = []string{"PATH", "HOME", "HOSTNAME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "SHELL", "PWD"}

// workspaceEnv drops every entry of env that is the same KEY=VALUE as one
// of base's (it came from the control plane, e.g. CP_API_KEY=...), unless
// its key is in userEnvKeys, LC_*, or in allowed (io.sandbox.user.env).
// What the exec set itself, with another value, passes.
func workspaceEnv(env []string, base *specs.Process, allowed []string) []string {
	if base == nil || len(base.Env) == 0 {
		return env
	}
	inherited := make(map[string]bool, len(base.Env))
	for _, e := range base.Env {
		inherited[e] = true
	}
	out := make([]string, 0, len(env))
	for _, e := range env {
		if inherited[e] {
			k, _, _ := strings.Cut(e, "=")
			if !slices.Contains(userEnvKeys, k) && !strings.HasPrefix(k, "LC_") && !slices.Contains(allowed, k) {
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// workspaceRlimits keeps the given limits but forces RLIMIT_CORE to a hard
// 0: a core dump would write a process' memory (and secrets) to disk.
func workspaceRlimits(p *specs.Process) []specs.POSIXRlimit {
	var out []specs.POSIXRlimit
	if p != nil {
		for _, r := range p.Rlimits {
			if r.Type != "RLIMIT_CORE" {
				out = append(out, r)
			}
		}
	}
	return append(out, specs.POSIXRlimit{Type: "RLIMIT_CORE", Hard: 0, Soft: 0})
}

// processRlimits are what libcontainer sets on a user container's own
// processes (reaper, waiters): none with st.SelfRlimits, where they lower
// RLIMIT_CORE themselves and each waiter applies its exec's rlimits
// (ExecRequest) before the exec.
func processRlimits(st Settings, base *specs.Process) []specs.POSIXRlimit {
	if st.SelfRlimits {
		return nil
	}
	return workspaceRlimits(base)
}

func workspaceResources(s *specs.Spec, st Settings) *specs.LinuxResources {
	r := &specs.LinuxResources{}
	if s.Linux.Resources != nil {
		// Device rules are per cgroup on v1: keep the bundle's.
		r.Devices = s.Linux.Resources.Devices
	}
	pids := st.PidsLimit
	r.Pids = &specs.LinuxPids{Limit: &pids}
	// Half the control plane's weight: busy user code slows, not starves, it.
	shares := uint64(workspaceCPUShares)
	r.CPU = &specs.LinuxCPU{Shares: &shares}
	if st.MemoryLimit > 0 {
		m := st.MemoryLimit
		r.Memory = &specs.LinuxMemory{Limit: &m}
	}
	return r
}

// userBindMounts are the bundle's bind mounts every workspace keeps,
// read-only: the names the control plane resolves with.
var userBindMounts = []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}

// credentialPaths are where credentials are mounted by convention: a
// Kubernetes service account's token, Docker's and Compose's secrets.
var credentialPaths = []string{"/var/run/secrets", "/run/secrets"}

// credentialVolumes are the kubelet's volume plugins whose volumes hold
// credentials: Secrets and projected volumes (service account tokens).
var credentialVolumes = []string{"/volumes/kubernetes.io~secret/", "/volumes/kubernetes.io~projected/"}

// runtimeDirs hold the host's runtime and agent sockets and state.
var runtimeDirs = []string{"/run/containerd", "/var/run/containerd", "/run/docker", "/var/run/docker", "/run/crio",
	"/var/run/crio", "/run/podman", "/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources", "/run/io.sandbox"}

// credentialMount tells whether a bundle mount carries credentials, which
// user code gets only when the platform names it: a Secret or projected
// volume, anything at or below a conventional secrets path, a runtime's
// or agent's socket or state (a .sock, the runtimes' directories), or the
// kubelet's termination log (the control plane's own status).
func credentialMount(m specs.Mount) bool {
	dst, src := path.Clean(m.Destination), path.Clean(m.Source)
	for _, p := range credentialPaths {
		if within(dst, p) {
			return true
		}
	}
	for _, v := range credentialVolumes {
		if strings.Contains(src+"/", v) {
			return true
		}
	}
	for _, d := range runtimeDirs {
		if within(src, d) || within(dst, d) {
			return true
		}
	}
	if strings.HasSuffix(src, ".sock") || strings.HasSuffix(dst, ".sock") || dst == "/dev/termination-log" {
		return true
	}
	return false
}

// workspaceMountConfig is what shapes the workspace's mounts.
type workspaceMountConfig struct {
	// reaper is the reaper binary's host path.
	reaper string
	// user are the bundle mount destinations shared with user code.
	user []string
	// caps size every tmpfs.
	caps LeftoverCaps
	// platformUID owns PlatformPtyDir (the reaper's uid).
	platformUID uint32
	// noPlatformPty leaves the platform's devpts instance out: a secure
	// exec never has a terminal.
	noPlatformPty bool
	// noCgroupfs leaves the cgroup filesystem out (a secure exec).
	noCgroupfs bool
	// homes each get a fresh tmpfs of their own (homeCap, owned by
	// homeOwner): a secure exec's private HOME over the workspace's.
	homes     []string
	homeCap   TmpfsCap
	homeOwner Identity
}

// workspaceMounts shapes the bundle's mounts for user code. It keeps the
// kernel filesystems (proc, sysfs and cgroupfs read-only, mqueue, devpts
// capped at WorkspacePtyMax ptys), the /dev tmpfs, read-only /etc/hosts,
// /etc/resolv.conf and /etc/hostname, and every data volume (emptyDir,
// hostPath, persistent volumes, configMaps, `ctr run --mount`) with its
// own read-only and propagation options: the usual workspace of a coding
// agent is a volume it shares with the code it runs. Credentials are the
// control plane's (credentialMount: Secret and projected volumes, service
// account tokens, the runtime's and agents' sockets, the termination log)
// unless their destination is in c.user (io.sandbox.user.mounts), and so
// is the sandbox API's directory, always. /tmp and /dev/shm become private
// tmpfs (CRI's /dev/shm is the pod's, shared with the control plane).
// Every tmpfs is sized and its inodes counted from c.caps; the platform's
// devpts instance and the reaper are added.
func workspaceMounts(in []specs.Mount, c workspaceMountConfig) []specs.Mount {
	var out []specs.Mount
	privateTmp, shm := true, false
	for _, m := range in {
		m.Options = slices.Clone(m.Options)
		dst := path.Clean(m.Destination)
		if m.Type == "sysfs" || m.Type == "cgroup" || m.Type == "cgroup2" || dst == "/sys" || dst == "/sys/fs/cgroup" {
			m.Options = readOnly(m.Options)
		}
		if m.Type == "devpts" {
			m.Options = ptyMax(m.Options)
		}
		switch {
		case c.noCgroupfs && (m.Type == "cgroup" || m.Type == "cgroup2" || dst == "/sys/fs/cgroup"):
			continue
		case controlPlaneMount(m):
			// The sandbox API is the control plane's alone, whatever the
			// annotations say.
			continue
		case slices.Contains(c.user, dst):
			// The platform shares it on purpose.
			if dst == "/tmp" {
				privateTmp = false
			}
		case dst == "/tmp":
			continue
		case dst == "/dev/shm":
			if shm {
				continue
			}
			shm = true
			m = specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
				Options: []string{"nosuid", "nodev", "noexec", "mode=1777"}}
		case m.Type == "proc" || m.Type == "sysfs" || m.Type == "cgroup" || m.Type == "cgroup2" ||
			m.Type == "mqueue" || m.Type == "devpts":
		case m.Type == "tmpfs" && !isBind(m):
			// A tmpfs is a new, empty instance in each container: private.
		case slices.Contains(userBindMounts, dst) && isBind(m):
			m.Options = readOnly(m.Options)
		case credentialMount(m):
			continue
		}
		if slices.Contains(c.homes, dst) {
			continue // the private HOME below takes its place
		}
		out = append(out, m)
		if m.Type == "devpts" && dst == "/dev/pts" && !c.noPlatformPty {
			out = append(out, platformPtyMounts(m, c.platformUID)...)
		}
	}
	if privateTmp {
		out = append(out, specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=1777"}})
	}
	for _, home := range c.homes {
		out = append(out, homeMount(c, home))
	}
	capTmpfsMounts(out, c)
	return append(out, specs.Mount{Destination: ReaperPath, Type: "bind", Source: c.reaper,
		Options: []string{"bind", "ro", "nosuid", "nodev"}})
}

// capTmpfsMounts sizes every tmpfs mount (each a fresh instance whose pages
// and inodes are charged to the workspace): /tmp and /dev/shm their own
// caps, the others an equal part of the rest. The platform's pty directory
// is sized already.
func capTmpfsMounts(ms []specs.Mount, c workspaceMountConfig) {
	caps := c.caps
	isOther := func(m specs.Mount) bool {
		dst := path.Clean(m.Destination)
		return m.Type == "tmpfs" && !isBind(m) && dst != "/tmp" && dst != "/dev/shm" && dst != PlatformPtyDir && !slices.Contains(c.homes, dst)
	}
	others := int64(0)
	for _, m := range ms {
		if isOther(m) {
			others++
		}
	}
	for i, m := range ms {
		if m.Type != "tmpfs" || isBind(m) {
			continue
		}
		switch dst := path.Clean(m.Destination); {
		case dst == "/tmp":
			ms[i].Options = capTmpfs(m.Options, caps.Tmp)
		case dst == "/dev/shm":
			ms[i].Options = capTmpfs(m.Options, caps.Shm)
		case isOther(m):
			ms[i].Options = capTmpfs(m.Options, tmpfsCap(caps.OtherTmpfs/others))
		}
	}
}

// platformPtyMounts are the platform's devpts instance (see PlatformPtyDir)
// beside the workspace's devpts ws, whose group and mode it copies.
func platformPtyMounts(ws specs.Mount, uid uint32) []specs.Mount {
	id := strconv.FormatUint(uint64(uid), 10)
	opts := []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "max=" + strconv.Itoa(PlatformPtyMax)}
	for _, o := range ws.Options {
		if strings.HasPrefix(o, "gid=") || strings.HasPrefix(o, "mode=") {
			opts = append(opts, o)
		}
	}
	return []specs.Mount{
		{Destination: PlatformPtyDir, Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "noexec", "mode=0700", "uid=" + id, "gid=" + id, "size=4096", "nr_inodes=16"}},
		{Destination: PlatformPtyDir + "/pts", Type: "devpts", Source: "devpts", Options: opts},
	}
}

// controlPlaneMount tells whether m carries the sandbox API: its socket
// directory in the control plane, or anything of the shim's host run
// directory.
func controlPlaneMount(m specs.Mount) bool {
	return within(path.Clean(m.Destination), api.ControlPlaneSocketDir) ||
		(isBind(m) && within(path.Clean(m.Source), api.HostRunDir))
}

// within tells whether p is dir or below it.
func within(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// readOnly replaces rw with ro.
func readOnly(opts []string) []string {
	opts = slices.DeleteFunc(opts, func(o string) bool { return o == "rw" || o == "ro" })
	return append(opts, "ro")
}

// ptyMax caps a devpts mount at WorkspacePtyMax ptys, or the bundle's own
// lower max.
func ptyMax(opts []string) []string {
	n := WorkspacePtyMax
	opts = slices.DeleteFunc(opts, func(o string) bool {
		v, ok := strings.CutPrefix(o, "max=")
		if !ok {
			return false
		}
		if m, err := strconv.Atoi(v); err == nil && m >= 0 && m < n {
			n = m
		}
		return true
	})
	return append(opts, "max="+strconv.Itoa(n))
}

// ipcSysctlPrefixes are the sysctls the kernel keeps per IPC namespace.
var ipcSysctlPrefixes = []string{"kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue."}

func ipcSysctls(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if slices.ContainsFunc(ipcSysctlPrefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

func hasNamespace(s *specs.Spec, t specs.LinuxNamespaceType) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// CgroupPaths are the sandbox cgroup and its two leaves.
type CgroupPaths struct {
	Sandbox, Control, User string
}

// Cgroups places the sandbox where the bundle asks (containerd's
// cgroupsPath, or /<namespace>/<id> like runc's default) with its leaves.
func Cgroups(s *specs.Spec, namespace, id string) (CgroupPaths, error) {
	p := ""
	if s.Linux != nil {
		p = s.Linux.CgroupsPath
	}
	if p == "" {
		p = "/" + path.Join(namespace, id)
	}
	if !path.IsAbs(p) {
		return CgroupPaths{}, fmt.Errorf("cgroupsPath %q: only absolute cgroupfs paths are supported", p)
	}
	p = path.Clean(p)
	if p == "/" {
		return CgroupPaths{}, fmt.Errorf("cgroupsPath %q: the root cgroup cannot hold a sandbox", p)
	}
	return CgroupPaths{Sandbox: p, Control: path.Join(p, "control"), User: path.Join(p, "user")}, nil
}

// WaiterArg makes the reaper binary a pooled exec (see libexec/reaper).
const WaiterArg = "--wait-exec"

// ReaperArg makes the reaper binary a user container's pid 1 that forks
// waiters on request over its control socket (fd 3).
const ReaperArg = "--fork-waiters"

// ReaperSeccompArg, after ReaperArg, makes the reaper install the seccomp
// program it reads from fd 4 before anything else: a container whose
// profile was compiled ahead (a secure exec's) has none in its config.
const ReaperSeccompArg = "--seccomp-fd-4"

// waiterCaps are all a pooled exec holds while it waits: enough to take the
// identity its request names, and to drop them for good right before the
// exec.
var waiterCaps = []string{"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"}

// WaiterProcess is a pooled exec: it waits under the reaper's uid, out of
// user code's reach (a same-uid process could prlimit, renice or stop it
// and so cripple the platform's next exec), and takes the identity of the
// ExecRequest it receives.
//
// Its rlimits are the bundle process' (plus no core dumps); the request's
// own rlimits are applied by the waiter before it execs.
func WaiterProcess(st Settings, base *specs.Process) (*libcontainer.Process, error) {
	ruid := ReaperUID(st)
	lp, err := Process(&specs.Process{
		Args: []string{ReaperPath, WaiterArg},
		Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cwd:  "/", User: specs.User{UID: ruid, GID: ruid},
		NoNewPrivileges: true,
		Rlimits:         processRlimits(st, base),
	})
	if err != nil {
		return nil, err
	}
	// Ambient (and so inheritable) carries them across the exec into the
	// waiter, which runs as a non-root uid.
	lp.Capabilities = &configs.Capabilities{Bounding: waiterCaps, Effective: waiterCaps, Permitted: waiterCaps, Inheritable: waiterCaps, Ambient: waiterCaps}
	return lp, nil
}

// ReaperProcess is a user container's pid 1. It runs under its own uid, so
// user code cannot signal, renice or prlimit it either. It forks the
// waiters, which inherit everything from it (uid, waiterCaps, rlimits,
// no_new_privs, seccomp, oom_score_adj), so it holds what a waiter holds:
// waiterCaps, which no process of user code ever gets (a waiter drops
// them for good before it execs).
func ReaperProcess(st Settings, base *specs.Process) (*libcontainer.Process, error) {
	ruid := ReaperUID(st)
	lp, err := Process(&specs.Process{
		Args: []string{ReaperPath, ReaperArg}, Cwd: "/",
		User:            specs.User{UID: ruid, GID: ruid},
		NoNewPrivileges: true,
		Rlimits:         processRlimits(st, base),
	})
	if err != nil {
		return nil, err
	}
	lp.Capabilities = &configs.Capabilities{Bounding: waiterCaps, Effective: waiterCaps, Permitted: waiterCaps, Inheritable: waiterCaps, Ambient: waiterCaps}
	lp.Init = true
	return lp, nil
}
