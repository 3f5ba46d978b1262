package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

type stats struct {
	Median  float64   `json:"median"`
	P90     float64   `json:"p90"`
	P99     float64   `json:"p99"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Mean    float64   `json:"mean"`
	Samples []float64 `json:"samples"` // in run order
}

type result struct {
	Runtime string `json:"runtime"`
	StartMS stats  `json:"start_ms"`
	ExecMS  stats  `json:"exec_ms"`
	// CPUPerExecMS is the shim tree's CPU per exec in the latency phase
	// (see treeCPU), refills and cleanups after each exec included.
	CPUPerExecMS float64    `json:"cpu_per_exec_ms"`
	Throughput   throughput `json:"throughput"`
	Memory       memory     `json:"shim_memory"`
}

type ratio struct {
	Key    string  `json:"key"` // exec, start, cpu, throughput, rss
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	Target float64 `json:"target"`
	// AtLeast: the value must be >= target (else <= target).
	AtLeast bool `json:"at_least,omitempty"`
	Pass    bool `json:"pass"`
}

type report struct {
	Time     time.Time `json:"time"`
	Kernel   string    `json:"kernel"`
	CPUs     int       `json:"cpus"`
	N        int       `json:"n"`
	Quick    bool      `json:"quick"`
	Runtimes [2]string `json:"runtimes"`
	Results  []result  `json:"results"`
	// Ratios are Runtimes[0] over Runtimes[1], against the targets of the issue.
	Ratios []ratio `json:"ratios"`
	// Secure is the execSecure phase (absent when the sandbox runtime is not benched);
	// Targets are its absolute targets (issue 10).
	Secure  *secureResults `json:"secure_exec,omitempty"`
	Targets []target       `json:"targets,omitempty"`
	// Pods is the pod phase through CRI (issue 11).
	Pods *podResults `json:"pods,omitempty"`
	Pass bool        `json:"pass"`
}

// target is an absolute bound: Value must be at most Limit.
type target struct {
	Metric string  `json:"metric"`
	Unit   string  `json:"unit"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	// Aim is the hoped-for bound, shown beside the limit (0: none).
	Aim  float64 `json:"aim,omitempty"`
	Pass bool    `json:"pass"`
}

func newReport(cfg config) *report {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return &report{
		Time:     time.Now().UTC(),
		Kernel:   unix.ByteSliceToString(uts.Release[:]),
		CPUs:     runtime.NumCPU(),
		N:        cfg.n,
		Quick:    cfg.quick,
		Runtimes: cfg.runtimes,
	}
}

func summarize(ds []time.Duration) stats {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	s := stats{Samples: ms}
	if len(ms) == 0 {
		return s
	}
	sorted := slices.Sorted(slices.Values(ms))
	n := len(sorted)
	if n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	s.P90 = sorted[int(math.Ceil(0.9*float64(n)))-1] // nearest rank
	s.P99 = sorted[int(math.Ceil(0.99*float64(n)))-1]
	s.Min, s.Max = sorted[0], sorted[n-1]
	for _, v := range ms {
		s.Mean += v
	}
	s.Mean /= float64(n)
	// Microsecond resolution is all the timer gives; drop the float noise.
	for _, p := range []*float64{&s.Median, &s.P90, &s.P99, &s.Min, &s.Max, &s.Mean} {
		*p = round(*p, 3)
	}
	return s
}

// judge computes the ratios against the targets.
func (r *report) judge() {
	a, b := r.Results[0], r.Results[1]
	add := func(key, metric string, x, y, target float64, atLeast bool) {
		if y <= 0 { // nothing to compare against (JSON cannot hold NaN)
			r.Ratios = append(r.Ratios, ratio{Key: key, Metric: metric, Target: target, AtLeast: atLeast})
			return
		}
		v := round(x/y, 4)
		pass := v <= target
		if atLeast {
			pass = v >= target
		}
		r.Ratios = append(r.Ratios, ratio{Key: key, Metric: metric, Value: v, Target: target, AtLeast: atLeast, Pass: pass})
	}
	// The targets of issue 9 ("exec near the floor").
	add("exec", "exec latency (median)", a.ExecMS.Median, b.ExecMS.Median, 0.55, false)
	add("cpu", "CPU per exec", a.CPUPerExecMS, b.CPUPerExecMS, 0.5, false)
	add("throughput", fmt.Sprintf("exec throughput (%d clients)", a.Throughput.Clients), a.Throughput.PerSecond, b.Throughput.PerSecond, 1.5, true)
	add("start", "start latency (median)", a.StartMS.Median, b.StartMS.Median, 0.81, false)
	add("rss", "shim RSS (idle container)", float64(a.Memory.RSSKiB), float64(b.Memory.RSSKiB), 1.5, false)
	r.judgeSecure()
	r.Pass = true
	for _, x := range r.Ratios {
		r.Pass = r.Pass && x.Pass
	}
	for _, x := range r.Targets {
		r.Pass = r.Pass && x.Pass
	}
}

// judgeSecure sets the targets of issue 10: execSecure's median at most 5 ms (aim 2) and
// its p99 at most 20 ms above the API exec's, at most 2 MiB per ready container, and per
// call no more CPU than a runc-shim exec.
func (r *report) judgeSecure() {
	s := r.Secure
	if s == nil {
		return
	}
	add := func(metric, unit string, value, limit, aim float64) {
		value = round(value, 2)
		r.Targets = append(r.Targets, target{Metric: metric, Unit: unit, Value: value, Limit: limit, Aim: aim, Pass: value <= limit})
	}
	add("execSecure median - API exec median", "ms", s.SecureMS.Median-s.ExecMS.Median, 5, 2)
	add("execSecure p99 - API exec p99", "ms", s.SecureMS.P99-s.ExecMS.P99, 20, 0)
	add("memory per ready secure container", "KiB", s.PoolMemory.PerContainerKiB, 2048, 0)
	for _, x := range r.Results {
		if x.Runtime == harness.RuncRuntime {
			add("CPU per execSecure - CPU per runc-shim exec", "ms", s.CPUPerSecureMS-x.CPUPerExecMS, 0, 0)
		}
	}
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n%d measured runs per runtime and latency, kernel %s, %d CPUs", r.N, r.Kernel, r.CPUs)
	if r.Quick {
		fmt.Fprint(w, " (quick: smoke run, not a measurement)")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)

	// Numbers align right; the runtime column is padded by hand to stay left-aligned.
	width := len("runtime")
	for _, x := range r.Results {
		width = max(width, len(x.Runtime))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tstart median\tp90\tmin\texec median\tp90\tmin\tCPU/exec\texecs/s\tCPU/exec (par.)\tshim RSS\tPSS\ttree PSS\t\n", width, "runtime")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", width, x.Runtime,
			ms(x.StartMS.Median), ms(x.StartMS.P90), ms(x.StartMS.Min),
			ms(x.ExecMS.Median), ms(x.ExecMS.P90), ms(x.ExecMS.Min),
			ms(x.CPUPerExecMS), fmt.Sprintf("%.1f", x.Throughput.PerSecond), ms(x.Throughput.CPUPerExecMS),
			mib(x.Memory.RSSKiB), mib(x.Memory.PSSKiB),
			fmt.Sprintf("%s (%d procs)", mib(x.Memory.TreePSSKiB), x.Memory.TreeProcs))
	}
	tw.Flush()
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s / %s\tratio\ttarget\t\n", short(r.Runtimes[0]), short(r.Runtimes[1]))
	for _, x := range r.Ratios {
		verdict := "PASS"
		if !x.Pass {
			verdict = "FAIL"
		}
		op := "<="
		if x.AtLeast {
			op = ">="
		}
		fmt.Fprintf(tw, "%s\t%.2fx\t%s %.2fx\t%s\n", x.Metric, x.Value, op, x.Target, verdict)
	}
	tw.Flush()
	fmt.Fprintln(w)
	r.printSecure(w)
	r.printPods(w)
}

// printSecure prints the execSecure phase and its targets.
func (r *report) printSecure(w io.Writer) {
	s := r.Secure
	if s == nil {
		return
	}
	fmt.Fprintf(w, "execSecure and the API's Exec of /bin/true through the Go client, %d interleaved runs each (%s apart):\n\n", len(s.SecureMS.Samples), secureGap)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "call\tmedian\tp90\tp99\tmin\tmax\tCPU/call\t\n")
	row := func(name string, st stats, cpu string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, ms(st.Median), ms(st.P90), ms(st.P99), ms(st.Min), ms(st.Max), cpu)
	}
	row("execSecure", s.SecureMS, ms(s.CPUPerSecureMS))
	row("API exec", s.ExecMS, ms(s.CPUPerAPIExecMS))
	for _, x := range r.Results {
		if x.Runtime == harness.RuncRuntime {
			row("ctr task exec (runc shim)", x.ExecMS, ms(x.CPUPerExecMS))
		}
	}
	row(fmt.Sprintf("%d concurrent execSecure: wall", secureConcurrency), s.ConcurrentWallMS, "")
	row(fmt.Sprintf("%d concurrent execSecure: each call", secureConcurrency), s.ConcurrentMS, "")
	tw.Flush()
	p := s.PoolMemory
	fmt.Fprintf(w, "\npool memory: pool of %d: shim PSS %s + sandbox cgroup less file cache %s; empty pool: %s + %s; per ready container %.0f KiB (shim trees: %s vs %s)\n\n",
		p.PoolSize, mib(p.FullShimPSSKiB), mib(p.FullCgroupKiB), mib(p.EmptyShimPSSKiB), mib(p.EmptyCgroupKiB), p.PerContainerKiB,
		mib(p.FullTreePSSKiB), mib(p.EmptyTreePSSKiB))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "execSecure target\tvalue\tlimit\t\n")
	for _, x := range r.Targets {
		verdict := "PASS"
		if !x.Pass {
			verdict = "FAIL"
		}
		limit := fmt.Sprintf("<= %g %s", x.Limit, x.Unit)
		if x.Aim > 0 {
			limit += fmt.Sprintf(" (aim %g)", x.Aim)
		}
		fmt.Fprintf(tw, "%s\t%.2f %s\t%s\t%s\n", x.Metric, x.Value, x.Unit, limit, verdict)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func ms(v float64) string { return fmt.Sprintf("%.1f ms", v) }

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// short names a runtime in the ratio header: io.sandbox.v1 -> sandbox, io.containerd.runc.v2 -> runc.
func short(rt string) string {
	parts := strings.Split(rt, ".")
	if len(parts) >= 2 {
		return parts[len(parts)-2]
	}
	return rt
}

// write stores the report as JSON, atomically so a reader never sees half a file.
func (r *report) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}
