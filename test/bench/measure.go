package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

type bench struct {
	d   *harness.Daemon
	cfg config
}

// ctr runs one ctr command and returns its wall time, output included in the error.
func (b *bench) ctr(ctx context.Context, args ...string) (time.Duration, error) {
	var out bytes.Buffer
	cmd := b.d.Ctr(ctx, args...)
	cmd.Stdin = nil
	cmd.Stdout = &out
	cmd.Stderr = &out
	t0 := time.Now()
	err := cmd.Run()
	elapsed := time.Since(t0)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err != nil {
		return 0, fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return elapsed, nil
}

// interleave calls f for both runtimes n times, alternating which one goes first (ABBA...)
// so drift and order effects hit both sides alike. One unmeasured warm-up call each comes first.
func (b *bench) interleave(ctx context.Context, f func(k int, run string) (time.Duration, error)) ([2][]time.Duration, error) {
	var samples [2][]time.Duration
	for k := range b.cfg.runtimes {
		if _, err := f(k, "w"); err != nil {
			return samples, fmt.Errorf("warm-up %s: %w", b.cfg.runtimes[k], err)
		}
	}
	for i := 0; i < b.cfg.n; i++ {
		order := [2]int{0, 1}
		if i%2 == 1 {
			order = [2]int{1, 0}
		}
		for _, k := range order {
			d, err := f(k, fmt.Sprint(i))
			if err != nil {
				return samples, fmt.Errorf("%s run %d: %w", b.cfg.runtimes[k], i, err)
			}
			samples[k] = append(samples[k], d)
		}
	}
	return samples, nil
}

func (b *bench) startLatency(ctx context.Context) ([2][]time.Duration, error) {
	return b.interleave(ctx, func(k int, run string) (time.Duration, error) {
		id := fmt.Sprintf("bench-start-r%d-%s", k, run)
		return b.ctr(ctx, "run", "--rm", "--fifo-dir", b.d.FIFODir(), "--runtime", b.cfg.runtimes[k], harness.Image, id, "/bin/true")
	})
}

// execResults are the exec phases: latency one at a time (with the CPU
// that cost), then throughput with parallel clients.
type execResults struct {
	latency    [2][]time.Duration
	cpuPerExec [2]float64
	throughput [2]throughput
}

func (b *bench) execs(ctx context.Context) (execResults, error) {
	var res execResults
	var ids [2]string
	for k, rt := range b.cfg.runtimes {
		ids[k] = fmt.Sprintf("bench-exec-r%d", k)
		if err := b.runIdle(ctx, rt, ids[k]); err != nil {
			return res, err
		}
	}
	// One exec each first, so the CPU of building the workspace is not an exec's.
	for _, id := range ids {
		if _, err := b.ctr(ctx, "task", "exec", "--fifo-dir", b.d.FIFODir(), "--exec-id", "first", id, "/bin/true"); err != nil {
			return res, err
		}
	}
	meter, err := b.startCPU(ids)
	if err != nil {
		return res, err
	}
	res.latency, err = b.interleave(ctx, func(k int, run string) (time.Duration, error) {
		return b.ctr(ctx, "task", "exec", "--fifo-dir", b.d.FIFODir(), "--exec-id", "e"+run, ids[k], "/bin/true")
	})
	if err != nil {
		return res, err
	}
	// n measured runs plus the warm-up, per runtime.
	if res.cpuPerExec, err = meter.perExec(ctx, [2]int{b.cfg.n + 1, b.cfg.n + 1}); err != nil {
		return res, err
	}
	logf("exec throughput: %d clients, %s per runtime", b.cfg.clients, b.cfg.window)
	if res.throughput, err = b.execThroughput(ctx, ids, b.cfg.clients, b.cfg.window); err != nil {
		return res, err
	}
	// The memory phase wants a quiet machine and fresh shims.
	for _, id := range ids {
		if err := removeContainer(ctx, b.d, id); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (b *bench) idleMemory(ctx context.Context) ([2]memory, error) {
	var mem [2]memory
	var ids [2]string
	for k, rt := range b.cfg.runtimes {
		ids[k] = fmt.Sprintf("bench-idle-r%d", k)
		if err := b.runIdle(ctx, rt, ids[k]); err != nil {
			return mem, err
		}
	}
	select {
	case <-time.After(b.cfg.idleWait):
	case <-ctx.Done():
		return mem, ctx.Err()
	}
	for k, id := range ids {
		pid, err := findShim(b.d, id)
		if err != nil {
			return mem, fmt.Errorf("%s: %w", b.cfg.runtimes[k], err)
		}
		if mem[k], err = readMemory(pid); err != nil {
			return mem, fmt.Errorf("%s: %w", b.cfg.runtimes[k], err)
		}
	}
	return mem, nil
}

// runIdle starts a detached container that just sleeps.
func (b *bench) runIdle(ctx context.Context, runtime, id string) error {
	_, err := b.ctr(ctx, "run", "-d", "--fifo-dir", b.d.FIFODir(), "--runtime", runtime, harness.Image, id, "sleep", "3600")
	return err
}

// removeContainer kills and deletes one container and its task.
func removeContainer(ctx context.Context, d *harness.Daemon, id string) error {
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	return deleteContainer(ctx, c)
}

func deleteContainer(ctx context.Context, c client.Container) error {
	// No task (never started, or already gone) is fine: only the container record is left.
	if t, err := c.Task(ctx, nil); err == nil {
		// WithProcessKill sends SIGKILL to every process and waits for the exit.
		if _, err := t.Delete(ctx, client.WithProcessKill); err != nil {
			return fmt.Errorf("delete task %s: %w", c.ID(), err)
		}
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("delete container %s: %w", c.ID(), err)
	}
	return nil
}

// removeAll deletes every container in the daemon's namespace (all of them are ours),
// whatever state a failed or interrupted run left them in. Errors are only logged:
// d.Stop cleans up after this anyway.
func removeAll(d *harness.Daemon) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := d.Client.Containers(ctx)
	if err != nil {
		logf("cleanup: list containers: %v", err)
		return
	}
	for _, c := range cs {
		if err := deleteContainer(ctx, c); err != nil {
			logf("cleanup: %v", err)
		}
	}
}
