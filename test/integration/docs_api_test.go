package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// docExample is a shell block of docs/api.md marked <!-- test: NAME -->.
type docExample struct {
	name, script string
	line         int
}

const docMarker = "<!-- test: "

// docExamples reads the marked blocks of a Markdown file, and fails if a
// code block holds a curl command no test runs.
func docExamples(t *testing.T, path string) []docExample {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		examples []docExample
		marked   string // the name of the marker just above, if any
		current  *docExample
		inBlock  bool
	)
	scanner := bufio.NewScanner(bytes.NewReader(b))
	for number := 1; scanner.Scan(); number++ {
		line := scanner.Text()
		switch {
		case !inBlock && strings.HasPrefix(line, docMarker):
			marked = strings.TrimSuffix(strings.TrimPrefix(line, docMarker), " -->")
		case !inBlock && strings.HasPrefix(line, "```"):
			inBlock = true
			if marked != "" {
				if line != "```sh" {
					t.Fatalf("%s:%d: example %q is not a sh block", path, number, marked)
				}
				current = &docExample{name: marked, line: number}
			}
			marked = ""
		case inBlock && line == "```":
			inBlock = false
			if current != nil {
				examples = append(examples, *current)
				current = nil
			}
		case inBlock && current != nil:
			current.script += line + "\n"
		case inBlock && strings.Contains(line, "curl "):
			t.Errorf("%s:%d: a curl example no test runs (mark it <!-- test: NAME -->): %s", path, number, line)
		}
	}
	return examples
}

// docChecks check the output of each example of docs/api.md; the helpers
// block is run before every other.
var docChecks = map[string]func(t *testing.T, out string, id string){
	"info": func(t *testing.T, out, id string) {
		var info struct {
			SandboxID, Namespace, Caller string
			HasSecureExecution           bool
			Protections                  []struct{ Name string }
		}
		mustJSON(t, out, &info)
		if info.SandboxID != id || info.Namespace != d.Namespace || info.Caller != "CALLER_HOST" || !info.HasSecureExecution || len(info.Protections) == 0 {
			t.Errorf("info: %+v", info)
		}
	},
	"set-env": func(t *testing.T, out, _ string) {
		var resp struct{ Warnings, Keys []string }
		mustJSON(t, out, &resp)
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "NPM_TOKEN") || strings.Contains(out, "npm_abc123") ||
			strings.Join(resp.Keys, ",") != "NODE_ENV,NPM_TOKEN" {
			t.Errorf("set-env: %s", out)
		}
	},
	"error": func(t *testing.T, out, _ string) {
		body, status, _ := strings.Cut(strings.TrimSpace(out), "HTTP ")
		var resp struct{ Code, Message string }
		mustJSON(t, body, &resp)
		if status != "400" || resp.Code != "invalid_argument" || !strings.Contains(resp.Message, "1NVALID") {
			t.Errorf("error: %s", out)
		}
	},
	"exec": func(t *testing.T, out, _ string) {
		stdout, stderr, exit, end := stream(t, out)
		if stdout != "hello\n" || stderr != "oops\n" || exit.ExitCode != 3 || exit.CallID == "" || end != "{}" {
			t.Errorf("exec: %s", out)
		}
	},
	"exec-decoded": func(t *testing.T, out, _ string) {
		if out != "SHOUT\nhi from /tmp\n" {
			t.Errorf("exec-decoded: %q", out)
		}
	},
	"timeout": func(t *testing.T, out, _ string) {
		if _, _, exit, end := stream(t, out); !exit.TimedOut || end != "{}" {
			t.Errorf("timeout: %s", out)
		}
	},
	"exec-secure": func(t *testing.T, out, _ string) {
		stdout, _, exit, end := stream(t, out)
		if stdout != "the token has 24 characters\n" || !exit.Isolated || exit.ExitCode != 0 || end != "{}" {
			t.Errorf("exec-secure: %s", out)
		}
	},
	"exec-secure-refused": func(t *testing.T, out, _ string) {
		var end struct {
			Error struct{ Code, Message string }
		}
		mustJSON(t, out, &end)
		if end.Error.Code != "invalid_argument" || !strings.Contains(end.Error.Message, "allow_insecure_fallback") {
			t.Errorf("exec-secure-refused: %s", out)
		}
	},
	"audit": func(t *testing.T, out, id string) {
		var resp struct {
			Records []struct {
				SandboxID, CallID, Caller string
				EnvKeys                   []string
				Isolated                  bool
			}
		}
		mustJSON(t, out, &resp)
		if len(resp.Records) != 1 || resp.Records[0].SandboxID != id || strings.Join(resp.Records[0].EnvKeys, ",") != "API_TOKEN" ||
			!resp.Records[0].Isolated || strings.Contains(out, docToken) {
			t.Errorf("audit: %s", out)
		}
	},
}

// docToken is the exec-secure example's $API_TOKEN: 24 characters.
const docToken = "tok-docs-0123456789abcde"

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("not the JSON expected: %v: %q", err, s)
	}
}

type docExit struct {
	CallID   string `json:"callId"`
	ExitCode int    `json:"exitCode"`
	TimedOut bool   `json:"timedOut"`
	Isolated bool   `json:"isolated"`
}

// stream reads unframe's lines: output messages, the exit, the end.
func stream(t *testing.T, out string) (stdout, stderr string, exit docExit, end string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("stream too short: %q", out)
	}
	for _, line := range lines[:len(lines)-1] {
		var msg struct {
			Stdout, Stderr []byte
			Exit           *docExit
		}
		mustJSON(t, line, &msg)
		stdout += string(msg.Stdout)
		stderr += string(msg.Stderr)
		if msg.Exit != nil {
			exit = *msg.Exit
		}
	}
	return stdout, stderr, exit, lines[len(lines)-1]
}

// TestDocsAPIExamples runs the curl examples of docs/api.md against a real
// sandbox, so the documentation cannot drift from the API.
func TestDocsAPIExamples(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	examples := docExamples(t, filepath.Join(root, "docs", "api.md"))
	for _, tool := range []string{"curl", "perl", "jq", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("docs/api.md's examples need %s (make deps installs it): %v", tool, err)
		}
	}
	id, _ := clientSandbox(t)
	var helpers string
	ran := map[string]bool{}
	for _, example := range examples {
		if example.name == "helpers" {
			helpers = example.script
			continue
		}
		check, ok := docChecks[example.name]
		if !ok {
			t.Errorf("docs/api.md:%d: example %q has no check in this test", example.line, example.name)
			continue
		}
		ran[example.name] = true
		t.Run(example.name, func(t *testing.T) {
			cmd := exec.CommandContext(testCtx(t), "bash", "-euo", "pipefail", "-c", helpers+example.script)
			cmd.Env = append(os.Environ(), "SOCK="+api.HostSocketPath(d.Namespace, id), "API_TOKEN="+docToken)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("docs/api.md:%d: %v\nstdout: %s\nstderr: %s", example.line, err, out, stderr.String())
			}
			t.Logf("docs/api.md:%d output:\n%s", example.line, out)
			check(t, string(out), id)
		})
	}
	for name := range docChecks {
		if !ran[name] {
			t.Errorf("docs/api.md has no example %q any more: drop its check", name)
		}
	}
	if helpers == "" {
		t.Error("docs/api.md has no helpers example")
	}
}
