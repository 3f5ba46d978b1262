// Package cgroupprime readies the kernel's cgroup migration lock while the
// shim server starts, so the control plane's first cgroup join at Create
// does not wait for it.
//
// The first cgroup migration after a quiet spell waits an RCU grace period
// (cgroup_threadgroup_rwsem switching readers to their slow path; 5-15 ms
// measured on cgroup v1), and holds cgroup_mutex meanwhile; the migrations
// that follow within about a grace period do not wait. Moving the server
// into the cgroup it is already in pays that wait in the background and
// changes nothing else. It runs from this package's init, before the rest
// of the binary's packages initialise (about 3 ms): Go initialises ready
// packages in import path order, so this one imports only packages without
// initialisation work of their own that sort after it (os is initialised
// first anyway), and finds its cgroup itself.
//
// The start action asks for it (Env) only when it moves the server into no
// cgroup: a move in flight would be undone.
package cgroupprime

import (
	"os"
	"slices"
	"strings"
)

// Env set to "1" in the server's environment asks for the priming move.
const Env = "SANDBOX_SHIM_PRIME_CGROUP"

func init() {
	if os.Getenv(Env) != "1" {
		return
	}
	// Not for anything the server starts.
	_ = os.Unsetenv(Env)
	go func() { _ = prime(os.Getpid()) }()
}

// prime moves pid into the cgroup it is in, in one hierarchy (the lock is
// global). It writes only into a cgroup whose process list holds pid, so a
// wrong guess can fail but never move it.
func prime(pid int) error {
	dir, err := ownCgroupDir()
	if err != nil {
		return err
	}
	procs := dir + "/cgroup.procs"
	if !holds(procs, pid) {
		return os.ErrNotExist
	}
	f, err := os.OpenFile(procs, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(itoa(pid))
	return err
}

// ownCgroupDir is this process' cgroup directory in the pids hierarchy on
// cgroup v1, or in the unified one on v2.
func ownCgroupDir() (string, error) {
	membership, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	return cgroupDir(string(membership), string(mountinfo))
}

// cgroupDir finds the directory from /proc/self/cgroup and mountinfo
// lines: the pids controller's hierarchy, else the unified hierarchy.
func cgroupDir(membership, mountinfo string) (string, error) {
	pidsPath, unifiedPath, hasPids, hasUnified := "", "", false, false
	for _, line := range strings.Split(membership, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case slices.Contains(strings.Split(parts[1], ","), "pids"):
			pidsPath, hasPids = parts[2], true
		case parts[0] == "0" && parts[1] == "":
			unifiedPath, hasUnified = parts[2], true
		}
	}
	for _, line := range strings.Split(mountinfo, "\n") {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 {
			continue
		}
		root, mountpoint := fields[3], fields[4]
		switch {
		case hasPids && tail[0] == "cgroup" && slices.Contains(strings.Split(tail[2], ","), "pids"):
			return below(mountpoint, root, pidsPath)
		case !hasPids && hasUnified && tail[0] == "cgroup2":
			return below(mountpoint, root, unifiedPath)
		}
	}
	return "", os.ErrNotExist
}

// below is the directory of cgroup path p in a hierarchy whose root is
// mounted at mountpoint.
func below(mountpoint, root, p string) (string, error) {
	rel := p
	if root != "/" {
		var ok bool
		if rel, ok = strings.CutPrefix(p, root); !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
			return "", os.ErrNotExist
		}
	}
	return strings.TrimSuffix(mountpoint+rel, "/"), nil
}

func holds(procs string, pid int) bool {
	b, err := os.ReadFile(procs)
	if err != nil {
		return false
	}
	return slices.Contains(strings.Fields(string(b)), itoa(pid))
}

// itoa formats a pid (strconv would initialise after this package).
func itoa(n int) string {
	if n <= 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}
