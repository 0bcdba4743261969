package stack

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// State-machine tests (RFC 9293): simultaneous open and close, TIME_WAIT and its bound,
// keepalive, RFC 6528 ISNs, and RSTs in the handshake states. They use tcpPair (tcp_test.go):
// A is 198.18.0.1, B 198.18.0.2.

// stateLog records the states a connection goes through, one entry per change.
type stateLog []tcpState

func (l *stateLog) note(c *TCPConn) {
	st := c.tcb.state
	if st == stClosed && c.tcb.idx < 0 && len(*l) == 0 {
		return // not attached yet
	}
	if n := len(*l); n == 0 || (*l)[n-1] != st {
		*l = append(*l, st)
	}
}

func (l stateLog) String() string {
	var b bytes.Buffer
	for i, s := range l {
		if i > 0 {
			b.WriteString(" → ")
		}
		b.WriteString(s.String())
	}
	return b.String()
}

func (l stateLog) is(want ...tcpState) bool {
	if len(l) != len(want) {
		return false
	}
	for i := range l {
		if l[i] != want[i] {
			return false
		}
	}
	return true
}

// runFor pumps the pair for d of simulated time (jumping the clock over idle stretches).
func (p *tcpPair) runFor(d time.Duration) {
	p.t.Helper()
	end := p.now + int64(d)
	p.run(d+time.Second, func() bool { return p.now >= end })
}

// stackA and stackB are the pair's single shards.
func (p *tcpPair) stackA() *Stack { return p.a.stacks[0] }
func (p *tcpPair) stackB() *Stack { return p.b.stacks[0] }

// seg builds a TCP segment from one of the pair's addresses to the other, without options;
// it goes into p.toA or p.toB by its destination.
func (p *tcpPair) seg(from, to netip.AddrPort, seq, ack uint32, flags uint8, payload []byte) {
	p.t.Helper()
	srcMAC, dstMAC := peerMAC, ourMAC
	if to.Addr() == peerIP {
		srcMAC, dstMAC = ourMAC, peerMAC
	}
	f := make([]byte, header.EthernetLen+header.IPv4MinLen+header.TCPMinLen+len(payload))
	header.EncodeEthernet(f, header.MAC(dstMAC), header.MAC(srcMAC), header.EtherTypeIPv4)
	header.EncodeIPv4(f[14:], header.IPv4Fields{TotalLength: len(f) - 14, TTL: 64, Protocol: header.ProtoTCP, Src: from.Addr(), Dst: to.Addr()})
	tc := header.EncodeTCP(f[34:], header.TCPFields{SrcPort: from.Port(), DstPort: to.Port(), Seq: seq, Ack: ack, Flags: flags, Window: 8192}, len(payload))
	copy(tc[header.TCPMinLen:], payload)
	tc.FixChecksum(from.Addr(), to.Addr())
	if to.Addr() == ourIP {
		p.toA = append(p.toA, stagetest.In{Data: f})
	} else {
		p.toB = append(p.toB, stagetest.In{Data: f})
	}
}

func gone(c *TCPConn) bool { return c.tcb.idx < 0 }

// synSegs returns the SYN segments (with or without ACK) among the captured frames.
func synSegs(t *testing.T, frames [][]byte) (syns []header.TCP) {
	for _, f := range frames {
		if tc := header.TCP(f[34:]); tc.Flags()&header.TCPFlagSYN != 0 {
			syns = append(syns, tc)
		}
	}
	return syns
}

// Both ends dial each other at once (RFC 9293 §3.5, figure 8): the SYNs cross, each end goes
// SYN_SENT → SYN_RCVD → ESTABLISHED, and data flows both ways. Before the fix in tcpSegment,
// each end took the other's SYN-ACK for a retransmitted SYN and answered with its own
// SYN-ACK, so the two bounced SYN-ACKs until the SYN retries ran out.
func TestTCPSimultaneousOpen(t *testing.T) {
	for _, tc := range []struct {
		name       string
		loseSYNACK bool
	}{{"clean", false}, {"A's SYN-ACK lost", true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTCPPair(t, TCPConfig{})
			p.capture = true
			if tc.loseSYNACK {
				lost := false
				p.fault = func(dir int, f []byte) [][]byte {
					if fl := header.TCP(f[34:]).Flags(); dir == 0 && !lost && fl&header.TCPFlagSYN != 0 && fl&header.TCPFlagACK != 0 {
						lost = true
						return nil
					}
					return [][]byte{f}
				}
			}
			a, err := p.a.dialAsyncFrom(5001, netip.AddrPortFrom(peerIP, 5002))
			if err != nil {
				t.Fatal(err)
			}
			b, err := p.b.dialAsyncFrom(5002, netip.AddrPortFrom(ourIP, 5001))
			if err != nil {
				t.Fatal(err)
			}
			var la, lb stateLog
			p.run(5*time.Second, func() bool {
				la.note(a)
				lb.note(b)
				return a.tcb.state == stEstablished && b.tcb.state == stEstablished
			})
			for name, l := range map[string]stateLog{"A": la, "B": lb} {
				if !l.is(stSynSent, stSynRcvd, stEstablished) {
					t.Errorf("%s went %v, want SYN_SENT → SYN_RCVD → ESTABLISHED", name, l)
				}
			}
			// The SYNs crossed: each end's first SYN carries no ACK.
			syns := synSegs(t, p.captured)
			if len(syns) < 4 || syns[0].Flags()&header.TCPFlagACK != 0 || syns[1].Flags()&header.TCPFlagACK != 0 {
				t.Fatalf("%d SYNs on the wire, want two crossed SYNs then SYN-ACKs", len(syns))
			}
			if !tc.loseSYNACK && len(syns) != 4 {
				t.Errorf("%d SYNs on the wire, want 4 (two SYNs, two SYN-ACKs)", len(syns))
			}
			for name, c := range map[string]*TCPConn{"A": a, "B": b} {
				k := &c.tcb
				peer := a
				if c == a {
					peer = b
				}
				if k.passive || !k.tsOK || !k.sackOK || !k.wsOK || k.mss != 1448 {
					t.Errorf("%s: passive %v ts %v sack %v ws %v mss %d", name, k.passive, k.tsOK, k.sackOK, k.wsOK, k.mss)
				}
				// The window of a SYN-ACK is never scaled (RFC 7323 §2.2): scaled, it would
				// be twice the peer's buffer here (65535 << 3).
				if k.sndWnd > uint32(len(peer.rbuf)) {
					t.Errorf("%s: send window %d after the handshake, more than the peer's %d-byte buffer", name, k.sndWnd, len(peer.rbuf))
				}
				select {
				case <-c.estCh:
				default:
					t.Errorf("%s: the dial was not told it completed", name)
				}
			}
			if a.tcb.irs != b.tcb.iss || b.tcb.irs != a.tcb.iss {
				t.Errorf("ISNs: A iss %d irs %d, B iss %d irs %d", a.tcb.iss, a.tcb.irs, b.tcb.iss, b.tcb.irs)
			}
			// A lost SYN-ACK costs no RTO either: the other end's SYN-ACK is ACKed.
			if n := p.a.Stats().TCP.Timeouts + p.b.Stats().TCP.Timeouts; n != 0 {
				t.Errorf("%d timeouts during the simultaneous open", n)
			}
			p.capture = false
			p.transfer(a, b, 300000, 10*time.Second)
			p.transfer(b, a, 300000, 10*time.Second)
			if p.a.Stats().TCP.ResetsOut+p.b.Stats().TCP.ResetsOut != 0 {
				t.Error("RSTs sent")
			}
		})
	}
}

// Both ends close at once (RFC 9293 §3.6, figure 13): the FINs cross, each end goes
// FIN_WAIT_1 → CLOSING → TIME_WAIT, and both connections end 2 MSL later.
func TestTCPSimultaneousClose(t *testing.T) {
	p := newTCPPair(t, TCPConfig{}) // TIME_WAIT: the default 60 s (2 MSL)
	c, s := p.connect(9)
	p.transfer(c, s, 20000, time.Second)
	p.transfer(s, c, 20000, time.Second)
	c.Close()
	s.Close()
	var lc, ls stateLog
	lc.note(c)
	ls.note(s)
	p.run(time.Second, func() bool {
		lc.note(c)
		ls.note(s)
		return c.tcb.state == stTimeWait && s.tcb.state == stTimeWait
	})
	for name, l := range map[string]stateLog{"client": lc, "server": ls} {
		if !l.is(stEstablished, stFinWait1, stClosing, stTimeWait) {
			t.Errorf("%s went %v, want ESTABLISHED → FIN_WAIT_1 → CLOSING → TIME_WAIT", name, l)
		}
	}
	if n := len(p.a.TCPConns()) + len(p.b.TCPConns()); n != 2 {
		t.Fatalf("%d connections listed, want the two in TIME_WAIT", n)
	}
	start := p.now
	p.run(2*time.Minute, func() bool { return gone(c) && gone(s) })
	if d := time.Duration(p.now - start); d < 59*time.Second || d > 61*time.Second {
		t.Errorf("TIME_WAIT lasted %v, want 60 s", d)
	}
	if n := len(p.a.TCPConns()) + len(p.b.TCPConns()); n != 0 {
		t.Errorf("%d connections left", n)
	}
	if st := p.a.Stats().TCP; st.Timeouts != 0 || st.ResetsOut != 0 {
		t.Errorf("timeouts %d, RSTs %d", st.Timeouts, st.ResetsOut)
	}
}

// isKeepAlive reports whether f is a keepalive probe on c (A's end): no data, no flags but
// ACK, sequence one below what the peer expects.
func isKeepAlive(f []byte, c *TCPConn) bool {
	tc := header.TCP(f[34:])
	return dataLen(f) == 0 && tc.Flags() == header.TCPFlagACK && tc.Seq() == c.tcb.sndUna-1
}

// Keepalive: an idle connection is probed after the idle time; a live peer answers and the
// connection stays; a peer that is gone is declared dead after Count unanswered probes, one
// per Interval, and Read fails with a timeout (ETIMEDOUT, as Linux).
func TestTCPKeepAlive(t *testing.T) {
	const idle, intvl, count = 10 * time.Second, 2 * time.Second, 3
	p := newTCPPair(t, TCPConfig{})
	c, s := p.connect(7)
	if err := s.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: intvl, Count: count}); err != nil {
		t.Fatal(err)
	}
	var probes []int64
	dead := false
	p.fault = func(dir int, f []byte) [][]byte {
		if dir == 0 && isKeepAlive(f, s) {
			probes = append(probes, p.now)
		}
		if dead {
			return nil
		}
		return [][]byte{f}
	}
	p.transfer(c, s, 1000, time.Second)
	p.transfer(s, c, 1000, time.Second)
	start := p.now
	p.runFor(35 * time.Second)
	if len(probes) != 3 {
		t.Fatalf("%d probes in 35 s with a %v idle time, want 3", len(probes), idle)
	}
	for i, at := range probes {
		want := start + int64(i+1)*int64(idle)
		if d := time.Duration(at - want); d < 0 || d > 10*time.Millisecond {
			t.Errorf("probe %d at %v, want %v after the last segment", i, time.Duration(at-start), time.Duration(want-start))
		}
	}
	if s.tcb.state != stEstablished || c.tcb.state != stEstablished {
		t.Fatalf("states %v %v after answered probes", s.tcb.state, c.tcb.state)
	}
	if n := p.a.Stats().TCP.KeepAliveProbes; n != 3 {
		t.Errorf("keepalive probes counted %d, want 3", n)
	}
	// Data still flows.
	p.transfer(s, c, 1000, time.Second)
	p.transfer(c, s, 1000, time.Second)

	// The peer disappears.
	dead = true
	probes = probes[:0]
	last := s.tcb.lastRecv
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		errc <- err
	}()
	p.run(time.Minute, func() bool { return gone(s) })
	end := p.now
	if len(probes) != count {
		t.Errorf("%d probes before giving up, want %d", len(probes), count)
	}
	if want := last + int64(idle) + count*int64(intvl); end < want || end > want+int64(10*time.Millisecond) {
		t.Errorf("connection aborted %v after the last segment, want %v (idle + %d × interval)",
			time.Duration(end-last), time.Duration(want-last), count)
	}
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after the keepalive timeout")
	}
	var ne net.Error
	if !errors.Is(err, syscall.ETIMEDOUT) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read after the keepalive timeout: %v, want a timeout (ETIMEDOUT)", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Errorf("Write after the keepalive timeout: %v", err)
	}
	st := p.a.Stats().TCP
	if st.KeepAliveTimeouts != 1 || st.ResetsOut != 1 {
		t.Errorf("keepalive timeouts %d (want 1), RSTs out %d (want 1)", st.KeepAliveTimeouts, st.ResetsOut)
	}
	if c.tcb.state != stEstablished {
		t.Errorf("the other end (no keepalive) is %v", c.tcb.state)
	}
}

// Keepalive from the configuration (TCPConfig.KeepAlive) applies to every connection, probes
// wait while data is in flight (the RTO watches the peer then), and SetKeepAlive(false)
// stops them.
func TestTCPKeepAliveConfig(t *testing.T) {
	p := newTCPPair(t, TCPConfig{KeepAlive: 5 * time.Second, KeepAliveInterval: time.Second, KeepAliveCount: 2})
	c, s := p.connect(7)
	var probesA, probesB int
	p.fault = func(dir int, f []byte) [][]byte {
		switch {
		case dir == 0 && isKeepAlive(f, s):
			probesA++
		case dir == 1 && isKeepAlive(f, c):
			probesB++
		}
		return [][]byte{f}
	}
	p.runFor(12 * time.Second)
	if probesA == 0 || probesB == 0 {
		t.Fatalf("probes %d and %d with TCPConfig.KeepAlive set, want both ends probing", probesA, probesB)
	}
	c.SetKeepAlive(false)
	s.SetKeepAlive(false)
	probesA, probesB = 0, 0
	p.runFor(30 * time.Second)
	if probesA+probesB != 0 {
		t.Fatalf("%d probes after SetKeepAlive(false)", probesA+probesB)
	}
	// Probes do not replace the RTO: with data out and the peer gone, the RTO gives up (after
	// Retries), not keepalive after two probes.
	s.SetKeepAlive(true)
	p.round()
	p.fault = func(int, []byte) [][]byte { return nil }
	probesA = 0
	s.Write([]byte("lost"))
	p.runFor(20 * time.Second)
	if gone(s) || probesA != 0 {
		t.Fatalf("gone %v, %d probes with data in flight; want the RTO to handle it", gone(s), probesA)
	}
	if p.a.Stats().TCP.KeepAliveTimeouts != 0 {
		t.Fatal("keepalive timed out with data in flight")
	}
}

// TIME_WAIT is bounded per shard (TCPConfig.MaxTimeWait): the oldest goes first, counted.
func TestTCPTimeWaitBound(t *testing.T) {
	const limit, n = 4, 10
	p := newTCPPair(t, TCPConfig{MaxTimeWait: limit})
	l, _, err := p.a.listenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 80), 0)
	if err != nil {
		t.Fatal(err)
	}
	p.round()
	sb := p.stackB()
	var clients []*TCPConn
	for i := range n {
		c, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, 80))
		if err != nil {
			t.Fatal(err)
		}
		p.run(time.Second, func() bool { return c.tcb.state == stEstablished && len(l.q) > 0 })
		s, err := l.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		c.Close() // B closes first: B's end waits in TIME_WAIT
		p.run(time.Second, func() bool { return s.tcb.state == stCloseWait })
		s.Close()
		p.run(time.Second, func() bool { return c.tcb.state == stTimeWait && gone(s) })
		clients = append(clients, c)
		tw := 0
		for _, cs := range p.b.TCPConns() {
			if cs.State == "TIME_WAIT" {
				tw++
			}
		}
		if want := min(i+1, limit); len(sb.tcp.tw) != want || tw != want {
			t.Fatalf("after %d closes: %d in the TIME_WAIT table, %d listed, want %d", i+1, len(sb.tcp.tw), tw, want)
		}
	}
	if ev := p.b.Stats().TCP.TimeWaitEvicted; ev != n-limit {
		t.Errorf("TIME_WAIT evictions %d, want %d", ev, n-limit)
	}
	for i, c := range clients {
		if evicted := i < n-limit; gone(c) != evicted {
			t.Errorf("connection %d: gone %v, want %v (the oldest go first)", i, gone(c), evicted)
		}
	}
	// The connection limit also takes the oldest TIME_WAIT before it refuses a connection.
	p2 := newTCPPair(t, TCPConfig{MaxConns: 3})
	l2, _, err := p2.a.listenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 80), 0)
	if err != nil {
		t.Fatal(err)
	}
	p2.round()
	for range 5 {
		c, _ := p2.b.dialAsync(netip.AddrPortFrom(ourIP, 80))
		p2.run(time.Second, func() bool { return c.tcb.state == stEstablished && len(l2.q) > 0 })
		s, _ := l2.AcceptTCP()
		c.Close()
		p2.run(time.Second, func() bool { return s.tcb.state == stCloseWait })
		s.Close()
		p2.run(time.Second, func() bool { return c.tcb.state == stTimeWait && gone(s) })
	}
	if st := p2.b.Stats().TCP; p2.stackB().tcp.nconns != 3 || st.TimeWaitEvicted != 2 {
		t.Errorf("with MaxConns 3: %d connections, %d evictions; want 3 and 2", p2.stackB().tcp.nconns, st.TimeWaitEvicted)
	}
}

// ISNs (RFC 6528): ISN = M + F(4-tuple, secret), M a 4 µs clock (the shard's clock, so the
// fake one here), F a keyed hash. For one 4-tuple the ISN advances with the clock; different
// 4-tuples, and different secrets, give unrelated ISNs.
func TestTCPISN(t *testing.T) {
	p := newTCPPair(t, TCPConfig{})
	th := &p.a.tcp
	la, ra := ourIP.As4(), peerIP.As4()
	t0 := int64(123456789)
	i0, ts0 := th.isn(la, ra, 40000, 80, t0)
	if i1, _ := th.isn(la, ra, 40000, 80, t0); i1 != i0 {
		t.Fatal("ISN not a function of the 4-tuple and the clock")
	}
	if i1, _ := th.isn(la, ra, 40000, 80, t0+3999); i1-i0 > 1 {
		t.Errorf("ISN moved %d in 4 µs, want at most 1", i1-i0)
	}
	for _, d := range []time.Duration{4 * time.Microsecond, time.Millisecond, time.Second, time.Hour} {
		i1, ts1 := th.isn(la, ra, 40000, 80, t0+int64(d))
		if want := uint32(int64(d) / 4000); i1-i0 != want && i1-i0 != want+1 {
			t.Errorf("after %v the ISN moved %d, want %d (one per 4 µs)", d, i1-i0, want)
		}
		if ts1 != ts0 {
			t.Errorf("timestamp offset changed with the clock")
		}
	}
	// Different 4-tuples: F differs, with no pattern a neighbouring port would reveal.
	seen := map[uint32]bool{}
	var offs []uint32
	for lp := uint16(40000); lp < 40064; lp++ {
		isn, _ := th.isn(la, ra, lp, 80, t0)
		if seen[isn] {
			t.Fatalf("ISN %d repeats across 4-tuples", isn)
		}
		seen[isn] = true
		offs = append(offs, isn)
	}
	arith := true
	for i := 2; i < len(offs); i++ {
		arith = arith && offs[i]-offs[i-1] == offs[1]-offs[0]
	}
	if arith {
		t.Error("ISNs of neighbouring ports step evenly: not a keyed hash")
	}
	for _, other := range [][4]byte{{198, 18, 0, 3}, {10, 0, 0, 1}} {
		if isn, _ := th.isn(la, other, 40000, 80, t0); isn == i0 {
			t.Error("same ISN for another remote address")
		}
	}
	if isn, _ := th.isn(la, ra, 40000, 81, t0); isn == i0 {
		t.Error("same ISN for another remote port")
	}
	// Another host, another secret: another ISN for the same 4-tuple and time.
	if isn, _ := p.b.tcp.isn(la, ra, 40000, 80, t0); isn == i0 {
		t.Error("same ISN under another secret")
	}

	// On the wire: two dials of the same 4-tuple (to a closed port) 10 s of fake time apart.
	p.capture = true
	var isns []uint32
	var times []int64
	for range 2 {
		p.captured = nil
		c, err := p.b.dialAsyncFrom(41000, netip.AddrPortFrom(ourIP, 4444))
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, p.now) // the dial attaches in the next round, at this time
		p.run(time.Second, func() bool { return gone(c) && c.tcb.state == stClosed && len(p.captured) >= 2 })
		syns := synSegs(t, p.captured)
		if len(syns) != 1 {
			t.Fatalf("%d SYNs", len(syns))
		}
		isns = append(isns, syns[0].Seq())
		p.now += int64(10 * time.Second)
	}
	if got, want := isns[1]-isns[0], uint32(times[1]/4000)-uint32(times[0]/4000); got != want {
		t.Errorf("ISNs of one 4-tuple %v apart differ by %d, want %d (one per 4 µs of the shard's clock)",
			time.Duration(times[1]-times[0]), got, want)
	}
}

// A RST in SYN_RCVD: out of sequence, a challenge ACK; in sequence, the half-open connection
// goes and the listener carries on (RFC 9293 §3.10.7.4: "return to the LISTEN state").
func TestTCPResetInSynRcvd(t *testing.T) {
	p := newTCPPair(t, TCPConfig{})
	l, _, err := p.a.listenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 80), 0)
	if err != nil {
		t.Fatal(err)
	}
	p.round()
	// B's SYN reaches A; A's SYN-ACK never reaches B.
	p.fault = func(dir int, f []byte) [][]byte {
		if dir == 0 {
			return nil
		}
		return [][]byte{f}
	}
	c, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, 80))
	if err != nil {
		t.Fatal(err)
	}
	sa := p.stackA()
	var half *TCPConn
	p.run(time.Second, func() bool {
		for _, x := range sa.tcp.conns {
			if x != nil {
				half = x
			}
		}
		return half != nil && half.tcb.state == stSynRcvd
	})
	k := &half.tcb
	if l.halfOpen != 1 {
		t.Fatalf("half-open %d", l.halfOpen)
	}
	from, to := half.remote, half.local
	// Out of sequence (in the window): a challenge ACK (RFC 5961 §3.2), nothing else. In
	// SYN_RCVD it is <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (as Linux's request sockets send).
	p.seg(from, to, k.rcvNxt+100, 0, header.TCPFlagRST, nil)
	p.capture, p.captured = true, nil
	p.round()
	p.capture = false
	if p.a.Stats().TCP.ChallengeACKs != 1 || k.state != stSynRcvd {
		t.Fatalf("challenge ACKs %d, state %v", p.a.Stats().TCP.ChallengeACKs, k.state)
	}
	if len(p.captured) != 1 {
		t.Fatalf("%d frames after an out-of-sequence RST, want the challenge ACK", len(p.captured))
	}
	if ch := header.TCP(p.captured[0][34:]); ch.Flags() != header.TCPFlagACK || ch.Seq() != k.iss+1 || ch.Ack() != k.rcvNxt {
		t.Fatalf("challenge ACK flags %#x seq %d ack %d, want ACK, %d, %d", ch.Flags(), ch.Seq(), ch.Ack(), k.iss+1, k.rcvNxt)
	}
	// In sequence: the half-open connection goes, quietly.
	resetsOut := p.a.Stats().TCP.ResetsOut
	p.seg(from, to, k.rcvNxt, 0, header.TCPFlagRST, nil)
	p.round()
	if !gone(half) || l.halfOpen != 0 || len(l.q) != 0 {
		t.Fatalf("after the RST: gone %v, half-open %d, queued %d", gone(half), l.halfOpen, len(l.q))
	}
	if p.a.Stats().TCP.ResetsOut != resetsOut {
		t.Error("a RST answered with a RST")
	}
	// The listener still works: B's retransmitted SYN opens a new connection.
	p.fault = nil
	p.run(5*time.Second, func() bool { return c.tcb.state == stEstablished && len(l.q) > 0 })
	s, err := l.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	if s == half {
		t.Fatal("accepted the reset connection")
	}
	p.transfer(c, s, 10000, time.Second)
	p.transfer(s, c, 10000, time.Second)
}

// A RST in SYN_SENT counts only with an ACK of our SYN (RFC 9293 §3.10.7.3); an ACK that
// does not ack the SYN draws a RST (unless it is a RST itself).
func TestTCPResetInSynSent(t *testing.T) {
	p := newTCPPair(t, TCPConfig{})
	p.capture = true
	p.fault = func(dir int, f []byte) [][]byte { return nil } // nothing arrives
	c, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, 80))
	if err != nil {
		t.Fatal(err)
	}
	p.run(time.Second, func() bool { return len(synSegs(t, p.captured)) == 1 })
	iss := synSegs(t, p.captured)[0].Seq()
	if c.tcb.iss != iss || c.tcb.state != stSynSent {
		t.Fatalf("iss %d (SYN %d), state %v", c.tcb.iss, iss, c.tcb.state)
	}
	p.fault = nil
	from, to := c.remote, c.local
	resetsOut := p.b.Stats().TCP.ResetsOut
	for _, x := range []struct {
		name  string
		ack   uint32
		flags uint8
	}{
		{"RST without ACK", 0, header.TCPFlagRST},
		{"RST acking below the SYN", iss, header.TCPFlagRST | header.TCPFlagACK},
		{"RST acking beyond the SYN", iss + 2, header.TCPFlagRST | header.TCPFlagACK},
	} {
		p.seg(from, to, 777, x.ack, x.flags, nil)
		p.captured = nil
		p.round()
		if c.tcb.state != stSynSent || gone(c) {
			t.Fatalf("%s: state %v", x.name, c.tcb.state)
		}
		if len(p.captured) != 0 || p.b.Stats().TCP.ResetsOut != resetsOut {
			t.Fatalf("%s: answered (%d frames)", x.name, len(p.captured))
		}
	}
	// A bad ACK without RST: a RST with the ACK's number as its sequence, and the dial goes on.
	p.seg(from, to, 777, iss+1000, header.TCPFlagACK, nil)
	p.captured = nil
	p.round()
	if len(p.captured) != 1 || header.TCP(p.captured[0][34:]).Flags() != header.TCPFlagRST || header.TCP(p.captured[0][34:]).Seq() != iss+1000 {
		t.Fatalf("bad ACK in SYN_SENT: %d frames sent, want one RST with seq %d", len(p.captured), iss+1000)
	}
	if c.tcb.state != stSynSent {
		t.Fatalf("state %v after a bad ACK", c.tcb.state)
	}
	// The RST that acks the SYN: connection refused.
	p.seg(from, to, 777, iss+1, header.TCPFlagRST|header.TCPFlagACK, nil)
	p.round()
	if !gone(c) {
		t.Fatal("RST acking the SYN ignored")
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read after the RST: %v, want connection refused", err)
	}
}

// The window of a SYN-ACK is not scaled (RFC 7323 §2.2): after an ordinary active open the
// client's send window is what the SYN-ACK offered, not that shifted by the peer's scale.
func TestTCPSynAckWindowUnscaled(t *testing.T) {
	p := newTCPPair(t, TCPConfig{})
	p.capture = true
	c, s := p.connect(7)
	var synack header.TCP
	for _, tc := range synSegs(t, p.captured) {
		if tc.Flags()&header.TCPFlagACK != 0 {
			synack = tc
		}
	}
	if synack == nil || s.tcb.rcvWscale == 0 {
		t.Fatalf("SYN-ACK %v, server window scale %d", synack != nil, s.tcb.rcvWscale)
	}
	if c.tcb.sndWnd != uint32(synack.Window()) {
		t.Fatalf("client send window %d after the SYN-ACK, want its unscaled %d", c.tcb.sndWnd, synack.Window())
	}
}
