// Package orphans reaps processes that end up as the shim's children with
// nobody to wait for them: the shim is a child subreaper, so a process that
// loses its parent outside any PID namespace of ours (a control plane sharing
// the host's PID namespace, say) is reparented to it.
//
// Every process the shim starts has exactly one waiter (see package
// process), which collects it the moment it exits; and libcontainer waits
// for its own helpers. A second, blind reaper would race those waits and
// steal exit statuses, so this one only takes a child that has been a
// zombie for a whole interval: one nobody is waiting for.
package orphans

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Run reaps orphaned zombies every interval until ctx ends.
func Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	seen := map[int]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := ZombieChildren(os.Getpid())
		for pid := range now {
			if seen[pid] {
				var ws unix.WaitStatus
				_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
				delete(now, pid)
			}
		}
		seen = now
	}
}

// ZombieChildren lists the zombie children of parent, from the children
// lists of its threads (a reparented orphan is attached to one of them).
func ZombieChildren(parent int) map[int]bool {
	out := map[int]bool{}
	lists, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", parent))
	for _, l := range lists {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(b) {
			pid, err := strconv.Atoi(string(f))
			if err != nil {
				continue
			}
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			if state, ppid, ok := parseStat(st); ok && state == 'Z' && ppid == parent {
				out[pid] = true
			}
		}
	}
	return out
}

// parseStat reads state and ppid from /proc/PID/stat; the command name may
// hold spaces and parentheses, so fields are counted from its last ')'.
func parseStat(b []byte) (state byte, ppid int, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], ppid, true
}
