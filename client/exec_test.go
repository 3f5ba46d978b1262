package client

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
)

func TestCommandValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  Command
		want string // "" when valid
	}{
		{"argv", Argv("echo", "hi"), ""},
		{"shell", Shell("echo hi | wc -c"), ""},
		{"neither", Command{}, "empty command"},
		{"empty argv", Argv(), "empty command"},
		{"empty argv0", Argv("", "x"), "Argv[0] is empty"},
		{"both", Command{Argv: []string{"echo"}, Shell: "echo"}, "both Argv and Shell"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cmd.validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// A bad command fails before any connection: the socket does not exist.
func TestExecRefusesBadInputBeforeCalling(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	defer c.Close()
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"exec both": func() error {
			_, err := c.Exec(ctx, Command{Argv: []string{"a"}, Shell: "a"}, ExecOptions{})
			return err
		},
		"exec timeout": func() error { _, err := c.Exec(ctx, Argv("true"), ExecOptions{Timeout: -time.Second}); return err },
		"secure empty": func() error { _, err := c.ExecSecure(ctx, Command{}, SecureOptions{}); return err },
		"secure stdin": func() error {
			_, err := c.ExecSecure(ctx, Argv("cat"), SecureOptions{Stdin: bytes.NewReader(make([]byte, MaxStdin+1))})
			return err
		},
		"negative limit": func() error { _, err := c.Audit(ctx, -1); return err },
	} {
		err := call()
		if got := connect.CodeOf(err); got != connect.CodeInvalidArgument {
			t.Errorf("%s: code %v (%v), want invalid_argument", name, got, err)
		}
		if errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: dialled the socket before refusing: %v", name, err)
		}
	}
}

func TestReadStdinBound(t *testing.T) {
	b, err := readStdin(bytes.NewReader(make([]byte, MaxStdin)))
	if err != nil || len(b) != MaxStdin {
		t.Fatalf("MaxStdin bytes: len %d, err %v", len(b), err)
	}
	if _, err := readStdin(bytes.NewReader(make([]byte, MaxStdin+1))); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("MaxStdin+1 bytes: err %v, want a refusal", err)
	}
	if b, err := readStdin(nil); b != nil || err != nil {
		t.Fatalf("nil stdin: %q, %v", b, err)
	}
}

// A missing socket is Unavailable, names the path and matches fs.ErrNotExist.
func TestMissingSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	c := New(path)
	defer c.Close()
	_, err := c.Info(context.Background())
	if connect.CodeOf(err) != connect.CodeUnavailable || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Info on a missing socket: %v (code %v)", err, connect.CodeOf(err))
	}
	if !strings.Contains(err.Error(), "no such sandbox") {
		t.Fatalf("error does not say what a missing socket means: %v", err)
	}
}

func TestForSandboxPath(t *testing.T) {
	if got, want := ForSandbox("k8s.io", "abc").SocketPath(), "/run/io.sandbox/k8s.io/abc/api.sock"; got != want {
		t.Fatalf("ForSandbox socket %q, want %q", got, want)
	}
}

func TestForSandboxRefusesBadIdentifiers(t *testing.T) {
	for _, ids := range [][2]string{{"..", "x"}, {"default", "../../etc"}, {"default", ""}, {"", "x"}, {"default", "a/b"}} {
		c := ForSandbox(ids[0], ids[1])
		_, err := c.Info(context.Background())
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("ForSandbox(%q, %q).Info: %v, want invalid_argument", ids[0], ids[1], err)
		}
		if _, err := c.Exec(context.Background(), Argv("true"), ExecOptions{}); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("ForSandbox(%q, %q).Exec: %v, want invalid_argument", ids[0], ids[1], err)
		}
	}
}

func TestResultFromExit(t *testing.T) {
	got := resultFromExit(&sandboxv1.Exit{CallId: "c1", ExitCode: 3, Duration: durationpb.New(1500 * time.Millisecond), Isolated: true, Warnings: []string{"w"}})
	if got.CallID != "c1" || got.ExitCode != 3 || got.Signal != 0 || got.Duration != 1500*time.Millisecond || !got.Isolated || len(got.Warnings) != 1 {
		t.Fatalf("result %+v", got)
	}
	if got := resultFromExit(&sandboxv1.Exit{ExitCode: 137, Signal: 9, TimedOut: true}); got.ExitCode != 137 || got.Signal != 9 || !got.TimedOut {
		t.Fatalf("killed: %+v", got)
	}
	// A signal without the exit code still gives the shell's 128+N.
	if got := resultFromExit(&sandboxv1.Exit{Signal: 15}); got.ExitCode != 143 {
		t.Fatalf("signal 15 alone: exit code %d, want 143", got.ExitCode)
	}
}

// messages is a recorded response stream: receive's input, not a server.
type messages struct {
	msgs   []*sandboxv1.ExecResponse
	err    error
	at     int
	closed bool
}

func (m *messages) Receive() bool {
	if m.at >= len(m.msgs) {
		return false
	}
	m.at++
	return true
}
func (m *messages) Msg() *sandboxv1.ExecResponse { return m.msgs[m.at-1] }
func (m *messages) Err() error                   { return m.err }
func (m *messages) Close() error                 { m.closed = true; return nil }

func out(s string) *sandboxv1.ExecResponse {
	return &sandboxv1.ExecResponse{Event: &sandboxv1.ExecResponse_Stdout{Stdout: []byte(s)}}
}
func errOut(s string) *sandboxv1.ExecResponse {
	return &sandboxv1.ExecResponse{Event: &sandboxv1.ExecResponse_Stderr{Stderr: []byte(s)}}
}
func exit(code int32) *sandboxv1.ExecResponse {
	return &sandboxv1.ExecResponse{Event: &sandboxv1.ExecResponse_Exit{Exit: &sandboxv1.Exit{CallId: "c", ExitCode: code}}}
}

func TestReceiveCapturesOrWrites(t *testing.T) {
	stream := &messages{msgs: []*sandboxv1.ExecResponse{out("a"), errOut("x"), out("b"), exit(2)}}
	res, err := receive(stream, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "ab" || string(res.Stderr) != "x" || res.ExitCode != 2 || !stream.closed {
		t.Fatalf("captured %+v closed %v", res, stream.closed)
	}

	var stdout bytes.Buffer
	res, err = receive(&messages{msgs: []*sandboxv1.ExecResponse{out("a"), errOut("x"), exit(0)}}, &stdout, nil)
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "a" || res.Stdout != nil || string(res.Stderr) != "x" {
		t.Fatalf("stdout %q result %+v", stdout.String(), res)
	}
}

func TestReceiveErrors(t *testing.T) {
	if _, err := receive(&messages{msgs: []*sandboxv1.ExecResponse{out("a")}}, nil, nil); connect.CodeOf(err) != connect.CodeDataLoss {
		t.Fatalf("no exit: %v", err)
	}
	serverErr := connect.NewError(connect.CodeNotFound, errors.New("no such binary"))
	if _, err := receive(&messages{err: serverErr}, nil, nil); !errors.Is(err, serverErr) {
		t.Fatalf("stream error: %v", err)
	}
	stream := &messages{msgs: []*sandboxv1.ExecResponse{out("a"), exit(0)}}
	_, err := receive(stream, failingWriter{}, nil)
	if connect.CodeOf(err) != connect.CodeCanceled || !errors.Is(err, errBrokenPipe) || !stream.closed {
		t.Fatalf("failing writer: %v, closed %v", err, stream.closed)
	}
}

var errBrokenPipe = errors.New("broken pipe")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errBrokenPipe }
