package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/errdefs"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/api/sandbox/v1/sandboxv1connect"
)

// backend is a Backend for the server's own tests: it echoes what it got.
type backend struct {
	execErr error
	// cancelled is closed when an Exec's context ended.
	cancelled chan struct{}
	// secureEnv is the last ExecSecure's env, as the backend got it.
	secureEnv map[string][]byte
}

func (b *backend) Exec(ctx context.Context, call api.ExecCall) (*sandboxv1.Exit, error) {
	if b.execErr != nil {
		return nil, b.execErr
	}
	if call.Request.Command == "block" {
		fmt.Fprint(call.Stdout, "blocking")
		<-ctx.Done()
		close(b.cancelled)
		return nil, ctx.Err()
	}
	for _, a := range call.Request.Argv {
		fmt.Fprint(call.Stdout, a)
		fmt.Fprint(call.Stderr, "e"+a)
	}
	return &sandboxv1.Exit{CallId: "c1", ExitCode: 7}, nil
}

func (b *backend) ExecSecure(ctx context.Context, call api.SecureExecCall) (*sandboxv1.Exit, error) {
	b.secureEnv = call.Request.Env
	return &sandboxv1.Exit{CallId: "s1", Isolated: true}, nil
}

func (b *backend) SetEnvVars(ctx context.Context, req *sandboxv1.SetEnvVarsRequest) (*sandboxv1.SetEnvVarsResponse, error) {
	return &sandboxv1.SetEnvVarsResponse{Keys: []string{"A"}}, nil
}

func (b *backend) Info(ctx context.Context, caller sandboxv1.Caller) (*sandboxv1.InfoResponse, error) {
	return &sandboxv1.InfoResponse{SandboxId: "sb"}, nil
}

func (b *backend) Audit(ctx context.Context, limit int) ([]*sandboxv1.AuditRecord, error) {
	return []*sandboxv1.AuditRecord{{CallId: fmt.Sprint(limit)}}, nil
}

func client(path string) sandboxv1connect.SandboxServiceClient {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	return sandboxv1connect.NewSandboxServiceClient(hc, "http://sandbox")
}

func serve(t *testing.T, b Backend) (*Server, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the sockets are chowned")
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, api.ControlPlaneDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := Serve(Config{SandboxID: "sb", HostDir: dir, Backend: b, ControlPlaneUID: 4321, ControlPlaneGID: 4322})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, dir
}

func TestServeSocketsAndCallers(t *testing.T) {
	b := &backend{cancelled: make(chan struct{})}
	s, dir := serve(t, b)
	host := filepath.Join(dir, api.SocketName)
	cp := filepath.Join(dir, api.ControlPlaneDirName, api.SocketName)
	for path, owner := range map[string]uint32{host: 0, cp: 4321} {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != os.ModeSocket|0o600 || fi.Sys().(*syscall.Stat_t).Uid != owner {
			t.Errorf("%s: %v owned by %d", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
		}
	}
	ctx := context.Background()
	for path, want := range map[string]sandboxv1.Caller{host: sandboxv1.Caller_CALLER_HOST, cp: sandboxv1.Caller_CALLER_CONTROL_PLANE} {
		info, err := client(path).Info(ctx, connect.NewRequest(&sandboxv1.InfoRequest{}))
		if err != nil || info.Msg.Caller != want {
			t.Errorf("%s: %v %v", path, info, err)
		}
	}
	// Streams: output in order, then the Exit.
	stream, err := client(host).Exec(ctx, connect.NewRequest(&sandboxv1.ExecRequest{Argv: []string{"a", "b"}}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for stream.Receive() {
		switch e := stream.Msg().Event.(type) {
		case *sandboxv1.ExecResponse_Stdout:
			got = append(got, "o:"+string(e.Stdout))
		case *sandboxv1.ExecResponse_Stderr:
			got = append(got, "e:"+string(e.Stderr))
		case *sandboxv1.ExecResponse_Exit:
			got = append(got, fmt.Sprint("exit:", e.Exit.ExitCode))
		}
	}
	if strings.Join(got, " ") != "o:a e:ea o:b e:eb exit:7" || stream.Err() != nil {
		t.Errorf("stream %q %v", got, stream.Err())
	}
	// Close cancels a call in flight and removes the sockets.
	stream, err = client(host).Exec(ctx, connect.NewRequest(&sandboxv1.ExecRequest{Command: "block"}))
	if err != nil || !stream.Receive() {
		t.Fatalf("block: %v", err)
	}
	s.Close()
	select {
	case <-b.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not cancel the call in flight")
	}
	for _, p := range []string{host, cp} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Close: %v", p, err)
		}
	}
}

func TestServeStaleAndLiveSockets(t *testing.T) {
	s, dir := serve(t, &backend{})
	// A live server on the sockets: a second one is refused.
	if _, err := Serve(Config{SandboxID: "sb", HostDir: dir, Backend: &backend{}}); err == nil || !strings.Contains(err.Error(), "served by another process") {
		t.Errorf("second server: %v", err)
	}
	s.Close()
	// A socket file nobody serves (a dead shim's) is replaced.
	path := filepath.Join(dir, api.SocketName)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	s2, err := Serve(Config{SandboxID: "sb", HostDir: dir, Backend: &backend{}})
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	s2.Close()
	// Not a socket: left alone.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(Config{SandboxID: "sb", HostDir: dir, Backend: &backend{}}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
}

func TestErrorCodes(t *testing.T) {
	b := &backend{}
	_, dir := serve(t, b)
	c := client(filepath.Join(dir, api.SocketName))
	for kind, code := range map[error]connect.Code{
		errdefs.ErrInvalidArgument:    connect.CodeInvalidArgument,
		errdefs.ErrNotFound:           connect.CodeNotFound,
		errdefs.ErrFailedPrecondition: connect.CodeFailedPrecondition,
		errdefs.ErrUnavailable:        connect.CodeUnavailable,
		context.DeadlineExceeded:      connect.CodeDeadlineExceeded,
		errors.New("something broke"): connect.CodeInternal,
	} {
		b.execErr = fmt.Errorf("sandbox sb: exec: %w: because", kind)
		stream, err := c.Exec(context.Background(), connect.NewRequest(&sandboxv1.ExecRequest{Argv: []string{"x"}}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
		}
		if connect.CodeOf(err) != code || !strings.Contains(err.Error(), "because") {
			t.Errorf("%v: %v", kind, err)
		}
	}
}

// TestCodec: the request bytes are cleared once decoded; an error never
// quotes the request.
func TestCodec(t *testing.T) {
	secret := "hunter2-secret"
	for _, c := range codecs {
		var data []byte
		if c.json {
			data = []byte(`{"env": {"K": "` + "aHVudGVyMi1zZWNyZXQ=" + `"}, "argv": ["x"]}`)
		} else {
			b, err := c.Marshal(&sandboxv1.ExecSecureRequest{Argv: []string{"x"}, Env: map[string][]byte{"K": []byte(secret)}})
			if err != nil {
				t.Fatal(err)
			}
			data = b
		}
		var req sandboxv1.ExecSecureRequest
		if err := c.Unmarshal(data, &req); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(req.Env["K"]) != secret {
			t.Errorf("%s: decoded %q", c.name, req.Env["K"])
		}
		if !bytes.Equal(data, make([]byte, len(data))) {
			t.Errorf("%s: request bytes not cleared", c.name)
		}
		bad := []byte(`{"env": {"K": ` + secret + `}}`)
		if !c.json {
			bad = []byte("\x0a\xff\xff\xff" + secret)
		}
		err := c.Unmarshal(bad, &req)
		if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "aHVudGVy") {
			t.Errorf("%s: malformed: %v", c.name, err)
		}
	}
}

// TestExecSecureClears: whatever the backend did, the request's env
// values are cleared once the call returns.
func TestExecSecureClears(t *testing.T) {
	b := &backend{}
	_, dir := serve(t, b)
	stream, err := client(filepath.Join(dir, api.SocketName)).ExecSecure(context.Background(),
		connect.NewRequest(&sandboxv1.ExecSecureRequest{Argv: []string{"x"}, Env: map[string][]byte{"K": []byte("value")}}))
	if err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
	}
	if stream.Err() != nil {
		t.Fatal(stream.Err())
	}
	if v := b.secureEnv["K"]; len(v) != 5 || !bytes.Equal(v, make([]byte, 5)) {
		t.Errorf("env value after the call: %q", v)
	}
}

func TestRequestLimit(t *testing.T) {
	_, dir := serve(t, &backend{})
	c := client(filepath.Join(dir, api.SocketName))
	_, err := c.SetEnvVars(context.Background(), connect.NewRequest(&sandboxv1.SetEnvVarsRequest{Vars: map[string]string{"A": strings.Repeat("x", MaxRequestBytes)}}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("oversized request: %v", err)
	}
}

// TestNoCompression: a gzip-compressed request is refused (it would leave
// a compressed copy of its secrets), and answers are never compressed.
func TestNoCompression(t *testing.T) {
	_, dir := serve(t, &backend{})
	host := filepath.Join(dir, api.SocketName)
	c := sandboxv1connect.NewSandboxServiceClient(&http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", host)
		},
	}}, "http://sandbox", connect.WithSendGzip())
	_, err := c.SetEnvVars(context.Background(), connect.NewRequest(&sandboxv1.SetEnvVarsRequest{Vars: map[string]string{"A": strings.Repeat("x", 4096)}}))
	if connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Fatalf("gzip request: %v, want unimplemented", err)
	}
}

// TestListenLongPath: a socket path longer than a socket address holds
// (a CRI container's 64-hex id under /run/io.sandbox/<ns>/) is bound
// through its directory, served, and found stale like any other.
func TestListenLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 64), strings.Repeat("e", 40))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "api.sock")
	if len(path) <= maxSocketPath {
		t.Fatalf("path of %d bytes is not too long", len(path))
	}
	ln, err := listen(path, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket at the long path: %v %v", fi, err)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	addr, release, err := socketAddress(path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", addr)
	release()
	if err != nil {
		t.Fatalf("dial through the directory: %v", err)
	}
	b, _ := io.ReadAll(conn)
	conn.Close()
	if string(b) != "hi" {
		t.Errorf("read %q", b)
	}
	if _, err := listen(path, os.Getuid(), os.Getgid()); err == nil || !strings.Contains(err.Error(), "served by another process") {
		t.Errorf("second listen on a served socket: %v", err)
	}
	ln.Close()
	// Closed: the file stays (its listener cannot unlink a name through a
	// closed descriptor) and is found stale, replaced.
	ln2, err := listen(path, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatalf("listen again after close: %v", err)
	}
	ln2.Close()
}
