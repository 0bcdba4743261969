package stack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// Stack is one shard's instance of the stack: a stage for received packets and an originator
// of its own (ARP requests, replies built from reassembled datagrams, socket sends).
type Stack struct {
	h      *Host
	shard  int
	shards int
	ifaces []pipelines.Interface
	wake   func()
	tree   *flowtree.Tree
	ipID   uint32

	reasm     reassembler
	reasmUsed atomic.Int64

	pending []pendingHop
	garp    bool

	ctlMu  sync.Mutex
	ctl    []ctlMsg
	ctlAny atomic.Bool

	sendMu    sync.Mutex
	sendQ     []*UDPConn
	sendSpare []*UDPConn // the shard's: sendQ's other buffer (serveSends)
	sendAny   atomic.Bool
	sends     []txDatagram

	icmpTokens float64
	icmpLast   int64
	deadline   int64

	scratch []byte // builds outgoing L4 packets (up to 64 KiB)

	tcp tcpShard
}

// pendingHop is a next hop being resolved, with the datagrams that wait for it.
type pendingHop struct {
	iface    int
	ip       [4]byte
	tries    int
	next     int64
	waiting  []pendingDatagram
	resolved bool
}

type pendingDatagram struct {
	proto    uint8
	src, dst [4]byte
	l4       []byte
	raw      []byte // a whole IPv4 packet being forwarded (set instead of l4)
}

type ctlMsg struct {
	add  bool
	sock *UDPConn
	done *sync.WaitGroup
}

const (
	defaultTTL         = 64
	flowTreeCapacity   = 2*maxSockets + 16384 // UDP sockets, TCP listeners and connections
	sendBatchPerSocket = 16
)

// NewStack makes shard's instance; put it in the shard's pipeline (as Pipeline.Local, or as a
// stage that sees every packet the pipeline claims for the host).
func (h *Host) NewStack(shard int) *Stack {
	s := &Stack{h: h, shard: shard, tree: flowtree.New(flowTreeCapacity), scratch: make([]byte, 65536),
		icmpTokens: float64(h.cfg.ICMPErrorsPerSecond)}
	s.reasm.init(h.cfg.ReassemblyBytes, int64(h.cfg.ReassemblyTimeout))
	return s
}

// Name implements pipelines.Stage.
func (s *Stack) Name() string { return "stack" }

// Start implements pipelines.Starter.
func (s *Stack) Start(info pipelines.ShardInfo) {
	s.shard, s.shards, s.ifaces, s.wake = info.Shard, info.Shards, info.Ifaces, info.Wake
	h := s.h
	h.mu.Lock()
	for len(h.stacks) <= s.shard {
		h.stacks = append(h.stacks, nil)
	}
	h.stacks[s.shard] = s
	h.mu.Unlock()
	// Sockets opened before the shards existed are registered now.
	for i := range h.udp.slots {
		if c := h.udp.slots[i].Load(); c != nil {
			s.register(c)
		}
	}
	s.tcpStart()
}

func (s *Stack) register(c *UDPConn) {
	a := c.local.Addr()
	if a.IsUnspecified() {
		a = netip.Addr{}
	}
	s.tree.InsertListener(header.ProtoUDP, a, c.local.Port(), c.handle)
}

// control sends a socket message to every shard and waits up to wait for them to apply it.
func (h *Host) control(m ctlMsg, wait time.Duration) {
	h.mu.Lock()
	stacks := append([]*Stack(nil), h.stacks...)
	h.mu.Unlock()
	var wg sync.WaitGroup
	m.done = &wg
	for _, s := range stacks {
		if s == nil {
			continue
		}
		wg.Add(1)
		s.ctlMu.Lock()
		s.ctl = append(s.ctl, m)
		s.ctlMu.Unlock()
		s.ctlAny.Store(true)
		if s.wake != nil {
			s.wake()
		}
	}
	if wait <= 0 {
		return
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
}

// queueSend tells the socket's shard that it has datagrams to send.
func (h *Host) queueSend(c *UDPConn) {
	h.mu.Lock()
	var s *Stack
	if len(h.stacks) > 0 {
		s = h.stacks[c.shard%len(h.stacks)]
	}
	h.mu.Unlock()
	if s == nil {
		return // sent once the shards start
	}
	s.sendMu.Lock()
	s.sendQ = append(s.sendQ, c)
	s.sendMu.Unlock()
	s.sendAny.Store(true)
	if s.wake != nil {
		s.wake()
	}
}

func (s *Stack) ourMAC(i int) header.MAC {
	if i < len(s.ifaces) {
		return header.MAC(s.ifaces[i].MAC)
	}
	return header.MAC{}
}

func (s *Stack) mtu(i int) int {
	if i < len(s.h.cfg.Ifaces) && s.h.cfg.Ifaces[i].MTU > 0 {
		return s.h.cfg.Ifaces[i].MTU
	}
	if i < len(s.ifaces) && s.ifaces[i].MTU > 0 {
		return s.ifaces[i].MTU
	}
	return 1500
}

// Process implements pipelines.Stage: every undecided packet is the host's.
func (s *Stack) Process(b *pipelines.Batch) {
	now := b.NowNanos
	for i := range b.Pkts {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		eth, ok := header.ParseEthernet(b.Data(i))
		if !ok {
			b.Drop(i, ReasonNotEthernet)
			continue
		}
		switch eth.Type() {
		case header.EtherTypeARP:
			s.arpInput(b, i, eth, now)
		case header.EtherTypeIPv4:
			s.ipInput(b, i, eth, now)
		default:
			b.Drop(i, ReasonNotForUs)
		}
	}
}

func (s *Stack) arpInput(b *pipelines.Batch, i int, eth header.Ethernet, now int64) {
	p := &b.Pkts[i]
	a, ok := header.ParseARP(eth.Payload())
	if !ok {
		b.Drop(i, ReasonBadARP)
		return
	}
	in := int(p.InIf)
	snd, tgt := a.SenderIP4(), a.TargetIP4()
	ours := s.h.isOurs(in, ipKey(tgt))
	if in < len(s.h.neigh) && snd != [4]byte{} && (ours || s.h.neigh[in].Known(snd)) {
		switch s.h.neigh[in].Update(snd, a.SenderMAC(), now, false) {
		case NeighborEvicted:
			s.h.ctr.NeighborEvictions.Add(1)
		case NeighborFull:
			s.h.ctr.NeighborRefused.Add(1)
		}
	}
	switch a.Op() {
	case header.ARPRequest:
		s.h.ctr.ARPRequestsIn.Add(1)
		if !ours || snd == tgt { // not for us, or a gratuitous announcement
			p.Verdict = pipelines.Consume
			return
		}
		mac := s.ourMAC(in)
		header.EncodeARP4(eth.Payload(), header.ARPReply, mac, tgt, a.SenderMAC(), snd)
		eth.SetDst(eth.Src())
		eth.SetSrc(mac)
		s.h.ctr.ARPRepliesOut.Add(1)
		b.Transmit(i, in)
	case header.ARPReply:
		s.h.ctr.ARPRepliesIn.Add(1)
		p.Verdict = pipelines.Consume
	default:
		b.Drop(i, ReasonBadARP)
	}
}

func ipReason(e header.IPv4Error) pipelines.DropReason {
	switch e {
	case header.IPv4Truncated:
		return ReasonIPTruncated
	case header.IPv4BadChecksum:
		return ReasonIPBadChecksum
	}
	return ReasonIPBadHeader
}

func (s *Stack) ipInput(b *pipelines.Batch, i int, eth header.Ethernet, now int64) {
	p := &b.Pkts[i]
	ip, e := header.ParseIPv4(eth.Payload())
	if e != header.IPv4OK {
		b.Drop(i, ipReason(e))
		return
	}
	in := int(p.InIf)
	if !s.h.isOurs(in, ipKey(ip.Dst4())) {
		b.Drop(i, ReasonNotForUs)
		return
	}
	if s.h.martianSource(ipKey(ip.Src4())) {
		b.Drop(i, ReasonMartianSource)
		return
	}
	if ip.IsFragment() {
		s.h.ctr.FragmentsIn.Add(1)
		dg, r := s.reasm.add(ip, now)
		s.reasmUsed.Store(int64(s.reasm.used))
		if n := s.reasm.takeEvicted(); n > 0 {
			s.h.ctr.ReasmEvicted.Add(uint64(n))
		}
		if r != 0 {
			b.Drop(i, r)
			return
		}
		p.Verdict = pipelines.Consume // its bytes are in the reassembly buffer now
		if dg != nil {
			s.h.ctr.Reassembled.Add(1)
			s.datagram(b, header.IPv4(dg), in, now)
		}
		return
	}
	switch ip.Protocol() {
	case header.ProtoICMP:
		s.icmpInput(b, i, eth, ip)
	case header.ProtoUDP:
		s.udpInput(b, i, ip, now)
	case header.ProtoTCP:
		s.tcpInput(b, i, ip, now)
	default:
		b.Drop(i, ReasonUnknownProto)
	}
}

// datagram handles a reassembled datagram, which lives in a reassembly buffer rather than a
// frame, so replies go through the (fragmenting) output path.
func (s *Stack) datagram(b *pipelines.Batch, ip header.IPv4, in int, now int64) {
	src, dst := ip.Src4(), ip.Dst4()
	switch ip.Protocol() {
	case header.ProtoICMP:
		m, ok := header.ParseICMPv4(ip.Payload())
		if !ok || !m.ChecksumValid() {
			return
		}
		if m.Type() == header.ICMPEchoRequest && m.Code() == 0 {
			out := s.scratch[:len(m)]
			copy(out, m)
			r := header.ICMPv4(out)
			r.SetType(header.ICMPEchoReply)
			r.FixChecksum()
			if s.sendIP(b, header.ProtoICMP, dst, src, out, now) {
				s.h.ctr.EchoReplies.Add(1)
			}
		}
	case header.ProtoUDP:
		u, ok := header.ParseUDP(ip.Payload())
		if !ok || !u.ChecksumValid(ip.Src(), ip.Dst()) {
			return
		}
		s.h.ctr.UDPIn.Add(1)
		if h, ok := s.tree.Lookup(header.ProtoUDP, dst, src, u.DstPort(), u.SrcPort()); ok {
			if c := s.h.udp.get(h); c != nil && c.deliver(netip.AddrPortFrom(ip.Src(), u.SrcPort()), u.Payload()) {
				s.h.ctr.UDPDelivered.Add(1)
			}
		}
	}
}

func (s *Stack) icmpInput(b *pipelines.Batch, i int, eth header.Ethernet, ip header.IPv4) {
	m, ok := header.ParseICMPv4(ip.Payload())
	if !ok {
		b.Drop(i, ReasonL4Truncated)
		return
	}
	if !m.ChecksumValid() {
		b.Drop(i, ReasonBadChecksum)
		return
	}
	switch m.Type() {
	case header.ICMPEchoRequest:
		// The request becomes the reply where it lies.
		src, dst := ip.Src4(), ip.Dst4()
		m.SetType(header.ICMPEchoReply)
		m.SetChecksum(header.UpdateChecksum16(m.Checksum(), header.ICMPEchoRequest<<8, header.ICMPEchoReply<<8))
		ip.SetSrc4(dst)
		ip.SetDst4(src)
		ip.SetTTL(defaultTTL)
		ip.FixChecksum()
		mac := eth.Src()
		eth.SetDst(mac)
		eth.SetSrc(s.ourMAC(int(b.Pkts[i].InIf)))
		s.h.ctr.EchoReplies.Add(1)
		b.Transmit(i, int(b.Pkts[i].InIf))
	case header.ICMPDestUnreachable, header.ICMPTimeExceeded:
		s.h.ctr.ICMPErrorsIn.Add(1)
		s.icmpError(m)
		b.Pkts[i].Verdict = pipelines.Consume
	default:
		b.Drop(i, ReasonICMPIgnored)
	}
}

// icmpError gives an ICMP error to the UDP socket whose datagram it quotes.
func (s *Stack) icmpError(m header.ICMPv4) {
	q, ok := header.ParseIPv4Header(m.Payload()) // the quoted datagram: its header and what follows
	if !ok || len(q) < header.IPv4MinLen+8 || q.Protocol() != header.ProtoUDP {
		return
	}
	l4 := q.Payload()
	if len(l4) < 4 {
		return
	}
	sport := binary.BigEndian.Uint16(l4[0:2])
	dport := binary.BigEndian.Uint16(l4[2:4])
	if h, ok := s.tree.Lookup(header.ProtoUDP, q.Src4(), q.Dst4(), sport, dport); ok {
		if c := s.h.udp.get(h); c != nil {
			c.noteICMP(m.Type(), m.Code())
		}
	}
}

func (s *Stack) udpInput(b *pipelines.Batch, i int, ip header.IPv4, now int64) {
	u, ok := header.ParseUDP(ip.Payload())
	if !ok {
		b.Drop(i, ReasonL4Truncated)
		return
	}
	src, dst := ip.Src4(), ip.Dst4()
	if !u.ChecksumValid(ip.Src(), ip.Dst()) {
		b.Drop(i, ReasonBadChecksum)
		return
	}
	s.h.ctr.UDPIn.Add(1)
	h, ok := s.tree.Lookup(header.ProtoUDP, dst, src, u.DstPort(), u.SrcPort())
	var c *UDPConn
	if ok {
		c = s.h.udp.get(h)
	}
	if c == nil {
		s.portUnreachable(b, ip, now)
		b.Drop(i, ReasonNoSocket)
		return
	}
	if !c.deliver(netip.AddrPortFrom(netip.AddrFrom4(src), u.SrcPort()), u.Payload()) {
		b.Drop(i, ReasonSocketFull)
		return
	}
	s.h.ctr.UDPDelivered.Add(1)
	b.Pkts[i].Verdict = pipelines.Consume
}

// Forward sends packet i, an IPv4 packet behind an Ethernet header, towards its destination
// by the route table: it fills in the Ethernet addresses and sets verdict Transmit, or, while
// the next hop is being resolved, keeps a copy and lets the frame go (it is sent once ARP
// answers), or drops it (no route, or too much waiting).
func (s *Stack) Forward(b *pipelines.Batch, i int) {
	d := b.Data(i)
	dst := [4]byte(d[header.EthernetLen+16 : header.EthernetLen+20])
	ifc, nh, _, ok := s.h.routes.Lookup(dst)
	if !ok {
		s.h.ctr.NoRoute.Add(1)
		b.Drop(i, ReasonNoRoute)
		return
	}
	eth := header.Ethernet(d)
	if mac, ok := s.h.neigh[ifc].Lookup(nh, b.NowNanos); ok {
		eth.SetDst(header.MAC(mac))
		eth.SetSrc(s.ourMAC(ifc))
		b.Transmit(i, ifc)
		return
	}
	if !s.queueForResolution(b, ifc, nh, pendingDatagram{raw: d[header.EthernetLen:]}, b.NowNanos) {
		b.Drop(i, ReasonARPPendingFull)
		return
	}
	b.Pkts[i].Verdict = pipelines.Consume
}

// emitRaw sends a whole IPv4 packet behind a new Ethernet header.
func (s *Stack) emitRaw(b *pipelines.Batch, ifc int, dstMAC header.MAC, raw []byte) bool {
	j, d, ok := b.Alloc(header.EthernetLen+len(raw), pipelines.Transmit)
	if !ok {
		return false
	}
	b.Pkts[j].OutIf = uint8(ifc)
	header.EncodeEthernet(d, dstMAC, s.ourMAC(ifc), header.EtherTypeIPv4)
	copy(d[header.EthernetLen:], raw)
	return true
}

// SendICMPError answers the IPv4 packet ip (which arrived on interface in) with an ICMP error
// quoting its header and first 8 data bytes (RFC 792), from our address on that interface,
// within the shard's ICMP error budget. rest fills bytes 4..8 (the MTU of fragmentation-needed).
func (s *Stack) SendICMPError(b *pipelines.Batch, ip header.IPv4, in int, typ, code uint8, rest uint32) bool {
	if !s.icmpBudget(b.NowNanos) {
		return false
	}
	var src [4]byte
	if in < len(s.h.cfg.Ifaces) && len(s.h.cfg.Ifaces[in].Addrs) > 0 {
		src = s.h.cfg.Ifaces[in].Addrs[0].Addr().As4()
	}
	return s.icmpErrorTo(b, ip, src, typ, code, rest)
}

func (s *Stack) icmpBudget(now int64) bool {
	rate := float64(s.h.cfg.ICMPErrorsPerSecond)
	s.icmpTokens += float64(now-s.icmpLast) / 1e9 * rate
	if s.icmpTokens > rate {
		s.icmpTokens = rate
	}
	s.icmpLast = now
	if s.icmpTokens < 1 {
		return false
	}
	s.icmpTokens--
	return true
}

func (s *Stack) icmpErrorTo(b *pipelines.Batch, ip header.IPv4, src [4]byte, typ, code uint8, rest uint32) bool {
	quote := ip.IHL() + 8
	if quote > len(ip) {
		quote = len(ip)
	}
	out := s.scratch[:8+quote]
	binary.BigEndian.PutUint32(out[4:8], rest)
	copy(out[8:], ip[:quote])
	m := header.ICMPv4(out)
	m.SetType(typ)
	m.SetCode(code)
	m.SetChecksum(0)
	m.FixChecksum()
	return s.sendIP(b, header.ProtoICMP, src, ip.Src4(), out, b.NowNanos)
}

// portUnreachable answers a datagram to a closed port (RFC 792: the IP header and the first
// 8 bytes of the datagram), within the shard's ICMP error budget.
func (s *Stack) portUnreachable(b *pipelines.Batch, ip header.IPv4, now int64) {
	if s.icmpBudget(now) && s.icmpErrorTo(b, ip, ip.Dst4(), header.ICMPDestUnreachable, header.ICMPPortUnreachable, 0) {
		s.h.ctr.PortUnreachOut.Add(1)
	}
}

// nextID returns an IP ID that no other shard uses: shard s of n takes s, s+n, s+2n, ...
// (wrapping before 65536 so the residue holds).
func (s *Stack) nextID() uint16 {
	n := uint32(s.shards)
	if n < 1 {
		n = 1
	}
	per := 65536 / n
	id := uint16(uint32(s.shard) + n*(s.ipID%per))
	s.ipID++
	return id
}

// sendIP routes, resolves and transmits one datagram whose L4 bytes are l4, fragmenting to
// the interface MTU. It reports false when it could not send or queue it.
func (s *Stack) sendIP(b *pipelines.Batch, proto uint8, src, dst [4]byte, l4 []byte, now int64) bool {
	ifc, nh, rsrc, ok := s.h.routes.Lookup(dst)
	if !ok {
		s.h.ctr.NoRoute.Add(1)
		return false
	}
	if src == ([4]byte{}) {
		src = rsrc
	}
	mac, ok := s.h.neigh[ifc].Lookup(nh, now)
	if !ok {
		return s.queueForResolution(b, ifc, nh, pendingDatagram{proto: proto, src: src, dst: dst, l4: l4}, now)
	}
	return s.emit(b, ifc, header.MAC(mac), proto, src, dst, l4)
}

// fragments is how many frames a datagram of n L4 bytes needs at mtu.
func fragments(n, mtu int) int {
	if header.IPv4MinLen+n <= mtu {
		return 1
	}
	per := (mtu - header.IPv4MinLen) &^ 7
	return (n + per - 1) / per
}

// emit writes the datagram into frames of the batch, fragmenting if needed.
func (s *Stack) emit(b *pipelines.Batch, ifc int, dstMAC header.MAC, proto uint8, src, dst [4]byte, l4 []byte) bool {
	mtu := s.mtu(ifc)
	nf := fragments(len(l4), mtu)
	if nf > b.Room() {
		return false
	}
	id := s.nextID()
	per := (mtu - header.IPv4MinLen) &^ 7
	if nf == 1 {
		per = len(l4)
	}
	for off := 0; off < len(l4) || off == 0; off += per {
		end := off + per
		if end > len(l4) {
			end = len(l4)
		}
		total := header.IPv4MinLen + end - off
		j, d, ok := b.Alloc(header.EthernetLen+total, pipelines.Transmit)
		if !ok {
			return false
		}
		b.Pkts[j].OutIf = uint8(ifc)
		header.EncodeEthernet(d, dstMAC, s.ourMAC(ifc), header.EtherTypeIPv4)
		header.EncodeIPv4(d[header.EthernetLen:], header.IPv4Fields{TotalLength: total, ID: id, MF: end < len(l4),
			FragmentOffset: off, TTL: defaultTTL, Protocol: proto, Src: netip.AddrFrom4(src), Dst: netip.AddrFrom4(dst)})
		copy(d[header.EthernetLen+header.IPv4MinLen:], l4[off:end])
		if nf > 1 {
			s.h.ctr.FragmentsOut.Add(1)
		}
		if end == len(l4) {
			break
		}
	}
	return true
}

// queueForResolution holds a copy of a datagram (d's raw or l4 bytes) until its next hop
// answers ARP. With no room (Config.ARPPendingHops, ARPPendingPerHop) it counts the datagram
// in Stats.ARPPendingFull and reports false; the caller drops it.
func (s *Stack) queueForResolution(b *pipelines.Batch, ifc int, nh [4]byte, d pendingDatagram, now int64) bool {
	var p *pendingHop
	for k := range s.pending {
		if q := &s.pending[k]; q.iface == ifc && q.ip == nh {
			p = q
			break
		}
	}
	if (p == nil && len(s.pending) >= s.h.cfg.ARPPendingHops) || (p != nil && len(p.waiting) >= s.h.cfg.ARPPendingPerHop) {
		s.h.ctr.ARPPendingFull.Add(1)
		return false
	}
	// Copied only once admitted, so a flood to unresolved next hops allocates nothing.
	d.raw = append([]byte(nil), d.raw...)
	d.l4 = append([]byte(nil), d.l4...)
	if p != nil {
		p.waiting = append(p.waiting, d)
		return true
	}
	s.pending = append(s.pending, pendingHop{iface: ifc, ip: nh, waiting: []pendingDatagram{d}})
	s.resolve(b, &s.pending[len(s.pending)-1], now)
	return true
}

// resolve sends one ARP request for a pending next hop.
func (s *Stack) resolve(b *pipelines.Batch, p *pendingHop, now int64) {
	_, _, src, _ := s.h.routes.Lookup(p.ip)
	if s.arpRequest(b, p.iface, src, p.ip) {
		p.tries++
		p.next = now + int64(s.h.cfg.ARPRetry)
		s.h.ctr.ARPRequestsOut.Add(1)
	} else {
		p.next = now // no frame now: try on the next pass
	}
}

func (s *Stack) arpRequest(b *pipelines.Batch, ifc int, src, target [4]byte) bool {
	j, d, ok := b.Alloc(header.EthernetLen+header.ARPLen, pipelines.Transmit)
	if !ok {
		return false
	}
	b.Pkts[j].OutIf = uint8(ifc)
	mac := s.ourMAC(ifc)
	header.EncodeEthernet(d, header.BroadcastMAC, mac, header.EtherTypeARP)
	header.EncodeARP4(d[header.EthernetLen:], header.ARPRequest, mac, src, header.MAC{}, target)
	return true
}

// Originate implements pipelines.Originator.
func (s *Stack) Originate(b *pipelines.Batch) {
	now := b.NowNanos
	if !s.garp {
		s.garp = s.gratuitousARP(b)
	}
	if s.ctlAny.Load() {
		s.applyControl()
	}
	if len(s.pending) > 0 {
		s.servePending(b, now)
	}
	if s.reasm.count() > 0 {
		s.h.ctr.ReasmTimeouts.Add(uint64(s.reasm.expire(now)))
		s.reasmUsed.Store(int64(s.reasm.used))
	}
	if s.sendAny.Load() {
		s.serveSends(b, now)
	}
	s.tcpOriginate(b, now)
	s.deadline = s.reasm.deadline()
	if d := s.tcpDeadline(); d != 0 && (s.deadline == 0 || d < s.deadline) {
		s.deadline = d
	}
	for k := range s.pending {
		if n := s.pending[k].next; n != 0 && (s.deadline == 0 || n < s.deadline) {
			s.deadline = n
		}
	}
}

// NextDeadline implements pipelines.Originator.
func (s *Stack) NextDeadline() int64 { return s.deadline }

// gratuitousARP announces every address once, from shard 0.
func (s *Stack) gratuitousARP(b *pipelines.Batch) bool {
	if s.shard != 0 {
		return true
	}
	for i, ifc := range s.h.cfg.Ifaces {
		for _, a := range ifc.Addrs {
			if b.Room() == 0 {
				return false
			}
			ip := a.Addr().As4()
			s.arpRequest(b, i, ip, ip)
		}
	}
	return true
}

func (s *Stack) applyControl() {
	s.ctlMu.Lock()
	msgs := s.ctl
	s.ctl = nil
	s.ctlAny.Store(false)
	s.ctlMu.Unlock()
	for _, m := range msgs {
		if m.add {
			s.register(m.sock)
		} else {
			a := m.sock.local.Addr()
			if a.IsUnspecified() {
				a = netip.Addr{}
			}
			s.tree.DeleteListener(header.ProtoUDP, a, m.sock.local.Port())
		}
		m.done.Done()
	}
}

func (s *Stack) servePending(b *pipelines.Batch, now int64) {
	keep := s.pending[:0]
	for k := range s.pending {
		p := s.pending[k]
		if mac, ok := s.h.neigh[p.iface].Lookup(p.ip, now); ok {
			rest := p.waiting[:0]
			for _, d := range p.waiting {
				var sent bool
				if d.raw != nil {
					sent = s.emitRaw(b, p.iface, header.MAC(mac), d.raw)
				} else {
					sent = s.emit(b, p.iface, header.MAC(mac), d.proto, d.src, d.dst, d.l4)
				}
				if !sent {
					rest = append(rest, d) // no room now; next pass
				}
			}
			if len(rest) > 0 {
				p.waiting = rest
				p.next = now
				keep = append(keep, p)
			}
			continue
		}
		if now >= p.next {
			if p.tries >= s.h.cfg.ARPAttempts {
				s.h.ctr.ARPTimeouts.Add(uint64(len(p.waiting)))
				continue
			}
			s.resolve(b, &p, now)
		}
		keep = append(keep, p)
	}
	for k := len(keep); k < len(s.pending); k++ {
		s.pending[k] = pendingHop{}
	}
	s.pending = keep
}

// serveSends sends what sockets assigned to this shard queued, while the batch has room.
func (s *Stack) serveSends(b *pipelines.Batch, now int64) {
	s.sendMu.Lock()
	q := s.sendQ
	s.sendQ = s.sendSpare[:0] // the two queues take turns, so queueing a send allocates nothing
	s.sendAny.Store(false)
	s.sendMu.Unlock()
	defer func() {
		clear(q)
		s.sendSpare = q[:0]
	}()
	var again []*UDPConn
	for qi, c := range q {
		if b.Room() < 2 {
			again = append(again, q[qi:]...)
			break
		}
		s.sends = c.takeSends(s.sends[:0], sendBatchPerSocket)
		for di, d := range s.sends {
			if !s.sendUDP(b, c, d, now) && b.Room() < 2 {
				// Out of room: put the rest back at the front of the socket's queue.
				c.wmu.Lock()
				c.wq = append(append([]txDatagram(nil), s.sends[di:]...), c.wq...)
				c.wmu.Unlock()
				break
			}
		}
		if c.pendingSends() {
			again = append(again, c)
		}
	}
	if len(again) > 0 {
		s.sendMu.Lock()
		s.sendQ = append(s.sendQ, again...)
		s.sendMu.Unlock()
		s.sendAny.Store(true)
	}
}

func (s *Stack) sendUDP(b *pipelines.Batch, c *UDPConn, d txDatagram, now int64) bool {
	dst := d.to.Addr().As4()
	_, _, src, ok := s.h.routes.Lookup(dst)
	if !ok {
		s.h.ctr.NoRoute.Add(1)
		return true // counted and gone; not a reason to stop
	}
	if a := c.local.Addr(); !a.IsUnspecified() {
		src = a.As4()
	}
	n := header.UDPLen + len(d.buf)
	l4 := s.scratch[:n]
	u := header.EncodeUDP(l4, c.local.Port(), d.to.Port(), len(d.buf))
	copy(l4[header.UDPLen:], d.buf)
	u.FixChecksum(netip.AddrFrom4(src), d.to.Addr())
	if !s.sendIP(b, header.ProtoUDP, src, dst, l4, now) {
		return false
	}
	s.h.ctr.UDPOut.Add(1)
	return true
}
