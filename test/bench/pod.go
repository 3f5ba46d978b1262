package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// The pod phase (issue 11): through containerd's CRI with crictl, as a kubelet drives a
// runtime, the sandbox and runc handlers side by side on one CRI daemon: the start of a pod
// (runp, create and start of one app container, until crictl returns) and an exec probe
// (`crictl exec -s` of /bin/true). crictl's own start-up is in both handlers' numbers.

// podResults is the pod phase: one entry per handler, sandbox first.
type podResults struct {
	Handlers []podHandler `json:"handlers"`
}

type podHandler struct {
	Handler string `json:"handler"`
	// StartMS is runp + create + start of one container, per pod.
	StartMS stats `json:"pod_start_ms"`
	// ExecMS is `crictl exec -s` of /bin/true in a running pod.
	ExecMS stats `json:"exec_sync_ms"`
}

// podRuns and podExecs are how many pods each handler starts and execs it runs.
func podRuns(cfg config) (pods, execs int) {
	if cfg.quick {
		return 2, cfg.n
	}
	return 10, max(cfg.n, 30)
}

func (b *bench) pods(ctx context.Context) (*podResults, error) {
	d, err := harness.StartCRI(ctx)
	if err != nil {
		return nil, fmt.Errorf("start a CRI daemon: %w", err)
	}
	defer func() {
		if err := d.Stop(); err != nil {
			logf("stop the CRI daemon: %v", err)
		}
	}()
	dir, err := os.MkdirTemp("", "bench-pod-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	crictl := func(args ...string) (string, error) {
		cmd := d.Crictl(ctx, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	write := func(name string, v any) (string, error) {
		p := filepath.Join(dir, name)
		data, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		return p, os.WriteFile(p, data, 0o600)
	}
	container, err := write("container.json", map[string]any{
		"metadata": map[string]any{"name": "agent"},
		"image":    map[string]any{"image": harness.Image},
		"command":  []string{"sleep", "3600"},
		"linux":    map[string]any{},
	})
	if err != nil {
		return nil, err
	}
	nPods, nExecs := podRuns(b.cfg)
	out := &podResults{}
	for _, handler := range []string{harness.SandboxHandler, harness.RuncHandler} {
		h := podHandler{Handler: handler}
		var starts, execs []time.Duration
		// One warm-up pod, then the measured ones; execs in the last.
		for i := 0; i <= nPods; i++ {
			pod, err := write(fmt.Sprintf("pod-%s-%d.json", handler, i), map[string]any{
				"metadata":      map[string]any{"name": fmt.Sprintf("bench-%s-%d", handler, i), "namespace": "bench", "uid": fmt.Sprintf("bench-%s-%d", handler, i)},
				"log_directory": dir,
				"linux":         map[string]any{"cgroup_parent": d.CgroupParent()},
			})
			if err != nil {
				return nil, err
			}
			t0 := time.Now()
			podID, err := crictl("runp", "--runtime", handler, pod)
			if err != nil {
				return nil, err
			}
			id, err := crictl("create", podID, container, pod)
			if err != nil {
				return nil, err
			}
			if _, err := crictl("start", id); err != nil {
				return nil, err
			}
			if i > 0 {
				starts = append(starts, time.Since(t0))
			}
			if i == nPods {
				for j := 0; j <= nExecs; j++ {
					t1 := time.Now()
					if _, err := crictl("exec", "-s", id, "/bin/true"); err != nil {
						return nil, err
					}
					if j > 0 {
						execs = append(execs, time.Since(t1))
					}
				}
			}
			if _, err := crictl("stopp", podID); err != nil {
				return nil, err
			}
			if _, err := crictl("rmp", podID); err != nil {
				return nil, err
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		h.StartMS, h.ExecMS = summarize(starts), summarize(execs)
		out.Handlers = append(out.Handlers, h)
	}
	return out, nil
}

// printPods prints the pod phase, sandbox over runc as ratios (no target: the issue asks
// for the figures).
func (r *report) printPods(w io.Writer) {
	p := r.Pods
	if p == nil || len(p.Handlers) != 2 {
		return
	}
	fmt.Fprintln(w, "pods through CRI (crictl, its start-up included): pod start = runp + create + start of one container; exec = crictl exec -s /bin/true")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "handler\tpod start median\tp90\texec median\tp90\t\n")
	for _, h := range p.Handlers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", h.Handler, ms(h.StartMS.Median), ms(h.StartMS.P90), ms(h.ExecMS.Median), ms(h.ExecMS.P90))
	}
	a, b := p.Handlers[0], p.Handlers[1]
	if b.StartMS.Median > 0 && b.ExecMS.Median > 0 {
		fmt.Fprintf(tw, "%s / %s\t%.2fx\t\t%.2fx\t\t\n", a.Handler, b.Handler, a.StartMS.Median/b.StartMS.Median, a.ExecMS.Median/b.ExecMS.Median)
	}
	tw.Flush()
	fmt.Fprintln(w)
}
