package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/internal/secureexec"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// API is the sandbox as the sandbox API (internal/apiserver) sees it: its
// execs run in the workspace as containerd's do, but are never registered
// with containerd, so they never become its records or events.
type API struct {
	sb *Sandbox
	// envMu guards env, the sandbox's env vars (SetEnvVars).
	envMu sync.Mutex
	env   map[string]string
	// audit is the sandbox's audit trail: every workspace's runner and
	// the insecure fallback write to it, so it outlives resets.
	audit *secureexec.AuditTrail
}

// API returns the sandbox's API backend.
func (sb *Sandbox) API() *API {
	sb.apiOnce.Do(func() {
		sb.api = &API{sb: sb, env: map[string]string{}, audit: secureexec.NewAuditTrail(auditPath(sb.Namespace, sb.ID))}
	})
	return sb.api
}

// newCallID names one API call in its Exit, the log and the audit trail.
func newCallID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "call-" + hex.EncodeToString(b)
}

// commandArgs is a call's argv: its own, or /bin/sh -c command.
func commandArgs(argv []string, command string) ([]string, error) {
	switch {
	case len(argv) > 0 && command != "":
		return nil, fmt.Errorf("%w: both argv and command are set: give one", errdefs.ErrInvalidArgument)
	case command != "":
		return []string{"/bin/sh", "-c", command}, nil
	case len(argv) == 0:
		return nil, fmt.Errorf("%w: no command: set argv or command", errdefs.ErrInvalidArgument)
	case argv[0] == "":
		return nil, fmt.Errorf("%w: argv[0] is empty", errdefs.ErrInvalidArgument)
	}
	return argv, nil
}

// callEnv validates a call's env and lays it out as NAME=value, sorted.
func callEnv(env map[string]string) ([]string, error) {
	keys := slices.Sorted(maps.Keys(env))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if err := spec.ValidateEnv(k, []byte(env[k])); err != nil {
			return nil, fmt.Errorf("%w: env: %w", errdefs.ErrInvalidArgument, err)
		}
		out = append(out, k+"="+env[k])
	}
	return out, nil
}

// sandboxEnv is the env vars as NAME=value, sorted.
func (a *API) sandboxEnv() []string {
	a.envMu.Lock()
	defer a.envMu.Unlock()
	out := make([]string, 0, len(a.env))
	for _, k := range slices.Sorted(maps.Keys(a.env)) {
		out = append(out, k+"="+a.env[k])
	}
	return out
}

func (a *API) envKeys() []string {
	a.envMu.Lock()
	defer a.envMu.Unlock()
	return slices.Sorted(maps.Keys(a.env))
}

// workspaceRun is one command run in the workspace for the API.
type workspaceRun struct {
	id   string
	args []string
	// env goes over the image's env and the sandbox's env vars, and
	// secrets (the insecure fallback's) over all of them, as bytes.
	env            []string
	secrets        []spec.EnvVar
	cwd            string
	timeout        time.Duration
	stdin          []byte
	stdout, stderr io.Writer
}

// workspaceResult is how it ended.
type workspaceResult struct {
	status   int
	timedOut bool
	duration time.Duration
}

// imageExec is the workspace request for the bundle process' own env and
// cwd, as a containerd exec built from the bundle (as CRI builds them)
// gets them: the control plane's own env entries dropped (workspaceEnv).
func (sb *Sandbox) imageExec(args []string, cwd string) (spec.ExecRequest, error) {
	base := sb.bundleSpec.Process
	p := *base
	p.Args, p.Terminal, p.ConsoleSize = args, false, nil
	if cwd != "" {
		p.Cwd = cwd
	}
	return spec.WorkspaceExec(&p, base, sb.settings)
}

// runInWorkspace runs one command in the workspace to its end, or until
// its timeout or ctx ends: then every process it started is killed.
func (a *API) runInWorkspace(ctx context.Context, run workspaceRun) (workspaceResult, error) {
	sb := a.sb
	switch {
	case !sb.Started():
		return workspaceResult{}, fmt.Errorf("%w: task not started", errdefs.ErrFailedPrecondition)
	case sb.stopped():
		return workspaceResult{}, fmt.Errorf("%w: task is stopped", errdefs.ErrFailedPrecondition)
	case sb.Paused():
		return workspaceResult{}, fmt.Errorf("%w: sandbox is paused", errdefs.ErrFailedPrecondition)
	}
	req, err := sb.imageExec(run.args, run.cwd)
	if err != nil {
		return workspaceResult{}, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	req.Env = spec.MergeEnv(req.Env, a.sandboxEnv(), run.env)
	if len(run.secrets) > 0 {
		// The insecure fallback's values go as bytes, as a secure exec's.
		req.Env = slices.DeleteFunc(req.Env, func(e string) bool {
			k, _, _ := strings.Cut(e, "=")
			return slices.ContainsFunc(run.secrets, func(v spec.EnvVar) bool { return v.Name == k })
		})
		req.Secrets = run.secrets
	}
	// Refuse what no waiter could run before one is taken.
	probe, err := req.Encode()
	clear(probe)
	if err != nil {
		return workspaceResult{}, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	sb.buildWorkspaceNow()
	ws, err := sb.waitWorkspace(ctx)
	if err != nil {
		return workspaceResult{}, err
	}
	streams := &process.Streams{Stdout: run.stdout, Stderr: run.stderr}
	if len(run.stdin) > 0 {
		streams.Stdin = bytes.NewReader(run.stdin)
	}
	p := process.New(run.id, process.Stdio{Streams: streams})
	defer p.Close()
	begin := time.Now()
	running, err := ws.container.Exec(p, req, nil)
	if err != nil {
		if errors.Is(err, process.ErrWaiterGone) {
			return workspaceResult{}, fmt.Errorf("%w: command did not start: %w", errdefs.ErrUnavailable, err)
		}
		if errdefs.IsInvalidArgument(err) {
			return workspaceResult{}, err
		}
		// The waiter's own report: no such binary, a bad cwd...
		return workspaceResult{}, fmt.Errorf("%w: command did not start: %w", errdefs.ErrFailedPrecondition, err)
	}
	defer running.Release()
	var timeout <-chan time.Time
	if run.timeout > 0 {
		t := time.NewTimer(run.timeout)
		defer t.Stop()
		timeout = t.C
	}
	var res workspaceResult
	select {
	case <-p.Done():
	case <-timeout:
		res.timedOut = true
	case <-ctx.Done():
	}
	select {
	case <-p.Done():
	default:
		// Everything it started, daemons included, then the command.
		if err := running.KillAll(); err != nil {
			log.G(ctx).WithError(err).WithField("id", sb.ID).Warnf("API exec %s: kill its processes", run.id)
		}
		_ = p.Signal(syscall.SIGKILL)
		<-p.Done()
	}
	res.status, _ = p.Exit()
	res.duration = time.Since(begin)
	return res, nil
}

// exitOf is the Exit message of a run.
func exitOf(id string, res workspaceResult, isolated bool) *sandboxv1.Exit {
	e := &sandboxv1.Exit{CallId: id, ExitCode: int32(res.status), TimedOut: res.timedOut, Duration: durationpb.New(res.duration), Isolated: isolated}
	// process reports 128+N for signal N, as containerd does.
	if res.status > 128 && res.status < 128+65 {
		e.Signal = int32(res.status - 128)
	}
	return e
}

// Exec runs an API exec in the workspace.
func (a *API) Exec(ctx context.Context, call api.ExecCall) (*sandboxv1.Exit, error) {
	id := newCallID()
	fail := func(err error) (*sandboxv1.Exit, error) {
		return nil, fmt.Errorf("sandbox %s: exec %s: %w", a.sb.ID, id, err)
	}
	req := call.Request
	args, err := commandArgs(req.Argv, req.Command)
	if err != nil {
		return fail(err)
	}
	env, err := callEnv(req.Env)
	if err != nil {
		return fail(err)
	}
	res, err := a.runInWorkspace(ctx, workspaceRun{
		id: id, args: args, env: env, cwd: req.Cwd, timeout: req.Timeout.AsDuration(),
		stdin: req.Stdin, stdout: call.Stdout, stderr: call.Stderr,
	})
	if err != nil {
		return fail(err)
	}
	return exitOf(id, res, false), nil
}

// secrets are an ExecSecure call's env, validated, as spec.EnvVar (sorted
// by name), copies of the request's values: the runner clears them, the
// API server clears the request's.
func secrets(env map[string][]byte) ([]spec.EnvVar, error) {
	out := make([]spec.EnvVar, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		// The error names the key, never the value.
		if err := spec.ValidateEnv(k, env[k]); err != nil {
			spec.Clear(out)
			return nil, fmt.Errorf("%w: env: %w", errdefs.ErrInvalidArgument, err)
		}
		out = append(out, spec.EnvVar{Name: k, Value: bytes.Clone(env[k])})
	}
	return out, nil
}

// ExecSecure runs an execSecure call in a secure container of its own, or
// fails closed; with allow_insecure_fallback, where that is unavailable
// (or isolated is false), it runs as an Exec, with a warning.
func (a *API) ExecSecure(ctx context.Context, call api.SecureExecCall) (*sandboxv1.Exit, error) {
	sb := a.sb
	id := newCallID()
	fail := func(err error) (*sandboxv1.Exit, error) {
		return nil, fmt.Errorf("sandbox %s: execSecure %s: %w", sb.ID, id, err)
	}
	req := call.Request
	args, err := commandArgs(req.Argv, req.Command)
	if err != nil {
		return fail(err)
	}
	vars, err := secrets(req.Env)
	if err != nil {
		return fail(err)
	}
	defer spec.Clear(vars)
	isolated := req.Isolated == nil || *req.Isolated
	if !isolated && !req.AllowInsecureFallback {
		return fail(fmt.Errorf("%w: isolated=false runs the command in the workspace, where user code can read its env: set allow_insecure_fallback as well to accept that", errdefs.ErrInvalidArgument))
	}
	switch {
	case !sb.Started():
		return fail(fmt.Errorf("%w: task not started", errdefs.ErrFailedPrecondition))
	case sb.stopped():
		return fail(fmt.Errorf("%w: task is stopped", errdefs.ErrFailedPrecondition))
	case sb.Paused():
		return fail(fmt.Errorf("%w: sandbox is paused", errdefs.ErrFailedPrecondition))
	}
	sb.buildWorkspaceNow()
	ws, err := sb.waitWorkspace(ctx)
	if err != nil {
		return fail(err)
	}
	// The fallback is for a sandbox where secure execution is off or could
	// not start at all. A failure to build a secure container is never a
	// reason for it: user code can cause one (filling the workspace's pids
	// or memory) to have the call's env run where it can read it.
	var fallbackReason string
	switch {
	case !isolated:
		fallbackReason = "the call asked for isolated=false"
	case sb.settings.SecureExecDisabled:
		fallbackReason = fmt.Sprintf("disabled for this sandbox by %s=disabled", api.AnnotationSecureExec)
	case ws.runner == nil:
		fallbackReason = strings.Join(runnerUnavailable(ws), "; ")
	}
	if fallbackReason == "" {
		res, err := ws.runner.Run(ctx, secureexec.Call{
			ID: id, Caller: call.Caller, Args: args,
			ImageEnv: a.imageEnv(), SandboxEnv: a.sandboxEnv(), Secrets: vars,
			Cwd: req.Cwd, Timeout: req.Timeout.AsDuration(), Stdin: req.Stdin,
			Stdout: call.Stdout, Stderr: call.Stderr,
		})
		switch {
		case err == nil:
			e := exitOf(id, workspaceResult{status: res.ExitCode, timedOut: res.TimedOut, duration: res.Duration}, true)
			if res.Signal != 0 {
				e.Signal = int32(res.Signal)
			}
			return e, nil
		// The runner's errors name the sandbox and the call already.
		case errors.Is(err, secureexec.ErrUnavailable):
			return nil, fmt.Errorf("%w: %w (no insecure fallback for a secure container that could not be built: user code can cause that)", errdefs.ErrUnavailable, err)
		case errors.Is(err, secureexec.ErrInvalidCall):
			return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		case errors.Is(err, secureexec.ErrNotStarted):
			return nil, fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
		case errors.Is(err, secureexec.ErrAborted):
			return nil, fmt.Errorf("%w: %w", errdefs.ErrAborted, err)
		default:
			return nil, err
		}
	}
	if !req.AllowInsecureFallback {
		return fail(fmt.Errorf("%w: secure execution unavailable: %s (a call may set allow_insecure_fallback to run as a plain exec, where user code can read its env)", errdefs.ErrFailedPrecondition, fallbackReason))
	}
	return a.insecureFallback(ctx, id, call, args, vars, fallbackReason)
}

// runnerUnavailable says why ws's runner cannot run a call, if so.
func runnerUnavailable(ws *workspace) []string {
	if ws.runner == nil {
		if ws.runnerErr != nil {
			return []string{ws.runnerErr.Error()}
		}
		return []string{"no secure execution runner"}
	}
	if ok, reasons := ws.runner.Available(); !ok {
		if len(reasons) == 0 {
			reasons = []string{"secure execution unavailable"}
		}
		return reasons
	}
	return nil
}

// imageEnv is the image's env as a workspace exec gets it.
func (a *API) imageEnv() []string {
	req, err := a.sb.imageExec(a.sb.bundleSpec.Process.Args, "")
	if err != nil {
		return nil
	}
	return req.Env
}

// insecureFallbackWarning is the Exit's warning for a call that took it.
const insecureFallbackWarning = "insecure fallback: the command ran as a plain exec in the workspace, without isolation (%s); its env was visible to user code there"

// insecureFallback runs an execSecure call as an Exec: logged (keys only),
// audited with isolated=false, and said in the Exit.
func (a *API) insecureFallback(ctx context.Context, id string, call api.SecureExecCall, args []string, vars []spec.EnvVar, reason string) (*sandboxv1.Exit, error) {
	sb := a.sb
	req := call.Request
	keys := make([]string, 0, len(vars))
	for _, v := range vars {
		keys = append(keys, v.Name)
	}
	log.G(ctx).WithField("id", sb.ID).WithField("call", id).WithField("env_keys", keys).
		Warnf("execSecure ran without isolation (insecure fallback asked for: %s): its env keys are visible to user code", reason)
	begin := time.Now()
	res, runErr := a.runInWorkspace(ctx, workspaceRun{
		id: id, args: args, secrets: vars, cwd: req.Cwd, timeout: req.Timeout.AsDuration(),
		stdin: req.Stdin, stdout: call.Stdout, stderr: call.Stderr,
	})
	rec := &sandboxv1.AuditRecord{
		Time: timestamppb.New(begin), Namespace: sb.Namespace, SandboxId: sb.ID, CallId: id,
		Argv: secureexec.Redact(args, vars), EnvKeys: keys, Cwd: secureexec.RedactText(req.Cwd, vars),
		Duration: durationpb.New(time.Since(begin)), Caller: call.Caller, Isolated: false,
	}
	if runErr != nil {
		rec.Error = secureexec.RedactText(runErr.Error(), vars)
	} else {
		e := exitOf(id, res, false)
		rec.ExitCode, rec.Signal, rec.TimedOut = e.ExitCode, e.Signal, e.TimedOut
	}
	if err := a.audit.Add(rec); err != nil {
		log.G(ctx).WithError(err).WithField("id", sb.ID).Warn("audit trail")
	}
	if runErr != nil {
		return nil, fmt.Errorf("sandbox %s: execSecure %s: %s", sb.ID, id, rec.Error)
	}
	e := exitOf(id, res, false)
	e.Warnings = append(e.Warnings, fmt.Sprintf(insecureFallbackWarning, reason))
	return e, nil
}

// secretWarning is SetEnvVars' warning for a secret-looking key.
const secretWarning = "%s looks like a secret: sandbox env vars reach every exec, user code included; pass it to execSecure's env instead"

// SetEnvVars sets and unsets the sandbox's env vars for later calls.
func (a *API) SetEnvVars(ctx context.Context, req *sandboxv1.SetEnvVarsRequest) (*sandboxv1.SetEnvVarsResponse, error) {
	fail := func(err error) (*sandboxv1.SetEnvVarsResponse, error) {
		return nil, fmt.Errorf("sandbox %s: setEnvVars: %w: %w", a.sb.ID, errdefs.ErrInvalidArgument, err)
	}
	keys := slices.Sorted(maps.Keys(req.Vars))
	for _, k := range keys {
		if err := spec.ValidateEnv(k, []byte(req.Vars[k])); err != nil {
			return fail(err)
		}
	}
	for _, k := range req.Unset {
		if err := spec.ValidateEnvName(k); err != nil {
			return fail(fmt.Errorf("unset: %w", err))
		}
		if _, ok := req.Vars[k]; ok {
			return fail(fmt.Errorf("%s is both set and unset", k))
		}
	}
	resp := &sandboxv1.SetEnvVarsResponse{}
	for _, k := range keys {
		if spec.SecretLooking(k) {
			resp.Warnings = append(resp.Warnings, fmt.Sprintf(secretWarning, k))
		}
	}
	a.envMu.Lock()
	for _, k := range req.Unset {
		delete(a.env, k)
	}
	maps.Copy(a.env, req.Vars)
	resp.Keys = slices.Sorted(maps.Keys(a.env))
	a.envMu.Unlock()
	if len(resp.Warnings) > 0 {
		log.G(ctx).WithField("id", a.sb.ID).Infof("setEnvVars: %d secret-looking keys set as sandbox env vars", len(resp.Warnings))
	}
	return resp, nil
}

// Audit returns the sandbox's audit trail, across workspace resets.
func (a *API) Audit(ctx context.Context, limit int) ([]*sandboxv1.AuditRecord, error) {
	return a.audit.Last(limit), nil
}
