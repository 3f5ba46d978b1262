package task

import (
	"context"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
)

// TestSendAfterForwarderReturned: once the forwarder has returned at
// shutdown, an exit still reported (a process of a sandbox the shim is
// leaving) must not block its caller forever on a full queue.
func TestSendAfterForwarderReturned(t *testing.T) {
	s := &service{ctx: context.Background(), events: make(chan any, 1), forwarded: make(chan struct{})}
	close(s.forwarded)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			s.send(&eventstypes.TaskExit{ContainerID: "sb"})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("send blocked after the forwarder returned")
	}
}
