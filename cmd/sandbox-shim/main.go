// Command containerd-shim-sandbox-v1 is the io.sandbox.v1 containerd runtime.
// The same binary is the containers' init (libcontainer re-executes it as
// "init"), so that path is taken before the shim library parses flags.
package main

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/containerd/containerd/v2/pkg/shim"
	_ "github.com/opencontainers/cgroups/devices" // device rules for the cgroupfs manager
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"github.com/sandbox-shim/sandbox-shim/internal/manager"
	"github.com/sandbox-shim/sandbox-shim/internal/seccompprogram"
	"github.com/sandbox-shim/sandbox-shim/internal/task"
)

func init() {
	if len(os.Args) > 1 && os.Args[1] == seccompprogram.Arg {
		// Compiles a seccomp profile for the shim; never returns.
		seccompprogram.Main()
	}
	if len(os.Args) > 1 && os.Args[1] == "init" {
		// A container's init lives milliseconds, until it execs the
		// container's process: collecting its garbage is wasted CPU (3 ms
		// of a secure exec's 26 here). The soft limit still bounds its heap,
		// which the container's memory cgroup is charged for.
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(initHeapLimit)
		// Runs after nsenter's C constructor joined the namespaces; never returns.
		libcontainer.Init()
	}
}

// initHeapLimit is the heap a container's init may reach before its
// garbage is collected after all.
const initHeapLimit = 64 << 20

func main() {
	task.Register()
	shim.RunShim(context.Background(), manager.New("io.sandbox.v1"), noReaper)
}

// noReaper leaves every wait to libcontainer and the process package: a
// second reaper would steal exit statuses (ECHILD races).
func noReaper(c *shim.Config) { c.NoReaper = true }
