package spec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ExecRequest is one command for a waiter in a user container: everything
// the waiter applies before it execs, built here from the caller's process
// spec and sent as it is (see Encode). Nothing else decides the identity,
// limits or environment of user code.
type ExecRequest struct {
	Args []string
	Env  []string
	// Secrets are an execSecure call's own variables, encoded after Env
	// without ever becoming a string (see Encode). The caller clears them,
	// and the encoded request, once it is sent.
	Secrets []EnvVar
	// Cwd is the working directory; "" means /.
	Cwd      string
	Rlimits  []Rlimit
	Identity Identity
	Terminal bool
	// ConsoleWidth and ConsoleHeight size a terminal; 0 keeps the default.
	ConsoleWidth, ConsoleHeight uint16
}

// Identity is who user code runs as: never uid 0, gid 0 or group 0.
type Identity struct {
	UID, GID uint32
	// AdditionalGids are the supplementary groups (setgroups).
	AdditionalGids []uint32
}

// Rlimit is one resource limit (RLIMIT_* number) the exec gets.
type Rlimit struct {
	Type       int
	Soft, Hard uint64
}

// ExecRequestVersion is the layout Encode writes and the reaper reads.
const ExecRequestVersion = 3

// MaxExecRequest is the most one encoded request may take (the reaper's
// buffer): arguments, environment and cwd together, as much as the
// kernel's ARG_MAX allows an exec.
const MaxExecRequest = 4<<20 - 1

// Limits of the layout that the reaper checks as well.
const (
	maxRequestRlimits = 64
	maxRequestGroups  = 64
)

// Encode lays the request out as the reaper reads it (libexec/reaper,
// wait_exec), in the host's byte order:
//
//	u32 version (3), u32 flags (1 = terminal), u16 rows, u16 cols,
//	u32 uid, u32 gid, u32 argc, u32 envc, u32 nrlimits, u32 ngroups,
//	nrlimits x (u32 resource, u32 pad, u64 soft, u64 hard),
//	ngroups x u32 gid,
//	NUL-terminated cwd, argv[argc], envp[envc].
//
// envp is Env, then Secrets as NAME=value (envc counts both). The buffer
// is allocated once at its final size, so no copy of a secret is left in
// a buffer that grew; the caller clears the result after sending it.
// Errors name variables, never values. It refuses what no waiter could
// run, so a bad request costs no waiter.
func (r ExecRequest) Encode() ([]byte, error) {
	if len(r.Args) == 0 {
		return nil, errors.New("process has no args")
	}
	id := r.Identity
	if id.UID == 0 || id.GID == 0 {
		return nil, fmt.Errorf("refusing to run user code as root (uid %d, gid %d)", id.UID, id.GID)
	}
	if slices.Contains(id.AdditionalGids, 0) {
		return nil, errors.New("refusing to run user code in group 0")
	}
	if len(id.AdditionalGids) > maxRequestGroups {
		return nil, fmt.Errorf("%d supplementary groups, more than the %d an exec may have", len(id.AdditionalGids), maxRequestGroups)
	}
	if len(r.Rlimits) > maxRequestRlimits {
		return nil, fmt.Errorf("%d rlimits, more than %d", len(r.Rlimits), maxRequestRlimits)
	}
	for _, l := range r.Rlimits {
		if l.Soft > l.Hard {
			return nil, fmt.Errorf("rlimit %d: soft limit %d above hard limit %d", l.Type, l.Soft, l.Hard)
		}
	}
	cwd := r.Cwd
	if cwd == "" {
		cwd = "/"
	}
	strs := append(append([]string{cwd}, r.Args...), r.Env...)
	size := requestHeader + len(r.Rlimits)*24 + len(id.AdditionalGids)*4
	for _, s := range strs {
		if strings.IndexByte(s, 0) >= 0 {
			return nil, errors.New("argument, environment or cwd contains a NUL byte")
		}
		size += len(s) + 1
	}
	for _, v := range r.Secrets {
		if err := ValidateEnv(v.Name, v.Value); err != nil {
			return nil, err
		}
		size += len(v.Name) + 1 + len(v.Value) + 1
	}
	if size > MaxExecRequest {
		return nil, fmt.Errorf("arguments and environment take %d bytes, more than the %d an exec may carry", size, MaxExecRequest)
	}
	var flags uint32
	if r.Terminal {
		flags = 1
	}
	b := make([]byte, 0, size)
	u32 := func(v uint32) { b = binary.NativeEndian.AppendUint32(b, v) }
	u32(ExecRequestVersion)
	u32(flags)
	b = binary.NativeEndian.AppendUint16(b, r.ConsoleHeight)
	b = binary.NativeEndian.AppendUint16(b, r.ConsoleWidth)
	for _, v := range []uint32{id.UID, id.GID, uint32(len(r.Args)), uint32(len(r.Env) + len(r.Secrets)), uint32(len(r.Rlimits)), uint32(len(id.AdditionalGids))} {
		u32(v)
	}
	for _, l := range r.Rlimits {
		u32(uint32(l.Type))
		u32(0)
		b = binary.NativeEndian.AppendUint64(b, l.Soft)
		b = binary.NativeEndian.AppendUint64(b, l.Hard)
	}
	for _, g := range id.AdditionalGids {
		u32(g)
	}
	for _, s := range strs {
		b = append(append(b, s...), 0)
	}
	for _, v := range r.Secrets {
		b = append(append(append(append(b, v.Name...), '='), v.Value...), 0)
	}
	return b, nil
}

// requestHeader is the fixed part of an encoded request.
const requestHeader = 36

// WorkspaceExec converts a containerd exec into a request for a workspace
// waiter: whatever the caller asked, it runs as the workspace user (its
// uid and gid, supplementary groups as userGroups keeps them), with no
// capabilities, no_new_privs (the waiter's) and no core dumps. base is the
// bundle's (control plane's) process: containerd and CRI build an exec's
// spec from it, so its env entries and groups arrive in every exec and are
// dropped where they are the control plane's (see workspaceEnv).
func WorkspaceExec(p *specs.Process, base *specs.Process, st Settings) (ExecRequest, error) {
	if p == nil {
		return ExecRequest{}, errors.New("no process spec")
	}
	if len(p.Args) == 0 {
		return ExecRequest{}, errors.New("process has no args")
	}
	req := ExecRequest{
		Args:     p.Args,
		Env:      workspaceEnv(p.Env, base, st.UserEnv),
		Cwd:      p.Cwd,
		Identity: Identity{UID: st.UID, GID: st.GID, AdditionalGids: userGroups(p.User.AdditionalGids, base, st)},
		Terminal: p.Terminal,
	}
	if p.ConsoleSize != nil {
		req.ConsoleWidth, req.ConsoleHeight = uint16(p.ConsoleSize.Width), uint16(p.ConsoleSize.Height)
	}
	for _, r := range workspaceRlimits(p) {
		rl, err := convertRlimit(r)
		if err != nil {
			return ExecRequest{}, err
		}
		req.Rlimits = append(req.Rlimits, Rlimit{Type: rl.Type, Soft: rl.Soft, Hard: rl.Hard})
	}
	return req, nil
}

// userGroups keeps the exec's supplementary groups, as runc does, but
// never group 0 (root's files), and not the groups the exec inherited from
// a control plane whose user is another than the workspace's: those are
// that user's (root's groups in the image's /etc/group: disk, adm,
// wheel...), not user code's. When the workspace user is the bundle's own
// user (an image or pod user), its groups (the pod's supplementalGroups,
// the image's /etc/group) are user code's too.
func userGroups(gids []uint32, base *specs.Process, st Settings) []uint32 {
	var inherited []uint32
	if base != nil && base.User.UID != st.UID {
		inherited = base.User.AdditionalGids
	}
	var out []uint32
	for _, g := range gids {
		if g != 0 && g != st.GID && !slices.Contains(out, g) && !slices.Contains(inherited, g) {
			out = append(out, g)
		}
	}
	return out
}
