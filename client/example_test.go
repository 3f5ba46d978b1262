package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"connectrpc.com/connect"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/client"
)

// A platform on the host runs a command in sandbox "agent" of containerd
// namespace "default", streaming its output.
func ExampleClient_Exec() {
	ctx := context.Background()
	sandbox := client.ForSandbox("default", "agent")
	defer sandbox.Close()

	result, err := sandbox.Exec(ctx, client.Shell("npm install"), client.ExecOptions{
		Cwd:     "/app",
		Timeout: 5 * time.Minute,
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
	})
	if err != nil {
		log.Fatal(err) // the call failed: connect.CodeOf(err) says how
	}
	if result.TimedOut {
		log.Fatalf("npm install timed out after %v", result.Duration)
	}
	fmt.Println("exit code", result.ExitCode)
}

// A deploy step gets a cloud key that the code running in the workspace
// afterwards never sees.
func ExampleClient_ExecSecure() {
	ctx := context.Background()
	sandbox := client.ForSandbox("default", "agent")
	defer sandbox.Close()

	result, err := sandbox.ExecSecure(ctx, client.Argv("./deploy.sh", "--prod"), client.SecureOptions{
		Env:     map[string]string{"AWS_SECRET_ACCESS_KEY": os.Getenv("AWS_SECRET_ACCESS_KEY")},
		Timeout: time.Minute,
	})
	if connect.CodeOf(err) == connect.CodeFailedPrecondition {
		log.Fatalf("no secure execution in this sandbox, not deploying: %v", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("deploy (call %s) exited %d: %s", result.CallID, result.ExitCode, result.Stdout)
}

// The control plane, inside the sandbox, calls the API at its own socket.
func ExampleNew() {
	ctx := context.Background()
	sandbox := client.New(api.ControlPlaneSocket)
	defer sandbox.Close()

	ok, err := sandbox.HasSecureExecution(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("secure execution:", ok)
}

// Env vars for every later call: secret-looking keys come back as
// warnings.
func ExampleClient_SetEnvVars() {
	ctx := context.Background()
	sandbox := client.ForSandbox("default", "agent")
	defer sandbox.Close()

	warnings, err := sandbox.SetEnvVars(ctx, map[string]string{"NODE_ENV": "production", "API_TOKEN": "t0k3n"})
	if err != nil {
		log.Fatal(err)
	}
	for _, w := range warnings {
		log.Println("warning:", w) // API_TOKEN looks like a secret: use ExecSecure's env
	}
}

// Every protection of the sandbox, and why secure execution is off where
// it is.
func ExampleClient_Info() {
	ctx := context.Background()
	sandbox := client.ForSandbox("default", "agent")
	defer sandbox.Close()

	info, err := sandbox.Info(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if !info.GetHasSecureExecution() {
		fmt.Println("secure execution unavailable:", info.GetSecureExecutionUnavailable())
	}
	for _, p := range info.GetProtections() {
		fmt.Println(p.GetName(), p.GetActive(), p.GetParameters())
	}
}

// The last ten secure executions.
func ExampleClient_Audit() {
	ctx := context.Background()
	sandbox := client.ForSandbox("default", "agent")
	defer sandbox.Close()

	records, err := sandbox.Audit(ctx, 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range records {
		fmt.Println(r.GetTime().AsTime(), r.GetCallId(), r.GetArgv(), r.GetEnvKeys(), r.GetExitCode())
	}
}
