package spec

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func bundle(t *testing.T) *specs.Spec {
	t.Helper()
	b, err := os.ReadFile("testdata/bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./spec -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; run go test ./spec -update and review the diff", name)
	}
}

func workspaceOptions(t *testing.T, s *specs.Spec) WorkspaceOptions {
	st, err := ParseSettings(s)
	if err != nil {
		t.Fatal(err)
	}
	return WorkspaceOptions{Settings: st, NetNS: "/proc/42/fd/7", UTSNS: "/proc/42/fd/8",
		CgroupPath: "/default/sb1/user", Reaper: "/opt/sandbox/bin/sandbox-reaper"}
}

func TestWorkspaceSpecGolden(t *testing.T) {
	s := bundle(t)
	w, err := WorkspaceSpec(s, workspaceOptions(t, s))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "workspace.golden.json", w)
}

func TestControlPlaneSpecGolden(t *testing.T) {
	s := bundle(t)
	c, err := ControlPlaneSpec(s, "/default/sb1/control")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "controlplane.golden.json", c)
	if s.Linux.CgroupsPath == c.Linux.CgroupsPath {
		t.Error("ControlPlaneSpec modified its input")
	}
}

// The properties the guarantees rest on, stated outright so that a golden
// file regenerated without review cannot hide their loss.
func TestWorkspaceIsolation(t *testing.T) {
	s := bundle(t)
	w, err := WorkspaceSpec(s, workspaceOptions(t, s))
	if err != nil {
		t.Fatal(err)
	}
	ns := map[specs.LinuxNamespaceType]string{}
	for _, n := range w.Linux.Namespaces {
		ns[n.Type] = n.Path
	}
	for _, typ := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace} {
		if p, ok := ns[typ]; !ok || p != "" {
			t.Errorf("%s namespace: want a new one, got %q (present %v)", typ, p, ok)
		}
	}
	if ns[specs.NetworkNamespace] != "/proc/42/fd/7" || ns[specs.UTSNamespace] != "/proc/42/fd/8" {
		t.Errorf("net/uts must join the control plane's: %v", ns)
	}
	p := w.Process
	if p.User.UID == 0 || p.User.GID == 0 {
		t.Errorf("workspace runs as root: %+v", p.User)
	}
	if c := p.Capabilities; c == nil || len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Errorf("capabilities not empty: %+v", c)
	}
	if !p.NoNewPrivileges {
		t.Error("no_new_privs not set")
	}
	if !slices.ContainsFunc(p.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_CORE" && r.Hard == 0 && r.Soft == 0 }) {
		t.Errorf("no hard RLIMIT_CORE=0: %+v", p.Rlimits)
	}
	if p.OOMScoreAdj == nil || *p.OOMScoreAdj <= 0 {
		t.Errorf("oom_score_adj not raised: %v", p.OOMScoreAdj)
	}
	if w.Hooks != nil {
		t.Error("control-plane hooks leaked into the workspace")
	}
	var tmp, reaper bool
	for _, m := range w.Mounts {
		switch m.Destination {
		case "/tmp":
			tmp = m.Type == "tmpfs" && slices.Contains(m.Options, "size="+WorkspaceTmpSize)
		case ReaperPath:
			reaper = slices.Contains(m.Options, "ro")
		case "/sys", "/sys/fs/cgroup":
			if !slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "rw") {
				t.Errorf("%s is writable: %v", m.Destination, m.Options)
			}
		}
	}
	if !tmp || !reaper {
		t.Errorf("private /tmp %v, read-only reaper %v", tmp, reaper)
	}
	for _, mp := range []string{"/proc/kcore", "/proc/keys", "/sys/firmware"} {
		if !slices.Contains(w.Linux.MaskedPaths, mp) {
			t.Errorf("%s not masked", mp)
		}
	}
	if !slices.Contains(w.Linux.ReadonlyPaths, "/proc/sysrq-trigger") {
		t.Error("/proc/sysrq-trigger not read-only")
	}
	if r := w.Linux.Resources; r.Pids == nil || *r.Pids.Limit != 256 || r.Memory == nil || *r.Memory.Limit != (1<<30)-(256<<20) {
		t.Errorf("workspace limits: %+v %+v", r.Pids, r.Memory)
	}
	if w.Linux.CgroupsPath != "/default/sb1/user" {
		t.Errorf("cgroup leaf %q", w.Linux.CgroupsPath)
	}
}

func TestWorkspaceSeccompDenies(t *testing.T) {
	p := WorkspaceSeccomp()
	allowed := map[string]bool{}
	for _, r := range p.Syscalls {
		if r.Action == specs.ActAllow && len(r.Args) == 0 {
			for _, n := range r.Names {
				allowed[n] = true
			}
		}
	}
	for _, n := range deniedSyscalls {
		if allowed[n] {
			t.Errorf("%s allowed", n)
		}
	}
	if !allowed["read"] {
		t.Error("profile lost ordinary syscalls")
	}
	// Evaluate the ioctl rules as libseccomp would: allowed when any allow
	// rule's masked test matches.
	allowedIoctl := func(req uint64) bool {
		for _, r := range p.Syscalls {
			if r.Action != specs.ActAllow || !slices.Contains(r.Names, "ioctl") {
				continue
			}
			if len(r.Args) == 0 {
				return true
			}
			if a := r.Args[0]; a.Index == 1 && a.Op == specs.OpMaskedEqual && req&a.Value == a.ValueTwo {
				return true
			}
		}
		return false
	}
	for _, req := range []uint64{0x5412, 0x541C, 1<<32 | 0x5412, 0xffffffff00005412, 0xdead00000000541C} {
		if allowedIoctl(req) {
			t.Errorf("ioctl 0x%x allowed", req)
		}
	}
	for _, req := range []uint64{0, 0x5401, 0x5411, 0x5413, 0x541B, 0x541D, 0x5410, 0x80045430, 0xffffffff80045430, 0x40049409, 0xffffffff, 1<<32 | 0x5401} {
		if !allowedIoctl(req) {
			t.Errorf("ioctl 0x%x refused", req)
		}
	}
	for req := uint64(0); req < 1<<16; req++ {
		if want := req != 0x5412 && req != 0x541C; allowedIoctl(req) != want {
			t.Fatalf("ioctl 0x%x allowed=%v", req, !want)
		}
	}
}

func TestWorkspaceProcessForcesIdentity(t *testing.T) {
	st := Settings{UID: 1234, GID: 99}
	lp, err := WorkspaceProcess(&specs.Process{
		Args: []string{"sh"}, User: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 10}},
		Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_SYS_ADMIN"}, Effective: []string{"CAP_SYS_ADMIN"}},
		Rlimits:      []specs.POSIXRlimit{{Type: "RLIMIT_CORE", Hard: 1 << 30, Soft: 1 << 30}, {Type: "RLIMIT_NOFILE", Hard: 10, Soft: 10}},
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	if lp.UID != 1234 || lp.GID != 99 || len(lp.AdditionalGroups) != 0 {
		t.Errorf("identity %d:%d %v", lp.UID, lp.GID, lp.AdditionalGroups)
	}
	if lp.Capabilities == nil || len(lp.Capabilities.Bounding)+len(lp.Capabilities.Effective) != 0 {
		t.Errorf("capabilities kept: %+v", lp.Capabilities)
	}
	if lp.NoNewPrivileges == nil || !*lp.NoNewPrivileges {
		t.Error("no_new_privs not forced")
	}
	var core, nofile bool
	for _, r := range lp.Rlimits {
		core = core || (r.Type == 4 && r.Hard == 0)
		nofile = nofile || (r.Type == 7 && r.Hard == 10)
	}
	if !core || !nofile {
		t.Errorf("rlimits %+v", lp.Rlimits)
	}
}

func TestParseSettings(t *testing.T) {
	gib := int64(1 << 30)
	withAnn := func(ann map[string]string, uid uint32, mem *int64) *specs.Spec {
		s := &specs.Spec{Annotations: ann, Process: &specs.Process{User: specs.User{UID: uid, GID: uid}}, Linux: &specs.Linux{}}
		if mem != nil {
			s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: mem}}
		}
		return s
	}
	ok := []struct {
		name string
		s    *specs.Spec
		want Settings
	}{
		{"defaults", withAnn(nil, 0, nil), Settings{UID: 1000, GID: 1000, PidsLimit: 1024}},
		{"image user", withAnn(nil, 500, nil), Settings{UID: 500, GID: 500, PidsLimit: 1024}},
		{"annotation", withAnn(map[string]string{AnnotationUser: "2000:3000", AnnotationPidsLimit: "64", AnnotationMemoryLimit: "256m"}, 0, nil),
			Settings{UID: 2000, GID: 3000, UserFromAnnotation: true, PidsLimit: 64, MemoryLimit: 256 << 20, MemoryFromAnnotation: true}},
		{"uid only", withAnn(map[string]string{AnnotationUser: "2000"}, 0, nil), Settings{UID: 2000, GID: 2000, UserFromAnnotation: true, PidsLimit: 1024}},
		{"derived memory", withAnn(nil, 0, &gib), Settings{UID: 1000, GID: 1000, PidsLimit: 1024, MemoryLimit: gib - 256<<20}},
	}
	for _, c := range ok {
		got, err := ParseSettings(c.s)
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	bad := []struct{ key, val string }{
		{AnnotationUser, "root"}, {AnnotationUser, "0"}, {AnnotationUser, "0:0"}, {AnnotationUser, "1000:0"},
		{AnnotationUser, "-5"}, {AnnotationUser, "1000:x"}, {AnnotationUser, ""},
		{AnnotationPidsLimit, "abc"}, {AnnotationPidsLimit, "0"}, {AnnotationPidsLimit, "-1"}, {AnnotationPidsLimit, "3"},
		{AnnotationMemoryLimit, "lots"}, {AnnotationMemoryLimit, "-1"}, {AnnotationMemoryLimit, "1k"}, {AnnotationMemoryLimit, "2g"},
	}
	for _, c := range bad {
		_, err := ParseSettings(withAnn(map[string]string{c.key: c.val}, 0, &gib))
		if err == nil {
			t.Errorf("%s=%q accepted", c.key, c.val)
			continue
		}
		if !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), `"`+c.val+`"`) {
			t.Errorf("%s=%q: error %q does not name the annotation and value", c.key, c.val, err)
		}
	}
}

func TestDefaultWorkspaceMemory(t *testing.T) {
	for _, c := range []struct{ in, want int64 }{
		{0, 0}, {-1, 0}, {64 << 20, 32 << 20}, {1 << 30, (1 << 30) - (256 << 20)}, {8 << 30, (8 << 30) - (512 << 20)}, {6 << 20, 3 << 20},
	} {
		if got := DefaultWorkspaceMemory(c.in); got != c.want {
			t.Errorf("DefaultWorkspaceMemory(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestCgroups(t *testing.T) {
	s := &specs.Spec{Linux: &specs.Linux{CgroupsPath: "/k8s/pod1/c1"}}
	p, err := Cgroups(s, "default", "c1")
	if err != nil || p.Sandbox != "/k8s/pod1/c1" || p.Control != "/k8s/pod1/c1/control" || p.User != "/k8s/pod1/c1/user" {
		t.Errorf("%+v %v", p, err)
	}
	p, err = Cgroups(&specs.Spec{}, "ns", "id")
	if err != nil || p.Sandbox != "/ns/id" {
		t.Errorf("default path %+v %v", p, err)
	}
	for _, bad := range []string{"system.slice:docker:id", "/"} {
		if _, err := Cgroups(&specs.Spec{Linux: &specs.Linux{CgroupsPath: bad}}, "ns", "id"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestControlPlaneRejectsMalformed(t *testing.T) {
	for name, s := range map[string]*specs.Spec{
		"nil":        nil,
		"no root":    {Process: &specs.Process{Args: []string{"x"}}, Linux: &specs.Linux{}},
		"no process": {Root: &specs.Root{Path: "rootfs"}, Linux: &specs.Linux{}},
		"no args":    {Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{}, Linux: &specs.Linux{}},
		"no linux":   {Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{Args: []string{"x"}}},
		"relative mount": {Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{Args: []string{"x"}}, Linux: &specs.Linux{},
			Mounts: []specs.Mount{{Destination: "relative/path", Type: "tmpfs", Source: "tmpfs"}}},
	} {
		if _, err := ControlPlane("id", "/bundle", s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestUpdateResources(t *testing.T) {
	res := configs.Resources{Memory: 100, CpuShares: 2}
	lim, swap, shares, pids := int64(200), int64(400), uint64(512), int64(50)
	if err := UpdateResources(&res, &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &lim, Swap: &swap},
		CPU:    &specs.LinuxCPU{Shares: &shares},
		Pids:   &specs.LinuxPids{Limit: &pids},
	}); err != nil {
		t.Fatal(err)
	}
	if res.Memory != 200 || res.MemorySwap != 400 || res.CpuShares != 512 || res.PidsLimit == nil || *res.PidsLimit != 50 {
		t.Errorf("%+v", res)
	}
	small := int64(100)
	if err := UpdateResources(&res, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &lim, Swap: &small}}); err == nil {
		t.Error("swap below limit accepted")
	}
	if err := UpdateResources(&res, nil); err == nil {
		t.Error("nil resources accepted")
	}
}

func TestExecPidsLimit(t *testing.T) {
	for _, c := range []struct{ in, want int64 }{{1024, 768}, {64, 48}, {8, 4}, {10000, 9744}, {32, 16}} {
		if got := ExecPidsLimit(c.in); got != c.want {
			t.Errorf("ExecPidsLimit(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestWaiterProcess(t *testing.T) {
	st := Settings{UID: 1000, GID: 1000}
	lp, err := WaiterProcess(st, &specs.Process{Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}}})
	if err != nil {
		t.Fatal(err)
	}
	if lp.UID != 65534 || lp.GID != 65534 {
		t.Errorf("waiter runs as %d:%d, want the reaper's uid", lp.UID, lp.GID)
	}
	if got := strings.Join(lp.Args, " "); got != ReaperPath+" "+WaiterArg+" 1000 1000" {
		t.Errorf("args %q", got)
	}
	want := []string{"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"}
	c := lp.Capabilities
	for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
		if !slices.Equal(set, want) {
			t.Errorf("capability set %v, want exactly %v", set, want)
		}
	}
	if lp.NoNewPrivileges == nil || !*lp.NoNewPrivileges {
		t.Error("no_new_privs not set")
	}
	var core, nofile bool
	for _, r := range lp.Rlimits {
		core = core || (r.Type == 4 && r.Hard == 0)
		nofile = nofile || (r.Type == 7 && r.Hard == 1024)
	}
	if !core || !nofile {
		t.Errorf("rlimits %+v", lp.Rlimits)
	}
	if ReaperUID(Settings{UID: 65534, GID: 65534}) == 65534 {
		t.Error("reaper shares the workspace's uid")
	}
}
