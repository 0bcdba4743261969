package xdpprog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/netchan/netchan/pipelines/claim"
)

// Flow specs (claim.KindFlow) are matched by tuple-space search: the held specs are grouped by
// shape (what a spec leaves open), each shape in use has a slot in the shapes map holding the
// masks it applies, and the flow map holds each spec's fields masked by its shape, with the
// slot number in the key so that two shapes never share an entry. A packet is masked once per
// shape in use and looked up once per shape, whatever the number of specs.

// flowShape is what a flow spec names exactly: its protocol always, the leading bits of each
// address (0: any), and each port or not (any).
type flowShape struct {
	proto                 uint8
	localBits, remoteBits uint8 // 0..32
	localPort, remotePort bool  // the port is named
}

func shapeOf(r claim.Rule) flowShape {
	s := flowShape{proto: r.Proto()}
	if l := r.Local(); l.IsValid() {
		s.localBits = uint8(l.Bits())
	}
	if rm := r.Remote(); rm.IsValid() {
		s.remoteBits = uint8(rm.Bits())
	}
	_, s.localPort = r.LocalPort()
	_, s.remotePort = r.RemotePort()
	return s
}

// value is the shape's entry in the shapes map: its first 12 bytes line up with flowKey and
// are ANDed into the packet's fields; then the protocol.
func (s flowShape) value() [flowShapeSize]byte {
	var v [flowShapeSize]byte
	binary.BigEndian.PutUint32(v[0:4], addrMask(s.localBits))
	binary.BigEndian.PutUint32(v[4:8], addrMask(s.remoteBits))
	if s.localPort {
		binary.BigEndian.PutUint16(v[8:10], 0xffff)
	}
	if s.remotePort {
		binary.BigEndian.PutUint16(v[10:12], 0xffff)
	}
	v[fsProto] = s.proto
	return v
}

func addrMask(bits uint8) uint32 {
	if bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

// String writes the shape in the grammar's words: udp:/32:PORT<-/24:*.
func (s flowShape) String() string {
	side := func(bits uint8, port bool) string {
		a, p := "*", "*"
		if bits > 0 {
			a = "/" + strconv.Itoa(int(bits))
		}
		if port {
			p = "PORT"
		}
		return a + ":" + p
	}
	proto := "udp"
	if s.proto == ProtoTCP {
		proto = "tcp"
	}
	return proto + ":" + side(s.localBits, s.localPort) + "<-" + side(s.remoteBits, s.remotePort)
}

// flowKey is the key of the flow map (layout at flowKeySize): a spec's fields masked by its
// shape, and the shape's slot.
type flowKey [flowKeySize]byte

func newFlowKey(r claim.Rule, slot int) flowKey {
	var k flowKey
	pfxAddr := func(p netip.Prefix) [4]byte {
		if !p.IsValid() {
			return [4]byte{}
		}
		return p.Masked().Addr().As4()
	}
	l, rm := pfxAddr(r.Local()), pfxAddr(r.Remote())
	copy(k[0:4], l[:])
	copy(k[4:8], rm[:])
	if port, ok := r.LocalPort(); ok {
		binary.BigEndian.PutUint16(k[8:10], port)
	}
	if port, ok := r.RemotePort(); ok {
		binary.BigEndian.PutUint16(k[10:12], port)
	}
	k[12] = r.Proto()
	k[13] = uint8(slot)
	return k
}

func (k flowKey) slot() int { return int(k[13]) }

// shapeSlot is one slot of the shapes map as the Go side knows it: in use while n > 0.
type shapeSlot struct {
	shape flowShape
	n     int // installed specs of this shape
}

// syncFlow makes the flow map hold r's entry while some owner holds r, and gives r's shape a
// slot while any spec of that shape is installed. The caller holds p.mu.
func (p *Program) syncFlow(r claim.Rule) error {
	p.claims.init()
	held := p.claims.refs[r] > 0
	k, have := p.claims.flows[r]
	switch {
	case held && !have:
		return p.addFlow(r)
	case !held && have:
		return p.removeFlow(r, k)
	}
	return nil
}

func (p *Program) addFlow(r claim.Rule) error {
	slot, err := p.flowSlot(shapeOf(r))
	if err != nil {
		return err
	}
	k := newFlowKey(r, slot)
	if err := p.flowMap.Update(k[:], uint32(1), ebpf.UpdateAny); err != nil {
		if isFull(err) {
			return fmt.Errorf("the flow map is full (%d flow specs): claim wider prefixes or fewer flows: %w", maxFlows, err)
		}
		return wrapPerm("writing the flow map", err)
	}
	p.claims.flows[r] = k
	p.claims.shapes[slot].n++
	// The slot's masks are in place (flowSlot): now the program may probe it.
	if bit := uint32(cfgFlowShape0 << slot); p.cfg&bit == 0 {
		if err := p.setFlag(bit, true, "turning a flow shape on"); err != nil {
			p.claims.shapes[slot].n--
			delete(p.claims.flows, r)
			if derr := p.flowMap.Delete(k[:]); derr != nil && !errors.Is(derr, ebpf.ErrKeyNotExist) {
				err = errors.Join(err, wrapPerm("deleting from the flow map", derr))
			}
			return err
		}
	}
	return nil
}

func (p *Program) removeFlow(r claim.Rule, k flowKey) error {
	if err := p.flowMap.Delete(k[:]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return wrapPerm("deleting from the flow map", err)
	}
	delete(p.claims.flows, r)
	slot := k.slot()
	if p.claims.shapes[slot].n--; p.claims.shapes[slot].n > 0 {
		return nil
	}
	// The last spec of the shape is gone: stop probing the slot. Should this fail, the bit
	// stays set over an empty slot (harmless: every probe misses) and flowSlot clears it
	// before the slot is given another shape.
	return p.setFlag(cfgFlowShape0<<slot, false, "turning a flow shape off")
}

// flowSlot returns the slot of shape: the slot in use for it, or else a free slot, which it
// gives shape's masks. A free slot's bit is clear before its masks change, so the program
// never probes a slot with another shape's masks.
func (p *Program) flowSlot(shape flowShape) (int, error) {
	free := -1
	for i, s := range p.claims.shapes {
		if s.n > 0 && s.shape == shape {
			return i, nil
		}
		if s.n == 0 && free < 0 {
			free = i
		}
	}
	if free < 0 {
		inUse := make([]string, 0, maxFlowShapes)
		for _, s := range p.claims.shapes {
			inUse = append(inUse, s.shape.String())
		}
		return 0, fmt.Errorf("%w: at most %d flow shapes can be in use at once, and %s would be a new one (in use: %s): use fewer distinct prefix lengths/port patterns",
			ErrFlowShapes, maxFlowShapes, shape, strings.Join(inUse, ", "))
	}
	if bit := uint32(cfgFlowShape0 << free); p.cfg&bit != 0 {
		if err := p.setFlag(bit, false, "turning a flow shape off"); err != nil {
			return 0, err
		}
	}
	v := shape.value()
	if err := p.flowShapes.Update(uint32(free), v[:], ebpf.UpdateAny); err != nil {
		return 0, wrapPerm("writing a flow shape", err)
	}
	p.claims.shapes[free].shape = shape
	return free, nil
}

// Stack of the flow rule: the packet's fields as a flow key (unmasked, slot 0) at fpFlowPkt,
// one shape's masked key at fpFlowKey.
const (
	fpFlowPkt = -64
	fpFlowKey = -48
)

// flowRule emits rule 0 at label start: with at least one shape in use, a TCP or UDP packet
// whose fixed L4 header is in the frame (IHL-aware) is masked and looked up once per shape in
// use (the probes are unrolled: no loop for the verifier); a hit jumps to claim with r9 =
// ctrFlow, anything else goes on to next. A non-first fragment has no ports: it is counted in
// ctrFlowFragment and goes on to next. Expects config[0] at fp-24.
func (b *builder) flowRule(start, next, claimLabel string) {
	r0, r1, r2, r3 := asm.R0, asm.R1, asm.R2, asm.R3
	r7, r8, r9, fp := asm.R7, asm.R8, asm.R9, asm.RFP
	l := func(s string) string { return start + "_" + s }
	probe := func(i int) string { return l("probe" + strconv.Itoa(i)) }

	b.add(
		asm.LoadMem(r1, fp, -24, asm.Word).WithSymbol(start),
		asm.And.Imm(r1, cfgFlowShapes),
		asm.JEq.Imm(r1, 0, next),
		asm.LoadMem(r2, r7, offIPProto, asm.Byte),
		asm.JEq.Imm(r2, ProtoTCP, l("frag")),
		asm.JNE.Imm(r2, ProtoUDP, next),
		asm.LoadMem(r1, r7, offIPFrag, asm.Half).WithSymbol(l("frag")),
		asm.HostTo(asm.BE, r1, asm.Half),
		asm.JSet.Imm(r1, 0x1fff, l("later")),

		// r1 = start of L4 = data + 14 + IHL*4; the whole fixed header must be in the frame.
		asm.LoadMem(r3, r7, offIPVerIHL, asm.Byte),
		asm.And.Imm(r3, 0xf),
		asm.LSh.Imm(r3, 2),
		asm.Mov.Reg(r1, r7),
		asm.Add.Imm(r1, ethLen),
		asm.Add.Reg(r1, r3),
		asm.Mov.Reg(r3, r1),
		asm.JEq.Imm(r2, ProtoTCP, l("tcp")),
		asm.Add.Imm(r3, udpLen),
		asm.JGT.Reg(r3, r8, next),
		asm.Ja.Label(l("key")),
		asm.Add.Imm(r3, tcpMinLen).WithSymbol(l("tcp")),
		asm.JGT.Reg(r3, r8, next),

		// The packet's key at fpFlowPkt, in halves (the addresses are 2-byte aligned):
		// local = destination, remote = source.
		asm.LoadMem(r3, r7, offIPDst, asm.Half).WithSymbol(l("key")),
		asm.StoreMem(fp, fpFlowPkt+0, r3, asm.Half),
		asm.LoadMem(r3, r7, offIPDst+2, asm.Half),
		asm.StoreMem(fp, fpFlowPkt+2, r3, asm.Half),
		asm.LoadMem(r3, r7, offIPSrc, asm.Half),
		asm.StoreMem(fp, fpFlowPkt+4, r3, asm.Half),
		asm.LoadMem(r3, r7, offIPSrc+2, asm.Half),
		asm.StoreMem(fp, fpFlowPkt+6, r3, asm.Half),
		asm.LoadMem(r3, r1, 2, asm.Half),
		asm.StoreMem(fp, fpFlowPkt+8, r3, asm.Half),
		asm.LoadMem(r3, r1, 0, asm.Half),
		asm.StoreMem(fp, fpFlowPkt+10, r3, asm.Half),
		asm.StoreImm(fp, fpFlowPkt+12, 0, asm.Word),
		asm.StoreMem(fp, fpFlowPkt+12, r2, asm.Byte),
	)
	for i := range maxFlowShapes {
		miss := probe(i + 1)
		b.add(
			asm.LoadMem(r1, fp, -24, asm.Word).WithSymbol(probe(i)),
			asm.And.Imm(r1, cfgFlowShape0<<i),
			asm.JEq.Imm(r1, 0, miss),
			asm.StoreImm(fp, -4, int64(i), asm.Word),
			asm.LoadMapPtr(r1, 0).WithReference(mapShapes),
			asm.Mov.Reg(r2, fp),
			asm.Add.Imm(r2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(r0, 0, miss),
			asm.LoadMem(r1, r0, fsProto, asm.Byte),
			asm.LoadMem(r2, fp, fpFlowPkt+12, asm.Byte),
			asm.JNE.Reg(r1, r2, miss),
		)
		for off := int16(0); off < 12; off += 4 {
			b.add(
				asm.LoadMem(r1, fp, fpFlowPkt+off, asm.Word),
				asm.LoadMem(r2, r0, off, asm.Word),
				asm.And.Reg(r1, r2),
				asm.StoreMem(fp, fpFlowKey+off, r1, asm.Word),
			)
		}
		b.add(
			asm.LoadMem(r1, fp, fpFlowPkt+12, asm.Word),
			asm.StoreMem(fp, fpFlowKey+12, r1, asm.Word),
			asm.StoreImm(fp, fpFlowKey+13, int64(i), asm.Byte),
			asm.LoadMapPtr(r1, 0).WithReference(mapFlows),
			asm.Mov.Reg(r2, fp),
			asm.Add.Imm(r2, fpFlowKey),
			asm.FnMapLookupElem.Call(),
			asm.JNE.Imm(r0, 0, l("hit")),
		)
	}
	b.add(asm.Ja.Label(next).WithSymbol(probe(maxFlowShapes)))
	b.add(asm.Mov.Imm(r1, ctrFlowFragment).WithSymbol(l("later")))
	b.countReg()
	b.add(
		asm.Ja.Label(next),
		asm.Mov.Imm(r9, ctrFlow).WithSymbol(l("hit")),
		asm.Ja.Label(claimLabel),
	)
}
