package integration

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestUserNamespaceContainer: a container with a user namespace of its own
// (`ctr run --uidmap/--gidmap`, its snapshot chowned to the mapping) and
// the default reserved ports. The shim makes the network namespace owned by
// that user namespace to reserve the ports in, so the control plane mounts
// sysfs as under runc; the workspace runs in the same user namespace as its
// uid 1000, sees the image's owners, and cannot bind a reserved port.
func TestUserNamespaceContainer(t *testing.T) {
	ctx := testCtx(t)
	const base = 310000
	mapping := []specs.LinuxIDMapping{{ContainerID: 0, HostID: base, Size: 65536}}
	id := newID(t)
	c := imageContainer(t, ctx, id, func(img client.Image) []client.NewContainerOpts {
		return []client.NewContainerOpts{
			client.WithUserNSRemappedSnapshot(id, img, mapping, mapping),
			client.WithRuntime(runtimeName, nil),
			client.WithNewSpec(oci.WithImageConfig(img), oci.WithUserNamespace(mapping, mapping),
				oci.WithProcessArgs("sleep", "120")),
		}
	})
	task, _ := startTask(t, ctx, c, nullIO())

	uidMap, err := os.ReadFile("/proc/" + strconv.Itoa(int(task.Pid())) + "/uid_map")
	if err != nil || strings.Join(strings.Fields(string(uidMap)), " ") != "0 310000 65536" {
		t.Errorf("control plane uid_map %q (%v), want 0 310000 65536", uidMap, err)
	}
	// The control plane's sysfs is its network namespace's: only lo.
	if out, err := readDirInContainer(task.Pid(), "/sys/class/net"); err != nil || out != "lo" {
		t.Errorf("control plane /sys/class/net = %q (%v), want lo alone", out, err)
	}
	out, stderr, code := runExec(t, ctx, task, "ids", "sh", "-c", "id -u; cat /proc/self/uid_map; stat -c %u:%g /bin/busybox; ls /sys/class/net")
	wantUID := "1000"
	if isRunc() {
		wantUID = "0" // runc's exec is the container's root
	}
	if got := strings.Join(strings.Fields(out), " "); code != 0 || got != wantUID+" 0 310000 65536 0:0 lo" {
		t.Errorf("workspace: %q (exit %d, stderr %q), want uid 1000, the mapping, a root-owned rootfs and sysfs of the sandbox's network", got, code, stderr)
	}
	if isRunc() {
		return
	}
	out, stderr, code = runExec(t, ctx, task, "bind", "attacker", "bind-reserved", "127.0.0.1", "8080", "8888")
	if code != 0 || !strings.Contains(out, "BLOCKED") {
		t.Errorf("bind-reserved in a user namespace: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = runExec(t, ctx, task, "kill", "sh", "-c", "kill -9 -1; echo done")
	if st := taskStatus(t, ctx, task); st != client.Running {
		t.Errorf("control plane after kill -9 -1 from user code: %v (exec exit %d, %q)", st, code, out)
	}
}

// readDirInContainer lists a directory of pid's root, names joined by
// spaces.
func readDirInContainer(pid uint32, dir string) (string, error) {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(int(pid)) + "/root" + dir)
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " "), nil
}
