package spec

import (
	"runtime"
	"slices"
	"sort"

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

// nativeArchs are the seccomp architectures of the shim's own build: the
// only ABI user code may call the kernel with.
var nativeArchs = map[string][]specs.Arch{
	"amd64":   {specs.ArchX86_64},
	"arm64":   {specs.ArchAARCH64},
	"ppc64le": {specs.ArchPPC64LE},
	"s390x":   {specs.ArchS390X},
	"riscv64": {specs.ArchRISCV64},
}

// WorkspaceSeccomp is containerd's default profile for a process without
// capabilities, minus deniedSyscalls, and ioctl without deniedIoctls, for
// the native ABI only. containerd's profile also admits the compat ABIs
// (x86 and x32 beside x86_64): user code does not need them, they are a
// known way around syscall filters, and libseccomp compiles a filter for
// each, which took 16 ms of CPU per container start here against 2 ms for
// the native one alone (every secure exec pays it). A syscall of another
// ABI kills the thread that makes it (libseccomp's bad-arch action).
func WorkspaceSeccomp() *specs.LinuxSeccomp {
	p := seccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}})
	if archs, ok := nativeArchs[runtime.GOARCH]; ok {
		p.Architectures = archs
	}
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
	// libseccomp lets an unconditional allow override any conditional deny
	// of the same syscall, so ioctl is allowed by rules that cover every
	// request but the denied ones, and the default action refuses those.
	for _, a := range allowAllBut(deniedIoctls) {
		rules = append(rules, specs.LinuxSyscall{Names: []string{"ioctl"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{a}})
	}
	p.Syscalls = rules
	return p
}

// allowAllBut returns masked-equality tests on ioctl's request argument
// that together match every request except those in deny. Only the low 32
// bits are compared: the kernel truncates the request to an unsigned int,
// so garbage in the high bits must not move a denied request out of reach
// (nor refuse a musl program's sign-extended request). The tests form a
// prefix cover: walking the bits from the top, every branch off a denied
// request's path is one test.
func allowAllBut(deny []uint64) []specs.LinuxSeccompArg {
	var out []specs.LinuxSeccompArg
	live := map[uint64]bool{0: true} // prefixes (bits above the current one) of denied requests
	var mask uint64
	for bit := 31; bit >= 0; bit-- {
		mask |= 1 << bit
		next := map[uint64]bool{}
		for prefix := range live {
			for _, b := range []uint64{0, 1 << bit} {
				child := prefix | b
				onPath := false
				for _, d := range deny {
					if d&mask == child {
						onPath = true
					}
				}
				if onPath {
					next[child] = true
				} else {
					out = append(out, specs.LinuxSeccompArg{Index: 1, Value: mask, ValueTwo: child, Op: specs.OpMaskedEqual})
				}
			}
		}
		live = next
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Value != out[j].Value {
			return out[i].Value < out[j].Value
		}
		return out[i].ValueTwo < out[j].ValueTwo
	})
	return out
}
