// Command bench compares the sandbox runtime with runc's shim on one private containerd:
// container start latency, exec latency, the CPU an exec costs the shim (and the processes
// it reaps), exec throughput with parallel clients, and the memory of an idle container's shim;
// then execSecure against the API's Exec through the Go client (latency, 20 concurrent calls,
// CPU per call, memory per ready pooled container: secure.go).
// Run by `make bench` (go run -tags seccomp ./test/bench).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// minRuns keeps medians and p90s meaningful; -quick lifts it for smoke runs.
const minRuns = 30

type config struct {
	n        int
	quick    bool
	strict   bool
	runtimes [2]string
	out      string
	idleWait time.Duration
	clients  int
	window   time.Duration
	secure   bool
	pods     bool
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}

	// Signals stay caught until cleanup is over, so a second Ctrl-C cannot skip d.Stop.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	rep, err := run(ctx, cfg)
	interrupted := ctx.Err() != nil
	stop()
	if interrupted {
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if cfg.strict && !rep.Pass {
		fmt.Fprintln(os.Stderr, "bench: targets missed (-strict)")
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.n, "n", minRuns, fmt.Sprintf("measured runs per runtime and latency (at least %d unless -quick)", minRuns))
	fs.BoolVar(&cfg.quick, "quick", false, "smoke run: allow -n below the minimum; -n defaults to 5")
	fs.BoolVar(&cfg.strict, "strict", false, "exit 1 when a ratio misses its target")
	fs.StringVar(&cfg.out, "o", "", "JSON results file (default <repo>/_output/bench.json)")
	fs.DurationVar(&cfg.idleWait, "idle", 3*time.Second, "how long the idle container settles before its shim's memory is read")
	fs.IntVar(&cfg.clients, "clients", 4, "parallel clients in the exec throughput phase")
	fs.DurationVar(&cfg.window, "window", 10*time.Second, "how long each runtime runs execs in the throughput phase")
	fs.BoolVar(&cfg.secure, "secure", true, "run the execSecure phase (needs "+harness.SandboxRuntime+")")
	fs.BoolVar(&cfg.pods, "pods", true, "run the pod phase through CRI (crictl, the sandbox and runc handlers)")
	// Hidden: lets the bench validate itself with runc on both sides.
	runtimes := fs.String("runtimes", harness.SandboxRuntime+","+harness.RuncRuntime, "")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench [flags]\n")
		fs.VisitAll(func(f *flag.Flag) {
			if f.Name == "runtimes" {
				return
			}
			name, usage := flag.UnquoteUsage(f)
			if name != "" {
				name = " " + name
			}
			fmt.Fprintf(stderr, "  -%s%s\n    \t%s", f.Name, name, usage)
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(stderr, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	nSet := false
	fs.Visit(func(f *flag.Flag) { nSet = nSet || f.Name == "n" })
	if cfg.quick && !nSet {
		cfg.n = 5
	}
	if cfg.quick && !windowSet(fs) {
		cfg.window = 2 * time.Second
	}
	if cfg.clients < 1 || cfg.window <= 0 {
		return cfg, fmt.Errorf("-clients %d -window %s: want at least one client and a positive window", cfg.clients, cfg.window)
	}
	if cfg.n < 1 || (!cfg.quick && cfg.n < minRuns) {
		return cfg, fmt.Errorf("-n %d: need at least %d runs (use -quick for a smoke run)", cfg.n, minRuns)
	}

	parts := strings.Split(*runtimes, ",")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return cfg, fmt.Errorf("-runtimes %q: want two comma-separated runtime names", *runtimes)
	}
	cfg.runtimes = [2]string{strings.TrimSpace(parts[0]), strings.TrimSpace(parts[1])}
	// Say "run make build" now rather than fail inside the first ctr run.
	if slices.Contains(cfg.runtimes[:], harness.SandboxRuntime) {
		if _, err := harness.ShimBinary(); err != nil {
			return cfg, err
		}
	}

	if cfg.out == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			return cfg, fmt.Errorf("find repo root: %w", err)
		}
		cfg.out = filepath.Join(root, "_output", "bench.json")
	}
	return cfg, nil
}

func windowSet(fs *flag.FlagSet) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "window" })
	return set
}

func run(ctx context.Context, cfg config) (rep *report, err error) {
	// Startup is not tied to the signal context, so Ctrl-C can never tear the daemon down
	// behind our back; we stop it ourselves below.
	startCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	logf("starting private containerd")
	d, err := harness.Start(startCtx)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	defer func() {
		if ctx.Err() != nil {
			logf("interrupted, cleaning up")
		}
		removeAll(d)
		if serr := d.Stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop containerd: %w", serr))
		}
	}()

	b := &bench{d: d, cfg: cfg}
	rep = newReport(cfg)

	logf("start latency: %d runs per runtime (+1 warm-up)", cfg.n)
	start, err := b.startLatency(ctx)
	if err != nil {
		return nil, err
	}
	logf("exec latency: %d runs per runtime (+1 warm-up)", cfg.n)
	execs, err := b.execs(ctx)
	if err != nil {
		return nil, err
	}
	logf("shim memory: one idle container per runtime, settling %s", cfg.idleWait)
	mem, err := b.idleMemory(ctx)
	if err != nil {
		return nil, err
	}

	if cfg.secure && slices.Contains(cfg.runtimes[:], harness.SandboxRuntime) {
		logf("execSecure: latency, CPU, %d concurrent calls, pool memory", secureConcurrency)
		if rep.Secure, err = b.secureExec(ctx); err != nil {
			return nil, err
		}
	}

	if cfg.pods && slices.Contains(cfg.runtimes[:], harness.SandboxRuntime) {
		nPods, nExecs := podRuns(cfg)
		logf("pods through CRI: %d pods and %d execs per handler", nPods, nExecs)
		if rep.Pods, err = b.pods(ctx); err != nil {
			return nil, err
		}
	}

	for k, rt := range cfg.runtimes {
		rep.Results = append(rep.Results, result{
			Runtime:      rt,
			StartMS:      summarize(start[k]),
			ExecMS:       summarize(execs.latency[k]),
			CPUPerExecMS: execs.cpuPerExec[k],
			Throughput:   execs.throughput[k],
			Memory:       mem[k],
		})
	}
	rep.judge()
	rep.print(os.Stdout)
	if err := rep.write(cfg.out); err != nil {
		return rep, err
	}
	logf("wrote %s", cfg.out)
	return rep, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
