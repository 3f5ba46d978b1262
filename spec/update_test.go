package spec

import (
	"errors"
	"strings"
	"testing"
)

func TestParseWorkspaceUpdate(t *testing.T) {
	for _, c := range []struct {
		ann     map[string]string
		sandbox int64
		want    WorkspaceUpdate
		bad     string // the annotation a refusal names
	}{
		{ann: nil, want: WorkspaceUpdate{}},
		{ann: map[string]string{"io.sandbox.workspace.reset": "true"}, want: WorkspaceUpdate{Reset: true}},
		{ann: map[string]string{"io.sandbox.workspace.reset": "false", "other": "x"}, want: WorkspaceUpdate{}},
		{ann: map[string]string{"io.sandbox.user.memory-limit": "256m"}, sandbox: 512 << 20, want: WorkspaceUpdate{MemoryLimit: 256 << 20}},
		{ann: map[string]string{"io.sandbox.user.memory-limit": "4g"}, want: WorkspaceUpdate{MemoryLimit: 4 << 30}},
		{ann: map[string]string{"io.sandbox.user.memory-limit": "1g"}, sandbox: 512 << 20, bad: "io.sandbox.user.memory-limit"},
		{ann: map[string]string{"io.sandbox.user.memory-limit": "lots"}, bad: "io.sandbox.user.memory-limit"},
		{ann: map[string]string{"io.sandbox.user.memory-limit": "1m"}, bad: "io.sandbox.user.memory-limit"},
		{ann: map[string]string{"io.sandbox.workspace.reset": "yes"}, bad: "io.sandbox.workspace.reset"},
	} {
		got, err := ParseWorkspaceUpdate(c.ann, c.sandbox)
		if c.bad != "" {
			var ae *AnnotationError
			if !errors.As(err, &ae) || ae.Key != c.bad || !strings.Contains(err.Error(), c.ann[c.bad]) {
				t.Errorf("%v: error %v, want one naming %s and its value", c.ann, err, c.bad)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%v: %+v, %v; want %+v", c.ann, got, err, c.want)
		}
	}
}
