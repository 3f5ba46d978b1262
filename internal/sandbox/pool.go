package sandbox

import (
	"errors"
	"os"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer"

	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// poolSize is how many pre-built execs wait in the workspace. Each is one
// idle process; four cover a burst of execs while a fork bomb slows the
// building of the next.
const poolSize = 4

type pooled struct {
	w       *process.Waiter
	cleanup func() // removes its exec sub-cgroups
}

// fillPool keeps poolSize waiters ready until the sandbox stops. It runs
// off the exec path: a slow build (say, during a fork bomb) delays nobody
// while a waiter is left.
func (sb *Sandbox) fillPool(ws *libcontainer.Container) {
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-sb.stopping:
			sb.drainPool()
			return
		case <-sb.poolWake:
		}
		for sb.poolLen() < poolSize {
			select {
			case <-sb.stopping:
				sb.drainPool()
				return
			default:
			}
			pw, err := sb.newWaiter(ws)
			if err != nil {
				log.L.WithError(err).WithField("id", sb.ID).Debug("build pooled exec")
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			backoff = 10 * time.Millisecond
			sb.mu.Lock()
			sb.pool = append(sb.pool, pw)
			sb.mu.Unlock()
		}
	}
}

func (sb *Sandbox) wakePool() {
	select {
	case sb.poolWake <- struct{}{}:
	default:
	}
}

func (sb *Sandbox) poolLen() int {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return len(sb.pool)
}

func (sb *Sandbox) drainPool() {
	sb.mu.Lock()
	pool := sb.pool
	sb.pool = nil
	sb.mu.Unlock()
	for _, pw := range pool {
		pw.w.Discard()
	}
}

// newWaiter builds one pooled exec in its own exec sub-cgroup.
func (sb *Sandbox) newWaiter(ws *libcontainer.Container) (*pooled, error) {
	subs, cleanup, err := sb.execCgroup(ws)
	if err != nil {
		return nil, err
	}
	lp, err := spec.WaiterProcess(sb.settings, sb.spec.Process)
	if err != nil {
		cleanup()
		return nil, err
	}
	sock, child, err := process.NewWaiterSocket()
	if err != nil {
		cleanup()
		return nil, err
	}
	lp.ExtraFiles = []*os.File{child}
	lp.SubCgroupPaths = subs
	pw := &pooled{cleanup: cleanup}
	w, err := process.StartWaiter(lp, ws.Run, sock, child, func() {
		// Died unused (user code may kill it): forget it, build another.
		sb.mu.Lock()
		for i, q := range sb.pool {
			if q == pw {
				sb.pool = append(sb.pool[:i], sb.pool[i+1:]...)
				break
			}
		}
		sb.mu.Unlock()
		cleanup()
		sb.wakePool()
	})
	if err != nil {
		cleanup()
		return nil, err
	}
	pw.w = w
	return pw, nil
}

// takeWaiter returns a live pooled exec, or nil.
func (sb *Sandbox) takeWaiter() *pooled {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	defer sb.wakePool()
	for len(sb.pool) > 0 {
		pw := sb.pool[0]
		sb.pool = sb.pool[1:]
		if pw.w.Alive() {
			return pw
		}
	}
	return nil
}

// startInWaiter runs p in a pooled exec, or in one built for it when the
// pool is empty (the slow path: a cgroup migration per hierarchy). Either
// way an exec runs through the same waiter code, with the same checks.
func (sb *Sandbox) startInWaiter(ws *libcontainer.Container, execID string, p *process.Process) error {
	args, env, cwd, rlimits, width, height := p.Request()
	for attempt := 0; ; attempt++ {
		pw := sb.takeWaiter()
		if pw == nil {
			var err error
			if pw, err = sb.newWaiter(ws); err != nil {
				return err
			}
		}
		err := p.StartIn(pw.w, args, env, cwd, rlimits, width, height, sb.execExited)
		if errors.Is(err, process.ErrWaiterGone) && attempt < 3 {
			continue
		}
		if err != nil {
			if !errors.Is(err, process.ErrBadRequest) {
				// Its sub-cgroups go once the killed waiter is reaped.
				go func() { <-pw.w.Done(); pw.cleanup() }()
			} else {
				sb.mu.Lock()
				sb.pool = append([]*pooled{pw}, sb.pool...)
				sb.mu.Unlock()
			}
			return err
		}
		sb.mu.Lock()
		sb.execCleanup[execID] = pw.cleanup
		sb.mu.Unlock()
		return nil
	}
}
