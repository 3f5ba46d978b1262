// Package netpolicy confines user code's sockets in the network namespace it
// shares with the control plane: no bind of a reserved port, no connection
// to one (unless allowed), no explicit bind in the ephemeral range, bind(0)
// served from a range below it, and a bound on live UDP sockets. It attaches
// cgroup BPF programs to the user container's cgroup on the cgroup2
// hierarchy (the unified mount of a hybrid host), so every process user code
// starts, however it forks or execs, is held by them; user code has no
// CAP_BPF or CAP_NET_ADMIN and cannot detach them. Apply is the one entry
// point.
package netpolicy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// PortRange is an inclusive range of ports.
type PortRange struct{ Low, High uint16 }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Low, r.High) }

// Policy is what to enforce on one user container.
type Policy struct {
	// SandboxID names the sandbox in errors; empty for a caller that names
	// it itself.
	SandboxID string
	// CgroupPath is the user container's cgroupfs path (/ns/id/user); the
	// programs go on its cgroup2 directory, created here if missing, so they
	// are in place before the first process joins it.
	CgroupPath string
	// ReservedPorts are refused to bind, and to connect unless UserConnect.
	ReservedPorts []uint16
	UserConnect   bool
	// Ephemeral is the network namespace's ip_local_port_range: the ports
	// the control plane's outbound connections and DNS lookups come from.
	Ephemeral PortRange
	// UDPSocketLimit and TCPSocketLimit bound user code's live sockets; 0
	// takes the default.
	UDPSocketLimit, TCPSocketLimit int64
}

// The default socket limits leave most of a default ephemeral range (28232
// ports) to the control plane, towards any destination, while user code
// may still hold thousands.
const (
	DefaultUDPSocketLimit = 4096
	DefaultTCPSocketLimit = 8192
)

// userRange is where bind(0) of user code lands: the ports just below the
// ephemeral range, at most 16384 of them, none below 1024. Zero when there
// is no room.
func (p Policy) userRange() PortRange {
	if p.Ephemeral.Low <= 2048 {
		return PortRange{}
	}
	high := p.Ephemeral.Low - 1
	low := max(1024, int(high)-16383)
	return PortRange{Low: uint16(low), High: high}
}

// Status says what is enforced, for the shim log and the sandbox's info.
type Status struct {
	// Cgroup is the cgroup2 directory the programs are attached to.
	Cgroup string
	// Enforced is true once every program is attached.
	Enforced bool
	// Ephemeral and UserBindRange are the ranges the programs were built with.
	Ephemeral, UserBindRange PortRange
	UDPSocketLimit           int64
	TCPSocketLimit           int64
	// ReservedConnect tells whether connections to reserved ports are refused.
	ReservedConnect bool
	// Error is why nothing is enforced, if so.
	Error string
}

// Limits are what the kernel does not let these programs stop; they are
// logged at Create and documented.
var Limits = []string{
	"an unconnected UDP socket's first sendto(2) (and UDP connect) takes an ephemeral port before any hook runs: bounded by the UDP socket limit, not kept out of the range",
	"TCP connect(2) without bind takes an ephemeral port (shared with connections to other destinations): bounded by the TCP socket limit towards any one destination",
	"a closed TCP connection keeps its port in TIME_WAIT towards its destination for 60 s, uncounted",
}

// Apply attaches the programs for p to the user container's cgroup. On error
// nothing stays attached that could half-enforce p.
func Apply(p Policy) (Status, error) {
	p.ReservedPorts = slices.Sorted(slices.Values(p.ReservedPorts))
	if p.UDPSocketLimit == 0 {
		p.UDPSocketLimit = DefaultUDPSocketLimit
	}
	if p.TCPSocketLimit == 0 {
		p.TCPSocketLimit = DefaultTCPSocketLimit
	}
	st := Status{Ephemeral: p.Ephemeral, UserBindRange: p.userRange(),
		UDPSocketLimit: p.UDPSocketLimit, TCPSocketLimit: p.TCPSocketLimit,
		ReservedConnect: len(p.ReservedPorts) > 0 && !p.UserConnect}
	fail := func(err error) (Status, error) {
		if p.SandboxID != "" {
			err = fmt.Errorf("sandbox %s: network policy: %w", p.SandboxID, err)
		} else {
			err = fmt.Errorf("network policy: %w", err)
		}
		st.Error = err.Error()
		return st, err
	}
	if p.Ephemeral.Low == 0 || p.Ephemeral.High < p.Ephemeral.Low {
		return fail(fmt.Errorf("bad ephemeral port range %v", p.Ephemeral))
	}
	dir, err := cgroup2Dir(p.CgroupPath)
	if err != nil {
		return fail(err)
	}
	st.Cgroup = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(fmt.Errorf("cgroup2 directory: %w", err))
	}
	cg, err := os.Open(dir)
	if err != nil {
		return fail(err)
	}
	defer cg.Close()
	counter, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		return fail(fmt.Errorf("socket counter: %w", err))
	}
	slots := []socketSlot{
		{protocols: []int32{ipProtoUDP, ipProtoUDPLite}, slot: 0, limit: p.UDPSocketLimit},
		{protocols: []int32{ipProtoTCP, ipProtoMPTCP}, slot: 1, limit: p.TCPSocketLimit},
	}
	defer counter.Close() // the attached programs hold it
	programs := []program{
		// Counting first: a socket refused later must still be counted out.
		{ebpf.CGroupSock, ebpf.AttachCgroupInetSockRelease, socketCountProgram(counter.FD(), -1, slots)},
		{ebpf.CGroupSock, ebpf.AttachCGroupInetSockCreate, socketCountProgram(counter.FD(), 1, slots)},
		{ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Bind, bindProgram(p)},
		{ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Bind, bindProgram(p)},
	}
	if st.ReservedConnect {
		programs = append(programs,
			program{ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect, connectProgram(p, false)},
			program{ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Connect, connectProgram(p, true)})
	}
	var attached []link.RawDetachProgramOptions
	detach := func() {
		for _, a := range attached {
			_ = link.RawDetachProgram(a)
		}
	}
	for _, prog := range programs {
		loaded, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "sandbox_" + shortName(prog.attach), Type: prog.kind, AttachType: prog.attach,
			Instructions: prog.code, License: "GPL",
		})
		if err != nil {
			detach()
			return fail(fmt.Errorf("load %v program: %w", prog.attach, err))
		}
		// Legacy attach, not a link: the programs stay with the cgroup even if
		// the shim dies, and go when the cgroup is removed.
		err = link.RawAttachProgram(link.RawAttachProgramOptions{
			Target: int(cg.Fd()), Program: loaded, Attach: prog.attach, Flags: unix.BPF_F_ALLOW_MULTI,
		})
		if err == nil {
			attached = append(attached, link.RawDetachProgramOptions{Target: int(cg.Fd()), Program: loaded, Attach: prog.attach})
		}
		loaded.Close()
		if err != nil {
			detach()
			return fail(fmt.Errorf("attach %v program to %s: %w", prog.attach, dir, err))
		}
	}
	st.Enforced = true
	return st, nil
}

// program is one cgroup program and where it attaches.
type program struct {
	kind   ebpf.ProgramType
	attach ebpf.AttachType
	code   asm.Instructions
}

func shortName(a ebpf.AttachType) string {
	switch a {
	case ebpf.AttachCgroupInetSockRelease:
		return "release"
	case ebpf.AttachCGroupInetSockCreate:
		return "create"
	case ebpf.AttachCGroupInet4Bind:
		return "bind4"
	case ebpf.AttachCGroupInet6Bind:
		return "bind6"
	case ebpf.AttachCGroupInet4Connect:
		return "connect4"
	case ebpf.AttachCGroupInet6Connect:
		return "connect6"
	}
	return "prog"
}

// cgroup2Dir is where cgroupPath lives on the cgroup2 hierarchy: the
// hierarchy itself on a unified host, its unified mount on a hybrid one
// (which libcontainer joins too).
func cgroup2Dir(cgroupPath string) (string, error) {
	if !filepath.IsAbs(cgroupPath) {
		return "", fmt.Errorf("cgroup path %q is not absolute", cgroupPath)
	}
	switch {
	case cgroups.IsCgroup2UnifiedMode():
		return filepath.Join("/sys/fs/cgroup", cgroupPath), nil
	case cgroups.IsCgroup2HybridMode():
		return filepath.Join("/sys/fs/cgroup/unified", cgroupPath), nil
	}
	return "", errors.New("no cgroup2 hierarchy is mounted (neither /sys/fs/cgroup nor /sys/fs/cgroup/unified)")
}

func itoa(i int) string { return strconv.Itoa(i) }
