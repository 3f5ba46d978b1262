package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	sandboxclient "github.com/sandbox-shim/sandbox-shim/client"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// clientSandbox starts a sandbox whose control plane sleeps and returns its
// id and a client of its host API socket, once the API answers and the
// workspace is built.
func clientSandbox(t *testing.T, opts ...oci.SpecOpts) (string, *sandboxclient.Client) {
	t.Helper()
	skipUnderRunc(t, "the sandbox API is io.sandbox.v1's")
	ctx := testCtx(t)
	id := newID(t)
	c := newContainer(t, ctx, id, append([]oci.SpecOpts{oci.WithProcessArgs("sleep", "600")}, opts...)...)
	startTask(t, ctx, c, nullIO())
	sandbox := sandboxclient.ForSandbox(d.Namespace, id)
	t.Cleanup(func() { sandbox.Close() })
	var lastErr error
	if !poll(stepTimeout, func() bool { _, lastErr = sandbox.Info(ctx); return lastErr == nil }) {
		t.Fatalf("sandbox %s: API at %s does not answer: %v", id, api.HostSocketPath(d.Namespace, id), lastErr)
	}
	// The workspace, and with it secure execution, is built after Start in
	// the background; the first exec waits for it. Until then Info says
	// secure execution is unavailable, "not built yet".
	if res, err := sandbox.Exec(ctx, sandboxclient.Argv("true"), sandboxclient.ExecOptions{}); err != nil || res.ExitCode != 0 {
		t.Fatalf("sandbox %s: first exec: %v %+v", id, err, res)
	}
	return id, sandbox
}

// canary is a value no test output contains by chance.
func canary(t *testing.T, what string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return what + "-" + hex.EncodeToString(b)
}

// timedWriter records when each write arrived.
type timedWriter struct {
	mu     sync.Mutex
	start  time.Time
	buf    bytes.Buffer
	writes []time.Duration
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, time.Since(w.start))
	return w.buf.Write(p)
}

// TestClientExec runs the API's exec through the Go client: argv and
// shell commands, env, cwd, stdin, exit codes, signals, timeouts, output
// as it comes, cancellation.
func TestClientExec(t *testing.T) {
	_, sandbox := clientSandbox(t)

	t.Run("argv", func(t *testing.T) {
		res, err := sandbox.Exec(testCtx(t), sandboxclient.Argv("echo", "hello", "$HOME"), sandboxclient.ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// No shell: $HOME stays a word.
		if string(res.Stdout) != "hello $HOME\n" || res.ExitCode != 0 || res.Isolated || res.CallID == "" {
			t.Fatalf("result %+v stdout %q", res, res.Stdout)
		}
	})
	t.Run("shell, stderr, exit code", func(t *testing.T) {
		res, err := sandbox.Exec(testCtx(t), sandboxclient.Shell("echo $((6*7)); echo oops >&2; exit 3"), sandboxclient.ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Stdout) != "42\n" || string(res.Stderr) != "oops\n" || res.ExitCode != 3 {
			t.Fatalf("result %+v stdout %q stderr %q", res, res.Stdout, res.Stderr)
		}
	})
	t.Run("env and cwd", func(t *testing.T) {
		res, err := sandbox.Exec(testCtx(t), sandboxclient.Shell(`echo "$GREETING"; pwd; id -u`), sandboxclient.ExecOptions{
			Env: map[string]string{"GREETING": "hi there"}, Cwd: "/etc",
		})
		if err != nil {
			t.Fatal(err)
		}
		// The workspace's user, as for a containerd exec.
		if string(res.Stdout) != "hi there\n/etc\n1000\n" {
			t.Fatalf("stdout %q", res.Stdout)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		res, err := sandbox.Exec(testCtx(t), sandboxclient.Argv("tr", "a-z", "A-Z"), sandboxclient.ExecOptions{Stdin: strings.NewReader("shout\n")})
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Stdout) != "SHOUT\n" {
			t.Fatalf("stdout %q", res.Stdout)
		}
	})
	t.Run("signal", func(t *testing.T) {
		res, err := sandbox.Exec(testCtx(t), sandboxclient.Shell("kill -TERM $$; sleep 5"), sandboxclient.ExecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Signal != 15 || res.ExitCode != 143 || res.TimedOut {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		res, err := sandbox.Exec(testCtx(t), sandboxclient.Argv("sleep", "30"), sandboxclient.ExecOptions{Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if !res.TimedOut || time.Since(start) > 10*time.Second || res.Duration < 500*time.Millisecond {
			t.Fatalf("result %+v after %v", res, time.Since(start))
		}
	})
	t.Run("output as it comes", func(t *testing.T) {
		stdout := &timedWriter{start: time.Now()}
		res, err := sandbox.Exec(testCtx(t), sandboxclient.Shell("echo first; sleep 1.5; echo second"), sandboxclient.ExecOptions{Stdout: stdout})
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(stdout.start)
		if stdout.buf.String() != "first\nsecond\n" || res.Stdout != nil || len(stdout.writes) < 2 {
			t.Fatalf("stdout %q in %d writes, captured %q", stdout.buf.String(), len(stdout.writes), res.Stdout)
		}
		if first := stdout.writes[0]; first > elapsed-time.Second {
			t.Fatalf("first line arrived after %v of %v: output was held back", first, elapsed)
		}
	})
	t.Run("cancel kills the command", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		done := make(chan error, 1)
		go func() {
			_, err := sandbox.Exec(ctx, sandboxclient.Argv("sleep", "4242"), sandboxclient.ExecOptions{})
			done <- err
		}()
		waitForProcess(t, sandbox, "sleep 4242", true)
		cancel()
		select {
		case err := <-done:
			if connect.CodeOf(err) != connect.CodeCanceled {
				t.Fatalf("cancelled Exec: %v", err)
			}
		case <-time.After(stepTimeout):
			t.Fatal("Exec did not return after its context was cancelled")
		}
		waitForProcess(t, sandbox, "sleep 4242", false)
	})
}

// waitForProcess waits until a workspace process with these args is
// running (or gone), looking from a new exec.
func waitForProcess(t *testing.T, sandbox *sandboxclient.Client, args string, running bool) {
	t.Helper()
	var last string
	found := func() bool {
		res, err := sandbox.Exec(testCtx(t), sandboxclient.Shell("cat /proc/[0-9]*/cmdline | tr '\\0' ' '"), sandboxclient.ExecOptions{})
		if err != nil {
			t.Fatalf("list processes: %v", err)
		}
		last = string(res.Stdout)
		return strings.Contains(last, args+" ") == running
	}
	if !poll(stepTimeout, found) {
		t.Fatalf("process %q running=%v never seen; processes: %q", args, running, last)
	}
}

// TestClientSecureExec: the call's env reaches its command only; the
// audit keeps keys, not values; isolated=false needs the fallback.
func TestClientSecureExec(t *testing.T) {
	id, sandbox := clientSandbox(t)
	ctx := testCtx(t)
	if ok, err := sandbox.HasSecureExecution(ctx); err != nil || !ok {
		info, _ := sandbox.Info(ctx)
		t.Fatalf("HasSecureExecution = %v, %v (unavailable: %q)", ok, err, info.GetSecureExecutionUnavailable())
	}
	secret := canary(t, "secret")
	res, err := sandbox.ExecSecure(ctx, sandboxclient.Shell(`echo "got $DEPLOY_KEY"; echo "$1"`), sandboxclient.SecureOptions{
		Env: map[string]string{"DEPLOY_KEY": secret}, Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.Stdout), "got "+secret) || res.ExitCode != 0 || !res.Isolated || res.CallID == "" {
		t.Fatalf("result %+v stdout %q", res, res.Stdout)
	}
	// A plain exec afterwards does not see it.
	plain, err := sandbox.Exec(ctx, sandboxclient.Shell(`echo "${DEPLOY_KEY:-unset}"`), sandboxclient.ExecOptions{})
	if err != nil || string(plain.Stdout) != "unset\n" {
		t.Fatalf("plain exec after ExecSecure: %v %q", err, plain.Stdout)
	}

	// Argv words equal to a value are redacted in the audit trail.
	res2, err := sandbox.ExecSecure(ctx, sandboxclient.Argv("echo", secret), sandboxclient.SecureOptions{
		Env: map[string]string{"DEPLOY_KEY": secret}, Stdin: strings.NewReader("ignored"),
	})
	if err != nil || string(res2.Stdout) != secret+"\n" {
		t.Fatalf("secret in argv: %v %q", err, res2.Stdout)
	}
	records, err := sandbox.Audit(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]*sandboxv1.AuditRecord{}
	for _, r := range records {
		seen[r.GetCallId()] = r
		if strings.Contains(fmt.Sprint(r), secret) {
			t.Errorf("audit record holds the secret: %v", r)
		}
	}
	for _, call := range []*sandboxclient.Result{res, res2} {
		r := seen[call.CallID]
		if r == nil {
			t.Fatalf("no audit record for call %s in %v", call.CallID, records)
		}
		if r.GetSandboxId() != id || r.GetNamespace() != d.Namespace || r.GetCaller() != sandboxv1.Caller_CALLER_HOST || !r.GetIsolated() ||
			len(r.GetEnvKeys()) != 1 || r.GetEnvKeys()[0] != "DEPLOY_KEY" {
			t.Errorf("audit record %v", r)
		}
	}
	if last, err := sandbox.Audit(ctx, 1); err != nil || len(last) != 1 || last[0].GetCallId() != res2.CallID {
		t.Errorf("Audit(1) = %v, %v; want the last call %s", last, err, res2.CallID)
	}

	// isolated=false is refused without the fallback, and runs as a plain
	// exec with a warning with it.
	notIsolated := false
	_, err = sandbox.ExecSecure(ctx, sandboxclient.Argv("true"), sandboxclient.SecureOptions{Isolated: &notIsolated})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "allow_insecure_fallback") {
		t.Fatalf("isolated=false without fallback: %v", err)
	}
	fallback, err := sandbox.ExecSecure(ctx, sandboxclient.Shell(`echo "$K"`), sandboxclient.SecureOptions{
		Isolated: &notIsolated, AllowInsecureFallback: true, Env: map[string]string{"K": "v"},
	})
	if err != nil || fallback.Isolated || len(fallback.Warnings) == 0 || string(fallback.Stdout) != "v\n" {
		t.Fatalf("insecure fallback: %v %+v", err, fallback)
	}
}

// TestClientEnvAndInfo: SetEnvVars warns on secret-looking keys without
// echoing values, and later execs see the vars; Info describes the sandbox.
func TestClientEnvAndInfo(t *testing.T) {
	id, sandbox := clientSandbox(t)
	ctx := testCtx(t)
	value := canary(t, "value")
	warnings, err := sandbox.SetEnvVars(ctx, map[string]string{"APP_MODE": "test", "GITHUB_TOKEN": value})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "GITHUB_TOKEN") || strings.Contains(warnings[0], value) {
		t.Fatalf("warnings %q", warnings)
	}
	res, err := sandbox.Exec(ctx, sandboxclient.Shell(`echo "$APP_MODE"`), sandboxclient.ExecOptions{})
	if err != nil || string(res.Stdout) != "test\n" {
		t.Fatalf("exec after SetEnvVars: %v %q", err, res.Stdout)
	}
	info, err := sandbox.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.GetSandboxId() != id || info.GetNamespace() != d.Namespace || info.GetCaller() != sandboxv1.Caller_CALLER_HOST {
		t.Errorf("info %v", info)
	}
	if strings.Join(info.GetEnvKeys(), ",") != "APP_MODE,GITHUB_TOKEN" {
		t.Errorf("env keys %q", info.GetEnvKeys())
	}
	if len(info.GetProtections()) == 0 {
		t.Errorf("no protections listed: %v", info)
	}
	for _, p := range info.GetProtections() {
		if p.GetName() == "" || p.GetDescription() == "" {
			t.Errorf("protection without name or description: %v", p)
		}
	}
}

// TestClientErrors: bad input gets a clear error of the right code, and
// the sandbox keeps serving.
func TestClientErrors(t *testing.T) {
	_, sandbox := clientSandbox(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		call func() error
		code connect.Code
		says string
	}{
		{"digit first", func() error {
			_, err := sandbox.Exec(ctx, sandboxclient.Argv("true"), sandboxclient.ExecOptions{Env: map[string]string{"1BAD": "x"}})
			return err
		}, connect.CodeInvalidArgument, "1BAD"},
		{"= in name", func() error {
			_, err := sandbox.ExecSecure(ctx, sandboxclient.Argv("true"), sandboxclient.SecureOptions{Env: map[string]string{"A=B": "x"}})
			return err
		}, connect.CodeInvalidArgument, "A=B"},
		{"NUL in value", func() error {
			_, err := sandbox.ExecSecure(ctx, sandboxclient.Argv("true"), sandboxclient.SecureOptions{Env: map[string]string{"NULLY": "a\x00b"}})
			return err
		}, connect.CodeInvalidArgument, "NULLY"},
		{"set bad name", func() error { _, err := sandbox.SetEnvVars(ctx, map[string]string{"BAD-NAME": "x"}); return err }, connect.CodeInvalidArgument, "BAD-NAME"},
	} {
		err := tc.call()
		if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v (code %v), want %v naming %q", tc.name, err, connect.CodeOf(err), tc.code, tc.says)
		}
	}
	// A missing binary and a bad cwd fail the call, naming them.
	if res, err := sandbox.Exec(ctx, sandboxclient.Argv("/no/such-binary"), sandboxclient.ExecOptions{}); err == nil && res.ExitCode == 0 {
		t.Errorf("missing binary: %+v", res)
	} else if err != nil && !strings.Contains(err.Error(), "/no/such-binary") {
		t.Errorf("missing binary: error does not name it: %v", err)
	}
	if res, err := sandbox.Exec(ctx, sandboxclient.Argv("true"), sandboxclient.ExecOptions{Cwd: "/no/such-dir"}); err == nil && res.ExitCode == 0 {
		t.Errorf("bad cwd: %+v", res)
	} else if err != nil && !strings.Contains(err.Error(), "/no/such-dir") {
		t.Errorf("bad cwd: error does not name it: %v", err)
	}
	// Still serving.
	if res, err := sandbox.Exec(ctx, sandboxclient.Argv("echo", "ok"), sandboxclient.ExecOptions{}); err != nil || string(res.Stdout) != "ok\n" {
		t.Fatalf("after bad input: %v %+v", err, res)
	}

	// No such sandbox: Unavailable, and the path does not exist.
	_, err := sandboxclient.ForSandbox(d.Namespace, "no-such-sandbox").Info(ctx)
	if connect.CodeOf(err) != connect.CodeUnavailable || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no such sandbox") {
		t.Errorf("no such sandbox: %v", err)
	}
}

// TestClientSecureExecDisabled: a sandbox annotated secure-exec=disabled
// fails closed, and the fallback runs the command as a plain exec.
func TestClientSecureExecDisabled(t *testing.T) {
	id, sandbox := clientSandbox(t, withAnnotations(api.AnnotationSecureExec, "disabled"))
	ctx := testCtx(t)
	info, err := sandbox.Info(ctx)
	if err != nil || info.GetHasSecureExecution() || len(info.GetSecureExecutionUnavailable()) == 0 {
		t.Fatalf("info of a disabled sandbox: %v %v", err, info)
	}
	_, err = sandbox.ExecSecure(ctx, sandboxclient.Argv("true"), sandboxclient.SecureOptions{Env: map[string]string{"K": "v"}})
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("ExecSecure where disabled: %v", err)
	}
	r := ctl(t, ctlCall{args: []string{"exec-secure", id, "--env", "K=v", "--", "true"}})
	if r.status != 125 || !strings.Contains(r.stderr, "failed_precondition") {
		t.Errorf("sandboxctl exec-secure where disabled: %+v", r)
	}
	r = ctl(t, ctlCall{args: []string{"exec-secure", id, "--allow-insecure-fallback", "--env", "K=v", "--", "sh", "-c", `echo "$K"`}})
	if r.status != 0 || r.stdout != "v\n" || !strings.Contains(r.stderr, "sandboxctl: warning: ") {
		t.Errorf("sandboxctl --allow-insecure-fallback: %+v", r)
	}
	r = ctl(t, ctlCall{args: []string{"info", id}})
	if r.status != 0 || !strings.Contains(r.stdout, "secure execution:  unavailable: ") {
		t.Errorf("sandboxctl info where disabled: %+v", r)
	}
}

// ctlCall is one run of bin/sandboxctl against the test daemon's namespace.
type ctlCall struct {
	args  []string
	env   []string // added to the test's environment
	stdin string
	// running, if set, is called once stdout has a line, with the process.
	running func(*os.Process)
}

type ctlResult struct {
	stdout, stderr string
	status         int
}

func ctl(t *testing.T, call ctlCall) ctlResult {
	t.Helper()
	bin, err := harness.RepoBinary("sandboxctl")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testCtx(t), bin, append([]string{"-n", d.Namespace}, call.args...)...)
	cmd.Env = append(os.Environ(), call.env...)
	cmd.Stdin = strings.NewReader(call.stdin)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if call.running != nil {
		stdout.waitFor(t, "\n", stepTimeout)
		call.running(cmd.Process)
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("sandboxctl %q: %v", call.args, err)
	}
	return ctlResult{stdout: stdout.String(), stderr: stderr.String(), status: cmd.ProcessState.ExitCode()}
}

// TestSandboxctl runs every sandboxctl command against a real sandbox.
func TestSandboxctl(t *testing.T) {
	id, _ := clientSandbox(t)

	t.Run("exec", func(t *testing.T) {
		r := ctl(t, ctlCall{args: []string{"exec", id, "--cwd", "/etc", "--env", "A=1", "--env", "B=two words", "--", "sh", "-c", `echo "$A $B $(pwd)"; echo err >&2; exit 7`}})
		if r.status != 7 || r.stdout != "1 two words /etc\n" || r.stderr != "err\n" {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		r := ctl(t, ctlCall{args: []string{"exec", id, "-i", "--", "wc", "-c"}, stdin: "12345"})
		if r.status != 0 || strings.TrimSpace(r.stdout) != "5" {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("timeout is 124", func(t *testing.T) {
		r := ctl(t, ctlCall{args: []string{"exec", id, "--timeout", "300ms", "--", "sleep", "30"}})
		if r.status != 124 || !strings.Contains(r.stderr, "timed out") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("signal is 128+N", func(t *testing.T) {
		r := ctl(t, ctlCall{args: []string{"exec", id, "--", "sh", "-c", "kill -USR1 $$; sleep 5"}})
		if r.status != 128+int(syscall.SIGUSR1) {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("interrupt kills the command", func(t *testing.T) {
		r := ctl(t, ctlCall{
			args:    []string{"exec", id, "--", "sh", "-c", "echo started; exec sleep 4343"},
			running: func(p *os.Process) { _ = p.Signal(os.Interrupt) },
		})
		if r.status != 130 || !strings.Contains(r.stderr, "interrupted") {
			t.Fatalf("%+v", r)
		}
		waitForProcess(t, sandboxclient.ForSandbox(d.Namespace, id), "sleep 4343", false)
	})
	t.Run("exec-secure keeps values out of argv", func(t *testing.T) {
		inline, fromEnv, fromFile := canary(t, "inline"), canary(t, "env"), canary(t, "file")
		envFile := filepath.Join(t.TempDir(), "secrets.env")
		if err := os.WriteFile(envFile, []byte("# deploy\n\nexport FILE_SECRET="+fromFile+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var cmdline string
		r := ctl(t, ctlCall{
			args: []string{"exec-secure", id, "--env", "INLINE=" + inline, "--env", "ENV_SECRET", "--env-file", envFile, "--timeout", "30s",
				"--", "sh", "-c", `echo "$INLINE $ENV_SECRET $FILE_SECRET"; sleep 1`},
			env: []string{"ENV_SECRET=" + fromEnv},
			running: func(p *os.Process) {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
				if err != nil {
					t.Errorf("read sandboxctl's cmdline: %v", err)
				}
				cmdline = string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
			},
		})
		if r.status != 0 || r.stdout != inline+" "+fromEnv+" "+fromFile+"\n" {
			t.Fatalf("%+v", r)
		}
		if !strings.Contains(cmdline, "--env ENV_SECRET --env-file") || strings.Contains(cmdline, fromEnv) || strings.Contains(cmdline, fromFile) {
			t.Fatalf("sandboxctl's command line while it ran: %q", cmdline)
		}
	})
	t.Run("env warns", func(t *testing.T) {
		value := canary(t, "value")
		r := ctl(t, ctlCall{args: []string{"env", id, "PLAIN=1", "DB_PASSWORD=" + value}})
		if r.status != 0 || !strings.Contains(r.stderr, "sandboxctl: warning: ") || !strings.Contains(r.stderr, "DB_PASSWORD") || strings.Contains(r.stderr, value) {
			t.Fatalf("%+v", r)
		}
		if r := ctl(t, ctlCall{args: []string{"exec", id, "--", "sh", "-c", `echo "$PLAIN"`}}); r.stdout != "1\n" {
			t.Fatalf("exec after env: %+v", r)
		}
	})
	t.Run("info", func(t *testing.T) {
		r := ctl(t, ctlCall{args: []string{"info", id}})
		for _, want := range []string{"sandbox:", d.Namespace + "/" + id, "caller:", "host", "secure execution:  available", "protections:"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("info text lacks %q: %+v", want, r)
			}
		}
		r = ctl(t, ctlCall{args: []string{"info", id, "--json"}})
		var info struct {
			SandboxID          string `json:"sandboxId"`
			HasSecureExecution bool   `json:"hasSecureExecution"`
			Caller             string `json:"caller"`
			Protections        []struct{ Name string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || r.status != 0 {
			t.Fatalf("info --json: %v: %+v", err, r)
		}
		if info.SandboxID != id || !info.HasSecureExecution || info.Caller != "CALLER_HOST" || len(info.Protections) == 0 {
			t.Errorf("info --json: %+v", info)
		}
	})
	t.Run("audit", func(t *testing.T) {
		secret := canary(t, "audited")
		r := ctl(t, ctlCall{args: []string{"exec-secure", id, "--env", "AUDITED_KEY", "--", "true"}, env: []string{"AUDITED_KEY=" + secret}})
		if r.status != 0 {
			t.Fatalf("exec-secure: %+v", r)
		}
		r = ctl(t, ctlCall{args: []string{"audit", id}})
		if r.status != 0 || !strings.HasPrefix(r.stdout, "TIME") || !strings.Contains(r.stdout, "AUDITED_KEY") || strings.Contains(r.stdout, secret) {
			t.Fatalf("audit: %+v", r)
		}
		r = ctl(t, ctlCall{args: []string{"audit", id, "--json"}})
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		var last struct {
			CallID   string   `json:"callId"`
			EnvKeys  []string `json:"envKeys"`
			Argv     []string
			ExitCode int `json:"exitCode"`
			Isolated bool
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
			t.Fatalf("audit --json: %v: %+v", err, r)
		}
		if last.CallID == "" || strings.Join(last.EnvKeys, ",") != "AUDITED_KEY" || strings.Join(last.Argv, " ") != "true" || !last.Isolated || last.ExitCode != 0 {
			t.Errorf("last audit record: %+v", last)
		}
	})
	t.Run("errors", func(t *testing.T) {
		r := ctl(t, ctlCall{args: []string{"info", "no-such-sandbox"}})
		if r.status != 125 || !strings.Contains(r.stderr, `no sandbox "no-such-sandbox" in namespace "`+d.Namespace+`"`) {
			t.Errorf("no such sandbox: %+v", r)
		}
		r = ctl(t, ctlCall{args: []string{"exec", id, "--env", "9LIVES=x", "--", "true"}})
		if r.status != 125 || !strings.Contains(r.stderr, "invalid variable name") {
			t.Errorf("bad env name: %+v", r)
		}
		r = ctl(t, ctlCall{args: []string{"exec-secure", id, "--env-file", "/no/such/file", "--", "true"}})
		if r.status != 125 || !strings.Contains(r.stderr, "/no/such/file") {
			t.Errorf("missing env file: %+v", r)
		}
		r = ctl(t, ctlCall{args: []string{"exec", id, "--", "/no/such-binary"}})
		if r.status == 0 || !strings.Contains(r.stderr, "/no/such-binary") {
			t.Errorf("missing binary: %+v", r)
		}
	})
}

// TestControlPlaneClient: the control plane reaches the API at
// /run/sandbox/api.sock (sandboxctl in the test image), as the caller
// "control plane", and its exec runs in the workspace.
func TestControlPlaneClient(t *testing.T) {
	skipUnderRunc(t, "the sandbox API is io.sandbox.v1's")
	ctx := testCtx(t)
	id := newID(t)
	script := `until [ -S /run/sandbox/api.sock ]; do sleep 0.05; done
sandboxctl --socket /run/sandbox/api.sock info --json
sandboxctl --socket /run/sandbox/api.sock exec -- sh -c 'echo "workspace uid $(id -u)"'
echo "exit status $?"
exec sleep 600`
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sh", "-c", script))
	var stdout, stderr syncBuffer
	startTask(t, ctx, c, ioCreator(nil, &stdout, &stderr, false))
	stdout.waitFor(t, "exit status", testTimeout/2)
	var info struct {
		SandboxID string `json:"sandboxId"`
		Caller    string `json:"caller"`
	}
	if err := json.NewDecoder(strings.NewReader(stdout.String())).Decode(&info); err != nil {
		t.Fatalf("control plane's info --json: %v: %q (stderr %q)", err, stdout.String(), stderr.String())
	}
	if info.SandboxID != id || info.Caller != "CALLER_CONTROL_PLANE" {
		t.Errorf("control plane's info: %+v", info)
	}
	if !strings.Contains(stdout.String(), "workspace uid 1000\nexit status 0\n") {
		t.Errorf("control plane's exec: %q (stderr %q)", stdout.String(), stderr.String())
	}
	// The same call from the host says host.
	if r := ctl(t, ctlCall{args: []string{"info", id, "--json"}}); !strings.Contains(r.stdout, `"caller": "CALLER_HOST"`) {
		t.Errorf("host's info: %+v", r)
	}
}
