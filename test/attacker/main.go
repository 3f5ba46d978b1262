// Command attacker runs one attack on a sandbox's control plane from inside
// the workspace, the way generated code would. It is built static and put
// into the test image. Each subcommand prints what it managed and exits 0
// when the attack was stopped, 1 when it got through, 2 on a usage error;
// the attack suite also checks the outcome from outside.
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var attacks = map[string]func(args []string) (breached []string){
	"signal-all": signalAll,
	"kill-init":  killInit,
	"oom-adj":    oomAdj,
	"ptrace":     ptrace,
	"proc-mem":   procMem,
	"vm-read":    vmRead,
	"pidfd":      pidfdGetfd,
	"prlimit":    prlimit,
	"cgroup":     cgroupWrite,
	"io-uring":   ioUring,
	"sysrq":      sysrq,
	"fds":        fds,
	"tiocsti":    tiocsti,
	"memhog":     memhog,
	"pids":       listPids,
	"abstract":   abstractConnect,
	// Memory and terminals that outlive user code (leftover.go).
	"fill-leftover": fillLeftover,
	"ipc-remove":    removeIPC,
	"hold-ptys":     holdPtys,
}

func main() {
	// Not an attack: the stand-in control plane of the abstract socket test.
	if len(os.Args) == 3 && os.Args[1] == "serve-abstract" {
		serveAbstract(os.Args[2])
		return
	}
	// Not attacks: the other halves of connect-reserved and exhaust-ports.
	if len(os.Args) >= 3 && os.Args[1] == "connect-child" {
		connectChild(os.Args[2], os.Args[3:])
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "exhaust-worker" {
		exhaustWorker(os.Args[2:])
		return
	}
	if len(os.Args) < 2 || attacks[os.Args[1]] == nil {
		var names []string
		for n := range attacks {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: attacker %s [args]\n", strings.Join(names, "|"))
		os.Exit(2)
	}
	breached := attacks[os.Args[1]](os.Args[2:])
	if len(breached) > 0 {
		for _, b := range breached {
			fmt.Println("BREACH:", b)
		}
		os.Exit(1)
	}
	fmt.Println("BLOCKED")
}

// pids lists every pid visible in /proc but our own.
func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// listPids prints pid and cmdline of everything visible.
func listPids([]string) []string {
	for _, p := range pids() {
		fmt.Printf("%d %s\n", p, cmdline(p))
	}
	return nil
}

// signalAll sends every signal to every visible pid and to -1. Args name
// pids whose death counts as a breach are unknown here: success is judged
// from outside; this only reports what the kernel accepted.
func signalAll([]string) []string {
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue // last, so the rest still get sent
		}
		for _, p := range pids() {
			_ = unix.Kill(p, unix.Signal(sig))
		}
		_ = unix.Kill(-1, unix.Signal(sig))
	}
	for _, p := range pids() {
		_ = unix.Kill(p, unix.SIGSTOP)
	}
	_ = unix.Kill(-1, unix.SIGSTOP)
	for _, p := range pids() {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	return nil
}

// killInit targets pid 1 of our namespace (the workspace reaper).
func killInit([]string) []string {
	for sig := 1; sig <= 64; sig++ {
		_ = unix.Kill(1, unix.Signal(sig))
	}
	time.Sleep(100 * time.Millisecond)
	// EPERM means pid 1 exists but is not ours to signal: only ESRCH is gone.
	if err := unix.Kill(1, 0); err == unix.ESRCH {
		return []string{"pid 1 is gone: " + err.Error()}
	}
	return nil
}

// oomAdj tries to make every visible process the OOM killer's first pick.
func oomAdj([]string) []string {
	var out []string
	for _, p := range pids() {
		err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", p), []byte("1000"), 0)
		if err == nil && p != 1 && !isOwn(p) {
			out = append(out, fmt.Sprintf("raised oom_score_adj of %d (%s)", p, cmdline(p)))
		}
	}
	// Lowering our own must fail for an unprivileged process.
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err == nil {
		out = append(out, "lowered own oom_score_adj to -1000")
	}
	return out
}

// isOwn tells whether pid is one of ours (same session as us: an exec's
// descendants): writing those is allowed and no breach.
func isOwn(pid int) bool {
	sid, err := unix.Getsid(pid)
	me, _ := unix.Getsid(0)
	return err == nil && sid == me
}

func ptrace([]string) []string {
	var out []string
	for _, p := range pids() {
		if err := unix.PtraceAttach(p); err == nil {
			out = append(out, fmt.Sprintf("attached to %d (%s)", p, cmdline(p)))
			_ = unix.PtraceDetach(p)
		} else if err != unix.EPERM {
			out = append(out, fmt.Sprintf("ptrace(%d) not denied by policy: %v", p, err))
		}
	}
	if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0, 0, 0, 0); errno == 0 {
		out = append(out, "PTRACE_TRACEME allowed")
	}
	return out
}

func procMem([]string) []string {
	var out []string
	for _, p := range pids() {
		for _, f := range []string{"mem", "environ"} {
			fd, err := os.Open(fmt.Sprintf("/proc/%d/%s", p, f))
			if err != nil {
				continue
			}
			buf := make([]byte, 64)
			n, _ := fd.Read(buf)
			fd.Close()
			if n > 0 && !isOwn(p) && p != 1 {
				out = append(out, fmt.Sprintf("read /proc/%d/%s (%s)", p, f, cmdline(p)))
			}
		}
	}
	return out
}

func vmRead([]string) []string {
	var out []string
	buf := make([]byte, 8)
	local := []unix.Iovec{{Base: &buf[0], Len: 8}}
	for _, p := range append(pids(), os.Getpid()) {
		remote := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&buf[0])), Len: 8}}
		if _, err := unix.ProcessVMReadv(p, local, remote, 0); err != unix.EPERM {
			out = append(out, fmt.Sprintf("process_vm_readv(%d) not denied by policy: %v", p, err))
		}
	}
	return out
}

func pidfdGetfd([]string) []string {
	var out []string
	for _, p := range append(pids(), os.Getpid()) {
		pfd, err := unix.PidfdOpen(p, 0)
		if err != nil {
			continue
		}
		for fd := 0; fd < 16; fd++ {
			if nfd, err := unix.PidfdGetfd(pfd, fd, 0); err == nil {
				out = append(out, fmt.Sprintf("pidfd_getfd(%d, %d) gave %d", p, fd, nfd))
				unix.Close(nfd)
			} else if err != unix.EPERM {
				out = append(out, fmt.Sprintf("pidfd_getfd(%d, %d) not denied by policy: %v", p, fd, err))
				break
			}
		}
		unix.Close(pfd)
	}
	return out
}

// prlimit, setpriority, sched_setaffinity and ioprio_set on processes
// that are not ours.
func prlimit([]string) []string {
	var out []string
	for _, p := range pids() {
		if isOwn(p) {
			continue
		}
		lim := unix.Rlimit{Cur: 1, Max: 1}
		if err := unix.Prlimit(p, unix.RLIMIT_NPROC, &lim, nil); err == nil {
			out = append(out, fmt.Sprintf("prlimit on %d (%s)", p, cmdline(p)))
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, p, 19); err == nil {
			out = append(out, fmt.Sprintf("setpriority on %d (%s)", p, cmdline(p)))
		}
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(p, &set); err == nil {
			out = append(out, fmt.Sprintf("sched_setaffinity on %d (%s)", p, cmdline(p)))
		}
		// IOPRIO_WHO_PROCESS=1, class idle.
		if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, 1, uintptr(p), 3<<13); errno == 0 {
			out = append(out, fmt.Sprintf("ioprio_set on %d (%s)", p, cmdline(p)))
		}
	}
	return out
}

// cgroupWrite tries to open every cgroup control file for writing and to
// mount a fresh cgroupfs.
func cgroupWrite([]string) []string {
	var out []string
	_ = filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err == nil {
			f.Close()
			out = append(out, "writable: "+p)
		}
		return nil
	})
	for _, fs := range []string{"cgroup2", "cgroup"} {
		dir, _ := os.MkdirTemp("", "cg")
		opts := ""
		if fs == "cgroup" {
			opts = "freezer"
		}
		if err := unix.Mount("none", dir, fs, 0, opts); err == nil {
			out = append(out, "mounted "+fs)
			_ = unix.Unmount(dir, 0)
		}
		os.Remove(dir)
	}
	return out
}

func ioUring([]string) []string {
	params := make([]byte, 120)
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 8, uintptr(unsafe.Pointer(&params[0])), 0)
	if errno == 0 {
		unix.Close(int(fd))
		return []string{"io_uring_setup succeeded"}
	}
	if errno != unix.EPERM {
		return []string{"io_uring_setup not denied by policy: " + errno.Error()}
	}
	return nil
}

func sysrq([]string) []string {
	var out []string
	for _, p := range []string{"/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/sysrq",
		"/proc/sys/vm/panic_on_oom", "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/fs/cgroup/cgroup.procs"} {
		if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			f.Close()
			out = append(out, "writable: "+p)
		}
	}
	return out
}

// fds checks that exactly 0, 1 and 2 were inherited. It lists
// /proc/self/fd with raw syscalls: the Go runtime's own poller descriptors
// appear once os.File I/O starts, and are not inherited ones.
func fds([]string) []string {
	dfd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return []string{"cannot list fds: " + err.Error()}
	}
	defer unix.Close(dfd)
	buf := make([]byte, 8192)
	var names []string
	for {
		n, err := unix.ReadDirent(dfd, buf)
		if err != nil || n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	var out []string
	for _, n := range names {
		fd, _ := strconv.Atoi(n)
		if fd <= 2 || fd == dfd {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + n)
		out = append(out, fmt.Sprintf("inherited fd %d -> %s", fd, target))
	}
	return out
}

// tiocsti tries to inject input into the terminal on stdin, with the
// request as is and with high bits set (a filter comparing all 64 bits
// would miss it).
func tiocsti([]string) []string {
	var out []string
	c := byte('x')
	for _, req := range []uintptr{unix.TIOCSTI, 1<<32 | unix.TIOCSTI} {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, 0, req, uintptr(unsafe.Pointer(&c)))
		if errno == 0 {
			out = append(out, fmt.Sprintf("TIOCSTI (0x%x) injected a byte", req))
		} else if errno != unix.EPERM {
			out = append(out, fmt.Sprintf("TIOCSTI (0x%x) not denied by policy: %v", req, errno))
		}
	}
	return out
}

// memhog allocates and touches memory until the kernel stops it.
func memhog(args []string) []string {
	limit := 1 << 40
	if len(args) > 0 {
		if n, err := strconv.Atoi(args[0]); err == nil {
			limit = n << 20
		}
	}
	var chunks [][]byte
	for total := 0; total < limit; total += 16 << 20 {
		b, err := unix.Mmap(-1, 0, 16<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			break
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		chunks = append(chunks, b)
	}
	fmt.Printf("allocated %d MiB\n", len(chunks)*16)
	_ = syscall.Getpid()
	return nil
}

// serveAbstract listens on the abstract unix socket @name and answers every
// connection with "control-plane-secret", forever.
func serveAbstract(name string) {
	l, err := net.Listen("unix", "@"+name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		_, _ = c.Write([]byte("control-plane-secret\n"))
		c.Close()
	}
}

// abstractConnect tries the control plane's abstract socket @name (it shares
// the network namespace, where abstract sockets live); its own abstract
// socket must still work.
func abstractConnect(args []string) []string {
	if len(args) != 1 {
		return []string{"usage: abstract NAME"}
	}
	var out []string
	if c, err := net.DialTimeout("unix", "@"+args[0], time.Second); err == nil {
		b := make([]byte, 64)
		n, _ := c.Read(b)
		c.Close()
		out = append(out, fmt.Sprintf("connected to the control plane's @%s: %q", args[0], b[:n]))
	}
	own := fmt.Sprintf("@user-%d", os.Getpid())
	l, err := net.Listen("unix", own)
	if err != nil {
		return append(out, "cannot listen on an own abstract socket: "+err.Error())
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	if c, err := net.DialTimeout("unix", own, time.Second); err != nil {
		out = append(out, "own abstract socket unreachable (the scoping is too broad): "+err.Error())
	} else {
		c.Close()
	}
	return out
}
