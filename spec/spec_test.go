package spec

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/api"
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
	st, err := ParseSettings(s, Limits{})
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

var testPaths = CgroupPaths{Sandbox: "/default/sb1", Control: "/default/sb1/control", User: "/default/sb1/user"}

func TestControlPlaneGolden(t *testing.T) {
	s := bundle(t)
	before := s.Linux.CgroupsPath
	c, err := ControlPlane("sb1", "/bundle", s, testPaths, "")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "controlplane.golden.json", c.Container)
	if s.Linux.CgroupsPath != before {
		t.Error("ControlPlane modified its input")
	}
	// The split the sandbox rests on: the bundle's limits on the sandbox
	// cgroup, the init in the control leaf with device rules only.
	if c.Container.Cgroups.Path != testPaths.Control {
		t.Errorf("init cgroup %q, want %q", c.Container.Cgroups.Path, testPaths.Control)
	}
	if r := c.Container.Cgroups.Resources; r.Memory != 0 || r.PidsLimit != nil || r.CpuShares != 0 {
		t.Errorf("control leaf carries limits: %+v", r)
	}
	if c.SandboxResources.Memory != *s.Linux.Resources.Memory.Limit {
		t.Errorf("sandbox memory %d, want the bundle's %d", c.SandboxResources.Memory, *s.Linux.Resources.Memory.Limit)
	}
	if !c.Init.Init || !slices.Equal(c.Init.Args, s.Process.Args) {
		t.Errorf("init process %+v", c.Init)
	}
}

// TestControlPlaneAPIMount: the API's directory reaches the control plane
// alone, at /run/sandbox; the workspace, built from the same bundle (and
// so every secure container, built by the same code), never has it.
func TestControlPlaneAPIMount(t *testing.T) {
	s := bundle(t)
	dir := api.HostDir("default", "sb1") + "/control-plane"
	c, err := ControlPlane("sb1", "/bundle", s, testPaths, dir)
	if err != nil {
		t.Fatal(err)
	}
	last := c.Container.Mounts[len(c.Container.Mounts)-1]
	if last.Source != dir || last.Destination != api.ControlPlaneSocketDir || last.Flags&unix.MS_BIND == 0 ||
		last.Flags&(unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC) != unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC {
		t.Errorf("API mount %+v", last)
	}
	if len(s.Mounts) > 0 && slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == api.ControlPlaneSocketDir }) {
		t.Error("ControlPlane added the API mount to the bundle spec")
	}
	w, err := Workspace("sb1.workspace", "/bundle", s, workspaceOptions(t, s))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range w.Mounts {
		if strings.HasPrefix(m.Source, api.HostRunDir) || strings.HasPrefix(filepath.Clean(m.Destination), api.ControlPlaneSocketDir) {
			t.Errorf("workspace has the API mount %+v", m)
		}
	}
	// A bundle mount over /run/sandbox would hide the socket: refused.
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/run/sandbox/x", Type: "tmpfs", Source: "tmpfs"})
	if _, err := ControlPlane("sb1", "/bundle", s, testPaths, dir); err == nil || !strings.Contains(err.Error(), "/run/sandbox") {
		t.Errorf("bundle mount under /run/sandbox: %v", err)
	}
	if _, err := ControlPlane("sb1", "/bundle", bundle(t), testPaths, "relative"); err == nil {
		t.Error("relative API directory accepted")
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
	// IPC sysctls apply to the workspace's own IPC namespace; network ones
	// would rewrite the namespace it shares with the control plane.
	// The bundle's sizes stay; the caps on leftover memory are added.
	for k, v := range map[string]string{"kernel.shm_rmid_forced": "1", "kernel.msgmax": "16384", "fs.mqueue.msg_max": "20"} {
		if w.Linux.Sysctl[k] != v {
			t.Errorf("workspace sysctl %s = %q, want %q", k, w.Linux.Sysctl[k], v)
		}
	}
	for k := range w.Linux.Sysctl {
		if !strings.HasPrefix(k, "kernel.") && !strings.HasPrefix(k, "fs.mqueue.") {
			t.Errorf("workspace sysctl %s is not an IPC one", k)
		}
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
		if m.Type == "bind" && m.Destination != ReaperPath && m.Destination != "/etc/hosts" && m.Destination != "/data" {
			t.Errorf("bundle bind mount %s reached the workspace", m.Destination)
		}
		switch m.Destination {
		case "/dev/shm":
			if m.Type != "tmpfs" {
				t.Errorf("/dev/shm not private: %+v", m)
			}
		case "/dev/pts":
			if !slices.Contains(m.Options, "max=256") {
				t.Errorf("devpts not capped: %v", m.Options)
			}
		case "/tmp":
			tmp = m.Type == "tmpfs" && slices.ContainsFunc(m.Options, func(o string) bool { return strings.HasPrefix(o, "size=") })
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

// TestWorkspaceExecForcesIdentity checks what a waiter is actually sent:
// whatever the exec spec asks, the workspace user with its supplementary
// groups but 0, and no core dumps.
func TestWorkspaceExecForcesIdentity(t *testing.T) {
	st := Settings{UID: 1234, GID: 99}
	req, err := WorkspaceExec(&specs.Process{
		Args: []string{"sh"}, User: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 10, 99, 10, 20}},
		Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_SYS_ADMIN"}, Effective: []string{"CAP_SYS_ADMIN"}},
		Rlimits:      []specs.POSIXRlimit{{Type: "RLIMIT_CORE", Hard: 1 << 30, Soft: 1 << 30}, {Type: "RLIMIT_NOFILE", Hard: 10, Soft: 10}},
	}, nil, st)
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{UID: 1234, GID: 99, AdditionalGids: []uint32{10, 20}}
	if !reflect.DeepEqual(req.Identity, want) {
		t.Errorf("identity %+v, want %+v", req.Identity, want)
	}
	b, err := req.Encode()
	if err != nil {
		t.Fatal(err)
	}
	h := decodeHeader(t, b)
	if h.uid != 1234 || h.gid != 99 || !slices.Equal(h.groups, []uint32{10, 20}) {
		t.Errorf("encoded identity %d:%d %v", h.uid, h.gid, h.groups)
	}
	checkRequestRlimits(t, h.rlimits, 10)
}

// header is the fixed part of an encoded request, read back as the reaper
// reads it.
type header struct {
	version, flags       uint32
	rows, cols           uint16
	uid, gid             uint32
	argc, envc, nrl, ngr uint32
	rlimits              []Rlimit
	groups               []uint32
	strings              []string
}

func decodeHeader(t *testing.T, b []byte) header {
	t.Helper()
	if len(b) < 36 {
		t.Fatalf("request of %d bytes", len(b))
	}
	u32 := func(off int) uint32 { return binary.NativeEndian.Uint32(b[off:]) }
	h := header{version: u32(0), flags: u32(4), rows: binary.NativeEndian.Uint16(b[8:]), cols: binary.NativeEndian.Uint16(b[10:]),
		uid: u32(12), gid: u32(16), argc: u32(20), envc: u32(24), nrl: u32(28), ngr: u32(32)}
	off := 36
	for i := 0; i < int(h.nrl); i++ {
		h.rlimits = append(h.rlimits, Rlimit{Type: int(u32(off)), Soft: binary.NativeEndian.Uint64(b[off+8:]), Hard: binary.NativeEndian.Uint64(b[off+16:])})
		off += 24
	}
	for i := 0; i < int(h.ngr); i++ {
		h.groups = append(h.groups, u32(off))
		off += 4
	}
	h.strings = strings.Split(strings.TrimSuffix(string(b[off:]), "\x00"), "\x00")
	return h
}

// TestExecRequestGolden pins the request encoding, a C ABI shared with
// libexec/reaper: a change here must be made there too.
func TestExecRequestGolden(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden bytes are little-endian")
	}
	req := ExecRequest{
		Args: []string{"sh", "-c", "id"}, Env: []string{"PATH=/bin", "A=1"}, Cwd: "/work",
		Rlimits:  []Rlimit{{Type: unix.RLIMIT_NOFILE, Soft: 1024, Hard: 4096}, {Type: unix.RLIMIT_CORE}},
		Identity: Identity{UID: 1000, GID: 1001, AdditionalGids: []uint32{2000, 3000}},
		Terminal: true, ConsoleWidth: 80, ConsoleHeight: 24,
	}
	got, err := req.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "execrequest.golden.hex")
	hexdump := hex.Dump(got)
	if *update {
		if err := os.WriteFile(path, []byte(hexdump), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./spec -update to create it)", err)
	}
	if hexdump != string(want) {
		t.Errorf("encoding differs from %s (a change of the reaper's ABI?):\n%s", path, hexdump)
	}
	h := decodeHeader(t, got)
	if h.version != ExecRequestVersion || h.flags != 1 || h.rows != 24 || h.cols != 80 || h.argc != 3 || h.envc != 2 {
		t.Errorf("header %+v", h)
	}
	if !slices.Equal(h.strings, []string{"/work", "sh", "-c", "id", "PATH=/bin", "A=1"}) {
		t.Errorf("strings %q", h.strings)
	}
}

// TestExecRequestRefuses: what no waiter may run is refused before one is
// taken.
func TestExecRequestRefuses(t *testing.T) {
	ok := ExecRequest{Args: []string{"true"}, Identity: Identity{UID: 1000, GID: 1000}}
	for name, mutate := range map[string]func(*ExecRequest){
		"no args":      func(r *ExecRequest) { r.Args = nil },
		"uid 0":        func(r *ExecRequest) { r.Identity.UID = 0 },
		"gid 0":        func(r *ExecRequest) { r.Identity.GID = 0 },
		"group 0":      func(r *ExecRequest) { r.Identity.AdditionalGids = []uint32{5, 0} },
		"many groups":  func(r *ExecRequest) { r.Identity.AdditionalGids = make([]uint32, 65) },
		"NUL in arg":   func(r *ExecRequest) { r.Args = []string{"a\x00b"} },
		"NUL in env":   func(r *ExecRequest) { r.Env = []string{"A=\x00"} },
		"NUL in cwd":   func(r *ExecRequest) { r.Cwd = "/\x00" },
		"soft > hard":  func(r *ExecRequest) { r.Rlimits = []Rlimit{{Type: unix.RLIMIT_NOFILE, Soft: 2, Hard: 1}} },
		"too large":    func(r *ExecRequest) { r.Env = []string{strings.Repeat("x", MaxExecRequest)} },
		"many rlimits": func(r *ExecRequest) { r.Rlimits = make([]Rlimit, 65) },
	} {
		r := ok
		r.Identity.AdditionalGids = nil
		mutate(&r)
		if _, err := r.Encode(); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
	if _, err := ok.Encode(); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
}

// checkRequestRlimits wants a hard RLIMIT_CORE of 0 and RLIMIT_NOFILE
// kept at nofile.
func checkRequestRlimits(t *testing.T, rls []Rlimit, nofile uint64) {
	t.Helper()
	var converted []configs.Rlimit
	for _, r := range rls {
		converted = append(converted, configs.Rlimit{Type: r.Type, Soft: r.Soft, Hard: r.Hard})
	}
	checkRlimits(t, converted, nofile)
}

// checkRlimits wants a hard RLIMIT_CORE of 0 and RLIMIT_NOFILE kept at nofile.
func checkRlimits(t *testing.T, rls []configs.Rlimit, nofile uint64) {
	t.Helper()
	var core, nf bool
	for _, r := range rls {
		core = core || (r.Type == unix.RLIMIT_CORE && r.Hard == 0 && r.Soft == 0)
		nf = nf || (r.Type == unix.RLIMIT_NOFILE && r.Hard == nofile)
	}
	if !core || !nf {
		t.Errorf("rlimits %+v: want core 0 and nofile %d", rls, nofile)
	}
}

func TestParseSettings(t *testing.T) {
	gib := int64(1 << 30)
	withAnn := func(ann map[string]string, uid uint32, mem *int64) *specs.Spec {
		s := &specs.Spec{Annotations: ann, Process: &specs.Process{User: specs.User{UID: uid, GID: uid}}, Linux: &specs.Linux{},
			Mounts: []specs.Mount{{Destination: "/data", Type: "bind", Source: "/host/data"}, {Destination: "/etc/ssl/certs", Type: "bind", Source: "/host/certs"}}}
		if mem != nil {
			s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: mem}}
		}
		return s
	}
	dflt := []uint16{8080, 8888}
	ok := []struct {
		name string
		s    *specs.Spec
		want Settings
	}{
		{"defaults", withAnn(nil, 0, nil), Settings{UID: 1000, GID: 1000, PidsLimit: 1024, ReservedPorts: dflt}},
		{"image user", withAnn(nil, 500, nil), Settings{UID: 500, GID: 500, PidsLimit: 1024, ControlUID: 500, ReservedPorts: dflt}},
		{"annotation", withAnn(map[string]string{api.AnnotationUser: "2000:3000", api.AnnotationPidsLimit: "64", api.AnnotationMemoryLimit: "256m"}, 0, nil),
			Settings{UID: 2000, GID: 3000, UserFromAnnotation: true, PidsLimit: 64, MemoryLimit: 256 << 20, MemoryFromAnnotation: true, ReservedPorts: dflt}},
		{"uid only", withAnn(map[string]string{api.AnnotationUser: "2000"}, 0, nil), Settings{UID: 2000, GID: 2000, UserFromAnnotation: true, PidsLimit: 1024, ReservedPorts: dflt}},
		{"derived memory", withAnn(nil, 0, &gib), Settings{UID: 1000, GID: 1000, PidsLimit: 1024, MemoryLimit: gib - 256<<20, ReservedPorts: dflt}},
		{"env and mounts", withAnn(map[string]string{api.AnnotationEnv: " API_URL, _x1 ,", api.AnnotationMounts: "/data, /etc/ssl/certs/"}, 0, nil),
			Settings{UID: 1000, GID: 1000, PidsLimit: 1024, UserEnv: []string{"API_URL", "_x1"}, UserMounts: []string{"/data", "/etc/ssl/certs"}, ReservedPorts: dflt}},
		{"empty lists", withAnn(map[string]string{api.AnnotationEnv: "", api.AnnotationMounts: " "}, 0, nil), Settings{UID: 1000, GID: 1000, PidsLimit: 1024, ReservedPorts: dflt}},
		{"reserved ports", withAnn(map[string]string{api.AnnotationReservedPorts: " 9000 , 22", api.AnnotationReservedPortsUserConnect: "allow"}, 0, nil),
			Settings{UID: 1000, GID: 1000, PidsLimit: 1024, ReservedPorts: []uint16{9000, 22}, UserConnect: true}},
		{"no reserved ports", withAnn(map[string]string{api.AnnotationReservedPorts: " ", api.AnnotationReservedPortsUserConnect: "deny"}, 0, nil),
			Settings{UID: 1000, GID: 1000, PidsLimit: 1024}},
		{"pod sandbox container", withAnn(map[string]string{"io.kubernetes.cri.container-type": "sandbox"}, 0, nil),
			Settings{PodSandbox: true, UID: 1000, GID: 1000, PidsLimit: 1024}},
	}
	for _, c := range ok {
		got, err := ParseSettings(c.s, Limits{})
		// None of these sets it (TestParseSecureExec does).
		c.want.SecureExecPoolSize = DefaultSecureExecPoolSize
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	bad := []struct{ key, val string }{
		{api.AnnotationUser, "root"}, {api.AnnotationUser, "0"}, {api.AnnotationUser, "0:0"}, {api.AnnotationUser, "1000:0"},
		{api.AnnotationUser, "-5"}, {api.AnnotationUser, "1000:x"}, {api.AnnotationUser, ""},
		{api.AnnotationPidsLimit, "abc"}, {api.AnnotationPidsLimit, "0"}, {api.AnnotationPidsLimit, "-1"}, {api.AnnotationPidsLimit, "3"},
		{api.AnnotationMemoryLimit, "lots"}, {api.AnnotationMemoryLimit, "-1"}, {api.AnnotationMemoryLimit, "1k"}, {api.AnnotationMemoryLimit, "2g"},
		{api.AnnotationEnv, "1ABC"}, {api.AnnotationEnv, "A-B"}, {api.AnnotationEnv, "OK,A=B"}, {api.AnnotationEnv, "LC_*"}, {api.AnnotationEnv, "A B"},
		{api.AnnotationMounts, "data"}, {api.AnnotationMounts, "/data,relative"}, {api.AnnotationMounts, "/not-mounted"},
		{api.AnnotationMounts, "/data,/data/sub"}, {api.AnnotationMounts, "~/x"},
		{api.AnnotationReservedPorts, "80a"}, {api.AnnotationReservedPorts, "0"}, {api.AnnotationReservedPorts, "65536"},
		{api.AnnotationReservedPorts, "-1"}, {api.AnnotationReservedPorts, "8080,8080"}, {api.AnnotationReservedPorts, "8080,,8888"},
		{api.AnnotationReservedPorts, "8080 8888"}, {api.AnnotationReservedPortsUserConnect, "yes"},
		{api.AnnotationSecureExec, "off"}, {api.AnnotationSecureExec, ""}, {api.AnnotationSecureExec, "Disabled"},
		{api.AnnotationSecureExecPool, "9"}, {api.AnnotationSecureExecPool, "-1"}, {api.AnnotationSecureExecPool, "two"},
		{api.AnnotationSecureExecPool, ""}, {api.AnnotationSecureExecPool, "1.5"},
	}
	for _, c := range bad {
		_, err := ParseSettings(withAnn(map[string]string{c.key: c.val}, 0, &gib), Limits{})
		if err == nil {
			t.Errorf("%s=%q accepted", c.key, c.val)
			continue
		}
		if !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), strconv.Quote(c.val)) {
			t.Errorf("%s=%q: error %q does not name the annotation and value", c.key, c.val, err)
		}
	}
}

// TestParseSecureExec: io.sandbox.secure-exec turns execSecure off (fail
// closed), its pool size is 0-8 with 2 by default.
func TestParseSecureExec(t *testing.T) {
	cases := []struct {
		ann      map[string]string
		disabled bool
		pool     int
	}{
		{nil, false, DefaultSecureExecPoolSize},
		{map[string]string{api.AnnotationSecureExec: "enabled"}, false, 2},
		{map[string]string{api.AnnotationSecureExec: " disabled "}, true, 2},
		{map[string]string{api.AnnotationSecureExecPool: "0"}, false, 0},
		{map[string]string{api.AnnotationSecureExecPool: "8", api.AnnotationSecureExec: "disabled"}, true, 8},
	}
	for _, c := range cases {
		st, err := ParseSettings(&specs.Spec{Annotations: c.ann, Process: &specs.Process{}, Linux: &specs.Linux{}}, Limits{})
		if err != nil {
			t.Errorf("%v: %v", c.ann, err)
			continue
		}
		if st.SecureExecDisabled != c.disabled || st.SecureExecPoolSize != c.pool {
			t.Errorf("%v: disabled %v pool %d, want %v %d", c.ann, st.SecureExecDisabled, st.SecureExecPoolSize, c.disabled, c.pool)
		}
	}
}

// TestParseSettingsPids: a sandbox pids limit (the bundle's, or a lower
// one of an ancestor cgroup) caps the workspace below it, leaving the
// control plane a reserve of max(limit/4, 4).
// TestParseSettingsPodSandbox: CRI's pause container is told apart from
// the pod's app containers.
func TestParseSettingsPodSandbox(t *testing.T) {
	for typ, want := range map[string]bool{"sandbox": true, "container": false, "": false} {
		s := bundle(t)
		s.Annotations = map[string]string{}
		if typ != "" {
			s.Annotations["io.kubernetes.cri.container-type"] = typ
		}
		st, err := ParseSettings(s, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if st.PodSandbox != want {
			t.Errorf("container-type %q: PodSandbox %v", typ, st.PodSandbox)
		}
		if st.PodContainer != (typ == "container") {
			t.Errorf("container-type %q: PodContainer %v", typ, st.PodContainer)
		}
		if want && len(st.ReservedPorts) > 0 {
			t.Errorf("the pause container reserves ports %v", st.ReservedPorts)
		}
	}
}

func TestParseSettingsPids(t *testing.T) {
	spec := func(bundle int64, ann string) *specs.Spec {
		s := &specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{}}
		if bundle != 0 {
			s.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &bundle}}
		}
		if ann != "" {
			s.Annotations = map[string]string{api.AnnotationPidsLimit: ann}
		}
		return s
	}
	for _, c := range []struct {
		name     string
		bundle   int64 // 0: not set
		ancestor int64 // 0: none
		ann      string
		want     int64
		errWords []string // non-nil: must fail naming these
	}{
		{name: "no limit", want: 1024},
		{name: "unlimited bundle", bundle: -1, want: 1024},
		{name: "large bundle limit", bundle: 100000, want: 1024},
		{name: "bundle 64", bundle: 64, want: 48},
		{name: "bundle 2000", bundle: 2000, want: 1024},
		{name: "bundle 1200", bundle: 1200, want: 900},
		{name: "bundle 12", bundle: 12, want: 8},
		{name: "ancestor 64", ancestor: 64, want: 48},
		{name: "ancestor below bundle", bundle: 1000, ancestor: 100, want: 75},
		{name: "bundle below ancestor", bundle: 100, ancestor: 1000, want: 75},
		{name: "annotation within", bundle: 64, ann: "48", want: 48},
		{name: "annotation below", bundle: 64, ann: "20", want: 20},
		{name: "annotation without limit", ann: "5000", want: 5000},
		{name: "annotation above", bundle: 64, ann: "49", errWords: []string{api.AnnotationPidsLimit, `"49"`, "64", "48"}},
		{name: "annotation above ancestor", ancestor: 64, ann: "1024", errWords: []string{api.AnnotationPidsLimit, `"1024"`, "64"}},
		{name: "bundle too small", bundle: 11, errWords: []string{"pids limit 11", "8"}},
		{name: "ancestor too small", bundle: 1000, ancestor: 10, errWords: []string{"pids limit 10"}},
		{name: "too small with annotation", bundle: 11, ann: "8", errWords: []string{"pids limit 11"}},
	} {
		st, err := ParseSettings(spec(c.bundle, c.ann), Limits{Pids: c.ancestor})
		if c.errWords != nil {
			if err == nil {
				t.Errorf("%s: accepted with pids limit %d", c.name, st.PidsLimit)
				continue
			}
			for _, w := range c.errWords {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q does not name %q", c.name, err, w)
				}
			}
			continue
		}
		if err != nil || st.PidsLimit != c.want {
			t.Errorf("%s: pids limit %d, %v; want %d", c.name, st.PidsLimit, err, c.want)
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
		if _, err := ControlPlane("id", "/bundle", s, testPaths, ""); err == nil {
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
	// The identity is the request's, never the waiter's argv.
	if got := strings.Join(lp.Args, " "); got != ReaperPath+" "+WaiterArg {
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
	checkRlimits(t, lp.Rlimits, 1024)
	if ReaperUID(Settings{UID: 65534, GID: 65534}) == 65534 {
		t.Error("reaper shares the workspace's uid")
	}
}

// TestReaperProcess: the workspace's pid 1 forks the waiters, which inherit
// everything from it: so it is what a waiter is (the reaper's uid, exactly
// the waiter's capabilities, no_new_privs, the bundle's rlimits without
// core dumps), and it is an init.
func TestReaperProcess(t *testing.T) {
	st := Settings{UID: 1000, GID: 1000}
	lp, err := ReaperProcess(st, &specs.Process{Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 2048, Soft: 2048}}})
	if err != nil {
		t.Fatal(err)
	}
	waiter, err := WaiterProcess(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lp.UID != waiter.UID || lp.GID != waiter.GID || lp.UID == 1000 {
		t.Errorf("reaper runs as %d:%d, want the waiter's %d:%d", lp.UID, lp.GID, waiter.UID, waiter.GID)
	}
	if got := strings.Join(lp.Args, " "); got != ReaperPath+" "+ReaperArg {
		t.Errorf("args %q", got)
	}
	c, w := lp.Capabilities, waiter.Capabilities
	for i, pair := range [][2][]string{{c.Bounding, w.Bounding}, {c.Effective, w.Effective}, {c.Permitted, w.Permitted}, {c.Inheritable, w.Inheritable}, {c.Ambient, w.Ambient}} {
		if !slices.Equal(pair[0], pair[1]) {
			t.Errorf("capability set %d: %v, want the waiter's %v", i, pair[0], pair[1])
		}
	}
	if lp.NoNewPrivileges == nil || !*lp.NoNewPrivileges {
		t.Error("no_new_privs not set")
	}
	if !lp.Init {
		t.Error("not an init")
	}
	checkRlimits(t, lp.Rlimits, 2048)
}

// TestWorkspaceProcessEnv: env entries an exec inherited from the control
// plane (same KEY=VALUE as the bundle process') are dropped unless their
// key is allowed by default or by io.sandbox.user.env.
func TestWorkspaceProcessEnv(t *testing.T) {
	base := &specs.Process{Env: []string{
		"PATH=/bin", "HOME=/root", "HOSTNAME=sb", "LANG=C.UTF-8", "LANGUAGE=en", "LC_ALL=C", "LC_CTYPE=C",
		"TERM=xterm", "TZ=UTC", "USER=root", "SHELL=/bin/sh", "PWD=/",
		"CP_API_KEY=s3cret", "DB_URL=postgres://cp", "API_URL=http://cp", "EMPTY=", "NOEQUALS",
	}}
	for _, c := range []struct {
		name    string
		env     []string
		allowed []string
		base    *specs.Process // nil: the one above
		noBase  bool
		want    []string
	}{
		{name: "ctr exec copies the bundle env", env: base.Env,
			want: []string{"PATH=/bin", "HOME=/root", "HOSTNAME=sb", "LANG=C.UTF-8", "LANGUAGE=en", "LC_ALL=C", "LC_CTYPE=C",
				"TERM=xterm", "TZ=UTC", "USER=root", "SHELL=/bin/sh", "PWD=/"}},
		{name: "annotated keys pass", env: []string{"CP_API_KEY=s3cret", "API_URL=http://cp", "DB_URL=postgres://cp"}, allowed: []string{"API_URL"},
			want: []string{"API_URL=http://cp"}},
		{name: "exec's own values pass", env: []string{"CP_API_KEY=mine", "NEW=1", "PATH=/usr/bin", "EMPTY=x"},
			want: []string{"CP_API_KEY=mine", "NEW=1", "PATH=/usr/bin", "EMPTY=x"}},
		{name: "empty and bare entries", env: []string{"EMPTY=", "NOEQUALS", "NOEQUALS=x"}, want: []string{"NOEQUALS=x"}},
		{name: "prefix of an allowed key", env: []string{"PATHX=1", "LC=1"}, base: &specs.Process{Env: []string{"PATHX=1", "LC=1"}}, want: []string{}},
		{name: "no bundle process", env: []string{"CP_API_KEY=s3cret"}, noBase: true, want: []string{"CP_API_KEY=s3cret"}},
	} {
		b := base
		if c.base != nil || c.noBase {
			b = c.base
		}
		req, err := WorkspaceExec(&specs.Process{Args: []string{"sh"}, Env: c.env}, b, Settings{UID: 1000, GID: 1000, UserEnv: c.allowed})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := req.Env; !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("%s: env %q, want %q", c.name, got, c.want)
		}
	}
}

// TestCredentialMount: what a kubelet, CRI, Docker or a platform mounts
// that carries credentials, against ordinary data volumes.
func TestCredentialMount(t *testing.T) {
	pod := "/var/lib/kubelet/pods/0b1c-uid"
	for _, c := range []struct {
		dst, src   string
		credential bool
	}{
		{"/var/run/secrets/kubernetes.io/serviceaccount", pod + "/volumes/kubernetes.io~projected/kube-api-access-x", true},
		{"/etc/creds", pod + "/volumes/kubernetes.io~secret/db-password", true},
		{"/etc/tokens", pod + "/volumes/kubernetes.io~projected/vault", true},
		{"/run/secrets/api-key", "/var/lib/docker/secrets/api-key", true},
		{"/var/run/secrets", "/somewhere", true},
		{"/run/containerd/containerd.sock", "/run/containerd/containerd.sock", true},
		{"/var/run/docker.sock", "/var/run/docker.sock", true},
		{"/host/agent.sock", "/tmp/agent.sock", true},
		{"/mnt/crio", "/run/crio", true},
		{"/dev/termination-log", pod + "/containers/agent/1234", true},
		{"/run/sandbox", "/run/io.sandbox/k8s.io/abc/control-plane", true},
		{"/workspace", pod + "/volumes/kubernetes.io~empty-dir/workspace", false},
		{"/etc/config", pod + "/volumes/kubernetes.io~configmap/settings", false},
		{"/data", pod + "/volumes/kubernetes.io~csi/pvc-1/mount", false},
		{"/host/logs", "/var/log/app", false},
		{"/mnt/shared", "/srv/shared", false},
		{"/secrets-not", "/srv/secretsish", false},
	} {
		m := specs.Mount{Destination: c.dst, Source: c.src, Type: "bind", Options: []string{"rbind"}}
		if got := credentialMount(m); got != c.credential {
			t.Errorf("%s from %s: credential %v, want %v", c.dst, c.src, got, c.credential)
		}
	}
}

// TestWorkspaceMounts: kernel filesystems, the /dev tmpfs, read-only
// name-resolution files and the data volumes (with their options) reach
// the workspace; credentials (a service account token, the runtime's
// socket) only when io.sandbox.user.mounts lists them; /tmp and /dev/shm
// are private.
func TestWorkspaceMounts(t *testing.T) {
	bind := func(dst, src string, opts ...string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: append([]string{"rbind"}, opts...)}
	}
	in := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"mode=755"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"newinstance", "max=1000"}},
		bind("/dev/shm", "/run/containerd/sandboxes/p1/shm", "rw"),
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue"},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"rw"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"rw"}},
		bind("/etc/hosts", "/pod/etc-hosts", "rw"),
		bind("/etc/resolv.conf", "/pod/resolv.conf"),
		{Destination: "/etc/hostname", Type: "none", Source: "/pod/hostname", Options: []string{"bind", "rw"}},
		bind("/var/run/secrets/kubernetes.io/serviceaccount", "/pod/token", "ro"),
		bind("/run/docker.sock", "/run/docker.sock"),
		bind("/cache", "/pod/empty-dir", "rw", "rshared"),
		bind("/data", "/pod/data", "ro"),
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs"},
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs"},
		{Destination: "/etc/passwd", Type: "tmpfs", Source: "tmpfs"}, // odd, but a private instance too
	}
	byDst := func(ms []specs.Mount) map[string]specs.Mount {
		m := map[string]specs.Mount{}
		for _, x := range ms {
			if _, dup := m[x.Destination]; dup {
				t.Errorf("%s mounted twice", x.Destination)
			}
			m[x.Destination] = x
		}
		return m
	}
	for _, c := range []struct {
		name string
		user []string
		keep []string // destinations besides the always-kept ones
	}{
		{name: "default", keep: []string{"/data", "/cache"}},
		{name: "annotated", user: []string{"/var/run/secrets/kubernetes.io/serviceaccount", "/run/docker.sock"},
			keep: []string{"/data", "/cache", "/var/run/secrets/kubernetes.io/serviceaccount", "/run/docker.sock"}},
		{name: "annotated shared /tmp and /dev/shm", user: []string{"/tmp", "/dev/shm"}, keep: []string{"/data", "/cache"}},
	} {
		caps := WorkspaceLeftoverCaps(256<<20, 0)
		out := byDst(workspaceMounts(slices.Clone(in), workspaceMountConfig{reaper: "/opt/reaper", user: c.user, caps: caps, platformUID: 65534}))
		want := append([]string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
			"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/tmp", ReaperPath,
			"/run", "/etc/passwd", // tmpfs mounts: new, empty instances, so private
			PlatformPtyDir, PlatformPtyDir + "/pts"},
			c.keep...)
		if len(out) != len(want) {
			t.Errorf("%s: mounts %v, want %v", c.name, slices.Collect(maps.Keys(out)), want)
		}
		for _, dst := range want {
			if _, ok := out[dst]; !ok {
				t.Errorf("%s: %s missing", c.name, dst)
			}
		}
		for _, dst := range []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/sys", "/sys/fs/cgroup"} {
			if o := out[dst].Options; !slices.Contains(o, "ro") || slices.Contains(o, "rw") {
				t.Errorf("%s: %s not read-only: %v", c.name, dst, o)
			}
		}
		if o := out["/dev/pts"].Options; !slices.Contains(o, "max=256") || slices.Contains(o, "max=1000") {
			t.Errorf("%s: devpts not capped: %v", c.name, o)
		}
		// A data volume keeps its own read-only and propagation options.
		if o := out["/data"].Options; !slices.Equal(o, []string{"rbind", "ro"}) {
			t.Errorf("%s: /data options %v, want the bundle's", c.name, o)
		}
		if o := out["/cache"].Options; !slices.Equal(o, []string{"rbind", "rw", "rshared"}) {
			t.Errorf("%s: /cache options %v, want the bundle's", c.name, o)
		}
		shared := slices.Contains(c.user, "/dev/shm")
		if shm := out["/dev/shm"]; shared != (shm.Type == "bind") {
			t.Errorf("%s: /dev/shm %+v (shared %v)", c.name, shm, shared)
		} else if !shared && (shm.Type != "tmpfs" || !slices.Equal(shm.Options, append([]string{"nosuid", "nodev", "noexec", "mode=1777"}, caps.Shm.options()...))) {
			t.Errorf("%s: /dev/shm not a private tmpfs: %+v", c.name, shm)
		}
		// Shared or not, a tmpfs in the workspace is a fresh instance: capped.
		if tmp := out["/tmp"]; !slices.Equal(tmp.Options[len(tmp.Options)-2:], caps.Tmp.options()) {
			t.Errorf("%s: /tmp not capped: %+v", c.name, tmp)
		}
		if !shared && !slices.Equal(out["/dev/shm"].Options[len(out["/dev/shm"].Options)-2:], caps.Shm.options()) {
			t.Errorf("%s: /dev/shm not capped: %+v", c.name, out["/dev/shm"])
		}
		// The other tmpfs mounts (/dev, /run, /etc/passwd) share what is left.
		for _, dst := range []string{"/dev", "/run", "/etc/passwd"} {
			if o := out[dst].Options; !slices.Equal(o[len(o)-2:], tmpfsCap(caps.OtherTmpfs/3).options()) {
				t.Errorf("%s: %s not capped: %v", c.name, dst, o)
			}
		}
		if o := out[PlatformPtyDir].Options; !slices.Contains(o, "mode=0700") || !slices.Contains(o, "uid=65534") {
			t.Errorf("%s: the platform's pty directory is open to user code: %v", c.name, o)
		}
		if p := out[PlatformPtyDir+"/pts"]; p.Type != "devpts" || !slices.Contains(p.Options, "newinstance") || !slices.Contains(p.Options, "max=64") {
			t.Errorf("%s: platform devpts %+v", c.name, p)
		}
		if tok, ok := out["/var/run/secrets/kubernetes.io/serviceaccount"]; ok && !slices.Equal(tok.Options, []string{"rbind", "ro"}) {
			t.Errorf("%s: annotated credential mount changed: %+v", c.name, tok)
		}
	}
	// The input is left alone.
	if !slices.Contains(in[5].Options, "rw") || !slices.Contains(in[2].Options, "max=1000") {
		t.Error("workspaceMounts modified its input")
	}
	// A bundle's lower pty cap stays.
	if o := ptyMax([]string{"newinstance", "max=16"}); !slices.Equal(o, []string{"newinstance", "max=16"}) {
		t.Errorf("ptyMax raised a lower cap: %v", o)
	}
}

// TestReaperUID: the reaper avoids the workspace user and the control
// plane's uid; ParseSettings refuses settings that leave no candidate.
func TestReaperUID(t *testing.T) {
	for _, c := range []struct {
		uid, gid, control, want uint32
	}{
		{1000, 1000, 0, 65534},
		{65534, 65534, 0, 65533},
		{1000, 65534, 0, 65533},
		{1000, 1000, 65534, 65533},
		{65534, 1000, 65533, 65532},
		{65533, 65534, 1000, 65532},
	} {
		if got := ReaperUID(Settings{UID: c.uid, GID: c.gid, ControlUID: c.control}); got != c.want {
			t.Errorf("ReaperUID(ws %d:%d, control %d) = %d, want %d", c.uid, c.gid, c.control, got, c.want)
		}
	}
	s := &specs.Spec{Annotations: map[string]string{api.AnnotationUser: "65534:65533"}, Process: &specs.Process{User: specs.User{UID: 65532}}}
	_, err := ParseSettings(s, Limits{})
	if err == nil || !strings.Contains(err.Error(), "reaper") {
		t.Errorf("no free reaper uid accepted: %v", err)
	}
	st, err := ParseSettings(&specs.Spec{Process: &specs.Process{User: specs.User{UID: 65534, GID: 65534}}}, Limits{})
	if err != nil || ReaperUID(st) != 65533 {
		t.Errorf("control plane as nobody: reaper %d, %v", ReaperUID(st), err)
	}
	lp, err := WaiterProcess(st, nil)
	if err != nil || lp.UID != 65533 || lp.GID != 65533 {
		t.Errorf("waiter runs as %d:%d (%v), want 65533", lp.UID, lp.GID, err)
	}
}

// TestWorkspaceExecGroups: supplementary groups are user code's when the
// workspace user is the bundle's own user; a root control plane's groups
// (root's in the image's /etc/group) never reach user code; what the exec
// adds itself passes; group 0 never does.
func TestWorkspaceExecGroups(t *testing.T) {
	for _, c := range []struct {
		name string
		base specs.User
		exec []uint32
		want []uint32
	}{
		{"image user's groups", specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{2000, 3000}}, []uint32{0, 2000, 3000}, []uint32{2000, 3000}},
		{"root control plane's groups", specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 1, 2, 6, 10}}, []uint32{0, 1, 2, 6, 10}, nil},
		{"exec's own groups", specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{6}}, []uint32{6, 4000, 0, 4000}, []uint32{4000}},
		{"primary gid once", specs.User{UID: 1000, GID: 1000}, []uint32{1000, 5}, []uint32{5}},
	} {
		st := Settings{UID: 1000, GID: 1000}
		base := &specs.Process{User: c.base}
		req, err := WorkspaceExec(&specs.Process{Args: []string{"id"}, User: specs.User{AdditionalGids: c.exec}}, base, st)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(req.Identity.AdditionalGids, c.want) {
			t.Errorf("%s: groups %v, want %v", c.name, req.Identity.AdditionalGids, c.want)
		}
	}
}

func TestListenEnv(t *testing.T) {
	env := []string{"PATH=/bin", "LISTEN_FDS=9", "LISTEN_PID=77", "LISTEN_FDNAMES=x", "LISTEN_FDSX=keep"}
	got := ListenEnv(env, []uint16{8080, 8888}, true)
	want := []string{"PATH=/bin", "LISTEN_FDSX=keep", "LISTEN_FDS=2", "LISTEN_FDNAMES=8080:8888", "LISTEN_PID=1"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := ListenEnv(env, []uint16{8080}, false); slices.ContainsFunc(got, func(e string) bool { return strings.HasPrefix(e, "LISTEN_PID=") }) {
		t.Errorf("LISTEN_PID without an own PID namespace: %q", got)
	}
	if got := ListenEnv(env, nil, true); !slices.Equal(got, []string{"PATH=/bin", "LISTEN_FDSX=keep"}) {
		t.Errorf("no ports: %q", got)
	}
	if env[1] != "LISTEN_FDS=9" {
		t.Error("the caller's env was changed")
	}
}

func TestBundleNetwork(t *testing.T) {
	s := bundle(t)
	if n := BundleNetwork(s); n.Host || n.Path != "" {
		t.Fatalf("test bundle should ask for a new network namespace: %+v", n)
	}
	joined := WithNetworkPath(s, "/proc/1/fd/9")
	if n := BundleNetwork(joined); n.Path != "/proc/1/fd/9" {
		t.Errorf("WithNetworkPath: %+v", n)
	}
	if n := BundleNetwork(s); n.Path != "" {
		t.Error("WithNetworkPath changed its argument")
	}
	if !OwnPIDNamespace(s) {
		t.Error("test bundle has its own PID namespace")
	}
	host := *s
	linux := *s.Linux
	linux.Namespaces = slices.DeleteFunc(slices.Clone(s.Linux.Namespaces), func(ns specs.LinuxNamespace) bool {
		return ns.Type == specs.NetworkNamespace || ns.Type == specs.PIDNamespace
	})
	host.Linux = &linux
	if !BundleNetwork(&host).Host || OwnPIDNamespace(&host) {
		t.Error("a bundle without network and PID namespaces is on the host's")
	}
}

// The compat ABIs (x86, x32 beside x86_64) are left out: user code calls
// the kernel through the native one only.
func TestWorkspaceSeccompNativeABIOnly(t *testing.T) {
	want, ok := nativeArchs[runtime.GOARCH]
	if !ok {
		t.Skipf("no native seccomp arch known for %s", runtime.GOARCH)
	}
	if got := WorkspaceSeccomp().Architectures; !slices.Equal(got, want) {
		t.Fatalf("architectures %v, want %v", got, want)
	}
}

// A pod container's workspace starts from the IPC sysctls of the pod's
// namespace (what CRI set from the pod's sysctls), under the bundle's own;
// non-IPC keys there are ignored.
func TestWorkspaceJoinedIPCSysctls(t *testing.T) {
	s := bundle(t)
	o := workspaceOptions(t, s)
	o.JoinedIPCSysctls = map[string]string{"fs.mqueue.msg_max": "100", "kernel.msgmax": "1", "kernel.msgmnb": "4096", "net.ipv4.ip_forward": "1"}
	w, err := WorkspaceSpec(s, o)
	if err != nil {
		t.Fatal(err)
	}
	// The bundle's fs.mqueue.msg_max (20) and kernel.msgmax win; the pod's msgmnb applies.
	for k, v := range map[string]string{"fs.mqueue.msg_max": "20", "kernel.msgmax": "16384", "kernel.msgmnb": "4096"} {
		if w.Linux.Sysctl[k] != v {
			t.Errorf("workspace sysctl %s = %q, want %q", k, w.Linux.Sysctl[k], v)
		}
	}
	if _, ok := w.Linux.Sysctl["net.ipv4.ip_forward"]; ok {
		t.Error("a joined namespace's network sysctl reached the workspace")
	}
	delete(s.Linux.Sysctl, "fs.mqueue.msg_max")
	if w, err = WorkspaceSpec(s, o); err != nil {
		t.Fatal(err)
	}
	if got := w.Linux.Sysctl["fs.mqueue.msg_max"]; got != "100" {
		t.Errorf("fs.mqueue.msg_max = %q, want the pod's 100", got)
	}
}
