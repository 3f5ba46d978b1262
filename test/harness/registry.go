package harness

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Registry is a pull-only OCI distribution registry on 127.0.0.1, serving
// images built in memory. It stands in for public registries in tests that
// pull by name (critest): containerd reaches it through a hosts.toml
// mirror (MirrorRegistry), so the names the tests use stay the public ones.
type Registry struct {
	listener net.Listener
	server   *http.Server

	mu sync.Mutex
	// blobs holds every config, layer and manifest by digest.
	blobs map[digest.Digest]Blob
	// tags maps "repository:tag" to a manifest digest.
	tags map[string]digest.Digest
}

// Blob is content with its descriptor.
type Blob struct {
	Descriptor ocispec.Descriptor
	Data       []byte
}

// NewBlob is data as a blob of mediaType.
func NewBlob(mediaType string, data []byte) Blob {
	return Blob{Descriptor: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, Data: data}
}

// RegistryImage is an image to serve: its config and its layers, in order.
type RegistryImage struct {
	Config ocispec.Image
	Layers []Blob
}

// StartRegistry serves an empty registry on a free port of 127.0.0.1.
func StartRegistry() (*Registry, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &Registry{listener: listener, blobs: map[digest.Digest]Blob{}, tags: map[string]digest.Digest{}}
	r.server = &http.Server{Handler: http.HandlerFunc(r.serve)}
	go func() { _ = r.server.Serve(listener) }()
	return r, nil
}

// Addr is the registry's host:port.
func (r *Registry) Addr() string { return r.listener.Addr().String() }

// Close stops serving.
func (r *Registry) Close() error { return r.server.Close() }

// Push stores img as repository:tag and returns its manifest and config
// digests (the config digest is the image ID CRI reports).
func (r *Registry) Push(repository, tag string, img RegistryImage) (manifest, config digest.Digest, err error) {
	configData, err := json.Marshal(img.Config)
	if err != nil {
		return "", "", fmt.Errorf("registry: config of %s:%s: %w", repository, tag, err)
	}
	configBlob := NewBlob(ocispec.MediaTypeImageConfig, configData)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: configBlob.Descriptor}
	for _, l := range img.Layers {
		m.Layers = append(m.Layers, l.Descriptor)
	}
	manifestData, err := json.Marshal(m)
	if err != nil {
		return "", "", fmt.Errorf("registry: manifest of %s:%s: %w", repository, tag, err)
	}
	manifestBlob := NewBlob(ocispec.MediaTypeImageManifest, manifestData)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range append([]Blob{configBlob, manifestBlob}, img.Layers...) {
		r.blobs[b.Descriptor.Digest] = b
	}
	r.tags[repository+":"+tag] = manifestBlob.Descriptor.Digest
	return manifestBlob.Descriptor.Digest, configBlob.Descriptor.Digest, nil
}

// serve answers the distribution API's read side: /v2/, manifests by tag
// or digest, blobs by digest.
func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.Error(w, "read-only registry", http.StatusMethodNotAllowed)
		return
	}
	p := req.URL.Path
	if p == "/v2/" || p == "/v2" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		return
	}
	var b Blob
	var ok bool
	r.mu.Lock()
	if i := strings.LastIndex(p, "/manifests/"); strings.HasPrefix(p, "/v2/") && i > 0 {
		repository, reference := p[len("/v2/"):i], p[i+len("/manifests/"):]
		d, err := digest.Parse(reference)
		if err != nil {
			d = r.tags[repository+":"+reference]
		}
		b, ok = r.blobs[d]
		ok = ok && (b.Descriptor.MediaType == ocispec.MediaTypeImageManifest)
	} else if i := strings.LastIndex(p, "/blobs/"); strings.HasPrefix(p, "/v2/") && i > 0 {
		if d, err := digest.Parse(p[i+len("/blobs/"):]); err == nil {
			b, ok = r.blobs[d]
		}
	}
	r.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"not found"}]}`)
		return
	}
	w.Header().Set("Content-Type", b.Descriptor.MediaType)
	w.Header().Set("Docker-Content-Digest", b.Descriptor.Digest.String())
	w.Header().Set("Content-Length", fmt.Sprint(len(b.Data)))
	if req.Method == http.MethodGet {
		_, _ = w.Write(b.Data)
	}
}

// LoadLayoutImage reads the single image of an OCI layout tar (what
// test/image writes), to push it, or images built on it, to a Registry.
func LoadLayoutImage(path string) (RegistryImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return RegistryImage{}, err
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return RegistryImage{}, fmt.Errorf("%s: %w", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return RegistryImage{}, fmt.Errorf("%s: %w", path, err)
		}
		files[filepath.Clean(h.Name)] = data
	}
	blob := func(d digest.Digest) ([]byte, error) {
		data, ok := files[filepath.Join("blobs", d.Algorithm().String(), d.Encoded())]
		if !ok {
			return nil, fmt.Errorf("%s: blob %s missing", path, d)
		}
		return data, nil
	}
	var index ocispec.Index
	if err := json.Unmarshal(files[ocispec.ImageIndexFile], &index); err != nil || len(index.Manifests) != 1 {
		return RegistryImage{}, fmt.Errorf("%s: want an index with one manifest (%v)", path, err)
	}
	var m ocispec.Manifest
	data, err := blob(index.Manifests[0].Digest)
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err != nil {
		return RegistryImage{}, fmt.Errorf("%s: manifest: %w", path, err)
	}
	var img RegistryImage
	data, err = blob(m.Config.Digest)
	if err == nil {
		err = json.Unmarshal(data, &img.Config)
	}
	if err != nil {
		return RegistryImage{}, fmt.Errorf("%s: config: %w", path, err)
	}
	for _, l := range m.Layers {
		data, err := blob(l.Digest)
		if err != nil {
			return RegistryImage{}, err
		}
		img.Layers = append(img.Layers, Blob{Descriptor: l, Data: data})
	}
	return img, nil
}

// LayerFile is a regular file of a layer.
type LayerFile struct {
	Mode    int64
	Content []byte
}

// AddLayer returns a copy of img with an uncompressed layer of files on
// top (root-owned, parents made 0755).
func (img RegistryImage) AddLayer(files map[string]LayerFile) (RegistryImage, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for p := range files {
		for d := filepath.Dir(p); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	// Parents before children.
	slices.Sort(names)
	for _, d := range names {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}); err != nil {
			return RegistryImage{}, err
		}
	}
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		f := files[p]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: f.Mode, Size: int64(len(f.Content))}); err != nil {
			return RegistryImage{}, err
		}
		if _, err := tw.Write(f.Content); err != nil {
			return RegistryImage{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return RegistryImage{}, err
	}
	layer := NewBlob(ocispec.MediaTypeImageLayer, buf.Bytes())
	out := img
	out.Layers = append(append([]Blob(nil), img.Layers...), layer)
	out.Config.RootFS.DiffIDs = append(append([]digest.Digest(nil), img.Config.RootFS.DiffIDs...), layer.Descriptor.Digest)
	return out, nil
}
