//go:build seccomp

package seccompprogram

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/spec"
)

// probeArg makes the test binary a child that installs a program read
// from stdin with prctl, as the reaper does, and reports what a few
// syscalls return under it.
const probeArg = "seccomp-program-probe"

func init() {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		Main()
	}
	if len(os.Args) > 1 && os.Args[1] == probeArg {
		probe()
	}
}

func probe() {
	runtime.LockOSThread()
	b, err := readAll(os.Stdin)
	if err != nil || len(b) < 12 || (len(b)-4)%8 != 0 {
		fmt.Printf("bad program: %d bytes, %v\n", len(b), err)
		os.Exit(1)
	}
	flags := binary.NativeEndian.Uint32(b)
	filter := b[4:]
	prog := unix.SockFprog{Len: uint16(len(filter) / 8), Filter: (*unix.SockFilter)(unsafe.Pointer(&filter[0]))}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Printf("nnp: %v\n", err)
		os.Exit(1)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags), uintptr(unsafe.Pointer(&prog))); e != 0 {
		fmt.Printf("install: %v\n", e)
		os.Exit(1)
	}
	errno := func(nr uintptr, args ...uintptr) string {
		a := append(args, 0, 0, 0, 0, 0, 0)
		_, _, e := unix.RawSyscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
		if e == 0 {
			return "ok"
		}
		return e.Error()
	}
	var out []string
	out = append(out, "getpid="+errno(unix.SYS_GETPID))
	out = append(out, "keyctl="+errno(unix.SYS_KEYCTL, 0))
	out = append(out, "io_uring_setup="+errno(unix.SYS_IO_URING_SETUP, 1, 0))
	out = append(out, "ptrace="+errno(unix.SYS_PTRACE, unix.PTRACE_TRACEME))
	// A syscall number no profile knows: runc's patch makes it ENOSYS, so
	// that programs fall back as on an older kernel.
	out = append(out, "unknown="+errno(1000))
	fmt.Println(strings.Join(out, " "))
	os.Exit(0)
}

func readAll(f *os.File) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}

func workspaceProfile(t *testing.T) *configs.Seccomp {
	t.Helper()
	profile, err := specconv.SetupSeccomp(spec.WorkspaceSeccomp())
	if err != nil {
		t.Fatal(err)
	}
	return profile
}

// TestCompileWorkspaceProfile compiles the workspace's profile and runs a
// process under the program alone: allowed syscalls work, the ones the
// profile denies fail with EPERM and unknown ones with ENOSYS.
func TestCompileWorkspaceProfile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (PTRACE_SECCOMP_GET_FILTER)")
	}
	prog, err := Compile(workspaceProfile(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(prog.Filter) < 10 {
		t.Fatalf("program of %d instructions", len(prog.Filter))
	}
	// containerd's profile lets the kernel's store-bypass mitigation be
	// the process' own choice, as libcontainer installs it.
	if prog.Flags != filterFlagSpecAllow {
		t.Errorf("flags %#x, want SPEC_ALLOW", prog.Flags)
	}
	again, err := Compile(workspaceProfile(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(prog.Bytes(), again.Bytes()) {
		t.Error("the same profile compiled twice gave two programs")
	}
	cmd := exec.Command("/proc/self/exe", probeArg)
	cmd.Stdin = bytes.NewReader(prog.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v: %s", err, out)
	}
	want := "getpid=ok keyctl=operation not permitted io_uring_setup=operation not permitted ptrace=operation not permitted unknown=function not implemented"
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("under the program:\n got %s\nwant %s", got, want)
	}
}

// TestCompileRefusesWhatAProgramCannotCarry: flags and notify actions
// need libcontainer's own setup.
func TestCompileRefusesWhatAProgramCannotCarry(t *testing.T) {
	p := workspaceProfile(t)
	p.Flags = []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_NEW"}
	if _, err := Compile(p); err == nil || !strings.Contains(err.Error(), "flag") {
		t.Errorf("flags: %v", err)
	}
	p = workspaceProfile(t)
	p.Syscalls = append(p.Syscalls, &configs.Syscall{Name: "mkdir", Action: configs.Notify})
	if _, err := Compile(p); err == nil || !strings.Contains(err.Error(), "notify") {
		t.Errorf("notify: %v", err)
	}
	if _, err := Compile(nil); err == nil {
		t.Error("nil profile compiled")
	}
}

// TestCompileReportsTheChildsError: a profile libseccomp refuses comes
// back as the child's error, and no child is left.
func TestCompileReportsTheChildsError(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	p := workspaceProfile(t)
	p.Architectures = []string{"no-such-arch"}
	_, err := Compile(p)
	if err == nil || !strings.Contains(err.Error(), "architecture") {
		t.Fatalf("got %v", err)
	}
	var ws unix.WaitStatus
	if _, werr := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil); !errors.Is(werr, unix.ECHILD) {
		t.Errorf("a child is left: %v", werr)
	}
}
