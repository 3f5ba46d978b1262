// Package apiserver serves one sandbox's API (api/sandbox/v1, Connect over
// HTTP on unix path sockets) over a Backend it declares: on the host at
// api.HostSocketPath, root only, and in a directory bind-mounted into the
// control plane alone, owned by the control plane's user. Never an
// abstract socket: those are reachable from anywhere in the network
// namespace, the workspace included.
//
// Entry point: Serve, then Server.Close.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/api/sandbox/v1/sandboxv1connect"
)

// Backend is the sandbox the API operates on. Errors carry containerd's
// errdefs kinds; they become connect codes. No error may hold a secret.
type Backend interface {
	// Exec runs a command in the workspace, writing its output to the
	// call's writers as it comes, until it exits or ctx ends (the command is
	// then killed).
	Exec(ctx context.Context, call api.ExecCall) (*sandboxv1.Exit, error)
	// ExecSecure runs a command in a secure container of its own.
	ExecSecure(ctx context.Context, call api.SecureExecCall) (*sandboxv1.Exit, error)
	SetEnvVars(ctx context.Context, req *sandboxv1.SetEnvVarsRequest) (*sandboxv1.SetEnvVarsResponse, error)
	Info(ctx context.Context, caller sandboxv1.Caller) (*sandboxv1.InfoResponse, error)
	// Audit returns the most recent limit records (0: all kept).
	Audit(ctx context.Context, limit int) ([]*sandboxv1.AuditRecord, error)
}

// Config is one sandbox's API.
type Config struct {
	Namespace, SandboxID string
	Backend              Backend
	// HostDir is the sandbox's directory on the host (0700 root), holding
	// the control plane's directory (api.ControlPlaneDirName, 0700, the
	// control plane's user's, bind-mounted at api.ControlPlaneSocketDir).
	// The sandbox makes both before its init starts; "" is
	// api.HostDir(Namespace, SandboxID).
	HostDir string
	// ControlPlaneUID and ControlPlaneGID own the control plane's socket.
	ControlPlaneUID, ControlPlaneGID int
}

// Server serves one sandbox's API until Close.
type Server struct {
	cfg     Config
	servers []*http.Server
	sockets []string
	// cancel ends every call in flight: their commands are killed.
	cancel    context.CancelFunc
	served    sync.WaitGroup
	closeOnce sync.Once
}

// shutdownTimeout bounds the wait for calls in flight at Close, once
// cancelled.
const shutdownTimeout = 5 * time.Second

// Serve listens on both sockets and serves the API on them.
func Serve(cfg Config) (_ *Server, retErr error) {
	if cfg.HostDir == "" {
		cfg.HostDir = api.HostDir(cfg.Namespace, cfg.SandboxID)
	}
	fail := func(err error) error { return fmt.Errorf("sandbox %s: API: %w", cfg.SandboxID, err) }
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, cancel: cancel}
	defer func() {
		if retErr != nil {
			s.Close()
		}
	}()
	listeners := []struct {
		path     string
		caller   sandboxv1.Caller
		uid, gid int
	}{
		{filepath.Join(cfg.HostDir, api.SocketName), sandboxv1.Caller_CALLER_HOST, 0, 0},
		{filepath.Join(cfg.HostDir, api.ControlPlaneDirName, api.SocketName), sandboxv1.Caller_CALLER_CONTROL_PLANE, cfg.ControlPlaneUID, cfg.ControlPlaneGID},
	}
	service := &service{backend: cfg.Backend, sandboxID: cfg.SandboxID}
	path, handler := sandboxv1connect.NewSandboxServiceHandler(service, handlerOptions(cfg.SandboxID)...)
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	for _, l := range listeners {
		ln, err := listen(l.path, l.uid, l.gid)
		if err != nil {
			return nil, fail(err)
		}
		s.sockets = append(s.sockets, l.path)
		caller := l.caller
		var protocols http.Protocols
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true)
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mux.ServeHTTP(w, r.WithContext(withCaller(r.Context(), caller)))
			}),
			BaseContext:       func(net.Listener) context.Context { return ctx },
			Protocols:         &protocols,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          nil,
		}
		s.servers = append(s.servers, srv)
		s.served.Add(1)
		go func() {
			defer s.served.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.L.WithError(err).WithField("id", cfg.SandboxID).Errorf("sandbox API on %s stopped", l.path)
			}
		}()
	}
	return s, nil
}

func handlerOptions(sandboxID string) []connect.HandlerOption {
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(MaxRequestBytes),
		// No gzip: on a local socket it only costs CPU, and a compressed
		// request would leave a copy of its secrets the codec cannot clear.
		connect.WithCompression("gzip", nil, nil),
		// A panic in one call fails that call, not the shim and its other
		// sandboxes. The panic value may hold a request: not logged.
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, _ any) error {
			log.G(ctx).WithField("id", sandboxID).Errorf("sandbox API: %s panicked", spec.Procedure)
			return connect.NewError(connect.CodeInternal, errors.New("internal error in the shim"))
		}),
	}
	for _, c := range codecs {
		opts = append(opts, connect.WithCodec(c))
	}
	return opts
}

// dialTimeout bounds the check whether an existing socket is served.
const dialTimeout = time.Second

// listen binds a unix path socket at path, mode 0600 owned by uid:gid. A
// socket file a dead shim left is replaced; one something still answers
// on is not.
func listen(path string, uid, gid int) (net.Listener, error) {
	addr, release, err := socketAddress(path)
	if err != nil {
		return nil, err
	}
	defer release()
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it", path)
		}
		conn, err := net.DialTimeout("unix", addr, dialTimeout)
		if err == nil {
			conn.Close()
			return nil, fmt.Errorf("%s is served by another process (a shim of the same sandbox still running?)", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s exists and its server cannot be told dead: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if addr != path {
		// Its name outlives the directory descriptor: Close removes path.
		ln.SetUnlinkOnClose(false)
	}
	// The directory is 0700 already: nobody else reaches the socket in the
	// moment before these.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Chown(path, uid, gid); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// maxSocketPath is the longest path a unix socket address holds (108
// bytes with its NUL).
const maxSocketPath = 107

// socketAddress is a name binding or dialing path can use: path itself,
// or, when it is too long for a socket address (a CRI container's 64-hex
// id under a long namespace), its base name under /proc/self/fd/N of its
// directory, opened here until release.
func socketAddress(path string) (string, func(), error) {
	if len(path) <= maxSocketPath {
		return path, func() {}, nil
	}
	dir, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("socket directory of %s: %w", path, err)
	}
	addr := fmt.Sprintf("/proc/self/fd/%d/%s", dir, filepath.Base(path))
	if len(addr) > maxSocketPath {
		_ = unix.Close(dir)
		return "", nil, fmt.Errorf("socket name %s too long even through its directory", filepath.Base(path))
	}
	return addr, func() { _ = unix.Close(dir) }, nil
}

// Close cancels every call in flight (their commands are killed), stops
// serving and removes both sockets. HostDir stays: the sandbox removes it
// once its audit trail is closed.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		for _, srv := range s.servers {
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
		}
		s.served.Wait()
		for _, p := range s.sockets {
			// The listener unlinks it on close; a failed Serve may not have.
			_ = os.Remove(p)
		}
	})
}

type callerKey struct{}

func withCaller(ctx context.Context, c sandboxv1.Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// callerOf is who called: known from the socket the call came in on.
func callerOf(ctx context.Context) sandboxv1.Caller {
	c, _ := ctx.Value(callerKey{}).(sandboxv1.Caller)
	return c
}
