package pool

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

type item struct{ id int }

// builder fails its first failures builds, then succeeds.
type builder struct {
	mu        sync.Mutex
	calls     int
	failures  int
	discarded []*item
}

func (b *builder) build(context.Context) (*item, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if b.calls <= b.failures {
		return nil, errors.New("no room")
	}
	return &item{id: b.calls}, nil
}

func (b *builder) discard(it *item) {
	b.mu.Lock()
	b.discarded = append(b.discarded, it)
	b.mu.Unlock()
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBackoff checks the waits between failed builds: doubling from Min,
// capped at Max, and starting over after a success.
func TestBackoff(t *testing.T) {
	b := &builder{failures: 5}
	p := New(Config[*item]{Size: 2, Build: b.build, Backoff: Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	var mu sync.Mutex
	var waits []time.Duration
	p.sleep = func(d time.Duration, _ <-chan struct{}) {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
	}
	go p.Run(context.Background())
	defer p.Close()
	waitFor(t, "a full pool", func() bool { return p.Len() == 2 })
	mu.Lock()
	got := append([]time.Duration(nil), waits...)
	mu.Unlock()
	want := []time.Duration{10, 20, 40, 50, 50}
	if len(got) != len(want) {
		t.Fatalf("waits %v, want %v ms", got, want)
	}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", got, want)
		}
	}
	// An item that did its job ends the row: the next failure waits Min
	// again. (A successful build alone does not: see TestDegraded.)
	b.mu.Lock()
	b.failures = b.calls + 1
	b.mu.Unlock()
	if _, ok := p.Take(); !ok {
		t.Fatal("no item in a full pool")
	}
	p.Used()
	waitFor(t, "the refill", func() bool { return p.Len() == 2 })
	mu.Lock()
	last := waits[len(waits)-1]
	mu.Unlock()
	if last != 10*time.Millisecond {
		t.Fatalf("first wait after a used item is %v, want 10ms", last)
	}
}

// dyingItems builds items that die as soon as they are ready, the way
// waiters die when the workspace's memory is full: every build succeeds.
type dyingItems struct {
	mu    sync.Mutex
	built int
	pool  *Pool[*item]
}

func (d *dyingItems) build(context.Context) (*item, error) {
	d.mu.Lock()
	d.built++
	it := &item{id: d.built}
	p := d.pool
	d.mu.Unlock()
	// Dies right after it was added, as a waiter killed by the OOM killer.
	go func() {
		waitUntil(func() bool { return p.contains(it) })
		p.Remove(it)
	}()
	return it, nil
}

func (d *dyingItems) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.built
}

func waitUntil(f func() bool) {
	for deadline := time.Now().Add(5 * time.Second); !f() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

func (p *Pool[T]) contains(it T) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range p.items {
		if x == it {
			return true
		}
	}
	return false
}

// TestDegraded: items that die unused, each right after a successful
// build, back off (a success does not reset the wait) and stop the
// refills after MaxFailures, reported once; Take still works (empty), and
// Resume starts the refills again with a fresh row. Real clock.
func TestDegraded(t *testing.T) {
	d := &dyingItems{}
	var mu sync.Mutex
	var reasons []error
	p := New(Config[*item]{Size: 2, Build: d.build, MaxFailures: 4,
		Backoff: Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		OnDegraded: func(err error) {
			mu.Lock()
			reasons = append(reasons, err)
			mu.Unlock()
		}})
	d.pool = p
	var waits []time.Duration
	sleep := p.sleep
	p.sleep = func(dur time.Duration, stop <-chan struct{}) {
		mu.Lock()
		waits = append(waits, dur)
		mu.Unlock()
		sleep(dur, stop)
	}
	go p.Run(context.Background())
	defer p.Close()
	waitFor(t, "the pool to degrade", p.Degraded)
	// No more builds once degraded.
	n := d.count()
	time.Sleep(100 * time.Millisecond)
	if d.count() != n {
		t.Fatalf("%d builds after the pool degraded at %d", d.count()-n, n)
	}
	if n < 4 || n > 6 {
		t.Fatalf("%d builds before degrading, want MaxFailures (4) plus those in flight", n)
	}
	mu.Lock()
	if len(reasons) != 1 || !errors.Is(reasons[0], ErrDiedUnused) {
		t.Fatalf("degraded reported %v, want once with ErrDiedUnused", reasons)
	}
	// The waits grow across successful builds (5, 10, 20 ms): a successful
	// build must not reset the backoff. Deaths that come together share a
	// wait, so a loaded machine may see fewer steps, never a reset.
	if len(waits) < 2 || !slices.IsSorted(waits) || waits[len(waits)-1] <= waits[0] {
		t.Fatalf("waits %v, want them growing across successful builds", waits)
	}
	mu.Unlock()
	if _, ok := p.Take(); ok {
		t.Fatal("Take found an item in a degraded pool")
	}
	p.Resume()
	if p.Degraded() {
		t.Fatal("still degraded after Resume")
	}
	waitFor(t, "builds after Resume", func() bool { return d.count() > n })
	waitFor(t, "the pool to degrade again", p.Degraded)
	mu.Lock()
	defer mu.Unlock()
	if len(reasons) != 2 {
		t.Fatalf("degraded reported %d times, want once per row", len(reasons))
	}
}

// TestUsedEndsTheRow: failures spread between items that did their job
// never degrade the pool.
func TestUsedEndsTheRow(t *testing.T) {
	b := &builder{}
	p := New(Config[*item]{Size: 1, Build: b.build, MaxFailures: 2, Backoff: Backoff{Min: time.Millisecond, Max: time.Millisecond}})
	go p.Run(context.Background())
	defer p.Close()
	for i := 0; i < 6; i++ {
		waitFor(t, "a ready item", func() bool { return p.Len() == 1 })
		p.mu.Lock()
		it := p.items[0]
		p.mu.Unlock()
		if i%2 == 0 {
			p.Remove(it) // died ready: one failure
			continue
		}
		if _, ok := p.Take(); !ok {
			t.Fatal("no item")
		}
		p.Used()
	}
	if p.Degraded() {
		t.Fatal("degraded although every failure was followed by a used item")
	}
}

// TestTakeSkipsDead checks that dead items are never handed out and that a
// take refills the pool.
func TestTakeSkipsDead(t *testing.T) {
	b := &builder{}
	dead := map[*item]bool{}
	var mu sync.Mutex
	p := New(Config[*item]{Size: 3, Build: b.build, Alive: func(it *item) bool {
		mu.Lock()
		defer mu.Unlock()
		return !dead[it]
	}})
	go p.Run(context.Background())
	defer p.Close()
	waitFor(t, "a full pool", func() bool { return p.Len() == 3 })
	p.mu.Lock()
	first, second := p.items[0], p.items[1]
	p.mu.Unlock()
	mu.Lock()
	dead[first] = true
	mu.Unlock()
	got, ok := p.Take()
	if !ok || got != second {
		t.Fatalf("Take = %v, %v; want the second item (the first is dead)", got, ok)
	}
	waitFor(t, "the refill", func() bool { return p.Len() == 3 })
}

// TestRemoveAndReturn checks that an item that died while ready is
// replaced, and that a returned item is the next one taken.
func TestRemoveAndReturn(t *testing.T) {
	b := &builder{}
	p := New(Config[*item]{Size: 2, Build: b.build})
	go p.Run(context.Background())
	defer p.Close()
	waitFor(t, "a full pool", func() bool { return p.Len() == 2 })
	p.mu.Lock()
	victim := p.items[1]
	p.mu.Unlock()
	p.Remove(victim)
	waitFor(t, "a replacement", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.items) == 2 && p.items[0] != victim && p.items[1] != victim
	})
	it, _ := p.Take()
	p.Return(it)
	if again, _ := p.Take(); again != it {
		t.Fatalf("Take after Return = %v, want %v", again, it)
	}
}

// TestCloseDiscards checks that Close ends refilling and discards every
// ready item, and that Return after Close discards too.
func TestCloseDiscards(t *testing.T) {
	b := &builder{}
	p := New(Config[*item]{Size: 3, Build: b.build, Discard: b.discard})
	go p.Run(context.Background())
	waitFor(t, "a full pool", func() bool { return p.Len() == 3 })
	taken, _ := p.Take()
	p.Close()
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	p.Return(taken)
	b.mu.Lock()
	defer b.mu.Unlock()
	// The take may have triggered one more build before Close.
	if n := len(b.discarded); n < 3 {
		t.Fatalf("%d items discarded, want every ready one and the returned one", n)
	}
	if p.Len() != 0 {
		t.Fatalf("%d items left after Close", p.Len())
	}
}

// TestCloseStopsFailingBuilds checks that a pool whose builds keep failing
// still stops at once.
func TestCloseStopsFailingBuilds(t *testing.T) {
	b := &builder{failures: 1 << 30}
	p := New(Config[*item]{Size: 1, Build: b.build, Backoff: Backoff{Min: time.Hour, Max: time.Hour}})
	go p.Run(context.Background())
	waitFor(t, "a failed build", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.calls > 0 })
	p.Close()
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return while backing off")
	}
}
