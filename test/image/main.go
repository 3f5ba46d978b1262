// Command image writes the test image: a single-layer OCI image layout tar
// (for `ctr image import`) whose rootfs is Debian's static busybox, a few
// users, and any extra host files given with -add. Images cannot be pulled
// here, so the tests build their own. The output is byte-for-byte
// deterministic, so it only changes when its inputs do.
package main

import (
	"archive/tar"
	"bytes"
	_ "crypto/sha256" // registers the hash go-digest uses
	"debug/elf"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// mtime is fixed so the same inputs give the same bytes.
var mtime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

type addFlag []string

func (a *addFlag) String() string     { return strings.Join(*a, ",") }
func (a *addFlag) Set(v string) error { *a = append(*a, v); return nil }

func main() {
	out := flag.String("o", "_output/image.tar", "output OCI layout tar")
	name := flag.String("name", "docker.io/sandbox-shim/test:latest", "image name (io.containerd.image.name)")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary (Debian busybox-static)")
	var adds addFlag
	flag.Var(&adds, "add", "SRC:DST: add host file SRC at DST with mode 0755 (repeatable)")
	entrypoint := flag.String("entrypoint", "", "the image's entrypoint, one path (default: none, cmd /bin/sh)")
	flag.Parse()
	if err := run(*out, *name, *busybox, *entrypoint, adds); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// entry is one layer member; the layer is written from a sorted set of these.
type entry struct {
	typ      byte
	mode     int64
	uid, gid int
	data     []byte // regular files
	link     string // hard links
}

type rootfs map[string]*entry

func (r rootfs) dir(p string, mode int64, uid int) {
	r[p] = &entry{typ: tar.TypeDir, mode: mode, uid: uid, gid: uid}
}

// parents adds 0755 root directories for every missing ancestor of p.
func (r rootfs) parents(p string) {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := r[d]; !ok {
			r.dir(d, 0o755, 0)
		}
	}
}

func (r rootfs) file(p string, mode int64, data []byte) {
	r.parents(p)
	r[p] = &entry{typ: tar.TypeReg, mode: mode, data: data}
}

func run(out, name, busybox, entrypoint string, adds []string) error {
	if err := checkStatic(busybox); err != nil {
		return err
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	list, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("%s --list-full: %w", busybox, err)
	}

	r := rootfs{}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "home", "var"} {
		r.dir(d, 0o755, 0)
	}
	r.dir("proc", 0o555, 0)
	r.dir("sys", 0o555, 0)
	r.dir("root", 0o700, 0)
	r.dir("tmp", 0o1777, 0)
	r.dir("var/tmp", 0o1777, 0)
	r.dir("home/user", 0o755, 1000)
	r.file("bin/busybox", 0o755, bb)
	for _, l := range strings.Fields(string(list)) {
		p := strings.TrimPrefix(path.Clean(l), "/")
		if p == "bin/busybox" || p == "." {
			continue
		}
		r.parents(p)
		r[p] = &entry{typ: tar.TypeLink, mode: 0o755, link: "bin/busybox"}
	}
	r.file("etc/passwd", 0o644, []byte(
		"root:x:0:0:root:/root:/bin/sh\n"+
			"user:x:1000:1000:user:/home/user:/bin/sh\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	r.file("etc/group", 0o644, []byte("root:x:0:\nuser:x:1000:\nnobody:x:65534:\n"))
	for _, a := range adds {
		src, dst, ok := strings.Cut(a, ":")
		dst = strings.TrimPrefix(path.Clean("/"+dst), "/")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("bad -add %q: want SRC:DST", a)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("-add: %w", err)
		}
		r.file(dst, 0o755, data)
	}

	layer, err := r.tar()
	if err != nil {
		return err
	}
	return writeLayout(out, name, entrypoint, layer)
}

// checkStatic rejects a dynamically linked busybox, which would not run in
// the image (it has no libc).
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s (install busybox-static): %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; install busybox-static", p)
		}
	}
	return nil
}

// tar writes directories first, then files, then hard links, each sorted,
// so parents and link targets always precede what needs them.
func (r rootfs) tar() ([]byte, error) {
	names := make([]string, 0, len(r))
	for p := range r {
		names = append(names, p)
	}
	rank := map[byte]int{tar.TypeDir: 0, tar.TypeReg: 1, tar.TypeLink: 2}
	sort.Slice(names, func(i, j int) bool {
		a, b := r[names[i]], r[names[j]]
		if rank[a.typ] != rank[b.typ] {
			return rank[a.typ] < rank[b.typ]
		}
		return names[i] < names[j]
	})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		e := r[p]
		h := &tar.Header{
			Typeflag: e.typ,
			Name:     p,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			ModTime:  mtime,
			Format:   tar.FormatPAX,
		}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg:
			h.Size = int64(len(e.data))
		case tar.TypeLink:
			h.Linkname = e.link
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer %s: %w", p, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, fmt.Errorf("layer %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{
		desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))},
		data: data,
	}
}

func jsonBlob(mediaType string, v any) (blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return blob{}, fmt.Errorf("marshal %s: %w", mediaType, err)
	}
	return newBlob(mediaType, data), nil
}

func writeLayout(out, name, entrypoint string, layer []byte) error {
	platform := ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	layerBlob := newBlob(ocispec.MediaTypeImageLayer, layer)
	imageConfig := ocispec.ImageConfig{
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cmd: []string{"/bin/sh"},
	}
	if entrypoint != "" {
		imageConfig.Entrypoint, imageConfig.Cmd = []string{entrypoint}, nil
	}
	config, err := jsonBlob(ocispec.MediaTypeImageConfig, ocispec.Image{
		Platform: platform,
		Config:   imageConfig,
		// Uncompressed layer: its diff ID is its digest.
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerBlob.desc.Digest}},
	})
	if err != nil {
		return err
	}
	manifest, err := jsonBlob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.desc,
		Layers:    []ocispec.Descriptor{layerBlob.desc},
	})
	if err != nil {
		return err
	}
	mdesc := manifest.desc
	mdesc.Platform = &platform
	tag := "latest"
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		tag = name[i+1:]
	}
	mdesc.Annotations = map[string]string{
		"io.containerd.image.name": name,
		ocispec.AnnotationRefName:  tag,
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{mdesc},
	})
	if err != nil {
		return fmt.Errorf("marshal index: %w", err)
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return fmt.Errorf("marshal oci-layout: %w", err)
	}

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("create output dir: %w", err)
	}
	// Written beside the target and renamed, so make never sees a partial file.
	tmp, err := os.CreateTemp(filepath.Dir(out), ".image-*.tar")
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	add := func(p string, data []byte, typ byte) error {
		h := &tar.Header{Typeflag: typ, Name: p, Mode: 0o644, ModTime: mtime, Size: int64(len(data)), Format: tar.FormatPAX}
		if typ == tar.TypeDir {
			h.Mode, h.Size = 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if _, err := io.Copy(tw, bytes.NewReader(data)); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		return nil
	}
	steps := []struct {
		p    string
		data []byte
		typ  byte
	}{
		{ocispec.ImageLayoutFile, layout, tar.TypeReg},
		{ocispec.ImageIndexFile, index, tar.TypeReg},
		{"blobs/", nil, tar.TypeDir},
		{"blobs/sha256/", nil, tar.TypeDir},
	}
	for _, b := range []blob{layerBlob, config, manifest} {
		steps = append(steps, struct {
			p    string
			data []byte
			typ  byte
		}{"blobs/sha256/" + b.desc.Digest.Encoded(), b.data, tar.TypeReg})
	}
	for _, s := range steps {
		if err := add(s.p, s.data, s.typ); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		tmp.Close()
		return fmt.Errorf("close tar: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close output: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("chmod output: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("rename output: %w", err)
	}
	return nil
}
