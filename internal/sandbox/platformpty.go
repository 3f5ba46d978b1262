package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/spec"
)

// ptmxDevice is /dev/ptmx's device number (5, 2), whichever devpts
// instance's node it is.
var ptmxDevice = unix.Mkdev(5, 2)

// platformPtmx is the ptmx of the workspace's platform devpts instance
// (spec.PlatformPtyDir), opened once from the host side, through the
// reaper's root: the directory holding it is the reaper uid's, mode 0700,
// so neither user code nor a waiter that already took the user's identity
// could open it by its path. Every waiter gets it as fd 0 and reopens it
// (libexec/reaper) to make the pty of a terminal exec there, whatever user
// code holds of the workspace's own /dev/pts. It is nil when the workspace
// has no such instance (a bundle without devpts has no ptys at all).
func (ws *workspace) platformPtmx(ctx context.Context, stateRoot, id string) *os.File {
	ws.ptmxOnce.Do(func() {
		f, err := openPlatformPtmx(stateRoot, id)
		if err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("no platform pty instance: terminal execs will fail")
			return
		}
		ws.ptmx = f
	})
	return ws.ptmx
}

func openPlatformPtmx(stateRoot, id string) (*os.File, error) {
	c, err := libcontainer.Load(stateRoot, id)
	if err != nil {
		return nil, err
	}
	st, err := c.State()
	if err != nil {
		return nil, err
	}
	p := filepath.Join("/proc", strconv.Itoa(st.InitProcessPid), "root", spec.PlatformPtmx)
	f, err := os.OpenFile(p, os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	// The reaper's pid could have been reused; a ptmx node it is not.
	var stat unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &stat); err != nil || stat.Mode&unix.S_IFMT != unix.S_IFCHR || stat.Rdev != ptmxDevice {
		f.Close()
		return nil, fmt.Errorf("%s is not a ptmx (%v)", p, err)
	}
	return f, nil
}

// closePlatformPtmx lets the platform devpts instance of a destroyed
// workspace go.
func (ws *workspace) closePlatformPtmx() {
	ws.ptmxOnce.Do(func() {}) // no later open
	if ws.ptmx != nil {
		ws.ptmx.Close()
	}
}
