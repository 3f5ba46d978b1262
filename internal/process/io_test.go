package process

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// A process with streams reads the caller's reader to EOF and writes to
// the caller's writers, through real pipes.
func TestStreams(t *testing.T) {
	var stdout, stderr bytes.Buffer
	s, child, err := newWaiterStdio(Stdio{Streams: &Streams{Stdin: strings.NewReader("input"), Stdout: &stdout, Stderr: &stderr}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if len(child) != 3 {
		t.Fatalf("%d child files, want 3", len(child))
	}
	s.copyPipes()
	in, err := io.ReadAll(child[0])
	if err != nil || string(in) != "input" {
		t.Fatalf("stdin: %q, %v", in, err)
	}
	if _, err := io.WriteString(child[1], "out"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(child[2], "err"); err != nil {
		t.Fatal(err)
	}
	s.closeChildFiles()
	s.copying.Wait()
	if stdout.String() != "out" || stderr.String() != "err" {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

// Streams left nil give the process /dev/null, and a terminal is refused.
func TestStreamsAbsentAndTerminal(t *testing.T) {
	s, child, err := newWaiterStdio(Stdio{Streams: &Streams{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for i, f := range child {
		if f.Name() != "/dev/null" {
			t.Errorf("stream %d is %s, want /dev/null", i, f.Name())
		}
	}
	if _, _, err := newWaiterStdio(Stdio{Terminal: true, Streams: &Streams{}}); err == nil {
		t.Fatal("terminal with streams accepted")
	}
}
