package spec

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/api"
)

func secureExecOptions(t *testing.T, s *specs.Spec) SecureExecOptions {
	o := workspaceOptions(t, s)
	o.CgroupPath = "/default/sb1/user/secure-1"
	return SecureExecOptions{Workspace: o, Homes: []string{"/home/user"}}
}

func TestSecureExecSpecGolden(t *testing.T) {
	s := bundle(t)
	w, err := SecureExecSpec(s, secureExecOptions(t, s))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "secureexec.golden.json", w)
}

// TestSecureExecIsWorkspace: a secure exec's container is the workspace's,
// built by the same code, but for the few differences stated here.
func TestSecureExecIsWorkspace(t *testing.T) {
	s := bundle(t)
	o := secureExecOptions(t, s)
	sec, ws := bothSpecs(t, s, o)
	if !slices.Equal(sec.Linux.Namespaces, ws.Linux.Namespaces) {
		t.Errorf("namespaces %v, want the workspace's %v", sec.Linux.Namespaces, ws.Linux.Namespaces)
	}
	for name, same := range map[string]bool{
		"seccomp":   equalJSON(t, sec.Linux.Seccomp, ws.Linux.Seccomp),
		"process":   equalJSON(t, sec.Process, ws.Process),
		"masked":    slices.Equal(sec.Linux.MaskedPaths, ws.Linux.MaskedPaths),
		"readonly":  slices.Equal(sec.Linux.ReadonlyPaths, ws.Linux.ReadonlyPaths),
		"sysctls":   equalJSON(t, sec.Linux.Sysctl, ws.Linux.Sysctl),
		"devices":   equalJSON(t, sec.Linux.Resources.Devices, ws.Linux.Resources.Devices),
		"memory":    equalJSON(t, sec.Linux.Resources.Memory, ws.Linux.Resources.Memory),
		"root":      equalJSON(t, sec.Root, ws.Root),
		"no hooks":  sec.Hooks == nil,
		"cgroup":    sec.Linux.CgroupsPath == "/default/sb1/user/secure-1",
		"pids":      *sec.Linux.Resources.Pids.Limit == ExecPidsLimit(o.Workspace.Settings.PidsLimit),
		"uid":       sec.Process.User.UID == o.Workspace.Settings.UID && sec.Process.User.UID != 0,
		"core":      slices.ContainsFunc(sec.Process.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_CORE" && r.Hard == 0 }),
		"nnp":       sec.Process.NoNewPrivileges,
		"no caps":   len(sec.Process.Capabilities.Bounding)+len(sec.Process.Capabilities.Effective) == 0,
		"oom score": *sec.Process.OOMScoreAdj == workspaceOOMScoreAdj,
	} {
		if !same {
			t.Errorf("%s: secure exec differs from the workspace", name)
		}
	}
	mounts := map[string]specs.Mount{}
	for _, m := range sec.Mounts {
		mounts[m.Destination] = m
	}
	caps := WorkspaceLeftoverCaps(o.Workspace.Settings.MemoryLimit, 0)
	quarter := tmpfsCap(caps.Budget / 4)
	home, ok := mounts["/home/user"]
	if !ok || home.Type != "tmpfs" || !slices.Contains(home.Options, "mode=0700") || !slices.Contains(home.Options, "uid=1000") ||
		!slices.Equal(home.Options[len(home.Options)-2:], quarter.options()) {
		t.Errorf("private HOME %+v", home)
	}
	if tmp := mounts["/tmp"]; tmp.Type != "tmpfs" || !slices.Equal(tmp.Options[len(tmp.Options)-2:], quarter.options()) {
		t.Errorf("private /tmp %+v", tmp)
	}
	for _, dst := range []string{PlatformPtyDir, PlatformPtyDir + "/pts"} {
		if _, ok := mounts[dst]; ok {
			t.Errorf("%s in a secure exec: it never has a terminal", dst)
		}
	}
	if r := mounts[ReaperPath]; r.Source != o.Workspace.Reaper || !slices.Contains(r.Options, "ro") {
		t.Errorf("reaper mount %+v", r)
	}
	for dst, m := range mounts {
		if isBind(m) && dst != ReaperPath && dst != "/etc/hosts" && dst != "/data" {
			t.Errorf("bundle bind mount %s reached the secure exec", dst)
		}
	}
	// Without a HOME to cover, none is mounted (HOME is then /tmp).
	o.Homes = nil
	bare, err := SecureExecSpec(s, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(bare.Mounts) != len(sec.Mounts)-1 {
		t.Errorf("%d mounts without a HOME, want %d", len(bare.Mounts), len(sec.Mounts)-1)
	}
	for _, bad := range []string{"/", "relative", "/tmp", "/tmp/"} {
		o.Homes = []string{"/home/user", bad}
		if _, err := SecureExecSpec(s, o); err == nil {
			t.Errorf("HOME %q accepted", bad)
		}
	}
	// Two homes (the env's and the passwd entry's) are each covered; the
	// private rootfs replaces the bundle's root.
	o.Homes, o.Rootfs = []string{"/home/user", "/srv/u", "/home/user/"}, "/run/x/secure-rootfs/sb.secure-1"
	two, err := SecureExecSpec(s, o)
	if err != nil {
		t.Fatal(err)
	}
	if two.Root.Path != o.Rootfs || len(two.Mounts) != len(sec.Mounts)+1 {
		t.Errorf("root %q, %d mounts (want %d)", two.Root.Path, len(two.Mounts), len(sec.Mounts)+1)
	}
	o.Rootfs = "relative"
	if _, err := SecureExecSpec(s, o); err == nil {
		t.Error("a relative rootfs accepted")
	}
	o.Rootfs, o.Workspace.CgroupPath = "", ""
	if _, err := SecureExecSpec(s, o); err == nil {
		t.Error("a secure exec without a cgroup leaf accepted")
	}
}

func TestPasswdHome(t *testing.T) {
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nweird:x:1001:1001::/:/bin/sh\nrel:x:1002:1002::home:/bin/sh\nshort:x:1003\n")
	for uid, want := range map[uint32]string{0: "/root", 1000: "/home/user", 1001: "", 1002: "", 1003: "", 4242: ""} {
		if got := PasswdHome(passwd, uid); got != want {
			t.Errorf("PasswdHome(%d) = %q, want %q", uid, got, want)
		}
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	return jsonOf(t, a) == jsonOf(t, b)
}

// TestNoControlPlaneMounts: the sandbox API's socket directory never
// reaches user code, not even when the annotations list it.
func TestNoControlPlaneMounts(t *testing.T) {
	s := bundle(t)
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: api.ControlPlaneSocketDir, Type: "bind", Source: api.HostDir("default", "sb1") + "/control-plane", Options: []string{"rbind"}},
		specs.Mount{Destination: "/srv/api", Type: "bind", Source: api.HostDir("default", "sb1"), Options: []string{"rbind"}},
		specs.Mount{Destination: "/run/secrets/db", Type: "bind", Source: "/var/lib/secrets/db", Options: []string{"rbind"}},
	)
	o := secureExecOptions(t, s)
	o.Workspace.Settings.UserMounts = append(o.Workspace.Settings.UserMounts, api.ControlPlaneSocketDir, "/srv/api")
	sec, ws := bothSpecs(t, s, o)
	for name, w := range map[string]*specs.Spec{"secure exec": sec, "workspace": ws} {
		for _, m := range w.Mounts {
			if strings.HasPrefix(m.Source, api.HostRunDir) || strings.HasPrefix(m.Destination, api.ControlPlaneSocketDir) || m.Destination == "/run/secrets/db" {
				t.Errorf("%s has %s from %s", name, m.Destination, m.Source)
			}
		}
	}
}

func TestSecureHome(t *testing.T) {
	for env, want := range map[string]string{
		"HOME=/home/user": "/home/user", "HOME=/root/": "/root", "HOME=/": "", "HOME=rel": "", "HOME=/tmp": "", "": "",
	} {
		if got := SecureHome([]string{"PATH=/bin", env}); got != want {
			t.Errorf("SecureHome(%q) = %q, want %q", env, got, want)
		}
	}
	if SecureHomeEnv("") != "HOME=/tmp" || SecureHomeEnv("/home/u") != "HOME=/home/u" {
		t.Error("SecureHomeEnv")
	}
	for _, c := range []struct {
		dir, home string
		in        bool
	}{{"/home/u", "/home/u", true}, {"/home/u/app", "/home/u", true}, {"/home/user", "/home/u", false}, {"/", "/home/u", false}, {"/home/u", "", false}} {
		if Within(c.dir, c.home) != c.in {
			t.Errorf("Within(%q, %q) != %v", c.dir, c.home, c.in)
		}
	}
}

// TestExecRequestSecrets: a call's variables follow Env, counted in envc;
// bad ones are refused by name, never echoing a value.
func TestExecRequestSecrets(t *testing.T) {
	req := ExecRequest{Args: []string{"env"}, Env: []string{"PATH=/bin"}, Identity: Identity{UID: 1000, GID: 1000},
		Secrets: []EnvVar{{Name: "DB_PASSWORD", Value: []byte("hunter2")}, {Name: "EMPTY"}}}
	b, err := req.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if cap(b) != len(b) {
		t.Errorf("buffer of %d bytes for %d: sized ahead, it never grows (and leaves no copy)", cap(b), len(b))
	}
	h := decodeHeader(t, b)
	if h.envc != 3 {
		t.Errorf("envc %d, want 3", h.envc)
	}
	if !slices.Equal(h.strings, []string{"/", "env", "PATH=/bin", "DB_PASSWORD=hunter2", "EMPTY="}) {
		t.Errorf("strings %q", h.strings)
	}
	if binary.NativeEndian.Uint32(b[24:]) != 3 {
		t.Error("envc")
	}
	const canary = "canary-value-42"
	for name, v := range map[string]EnvVar{
		"NUL":       {Name: "TOKEN", Value: []byte(canary + "\x00x")},
		"= in name": {Name: "A=" + "B", Value: []byte(canary)},
		"1 MiB":     {Name: "BIG", Value: []byte(canary + strings.Repeat("x", 1<<20))},
		"empty":     {Name: "", Value: []byte(canary)},
	} {
		r := req
		r.Secrets = []EnvVar{v}
		_, err := r.Encode()
		if !errors.Is(err, ErrInvalidEnv) {
			t.Errorf("%s: %v, want ErrInvalidEnv", name, err)
			continue
		}
		if strings.Contains(err.Error(), canary) {
			t.Errorf("%s: error shows the value: %v", name, err)
		}
	}
	// The whole request stays within what a waiter reads.
	r := req
	big := make([]EnvVar, 40)
	for i := range big {
		big[i] = EnvVar{Name: "V" + strings.Repeat("x", i), Value: make([]byte, MaxEnvString-100)}
		for j := range big[i].Value {
			big[i].Value[j] = 'a'
		}
	}
	r.Secrets = big
	if _, err := r.Encode(); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("oversized request: %v", err)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// bothSpecs builds a secure exec's spec and the workspace's from one bundle.
func bothSpecs(t *testing.T, s *specs.Spec, o SecureExecOptions) (secure, workspace *specs.Spec) {
	t.Helper()
	secure, err := SecureExecSpec(s, o)
	if err != nil {
		t.Fatal(err)
	}
	workspace, err = WorkspaceSpec(s, o.Workspace)
	if err != nil {
		t.Fatal(err)
	}
	return secure, workspace
}

// TestSecureExecNoCgroupfs: the workspace keeps the bundle's cgroup
// filesystem (read-only); a secure exec gets none.
func TestSecureExecNoCgroupfs(t *testing.T) {
	s := bundle(t)
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}})
	has := func(w *specs.Spec) bool {
		return slices.ContainsFunc(w.Mounts, func(m specs.Mount) bool { return m.Type == "cgroup" || m.Destination == "/sys/fs/cgroup" })
	}
	ws, err := WorkspaceSpec(s, workspaceOptions(t, s))
	if err != nil {
		t.Fatal(err)
	}
	if !has(ws) {
		t.Error("the workspace lost the bundle's cgroupfs")
	}
	sec, err := SecureExecSpec(s, secureExecOptions(t, s))
	if err != nil {
		t.Fatal(err)
	}
	if has(sec) {
		t.Error("a secure exec got the cgroupfs")
	}
}

// TestSecureExecCopy: a copy for another container is what converting the
// bundle spec for it gives, and changing the copy's cgroup resources
// leaves the original alone.
func TestSecureExecCopy(t *testing.T) {
	s := bundle(t)
	o := secureExecOptions(t, s)
	first, err := SecureExec("sb1.secure-1", "/bundle", s, o)
	if err != nil {
		t.Fatal(err)
	}
	o.Workspace.CgroupPath = "/default/sb1/user/secure-2"
	o.Rootfs = "/run/state/secure-2/rootfs"
	want, err := SecureExec("sb1.secure-2", "/bundle", s, o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := SecureExecCopy(first, o.Workspace.CgroupPath, o.Rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if !equalJSON(t, got, want) {
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(want)
		t.Errorf("copy differs from a conversion:\n got %s\nwant %s", a, b)
	}
	got.Cgroups.Resources.Freezer = "FROZEN"
	if first.Cgroups.Resources.Freezer != "" || first.Cgroups.Path != "/default/sb1/user/secure-1" {
		t.Error("the copy shares its cgroup with the original")
	}
	noRootfs, err := SecureExecCopy(first, "/default/sb1/user/secure-3", "")
	if err != nil || noRootfs.Rootfs != first.Rootfs {
		t.Errorf("without a rootfs view: %v, rootfs %q, want the original's %q", err, noRootfs.Rootfs, first.Rootfs)
	}
	for _, bad := range [][2]string{{"", ""}, {"/c", "relative/rootfs"}} {
		if _, err := SecureExecCopy(first, bad[0], bad[1]); err == nil {
			t.Errorf("SecureExecCopy(%q, %q) succeeded", bad[0], bad[1])
		}
	}
}
