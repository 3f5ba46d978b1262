package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/client"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// The execSecure phase (issue 10): latency of execSecure and of the API's Exec through the
// same client and socket, 20 concurrent execSecure calls, the CPU one call costs the shim,
// and the memory one ready secure container of the pool costs.

// secureConcurrency is how many execSecure calls run at once in the concurrent phase, and
// secureConcurrentRounds how often, so that its p99 has enough samples.
const (
	secureConcurrency      = 20
	secureConcurrentRounds = 5
	// securePoolMax is the largest pool the annotation allows: the memory phase compares it
	// with an empty pool.
	securePoolMax = 8
	// secureGap separates sequential calls, so each finds the pool refilled, as calls
	// that are not back to back do; back-to-back calls are the concurrent phase's case.
	secureGap = 50 * time.Millisecond
	// poolSettle is how long a fresh sandbox gets to fill its pool before its memory is read.
	poolSettle = 5 * time.Second
)

// secureResults is the execSecure phase.
type secureResults struct {
	// SecureMS and ExecMS are execSecure and API Exec of /bin/true, interleaved, measured
	// at the client (the call until its stream's Exit).
	SecureMS stats `json:"exec_secure_ms"`
	ExecMS   stats `json:"api_exec_ms"`
	// ConcurrentWallMS is each round's wall time for secureConcurrency calls at once;
	// ConcurrentMS every call's latency in those rounds.
	ConcurrentWallMS stats `json:"concurrent_wall_ms"`
	ConcurrentMS     stats `json:"concurrent_call_ms"`
	// CPUPerSecureMS and CPUPerAPIExecMS are the shim tree's CPU per call (see treeCPU),
	// pool refills included.
	CPUPerSecureMS  float64 `json:"cpu_per_exec_secure_ms"`
	CPUPerAPIExecMS float64 `json:"cpu_per_api_exec_ms"`
	// PoolMemory compares a sandbox with a full pool of PoolSize containers with one whose
	// pool is empty.
	PoolMemory poolMemory `json:"pool_memory"`
}

// poolMemory is the memory of ready secure containers. For each sandbox: the shim's own
// PSS (its bookkeeping of the pool) plus what is charged to the sandbox's memory cgroup
// (memory.usage_in_bytes: the pooled containers' processes, their tmpfs, the kernel memory
// charged to them, below the user cgroup where each container's leaf is) less the page
// cache of files (the shared image's pages, charged to whoever read them first; tmpfs
// stays counted). The processes of the pool are in that cgroup, so their pages are not
// counted again through their PSS. PerContainerKiB is the difference over PoolSize.
type poolMemory struct {
	PoolSize        int   `json:"pool_size"`
	FullShimPSSKiB  int64 `json:"full_shim_pss_kib"`
	FullCgroupKiB   int64 `json:"full_cgroup_kib"`
	EmptyShimPSSKiB int64 `json:"empty_shim_pss_kib"`
	EmptyCgroupKiB  int64 `json:"empty_cgroup_kib"`
	// FullTreePSSKiB and EmptyTreePSSKiB are the shims' whole trees, for information.
	FullTreePSSKiB  int64   `json:"full_tree_pss_kib"`
	EmptyTreePSSKiB int64   `json:"empty_tree_pss_kib"`
	PerContainerKiB float64 `json:"per_container_kib"`
}

// secureSandbox is one io.sandbox.v1 container started through the Go client of
// containerd, with its API client.
type secureSandbox struct {
	id        string
	namespace string
	ctr       containerd.Container
	task      containerd.Task
	client    *client.Client
}

// startSecureSandbox starts a sandbox that sleeps (the bench needs no control plane) with
// the given pool size, and waits until its API says secure execution is available.
func (b *bench) startSecureSandbox(ctx context.Context, id string, poolSize int) (*secureSandbox, error) {
	ctx = namespaces.WithNamespace(ctx, b.d.Namespace)
	c, err := b.d.NewContainer(ctx, id, harness.Image, harness.SandboxRuntime,
		oci.WithProcessArgs("sleep", "3600"),
		oci.WithAnnotations(map[string]string{api.AnnotationSecureExecPool: strconv.Itoa(poolSize)}))
	if err != nil {
		return nil, err
	}
	s := &secureSandbox{id: id, namespace: b.d.Namespace, ctr: c}
	if s.task, err = c.NewTask(ctx, cio.NullIO); err != nil {
		_ = deleteContainer(ctx, c)
		return nil, fmt.Errorf("new task %s: %w", id, err)
	}
	if err := s.task.Start(ctx); err != nil {
		_ = deleteContainer(ctx, c)
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	s.client = client.ForSandbox(b.d.Namespace, id)
	// An empty pool builds each call's container on demand; the wait is for the full ones.
	deadline := time.Now().Add(30 * time.Second)
	for poolSize > 0 {
		ok, err := s.client.HasSecureExecution(ctx)
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			s.remove(ctx)
			return nil, fmt.Errorf("%s: secure execution not available after 30s (%v)", id, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The first exec builds the workspace: not part of any measurement.
	if _, err := s.exec(ctx); err != nil {
		s.remove(ctx)
		return nil, err
	}
	return s, nil
}

func (s *secureSandbox) remove(ctx context.Context) {
	_ = s.client.Close()
	if err := deleteContainer(namespaces.WithNamespace(ctx, s.namespace), s.ctr); err != nil {
		logf("cleanup: %v", err)
	}
}

// execSecure runs /bin/true through execSecure and returns its latency at the client.
func (s *secureSandbox) execSecure(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	res, err := s.client.ExecSecure(ctx, client.Argv("/bin/true"), client.SecureOptions{})
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("execSecure: %w", err)
	}
	if res.ExitCode != 0 || !res.Isolated {
		return 0, fmt.Errorf("execSecure /bin/true: exit %d, isolated %v", res.ExitCode, res.Isolated)
	}
	return d, nil
}

// exec runs /bin/true through the API's Exec.
func (s *secureSandbox) exec(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	res, err := s.client.Exec(ctx, client.Argv("/bin/true"), client.ExecOptions{})
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("API exec: %w", err)
	}
	if res.ExitCode != 0 {
		return 0, fmt.Errorf("API exec /bin/true: exit %d", res.ExitCode)
	}
	return d, nil
}

// secureExec runs the execSecure phase on one sandbox (pool of the default size), then the
// pool memory comparison on two fresh ones.
func (b *bench) secureExec(ctx context.Context) (*secureResults, error) {
	out := &secureResults{}
	s, err := b.startSecureSandbox(ctx, "bench-secure", 2)
	if err != nil {
		return nil, err
	}
	defer s.remove(context.WithoutCancel(ctx))
	pause := func() error {
		select {
		case <-time.After(secureGap):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Warm-up: one of each.
	if _, err := s.execSecure(ctx); err != nil {
		return nil, err
	}
	if err := pause(); err != nil {
		return nil, err
	}
	// Interleaved, alternating which goes first.
	n := max(b.cfg.n, 100)
	if b.cfg.quick {
		n = b.cfg.n
	}
	var secure, plain []time.Duration
	for i := 0; i < n; i++ {
		calls := []func() error{
			func() error { d, err := s.execSecure(ctx); secure = append(secure, d); return err },
			func() error { d, err := s.exec(ctx); plain = append(plain, d); return err },
		}
		if i%2 == 1 {
			calls[0], calls[1] = calls[1], calls[0]
		}
		for _, call := range calls {
			if err := call(); err != nil {
				return nil, fmt.Errorf("run %d: %w", i, err)
			}
			if err := pause(); err != nil {
				return nil, err
			}
		}
	}
	out.SecureMS, out.ExecMS = summarize(secure), summarize(plain)

	// CPU: each kind alone, so the shim tree's CPU over the block is that kind's.
	shim, err := findShim(b.d, s.id)
	if err != nil {
		return nil, err
	}
	cpu := func(call func(context.Context) (time.Duration, error)) (float64, error) {
		before, err := treeCPU(shim)
		if err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			if _, err := call(ctx); err != nil {
				return 0, err
			}
			if err := pause(); err != nil {
				return 0, err
			}
		}
		select {
		case <-time.After(cpuSettle): // refills after the last call are its cost too
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		after, err := treeCPU(shim)
		if err != nil {
			return 0, err
		}
		return round(float64(after-before)/float64(time.Millisecond)/float64(n), 2), nil
	}
	if out.CPUPerSecureMS, err = cpu(s.execSecure); err != nil {
		return nil, err
	}
	if out.CPUPerAPIExecMS, err = cpu(s.exec); err != nil {
		return nil, err
	}

	// Concurrent calls, back to back: the pool empties and the rest are built on demand.
	rounds := secureConcurrentRounds
	if b.cfg.quick {
		rounds = 1
	}
	var walls, each []time.Duration
	for r := 0; r < rounds; r++ {
		durations := make([]time.Duration, secureConcurrency)
		errs := make([]error, secureConcurrency)
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range secureConcurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				durations[i], errs[i] = s.execSecure(ctx)
			}()
		}
		wg.Wait()
		walls = append(walls, time.Since(t0))
		for i, err := range errs {
			if err != nil {
				return nil, fmt.Errorf("concurrent round %d call %d: %w", r, i, err)
			}
		}
		each = append(each, durations...)
		// Let the pool refill before the next round.
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out.ConcurrentWallMS, out.ConcurrentMS = summarize(walls), summarize(each)

	logf("secure exec memory: pool of %d vs empty pool, settling %s", securePoolMax, poolSettle)
	if out.PoolMemory, err = b.poolMemory(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// poolMemory starts two sandboxes, one with a full pool and one with none, lets both settle
// and compares their memory (see poolMemory).
func (b *bench) poolMemory(ctx context.Context) (poolMemory, error) {
	m := poolMemory{PoolSize: securePoolMax}
	full, err := b.startSecureSandbox(ctx, "bench-pool-full", securePoolMax)
	if err != nil {
		return m, err
	}
	defer full.remove(context.WithoutCancel(ctx))
	empty, err := b.startSecureSandbox(ctx, "bench-pool-empty", 0)
	if err != nil {
		return m, err
	}
	defer empty.remove(context.WithoutCancel(ctx))
	select {
	case <-time.After(poolSettle):
	case <-ctx.Done():
		return m, ctx.Err()
	}
	read := func(s *secureSandbox) (shimPSS, cgroup, tree int64, err error) {
		pid, err := findShim(b.d, s.id)
		if err != nil {
			return 0, 0, 0, err
		}
		mem, err := readMemory(pid)
		if err != nil {
			return 0, 0, 0, err
		}
		dir := filepath.Join("/sys/fs/cgroup/memory", b.d.Namespace, s.id)
		usage, err := os.ReadFile(filepath.Join(dir, "memory.usage_in_bytes"))
		if err != nil {
			return 0, 0, 0, fmt.Errorf("sandbox memory cgroup of %s: %w", s.id, err)
		}
		bytes, err := strconv.ParseInt(strings.TrimSpace(string(usage)), 10, 64)
		if err != nil {
			return 0, 0, 0, err
		}
		// File pages of the image are charged to whichever cgroup read them first (the
		// other sandbox, a pooled container or the workspace): not a container's cost.
		// tmpfs pages (shmem) count in cache and are one.
		stat, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
		if err != nil {
			return 0, 0, 0, err
		}
		cache, _ := fieldBytes(string(stat), "total_cache")
		shmem, _ := fieldBytes(string(stat), "total_shmem")
		bytes -= cache - shmem
		return mem.PSSKiB, bytes >> 10, mem.TreePSSKiB, nil
	}
	if m.FullShimPSSKiB, m.FullCgroupKiB, m.FullTreePSSKiB, err = read(full); err != nil {
		return m, err
	}
	if m.EmptyShimPSSKiB, m.EmptyCgroupKiB, m.EmptyTreePSSKiB, err = read(empty); err != nil {
		return m, err
	}
	diff := (m.FullShimPSSKiB + m.FullCgroupKiB) - (m.EmptyShimPSSKiB + m.EmptyCgroupKiB)
	m.PerContainerKiB = round(float64(diff)/float64(m.PoolSize), 1)
	return m, nil
}

// fieldBytes reads "name value" from a memory.stat.
func fieldBytes(stat, name string) (int64, error) {
	for _, line := range strings.Split(stat, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("memory.stat: no %s", name)
}
