//go:build seccomp

package secureexec

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/internal/process"
	"github.com/sandbox-shim/sandbox-shim/internal/usercontainer"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// TestMeasure reports what a pool costs and what a call takes (set
// SECUREEXEC_MEASURE=1): memory per ready container (its cgroup's usage
// and the shim's RSS growth), CPU per call (the shim and every process it
// reaped, pool refills included), and the median latency of a call with a
// warm pool beside a plain pooled exec in a workspace.
func TestMeasure(t *testing.T) {
	if os.Getenv("SECUREEXEC_MEASURE") == "" {
		t.Skip("set SECUREEXEC_MEASURE=1 to measure")
	}
	sb := newSandbox(t)
	const poolSize = 8
	rssBefore := settledRSS()
	buildSelf, buildChildren := cpuSplit(t)
	r := sb.runner(t, func(c *Config) { c.PoolSize = poolSize })
	waitFor(t, "a full pool", func() bool { return r.pool.Len() == poolSize })
	self, children := cpuSplit(t)
	t.Logf("CPU per build: shim %v, children %v", (self-buildSelf)/poolSize, (children-buildChildren)/poolSize)
	time.Sleep(200 * time.Millisecond)
	rssAfter := settledRSS()
	var usage []int64
	r.pool.Each(func(c *container) {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", c.cgroup, "memory.usage_in_bytes"))
		if err != nil {
			b, _ = os.ReadFile(filepath.Join("/sys/fs/cgroup", c.cgroup, "memory.current"))
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		usage = append(usage, n)
	})
	slices.Sort(usage)
	var inits time.Duration
	r.pool.Each(func(c *container) {
		b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuacct", c.cgroup, "cpuacct.usage"))
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		inits += time.Duration(n)
	})
	t.Logf("CPU per build in the container's cgroup (runc init from its join, reaper, waiter): %v", inits/poolSize)
	t.Logf("ready container: cgroup memory median %s (min %s, max %s); shim RSS +%s per container",
		kib(usage[len(usage)/2]), kib(usage[0]), kib(usage[len(usage)-1]), kib((rssAfter-rssBefore)/poolSize))

	// CPU per call: calls one after the other, each with a warm pool, the
	// refill and the destroy of the used container counted.
	const calls = 40
	selfBefore, childrenBefore := cpuSplit(t)
	var secure []time.Duration
	for i := range calls {
		waitFor(t, "the refill", func() bool { return r.pool.Len() == poolSize })
		begin := time.Now()
		newCall(fmt.Sprintf("m%d", i), "true").run(t, r)
		secure = append(secure, time.Since(begin))
	}
	waitFor(t, "the last refill and destroy", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.pool.Len() == poolSize && len(r.live) == poolSize && r.building == 0
	})
	self, children = cpuSplit(t)
	t.Logf("CPU per call, refill and destroy included: %v (shim %v, reaped children %v)",
		(self-selfBefore+children-childrenBefore)/calls, (self-selfBefore)/calls, (children-childrenBefore)/calls)

	// A plain pooled exec in a workspace built the same way.
	ws := sb.workspace(t)
	var plain []time.Duration
	for range calls {
		plain = append(plain, ws.run(t))
	}
	t.Logf("latency median: secure exec %v (p90 %v), pooled workspace exec %v (p90 %v)",
		median(secure), percentile(secure, 90), median(plain), percentile(plain, 90))
}

// workspaceExec runs `true` in a workspace's pooled waiter.
type workspaceExec struct {
	c   *usercontainer.Container
	req spec.ExecRequest
}

func (sb *sandbox) workspace(t *testing.T) *workspaceExec {
	t.Helper()
	cfg, err := spec.Workspace("ws", sb.cfg.Bundle, sb.cfg.BundleSpec, spec.WorkspaceOptions{
		Settings: sb.cfg.Settings, NetNS: sb.cfg.NetNS, UTSNS: sb.cfg.UTSNS, CgroupPath: sb.userCgroup + "/ws", Reaper: sb.cfg.Reaper,
	})
	if err != nil {
		t.Fatal(err)
	}
	pid1, err := spec.ReaperProcess(sb.cfg.Settings, sb.cfg.BundleSpec.Process)
	if err != nil {
		t.Fatal(err)
	}
	c, err := usercontainer.Create(t.Context(), usercontainer.Config{
		SandboxID: "unit", ID: "ws", StateRoot: sb.cfg.StateRoot, Container: cfg, Reaper: pid1,
		Waiter: func() (*libcontainer.Process, error) {
			return spec.WaiterProcess(sb.cfg.Settings, sb.cfg.BundleSpec.Process)
		},
		ExecPidsLimit: 64, PoolSize: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Destroy() })
	req, err := spec.WorkspaceExec(&specs.Process{Args: []string{"true"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, sb.cfg.BundleSpec.Process, sb.cfg.Settings)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the pool fills
	return &workspaceExec{c: c, req: req}
}

func (w *workspaceExec) run(t *testing.T) time.Duration {
	t.Helper()
	begin := time.Now()
	p := process.New("true", process.Stdio{Streams: &process.Streams{}})
	done := make(chan struct{})
	e, err := w.c.Exec(p, w.req, func(*process.Process) { close(done) })
	if err != nil {
		t.Fatal(err)
	}
	<-done
	took := time.Since(begin)
	e.Release()
	p.Close()
	time.Sleep(20 * time.Millisecond) // the refill, as between secure calls
	return took
}

// settledRSS is the process' resident memory after a GC.
func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// cpuSplit is the CPU time of this process and of its reaped children.
func cpuSplit(t *testing.T) (self, children time.Duration) {
	var s, c syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &s); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c); err != nil {
		t.Fatal(err)
	}
	cpu := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return cpu(s), cpu(c)
}

// cpuTime is the CPU time of this process and its reaped children.
func cpuTime(t *testing.T) time.Duration {
	self, children := cpuSplit(t)
	return self + children
}

func kib(n int64) string { return fmt.Sprintf("%d KiB", n>>10) }

func median(d []time.Duration) time.Duration { return percentile(d, 50) }

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
