package stack

import (
	"math/rand/v2"
	"net/netip"
	"syscall"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// tcpOriginate sends what TCP has to send (retransmissions, ACKs, socket writes).
func (s *Stack) tcpOriginate(b *pipelines.Batch, now int64) {
	ts := &s.tcp
	if ts.ctlAny.Load() {
		s.tcpControl(now)
	}
	if len(ts.ready) > 0 {
		s.tcpRunApps() // before the pokes, which carry what the apps wrote
	}
	if ts.pokeAny.Load() {
		s.tcpPokes(now)
	}
	if ts.next != 0 && now >= ts.next {
		s.tcpTimers(b, now)
	}
	for len(ts.orphans) > 0 && b.Room() > 0 {
		o := ts.orphans[0]
		s.tcpSendRST(b, o, now)
		ts.orphans = ts.orphans[1:]
	}
	if len(ts.orphans) == 0 {
		ts.orphans = ts.orphans[:0:cap(ts.orphans)]
	}
	if len(ts.active) == 0 {
		return
	}
	list := ts.active
	ts.active = ts.pokeBuf[:0]
	for j, c := range list {
		c.tcb.queued = false
		if c.tcb.idx < 0 {
			continue
		}
		if b.Room() == 0 || !s.tcpOutput(b, c, now) {
			for _, r := range list[j:] {
				r.tcb.queued = false
				if r.tcb.idx >= 0 {
					s.tcpActivate(r)
				}
			}
			break
		}
	}
	clear(list)
	ts.pokeBuf = list[:0]
}

// tcpDeadline is TCP's next timer (0: none); pending output asks for an immediate pass.
func (s *Stack) tcpDeadline() int64 {
	if len(s.tcp.active) > 0 || len(s.tcp.orphans) > 0 || len(s.tcp.ready) > 0 {
		return 1
	}
	return s.tcp.next
}

func (s *Stack) tcpControl(now int64) {
	ts := &s.tcp
	ts.ctlMu.Lock()
	msgs := ts.ctl
	ts.ctl = nil
	ts.ctlAny.Store(false)
	ts.ctlMu.Unlock()
	for _, m := range msgs {
		switch {
		case m.listen != nil && m.unlisten:
			s.tree.DeleteListener(header.ProtoTCP, listenAddr(m.listen.local), m.listen.local.Port())
			s.tcpDropApp(m.listen)
		case m.listen != nil:
			s.tree.InsertListener(header.ProtoTCP, listenAddr(m.listen.local), m.listen.local.Port(), flowtree.Handle(tcpListenerBit|m.listen.id))
		case m.dial != nil:
			s.tcpDial(m.dial, now)
		}
		if m.done != nil {
			m.done.Done()
		}
	}
}

func listenAddr(ap netip.AddrPort) netip.Addr {
	if ap.Addr().IsUnspecified() {
		return netip.Addr{}
	}
	return ap.Addr()
}

// tcpDial opens a connection from this shard: it picks a source port whose 4-tuple this
// shard owns (Host.Owner), so every segment of the connection arrives here.
func (s *Stack) tcpDial(c *TCPConn, now int64) {
	la, ra := c.local.Addr().As4(), c.remote.Addr().As4()
	th := &s.h.tcp
	if c.local.Port() == 0 {
		const first, n = ephemeralFirst, 65536 - ephemeralFirst
		start := rand.IntN(n)
		found := false
		for i := 0; i < n && !found; i++ {
			p := uint16(first + (start+i)%n)
			if s.h.tcpOwner(la, ra, p, c.remote.Port(), s.shards) != s.shard {
				continue
			}
			if _, used := s.tree.Get(flowtree.Key{Proto: header.ProtoTCP, LocalAddr: c.local.Addr(), LocalPort: p,
				RemoteAddr: c.remote.Addr(), RemotePort: c.remote.Port()}); used {
				continue
			}
			th.mu.Lock()
			listening := th.ports[p] > 0
			th.mu.Unlock()
			if !listening {
				c.local = netip.AddrPortFrom(c.local.Addr(), p)
				found = true
			}
		}
		if !found {
			c.setErr(syscall.EADDRNOTAVAIL)
			c.terminate(nil)
			return
		}
	}
	if !s.tcpAttach(c, now) {
		c.setErr(syscall.EADDRNOTAVAIL)
		c.terminate(nil)
		return
	}
	c.tcb.state = stSynSent
	th.ctr.ActiveOpens.Add(1)
	c.publishState()
	s.tcpActivate(c)
}

func (s *Stack) tcpPokes(now int64) {
	ts := &s.tcp
	ts.pokeMu.Lock()
	q := ts.pokeQ
	ts.pokeQ = ts.pokeSpare[:0] // the two queues take turns, so poking allocates nothing
	ts.pokeAny.Store(false)
	ts.pokeMu.Unlock()
	for _, c := range q {
		c.poked.Store(false)
		if c.tcb.idx < 0 {
			continue
		}
		c.mu.Lock()
		abort := c.abort
		c.mu.Unlock()
		if abort {
			k := &c.tcb
			if k.state != stSynSent && k.state != stTimeWait {
				s.tcpRSTFor(c, k.sndNxt)
			}
			s.tcpFree(c)
			continue
		}
		if c.tcb.state == stTimeWait {
			c.releaseBuffers() // closed by its user after it entered TIME_WAIT
		}
		if c.kaDirty.Swap(false) {
			s.tcpKeepAliveArm(c, now)
		}
		s.tcpActivate(c)
	}
	clear(q)
	ts.pokeSpare = q[:0]
}

// tcpTimers fires every due timer and recomputes the shard's earliest one.
func (s *Stack) tcpTimers(b *pipelines.Batch, now int64) {
	ts := &s.tcp
	ts.next = 0
	for _, c := range ts.conns {
		if c == nil {
			continue
		}
		k := &c.tcb
		if k.twAt != 0 && now >= k.twAt || k.finAt != 0 && now >= k.finAt {
			s.tcpFree(c)
			continue
		}
		if k.rtoAt != 0 && now >= k.rtoAt {
			s.tcpRTO(c, now)
			if k.idx < 0 {
				continue
			}
		}
		if k.persistAt != 0 && now >= k.persistAt {
			s.tcpPersist(b, c, now)
		}
		if k.tlpAt != 0 && now >= k.tlpAt {
			k.tlpAt = 0
			if !k.inRecovery && !k.tlpOut && k.sndUna != k.sndMax && k.persistAt == 0 {
				k.tlpNow = true
				s.tcpActivate(c)
			}
		}
		if k.delackAt != 0 && now >= k.delackAt {
			k.delackAt = 0
			k.ackNow = true
			s.tcpActivate(c)
		}
		if k.kaAt != 0 && now >= k.kaAt {
			s.tcpKeepAlive(b, c, now)
			if k.idx < 0 {
				continue
			}
		}
		for _, t := range [...]int64{k.twAt, k.finAt, k.rtoAt, k.persistAt, k.delackAt, k.kaAt, k.tlpAt} {
			s.tcpArm(t)
		}
	}
}

// tcpRTO is the retransmission timeout (RFC 6298 §5, RFC 5681 §3.1): back off, collapse the
// window to one segment and go back to the first unacknowledged byte.
func (s *Stack) tcpRTO(c *TCPConn, now int64) {
	k := &c.tcb
	cfg := &s.h.tcp.cfg
	k.rtoAt = 0
	k.retries++
	limit := cfg.Retries
	if k.state == stSynSent || k.state == stSynRcvd {
		limit = cfg.SynRetries
	}
	if k.retries > limit {
		s.tcpReset(c, syscall.ETIMEDOUT)
		return
	}
	s.h.tcp.ctr.Timeouts.Add(1)
	k.tlpAt, k.tlpNow, k.tlpOut, k.loneAt = 0, false, false, 0
	k.rtt.backoff++
	k.rttTiming = false
	if k.state == stSynSent || k.state == stSynRcvd {
		k.sndNxt = k.iss
		s.tcpActivate(c)
		return
	}
	if k.sndUna == k.sndMax {
		return
	}
	flight := k.sndMax - k.sndUna
	// The first RTO of this episode may be spurious (a delayed ACK, a stalled peer or shard):
	// the first ACK after it tells, by the timestamp it echoes (tcpNewAck).
	undoable := k.rtt.backoff == 1 && k.tsOK
	if undoable {
		k.rtoUndo, k.rtoTS = true, uint32(now/tsHz)+k.tsOffset
	}
	k.cc.onRTO(flight, undoable, k.inRecovery, now)
	k.inRecovery = false
	k.dupAcks = 0
	k.recover = k.sndMax
	k.sndNxt = k.sndUna
	k.rtxNext = k.sndUna
	k.lostLo, k.lostHi, k.lostGuard = k.sndUna, k.sndUna, k.sndUna
	c.publishStats()
	s.tcpActivate(c)
}

// tcpPersist probes a zero window with one byte (RFC 9293 §3.8.6.1), backing off like the RTO.
func (s *Stack) tcpPersist(b *pipelines.Batch, c *TCPConn, now int64) {
	k := &c.tcb
	k.persistAt = 0
	if k.sndWnd != 0 {
		k.swsOverride = true // RFC 9293 §3.8.6.2.1: the override timeout sends what fits
		s.tcpActivate(c)
		return
	}
	c.mu.Lock()
	slen, free := c.slen, len(c.rbuf)-c.rlen
	c.mu.Unlock()
	if !seqLT(k.sndUna, k.sndBase+uint32(slen)) {
		return
	}
	if !s.tcpEmit(b, c, k.sndUna, header.TCPFlagACK, 1, free, now) {
		k.persistAt = now // no frame: next pass
		return
	}
	s.h.tcp.ctr.ZeroWindowProbes.Add(1)
	// sndNxt stays: a probe the peer drops must not leave a hole when the window opens (the
	// byte goes again as the first segment); sndMax covers it, so an ACK for it is valid.
	k.sndMax = seqMax(k.sndMax, k.sndUna+1)
	k.rtt.backoff++
	k.persistAt = now + k.rtt.timeout()
}

// tcpKeepAliveArm starts the keepalive timer (idle time after the last segment received) or
// stops it, as the connection's settings say; the shard calls it when the handshake completes
// and when the user changes the settings.
func (s *Stack) tcpKeepAliveArm(c *TCPConn, now int64) {
	k := &c.tcb
	k.kaAt = 0
	if !c.kaOn.Load() || k.idx < 0 || !k.state.synchronized() || k.state == stTimeWait {
		return
	}
	k.kaAt = max(k.lastRecv+c.kaIdle.Load(), now)
	s.tcpArm(k.kaAt)
}

// tcpKeepAlive sends a probe (sequence sndUna-1, no data: the peer answers with an ACK) once
// nothing has arrived for the idle time, then one per interval while none is answered (any
// segment received counts as an answer), and after the last unanswered one resets the
// connection with ETIMEDOUT (and a RST, as Linux, for a peer that comes back). Like Linux it
// probes only an idle connection: with data out or waiting, the RTO or the persist timer
// watches the peer. (Before, nothing could turn keepalive on: the tcb's idle time was never
// set; the interval was a ninth of it and the count fixed at 9.)
func (s *Stack) tcpKeepAlive(b *pipelines.Batch, c *TCPConn, now int64) {
	k := &c.tcb
	k.kaAt = 0
	if !c.kaOn.Load() || !k.state.synchronized() || k.state == stTimeWait {
		return
	}
	idle := c.kaIdle.Load()
	if now-k.lastRecv < idle {
		k.kaAt = k.lastRecv + idle
		return
	}
	c.mu.Lock()
	busy, free := c.slen > 0, len(c.rbuf)-c.rlen
	c.mu.Unlock()
	if busy || k.sndMax != k.sndUna {
		k.kaAt = now + idle
		return
	}
	if k.kaProbes >= int(c.kaCount.Load()) {
		s.h.tcp.ctr.KeepAliveTimeouts.Add(1)
		s.tcpRSTFor(c, k.sndNxt)
		s.tcpReset(c, syscall.ETIMEDOUT)
		return
	}
	if s.tcpEmit(b, c, k.sndUna-1, header.TCPFlagACK, 0, free, now) {
		k.kaProbes++
		s.h.tcp.ctr.KeepAliveProbes.Add(1)
	}
	k.kaAt = now + c.kaIntvl.Load()
}

// tcpOutput sends what the connection may send now; false means the batch ran out of room.
func (s *Stack) tcpOutput(b *pipelines.Batch, c *TCPConn, now int64) bool {
	k := &c.tcb
	c.mu.Lock()
	slen, sfin, free := c.slen, c.sfin, len(c.rbuf)-c.rlen
	c.mu.Unlock()
	switch k.state {
	case stClosed:
		return true
	case stSynSent, stSynRcvd:
		if k.sndNxt == k.iss {
			fl := uint8(header.TCPFlagSYN)
			if k.state == stSynRcvd {
				fl |= header.TCPFlagACK
			}
			if !s.tcpEmit(b, c, k.iss, fl, 0, free, now) {
				return false
			}
			if k.retries == 0 && !k.rttTiming {
				k.rttTiming, k.rttSeq, k.rttTime = true, k.iss, now
			}
			k.sndNxt = k.iss + 1
			k.sndMax = seqMax(k.sndMax, k.sndNxt)
			if k.rtoAt == 0 {
				k.rtoAt = now + k.rtt.timeout()
				s.tcpArm(k.rtoAt)
			}
		} else if k.state == stSynRcvd && k.ackNow {
			// The ACK for an unacceptable segment, or a challenge ACK (RFC 9293 §3.10.7.4,
			// RFC 5961): <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, as Linux's request sockets send.
			// Without this branch SYN_RCVD counted challenge ACKs and sent none.
			return s.tcpEmit(b, c, k.sndNxt, header.TCPFlagACK, 0, free, now)
		}
		return true
	case stTimeWait:
		if k.ackNow {
			// The window last offered (its right edge less the FIN), whether or not the
			// receive ring is still there (releaseBuffers).
			return s.tcpEmit(b, c, k.sndNxt, header.TCPFlagACK, 0, max(0, int(int32(k.rcvAdv-k.rcvNxt))), now)
		}
		return true
	}
	dataEnd := k.sndBase + uint32(slen)
	finOK := sfin && (k.state == stEstablished || k.state == stCloseWait || k.finSent)
	sackRec := k.inRecovery && k.sackOK && k.nsacked > 0

	// Fast retransmit and NewReno partial ACKs: the first unacknowledged segment.
	if k.rtxNow && seqLT(k.sndUna, k.sndMax) {
		if !s.tcpSendData(b, c, k.sndUna, k.mss, dataEnd, finOK, free, true, now) {
			return false
		}
		k.rtxNow = false
		k.rtxNext = seqMax(k.rtxNext, k.sndUna+min(k.mss, k.sndMax-k.sndUna))
	}
	// Tail loss probe (RFC 8985 §7.3): one new segment if the peer's window allows it,
	// otherwise the last segment again, to draw an ACK (with SACK) for the tail.
	if k.tlpNow {
		k.tlpNow = false
		if !k.inRecovery && seqLT(k.sndUna, k.sndMax) && !seqGT(k.recover, k.sndUna) {
			high := k.sndMax
			k.tlpLone = k.sndMax-k.sndUna <= k.mss
			k.tlpRtxLo, k.tlpRtxHi = 0, 0
			if k.sndNxt == k.sndMax && seqLT(k.sndNxt, dataEnd) && seqLEQ(k.sndNxt+min(k.mss, dataEnd-k.sndNxt), k.sndUna+k.sndWnd) {
				if !s.tcpSendData(b, c, k.sndNxt, k.mss, dataEnd, finOK, free, false, now) {
					k.tlpNow = true
					return false
				}
			} else {
				seq, n := dataEnd, uint32(0)
				if seqLT(k.sndUna, dataEnd) {
					n = min(k.mss, dataEnd-k.sndUna)
					seq = dataEnd - n
				}
				if !s.tcpSendSeg(b, c, seq, n, dataEnd, finOK, free, now) {
					k.tlpNow = true
					return false
				}
				k.tlpRtxLo, k.tlpRtxHi = seq, seq+n
				k.retransmits++
				s.h.tcp.ctr.Retransmits.Add(1)
			}
			k.tlpOut, k.tlpHigh, k.tlpAt = true, high, 0
			s.h.tcp.ctr.TailLossProbes.Add(1)
			k.rtoAt = now + k.rtt.timeout()
			s.tcpArm(k.rtoAt)
		}
	}
	// Lost retransmissions (tcpLostRtx): their holes go again.
	for seqLT(k.lostLo, k.lostHi) {
		seq := k.skipSACKed(seqMax(k.lostLo, k.sndUna))
		if !seqLT(seq, k.lostHi) {
			k.lostLo = k.lostHi
			break
		}
		n := uint32(0)
		if seqLT(seq, dataEnd) {
			n = min(k.mss, k.nextSACKed(seq)-seq, k.lostHi-seq, dataEnd-seq)
		}
		if b.Room() == 0 || !s.tcpSendSeg(b, c, seq, n, dataEnd, finOK, free, now) {
			return false
		}
		k.retransmits++
		s.h.tcp.ctr.Retransmits.Add(1)
		k.lostLo = seq + max(n, 1)
	}
	// SACK recovery (RFC 6675 §5): retransmit holes below the highest SACKed byte while the
	// estimated pipe is below cwnd.
	if sackRec {
		high := k.sacked[k.nsacked-1].end
		for {
			pipe := (k.sndMax - high) + k.holesBelow(k.rtxNext)
			if pipe >= k.cc.cwnd {
				break
			}
			seq := k.sackedAt(seqMax(k.rtxNext, k.sndUna))
			for seq != k.sackedAt(seq) {
				seq = k.sackedAt(seq)
			}
			if !seqLT(seq, high) {
				break
			}
			n := min(k.mss, k.nextSACKed(seq)-seq)
			if b.Room() == 0 {
				return false
			}
			if !s.tcpSendSeg(b, c, seq, n, dataEnd, finOK, free, now) {
				return false
			}
			k.retransmits++
			s.h.tcp.ctr.Retransmits.Add(1)
			k.rtxNext = seq + n
		}
	}
	for {
		if seqLT(k.sndNxt, k.sndMax) && k.nsacked > 0 {
			k.sndNxt = seqMax(k.sndNxt, min32seq(k.sackedAt(k.sndNxt), k.sndMax))
		}
		wnd := min(k.cc.cwnd, k.sndWnd)
		inflight := k.sndNxt - k.sndUna
		if sackRec {
			inflight = (k.sndMax - k.sacked[k.nsacked-1].end) + k.holesBelow(k.rtxNext)
			if seqLT(k.sndNxt, k.sndMax) {
				break // holes are the SACK loop's job
			}
		} else if k.inRecovery {
			inflight = k.sndMax - k.sndUna
		}
		if seqLT(k.sndNxt, dataEnd) {
			if inflight >= wnd {
				break
			}
			usable := wnd - inflight
			if sackRec || k.inRecovery {
				usable = min(usable, k.sndUna+k.sndWnd-k.sndNxt)
			}
			n := min(dataEnd-k.sndNxt, k.mss, usable)
			if n == 0 || int32(n) < 0 {
				break
			}
			if !seqLT(k.sndNxt, k.sndMax) && n < k.mss && n < dataEnd-k.sndNxt && n < k.maxSndWnd/2 && !k.swsOverride {
				if k.sndUna == k.sndMax && k.persistAt == 0 {
					k.persistAt = now + k.rtt.timeout()
					s.tcpArm(k.persistAt)
				}
				break // silly-window avoidance: wait for a bigger window
			}
			k.swsOverride = false
			if !seqLT(k.sndNxt, k.sndMax) && n < k.mss && !(c.noDelay.Load() || sfin || k.sndNxt == k.sndUna) {
				break // Nagle: a small segment waits while data is unacknowledged
			}
			if !s.tcpSendData(b, c, k.sndNxt, n, dataEnd, finOK, free, false, now) {
				return false
			}
			continue
		}
		if finOK && k.sndNxt == dataEnd && (!k.finSent || k.sndNxt == k.finSeq) {
			if !s.tcpSendData(b, c, k.sndNxt, 0, dataEnd, finOK, free, false, now) {
				return false
			}
		}
		break
	}
	// Zero window with nothing in flight (everything acknowledged, or an RTO went back to
	// sndUna after the peer shrank its window): the persist timer probes it, and no RTO runs.
	if k.sndWnd == 0 && seqLT(k.sndUna, dataEnd) && k.sndNxt == k.sndUna && k.persistAt == 0 {
		k.rtoAt = 0
		k.persistAt = now + k.rtt.timeout()
		s.tcpArm(k.persistAt)
	}
	// A window update when the reader made room (receiver SWS avoidance, RFC 9293 §3.8.6.2.2).
	if !k.ackNow && !k.finRcvd {
		edge := k.rcvNxt + uint32(free)>>k.rcvWscale<<k.rcvWscale
		if seqGT(edge, k.rcvAdv) {
			grow := edge - k.rcvAdv
			size := uint32(len(c.rbuf))
			if grow >= size/2 || (grow >= k.mss && k.rcvAdv-k.rcvNxt < size/2) {
				k.ackNow = true
			}
		}
	}
	for k.dupAcksOwed > 1 {
		if !s.tcpEmit(b, c, k.sndNxt, header.TCPFlagACK, 0, free, now) {
			return false
		}
		k.dupAcksOwed--
	}
	k.dupAcksOwed = 0
	if k.ackNow {
		return s.tcpEmit(b, c, k.sndNxt, header.TCPFlagACK, 0, free, now)
	}
	return true
}

// holesBelow counts the unSACKed bytes between sndUna and seq.
func (k *tcb) holesBelow(seq uint32) uint32 {
	if !seqGT(seq, k.sndUna) {
		return 0
	}
	n := seq - k.sndUna
	for i := 0; i < k.nsacked; i++ {
		r := k.sacked[i]
		if !seqLT(r.start, seq) {
			break
		}
		n -= min32seq(r.end, seq) - r.start
	}
	return n
}

// nextSACKed is the start of the first SACKed range above seq (or sndMax).
func (k *tcb) nextSACKed(seq uint32) uint32 {
	for i := 0; i < k.nsacked; i++ {
		if seqGT(k.sacked[i].start, seq) {
			return k.sacked[i].start
		}
	}
	return k.sndMax
}

// tcpSendData sends one segment at seq: up to lim (at most an MSS) of data, with the FIN if
// it reaches the end and the user closed; it advances sndNxt (unless rtx) and sndMax. lim is
// what the window allows: a segment never runs past the peer's window.
func (s *Stack) tcpSendData(b *pipelines.Batch, c *TCPConn, seq, lim, dataEnd uint32, finOK bool, free int, rtx bool, now int64) bool {
	k := &c.tcb
	n := uint32(0)
	if seqLT(seq, dataEnd) {
		n = min(dataEnd-seq, k.mss, lim)
	}
	if !s.tcpSendSeg(b, c, seq, n, dataEnd, finOK, free, now) {
		return false
	}
	end := seq + n
	if finOK && end == dataEnd {
		end++
	}
	if rtx || seqLT(seq, k.sndMax) {
		k.retransmits++
		s.h.tcp.ctr.Retransmits.Add(1)
	} else if !k.rttTiming {
		k.rttTiming, k.rttSeq, k.rttTime = true, seq, now
	}
	if !rtx {
		k.sndNxt = end
	}
	if seqGT(end, k.sndMax) {
		k.sndMax, k.rcvNxtAtSend = end, k.rcvNxt
		s.tcpArmTLP(c, now) // new data restarts the probe timer
	}
	return true
}

// tcpSendSeg emits n data bytes at seq, adding FIN when they end the stream and the user
// closed, and runs the state change of a first FIN.
func (s *Stack) tcpSendSeg(b *pipelines.Batch, c *TCPConn, seq, n, dataEnd uint32, finOK bool, free int, now int64) bool {
	k := &c.tcb
	fl := uint8(header.TCPFlagACK)
	if seq+n == dataEnd && n > 0 {
		fl |= header.TCPFlagPSH
	}
	fin := finOK && seq+n == dataEnd
	if fin {
		fl |= header.TCPFlagFIN
	}
	if seqLT(seq, k.sndMax) {
		k.rtxMark = k.sndMax
	}
	if !s.tcpEmit(b, c, seq, fl, int(n), free, now) {
		return false
	}
	if fin && !k.finSent {
		k.finSent, k.finSeq = true, dataEnd
		switch k.state {
		case stEstablished:
			k.state = stFinWait1
		case stCloseWait:
			k.state = stLastAck
		}
		c.publishState()
	}
	if k.rtoAt == 0 && k.persistAt == 0 {
		k.rtoAt = now + k.rtt.timeout()
		s.tcpArm(k.rtoAt)
	}
	return true
}

// tcpEmit builds one segment of connection c in a new frame of the batch.
func (s *Stack) tcpEmit(b *pipelines.Batch, c *TCPConn, seq uint32, flags uint8, n int, free int, now int64) bool {
	return s.tcpEmitAt(b, -1, c, seq, flags, n, free, now)
}

// tcpAckInPlace turns packet i, a data segment whose payload is already in the receive ring,
// into the connection's ACK, sent with the rest of the batch. The receiver so acks every
// second segment as it arrives (RFC 1122 §4.2.3.2, RFC 5681 §4.2) instead of once per batch:
// one ACK for a whole batch of segments (tens of them) is a stretch ACK that grows the
// sender's window slowly, and when it is lost the sender has nothing to go on but its
// timers. False when the ACK cannot be built there (next hop not resolved); then the ACK
// goes in Originate.
func (s *Stack) tcpAckInPlace(b *pipelines.Batch, i int, c *TCPConn, now int64) bool {
	c.mu.Lock()
	free := len(c.rbuf) - c.rlen
	c.mu.Unlock()
	return s.tcpEmitAt(b, i, c, c.tcb.sndNxt, header.TCPFlagACK, 0, free, now)
}

// tcpEmitAt is tcpEmit into packet at of the batch (its frame reused) when at >= 0, into a
// new frame otherwise.
func (s *Stack) tcpEmitAt(b *pipelines.Batch, at int, c *TCPConn, seq uint32, flags uint8, n int, free int, now int64) bool {
	k := &c.tcb
	cfg := &s.h.tcp.cfg
	o := &s.tcp.txOpts
	*o = header.TCPOptions{}
	tsval := uint32(now/tsHz) + k.tsOffset
	if flags&header.TCPFlagSYN != 0 {
		o.HasMSS, o.MSS = true, uint16(s.mtu(c.ifc)-40)
		passive := k.state == stSynRcvd && k.passive
		if !cfg.NoWindowScale && (!passive || k.wsOK) {
			o.HasWScale, o.WScale = true, k.rcvWscale
		}
		o.SACKPermitted = !cfg.NoSACK && (!passive || k.sackOK)
		if !cfg.NoTimestamps && (!passive || k.tsOK) {
			o.HasTS, o.TSVal = true, tsval
			if k.tsOK {
				o.TSEcr = k.tsRecent
			}
		}
	} else {
		if k.tsOK {
			o.HasTS, o.TSVal, o.TSEcr = true, tsval, k.tsRecent
		}
		if k.sackOK && flags&header.TCPFlagACK != 0 {
			if k.dsackLo != k.dsackHi { // a D-SACK block goes first (RFC 2883 §4)
				o.SACK[0] = [2]uint32{k.dsackLo, k.dsackHi}
				o.NumSACK = 1
			}
			if k.nooo > 0 {
				first := k.lastOOO
				if first < 0 || first >= k.nooo {
					first = 0
				}
				o.SACK[o.NumSACK] = [2]uint32{k.ooo[first].start, k.ooo[first].end}
				o.NumSACK++
				for j := k.nooo - 1; j >= 0 && o.NumSACK < len(o.SACK); j-- {
					if j != first {
						o.SACK[o.NumSACK] = [2]uint32{k.ooo[j].start, k.ooo[j].end}
						o.NumSACK++
					}
				}
			}
		}
	}
	var w uint32
	if flags&header.TCPFlagSYN != 0 {
		w = min(uint32(free), 65535)
		k.rcvAdv = k.rcvNxt + w
	} else {
		w = min(uint32(free)>>k.rcvWscale, 65535)
		edge := k.rcvNxt + w<<k.rcvWscale
		if seqLT(edge, k.rcvAdv) { // never shrink the window (RFC 9293 §3.8.6.2.2)
			w = min((k.rcvAdv-k.rcvNxt+1<<k.rcvWscale-1)>>k.rcvWscale, 65535)
			edge = k.rcvNxt + w<<k.rcvWscale
		}
		k.rcvAdv = seqMax(k.rcvAdv, edge)
	}
	// The MSS allows for the timestamps, not for SACK blocks: a data segment carries only the
	// blocks that keep it within the MTU, and the rest go in a pure ACK after it (ackNow
	// stays set), the duplicate ACK that out-of-order data calls for anyway. A full-sized
	// segment with SACK blocks used to leave 12 to 28 bytes above the MTU, so a link dropped
	// it, and its retransmissions too while the hole lasted.
	sackCut := false
	for n > 0 && o.NumSACK > 0 && header.IPv4MinLen+header.TCPMinLen+header.TCPOptionsLen(o)+n > s.mtu(c.ifc) {
		o.NumSACK--
		sackCut = true
	}
	hdr := header.TCPMinLen + header.TCPOptionsLen(o)
	total := header.IPv4MinLen + hdr + n
	la, ra := c.local.Addr(), c.remote.Addr()
	f := header.TCPFields{SrcPort: c.local.Port(), DstPort: c.remote.Port(), Seq: seq, Flags: flags, Window: uint16(w), Options: o}
	if flags&header.TCPFlagACK != 0 {
		f.Ack = k.rcvNxt
	}
	mac, ok := s.h.neigh[c.ifc].Lookup(c.nh, now)
	if at >= 0 && (!ok || cap(b.Data(at)) < header.EthernetLen+total) {
		return false
	}
	var d []byte
	if ok {
		if at >= 0 {
			b.SetLen(at, header.EthernetLen+total)
			b.Transmit(at, c.ifc)
			d = b.Data(at)
		} else {
			_, d, ok = b.Alloc(header.EthernetLen+total, pipelines.Transmit)
			if !ok {
				return false
			}
			b.Pkts[len(b.Pkts)-1].OutIf = uint8(c.ifc)
		}
		header.EncodeEthernet(d, header.MAC(mac), s.ourMAC(c.ifc), header.EtherTypeIPv4)
		header.EncodeIPv4(d[header.EthernetLen:], header.IPv4Fields{TotalLength: total, ID: s.nextID(), DF: true, TTL: defaultTTL,
			Protocol: header.ProtoTCP, Src: la, Dst: ra})
		d = d[header.EthernetLen+header.IPv4MinLen:]
	} else {
		d = s.scratch[:hdr+n]
	}
	t := header.EncodeTCP(d, f, n)
	if n > 0 {
		c.copySend(t[hdr:], int(seq-k.sndBase))
	}
	t.FixChecksum(la, ra)
	if !ok && !s.sendIP(b, header.ProtoTCP, la.As4(), ra.As4(), t, now) {
		return false
	}
	if flags&header.TCPFlagACK != 0 {
		k.lastAckSent = k.rcvNxt
		k.delackAt, k.segsUnacked = 0, 0
		if !sackCut {
			k.ackNow = false
			k.dsackLo, k.dsackHi = 0, 0
		}
	}
	c.rwndSent.Store(w << k.rcvWscale)
	s.h.tcp.ctr.Out.Add(1)
	return true
}

// tcpSendRST sends a RST for a connection that may already be gone.
func (s *Stack) tcpSendRST(b *pipelines.Batch, o orphanRST, now int64) {
	mac, ok := s.h.neigh[o.ifc].Lookup(o.nh, now)
	if !ok {
		return
	}
	_, d, ok := b.Alloc(header.EthernetLen+40, pipelines.Transmit)
	if !ok {
		return
	}
	b.Pkts[len(b.Pkts)-1].OutIf = uint8(o.ifc)
	header.EncodeEthernet(d, header.MAC(mac), s.ourMAC(o.ifc), header.EtherTypeIPv4)
	header.EncodeIPv4(d[header.EthernetLen:], header.IPv4Fields{TotalLength: 40, ID: s.nextID(), DF: true, TTL: defaultTTL,
		Protocol: header.ProtoTCP, Src: o.la.Addr(), Dst: o.ra.Addr()})
	t := header.EncodeTCP(d[header.EthernetLen+header.IPv4MinLen:], header.TCPFields{SrcPort: o.la.Port(), DstPort: o.ra.Port(),
		Seq: o.seq, Flags: header.TCPFlagRST}, 0)
	t.FixChecksum(o.la.Addr(), o.ra.Addr())
	s.h.tcp.ctr.ResetsOut.Add(1)
}
