package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/internal/orphans"
)

// containerZombies lists zombie host pids whose cgroup is inside the container's
// (/<ns>/<id>, any sub-cgroup) or whose parent is one of parents. Zombies are not listed in
// cgroup.procs, hence the scan of /proc.
func containerZombies(id string, parents map[uint32]bool) []int {
	var zs []int
	entries, _ := os.ReadDir("/proc")
	needle := "/" + d.Namespace + "/" + id
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid := procState(pid)
		if state != "Z" {
			continue
		}
		cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if strings.Contains(string(cg), needle) || parents[uint32(ppid)] {
			zs = append(zs, pid)
		}
	}
	return zs
}

// TestZombiesReaped makes an exec'd process leave a zombie child, then kills the process so
// the zombie is orphaned: the runtime's reaper (the pid 1 of the namespace the exec runs
// in) must collect it.
func TestZombiesReaped(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	// The init is a shell loop, which reaps adopted children (runc's execs join the init's
	// pid namespace, so there the init is the reaper).
	c := newContainer(t, ctx, id, oci.WithProcessArgs("sh", "-c", "while :; do sleep 1; done"))
	task, _ := startTask(t, ctx, c, nullIO())

	// sh forks `true`, then becomes `sleep`, which never waits: `true` stays a zombie.
	p, ch := startExec(t, ctx, task, "zombie-maker", nullIO(), false,
		"sh", "-c", "true & exec sleep 120")
	parents := map[uint32]bool{p.Pid(): true}
	var zs []int
	if !poll(stepTimeout, func() bool { zs = containerZombies(id, parents); return len(zs) > 0 }) {
		t.Fatalf("no zombie child of exec pid %d seen (the check itself is broken)", p.Pid())
	}
	t.Logf("zombies while their parent lives: %v", zs)
	first := zs

	// More orphans: subshells that exit at once, leaving short-lived background children.
	_, _, code := runExec(t, ctx, task, "orphans", "sh", "-c",
		"for i in 1 2 3 4 5; do (sleep 0.1 &); done")
	if code != 0 {
		t.Fatalf("orphan exec exit code %d", code)
	}

	if err := p.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill exec: %v", err)
	}
	if st := waitExit(t, ch, stepTimeout); st.ExitCode() != 137 {
		t.Fatalf("exec exit code %d, want 137", st.ExitCode())
	}
	if !poll(stepTimeout, func() bool {
		for _, z := range first {
			if s, _ := procState(z); s == "Z" {
				return false
			}
		}
		zs = containerZombies(id, nil)
		return len(zs) == 0
	}) {
		t.Fatalf("zombies left in the container after their parent died: %v (first seen %v)", describe(zs), describe(first))
	}
	// The reaper does not steal exit statuses: a fresh exec still reports its own code.
	if _, _, code := runExec(t, ctx, task, "after", "sh", "-c", "sleep 0.1 & exit 4"); code != 4 {
		t.Fatalf("exec exit code after reaping = %d, want 4", code)
	}
	for pid := range pidSet(t, ctx, task) {
		if s, _ := procState(int(pid)); s == "Z" {
			t.Fatalf("Pids lists zombie %d", pid)
		}
	}
}

func describe(pids []int) string {
	var s []string
	for _, p := range pids {
		st, pp := procState(p)
		s = append(s, fmt.Sprintf("%d(state %s ppid %d)", p, st, pp))
	}
	return strings.Join(s, " ")
}

// TestOrphansOfHostPIDReaped: a control plane in the host's PID namespace has no init of its
// own to adopt its orphans; they are reparented to the shim (a subreaper), which must reap
// them once they exit.
func TestOrphansOfHostPIDReaped(t *testing.T) {
	ctx := testCtx(t)
	id := newID(t)
	// The subshell exits at once; its background sleep is orphaned and exits 0.3 s later.
	c := newContainer(t, ctx, id, oci.WithHostNamespace(specs.PIDNamespace),
		oci.WithProcessArgs("sh", "-c", "(sleep 0.3 &); exec sleep 120"))
	startTask(t, ctx, c, nullIO())
	shims := newShims(t, nil)
	if len(shims) == 0 {
		t.Fatal("no shim process found")
	}
	zombies := func() []int {
		var out []int
		for _, s := range shims {
			for pid := range orphans.ZombieChildren(s) {
				out = append(out, pid)
			}
		}
		return out
	}
	// The orphan does become the shim's zombie (else the check below proves nothing)...
	// (The runc shim reaps on SIGCHLD, too fast to be seen; ours takes a zombie only once
	// it stayed unclaimed for a whole sweep interval.)
	if !poll(stepTimeout, func() bool { return len(zombies()) > 0 }) && !isRunc() {
		t.Fatal("the orphan never became the shim's zombie: the test proves nothing")
	}
	// ...and is reaped.
	if !poll(3*stepTimeout/2, func() bool { return len(zombies()) == 0 }) {
		t.Fatalf("zombies %v under the shim %v are never reaped", zombies(), shims)
	}
}
