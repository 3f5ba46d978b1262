package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/fifo"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
)

// Stdio names the FIFOs containerd created for one process, or a log URI
// for its output (see logio.go). An empty path means that stream is not
// wanted.
type Stdio struct {
	Stdin    string
	Stdout   string
	Stderr   string
	Terminal bool
	// Streams, when set, replace the FIFOs: the process reads and writes
	// the shim's own readers and writers (the sandbox API's execs). The
	// paths above are then ignored, and a terminal is refused.
	Streams *Streams

	// logID is CONTAINER_ID for a logging binary; New sets it.
	logID string
}

// Streams are a process' stdio inside the shim. A nil member is not
// wanted (stdin at EOF, output to /dev/null).
type Streams struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// writerCloser lets a stream's writer stand where an output FIFO's ends
// would: closing it closes nothing of the caller's.
type writerCloser struct{ io.Writer }

func (writerCloser) Close() error { return nil }

// ioWaitTimeout bounds how long an exit waits for output that stopped
// moving: a daemon that inherited stdout must not hold the exit event, but
// output still flowing (a slow client, a loaded host) is waited for.
const ioWaitTimeout = 2 * time.Second

// stdio moves bytes between containerd's FIFOs and the process: through
// pipes, or through the pty master libcontainer sends over the console socket.
// The shim always sits in the middle so that it, not the container, owns the
// FIFOs, exactly as the runc shim does.
type stdio struct {
	cfg Stdio

	// pipe mode: the child's ends are closed once the process started.
	childFiles []*os.File
	stdinW     *os.File // shim's end of the process' stdin
	stdoutR    *os.File
	stderrR    *os.File

	// terminal mode
	consoleParent *os.File
	consoleChild  *os.File
	console       console.Console

	// stdinCloser holds a writer on the stdin FIFO so that the process sees
	// EOF only once CloseIO is called, not when a client detaches.
	stdinCloser io.Closer
	closers     []io.Closer
	closed      bool
	// out holds the shim's ends of the stdout and stderr FIFOs.
	out       [2]fifoEnds
	copying   sync.WaitGroup
	moved     atomic.Int64 // bytes written to the output FIFOs
	closeOnce sync.Once
	mu        sync.Mutex
}

// newStdio prepares the process' stdio before it starts.
func newStdio(cfg Stdio, lp *libcontainer.Process) (_ *stdio, retErr error) {
	s := &stdio{cfg: cfg}
	defer func() {
		if retErr != nil {
			s.close()
		}
	}()
	if err := s.openFIFOs(); err != nil {
		return nil, err
	}
	if cfg.Terminal {
		parent, child, err := utils.NewSockPair("console")
		if err != nil {
			return nil, fmt.Errorf("console socket: %w", err)
		}
		s.consoleParent, s.consoleChild = parent, child
		lp.ConsoleSocket = child
		return s, nil
	}
	child, err := s.makePipes()
	if err != nil {
		return nil, err
	}
	// libcontainer gives an absent stream /dev/null.
	if child[0] != nil {
		lp.Stdin = child[0]
	}
	if child[1] != nil {
		lp.Stdout = child[1]
	}
	if child[2] != nil {
		lp.Stderr = child[2]
	}
	return s, nil
}

// started runs once libcontainer started the process: it drops the child's
// ends and begins copying.
func (s *stdio) started() error {
	s.closeChildFiles()
	if s.cfg.Terminal {
		s.consoleChild.Close()
		s.consoleChild = nil
		f, err := utils.RecvFile(s.consoleParent)
		s.consoleParent.Close()
		s.consoleParent = nil
		if err != nil {
			return fmt.Errorf("receive console: %w", err)
		}
		return s.attachConsole(f)
	}
	s.copyPipes()
	return nil
}

func (s *stdio) closeChildFiles() {
	for _, f := range s.childFiles {
		f.Close()
	}
	s.childFiles = nil
}

// attachConsole copies between the FIFOs and a pty master.
func (s *stdio) attachConsole(f *os.File) error {
	c, err := console.ConsoleFromFile(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("console: %w", err)
	}
	s.mu.Lock()
	s.console = c
	s.mu.Unlock()
	if s.cfg.Stdin != "" {
		go s.copyIn(c, nil)
	}
	if s.cfg.Stdout != "" {
		s.copyOut(s.out[0], c)
	}
	return nil
}

// copyPipes copies between the FIFOs and the process' pipes.
func (s *stdio) copyPipes() {
	if s.stdinW != nil {
		if st := s.cfg.Streams; st != nil {
			go s.copyStream(st.Stdin, s.stdinW)
		} else {
			go s.copyIn(s.stdinW, s.stdinW)
		}
	}
	if s.stdoutR != nil {
		s.copyOut(s.out[0], s.stdoutR)
	}
	if s.stderrR != nil {
		s.copyOut(s.out[1], s.stderrR)
	}
}

// fifoOpenTimeout bounds the wait for a client to open its end of an
// output FIFO.
const fifoOpenTimeout = 10 * time.Second

// openFIFOs opens the shim's ends of the FIFOs before the process starts:
// its own writer on stdin (see stdinCloser), and a writer plus a reader on
// each output. The output writer is opened blocking, as the runc shim does:
// it returns once the client's reader is open, so a short process' output
// can never land in a FIFO that every side closes before the client looks.
func (s *stdio) openFIFOs() error {
	if st := s.cfg.Streams; st != nil {
		if s.cfg.Terminal {
			return errors.New("a process with streams cannot have a terminal")
		}
		for i, w := range []io.Writer{st.Stdout, st.Stderr} {
			if w != nil {
				s.out[i] = fifoEnds{writerCloser{w}, nopCloser{}}
			}
		}
		return nil
	}
	if s.cfg.Stdin != "" {
		sc, err := fifo.OpenFifo(context.Background(), s.cfg.Stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open stdin fifo %s: %w", s.cfg.Stdin, err)
		}
		s.stdinCloser = sc
	}
	if logged, err := s.openLog(); logged || err != nil {
		return err
	}
	for i, path := range []string{s.cfg.Stdout, s.cfg.Stderr} {
		if path == "" || (s.cfg.Terminal && i == 1) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), fifoOpenTimeout)
		w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
		cancel()
		if err != nil {
			return fmt.Errorf("open output fifo %s: %w", path, err)
		}
		s.addCloser(w)
		r, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDONLY, 0)
		if err != nil {
			return fmt.Errorf("open output fifo %s: %w", path, err)
		}
		s.addCloser(r)
		s.out[i] = fifoEnds{w, r}
	}
	return nil
}

// fifoEnds are the shim's ends of one output FIFO.
type fifoEnds struct {
	w io.WriteCloser
	r io.Closer
}

// makePipes creates a pipe for each stream cfg wants and returns the
// process' ends as stdin, stdout, stderr (nil for a stream not wanted).
func (s *stdio) makePipes() ([3]*os.File, error) {
	var child [3]*os.File
	want := []bool{s.cfg.Stdin != "", s.cfg.Stdout != "", s.cfg.Stderr != ""}
	if st := s.cfg.Streams; st != nil {
		want = []bool{st.Stdin != nil, st.Stdout != nil, st.Stderr != nil}
	}
	for i, want := range want {
		if !want {
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			return child, err
		}
		switch i {
		case 0:
			child[i], s.stdinW = r, w
		case 1:
			child[i], s.stdoutR = w, r
		case 2:
			child[i], s.stderrR = w, r
		}
		s.childFiles = append(s.childFiles, child[i])
	}
	return child, nil
}

// newWaiterStdio prepares stdio for a pooled exec: pipes whose child ends
// (or /dev/null for a stream not wanted) are sent to the waiter, in the order
// stdin, stdout, stderr. A terminal exec gets no pipes: the waiter sends its
// pty master back.
func newWaiterStdio(cfg Stdio) (_ *stdio, child []*os.File, retErr error) {
	s := &stdio{cfg: cfg}
	defer func() {
		if retErr != nil {
			s.close()
		}
	}()
	if err := s.openFIFOs(); err != nil {
		return nil, nil, err
	}
	if cfg.Terminal {
		return s, nil, nil
	}
	pipes, err := s.makePipes()
	if err != nil {
		return nil, nil, err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	s.childFiles = append(s.childFiles, null)
	for _, f := range pipes {
		if f == nil {
			f = null
		}
		child = append(child, f)
	}
	return s, child, nil
}

// copyBuffers are the stdio copies' buffers, reused: three fresh 32 KiB
// per exec made the shim's garbage collector a noticeable part of an
// exec's CPU.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func copyBuffer() *[]byte { return copyBuffers.Get().(*[]byte) }

// putCopyBuffer clears what a process wrote (a secure exec's output may
// hold what it was given) before the buffer serves another.
func putCopyBuffer(b *[]byte) {
	clear(*b)
	copyBuffers.Put(b)
}

// copyIn copies the stdin FIFO into the process until the FIFO reaches EOF
// (the client closed it and CloseIO dropped the shim's own writer).
func (s *stdio) copyIn(dst io.Writer, closeAfter io.Closer) {
	in, err := fifo.OpenFifo(context.Background(), s.cfg.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	s.addCloser(in)
	buf := copyBuffer()
	defer putCopyBuffer(buf)
	_, _ = io.CopyBuffer(dst, in, *buf)
	in.Close()
	if closeAfter != nil {
		closeAfter.Close()
	}
}

// copyStream copies a stream's stdin into the process, then closes its
// end: the process sees EOF.
func (s *stdio) copyStream(src io.Reader, dst *os.File) {
	s.addCloser(dst)
	buf := copyBuffer()
	defer putCopyBuffer(buf)
	_, _ = io.CopyBuffer(dst, src, *buf)
	dst.Close()
}

// copyOut copies one output stream into its FIFO, then closes the shim's
// ends so the client sees EOF. The read-side handle kept meanwhile, as the
// runc shim keeps it, spares the process EPIPE when a client detaches.
func (s *stdio) copyOut(f fifoEnds, src io.Reader) {
	if f.w == nil {
		return
	}
	s.copying.Add(1)
	go func() {
		defer s.copying.Done()
		buf := copyBuffer()
		defer putCopyBuffer(buf)
		// Ends at EOF, or EIO from a pty whose last slave fd closed.
		_, _ = io.CopyBuffer(progressWriter{f.w, &s.moved}, src, *buf)
		f.w.Close()
		f.r.Close()
	}()
}

// addCloser registers c for close; after close it closes c at once.
func (s *stdio) addCloser(c io.Closer) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.closers = append(s.closers, c)
	s.mu.Unlock()
}

// wait waits for the output streams to drain, giving up once nothing has
// moved for ioWaitTimeout.
func (s *stdio) wait() {
	done := make(chan struct{})
	go func() {
		s.copying.Wait()
		close(done)
	}()
	tick := time.NewTicker(ioWaitTimeout)
	defer tick.Stop()
	last := s.moved.Load()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			now := s.moved.Load()
			if now == last {
				return
			}
			last = now
		}
	}
}

// progressWriter counts what reached the FIFO.
type progressWriter struct {
	w     io.Writer
	moved *atomic.Int64
}

func (p progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.moved.Add(int64(n))
	return n, err
}

// closeStdin implements CloseIO.
func (s *stdio) closeStdin() error {
	s.mu.Lock()
	c := s.stdinCloser
	s.stdinCloser = nil
	s.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
}

func (s *stdio) resize(ws console.WinSize) error {
	s.mu.Lock()
	c := s.console
	s.mu.Unlock()
	if c == nil {
		return errors.New("process has no terminal")
	}
	return c.Resize(ws)
}

// close releases everything; copies still running end with errors.
func (s *stdio) close() {
	s.closeOnce.Do(func() {
		for _, f := range s.childFiles {
			f.Close()
		}
		for _, f := range []*os.File{s.stdinW, s.stdoutR, s.stderrR, s.consoleParent, s.consoleChild} {
			if f != nil {
				f.Close()
			}
		}
		s.mu.Lock()
		s.closed = true
		closers := s.closers
		s.closers = nil
		c := s.console
		sc := s.stdinCloser
		s.stdinCloser = nil
		s.mu.Unlock()
		for _, c := range closers {
			c.Close()
		}
		if sc != nil {
			sc.Close()
		}
		if c != nil {
			c.Close()
		}
	})
}
