package manager

import (
	"context"
	"testing"
	"time"

	"github.com/sandbox-shim/sandbox-shim/internal/sandbox"
)

func TestDeadShimStatus(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

	exited := t.TempDir()
	if err := sandbox.WriteInitPid(exited, 41); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.WriteInitExit(exited, sandbox.InitExit{Pid: 41, Status: 7, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	if st := deadShimStatus(ctx, "exited", exited); st.Pid != 41 || st.ExitStatus != 7 || !st.ExitedAt.Equal(at) {
		t.Errorf("recorded exit reported as %+v", st)
	}

	// The shim died under a running init, which the cleanup killed.
	running := t.TempDir()
	if err := sandbox.WriteInitPid(running, 42); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if st := deadShimStatus(ctx, "running", running); st.Pid != 42 || st.ExitStatus != 137 || st.ExitedAt.Before(before) {
		t.Errorf("killed init reported as %+v", st)
	}

	// Nothing recorded (the init never started): as before, pid 0.
	if st := deadShimStatus(ctx, "none", t.TempDir()); st.Pid != 0 || st.ExitStatus != 137 || st.ExitedAt.Before(before) {
		t.Errorf("no record reported as %+v", st)
	}
}
