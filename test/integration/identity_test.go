package integration

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Identities critest and real images use: a non-root uid in group 0 (the
// OpenShift / bitnami convention), and supplementary groups.

// withAdditionalGids sets the process's supplementary groups as given,
// without the image lookups of oci.WithAdditionalGIDs.
func withAdditionalGids(gids ...uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		s.Process.User.AdditionalGids = slices.Clone(gids)
		return nil
	}
}

// TestExecUserWithRootGroup: a container whose process runs as 1001:0
// (oci.WithUIDGID, which also lists 0 as a supplementary group) starts, and
// an exec in it runs as uid 1001. The runc shim keeps gid 0; io.sandbox.v1
// never runs user code with group root: it gives the exec its uid as gid
// (1001) and no group 0.
func TestExecUserWithRootGroup(t *testing.T) {
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("sleep", "120"), oci.WithUIDGID(1001, 0))
	task, _ := startTask(t, ctx, c, nullIO())
	out, stderr, code, err := tryExec(t, ctx, task, "id", processSpec(t, ctx, task, false, "sh", "-c", "id -u; id -g; id -G"))
	if err != nil {
		t.Fatalf("exec in a container running as 1001:0: %v (want it to run as uid 1001)", err)
	}
	if code != 0 {
		t.Fatalf("exec `id` in a container running as 1001:0: exit %d, stdout %q, stderr %q; want exit 0", code, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("exec `id -u; id -g; id -G` printed %q, want three lines", out)
	}
	uid, gid, groups := lines[0], lines[1], strings.Fields(lines[2])
	if uid != "1001" {
		t.Errorf("exec uid = %s, want 1001 (the container's user)", uid)
	}
	if isRunc() {
		if gid != "0" {
			t.Errorf("runc shim: exec gid = %s, want the container's 0", gid)
		}
		return
	}
	if gid == "0" {
		t.Errorf("exec gid = 0: user code must not run with group root")
	} else if gid != "1001" {
		t.Errorf("exec gid = %s, want 1001 (the uid stands in for the root group)", gid)
	}
	if slices.Contains(groups, "0") {
		t.Errorf("exec groups %v include 0: user code must not have group root", groups)
	}
}

// TestExecSupplementaryGroups: execs keep the supplementary groups of the
// container's process (AdditionalGids 0, 2000, 3000 for user 1000:1000), and
// an exec whose own process spec lists groups (0, 4000, 5000) gets those.
// The runc shim gives them all, 0 included; io.sandbox.v1 gives all but 0.
func TestExecSupplementaryGroups(t *testing.T) {
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("sleep", "120"),
		oci.WithUIDGID(1000, 1000), withAdditionalGids(0, 2000, 3000))
	task, _ := startTask(t, ctx, c, nullIO())

	check := func(what string, ps *specs.Process, want []string) {
		t.Helper()
		out, stderr, code, err := tryExec(t, ctx, task, what, ps)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if code != 0 {
			t.Fatalf("%s: `id -G` exit %d, stderr %q", what, code, stderr)
		}
		groups := strings.Fields(out)
		for _, g := range want {
			if !slices.Contains(groups, g) {
				t.Errorf("%s: `id -G` = %v, want it to list group %s (AdditionalGids %v)", what, groups, g, ps.User.AdditionalGids)
			}
		}
		if isRunc() {
			if !slices.Contains(groups, "0") {
				t.Errorf("runc shim, %s: `id -G` = %v, want group 0 listed as asked", what, groups)
			}
		} else if slices.Contains(groups, "0") {
			t.Errorf("%s: `id -G` = %v includes 0: user code must not have group root", what, groups)
		}
	}

	check("container-groups", processSpec(t, ctx, task, false, "id", "-G"), []string{"2000", "3000"})

	own := processSpec(t, ctx, task, false, "id", "-G")
	own.User.AdditionalGids = []uint32{0, 4000, 5000}
	check("exec-groups", own, []string{"4000", "5000"})
}
