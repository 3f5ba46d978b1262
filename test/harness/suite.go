package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

// RunTests is the body of a suite's TestMain: it skips the suite unless run as root, starts
// a Daemon, calls setup with it, runs the tests and stops the Daemon. Start and setup share
// one timeout. It returns the exit code.
func RunTests(m *testing.M, suite string, timeout time.Duration, setup func(context.Context, *Daemon) error) int {
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "%s tests need root; skipping\n", suite)
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d, err := Start(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "start containerd: %v\n", err)
		return 1
	}
	defer func() {
		if err := d.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop containerd: %v\n", err)
		}
	}()
	if err := setup(ctx, d); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

var idSeq atomic.Int64

var nonID = regexp.MustCompile(`[^a-z0-9]+`)

// TestID returns a container id unique within the run and readable in logs: the end of
// t's name, the pid and a counter.
func TestID(t testing.TB) string {
	name := strings.Trim(nonID.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = strings.TrimLeft(name[len(name)-40:], "-")
	}
	return fmt.Sprintf("%s-%d-%d", name, os.Getpid(), idSeq.Add(1))
}

// NewContainer creates container id, with a snapshot of the same name, from image on
// runtime; its spec is the image's config with opts applied on top.
func (d *Daemon) NewContainer(ctx context.Context, id, image, runtime string, opts ...oci.SpecOpts) (client.Container, error) {
	img, err := d.Client.GetImage(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("get image: %w", err)
	}
	c, err := d.Client.NewContainer(ctx, id,
		client.WithImage(img),
		client.WithNewSnapshot(id, img),
		client.WithRuntime(runtime, nil),
		client.WithNewSpec(append([]oci.SpecOpts{oci.WithImageConfig(img)}, opts...)...),
	)
	if err != nil {
		return nil, fmt.Errorf("new container %s: %w", id, err)
	}
	return c, nil
}

// TestContainer is NewContainer for tests: it fails t on error and removes the container
// when t ends.
func (d *Daemon) TestContainer(t testing.TB, ctx context.Context, id, image, runtime string, opts ...oci.SpecOpts) client.Container {
	t.Helper()
	c, err := d.NewContainer(ctx, id, image, runtime, opts...)
	if err != nil {
		t.Fatal(err)
	}
	d.CleanupContainer(t, id)
	return c
}

// CleanupContainer kills and deletes the task (if any) and container id with its snapshot
// when t ends; one already gone is fine.
func (d *Daemon) CleanupContainer(t testing.TB, id string) {
	t.Cleanup(func() {
		if err := d.removeContainer(id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// removeContainer uses its own context, since the test's may be spent by then; it reads
// d.Client only now, as a Restart replaces it.
func (d *Daemon) removeContainer(id string) error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), d.Namespace), 30*time.Second)
	defer cancel()
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("load container %s: %w", id, err)
	}
	var errs []error
	if task, err := c.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete task %s: %w", id, err))
		}
	} else if !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("load task %s: %w", id, err))
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete container %s: %w", id, err))
	}
	return errors.Join(errs...)
}

// SyncBuffer is a bytes.Buffer safe for concurrent use: cio's copy goroutines write a
// process' output into it while the caller reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// DrainIO waits, at most timeout, for p's output to reach the client, as
// ctr does before Delete: the client's Delete cancels its FIFO readers at
// once, dropping what they have not read yet.
func DrainIO(p client.Process, timeout time.Duration) {
	pio := p.IO()
	if pio == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		pio.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// IO is a cio.Creator for a task or exec with these streams, its FIFOs in
// the daemon's private dir.
func (d *Daemon) IO(stdin io.Reader, stdout, stderr io.Writer, tty bool) cio.Creator {
	opts := []cio.Opt{cio.WithStreams(stdin, stdout, stderr), cio.WithFIFODir(d.FIFODir())}
	if tty {
		opts = append(opts, cio.WithTerminal)
	}
	return cio.NewCreator(opts...)
}
