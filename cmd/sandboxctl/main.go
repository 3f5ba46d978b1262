// Command sandboxctl calls a sandbox's API (docs/api.md) from the command
// line: exec and exec-secure run commands in it, env sets its env vars,
// info and audit show its protections and its secure executions.
//
// Exit status: the command's for exec and exec-secure (124 when it timed
// out, 128+N when signal N killed it); 125 when sandboxctl itself fails
// (bad usage, no such sandbox, an API error), as docker and podman do;
// 0 for the other commands when they succeed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"connectrpc.com/connect"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/client"
)

// exitFailure is sandboxctl's own failure, apart from any command's.
const exitFailure = 125

// exitTimedOut is a command's exit when its timeout passed (timeout(1)'s).
const exitTimedOut = 124

const usage = `Usage:
  sandboxctl [-n NS] [--socket PATH] COMMAND ...

Commands:
  exec ID [--cwd DIR] [--env K=V]... [--timeout DUR] [-i] -- CMD [ARG...]
      Run CMD in the sandbox's workspace, as a containerd exec runs there.
  exec-secure ID [--env K=V | --env K | --env-file FILE]... [--timeout DUR]
          [--cwd DIR] [--allow-insecure-fallback] [-i] -- CMD [ARG...]
      Run CMD in a container of its own, built for this one call: its env
      reaches CMD alone, never the workspace. --env K takes K's value from
      sandboxctl's own environment and --env-file reads KEY=VALUE lines, so
      that secrets need not appear in sandboxctl's argv.
  env ID K=V...
      Set env vars for every later exec and exec-secure of the sandbox;
      secret-looking keys are warned about (use exec-secure's env for those).
  info ID [--json]
      Whether secure execution is available, and every protection active.
  audit ID [--json] [--limit N]
      The sandbox's secure executions, one per line (--json: JSON lines).

Options:
  -n, --namespace NS  containerd namespace (default $CONTAINERD_NAMESPACE, else "default")
  --socket PATH       call the API socket at PATH instead of the sandbox's host
                      socket; then give no ID (inside the control plane:
                      --socket ` + api.ControlPlaneSocket + `)
  -i, --stdin         send sandboxctl's stdin to CMD (read to EOF first, at most 4 MiB)
  --timeout DUR       kill CMD after DUR (e.g. 30s, 5m; a plain number is seconds)

The host socket of sandbox ID is ` + api.HostRunDir + `/NS/ID/` + api.SocketName + ` (root only).

Exit status: CMD's for exec and exec-secure, 124 if it timed out, 128+N if
signal N killed it; 125 if sandboxctl failed (usage, no such sandbox, an
API error); else 0.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// interruptSignal is the context key of the signal that ended a run.
type interruptSignal struct{}

// interruptible is ctx cancelled by SIGINT, SIGTERM or SIGHUP: the call
// ends, and the shim kills its command.
func interruptible(ctx context.Context) (context.Context, func()) {
	received := new(atomic.Int32)
	ctx, cancel := context.WithCancel(context.WithValue(ctx, interruptSignal{}, received))
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		select {
		case sig := <-signals:
			received.Store(int32(sig.(syscall.Signal)))
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(signals)
		cancel()
	}
}

// interruptedStatus is a shell's 128+N for the signal N that ended ctx.
func interruptedStatus(ctx context.Context) int {
	if received, ok := ctx.Value(interruptSignal{}).(*atomic.Int32); ok && received.Load() != 0 {
		return 128 + int(received.Load())
	}
	return exitFailure
}

// failure is an error with the exit status sandboxctl ends with.
type failure struct {
	status int
	err    error
}

func (f *failure) Error() string { return f.err.Error() }

// run is sandboxctl with its arguments and streams; it returns the exit
// status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := interruptible(context.Background())
	defer stop()
	cli := &commandLine{stdin: stdin, stdout: stdout, stderr: stderr}
	status, err := cli.run(ctx, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sandboxctl: %s\n", describe(err))
		var f *failure
		if errors.As(err, &f) {
			return f.status
		}
		return exitFailure
	}
	return status
}

// describe is what sandboxctl prints for an error: the API's message with
// its code.
func describe(err error) string {
	var f *failure
	if errors.As(err, &f) {
		return f.Error()
	}
	var connectErr *connect.Error
	if errors.As(err, &connectErr) {
		return fmt.Sprintf("%s (%s)", connectErr.Message(), connectErr.Code())
	}
	return err.Error()
}

// commandLine holds the global options and the streams.
type commandLine struct {
	namespace  string
	socketPath string
	// id is the sandbox the command names, once parsed.
	id     string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// usageError is a mistake in the arguments: it says how to get help.
func usageError(format string, args ...any) error {
	return fmt.Errorf(format+" (sandboxctl --help)", args...)
}

func (cli *commandLine) run(ctx context.Context, args []string) (int, error) {
	global := flag.NewFlagSet("sandboxctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	defaultNamespace := os.Getenv("CONTAINERD_NAMESPACE")
	if defaultNamespace == "" {
		defaultNamespace = "default"
	}
	global.StringVar(&cli.namespace, "n", defaultNamespace, "")
	global.StringVar(&cli.namespace, "namespace", defaultNamespace, "")
	global.StringVar(&cli.socketPath, "socket", "", "")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, err
		}
		return 0, usageError("%v", err)
	}
	args = global.Args()
	if len(args) == 0 {
		return 0, usageError("no command")
	}
	name, args := args[0], args[1:]
	switch name {
	case "exec":
		return cli.exec(ctx, args, false)
	case "exec-secure":
		return cli.exec(ctx, args, true)
	case "env":
		return 0, cli.env(ctx, args)
	case "info":
		return 0, cli.info(ctx, args)
	case "audit":
		return 0, cli.audit(ctx, args)
	case "help":
		return 0, flag.ErrHelp
	}
	return 0, usageError("unknown command %q", name)
}

// sandbox is the client of the sandbox the positional arguments name:
// the first is its ID unless --socket names the socket. It returns the
// arguments left.
func (cli *commandLine) sandbox(command string, positional []string) (*client.Client, []string, error) {
	if cli.socketPath != "" {
		return client.New(cli.socketPath), positional, nil
	}
	if len(positional) == 0 {
		return nil, nil, usageError("%s: no sandbox ID", command)
	}
	cli.id = positional[0]
	return client.ForSandbox(cli.namespace, cli.id), positional[1:], nil
}

// call runs an API call and turns a missing socket into a sentence about
// the sandbox.
func (cli *commandLine) call(c *client.Client, f func() error) error {
	err := f()
	if err != nil && errors.Is(err, fs.ErrNotExist) && connect.CodeOf(err) == connect.CodeUnavailable {
		if cli.socketPath != "" {
			return &failure{status: exitFailure, err: fmt.Errorf("no API socket at %s", cli.socketPath)}
		}
		return &failure{status: exitFailure, err: fmt.Errorf("no sandbox %q in namespace %q: no API socket at %s (no such container, or it does not run under the io.sandbox.v1 runtime)", cli.id, cli.namespace, c.SocketPath())}
	}
	return err
}
