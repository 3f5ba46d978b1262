package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
)

// MaxStdin is the most stdin a call carries. Stdin travels whole in the
// request (the command reads it, then EOF), so it is bounded; a larger one
// fails the call before anything runs. Stream bigger inputs through a file
// the sandbox can read instead.
const MaxStdin = 4 << 20

// Command is what a call runs: exactly one of Argv (run as is, argv[0]
// looked up in PATH) and Shell (a command string run by /bin/sh -c, as
// the proposal's exec("npm install")).
type Command struct {
	Argv  []string
	Shell string
}

// Shell is a command string run by /bin/sh -c.
func Shell(cmd string) Command { return Command{Shell: cmd} }

// Argv is a command run as is, without a shell.
func Argv(args ...string) Command { return Command{Argv: args} }

// validate refuses a command that is neither or both, or empty.
func (cmd Command) validate() error {
	switch {
	case len(cmd.Argv) > 0 && cmd.Shell != "":
		return errors.New("command has both Argv and Shell: set exactly one")
	case len(cmd.Argv) > 0 && cmd.Argv[0] == "":
		return errors.New("command's Argv[0] is empty")
	case len(cmd.Argv) == 0 && cmd.Shell == "":
		return errors.New("empty command: set Argv or Shell")
	}
	return nil
}

// ExecOptions are the proposal's exec opts.
type ExecOptions struct {
	// Env is laid over the image's env and the sandbox's env vars
	// (SetEnvVars) for this call. User code can see it: credentials go in
	// SecureOptions.Env.
	Env map[string]string
	// Cwd is the working directory; empty is the image's.
	Cwd string
	// Timeout kills every process of the call when it passes; the Result
	// then says TimedOut. Zero: none (ctx still ends the call).
	Timeout time.Duration
	// Stdin is read whole (at most MaxStdin bytes) before the call starts;
	// nil is an empty stdin.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output as it writes it. Nil
	// captures it in Result.Stdout and Result.Stderr instead (in memory,
	// whole: give writers for large output).
	Stdout, Stderr io.Writer
}

// SecureOptions are the proposal's execSecure opts.
type SecureOptions struct {
	// Env is the call's env, over the image's env and the sandbox's env
	// vars: the secrets this command alone sees. The shim hands it to the
	// command over a pipe and clears its copies; loader and interpreter
	// hook variables (LD_*, PYTHONPATH, NODE_OPTIONS, ...) of the sandbox
	// are dropped unless set here.
	Env map[string]string
	// Isolated nil or true runs the command in a container of its own;
	// false asks to run it as a plain Exec, and is refused
	// (InvalidArgument) unless AllowInsecureFallback is set too.
	Isolated *bool
	Timeout  time.Duration
	Cwd      string
	Stdin    io.Reader
	// Stdout and Stderr as in ExecOptions.
	Stdout, Stderr io.Writer
	// AllowInsecureFallback runs the command as a plain Exec, with a
	// warning in Result.Warnings, where secure execution is unavailable
	// (or Isolated is false), instead of failing. The call's env is then
	// visible to user code in the workspace.
	AllowInsecureFallback bool
}

// Result is how a command ended. A non-zero exit is not an error.
type Result struct {
	// CallID names the call in the audit trail and the shim's log.
	CallID string
	// ExitCode is the command's exit status; 128+N when signal N killed it.
	ExitCode int
	// Signal is the signal that killed it, or 0.
	Signal   int
	TimedOut bool
	// Isolated is true when the command ran in a secure container of its
	// own; false for Exec and for ExecSecure's insecure fallback.
	Isolated bool
	Duration time.Duration
	// Warnings, e.g. that the insecure fallback was taken.
	Warnings []string
	// Stdout and Stderr hold the output when the options' writers were nil.
	Stdout, Stderr []byte
}

// Exec is the proposal's exec(command, opts): it runs cmd in the sandbox's
// workspace, as a containerd exec runs there, with the sandbox's env vars,
// and never appears in containerd's records or events. Output reaches
// opts.Stdout and opts.Stderr as the command writes it. Cancelling ctx (or
// a writer failing) ends the call, and the shim kills the command.
func (c *Client) Exec(ctx context.Context, cmd Command, opts ExecOptions) (*Result, error) {
	if c.invalid != nil {
		return nil, c.invalid
	}
	timeout, stdin, err := prepare(cmd, opts.Timeout, opts.Stdin)
	if err != nil {
		return nil, err
	}
	req := &sandboxv1.ExecRequest{
		Argv:    cmd.Argv,
		Command: cmd.Shell,
		Env:     opts.Env,
		Cwd:     opts.Cwd,
		Timeout: timeout,
		Stdin:   stdin,
	}
	stream, err := c.rpc.Exec(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return receive(stream, opts.Stdout, opts.Stderr)
}

// ExecSecure is the proposal's execSecure(command, {env, isolated,
// timeout}): it runs cmd in a container of its own, built for this one
// call (a sibling PID namespace, its own mounts, /tmp and HOME, the
// workspace's user and restrictions, the sandbox network), which dies
// with the command, daemons included. opts.Env reaches that command
// alone: no process of the workspace can see it. Where secure execution
// is unavailable it fails with connect.CodeFailedPrecondition, unless
// opts.AllowInsecureFallback. Every call leaves an audit record (Audit).
//
// The values travel as bytes, which the client clears once the request
// is sent; the strings in opts.Env and the HTTP library's buffers are the
// caller's process memory and cannot be cleared.
func (c *Client) ExecSecure(ctx context.Context, cmd Command, opts SecureOptions) (*Result, error) {
	if c.invalid != nil {
		return nil, c.invalid
	}
	timeout, stdin, err := prepare(cmd, opts.Timeout, opts.Stdin)
	if err != nil {
		return nil, err
	}
	isolated := true
	if opts.Isolated != nil {
		isolated = *opts.Isolated
	}
	env := make(map[string][]byte, len(opts.Env))
	for k, v := range opts.Env {
		env[k] = []byte(v)
	}
	defer func() {
		for _, v := range env {
			clear(v)
		}
	}()
	req := &sandboxv1.ExecSecureRequest{
		Argv:                  cmd.Argv,
		Command:               cmd.Shell,
		Env:                   env,
		Cwd:                   opts.Cwd,
		Timeout:               timeout,
		Stdin:                 stdin,
		Isolated:              &isolated,
		AllowInsecureFallback: opts.AllowInsecureFallback,
	}
	// The request is marshalled and sent before the stream is returned.
	stream, err := c.rpc.ExecSecure(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return receive(stream, opts.Stdout, opts.Stderr)
}

// prepare checks what Exec and ExecSecure share and reads stdin.
func prepare(cmd Command, timeout time.Duration, stdin io.Reader) (*durationpb.Duration, []byte, error) {
	if err := cmd.validate(); err != nil {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	timeoutValue, err := timeoutField(timeout)
	if err != nil {
		return nil, nil, err
	}
	stdinBytes, err := readStdin(stdin)
	if err != nil {
		return nil, nil, err
	}
	return timeoutValue, stdinBytes, nil
}

// timeoutField is the request's timeout: unset for none.
func timeoutField(timeout time.Duration) (*durationpb.Duration, error) {
	if timeout < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("timeout %v is negative", timeout))
	}
	if timeout == 0 {
		return nil, nil
	}
	return durationpb.New(timeout), nil
}

// readStdin reads stdin whole, refusing more than MaxStdin bytes.
func readStdin(stdin io.Reader) ([]byte, error) {
	if stdin == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(stdin, MaxStdin+1))
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("read stdin: %w", err))
	}
	if len(b) > MaxStdin {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("stdin is more than %d bytes, the most a call carries", MaxStdin))
	}
	return b, nil
}

// responseStream is the part of connect's server stream receive reads.
type responseStream interface {
	Receive() bool
	Msg() *sandboxv1.ExecResponse
	Err() error
	Close() error
}

// receive writes the stream's output as it arrives and returns the Exit
// it ends with. Closing the stream early (a writer failed) cancels the
// call, which kills the command.
func receive(stream responseStream, stdout, stderr io.Writer) (*Result, error) {
	defer stream.Close()
	var capturedOut, capturedErr *bytes.Buffer
	if stdout == nil {
		capturedOut = new(bytes.Buffer)
		stdout = capturedOut
	}
	if stderr == nil {
		capturedErr = new(bytes.Buffer)
		stderr = capturedErr
	}
	var result *Result
	for stream.Receive() {
		switch event := stream.Msg().GetEvent().(type) {
		case *sandboxv1.ExecResponse_Stdout:
			if _, err := stdout.Write(event.Stdout); err != nil {
				return nil, connect.NewError(connect.CodeCanceled, fmt.Errorf("write the command's stdout: %w", err))
			}
		case *sandboxv1.ExecResponse_Stderr:
			if _, err := stderr.Write(event.Stderr); err != nil {
				return nil, connect.NewError(connect.CodeCanceled, fmt.Errorf("write the command's stderr: %w", err))
			}
		case *sandboxv1.ExecResponse_Exit:
			if result == nil {
				result = resultFromExit(event.Exit)
			}
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	if result == nil {
		return nil, connect.NewError(connect.CodeDataLoss, errors.New("the output stream ended without the command's exit"))
	}
	if capturedOut != nil {
		result.Stdout = capturedOut.Bytes()
	}
	if capturedErr != nil {
		result.Stderr = capturedErr.Bytes()
	}
	return result, nil
}

// resultFromExit maps the stream's Exit to a Result; a signal without an
// exit code gets the shell's 128+N.
func resultFromExit(exit *sandboxv1.Exit) *Result {
	result := &Result{
		CallID:   exit.GetCallId(),
		ExitCode: int(exit.GetExitCode()),
		Signal:   int(exit.GetSignal()),
		TimedOut: exit.GetTimedOut(),
		Isolated: exit.GetIsolated(),
		Duration: exit.GetDuration().AsDuration(),
		Warnings: exit.GetWarnings(),
	}
	if result.Signal != 0 && result.ExitCode == 0 {
		result.ExitCode = 128 + result.Signal
	}
	return result
}
