package cgroup

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/oom"
	oomv1 "github.com/containerd/containerd/v2/pkg/oom/v1"
)

// v1 is the process' one cgroup v1 OOM watcher (an epoll set), started on
// first use; its callbacks are keyed by cgroup path.
var v1 struct {
	once    sync.Once
	watcher oom.Watcher
	err     error
	mu      sync.Mutex
	onOOM   map[string]func()
}

// WatchOOM calls onOOM for each OOM kill in the cgroup at p, until ctx
// ends (or, on cgroup v1, until the cgroup is removed: the kernel then ends
// its eventfd and containerd's watcher drops it).
func WatchOOM(ctx context.Context, p string, onOOM func()) error {
	cg, err := load(p)
	if err != nil {
		return fmt.Errorf("load %s: %w", p, err)
	}
	switch cg := cg.(type) {
	case cgroup1.Cgroup:
		v1.once.Do(func() {
			v1.onOOM = map[string]func(){}
			v1.watcher, v1.err = oomv1.New(publisher{})
			if v1.err == nil {
				go v1.watcher.Run(context.Background())
			}
		})
		if v1.err != nil {
			return fmt.Errorf("cgroup v1 OOM watcher: %w", v1.err)
		}
		v1.mu.Lock()
		v1.onOOM[p] = onOOM
		v1.mu.Unlock()
		go func() {
			<-ctx.Done()
			v1.mu.Lock()
			delete(v1.onOOM, p)
			v1.mu.Unlock()
		}()
		if err := v1.watcher.Add(p, cg); err != nil {
			return fmt.Errorf("watch %s for OOM: %w", p, err)
		}
	case *cgroupsv2.Manager:
		evs, errs := cg.EventChan()
		go func() {
			var last uint64
			for {
				select {
				case ev := <-evs:
					if ev.OOMKill > last && ctx.Err() == nil {
						onOOM()
					}
					last = ev.OOMKill
				case <-errs:
					// Ends when the cgroup empties: draining until then keeps
					// the library's reader from blocking on its channel.
					return
				}
			}
		}()
	}
	return nil
}

// publisher turns the v1 watcher's TaskOOM events (whose id is the cgroup
// path) into calls.
type publisher struct{}

func (publisher) Publish(_ context.Context, _ string, event events.Event) error {
	e, ok := event.(*eventstypes.TaskOOM)
	if !ok {
		return nil
	}
	v1.mu.Lock()
	f := v1.onOOM[e.ContainerID]
	v1.mu.Unlock()
	if f != nil {
		f()
	}
	return nil
}
