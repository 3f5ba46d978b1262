// Package cgroup holds every cgroup of a sandbox: the sandbox cgroup with
// the bundle's limits, its control and user leaves, the per-exec leaves
// under user, the limits of the cgroups above it, stats and OOM events.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"time"

	ccgroups "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/log"
	"github.com/opencontainers/cgroups"
	cgmanager "github.com/opencontainers/cgroups/manager"
	"golang.org/x/sys/unix"
)

// ReaperLeaf is the user leaf's child holding a user container's reaper on
// cgroup v2, which allows no controllers below a cgroup with processes.
const ReaperLeaf = "reaper"

// Sandbox is the sandbox cgroup: the bundle's limits, shared by the control
// plane and user code below it.
type Sandbox struct {
	// Path is its cgroupfs path; the leaves are below it.
	Path    string
	manager cgroups.Manager
}

// CreateSandbox creates the sandbox cgroup at path with res.
func CreateSandbox(path string, res *cgroups.Resources) (_ *Sandbox, retErr error) {
	m, err := cgmanager.New(&cgroups.Cgroup{Path: path, Resources: res})
	if err != nil {
		return nil, fmt.Errorf("sandbox cgroup %s: %w", path, err)
	}
	if err := m.Apply(-1); err != nil {
		return nil, fmt.Errorf("create sandbox cgroup %s: %w", path, err)
	}
	defer func() {
		if retErr != nil {
			_ = m.Destroy()
		}
	}()
	if err := m.Set(res); err != nil {
		return nil, fmt.Errorf("set sandbox cgroup %s: %w", path, err)
	}
	return &Sandbox{Path: path, manager: m}, nil
}

// LoadSandbox finds a sandbox cgroup again (after its shim died), to
// remove it.
func LoadSandbox(path string) (*Sandbox, error) {
	m, err := cgmanager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{}})
	if err != nil {
		return nil, fmt.Errorf("sandbox cgroup %s: %w", path, err)
	}
	return &Sandbox{Path: path, manager: m}, nil
}

// Set applies new limits to the sandbox cgroup.
func (s *Sandbox) Set(res *cgroups.Resources) error {
	if err := s.manager.Set(res); err != nil {
		return fmt.Errorf("set sandbox cgroup %s: %w", s.Path, err)
	}
	return nil
}

// Freeze freezes (or thaws) the whole sandbox.
func (s *Sandbox) Freeze(frozen bool) error {
	state := cgroups.Thawed
	if frozen {
		state = cgroups.Frozen
	}
	if err := s.manager.Freeze(state); err != nil {
		if frozen {
			_ = s.manager.Freeze(cgroups.Thawed)
		}
		return fmt.Errorf("freeze %s: %w", s.Path, err)
	}
	return nil
}

// Pids lists every process of the sandbox, both leaves and below.
func (s *Sandbox) Pids() ([]int, error) {
	pids, err := s.manager.GetAllPids()
	if err != nil {
		return nil, fmt.Errorf("list pids of %s: %w", s.Path, err)
	}
	return pids, nil
}

// KillAll kills every process of the sandbox, both leaves and below, and
// waits up to timeout for them to leave it: the delete action after a
// shim crash, when nothing else knows them all (secure containers built
// or half built, orphans). Frozen while first killed, so nothing forks
// past it.
func (s *Sandbox) KillAll(timeout time.Duration) error {
	list := func() ([]int, error) {
		pids, err := s.manager.GetAllPids()
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil // gone already: nothing left to kill
		}
		return pids, err
	}
	if s.manager.Freeze(cgroups.Frozen) == nil {
		pids, _ := list()
		killPids(pids)
		// A frozen process dies once thawed.
		_ = s.manager.Freeze(cgroups.Thawed)
	}
	if err := killUntilEmpty(list, timeout); err != nil {
		return fmt.Errorf("%s: %w", s.Path, err)
	}
	return nil
}

// killUntilEmpty SIGKILLs what list returns until it returns none, or
// timeout passed: each pass catches what forked past the one before.
func killUntilEmpty(list func() ([]int, error), timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := list()
		if err != nil {
			return fmt.Errorf("list pids: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		killPids(pids)
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes still there %v after SIGKILL", len(pids), timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func killPids(pids []int) {
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// Destroy removes the sandbox cgroup and everything below it.
func (s *Sandbox) Destroy() error {
	if err := s.manager.Destroy(); err != nil {
		return fmt.Errorf("remove sandbox cgroup %s: %w", s.Path, err)
	}
	return nil
}

// load opens a cgroup with containerd's cgroups library, whose stats types
// containerd's metrics API carries.
func load(p string) (any, error) {
	if ccgroups.Mode() == ccgroups.Unified {
		return cgroupsv2.Load(p)
	}
	return cgroup1.Load(cgroup1.StaticPath(p))
}

// Join moves pid into the existing cgroup at path (the shim's own, which
// containerd's WithShimCgroup names).
func Join(path string, pid int) error {
	cg, err := load(path)
	if err != nil {
		return fmt.Errorf("load cgroup %s: %w", path, err)
	}
	switch cg := cg.(type) {
	case cgroup1.Cgroup:
		err = cg.AddProc(uint64(pid))
	case *cgroupsv2.Manager:
		err = cg.AddProc(uint64(pid))
	}
	if err != nil {
		return fmt.Errorf("join cgroup %s: %w", path, err)
	}
	return nil
}

// Stats are the sandbox cgroup's metrics as containerd's Stats carries
// them (cgroup v1 or v2 metrics).
func (s *Sandbox) Stats() (any, error) {
	cg, err := load(s.Path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", s.Path, err)
	}
	var stats any
	switch cg := cg.(type) {
	case cgroup1.Cgroup:
		stats, err = cg.Stat(cgroup1.IgnoreNotExist)
	case *cgroupsv2.Manager:
		stats, err = cg.Stat()
	default:
		return nil, fmt.Errorf("unsupported cgroup type %T", cg)
	}
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", s.Path, err)
	}
	return stats, nil
}

// PlaceReaper moves a user container's reaper (pid) into ReaperLeaf under
// its cgroup (userPath) on cgroup v2, and hands the controllers down so the
// per-exec leaves beside it can have their own limits. On v1 it does
// nothing: leaves with and without processes may nest there.
func PlaceReaper(userPath string, pid int) error {
	if !cgroups.IsCgroup2UnifiedMode() {
		return nil
	}
	base := path.Join("/sys/fs/cgroup", userPath)
	leaf := path.Join(base, ReaperLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("reaper cgroup: %w", err)
	}
	if err := cgroups.WriteCgroupProc(leaf, pid); err != nil {
		return fmt.Errorf("move reaper to %s: %w", leaf, err)
	}
	// Without pids below user, no exec could get its own leaf: fatal. cpu
	// and memory only refine it.
	if err := cgroups.WriteFile(base, "cgroup.subtree_control", "+pids"); err != nil {
		return fmt.Errorf("enable pids below %s: %w", base, err)
	}
	for _, c := range []string{"cpu", "memory"} {
		if err := cgroups.WriteFile(base, "cgroup.subtree_control", "+"+c); err != nil {
			log.L.WithError(err).Warnf("cgroup %s: exec leaves without the %s controller", base, c)
		}
	}
	return nil
}

// ParentCountsChildren tells whether a cgroup's OOM events already count
// its children's (cgroup v2's memory.events), so watching a leaf as well
// would report one kill twice.
func ParentCountsChildren() bool { return cgroups.IsCgroup2UnifiedMode() }
