package nat

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack"
	"github.com/netchan/netchan/stack/header"
)

// maxDests bounds the remote endpoints one mapping remembers for filtering and timeouts; the
// least recently used gives way.
const maxDests = 8

// TCP states of one remote endpoint of a mapping (RFC 5382's two timeouts need only this).
const (
	tcpTransitory uint8 = iota // SYN seen, or closing, or reset
	tcpEstablished
)

const (
	finOut uint8 = 1 << iota
	finIn
	synOut
	synIn
)

type dest struct {
	ip    [4]byte
	port  uint16
	state uint8
	flags uint8
	last  int64
	// fast tells which directions are installed in the XDP fast path (fastpath.go),
	// fastAt since when.
	fast   uint8
	fastAt int64
}

// mapping is one arena slot; handle = index. Only the owning shard reads or writes it.
type mapping struct {
	used    bool
	static  bool
	proto   uint8
	inIP    [4]byte
	inPort  uint16
	extPort uint16
	nd      int
	dests   [maxDests]dest
}

// protoIdx indexes the per-protocol port tables (NAT.ports).
func protoIdx(p uint8) int {
	switch p {
	case header.ProtoTCP:
		return 0
	case header.ProtoUDP:
		return 1
	}
	return 2
}

// Shard is one shard's NAT: its mappings, its port slice, its stage.
type Shard struct {
	n      *NAT
	id     int
	st     *stack.Stack
	tree   *flowtree.Tree
	maps   []mapping
	free   []uint32
	lo, hi uint16
	// cursor is where the next search of the shard's own slice for a free port starts,
	// cursorAll that of the whole range (when the slice is full); exhausted says until when
	// a protocol's ports were all found taken, to skip the searches (allocPort).
	cursor    [3]uint16
	cursorAll [3]uint16
	exhausted [3]int64
	// hosts counts each inside host's dynamic mappings (Config.MaxMappingsPerHost).
	hosts    hostCounts
	scan     int
	lastScan int64
	shards   int
	ctr      shardCounters
	// tmo are the timeouts of this expiry scan (loaded from NAT.timeouts at its start);
	// fwd is the forwards list applied last (NAT.forwards), fwdMaps its installed mappings,
	// fwdPending how many of its forwards wait for their ports.
	tmo        Timeouts
	fwd        *[]Forward
	fwdMaps    []fwdMapping
	fwdPending int
	// frag is what the shard knows of fragmented datagrams (frag.go), fctr its figures.
	frag fragTable
	fctr fragCounters
}

// fwdMapping is one installed static forward and its mapping.
type fwdMapping struct {
	f Forward
	h uint32
}

func newShard(n *NAT, id int, st *stack.Stack) *Shard {
	cap := n.cfg.MaxMappings + len(n.cfg.Forwards)
	s := &Shard{n: n, id: id, st: st, tree: flowtree.New(2*cap + 2), maps: make([]mapping, cap+1)}
	for i := cap; i >= 1; i-- {
		s.free = append(s.free, uint32(i))
	}
	if n.perHost > 0 {
		s.hosts.init(cap)
	}
	s.frag.init(n.cfg.Fragments)
	return s
}

// Name implements pipelines.Stage.
func (s *Shard) Name() string { return "nat" }

// Start implements pipelines.Starter: the shard learns its port slice and installs static forwards.
func (s *Shard) Start(info pipelines.ShardInfo) {
	s.shards = info.Shards
	s.lo, s.hi = s.n.sliceRange(info.Shard, info.Shards)
	for i := range s.cursor {
		s.cursor[i], s.cursorAll[i] = s.lo, s.lo
	}
	s.tmo = *s.n.timeouts.Load()
	s.applyForwards(s.n.forwards.Load())
	if info.FrameSize > 0 {
		s.frag.slotSize = int(info.FrameSize)
	}
}

// applyForwards makes the shard's static mappings those of fw: removed forwards' mappings
// are deleted, new ones installed when their external port and inside endpoint are free
// (else they stay pending and the next scan tries again). A forward is installed at one
// shard, the owner of its inside host, which sees the host's outbound packets; it claims the
// external port in NAT.ports, so inbound packets find it there too.
func (s *Shard) applyForwards(fw *[]Forward) {
	s.fwd = fw
	kept := s.fwdMaps[:0]
	for _, fm := range s.fwdMaps {
		if slices.Contains(*fw, fm.f) {
			kept = append(kept, fm)
		} else {
			s.deleteMapping(fm.h)
		}
	}
	s.fwdMaps = kept
	s.fwdPending = 0
	for _, f := range *fw {
		if slices.ContainsFunc(s.fwdMaps, func(fm fwdMapping) bool { return fm.f == f }) {
			continue
		}
		if o := s.n.hostOwner(f.Inside.Addr().As4(), s.shards); o >= 0 && o != s.id {
			continue // another shard's
		}
		h, r := s.newMapping(f.Proto, f.Inside.Addr().As4(), f.Inside.Port(), f.ExtPort, true, 0)
		if r != 0 {
			s.fwdPending++ // its port or inside endpoint is taken
			continue
		}
		s.fwdMaps = append(s.fwdMaps, fwdMapping{f: f, h: uint32(h)})
	}
	s.ctr.FwdPending.Store(int64(s.fwdPending))
}

// exhaustedBackoff is how long a shard that found every external port of a protocol taken
// stops searching for a free one (only port preservation is tried meanwhile), so that a flood
// of new flows cannot make it search the whole range for each packet. A port this shard frees
// ends the wait at once; one another shard frees is seen after it.
const exhaustedBackoff = int64(10e6)

// allocPort claims an external port of protocol index pi for a new mapping from inside port
// want: want itself when it is in the range and free, whichever shard's slice it lies in
// (port preservation), else the next free port of this shard's slice, else of the whole range.
func (s *Shard) allocPort(pi int, want uint16, now int64) (uint16, bool) {
	lo, hi := s.n.cfg.PortLo, s.n.cfg.PortHi
	if want >= lo && want <= hi && s.n.claimPort(pi, want, s.id) {
		return want, true
	}
	if now < s.exhausted[pi] {
		return 0, false
	}
	if p, ok := s.scanPorts(pi, s.lo, s.hi, &s.cursor[pi]); ok {
		return p, true
	}
	if s.shards > 1 {
		if p, ok := s.scanPorts(pi, lo, hi, &s.cursorAll[pi]); ok {
			return p, true
		}
	}
	s.exhausted[pi] = now + exhaustedBackoff
	return 0, false
}

// scanPorts claims the first free port of lo..hi from *cur on, and moves *cur past it.
func (s *Shard) scanPorts(pi int, lo, hi uint16, cur *uint16) (uint16, bool) {
	tbl := s.n.ports[pi]
	p := *cur
	for i := 0; i <= int(hi-lo); i++ {
		if p < lo || p > hi {
			p = lo
		}
		if tbl[p].Load() == 0 && s.n.claimPort(pi, p, s.id) {
			*cur = p + 1
			return p, true
		}
		p++
	}
	return 0, false
}

// newMapping creates a mapping with external port ext (0: allocate one); static ones (the
// forwards) do not count against the host's limit. It returns the reason when it cannot.
func (s *Shard) newMapping(proto uint8, inIP [4]byte, inPort, ext uint16, static bool, now int64) (flowtree.Handle, pipelines.DropReason) {
	if len(s.free) == 0 {
		return 0, ReasonTableFull
	}
	host := be32(inIP)
	counted := !static && s.n.perHost > 0
	if counted && s.hosts.get(host) >= uint32(s.n.perHost) {
		return 0, ReasonHostLimit
	}
	pi := protoIdx(proto)
	if ext == 0 {
		var ok bool
		if ext, ok = s.allocPort(pi, inPort, now); !ok {
			return 0, ReasonTableFull
		}
	} else if !s.n.claimPort(pi, ext, s.id) {
		return 0, ReasonTableFull
	}
	h := s.free[len(s.free)-1]
	in := netip.AddrFrom4(inIP)
	if err := s.tree.InsertListener(proto, in, inPort, flowtree.Handle(h)); err != nil {
		s.n.releasePort(pi, ext, s.id)
		return 0, ReasonTableFull
	}
	if err := s.tree.InsertListener(proto, s.n.cfg.Outside, ext, flowtree.Handle(h)); err != nil {
		s.tree.DeleteListener(proto, in, inPort)
		s.n.releasePort(pi, ext, s.id)
		return 0, ReasonTableFull
	}
	s.free = s.free[:len(s.free)-1]
	s.maps[h] = mapping{used: true, static: static, proto: proto, inIP: inIP, inPort: inPort, extPort: ext}
	if counted {
		s.hosts.inc(host)
	}
	s.ctr.Created.Add(1)
	return flowtree.Handle(h), 0
}

func (s *Shard) deleteMapping(h uint32) {
	m := &s.maps[h]
	for j := 0; j < m.nd; j++ {
		s.dropFast(m, &m.dests[j])
	}
	s.tree.DeleteListener(m.proto, netip.AddrFrom4(m.inIP), m.inPort)
	s.tree.DeleteListener(m.proto, s.n.cfg.Outside, m.extPort)
	pi := protoIdx(m.proto)
	s.n.releasePort(pi, m.extPort, s.id)
	s.exhausted[pi] = 0
	if !m.static && s.n.perHost > 0 {
		s.hosts.dec(be32(m.inIP))
	}
	*m = mapping{}
	s.free = append(s.free, h)
	s.ctr.Expired.Add(1)
}

// touch records traffic between the mapping and a remote endpoint; outbound tells the
// direction. It returns the endpoint's slot, or nil when inbound traffic comes from an
// endpoint the mapping never sent to.
func (s *Shard) touch(m *mapping, ip [4]byte, port uint16, outbound bool, tcpFlags uint8, now int64) *dest {
	var d *dest
	for k := 0; k < m.nd; k++ {
		if m.dests[k].ip == ip && (m.dests[k].port == port || m.proto == header.ProtoICMP) {
			d = &m.dests[k]
			break
		}
	}
	if d == nil {
		if !outbound && !m.static {
			return nil
		}
		if m.nd < maxDests {
			d = &m.dests[m.nd]
			m.nd++
		} else {
			// The endpoint idle longest gives way; endpoints on the fast path have their
			// last packet times read back first, so a busy one is not taken for idle.
			if fp := s.n.fast.Load(); fp != nil {
				off := s.n.monoToStage()
				for k := range m.dests {
					if m.dests[k].fast != 0 {
						s.mergeFast(fp, m, &m.dests[k], off)
					}
				}
			}
			d = &m.dests[0]
			for k := 1; k < maxDests; k++ {
				if m.dests[k].last < d.last {
					d = &m.dests[k]
				}
			}
			s.dropFast(m, d)
		}
		*d = dest{ip: ip, port: port}
	}
	d.last = now
	if m.proto == header.ProtoTCP {
		switch {
		case tcpFlags&header.TCPFlagRST != 0:
			d.state, d.flags = tcpTransitory, 0
		case tcpFlags&header.TCPFlagSYN != 0:
			if outbound {
				d.flags |= synOut
			} else {
				d.flags |= synIn
			}
			d.state = tcpTransitory
		case tcpFlags&header.TCPFlagFIN != 0:
			if outbound {
				d.flags |= finOut
			} else {
				d.flags |= finIn
			}
			if d.flags&(finOut|finIn) == finOut|finIn {
				d.state = tcpTransitory
			}
		default:
			if d.flags&(synOut|synIn) == synOut|synIn && d.flags&(finOut|finIn) == 0 {
				d.state = tcpEstablished
			}
		}
	}
	return d
}

// timeout is the idle timeout of endpoint d of mapping m, by the timeouts of this scan.
func (s *Shard) timeout(m *mapping, d *dest) int64 {
	t := &s.tmo
	switch m.proto {
	case header.ProtoTCP:
		if d.state == tcpEstablished {
			return int64(t.TCPEstablished)
		}
		return int64(t.TCPTransitory)
	case header.ProtoUDP:
		return int64(t.UDP)
	}
	return int64(t.ICMP)
}

// Process implements pipelines.Stage.
func (s *Shard) Process(b *pipelines.Batch) {
	now := b.NowNanos
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != pipelines.Continue {
			continue
		}
		d := b.Data(i)
		if len(d) < header.EthernetLen || binary.BigEndian.Uint16(d[12:14]) != header.EtherTypeIPv4 {
			p.Verdict = pipelines.ToStack // ARP
			continue
		}
		ip, e := header.ParseIPv4(d[header.EthernetLen:])
		if e != header.IPv4OK {
			b.Drop(i, ReasonBadIPv4)
			continue
		}
		if p.InIf == hairpinIf { // the second half of a hairpin, handed over by another shard
			if ip.IsFragment() {
				s.fctr.in.Add(1)
				s.fragIn(b, i, ip, true, now)
			} else {
				s.inbound(b, i, ip, now, false)
			}
			continue
		}
		src, dst := ip.Src4(), ip.Dst4()
		if r := s.n.spoofed(src, int(p.InIf)); r != 0 {
			if r == ReasonSpoofed {
				s.ctr.Spoofed.Add(1)
			}
			b.Drop(i, r)
			continue
		}
		if ip.IsFragment() {
			s.fragment(b, i, ip, now)
			continue
		}
		if dst == s.n.inside || (dst == s.n.outside && p.InIf == Outside && s.forStack(ip)) {
			p.Verdict = pipelines.ToStack // the NAT box itself is spoken to
			continue
		}
		if int(p.InIf) == Inside {
			s.outbound(b, i, ip, now, nil)
			continue
		}
		if dst != s.n.outside {
			b.Drop(i, ReasonNotForUs)
			continue
		}
		s.inbound(b, i, ip, now, false)
	}
	if s.frag.relHead < len(s.frag.rel) {
		s.flushFrags(b) // held fragments whose first fragment came in this batch
	}
}

// forStack reports whether a packet to the outside address is for the NAT box itself: ICMP
// echo requests (ping the NAT) are.
func (s *Shard) forStack(ip header.IPv4) bool {
	if ip.Protocol() != header.ProtoICMP || ip.IsFragment() {
		return false
	}
	pl := ip.Payload()
	return len(pl) >= 8 && pl[0] == header.ICMPEchoRequest
}

// l4ports parses the transport header of a translatable packet or first fragment: ports (the
// ICMP echo identifier as the source port for requests, destination port for replies) and
// TCP flags. A first fragment must hold the whole TCP header (RFC 1858).
func l4ports(ip header.IPv4) (sport, dport uint16, flags uint8, r pipelines.DropReason) {
	if ip.FragmentOffset() != 0 {
		return 0, 0, 0, ReasonFragment
	}
	pl := ip.Payload()
	switch ip.Protocol() {
	case header.ProtoTCP:
		t, ok := header.ParseTCP(pl)
		if !ok {
			return 0, 0, 0, ReasonTruncated
		}
		return t.SrcPort(), t.DstPort(), t.Flags(), 0
	case header.ProtoUDP:
		if ip.MF() { // a first fragment: the UDP length is the whole datagram's
			if len(pl) < header.UDPLen {
				return 0, 0, 0, ReasonTruncated
			}
			u := header.UDP(pl)
			return u.SrcPort(), u.DstPort(), 0, 0
		}
		u, ok := header.ParseUDP(pl)
		if !ok {
			return 0, 0, 0, ReasonTruncated
		}
		return u.SrcPort(), u.DstPort(), 0, 0
	case header.ProtoICMP:
		m, ok := header.ParseICMPv4(pl)
		if !ok {
			return 0, 0, 0, ReasonTruncated
		}
		switch m.Type() {
		case header.ICMPEchoRequest:
			return m.ID(), 0, 0, 0
		case header.ICMPEchoReply:
			return 0, m.ID(), 0, 0
		}
	}
	return 0, 0, 0, ReasonProto
}

// decTTL lowers the TTL by one with an incremental header checksum update; false when the
// packet must not be forwarded (TTL ≤ 1).
func decTTL(ip header.IPv4) bool {
	ttl := ip.TTL()
	if ttl <= 1 {
		return false
	}
	old := uint16(ttl)<<8 | uint16(ip.Protocol())
	ip.SetTTL(ttl - 1)
	ip.SetChecksum(header.UpdateChecksum16(ip.Checksum(), old, old-0x100))
	return true
}

// rewrite changes one address and port of a packet (source if src, else destination), fixing
// the IPv4 and transport checksums incrementally.
func rewrite(ip header.IPv4, src bool, addr [4]byte, port uint16) {
	var old [4]byte
	if src {
		old = ip.Src4()
		ip.SetSrc4(addr)
	} else {
		old = ip.Dst4()
		ip.SetDst4(addr)
	}
	ip.SetChecksum(header.UpdateChecksum32(ip.Checksum(), old, addr))
	pl := ip.Payload()
	switch ip.Protocol() {
	case header.ProtoTCP:
		t := header.TCP(pl)
		c := header.UpdateChecksum32(t.Checksum(), old, addr)
		var op uint16
		if src {
			op = t.SrcPort()
			t.SetSrcPort(port)
		} else {
			op = t.DstPort()
			t.SetDstPort(port)
		}
		t.SetChecksum(header.UpdateChecksum16(c, op, port))
	case header.ProtoUDP:
		u := header.UDP(pl)
		var op uint16
		if src {
			op = u.SrcPort()
			u.SetSrcPort(port)
		} else {
			op = u.DstPort()
			u.SetDstPort(port)
		}
		if u.Checksum() != 0 { // 0: the sender computed none
			c := header.UpdateChecksum16(header.UpdateChecksum32(u.Checksum(), old, addr), op, port)
			if c == 0 {
				c = 0xffff
			}
			u.SetChecksum(c)
		}
	case header.ProtoICMP:
		m := header.ICMPv4(pl)
		op := m.ID()
		m.SetID(port)
		m.SetChecksum(header.UpdateChecksum16(m.Checksum(), op, port))
	}
}

// outbound translates packet i from the inside. fe is the record of its datagram when it is a
// first fragment (nil otherwise): the datagram gets a new IP ID, and the returned action is
// what to do with its other fragments.
func (s *Shard) outbound(b *pipelines.Batch, i int, ip header.IPv4, now int64, fe *fragEntry) fragAction {
	if fe == nil && ip.Protocol() == header.ProtoICMP {
		if pl := ip.Payload(); len(pl) >= 8 && (pl[0] == header.ICMPDestUnreachable || pl[0] == header.ICMPTimeExceeded) {
			s.icmpErrorOut(b, i, ip)
			return fragAction{}
		}
	}
	sport, dport, flags, r := l4ports(ip)
	if r != 0 {
		b.Drop(i, r)
		return dropAction(r)
	}
	proto, src, dst := ip.Protocol(), ip.Src4(), ip.Dst4()
	if proto == header.ProtoICMP && ip.Payload()[0] != header.ICMPEchoRequest {
		b.Drop(i, ReasonProto)
		return dropAction(ReasonProto)
	}
	if ip.TTL() <= 1 {
		s.st.SendICMPError(b, ip, Inside, header.ICMPTimeExceeded, 0, 0)
		b.Drop(i, ReasonTTL)
		return dropAction(ReasonTTL)
	}
	h, ok := s.tree.Lookup(proto, src, dst, sport, dport)
	if !ok {
		// Mappings are made only at the inside host's owner, so it keeps one external port.
		if o := s.n.Owner(b.Data(i), s.shards); o >= 0 && o != s.id {
			b.Drop(i, ReasonWrongShard)
			return dropAction(ReasonWrongShard)
		}
		var r pipelines.DropReason
		if h, r = s.newMapping(proto, src, sport, 0, false, now); r != 0 {
			if r == ReasonHostLimit {
				s.ctr.HostLimit.Add(1)
			} else {
				s.ctr.TableFull.Add(1)
			}
			b.Drop(i, r)
			return dropAction(r)
		}
	}
	m := &s.maps[h]
	d := s.touch(m, dst, dport, true, flags, now)
	decTTL(ip)
	rewrite(ip, true, s.n.outside, m.extPort)
	act := fragAction{kind: actOut}
	if fe != nil {
		// One new ID per datagram: a copy of the first fragment keeps the one it was given.
		if fe.act.kind == actOut {
			act.id = fe.act.id
		} else {
			act.id = s.frag.newID(dst, proto, s.id, s.shards)
		}
		setID(ip, act.id)
	}
	s.n.ctr.Translated.Add(1)
	if dst == s.n.outside {
		// Hairpin: the translated packet now arrives at the outside address; the mapping it
		// is for lives at the shard that holds its destination port.
		act.hairpin, act.shard = true, uint8(s.id)
		if o := s.n.portOwner(proto, dport, s.shards); o >= 0 && o != s.id && s.shards > 1 {
			act.shard = uint8(o)
			b.Pkts[i].InIf = hairpinIf
			b.HandTo(i, o)
			return act
		}
		if fe != nil {
			s.fragIn(b, i, ip, true, now)
		} else {
			s.inbound(b, i, ip, now, false)
		}
		return act
	}
	s.st.Forward(b, i)
	s.installFast(b, i, m, d, true, src, dst, sport, dport, now)
	return act
}

// inbound translates packet i towards the inside. frag says it is a first fragment: then the
// returned action is what to do with the datagram's other fragments, and a first fragment
// whose mapping lives at another shard is handed there (fragments meet at the owner of their
// datagram, fragOwner, not at the owner of their port).
func (s *Shard) inbound(b *pipelines.Batch, i int, ip header.IPv4, now int64, frag bool) fragAction {
	if ip.Protocol() == header.ProtoICMP && !frag {
		if pl := ip.Payload(); len(pl) >= 8 && (pl[0] == header.ICMPDestUnreachable || pl[0] == header.ICMPTimeExceeded) {
			s.icmpError(b, i, ip)
			return fragAction{}
		}
	}
	sport, dport, flags, r := l4ports(ip)
	if r != 0 {
		b.Drop(i, r)
		return dropAction(r)
	}
	proto, src := ip.Protocol(), ip.Src4()
	if frag {
		if proto == header.ProtoICMP && ip.Payload()[0] != header.ICMPEchoReply {
			// Fragmented ICMP errors, and echo requests to the outside address.
			b.Drop(i, ReasonProto)
			return dropAction(ReasonProto)
		}
		if o := s.n.portOwner(proto, dport, s.shards); o >= 0 && o != s.id && s.shards > 1 {
			b.HandTo(i, o)
			return fragAction{kind: actHand, shard: uint8(o)}
		}
	}
	h, ok := s.tree.Lookup(proto, s.n.outside, src, dport, sport)
	if !ok {
		b.Drop(i, ReasonNoMapping)
		return dropAction(ReasonNoMapping)
	}
	m := &s.maps[h]
	d := s.touch(m, src, sport, false, flags, now)
	if d == nil && s.n.cfg.Filtering == APDF && src != s.n.outside { // hairpinned packets pass
		b.Drop(i, ReasonFiltered)
		return dropAction(ReasonFiltered)
	}
	if ip.TTL() <= 1 {
		s.st.SendICMPError(b, ip, Outside, header.ICMPTimeExceeded, 0, 0)
		b.Drop(i, ReasonTTL)
		return dropAction(ReasonTTL)
	}
	hairpin := src == s.n.outside
	if !hairpin { // a hairpinned packet had its TTL lowered on the way out
		decTTL(ip)
	}
	rewrite(ip, false, m.inIP, m.inPort)
	s.n.ctr.Translated.Add(1)
	s.st.Forward(b, i)
	if !hairpin {
		s.installFast(b, i, m, d, false, src, s.n.outside, sport, dport, now)
	}
	return fragAction{kind: actIn, addr: m.inIP, hairpin: hairpin}
}

// icmpError translates an ICMP error from outside about one of our translated packets back to
// the inside host (RFC 5508 REQ-4): the outer destination, and the quoted packet's source
// (address, port, checksums). One whose ICMP checksum fails is dropped (REQ-3). The inbound
// half of a hairpinned error (icmpErrorOut) comes with the outside address as its source and
// had its TTL lowered on the way out.
func (s *Shard) icmpError(b *pipelines.Batch, i int, ip header.IPv4) {
	m := header.ICMPv4(ip.Payload())
	if !m.ChecksumValid() { // REQ-3: translating it would make the checksum valid
		b.Drop(i, ReasonBadICMPSum)
		return
	}
	// The quote is cut short: use only header fields and the first 8 bytes after the header.
	q, ok := header.ParseIPv4Header(m.Payload())
	if !ok || len(q) < q.IHL()+8 || q.Src4() != s.n.outside {
		b.Drop(i, ReasonBadICMPQuot)
		return
	}
	proto := q.Protocol()
	ql4 := q.Payload()
	var ext uint16
	switch proto {
	case header.ProtoTCP, header.ProtoUDP:
		ext = binary.BigEndian.Uint16(ql4[0:2])
	case header.ProtoICMP:
		ext = binary.BigEndian.Uint16(ql4[4:6])
	default:
		b.Drop(i, ReasonBadICMPQuot)
		return
	}
	qdst := [4]byte(q[16:20])
	h, ok := s.tree.Lookup(proto, s.n.outside, qdst, ext, 0)
	if !ok {
		b.Drop(i, ReasonNoMapping)
		return
	}
	mp := &s.maps[h]
	hairpin := ip.Src4() == s.n.outside
	if !hairpin {
		if ip.TTL() <= 1 {
			b.Drop(i, ReasonTTL)
			return
		}
		decTTL(ip)
	}
	rewriteQuote(q, true, mp.inIP, mp.inPort)
	m.SetChecksum(0)
	m.FixChecksum()
	odst := ip.Dst4()
	ip.SetDst4(mp.inIP)
	ip.SetChecksum(header.UpdateChecksum32(ip.Checksum(), odst, mp.inIP))
	s.n.ctr.ICMPErrorsTranslated.Add(1)
	s.st.Forward(b, i)
}

// icmpErrorOut translates an ICMP error from the inside (RFC 5508 REQ-5): destination
// unreachable or time exceeded that an inside host, or a router on the inside, sends about a
// packet that came in from outside. The quoted packet is that packet as the inside host got
// it (from the remote, to the inside endpoint); it is reverted to how it arrived (to the
// outside address and the mapping's external port), and the error leaves from the outside
// address. The error is dropped, and counted by reason, when its ICMP checksum fails
// (nat-bad-icmp-checksum, REQ-3), when its quote is not of a packet that can have come
// through the NAT to the error's destination (nat-bad-icmp-quote: cut within 8 bytes of the
// transport header, a later fragment, a source other than the error's destination, a
// destination off the inside network, an ICMP message other than an echo reply), when no
// mapping holds the quoted inside endpoint (nat-no-mapping), and, with address-and-port-
// dependent filtering, when the mapping would not have let the quoted packet in: its source
// is not a remote endpoint the mapping knows, and the mapping is not a static forward
// (nat-filtered). Like icmpError it neither refreshes nor removes the mapping (REQ-6).
//
// The quoted inside host is normally the error's sender, whose shard this is; when a router
// on the inside sends the error, the mapping lives at the quoted host's shard, so the error
// is handed there. An error to the outside address (about a hairpinned packet, REQ-7) is
// translated in again as an error from outside, at the shard of the quoted source port.
func (s *Shard) icmpErrorOut(b *pipelines.Batch, i int, ip header.IPv4) {
	m := header.ICMPv4(ip.Payload())
	if !m.ChecksumValid() {
		b.Drop(i, ReasonBadICMPSum)
		return
	}
	q, ok := header.ParseIPv4Header(m.Payload())
	if !ok || len(q) < q.IHL()+8 || q.FragmentOffset() != 0 || q.Src4() != ip.Dst4() || !s.n.isInside(q.Dst4()) {
		b.Drop(i, ReasonBadICMPQuot)
		return
	}
	proto, qsrc, qdst := q.Protocol(), q.Src4(), q.Dst4()
	hairpin := qsrc == s.n.outside
	ql4 := q.Payload()
	var rport, port uint16 // the remote's port and the inside endpoint's
	switch proto {
	case header.ProtoTCP, header.ProtoUDP:
		rport, port = binary.BigEndian.Uint16(ql4[0:2]), binary.BigEndian.Uint16(ql4[2:4])
	case header.ProtoICMP:
		if ql4[0] != header.ICMPEchoReply || hairpin { // no other ICMP message comes in
			b.Drop(i, ReasonBadICMPQuot)
			return
		}
		port = binary.BigEndian.Uint16(ql4[4:6])
	default:
		b.Drop(i, ReasonBadICMPQuot)
		return
	}
	if o := s.n.hostOwner(qdst, s.shards); o >= 0 && o != s.id {
		b.HandTo(i, o) // the quoted host's mappings live at its shard
		return
	}
	h, ok := s.tree.Lookup(proto, qdst, qsrc, port, rport)
	if !ok {
		b.Drop(i, ReasonNoMapping)
		return
	}
	mp := &s.maps[h]
	if s.n.cfg.Filtering == APDF && !mp.static && !hairpin && !knows(mp, qsrc, rport) {
		b.Drop(i, ReasonFiltered)
		return
	}
	if ip.TTL() <= 1 {
		b.Drop(i, ReasonTTL) // no ICMP error about an ICMP error
		return
	}
	rewriteQuote(q, false, s.n.outside, mp.extPort)
	m.SetChecksum(0)
	m.FixChecksum()
	decTTL(ip)
	osrc := ip.Src4()
	ip.SetSrc4(s.n.outside)
	ip.SetChecksum(header.UpdateChecksum32(ip.Checksum(), osrc, s.n.outside))
	s.n.ctr.ICMPErrorsTranslated.Add(1)
	s.n.ctr.ICMPErrorsOut.Add(1)
	if hairpin {
		// The error now goes from the outside address to the outside address, about a packet
		// from the outside address's port rport: the inbound half is an error from outside,
		// for the shard that holds that port.
		if o := s.n.portOwner(proto, rport, s.shards); o >= 0 && o != s.id && s.shards > 1 {
			b.Pkts[i].InIf = hairpinIf
			b.HandTo(i, o)
			return
		}
		s.icmpError(b, i, ip)
		return
	}
	s.st.Forward(b, i)
}

// knows reports whether remote endpoint ip:port is one mapping m's inside endpoint sent to
// (for ICMP, any identifier of ip), as touch finds it, without touching it.
func knows(m *mapping, ip [4]byte, port uint16) bool {
	for k := 0; k < m.nd; k++ {
		if m.dests[k].ip == ip && (m.dests[k].port == port || m.proto == header.ProtoICMP) {
			return true
		}
	}
	return false
}

// rewriteQuote changes one address and port of the packet quoted in an ICMP error (its
// source if src, else its destination; for ICMP the port is the echo identifier), with
// incremental updates (RFC 1624) of the quoted header checksum and of the quoted transport
// checksum where the quote holds it: a quote may end 8 bytes into the transport header,
// which holds the UDP and ICMP checksums but not TCP's. A quoted UDP checksum of 0 (none)
// stays 0. The caller fixes the ICMP checksum over the message.
func rewriteQuote(q header.IPv4, src bool, addr [4]byte, port uint16) {
	var old [4]byte
	if src {
		old = q.Src4()
		q.SetSrc4(addr)
	} else {
		old = q.Dst4()
		q.SetDst4(addr)
	}
	q.SetChecksum(header.UpdateChecksum32(q.Checksum(), old, addr))
	ql4 := q.Payload()
	po := 2 // the port's offset
	if src {
		po = 0
	}
	switch q.Protocol() {
	case header.ProtoUDP:
		op := binary.BigEndian.Uint16(ql4[po:])
		binary.BigEndian.PutUint16(ql4[po:], port)
		if c := binary.BigEndian.Uint16(ql4[6:8]); c != 0 {
			c = header.UpdateChecksum16(header.UpdateChecksum32(c, old, addr), op, port)
			if c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(ql4[6:8], c)
		}
	case header.ProtoTCP:
		op := binary.BigEndian.Uint16(ql4[po:])
		binary.BigEndian.PutUint16(ql4[po:], port)
		if len(ql4) >= 18 {
			c := header.UpdateChecksum16(header.UpdateChecksum32(binary.BigEndian.Uint16(ql4[16:18]), old, addr), op, port)
			binary.BigEndian.PutUint16(ql4[16:18], c)
		}
	case header.ProtoICMP:
		op := binary.BigEndian.Uint16(ql4[4:6])
		binary.BigEndian.PutUint16(ql4[4:6], port)
		binary.BigEndian.PutUint16(ql4[2:4], header.UpdateChecksum16(binary.BigEndian.Uint16(ql4[2:4]), op, port))
	}
}

// Originate implements pipelines.Originator: it sends on held fragments whose first fragment
// came and forgets fragmented datagrams past their timeout (frag.go), and it expires idle
// mappings, a slice of the arena at a time (at most every 10 ms), so the cost per pass stays
// small.
func (s *Shard) Originate(b *pipelines.Batch) {
	now := b.NowNanos
	if s.frag.head >= 0 || s.frag.relHead < len(s.frag.rel) {
		s.fragOriginate(b, now)
	}
	if now-s.lastScan < 10e6 {
		return
	}
	s.lastScan = now
	if s.id == 0 {
		s.n.checkRefusals()
	}
	s.tmo = *s.n.timeouts.Load() // SetTimeouts: this scan judges by the values in force
	if fw := s.n.forwards.Load(); fw != s.fwd || s.fwdPending > 0 {
		s.applyForwards(fw) // SetForwards, or forwards waiting for their ports
	}
	var monoToNow int64
	mono := func() int64 {
		if monoToNow == 0 {
			monoToNow = s.n.monoToStage()
		}
		return monoToNow
	}
	for k := 0; k < 1024; k++ {
		s.scan++
		if s.scan >= len(s.maps) {
			s.scan = 1
		}
		m := &s.maps[s.scan]
		if !m.used || m.static {
			continue
		}
		s.refreshFast(m, now, mono)
		alive := false
		for j := 0; j < m.nd; j++ {
			if now-m.dests[j].last <= s.timeout(m, &m.dests[j]) {
				alive = true
				break
			}
		}
		if !alive {
			s.deleteMapping(uint32(s.scan))
		}
	}
}

// NextDeadline implements pipelines.Originator: expiry of mappings needs no wake-up of its own
// (the shard's poll timeout brings it round); held fragments to send on and fragment records
// to expire do (fragDeadline).
func (s *Shard) NextDeadline() int64 { return s.fragDeadline() }
