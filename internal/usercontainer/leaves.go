package usercontainer

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/sandbox-shim/sandbox-shim/internal/cgroup"
	"github.com/sandbox-shim/sandbox-shim/internal/process"
)

// leaves are the exec cgroup leaves given back by finished execs, reused
// by the next waiters: a reused leaf costs no mkdir now and no rmdir later
// (on cgroup v1 both take the cgroup lock, which can wait for an RCU grace
// period while a move is in flight). Leaves are never removed while the
// container lives; they go with its cgroup.
type leaves struct {
	mu       sync.Mutex
	released []*cgroup.ExecLeaf
}

// leafChecks bounds how many released leaves one take looks at: a leaf
// that orphans still hold stays out of use, and must not cost every build.
const leafChecks = 4

// take returns an empty released leaf, or makes a new one.
func (l *leaves) take(c *Container) (*cgroup.ExecLeaf, error) {
	l.mu.Lock()
	n := min(leafChecks, len(l.released))
	candidates := l.released[:n:n]
	l.released = l.released[n:]
	l.mu.Unlock()
	var got *cgroup.ExecLeaf
	var busy []*cgroup.ExecLeaf
	for _, leaf := range candidates {
		if got == nil && leaf.Empty() {
			got = leaf
		} else {
			busy = append(busy, leaf)
		}
	}
	if len(busy) > 0 {
		l.mu.Lock()
		l.released = append(l.released, busy...)
		l.mu.Unlock()
	}
	if got != nil {
		return got, nil
	}
	name := "exec-" + strconv.FormatUint(c.execSeq.Add(1), 10)
	return cgroup.NewExecLeaf(c.cgroups, name, c.cfg.ExecPidsLimit)
}

// release gives a leaf back; call it once per use (see waiter.release).
func (l *leaves) release(leaf *cgroup.ExecLeaf) {
	l.mu.Lock()
	l.released = append(l.released, leaf)
	l.mu.Unlock()
}

// activity tracks execs that are starting, or started a moment ago and may
// exit soon: refills wait for them, since a cgroup move holds a lock that
// every fork and exit on the host waits for (cgroup v1).
type activity struct {
	mu    sync.Mutex
	execs map[*process.Process]time.Time
}

const (
	// settleTime is how long after its start an exec that still runs
	// holds the refills back.
	settleTime = 20 * time.Millisecond
	// maxQuietWait bounds the wait of one refill: with execs back to back
	// the workspace is never quiet, and the pool must still refill.
	maxQuietWait = 100 * time.Millisecond
	quietPoll    = 2 * time.Millisecond
)

func (a *activity) begin(p *process.Process) {
	a.mu.Lock()
	if a.execs == nil {
		a.execs = map[*process.Process]time.Time{}
	}
	a.execs[p] = time.Now()
	a.mu.Unlock()
}

func (a *activity) end(p *process.Process) {
	a.mu.Lock()
	delete(a.execs, p)
	a.mu.Unlock()
}

// busyUntil is when the last exec now settling has settled (zero: none).
func (a *activity) busyUntil(now time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var until time.Time
	for p, started := range a.execs {
		settled := started.Add(settleTime)
		if !settled.After(now) {
			delete(a.execs, p) // long-running: no longer holds refills back
			continue
		}
		if settled.After(until) {
			until = settled
		}
	}
	return until
}

// waitQuiet waits until no exec is starting or settling, at most
// maxQuietWait.
func (a *activity) waitQuiet(ctx context.Context) {
	deadline := time.Now().Add(maxQuietWait)
	for {
		now := time.Now()
		until := a.busyUntil(now)
		if until.IsZero() || !now.Before(deadline) {
			return
		}
		t := time.NewTimer(min(until.Sub(now), deadline.Sub(now), quietPoll))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}
