package stack

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// Tests of the limits a user sets (Config, TCPConfig) under attack: each drives traffic past
// one limit while other traffic goes on, and checks the drops are counted, by reason and in
// the stack's counters, and that the other traffic arrives whole. They are named TestLimit...

// listenUDP opens a UDP socket on the harness's host, stepping the harness until its stack has
// registered it (ListenUDP waits for the shards, which here run only when the test steps them).
func (hs *harness) listenUDP(laddr string) *UDPConn {
	hs.t.Helper()
	type result struct {
		c   *UDPConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := hs.h.ListenUDP(netip.MustParseAddrPort(laddr))
		done <- result{c, err}
	}()
	for {
		hs.step()
		select {
		case r := <-done:
			if r.err != nil {
				hs.t.Fatal(r.err)
			}
			return r.c
		default:
			runtime.Gosched()
		}
	}
}

// fragFrame is one fragment of UDP datagram id from src to us: payload at byte offset off of
// the datagram's payload, more to follow if mf.
func fragFrame(src netip.Addr, id uint16, off int, mf bool, payload []byte) []byte {
	n := header.IPv4MinLen + len(payload)
	f := make([]byte, header.EthernetLen+n)
	header.EncodeEthernet(f, header.MAC(ourMAC), header.MAC(peerMAC), header.EtherTypeIPv4)
	header.EncodeIPv4(f[header.EthernetLen:], header.IPv4Fields{TotalLength: n, ID: id, MF: mf, FragmentOffset: off, TTL: 64,
		Protocol: header.ProtoUDP, Src: src, Dst: ourIP})
	copy(f[header.EthernetLen+header.IPv4MinLen:], payload)
	return f
}

// readUDP reads one datagram that the stack has already delivered to c.
func readUDP(t *testing.T, c *UDPConn) (netip.AddrPort, []byte) {
	t.Helper()
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(time.Second)) // a guard: the datagram is queued already
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return from, buf[:n]
}

// TestLimitReassemblyBytes drives Config.ReassemblyBytes: many incomplete fragmented datagrams
// from many sources (first fragments of 1480 bytes, and 8-byte fragments that claim a datagram
// of 64 KiB), eight new ones in every pass, fill the 64 KiB budget over and over, while the
// peer's fragmented datagrams (3000 bytes in three fragments, one a pass) and unfragmented ones
// arrive whole. The flood's datagrams are given up, idlest first (Stats.ReasmEvicted, exactly
// those not held at the end); then a datagram larger than the whole budget is dropped with
// reason reassembly-limit at the fragment that would overflow it.
func TestLimitReassemblyBytes(t *testing.T) {
	const limit = 64 << 10
	hs := newHarness(t, Config{ReassemblyBytes: limit}, 0, 1)
	sock := hs.listenUDP("0.0.0.0:7")
	drops := map[string]int{}
	step := func(frames ...[]byte) {
		hs.Advance(time.Millisecond)
		hs.step(frames...)
		for r, n := range hs.DropCounts() {
			drops[r] += n
		}
		if hs.s.reasm.used > limit {
			t.Fatalf("reassembly holds %d bytes, the limit is %d", hs.s.reasm.used, limit)
		}
	}
	const rounds, perRound = 20, 8
	attackID, attackSent, maxUsed := uint16(0), 0, 0
	for n := range rounds {
		payload := make([]byte, 3000)
		for i := range payload {
			payload[i] = byte(n*31 + i*7)
		}
		dg := udpFrame(t, 4000+uint16(n), 7, payload)[14:]
		header.IPv4(dg).SetID(uint16(1000 + n))
		header.IPv4(dg).FixChecksum()
		frags := fragmentsOf(t, dg, 1480)
		for k, f := range frags {
			// The unfragmented datagram first, so it is read first.
			in := [][]byte{udpFrame(t, 5000, 7, []byte(fmt.Sprintf("plain %d.%d", n, k))), f}
			for range perRound / 2 {
				attackID++
				src := netip.AddrFrom4([4]byte{203, 0, byte(attackID >> 8), byte(attackID)})
				in = append(in,
					fragFrame(src, attackID, 0, true, make([]byte, 1480)),
					fragFrame(netip.AddrFrom4([4]byte{10, 9, byte(attackID >> 8), byte(attackID)}), attackID, 64000, true, make([]byte, 8)))
				attackSent += 2
			}
			step(in...)
			maxUsed = max(maxUsed, hs.s.reasm.used)
			if from, got := readUDP(t, sock); from.Port() != 5000 || string(got) != fmt.Sprintf("plain %d.%d", n, k) {
				t.Fatalf("round %d: unfragmented datagram %.20q (%d bytes) from %v", n, got, len(got), from)
			}
			if k < len(frags)-1 {
				continue
			}
			if from, got := readUDP(t, sock); from.Port() != 4000+uint16(n) || !bytes.Equal(got, payload) {
				t.Fatalf("round %d: fragmented datagram of %d bytes from %v, want the %d sent", n, len(got), from, len(payload))
			}
		}
	}
	st := hs.h.Stats()
	if maxUsed < limit-2000 || hs.s.reasm.count() == 0 {
		t.Fatalf("the flood did not reach the limit: at most %d bytes held", maxUsed)
	}
	if want := uint64(attackSent - hs.s.reasm.count()); st.ReasmEvicted != want || st.ReasmTimeouts != 0 {
		t.Fatalf("evicted %d datagrams, timeouts %d; want %d evicted (%d sent, %d held)", st.ReasmEvicted, st.ReasmTimeouts, want, attackSent, hs.s.reasm.count())
	}
	if st.Reassembled != rounds || len(drops) != 0 {
		t.Fatalf("reassembled %d of %d; drops %v", st.Reassembled, rounds, drops)
	}

	// A datagram that outgrows the budget alone: the fragment that would take it past the limit
	// is dropped, and the datagram given up; everything else held was evicted to make room.
	held := hs.s.reasm.count()
	over := 0 // the first fragment that does not fit
	for dgramOverhead+(over+1)*(1480+pieceOverhead) <= limit {
		over++
	}
	var big [][]byte
	for k := range over + 2 {
		big = append(big, fragFrame(peerIP, 4242, k*1480, true, make([]byte, 1480)))
	}
	for len(big) > 0 {
		n := min(len(big), 32)
		step(big[:n]...)
		big = big[n:]
	}
	// The fragment after it starts a datagram of its own, which is held (and times out).
	if drops["reassembly-limit"] != 1 || hs.s.reasm.count() != 1 || hs.h.Stats().ReasmEvicted != st.ReasmEvicted+uint64(held)+1 {
		t.Fatalf("a datagram past the budget: drops %v, %d held, evicted %d → %d (want +%d)", drops, hs.s.reasm.count(),
			st.ReasmEvicted, hs.h.Stats().ReasmEvicted, held+1)
	}
	hs.Advance(31 * time.Second)
	step()
	if hs.s.reasm.count() != 0 || hs.s.reasm.used != 0 || hs.h.Stats().ReasmTimeouts != 1 {
		t.Fatalf("after the timeout: %d datagrams, %d bytes held, %d timeouts", hs.s.reasm.count(), hs.s.reasm.used, hs.h.Stats().ReasmTimeouts)
	}
}

// Reassembly holds what arrived, not what a fragment claims, and later bytes win where
// fragments overlap: a fragment that overlaps with wrong bytes is corrected by a later one, the
// datagram is delivered intact, and the budget is charged for the bytes held.
func TestReassemblyPiecesAndOverlaps(t *testing.T) {
	hs := newHarness(t, Config{}, 0, 1)
	sock := hs.listenUDP("0.0.0.0:7")
	// An 8-byte fragment at offset 64000 costs 8 bytes and the overheads, not a 64 KiB buffer.
	hs.step(fragFrame(peerIP, 1, 64000, true, make([]byte, 8)))
	if want := 8 + pieceOverhead + dgramOverhead; hs.s.reasm.used != want {
		t.Fatalf("an 8-byte fragment is charged %d bytes, want %d", hs.s.reasm.used, want)
	}
	// Its datagram cannot end before bytes that arrived.
	hs.step(fragFrame(peerIP, 1, 800, false, make([]byte, 8)))
	if d := hs.DropCounts(); d["bad-fragment"] != 1 || hs.s.reasm.count() != 0 || hs.s.reasm.used != 0 {
		t.Fatalf("an end before held bytes: drops %v, %d held (%d bytes)", d, hs.s.reasm.count(), hs.s.reasm.used)
	}

	payload := make([]byte, 4000)
	for i := range payload {
		payload[i] = byte(i*13 + i>>8)
	}
	dg := udpFrame(t, 4000, 7, payload)[14:]
	l4 := dg[20:] // 4008 bytes: the UDP header and the payload
	frag := func(lo, hi int, garble bool) []byte {
		b := append([]byte(nil), l4[lo:hi]...)
		if garble {
			for i := range b {
				b[i] ^= 0x5a
			}
		}
		return fragFrame(peerIP, 7, lo, hi < len(l4), b)
	}
	for _, f := range [][]byte{
		frag(2400, len(l4), false), // the last first
		frag(800, 2400, true),      // wrong bytes ...
		frag(1600, 2400, false),    // ... partly put right,
		frag(1600, 2400, false),    // twice (a duplicate),
		frag(0, 1600, false),       // and the rest by the first fragment, which completes it
	} {
		hs.step(f)
		if len(hs.drops) != 0 {
			t.Fatalf("drops %v", hs.drops)
		}
	}
	if from, got := readUDP(t, sock); from != netip.AddrPortFrom(peerIP, 4000) || !bytes.Equal(got, payload) {
		t.Fatalf("reassembled %d bytes from %v, want the %d sent", len(got), from, len(payload))
	}
	if hs.s.reasm.count() != 0 || hs.s.reasm.used != 0 || hs.h.Stats().Reassembled != 1 {
		t.Fatalf("after completion: %d datagrams, %d bytes held, %d reassembled", hs.s.reasm.count(), hs.s.reasm.used, hs.h.Stats().Reassembled)
	}
}

// stream moves n pattern bytes from src to dst while a tcpPair runs (pump between rounds), and
// checks them by SHA-256 at the end, as tcpPair.transfer does in one go.
type stream struct {
	src, dst  *TCPConn
	data      []byte
	sent, got int
	sum       hash.Hash
	buf       []byte
}

func newStream(src, dst *TCPConn, n int) *stream {
	x := &stream{src: src, dst: dst, data: make([]byte, n), sum: sha256.New(), buf: make([]byte, 64<<10)}
	for i := range x.data {
		x.data[i] = byte(i*7 + i>>9)
	}
	return x
}

// pump writes what the sender's ring takes and reads what has arrived; it reports whether
// everything has arrived.
func (x *stream) pump(t *testing.T) bool {
	t.Helper()
	if x.sent < len(x.data) {
		if room := x.src.sendRoom(); room > 0 {
			k, err := x.src.Write(x.data[x.sent:min(len(x.data), x.sent+room)])
			if err != nil {
				t.Fatalf("stream write: %v", err)
			}
			x.sent += k
		}
	}
	for x.dst.readable() > 0 {
		k, err := x.dst.Read(x.buf)
		if err != nil {
			t.Fatalf("stream read: %v", err)
		}
		x.sum.Write(x.buf[:k])
		x.got += k
	}
	return x.got >= len(x.data)
}

func (x *stream) check(t *testing.T) {
	t.Helper()
	want := sha256.Sum256(x.data)
	if x.got != len(x.data) || !bytes.Equal(x.sum.Sum(nil), want[:]) {
		t.Fatalf("stream: received %d of %d bytes, SHA-256 %v", x.got, len(x.data), bytes.Equal(x.sum.Sum(nil), want[:]))
	}
}

// pairDrops are the drops of a tcpPair's hosts (A's, B's) by reason, summed over rounds.
type pairDrops [2]map[string]int

// runCounting is tcpPair.run that calls each (if not nil) before every round and adds every
// round's drops on A and B to drops.
func (p *tcpPair) runCounting(limit time.Duration, drops *pairDrops, each func(), cond func() bool) {
	p.t.Helper()
	for i := range drops {
		if drops[i] == nil {
			drops[i] = map[string]int{}
		}
	}
	end := p.now + int64(limit)
	for !cond() {
		if p.now > end {
			p.t.Fatalf("condition not met after %v of simulated time", limit)
		}
		if each != nil {
			each()
		}
		moved := p.round()
		for r, n := range p.ha.DropCounts() {
			drops[0][r] += n
		}
		for r, n := range p.hb.DropCounts() {
			drops[1][r] += n
		}
		if moved == 0 && len(p.toA) == 0 && len(p.toB) == 0 && len(p.held[0]) == 0 && len(p.held[1]) == 0 {
			if d := minDeadline(p.ha.NextDeadline(), p.hb.NextDeadline()); d > p.now {
				p.now = d
			}
		}
	}
}

// runCountingFor runs the pair for d of simulated time, counting drops.
func (p *tcpPair) runCountingFor(d time.Duration, drops *pairDrops) {
	p.t.Helper()
	end := p.now + int64(d)
	p.runCounting(d+time.Second, drops, nil, func() bool { return p.now >= end })
}

// unanswered makes A's segments to B's ports lo..hi vanish, as segments to spoofed sources that
// do not answer do.
func unanswered(lo, hi uint16) func(dir int, f []byte) [][]byte {
	return func(dir int, f []byte) [][]byte {
		if dir == 0 && len(f) >= 38 && f[12] == 0x08 && f[13] == 0x00 && f[14+9] == header.ProtoTCP {
			if port := uint16(f[36])<<8 | uint16(f[37]); port >= lo && port <= hi {
				return nil
			}
		}
		return [][]byte{f}
	}
}

// accepted takes the connections l has ready.
func accepted(l *TCPListener) (out []*TCPConn) {
	for {
		l.mu.Lock()
		n := len(l.q)
		l.mu.Unlock()
		if n == 0 {
			return out
		}
		c, _ := l.AcceptTCP()
		out = append(out, c)
	}
}

// listenAndConnect has A listen on port with backlog and B connect; it returns the listener,
// B's end and A's end, established and accepted.
func (p *tcpPair) listenAndConnect(port uint16, backlog int) (*TCPListener, *TCPConn, *TCPConn) {
	p.t.Helper()
	l, _, err := p.a.listenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), port), backlog)
	if err != nil {
		p.t.Fatal(err)
	}
	p.round()
	c, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, port))
	if err != nil {
		p.t.Fatal(err)
	}
	var s []*TCPConn
	p.run(time.Second, func() bool { s = append(s, accepted(l)...); return len(s) > 0 && c.tcb.state == stEstablished })
	return l, c, s[0]
}

// TestLimitTCPBacklog drives a listener's backlog (ListenTCP's, TCPConfig.Backlog) with a SYN
// flood: 40 SYNs to a listener with backlog 4 from ports whose SYN-ACKs go unanswered, while a
// connection it accepted earlier moves 1 MiB. The first 4 SYNs leave half-open connections,
// the other 36 are dropped as tcp-backlog-full (Stats.TCP.BacklogDrops), nothing else is
// dropped, and the megabyte arrives whole. After the flood, a new client's first SYN is
// refused while the half-open connections are young; its retransmission a second later takes
// the place of the oldest one, whose SYN-ACK went unanswered (Stats.TCP.HalfOpenEvicted), and
// it is served. (Before that eviction, half-open connections outlived the SYN retries of
// every client that dialed while they filled the backlog.) Half-open connections whose
// SYN-ACKs draw a RST (the spoofed address belongs to a host that answers) go at once, and the
// next client is served at its first SYN.
func TestLimitTCPBacklog(t *testing.T) {
	const backlog, flood = 4, 40
	p := newTCPPair(t, TCPConfig{})
	l, c, s := p.listenAndConnect(80, backlog)
	p.fault = unanswered(20000, 29999)
	x := newStream(s, c, 1<<20)
	var drops pairDrops
	sent := 0
	p.runCounting(10*time.Second, &drops, func() {
		for k := 0; k < 4 && sent < flood; k++ {
			p.seg(netip.AddrPortFrom(peerIP, uint16(20000+sent)), netip.AddrPortFrom(ourIP, 80), uint32(sent)*7919, 0, header.TCPFlagSYN, nil)
			sent++
		}
	}, func() bool { return x.pump(t) && sent == flood })
	p.runCountingFor(100*time.Millisecond, &drops) // the last SYNs are processed
	x.check(t)
	if want := flood - backlog; drops[0]["tcp-backlog-full"] != want || len(drops[0]) != 1 || len(drops[1]) != 0 ||
		p.a.Stats().TCP.BacklogDrops != uint64(want) {
		t.Fatalf("drops on A %v, on B %v, backlog drops %d; want %d tcp-backlog-full on A and nothing else", drops[0], drops[1], p.a.Stats().TCP.BacklogDrops, want)
	}
	if l.halfOpen != backlog || p.stackA().tcp.nconns != backlog+1 {
		t.Fatalf("half-open %d, connections %d; want %d and %d", l.halfOpen, p.stackA().tcp.nconns, backlog, backlog+1)
	}

	// The flood stops; a client dials. Its SYN finds the backlog full of half-open connections
	// not yet a second old, and is dropped; its first retransmission (a second later) takes the
	// place of the oldest, whose SYN-ACK has gone unanswered for a retransmission timeout.
	before := p.a.Stats().TCP
	c2, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, 80))
	if err != nil {
		t.Fatal(err)
	}
	var s2 []*TCPConn
	p.runCounting(10*time.Second, &drops, nil, func() bool { s2 = append(s2, accepted(l)...); return len(s2) > 0 && c2.tcb.state == stEstablished })
	after := p.a.Stats().TCP
	if refused, evicted := after.BacklogDrops-before.BacklogDrops, after.HalfOpenEvicted-before.HalfOpenEvicted; refused != 1 || evicted != 1 ||
		l.halfOpen != backlog-1 || p.stackA().tcp.nconns != backlog+1 || drops[0]["tcp-backlog-full"] != flood-backlog+1 {
		t.Fatalf("the client's SYN refused %d times, half-open evicted %d (want 1 and 1); half-open %d, connections %d, drops %v",
			refused, evicted, l.halfOpen, p.stackA().tcp.nconns, drops[0])
	}
	x2 := newStream(c2, s2[0], 100<<10)
	p.runCounting(10*time.Second, &drops, nil, func() bool { return x2.pump(t) })
	x2.check(t)

	// A flood whose SYN-ACKs draw RSTs (B has no such connections): the half-open go at once.
	p.fault = nil
	sent = 0
	p.runCounting(10*time.Second, &drops, func() {
		for k := 0; k < 4 && sent < flood; k++ {
			p.seg(netip.AddrPortFrom(peerIP, uint16(30000+sent)), netip.AddrPortFrom(ourIP, 80), uint32(sent)*7919, 0, header.TCPFlagSYN, nil)
			sent++
		}
	}, func() bool { return sent == flood && l.halfOpen == 0 })
	if p.a.Stats().TCP.ResetsIn < backlog {
		t.Fatalf("%d RSTs on A", p.a.Stats().TCP.ResetsIn)
	}
	before = p.a.Stats().TCP
	c3, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, 80))
	if err != nil {
		t.Fatal(err)
	}
	var s3 []*TCPConn
	p.runCounting(time.Second, &drops, nil, func() bool { s3 = append(s3, accepted(l)...); return len(s3) > 0 && c3.tcb.state == stEstablished })
	if d := p.a.Stats().TCP.BacklogDrops - before.BacklogDrops; d != 0 || c3.tcb.retries != 0 {
		t.Fatalf("after a reset flood a client's SYN was refused %d times, retried %d", d, c3.tcb.retries)
	}
}

// TestLimitTCPMaxConns drives TCPConfig.MaxConns: with A limited to 4 connections, one of them
// moving 1 MiB, B dials 10 more; 3 are served and the SYNs of the other 7 are dropped as
// tcp-connection-limit (Stats.TCP.ConnLimitDrops), nothing else is dropped, and the megabyte
// arrives whole. When the busy connection closes, the first refused client to retry its SYN
// takes its place and the other 6 are refused again.
func TestLimitTCPMaxConns(t *testing.T) {
	const maxConns, dials = 4, 10
	p := newTCPPair(t, TCPConfig{MaxConns: maxConns})
	p.b.tcp.cfg.MaxConns = 16384 // only A is limited
	l, c, s := p.listenAndConnect(80, 0)
	x := newStream(s, c, 1<<20)
	var drops pairDrops
	var clients, served []*TCPConn
	p.runCounting(10*time.Second, &drops, func() {
		if len(clients) < dials {
			d, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, 80))
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, d)
		}
	}, func() bool { served = append(served, accepted(l)...); return x.pump(t) && len(clients) == dials })
	p.runCountingFor(100*time.Millisecond, &drops) // the last SYNs are answered or dropped
	served = append(served, accepted(l)...)
	x.check(t)
	established := func() (n int) {
		for _, d := range clients {
			if d.tcb.state == stEstablished {
				n++
			}
		}
		return n
	}
	refused := dials - (maxConns - 1)
	if drops[0]["tcp-connection-limit"] != refused || len(drops[0]) != 1 || len(drops[1]) != 0 || p.a.Stats().TCP.ConnLimitDrops != uint64(refused) {
		t.Fatalf("drops on A %v, on B %v, connection-limit drops %d; want %d tcp-connection-limit on A and nothing else",
			drops[0], drops[1], p.a.Stats().TCP.ConnLimitDrops, refused)
	}
	if p.stackA().tcp.nconns != maxConns || established() != maxConns-1 || len(served) != maxConns-1 {
		t.Fatalf("A has %d connections, %d clients established, %d accepted; want %d, %d, %d", p.stackA().tcp.nconns, established(), len(served), maxConns, maxConns-1, maxConns-1)
	}

	// The busy connection closes (B first: A's end goes through LAST_ACK, no TIME_WAIT).
	c.Close()
	p.runCounting(time.Second, &drops, nil, func() bool { return s.tcb.state == stCloseWait })
	s.Close()
	p.runCounting(time.Second, &drops, nil, func() bool { return gone(s) })
	p.runCounting(5*time.Second, &drops, nil, func() bool { return established() == maxConns })
	p.runCountingFor(500*time.Millisecond, &drops) // the other retries of that round are refused
	if n := p.a.Stats().TCP.ConnLimitDrops; n != uint64(2*refused-1) || drops[0]["tcp-connection-limit"] != 2*refused-1 {
		t.Fatalf("after one connection closed: %d connection-limit drops (%v), want %d", n, drops[0], 2*refused-1)
	}
	// A SYN from a source with no route back is not a connection-limit drop: it has its own
	// reason (it was counted as tcp-connection-limit, tcpAttach failing on the route).
	p.seg(netip.MustParseAddrPort("203.0.113.9:5555"), netip.AddrPortFrom(ourIP, 80), 1, 0, header.TCPFlagSYN, nil)
	noRoute := p.a.Stats().NoRoute
	p.round()
	if d := p.ha.DropCounts(); d["no-route"] != 1 || p.a.Stats().NoRoute != noRoute+1 {
		t.Fatalf("a SYN with no route back: drops %v", d)
	}
}

// arpRequestFrom is an ARP request for our address from ip, with a MAC address made from it.
func arpRequestFrom(ip netip.Addr) []byte {
	a := ip.As4()
	mac := header.MAC{0x02, 0xaa, a[0], a[1], a[2], a[3]}
	f := make([]byte, header.EthernetLen+header.ARPLen)
	header.EncodeEthernet(f, header.BroadcastMAC, mac, header.EtherTypeARP)
	header.EncodeARP4(f[header.EthernetLen:], header.ARPRequest, mac, a, header.MAC{}, ourIP.As4())
	return f
}

// isARPRequestFor reports whether frame is an ARP request for ip.
func isARPRequestFor(frame []byte, ip netip.Addr) bool {
	eth, ok := header.ParseEthernet(frame)
	if !ok || eth.Type() != header.EtherTypeARP {
		return false
	}
	a, ok := header.ParseARP(eth.Payload())
	return ok && a.Op() == header.ARPRequest && a.TargetIP4() == ip.As4()
}

// udpPayloadTo returns the payload of frame if it is a UDP datagram to dst from our MAC to
// mac, and nil otherwise.
func udpPayloadTo(frame []byte, mac [6]byte, dst netip.AddrPort) []byte {
	eth, ok := header.ParseEthernet(frame)
	if !ok || eth.Type() != header.EtherTypeIPv4 || eth.Dst() != header.MAC(mac) {
		return nil
	}
	ip, e := header.ParseIPv4(eth.Payload())
	if e != header.IPv4OK || ip.Protocol() != header.ProtoUDP || ip.Dst() != dst.Addr() {
		return nil
	}
	u, ok := header.ParseUDP(ip.Payload())
	if !ok || u.DstPort() != dst.Port() {
		return nil
	}
	return u.Payload()
}

// TestLimitNeighborTable drives Config.NeighborTableSize: with a table of 16 entries, 200
// hosts each ask for our address (and are learned, RFC 826), ten in every pass, while our
// socket sends a datagram a pass to the peer, a neighbour resolved before. Each new sender
// that finds its window of the table full takes the place of the oldest learned entry there
// (Stats.NeighborEvictions, exactly the new entries that found no free slot); the peer's
// entry goes too, is resolved again (ARP request, reply), and every datagram reaches it once,
// in order, with nothing dropped and nothing left waiting. Then, with a table full of static
// entries, a new sender is answered but not learned (Stats.NeighborRefused), and one more
// static entry is a configuration error.
func TestLimitNeighborTable(t *testing.T) {
	const size, attackers, perPass = 16, 200, 10
	hs := newHarness(t, Config{NeighborTableSize: size}, 0, 1)
	sock := hs.listenUDP("0.0.0.0:9000")
	peer := netip.AddrPortFrom(peerIP, 53)
	hs.step(arpRequest(t, ourIP)) // the peer asks for us: learned
	inserts := 1                  // addresses put in the table (the peer each time it is learned)
	var want, got []string
	var replies []byte // the peer's answer to our ARP request, due next pass
	drops, arpReplies, resolved := 0, 0, 0
	pass := func(in ...[]byte) {
		if replies != nil {
			in = append(in, replies)
			replies = nil
		}
		hs.Advance(time.Millisecond)
		hs.step(in...)
		drops += len(hs.drops)
		for _, f := range hs.sent {
			switch {
			case isARPRequestFor(f, peerIP):
				replies = arpReply(t)
				resolved++
				inserts++
			case udpPayloadTo(f, peerMAC, peer) != nil:
				got = append(got, string(udpPayloadTo(f, peerMAC, peer)))
			default:
				if eth, _ := header.ParseEthernet(f); eth.Type() == header.EtherTypeARP {
					arpReplies++
				}
			}
		}
	}
	for n := 0; n < attackers; n += perPass {
		msg := fmt.Sprintf("datagram %d", n/perPass)
		want = append(want, msg)
		if _, err := sock.WriteToUDPAddrPort([]byte(msg), peer); err != nil {
			t.Fatal(err)
		}
		var in [][]byte
		for k := n; k < n+perPass; k++ {
			in = append(in, arpRequestFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + k)})))
		}
		pass(in...)
	}
	pass() // the last answer, if one is due
	pass()
	st := hs.h.Stats()
	entries := len(hs.h.Neighbors(0))
	if fmt.Sprint(got) != fmt.Sprint(want) || drops != 0 || st.ARPPendingFull != 0 || st.ARPTimeouts != 0 || len(hs.s.pending) != 0 {
		t.Fatalf("the peer got %q, want %q; drops %d, pending full %d, ARP timeouts %d, still pending %d", got, want, drops, st.ARPPendingFull, st.ARPTimeouts, len(hs.s.pending))
	}
	if arpReplies != attackers {
		t.Fatalf("answered %d of %d ARP requests", arpReplies, attackers)
	}
	if entries != size || resolved == 0 || st.NeighborEvictions != uint64(attackers+inserts-entries) || st.NeighborRefused != 0 {
		t.Fatalf("%d entries, the peer resolved %d times, %d evictions (want %d), %d refused", entries, resolved, st.NeighborEvictions, attackers+inserts-entries, st.NeighborRefused)
	}

	// A table of static entries only: find 16 addresses that fill one, as NewHost will place them.
	probe := NewNeighborTable(size)
	var static []StaticNeighbor
	for k := 1; len(static) < size; k++ {
		ip := netip.AddrFrom4([4]byte{198, 18, 1, byte(k)})
		if probe.Update(ip.As4(), [6]byte{0x02, 1, 1, 1, 1, byte(k)}, 0, true) != NeighborFull {
			static = append(static, StaticNeighbor{IP: ip, MAC: [6]byte{0x02, 1, 1, 1, 1, byte(k)}})
		}
	}
	full := newHarness(t, Config{NeighborTableSize: size, Ifaces: []Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/16")}}}, StaticARP: static}, 0, 1)
	full.step(arpRequestFrom(netip.MustParseAddr("198.18.0.77")))
	if st := full.h.Stats(); len(full.sent) != 1 || st.NeighborRefused != 1 || st.NeighborEvictions != 0 || full.h.neigh[0].Known([4]byte{198, 18, 0, 77}) {
		t.Fatalf("a table of static entries: sent %d, refused %d, evicted %d", len(full.sent), st.NeighborRefused, st.NeighborEvictions)
	}
	static = append(static, StaticNeighbor{IP: netip.MustParseAddr("198.18.2.1"), MAC: [6]byte{0x02, 2}})
	if _, err := NewHost(Config{NeighborTableSize: size, Ifaces: []Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/16")}}}, StaticARP: static}); err == nil {
		t.Fatal("a static entry with no room in the neighbour table was accepted")
	}
}

// forwarder is a stage that hands every IPv4 packet not addressed to us to Stack.Forward, as
// the NAT does with the packets it translates.
type forwarder struct{ st *Stack }

func (f forwarder) Name() string { return "forward" }

func (f forwarder) Process(b *pipelines.Batch) {
	for i := range b.Pkts {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		if ip, ok := header.IPv4InFrame(b.Data(i)); ok && ip.Dst() != ourIP {
			f.st.Forward(b, i)
		}
	}
}

// arpReplyFrom is ip's answer (at mac) to our ARP request.
func arpReplyFrom(ip netip.Addr, mac [6]byte) []byte {
	f := make([]byte, header.EthernetLen+header.ARPLen)
	header.EncodeEthernet(f, header.MAC(ourMAC), header.MAC(mac), header.EtherTypeARP)
	header.EncodeARP4(f[header.EthernetLen:], header.ARPReply, header.MAC(mac), ip.As4(), header.MAC(ourMAC), ourIP.As4())
	return f
}

// TestLimitARPPending drives Config.ARPPendingHops (4) and ARPPendingPerHop (8): packets
// forwarded through the stack (as the NAT forwards them) to 10 next hops that never answer,
// then 20 more to one of them, and datagrams our socket sends to 5 more such hops, while every
// pass our socket sends a datagram to the peer, a resolved neighbour, and a packet is
// forwarded to it. 4 hops wait with 1 packet each, the first of them with 8 in the end; the 19
// forwarded packets beyond are dropped as arp-pending-full and, with the socket's 5 datagrams,
// counted in Stats.ARPPendingFull (24). The peer gets every datagram and packet once, in
// order, and nothing else is dropped. After 3 unanswered ARP requests per hop (12), the 11
// waiting packets are dropped (Stats.ARPTimeouts), and a new next hop is resolved and
// served.
func TestLimitARPPending(t *testing.T) {
	const hops, perHop = 4, 8
	h, err := NewHost(Config{Ifaces: []Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}}},
		ARPPendingHops: hops, ARPPendingPerHop: perHop, ARPRetry: time.Second, ARPAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	s := h.NewStack(0)
	hs := &harness{t: t, h: h, s: s}
	hs.Harness = stagetest.NewPipeline(t, &pipelines.Pipeline{Stages: []pipelines.Stage{forwarder{s}, s}},
		pipelines.ShardInfo{Ifaces: []pipelines.Interface{{Name: "t0", MAC: ourMAC, MTU: 1500}}})
	s.garp = true
	sock := hs.listenUDP("0.0.0.0:9000")
	peer := netip.AddrPortFrom(peerIP, 53)
	far := netip.MustParseAddrPort("203.0.113.5:4000") // a host behind us, whose packets we forward
	hs.step(arpRequest(t, ourIP))                      // the peer asks for us: learned
	drops := map[string]int{}
	var want, got []string
	n := 0
	pass := func(in ...[]byte) {
		t.Helper()
		msg := fmt.Sprintf("datagram %d", n)
		fwd := fmt.Sprintf("forwarded %d", n)
		n++
		want = append(want, fwd, msg) // the forwarded packet leaves in Process, the datagram in Originate
		if _, err := sock.WriteToUDPAddrPort([]byte(msg), peer); err != nil {
			t.Fatal(err)
		}
		in = append(in, stagetest.UDPFrame(far, peer, []byte(fwd)))
		hs.Advance(250 * time.Millisecond)
		hs.step(in...)
		for r, k := range hs.DropCounts() {
			drops[r] += k
		}
		for _, f := range hs.sent {
			if p := udpPayloadTo(f, peerMAC, peer); p != nil {
				got = append(got, string(p))
			}
		}
	}
	toHop := func(k int, what string) []byte {
		return stagetest.UDPFrame(far, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + k)}), 53), []byte(what))
	}
	var in [][]byte
	for k := range 10 {
		in = append(in, toHop(k, "to many"))
	}
	pass(in...)
	for range 2 {
		in = in[:0]
		for range 10 {
			in = append(in, toHop(0, "to one"))
		}
		pass(in...)
	}
	for k := 10; k < 15; k++ {
		if _, err := sock.WriteToUDPAddrPort([]byte("to many"), netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + k)}), 53)); err != nil {
			t.Fatal(err)
		}
	}
	pass()
	st := h.Stats()
	waiting := 0
	for _, p := range s.pending {
		waiting += len(p.waiting)
	}
	if drops["arp-pending-full"] != 19 || len(drops) != 1 || st.ARPPendingFull != 24 || len(s.pending) != hops || waiting != perHop+hops-1 {
		t.Fatalf("drops %v, pending full %d, %d hops pending with %d packets; want 19 arp-pending-full, 24, %d hops, %d packets",
			drops, st.ARPPendingFull, len(s.pending), waiting, hops, perHop+hops-1)
	}
	// The hops time out: 3 ARP requests each, then their packets go.
	for i := 0; len(s.pending) > 0; i++ {
		if i == 20 {
			t.Fatalf("still %d hops pending after 5 s", len(s.pending))
		}
		pass()
	}
	if st := h.Stats(); st.ARPTimeouts != uint64(perHop+hops-1) || st.ARPRequestsOut != 3*hops {
		t.Fatalf("ARP timeouts %d, requests %d; want %d and %d", st.ARPTimeouts, st.ARPRequestsOut, perHop+hops-1, 3*hops)
	}
	// Room again: a new next hop is resolved and served.
	late := netip.MustParseAddr("198.18.0.120")
	pass(stagetest.UDPFrame(far, netip.AddrPortFrom(late, 53), []byte("late")))
	if len(s.pending) != 1 || h.Stats().ARPRequestsOut != 3*hops+1 {
		t.Fatalf("a new next hop: %d pending, %d ARP requests", len(s.pending), h.Stats().ARPRequestsOut)
	}
	lateMAC := [6]byte{0x02, 0, 0, 0, 0, 0x78}
	pass(arpReplyFrom(late, lateMAC))
	if len(s.pending) != 0 {
		t.Fatalf("%d hops pending after the answer", len(s.pending))
	}
	var lateGot []byte
	for _, f := range hs.sent {
		if p := udpPayloadTo(f, lateMAC, netip.AddrPortFrom(late, 53)); p != nil {
			lateGot = p
		}
	}
	if string(lateGot) != "late" {
		t.Fatalf("the new next hop got %q", lateGot)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(drops) != 1 {
		t.Fatalf("the peer got %q, want %q; drops %v", got, want, drops)
	}
}
