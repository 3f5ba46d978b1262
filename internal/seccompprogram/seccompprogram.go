// Package seccompprogram compiles a seccomp profile once into the BPF
// program libcontainer would install, so that containers built again and
// again from the same profile (secure exec's, one per call) need not run
// libseccomp in each container's init: compiling it there cost 8 ms of CPU
// per container, a third of a secure exec. The program is libcontainer's
// own: a child process installs the profile with libcontainer's seccomp
// package (libseccomp and runc's ENOSYS patch), and the parent reads the
// filter back from the kernel (PTRACE_SECCOMP_GET_FILTER).
//
// Entry points: Compile in the shim; Main in the child, which the shim's
// binary runs when its first argument is Arg.
package seccompprogram

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// Arg is the first argument of the child that installs a profile.
const Arg = "seccomp-program"

// maxInstructions is the kernel's limit of a classic BPF program (BPF_MAXINSNS).
const maxInstructions = 4096

// compileTimeout bounds the child's run: it starts, installs and waits.
const compileTimeout = 10 * time.Second

// Program is a classic BPF seccomp program and the flags of its
// seccomp(SECCOMP_SET_MODE_FILTER) call.
type Program struct {
	Flags  uint32
	Filter []unix.SockFilter
}

// Bytes is what the reaper reads: the flags (u32), then the filter as the
// kernel's struct sock_filter array, all in host byte order.
func (p Program) Bytes() []byte {
	b := make([]byte, 0, 4+8*len(p.Filter))
	b = binary.NativeEndian.AppendUint32(b, p.Flags)
	for _, in := range p.Filter {
		b = binary.NativeEndian.AppendUint16(b, in.Code)
		b = append(b, in.Jt, in.Jf)
		b = binary.NativeEndian.AppendUint32(b, in.K)
	}
	return b
}

// Filter flags, as libcontainer sets them from a profile's.
const (
	filterFlagLog       = 1 << 1 // SECCOMP_FILTER_FLAG_LOG
	filterFlagSpecAllow = 1 << 2 // SECCOMP_FILTER_FLAG_SPEC_ALLOW
)

// Compile returns the program libcontainer installs for profile, with the
// filter flags it would install it with. It fails for a profile that
// needs more than one seccomp(2) call: a notify action, whose listener
// libcontainer hands over from the container's init.
func Compile(profile *configs.Seccomp) (Program, error) {
	if profile == nil {
		return Program{}, errors.New("seccomp program: no profile")
	}
	for _, s := range profile.Syscalls {
		if s != nil && s.Action == configs.Notify {
			return Program{}, errors.New("seccomp program: profile has a notify action")
		}
	}
	flags, err := filterFlags(profile.Flags)
	if err != nil {
		return Program{}, fmt.Errorf("seccomp program: %w", err)
	}
	data, err := json.Marshal(profile)
	if err != nil {
		return Program{}, fmt.Errorf("seccomp program: %w", err)
	}
	filter, err := compile(data)
	if err != nil {
		return Program{}, fmt.Errorf("seccomp program: %w", err)
	}
	return Program{Flags: flags, Filter: filter}, nil
}

// filterFlags mirrors libcontainer (seccomp.setFlag, patchbpf.filterFlags):
// TSYNC means nothing for a filter installed before any thread exists;
// LOG and SPEC_ALLOW are set where libseccomp's API level has them.
func filterFlags(flags []specs.LinuxSeccompFlag) (uint32, error) {
	api, _ := libseccomp.GetAPI()
	var out uint32
	for _, f := range flags {
		switch f {
		case "SECCOMP_FILTER_FLAG_TSYNC":
		case specs.LinuxSeccompFlagLog:
			if api >= 3 {
				out |= filterFlagLog
			}
		case specs.LinuxSeccompFlagSpecAllow:
			if api >= 4 {
				out |= filterFlagSpecAllow
			}
		default:
			return 0, fmt.Errorf("profile has filter flag %s", f)
		}
	}
	return out, nil
}

// compile runs the child on the profile's JSON and reads its filter.
func compile(profile []byte) ([]unix.SockFilter, error) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()
	stdinRead, stdinWrite, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer stdinRead.Close()
	outRead, outWrite, err := os.Pipe()
	if err != nil {
		stdinWrite.Close()
		return nil, err
	}
	defer outRead.Close()
	// Every ptrace request and the waits for the child's stops come from
	// one thread: the tracer is a thread, not a process.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	child, err := os.StartProcess("/proc/self/exe", []string{"sandbox-seccomp-program", Arg}, &os.ProcAttr{
		Files: []*os.File{stdinRead, outWrite, devNull},
		// A parent that dies before it killed the child takes it along.
		Sys: &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL},
	})
	outWrite.Close()
	if err != nil {
		stdinWrite.Close()
		return nil, fmt.Errorf("start the child: %w", err)
	}
	pid := child.Pid
	// The child is killed and reaped here, on the tracer's thread, however
	// this ends: a tracee's exit is the tracer's to wait for.
	defer func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		for {
			var ws unix.WaitStatus
			_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || ws.Exited() || ws.Signaled() {
				break
			}
		}
		_ = child.Release()
	}()
	go func() {
		_, _ = stdinWrite.Write(profile)
		stdinWrite.Close()
	}()
	timer := time.AfterFunc(compileTimeout, func() { _ = unix.Kill(pid, unix.SIGKILL) })
	defer timer.Stop()
	line, err := bufio.NewReader(outRead).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("the child ended before it installed the profile: %w", err)
	}
	line = strings.TrimSpace(line)
	rest, ok := strings.CutPrefix(line, "installed ")
	if !ok {
		return nil, errors.New(line)
	}
	if tid, err := strconv.Atoi(rest); err != nil || tid != pid {
		return nil, fmt.Errorf("the child installed the profile on thread %q, not on its main thread %d", rest, pid)
	}
	return readFilter(pid)
}

// Installed returns the newest seccomp filter of a running thread (a
// process' main thread by its pid), which it stops for as long as it
// takes: how tests compare what two containers run under. The thread must
// not be a child anyone in this process waits for: the kernel reports the
// tracer's stop to any waiter of the thread group, which would take it.
func Installed(tid int) ([]unix.SockFilter, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	filter, err := readFilter(tid)
	if derr := unix.PtraceDetach(tid); err == nil && derr != nil {
		return nil, fmt.Errorf("ptrace detach %d: %w", tid, derr)
	}
	return filter, err
}

// readFilter reads the newest seccomp filter of thread tid, which it
// stops, as a tracer, for as long as it takes.
func readFilter(tid int) ([]unix.SockFilter, error) {
	if err := unix.PtraceSeize(tid); err != nil {
		return nil, fmt.Errorf("ptrace %d: %w", tid, err)
	}
	if err := unix.PtraceInterrupt(tid); err != nil {
		return nil, fmt.Errorf("ptrace interrupt %d: %w", tid, err)
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("wait for %d to stop: %w", tid, err)
		}
		if ws.Stopped() {
			break
		}
		if ws.Exited() || ws.Signaled() {
			return nil, fmt.Errorf("thread %d ended before its filter was read (status %v)", tid, ws)
		}
	}
	n, err := getFilter(tid, nil)
	if err != nil {
		return nil, err
	}
	if n == 0 || n > maxInstructions {
		return nil, fmt.Errorf("filter of %d has %d instructions", tid, n)
	}
	prog := make([]unix.SockFilter, n)
	if m, err := getFilter(tid, prog); err != nil {
		return nil, err
	} else if m != n {
		return nil, fmt.Errorf("filter of %d changed size while read (%d, then %d instructions)", tid, n, m)
	}
	return prog, nil
}

// ptraceSeccompGetFilter is PTRACE_SECCOMP_GET_FILTER (CAP_SYS_ADMIN, a
// stopped tracee; kernels built with CONFIG_CHECKPOINT_RESTORE).
const ptraceSeccompGetFilter = 0x420c

// getFilter reads the newest filter (index 0) of tid into buf, or only
// counts its instructions when buf is nil.
func getFilter(tid int, buf []unix.SockFilter) (int, error) {
	var p uintptr
	if len(buf) > 0 {
		p = uintptr(unsafe.Pointer(&buf[0]))
	}
	n, _, errno := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(tid), 0, p, 0, 0)
	runtime.KeepAlive(buf)
	if errno != 0 {
		return 0, fmt.Errorf("PTRACE_SECCOMP_GET_FILTER %d: %w", tid, errno)
	}
	return int(n), nil
}

// Main is the child: it installs the profile read from stdin on its main
// thread with libcontainer, says "installed <tid>" and waits to be read
// and killed. It never returns. It must be called from an init function,
// which runs on the main thread.
func Main() {
	runtime.LockOSThread()
	fail := func(err error) {
		fmt.Fprintf(os.Stdout, "error: %v\n", err)
		os.Exit(1)
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var profile configs.Seccomp
	if err := json.Unmarshal(data, &profile); err != nil {
		fail(fmt.Errorf("profile: %w", err))
	}
	if _, err := seccomp.InitSeccomp(&profile); err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stdout, "installed %d\n", unix.Gettid())
	// The parent kills it once it has read the filter; this bounds a
	// parent that never does.
	time.Sleep(compileTimeout)
	os.Exit(1)
}
