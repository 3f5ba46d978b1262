// Package api holds what a sandbox's users and tools share with the shim:
// annotation names now, the sandbox API's wire types later. It imports no
// package of this module, so a client never pulls in libcontainer or the
// shim's internals.
package api

// Annotations on the OCI bundle (containerd labels, CRI pod and container
// annotations) that configure a sandbox. An invalid value fails task
// creation with an error naming the annotation and the value.
const (
	// AnnotationUser is the uid[:gid] of all user code; root is refused.
	AnnotationUser = "io.sandbox.user"
	// AnnotationPidsLimit caps the workspace's processes.
	AnnotationPidsLimit = "io.sandbox.user.pids-limit"
	// AnnotationMemoryLimit caps the workspace's memory (bytes, or 512m).
	AnnotationMemoryLimit = "io.sandbox.user.memory-limit"
	// AnnotationEnv names env keys (comma-separated) an exec may inherit
	// from the control plane's env; the rest of that env is dropped.
	AnnotationEnv = "io.sandbox.user.env"
	// AnnotationMounts names bundle mount destinations (comma-separated,
	// absolute) the workspace keeps besides the kernel filesystems.
	AnnotationMounts = "io.sandbox.user.mounts"
	// AnnotationReservedPorts lists the control plane's TCP ports
	// (comma-separated, 1-65535; empty reserves none): listening sockets made
	// before the sandbox runs, held by the shim, handed to the control plane
	// as LISTEN_FDS, never bindable by user code.
	AnnotationReservedPorts = "io.sandbox.reserved-ports"
	// AnnotationReservedPortsUserConnect is "allow" to let user code
	// connect to the reserved ports; the default, "deny", refuses it.
	AnnotationReservedPortsUserConnect = "io.sandbox.reserved-ports.user-connect"
)

// DefaultReservedPorts are reserved when the annotation is absent.
const DefaultReservedPorts = "8080,8888"

// Annotations on a task Update (containerd's UpdateTaskRequest, the Go
// client's WithAnnotations), besides the resources it carries.
const (
	// AnnotationMemoryLimit on an Update sets the workspace's memory limit
	// (at most the sandbox's): the way to raise it when it was annotated.
	//
	// AnnotationWorkspaceReset ("true") kills the workspace, every exec in
	// it, and what it left in memory (its /tmp, /dev/shm, IPC objects),
	// and builds a fresh one; the control plane is untouched.
	AnnotationWorkspaceReset = "io.sandbox.workspace.reset"
)

// Defaults of the workspace user when neither the annotation nor a non-root
// image user names one.
const (
	DefaultUID = 1000
	DefaultGID = 1000
)
