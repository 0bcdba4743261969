package stack

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

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
