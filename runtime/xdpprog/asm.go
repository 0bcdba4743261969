package xdpprog

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Map names, as the asm references them and as bpftool shows them.
const (
	mapXSKs     = "nc_xsks"
	mapCounters = "nc_counters"
	mapConfig   = "nc_config"
	mapPrefixes = "nc_prefixes"
	mapProtos   = "nc_protos"
	mapPorts    = "nc_ports"
	mapARP      = "nc_arp"
	mapFast     = "nc_fast"
	mapFastDev  = "nc_fastdev"
	mapDeny     = "nc_deny"
	mapAddrPort = "nc_addrports"
	mapShapes   = "nc_flowshapes"
	mapFlows    = "nc_flows"

	progName = "netchan_xdp"
)

// Counter slots of the per-CPU counters array.
const (
	ctrPassed = iota
	ctrClaimed
	ctrNoSocket
	ctrARP
	ctrAllIPv4
	ctrPrefix
	ctrProtocol
	ctrPort
	ctrFast
	ctrFastNoTarget
	ctrAddrPort
	ctrKernelDst
	ctrFlow
	ctrFlowFragment
	numCounters
)

// Bits of config[0].
const (
	cfgClaimAllIPv4 = 1 << 0
	cfgFastPath     = 1 << 1
	// cfgFlowShape0 << i: flow shape slot i is in use (its masks are written). The program
	// probes only the slots whose bit is set, and skips the flow rule when none is.
	cfgFlowShape0 = 1 << 8
	cfgFlowShapes = (1<<maxFlowShapes - 1) * cfgFlowShape0
)

// Port bitmap layout: one 65536-bit bitmap per protocol, stored as u64 words.
const (
	portWords     = 65536 / 64
	portBaseTCP   = 0
	portBaseUDP   = portWords
	numPortWords  = 2 * portWords
	maxPrefixes   = 4096
	maxARPTargets = 1024

	// maxKernelAddrs bounds the deny set SetKernelAddrs writes (addresses and directed
	// broadcasts); the map holds twice as many so that a replacement can insert the new set
	// before it deletes the old one.
	maxKernelAddrs = 256
	// maxAddrPorts bounds the address-qualified port map: one entry per (protocol,
	// address, port) that some rule holds.
	maxAddrPorts = 16384
	// addrPortKeySize: addr[4] port[2] proto[1] zero[1], network order.
	addrPortKeySize = 8

	// maxFlowShapes bounds the distinct flow shapes (flows.go) in use at once: the program
	// probes the flow map once per shape in use, each probe unrolled.
	maxFlowShapes = 8
	// maxFlows bounds the flow map: one entry per held flow spec.
	maxFlows = 16384
	// flowKeySize: local addr[4] remote addr[4] local port[2] remote port[2] proto[1]
	// shape[1] zero[2], network order; local is the packet's destination, remote its source.
	flowKeySize = 16
	// flowShapeSize: local mask[4] remote mask[4] local port mask[2] remote port mask[2]
	// proto[1] zero[3]: the first 12 bytes line up with the key's and are ANDed into it.
	flowShapeSize = 16
	fsProto       = 12
)

// XDP return codes and xdp_md offsets (include/uapi/linux/bpf.h).
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4

	mdData         = 0
	mdDataEnd      = 4
	mdRxQueueIndex = 16
)

// Frame layout offsets.
const (
	ethLen      = 14
	offEthType  = 12
	ipMinLen    = 20
	offIPVerIHL = ethLen + 0
	offIPFrag   = ethLen + 6
	offIPProto  = ethLen + 9
	offIPDst    = ethLen + 16
	arpLen      = 28
	offARPHType = ethLen + 0
	offARPPType = ethLen + 2
	offARPHLen  = ethLen + 4
	offARPPLen  = ethLen + 5
	offARPTPA   = ethLen + 24
	tcpMinLen   = 20
	udpLen      = 8
)

// collectionSpec describes the maps and the program.
func collectionSpec(maxQueues, maxFast int) *ebpf.CollectionSpec {
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			mapXSKs: {
				Name: mapXSKs, Type: ebpf.XSKMap,
				KeySize: 4, ValueSize: 4, MaxEntries: uint32(maxQueues),
			},
			mapCounters: {
				Name: mapCounters, Type: ebpf.PerCPUArray,
				KeySize: 4, ValueSize: 8, MaxEntries: numCounters,
			},
			mapConfig: {
				// config[0]: flags; config[1]: the largest IPv4 packet the
				// fast path may redirect (its target's MTU).
				Name: mapConfig, Type: ebpf.Array,
				KeySize: 4, ValueSize: 4, MaxEntries: 2,
			},
			mapPrefixes: {
				// Key: struct { u32 prefixlen; u8 addr[4]; }. Value: the
				// prefix length again, which the program reads back to tell a
				// /32 (which may take a kernel address) from a wider prefix.
				Name: mapPrefixes, Type: ebpf.LPMTrie,
				KeySize: 8, ValueSize: 4, MaxEntries: maxPrefixes,
				Flags: unix.BPF_F_NO_PREALLOC,
			},
			mapProtos: {
				Name: mapProtos, Type: ebpf.Array,
				KeySize: 4, ValueSize: 4, MaxEntries: 256,
			},
			mapPorts: {
				Name: mapPorts, Type: ebpf.Array,
				KeySize: 4, ValueSize: 8, MaxEntries: numPortWords,
			},
			mapARP: {
				// Key: IPv4 address, network byte order.
				Name: mapARP, Type: ebpf.Hash,
				KeySize: 4, ValueSize: 4, MaxEntries: maxARPTargets,
			},
			mapFast: {
				// Key: fastKey, value: fastValue (fastpath.go). Not
				// preallocated: most programs never hold a fast flow.
				Name: mapFast, Type: ebpf.Hash,
				KeySize: fastKeySize, ValueSize: fastValueSize, MaxEntries: uint32(maxFast),
				Flags: unix.BPF_F_NO_PREALLOC,
			},
			mapDeny: {
				// Key: IPv4 address, network byte order: the interface's kernel
				// addresses and their directed broadcasts (SetKernelAddrs).
				Name: mapDeny, Type: ebpf.Hash,
				KeySize: 4, ValueSize: 4, MaxEntries: 2 * maxKernelAddrs,
			},
			mapAddrPort: {
				// Key: addrPortKey (claims.go). Not preallocated: most programs
				// hold no address-qualified port claim.
				Name: mapAddrPort, Type: ebpf.Hash,
				KeySize: addrPortKeySize, ValueSize: 4, MaxEntries: maxAddrPorts,
				Flags: unix.BPF_F_NO_PREALLOC,
			},
			mapShapes: {
				// Key: shape slot 0..maxFlowShapes-1. Value: flowShape.value (flows.go):
				// masks and protocol; a slot is probed only while its bit in config[0]
				// is set.
				Name: mapShapes, Type: ebpf.Array,
				KeySize: 4, ValueSize: flowShapeSize, MaxEntries: maxFlowShapes,
			},
			mapFlows: {
				// Key: flowKey (flows.go), the masked fields of a held flow spec.
				// Not preallocated: most programs hold no flow spec.
				Name: mapFlows, Type: ebpf.Hash,
				KeySize: flowKeySize, ValueSize: 4, MaxEntries: maxFlows,
				Flags: unix.BPF_F_NO_PREALLOC,
			},
			mapFastDev: {
				// Slot 0: the interface fast flows leave by.
				Name: mapFastDev, Type: ebpf.DevMap,
				KeySize: 4, ValueSize: 4, MaxEntries: 1,
			},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			progName: {
				Name:         progName,
				Type:         ebpf.XDP,
				License:      "Dual MIT/GPL",
				Instructions: instructions(),
			},
		},
	}
}

// Register use in the program:
//
//	r6 ctx (xdp_md *)       r7 data (packet pointer)
//	r8 data_end             r9 scratch that must survive helper calls
//
// r1–r5 are clobbered by every helper call. Packet pointers in r6–r9 stay
// valid across bpf_map_lookup_elem (it does not change packet data).
// Stack: fp-16..fp-1 holds map keys, fp-24 the config word, fp-32 the
// "kernel destination" flag (1 when the destination is in the deny set, a
// broadcast or multicast: only rules that name it apply), fp-64..fp-33 the
// flow rule's unmasked and masked keys (flows.go).
func instructions() asm.Instructions {
	var b builder
	const (
		lPass       = "pass"
		lClaim      = "claim"
		lARP        = "arp"
		lPrefix     = "prefix"
		lProto      = "proto"
		lPorts      = "ports"
		lTCP        = "tcp"
		lPortLookup = "port_lookup"
		lAddrPort   = "addr_port"
		lOut        = "out"
		lRule1      = "rule1"
		lDeny       = "deny"
		lKernelDst  = "kernel_dst"
		lAll        = "all"
		lFast       = "fast"
		lFlow       = "flow"
	)
	r0, r1, r2, r3, r4 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4
	r6, r7, r8, r9, fp := asm.R6, asm.R7, asm.R8, asm.R9, asm.RFP

	b.add(
		asm.Mov.Reg(r6, r1).WithSymbol(progName),
		asm.LoadMem(r7, r6, mdData, asm.Word),
		asm.LoadMem(r8, r6, mdDataEnd, asm.Word),

		// Ethernet header.
		asm.Mov.Reg(r2, r7),
		asm.Add.Imm(r2, ethLen),
		asm.JGT.Reg(r2, r8, lPass),
		asm.LoadMem(r2, r7, offEthType, asm.Half),
		asm.HostTo(asm.BE, r2, asm.Half),
		asm.JEq.Imm(r2, 0x0806, lARP),
		asm.JNE.Imm(r2, 0x0800, lPass),

		// IPv4: a whole 20-byte header, version 4, IHL >= 5.
		asm.Mov.Reg(r2, r7),
		asm.Add.Imm(r2, ethLen+ipMinLen),
		asm.JGT.Reg(r2, r8, lPass),
		asm.LoadMem(r2, r7, offIPVerIHL, asm.Byte),
		asm.Mov.Reg(r3, r2),
		asm.RSh.Imm(r3, 4),
		asm.JNE.Imm(r3, 4, lPass),
		asm.And.Imm(r2, 0xf),
		asm.JLT.Imm(r2, 5, lPass),

		// config[0], kept at fp-24 for rules 0 and 1: the fast path (which uses
		// fp-16..fp-1) comes back to rule 0 when a frame is not one of its flows.
		asm.StoreImm(fp, -24, 0, asm.Word),
		asm.StoreImm(fp, -4, 0, asm.Word),
		asm.LoadMapPtr(r1, 0).WithReference(mapConfig),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lRule1),
		asm.LoadMem(r1, r0, 0, asm.Word),
		asm.StoreMem(fp, -24, r1, asm.Word),
		asm.JSet.Imm(r1, cfgFastPath, lFast),
	)

	// Rule 0: flow specs, before the kernel-destination check (they name what they take).
	b.flowRule(lFlow, lRule1, lClaim)

	b.add(
		// Rule 1: a kernel destination (multicast 224.0.0.0/4, the limited
		// broadcast 255.255.255.255, or an address in the deny set) sets the
		// flag at fp-32 and skips the all-IPv4 rule. The address is copied to
		// fp-4 as two halves (it is only 2-byte aligned behind a 14-byte
		// Ethernet header); 0xffff reads the same in either byte order.
		asm.StoreImm(fp, -32, 0, asm.Word).WithSymbol(lRule1),
		asm.LoadMem(r1, r7, offIPDst, asm.Byte),
		asm.And.Imm(r1, 0xf0),
		asm.JEq.Imm(r1, 0xe0, lKernelDst),
		asm.LoadMem(r1, r7, offIPDst, asm.Half),
		asm.LoadMem(r2, r7, offIPDst+2, asm.Half),
		asm.StoreMem(fp, -4, r1, asm.Half),
		asm.StoreMem(fp, -2, r2, asm.Half),
		asm.JNE.Imm(r1, 0xffff, lDeny),
		asm.JEq.Imm(r2, 0xffff, lKernelDst),
		asm.LoadMapPtr(r1, 0).WithReference(mapDeny).WithSymbol(lDeny),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lAll),
		asm.StoreImm(fp, -32, 1, asm.Word).WithSymbol(lKernelDst),
	)
	b.count(ctrKernelDst)
	b.add(
		asm.Ja.Label(lPrefix),

		// Rule 2: all-IPv4 flag in config[0].
		asm.LoadMem(r1, fp, -24, asm.Word).WithSymbol(lAll),
		asm.Mov.Imm(r9, ctrAllIPv4),
		asm.JSet.Imm(r1, cfgClaimAllIPv4, lClaim),

		// Rule 3: destination address in the LPM trie; for a kernel
		// destination only a /32 (the value is the prefix length).
		// Key {prefixlen = 32, addr} at fp-8.
		asm.StoreImm(fp, -8, 32, asm.Word).WithSymbol(lPrefix),
		asm.LoadMem(r1, r7, offIPDst, asm.Half),
		asm.StoreMem(fp, -4, r1, asm.Half),
		asm.LoadMem(r1, r7, offIPDst+2, asm.Half),
		asm.StoreMem(fp, -2, r1, asm.Half),
		asm.LoadMapPtr(r1, 0).WithReference(mapPrefixes),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lProto),
		asm.LoadMem(r1, r0, 0, asm.Word),
		asm.Mov.Imm(r9, ctrPrefix),
		asm.JEq.Imm(r1, 32, lClaim),
		asm.LoadMem(r2, fp, -32, asm.Word),
		asm.JEq.Imm(r2, 0, lClaim),

		// Rule 4: protocol table.
		asm.LoadMem(r1, r7, offIPProto, asm.Byte).WithSymbol(lProto),
		asm.StoreMem(fp, -4, r1, asm.Word),
		asm.LoadMapPtr(r1, 0).WithReference(mapProtos),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lPorts),
		asm.LoadMem(r1, r0, 0, asm.Word),
		asm.Mov.Imm(r9, ctrProtocol),
		asm.JNE.Imm(r1, 0, lClaim),

		// Rules 5 and 6: destination port of TCP/UDP, first fragments only.
		asm.LoadMem(r1, r7, offIPFrag, asm.Half).WithSymbol(lPorts),
		asm.HostTo(asm.BE, r1, asm.Half),
		asm.JSet.Imm(r1, 0x1fff, lPass), // nonzero fragment offset: no L4 header
		// r1 = start of L4 = data + 14 + IHL*4 (IHL in 5..15, so 20..60 bytes).
		asm.LoadMem(r2, r7, offIPVerIHL, asm.Byte),
		asm.And.Imm(r2, 0xf),
		asm.LSh.Imm(r2, 2),
		asm.Mov.Reg(r1, r7),
		asm.Add.Imm(r1, ethLen),
		asm.Add.Reg(r1, r2),
		asm.LoadMem(r2, r7, offIPProto, asm.Byte),
		asm.JEq.Imm(r2, 6, lTCP),
		asm.JNE.Imm(r2, 17, lPass),
		// UDP: the whole 8-byte header.
		asm.Mov.Reg(r4, r1),
		asm.Add.Imm(r4, udpLen),
		asm.JGT.Reg(r4, r8, lPass),
		asm.Mov.Imm(r9, portBaseUDP),
		asm.Ja.Label(lPortLookup),
		// TCP: the whole 20-byte fixed header.
		asm.Mov.Reg(r4, r1).WithSymbol(lTCP),
		asm.Add.Imm(r4, tcpMinLen),
		asm.JGT.Reg(r4, r8, lPass),
		asm.Mov.Imm(r9, portBaseTCP),
		// The address-qualified key {addr, port, proto, 0} at fp-16, for rule 6.
		asm.LoadMem(r2, r1, 2, asm.Half).WithSymbol(lPortLookup),
		asm.StoreMem(fp, -12, r2, asm.Half),
		asm.LoadMem(r3, r7, offIPDst, asm.Half),
		asm.StoreMem(fp, -16, r3, asm.Half),
		asm.LoadMem(r3, r7, offIPDst+2, asm.Half),
		asm.StoreMem(fp, -14, r3, asm.Half),
		asm.LoadMem(r3, r7, offIPProto, asm.Byte),
		asm.StoreMem(fp, -10, r3, asm.Byte),
		asm.StoreImm(fp, -9, 0, asm.Byte),
		// Rule 5: r2 = destination port (host order); key = base + port/64
		// at fp-4; r9 = port%64, the bit to test after the lookup.
		asm.HostTo(asm.BE, r2, asm.Half),
		asm.Mov.Reg(r3, r2),
		asm.RSh.Imm(r3, 6),
		asm.Add.Reg(r3, r9),
		asm.StoreMem(fp, -4, r3, asm.Word),
		asm.Mov.Reg(r9, r2),
		asm.And.Imm(r9, 63),
		asm.LoadMapPtr(r1, 0).WithReference(mapPorts),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lAddrPort),
		asm.LoadMem(r1, r0, 0, asm.DWord),
		asm.RSh.Reg(r1, r9),
		asm.And.Imm(r1, 1),
		asm.JEq.Imm(r1, 0, lAddrPort),
		asm.Mov.Imm(r9, ctrPort),
		asm.Ja.Label(lClaim),
		// Rule 6: {addr, port, proto} in the address-qualified port map.
		asm.LoadMapPtr(r1, 0).WithReference(mapAddrPort).WithSymbol(lAddrPort),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lPass),
		asm.Mov.Imm(r9, ctrAddrPort),
		asm.Ja.Label(lClaim),

		// ARP: a whole Ethernet/IPv4 ARP body, target address in the map.
		asm.Mov.Reg(r2, r7).WithSymbol(lARP),
		asm.Add.Imm(r2, ethLen+arpLen),
		asm.JGT.Reg(r2, r8, lPass),
		asm.LoadMem(r2, r7, offARPHType, asm.Half),
		asm.HostTo(asm.BE, r2, asm.Half),
		asm.JNE.Imm(r2, 1, lPass),
		asm.LoadMem(r2, r7, offARPPType, asm.Half),
		asm.HostTo(asm.BE, r2, asm.Half),
		asm.JNE.Imm(r2, 0x0800, lPass),
		asm.LoadMem(r2, r7, offARPHLen, asm.Byte),
		asm.JNE.Imm(r2, 6, lPass),
		asm.LoadMem(r2, r7, offARPPLen, asm.Byte),
		asm.JNE.Imm(r2, 4, lPass),
		asm.LoadMem(r1, r7, offARPTPA, asm.Half),
		asm.StoreMem(fp, -4, r1, asm.Half),
		asm.LoadMem(r1, r7, offARPTPA+2, asm.Half),
		asm.StoreMem(fp, -2, r1, asm.Half),
		asm.LoadMapPtr(r1, 0).WithReference(mapARP),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lPass),
		asm.Mov.Imm(r9, ctrARP),
	)

	// Claimed: count the rule (r9) and the claim, then redirect to the
	// queue's socket with XDP_PASS as the fallback action.
	b.add(asm.Mov.Reg(r1, r9).WithSymbol(lClaim))
	b.countReg()
	b.count(ctrClaimed)
	b.add(
		asm.LoadMapPtr(r1, 0).WithReference(mapXSKs),
		asm.LoadMem(r2, r6, mdRxQueueIndex, asm.Word),
		asm.Mov.Imm(r3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Mov.Reg(r7, r0),
		asm.JEq.Imm(r7, xdpRedirect, lOut),
	)
	b.count(ctrNoSocket)
	b.add(
		asm.Mov.Reg(r0, r7).WithSymbol(lOut),
		asm.Return(),
	)

	b.fastPath(lFast, lFlow, lOut)

	// Not ours.
	b.add(asm.Mov.Imm(r1, ctrPassed).WithSymbol(lPass))
	b.countReg()
	b.add(
		asm.Mov.Imm(r0, xdpPass),
		asm.Return(),
	)
	return b.insns
}

type builder struct {
	insns asm.Instructions
	n     int
}

func (b *builder) add(insns ...asm.Instruction) { b.insns = append(b.insns, insns...) }

// count adds one to counters[idx] on this CPU. Clobbers r0–r5.
func (b *builder) count(idx int32) {
	b.add(asm.Mov.Imm(asm.R1, idx))
	b.countReg()
}

// countReg adds one to counters[r1] on this CPU. Clobbers r0–r5.
func (b *builder) countReg() {
	b.n++
	skip := fmt.Sprintf("count_done_%d", b.n)
	b.add(
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(mapCounters),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		// A jump target must be an instruction: a no-op move.
		asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
	)
}
