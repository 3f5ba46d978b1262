package main

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"

	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/client"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		positional []string
		command    []string
		cwd        string
	}{
		{[]string{"box", "--cwd", "/w", "--", "ls", "-l", "--cwd", "x"}, []string{"box"}, []string{"ls", "-l", "--cwd", "x"}, "/w"},
		{[]string{"--cwd=/w", "box", "--", "ls"}, []string{"box"}, []string{"ls"}, "/w"},
		{[]string{"box", "A=1", "-cwd", "/w", "B=2"}, []string{"box", "A=1", "B=2"}, nil, "/w"},
		{[]string{"box", "--"}, []string{"box"}, []string{}, ""},
	} {
		fs := flag.NewFlagSet("exec", flag.ContinueOnError)
		cwd := fs.String("cwd", "", "")
		p, err := parseArgs(fs, tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if !reflect.DeepEqual(p.positional, tc.positional) || !reflect.DeepEqual(p.command, tc.command) || *cwd != tc.cwd {
			t.Errorf("%q: positional %q command %q cwd %q", tc.args, p.positional, p.command, *cwd)
		}
	}
	if _, err := parseArgs(flag.NewFlagSet("exec", flag.ContinueOnError), []string{"box", "--bogus", "--", "ls"}); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown flag: %v", err)
	}
}

func TestDurationFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "1m30s": 90 * time.Second, "2": 2 * time.Second, "0.5": 500 * time.Millisecond} {
		var d durationFlag
		if err := d.Set(in); err != nil || d.value != want {
			t.Errorf("%q: %v %v, want %v", in, d.value, err, want)
		}
	}
	for _, in := range []string{"soon", "-1s", ""} {
		var d durationFlag
		if err := d.Set(in); err == nil {
			t.Errorf("%q accepted as %v", in, d.value)
		}
	}
}

// files is an environment's file system for the tests.
func testEnvironment(vars map[string]string, files map[string]string) environment {
	return environment{
		lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		readFile: func(path string) ([]byte, error) {
			content, ok := files[path]
			if !ok {
				return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
			}
			return []byte(content), nil
		},
	}
}

func TestEnvSources(t *testing.T) {
	var sources envSources
	envFlag{sources: &sources}.Set("A=1")
	envFlag{sources: &sources}.Set("TOKEN")
	envFlag{sources: &sources, file: true}.Set("/secrets.env")
	envFlag{sources: &sources}.Set("B=x=y")
	envFlag{sources: &sources}.Set("EMPTY=")
	file := "# deploy keys\n\nexport AWS_KEY=abc \n  DB_PASSWORD=p#ss=word\r\nA=from-file\nQUOTED=\"kept\"\n"
	env, err := sources.resolve(testEnvironment(map[string]string{"TOKEN": "t0k"}, map[string]string{"/secrets.env": file}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "from-file", "TOKEN": "t0k", "AWS_KEY": "abc ", "DB_PASSWORD": "p#ss=word", "QUOTED": `"kept"`, "B": "x=y", "EMPTY": ""}
	if !reflect.DeepEqual(env, want) {
		t.Fatalf("env %q, want %q", env, want)
	}
}

// Errors name the flag, file and line, never a value.
func TestEnvErrorsNeverShowValues(t *testing.T) {
	const secret = "s3cr3t-value"
	for _, tc := range []struct {
		flagArg, file, want string
	}{
		{"MISSING", "", "MISSING is not set"},
		{secret, "", "invalid variable name"}, // a mistyped --env "$TOKEN"
		{"1" + secret + "=x", "", "invalid variable name"},
		{"", "OK=1\n" + secret + "\n", "line 2: no '='"},
		{"", "OK=1\n\n# c\nbad name=" + secret + "\n", "line 4: invalid variable name"},
		{"", "=" + secret + "\n", "line 1: empty variable name"},
	} {
		var sources envSources
		files := map[string]string{}
		if tc.file != "" {
			files["/e"] = tc.file
			envFlag{sources: &sources, file: true}.Set("/e")
		} else {
			envFlag{sources: &sources}.Set(tc.flagArg)
		}
		_, err := sources.resolve(testEnvironment(nil, files))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %q: %v, want %q", tc.flagArg, tc.file, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the value: %v", err)
		}
	}
	var sources envSources
	envFlag{sources: &sources, file: true}.Set("/none")
	if _, err := sources.resolve(testEnvironment(nil, nil)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestSetArguments(t *testing.T) {
	vars, err := setArguments([]string{"A=1", "B=", "C=x=y"})
	if err != nil || !reflect.DeepEqual(vars, map[string]string{"A": "1", "B": "", "C": "x=y"}) {
		t.Fatalf("%q %v", vars, err)
	}
	if _, err := setArguments([]string{"A=1", "hunter2"}); err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "argument 2") {
		t.Fatalf("no '=': %v", err)
	}
}

func TestExitStatus(t *testing.T) {
	var stderr bytes.Buffer
	for _, tc := range []struct {
		result client.Result
		want   int
	}{
		{client.Result{ExitCode: 0}, 0},
		{client.Result{ExitCode: 3}, 3},
		{client.Result{ExitCode: 143, Signal: 15}, 143},
		{client.Result{ExitCode: 137, Signal: 9, TimedOut: true}, 124},
	} {
		if got := exitStatus(&tc.result, &stderr); got != tc.want {
			t.Errorf("%+v: %d, want %d", tc.result, got, tc.want)
		}
	}
	if !strings.Contains(stderr.String(), "timed out") {
		t.Errorf("no timeout message: %q", stderr.String())
	}
}

func TestQuoteArgv(t *testing.T) {
	got := quoteArgv([]string{"sh", "-c", "echo it's", "", "a=b", "x/y.z"})
	want := `sh -c 'echo it'\''s' '' a=b x/y.z`
	if got != want {
		t.Fatalf("%s, want %s", got, want)
	}
}

func TestWriteInfoAndJSON(t *testing.T) {
	info := &sandboxv1.InfoResponse{
		SandboxId: "box", Namespace: "default", Caller: sandboxv1.Caller_CALLER_HOST,
		SecureExecutionUnavailable: []string{"annotation io.sandbox.secure-exec=disabled"},
		EnvKeys:                    []string{"A", "B"},
		Protections:                []*sandboxv1.Protection{{Name: "reserved-ports", Active: true, Description: "ports", Parameters: map[string]string{"ports": "8080,8888", "connect": "deny"}}},
	}
	var out bytes.Buffer
	if err := writeInfo(&out, info); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"default/box", "caller:", "host", "unavailable: annotation io.sandbox.secure-exec=disabled", "A B", "reserved-ports", "active", "connect=deny ports=8080,8888"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("info text lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := writeJSON(&out, info, true); err != nil {
		t.Fatal(err)
	}
	// Zero values too: a script reads hasSecureExecution as false, not missing.
	if !strings.Contains(out.String(), `"hasSecureExecution": false`) || !strings.Contains(out.String(), `"sandboxId": "box"`) {
		t.Errorf("info JSON:\n%s", out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{}, {"bogus"}, {"exec"}, {"exec", "box"}, {"exec", "box", "ls"}, {"exec", "box", "--"},
		{"env", "box"}, {"info", "box", "extra"}, {"-n"}, {"exec-secure", "box", "--allow-insecure-fallback=maybe", "--", "ls"},
		{"exec", "box", "--env-file", "/e", "--", "ls"}, // env files are exec-secure's
	} {
		var stdout, stderr bytes.Buffer
		if got := run(args, strings.NewReader(""), &stdout, &stderr); got != exitFailure || !strings.HasPrefix(stderr.String(), "sandboxctl: ") {
			t.Errorf("%q: status %d, stderr %q", args, got, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if got := run([]string{"--help"}, nil, &stdout, &stderr); got != 0 || !strings.Contains(stdout.String(), "exec-secure ID") {
		t.Errorf("--help: %d %q", got, stdout.String())
	}
}
