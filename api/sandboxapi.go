package api

import (
	"io"
	"path/filepath"

	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
)

// Where the sandbox API is served. On the host, per sandbox, a root-only
// socket at HostSocketPath; inside the control plane (and nowhere else) a
// socket owned by the control plane's uid at ControlPlaneSocket.
const (
	// HostRunDir holds one directory per containerd namespace and sandbox.
	HostRunDir = "/run/io.sandbox"
	// SocketName is the API socket's name in a sandbox's directories.
	SocketName = "api.sock"
	// ControlPlaneSocketDir is bind-mounted into the control plane.
	ControlPlaneSocketDir = "/run/sandbox"
	// ControlPlaneSocket is the API socket as the control plane sees it.
	ControlPlaneSocket = ControlPlaneSocketDir + "/" + SocketName
)

// HostDir is a sandbox's directory on the host: its API socket and its
// audit file.
func HostDir(namespace, id string) string { return filepath.Join(HostRunDir, namespace, id) }

// HostSocketPath is a sandbox's API socket on the host.
func HostSocketPath(namespace, id string) string {
	return filepath.Join(HostDir(namespace, id), SocketName)
}

// ControlPlaneDirName is the directory in a sandbox's HostDir that holds
// the control plane's API socket; it is bind-mounted at
// ControlPlaneSocketDir into the control plane, and nowhere else.
const ControlPlaneDirName = "control-plane"

// ControlPlaneHostDir is that directory on the host.
func ControlPlaneHostDir(namespace, id string) string {
	return filepath.Join(HostDir(namespace, id), ControlPlaneDirName)
}

// Annotations that configure secure execution.
const (
	// AnnotationSecureExec is "disabled" to turn execSecure off for the
	// sandbox: hasSecureExecution is then false and execSecure fails
	// unless a call allows the insecure fallback. "enabled" (the default)
	// keeps it.
	AnnotationSecureExec = "io.sandbox.secure-exec"
	// AnnotationSecureExecPool is how many secure containers are kept
	// built ahead (0-8, default 2).
	AnnotationSecureExecPool = "io.sandbox.secure-exec.pool-size"
)

// ExecCall is one API Exec as the API server hands it to a sandbox.
type ExecCall struct {
	Request *sandboxv1.ExecRequest
	Caller  sandboxv1.Caller
	// Stdout and Stderr receive the command's output as it comes.
	Stdout, Stderr io.Writer
}

// SecureExecCall is one API ExecSecure as the API server hands it to a
// sandbox. The request's env values are cleared once the command has them.
type SecureExecCall struct {
	Request        *sandboxv1.ExecSecureRequest
	Caller         sandboxv1.Caller
	Stdout, Stderr io.Writer
}
