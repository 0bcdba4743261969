package stack

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/netchan/netchan/stack/header"
)

// FuzzTCPEstablished drives one ESTABLISHED connection of our stack (198.18.0.1) from a peer
// the fuzzer plays (198.18.0.2). The handshake is real: cfg chooses who opens (we listen and
// the peer's SYN arrives, or we dial and the peer answers the SYN with a SYN-ACK), the peer's
// SYN options (MSS, window scale, timestamps, SACK-permitted) and our receive buffer (4 KiB,
// no window scale, or 128 KiB, scaled by 2). Then ops is a program of steps:
//
//   - a segment for the connection's 4-tuple: flags, sequence number relative to our RCV.NXT
//     (or absolute), acknowledgment relative to our SND.UNA (or absolute), window, a valid
//     timestamp option around the peer's clock, a SACK option with blocks around our send
//     sequence space, raw option bytes, and a payload;
//   - the clock moves on (up to 2 minutes: RTO, persist, keepalive, TIME_WAIT and FIN timers);
//   - the application writes, reads, closes or half-closes.
//
// After each step it checks what must hold whatever the peer sends: nothing panics; every
// packet gets a verdict; the connection's state is one reachable from the one before
// (RFC 9293's diagram after ESTABLISHED), FIN states only after our close or the peer's FIN;
// the rings stay within their sizes and agree with the sequence numbers (what was read plus
// what waits is RCV.NXT - IRS - 1; what was written and not acknowledged is in the send ring);
// the out-of-order ranges and the SACK scoreboard are sorted, disjoint and inside their
// windows; the window we offer never exceeds the receive ring; every byte the application
// reads is one the peer sent at that stream offset; every frame we send has valid checksums,
// fits the MTU, and carries only bytes the application wrote, at their offsets, with a FIN
// only after the application closed, at the end of its data.
func FuzzTCPEstablished(f *testing.F) {
	const ts, sack, ws, big = cfgPeerTS, cfgPeerSACK, cfgPeerWS, cfgBigRecv
	for _, s := range []struct {
		cfg uint32
		ops []byte
	}{
		// Passive, full options: data in order with a TS, our data acked, FIN; app reads and closes.
		{ts | sack | ws | 7<<8 | 1460<<16, fzOps(
			fzSeg(header.TCPFlagACK|header.TCPFlagPSH, 0, 0, 512, fzTS, 100),
			[]byte{fzOpWrite, 40},
			fzSeg(header.TCPFlagACK, 0, 300, 512, fzTS, 0),
			[]byte{fzOpRead, 200},
			fzSeg(header.TCPFlagACK|header.TCPFlagFIN, 0, 1012, 512, fzTS, 0),
			[]byte{fzOpClose},
			fzSeg(header.TCPFlagACK, 0, 1, 512, fzTS, 0),
			[]byte{fzOpAdvance, 255},
		)},
		// Active, big ring: out-of-order data, a hole filled, SACKed sends, RTO, RST.
		{cfgActive | big | ts | sack | ws | 2<<8 | 1400<<16, fzOps(
			[]byte{fzOpWrite, 200},
			fzSeg(header.TCPFlagACK, 1000, 0, 1000, fzTS|fzSACK, 250),
			fzSeg(header.TCPFlagACK, 0, 0, 1000, fzTS|fzSACK, 1000),
			[]byte{fzOpAdvance, 150},
			fzSeg(header.TCPFlagACK, 1300, 1400, 1000, fzTS, 0),
			[]byte{fzOpRead, 255, fzOpAdvance, 210},
			fzSeg(header.TCPFlagRST, 1300, 0, 0, 0, 0),
		)},
		// No options: zero window from the peer (persist probes), SYN and old data, CloseWrite.
		{0, fzOps(
			[]byte{fzOpWrite, 255},
			fzSeg(header.TCPFlagACK, 0, 0, 0, 0, 0),
			[]byte{fzOpAdvance, 250, fzOpAdvance, 250},
			fzSeg(header.TCPFlagSYN|header.TCPFlagACK, -1, 0, 100, 0, 50),
			fzSeg(header.TCPFlagACK, 0, 1, 65535, 0, 30),
			[]byte{fzOpCloseWrite, fzOpAdvance, 240},
		)},
		// Simultaneous FINs with timestamps going backwards (PAWS).
		{ts | 536<<16, fzOps(
			[]byte{fzOpClose},
			fzSeg(header.TCPFlagACK|header.TCPFlagFIN, 0, 0, 1000, fzTS|fzTSBack, 0),
			fzSeg(header.TCPFlagACK|header.TCPFlagFIN, 0, 0, 1000, fzTS, 0),
			fzSeg(header.TCPFlagACK, 1, 1, 1000, fzTS, 0),
			[]byte{fzOpAdvance, 255},
		)},
	} {
		f.Add(s.cfg, s.ops)
	}
	f.Fuzz(func(t *testing.T, cfg uint32, ops []byte) {
		fz := newFuzzConn(t, cfg)
		r := fzReader{b: ops}
		for n := 0; len(r.b) > 0 && n < 64; n++ {
			fz.op(&r)
			fz.check()
		}
	})
}

// The fuzz connection's configuration bits (FuzzTCPEstablished's cfg): who opens, our
// receive ring, the peer's SYN options (window scale in bits 8-11, MSS in bits 16-31, none
// when 0), keepalive and Nagle.
const (
	cfgActive   = 1 << 0 // we dial; otherwise we listen
	cfgBigRecv  = 1 << 1 // 128 KiB receive ring (window scale 2) instead of 4 KiB
	cfgPeerTS   = 1 << 2
	cfgPeerSACK = 1 << 3
	cfgPeerWS   = 1 << 4
	cfgKeep     = 1 << 5 // keepalive on (1 s idle)
	cfgNagle    = 1 << 6 // Nagle's algorithm on
)

// Ops of the program (the low 3 bits of the op byte; the upper bits of a segment op are fzTS…).
const (
	fzOpSeg        = iota // 0-3: a segment
	fzOpAdvance    = 4
	fzOpWrite      = 5
	fzOpRead       = 6
	fzOpClose      = 7 // fzOpCloseWrite is 7 with bit 3
	fzOpCloseWrite = 7 | 8
)

// Bits of a segment op.
const (
	fzTS     = 1 << 3 // a timestamp option (the peer's clock, its echo of ours)
	fzSACK   = 1 << 4 // a SACK option
	fzSeqAbs = 1 << 5 // absolute sequence number
	fzAckAbs = 1 << 6 // absolute acknowledgment number
	fzTSBack = 1 << 7 // with fzTS: the peer's clock steps back
)

// fzSeg encodes a segment op for the seed corpus: seq and ack relative to RCV.NXT and SND.UNA,
// n payload bytes (above 255, a multiple of 8 of a pattern).
func fzSeg(flags uint8, seq, ack int16, wnd uint16, bits uint8, n int) []byte {
	b := []byte{fzOpSeg | bits, flags}
	b = binary.BigEndian.AppendUint16(b, uint16(seq))
	b = binary.BigEndian.AppendUint16(b, uint16(ack))
	b = binary.BigEndian.AppendUint16(b, wnd)
	if bits&fzTS != 0 {
		b = append(b, 1, 0) // peer clock +1, echo of our latest
	}
	if bits&fzSACK != 0 {
		b = append(b, 0, 0, 100, 0, 200) // one block, 100..300 above SND.UNA
	}
	b = append(b, 0) // raw option bytes
	if n > 255 {
		return append(b, byte(n/8), 1) // long: n/8*8 bytes of a pattern
	}
	b = append(b, byte(n), 0)
	for i := range n {
		b = append(b, byte(i))
	}
	return b
}

func fzOps(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// fzReader reads the fuzzer's program; past its end it reads zeros.
type fzReader struct{ b []byte }

func (r *fzReader) u8() uint8 {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *fzReader) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }
func (r *fzReader) u32() uint32 { return uint32(r.u16())<<16 | uint32(r.u16()) }

func (r *fzReader) bytes(n int) []byte {
	n = min(n, len(r.b))
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

const fzPort, fzPeerPort = 80, 40000

// fuzzConn is our stack with one connection c to the fuzzer's peer, and what the checks
// remember.
type fuzzConn struct {
	t  *testing.T
	hs *harness
	c  *TCPConn
	l  *TCPListener

	peerISS uint32
	peerTS  uint32 // the peer's timestamp clock
	ourTS   uint32 // the latest TSval we sent

	ready     bool   // the handshake is done
	base      uint32 // IRS+1: stream offset 0 of the peer's data
	peerBytes map[uint32]*[4]uint64
	peerFIN   bool // the peer sent a FIN at some point
	read      int  // bytes the application read
	written   int  // bytes the application wrote
	shutWr    bool // Close or CloseWrite
	closed    bool // Close
	state     tcpState
	buf       []byte
}

// newFuzzConn makes the stack and completes the handshake as cfg says.
func newFuzzConn(t *testing.T, cfg uint32) *fuzzConn {
	var syn header.TCPOptions
	if cfg&cfgPeerTS != 0 {
		syn.HasTS, syn.TSVal = true, cfg>>3
	}
	syn.SACKPermitted = cfg&cfgPeerSACK != 0
	if cfg&cfgPeerWS != 0 {
		syn.HasWScale, syn.WScale = true, uint8(cfg>>8&15)
	}
	if mss := uint16(cfg >> 16); mss != 0 {
		syn.HasMSS, syn.MSS = true, mss
	}
	return newFuzzConnSYN(t, cfg, syn)
}

// newFuzzConnSYN is newFuzzConn with the peer's SYN options given.
func newFuzzConnSYN(t *testing.T, cfg uint32, syn header.TCPOptions) *fuzzConn {
	tc := TCPConfig{RecvBuffer: 4096, SendBuffer: 8192}
	if cfg&cfgBigRecv != 0 {
		tc.RecvBuffer = 128 << 10
	}
	if cfg&cfgKeep != 0 {
		tc.KeepAlive, tc.KeepAliveInterval, tc.KeepAliveCount = time.Second, time.Second, 3
	}
	hs := newHarness(t, Config{TCP: tc, StaticARP: []StaticNeighbor{{IP: peerIP, MAC: peerMAC}}}, 0, 1)
	fz := &fuzzConn{t: t, hs: hs, peerISS: cfg*2654435761 + 0xfffff000, peerTS: syn.TSVal, peerBytes: map[uint32]*[4]uint64{},
		buf: make([]byte, 64<<10)}
	var iss uint32
	if cfg&cfgActive != 0 {
		c, err := hs.h.dialAsyncFrom(fzPort, netip.AddrPortFrom(peerIP, fzPeerPort))
		if err != nil {
			t.Fatal(err)
		}
		fz.c = c
		out := fz.stepChecked(nil)
		if len(out) != 1 || header.TCP(out[0][34:]).Flags() != header.TCPFlagSYN {
			t.Fatalf("dial: sent %d frames, want our SYN", len(out))
		}
		iss = header.TCP(out[0][34:]).Seq()
		out = fz.stepChecked(fz.segment(fz.peerISS, iss+1, header.TCPFlagSYN|header.TCPFlagACK, 65535, &syn, nil, nil))
		if len(out) != 1 {
			t.Fatalf("SYN-ACK answered with %d frames, want our ACK", len(out))
		}
	} else {
		l, _, err := hs.h.listenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), fzPort), 0)
		if err != nil {
			t.Fatal(err)
		}
		fz.l = l
		hs.step()
		out := fz.stepChecked(fz.segment(fz.peerISS, 0, header.TCPFlagSYN, 65535, &syn, nil, nil))
		if len(out) != 1 || header.TCP(out[0][34:]).Flags() != header.TCPFlagSYN|header.TCPFlagACK {
			t.Fatalf("SYN answered with %d frames, want our SYN-ACK", len(out))
		}
		iss = header.TCP(out[0][34:]).Seq()
		var o header.TCPOptions
		if syn.HasTS {
			o.HasTS, o.TSVal, o.TSEcr = true, fz.peerTS, fz.ourTS
		}
		fz.stepChecked(fz.segment(fz.peerISS+1, iss+1, header.TCPFlagACK, 65535, &o, nil, nil))
		l.mu.Lock()
		queued := len(l.q)
		l.mu.Unlock()
		if queued != 1 {
			t.Fatalf("the handshake left %d connections to accept, want 1", queued)
		}
		if fz.c, err = l.AcceptTCP(); err != nil {
			t.Fatal(err)
		}
	}
	k := &fz.c.tcb
	if k.state != stEstablished || k.iss != iss || k.irs != fz.peerISS || k.sndUna != iss+1 || k.rcvNxt != fz.peerISS+1 {
		t.Fatalf("after the handshake: state %v iss %d (sent %d) irs %d (peer %d) snd.una %d rcv.nxt %d", k.state, k.iss, iss, k.irs, fz.peerISS, k.sndUna, k.rcvNxt)
	}
	fz.base, fz.state, fz.ready = k.rcvNxt, stEstablished, true
	if cfg&cfgNagle != 0 {
		fz.c.SetNoDelay(false)
	}
	return fz
}

// segment builds a frame from the peer to us on the connection's 4-tuple: the options o
// (encoded as our stack encodes them), then raw option bytes, cut to 40 bytes and padded.
func (fz *fuzzConn) segment(seq, ack uint32, flags uint8, wnd uint16, o *header.TCPOptions, raw, payload []byte) []byte {
	var opts [header.TCPMaxOptionsLen + 64]byte
	n := 0
	if o != nil {
		n = header.EncodeTCPOptions(opts[:], o)
	}
	n += copy(opts[n:], raw)
	n = min(n, header.TCPMaxOptionsLen)
	for n%4 != 0 {
		opts[n] = header.TCPOptionEOL
		n++
	}
	hdr := header.TCPMinLen + n
	payload = payload[:min(len(payload), 1500-header.IPv4MinLen-hdr)]
	f := make([]byte, header.EthernetLen+header.IPv4MinLen+hdr+len(payload))
	header.EncodeEthernet(f, header.MAC(ourMAC), header.MAC(peerMAC), header.EtherTypeIPv4)
	header.EncodeIPv4(f[14:], header.IPv4Fields{TotalLength: len(f) - 14, TTL: 64, Protocol: header.ProtoTCP, Src: peerIP, Dst: ourIP})
	tc := header.EncodeTCP(f[34:], header.TCPFields{SrcPort: fzPeerPort, DstPort: fzPort, Seq: seq, Ack: ack, Flags: flags, Window: wnd}, hdr-header.TCPMinLen+len(payload))
	copy(tc[header.TCPMinLen:], opts[:n])
	tc[12] = uint8(hdr/4) << 4
	copy(tc[hdr:], payload)
	tc.FixChecksum(peerIP, ourIP)

	// Remember what the peer sent at each stream offset (a SYN takes the first sequence number).
	start := seq
	if flags&header.TCPFlagSYN != 0 {
		start++
	}
	for i, v := range payload {
		off := start + uint32(i) - fz.base
		if !fz.ready || off >= 1<<20 {
			continue
		}
		set := fz.peerBytes[off]
		if set == nil {
			set = new([4]uint64)
			fz.peerBytes[off] = set
		}
		set[v>>6] |= 1 << (v & 63)
	}
	if flags&header.TCPFlagFIN != 0 {
		fz.peerFIN = true
	}
	return f
}

// op runs one step of the program.
func (fz *fuzzConn) op(r *fzReader) {
	op := r.u8()
	k := &fz.c.tcb
	switch op & 7 {
	case 0, 1, 2, 3:
		flags := r.u8()
		seq := k.rcvNxt + uint32(int16(r.u16()))
		if op&fzSeqAbs != 0 {
			seq = r.u32()
		}
		ack := k.sndUna + uint32(int16(r.u16()))
		if op&fzAckAbs != 0 {
			ack = r.u32()
		}
		wnd := r.u16()
		var o header.TCPOptions
		if op&fzTS != 0 {
			d := uint32(r.u8())
			if op&fzTSBack != 0 {
				fz.peerTS -= d
			} else {
				fz.peerTS += d
			}
			o.HasTS, o.TSVal, o.TSEcr = true, fz.peerTS, fz.ourTS-uint32(r.u8())
		}
		if op&fzSACK != 0 {
			o.NumSACK = int(r.u8()%3) + 1
			for i := range o.NumSACK {
				lo := k.sndUna + uint32(int16(r.u16()))
				o.SACK[i] = [2]uint32{lo, lo + uint32(r.u16())}
			}
		}
		raw := r.bytes(int(r.u8() % 41))
		n, long := int(r.u8()), r.u8()
		var payload []byte
		if long&1 != 0 { // a long payload of a pattern
			payload = make([]byte, n*8)
			for i := range payload {
				payload[i] = long + byte(i)
			}
		} else {
			payload = append([]byte(nil), r.bytes(n)...)
		}
		fz.stepChecked(fz.segment(seq, ack, flags, wnd, &o, raw, payload))
	case fzOpAdvance:
		d := time.Duration(r.u8())
		if d < 200 {
			d *= time.Millisecond
		} else {
			d = (d - 199) * 2 * time.Second
		}
		fz.hs.Advance(d)
		fz.stepChecked(nil)
	case fzOpWrite:
		if fz.closed {
			break
		}
		n := (int(r.u8()) + 1) * 32
		p := make([]byte, n)
		for i := range p {
			p[i] = fzAppByte(fz.written + i)
		}
		if w, err := fz.c.TryWrite(p); err == nil {
			fz.written += w
		} else if w != 0 {
			fz.t.Fatalf("TryWrite wrote %d bytes and failed: %v", w, err)
		}
		fz.stepChecked(nil)
	case fzOpRead:
		if fz.closed {
			break
		}
		n, _ := fz.c.TryRead(fz.buf[:int(r.u8())*256+1])
		for i, v := range fz.buf[:n] {
			off := uint32(fz.read + i)
			if set := fz.peerBytes[off]; set == nil || set[v>>6]&(1<<(v&63)) == 0 {
				fz.t.Fatalf("the application read %#x at stream offset %d: the peer never sent it there", v, off)
			}
		}
		fz.read += n
		fz.stepChecked(nil)
	case fzOpClose:
		if op&8 != 0 {
			fz.c.CloseWrite()
		} else {
			fz.c.Close()
			fz.closed = true
		}
		fz.shutWr = true
		fz.stepChecked(nil)
	}
}

// fzAppByte is the application's byte at offset i of what it writes.
func fzAppByte(i int) byte { return byte(i*7 + i>>8 + 1) }

// stepChecked runs one pass of the stack over frame (none if nil), 100 µs after the last,
// and checks every frame it sends.
func (fz *fuzzConn) stepChecked(frame []byte) [][]byte {
	t := fz.t
	fz.hs.Advance(100 * time.Microsecond)
	var out [][]byte
	if frame != nil {
		out = fz.hs.step(frame)
	} else {
		out = fz.hs.step()
	}
	for _, f := range out {
		if len(f) > header.EthernetLen+1500 {
			t.Fatalf("sent a %d-byte frame, above the MTU", len(f))
		}
		ip, e := header.ParseIPv4(f[header.EthernetLen:])
		if e != header.IPv4OK || ip.Protocol() != header.ProtoTCP || ip.Src() != ourIP || ip.Dst() != peerIP {
			t.Fatalf("sent a frame that is not TCP from us to the peer (%v): % x", e, f)
		}
		tc, ok := header.ParseTCP(ip.Payload())
		if !ok || !tc.ChecksumValid(ourIP, peerIP) || tc.SrcPort() != fzPort || tc.DstPort() != fzPeerPort {
			t.Fatalf("sent a bad TCP segment: % x", f)
		}
		var o header.TCPOptions
		if !header.ParseTCPOptions(tc.Options(), &o) {
			t.Fatalf("sent malformed TCP options % x", tc.Options())
		}
		if o.HasTS {
			fz.ourTS = o.TSVal
		}
		if fz.c == nil {
			continue // the handshake
		}
		k := &fz.c.tcb
		data := tc.Payload()
		off := int(int32(tc.Seq() - (k.iss + 1)))
		fl := tc.Flags()
		if len(data) > 0 {
			if fl&(header.TCPFlagSYN|header.TCPFlagRST) != 0 {
				t.Fatalf("sent %d bytes of data with flags %#x", len(data), fl)
			}
			if off < 0 || off+len(data) > fz.written {
				t.Fatalf("sent stream bytes %d to %d; the application wrote %d", off, off+len(data), fz.written)
			}
			for i, v := range data {
				if v != fzAppByte(off+i) {
					t.Fatalf("sent %#x at stream offset %d; the application wrote %#x there", v, off+i, fzAppByte(off+i))
				}
			}
		}
		if fl&header.TCPFlagFIN != 0 && (!fz.shutWr || off+len(data) != fz.written) {
			t.Fatalf("sent a FIN at stream offset %d (closed %v, %d bytes written)", off+len(data), fz.shutWr, fz.written)
		}
	}
	return out
}

// fzReach is what each state of a synchronized connection may become (RFC 9293's diagram,
// transitively).
var fzReach = [...][]tcpState{
	stEstablished: {stEstablished, stFinWait1, stFinWait2, stCloseWait, stClosing, stLastAck, stTimeWait, stClosed},
	stFinWait1:    {stFinWait1, stFinWait2, stClosing, stTimeWait, stClosed},
	stFinWait2:    {stFinWait2, stTimeWait, stClosed},
	stCloseWait:   {stCloseWait, stLastAck, stClosed},
	stClosing:     {stClosing, stTimeWait, stClosed},
	stLastAck:     {stLastAck, stClosed},
	stTimeWait:    {stTimeWait, stClosed},
	stClosed:      {stClosed},
}

// check tests the connection's invariants after a step.
func (fz *fuzzConn) check() {
	t := fz.t
	c := fz.c
	k := &c.tcb
	if k.state > stTimeWait {
		t.Fatalf("state %d", k.state)
	}
	ok := false
	for _, s := range fzReach[fz.state] {
		ok = ok || s == k.state
	}
	if !ok {
		t.Fatalf("state went from %v to %v", fz.state, k.state)
	}
	fz.state = k.state
	if (k.idx < 0) != (k.state == stClosed) {
		t.Fatalf("state %v with slot %d", k.state, k.idx)
	}
	switch k.state {
	case stFinWait1, stFinWait2, stClosing, stLastAck, stTimeWait:
		if !fz.shutWr || !k.finSent {
			t.Fatalf("%v, but the application did not close (%v) or no FIN went out (%v)", k.state, fz.shutWr, k.finSent)
		}
	}
	switch k.state {
	case stCloseWait, stClosing, stLastAck, stTimeWait:
		if !fz.peerFIN || !k.finRcvd {
			t.Fatalf("%v, but the peer sent no FIN (%v) or none was taken (%v)", k.state, fz.peerFIN, k.finRcvd)
		}
	}
	if k.finRcvd && !fz.peerFIN {
		t.Fatal("a FIN was taken that the peer never sent")
	}

	c.mu.Lock()
	rlen, rhead, rsize, slen, shead, ssize := c.rlen, c.rhead, len(c.rbuf), c.slen, c.shead, len(c.sbuf)
	c.mu.Unlock()
	if rsize == 0 || ssize == 0 {
		// releaseBuffers: only in TIME_WAIT (or after it, gone) and closed by its user.
		if k.state != stTimeWait && k.idx >= 0 || !c.userClosed.Load() || rsize != 0 || ssize != 0 || rlen != 0 || rhead != 0 || slen != 0 || shead != 0 {
			t.Fatalf("rings released (receive %d+%d of %d, send %d+%d of %d) in %v, closed by the user %v", rhead, rlen, rsize, shead, slen, ssize, k.state, c.userClosed.Load())
		}
		return
	}
	if rlen < 0 || rlen > rsize || rhead < 0 || rhead >= rsize || slen < 0 || slen > ssize || shead < 0 || shead >= ssize {
		t.Fatalf("receive ring %d+%d of %d, send ring %d+%d of %d", rhead, rlen, rsize, shead, slen, ssize)
	}
	if k.idx < 0 {
		return // gone: its sequence state is history
	}

	// Receiving.
	fin := uint32(0)
	if k.finRcvd {
		fin = 1
	}
	if got := k.rcvNxt - fz.base - fin; int64(got) != int64(fz.read+rlen) {
		t.Fatalf("RCV.NXT is %d bytes into the peer's stream; %d were read and %d wait", got, fz.read, rlen)
	}
	if w := int32(k.rcvAdv - k.rcvNxt); w < -int32(fin) || int(w) > rsize {
		t.Fatalf("the window we offered runs %d bytes past RCV.NXT, the receive ring holds %d", w, rsize)
	}
	if k.nooo > fz.hs.h.tcp.cfg.OOORanges {
		t.Fatalf("%d out-of-order ranges, the limit is %d", k.nooo, fz.hs.h.tcp.cfg.OOORanges)
	}
	prev := k.rcvNxt
	for i, rg := range k.ooo[:k.nooo] {
		if !seqLT(prev, rg.start) || !seqLT(rg.start, rg.end) || int(rg.end-k.rcvNxt) > rsize-rlen {
			t.Fatalf("out-of-order range %d [%d, %d) (RCV.NXT %d, ring room %d): %v", i, rg.start, rg.end, k.rcvNxt, rsize-rlen, k.ooo[:k.nooo])
		}
		prev = rg.end
	}
	if k.finRcvd && k.nooo != 0 {
		t.Fatalf("FIN taken with %d out-of-order ranges above it", k.nooo)
	}

	// Sending.
	if !seqLEQ(k.sndUna, k.sndNxt) || !seqLEQ(k.sndNxt, k.sndMax) || !seqLEQ(k.sndBase, k.sndUna) {
		t.Fatalf("SND.UNA %d, SND.NXT %d, SND.MAX %d, ring base %d out of order", k.sndUna, k.sndNxt, k.sndMax, k.sndBase)
	}
	finSent := uint32(0)
	if k.finSent {
		finSent = 1
	}
	if end := k.sndMax - (k.iss + 1); int64(end) > int64(fz.written)+int64(finSent) {
		t.Fatalf("SND.MAX is %d into our stream; the application wrote %d (FIN sent %v)", end, fz.written, k.finSent)
	}
	if freed := int(k.sndBase - (k.iss + 1)); freed+slen != fz.written {
		t.Fatalf("%d bytes acknowledged and freed, %d in the send ring, %d written", freed, slen, fz.written)
	}
	if k.finSent && k.finSeq != k.iss+1+uint32(fz.written) {
		t.Fatalf("our FIN at %d, after %d bytes written from %d", k.finSeq, fz.written, k.iss+1)
	}
	if k.nsacked > maxSACKBoard {
		t.Fatalf("%d SACK blocks", k.nsacked)
	}
	prev = k.sndUna
	for i, rg := range k.sacked[:k.nsacked] {
		if (i > 0 && !seqLT(prev, rg.start)) || !seqLEQ(prev, rg.start) || !seqLT(rg.start, rg.end) || !seqLEQ(rg.end, k.sndMax) {
			t.Fatalf("SACK block %d [%d, %d) (SND.UNA %d, SND.MAX %d): %v", i, rg.start, rg.end, k.sndUna, k.sndMax, k.sacked[:k.nsacked])
		}
		prev = rg.end
	}
	if k.mss == 0 || k.mss > 1460 {
		t.Fatalf("MSS %d", k.mss)
	}
}

// A peer's MSS option below 48 is raised to 48 (Linux's tcp_min_snd_mss). FuzzTCPEstablished
// found that an MSS below 12 with timestamps made the payload per segment (MSS less the
// 12-byte option) wrap around to 4 GiB, and one of 12 made it 0: either way the connection
// never sent a byte (testdata/fuzz/FuzzTCPEstablished/tiny-mss).
func TestTCPTinyPeerMSS(t *testing.T) {
	for _, mss := range []uint16{0, 1, 11, 12, 13, 47, 48, 100} {
		for _, cfg := range []uint32{0, cfgPeerTS, cfgActive, cfgActive | cfgPeerTS} {
			fz := newFuzzConnSYN(t, cfg, header.TCPOptions{HasMSS: true, MSS: mss, HasTS: cfg&cfgPeerTS != 0})
			k := &fz.c.tcb
			want := max(uint32(mss), minPeerMSS)
			if k.tsOK {
				want -= 12
			}
			if k.mss != want {
				t.Errorf("peer MSS %d, timestamps %v: payload per segment %d, want %d", mss, k.tsOK, k.mss, want)
			}
			p := make([]byte, 1000)
			for i := range p {
				p[i] = fzAppByte(i)
			}
			if w, err := fz.c.TryWrite(p); w != 1000 || err != nil {
				t.Fatalf("write: %d %v", w, err)
			}
			fz.written = 1000
			sent := 0
			for _, f := range fz.stepChecked(nil) {
				n := len(header.TCP(f[34:]).Payload())
				if n > int(k.mss) {
					t.Errorf("peer MSS %d, timestamps %v: a segment of %d bytes", mss, k.tsOK, n)
				}
				sent += n
			}
			if sent == 0 {
				t.Errorf("peer MSS %d, timestamps %v: no data sent", mss, k.tsOK)
			}
			fz.check()
		}
	}
}

// Out-of-order data above the peer's FIN is dropped when the FIN is taken (as Linux does):
// FuzzTCPEstablished found it kept in the out-of-order ranges, and SACKed in every ACK after
// the FIN (testdata/fuzz/FuzzTCPEstablished/ooo-above-fin).
func TestTCPFINDropsOutOfOrderAbove(t *testing.T) {
	fz := newFuzzConn(t, cfgPeerSACK|cfgPeerTS)
	r := fzReader{b: fzOps(
		fzSeg(header.TCPFlagACK, 1000, 0, 1000, fzTS, 100),
		fzSeg(header.TCPFlagACK|header.TCPFlagFIN, 0, 0, 1000, fzTS, 0),
	)}
	fz.op(&r)
	if k := &fz.c.tcb; k.nooo != 1 {
		t.Fatalf("%d out-of-order ranges after data above RCV.NXT, want 1", k.nooo)
	}
	fz.check()
	fz.op(&r)
	fz.check()
	k := &fz.c.tcb
	if k.state != stCloseWait || k.nooo != 0 {
		t.Fatalf("after the FIN: %v with %d out-of-order ranges, want CLOSE_WAIT and none", k.state, k.nooo)
	}
	for _, f := range fz.hs.sent {
		var o header.TCPOptions
		if header.ParseTCPOptions(header.TCP(f[34:]).Options(), &o); o.NumSACK != 0 {
			t.Fatalf("the ACK of the FIN SACKs %v", o.SACK[:o.NumSACK])
		}
	}
}

// A data segment carries only the SACK blocks that keep it within the MTU; the others go
// in a pure ACK after it. FuzzTCPEstablished found full-sized segments sent with SACK blocks,
// 12 to 28 bytes above the MTU (testdata/fuzz/FuzzTCPEstablished/sack-above-mtu): a link
// drops those, and their retransmissions too while the peer's data has a hole.
func TestTCPDataWithSACKFitsMTU(t *testing.T) {
	for _, cfg := range []uint32{cfgPeerSACK | cfgPeerTS | cfgBigRecv, cfgPeerSACK | cfgBigRecv | cfgActive} {
		fz := newFuzzConn(t, cfg)
		// Three out-of-order ranges from the peer: three SACK blocks in each of our ACKs.
		r := fzReader{b: fzOps(
			fzSeg(header.TCPFlagACK, 1000, 0, 65535, fzTS, 100),
			fzSeg(header.TCPFlagACK, 2000, 0, 65535, fzTS, 100),
			fzSeg(header.TCPFlagACK, 3000, 0, 65535, fzTS, 100),
			[]byte{fzOpWrite, 255},
		)}
		for len(r.b) > 0 {
			fz.op(&r)
			fz.check()
		}
		full, sackACK := 0, false
		for _, f := range fz.hs.sent {
			tc := header.TCP(f[34:])
			var o header.TCPOptions
			header.ParseTCPOptions(tc.Options(), &o)
			if len(tc.Payload()) == int(fz.c.tcb.mss) {
				full++
			}
			if len(tc.Payload()) == 0 && o.NumSACK == 3 {
				sackACK = true
			}
		}
		if full == 0 || !sackACK {
			t.Errorf("cfg %#x: %d full-sized segments and a pure ACK with 3 SACK blocks %v; want both", cfg, full, sackACK)
		}
	}
}
