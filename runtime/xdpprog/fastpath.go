package xdpprog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// FastFlow is one flow that the program translates and forwards by itself, without the
// pipeline: its frames have one address and port rewritten (with incremental checksum
// updates, RFC 1624), the TTL lowered, new Ethernet addresses written, and leave through the
// interface set by SetFastTarget (XDP_REDIRECT through a devmap: no socket, no copy). A
// pipeline installs one after its own slow path has decided the flow's fate (the NAT does,
// for mappings it has made) and stays in charge: it removes it, and reads back when the
// flow last saw a packet.
//
// Only UDP, and TCP segments without SYN, FIN or RST, take the fast path, and only in IPv4
// packets with a 20-byte header, not fragmented, with a TTL above 1 and no longer than the
// target's MTU (read by SetFastTarget): everything else, and every frame of a flow not
// installed, goes through the claim rules as before, so connection set-up and tear-down,
// options, fragments and expiring TTLs stay with the pipeline.
type FastFlow struct {
	Proto            uint8   // 6 (TCP) or 17 (UDP)
	Src, Dst         [4]byte // the flow's addresses as received
	SrcPort, DstPort uint16  // and its ports
	RewriteSrc       bool    // rewrite the source address and port (else the destination)
	Addr             [4]byte // the new address
	Port             uint16  // the new port
	SrcMAC, DstMAC   [6]byte // the forwarded frame's Ethernet addresses
}

// DefaultMaxFastFlows is the fast flow table's size when Options.MaxFastFlows is zero. The
// table is not preallocated: an entry costs kernel memory only while it is installed.
const DefaultMaxFastFlows = 1 << 18

// Layout of the fast map's key and value (the asm below reads them at these offsets).
const (
	fastKeySize   = 16 // src[4] dst[4] sport[2] dport[2] proto[1] zero[3], network order
	fastValueSize = 40

	fvDstMAC  = 0  // [6]byte
	fvSrcMAC  = 6  // [6]byte
	fvAddr    = 12 // [4]byte, network order
	fvPort    = 16 // network order
	fvIPDelta = 18 // host order: one's-complement sum to add to the IPv4 header checksum
	fvL4Delta = 20 // host order: the same for the TCP or UDP checksum
	fvFlags   = 22 // bit 0: rewrite the source
	fvLast    = 24 // u64, bpf_ktime_get_ns of the last packet (CLOCK_MONOTONIC)
	fvPackets = 32 // u64, packets forwarded
)

func fastKey(proto uint8, src, dst [4]byte, sport, dport uint16) [fastKeySize]byte {
	var k [fastKeySize]byte
	copy(k[0:4], src[:])
	copy(k[4:8], dst[:])
	binary.BigEndian.PutUint16(k[8:10], sport)
	binary.BigEndian.PutUint16(k[10:12], dport)
	k[12] = proto
	return k
}

// csumAdd adds the change of one 16-bit word from old to new to a one's-complement sum
// (RFC 1624, eqn. 3: ~m + m').
func csumAdd(sum uint32, old, new uint16) uint32 { return sum + uint32(^old) + uint32(new) }

func csumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// fastValue builds the map value of f: the checksum deltas are fixed per flow, because the
// key fixes the old address and port.
func fastValue(f FastFlow) [fastValueSize]byte {
	var v [fastValueSize]byte
	copy(v[fvDstMAC:], f.DstMAC[:])
	copy(v[fvSrcMAC:], f.SrcMAC[:])
	copy(v[fvAddr:], f.Addr[:])
	binary.BigEndian.PutUint16(v[fvPort:], f.Port)
	oldA, oldP := f.Dst, f.DstPort
	if f.RewriteSrc {
		oldA, oldP = f.Src, f.SrcPort
		v[fvFlags] = 1
	}
	var addr uint32
	for i := 0; i < 4; i += 2 {
		addr = csumAdd(addr, binary.BigEndian.Uint16(oldA[i:]), binary.BigEndian.Uint16(f.Addr[i:]))
	}
	// The TTL shares a word with the protocol: ttl<<8|proto becomes (ttl-1)<<8|proto,
	// whatever the TTL, a change of ~m + m' = 0xfeff.
	ip := csumFold(addr + 0xfeff)
	l4 := csumFold(csumAdd(addr, oldP, f.Port))
	binary.NativeEndian.PutUint16(v[fvIPDelta:], ip)
	binary.NativeEndian.PutUint16(v[fvL4Delta:], l4)
	return v
}

func (f FastFlow) check() error {
	if f.Proto != 6 && f.Proto != 17 {
		return fmt.Errorf("xdpprog: fast flow protocol %d: only TCP (6) and UDP (17) take the fast path", f.Proto)
	}
	return nil
}

// SetFastTarget turns the fast path on: fast flows leave through the interface ifindex
// (which must accept XDP_REDIRECT: a veth does when its peer has an XDP program or GRO
// on). A target of 0 turns the fast path off; the installed flows stay in the table.
func (p *Program) SetFastTarget(ifindex int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if ifindex > 0 {
		// Larger packets stay off the fast path: the kernel refuses to redirect a frame
		// over the target's MTU, and the pipeline can fragment or answer for it.
		ifi, err := net.InterfaceByIndex(ifindex)
		if err != nil {
			return fmt.Errorf("%w: the fast path's target, ifindex %d: %w", ErrNoInterface, ifindex, err)
		}
		if err := p.config.Update(uint32(1), uint32(ifi.MTU), ebpf.UpdateAny); err != nil {
			return wrapPerm("setting the fast path's MTU", err)
		}
		if err := p.fastDev.Update(uint32(0), uint32(ifindex), ebpf.UpdateAny); err != nil {
			return wrapPerm(fmt.Sprintf("setting the fast path's target to ifindex %d", ifindex), err)
		}
	}
	return p.setFlag(cfgFastPath, ifindex > 0, "turning the fast path on or off")
}

// AddFast installs or replaces a fast flow. A full table gives an error wrapping
// ErrFastFull: the flow then simply stays on the pipeline's path.
func (p *Program) AddFast(f FastFlow) error {
	if err := f.check(); err != nil {
		return err
	}
	k, v := fastKey(f.Proto, f.Src, f.Dst, f.SrcPort, f.DstPort), fastValue(f)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.fast.Update(k[:], v[:], ebpf.UpdateAny); err != nil {
		if errors.Is(err, errFull) {
			return fmt.Errorf("%w (%d flows): raise Options.MaxFastFlows: %w", ErrFastFull, p.opts.MaxFastFlows, err)
		}
		return wrapPerm("installing a fast flow", err)
	}
	return nil
}

// DeleteFast removes a fast flow; removing one that is not installed is not an error.
func (p *Program) DeleteFast(proto uint8, src, dst [4]byte, sport, dport uint16) error {
	k := fastKey(proto, src, dst, sport, dport)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.fast.Delete(k[:]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return wrapPerm("removing a fast flow", err)
	}
	return nil
}

// fastDevmapID is the kernel's ID of the fast path's devmap, which xdp_redirect_err names.
func (p *Program) fastDevmapID() (ebpf.MapID, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, ErrClosed
	}
	info, err := p.fastDev.Info()
	if err != nil {
		return 0, fmt.Errorf("xdpprog: the fast path's devmap: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("xdpprog: this kernel does not report map IDs")
	}
	return id, nil
}

// FastSeen reports when the fast flow last forwarded a packet (CLOCK_MONOTONIC nanoseconds,
// 0 if never) and how many it forwarded; ok is false when the flow is not installed.
func (p *Program) FastSeen(proto uint8, src, dst [4]byte, sport, dport uint16) (last int64, packets uint64, ok bool, err error) {
	k := fastKey(proto, src, dst, sport, dport)
	var v [fastValueSize]byte
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, 0, false, ErrClosed
	}
	if err := p.fast.Lookup(k[:], v[:]); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, 0, false, nil
		}
		return 0, 0, false, wrapPerm("reading a fast flow", err)
	}
	return int64(binary.NativeEndian.Uint64(v[fvLast:])), binary.NativeEndian.Uint64(v[fvPackets:]), true, nil
}

// Frame offsets the fast path uses (IPv4 header of exactly 20 bytes).
const (
	offIPLen   = ethLen + 2
	offIPTTL   = ethLen + 8
	offIPCsum  = ethLen + 10
	offIPSrc   = ethLen + 12
	offL4      = ethLen + ipMinLen
	offTCPFlag = offL4 + 13
	offTCPCsum = offL4 + 16
	offUDPCsum = offL4 + 6
)

// fastPath emits the fast-path block at label start: an eligible frame of an installed flow
// is rewritten and redirected; anything else jumps to miss with nothing written. One copy of
// the block per protocol, so that the verifier knows on each path how much of the frame was
// checked.
func (b *builder) fastPath(start, miss, out string) {
	r1, r2 := asm.R1, asm.R2
	tcp, udp := start+"_tcp", start+"_udp"
	b.add(
		asm.Mov.Reg(r2, asm.R7).WithSymbol(start),
		asm.Add.Imm(r2, offL4+udpLen),
		asm.JGT.Reg(r2, asm.R8, miss),
		asm.LoadMem(r2, asm.R7, offIPVerIHL, asm.Byte),
		asm.JNE.Imm(r2, 0x45, miss), // version 4, no options
		asm.LoadMem(r2, asm.R7, offIPFrag, asm.Half),
		asm.HostTo(asm.BE, r2, asm.Half),
		asm.JSet.Imm(r2, 0x3fff, miss), // MF or an offset: a fragment
		asm.LoadMem(r2, asm.R7, offIPTTL, asm.Byte),
		asm.JLE.Imm(r2, 1, miss),
		// The IPv4 total length against the target's MTU (config[1]).
		asm.StoreImm(asm.RFP, -4, 1, asm.Word),
		asm.LoadMapPtr(r1, 0).WithReference(mapConfig),
		asm.Mov.Reg(r2, asm.RFP),
		asm.Add.Imm(r2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, miss),
		asm.LoadMem(r1, asm.R0, 0, asm.Word),
		asm.LoadMem(r2, asm.R7, offIPLen, asm.Half),
		asm.HostTo(asm.BE, r2, asm.Half),
		asm.JGT.Reg(r2, r1, miss),
		asm.LoadMem(r1, asm.R7, offIPProto, asm.Byte),
		asm.JEq.Imm(r1, 17, udp),
		asm.JEq.Imm(r1, 6, tcp),
		asm.Ja.Label(miss),
	)
	b.fastProto(tcp, 6, miss, out)
	b.fastProto(udp, 17, miss, out)
}

func (b *builder) fastProto(start string, proto int32, miss, out string) {
	r0, r1, r2, r3, r4 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4
	r7, r8, r9, fp := asm.R7, asm.R8, asm.R9, asm.RFP
	l := func(s string) string { return start + "_" + s }
	l4len, csumOff := int32(udpLen), int16(offUDPCsum)
	if proto == 6 {
		l4len, csumOff = tcpMinLen, offTCPCsum
	}
	b.add(
		asm.Mov.Reg(r2, r7).WithSymbol(start),
		asm.Add.Imm(r2, offL4+l4len),
		asm.JGT.Reg(r2, r8, miss),
	)
	if proto == 6 {
		b.add(
			asm.LoadMem(r2, r7, offTCPFlag, asm.Byte),
			asm.JSet.Imm(r2, 0x07, miss), // FIN, SYN or RST: the pipeline tracks state
		)
	}
	// The key at fp-16, copied in halves (the addresses are 2-byte aligned in the frame).
	for i, off := range []int16{offIPSrc, offIPSrc + 2, offIPSrc + 4, offIPSrc + 6, offL4, offL4 + 2} {
		b.add(
			asm.LoadMem(r2, r7, off, asm.Half),
			asm.StoreMem(fp, int16(-16+2*i), r2, asm.Half),
		)
	}
	b.add(
		asm.StoreImm(fp, -4, 0, asm.Word),
		asm.StoreImm(fp, -4, int64(proto), asm.Byte),
		asm.LoadMapPtr(r1, 0).WithReference(mapFast),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, miss),
		asm.Mov.Reg(r9, r0),

		// Address and port.
		asm.LoadMem(r1, r9, fvFlags, asm.Byte),
		asm.LoadMem(r2, r9, fvAddr, asm.Half),
		asm.LoadMem(r3, r9, fvAddr+2, asm.Half),
		asm.LoadMem(r4, r9, fvPort, asm.Half),
		asm.JSet.Imm(r1, 1, l("src")),
		asm.StoreMem(r7, offIPSrc+4, r2, asm.Half),
		asm.StoreMem(r7, offIPSrc+6, r3, asm.Half),
		asm.StoreMem(r7, offL4+2, r4, asm.Half),
		asm.Ja.Label(l("ttl")),
		asm.StoreMem(r7, offIPSrc, r2, asm.Half).WithSymbol(l("src")),
		asm.StoreMem(r7, offIPSrc+2, r3, asm.Half),
		asm.StoreMem(r7, offL4, r4, asm.Half),

		asm.LoadMem(r1, r7, offIPTTL, asm.Byte).WithSymbol(l("ttl")),
		asm.Add.Imm(r1, -1),
		asm.StoreMem(r7, offIPTTL, r1, asm.Byte),
	)
	b.csum(offIPCsum, fvIPDelta, false)
	if proto == 17 {
		// A UDP checksum of 0 means the sender computed none: leave it.
		b.add(
			asm.LoadMem(r1, r7, csumOff, asm.Half),
			asm.JEq.Imm(r1, 0, l("mac")),
		)
	}
	b.csum(csumOff, fvL4Delta, proto == 17)
	b.add(
		asm.LoadMem(r1, r9, fvDstMAC, asm.Word).WithSymbol(l("mac")),
		asm.StoreMem(r7, 0, r1, asm.Word),
		asm.LoadMem(r1, r9, fvDstMAC+4, asm.Word),
		asm.StoreMem(r7, 4, r1, asm.Word),
		asm.LoadMem(r1, r9, fvDstMAC+8, asm.Word),
		asm.StoreMem(r7, 8, r1, asm.Word),

		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(r9, fvLast, r0, asm.DWord),
		asm.Mov.Imm(r1, 1),
	)
	xadd := asm.StoreXAdd(r9, r1, asm.DWord)
	xadd.Offset = fvPackets
	b.add(xadd)
	b.count(ctrFast)
	b.add(
		asm.LoadMapPtr(r1, 0).WithReference(mapFastDev),
		asm.Mov.Imm(r2, 0),
		asm.Mov.Imm(r3, xdpDrop),
		asm.FnRedirectMap.Call(),
		asm.Mov.Reg(r7, r0),
		asm.JEq.Imm(r7, xdpRedirect, out),
	)
	b.count(ctrFastNoTarget)
	b.add(asm.Ja.Label(out))
}

// csum updates the big-endian checksum at frame offset off by the delta at value offset
// delta (RFC 1624 eqn. 3: HC' = ~(~HC + delta)); udp turns a result of 0 into 0xffff.
// Clobbers r1, r2.
func (b *builder) csum(off int16, delta int16, udp bool) {
	r1, r2 := asm.R1, asm.R2
	b.add(
		asm.LoadMem(r1, asm.R7, off, asm.Half),
		asm.HostTo(asm.BE, r1, asm.Half),
		asm.Xor.Imm(r1, 0xffff),
		asm.LoadMem(r2, asm.R9, delta, asm.Half),
		asm.Add.Reg(r1, r2),
	)
	for range 2 {
		b.add(
			asm.Mov.Reg(r2, r1),
			asm.RSh.Imm(r2, 16),
			asm.And.Imm(r1, 0xffff),
			asm.Add.Reg(r1, r2),
		)
	}
	b.add(asm.Xor.Imm(r1, 0xffff))
	if udp {
		b.n++
		done := fmt.Sprintf("csum_done_%d", b.n)
		b.add(
			asm.JNE.Imm(r1, 0, done),
			asm.Mov.Imm(r1, 0xffff),
			asm.HostTo(asm.BE, r1, asm.Half).WithSymbol(done),
		)
	} else {
		b.add(asm.HostTo(asm.BE, r1, asm.Half))
	}
	b.add(asm.StoreMem(asm.R7, off, r1, asm.Half))
}

// XDP actions, as TestRun returns them.
const (
	ActionDrop     = xdpDrop
	ActionPass     = xdpPass
	ActionRedirect = xdpRedirect
)

// TestRun runs the program once on frame in the kernel (BPF_PROG_TEST_RUN), with no
// interface involved, and returns its XDP action and the frame as the program left it. A
// redirect is decided but not carried out.
func (p *Program) TestRun(frame []byte) (action uint32, out []byte, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, nil, ErrClosed
	}
	out = make([]byte, len(frame)+256)
	ret, err := p.prog.Run(&ebpf.RunOptions{Data: frame, DataOut: out, Repeat: 1})
	if err != nil {
		return 0, nil, wrapPerm("test run of the XDP program", err)
	}
	return ret, out[:len(frame)], nil
}
