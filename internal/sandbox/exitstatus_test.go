package sandbox

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestInitRecordNothingRecorded(t *testing.T) {
	rec, err := ReadInitRecord(t.TempDir())
	if err != nil || rec.Pid != 0 || rec.Exit != nil {
		t.Fatalf("empty bundle: %+v, %v; want an empty record and no error", rec, err)
	}
}

func TestInitRecordPidThenExit(t *testing.T) {
	bundle := t.TempDir()
	if err := WriteInitPid(bundle, 4242); err != nil {
		t.Fatal(err)
	}
	rec, err := ReadInitRecord(bundle)
	if err != nil || rec.Pid != 4242 || rec.Exit != nil {
		t.Fatalf("running init: %+v, %v; want pid 4242 and no exit", rec, err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.UTC)
	if err := WriteInitExit(bundle, InitExit{Pid: 4242, Status: 7, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	// A second write replaces the first.
	if err := WriteInitExit(bundle, InitExit{Pid: 4242, Status: 8, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	rec, err = ReadInitRecord(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Pid != 4242 || rec.Exit == nil || rec.Exit.Pid != 4242 || rec.Exit.Status != 8 || !rec.Exit.ExitedAt.Equal(at) {
		t.Fatalf("exited init: %+v (exit %+v)", rec, rec.Exit)
	}
	// Atomic writes leave no temporary files, and nobody else may read them.
	ents, err := os.ReadDir(bundle)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	if want := []string{InitExitFile, InitPidFile}; !slices.Equal(names, want) {
		t.Errorf("bundle holds %v, want %v", names, want)
	}
}

// The files read like containerd-shim-runc-v2's: runc's bare pid, and the
// runc shim's exit record (go-runc's Exit, keys as Go names them).
func TestInitRecordFormat(t *testing.T) {
	bundle := t.TempDir()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := WriteInitPid(bundle, 99); err != nil {
		t.Fatal(err)
	}
	if err := WriteInitExit(bundle, InitExit{Pid: 99, Status: 137, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(bundle, InitPidFile)); string(b) != "99" {
		t.Errorf("%s holds %q, want 99", InitPidFile, b)
	}
	b, err := os.ReadFile(filepath.Join(bundle, InitExitFile))
	if err != nil {
		t.Fatal(err)
	}
	var runcExit struct {
		Timestamp time.Time
		Pid       int
		Status    int
	}
	if err := json.Unmarshal(b, &runcExit); err != nil || runcExit.Pid != 99 || runcExit.Status != 137 || !runcExit.Timestamp.Equal(at) {
		t.Errorf("%s holds %s (%+v, %v)", InitExitFile, b, runcExit, err)
	}
	// And the runc shim's record is read back.
	if err := os.WriteFile(filepath.Join(bundle, InitExitFile), []byte(`{"Timestamp":"2026-01-02T03:04:05.000000006Z","Pid":99,"Status":3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	rec, err := ReadInitRecord(bundle)
	if err != nil || rec.Exit == nil || rec.Exit.Status != 3 || !rec.Exit.ExitedAt.Equal(at) {
		t.Errorf("runc shim record read as %+v, %v", rec.Exit, err)
	}
}

func TestInitRecordDamaged(t *testing.T) {
	for name, content := range map[string]string{
		"not json":     `{"Pid":`,
		"no pid":       `{"Timestamp":"2026-01-02T03:04:05Z","Status":1}`,
		"no time":      `{"Pid":5,"Status":1}`,
		"minus status": `{"Timestamp":"2026-01-02T03:04:05Z","Pid":5,"Status":-1}`,
	} {
		t.Run(name, func(t *testing.T) {
			bundle := t.TempDir()
			if err := WriteInitPid(bundle, 5); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bundle, InitExitFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			rec, err := ReadInitRecord(bundle)
			if err == nil || rec.Exit != nil {
				t.Errorf("damaged exit record read as %+v, %v; want an error and no exit", rec.Exit, err)
			}
			// The pid is still good for the report.
			if rec.Pid != 5 {
				t.Errorf("pid %d, want 5", rec.Pid)
			}
		})
	}
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, InitPidFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rec, err := ReadInitRecord(bundle); err == nil || rec.Pid != 0 {
		t.Errorf("damaged pid file read as %+v, %v", rec, err)
	}
}

func TestInitRecordRefusesNonsense(t *testing.T) {
	bundle := t.TempDir()
	if err := WriteInitPid(bundle, 0); err == nil {
		t.Error("pid 0 recorded")
	}
	if err := WriteInitExit(bundle, InitExit{Pid: 1, Status: -1, ExitedAt: time.Now()}); err == nil {
		t.Error("status -1 recorded")
	}
	if err := WriteInitExit(bundle, InitExit{Pid: 1, Status: 0}); err == nil {
		t.Error("exit without a time recorded")
	}
	if err := WriteInitPid(filepath.Join(bundle, "missing"), 1); err == nil {
		t.Error("pid recorded in a missing bundle")
	}
	if ents, _ := os.ReadDir(bundle); len(ents) != 0 {
		t.Errorf("refused writes left %v", ents)
	}
}
