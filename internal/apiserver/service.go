package apiserver

import (
	"context"
	"errors"
	"sync"

	"connectrpc.com/connect"
	"github.com/containerd/errdefs"

	"github.com/sandbox-shim/sandbox-shim/api"
	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/api/sandbox/v1/sandboxv1connect"
)

// service implements the generated handler over a Backend.
type service struct {
	backend   Backend
	sandboxID string
}

var _ sandboxv1connect.SandboxServiceHandler = (*service)(nil)

func (s *service) Exec(ctx context.Context, req *connect.Request[sandboxv1.ExecRequest], stream *connect.ServerStream[sandboxv1.ExecResponse]) error {
	out := &streamWriter{stream: stream}
	exit, err := s.backend.Exec(ctx, api.ExecCall{
		Request: req.Msg, Caller: callerOf(ctx),
		Stdout: out.writer(stdout), Stderr: out.writer(stderr),
	})
	if err != nil {
		return connectError(err)
	}
	return out.exit(exit)
}

func (s *service) ExecSecure(ctx context.Context, req *connect.Request[sandboxv1.ExecSecureRequest], stream *connect.ServerStream[sandboxv1.ExecResponse]) error {
	// Whatever the backend did, no value outlives the call here.
	defer func() {
		for _, v := range req.Msg.Env {
			clear(v)
		}
	}()
	out := &streamWriter{stream: stream}
	exit, err := s.backend.ExecSecure(ctx, api.SecureExecCall{
		Request: req.Msg, Caller: callerOf(ctx),
		Stdout: out.writer(stdout), Stderr: out.writer(stderr),
	})
	if err != nil {
		return connectError(err)
	}
	return out.exit(exit)
}

func (s *service) SetEnvVars(ctx context.Context, req *connect.Request[sandboxv1.SetEnvVarsRequest]) (*connect.Response[sandboxv1.SetEnvVarsResponse], error) {
	resp, err := s.backend.SetEnvVars(ctx, req.Msg)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(resp), nil
}

func (s *service) Info(ctx context.Context, _ *connect.Request[sandboxv1.InfoRequest]) (*connect.Response[sandboxv1.InfoResponse], error) {
	resp, err := s.backend.Info(ctx, callerOf(ctx))
	if err != nil {
		return nil, connectError(err)
	}
	resp.Caller = callerOf(ctx)
	return connect.NewResponse(resp), nil
}

func (s *service) Audit(ctx context.Context, req *connect.Request[sandboxv1.AuditRequest]) (*connect.Response[sandboxv1.AuditResponse], error) {
	records, err := s.backend.Audit(ctx, int(req.Msg.Limit))
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&sandboxv1.AuditResponse{Records: records}), nil
}

type streamKind int

const (
	stdout streamKind = iota
	stderr
)

// streamWriter sends a command's output as messages, one per write, in
// the order written (connect flushes each); Send is not safe for
// concurrent use, so stdout and stderr take turns.
type streamWriter struct {
	mu     sync.Mutex
	stream *connect.ServerStream[sandboxv1.ExecResponse]
	// failed is set once a send failed (the client went away): output is
	// then dropped, and the call's context ends the command.
	failed error
}

type kindWriter struct {
	w    *streamWriter
	kind streamKind
}

func (w *streamWriter) writer(k streamKind) *kindWriter { return &kindWriter{w: w, kind: k} }

func (k *kindWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	msg := &sandboxv1.ExecResponse{}
	if k.kind == stdout {
		msg.Event = &sandboxv1.ExecResponse_Stdout{Stdout: p}
	} else {
		msg.Event = &sandboxv1.ExecResponse_Stderr{Stderr: p}
	}
	if err := k.w.send(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *streamWriter) send(msg *sandboxv1.ExecResponse) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != nil {
		return w.failed
	}
	if err := w.stream.Send(msg); err != nil {
		w.failed = err
		return err
	}
	return nil
}

// exit ends the stream with the command's Exit.
func (w *streamWriter) exit(e *sandboxv1.Exit) error {
	return w.send(&sandboxv1.ExecResponse{Event: &sandboxv1.ExecResponse_Exit{Exit: e}})
}

// connectError turns a backend error (containerd errdefs kinds) into a
// connect error with the same message.
func connectError(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(codeOf(err), err)
}

func codeOf(err error) connect.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errdefs.IsDeadlineExceeded(err):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled), errdefs.IsCanceled(err):
		return connect.CodeCanceled
	case errdefs.IsInvalidArgument(err):
		return connect.CodeInvalidArgument
	case errdefs.IsNotFound(err):
		return connect.CodeNotFound
	case errdefs.IsAlreadyExists(err):
		return connect.CodeAlreadyExists
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		return connect.CodeFailedPrecondition
	case errdefs.IsUnavailable(err):
		return connect.CodeUnavailable
	case errdefs.IsNotImplemented(err):
		return connect.CodeUnimplemented
	case errdefs.IsPermissionDenied(err):
		return connect.CodePermissionDenied
	case errdefs.IsResourceExhausted(err):
		return connect.CodeResourceExhausted
	case errdefs.IsOutOfRange(err):
		return connect.CodeOutOfRange
	case errdefs.IsAborted(err):
		return connect.CodeAborted
	}
	return connect.CodeInternal
}
