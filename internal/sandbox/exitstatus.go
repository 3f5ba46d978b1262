package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/atomicfile"
	"github.com/containerd/log"

	"github.com/sandbox-shim/sandbox-shim/internal/process"
)

// The shim's delete action runs after the shim died and can learn about the
// init only from the bundle, so the shim records its pid and exit there.
// Names and formats are containerd-shim-runc-v2's: runc's pid file and the
// runc shim's exit record.
const (
	InitPidFile  = "init.pid"
	InitExitFile = "exit.json"
)

// InitExit is the init's exit as recorded in the bundle.
type InitExit struct {
	Pid      int       `json:"Pid"`
	Status   int       `json:"Status"`
	ExitedAt time.Time `json:"Timestamp"`
}

// InitRecord is what a bundle tells about its init.
type InitRecord struct {
	// Pid is 0 when none was recorded (the init never started).
	Pid int
	// Exit is nil while the init ran: its shim died before it exited.
	Exit *InitExit
}

// WriteInitPid records the init's pid in bundle.
func WriteInitPid(bundle string, pid int) error {
	if pid <= 0 {
		return fmt.Errorf("record init pid %d in %s: not a pid", pid, bundle)
	}
	return writeAtomic(filepath.Join(bundle, InitPidFile), []byte(strconv.Itoa(pid)))
}

// WriteInitExit records the init's exit in bundle.
func WriteInitExit(bundle string, e InitExit) error {
	if err := e.validate(); err != nil {
		return fmt.Errorf("record init exit in %s: %w", bundle, err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("record init exit in %s: %w", bundle, err)
	}
	return writeAtomic(filepath.Join(bundle, InitExitFile), b)
}

// ReadInitRecord reads what bundle recorded. Missing files are no error:
// they mean nothing was recorded. A damaged file is, and leaves its part of
// the record empty while the other part is still read.
func ReadInitRecord(bundle string) (InitRecord, error) {
	var rec InitRecord
	var errs []error
	if b, err := os.ReadFile(filepath.Join(bundle, InitPidFile)); err == nil {
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pid > 0 {
			rec.Pid = pid
		} else {
			errs = append(errs, fmt.Errorf("read %s in %s: bad pid %q", InitPidFile, bundle, b))
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("read init pid: %w", err))
	}
	if b, err := os.ReadFile(filepath.Join(bundle, InitExitFile)); err == nil {
		var e InitExit
		if err := json.Unmarshal(b, &e); err != nil {
			errs = append(errs, fmt.Errorf("read %s in %s: %w", InitExitFile, bundle, err))
		} else if err := e.validate(); err != nil {
			errs = append(errs, fmt.Errorf("read %s in %s: %w", InitExitFile, bundle, err))
		} else {
			rec.Exit = &e
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("read init exit: %w", err))
	}
	return rec, errors.Join(errs...)
}

func (e InitExit) validate() error {
	if e.Pid <= 0 || e.Status < 0 || e.ExitedAt.IsZero() {
		return fmt.Errorf("invalid init exit %+v", e)
	}
	return nil
}

// writeAtomic replaces path with data in one rename: the delete action may
// run at any moment, and must never read a half-written record.
func writeAtomic(path string, data []byte) error {
	f, err := atomicfile.New(path, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Cancel()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// recordInitPid keeps the started init's pid for the delete action. A
// failure costs only that report, so it is logged, not returned.
func (sb *Sandbox) recordInitPid() {
	if err := WriteInitPid(sb.Bundle, sb.init.Pid()); err != nil {
		log.L.WithError(fmt.Errorf("sandbox %s: %w", sb.ID, err)).Warn("record init pid")
	}
}

// recordInitExit keeps the init's exit for the delete action. An init that
// never started (Abandon, status -1) has nothing to report.
func (sb *Sandbox) recordInitExit(p *process.Process) {
	status, at := p.Exit()
	if p.Pid() <= 0 || status < 0 {
		return
	}
	if err := WriteInitExit(sb.Bundle, InitExit{Pid: p.Pid(), Status: status, ExitedAt: at}); err != nil {
		log.L.WithError(fmt.Errorf("sandbox %s: %w", sb.ID, err)).Warn("record init exit")
	}
}
