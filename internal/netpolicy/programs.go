package netpolicy

import (
	"github.com/cilium/ebpf/asm"
)

// Offsets in the kernel's context structures (include/uapi/linux/bpf.h):
// struct bpf_sock_addr for bind and connect hooks, struct bpf_sock for the
// socket create and release hooks. They are part of the stable ABI.
const (
	sockAddrUserIP4  = 4  // __u32 user_ip4, network order
	sockAddrUserIP6  = 8  // __u32 user_ip6[4], network order
	sockAddrUserPort = 24 // __u32 user_port, network order in the low 16 bits
	sockProtocol     = 12 // struct bpf_sock.protocol
)

const (
	ipProtoTCP     = 6
	ipProtoUDP     = 17
	ipProtoUDPLite = 136
	ipProtoMPTCP   = 262
	// currentNetns is BPF_F_CURRENT_NETNS for the sk_lookup helpers.
	currentNetns = -1
)

// Return values of cgroup socket programs: 1 lets the call go on, 0 fails
// it with EPERM.
const (
	allow = 1
	deny  = 0
)

// networkOrder swaps a port into the byte order the context holds it in
// (x86 and arm64 are little-endian; the kernel keeps ports big-endian).
func networkOrder(port uint16) int32 { return int32(port>>8 | port<<8&0xff00) }

func returnWith(label string, verdict int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, verdict).WithSymbol(label),
		asm.Return(),
	}
}

// bindProgram runs before every bind(2) of user code, IPv4 or IPv6 (the
// port is at the same offset in both). It refuses the reserved ports and
// explicit ports in the ephemeral range, and moves bind(0), which the kernel
// would serve from the ephemeral range, to a random port of userRange.
func bindProgram(p Policy) asm.Instructions {
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, sockAddrUserPort, asm.Word),
		asm.JEq.Imm(asm.R2, 0, "any-port"),
	}
	for _, port := range p.ReservedPorts {
		ins = append(ins, asm.JEq.Imm(asm.R2, networkOrder(port), "deny"))
	}
	ins = append(ins,
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.JLT.Imm(asm.R2, int32(p.Ephemeral.Low), "allow"),
		asm.JGT.Imm(asm.R2, int32(p.Ephemeral.High), "allow"),
		asm.Ja.Label("deny"),
	)
	user := p.userRange()
	if user.Low == 0 {
		// No room below the ephemeral range: bind(0) stays the kernel's.
		ins = append(ins, asm.Ja.Label("allow").WithSymbol("any-port"))
	} else {
		ins = append(ins,
			asm.FnGetPrandomU32.Call().WithSymbol("any-port"),
			asm.Mod.Imm(asm.R0, int32(user.High-user.Low+1)),
			asm.Add.Imm(asm.R0, int32(user.Low)),
		)
		// Sorted ascending, so a run of adjacent reserved ports is skipped.
		for i, port := range p.ReservedPorts {
			skip := "next-" + itoa(i)
			ins = append(ins,
				asm.JNE.Imm(asm.R0, int32(port), skip),
				asm.Add.Imm(asm.R0, 1),
				asm.Mov.Reg(asm.R0, asm.R0).WithSymbol(skip),
			)
		}
		ins = append(ins,
			asm.JGT.Imm(asm.R0, int32(user.High), "deny"),
			asm.HostTo(asm.BE, asm.R0, asm.Half),
			asm.StoreMem(asm.R6, sockAddrUserPort, asm.R0, asm.Word),
			asm.Ja.Label("allow"),
		)
	}
	ins = append(ins, returnWith("deny", deny)...)
	return append(ins, returnWith("allow", allow)...)
}

// connectProgram runs before every connect(2) (and TCP fast-open sendto) of
// user code. A connection to a reserved port is refused when a socket of
// this network namespace would take it: the reservation listens on every
// local address, so this covers loopback, 0.0.0.0, v4-mapped addresses and
// the sandbox's own addresses, whatever they are later, and leaves
// connections to other hosts' ports 8080 alone.
func connectProgram(p Policy, ipv6 bool) asm.Instructions {
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, sockAddrUserPort, asm.Word),
	}
	for _, port := range p.ReservedPorts {
		ins = append(ins, asm.JEq.Imm(asm.R7, networkOrder(port), "lookup"))
	}
	ins = append(ins, asm.Ja.Label("allow"))
	// struct bpf_sock_tuple on the stack: saddr, daddr, sport, dport.
	var size, start int32
	if ipv6 {
		size, start = 36, -40
		lookup := asm.StoreImm(asm.RFP, -40, 0, asm.Word).WithSymbol("lookup")
		ins = append(ins, lookup,
			asm.StoreImm(asm.RFP, -36, 0, asm.Word),
			asm.StoreImm(asm.RFP, -32, 0, asm.Word),
			asm.StoreImm(asm.RFP, -28, 0, asm.Word))
		for i := int16(0); i < 4; i++ {
			ins = append(ins,
				asm.LoadMem(asm.R2, asm.R6, sockAddrUserIP6+4*i, asm.Word),
				asm.StoreMem(asm.RFP, -24+4*i, asm.R2, asm.Word))
		}
	} else {
		size, start = 12, -16
		ins = append(ins,
			asm.StoreImm(asm.RFP, -16, 0, asm.Word).WithSymbol("lookup"),
			asm.LoadMem(asm.R2, asm.R6, sockAddrUserIP4, asm.Word),
			asm.StoreMem(asm.RFP, -12, asm.R2, asm.Word))
	}
	ins = append(ins,
		asm.StoreImm(asm.RFP, -8, 0, asm.Half),
		asm.StoreMem(asm.RFP, -6, asm.R7, asm.Half),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, start),
		asm.Mov.Imm(asm.R3, size),
		asm.Mov.Imm(asm.R4, currentNetns),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkLookupTcp.Call(),
		asm.JEq.Imm(asm.R0, 0, "allow"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.FnSkRelease.Call(),
		asm.Ja.Label("deny"),
	)
	ins = append(ins, returnWith("deny", deny)...)
	return append(ins, returnWith("allow", allow)...)
}

// socketSlot is one counter of socketCountProgram: a protocol's slot in the
// map and the most live sockets of it user code may hold.
type socketSlot struct {
	protocols []int32
	slot      int64
	limit     int64
}

// socketCountProgram keeps the count of user code's live TCP and UDP sockets
// in the map's slots (add is +1 at create, -1 at release) and refuses a
// socket beyond its protocol's limit. An unconnected UDP socket takes an
// ephemeral port of its own at its first sendto(2), and a TCP connect(2)
// one per connection, before any hook sees it: counting sockets is what
// bounds the ports user code can take that way.
func socketCountProgram(mapFD int, add int32, slots []socketSlot) asm.Instructions {
	ins := asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, sockProtocol, asm.Word),
	}
	for i, s := range slots {
		for _, proto := range s.protocols {
			ins = append(ins, asm.JEq.Imm(asm.R6, proto, "count-"+itoa(i)))
		}
	}
	ins = append(ins, asm.Ja.Label("allow"))
	for i, s := range slots {
		ins = append(ins,
			asm.StoreImm(asm.RFP, -4, s.slot, asm.Word).WithSymbol("count-"+itoa(i)),
			asm.LoadMapPtr(asm.R1, mapFD),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "allow"),
			asm.Mov.Imm(asm.R1, add),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		)
		if add > 0 {
			ins = append(ins,
				asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
				asm.JLE.Imm(asm.R1, int32(s.limit), "allow"),
				asm.Mov.Imm(asm.R1, -add),
				asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
				asm.Ja.Label("deny"),
			)
		} else {
			ins = append(ins, asm.Ja.Label("allow"))
		}
	}
	if add > 0 {
		ins = append(ins, returnWith("deny", deny)...)
	}
	return append(ins, returnWith("allow", allow)...)
}
