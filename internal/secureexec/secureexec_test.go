//go:build seccomp

package secureexec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/opencontainers/cgroups/devices" // device rules for the cgroupfs manager
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/internal/seccompprogram"
	"github.com/sandbox-shim/sandbox-shim/internal/usercontainer/containertest"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// TestMain lets this test binary be the containers' init, as the shim
// binary is: libcontainer re-executes it as "init".
// init lets the test binary compile seccomp profiles as the shim binary
// does: on the main thread, before anything else.
func init() {
	if len(os.Args) > 1 && os.Args[1] == seccompprogram.Arg {
		seccompprogram.Main()
	}
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
	if os.Getenv("SECUREEXEC_DEBUG") != "" {
		logrus.SetLevel(logrus.DebugLevel)
	}
	os.Exit(m.Run())
}

// sandbox is what a runner serves in these tests: a bundle with a busybox
// rootfs whose workspace HOME holds files user code planted, the reaper
// built from libexec, and the runner's cgroups under a test parent.
type sandbox struct {
	dir, rootfs string
	cfg         Config
	userCgroup  string
}

// bundleEnv is the bundle process' env: what ImageEnv carries in a call.
// IMAGE_VAR is the image's, for user code too (io.sandbox.user.env);
// CP_API_KEY the control plane's, which no exec inherits.
var bundleEnv = []string{"PATH=/bin", "HOME=/home/user", "IMAGE_VAR=from-image", "LD_PRELOAD=/home/user/evil.so", "CP_API_KEY=control-plane-key"}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	dir := t.TempDir()
	bundle, rootfs := containertest.Rootfs(t, dir, "sh", "id", "cat", "sleep", "env", "setsid", "ls", "echo", "true", "grep", "touch")
	reaper := containertest.Reaper(t, dir)
	if err := os.MkdirAll(filepath.Join(rootfs, "home/user/.local/lib/python3.12/site-packages"), 0o755); err != nil {
		t.Fatal(err)
	}
	// What user code plants in the workspace's HOME and /tmp for the next
	// secure exec to read.
	for name, content := range map[string]string{
		"home/user/.npmrc":     "//registry/:_authToken=PLANTED-CONTENT\n",
		"home/user/.gitconfig": "[core]\n\tpager = PLANTED-CONTENT\n",
		"home/user/.local/lib/python3.12/site-packages/usercustomize.py": "print('PLANTED-CONTENT')\n",
		"tmp/planted": "PLANTED-CONTENT\n",
	} {
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(rootfs, "home/user"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	s := specconv.Example()
	s.Process.Terminal = false
	s.Process.Env = bundleEnv
	s.Process.Cwd = "/"
	s.Annotations = map[string]string{api.AnnotationEnv: "IMAGE_VAR"}
	settings, err := spec.ParseSettings(s, spec.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	parent := fmt.Sprintf("/sst-unit-%d-%s", os.Getpid(), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	sb := &sandbox{dir: dir, rootfs: rootfs, userCgroup: parent + "/user"}
	t.Cleanup(func() { containertest.RemoveCgroup(t, parent) })
	sb.cfg = Config{
		SandboxID: "unit", Namespace: "default", StateRoot: filepath.Join(dir, "state"), Bundle: bundle,
		BundleSpec: s, Settings: settings, NetNS: "/proc/self/ns/net", UTSNS: "/proc/self/ns/uts",
		UserCgroup: sb.userCgroup, Reaper: reaper, PoolSize: 2,
		AuditPath: filepath.Join(dir, "run", "audit.jsonl"),
	}
	return sb
}

// runner starts a runner for sb; the test closes it.
func (sb *sandbox) runner(t *testing.T, opts ...func(*Config)) *Runner {
	t.Helper()
	cfg := sb.cfg
	for _, o := range opts {
		o(&cfg)
	}
	r, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		if pids := sb.cgroupPids(t); len(pids) > 0 {
			t.Errorf("processes left in the user cgroup after Close: %v", pids)
		}
	})
	return r
}

// cgroupPids lists every process left below the user cgroup (pids
// hierarchy, or cgroup v2), as the host sees them.
func (sb *sandbox) cgroupPids(t *testing.T) []string {
	t.Helper()
	var pids []string
	for _, root := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
		base := filepath.Join(root, sb.userCgroup)
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(p)
				pids = append(pids, strings.Fields(string(b))...)
			}
			return nil
		})
	}
	return pids
}

// call is a call with captured output.
type call struct {
	Call
	stdout, stderr bytes.Buffer
}

func newCall(id string, args ...string) *call {
	c := &call{Call: Call{ID: id, Caller: sandboxv1.Caller_CALLER_HOST, Args: args, ImageEnv: bundleEnv}}
	c.Stdout, c.Stderr = &c.stdout, &c.stderr
	return c
}

func secret(name, value string) spec.EnvVar { return spec.EnvVar{Name: name, Value: []byte(value)} }

func (c *call) run(t *testing.T, r *Runner) Result {
	t.Helper()
	res, err := r.Run(t.Context(), c.Call)
	if err != nil {
		t.Fatalf("run %v: %v (stderr %q)", c.Args, err, c.stderr.String())
	}
	return res
}

// hostProcesses lists the host processes of sb's cgroups whose command
// line contains word: pid, command line, state, parent and cgroup.
func (sb *sandbox) hostProcesses(word string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err == nil && bytes.Contains(b, []byte(word)) && bytes.Contains(cg, []byte(sb.userCgroup+"/")) {
			desc := e.Name() + " " + strings.ReplaceAll(string(b), "\x00", " ")
			status, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
			for _, line := range strings.Split(string(status), "\n") {
				if strings.HasPrefix(line, "State:") || strings.HasPrefix(line, "PPid:") || strings.HasPrefix(line, "NSpid:") {
					desc += " | " + line
				}
			}
			for _, line := range strings.Split(string(cg), "\n") {
				if strings.Contains(line, ":pids:") {
					desc += " | " + line
				}
			}
			out = append(out, desc)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !f(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestEnv: the command sees its call's values, the image's and the
// sandbox's env, and its private HOME; loader and interpreter hooks from
// the image or the sandbox are dropped unless the call sets them; the
// values are cleared once Run returns.
func TestEnv(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	c := newCall("env", "env")
	c.SandboxEnv = []string{"SANDBOX_VAR=from-sandbox", "PYTHONPATH=/home/user/lib", "BASH_ENV=/home/user/.bashrc", "NODE_OPTIONS=--require /home/user/x.js", "HOME=/home/user/elsewhere"}
	c.Secrets = []spec.EnvVar{secret("CANARY", "canary-7f3a9"), secret("NODE_OPTIONS", "--max-old-space-size=64")}
	if res := c.run(t, r); res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, c.stderr.String())
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(c.stdout.String()), "\n") {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	for k, v := range map[string]string{
		"CANARY": "canary-7f3a9", "IMAGE_VAR": "from-image", "SANDBOX_VAR": "from-sandbox",
		"NODE_OPTIONS": "--max-old-space-size=64", "HOME": "/home/user", "PATH": "/bin",
	} {
		if env[k] != v {
			t.Errorf("%s=%q, want %q (env %v)", k, env[k], v, env)
		}
	}
	for _, k := range []string{"LD_PRELOAD", "PYTHONPATH", "BASH_ENV", "CP_API_KEY"} {
		if v, ok := env[k]; ok {
			t.Errorf("%s=%q reached the command", k, v)
		}
	}
	for _, v := range c.Secrets {
		if !bytes.Equal(v.Value, make([]byte, len(v.Value))) {
			t.Errorf("value of %s not cleared after Run", v.Name)
		}
	}
}

// TestRestrictions: the command runs under the workspace's restrictions,
// its seccomp profile the program the runner compiled once for all its
// containers.
func TestRestrictions(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	c := newCall("status", "cat", "/proc/self/status")
	if res := c.run(t, r); res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, c.stderr.String())
	}
	for _, want := range []string{"Seccomp:\t2", "Seccomp_filters:\t1", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"} {
		if !strings.Contains(c.stdout.String(), want+"\n") {
			t.Errorf("status lacks %q:\n%s", want, c.stdout.String())
		}
	}
	if r.seccompProgram(&configs.Seccomp{}) == nil {
		t.Error("the runner builds its containers without a compiled seccomp program")
	}
}

// TestPrivateHomeAndTmp: what user code planted in the workspace's HOME
// and /tmp is not there; /tmp is each call's own; no core dumps.
func TestPrivateHomeAndTmp(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	c := newCall("home", "sh", "-c", `ls -A "$HOME"; cat /home/user/.npmrc /home/user/.gitconfig /tmp/planted 2>&1; `+
		`ls /home/user/.local 2>&1; echo written > /tmp/mine; echo "$HOME $(id -u) $(ulimit -H -c) $(ulimit -c)"`)
	c.run(t, r)
	out := c.stdout.String()
	if strings.Contains(out, "PLANTED-CONTENT") || strings.Contains(out, ".npmrc\n") {
		t.Errorf("the secure exec read a planted file:\n%s", out)
	}
	if !strings.HasSuffix(out, "/home/user 1000 0 0\n") {
		t.Errorf("HOME, uid, core limits: %q, want /home/user 1000 0 0", out)
	}
	next := newCall("tmp", "sh", "-c", "cat /tmp/mine 2>&1; ls -A /tmp")
	next.run(t, r)
	if strings.Contains(next.stdout.String(), "written") || strings.Contains(next.stdout.String(), "PLANTED-CONTENT") {
		t.Errorf("/tmp shared between calls or with the workspace: %q", next.stdout.String())
	}
}

// TestDaemonsDie: a daemon the command double-forked is gone when Run
// returns, at the command's exit and at a timeout, and so is every
// process of the container (checked from the host).
func TestDaemonsDie(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	c := newCall("daemon", "sh", "-c", "setsid sh -c 'sleep 987651 & sleep 987652' </dev/null >/dev/null 2>&1 & sleep 0.2; grep :pids: /proc/self/cgroup")
	if res := c.run(t, r); res.ExitCode != 0 {
		t.Fatalf("exit %d, output %q", res.ExitCode, c.stdout.String())
	}
	if p := sb.hostProcesses("98765"); len(p) > 0 {
		t.Errorf("daemons alive after the call: %v", p)
	}
	// Its container's cgroup: gone, or empty until its removal.
	leaf := pidsLeaf(t, sb, c.stdout.String())
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", leaf, "cgroup.procs")); err == nil && len(bytes.TrimSpace(b)) > 0 {
		t.Errorf("processes left in the call's cgroup %s: %s", leaf, b)
	}

	// A daemon holding stdout does not hold the call either.
	c = newCall("daemon-stdout", "sh", "-c", "setsid sh -c 'sleep 987653 &'; echo started")
	begin := time.Now()
	c.run(t, r)
	if d := time.Since(begin); d > time.Second {
		t.Errorf("call with a daemon holding stdout took %v", d)
	}
	if p := sb.hostProcesses("987653"); len(p) > 0 {
		t.Errorf("daemon holding stdout alive after the call: %v", p)
	}

	c = newCall("timeout", "sh", "-c", "setsid sh -c 'sleep 987654 &'; sleep 100")
	c.Timeout = 300 * time.Millisecond
	begin = time.Now()
	res := c.run(t, r)
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("timed-out call returned after %v", d)
	}
	if !res.TimedOut || res.ExitCode != 137 || res.Signal != 9 {
		t.Errorf("timed-out call: %+v", res)
	}
	if p := sb.hostProcesses("98765"); len(p) > 0 {
		t.Errorf("processes alive after the timeout: %v", p)
	}
}

// TestCancel: a caller that goes away (ctx cancelled) kills the call.
func TestCancel(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)
	c := newCall("cancel", "sh", "-c", "setsid sh -c 'sleep 987655 &'; sleep 100")
	begin := time.Now()
	_, err := r.Run(ctx, c.Call)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("cancelled call returned after %v", d)
	}
	if p := sb.hostProcesses("987655"); len(p) > 0 {
		t.Errorf("processes alive after the cancel: %v", p)
	}
}

// TestConcurrentCalls: twenty calls at once, each with its own canary,
// each sees its own and no other.
func TestConcurrentCalls(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	const n = 20
	var wg sync.WaitGroup
	outs := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newCall(fmt.Sprintf("c%d", i), "env")
			c.Secrets = []spec.EnvVar{secret("CANARY", fmt.Sprintf("canary-%02d-x", i))}
			_, errs[i] = r.Run(t.Context(), c.Call)
			outs[i] = c.stdout.String()
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("call %d: %v", i, errs[i])
			continue
		}
		own := fmt.Sprintf("CANARY=canary-%02d-x\n", i)
		if !strings.Contains(outs[i], own) || strings.Count(outs[i], "canary-") != 1 {
			t.Errorf("call %d saw %q", i, outs[i])
		}
	}
}

// TestAudit: one line per call in a root-only file, with the keys and the
// argv redacted, never a value; the log of the call neither.
func TestAudit(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	const value = "s3cret-canary-value"
	c := newCall("audited", "sh", "-c", "echo "+value+" >/dev/null; exit 3")
	c.Secrets = []spec.EnvVar{secret("API_TOKEN", value), secret("SHORT", "abc")}
	c.Cwd = "/tmp"
	if res := c.run(t, r); res.ExitCode != 3 {
		t.Fatalf("exit %d", res.ExitCode)
	}
	st, err := os.Stat(sb.cfg.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(sb.cfg.AuditPath)
	if bytes.Contains(b, []byte(value)) {
		t.Fatalf("audit file holds the value:\n%s", b)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d audit lines, want 1:\n%s", len(lines), b)
	}
	var rec sandboxv1.AuditRecord
	if err := protojson.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.CallId != "audited" || rec.SandboxId != "unit" || rec.Namespace != "default" || rec.Cwd != "/tmp" ||
		rec.ExitCode != 3 || !rec.Isolated || rec.Caller != sandboxv1.Caller_CALLER_HOST || rec.Duration.AsDuration() <= 0 ||
		strings.Join(rec.EnvKeys, ",") != "API_TOKEN,SHORT" || strings.Join(rec.Argv, " ") != "sh -c [REDACTED]" {
		t.Errorf("audit record %v", &rec)
	}
	// Nor any file of the sandbox: libcontainer's state, the rootfs.
	_ = filepath.WalkDir(sb.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(value)) {
				t.Errorf("%s holds the value", p)
			}
		}
		return nil
	})
	if got := r.Audit(0); len(got) != 1 || got[0].CallId != "audited" {
		t.Errorf("Audit(0) = %v", got)
	}
	// The insecure fallback's records go to the same trail.
	r.Record(&sandboxv1.AuditRecord{CallId: "fallback", Isolated: false})
	if got := r.Audit(1); len(got) != 1 || got[0].CallId != "fallback" {
		t.Errorf("Audit(1) = %v", got)
	}
	if b, _ := os.ReadFile(sb.cfg.AuditPath); bytes.Count(b, []byte("\n")) != 2 {
		t.Errorf("audit file after Record:\n%s", b)
	}
}

// TestPoolRefills: the pool is full again after a call, with fresh
// containers, and the used one is destroyed (its cgroup gone).
func TestPoolRefills(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	waitFor(t, "a full pool", func() bool { return r.pool.Len() == 2 })
	c := newCall("cg", "cat", "/proc/self/cgroup")
	c.run(t, r)
	waitFor(t, "the refill", func() bool { return r.pool.Len() == 2 })
	leaf := pidsLeaf(t, sb, c.stdout.String())
	// The network policy's BPF programs sit on the user cgroup's cgroup2
	// directory: the secure container must be below it there too.
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
		if !strings.Contains(c.stdout.String(), "0::"+sb.userCgroup+"/secure-") {
			t.Errorf("secure container not below the user cgroup in the cgroup2 hierarchy:\n%s", c.stdout.String())
		}
	}
	waitFor(t, "the used container's cgroup to go", func() bool {
		_, err := os.Stat(filepath.Join("/sys/fs/cgroup/pids", leaf))
		return errors.Is(err, os.ErrNotExist)
	})
	if ok, why := r.Available(); !ok {
		t.Errorf("not available: %v", why)
	}
}

// pidsLeaf is the pids cgroup in /proc/self/cgroup output: a secure
// container's leaf under the user cgroup.
func pidsLeaf(t *testing.T, sb *sandbox, out string) string {
	t.Helper()
	var leaf string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if _, p, ok := strings.Cut(sc.Text(), ":pids:"); ok {
			leaf = p
		}
	}
	if !strings.HasPrefix(leaf, sb.userCgroup+"/secure-") {
		t.Fatalf("call ran in cgroup %q, want a leaf under %s", leaf, sb.userCgroup)
	}
	return leaf
}

// TestDisabled: no pool, Available false with the reason, Run refused.
func TestDisabled(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t, func(c *Config) { c.Disabled = "io.sandbox.secure-exec=disabled" })
	if ok, why := r.Available(); ok || len(why) != 1 || why[0] != "io.sandbox.secure-exec=disabled" {
		t.Errorf("Available() = %v, %v", ok, why)
	}
	c := newCall("off", "true")
	c.Secrets = []spec.EnvVar{secret("K", "value-1234")}
	if _, err := r.Run(t.Context(), c.Call); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Run when disabled: %v", err)
	}
	if !bytes.Equal(c.Secrets[0].Value, make([]byte, 10)) {
		t.Error("value not cleared by a refused call")
	}
	if pids := sb.cgroupPids(t); len(pids) > 0 {
		t.Errorf("a disabled runner built containers: %v", pids)
	}
}

// TestBadCalls: each bad call gets a clear error without the value, and
// the runner keeps serving.
func TestBadCalls(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	const value = "canary-bad-9c1"
	for _, bad := range []struct {
		name    string
		call    *call
		want    error
		message string
	}{
		{"missing binary", newCall("nobin", "/bin/"+value), ErrNotStarted, "[REDACTED]"},
		{"missing binary in PATH", newCall("nopath", "nonexistent-tool"), ErrNotStarted, "not found"},
		{"bad cwd", func() *call { c := newCall("cwd", "true"); c.Cwd = "/nonexistent"; return c }(), ErrNotStarted, "/nonexistent"},
		{"relative cwd", func() *call { c := newCall("rel", "true"); c.Cwd = "tmp"; return c }(), ErrInvalidCall, "absolute"},
		{"cwd in HOME", func() *call { c := newCall("home", "true"); c.Cwd = "/home/user"; return c }(), ErrInvalidCall, "HOME"},
		{"NUL in value", func() *call {
			c := newCall("nul", "true")
			c.Secrets = []spec.EnvVar{secret("TOKEN", value+"\x00")}
			return c
		}(), ErrInvalidCall, "TOKEN"},
		{"= in name", func() *call { c := newCall("eq", "true"); c.Secrets = []spec.EnvVar{secret("A=B", value)}; return c }(), ErrInvalidCall, "A=B"},
		{"1 MiB value", func() *call {
			c := newCall("big", "true")
			c.Secrets = []spec.EnvVar{secret("BIG", value+strings.Repeat("x", 1<<20))}
			return c
		}(), ErrInvalidCall, "BIG"},
		{"twice", func() *call {
			c := newCall("dup", "true")
			c.Secrets = []spec.EnvVar{secret("K", value), secret("K", value)}
			return c
		}(), ErrInvalidCall, "twice"},
		{"no command", newCall("none"), ErrInvalidCall, "no command"},
	} {
		if len(bad.call.Secrets) == 0 {
			bad.call.Secrets = []spec.EnvVar{secret("CANARY", value)}
		}
		_, err := r.Run(t.Context(), bad.call.Call)
		if !errors.Is(err, bad.want) {
			t.Errorf("%s: %v, want %v", bad.name, err, bad.want)
			continue
		}
		if strings.Contains(err.Error(), value) || !strings.Contains(err.Error(), bad.message) {
			t.Errorf("%s: error %q (want it to say %q, never the value)", bad.name, err, bad.message)
		}
	}
	b, _ := os.ReadFile(sb.cfg.AuditPath)
	if bytes.Contains(b, []byte(value)) {
		t.Errorf("audit file holds a value:\n%s", b)
	}
	if n := bytes.Count(b, []byte("\n")); n != 10 {
		t.Errorf("%d audit lines for 10 calls", n)
	}
	c := newCall("after", "echo", "ok")
	if c.run(t, r); c.stdout.String() != "ok\n" {
		t.Errorf("call after the bad ones: %q", c.stdout.String())
	}
}

// TestBuildFailures: while containers cannot be built, Available is false
// with the reason and calls fail; once builds work again, both recover.
func TestBuildFailures(t *testing.T) {
	sb := newSandbox(t)
	reaper := sb.cfg.Reaper
	moved := reaper + ".away"
	if err := os.Rename(reaper, moved); err != nil {
		t.Fatal(err)
	}
	r := sb.runner(t)
	waitFor(t, "a failed build", func() bool { ok, _ := r.Available(); return !ok })
	if _, why := r.Available(); len(why) != 1 || !strings.Contains(why[0], "cannot be built") {
		t.Errorf("reason %v", why)
	}
	if _, err := r.Run(t.Context(), newCall("fails", "true").Call); !errors.Is(err, ErrUnavailable) {
		t.Errorf("call while builds fail: %v", err)
	}
	if err := os.Rename(moved, reaper); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "available again", func() bool { ok, _ := r.Available(); return ok })
	newCall("works", "true").run(t, r)
}

// TestCloseKillsEverything: Close ends a call in flight and the pooled
// containers, and returns once they are gone.
func TestCloseKillsEverything(t *testing.T) {
	sb := newSandbox(t)
	r := sb.runner(t)
	waitFor(t, "a full pool", func() bool { return r.pool.Len() == 2 })
	done := make(chan Result, 1)
	go func() {
		res, _ := r.Run(context.Background(), newCall("long", "sh", "-c", "setsid sh -c 'sleep 987656 &'; sleep 987657").Call)
		done <- res
	}()
	waitFor(t, "the call to run", func() bool { return len(sb.hostProcesses("987657")) > 0 })
	r.Close()
	if pids := sb.cgroupPids(t); len(pids) > 0 {
		t.Errorf("processes left after Close: %v", pids)
	}
	if p := sb.hostProcesses("98765"); len(p) > 0 {
		t.Errorf("processes alive after Close: %v", p)
	}
	select {
	case res := <-done:
		if res.ExitCode != 137 {
			t.Errorf("call in flight at Close: %+v", res)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call in flight did not end at Close")
	}
	if ok, _ := r.Available(); ok {
		t.Error("available after Close")
	}
	entries, _ := os.ReadDir(sb.cfg.StateRoot)
	if len(entries) > 0 {
		t.Errorf("libcontainer state left after Close: %v", entries)
	}
}

// TestWorkdirInHome: an image whose working directory is HOME keeps it
// (covering HOME would hide the project): HOME is then the private /tmp,
// so the dotfiles found through $HOME are still not the planted ones.
func TestWorkdirInHome(t *testing.T) {
	sb := newSandbox(t)
	sb.cfg.BundleSpec.Process.Cwd = "/home/user"
	r := sb.runner(t)
	c := newCall("workdir", "sh", "-c", `pwd; echo "$HOME"; cat "$HOME/.npmrc" 2>&1; ls -A`)
	c.run(t, r)
	out := c.stdout.String()
	if !strings.HasPrefix(out, "/home/user\n/tmp\n") || strings.Contains(out, "PLANTED-CONTENT") || !strings.Contains(out, ".npmrc") {
		t.Errorf("workdir in HOME: %q, want cwd /home/user with its files, HOME=/tmp without them", out)
	}
}

// TestPrivateRootfs: what the command writes anywhere in the rootfs (a
// tool caching a credential in /var/tmp, its project dir, /etc) lands in
// its own copy-on-write layer: not in the bundle's rootfs, which the
// workspace and the host see, and not in the next call's; nothing of it
// stays mounted once the runner closed.
func TestPrivateRootfs(t *testing.T) {
	sb := newSandbox(t)
	sb.cfg.BundleSpec.Root.Readonly = false
	r := sb.runner(t)
	if err := os.MkdirAll(filepath.Join(sb.rootfs, "var/tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(sb.rootfs, "var/tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	c := newCall("write", "sh", "-c", `echo "$CANARY" > /var/tmp/token && cat /var/tmp/token && ls -ld /`)
	c.Secrets = []spec.EnvVar{secret("CANARY", "canary-rootfs-51c2")}
	if res := c.run(t, r); res.ExitCode != 0 || !strings.Contains(c.stdout.String(), "canary-rootfs-51c2") {
		t.Fatalf("exit %d, stdout %q, stderr %q", res.ExitCode, c.stdout.String(), c.stderr.String())
	}
	if b, err := os.ReadFile(filepath.Join(sb.rootfs, "var/tmp/token")); err == nil {
		t.Errorf("the secure command's write reached the shared rootfs: %q", b)
	}
	next := newCall("read", "sh", "-c", "cat /var/tmp/token 2>&1; true")
	next.run(t, r)
	if strings.Contains(next.stdout.String(), "canary") {
		t.Errorf("the next call saw the last one's write: %q", next.stdout.String())
	}
	// Close destroys the pool: no private rootfs stays mounted.
	r.Close()
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), sb.cfg.StateRoot) {
		t.Errorf("a private rootfs or state tmpfs is still mounted under %s after Close", sb.cfg.StateRoot)
	}
}

// TestPasswdHomeCovered: with no HOME in the image's env, the workspace
// user's passwd home (what ssh and getpwuid read) is covered all the same,
// and HOME names it.
func TestPasswdHomeCovered(t *testing.T) {
	sb := newSandbox(t)
	passwd := "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
	if err := os.MkdirAll(filepath.Join(sb.rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sb.rootfs, "etc/passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, e := range bundleEnv {
		if !strings.HasPrefix(e, "HOME=") {
			env = append(env, e)
		}
	}
	sb.cfg.BundleSpec.Process.Env = env
	r := sb.runner(t)
	c := newCall("pwhome", "sh", "-c", `echo "HOME=$HOME"; cat /home/user/.npmrc 2>&1; ls -A /home/user`)
	c.ImageEnv = env
	c.run(t, r)
	out := c.stdout.String()
	if strings.Contains(out, "PLANTED-CONTENT") || strings.Contains(out, ".gitconfig") {
		t.Errorf("the passwd home's planted files are visible:\n%s", out)
	}
	if !strings.HasPrefix(out, "HOME=/home/user\n") {
		t.Errorf("HOME: %q, want /home/user", out)
	}
}
