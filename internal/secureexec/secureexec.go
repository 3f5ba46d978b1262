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
	"context"
	"errors"
	"io"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
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
	// NetNS and UTSNS are paths to the sandbox's namespaces.
	NetNS, UTSNS string
	// UserCgroup is the workspace's cgroup: each secure container gets a
	// leaf below it (its pids and memory limits, the network policy).
	UserCgroup string
	// Reaper is the host path of the sandbox-reaper binary.
	Reaper     string
	HostMemory int64
	// PoolSize is how many containers are built ahead.
	PoolSize int
	// AuditPath is the audit file (one JSON line per call).
	AuditPath string
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

// Runner runs one sandbox's execSecure calls.
type Runner struct {
	cfg Config
}

// New starts the runner and fills its pool in the background.
func New(ctx context.Context, cfg Config) (*Runner, error) {
	return &Runner{cfg: cfg}, nil
}

// Run runs one call to its end: output streamed, every process of the
// container killed after it, one audit record written.
func (r *Runner) Run(ctx context.Context, call Call) (Result, error) {
	spec.Clear(call.Secrets)
	return Result{}, ErrUnavailable
}

// Available tells whether calls can run, and if not, why.
func (r *Runner) Available() (bool, []string) {
	return false, []string{"not built yet"}
}

// Record appends rec to the audit trail: Run does for its calls; the
// sandbox does for a call that took the insecure fallback.
func (r *Runner) Record(rec *sandboxv1.AuditRecord) {}

// Audit returns the most recent limit records (0: all kept).
func (r *Runner) Audit(limit int) []*sandboxv1.AuditRecord { return nil }

// Close kills every secure container, in flight or pooled, and waits for
// them to be gone: the workspace's cgroup can then be removed.
func (r *Runner) Close() {}
