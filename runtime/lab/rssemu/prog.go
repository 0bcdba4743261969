package rssemu

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/netchan/netchan/pipelines"
)

// Names, as bpftool and `tc filter show` show them.
const (
	progName = "netchan_rssemu"
	mapTab   = "rssemu_tab"
	mapRETA  = "rssemu_reta"
)

// The table map holds one value: the Toeplitz hash contribution of every byte value at each of
// the 12 input offsets of the IPv4-with-ports input (row i at tabRow*i, 256 little uint32s,
// the same table pipelines.Toeplitz keeps), then the length of the RETA.
const (
	tabRows    = 12
	tabRow     = 256 * 4
	tabRETALen = tabRows * tabRow
	tabSize    = tabRETALen + 4

	// MaxRETA is the longest indirection table Attach takes (pipelines.DefaultRETA of 65536
	// queues).
	MaxRETA = 1 << 16
)

// __sk_buff offsets (include/uapi/linux/bpf.h) and frame layout.
const (
	skbMark         = 8
	skbQueueMapping = 12
	skbProtocol     = 16

	ethLen    = 14
	ipMinLen  = 20
	ipProtoTC = 6
	ipProtoUD = 17

	// tcActUnspec lets the packet go on, and later tc filters run: the program only sets the
	// queue mapping.
	tcActUnspec = -1
)

// Stack: fp-20..fp-1 the IPv4 header (so the addresses are at fp-8..fp-1), fp-24..fp-21 the
// ports, fp-28 a map key.
const (
	stIP    = -20
	stAddrs = stIP + 12
	stFrag  = stIP + 6
	stProto = stIP + 9
	stPorts = -24
	stKey   = -28
)

// variant selects what the program does once it has the queue. The live program only writes
// skb->queue_mapping. BPF_PROG_RUN does not report queue_mapping back, so the test variant
// also writes the same value to skb->mark (which it does report) and returns the hash.
type variant int

const (
	live variant = iota
	testRun
)

// table returns the value of the table map for key and reta: row i, entry b is the hash of
// the input whose byte i is b and whose other bytes are zero, taken from pipelines.Toeplitz
// itself, so the program computes exactly its HashIPv4Ports and HashIPv4.
func table(t *pipelines.Toeplitz, retaLen int) []byte {
	v := make([]byte, tabSize)
	in := make([]byte, tabRows)
	for i := range tabRows {
		clear(in)
		for b := range 256 {
			in[i] = byte(b)
			binary.NativeEndian.PutUint32(v[i*tabRow+b*4:], t.Hash(in[:i+1]))
		}
	}
	binary.NativeEndian.PutUint32(v[tabRETALen:], uint32(retaLen))
	return v
}

// collectionSpec describes the maps and the program for a RETA of retaLen entries.
func collectionSpec(retaLen int, v variant) *ebpf.CollectionSpec {
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			mapTab: {Name: mapTab, Type: ebpf.Array, KeySize: 4, ValueSize: tabSize, MaxEntries: 1},
			// Entry i: the queue of hashes h with h % len == i.
			mapRETA: {Name: mapRETA, Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: uint32(max(retaLen, 1))},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			progName: {
				Name:         progName,
				Type:         ebpf.SchedCLS,
				License:      "Dual MIT/GPL",
				Instructions: instructions(v),
			},
		},
	}
}

// htons returns the value a __u32 field holding a network-order 16-bit value (skb->protocol)
// reads as on this machine.
func htons(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// instructions is the tc program. Registers:
//
//	r6 ctx (__sk_buff *)   r7 the table (map value)   r8 the hash   r9 the IPv4 header length
//
// It reads headers with bpf_skb_load_bytes, which also works when they are not in the linear
// part of the skb. Ethernet is assumed (veth): the IPv4 header starts at byte 14 of the frame.
func instructions(v variant) asm.Instructions {
	const (
		lOut   = "out"
		lPorts = "ports"
		lQueue = "queue"
		lSet   = "set"
	)
	r0, r1, r2, r3, r4 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4
	r6, r7, r8, r9, fp := asm.R6, asm.R7, asm.R8, asm.R9, asm.RFP

	insns := asm.Instructions{
		asm.Mov.Reg(r6, r1).WithSymbol(progName),

		// IPv4 only (skb->protocol is the Ethernet type, network order).
		asm.LoadMem(r2, r6, skbProtocol, asm.Word),
		asm.JNE.Imm(r2, htons(0x0800), lOut),

		// The 20-byte IPv4 header at fp-20: version 4, IHL >= 5.
		asm.Mov.Reg(r1, r6),
		asm.Mov.Imm(r2, ethLen),
		asm.Mov.Reg(r3, fp),
		asm.Add.Imm(r3, stIP),
		asm.Mov.Imm(r4, ipMinLen),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(r0, 0, lOut),
		asm.LoadMem(r9, fp, stIP, asm.Byte),
		asm.Mov.Reg(r1, r9),
		asm.RSh.Imm(r1, 4),
		asm.JNE.Imm(r1, 4, lOut),
		asm.And.Imm(r9, 0xf),
		asm.JLT.Imm(r9, 5, lOut),

		// The table.
		asm.StoreImm(fp, stKey, 0, asm.Word),
		asm.LoadMapPtr(r1, 0).WithReference(mapTab),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lOut),
		asm.Mov.Reg(r7, r0),
		asm.Mov.Imm(r8, 0),
	}
	// hashByte XORs the contribution of the byte at fp+off, input offset row, into r8.
	hashByte := func(off int16, row int) {
		insns = append(insns,
			asm.LoadMem(r1, fp, off, asm.Byte),
			asm.LSh.Imm(r1, 2),
			asm.Add.Reg(r1, r7),
			asm.LoadMem(r1, r1, int16(row*tabRow), asm.Word),
			asm.Xor.Reg(r8, r1),
		)
	}
	// Source and destination addresses: input bytes 0..7.
	for i := range 8 {
		hashByte(stAddrs+int16(i), i)
	}
	insns = append(insns,
		// Ports only for TCP and UDP, and not for fragments (MF set or a nonzero offset):
		// everything else hashes as IPv4 without ports.
		asm.LoadMem(r1, fp, stProto, asm.Byte),
		asm.JEq.Imm(r1, ipProtoTC, lPorts),
		asm.JNE.Imm(r1, ipProtoUD, lQueue),
		asm.LoadMem(r1, fp, stFrag, asm.Half).WithSymbol(lPorts),
		asm.HostTo(asm.BE, r1, asm.Half),
		asm.JSet.Imm(r1, 0x3fff, lQueue),
		// The two ports at 14 + IHL*4; a packet too short to hold them hashes without ports.
		asm.Mov.Reg(r2, r9),
		asm.LSh.Imm(r2, 2),
		asm.Add.Imm(r2, ethLen),
		asm.Mov.Reg(r1, r6),
		asm.Mov.Reg(r3, fp),
		asm.Add.Imm(r3, stPorts),
		asm.Mov.Imm(r4, 4),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(r0, 0, lQueue),
	)
	// Source port, destination port: input bytes 8..11.
	for i := range 4 {
		hashByte(stPorts+int16(i), 8+i)
	}
	insns = append(insns,
		// r2 = RETA[hash % len], or queue 0 for an empty table (pipelines.RETA.Queue).
		asm.Mov.Imm(r2, 0).WithSymbol(lQueue),
		asm.LoadMem(r1, r7, tabRETALen, asm.Word),
		asm.JEq.Imm(r1, 0, lSet),
		asm.Mov.Reg(r3, r8),
		asm.Mod.Reg(r3, r1),
		asm.StoreMem(fp, stKey, r3, asm.Word),
		asm.LoadMapPtr(r1, 0).WithReference(mapRETA),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, lOut),
		asm.LoadMem(r2, r0, 0, asm.Word),

		// queue_mapping = queue + 1. A tc program's write does not pick the transmit queue
		// itself: the kernel then picks it in netdev_pick_tx, and without XPS that reads a
		// nonzero queue_mapping as a recorded receive queue, queue_mapping - 1 (skb_tx_hash),
		// the path forwarded packets take. Measured on 6.18: writing 1..4 on a 4-queue veth
		// sends on queues 0..3, and the peer receives on the same queue.
		asm.Add.Imm(r2, 1).WithSymbol(lSet),
		asm.StoreMem(r6, skbQueueMapping, r2, asm.Word),
	)
	if v == testRun {
		insns = append(insns,
			asm.StoreMem(r6, skbMark, r2, asm.Word),
			asm.Mov.Reg(r0, r8),
			asm.Return(),
		)
	}
	insns = append(insns,
		asm.Mov.Imm(r0, tcActUnspec).WithSymbol(lOut),
		asm.Return(),
	)
	return insns
}

// load builds the collection for key and reta and fills its maps. The caller closes it.
func load(key []byte, reta pipelines.RETA, v variant) (*ebpf.Collection, error) {
	t, err := pipelines.NewToeplitz(key)
	if err != nil {
		return nil, err
	}
	if len(reta) > MaxRETA {
		return nil, fmt.Errorf("rssemu: RETA of %d entries, at most %d", len(reta), MaxRETA)
	}
	coll, err := ebpf.NewCollection(collectionSpec(len(reta), v))
	if err != nil {
		return nil, fmt.Errorf("rssemu: loading the program: %w", err)
	}
	if err := coll.Maps[mapTab].Put(uint32(0), table(t, len(reta))); err != nil {
		coll.Close()
		return nil, fmt.Errorf("rssemu: writing the Toeplitz table: %w", err)
	}
	if len(reta) > 0 {
		keys := make([]uint32, len(reta))
		vals := make([]uint32, len(reta))
		for i, q := range reta {
			keys[i], vals[i] = uint32(i), uint32(q)
		}
		if _, err := coll.Maps[mapRETA].BatchUpdate(keys, vals, nil); err != nil {
			coll.Close()
			return nil, fmt.Errorf("rssemu: writing the RETA: %w", err)
		}
	}
	return coll, nil
}
