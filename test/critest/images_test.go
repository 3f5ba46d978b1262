package critest

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// The stand-ins for critest's public images (pkg/validate/consts.go and images/ in
// cri-tools), all built on the test image (busybox), pushed to the local registry under
// the repositories the public names map to through the mirror. Each gets a label of its
// own, so that no two share an image ID unless critest expects them to: it removes images
// by ID, and removing one must not take another (or the pinned pause image) with it.
// Not served: test-image-digest, pinned by the digest of a real image.

// standIn is one image, and where it is served.
type standIn struct {
	// label makes the image's ID its own; stand-ins with the same label are the same image.
	label string
	// references are repository:tag in the registry.
	references []string
	// user is the config's User.
	user string
	// command, when set, is the image's Cmd (no Entrypoint).
	command []string
	// files are added in a layer of their own.
	files map[string]string
}

const crTools = "k8s-staging-cri-tools/"

var standIns = []standIn{
	// framework.DefaultLinuxContainerImage: every container of the suite.
	{label: "busybox", references: []string{"e2e-test-images/busybox:1.29-2"}},
	// The web server: port 80 in the pod, 12003 on the host network.
	{label: "nginx", references: []string{"e2e-test-images/nginx:1.14-2"}, command: []string{"httpd", "-f", "-p", "80", "-h", "/www"}},
	{label: "hostnet-nginx", references: []string{crTools + "hostnet-nginx-amd64:latest"}, command: []string{"httpd", "-f", "-p", "12003", "-h", "/www"}},
	{label: "user-uid", references: []string{crTools + "test-image-user-uid:latest"}, user: "1002"},
	{label: "user-username", references: []string{crTools + "test-image-user-username:latest"}, user: "www-data", files: wwwData},
	{label: "user-uid-group", references: []string{crTools + "test-image-user-uid-group:latest"}, user: "1003:1003"},
	{label: "user-username-group", references: []string{crTools + "test-image-user-username-group:latest"}, user: "www-data:www-data", files: wwwData},
	{label: "predefined-group", references: []string{crTools + "test-image-predefined-group:latest"}, user: "1000", files: map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"/etc/group":  "root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\nnobody:x:65534:\n",
	}},
	{label: "latest", references: []string{crTools + "test-image-latest:latest"}},
	{label: "tag-test", references: []string{crTools + "test-image-tag:test"}},
	{label: "tag-all", references: []string{crTools + "test-image-tag:all"}},
	{label: "1", references: []string{crTools + "test-image-1:latest"}},
	{label: "2", references: []string{crTools + "test-image-2:latest"}},
	{label: "3", references: []string{crTools + "test-image-3:latest"}},
	{label: "tags", references: []string{crTools + "test-image-tags:1", crTools + "test-image-tags:2", crTools + "test-image-tags:3"}},
	// registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9 map to the same repository: the
	// same image from two registries.
	{label: "pause-3.9", references: []string{"pause:3.9"}},
}

var wwwData = map[string]string{
	"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n",
	"/etc/group":  "root:x:0:\nwww-data:x:33:\nnobody:x:65534:\n",
}

// pushStandIns builds every stand-in on the test image at baseTar and pushes it.
func pushStandIns(registry *harness.Registry, baseTar string) error {
	base, err := harness.LoadLayoutImage(baseTar)
	if err != nil {
		return err
	}
	for _, s := range standIns {
		img := base
		if s.files != nil {
			if img, err = base.AddLayer(s.files); err != nil {
				return fmt.Errorf("stand-in %s: %w", s.label, err)
			}
		}
		img.Config.Config.Labels = maps.Clone(base.Config.Config.Labels)
		if img.Config.Config.Labels == nil {
			img.Config.Config.Labels = map[string]string{}
		}
		img.Config.Config.Labels["io.sandbox.test.stand-in"] = s.label
		img.Config.Config.User = s.user
		if s.command != nil {
			img.Config.Config.Entrypoint, img.Config.Config.Cmd = nil, slices.Clone(s.command)
		}
		for _, ref := range s.references {
			i := strings.LastIndex(ref, ":")
			repository, tag := ref[:i], ref[i+1:]
			if _, _, err := registry.Push(repository, tag, img); err != nil {
				return err
			}
		}
	}
	return nil
}
