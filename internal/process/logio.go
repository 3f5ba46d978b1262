package process

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Log URIs. containerd hands a process' stdout and stderr to the shim as
// FIFO paths, or, for `ctr run --log-uri`, nerdctl and cio.LogFile /
// cio.BinaryIO, as one URI for both streams. The schemes are the runc
// shim's (cmd/containerd-shim-runc-v2/process/io.go):
//
//	/path, fifo:///path   a FIFO (an absolute or scheme-less path is one)
//	file:///path          both streams appended to a file
//	binary:///path?k=v    a logging binary the shim starts, fed by pipes
//	binary-v2:///path?k=v the same, but the logger must report ready
//
// As in the runc shim, stdout's URI takes both streams. The shim still sits
// between the process and the log, as it does for FIFOs, so that the
// process' end of its stdio is the same in every mode and the shim knows
// when the output drained: then it closes the log's end.

const (
	schemeFIFO     = "fifo"
	schemeFile     = "file"
	schemeBinary   = "binary"
	schemeBinaryV2 = "binary-v2"
)

const (
	// loggerReadyTimeout bounds the wait for a logging binary's readiness
	// (the runc shim waits forever): a stuck logger fails the create.
	loggerReadyTimeout = 10 * time.Second
	// loggerExitCheck is how long a plain binary logger that closed its
	// readiness pipe without a byte is watched for an exit status: only
	// loggers predating containerd's logging.Run do that, or dying ones.
	loggerExitCheck = 100 * time.Millisecond
	// loggerEOFGrace is how long a logger may take to finish on its own
	// once its streams closed, before it is asked to stop.
	loggerEOFGrace = 2 * time.Second
	// loggerTermTimeout is the runc shim's: a logger gets that long to
	// flush after SIGTERM, then SIGKILL.
	loggerTermTimeout = 12 * time.Second
	// loggerStderrLimit bounds what the shim keeps of a logger's stderr
	// for its errors.
	loggerStderrLimit = 4 << 10
)

// output is one stdout or stderr value from containerd.
type output struct {
	raw    string // as containerd sent it, for errors
	scheme string // one of the scheme constants; schemeFIFO for a path
	path   string // the FIFO, file or binary
	args   []string
}

// parseOutput classifies an output value. An absolute path, or one without
// a colon, is a FIFO path, exactly as before log URIs.
func parseOutput(raw string) (output, error) {
	if raw == "" || strings.HasPrefix(raw, "/") || !strings.Contains(raw, ":") {
		return output{raw: raw, scheme: schemeFIFO, path: raw}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return output{}, fmt.Errorf("%w: stdio URI %s: %w", errdefs.ErrInvalidArgument, raw, err)
	}
	o := output{raw: raw, scheme: u.Scheme, path: u.Path}
	switch u.Scheme {
	case schemeFIFO, schemeFile, schemeBinary, schemeBinaryV2:
	default:
		return output{}, fmt.Errorf("%w: stdio URI %s: unknown scheme %q (want fifo, file, binary or binary-v2)", errdefs.ErrInvalidArgument, raw, u.Scheme)
	}
	// scheme:///absolute/path, as cio.LogURIGenerator writes it: a host or
	// an opaque part would name a path the caller did not mean.
	if u.Host != "" || u.Opaque != "" || !filepath.IsAbs(u.Path) {
		return output{}, fmt.Errorf("%w: stdio URI %s: want %s:///absolute/path", errdefs.ErrInvalidArgument, raw, u.Scheme)
	}
	o.path = filepath.Clean(u.Path)
	if u.Scheme == schemeBinary || u.Scheme == schemeBinaryV2 {
		if o.args, err = loggerArgs(u.RawQuery); err != nil {
			return output{}, fmt.Errorf("%w: stdio URI %s: %w", errdefs.ErrInvalidArgument, raw, err)
		}
	}
	return o, nil
}

// loggerArgs turns the query into the logger's arguments as the runc shim
// does, each key then its first value (no dashes added), but in the URI's
// order rather than a map's random one.
func loggerArgs(query string) ([]string, error) {
	var args []string
	seen := map[string]bool{}
	for _, pair := range strings.Split(query, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("query key %q: %w", k, err)
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("query value %q: %w", v, err)
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		args = append(args, key, value)
	}
	return args, nil
}

// openLog sets up the output streams when stdout is a log URI, and reports
// whether it did; for FIFOs it only turns fifo:// URIs into paths and
// leaves the opening to openFIFOs.
func (s *stdio) openLog() (bool, error) {
	out, err := parseOutput(s.cfg.Stdout)
	if err != nil {
		return false, err
	}
	if out.scheme == schemeFIFO {
		errOut, err := parseOutput(s.cfg.Stderr)
		if err != nil {
			return false, err
		}
		if errOut.scheme != schemeFIFO {
			return false, fmt.Errorf("%w: stderr is the log URI %s but stdout is %q: a log URI must be stdout's", errdefs.ErrInvalidArgument, errOut.raw, out.raw)
		}
		s.cfg.Stdout, s.cfg.Stderr = out.path, errOut.path
		return false, nil
	}
	// Both streams go to the log, as in the runc shim, whatever stderr
	// said (containerd sends the same URI); makePipes then gives the
	// process a stderr pipe too.
	s.cfg.Stderr = s.cfg.Stdout
	switch out.scheme {
	case schemeFile:
		return true, s.openLogFile(out)
	default:
		return true, s.startLogger(out)
	}
}

// openLogFile appends both streams to the file, creating it and its
// directories as the runc shim does (0755, 0644).
func (s *stdio) openLogFile(o output) error {
	if err := os.MkdirAll(filepath.Dir(o.path), 0o755); err != nil {
		return fmt.Errorf("%w: log URI %s: %w", errdefs.ErrFailedPrecondition, o.raw, err)
	}
	// One descriptor per stream: each copy closes its own at EOF, and
	// O_APPEND keeps the two from overwriting each other.
	streams := 2
	if s.cfg.Terminal {
		streams = 1
	}
	for i := range streams {
		f, err := os.OpenFile(o.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("%w: log URI %s: %w", errdefs.ErrFailedPrecondition, o.raw, err)
		}
		s.addCloser(f)
		s.out[i] = fifoEnds{w: &logWriter{w: f, uri: o.raw}, r: nopCloser{}}
	}
	return nil
}

// startLogger starts the logging binary and points both streams at it.
func (s *stdio) startLogger(o output) error {
	l, err := startLogger(o, s.cfg.logID, s.cfg.Terminal)
	if err != nil {
		return err
	}
	s.addCloser(l)
	s.out[0] = fifoEnds{w: &logWriter{w: l.stdout, uri: o.raw}, r: nopCloser{}}
	if !s.cfg.Terminal {
		s.out[1] = fifoEnds{w: &logWriter{w: l.stderr, uri: o.raw}, r: nopCloser{}}
	}
	return nil
}

// logger is a running logging binary: a host process of the shim's, as in
// the runc shim, reading the process' output from two pipes.
type logger struct {
	uri    string
	cmd    *exec.Cmd
	stdout *os.File // the shim's ends of the logger's fd 3 and fd 4
	stderr *os.File
	// done is closed once the logger was reaped: the shim has no SIGCHLD
	// reaper, so this is the one wait on it. Waiting from the start also
	// keeps the orphan reaper off it, which takes only a child that stayed
	// a zombie for a whole interval.
	done      chan struct{}
	waitErr   error
	errOut    *limitedBuffer
	closeOnce sync.Once
}

// startLogger starts o's binary with the runc shim's conventions: the
// URI's query as arguments, CONTAINER_ID and CONTAINER_NAMESPACE as the
// whole environment, stdout's pipe on fd 3, stderr's on fd 4 and a pipe on
// fd 5 that the logger writes a byte to or closes once it is ready
// (containerd's logging.Run does both). With a terminal the process has
// one stream: fd 4 then only reaches EOF.
func startLogger(o output, id string, terminal bool) (_ *logger, retErr error) {
	ns := namespace()
	if ns == "" {
		return nil, fmt.Errorf("%w: log URI %s: the shim does not know its namespace", errdefs.ErrFailedPrecondition, o.raw)
	}
	var files []*os.File
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
		files = nil
	}
	defer func() {
		if retErr != nil {
			closeFiles()
		}
	}()
	var pipes [3][2]*os.File // stdout, stderr, ready: read and write ends
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("log URI %s: pipe: %w", o.raw, err)
		}
		pipes[i] = [2]*os.File{r, w}
		files = append(files, r, w)
	}
	l := &logger{
		uri:    o.raw,
		stdout: pipes[0][1],
		stderr: pipes[1][1],
		done:   make(chan struct{}),
		errOut: &limitedBuffer{limit: loggerStderrLimit},
	}
	l.cmd = exec.Command(o.path, o.args...)
	l.cmd.Env = []string{"CONTAINER_ID=" + id, "CONTAINER_NAMESPACE=" + ns}
	l.cmd.ExtraFiles = []*os.File{pipes[0][0], pipes[1][0], pipes[2][1]}
	l.cmd.Stderr = l.errOut
	// A logger's child holding its stderr must not hold up the reap.
	l.cmd.WaitDelay = time.Second
	// Pipes and the rest of the shim's descriptors are close-on-exec, so
	// the logger gets only the three above and /dev/null as stdio.
	closeOnExecInherited()
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: log URI %s: start logging binary: %w", errdefs.ErrFailedPrecondition, o.raw, err)
	}
	go func() {
		l.waitErr = l.cmd.Wait()
		close(l.done)
	}()
	defer func() {
		if retErr != nil {
			_ = l.cmd.Process.Kill()
			<-l.done
		}
	}()
	// The logger's ends are the logger's alone now.
	for _, f := range []*os.File{pipes[0][0], pipes[1][0], pipes[2][1]} {
		f.Close()
	}
	files = []*os.File{l.stdout, l.stderr, pipes[2][0]}
	if err := l.waitReady(pipes[2][0], o.scheme == schemeBinaryV2); err != nil {
		return nil, err
	}
	pipes[2][0].Close()
	if terminal {
		// A terminal has one stream: the logger's stderr only gets EOF.
		l.stderr.Close()
	}
	return l, nil
}

// waitReady waits for the logger's readiness on ready: a byte, or (plain
// binary, as the runc shim accepts it) EOF from a logger that closed it.
func (l *logger) waitReady(ready *os.File, strict bool) error {
	_ = ready.SetReadDeadline(time.Now().Add(loggerReadyTimeout))
	n, err := ready.Read(make([]byte, 1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: log URI %s: logging binary did not signal ready within %v%s", errdefs.ErrFailedPrecondition, l.uri, loggerReadyTimeout, l.stderrTail())
	case err != nil && err != io.EOF:
		return fmt.Errorf("%w: log URI %s: wait for logging binary: %w", errdefs.ErrFailedPrecondition, l.uri, err)
	case n == 0 && (strict || l.failedAtStart()):
		select {
		case <-l.done:
			return fmt.Errorf("%w: log URI %s: logging binary exited before it was ready (%v)%s", errdefs.ErrFailedPrecondition, l.uri, l.waitErr, l.stderrTail())
		default:
			_ = l.cmd.Process.Kill()
			<-l.done
			return fmt.Errorf("%w: log URI %s: logging binary closed fd 5 without reporting ready (binary-v2 wants a byte)%s", errdefs.ErrFailedPrecondition, l.uri, l.stderrTail())
		}
	}
	return nil
}

// failedAtStart tells whether a plain binary logger whose fd 5 reached EOF
// died instead of closing it: both look the same on the pipe, so the
// logger gets loggerExitCheck to show an exit status. One that is still
// running, or exited cleanly, counts as ready, as in the runc shim.
func (l *logger) failedAtStart() bool {
	select {
	case <-l.done:
		return l.waitErr != nil
	case <-time.After(loggerExitCheck):
		return false
	}
}

func (l *logger) stderrTail() string {
	if s := strings.TrimSpace(l.errOut.String()); s != "" {
		return ": " + s
	}
	return ""
}

// Close ends the logger: its streams close (they normally did when the
// process' output ended), it gets loggerEOFGrace to finish, then SIGTERM
// and loggerTermTimeout to flush as in the runc shim, then SIGKILL. It
// returns once the logger was reaped.
func (l *logger) Close() error {
	l.closeOnce.Do(func() {
		l.stdout.Close()
		l.stderr.Close()
		for _, step := range []struct {
			wait time.Duration
			sig  syscall.Signal
		}{{loggerEOFGrace, syscall.SIGTERM}, {loggerTermTimeout, syscall.SIGKILL}} {
			select {
			case <-l.done:
				return
			case <-time.After(step.wait):
			}
			log.L.WithField("uri", l.uri).Warnf("logging binary still running, sending %v", step.sig)
			_ = l.cmd.Process.Signal(step.sig)
		}
		<-l.done
	})
	if l.waitErr != nil && l.errOut.Len() > 0 {
		log.L.WithField("uri", l.uri).WithError(l.waitErr).Warnf("logging binary failed: %s", strings.TrimSpace(l.errOut.String()))
	}
	return nil
}

// logWriter is a log stream's destination. A write that fails (a logger
// that died, a full disk) drops the rest of the stream instead of ending
// the copy: the process must not block on a pipe nobody drains.
type logWriter struct {
	w      io.WriteCloser
	uri    string
	failed bool // only the stream's one copy goroutine writes
}

func (l *logWriter) Write(b []byte) (int, error) {
	if !l.failed {
		if _, err := l.w.Write(b); err != nil {
			l.failed = true
			log.L.WithError(err).WithField("uri", l.uri).Warn("log output failed; dropping the rest of the stream")
		}
	}
	return len(b), nil
}

func (l *logWriter) Close() error { return l.w.Close() }

// nopCloser stands for a FIFO's read end, which logs do not have.
type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// limitedBuffer keeps the first limit bytes written to it.
type limitedBuffer struct {
	mu    sync.Mutex
	limit int
	buf   bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *limitedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// namespace is the containerd namespace the shim serves: the shim library's
// -namespace flag, or the NAMESPACE containerd sets in a shim's environment.
func namespace() string {
	if f := flag.Lookup("namespace"); f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	return os.Getenv("NAMESPACE")
}

// closeOnExecInherited marks close-on-exec every descriptor above stderr
// that lacks the flag. Go opens all of its own with it; what lacks it came
// from outside (containerd's socket on fd 3, say) and must not reach a
// logger. Children the shim starts get their descriptors through
// ExtraFiles, which dup them, so none relies on an inherited one.
func closeOnExecInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC)
	}
}
