package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/api/sandbox/v1/sandboxv1connect"
)

// Tests of the sandbox API server through the generated Connect client
// (io.sandbox.v1 only): its sockets, Exec, SetEnvVars, Info and
// ExecSecure's fail-closed paths. The Go client, sandboxctl and curl have
// their own tests (client_test.go), the secret leaks theirs (test/attack).

// unixHTTP is an HTTP client whose every request goes to the socket at path.
func unixHTTP(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", path)
		},
	}}
}

// apiClient is the generated client on the socket at path.
func apiClient(path string) sandboxv1connect.SandboxServiceClient {
	return sandboxv1connect.NewSandboxServiceClient(unixHTTP(path), "http://sandbox")
}

// apiSandbox starts a sandbox and returns its task, id and host API client.
func apiSandbox(t *testing.T, opts ...oci.SpecOpts) (client.Task, string, sandboxv1connect.SandboxServiceClient) {
	t.Helper()
	skipUnderRunc(t, "the sandbox API is io.sandbox.v1's")
	ctx := testCtx(t)
	id := newID(t)
	opts = append([]oci.SpecOpts{oci.WithProcessArgs("sleep", "120")}, opts...)
	c := newContainer(t, ctx, id, opts...)
	task, _ := startTask(t, ctx, c, nullIO())
	return task, id, apiClient(api.HostSocketPath(d.Namespace, id))
}

// apiEvent is one message of an Exec stream, as received.
type apiEvent struct {
	kind string // stdout, stderr, exit
	data []byte
	at   time.Time
}

// apiResult is a whole Exec stream.
type apiResult struct {
	events         []apiEvent
	stdout, stderr string
	exit           *sandboxv1.Exit
}

// drain reads an Exec stream to its end.
func drain(stream *connect.ServerStreamForClient[sandboxv1.ExecResponse]) (apiResult, error) {
	defer stream.Close()
	var r apiResult
	var out, errOut bytes.Buffer
	for stream.Receive() {
		m := stream.Msg()
		switch e := m.Event.(type) {
		case *sandboxv1.ExecResponse_Stdout:
			out.Write(e.Stdout)
			r.events = append(r.events, apiEvent{"stdout", e.Stdout, time.Now()})
		case *sandboxv1.ExecResponse_Stderr:
			errOut.Write(e.Stderr)
			r.events = append(r.events, apiEvent{"stderr", e.Stderr, time.Now()})
		case *sandboxv1.ExecResponse_Exit:
			r.exit = e.Exit
			r.events = append(r.events, apiEvent{"exit", nil, time.Now()})
		}
	}
	r.stdout, r.stderr = out.String(), errOut.String()
	if err := stream.Err(); err != nil {
		return r, err
	}
	if r.exit == nil {
		return r, errors.New("stream ended without an Exit")
	}
	return r, nil
}

func apiExec(ctx context.Context, c sandboxv1connect.SandboxServiceClient, req *sandboxv1.ExecRequest) (apiResult, error) {
	stream, err := c.Exec(ctx, connect.NewRequest(req))
	if err != nil {
		return apiResult{}, err
	}
	return drain(stream)
}

// apiSecureExec runs one ExecSecure call and collects its stream.
func apiSecureExec(ctx context.Context, c sandboxv1connect.SandboxServiceClient, req *sandboxv1.ExecSecureRequest) (apiResult, error) {
	stream, err := c.ExecSecure(ctx, connect.NewRequest(req))
	if err != nil {
		return apiResult{}, err
	}
	return drain(stream)
}

// mustExec runs req and fails the test on an error.
func mustExec(t *testing.T, ctx context.Context, c sandboxv1connect.SandboxServiceClient, req *sandboxv1.ExecRequest) apiResult {
	t.Helper()
	r, err := apiExec(ctx, c, req)
	if err != nil {
		t.Fatalf("exec %v %q: %v", req.Argv, req.Command, err)
	}
	return r
}

// wantCode checks a connect error's code and that its message names words.
func wantCode(t *testing.T, err error, code connect.Code, what string, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("%s: code %v, want %v: %v", what, got, code, err)
	}
	errNames(t, err, what, words...)
}

// hostProcsWith are the host pids whose argv has an argument equal to arg.
func hostProcsWith(arg string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func statOwner(t *testing.T, path string) (os.FileMode, uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Uid, st.Gid
}

// TestSandboxAPISockets: the host socket is root's alone, the control
// plane's is its user's and reached at /run/sandbox/api.sock in its mount
// namespace only; each socket knows its caller; the workspace finds
// neither, by path or by abstract name; Delete removes them.
func TestSandboxAPISockets(t *testing.T) {
	task, id, host := apiSandbox(t, oci.WithUIDGID(1234, 1235))
	ctx := testCtx(t)
	hostDir := api.HostDir(d.Namespace, id)
	checks := []struct {
		path     string
		dir      bool
		uid, gid uint32
	}{
		{hostDir, true, 0, 0},
		{api.HostSocketPath(d.Namespace, id), false, 0, 0},
		{api.ControlPlaneHostDir(d.Namespace, id), true, 1234, 1235},
		{filepath.Join(api.ControlPlaneHostDir(d.Namespace, id), api.SocketName), false, 1234, 1235},
	}
	for _, c := range checks {
		mode, uid, gid := statOwner(t, c.path)
		wantMode := os.FileMode(0o600) | os.ModeSocket
		if c.dir {
			wantMode = 0o700 | os.ModeDir
		}
		if mode != wantMode || uid != c.uid || gid != c.gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", c.path, mode, uid, gid, wantMode, c.uid, c.gid)
		}
	}
	info, err := host.Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
	if err != nil {
		t.Fatalf("host info: %v", err)
	}
	if info.Msg.Caller != sandboxv1.Caller_CALLER_HOST || info.Msg.SandboxId != id || info.Msg.Namespace != d.Namespace {
		t.Errorf("host info: caller %v id %q ns %q", info.Msg.Caller, info.Msg.SandboxId, info.Msg.Namespace)
	}
	// The control plane's view: its own root, with its mounts.
	inside := fmt.Sprintf("/proc/%d/root%s", task.Pid(), api.ControlPlaneSocket)
	if mode, uid, _ := statOwner(t, inside); mode != 0o600|os.ModeSocket || uid != 1234 {
		t.Errorf("control plane sees %s as %v owned by %d", api.ControlPlaneSocket, mode, uid)
	}
	cpInfo, err := apiClient(inside).Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
	if err != nil {
		t.Fatalf("control plane info: %v", err)
	}
	if cpInfo.Msg.Caller != sandboxv1.Caller_CALLER_CONTROL_PLANE {
		t.Errorf("control plane socket: caller %v", cpInfo.Msg.Caller)
	}
	// The workspace (a containerd exec) and an API exec look for it.
	const look = `find / -name api.sock 2>/dev/null; ls -A /run/sandbox 2>/dev/null; ls -A /run/io.sandbox 2>&1 | grep -v 'No such'; ` +
		`grep -E 'api\.sock|io\.sandbox|@' /proc/net/unix; echo done`
	out, _, code := runExec(t, ctx, task, "look", "sh", "-c", look)
	if code != 0 || strings.TrimSpace(out) != "done" {
		t.Errorf("a containerd exec finds the API (exit %d):\n%s", code, out)
	}
	r := mustExec(t, ctx, host, &sandboxv1.ExecRequest{Command: look})
	if strings.TrimSpace(r.stdout) != "done" {
		t.Errorf("an API exec finds the API:\n%s", r.stdout)
	}
	// Delete takes the sockets and the directory.
	deleteTask(t, ctx, task)
	if _, err := os.Stat(hostDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after delete: %v", hostDir, err)
	}
}

// deleteTask kills and deletes a sandbox's task.
func deleteTask(t *testing.T, ctx context.Context, task client.Task) {
	t.Helper()
	if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
		t.Fatalf("delete task: %v", err)
	}
}

// TestSandboxAPIExec: output streams as written, in order, each chunk as
// it comes; exit codes and signals; stdin; cwd; env layers (image, sandbox
// env vars, the call's); a command string runs under /bin/sh -c.
func TestSandboxAPIExec(t *testing.T) {
	// The bundle's env is the control plane's: an exec keeps what the
	// annotation names, as a containerd exec does.
	_, _, c := apiSandbox(t, oci.WithEnv([]string{"IMAGE_VAR=image", "LAYER=image", "CP_ONLY=control-plane"}),
		withAnnotations(api.AnnotationEnv, "IMAGE_VAR,LAYER"))
	ctx := testCtx(t)
	r := mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"sh", "-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; exit 3"}})
	var kinds []string
	for _, e := range r.events {
		kinds = append(kinds, e.kind+":"+strings.TrimSpace(string(e.data)))
	}
	if got := strings.Join(kinds, " "); got != "stdout:one stderr:two stdout:three exit:" {
		t.Errorf("stream %q", got)
	}
	if r.exit.ExitCode != 3 || r.exit.Signal != 0 || r.exit.TimedOut || r.exit.CallId == "" || r.exit.Isolated {
		t.Errorf("exit %+v", r.exit)
	}
	// Each chunk arrived when written, not at the end.
	if gap := r.events[len(r.events)-1].at.Sub(r.events[0].at); gap < 400*time.Millisecond {
		t.Errorf("first output only %v before the exit: not streamed", gap)
	}
	r = mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: "kill -9 $$"})
	if r.exit.ExitCode != 137 || r.exit.Signal != 9 {
		t.Errorf("killed: exit %+v", r.exit)
	}
	r = mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"cat"}, Stdin: []byte("from stdin\n")})
	if r.stdout != "from stdin\n" || r.exit.ExitCode != 0 {
		t.Errorf("stdin: %q %+v", r.stdout, r.exit)
	}
	r = mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"cat"}})
	if r.stdout != "" || r.exit.ExitCode != 0 {
		t.Errorf("no stdin is EOF: %q %+v", r.stdout, r.exit)
	}
	r = mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"pwd"}, Cwd: "/tmp"})
	if r.stdout != "/tmp\n" {
		t.Errorf("cwd: %q", r.stdout)
	}
	r = mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: "echo $((6*7)) $(id -u)"})
	if r.stdout != "42 1000\n" {
		t.Errorf("sh -c as the workspace user: %q", r.stdout)
	}
	if _, err := c.SetEnvVars(ctx, connect.NewRequest(&sandboxv1.SetEnvVarsRequest{Vars: map[string]string{"SANDBOX_VAR": "sandbox", "LAYER": "sandbox", "CALL_OVER": "sandbox"}})); err != nil {
		t.Fatal(err)
	}
	r = mustExec(t, ctx, c, &sandboxv1.ExecRequest{
		Command: `echo "$IMAGE_VAR $SANDBOX_VAR $LAYER $CALL_OVER $CALL_VAR [$CP_ONLY]"; test -n "$PATH" && echo path`,
		Env:     map[string]string{"CALL_OVER": "call", "CALL_VAR": "call"},
	})
	if r.stdout != "image sandbox sandbox call call []\npath\n" {
		t.Errorf("env layers: %q", r.stdout)
	}
}

// TestSandboxAPIExecNoRecords: API execs never reach containerd: no event
// and no process of the task.
func TestSandboxAPIExecNoRecords(t *testing.T) {
	task, id, c := apiSandbox(t)
	ctx := testCtx(t)
	events := subscribe(t, id)
	r := mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: "echo hi; sleep 0.2"})
	if r.stdout != "hi\n" {
		t.Fatalf("output %q", r.stdout)
	}
	// What an API exec of /bin/true costs, seen by the client.
	var took []time.Duration
	for range 20 {
		begin := time.Now()
		mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"/bin/true"}})
		took = append(took, time.Since(begin))
	}
	slices.Sort(took)
	t.Logf("REPORT API exec of /bin/true: median %v, max %v of %d", took[len(took)/2], took[len(took)-1], len(took))
	// A containerd exec after them: its events are there, the API execs' not.
	runExec(t, ctx, task, "marker", "true")
	if _, ev := events.wait(t, "/tasks/exit", func(e any) bool { return strings.Contains(fmt.Sprint(e), "marker") }, stepTimeout); ev == nil {
		t.Fatal("no exit event of the containerd exec")
	}
	for _, e := range events.snapshot() {
		// The task's own create and start may be published after the
		// subscription began.
		if e.topic == "/tasks/create" || e.topic == "/tasks/start" {
			continue
		}
		if s := fmt.Sprint(e.event); !strings.Contains(s, "marker") {
			t.Errorf("event not of the containerd exec: %s %s", e.topic, s)
		}
	}
}

// TestSandboxAPITimeoutAndDisconnect: a timeout kills every process the
// exec started, daemons included, and says so; a client that goes away
// kills its command.
func TestSandboxAPITimeoutAndDisconnect(t *testing.T) {
	_, _, c := apiSandbox(t)
	ctx := testCtx(t)
	begin := time.Now()
	r := mustExec(t, ctx, c, &sandboxv1.ExecRequest{
		Command: "(setsid sleep 7341 &); sleep 7342 & echo started; wait",
		Timeout: durationpb.New(700 * time.Millisecond),
	})
	if !r.exit.TimedOut || r.exit.Signal != 9 || time.Since(begin) > 5*time.Second {
		t.Errorf("timeout: %+v after %v", r.exit, time.Since(begin))
	}
	for _, arg := range []string{"7341", "7342"} {
		if !poll(5*time.Second, func() bool { return len(hostProcsWith(arg)) == 0 }) {
			t.Errorf("sleep %s outlived the exec's timeout: %v", arg, hostProcsWith(arg))
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	stream, err := c.Exec(cctx, connect.NewRequest(&sandboxv1.ExecRequest{Command: "echo up; (setsid sleep 7343 &); exec sleep 7344"}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("no output: %v", stream.Err())
	}
	if !poll(5*time.Second, func() bool { return len(hostProcsWith("7344")) > 0 }) {
		t.Fatal("sleep 7344 never ran")
	}
	cancel()
	stream.Close()
	for _, arg := range []string{"7343", "7344"} {
		if !poll(5*time.Second, func() bool { return len(hostProcsWith(arg)) == 0 }) {
			t.Errorf("sleep %s outlived its client: %v", arg, hostProcsWith(arg))
		}
	}
	// Still serving.
	if r := mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"true"}}); r.exit.ExitCode != 0 {
		t.Errorf("after: %+v", r.exit)
	}
}

// TestSandboxAPIBadInput: each bad request gets a clear error naming what
// is wrong (never a value), and the sandbox, and another, keep serving.
func TestSandboxAPIBadInput(t *testing.T) {
	task, id, c := apiSandbox(t)
	ctx := testCtx(t)
	const secret = "s3cr3t-value-in-bad-request"
	bad := []struct {
		what  string
		req   *sandboxv1.ExecRequest
		code  connect.Code
		words []string
	}{
		{"no command", &sandboxv1.ExecRequest{}, connect.CodeInvalidArgument, []string{"argv or command"}},
		{"both", &sandboxv1.ExecRequest{Argv: []string{"true"}, Command: "true"}, connect.CodeInvalidArgument, []string{"both"}},
		{"digit name", &sandboxv1.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"1BAD": secret}}, connect.CodeInvalidArgument, []string{"1BAD"}},
		{"= in name", &sandboxv1.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"A=B": secret}}, connect.CodeInvalidArgument, []string{"A=B"}},
		{"NUL in value", &sandboxv1.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"NUL_VALUE": secret + "\x00x"}}, connect.CodeInvalidArgument, []string{"NUL_VALUE", "NUL"}},
		{"NUL in argv", &sandboxv1.ExecRequest{Argv: []string{"echo", "a\x00b"}}, connect.CodeInvalidArgument, []string{"NUL"}},
		{"1 MiB value", &sandboxv1.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"BIG": strings.Repeat("x", 1<<20)}}, connect.CodeInvalidArgument, []string{"BIG", "bytes"}},
		{"missing binary", &sandboxv1.ExecRequest{Argv: []string{"/no/such/binary"}}, connect.CodeFailedPrecondition, []string{"/no/such/binary"}},
		{"not in PATH", &sandboxv1.ExecRequest{Argv: []string{"no-such-command"}}, connect.CodeFailedPrecondition, []string{"no-such-command", "not found"}},
		{"bad cwd", &sandboxv1.ExecRequest{Argv: []string{"true"}, Cwd: "/no/such/dir"}, connect.CodeFailedPrecondition, []string{"/no/such/dir"}},
	}
	for _, b := range bad {
		_, err := apiExec(ctx, c, b.req)
		wantCode(t, err, b.code, b.what, b.words...)
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error echoes the value: %v", b.what, err)
		}
	}
	// 1 MiB of env in strings each within the kernel's limit works.
	env := map[string]string{}
	for i := range 16 {
		env[fmt.Sprintf("PART%d", i)] = strings.Repeat("y", 64<<10)
	}
	r := mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: `echo ${#PART0} ${#PART15}`, Env: env})
	if r.stdout != "65536 65536\n" {
		t.Errorf("1 MiB env: %q", r.stdout)
	}
	// A request above the server's limit.
	_, err := apiExec(ctx, c, &sandboxv1.ExecRequest{Argv: []string{"true"}, Stdin: make([]byte, 9<<20)})
	wantCode(t, err, connect.CodeResourceExhausted, "9 MiB request")
	// Malformed JSON and protobuf, on the wire; the JSON error never
	// quotes the request.
	hc := unixHTTP(api.HostSocketPath(d.Namespace, id))
	for _, m := range []struct{ contentType, body, word string }{
		{"application/json", `{"vars": {"TOKEN": "` + secret + `"`, "malformed JSON"},
		{"application/json", `{"vars": {"TOKEN": ` + secret + `}}`, "malformed JSON"},
		{"application/proto", "\xff\xff\xff\xff", "malformed protobuf"},
	} {
		resp, err := hc.Post("http://sandbox"+sandboxv1connect.SandboxServiceSetEnvVarsProcedure, m.contentType, strings.NewReader(m.body))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), m.word) || strings.Contains(string(body), secret) {
			t.Errorf("%s %q: %d %s", m.contentType, m.body, resp.StatusCode, body)
		}
	}
	// 100 MiB of output streams through.
	r = mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: "head -c 104857600 /dev/zero; echo end >&2"})
	if len(r.stdout) != 100<<20 || r.stderr != "end\n" || r.exit.ExitCode != 0 {
		t.Errorf("100 MiB: got %d bytes, stderr %q, %+v", len(r.stdout), r.stderr, r.exit)
	}
	t.Logf("100 MiB of output in %d messages", len(r.events))
	// Still serving, this sandbox and another, and containerd's execs.
	if r := mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: "echo ok"}); r.stdout != "ok\n" {
		t.Errorf("after: %q", r.stdout)
	}
	if out, _, code := runExec(t, ctx, task, "after", "echo", "ok"); code != 0 || out != "ok\n" {
		t.Errorf("containerd exec after: %d %q", code, out)
	}
	_, _, other := apiSandbox(t)
	if r := mustExec(t, ctx, other, &sandboxv1.ExecRequest{Command: "echo other"}); r.stdout != "other\n" {
		t.Errorf("another sandbox: %q", r.stdout)
	}
}

// TestSandboxAPISetEnvVars: a warning per secret-looking key without its
// value; later execs see the vars; unset removes them; bad names refused.
func TestSandboxAPISetEnvVars(t *testing.T) {
	_, _, c := apiSandbox(t)
	ctx := testCtx(t)
	const value = "ghp_not-to-be-echoed"
	resp, err := c.SetEnvVars(ctx, connect.NewRequest(&sandboxv1.SetEnvVarsRequest{Vars: map[string]string{
		"GITHUB_TOKEN": value, "PGPASSWORD": value, "API_URL": "http://api", "NODE_ENV": "production",
	}}))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(resp.Msg.Warnings, "\n")
	if len(resp.Msg.Warnings) != 2 || !strings.Contains(w, "GITHUB_TOKEN") || !strings.Contains(w, "PGPASSWORD") ||
		!strings.Contains(w, "execSecure") || strings.Contains(w, value) || strings.Contains(w, "API_URL") {
		t.Errorf("warnings: %q", resp.Msg.Warnings)
	}
	if got := strings.Join(resp.Msg.Keys, ","); got != "API_URL,GITHUB_TOKEN,NODE_ENV,PGPASSWORD" {
		t.Errorf("keys %s", got)
	}
	r := mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: `echo "$API_URL $NODE_ENV ${GITHUB_TOKEN:+set}"`})
	if r.stdout != "http://api production set\n" {
		t.Errorf("exec env: %q", r.stdout)
	}
	resp, err = c.SetEnvVars(ctx, connect.NewRequest(&sandboxv1.SetEnvVarsRequest{Unset: []string{"GITHUB_TOKEN", "PGPASSWORD"}}))
	if err != nil || strings.Join(resp.Msg.Keys, ",") != "API_URL,NODE_ENV" || len(resp.Msg.Warnings) != 0 {
		t.Fatalf("unset: %v %v", resp, err)
	}
	r = mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: `echo "[${GITHUB_TOKEN}]"`})
	if r.stdout != "[]\n" {
		t.Errorf("unset var still seen: %q", r.stdout)
	}
	for _, bad := range []*sandboxv1.SetEnvVarsRequest{
		{Vars: map[string]string{"A=B": "x"}}, {Vars: map[string]string{"OK": "a\x00b"}}, {Unset: []string{"1X"}},
		{Vars: map[string]string{"BOTH": "x"}, Unset: []string{"BOTH"}},
	} {
		_, err := c.SetEnvVars(ctx, connect.NewRequest(bad))
		wantCode(t, err, connect.CodeInvalidArgument, fmt.Sprint(bad))
	}
	// Nothing of a refused request was applied.
	info, err := c.Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
	if err != nil || strings.Join(info.Msg.EnvKeys, ",") != "API_URL,NODE_ENV" {
		t.Errorf("env keys after refusals: %v %v", info, err)
	}
}

// TestSandboxAPIInfo: every protection with its parameters, as built.
func TestSandboxAPIInfo(t *testing.T) {
	_, _, c := apiSandbox(t, withAnnotations(api.AnnotationSecureExecPool, "1"))
	ctx := testCtx(t)
	// Built with the workspace: the first exec waits for it.
	mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"true"}})
	info, err := c.Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*sandboxv1.Protection{}
	for _, p := range info.Msg.Protections {
		got[p.Name] = p
	}
	want := map[string]map[string]string{
		"workspace-user":    {"uid": "1000", "gid": "1000"},
		"capabilities":      {"effective": "none"},
		"rlimit-core":       {"hard": "0"},
		"pid-namespace":     {"kind": "sibling"},
		"no-new-privileges": {},
		"seccomp":           {"default_action": "errno"},
		"oom-score-adj":     {"oom_score_adj": "1000"},
		"pids-limit":        {},
		"reserved-ports":    {"ports": "8080,8888", "user_connect": "false"},
		"secure-exec":       {"pool_size": "1"},
		"sandbox-api":       {"control_plane_socket": api.ControlPlaneSocket},
	}
	for name, params := range want {
		p, ok := got[name]
		if !ok {
			t.Errorf("no protection %q", name)
			continue
		}
		if !p.Active && name != "secure-exec" {
			t.Errorf("%s inactive: %+v", name, p)
		}
		for k, v := range params {
			if p.Parameters[k] != v {
				t.Errorf("%s: %s=%q, want %q", name, k, p.Parameters[k], v)
			}
		}
	}
	if p := got["leftover-caps"]; p == nil || p.Parameters["tmp_size_bytes"] == "" || p.Parameters["shm_size_bytes"] == "" {
		t.Errorf("leftover caps: %+v", p)
	}
	// Active exactly where the kernel has Landlock scoping (ABI 6), which
	// the reaper then applies.
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, 1)
	scoping := errno == 0 && abi >= 6
	if ll := got["landlock-scope"]; ll == nil || ll.Active != scoping || (scoping && ll.Parameters["scoped"] != "abstract_unix_socket") {
		t.Errorf("landlock scope (kernel ABI %d): %+v", abi, ll)
	}
	if se := got["secure-exec"]; se.Active != info.Msg.HasSecureExecution ||
		(!info.Msg.HasSecureExecution && len(info.Msg.SecureExecutionUnavailable) == 0) {
		t.Errorf("secure exec %+v, has %v, reasons %q", se, info.Msg.HasSecureExecution, info.Msg.SecureExecutionUnavailable)
	}
	t.Logf("has secure execution: %v %q", info.Msg.HasSecureExecution, info.Msg.SecureExecutionUnavailable)
}

// TestSandboxAPISecureExecDisabled: io.sandbox.secure-exec=disabled fails
// closed: Info says why, ExecSecure is refused unless the call allows the
// insecure fallback, which runs it as an exec, warns and is audited as not
// isolated. isolated=false alone is refused.
func TestSandboxAPISecureExecDisabled(t *testing.T) {
	_, _, c := apiSandbox(t, withAnnotations(api.AnnotationSecureExec, "disabled"))
	ctx := testCtx(t)
	mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"true"}})
	info, err := c.Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if info.Msg.HasSecureExecution || !strings.Contains(strings.Join(info.Msg.SecureExecutionUnavailable, " "), api.AnnotationSecureExec) {
		t.Errorf("disabled: has %v, reasons %q", info.Msg.HasSecureExecution, info.Msg.SecureExecutionUnavailable)
	}
	const secret = "disabled-canary-4417"
	secure := func(req *sandboxv1.ExecSecureRequest) (apiResult, error) { return apiSecureExec(ctx, c, req) }
	env := func() map[string][]byte { return map[string][]byte{"DEPLOY_TOKEN": []byte(secret)} }
	_, err = secure(&sandboxv1.ExecSecureRequest{Command: "echo $DEPLOY_TOKEN", Env: env()})
	wantCode(t, err, connect.CodeFailedPrecondition, "disabled", "unavailable", api.AnnotationSecureExec, "allow_insecure_fallback")
	notIsolated := false
	_, err = secure(&sandboxv1.ExecSecureRequest{Command: "true", Isolated: &notIsolated})
	wantCode(t, err, connect.CodeInvalidArgument, "isolated=false", "allow_insecure_fallback")
	_, err = secure(&sandboxv1.ExecSecureRequest{Command: "true", Env: map[string][]byte{"BAD-NAME": []byte(secret)}})
	wantCode(t, err, connect.CodeInvalidArgument, "bad name", "BAD-NAME")
	r, err := secure(&sandboxv1.ExecSecureRequest{Argv: []string{"sh", "-c", "echo ${#DEPLOY_TOKEN}", secret}, Env: env(), AllowInsecureFallback: true})
	if err != nil {
		t.Fatalf("fallback: %v", err)
	}
	if r.stdout != strconv.Itoa(len(secret))+"\n" || r.exit.Isolated || len(r.exit.Warnings) == 0 || !strings.Contains(r.exit.Warnings[0], "insecure fallback") {
		t.Errorf("fallback: %q %+v", r.stdout, r.exit)
	}
	audit, err := c.Audit(ctx, connect.NewRequest(&sandboxv1.AuditRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var rec *sandboxv1.AuditRecord
	for _, a := range audit.Msg.Records {
		if a.CallId == r.exit.CallId {
			rec = a
		}
	}
	if rec == nil || rec.Isolated || rec.Caller != sandboxv1.Caller_CALLER_HOST || strings.Join(rec.EnvKeys, ",") != "DEPLOY_TOKEN" {
		t.Fatalf("audit record of the fallback: %+v (of %d)", rec, len(audit.Msg.Records))
	}
	if s := fmt.Sprint(rec); strings.Contains(s, secret) {
		t.Errorf("audit record holds the value: %s", s)
	}
}

// secureExec runs one ExecSecure call to its end.
func secureExec(ctx context.Context, c sandboxv1connect.SandboxServiceClient, req *sandboxv1.ExecSecureRequest) (apiResult, error) {
	stream, err := c.ExecSecure(ctx, connect.NewRequest(req))
	if err != nil {
		return apiResult{}, err
	}
	return drain(stream)
}

// TestSandboxAPISecureExec: through the server, a call's env reaches its
// secure command alone; the Exit says isolated; the audit trail has the
// call with its caller (the control plane's socket says control plane);
// a timeout is reported; a workspace reset makes a new runner (closed
// before the old workspace goes) and execSecure works on.
func TestSandboxAPISecureExec(t *testing.T) {
	task, _, c := apiSandbox(t)
	ctx := testCtx(t)
	mustExec(t, ctx, c, &sandboxv1.ExecRequest{Argv: []string{"true"}})
	info, err := c.Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !info.Msg.HasSecureExecution {
		t.Skipf("secure execution unavailable here: %q", info.Msg.SecureExecutionUnavailable)
	}
	const canary = "api-canary-90817"
	r, err := secureExec(ctx, c, &sandboxv1.ExecSecureRequest{Command: `echo "[$CANARY]"`, Env: map[string][]byte{"CANARY": []byte(canary)}})
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != "["+canary+"]\n" || !r.exit.Isolated || r.exit.ExitCode != 0 || len(r.exit.Warnings) != 0 {
		t.Errorf("secure exec: %q %+v", r.stdout, r.exit)
	}
	if r := mustExec(t, ctx, c, &sandboxv1.ExecRequest{Command: `echo "[$CANARY]"`}); r.stdout != "[]\n" {
		t.Errorf("a later exec sees the call's env: %q", r.stdout)
	}
	r, err = secureExec(ctx, c, &sandboxv1.ExecSecureRequest{Command: "sleep 30", Timeout: durationpb.New(300 * time.Millisecond)})
	if err != nil || !r.exit.TimedOut {
		t.Errorf("secure timeout: %+v %v", r.exit, err)
	}
	cp := apiClient(fmt.Sprintf("/proc/%d/root%s", task.Pid(), api.ControlPlaneSocket))
	rc, err := secureExec(ctx, cp, &sandboxv1.ExecSecureRequest{Argv: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	audit, err := c.Audit(ctx, connect.NewRequest(&sandboxv1.AuditRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	callers := map[string]sandboxv1.Caller{}
	for _, a := range audit.Msg.Records {
		callers[a.CallId] = a.Caller
		if strings.Contains(fmt.Sprint(a), canary) {
			t.Errorf("audit record holds the value: %v", a)
		}
	}
	if callers[r.exit.CallId] != sandboxv1.Caller_CALLER_HOST || callers[rc.exit.CallId] != sandboxv1.Caller_CALLER_CONTROL_PLANE {
		t.Errorf("audit callers %v", callers)
	}
	if err := task.Update(ctx, client.WithAnnotations(map[string]string{api.AnnotationWorkspaceReset: "true"})); err != nil {
		t.Fatalf("reset: %v", err)
	}
	r, err = secureExec(ctx, c, &sandboxv1.ExecSecureRequest{Command: `echo "[$CANARY]"`, Env: map[string][]byte{"CANARY": []byte("after-reset")}})
	if err != nil || r.stdout != "[after-reset]\n" || !r.exit.Isolated {
		t.Errorf("secure exec after a reset: %q %+v %v", r.stdout, r.exit, err)
	}
}

// TestSandboxAPIReadonlyRootfs: a read-only rootfs still gets the control
// plane's socket (libcontainer makes the mount point before it remounts
// the root read-only).
func TestSandboxAPIReadonlyRootfs(t *testing.T) {
	task, _, host := apiSandbox(t, oci.WithRootFSReadonly())
	ctx := testCtx(t)
	cp := apiClient(fmt.Sprintf("/proc/%d/root%s", task.Pid(), api.ControlPlaneSocket))
	info, err := cp.Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
	if err != nil || info.Msg.Caller != sandboxv1.Caller_CALLER_CONTROL_PLANE {
		t.Fatalf("control plane on a read-only rootfs: %v %v", info, err)
	}
	if r := mustExec(t, ctx, host, &sandboxv1.ExecRequest{Command: "touch /x 2>/dev/null || echo read-only"}); r.stdout != "read-only\n" {
		t.Errorf("rootfs writable: %q", r.stdout)
	}
}

// TestSandboxAPIExecSecureBadInput: the bad calls of TestSandboxAPIBadInput,
// through ExecSecure: each a clear error naming the key (never the value),
// audited without the value, and the sandbox keeps serving secure calls.
func TestSandboxAPIExecSecureBadInput(t *testing.T) {
	_, id, c := apiSandbox(t)
	ctx := testCtx(t)
	const secret = "s3cr3t-value-in-bad-secure-call"
	secure := func(req *sandboxv1.ExecSecureRequest) (apiResult, error) { return apiSecureExec(ctx, c, req) }
	token := map[string][]byte{"TOKEN": []byte(secret)}
	bad := []struct {
		what  string
		req   *sandboxv1.ExecSecureRequest
		code  connect.Code
		words []string
	}{
		{"no command", &sandboxv1.ExecSecureRequest{Env: token}, connect.CodeInvalidArgument, []string{"argv or command"}},
		{"digit name", &sandboxv1.ExecSecureRequest{Argv: []string{"true"}, Env: map[string][]byte{"1BAD": []byte(secret)}}, connect.CodeInvalidArgument, []string{"1BAD"}},
		{"= in name", &sandboxv1.ExecSecureRequest{Argv: []string{"true"}, Env: map[string][]byte{"A=B": []byte(secret)}}, connect.CodeInvalidArgument, []string{"A=B"}},
		{"NUL in value", &sandboxv1.ExecSecureRequest{Argv: []string{"true"}, Env: map[string][]byte{"NUL_VALUE": []byte(secret + "\x00x")}}, connect.CodeInvalidArgument, []string{"NUL_VALUE", "NUL"}},
		{"1 MiB value", &sandboxv1.ExecSecureRequest{Argv: []string{"true"}, Env: map[string][]byte{"BIG": bytes.Repeat([]byte("x"), 1<<20)}}, connect.CodeInvalidArgument, []string{"BIG", "bytes"}},
		{"missing binary", &sandboxv1.ExecSecureRequest{Argv: []string{"/no/such/binary"}, Env: token}, connect.CodeFailedPrecondition, []string{"/no/such/binary"}},
		{"bad cwd", &sandboxv1.ExecSecureRequest{Argv: []string{"true"}, Cwd: "/no/such/dir", Env: token}, connect.CodeFailedPrecondition, []string{"/no/such/dir"}},
		{"value as cwd", &sandboxv1.ExecSecureRequest{Argv: []string{"true"}, Cwd: secret, Env: token}, connect.CodeInvalidArgument, []string{"cwd"}},
		{"value as the binary", &sandboxv1.ExecSecureRequest{Argv: []string{"/" + secret}, Env: token}, connect.CodeFailedPrecondition, nil},
	}
	for _, b := range bad {
		_, err := secure(b.req)
		wantCode(t, err, b.code, b.what, b.words...)
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error echoes the value: %v", b.what, err)
		}
	}
	if r, err := secure(&sandboxv1.ExecSecureRequest{Command: `echo ${#TOKEN}`, Env: token}); err != nil || r.stdout != fmt.Sprintf("%d\n", len(secret)) {
		t.Fatalf("a good call after the bad ones: %q, %v", r.stdout, err)
	}
	audit, err := os.ReadFile(filepath.Join(api.HostDir(d.Namespace, id), "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(audit, []byte(secret)) {
		t.Errorf("the audit file holds the value:\n%s", audit)
	}
}
