package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// memory of one container's shim, in KiB. The tree figures add every descendant of the shim
// (the container's processes and whatever helpers the shim keeps), for information only.
type memory struct {
	ShimPID    int   `json:"shim_pid"`
	RSSKiB     int64 `json:"rss_kib"`
	PSSKiB     int64 `json:"pss_kib"`
	TreeProcs  int   `json:"tree_procs"`
	TreeRSSKiB int64 `json:"tree_rss_kib"`
	TreePSSKiB int64 `json:"tree_pss_kib"`
}

// findShim returns the long-running shim serving container id on this daemon: the process
// started as `<shim> -namespace NS -id ID -address ADDR` with no trailing action (the
// short-lived `start`/`delete` invocations carry one). The topmost match wins, in case a shim
// re-executes itself for helpers.
func findShim(d *harness.Daemon, id string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("find shim: %w", err)
	}
	var matches []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv, err := cmdline(pid)
		if err != nil || len(argv) == 0 {
			continue
		}
		if !strings.HasPrefix(filepath.Base(argv[0]), "containerd-shim") {
			continue
		}
		if flagValue(argv, "-id") != id || flagValue(argv, "-address") != d.Address {
			continue
		}
		if last := argv[len(argv)-1]; last == "start" || last == "delete" {
			continue
		}
		matches = append(matches, pid)
	}
	for _, pid := range matches {
		if ppid, err := parentPID(pid); err == nil && !slices.Contains(matches, ppid) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no shim process found for container %s on %s", id, d.Address)
}

func cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil, nil
	}
	return strings.Split(string(b), "\x00"), nil
}

// flagValue finds "-name value" or "-name=value" (Go's flag package accepts both, with one
// or two dashes).
func flagValue(argv []string, name string) string {
	for i, a := range argv {
		for _, n := range []string{name, "-" + name} {
			if a == n && i+1 < len(argv) {
				return argv[i+1]
			}
			if v, ok := strings.CutPrefix(a, n+"="); ok {
				return v
			}
		}
	}
	return ""
}

func parentPID(pid int) (int, error) {
	f, err := statFields(pid, 2)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[1])
}

// statFields are the fields of /proc/PID/stat after the comm (f[0] is field
// 3, the state), at least want of them.
func statFields(pid, want int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < want {
		return nil, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return f, nil
}

func readMemory(pid int) (memory, error) {
	m := memory{ShimPID: pid}
	var err error
	if m.RSSKiB, err = kibField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:"); err != nil {
		return m, err
	}
	if m.PSSKiB, err = kibField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:"); err != nil {
		return m, err
	}
	tree, err := descendants(pid)
	if err != nil {
		return m, err
	}
	for _, p := range append([]int{pid}, tree...) {
		rss, err1 := kibField(fmt.Sprintf("/proc/%d/status", p), "VmRSS:")
		pss, err2 := kibField(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:")
		if err1 != nil || err2 != nil {
			continue // exited meanwhile, or a kernel thread without memory
		}
		m.TreeProcs++
		m.TreeRSSKiB += rss
		m.TreePSSKiB += pss
	}
	return m, nil
}

// descendants lists every process below pid.
func descendants(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := parentPID(p); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out, nil
}

// kibField reads a "Name:   123 kB" line from a /proc file.
func kibField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			break
		}
		v, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s in %s: %w", name, path, err)
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return 0, fmt.Errorf("%s: no %s line", path, name)
}
