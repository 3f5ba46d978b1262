// Package spec turns the OCI bundle containerd hands the shim into libcontainer
// configurations. Everything here is a pure function of its inputs, so it is
// tested with golden files and never touches the host.
package spec

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/api"
)

// ControlPlaneConfig is what Create builds the control plane from.
type ControlPlaneConfig struct {
	// Container is the init's container, placed in the control leaf of the
	// sandbox cgroup with the bundle's device rules only.
	Container *configs.Config
	// SandboxResources are the bundle's limits: they go on the sandbox
	// cgroup, the parent of both leaves, so the whole sandbox shares them.
	SandboxResources *configs.Resources
	// Init is the task's init process.
	Init *libcontainer.Process
}

// ControlPlane converts the bundle once into the control plane's container
// and init, built as runc would build them, with the cgroup split described
// on ControlPlaneConfig. bundle makes a relative root path absolute.
// apiDir, when set, is the host directory of the sandbox API's control
// plane socket, bind-mounted at api.ControlPlaneSocketDir.
func ControlPlane(id, bundle string, s *specs.Spec, paths CgroupPaths, apiDir string) (ControlPlaneConfig, error) {
	cfg, err := convert(id, bundle, s)
	if err != nil {
		return ControlPlaneConfig{}, err
	}
	if apiDir != "" {
		if err := mountAPI(cfg, apiDir); err != nil {
			return ControlPlaneConfig{}, err
		}
	}
	init, err := Process(s.Process)
	if err != nil {
		return ControlPlaneConfig{}, err
	}
	init.Init = true
	res := cfg.Cgroups.Resources
	leaf := *cfg.Cgroups
	// A cgroupfs path, not a name/parent pair: Cgroups validated it.
	leaf.Name, leaf.Parent, leaf.Path = "", "", paths.Control
	leaf.Resources = &configs.Resources{Devices: res.Devices, SkipDevices: res.SkipDevices}
	cfg.Cgroups = &leaf
	return ControlPlaneConfig{Container: cfg, SandboxResources: res, Init: init}, nil
}

// mountAPI bind-mounts the API socket's directory into the control plane.
// It goes into the libcontainer config, not the bundle spec, which the
// workspace and every secure container are built from: they never get it.
// Last, so that a bundle tmpfs on /run does not hide it; libcontainer makes
// the mount point (a rootfs that cannot take /run/sandbox fails Create with
// libcontainer's error naming it).
func mountAPI(cfg *configs.Config, apiDir string) error {
	if !filepath.IsAbs(apiDir) {
		return fmt.Errorf("sandbox API directory %q is not absolute", apiDir)
	}
	for _, m := range cfg.Mounts {
		if d := filepath.Clean(m.Destination); d == api.ControlPlaneSocketDir || strings.HasPrefix(d, api.ControlPlaneSocketDir+"/") {
			return fmt.Errorf("bundle mount at %s: that path is the sandbox API's (%s)", m.Destination, api.ControlPlaneSocket)
		}
	}
	cfg.Mounts = append(cfg.Mounts, &configs.Mount{
		Source:      apiDir,
		Destination: api.ControlPlaneSocketDir,
		Device:      "bind",
		Flags:       unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC,
	})
	return nil
}

// convert builds a libcontainer config from a spec as runc does.
func convert(id, bundle string, s *specs.Spec) (*configs.Config, error) {
	if s == nil {
		return nil, errors.New("bundle has no spec")
	}
	if s.Root == nil || s.Root.Path == "" {
		return nil, errors.New("bundle spec has no root path")
	}
	if s.Process == nil {
		return nil, errors.New("bundle spec has no process")
	}
	if len(s.Process.Args) == 0 {
		return nil, errors.New("bundle spec process has no args")
	}
	if s.Linux == nil {
		return nil, errors.New("bundle spec has no linux section")
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return nil, fmt.Errorf("mount destination %q is not absolute", m.Destination)
		}
	}
	c := *s
	root := *s.Root
	if !filepath.IsAbs(root.Path) {
		root.Path = filepath.Join(bundle, root.Path)
	}
	c.Root = &root
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:   id,
		Spec:         &c,
		NoNewKeyring: false,
	})
	if err != nil {
		return nil, fmt.Errorf("convert bundle spec: %w", err)
	}
	// specconv labels the config with the process' cwd as the bundle
	// (hooks read it): name the bundle itself, so the result depends on the
	// arguments only.
	for i, l := range cfg.Labels {
		if strings.HasPrefix(l, "bundle=") {
			cfg.Labels[i] = "bundle=" + bundle
		}
	}
	// specconv lists the annotations from a map: in random order.
	slices.Sort(cfg.Labels)
	return cfg, nil
}

// Process converts an OCI process (the init's, or an exec's) into the
// libcontainer process that runs it, mirroring runc's own conversion.
func Process(p *specs.Process) (*libcontainer.Process, error) {
	if p == nil {
		return nil, errors.New("no process spec")
	}
	if len(p.Args) == 0 {
		return nil, errors.New("process has no args")
	}
	nnp := p.NoNewPrivileges
	lp := &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		UID:             int(p.User.UID),
		GID:             int(p.User.GID),
		Cwd:             p.Cwd,
		Label:           p.SelinuxLabel,
		NoNewPrivileges: &nnp,
		AppArmorProfile: p.ApparmorProfile,
		Scheduler:       p.Scheduler,
		IOPriority:      p.IOPriority,
	}
	if p.ConsoleSize != nil {
		lp.ConsoleWidth = uint16(p.ConsoleSize.Width)
		lp.ConsoleHeight = uint16(p.ConsoleSize.Height)
	}
	if c := p.Capabilities; c != nil {
		lp.Capabilities = &configs.Capabilities{
			Bounding:    c.Bounding,
			Effective:   c.Effective,
			Inheritable: c.Inheritable,
			Permitted:   c.Permitted,
			Ambient:     c.Ambient,
		}
	}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	for _, r := range p.Rlimits {
		rl, err := convertRlimit(r)
		if err != nil {
			return nil, err
		}
		lp.Rlimits = append(lp.Rlimits, rl)
	}
	aff, err := configs.ConvertCPUAffinity(p.ExecCPUAffinity)
	if err != nil {
		return nil, fmt.Errorf("exec cpu affinity: %w", err)
	}
	lp.CPUAffinity = aff
	return lp, nil
}

var rlimits = map[string]int{
	"RLIMIT_CPU":        unix.RLIMIT_CPU,
	"RLIMIT_FSIZE":      unix.RLIMIT_FSIZE,
	"RLIMIT_DATA":       unix.RLIMIT_DATA,
	"RLIMIT_STACK":      unix.RLIMIT_STACK,
	"RLIMIT_CORE":       unix.RLIMIT_CORE,
	"RLIMIT_RSS":        unix.RLIMIT_RSS,
	"RLIMIT_NPROC":      unix.RLIMIT_NPROC,
	"RLIMIT_NOFILE":     unix.RLIMIT_NOFILE,
	"RLIMIT_MEMLOCK":    unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS":         unix.RLIMIT_AS,
	"RLIMIT_LOCKS":      unix.RLIMIT_LOCKS,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_MSGQUEUE":   unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE":       unix.RLIMIT_NICE,
	"RLIMIT_RTPRIO":     unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME":     unix.RLIMIT_RTTIME,
}

// convertRlimit converts one OCI rlimit.
func convertRlimit(r specs.POSIXRlimit) (configs.Rlimit, error) {
	t, ok := rlimits[r.Type]
	if !ok {
		return configs.Rlimit{}, fmt.Errorf("unknown rlimit type %q", r.Type)
	}
	return configs.Rlimit{Type: t, Hard: r.Hard, Soft: r.Soft}, nil
}
