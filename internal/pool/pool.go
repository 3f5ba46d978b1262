// Package pool keeps pre-built things ready (a user container's waiters
// now, secure-exec containers later), so the request that needs one does
// not pay for building it. Refills run off the caller's path, with backoff
// while building fails or built items die unused, and stop after too many
// such failures in a row (the pool is then degraded) until the caller says
// things changed.
package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Backoff bounds the wait after a failure: Min after the first of a row,
// doubling with each further one up to Max.
type Backoff struct {
	Min, Max time.Duration
}

// DefaultBackoff suits builds that take milliseconds.
var DefaultBackoff = Backoff{Min: 10 * time.Millisecond, Max: time.Second}

// wait is the wait after the nth failure in a row (n >= 1).
func (b Backoff) wait(n int) time.Duration {
	d := b.Min
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// ErrDiedUnused is the failure of an item that died while ready.
var ErrDiedUnused = errors.New("a ready item died before it was used")

// Config describes what a pool holds.
type Config[T comparable] struct {
	// Size is how many ready items the pool keeps.
	Size int
	// Build makes one item. It is called from the refill goroutine only.
	Build func(context.Context) (T, error)
	// Alive tells whether a ready item can still be used (nil: always).
	Alive func(T) bool
	// Discard ends an item the pool drops (at Close, or dead at Take).
	Discard func(T)
	// OnBuildError sees every failed build (logging); nil ignores them.
	OnBuildError func(error)
	Backoff      Backoff
	// MaxFailures is how many failures in a row (failed builds, and items
	// that died ready) stop the refills: a successful build does not end a
	// row, since an item that dies right after it (out of memory) would
	// otherwise rebuild forever. Only Used or Resume end it. 0 never stops.
	MaxFailures int
	// OnDegraded runs once when the refills stop, with the reason.
	OnDegraded func(error)
}

// Pool holds up to Size ready items, refilled by Run.
type Pool[T comparable] struct {
	cfg   Config[T]
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	items []T
	// failures counts the current row of failures; lastErr is its last.
	failures int
	lastErr  error
	// died is set when an item died ready: the next build backs off first.
	died     bool
	degraded bool
	// sleep waits d or until stop; tests replace it to observe the backoff.
	sleep func(d time.Duration, stop <-chan struct{})
}

// New returns a pool; nothing is built until Run.
func New[T comparable](cfg Config[T]) *Pool[T] {
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = DefaultBackoff
	}
	return &Pool[T]{
		cfg:  cfg,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		sleep: func(d time.Duration, stop <-chan struct{}) {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-stop:
			}
		},
	}
}

// Run refills the pool until Close; call it in a goroutine of its own.
func (p *Pool[T]) Run(ctx context.Context) {
	defer close(p.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	p.Wake()
	for {
		select {
		case <-p.stop:
			return
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for p.Len() < p.cfg.Size {
			if p.stopped() {
				return
			}
			wait, ok := p.beforeBuild()
			if !ok {
				break // degraded: until Resume
			}
			if wait > 0 {
				p.sleep(wait, p.stop)
				continue
			}
			item, err := p.cfg.Build(ctx)
			if err != nil {
				if p.stopped() {
					return
				}
				if p.cfg.OnBuildError != nil {
					p.cfg.OnBuildError(err)
				}
				p.fail(err)
				p.mu.Lock()
				n := p.failures
				p.mu.Unlock()
				p.sleep(p.cfg.Backoff.wait(n), p.stop)
				continue
			}
			if !p.add(item) {
				p.discard(item)
				return
			}
		}
	}
}

// beforeBuild says whether to build (not while degraded), and how long to
// back off first after an item died ready.
func (p *Pool[T]) beforeBuild() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.degraded {
		return 0, false
	}
	if p.died {
		p.died = false
		return p.cfg.Backoff.wait(p.failures), true
	}
	return 0, true
}

// fail counts one failure and degrades the pool at MaxFailures.
func (p *Pool[T]) fail(err error) {
	p.mu.Lock()
	p.failures++
	p.lastErr = err
	degrade := p.cfg.MaxFailures > 0 && p.failures >= p.cfg.MaxFailures && !p.degraded
	if degrade {
		p.degraded = true
	}
	n := p.failures
	p.mu.Unlock()
	if degrade && p.cfg.OnDegraded != nil {
		p.cfg.OnDegraded(fmt.Errorf("%d failures in a row, the last: %w", n, err))
	}
}

// diedUnused counts an item that died while ready.
func (p *Pool[T]) diedUnused() {
	p.mu.Lock()
	p.died = true
	p.mu.Unlock()
	p.fail(ErrDiedUnused)
}

// Used says a taken item did its job: the row of failures ends.
func (p *Pool[T]) Used() {
	p.mu.Lock()
	p.failures = 0
	p.mu.Unlock()
}

// Resume ends the row of failures and restarts the refills of a degraded
// pool: call it when what made items fail may have changed (new limits, an
// item built on demand that worked).
func (p *Pool[T]) Resume() {
	p.mu.Lock()
	p.failures = 0
	p.died = false
	p.degraded = false
	p.mu.Unlock()
	p.Wake()
}

// Degraded tells whether refills stopped after MaxFailures failures.
func (p *Pool[T]) Degraded() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.degraded
}

func (p *Pool[T]) stopped() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// add appends a built item unless the pool closed meanwhile.
func (p *Pool[T]) add(item T) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped() {
		return false
	}
	p.items = append(p.items, item)
	return true
}

// Wake asks Run to refill.
func (p *Pool[T]) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Len is the number of ready items.
func (p *Pool[T]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.items)
}

// Take returns the oldest live item, dropping dead ones, and starts a
// refill. ok is false when none is ready.
func (p *Pool[T]) Take() (item T, ok bool) {
	defer p.Wake()
	dead := 0
	defer func() {
		for range dead {
			p.diedUnused()
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.items) > 0 {
		item = p.items[0]
		p.items = p.items[1:]
		if p.cfg.Alive == nil || p.cfg.Alive(item) {
			return item, true
		}
		dead++
	}
	var zero T
	return zero, false
}

// Return puts an unused item back in front; after Close it is discarded.
func (p *Pool[T]) Return(item T) {
	p.mu.Lock()
	if p.stopped() {
		p.mu.Unlock()
		p.discard(item)
		return
	}
	p.items = append([]T{item}, p.items...)
	p.mu.Unlock()
}

// Remove forgets an item that died while ready (a failure, if it was
// still there), and starts a refill.
func (p *Pool[T]) Remove(item T) {
	found := false
	p.mu.Lock()
	for i, x := range p.items {
		if x == item {
			p.items = append(p.items[:i], p.items[i+1:]...)
			found = true
			break
		}
	}
	p.mu.Unlock()
	if found && !p.stopped() {
		p.diedUnused()
	}
	p.Wake()
}

// Close stops refilling and discards every ready item. A build in flight
// is not waited for (it may hang in a frozen cgroup): Run discards what it
// finishes after Close.
func (p *Pool[T]) Close() {
	p.once.Do(func() { close(p.stop) })
	p.mu.Lock()
	items := p.items
	p.items = nil
	p.mu.Unlock()
	for _, item := range items {
		p.discard(item)
	}
}

// Each calls f for every ready item (under the pool's lock: f must not
// call the pool).
func (p *Pool[T]) Each(f func(T)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, item := range p.items {
		f(item)
	}
}

// Done is closed once Run returned (never if Run was not started).
func (p *Pool[T]) Done() <-chan struct{} { return p.done }

func (p *Pool[T]) discard(item T) {
	if p.cfg.Discard != nil {
		p.cfg.Discard(item)
	}
}
