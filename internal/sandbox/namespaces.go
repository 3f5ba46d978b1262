package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// namespaces are the control plane's namespaces that user containers join
// (network and UTS, and its user namespace when the bundle has one), held
// open from Create to Delete: a fast-exiting init cannot take them away
// from a user container being built, and secure execs and port
// reservations need them for the sandbox's whole life.
type namespaces struct {
	network, uts *os.File
	// user is nil when the sandbox runs in the host's user namespace.
	user *os.File
}

func openNamespaces(pid int, user bool) (_ *namespaces, retErr error) {
	n := &namespaces{}
	defer func() {
		if retErr != nil {
			n.close()
		}
	}()
	var err error
	if n.network, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil {
		return nil, fmt.Errorf("control plane network namespace: %w", err)
	}
	if n.uts, err = os.Open(fmt.Sprintf("/proc/%d/ns/uts", pid)); err != nil {
		return nil, fmt.Errorf("control plane UTS namespace: %w", err)
	}
	if user {
		if n.user, err = os.Open(fmt.Sprintf("/proc/%d/ns/user", pid)); err != nil {
			return nil, fmt.Errorf("control plane user namespace: %w", err)
		}
	}
	return n, nil
}

// path names an open namespace for libcontainer, which joins by path; ""
// for none.
func (n *namespaces) path(f *os.File) string {
	if f == nil {
		return ""
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
}

func (n *namespaces) close() {
	for _, f := range []*os.File{n.network, n.uts, n.user} {
		if f != nil {
			f.Close()
		}
	}
}

// joinedIPCSysctls are the IPC sysctls of the IPC namespace s joins, if it
// joins one; nil, logged, when they cannot be read (the workspace then has
// the kernel's defaults, capped as always).
func joinedIPCSysctls(ctx context.Context, id string, s *specs.Spec) map[string]string {
	if s.Linux == nil {
		return nil
	}
	for _, n := range s.Linux.Namespaces {
		if n.Type != specs.IPCNamespace || n.Path == "" {
			continue
		}
		values, err := readIPCSysctls(n.Path)
		if err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("the joined IPC namespace's sysctls are not applied to the workspace")
		}
		return values
	}
	return nil
}

// ipcSysctlFiles are the sysctls the kernel keeps per IPC namespace.
var ipcSysctlFiles = []string{
	"kernel/msgmax", "kernel/msgmnb", "kernel/msgmni", "kernel/sem", "kernel/shmall", "kernel/shmmax", "kernel/shmmni",
	"fs/mqueue/msg_default", "fs/mqueue/msg_max", "fs/mqueue/msgsize_default", "fs/mqueue/msgsize_max", "fs/mqueue/queues_max",
}

// readIPCSysctls reads the IPC sysctls of the IPC namespace at path (a pod's,
// which CRI set from the pod's sysctls): /proc/sys shows the reading thread's
// namespace, so a thread of its own joins it and dies with it.
func readIPCSysctls(path string) (map[string]string, error) {
	type result struct {
		values map[string]string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread is in another IPC namespace and Go
		// ends it when this goroutine returns.
		runtime.LockOSThread()
		f, err := os.Open(path)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWIPC); err != nil {
			done <- result{err: fmt.Errorf("join IPC namespace %s: %w", path, err)}
			return
		}
		values := map[string]string{}
		for _, name := range ipcSysctlFiles {
			b, err := os.ReadFile(filepath.Join("/proc/sys", name))
			if err != nil {
				continue // not on this kernel
			}
			values[strings.ReplaceAll(name, "/", ".")] = strings.Join(strings.Fields(string(b)), " ")
		}
		done <- result{values: values}
	}()
	r := <-done
	return r.values, r.err
}

// hasCapability tells whether the shim holds capability c in its
// effective set.
func hasCapability(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0
}
