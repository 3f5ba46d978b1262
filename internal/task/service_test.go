package task

import (
	"context"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
)

// recorder is a publisher that keeps what it was given.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Publish(_ context.Context, _ string, e events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e.(*eventstypes.TaskExit).ID)
	return nil
}

func (r *recorder) Close() error { return nil }

// TestShutdownPublishesQueuedAndDropsLater: at shutdown every event queued
// before is published, and one sent after the forwarder returned (an exit
// of a process still dying) returns at once instead of blocking forever.
func TestShutdownPublishesQueuedAndDropsLater(t *testing.T) {
	pub := &recorder{}
	s := &service{ctx: context.Background(), publisher: pub, events: make(chan any, 2), forwarded: make(chan struct{})}
	stop := make(chan struct{})
	// Queued before the forwarder runs, filling the queue.
	s.send(&eventstypes.TaskExit{ID: "a"})
	s.send(&eventstypes.TaskExit{ID: "b"})
	close(stop)
	go s.forward(stop)
	select {
	case <-s.forwarded:
	case <-time.After(5 * time.Second):
		t.Fatal("forwarder did not return after stop")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5 {
			s.send(&eventstypes.TaskExit{ID: "late"})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("send blocked after the forwarder returned")
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.events) != 2 || pub.events[0] != "a" || pub.events[1] != "b" {
		t.Fatalf("published %v, want [a b]", pub.events)
	}
}
