// Command demo runs one sandbox on a private containerd and shows, step by
// step, what user code can and cannot do to the control plane and to a
// secret handed to execSecure. It is what
// `make demo` runs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

const (
	id   = "demo"
	port = 8080
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run() error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	step("starting a private containerd (nothing shared with a host containerd)")
	d, err := harness.Start(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	defer func() {
		step("cleaning up")
		if err := d.Stop(); err != nil {
			fmt.Println("cleanup:", err)
		}
	}()
	step("sandbox %q on runtime %s: the control plane is the image entrypoint, an HTTP server on the reserved ports 8080 and 8888", id, harness.SandboxRuntime)
	fmt.Println("  the shim makes the listening sockets before the control plane exists and hands them over as fds 3 and 4 (LISTEN_FDS);")
	fmt.Println("  its local API is a unix path socket in a root-only directory, never an abstract name")
	ctr, err := d.NewContainer(ctx, id, harness.Image, harness.SandboxRuntime,
		oci.WithProcessArgs("/usr/local/bin/agent", "-root", "/www", "-unix", "/run/agent/agent.sock"),
		oci.WithMemoryLimit(256<<20))
	if err != nil {
		return err
	}
	defer ctr.Delete(context.WithoutCancel(ctx), client.WithSnapshotCleanup)
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		return err
	}
	defer task.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
	if err := task.Start(ctx); err != nil {
		return err
	}
	cpPid := int(task.Pid())
	if err := checkControlPlane(cpPid); err != nil {
		return err
	}

	n := 0
	exec := func(title string, args ...string) (string, error) {
		n++
		fmt.Printf("  [user code] $ %s\n", strings.Join(args, " "))
		var out harness.SyncBuffer
		spec, err := ctr.Spec(ctx)
		if err != nil {
			return "", err
		}
		ps := *spec.Process
		ps.Args = args
		ps.Terminal = false
		p, err := task.Exec(ctx, fmt.Sprintf("demo-%d", n), &ps, cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(d.FIFODir())))
		if err != nil {
			return "", err
		}
		st, err := p.Wait(ctx)
		if err != nil {
			return "", err
		}
		if err := p.Start(ctx); err != nil {
			return "", err
		}
		var es client.ExitStatus
		select {
		case es = <-st:
		case <-time.After(30 * time.Second):
			return out.String(), fmt.Errorf("%s: timed out", title)
		}
		// As ctr does: the output first, then Delete (which cancels the readers).
		harness.DrainIO(p, 5*time.Second)
		if _, err := p.Delete(ctx); err != nil {
			return out.String(), err
		}
		for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
			if l != "" {
				fmt.Printf("      %s\n", l)
			}
		}
		fmt.Printf("      (exit %d)\n", es.ExitCode())
		return out.String(), nil
	}

	step("guarantee 1: user code cannot see or kill the control plane")
	fmt.Println("  every exec runs in a workspace: its own PID namespace (a sibling of the control plane's), a non-root user, no capabilities")
	if _, err := exec("whoami", "id"); err != nil {
		return err
	}
	out, err := exec("ps", "ps", "-o", "pid,user,args")
	if err != nil {
		return err
	}
	if strings.Contains(out, "agent") {
		return fmt.Errorf("the control plane is visible to user code")
	}
	fmt.Println("  -> no agent in the list: the control plane is not there to signal")
	if _, err := exec("kill -9 -1", "sh", "-c", "kill -9 -1; echo still here"); err != nil {
		return err
	}
	if _, err := exec("every signal", "/usr/local/bin/attacker", "signal-all"); err != nil {
		return err
	}
	if _, err := exec("oom", "/usr/local/bin/attacker", "oom-adj"); err != nil {
		return err
	}
	if _, err := exec("ptrace", "/usr/local/bin/attacker", "ptrace"); err != nil {
		return err
	}
	if _, err := exec("cgroup", "/usr/local/bin/attacker", "cgroup"); err != nil {
		return err
	}
	fmt.Println("  a fork bomb for 3 seconds (the workspace's pids limit stops it):")
	if _, err := exec("fork bomb", "sh", "-c", "b(){ b|b& }; b >/dev/null 2>&1 & sleep 3; echo fork bomb ran"); err != nil {
		return err
	}
	start := time.Now()
	if _, err := exec("after", "true"); err != nil {
		return err
	}
	fmt.Printf("  a new exec during the fork bomb took %v\n", time.Since(start).Round(time.Millisecond))
	if err := checkControlPlane(cpPid); err != nil {
		return err
	}
	if int(task.Pid()) != cpPid {
		return fmt.Errorf("control plane pid changed")
	}
	fmt.Printf("  -> the control plane (pid %d on the host) survived everything\n", cpPid)

	step("guarantee 2: the reserved ports 8080 and 8888 stay the control plane's")
	if body, err := harness.HTTPGet(cpPid, port, "/fds", 3*time.Second); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
			if strings.HasPrefix(l, "LISTEN_") || strings.HasPrefix(l, "fd 3 ") || strings.HasPrefix(l, "fd 4 ") {
				fmt.Printf("  [outside] control plane: %s\n", l)
			}
		}
	}
	fmt.Println("  user code tries every bind (0.0.0.0, 127.0.0.1, [::] dual-stack and v6only, ::1, ::ffff:127.0.0.1; SO_REUSEADDR, SO_REUSEPORT):")
	if _, err := exec("bind", "sh", "-c", "/usr/local/bin/attacker bind-reserved - 8080 8888 | tail -4"); err != nil {
		return err
	}
	fmt.Println("  user code tries to call the control plane's API directly (a cgroup BPF program refuses the connection):")
	if _, err := exec("connect", "sh", "-c", "/usr/local/bin/attacker connect-reserved - 8080 | head -4"); err != nil {
		return err
	}
	fmt.Println("  user code squats the abstract name @agent.sock and tries the control plane's path socket:")
	if _, err := exec("squat", "sh", "-c", "timeout 2 /usr/local/bin/attacker squat-unix agent.sock /run/agent/agent.sock"); err != nil {
		return err
	}
	for _, p := range []int{8080, 8888} {
		body, err := harness.HTTPGet(cpPid, p, "/", 3*time.Second)
		if err != nil {
			return fmt.Errorf("[outside] control plane does not answer on %d: %w", p, err)
		}
		fmt.Printf("  [outside] GET http://127.0.0.1:%d/ -> %q\n", p, strings.TrimSpace(body))
	}
	fmt.Println("  -> every bind and connect failed; the control plane still serves both ports")

	// The fork bomb still holds the workspace's pids: the platform's way
	// back in is a reset, which needs nothing from the workspace.
	fmt.Println("  [platform] task Update with io.sandbox.workspace.reset=true: a fresh workspace, the fork bomb and all user code left are gone")
	if err := task.Update(ctx, client.WithAnnotations(map[string]string{api.AnnotationWorkspaceReset: "true"})); err != nil {
		return fmt.Errorf("reset the workspace: %w", err)
	}

	return secureStep(ctx, d, ctr, task)
}

func checkControlPlane(pid int) error {
	// Right after Start the server may not be listening yet.
	var body string
	var err error
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if body, err = harness.HTTPGet(pid, port, "/", 3*time.Second); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("[outside] control plane does not answer: %w", err)
	}
	fmt.Printf("  [outside] GET http://127.0.0.1:%d/ in the sandbox's network -> %q\n", port, strings.TrimSpace(body))
	return nil
}
