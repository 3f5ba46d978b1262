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
// (network and UTS), held open from Create to Delete: a fast-exiting init
// cannot take them away from a user container being built, and secure
// execs and port reservations need them for the sandbox's whole life.
type namespaces struct {
	network, uts *os.File
}

func openNamespaces(pid int) (*namespaces, error) {
	network, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("control plane network namespace: %w", err)
	}
	uts, err := os.Open(fmt.Sprintf("/proc/%d/ns/uts", pid))
	if err != nil {
		network.Close()
		return nil, fmt.Errorf("control plane UTS namespace: %w", err)
	}
	return &namespaces{network: network, uts: uts}, nil
}

// path names an open namespace for libcontainer, which joins by path.
func (n *namespaces) path(f *os.File) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
}

func (n *namespaces) close() {
	n.network.Close()
	n.uts.Close()
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
