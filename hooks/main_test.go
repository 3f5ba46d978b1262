package main

import (
	"strings"
	"testing"
)

// TestRunRefuses: the hook fails, naming the cause, before it touches any
// namespace: an abstract or relative holder socket, a state without a pid,
// a malformed port list from either source.
func TestRunRefuses(t *testing.T) {
	state := `{"id":"c1","pid":4242,"annotations":{"io.sandbox.reserved-ports":"80x"}}`
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"abstract socket", []string{"--socket", "@holder"}, state, "abstract names are refused"},
		{"relative socket", []string{"--socket", "holder.sock"}, state, "absolute path"},
		{"no state", []string{"--socket", "/run/h.sock"}, "", "OCI state"},
		{"no pid", []string{"--socket", "/run/h.sock"}, `{"id":"c1"}`, "no pid"},
		{"bad annotation", []string{"--socket", "/run/h.sock"}, state, `io.sandbox.reserved-ports="80x"`},
		{"bad flag", []string{"--socket", "/run/h.sock", "--ports", "8080,0"}, state, `--ports="8080,0"`},
	} {
		err := run(tc.args, strings.NewReader(tc.stdin))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	// An empty list reserves nothing and needs no namespace.
	if err := run([]string{"--socket", "/run/h.sock"}, strings.NewReader(`{"id":"c1","pid":4242,"annotations":{"io.sandbox.reserved-ports":""}}`)); err != nil {
		t.Errorf("empty annotation: %v", err)
	}
}

func TestParsePorts(t *testing.T) {
	got, err := parsePorts(" 8080, 8888 ")
	if err != nil || len(got) != 2 || got[0] != 8080 || got[1] != 8888 {
		t.Errorf("parsePorts: %v %v", got, err)
	}
	for _, bad := range []string{"65536", "-1", "a", "8080,"} {
		if _, err := parsePorts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
