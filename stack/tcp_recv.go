package stack

import (
	"time"

	"github.com/netchan/netchan/stack/header"
)

// tcpAck processes the ACK field of an acceptable segment (RFC 9293 §3.10.7.4, fifth step);
// false means the rest of the segment is to be ignored.
func (s *Stack) tcpAck(c *TCPConn, t header.TCP, seq, ack uint32, o *header.TCPOptions, dataLen int, now int64) bool {
	k := &c.tcb
	if seqGT(ack, k.sndMax) {
		k.ackNow = true
		s.tcpActivate(c)
		return false
	}
	if seqLT(ack, k.sndUna) && k.sndUna-ack > max(k.maxSndWnd, 1<<16) {
		s.challengeACK(c, now) // RFC 5961 §5: too old
		return false
	}
	wnd := k.segWnd(t)
	newSACK := false
	if k.sackOK && o.NumSACK > 0 {
		dsack := seqLEQ(o.SACK[0][1], ack) // RFC 2883: a first block below the ACK reports a duplicate
		if dsack && k.tlpOut && k.tlpLone && seqLT(o.SACK[0][0], k.tlpRtxHi) && seqGT(o.SACK[0][1], k.tlpRtxLo) &&
			seq == k.rcvNxtAtSend {
			// The probe of a lone segment arrived as a duplicate, and the peer has sent no data
			// since before the original went out (had the original's ACK been lost riding on a
			// response, seq would lie beyond): the peer was sitting on a delayed ACK.
			k.noteLoneACK(true)
			s.h.tcp.ctr.SpuriousTLPs.Add(1)
		}
		newSACK = s.tcpSACK(c, o, dsack)
	}
	if seqGT(ack, k.sndUna) {
		s.tcpNewAck(c, ack, o, now)
	} else if ack == k.sndUna && k.sndMax != k.sndUna && k.persistAt == 0 && (newSACK ||
		(dataLen == 0 && wnd == k.sndWnd && t.Flags()&header.TCPFlagFIN == 0 && k.sndWnd != 0)) {
		// A duplicate ACK (RFC 5681 §2), or one with new SACK information (RFC 6675 §2).
		s.tcpDupAck(c, now)
	}
	if newSACK {
		// Loss without three duplicate ACKs: three segments' worth SACKed above sndUna
		// (RFC 6675 IsLost), all but one of fewer than four segments out SACKed (early
		// retransmit, RFC 5827), or the tail loss probe SACKed above a hole (RFC 8985 §7.4).
		if !k.inRecovery && seqLT(k.sndUna, k.sndMax) && seqGEQ(k.sndUna, k.recover) && k.sackNew &&
			(k.sackedTotal() >= 3*k.mss || k.earlyRetransmit() || (k.tlpOut && seqGEQ(k.sackNewHi, k.tlpHigh))) {
			s.tcpEnterRecovery(c, now)
		}
		s.tcpLostRtx(c)
	}
	if seqLT(k.sndWl1, seq) || (k.sndWl1 == seq && seqLEQ(k.sndWl2, ack)) {
		if wnd > k.sndWnd {
			s.tcpActivate(c)
		}
		k.sndWnd, k.sndWl1, k.sndWl2 = wnd, seq, ack
		k.maxSndWnd = max(k.maxSndWnd, wnd)
		if wnd > 0 && k.persistAt != 0 {
			k.persistAt, k.rtt.backoff = 0, 0
			if k.sndMax != k.sndUna {
				k.rtoAt = now + k.rtt.timeout()
				s.tcpArm(k.rtoAt)
			}
		}
	}
	if k.finSent && seqGT(k.sndUna, k.finSeq) {
		switch k.state {
		case stFinWait1:
			k.state = stFinWait2
			if c.userClosed.Load() {
				k.finAt = now + int64(s.h.tcp.cfg.FinTimeout)
				s.tcpArm(k.finAt)
			}
			c.publishState()
		case stClosing:
			s.tcpTimeWait(c, now)
		case stLastAck:
			s.tcpFree(c)
			return false
		}
	}
	return true
}

// tcpNewAck handles an ACK that acknowledges new data: RTT, the send ring, congestion control
// (RFC 5681, RFC 6582) and the retransmission timer (RFC 6298).
func (s *Stack) tcpNewAck(c *TCPConn, ack uint32, o *header.TCPOptions, now int64) {
	k := &c.tcb
	acked := ack - k.sndUna
	if k.rtoUndo {
		k.rtoUndo = false
		if k.tsOK && o.HasTS && o.TSEcr != 0 && seqLT(o.TSEcr, k.rtoTS) {
			// Eifel detection (RFC 3522): this ACK echoes a segment sent before the RTO, so the
			// originals arrived and the RTO was spurious. Response (RFC 4015): restore the
			// window and carry on with new data instead of going back over what arrived.
			s.h.tcp.ctr.SpuriousRTOs.Add(1)
			k.cc.undo(now)
			k.sndNxt = k.sndMax
			k.recover = ack
			k.rtt.backoff = 0
		}
	}
	// RTT samples: a timed segment gives one to the nanosecond (Karn's rule: the timing stops
	// when anything is retransmitted); the timestamp echo gives one per ACK of new data, also
	// during recovery, but in 1 ms ticks, so it is used only when it is 2 ticks or more. Taking
	// every echo, as before, pulled SRTT to 0 on sub-millisecond paths (veth, LAN), where each
	// echo is 0 or 1 tick.
	var rtt int64
	if k.rttTiming && seqGT(ack, k.rttSeq) {
		rtt = now - k.rttTime
		k.rtt.sample(rtt)
		k.rttTiming = false
	} else if k.tsOK && o.HasTS && o.TSEcr != 0 && seqGT(ack, k.sndUna) {
		if r := int64(uint32(now/tsHz)+k.tsOffset-o.TSEcr) * tsHz; r >= 2*tsHz && r < int64(time.Minute) {
			rtt = r
			k.rtt.sample(r)
		}
	}
	if seqGT(ack, k.sndBase) {
		n := ack - k.sndBase
		if k.finSent && seqGT(ack, k.finSeq) {
			n--
		}
		if n > 0 {
			c.freeSend(int(n))
			k.sndBase += n
		}
	}
	k.sndUna = ack
	if seqLT(k.sndNxt, ack) {
		k.sndNxt = ack
	}
	if seqLT(k.rtxNext, ack) {
		k.rtxNext = ack
	}
	k.pruneSACK()
	k.retries = 0
	flight := k.sndMax - k.sndUna
	if k.inRecovery && seqGEQ(ack, k.recover) { // full ACK
		k.cc.exitRecovery(flight, now)
		k.inRecovery = false
		k.dupAcks = 0
	} else {
		if k.inRecovery { // partial ACK (RFC 6582 §3.2 step 5)
			if k.nsacked == 0 || !k.sackOK {
				k.rtxNow = true
			}
		} else {
			k.dupAcks = 0
		}
		k.cc.onAck(ccAck{acked: acked, flight: flight, ack: ack, sndMax: k.sndMax, rtt: rtt, srtt: k.rtt.srtt, now: now, inRecovery: k.inRecovery})
	}
	if k.loneAt != 0 && k.sndUna == k.sndMax {
		k.tcpLoneAcked(now)
	}
	k.tlpOut = false
	if k.sndUna == k.sndMax {
		k.rtoAt, k.tlpAt = 0, 0
	} else if k.persistAt == 0 {
		k.rtoAt = now + k.rtt.timeout()
		s.tcpArm(k.rtoAt)
		s.tcpArmTLP(c, now)
	}
	c.publishStats()
	s.tcpActivate(c)
}

// tcpArmTLP (re)starts the tail loss probe timer (RFC 8985 §7.2): two smoothed RTTs, at
// least 2 ms (Linux adds two jiffies); never at or after the RTO. With one segment out, RFC
// 8985 lets the sender add the peer's worst-case delayed-ACK time (TLPMaxAckDelay), and
// Linux and gVisor always do, which leaves a lost request or response to the RTO (200 ms or
// more). We add it only while the peer is seen delaying ACKs (lateACKsInflate); the price
// of not knowing is a spurious probe now and then, which the peer's D-SACK reports.
func (s *Stack) tcpArmTLP(c *TCPConn, now int64) {
	k := &c.tcb
	k.tlpAt = 0
	if !k.sackOK || !k.rtt.ok || k.inRecovery || seqGT(k.recover, k.sndUna) || k.tlpOut || k.sndUna == k.sndMax || k.rtoAt == 0 {
		k.loneAt = 0
		return
	}
	cfg := &s.h.tcp.cfg
	pto := max(2*k.rtt.srtt, int64(2*time.Millisecond))
	if k.sndMax-k.sndUna > k.mss {
		k.loneAt = 0
	} else {
		if k.loneAt == 0 {
			k.loneAt, k.lonePTO = now, pto
		}
		if k.lateACKs >= lateACKsInflate || cfg.TLPAlwaysInflate {
			pto += int64(cfg.TLPMaxAckDelay)
		}
	}
	if at := now + pto; at < k.rtoAt {
		k.tlpAt = at
		s.tcpArm(at)
	}
}

// lateACKsInflate is the share of late ACKs of lone segments (/256) at which their probes
// allow for the peer's delayed ACK: one in eight. A peer that delays every ACK gets there
// after one spurious probe and stays; one whose answers are late now and then (a slow
// request, a descheduled server) costs a spurious probe each time, and the next timely ACK
// takes the allowance away again.
const lateACKsInflate = 32

// tcpLoneAcked updates lateACKs when a flight that ended as one segment is acknowledged:
// late if the ACK came after the uninflated probe time. A flight that was probed or
// retransmitted says nothing (a spurious probe was counted when its D-SACK came; an RTO or
// fast retransmit clears loneAt).
func (k *tcb) tcpLoneAcked(now int64) {
	if !k.tlpOut {
		k.noteLoneACK(now-k.loneAt > k.lonePTO)
	}
	k.loneAt = 0
}

// noteLoneACK moves lateACKs an eighth of the way towards 256 (late) or 0 (timely).
func (k *tcb) noteLoneACK(late bool) {
	l := int(k.lateACKs)
	if late {
		l += (256 - l) / 8
	} else {
		l -= l / 8
	}
	k.lateACKs = uint8(min(l, 255))
}

// tcpDupAck counts duplicate ACKs: the third starts fast retransmit and NewReno recovery
// (RFC 5681 §3.2, RFC 6582); with SACK, three segments' worth SACKed above the hole does too
// (RFC 6675 §5).
func (s *Stack) tcpDupAck(c *TCPConn, now int64) {
	k := &c.tcb
	k.dupAcks++
	k.cc.onDupAck(k.inRecovery)
	if k.inRecovery {
		s.tcpActivate(c)
		return
	}
	if (k.dupAcks >= 3 || (k.sackOK && k.sackedTotal() >= 3*k.mss)) && seqGEQ(k.sndUna, k.recover) {
		s.tcpEnterRecovery(c, now)
	}
}

// earlyRetransmit is RFC 5827's lowered threshold: with fewer than four segments out and
// the window too small for another one (so no more duplicate ACKs can come), a hole below
// SACKs for all the others is a loss. (Unsent data that the window would allow is not
// checked: then the tail loss probe does the job.)
func (k *tcb) earlyRetransmit() bool {
	flight := k.sndMax - k.sndUna
	oseg := (flight + k.mss - 1) / k.mss
	sacked := (k.sackedTotal() + k.mss - 1) / k.mss
	return oseg >= 2 && oseg < 4 && sacked >= oseg-1 && flight+k.mss > min(k.cc.cwnd, k.sndWnd) &&
		k.skipSACKed(k.sndUna) == k.sndUna
}

// tcpEnterRecovery starts fast retransmit and fast recovery (RFC 5681 §3.2, RFC 6582,
// RFC 6675 §5).
func (s *Stack) tcpEnterRecovery(c *TCPConn, now int64) {
	k := &c.tcb
	k.cc.enterRecovery(k.sndMax-k.sndUna, now)
	k.recover = k.sndMax
	k.inRecovery = true
	k.rtxNow = true
	k.rtxNext = k.sndUna
	k.lostLo, k.lostHi, k.lostGuard = k.sndUna, k.sndUna, k.sndUna
	k.tlpAt, k.tlpNow, k.tlpOut, k.loneAt = 0, false, false, 0
	k.rttTiming = false
	s.h.tcp.ctr.FastRetransmits.Add(1)
	s.tcpActivate(c)
}

// tcpSACK adds the peer's SACK blocks to the scoreboard (RFC 2018, RFC 6675).
func (s *Stack) tcpSACK(c *TCPConn, o *header.TCPOptions, dsack bool) bool {
	k := &c.tcb
	grew := false
	k.sackNew = false
	j := 0
	if dsack {
		j = 1 // a D-SACK block reports what arrived twice, not what to skip
	}
	for ; j < o.NumSACK; j++ {
		l, r := o.SACK[j][0], o.SACK[j][1]
		if !seqLT(l, r) || seqLEQ(r, k.sndUna) || seqGT(r, k.sndMax) {
			continue
		}
		if seqLT(l, k.sndUna) {
			l = k.sndUna
		}
		if lo, hi, ok := k.uncovered(l, r); ok {
			if !k.sackNew {
				k.sackNew, k.sackNewLo, k.sackNewHi = true, lo, hi
			} else {
				k.sackNewLo, k.sackNewHi = min32seq(k.sackNewLo, lo), seqMax(k.sackNewHi, hi)
			}
		}
		before := k.sackedTotal()
		k.nsacked = addRange(k.sacked[:], k.nsacked, l, r, nil)
		if after := k.sackedTotal(); after > before {
			k.sackedBytes += uint64(after - before)
			grew = true
		}
	}
	return grew
}

// uncovered reports the lowest and highest bytes of [l, r) that the scoreboard does not hold
// (hi is exclusive); false if it holds all of them.
func (k *tcb) uncovered(l, r uint32) (lo, hi uint32, ok bool) {
	cur := l
	for i := 0; i < k.nsacked && seqLT(cur, r); i++ {
		rs := k.sacked[i]
		if seqLEQ(rs.end, cur) {
			continue
		}
		if seqGT(rs.start, cur) {
			e := min32seq(rs.start, r)
			if !ok {
				lo, ok = cur, true
			}
			hi = e
		}
		cur = seqMax(cur, rs.end)
	}
	if seqLT(cur, r) {
		if !ok {
			lo, ok = cur, true
		}
		hi = r
	}
	return lo, hi, ok
}

// tcpLostRtx detects lost retransmissions from new SACK information, without waiting for
// the RTO. Retransmissions go out in sequence order (the SACK recovery sweep at rtxNext, or
// the go-back sweep after an RTO at sndNxt), so when the peer SACKs
//   - a byte at or above rtxMark (sent for the first time after the latest retransmission),
//     every hole below the sweep was retransmitted before it and is lost (the idea of RFC 8985's
//     RACK, ordered by sequence instead of by time), or
//   - a byte below the sweep (a retransmission), the holes below it were retransmitted before
//     it in this sweep and are lost,
//
// and those holes go again, once each per detection (lostLo to lostHi), as the first thing
// the next output pass sends. Reordering makes this retransmit more, never less.
func (s *Stack) tcpLostRtx(c *TCPConn) {
	k := &c.tcb
	if !k.sackNew {
		return
	}
	k.sackNew = false
	var sweep uint32
	switch {
	case k.inRecovery && k.sackOK:
		sweep = k.rtxNext
	case !k.inRecovery && seqGT(k.recover, k.sndUna): // after an RTO
		sweep = min32seq(k.sndNxt, k.recover)
	default:
		return
	}
	if !seqGT(sweep, k.sndUna) {
		return
	}
	var lo, end uint32
	switch {
	case seqGT(k.sackNewHi, k.rtxMark):
		lo, end = k.sndUna, sweep
	case seqLT(k.sackNewLo, sweep):
		lo, end = seqMax(k.sndUna, k.lostGuard), k.sackNewLo
	default:
		return
	}
	if !seqLT(lo, end) || !seqLT(k.skipSACKed(lo), end) {
		return
	}
	if seqLT(k.lostLo, k.lostHi) {
		lo, end = min32seq(lo, seqMax(k.lostLo, k.sndUna)), seqMax(end, k.lostHi)
	}
	k.lostLo, k.lostHi = lo, end
	k.lostGuard = seqMax(k.lostGuard, end)
	s.h.tcp.ctr.LostRetransmits.Add(1)
	s.tcpActivate(c)
}

// skipSACKed returns the first byte at or after seq that the scoreboard does not hold.
func (k *tcb) skipSACKed(seq uint32) uint32 {
	for {
		n := k.sackedAt(seq)
		if n == seq {
			return seq
		}
		seq = n
	}
}

// addRange merges [l, r) into the sorted, disjoint ranges rs[:n] and returns the new count;
// when rs is full the range is dropped (false in *ok).
func addRange(rs []seqRange, n int, l, r uint32, idx *int) int {
	i := 0
	for i < n && seqLT(rs[i].end, l) {
		i++
	}
	j := i
	for j < n && seqLEQ(rs[j].start, r) {
		l = min32seq(l, rs[j].start)
		r = seqMax(r, rs[j].end)
		j++
	}
	if j == i { // insert
		if n == len(rs) {
			if idx != nil {
				*idx = -1
			}
			return n
		}
		copy(rs[i+1:n+1], rs[i:n])
		rs[i] = seqRange{l, r}
		if idx != nil {
			*idx = i
		}
		return n + 1
	}
	rs[i] = seqRange{l, r}
	copy(rs[i+1:], rs[j:n])
	if idx != nil {
		*idx = i
	}
	return n - (j - i - 1)
}

func min32seq(a, b uint32) uint32 {
	if seqLT(a, b) {
		return a
	}
	return b
}

func (k *tcb) sackedTotal() uint32 {
	var t uint32
	for i := 0; i < k.nsacked; i++ {
		t += k.sacked[i].end - k.sacked[i].start
	}
	return t
}

func (k *tcb) pruneSACK() {
	j := 0
	for i := 0; i < k.nsacked; i++ {
		r := k.sacked[i]
		if seqLEQ(r.end, k.sndUna) {
			continue
		}
		if seqLT(r.start, k.sndUna) {
			r.start = k.sndUna
		}
		k.sacked[j] = r
		j++
	}
	k.nsacked = j
}

// sackedAt returns the end of the SACKed range that holds seq, or seq.
func (k *tcb) sackedAt(seq uint32) uint32 {
	for i := 0; i < k.nsacked; i++ {
		if seqGEQ(seq, k.sacked[i].start) && seqLT(seq, k.sacked[i].end) {
			return k.sacked[i].end
		}
	}
	return seq
}

// tcpData puts payload (which starts at seq ≥ rcvNxt, trimmed to the window) into the
// receive ring, in order or out of order, and decides when to ACK.
func (s *Stack) tcpData(c *TCPConn, seq uint32, payload []byte, psh bool, now int64) {
	k := &c.tcb
	hadOOO := k.nooo > 0
	inOrder := seq == k.rcvNxt
	if !c.rxStore(k, seq, payload, s.h.tcp.cfg.OOORanges) {
		s.h.tcp.ctr.OOOSegments.Add(1)
		k.ackNow = true
		s.tcpActivate(c)
		return
	}
	if !inOrder {
		s.h.tcp.ctr.OOOSegments.Add(1)
		k.dupAcksOwed++ // RFC 5681 §4.2: one immediate duplicate ACK per out-of-order segment
	}
	if k.oooFin && k.rcvNxt == k.oooFinSeq {
		k.oooFin = false
		s.tcpFin(c, now)
		return
	}
	switch {
	case !inOrder || hadOOO:
		k.ackNow = true // a duplicate ACK with SACK blocks, or the ACK that fills the hole
	default:
		k.segsUnacked++
		if k.segsUnacked >= 2 {
			k.ackInPlace = true // tcpInput acks with this segment's frame
		} else if k.delackAt == 0 {
			k.delackAt = now + int64(s.h.tcp.cfg.DelayedACK)
			s.tcpArm(k.delackAt)
		}
	}
	s.tcpActivate(c)
}

// tcpFin handles the peer's FIN once everything before it has arrived.
func (s *Stack) tcpFin(c *TCPConn, now int64) {
	k := &c.tcb
	if k.finRcvd {
		k.ackNow = true
		s.tcpActivate(c)
		return
	}
	k.finRcvd = true
	k.rcvNxt++
	// Out-of-order data above the FIN lies past the end of the peer's stream: drop it, as
	// Linux does (tcp_fin), rather than keep it and SACK it in every ACK from now on.
	k.nooo, k.lastOOO = 0, -1
	c.setEOF()
	k.ackNow = true
	s.tcpActivate(c)
	switch k.state {
	case stEstablished:
		k.state = stCloseWait
	case stFinWait1:
		if k.finSent && seqGT(k.sndUna, k.finSeq) {
			s.tcpTimeWait(c, now)
		} else {
			k.state = stClosing
		}
	case stFinWait2:
		s.tcpTimeWait(c, now)
	}
	c.publishState()
}

// releaseBuffers lets the garbage collector have a TIME_WAIT connection's rings once the user
// has closed it: everything we sent was acknowledged, our FIN too, and nothing more will be
// read. Without this every TIME_WAIT connection kept both rings (512 KiB by default) for 2 MSL,
// and a server that closes first (HTTP without keep-alive) held gigabytes after a few thousand
// connections; now it is a few hundred bytes, like Linux's timewait socket. The ACKs TIME_WAIT
// sends advertise the window last offered (tcpOutput), not the missing ring's. It runs on the
// shard only: the shard reads len(c.rbuf) without the lock.
func (c *TCPConn) releaseBuffers() {
	if c.rbuf == nil || !c.userClosed.Load() {
		return
	}
	c.mu.Lock()
	c.rbuf, c.sbuf = nil, nil
	c.rhead, c.rlen, c.shead, c.slen = 0, 0, 0, 0
	c.mu.Unlock()
}

// tcpTimeWait enters TIME_WAIT; the shard keeps at most MaxTimeWait of them, and evicts the
// oldest when there are more.
func (s *Stack) tcpTimeWait(c *TCPConn, now int64) {
	k := &c.tcb
	ts := &s.tcp
	k.state = stTimeWait
	k.rtoAt, k.persistAt, k.kaAt, k.finAt = 0, 0, 0, 0
	k.twAt = now + int64(s.h.tcp.cfg.TimeWait)
	s.tcpArm(k.twAt)
	ts.tw = append(ts.tw, c)
	c.publishState()
	c.terminate(nil)
	c.releaseBuffers()
	for len(ts.tw) > s.h.tcp.cfg.MaxTimeWait {
		s.h.tcp.ctr.TimeWaitEvicted.Add(1)
		s.tcpFree(ts.tw[0])
	}
}
