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

// maxAuditFile is the audit file's size at which it is rotated (one
// previous file, .1, is kept): the file sits on the host's /run.
const maxAuditFile = 16 << 20

// maxAuditArgv bounds the argv a record keeps; what is cut is said.
const maxAuditArgv = 4 << 10

// AuditTrail is a sandbox's record of secure executions: one protojson
// line per call appended to a root-only file, the last auditKept in
// memory. One per sandbox, shared by the runners of its workspaces, so a
// workspace reset keeps it.
type AuditTrail struct {
	path string

	mu      sync.Mutex
	records []*sandboxv1.AuditRecord
}

// NewAuditTrail keeps its file at path ("": memory only).
func NewAuditTrail(path string) *AuditTrail { return &AuditTrail{path: path} }

// Add records one call (Runner.Run does for its calls; the sandbox for a
// call that took the insecure fallback). Records hold keys, never values:
// redact argv and errors before (Redact).
func (a *AuditTrail) Add(rec *sandboxv1.AuditRecord) error {
	capArgv(rec)
	return a.add(rec)
}

// Last returns the most recent limit records, oldest first (0: all kept).
func (a *AuditTrail) Last(limit int) []*sandboxv1.AuditRecord { return a.last(limit) }

// capArgv cuts a record's argv to maxAuditArgv bytes, saying so.
func capArgv(rec *sandboxv1.AuditRecord) {
	total := 0
	for i, w := range rec.Argv {
		if total+len(w) > maxAuditArgv {
			rec.Argv = append(rec.Argv[:i:i], fmt.Sprintf("[%d more words cut]", len(rec.Argv)-i))
			return
		}
		total += len(w)
	}
}

// add keeps rec and appends it to the file. Records hold keys, never
// values: Run redacts argv and errors before they get here.
func (a *AuditTrail) add(rec *sandboxv1.AuditRecord) error {
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
	if st, err := os.Stat(a.path); err == nil && st.Size()+int64(compact.Len()) > maxAuditFile {
		_ = os.Rename(a.path, a.path+".1")
	}
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	_, werr := f.Write(compact.Bytes())
	return errors.Join(werr, f.Close())
}

// last returns the most recent limit records, oldest first (0: all kept).
func (a *AuditTrail) last(limit int) []*sandboxv1.AuditRecord {
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

// Redact is argv with every word that holds a value (of at least
// minRedacted bytes) of vars replaced: for audit records and logs. It
// never makes a string of a value.
func Redact(argv []string, vars []spec.EnvVar) []string { return newRedactor(vars).argv(argv) }

// RedactText is s with every value of vars replaced.
func RedactText(s string, vars []spec.EnvVar) string { return newRedactor(vars).text(s) }

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
