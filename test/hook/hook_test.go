// Package hook runs bin/sandbox-hook alone under plain runc (the one the
// Makefile builds into _output/bin): no shim, no containerd. The hook
// reserves the ports in the container's network namespace and hands them to
// a holder the test runs; the container cannot take them.
package hook

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/internal/reserve"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

func TestHookUnderPlainRunc(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	runc := filepath.Join(root, "_output", "bin", "runc")
	hook := filepath.Join(root, "bin", "sandbox-hook")
	for _, p := range []string{runc, hook, "/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v (make deps build)", p, err)
		}
	}
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	holderPath := filepath.Join(dir, "holder.sock")
	writeBundle(t, runc, bundle, hook, holderPath)

	// The holder: receives the listeners and keeps them.
	holder, err := net.ListenUnix("unix", &net.UnixAddr{Name: holderPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	received := make(chan *reserve.Reservation, 1)
	go func() {
		conn, err := holder.AcceptUnix()
		if err != nil {
			t.Error(err)
			received <- nil
			return
		}
		defer conn.Close()
		res, err := reserve.Receive(conn)
		if err != nil {
			t.Error(err)
		}
		received <- res
	}()

	id := fmt.Sprintf("sst-hook-%d", os.Getpid())
	state := filepath.Join(dir, "runc-state")
	runcCmd := func(args ...string) *exec.Cmd {
		return exec.Command(runc, append([]string{"--root", state}, args...)...)
	}
	// The container's stdio is a file: a pipe would keep the command
	// waiting for as long as the container runs.
	logPath := filepath.Join(dir, "runc.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	run := runcCmd("run", "-d", "--bundle", bundle, id)
	run.Stdout, run.Stderr = logFile, logFile
	if err := run.Run(); err != nil {
		out, _ := os.ReadFile(logPath)
		t.Fatalf("runc run: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := runcCmd("delete", "-f", id).CombinedOutput(); err != nil {
			t.Errorf("runc delete: %v: %s", err, out)
		}
	})
	var res *reserve.Reservation
	select {
	case res = <-received:
	case <-time.After(10 * time.Second):
		t.Fatal("the hook never handed the listeners over")
	}
	if res == nil {
		t.FailNow()
	}
	defer res.Close()
	if p := res.Ports(); len(p) != 2 || p[0] != 8080 || p[1] != 8888 || !res.Listeners[0].DualStack {
		t.Fatalf("received %+v, want 8080 and 8888 (the annotation), dual-stack", res.Listeners)
	}
	out, err := runcCmd("state", id).Output()
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	nsPath := fmt.Sprintf("/proc/%d/ns/net", st.Pid)

	// Inside the container, the port is taken.
	exe, err := runcCmd("exec", id, "/bin/busybox", "nc", "-l", "-p", "8080").CombinedOutput()
	if err == nil || !strings.Contains(string(exe), "in use") {
		t.Errorf("nc -l -p 8080 in the container: %v: %s (want address in use)", err, exe)
	}
	// A connection inside the container's namespace reaches the holder.
	l, err := net.FileListener(res.Listeners[0].File)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = harness.InNetns(nsPath, func() error {
		c, err := net.DialTimeout("tcp", "[::ffff:127.0.0.1]:8080", 3*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("connect in the container's namespace: %v", err)
	}
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	if c, err := l.Accept(); err != nil {
		t.Errorf("the holder's listener got no connection: %v", err)
	} else {
		c.Close()
	}
	// Even root in that namespace cannot bind the port on any address.
	err = harness.InNetns(nsPath, func() error {
		for _, addr := range []string{"0.0.0.0:8888", "127.0.0.1:8888", "[::1]:8888", "[::]:8888"} {
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				return fmt.Errorf("bound %s", addr)
			} else if !errors.Is(err, unix.EADDRINUSE) {
				return fmt.Errorf("bind %s: %w (want EADDRINUSE)", addr, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// writeBundle makes a busybox bundle whose createRuntime hook is the
// sandbox hook, with the ports in the annotation.
func writeBundle(t *testing.T, runc, bundle, hook, holder string) {
	t.Helper()
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	s.Process.Terminal = false
	s.Process.Args = []string{"/bin/busybox", "sleep", "60"}
	s.Annotations = map[string]string{"io.sandbox.reserved-ports": "8080,8888"}
	s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: hook, Args: []string{"sandbox-hook", "--socket", holder}}}}
	if b, err = json.Marshal(&s); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
