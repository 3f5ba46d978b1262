package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"

	"github.com/sandbox-shim/sandbox-shim/spec"
)

// execCgroupControllers get a sub-cgroup per exec: pids so one exec's fork
// bomb cannot take the last pid from the next exec, cpu so the next exec is
// not starved by it either.
var execCgroupControllers = []string{"pids", "cpu"}

// execCgroup creates the sub-cgroups of one exec under the workspace leaf
// and returns libcontainer's SubCgroupPaths for it and a cleanup that
// removes them once empty (orphans a process left behind keep them until
// the workspace goes). On cgroup v2 the workspace's reaper occupies the
// leaf, so sub-cgroups with controllers are not possible: execs share it.
func (sb *Sandbox) execCgroup(ws *libcontainer.Container) (map[string]string, func(), error) {
	if cgroups.IsCgroup2UnifiedMode() {
		return nil, func() {}, nil
	}
	st, err := ws.State()
	if err != nil {
		return nil, nil, fmt.Errorf("workspace state: %w", err)
	}
	sub := "exec-" + strconv.FormatUint(sb.execSeq.Add(1), 10)
	var dirs []string
	cleanup := func() {
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
	subs := map[string]string{}
	for _, ctrl := range execCgroupControllers {
		base, ok := st.CgroupPaths[ctrl]
		if !ok {
			continue
		}
		dir := filepath.Join(base, sub)
		if err := os.Mkdir(dir, 0o755); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("exec cgroup: %w", err)
		}
		dirs = append(dirs, dir)
		if ctrl == "pids" {
			limit := strconv.FormatInt(spec.ExecPidsLimit(sb.settings.PidsLimit), 10)
			if err := cgroups.WriteFile(dir, "pids.max", limit); err != nil {
				cleanup()
				return nil, nil, fmt.Errorf("exec pids limit: %w", err)
			}
		}
		// Co-mounted controllers (cpu,cpuacct) share the directory: name them
		// all, or libcontainer would move the process back to the leaf.
		for c, p := range st.CgroupPaths {
			if p == base {
				subs[c] = sub
			}
		}
	}
	return subs, cleanup, nil
}
