package usercontainer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// ExecGroup is the cgroup leaf one exec runs in, with every process it
// started: the sandbox API kills them all when a call times out or its
// client goes away. Found from the exec's pid while it runs: the leaf is
// the waiter's, known to this package only.
type ExecGroup struct {
	dir string
}

// ExecGroup finds the leaf of the exec running as pid (a host pid).
func (c *Container) ExecGroup(pid int) (*ExecGroup, error) {
	// One hierarchy is enough: every process is in every one.
	base, ok := c.cgroups["pids"]
	controller := "pids"
	if !ok {
		base, ok = c.cgroups[""]
		controller = ""
	}
	if !ok {
		return nil, errors.New("no pids or unified cgroup for the container")
	}
	leaf, err := leafName(pid, controller)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, leaf)
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		return nil, fmt.Errorf("exec %d: its cgroup: %w", pid, err)
	}
	return &ExecGroup{dir: dir}, nil
}

// leafName is the last element of pid's cgroup path in the hierarchy
// holding controller ("" is cgroup v2's), when it is an exec leaf.
func leafName(pid int, controller string) (string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-id:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		match := parts[1] == controller
		if controller != "" {
			match = false
			for _, c := range strings.Split(parts[1], ",") {
				match = match || c == controller
			}
		} else {
			match = parts[0] == "0" && parts[1] == ""
		}
		if !match {
			continue
		}
		name := filepath.Base(parts[2])
		if !strings.HasPrefix(name, "exec-") {
			return "", fmt.Errorf("process %d is in %s, not an exec leaf", pid, parts[2])
		}
		return name, nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("process %d: no %q cgroup", pid, controller)
}

// killRounds bounds KillAll's passes: each pass kills what the previous
// one saw, and a fork racing it is caught by the next (the leaf's pids
// limit bounds how many there can be).
const (
	killRounds   = 50
	killInterval = 2 * time.Millisecond
)

// KillAll kills every process in the leaf and waits, briefly, for it to be
// empty. cgroup v2's cgroup.kill does it in one write where the kernel has
// it; otherwise the leaf is read and killed until empty.
func (g *ExecGroup) KillAll() error {
	if err := os.WriteFile(filepath.Join(g.dir, "cgroup.kill"), []byte("1"), 0); err == nil {
		return nil
	}
	for range killRounds {
		pids, err := readProcs(g.dir)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(killInterval)
	}
	return fmt.Errorf("%s: processes left after %d kill passes", g.dir, killRounds)
}

func readProcs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Config is the container's libcontainer config, as the sandbox reports
// its protections from it.
func (c *Container) Config() configs.Config { return c.container.Config() }
