// Package client is the Go client of the sandbox API, the calls a platform
// (on the host) or a sandbox's control plane (inside it) makes:
//
//	exec(command, opts)                       Client.Exec
//	execSecure(command, {env, isolated, ...}) Client.ExecSecure
//	setEnvVars(vars)                          Client.SetEnvVars
//	hasSecureExecution()                      Client.HasSecureExecution
//
// plus Info (every protection active in the sandbox) and Audit (one record
// per ExecSecure call).
//
// The API is served by the shim per sandbox on a unix path socket: on the
// host at api.HostSocketPath(namespace, id) (root only; ForSandbox), and
// inside the control plane, and nowhere else, at api.ControlPlaneSocket
// (New(api.ControlPlaneSocket)). The wire protocol is Connect over HTTP/1.1
// (docs/api.md), so curl can make the same calls.
//
// A command's non-zero exit is not an error: it is Result.ExitCode. Every
// error this package returns is a *connect.Error: connect.CodeOf tells
// InvalidArgument (a bad command, env or option, isolated=false without
// the insecure fallback), FailedPrecondition (secure execution
// unavailable, a command that did not start), Unavailable (no sandbox at
// that socket) and the rest apart (docs/api.md lists them).
// A missing socket also matches errors.Is(err, fs.ErrNotExist).
package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/v2/pkg/identifiers"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/api/sandbox/v1/sandboxv1connect"
)

// baseURL is what the HTTP requests name: the socket is the address, so
// the host is a placeholder that never reaches DNS.
const baseURL = "http://sandbox"

// Client calls one sandbox's API. It is safe for concurrent use; Close
// releases its idle connections.
type Client struct {
	socketPath string
	transport  *http.Transport
	rpc        sandboxv1connect.SandboxServiceClient
	// invalid fails every call: ForSandbox got a namespace or id that
	// containerd would refuse (and that could name another path).
	invalid error
}

// New returns a client of the API served at socketPath: a host socket
// (api.HostSocketPath) or, inside the control plane, api.ControlPlaneSocket.
// It does not connect yet: the first call does.
func New(socketPath string) *Client {
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			conn, err := dialer.DialContext(ctx, "unix", socketPath)
			if err != nil {
				return nil, dialError(socketPath, err)
			}
			return conn, nil
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		// Output arrives as the command writes it: nothing buffers it.
		DisableCompression: true,
	}
	return &Client{
		socketPath: socketPath,
		transport:  transport,
		rpc:        sandboxv1connect.NewSandboxServiceClient(&http.Client{Transport: transport}, baseURL),
	}
}

// ForSandbox returns a client of the host socket of sandbox id in
// containerd namespace namespace (api.HostSocketPath). Only root can
// reach it. A namespace or id containerd would refuse fails every call
// with connect.CodeInvalidArgument.
func ForSandbox(namespace, id string) *Client {
	c := New(api.HostSocketPath(namespace, id))
	if err := identifiers.Validate(namespace); err != nil {
		c.invalid = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("namespace: %w", err))
	} else if err := identifiers.Validate(id); err != nil {
		c.invalid = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("sandbox id: %w", err))
	}
	return c
}

// SocketPath is the socket this client calls.
func (c *Client) SocketPath() string { return c.socketPath }

// Close releases the client's idle connections. Calls in flight go on.
func (c *Client) Close() error {
	c.transport.CloseIdleConnections()
	return nil
}

// dialError says what a failed connection to the socket most likely means.
func dialError(socketPath string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("no sandbox API socket at %s (no such sandbox, or it does not run under the io.sandbox.v1 runtime): %w", socketPath, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("sandbox API socket %s: permission denied (the host socket is root's only): %w", socketPath, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("sandbox API socket %s: nothing serves it (the sandbox has stopped): %w", socketPath, err)
	}
	return fmt.Errorf("sandbox API socket %s: %w", socketPath, err)
}

// SetEnvVars is the proposal's setEnvVars(vars): it sets (or replaces)
// env vars for every later Exec and ExecSecure call of the sandbox. It
// returns one warning per secret-looking key (KEY, SECRET, TOKEN,
// PASSWORD, ...), never echoing the value: such values belong in an
// ExecSecure call's env, since every exec of user code sees these.
func (c *Client) SetEnvVars(ctx context.Context, vars map[string]string) (warnings []string, err error) {
	if c.invalid != nil {
		return nil, c.invalid
	}
	resp, err := c.rpc.SetEnvVars(ctx, connect.NewRequest(&sandboxv1.SetEnvVarsRequest{Vars: vars}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetWarnings(), nil
}

// HasSecureExecution is the proposal's hasSecureExecution(): whether
// ExecSecure can run commands in a container of their own here. When it
// is false, Info's SecureExecutionUnavailable says why, and ExecSecure
// fails (FailedPrecondition) unless a call allows the insecure fallback.
func (c *Client) HasSecureExecution(ctx context.Context) (bool, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return false, err
	}
	return info.GetHasSecureExecution(), nil
}

// Info returns the sandbox's id and namespace, whether secure execution
// is available (and why not), every protection active in it with its
// parameters, the keys of its env vars and who the caller is (host or
// control plane).
func (c *Client) Info(ctx context.Context) (*sandboxv1.InfoResponse, error) {
	if c.invalid != nil {
		return nil, c.invalid
	}
	resp, err := c.rpc.Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// Audit returns the sandbox's audit trail, oldest first: one record per
// ExecSecure call (argv with the call's env values redacted, env keys,
// cwd, exit, duration, caller). limit > 0 returns the most recent limit
// records only; 0 returns all that are kept.
func (c *Client) Audit(ctx context.Context, limit int) ([]*sandboxv1.AuditRecord, error) {
	if c.invalid != nil {
		return nil, c.invalid
	}
	if limit < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("audit limit %d: must be 0 (all) or more", limit))
	}
	resp, err := c.rpc.Audit(ctx, connect.NewRequest(&sandboxv1.AuditRequest{Limit: uint32(min(limit, math.MaxUint32))}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetRecords(), nil
}
