package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// every architecture Linux exports it for).
const userHZ = 100

// treeCPU is the CPU time a shim has cost so far: its own and that of every
// live descendant (user and system), plus what each of them reaped from
// children that exited (cutime, cstime). Every process is counted once:
// while it lives by itself, once reaped by its parent. For the runc shim
// that covers runc and its init (the shim reaps runc, runc reaps its init)
// and the exec'd process (reaped by the shim, a subreaper); for
// io.sandbox.v1 the workspace's reaper is a child of the shim and reaps
// the waiters, which become the execs.
func treeCPU(shim int) (time.Duration, error) {
	tree, err := descendants(shim)
	if err != nil {
		return 0, err
	}
	var ticks int64
	for i, pid := range append([]int{shim}, tree...) {
		t, err := procTicks(pid)
		if err != nil {
			if i == 0 {
				return 0, err
			}
			continue // exited meanwhile: its parent's cutime has it
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// procTicks sums utime, stime, cutime and cstime of one process.
func procTicks(pid int) (int64, error) {
	// utime..cstime are fields 14-17.
	f, err := statFields(pid, 15)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
		}
		sum += n
	}
	return sum, nil
}

// cpuSettle lets refills and cleanups that an exec phase started finish
// before the CPU is read again: they are part of what the execs cost.
const cpuSettle = 2 * time.Second

// cpuMeter measures the tree CPU of both runtimes' shims around a phase.
type cpuMeter struct {
	shims  [2]int
	before [2]time.Duration
}

func (b *bench) startCPU(ids [2]string) (*cpuMeter, error) {
	m := &cpuMeter{}
	for k, id := range ids {
		pid, err := findShim(b.d, id)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.cfg.runtimes[k], err)
		}
		m.shims[k] = pid
		if m.before[k], err = treeCPU(pid); err != nil {
			return nil, fmt.Errorf("%s: %w", b.cfg.runtimes[k], err)
		}
	}
	return m, nil
}

// perExec waits for the shims to settle and returns each one's CPU per
// exec over the phase, in milliseconds.
func (m *cpuMeter) perExec(ctx context.Context, execs [2]int) ([2]float64, error) {
	var out [2]float64
	select {
	case <-time.After(cpuSettle):
	case <-ctx.Done():
		return out, ctx.Err()
	}
	for k, pid := range m.shims {
		after, err := treeCPU(pid)
		if err != nil {
			return out, err
		}
		if execs[k] > 0 {
			out[k] = round(float64(after-m.before[k])/float64(time.Millisecond)/float64(execs[k]), 2)
		}
	}
	return out, nil
}

// throughput is one runtime's exec rate with parallel clients.
type throughput struct {
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	Execs     int     `json:"execs"`
	PerSecond float64 `json:"per_second"`
	Failures  int     `json:"failures"`
	// CPUPerExecMS is the shim tree's CPU per exec over these rounds.
	CPUPerExecMS float64 `json:"cpu_per_exec_ms"`
}

// execThroughput runs clients parallel exec loops (create, start, wait,
// delete, /bin/true, as ctr does but through the Go client, so that the
// client's own process start does not swamp the two cores) against one
// container per runtime for the given time, in rounds A B B A.
func (b *bench) execThroughput(ctx context.Context, ids [2]string, clients int, window time.Duration) ([2]throughput, error) {
	var out [2]throughput
	meter, err := b.startCPU(ids)
	if err != nil {
		return out, err
	}
	for _, k := range []int{0, 1, 1, 0} {
		n, failed, err := b.execLoop(ctx, ids[k], clients, window/2)
		if err != nil {
			return out, fmt.Errorf("%s: %w", b.cfg.runtimes[k], err)
		}
		out[k].Execs += n
		out[k].Failures += failed
		out[k].Seconds += (window / 2).Seconds()
	}
	cpu, err := meter.perExec(ctx, [2]int{out[0].Execs, out[1].Execs})
	if err != nil {
		return out, err
	}
	for k := range out {
		out[k].Clients = clients
		out[k].PerSecond = round(float64(out[k].Execs)/out[k].Seconds, 2)
		out[k].CPUPerExecMS = cpu[k]
	}
	return out, nil
}

var execSeq atomic.Int64

// execLoop runs clients loops of exec /bin/true for window; it returns the
// execs that completed with status 0 and the failures.
func (b *bench) execLoop(ctx context.Context, id string, clients int, window time.Duration) (int, int, error) {
	ctx = namespaces.WithNamespace(ctx, b.d.Namespace)
	c, err := b.d.Client.LoadContainer(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	s, err := task.Spec(ctx)
	if err != nil {
		return 0, 0, err
	}
	ps := *s.Process
	ps.Args = []string{"/bin/true"}
	ps.Terminal = false
	var done, failed atomic.Int64
	var firstErr atomic.Value
	end := time.Now().Add(window)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				eid := fmt.Sprintf("tp%d", execSeq.Add(1))
				p, err := task.Exec(ctx, eid, &ps, b.d.IO(nil, io.Discard, io.Discard, false))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				status, err := p.Wait(ctx)
				if err == nil {
					err = p.Start(ctx)
				}
				if err == nil {
					st := <-status
					if st.ExitCode() != 0 {
						err = fmt.Errorf("exit %d", st.ExitCode())
					}
				}
				if _, derr := p.Delete(ctx); derr != nil && !errdefs.IsNotFound(derr) && err == nil {
					err = derr
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	// A few failures are reported; an exec path that fails throughout is an error.
	if done.Load() == 0 {
		return 0, int(failed.Load()), fmt.Errorf("no exec completed: %v", firstErr.Load())
	}
	return int(done.Load()), int(failed.Load()), nil
}
