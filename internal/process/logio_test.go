package process

import (
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestParseOutput(t *testing.T) {
	for _, c := range []struct {
		raw    string
		scheme string
		path   string
		args   []string
	}{
		{"", schemeFIFO, "", nil},
		{"/run/containerd/fifo/1/id-stdout", schemeFIFO, "/run/containerd/fifo/1/id-stdout", nil},
		{"/odd:name%zz", schemeFIFO, "/odd:name%zz", nil},
		{"relative-fifo", schemeFIFO, "relative-fifo", nil},
		{"fifo:///run/x", schemeFIFO, "/run/x", nil},
		{"file:///var/log/a.log", schemeFile, "/var/log/a.log", nil},
		{"file:///var/log/../x.log", schemeFile, "/var/x.log", nil},
		{"file:///var/log/with%20space", schemeFile, "/var/log/with space", nil},
		{"binary:///usr/bin/logger", schemeBinary, "/usr/bin/logger", nil},
		// Each key then its first value, in the URI's order.
		{"binary:///l?b=2&a=1&b=3&flag", schemeBinary, "/l", []string{"b", "2", "a", "1", "flag", ""}},
		{"binary-v2:///l?_NERDCTL_INTERNAL_LOGGING=%2Fvar%2Flib", schemeBinaryV2, "/l", []string{"_NERDCTL_INTERNAL_LOGGING", "/var/lib"}},
	} {
		o, err := parseOutput(c.raw)
		if err != nil {
			t.Errorf("parseOutput(%q): %v", c.raw, err)
			continue
		}
		if o.scheme != c.scheme || o.path != c.path || !slices.Equal(o.args, c.args) {
			t.Errorf("parseOutput(%q) = %q %q %q, want %q %q %q", c.raw, o.scheme, o.path, o.args, c.scheme, c.path, c.args)
		}
	}
}

func TestParseOutputErrors(t *testing.T) {
	for _, raw := range []string{
		"nosuch:///x",
		"http://host/x",
		"file://host/var/log/x",
		"file:relative",
		"file://",
		"binary://logger",
		"binary:///l?a=%zz",
		"binary:///l?%zz=a",
		"fifo://relative",
		"%zz:x",
	} {
		_, err := parseOutput(raw)
		if err == nil {
			t.Errorf("parseOutput(%q): no error", raw)
			continue
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), raw) {
			t.Errorf("parseOutput(%q): want InvalidArgument naming the URI, got %v", raw, err)
		}
	}
}

// shLogger is a binary:// URI running script under /bin/sh.
func shLogger(scheme, script string) string {
	return (&url.URL{Scheme: scheme, Path: "/bin/sh", RawQuery: url.Values{"-c": {script}}.Encode()}).String()
}

func TestLoggerRun(t *testing.T) {
	t.Setenv("NAMESPACE", "unit-ns")
	dir := t.TempDir()
	// Closing fd 5 is readiness for a plain binary logger.
	uri := shLogger(schemeBinary, `exec 5>&-; echo "$CONTAINER_ID $CONTAINER_NAMESPACE" >`+dir+`/env; cat <&3 >`+dir+`/out; cat <&4 >`+dir+`/err`)
	fdsBefore := openFDCount(t)
	s := &stdio{cfg: Stdio{Stdout: uri, Stderr: uri, logID: "task-1"}}
	if err := s.openFIFOs(); err != nil {
		t.Fatal(err)
	}
	l := s.closers[0].(*logger)
	for i, line := range []string{"to-stdout\n", "to-stderr\n"} {
		if _, err := io.WriteString(s.out[i].w, line); err != nil {
			t.Fatal(err)
		}
		s.out[i].w.Close()
	}
	s.close()
	if l.cmd.ProcessState == nil {
		t.Fatal("logger not reaped by close")
	}
	for name, want := range map[string]string{"env": "task-1 unit-ns\n", "out": "to-stdout\n", "err": "to-stderr\n"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != want {
			t.Errorf("logger's %s: %q (%v), want %q", name, b, err, want)
		}
	}
	if n := openFDCount(t); n != fdsBefore {
		t.Errorf("%d descriptors open after the logger, %d before", n, fdsBefore)
	}
}

// TestLoggerTerminated: a logger that does not end at EOF gets SIGTERM
// after loggerEOFGrace, and Close returns once it was reaped.
func TestLoggerTerminated(t *testing.T) {
	t.Setenv("NAMESPACE", "unit-ns")
	uri := shLogger(schemeBinary, "trap 'exit 0' TERM; exec 5>&-; while :; do sleep 0.1; done")
	s := &stdio{cfg: Stdio{Stdout: uri, Stderr: uri, logID: "task-1"}}
	if err := s.openFIFOs(); err != nil {
		t.Fatal(err)
	}
	l := s.closers[0].(*logger)
	start := time.Now()
	s.close()
	if took := time.Since(start); took < loggerEOFGrace || took > loggerEOFGrace+3*time.Second {
		t.Errorf("close took %v, want a little over %v", took, loggerEOFGrace)
	}
	if l.cmd.ProcessState == nil || l.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("logger not ended by SIGTERM: %v", l.cmd.ProcessState)
	}
}

func TestLoggerFailures(t *testing.T) {
	t.Setenv("NAMESPACE", "unit-ns")
	for _, c := range []struct {
		name, uri, want string
	}{
		{"missing", "binary:///no/such/logger", "start logging binary"},
		// binary-v2 needs the byte: closing fd 5 is not enough.
		{"no-byte", shLogger(schemeBinaryV2, "exec 5>&-; sleep 30"), "without reporting ready"},
		{"exited", shLogger(schemeBinaryV2, "exit 0"), "ready"},
		// A plain binary's EOF is readiness, unless the logger failed.
		{"failed", shLogger(schemeBinary, "echo broken >&2; exit 7"), "broken"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fdsBefore := openFDCount(t)
			start := time.Now()
			s := &stdio{cfg: Stdio{Stdout: c.uri, Stderr: c.uri, logID: "task-1"}}
			err := s.openFIFOs()
			s.close()
			if err == nil || !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), c.uri) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want FailedPrecondition naming %s and %q, got %v", c.uri, c.want, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("failure took %v", d)
			}
			if n := openFDCount(t); n != fdsBefore {
				t.Errorf("%d descriptors open after the failure, %d before", n, fdsBefore)
			}
		})
	}
}

func openFDCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
