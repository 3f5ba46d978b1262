package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/client"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// secureStep is guarantee 3: a deploy step gets a secret through execSecure (the Go client on
// the sandbox's host API socket), while user code in the workspace hunts for it everywhere.
func secureStep(ctx context.Context, d *harness.Daemon, ctr containerd.Container, task containerd.Task) error {
	step("guarantee 3: execSecure gives a secret to one command, and to nothing else")
	socket := api.HostSocketPath(d.Namespace, id)
	c := client.ForSandbox(d.Namespace, id)
	defer c.Close()
	fmt.Printf("  [platform] the sandbox API on the host: %s (root only; the control plane has its own at %s)\n", socket, api.ControlPlaneSocket)
	info, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("info: %w", err)
	}
	fmt.Printf("  [platform] Info: hasSecureExecution=%v\n", info.GetHasSecureExecution())
	for _, p := range info.GetProtections() {
		if p.GetActive() {
			fmt.Printf("      protection %-22s %s\n", p.GetName(), p.GetDescription())
		}
	}
	if !info.GetHasSecureExecution() {
		return fmt.Errorf("secure execution unavailable: %v", info.GetSecureExecutionUnavailable())
	}

	// User code starts hunting first: every /proc/*/environ, cmdline and mem it can open,
	// /proc/net/unix, SysV shm, /tmp, HOME, /dev/shm and every file it can read, in rounds.
	fmt.Println("  [user code] $ attacker hunt -for 1m   (in the background, looking for sst-canary-<32 hex>)")
	hunter, out, err := startBackground(ctx, d, ctr, task, "demo-hunter", "/usr/local/bin/attacker", "hunt", "-for", "1m")
	if err != nil {
		return err
	}
	defer hunter.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "round 1 done"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the hunter never finished a round: %s", out.String())
		}
	}

	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	secret := "sst-canary-" + hex.EncodeToString(b)
	fmt.Println("  [platform] execSecure(deploy, {env: {DEPLOY_TOKEN: <secret>}}): the command prints the token's length and hash, never the token")
	res, err := c.ExecSecure(ctx, client.Shell(`echo "deploying with a token of ${#DEPLOY_TOKEN} bytes, sha256 $(printf %s "$DEPLOY_TOKEN" | sha256sum | cut -c1-16)..."
printf %s "$DEPLOY_TOKEN" > "$HOME/.deploy-token"   # as tools cache credentials
sleep 2; echo deployed`), client.SecureOptions{Env: map[string]string{"DEPLOY_TOKEN": secret}, Timeout: time.Minute})
	if err != nil {
		return fmt.Errorf("execSecure: %w", err)
	}
	for _, l := range strings.Split(strings.TrimRight(string(res.Stdout), "\n"), "\n") {
		fmt.Printf("      %s\n", l)
	}
	fmt.Printf("      (exit %d, isolated %v, %v, call %s)\n", res.ExitCode, res.Isolated, res.Duration.Round(time.Millisecond), res.CallID)

	// The hunt goes on for a moment after the call, then reports.
	time.Sleep(500 * time.Millisecond)
	status, err := hunter.Wait(ctx)
	if err != nil {
		return err
	}
	if err := hunter.Kill(ctx, syscall.SIGTERM); err != nil {
		return err
	}
	var code uint32
	select {
	case st := <-status:
		code = st.ExitCode()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the hunter did not stop")
	}
	harness.DrainIO(hunter, 5*time.Second)
	fmt.Println("  [user code] the hunter's report:")
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		if l != "round 1 done" {
			fmt.Printf("      %s\n", l)
		}
	}
	fmt.Printf("      (exit %d)\n", code)
	if code != 0 || strings.Contains(out.String(), secret) {
		return fmt.Errorf("user code found the secret")
	}

	plain, err := c.Exec(ctx, client.Shell(`env | grep -c DEPLOY_TOKEN; ls -a "$HOME"`), client.ExecOptions{})
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	fmt.Printf("  [user code] $ env | grep -c DEPLOY_TOKEN; ls -a $HOME   (a plain exec afterwards)\n")
	for _, l := range strings.Fields(string(plain.Stdout)) {
		fmt.Printf("      %s\n", l)
	}
	if strings.Contains(string(plain.Stdout), secret) || strings.Contains(string(plain.Stdout), ".deploy-token") {
		return fmt.Errorf("a plain exec sees the secret")
	}

	records, err := c.Audit(ctx, 1)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	for _, r := range records {
		line, _ := protojson.Marshal(r)
		fmt.Printf("  [platform] audit: %s\n", line)
		if strings.Contains(string(line), secret) {
			return fmt.Errorf("the audit record holds the secret")
		}
	}
	fmt.Println("  -> the deploy saw its token; user code, hunting during and after the call, found nothing; the audit has the key, not the value")
	return nil
}

// startBackground starts args as a containerd exec in the workspace with its output in a
// buffer, and returns without waiting.
func startBackground(ctx context.Context, d *harness.Daemon, ctr containerd.Container, task containerd.Task, execID string, args ...string) (containerd.Process, *harness.SyncBuffer, error) {
	spec, err := ctr.Spec(ctx)
	if err != nil {
		return nil, nil, err
	}
	ps := *spec.Process
	ps.Args = args
	ps.Terminal = false
	out := &harness.SyncBuffer{}
	p, err := task.Exec(ctx, execID, &ps, cio.NewCreator(cio.WithStreams(nil, out, out), cio.WithFIFODir(d.FIFODir())))
	if err != nil {
		return nil, nil, err
	}
	if err := p.Start(ctx); err != nil {
		_, _ = p.Delete(ctx, containerd.WithProcessKill)
		return nil, nil, err
	}
	return p, out, nil
}
