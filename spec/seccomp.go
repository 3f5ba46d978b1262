package spec

import (
	"slices"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// deniedSyscalls are removed from containerd's default profile for user
// code: each has been used to reach another process or to bypass seccomp
// (io_uring runs socket/bind/listen as ring ops without a syscall).
var deniedSyscalls = []string{
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
	"bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
}

// deniedIoctls would let user code type into a terminal it can open.
var deniedIoctls = []uint64{unix.TIOCSTI, unix.TIOCLINUX}

// WorkspaceSeccomp is containerd's default profile for a process without
// capabilities, minus deniedSyscalls, and ioctl without deniedIoctls.
func WorkspaceSeccomp() *specs.LinuxSeccomp {
	p := seccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}})
	var rules []specs.LinuxSyscall
	for _, r := range p.Syscalls {
		if r.Action == specs.ActAllow {
			r.Names = slices.DeleteFunc(slices.Clone(r.Names), func(n string) bool {
				return n == "ioctl" || slices.Contains(deniedSyscalls, n)
			})
			if len(r.Names) == 0 {
				continue
			}
		}
		rules = append(rules, r)
	}
	eperm := uint(unix.EPERM)
	rules = append(rules, specs.LinuxSyscall{Names: deniedSyscalls, Action: specs.ActErrno, ErrnoRet: &eperm})
	// The ioctl request is an int: compare the low 32 bits only, so high
	// garbage bits cannot slip a denied request past the filter.
	var args []specs.LinuxSeccompArg
	for _, req := range deniedIoctls {
		args = append(args, specs.LinuxSeccompArg{Index: 1, Value: 0xffffffff, ValueTwo: req, Op: specs.OpMaskedEqual})
	}
	for _, a := range args {
		rules = append(rules, specs.LinuxSyscall{Names: []string{"ioctl"}, Action: specs.ActErrno, ErrnoRet: &eperm, Args: []specs.LinuxSeccompArg{a}})
	}
	rules = append(rules, specs.LinuxSyscall{Names: []string{"ioctl"}, Action: specs.ActAllow})
	p.Syscalls = rules
	return p
}
