package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/sandbox-shim/sandbox-shim/client"
)

// exec runs exec and exec-secure and returns the command's exit status.
func (cli *commandLine) exec(ctx context.Context, args []string, secure bool) (int, error) {
	name := "exec"
	if secure {
		name = "exec-secure"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var (
		cwd           string
		timeout       durationFlag
		sendStdin     bool
		allowFallback bool
		env           envSources
	)
	fs.StringVar(&cwd, "cwd", "", "")
	fs.Var(&timeout, "timeout", "")
	fs.BoolVar(&sendStdin, "i", false, "")
	fs.BoolVar(&sendStdin, "stdin", false, "")
	fs.Var(envFlag{sources: &env}, "env", "")
	if secure {
		fs.Var(envFlag{sources: &env, file: true}, "env-file", "")
		fs.BoolVar(&allowFallback, "allow-insecure-fallback", false, "")
	}
	p, err := parseArgs(fs, args)
	if err != nil {
		return 0, err
	}
	c, rest, err := cli.sandbox(name, p.positional)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if len(rest) > 0 {
		return 0, usageError("%s: put the command after --, as in sandboxctl %s ID -- ls -l", name, name)
	}
	if len(p.command) == 0 {
		return 0, usageError("%s: no command after --", name)
	}
	callEnv, err := env.resolve(processEnvironment)
	if err != nil {
		return 0, err
	}
	var stdin io.Reader
	if sendStdin {
		stdin = cli.stdin
	}
	cmd := client.Argv(p.command...)
	var result *client.Result
	err = cli.call(c, func() error {
		var err error
		if secure {
			result, err = c.ExecSecure(ctx, cmd, client.SecureOptions{
				Env: callEnv, Cwd: cwd, Timeout: timeout.value, Stdin: stdin,
				Stdout: cli.stdout, Stderr: cli.stderr, AllowInsecureFallback: allowFallback,
			})
		} else {
			result, err = c.Exec(ctx, cmd, client.ExecOptions{
				Env: callEnv, Cwd: cwd, Timeout: timeout.value, Stdin: stdin,
				Stdout: cli.stdout, Stderr: cli.stderr,
			})
		}
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, &failure{status: interruptedStatus(ctx), err: fmt.Errorf("%s: interrupted: the command was killed", name)}
		}
		return 0, err
	}
	for _, warning := range result.Warnings {
		fmt.Fprintf(cli.stderr, "sandboxctl: warning: %s\n", warning)
	}
	return exitStatus(result, cli.stderr), nil
}

// exitStatus is sandboxctl's exit for a command's result: timeout(1)'s
// 124 on timeout, a shell's 128+N for signal N, else the exit code.
func exitStatus(result *client.Result, stderr io.Writer) int {
	switch {
	case result.TimedOut:
		fmt.Fprintf(stderr, "sandboxctl: timed out after %v: the command was killed\n", result.Duration.Round(time.Millisecond))
		return exitTimedOut
	case result.Signal != 0:
		return 128 + result.Signal
	}
	return result.ExitCode
}
