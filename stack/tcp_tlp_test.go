package stack

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
)

// exchange runs one request/response: B (the client) sends n bytes, A (the server) reads
// them and sends them back, B reads the answer. It returns how long that took in simulated
// time.
func (p *tcpPair) exchange(client, server *TCPConn, n int, limit time.Duration) time.Duration {
	p.t.Helper()
	t0 := p.now
	req := bytes.Repeat([]byte{'q'}, n)
	if _, err := client.Write(req); err != nil {
		p.t.Fatal(err)
	}
	buf := make([]byte, 4096)
	got := 0
	end := p.now + int64(limit)
	for got < n {
		if p.now > end {
			p.t.Fatalf("exchange not done after %v of simulated time", limit)
		}
		// The applications act as soon as data is readable, before the clock may jump to
		// the next timer (run checks its condition only before a round).
		moved := p.round()
		for server.readable() > 0 {
			k, _ := server.Read(buf)
			if _, err := server.Write(buf[:k]); err != nil {
				p.t.Fatal(err)
			}
			moved++
		}
		for client.readable() > 0 {
			k, _ := client.Read(buf)
			got += k
			moved++
		}
		if moved == 0 && len(p.toA) == 0 && len(p.toB) == 0 && len(p.held[0]) == 0 && len(p.held[1]) == 0 {
			if d := minDeadline(p.ha.NextDeadline(), p.hb.NextDeadline()); d > p.now {
				p.now = d
			}
		}
	}
	return time.Duration(p.now - t0)
}

// dropFirstData drops the first data segment sent in direction dir from now on.
func (p *tcpPair) dropFirstData(dir int) {
	dropped := false
	p.fault = func(d int, f []byte) [][]byte {
		if d == dir && !dropped && dataLen(f) > 0 {
			dropped = true
			return nil
		}
		return [][]byte{f}
	}
}

// A lost request (a lone segment) is repaired by a tail loss probe two SRTTs (at least 2 ms)
// after it went out, not by the 200 ms RTO: the probe is not inflated by the peer's
// delayed-ACK time while the peer has not been seen delaying ACKs.
func TestTCPLoneSegmentProbe(t *testing.T) {
	for _, lost := range []struct {
		name string
		dir  int
	}{{"request", 1}, {"response", 0}} {
		t.Run(lost.name, func(t *testing.T) {
			p := newTCPPair(t, TCPConfig{})
			c, s := p.connect(7)
			for range 5 {
				p.exchange(c, s, 100, time.Second)
			}
			before := p.a.Stats().TCP
			beforeB := p.b.Stats().TCP
			p.dropFirstData(lost.dir)
			took := p.exchange(c, s, 100, time.Second)
			after, afterB := p.a.Stats().TCP, p.b.Stats().TCP
			if took > 10*time.Millisecond {
				t.Errorf("the exchange with a lost %s took %v, want a few ms (a probe, not the 200 ms RTO)", lost.name, took)
			}
			probes := after.TailLossProbes - before.TailLossProbes + afterB.TailLossProbes - beforeB.TailLossProbes
			timeouts := after.Timeouts - before.Timeouts + afterB.Timeouts - beforeB.Timeouts
			if probes == 0 || timeouts != 0 {
				t.Errorf("probes %d, timeouts %d: want the probe to repair it", probes, timeouts)
			}
			// Losing the response also leaves the request unacknowledged, so the client
			// probes too and the server reports that probe as a duplicate; but the server had
			// sent data the client lacked, so that is not a delayed ACK.
			if after.SpuriousTLPs+afterB.SpuriousTLPs != 0 || c.tcb.lateACKs != 0 || s.tcb.lateACKs != 0 {
				t.Errorf("spurious probes A %d B %d, late ACKs client %d server %d: a lost segment is not a delayed ACK",
					after.SpuriousTLPs, afterB.SpuriousTLPs, c.tcb.lateACKs, s.tcb.lateACKs)
			}
			p.exchange(c, s, 100, time.Second) // and the connection carries on
		})
	}
}

// A peer that sits on a delayed ACK makes the first probe of a lone segment spurious. It
// reports the probe with a D-SACK block (RFC 2883), checked here on the wire with gopacket;
// the sender learns from it and allows for the delayed ACK while the peer keeps delaying,
// and no longer once the peer's ACKs come in time again.
func TestTCPSpuriousProbeLearnsDelayedACK(t *testing.T) {
	p := newTCPPair(t, TCPConfig{})
	c, s := p.connect(7)
	for range 5 {
		p.exchange(c, s, 100, time.Second)
	}
	// The server does not answer: its stack delays the ACK of each lone segment by 40 ms.
	p.capture, p.captured = true, nil
	seq := c.tcb.sndMax
	c.Write([]byte("no answer"))
	p.run(time.Second, func() bool { return c.tcb.sndUna == seq+9 })
	stB := p.b.Stats().TCP
	if stB.TailLossProbes != 1 || stB.SpuriousTLPs != 1 || c.tcb.lateACKs < lateACKsInflate {
		t.Fatalf("client: probes %d, spurious %d, late ACKs %d; want one spurious probe, learned",
			stB.TailLossProbes, stB.SpuriousTLPs, c.tcb.lateACKs)
	}
	dsack := 0
	for _, f := range p.captured {
		tl, _ := decode(f).Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tl == nil || tl.SrcPort != layers.TCPPort(7) {
			continue
		}
		for _, o := range tl.Options {
			if o.OptionType == layers.TCPOptionKindSACK && len(o.OptionData) >= 8 {
				l := uint32(o.OptionData[0])<<24 | uint32(o.OptionData[1])<<16 | uint32(o.OptionData[2])<<8 | uint32(o.OptionData[3])
				r := uint32(o.OptionData[4])<<24 | uint32(o.OptionData[5])<<16 | uint32(o.OptionData[6])<<8 | uint32(o.OptionData[7])
				if l != seq || r != seq+9 || tl.Ack != seq+9 {
					t.Errorf("SACK block [%d, %d) with ACK %d, want the D-SACK [%d, %d) below ACK %d", l, r, tl.Ack, seq, seq+9, seq+9)
				}
				dsack++
			}
		}
	}
	if dsack != 1 {
		t.Errorf("%d ACKs from the server carry a D-SACK block, want 1", dsack)
	}
	// The next lone segment waits for the delayed ACK without a probe.
	t0 := p.now
	c.Write([]byte("again"))
	p.run(time.Second, func() bool { return c.tcb.sndUna == seq+9+5 })
	if st := p.b.Stats().TCP; st.TailLossProbes != 1 || st.Retransmits != stB.Retransmits {
		t.Errorf("probes %d, retransmits %d→%d after learning; want no more", st.TailLossProbes, stB.Retransmits, st.Retransmits)
	}
	if d := time.Duration(p.now - t0); d < 40*time.Millisecond {
		t.Errorf("acknowledged after %v, want the server's 40 ms delayed ACK", d)
	}
	// Still, a lost lone segment is recovered (by the RTO now, as in Linux).
	p.dropFirstData(1)
	if took := p.exchange(c, s, 100, time.Second); took < 200*time.Millisecond {
		t.Errorf("a lost request took %v while the allowance holds, want the RTO", took)
	}
	// Timely answers take the allowance away again: a few exchanges on, a lost request is
	// probed within milliseconds once more.
	p.fault = nil
	for i := 0; c.tcb.lateACKs >= lateACKsInflate; i++ {
		if i == 10 {
			t.Fatalf("late ACKs %d after %d timely exchanges", c.tcb.lateACKs, i)
		}
		p.exchange(c, s, 100, time.Second)
	}
	p.dropFirstData(1)
	if took := p.exchange(c, s, 100, time.Second); took > 10*time.Millisecond {
		t.Errorf("a lost request took %v after timely exchanges, want a probe", took)
	}
}

// With TLPAlwaysInflate, a lone segment's probe allows for the peer's delayed ACK from the
// start (Linux and gVisor): a lost request waits for the RTO.
func TestTCPAlwaysInflate(t *testing.T) {
	p := newTCPPair(t, TCPConfig{TLPAlwaysInflate: true})
	c, s := p.connect(7)
	for range 5 {
		p.exchange(c, s, 100, time.Second)
	}
	p.dropFirstData(1)
	if took := p.exchange(c, s, 100, time.Second); took < 200*time.Millisecond {
		t.Errorf("a lost request took %v, want the 200 ms RTO", took)
	}
	if st := p.b.Stats().TCP; st.Timeouts != 1 {
		t.Errorf("client timeouts %d, want 1", st.Timeouts)
	}
}
