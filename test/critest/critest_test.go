// Package critest runs the CRI validation suite (critest, sigs.k8s.io/cri-tools) against the
// sandbox and the runc handlers of one private containerd, with stand-in images served by a
// local registry, and compares the results (make critest, issue 11).
package critest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// Why a case cannot pass on sandbox (README.md says the same).
const (
	reasonRoot         = "the exec runs as uid 1000, not root: the suite's host directory is root's with mode 0700, so the exec gets EACCES (before EROFS, for the read-only cases). Root in the workspace would own the control plane's files."
	reasonGroups       = "the container's supplementary groups are its control plane's (root here); user code gets them only when the container runs as the workspace's uid (runAsUser)."
	reasonCapabilities = "the exec is expected to hold capabilities (privileged, ALL, NET_ADMIN): user code has none."
	reasonSeccomp      = "the exec is expected to run unconfined or to set the hostname: user code always has the workspace's seccomp profile and no CAP_SYS_ADMIN, and the hostname is the control plane's."
	reasonPID          = "the exec is expected to see the container's or the host's processes: the workspace has a PID namespace of its own, so the control plane is invisible to user code."
	reasonIPC          = "the exec is expected to see the host's IPC objects: the workspace has an IPC namespace of its own, so user code shares no IPC object with the control plane or the host."
)

// contradictsGuarantee lists the cases that pass on runc and, by design, not on sandbox:
// what they expect of an exec is what guarantee 1 forbids user code. README.md lists each
// with the same reason; the test checks that it does.
var contradictsGuarantee = map[string]string{
	"[k8s.io] Container Mount Propagation runtime should support mount propagation mount with 'rprivate' should not support propagation":                                  reasonRoot,
	"[k8s.io] Container Mount Propagation runtime should support mount propagation mount with 'rshared' should support propagation from host to container and vice versa": reasonRoot,
	"[k8s.io] Container Mount Propagation runtime should support mount propagation mount with 'rslave' should support propagation from host to container":                 reasonRoot,
	"[k8s.io] Container Mount Readonly runtime should support readonly mounts should support non-recursive readonly mounts":                                               reasonRoot,
	"[k8s.io] Container Mount Readonly runtime should support readonly mounts should support recursive readonly mounts":                                                   reasonRoot,
	"[k8s.io] Container runtime should support adding volume and device runtime should support starting container with volume [Conformance]":                              reasonRoot,
	"[k8s.io] Container runtime should support adding volume and device runtime should support starting container with volume when host path is a symlink [Conformance]":  reasonRoot,
	"[k8s.io] Security Context bucket runtime should support SupplementalGroups":                                                                                          reasonGroups,
	"[k8s.io] Security Context bucket runtime should support Privileged is true":                                                                                          reasonCapabilities,
	"[k8s.io] Security Context bucket runtime should support adding ALL capabilities":                                                                                     reasonCapabilities,
	"[k8s.io] Security Context bucket runtime should support adding capability":                                                                                           reasonCapabilities,
	"[k8s.io] Security Context SeccompProfilePath runtime should ignore a seccomp profile that blocks setting hostname when privileged":                                   reasonSeccomp,
	"[k8s.io] Security Context SeccompProfilePath runtime should not block setting host name with unconfined seccomp and SYS_ADMIN":                                       reasonSeccomp,
	"[k8s.io] Security Context SeccompProfilePath should support nil profile, which is unconfined":                                                                        reasonSeccomp,
	"[k8s.io] Security Context SeccompProfilePath should support seccomp unconfined on the container":                                                                     reasonSeccomp,
	"[k8s.io] Security Context NamespaceOption runtime should support ContainerPID":                                                                                       reasonPID,
	"[k8s.io] Security Context NamespaceOption runtime should support HostPID":                                                                                            reasonPID,
	"[k8s.io] Security Context NamespaceOption runtime should support HostIpc is true":                                                                                    reasonIPC,
}

// specReport is the part of a ginkgo JSON report's spec used here.
type specReport struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	LeafNodeType            string
	State                   string
	Failure                 *struct {
		Message string
	}
}

type suiteReport struct {
	SpecReports []specReport
}

func (s specReport) name() string {
	return strings.Join(append(slices.Clone(s.ContainerHierarchyTexts), s.LeafNodeText), " ")
}

func TestCritest(t *testing.T) {
	if os.Getenv("SST_CRITEST") == "" {
		t.Skip("make critest runs it (it builds critest first)")
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	critest := filepath.Join(root, "_output", "bin", "critest")
	if _, err := os.Stat(critest); err != nil {
		t.Fatalf("%s missing (make critest builds it): %v", critest, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Minute)
	defer cancel()

	registry, err := harness.StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = registry.Close() })
	nnp, err := os.ReadFile(filepath.Join(root, "_output", "imagebin", "nnp"))
	if err != nil {
		t.Fatalf("nonewprivs program (make critest builds it): %v", err)
	}
	if err := pushStandIns(registry, filepath.Join(root, "_output", "image.tar"), nnp); err != nil {
		t.Fatal(err)
	}

	d := harness.StartCRITest(ctx, t)
	if err := d.MirrorRegistry(registry.Addr(), "gcr.io", "registry.k8s.io", "k8s.gcr.io", "docker.io"); err != nil {
		t.Fatal(err)
	}
	tmp, err := sharedTempDir(d.Dir)
	if err != nil {
		t.Fatal(err)
	}

	results := map[string]map[string]string{}
	for _, handler := range []string{harness.SandboxHandler, harness.RuncHandler} {
		report := filepath.Join(d.Dir, "critest-"+handler+".json")
		cmd := exec.CommandContext(ctx, critest,
			"-runtime-endpoint", "unix://"+d.Address, "-image-endpoint", "unix://"+d.Address,
			"-runtime-handler", handler, "-ginkgo.json-report", report, "-ginkgo.no-color",
			"-ginkgo.skip", skipped)
		// SST_CRITEST_FOCUS narrows the run to matching cases, for working on one.
		if focus := os.Getenv("SST_CRITEST_FOCUS"); focus != "" {
			cmd.Args = append(cmd.Args, "-ginkgo.focus", focus)
		}
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		logPath := filepath.Join(root, "_output", "critest-"+handler+".log")
		log, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = log, log
		start := time.Now()
		runErr := cmd.Run()
		log.Close()
		t.Logf("critest %s: %v in %s (log %s)", handler, runErr, time.Since(start).Round(time.Second), logPath)
		data, err := os.ReadFile(report)
		if err != nil {
			t.Fatalf("critest %s left no report: %v (log %s)", handler, err, logPath)
		}
		var suites []suiteReport
		if err := json.Unmarshal(data, &suites); err != nil {
			t.Fatalf("critest %s report: %v", handler, err)
		}
		results[handler] = map[string]string{}
		counts := map[string]int{}
		for _, s := range suites {
			for _, spec := range s.SpecReports {
				if spec.LeafNodeType == "It" {
					results[handler][spec.name()] = spec.State
					counts[outcome(spec.State)]++
				}
			}
		}
		t.Logf("critest %s: %d passed, %d failed, %d skipped", handler, counts["passed"], counts["failed"], counts["skipped"])
	}
	names := slices.Sorted(maps.Keys(results[harness.SandboxHandler]))
	for n := range results[harness.RuncHandler] {
		if _, ok := results[harness.SandboxHandler][n]; !ok {
			names = append(names, n)
		}
	}

	var table bytes.Buffer
	w := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "sandbox\trunc\tcase")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		sandbox, runc := results[harness.SandboxHandler][n], results[harness.RuncHandler][n]
		fmt.Fprintf(w, "%s\t%s\t%s\n", sandbox, runc, n)
		_, exempt := contradictsGuarantee[n]
		switch {
		case runc == "passed" && sandbox != "passed" && !exempt:
			t.Errorf("passes on runc, %s on sandbox: %s", sandbox, n)
		case exempt && sandbox == "passed":
			t.Errorf("listed as not passing on sandbox, but passes there: %s", n)
		case exempt && runc != "passed":
			// Still true of sandbox; the stand-ins or this machine fail it on runc too.
			t.Logf("listed as contradicting a guarantee, %s on runc here: %s", runc, n)
		}
		if exempt && !bytes.Contains(readme, []byte(n)) {
			t.Errorf("README.md does not list %q", n)
		}
	}
	w.Flush()
	t.Logf("results side by side:\n%s", table.String())
	if err := os.WriteFile(filepath.Join(root, "_output", "critest-results.txt"), table.Bytes(), 0o644); err != nil {
		t.Error(err)
	}
}

// outcome folds ginkgo's spec states into passed, failed and skipped.
func outcome(state string) string {
	switch state {
	case "passed", "skipped":
		return state
	case "pending":
		return "skipped"
	}
	return "failed" // failed, panicked, interrupted, aborted, timedout
}

// skipped are cases this machine cannot run on either handler.
const skipped = "AppArmor|SELinux"

// sharedTempDir makes a directory under dir a shared mount point of its own, for critest's
// host paths: its mount-propagation cases need the source on a shared mount, and / is
// private on these machines. The daemon's Stop unmounts it.
func sharedTempDir(dir string) (string, error) {
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return "", err
	}
	if err := unix.Mount(tmp, tmp, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind %s: %w", tmp, err)
	}
	if err := unix.Mount("", tmp, "", unix.MS_SHARED, ""); err != nil {
		return "", fmt.Errorf("make %s shared: %w", tmp, err)
	}
	return tmp, nil
}
