// Package secureexec runs execSecure calls: each in a container of its
// own, built by the shim with libcontainer from the same code as the
// workspace (spec, usercontainer), taken from a small pool of fresh,
// never-used ones, and killed whole (its PID namespace) when the command
// exits or times out. The call's env reaches the command over the
// waiter's socket only; the shim clears its copies. Every call leaves one
// line in the audit trail, with keys and never values.
//
// Entry point: New, then Runner.Run per call.
package secureexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/internal/pool"
	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/internal/seccompprogram"
	"github.com/sandbox-shim/sandbox-shim/internal/usercontainer"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// Config is what the runner of one sandbox needs.
type Config struct {
	SandboxID, Namespace string
	// StateRoot is libcontainer's root (the sandbox's).
	StateRoot string
	Bundle    string
	// BundleSpec is the bundle's spec; Settings the workspace's settings
	// with its limits as they are now.
	BundleSpec *specs.Spec
	Settings   spec.Settings
	// NetNS and UTSNS are paths to the sandbox's namespaces; UserNS to
	// its user namespace, "" when it has none.
	NetNS, UTSNS, UserNS string
	// UserCgroup is the workspace's cgroup: each secure container gets a
	// leaf below it (its pids and memory limits, the network policy).
	UserCgroup string
	// Reaper is the host path of the sandbox-reaper binary.
	Reaper     string
	HostMemory int64
	// JoinedIPCSysctls are those of the IPC namespace the bundle joins (a
	// pod's), as for the workspace.
	JoinedIPCSysctls map[string]string
	// PoolSize is how many containers are built ahead.
	PoolSize int
	// AuditPath is the audit file (one JSON line per call).
	AuditPath string
	// Audit is the sandbox's audit trail, shared by its runners; nil makes
	// one at AuditPath.
	Audit *AuditTrail
	// Disabled, when set, says why secure execution is off for this
	// sandbox (io.sandbox.secure-exec=disabled): no pool is built,
	// Available is false with this reason and Run fails with
	// ErrUnavailable. Audit and Record still work.
	Disabled string
}

// Call is one execSecure.
type Call struct {
	// ID names the call in the audit trail and the log.
	ID     string
	Caller sandboxv1.Caller
	Args   []string
	// ImageEnv is the image's env as any exec gets it; SandboxEnv the
	// sandbox's env vars (SetEnvVars), as NAME=value.
	ImageEnv, SandboxEnv []string
	// Secrets is the call's env. Run clears the values.
	Secrets []spec.EnvVar
	// Cwd is the working directory; "" is the image's.
	Cwd string
	// Timeout ends the call; 0 is none.
	Timeout time.Duration
	Stdin   []byte
	Stdout  io.Writer
	Stderr  io.Writer
}

// Result is how a call ended.
type Result struct {
	// ExitCode is the command's status, 128+Signal when a signal killed it.
	ExitCode, Signal int
	TimedOut         bool
	Duration         time.Duration
}

// ErrUnavailable is wrapped when secure execution cannot run here.
var ErrUnavailable = errors.New("secure execution unavailable")

// ErrInvalidCall is wrapped when a call cannot run as given (bad env
// names or values, no command, a cwd in the private HOME); ErrNotStarted
// when its command could not start (a missing binary, a bad cwd). Neither
// ever carries a value of the call's env.
var (
	ErrInvalidCall = errors.New("invalid secure exec call")
	ErrNotStarted  = errors.New("secure exec command did not start")
	// ErrAborted: the call was killed by the runner's Close.
	ErrAborted = errors.New("secure exec aborted")
)

// Timeouts of a container's end: the exit report waits for the output
// to drain once every process is dead, which is at once; a container
// whose processes do not go (a kernel stuck in D state) is given up on,
// logged, and destroyed in the background all the same.
const (
	exitReportTimeout = 10 * time.Second
	stopTimeout       = 10 * time.Second
	closeTimeout      = 30 * time.Second
)

// poolBackoff is the wait between failed builds: a build takes tens of
// milliseconds, and one that keeps failing (the workspace's memory or
// pids full) is retried for as long as the runner lives, so that
// Available turns true again once builds work.
var poolBackoff = pool.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}

// containerSeq numbers secure containers across runners of this shim: a
// workspace reset makes a new runner, and names must stay unique.
var containerSeq atomic.Uint64

// Runner runs one sandbox's execSecure calls.
type Runner struct {
	cfg Config
	// homes are the directories a private HOME covers: the env's HOME and
	// the workspace user's passwd home; home is the one HOME names ("":
	// HOME is /tmp).
	homes []string
	home  string
	// rootfs is the bundle's rootfs, the lower layer of each container's
	// private one; none for a read-only rootfs, which no one can write.
	rootfs string
	// stateDir holds its containers' libcontainer state and rootfs mount
	// points (a tmpfs, see newStateDir).
	stateDir string
	pool     *pool.Pool[*container]
	audit    *AuditTrail
	// template is the first container's config, which the others copy.
	templateOnce sync.Once
	template     *configs.Config
	templateErr  error
	// seccompProgram compiles, once, the profile every container of the
	// runner has: nil when it cannot be (each init compiles it then).
	seccompProgram func(*configs.Seccomp) []byte

	mu       sync.Mutex
	closed   bool
	live     map[*container]struct{} // built, not yet destroyed
	building int
	buildErr error // the last build's, nil once one worked
	gone     *sync.Cond
}

// container is one secure exec's container.
type container struct {
	id     string
	cgroup string
	// rootfs is its private view of the bundle's rootfs, if any.
	rootfs *privateRootfs
	*usercontainer.Container
}

// New starts the runner and fills its pool in the background.
func New(ctx context.Context, cfg Config) (*Runner, error) {
	if cfg.BundleSpec == nil || cfg.BundleSpec.Process == nil {
		return nil, fmt.Errorf("sandbox %s: secure exec: no bundle process", cfg.SandboxID)
	}
	if cfg.Audit == nil {
		cfg.Audit = NewAuditTrail(cfg.AuditPath)
	}
	r := &Runner{cfg: cfg, live: map[*container]struct{}{}, audit: cfg.Audit}
	r.seccompProgram = onceProgram(ctx, cfg.SandboxID)
	r.gone = sync.NewCond(&r.mu)
	rootfs := bundleRootfs(cfg.Bundle, cfg.BundleSpec)
	if root := cfg.BundleSpec.Root; root != nil && !root.Readonly {
		r.rootfs = rootfs
	}
	for _, home := range []string{
		spec.SecureHome(cfg.BundleSpec.Process.Env),
		// ssh, getpwuid and the like find HOME here, not in $HOME.
		spec.PasswdHome(readPasswd(rootfs), cfg.Settings.UID),
	} {
		// Covering a HOME holding the command's own working directory
		// (images whose WORKDIR is HOME) would hide it: left alone then.
		if home == "" || slices.Contains(r.homes, home) || spec.Within(cfg.BundleSpec.Process.Cwd, home) {
			continue
		}
		r.homes = append(r.homes, home)
		if r.home == "" {
			r.home = home
		}
	}
	if cfg.Disabled != "" {
		return r, nil
	}
	if r.stateDir = newStateDir(cfg.StateRoot); r.stateDir == "" {
		r.stateDir = cfg.StateRoot
	}
	r.pool = pool.New(pool.Config[*container]{
		Size:    max(cfg.PoolSize, 0),
		Build:   r.build,
		Discard: r.destroy,
		OnBuildError: func(err error) {
			log.G(ctx).WithError(err).WithField("id", cfg.SandboxID).Warn("build secure exec container")
		},
		Backoff: poolBackoff,
	})
	if cfg.PoolSize > 0 {
		go r.pool.Run(context.WithoutCancel(ctx))
	}
	return r, nil
}

// build makes one fresh container, with its waiter forked ahead.
func (r *Runner) build(ctx context.Context) (_ *container, retErr error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: runner closed", ErrUnavailable)
	}
	r.building++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.building--
		r.buildErr = retErr
		r.gone.Broadcast()
		r.mu.Unlock()
	}()
	n := strconv.FormatUint(containerSeq.Add(1), 10)
	c := &container{id: r.cfg.SandboxID + ".secure-" + n, cgroup: path.Join(r.cfg.UserCgroup, "secure-"+n)}
	st := r.cfg.Settings
	var rootfsView *privateRootfs
	if r.rootfs != "" {
		caps := spec.WorkspaceLeftoverCaps(st.MemoryLimit, r.cfg.HostMemory)
		v, err := newPrivateRootfs(r.stateDir, c.id, r.rootfs, caps.Budget/4)
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: secure exec: %w", r.cfg.SandboxID, err)
		}
		rootfsView, c.rootfs = v, v
		defer func() {
			if retErr != nil {
				v.release()
			}
		}()
	}
	cfg, err := r.containerConfig(c.id, c.cgroup, rootfsView.path())
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: secure exec config: %w", r.cfg.SandboxID, err)
	}
	reaper, err := spec.ReaperProcess(st, r.cfg.BundleSpec.Process)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: secure exec reaper: %w", r.cfg.SandboxID, err)
	}
	program := r.seccompProgram(cfg.Seccomp)
	if program != nil {
		cfg.Seccomp = nil
	}
	uc, err := usercontainer.Create(ctx, usercontainer.Config{
		SandboxID: r.cfg.SandboxID, ID: c.id, StateRoot: r.stateDir,
		Container: cfg, Reaper: reaper, SeccompProgram: program,
		Waiter:  func() (*libcontainer.Process, error) { return spec.WaiterProcess(st, r.cfg.BundleSpec.Process) },
		OneExec: true,
	})
	if err != nil {
		return nil, err
	}
	c.Container = uc
	r.mu.Lock()
	closed := r.closed
	r.live[c] = struct{}{}
	r.mu.Unlock()
	if closed {
		r.destroy(c)
		return nil, fmt.Errorf("%w: runner closed", ErrUnavailable)
	}
	return c, nil
}

// containerConfig is the libcontainer config of one container: the bundle
// spec is converted once, for the runner's first container, and every
// other gets a copy with its own cgroup leaf and rootfs view.
func (r *Runner) containerConfig(id, cgroupPath, rootfs string) (*configs.Config, error) {
	r.templateOnce.Do(func() {
		r.template, r.templateErr = spec.SecureExec(id, r.cfg.Bundle, r.cfg.BundleSpec, spec.SecureExecOptions{
			Workspace: spec.WorkspaceOptions{
				Settings: r.cfg.Settings, NetNS: r.cfg.NetNS, UTSNS: r.cfg.UTSNS, UserNS: r.cfg.UserNS,
				CgroupPath: cgroupPath, Reaper: r.cfg.Reaper, HostMemory: r.cfg.HostMemory,
				JoinedIPCSysctls: r.cfg.JoinedIPCSysctls,
			},
			Homes: r.homes,
		})
	})
	if r.templateErr != nil {
		return nil, r.templateErr
	}
	return spec.SecureExecCopy(r.template, cgroupPath, rootfs)
}

// onceProgram compiles the profile of the first container it is given
// and returns that program for every later one: the spec gives every
// secure container of a sandbox the workspace's profile. A profile that
// cannot be compiled ahead (a kernel without PTRACE_SECCOMP_GET_FILTER) is
// logged once and left to each container's init.
func onceProgram(ctx context.Context, sandboxID string) func(*configs.Seccomp) []byte {
	var (
		once    sync.Once
		program []byte
	)
	return func(profile *configs.Seccomp) []byte {
		if profile == nil {
			return nil
		}
		once.Do(func() {
			p, err := seccompprogram.Compile(profile)
			if err != nil {
				log.G(ctx).WithError(err).WithField("id", sandboxID).Warn("secure exec: seccomp profile not compiled ahead; each container's init compiles it (8 ms of CPU more per call)")
				return
			}
			program = p.Bytes()
		})
		return program
	}
}

// destroy kills c (its whole PID namespace), waits for it to be gone and
// removes it: never reused.
func (r *Runner) destroy(c *container) {
	c.Kill()
	c.WaitStopped(stopTimeout)
	if err := c.Destroy(); err != nil {
		log.L.WithError(err).WithField("id", r.cfg.SandboxID).Warn("destroy secure exec container")
	}
	c.rootfs.release()
	r.mu.Lock()
	delete(r.live, c)
	r.gone.Broadcast()
	r.mu.Unlock()
}

// take returns a fresh container: a pooled one, or one built now.
func (r *Runner) take(ctx context.Context) (*container, error) {
	for {
		c, ok := r.pool.Take()
		if !ok {
			break
		}
		if c.Ready() {
			return c, nil
		}
		// Died while pooled (the kernel's OOM killer): never used, gone.
		go r.destroy(c)
	}
	c, err := r.build(ctx)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return c, nil
}

// startAttempts bounds the containers one call tries when the one taken
// turns out dead.
const startAttempts = 3

// Run runs one call to its end: output streamed, every process of the
// container killed after it, one audit record written.
func (r *Runner) Run(ctx context.Context, call Call) (res Result, retErr error) {
	// Every path clears the call's values; the normal one right after the
	// command has them.
	defer spec.Clear(call.Secrets)
	begin := time.Now()
	red := newRedactor(call.Secrets)
	keys := make([]string, 0, len(call.Secrets))
	for _, v := range call.Secrets {
		keys = append(keys, v.Name)
	}
	rec := &sandboxv1.AuditRecord{
		Time: timestamppb.New(begin), Namespace: r.cfg.Namespace, SandboxId: r.cfg.SandboxID, CallId: call.ID,
		Argv: red.argv(call.Args), EnvKeys: keys, Cwd: red.text(r.cwd(call.Cwd)), Caller: call.Caller, Isolated: true,
	}
	defer func() {
		if retErr != nil {
			// An error names what the call gave (its cwd, its command):
			// never a value of its env, wherever the error goes.
			retErr = redactedError{err: retErr, text: red.text(retErr.Error())}
		}
		rec.Duration = durationpb.New(res.Duration)
		rec.ExitCode, rec.Signal, rec.TimedOut = int32(res.ExitCode), int32(res.Signal), res.TimedOut
		if retErr != nil {
			rec.Error = retErr.Error()
		}
		r.Record(rec)
		entry := log.G(ctx).WithField("id", r.cfg.SandboxID).WithField("call", call.ID).WithField("argv", rec.Argv).
			WithField("env_keys", keys).WithField("exit", res.ExitCode).WithField("duration", res.Duration)
		if retErr != nil {
			entry = entry.WithError(retErr)
		}
		entry.Info("secure exec")
	}()
	fail := func(err error) error {
		return fmt.Errorf("sandbox %s: secure exec %s: %w", r.cfg.SandboxID, call.ID, err)
	}
	if r.cfg.Disabled != "" {
		return res, fail(fmt.Errorf("%w: %s", ErrUnavailable, r.cfg.Disabled))
	}
	req, err := r.request(call, keys, r.cwd(call.Cwd))
	if err != nil {
		return res, fail(err)
	}
	var stdin io.Reader
	if call.Stdin != nil {
		stdin = bytes.NewReader(call.Stdin)
	}
	p := process.New(call.ID, process.Stdio{Streams: &process.Streams{Stdin: stdin, Stdout: call.Stdout, Stderr: call.Stderr}})
	reported := make(chan struct{})
	var c *container
	var e *usercontainer.Exec
	for attempt := 1; ; attempt++ {
		if c, err = r.take(ctx); err != nil {
			return res, fail(err)
		}
		begin = time.Now()
		e, err = c.Exec(p, req, func(*process.Process) { close(reported) })
		if err == nil || attempt == startAttempts || !(errors.Is(err, process.ErrWaiterGone) || errors.Is(err, usercontainer.ErrUsed)) {
			break
		}
		go r.destroy(c)
	}
	if err != nil {
		// The reaper's message names the binary or the cwd, which may hold
		// a value; nothing of it is kept but its redacted text.
		err = fmt.Errorf("%w: %s", ErrNotStarted, red.text(err.Error()))
	}
	// The command has its env (or never will): the shim's copies go now.
	spec.Clear(req.Secrets)
	if err != nil {
		go r.destroy(c)
		p.Close()
		return res, fail(err)
	}
	defer p.Close()
	var timeout <-chan time.Time
	if call.Timeout > 0 {
		t := time.NewTimer(call.Timeout - time.Since(begin))
		defer t.Stop()
		timeout = t.C
	}
	var ctxErr error
	select {
	case <-e.Exited():
	case <-timeout:
		res.TimedOut = true
	case <-ctx.Done():
		ctxErr = ctx.Err()
	}
	// The whole PID namespace dies with its pid 1: daemons the command
	// double-forked included, whatever they hold.
	c.Kill()
	select {
	case <-reported:
	case <-time.After(exitReportTimeout):
		log.G(ctx).WithField("id", r.cfg.SandboxID).Warnf("secure exec %s: exit not reported %v after the kill", call.ID, exitReportTimeout)
	}
	c.WaitStopped(stopTimeout)
	// Its writes leave no path on the host once it is dead.
	c.rootfs.release()
	status, exitedAt := p.Exit()
	if exitedAt.IsZero() {
		exitedAt = time.Now()
	}
	res.Duration = exitedAt.Sub(begin)
	res.ExitCode = status
	// As a shell reads $?: 128+N for a valid signal N (the process layer
	// reports a signal that way, as containerd does).
	if status > 128 && status <= 128+64 {
		res.Signal = status - 128
	}
	go r.destroy(c)
	if ctxErr != nil {
		return res, fail(fmt.Errorf("cancelled, its container killed: %w", ctxErr))
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed && !res.TimedOut && res.Signal == int(syscall.SIGKILL) {
		// Killed by Close (a workspace reset, the sandbox going away), not
		// ended by itself: its status is that kill's.
		return res, fail(fmt.Errorf("%w: its container was killed: the workspace was reset or the sandbox is going away", ErrAborted))
	}
	return res, nil
}

// redactedError is an error whose text had the call's values replaced;
// errors.Is still sees what it wraps.
type redactedError struct {
	err  error
	text string
}

func (e redactedError) Error() string { return e.text }
func (e redactedError) Unwrap() error { return e.err }

// cwd is the call's working directory: the bundle process' by default.
func (r *Runner) cwd(cwd string) string {
	if cwd == "" {
		cwd = r.cfg.BundleSpec.Process.Cwd
	}
	if cwd == "" {
		cwd = "/"
	}
	return cwd
}

// request checks the call and builds what its waiter is sent: the image's
// and sandbox's env without hook variables and without the keys the call
// sets, the private HOME unless the call sets HOME, then the call's own
// variables.
func (r *Runner) request(call Call, keys []string, cwd string) (spec.ExecRequest, error) {
	if len(call.Args) == 0 {
		return spec.ExecRequest{}, fmt.Errorf("%w: no command", ErrInvalidCall)
	}
	for i, v := range call.Secrets {
		if err := spec.ValidateEnv(v.Name, v.Value); err != nil {
			return spec.ExecRequest{}, fmt.Errorf("%w: %w", ErrInvalidCall, err)
		}
		if slices.Contains(keys[:i], v.Name) {
			return spec.ExecRequest{}, fmt.Errorf("%w: env %s given twice", ErrInvalidCall, v.Name)
		}
	}
	if !path.IsAbs(cwd) {
		return spec.ExecRequest{}, fmt.Errorf("%w: cwd %q is not an absolute path", ErrInvalidCall, cwd)
	}
	for _, home := range r.homes {
		if spec.Within(cwd, home) {
			return spec.ExecRequest{}, fmt.Errorf("%w: cwd %q is in HOME (%s), which a secure exec gets empty and private", ErrInvalidCall, cwd, home)
		}
	}
	env := spec.SecureExecEnv(call.ImageEnv, call.SandboxEnv, keys)
	if !slices.Contains(keys, "HOME") {
		env = slices.DeleteFunc(env, func(e string) bool { return len(e) >= 5 && e[:5] == "HOME=" })
		env = append(env, spec.SecureHomeEnv(r.home))
	}
	base := r.cfg.BundleSpec.Process
	req, err := spec.WorkspaceExec(&specs.Process{
		Args: call.Args, Env: env, Cwd: cwd, Rlimits: base.Rlimits,
		User: specs.User{AdditionalGids: base.User.AdditionalGids},
	}, base, r.cfg.Settings)
	if err != nil {
		return spec.ExecRequest{}, fmt.Errorf("%w: %w", ErrInvalidCall, err)
	}
	req.Secrets = call.Secrets
	// Refused here, before a container is used: a request no waiter could
	// carry (its size, a NUL). Encode's errors name keys only.
	probe, err := req.Encode()
	clear(probe)
	if err != nil {
		return spec.ExecRequest{}, fmt.Errorf("%w: %w", ErrInvalidCall, err)
	}
	return req, nil
}

// Available tells whether calls can run, and if not, why.
func (r *Runner) Available() (bool, []string) {
	if r.cfg.Disabled != "" {
		return false, []string{r.cfg.Disabled}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false, []string{"secure execution is being rebuilt (workspace reset or sandbox stopping)"}
	}
	if r.buildErr != nil && r.pool.Len() == 0 {
		return false, []string{fmt.Sprintf("secure exec containers cannot be built: %v", r.buildErr)}
	}
	return true, nil
}

// Record appends rec to the audit trail: Run does for its calls; the
// sandbox does for a call that took the insecure fallback.
func (r *Runner) Record(rec *sandboxv1.AuditRecord) {
	if err := r.audit.Add(rec); err != nil {
		log.L.WithError(err).WithField("id", r.cfg.SandboxID).Warn("audit trail")
	}
}

// Audit returns the most recent limit records (0: all kept).
func (r *Runner) Audit(limit int) []*sandboxv1.AuditRecord { return r.audit.last(limit) }

// Close kills every secure container, in flight or pooled, and waits for
// them to be gone: the workspace's cgroup can then be removed.
func (r *Runner) Close() {
	r.mu.Lock()
	r.closed = true
	live := make([]*container, 0, len(r.live))
	for c := range r.live {
		live = append(live, c)
	}
	r.mu.Unlock()
	if r.pool != nil {
		r.pool.Close()
	}
	// Calls in flight end with their container's death, as at a timeout.
	for _, c := range live {
		c.Kill()
	}
	deadline := time.Now().Add(closeTimeout)
	stop := time.AfterFunc(closeTimeout, func() {
		r.mu.Lock()
		r.gone.Broadcast()
		r.mu.Unlock()
	})
	defer stop.Stop()
	// Once they are gone (or given up on): their state and rootfs views.
	if r.stateDir != r.cfg.StateRoot {
		defer releaseStateDir(r.stateDir)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.live) > 0 || r.building > 0 {
		if time.Now().After(deadline) {
			log.L.WithField("id", r.cfg.SandboxID).Warnf("secure exec: %d containers still there %v after close", len(r.live)+r.building, closeTimeout)
			return
		}
		r.gone.Wait()
	}
}
