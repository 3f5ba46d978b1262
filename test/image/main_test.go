package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func readTar(t *testing.T, r io.Reader) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

func TestLayout(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static not installed")
	}
	dir := t.TempDir()
	extra := filepath.Join(dir, "tool")
	if err := os.WriteFile(extra, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	for _, out := range []string{a, b} {
		if err := run(out, "example.com/x:v1", "/bin/busybox", "", []string{extra + ":/usr/local/bin/tool"}); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Fatal("output is not deterministic")
	}

	// Read the layout back: index -> manifest -> layer.
	blobs := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(da))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		blobs[h.Name] = data
	}
	var index ocispec.Index
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, blobs["index.json"])
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != "example.com/x:v1" {
		t.Fatalf("image name annotation = %q", got)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(blobs["blobs/sha256/"+index.Manifests[0].Digest.Encoded()], &m); err != nil {
		t.Fatal(err)
	}
	layer := readTar(t, bytes.NewReader(blobs["blobs/sha256/"+m.Layers[0].Digest.Encoded()]))
	for name, check := range map[string]func(h *tar.Header) bool{
		"usr/local/bin/tool": func(h *tar.Header) bool { return h.Mode == 0o755 && h.Typeflag == tar.TypeReg },
		"bin/sh":             func(h *tar.Header) bool { return h.Typeflag == tar.TypeLink && h.Linkname == "bin/busybox" },
		"tmp/":               func(h *tar.Header) bool { return h.Mode == 0o1777 },
		"home/user/":         func(h *tar.Header) bool { return h.Uid == 1000 && h.Gid == 1000 },
		"etc/passwd":         func(h *tar.Header) bool { return h.Mode == 0o644 },
	} {
		if h, ok := layer[name]; !ok || !check(h) {
			t.Errorf("layer entry %s wrong: %+v", name, h)
		}
	}
}
