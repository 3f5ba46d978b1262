// Package pool keeps pre-built things ready (a user container's waiters
// now, secure-exec containers later), so the request that needs one does
// not pay for building it. Refills run off the caller's path, with backoff
// while building fails.
package pool

import (
	"context"
	"sync"
	"time"
)

// Backoff bounds the wait between failed builds: it starts at Min, doubles
// after each failure up to Max, and starts over after a success.
type Backoff struct {
	Min, Max time.Duration
}

// DefaultBackoff suits builds that take milliseconds.
var DefaultBackoff = Backoff{Min: 10 * time.Millisecond, Max: time.Second}

// next is the wait after a failure that followed a wait of d (0: none yet).
func (b Backoff) next(d time.Duration) time.Duration {
	if d <= 0 {
		return b.Min
	}
	return min(2*d, b.Max)
}

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
	var wait time.Duration
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
			item, err := p.cfg.Build(ctx)
			if err != nil {
				if p.cfg.OnBuildError != nil && !p.stopped() {
					p.cfg.OnBuildError(err)
				}
				wait = p.cfg.Backoff.next(wait)
				p.sleep(wait, p.stop)
				continue
			}
			wait = 0
			if !p.add(item) {
				p.discard(item)
				return
			}
		}
	}
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
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.items) > 0 {
		item = p.items[0]
		p.items = p.items[1:]
		if p.cfg.Alive == nil || p.cfg.Alive(item) {
			return item, true
		}
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

// Remove forgets an item that died while ready, and starts a refill.
func (p *Pool[T]) Remove(item T) {
	p.mu.Lock()
	for i, x := range p.items {
		if x == item {
			p.items = append(p.items[:i], p.items[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
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

// Done is closed once Run returned (never if Run was not started).
func (p *Pool[T]) Done() <-chan struct{} { return p.done }

func (p *Pool[T]) discard(item T) {
	if p.cfg.Discard != nil {
		p.cfg.Discard(item)
	}
}
