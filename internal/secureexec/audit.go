package secureexec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"

	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// auditKept is how many records Audit can return; the file keeps all.
const auditKept = 1000

// auditTrail is the sandbox's record of secure executions: one protojson
// line per call appended to a root-only file, the last auditKept in memory.
type auditTrail struct {
	path string

	mu      sync.Mutex
	records []*sandboxv1.AuditRecord
}

func newAuditTrail(path string) *auditTrail { return &auditTrail{path: path} }

// add keeps rec and appends it to the file. Records hold keys, never
// values: Run redacts argv and errors before they get here.
func (a *auditTrail) add(rec *sandboxv1.AuditRecord) error {
	line, err := protojson.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode audit record: %w", err)
	}
	// protojson's spacing is not stable; one record is one line.
	var compact bytes.Buffer
	if err := json.Compact(&compact, line); err != nil {
		return fmt.Errorf("encode audit record: %w", err)
	}
	compact.WriteByte('\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	a.records = append(a.records, rec)
	if n := len(a.records); n > auditKept {
		a.records = append(a.records[:0:0], a.records[n-auditKept:]...)
	}
	if a.path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(a.path), 0o700); err != nil {
		return fmt.Errorf("audit directory: %w", err)
	}
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	_, werr := f.Write(compact.Bytes())
	return errors.Join(werr, f.Close())
}

// last returns the most recent limit records, oldest first (0: all kept).
func (a *auditTrail) last(limit int) []*sandboxv1.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.records)
	if limit <= 0 || limit > n {
		limit = n
	}
	return append([]*sandboxv1.AuditRecord(nil), a.records[n-limit:]...)
}

// redactedWord replaces what held a value of the call's env.
const redactedWord = "[REDACTED]"

// minRedacted is the shortest value redacted: shorter ones ("1", "on")
// would blank out half of every command line.
const minRedacted = 4

// redactor hides a call's values in what the shim shows of the call. It
// holds the call's own slices (cleared with them), never strings of them.
type redactor struct{ values [][]byte }

func newRedactor(vars []spec.EnvVar) redactor {
	var r redactor
	for _, v := range vars {
		if len(v.Value) >= minRedacted {
			r.values = append(r.values, v.Value)
		}
	}
	return r
}

// argv is args with every word that contains a value replaced.
func (r redactor) argv(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		for _, v := range r.values {
			if bytes.Contains([]byte(a), v) {
				out[i] = redactedWord
				break
			}
		}
	}
	return out
}

// text is s with every value replaced.
func (r redactor) text(s string) string {
	b := []byte(s)
	for _, v := range r.values {
		if bytes.Contains(b, v) {
			b = bytes.ReplaceAll(b, v, []byte(redactedWord))
		}
	}
	return string(b)
}
