package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/cgroups"
)

// execControllers get a leaf per exec: pids so one exec's fork bomb cannot
// take the last pid from the next exec, cpu so the next exec is not starved
// by it either.
var execControllers = []string{"pids", "cpu"}

// ExecLeaf is one exec's sub-cgroup under its user container's cgroup.
type ExecLeaf struct {
	// SubCgroupPaths is libcontainer's Process.SubCgroupPaths for it.
	SubCgroupPaths map[string]string
	mu             sync.Mutex
	dirs           []string
}

// NewExecLeaf creates the leaf name under a user container's cgroup
// (containerPaths: libcontainer's State.CgroupPaths) with pidsLimit. A
// directory left by a shim that was killed is taken over, as runc accepts
// existing cgroups.
func NewExecLeaf(containerPaths map[string]string, name string, pidsLimit int64) (*ExecLeaf, error) {
	l := &ExecLeaf{SubCgroupPaths: map[string]string{}}
	if cgroups.IsCgroup2UnifiedMode() {
		base, ok := containerPaths[""]
		if !ok {
			return nil, errors.New("user container has no cgroup v2 path")
		}
		dir := filepath.Join(base, name)
		if err := l.mkdir(dir); err != nil {
			return nil, err
		}
		if err := l.limitPids(dir, pidsLimit); err != nil {
			return nil, err
		}
		l.SubCgroupPaths[""] = name
		return l, nil
	}
	for _, controller := range execControllers {
		base, ok := containerPaths[controller]
		if !ok {
			continue
		}
		dir := filepath.Join(base, name)
		if err := l.mkdir(dir); err != nil {
			return nil, err
		}
		if controller == "pids" {
			if err := l.limitPids(dir, pidsLimit); err != nil {
				return nil, err
			}
		}
		// Co-mounted controllers (cpu,cpuacct) share the directory: name them
		// all, or libcontainer would move the process back to the leaf.
		for c, p := range containerPaths {
			if p == base {
				l.SubCgroupPaths[c] = name
			}
		}
	}
	return l, nil
}

func (l *ExecLeaf) mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		l.Remove()
		return fmt.Errorf("exec cgroup: %w", err)
	}
	l.mu.Lock()
	l.dirs = append(l.dirs, dir)
	l.mu.Unlock()
	return nil
}

func (l *ExecLeaf) limitPids(dir string, limit int64) error {
	if err := cgroups.WriteFile(dir, "pids.max", strconv.FormatInt(limit, 10)); err != nil {
		l.Remove()
		return fmt.Errorf("exec pids limit: %w", err)
	}
	return nil
}

// Remove deletes the leaf once empty; one that orphans still hold stays
// until the whole sandbox cgroup goes. Safe to call more than once, from
// any goroutine.
func (l *ExecLeaf) Remove() {
	l.mu.Lock()
	dirs := l.dirs
	l.dirs = nil
	l.mu.Unlock()
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i])
	}
}

// Add moves pid into the leaf (each hierarchy on cgroup v1). A waiter the
// reaper forked is moved once, when it is built, never on an exec's path.
func (l *ExecLeaf) Add(pid int) error {
	l.mu.Lock()
	dirs := l.dirs
	l.mu.Unlock()
	if len(dirs) == 0 {
		return errors.New("exec cgroup removed")
	}
	for _, dir := range dirs {
		if err := cgroups.WriteCgroupProc(dir, pid); err != nil {
			return fmt.Errorf("move waiter %d to %s: %w", pid, dir, err)
		}
	}
	return nil
}

// execKillTimeout bounds ExecLeaf.KillAll: the leaf's pids limit bounds
// what can fork meanwhile.
const execKillTimeout = 100 * time.Millisecond

// KillAll kills every process in the leaf (an exec and all it started,
// daemons included) and waits, briefly, for it to be empty. cgroup v2's
// cgroup.kill does it in one write where the kernel has it.
func (l *ExecLeaf) KillAll() error {
	l.mu.Lock()
	dirs := l.dirs
	l.mu.Unlock()
	if len(dirs) == 0 {
		return errors.New("exec cgroup removed")
	}
	// Every process of the leaf is in each of its directories.
	dir := dirs[0]
	if os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0) == nil {
		return nil
	}
	if err := killUntilEmpty(func() ([]int, error) { return cgroups.GetPids(dir) }, execKillTimeout); err != nil {
		return fmt.Errorf("exec cgroup %s: %w", dir, err)
	}
	return nil
}

// Empty tells whether no process is left in the leaf, so it can serve
// another exec: one whose orphans still run there cannot, or they would
// share the next exec's pids limit.
func (l *ExecLeaf) Empty() bool {
	l.mu.Lock()
	dirs := l.dirs
	l.mu.Unlock()
	if len(dirs) == 0 {
		return false
	}
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil || len(bytes.TrimSpace(b)) > 0 {
			return false
		}
	}
	return true
}
