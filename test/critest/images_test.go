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
	// files are added in a layer of their own, with the suite's tools (tools).
	files map[string]harness.LayerFile
}

const crTools = "k8s-staging-cri-tools/"

var standIns = []standIn{
	// framework.DefaultLinuxContainerImage: every container of the suite.
	{label: "busybox", references: []string{"e2e-test-images/busybox:1.29-2"}},
	// The web server: port 80 in the pod, 12003 on the host network.
	// The NamespaceOption cases look for nginx's pid file and its master process' command
	// line: the shell stays pid 1, with "nginx: master process" as its $0.
	{label: "nginx", references: []string{"e2e-test-images/nginx:1.14-2"}, command: webServer("nginx", 80)},
	{label: "httpd", references: []string{"e2e-test-images/httpd:2.4.39-4"}, command: webServer("httpd", 80)},
	// Prints its effective uid: setuid root, so 0 unless no_new_privs is set.
	{label: "nonewprivs", references: []string{"e2e-test-images/nonewprivs:1.3"}, command: []string{"/usr/local/bin/nnp"}},
	{label: "hostnet-nginx", references: []string{crTools + "hostnet-nginx-amd64:latest"}, command: webServer("nginx", 12003)},
	{label: "user-uid", references: []string{crTools + "test-image-user-uid:latest"}, user: "1002"},
	{label: "user-username", references: []string{crTools + "test-image-user-username:latest"}, user: "www-data", files: wwwData},
	{label: "user-uid-group", references: []string{crTools + "test-image-user-uid-group:latest"}, user: "1003:1003"},
	{label: "user-username-group", references: []string{crTools + "test-image-user-username-group:latest"}, user: "www-data:www-data", files: wwwData},
	{label: "predefined-group", references: []string{crTools + "test-image-predefined-group:latest"}, user: "1000", files: map[string]harness.LayerFile{
		"/etc/passwd": text("root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
		"/etc/group":  text("root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\nnobody:x:65534:\n"),
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

var wwwData = map[string]harness.LayerFile{
	"/etc/passwd": text("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
	"/etc/group":  text("root:x:0:\nwww-data:x:33:\nnobody:x:65534:\n"),
}

func text(s string) harness.LayerFile { return harness.LayerFile{Mode: 0o644, Content: []byte(s)} }

// webServer is busybox httpd on port, announcing itself as name in the log (the
// multi-container case looks for it there).
func webServer(name string, port int) []string {
	return []string{"sh", "-c", fmt.Sprintf("echo $$ > /var/run/nginx.pid; echo '%s stand-in on port %d'; httpd -f -p %d -h /www", name, port, port), "nginx: master process"}
}

// tools are what the suite runs that Debian's static busybox lacks: pgrep and ipcs -m, as
// scripts over /proc (what the cases read from them is the same). nnp is the nonewprivs
// image's program (_output/imagebin/nnp, built by make critest).
func tools(nnp []byte) map[string]harness.LayerFile {
	return map[string]harness.LayerFile{
		"/usr/bin/pgrep": {Mode: 0o755, Content: []byte(`#!/bin/sh
# pgrep NAME: the pids whose command name is NAME.
found=1
for d in /proc/[0-9]*; do
  if [ "$(cat "$d/comm" 2>/dev/null)" = "$1" ]; then echo "${d#/proc/}"; found=0; fi
done
exit $found
`)},
		"/usr/bin/ipcs": {Mode: 0o755, Content: []byte(`#!/bin/sh
# ipcs -m: the IPC namespace's shared memory segments (key, shmid, ...).
cat /proc/sysvipc/shm
`)},
		"/usr/local/bin/nnp": {Mode: 0o4755, Content: nnp},
	}
}

// pushStandIns builds every stand-in on the test image at baseTar, with the tools, and
// pushes it.
func pushStandIns(registry *harness.Registry, baseTar string, nnp []byte) error {
	base, err := harness.LoadLayoutImage(baseTar)
	if err != nil {
		return err
	}
	if base, err = base.AddLayer(tools(nnp)); err != nil {
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
