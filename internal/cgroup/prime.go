package cgroup

import (
	"fmt"
	"os"
	"path"

	"github.com/opencontainers/cgroups"
)

// PrimeMigration readies the kernel's cgroup migration lock in the
// background, so the control plane's join at Create does not wait for it.
// The first migration after a quiet spell waits an RCU grace period (the
// lock's writer side switching readers to their slow path; 5-15 ms
// measured on cgroup v1), the ones that follow within about a grace period
// do not. Moving the shim into the cgroup it is already in pays that wait
// while the shim still starts up, and changes nothing else. The caller must
// know that nothing moves the shim meanwhile: a move in flight would be
// undone.
func PrimeMigration() {
	go func() { _ = primeMigration() }()
}

func primeMigration() error {
	dir, err := ownCgroupDir()
	if err != nil {
		return err
	}
	if err := cgroups.WriteCgroupProc(dir, os.Getpid()); err != nil {
		return fmt.Errorf("move the shim into its own cgroup %s: %w", dir, err)
	}
	return nil
}

// ownCgroupDir is the cgroupfs directory of the shim's cgroup in one
// hierarchy; the lock is global, so any hierarchy will do.
func ownCgroupDir() (string, error) {
	if cgroups.IsCgroup2UnifiedMode() {
		own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
		if err != nil {
			return "", err
		}
		return path.Join("/sys/fs/cgroup", own[""]), nil
	}
	return cgroups.GetOwnCgroupPath("pids")
}
