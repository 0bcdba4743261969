package stack

import (
	"math"
	"net/netip"
	"testing"
	"time"
)

// ccSim drives one congestion control algorithm with a simulated window-limited sender on a
// fake clock: every segment is acknowledged an RTT after it was sent, two segments to an
// ACK as the stack's receiver does, each ACK carrying an RTT sample (as timestamps give), and
// the sender fills cwnd again after each ACK.
type ccSim struct {
	t        *testing.T
	w        ccState
	mss      uint32
	now      int64
	rtt      func(sentAt int64) int64 // the path's RTT for a segment sent then
	srtt     int64
	una, nxt uint32
	sent     []int64 // send times of the segments in flight, oldest first
	lastAck  int64
}

func newCCSim(t *testing.T, algo congestionControl, mss uint32, rtt time.Duration) *ccSim {
	s := &ccSim{t: t, mss: mss, now: int64(time.Second), srtt: int64(rtt)}
	s.rtt = func(int64) int64 { return int64(rtt) }
	s.w.algo = algo
	s.w.init(mss, s.now)
	s.fill()
	return s
}

func (s *ccSim) segs() float64 { return float64(s.w.cwnd) / float64(s.mss) }

func (s *ccSim) fill() {
	for s.nxt-s.una+s.mss <= s.w.cwnd {
		s.sent = append(s.sent, s.now)
		s.nxt += s.mss
	}
}

// ack delivers the next ACK (two segments, or the one in flight).
func (s *ccSim) ack() {
	k := min(2, len(s.sent))
	if k == 0 {
		s.t.Fatal("nothing in flight")
	}
	at := max(s.sent[k-1]+s.rtt(s.sent[k-1]), s.lastAck)
	sample := at - s.sent[k-1]
	s.now, s.lastAck = at, at
	s.sent = s.sent[k:]
	s.una += uint32(k) * s.mss
	s.w.onAck(ccAck{acked: uint32(k) * s.mss, flight: s.nxt - s.una, ack: s.una, sndMax: s.nxt, rtt: sample, srtt: s.srtt, now: s.now})
	s.fill()
}

// loss is a congestion event found by duplicate ACKs, and a recovery that ends an RTT later
// with a full ACK and ssthresh's worth in flight (what the recovery sent); then the window
// is filled again.
func (s *ccSim) loss() {
	flight := s.nxt - s.una
	s.w.enterRecovery(flight, s.now)
	s.now += s.srtt
	s.sent, s.una = s.sent[:0], s.nxt
	s.w.exitRecovery(s.w.ssthresh, s.now)
	s.fill()
}

// slowStartTo runs ACKs until cwnd reaches n segments.
func (s *ccSim) slowStartTo(n float64) {
	for s.segs() < n {
		s.ack()
	}
}

// wCubicRef is RFC 9438's figure 1, computed here independently of the implementation.
func wCubicRef(t, k, wMax float64) float64 { return 0.4*math.Pow(t-k, 3) + wMax }

// After a loss on a long path (100 ms, a 1000-segment window) the window follows W_cubic:
// it starts at 0.7·W_max, rises fast and then ever slower to W_max at K (the concave
// region), and ever faster beyond it (the convex region).
func TestCUBICFollowsWcubic(t *testing.T) {
	const rtt = 100 * time.Millisecond
	s := newCCSim(t, &cubic{}, 1000, rtt)
	s.w.algo.(*cubic).hs.stop() // constant RTT: HyStart++ would not act; slow start to the loss
	s.slowStartTo(1000)
	wMax := float64(s.nxt-s.una) / 1000
	s.loss()
	cwndEpoch := s.segs()
	if want := math.Floor(0.7 * wMax * 1000); math.Abs(float64(s.w.ssthresh)-want) > 1 {
		t.Fatalf("ssthresh %d after a loss with %.0f segments out, want β·flight = %.0f", s.w.ssthresh, wMax, want)
	}
	k := math.Cbrt((wMax - cwndEpoch) / 0.4)
	s.ack() // the first ACK in congestion avoidance starts the epoch
	epoch := s.now
	at := func() float64 { return float64(s.now-epoch) / 1e9 }
	var samples [][2]float64 // (t, cwnd) at each RTT
	next := 0.0
	worst := 0.0
	for at() < 2*k+1 {
		s.ack()
		tt := at()
		want := wCubicRef(tt, k, wMax)
		// cwnd heads for W_cubic one RTT ahead: it may be up to that step off, and a
		// segment for rounding.
		slack := math.Abs(wCubicRef(tt+rtt.Seconds(), k, wMax)-want) + 1
		if d := math.Abs(s.segs() - want); d > slack {
			t.Fatalf("t=%.2fs: cwnd %.1f segments, W_cubic %.1f (allowed ±%.1f)", tt, s.segs(), want, slack)
		} else {
			worst = max(worst, d)
		}
		if tt >= next {
			samples = append(samples, [2]float64{tt, s.segs()})
			next += rtt.Seconds()
		}
	}
	t.Logf("W_max %.0f, cwnd_epoch %.0f, K %.2fs; cwnd at most %.1f segments from W_cubic over %.1fs", wMax, cwndEpoch, k, worst, at())
	growth := func(from, to float64) float64 { // cwnd gained between two times
		var a, b float64
		for _, x := range samples {
			if x[0] <= from {
				a = x[1]
			}
			if x[0] <= to {
				b = x[1]
			}
		}
		return b - a
	}
	early, nearK, late := growth(0, 1), growth(k-0.5, k+0.5), growth(2*k-0.5, 2*k+0.5)
	if !(early > 10*nearK && late > 10*nearK) {
		t.Errorf("growth per second: %.1f at the start, %.1f around K, %.1f at 2K; want concave then convex", early, nearK, late)
	}
	for _, x := range samples {
		if math.Abs(x[0]-k) < rtt.Seconds() && math.Abs(x[1]-wMax) > 2 {
			t.Errorf("cwnd %.1f at t=%.2fs ≈ K, want W_max %.0f", x[1], x[0], wMax)
		}
	}
}

// On a short path with a small window (1 ms, 20 segments), Reno's window would outgrow
// W_cubic, and the window follows the Reno-friendly estimate instead: α_cubic = 3(1−β)/(1+β)
// segments per RTT until it regains the window of the loss, one per RTT after.
func TestCUBICRenoFriendly(t *testing.T) {
	const rtt = time.Millisecond
	s := newCCSim(t, &cubic{}, 1000, rtt)
	s.w.algo.(*cubic).hs.stop()
	s.slowStartTo(20)
	wMax := float64(s.nxt-s.una) / 1000
	s.loss()
	cwndEpoch := s.segs()
	k := math.Cbrt((wMax - cwndEpoch) / 0.4)
	alpha := 3 * (1 - 0.7) / (1 + 0.7)
	s.ack()
	epoch := s.now
	n0 := (wMax - cwndEpoch) / alpha // RTTs for W_est to regain W_max
	for s.now-epoch < int64(100*rtt) {
		s.ack()
		n := float64(s.now-epoch) / float64(rtt)
		want := cwndEpoch + alpha*n
		if n > n0 {
			want = wMax + (n - n0)
		}
		if d := math.Abs(s.segs() - want); d > 1+0.05*want {
			t.Fatalf("after %.1f RTTs: cwnd %.1f segments, Reno-friendly estimate %.1f", n, s.segs(), want)
		}
		if wc := wCubicRef(n*rtt.Seconds(), k, wMax); n > 20 && s.segs() < wc+5 {
			t.Fatalf("after %.1f RTTs: cwnd %.1f, W_cubic %.1f: the Reno-friendly region should be well above", n, s.segs(), wc)
		}
	}
	t.Logf("W_max %.0f, cwnd_epoch %.0f: cwnd %.1f after 100 RTTs (W_cubic %.1f)", wMax, cwndEpoch, s.segs(), wCubicRef(0.1, k, wMax))
}

// Fast convergence (RFC 9438 §4.7): a loss below the last W_max lowers W_max to the window
// times (1+β)/2; one at or above it sets W_max to the window.
func TestCUBICFastConvergence(t *testing.T) {
	c := &cubic{}
	w := ccState{algo: c}
	w.init(1000, 1)
	w.enterRecovery(100_000, 1)
	if c.wMax != 100 {
		t.Fatalf("W_max %.1f after a loss at 100 segments, want 100", c.wMax)
	}
	w.exitRecovery(70_000, 2)
	w.enterRecovery(90_000, 3)
	if want := 90 * 1.7 / 2; math.Abs(c.wMax-want) > 1e-9 {
		t.Fatalf("W_max %.2f after a loss at 90 segments below W_max 100, want %.2f", c.wMax, want)
	}
	if w.ssthresh != 63_000 {
		t.Fatalf("ssthresh %d, want 0.7 of 90 segments", w.ssthresh)
	}
}

// An RTO collapses the window to one segment and restarts the curve with K = 0 (§4.8); when
// it proves spurious, undo restores the window and the curve as they were (§4.9).
func TestCUBICRTOAndUndo(t *testing.T) {
	const rtt = 10 * time.Millisecond
	s := newCCSim(t, &cubic{}, 1000, rtt)
	c := s.w.algo.(*cubic)
	c.hs.stop()
	s.slowStartTo(100)
	s.loss()
	for range 200 {
		s.ack()
	}
	before, cb := s.w, *c
	s.w.onRTO(s.nxt-s.una, true, false, s.now)
	if s.w.cwnd != 1000 || s.w.ssthresh != uint32(math.Round(float64(s.nxt-s.una)*0.7)) || c.epoch != 0 {
		t.Fatalf("after the RTO: cwnd %d ssthresh %d epoch %d; want one segment, 0.7 of the flight, a new epoch", s.w.cwnd, s.w.ssthresh, c.epoch)
	}
	s.w.undo(s.now)
	if s.w.cwnd != before.cwnd || s.w.ssthresh != before.ssthresh || c.wMax != cb.wMax || c.k != cb.k || c.epoch != cb.epoch || c.wEst != cb.wEst {
		t.Fatalf("undo left cwnd %d ssthresh %d W_max %.1f K %.3f epoch %d W_est %.1f; want %d %d %.1f %.3f %d %.1f",
			s.w.cwnd, s.w.ssthresh, c.wMax, c.k, c.epoch, c.wEst, before.cwnd, before.ssthresh, cb.wMax, cb.k, cb.epoch, cb.wEst)
	}
	// A real RTO: the next congestion avoidance stage starts flat at its first window.
	s.w.onRTO(s.nxt-s.una, false, false, s.now)
	s.sent, s.una = s.sent[:0], s.nxt
	s.fill()
	for s.w.cwnd < s.w.ssthresh {
		s.ack()
	}
	s.ack()
	if c.k != 0 || math.Abs(c.wMax-s.segs()) > 3 {
		t.Fatalf("first stage after an RTO: K %.3f, W_max %.1f, cwnd %.1f; want K 0 and W_max the window at its start", c.k, c.wMax, s.segs())
	}
}

// hystartRTT is a path whose RTT is base, and base+rise for segments sent in [from, to).
func hystartRTT(base, rise time.Duration, from, to int64) func(int64) int64 {
	return func(sentAt int64) int64 {
		if sentAt >= from && sentAt < to {
			return int64(base + rise)
		}
		return int64(base)
	}
}

// HyStart++ (RFC 9406) leaves slow start when a round's minimum RTT rises by the threshold
// (an eighth of 40 ms, 5 ms): conservative slow start grows a quarter as fast, and after
// five rounds of it congestion avoidance begins, all without a loss.
func TestHyStartLeavesSlowStartOnRTTRise(t *testing.T) {
	const base = 40 * time.Millisecond
	start := int64(time.Second)
	rise := start + int64(5*base) // from the sixth round on, a queue: +10 ms
	s := newCCSim(t, &cubic{}, 1000, base)
	s.rtt = hystartRTT(base, 10*time.Millisecond, rise, math.MaxInt64)
	c := s.w.algo.(*cubic)
	var cssAt float64
	cssRounds := 0
	var lastRound uint32
	for s.w.ssthresh == maxCwnd {
		prev := c.hs.phase
		s.ack()
		if prev == hsSS && c.hs.phase == hsCSS {
			cssAt = s.segs()
			lastRound = c.hs.windowEnd
			if s.now < rise {
				t.Fatalf("CSS at %v, before the RTT rose", time.Duration(s.now-start))
			}
		}
		if c.hs.phase == hsCSS && c.hs.windowEnd != lastRound {
			cssRounds++
			lastRound = c.hs.windowEnd
		}
		if c.hs.phase == hsSS && cssAt != 0 {
			t.Fatal("back in slow start with the RTT still high")
		}
		if s.now-start > int64(time.Minute) {
			t.Fatalf("still in slow start after a minute: cwnd %.0f, phase %d", s.segs(), c.hs.phase)
		}
	}
	if cssAt == 0 {
		t.Fatal("left slow start without CSS")
	}
	// Five rounds at a quarter of slow start's growth: ×(1 + 1/4) a round, against ×2.
	got, want := s.segs()/cssAt, math.Pow(1.25, hsCSSRounds)
	if got > want*1.15 || got < want/1.15 || cssRounds != hsCSSRounds-1 {
		t.Errorf("CSS grew cwnd ×%.2f over %d more rounds (from %.0f to %.0f segments), want ×%.2f (1.25 a round) over %d",
			got, cssRounds, cssAt, s.segs(), want, hsCSSRounds-1)
	}
	if s.w.ssthresh != s.w.cwnd || c.hs.on() {
		t.Errorf("ssthresh %d, cwnd %d, HyStart++ on %v: want congestion avoidance from the window CSS reached", s.w.ssthresh, s.w.cwnd, c.hs.on())
	}
	t.Logf("CSS at %.0f segments, congestion avoidance at %.0f after %v", cssAt, s.segs(), time.Duration(s.now-start))
}

// A rise that does not last (a transient queue, jitter) sends HyStart++ into CSS, and the
// next round whose minimum RTT is below the one that started CSS brings slow start back.
func TestHyStartSpuriousRiseResumesSlowStart(t *testing.T) {
	const base = 40 * time.Millisecond
	start := int64(time.Second)
	rise := start + int64(5*base)
	s := newCCSim(t, &cubic{}, 1000, base)
	s.rtt = hystartRTT(base, 10*time.Millisecond, rise, rise+int64(base))
	c := s.w.algo.(*cubic)
	entered, resumed := false, false
	var at float64
	for s.now-start < int64(12*base) {
		prev := c.hs.phase
		s.ack()
		switch {
		case prev == hsSS && c.hs.phase == hsCSS:
			entered = true
		case prev == hsCSS && c.hs.phase == hsSS:
			resumed = true
			at = s.segs()
		}
	}
	if !entered || !resumed || c.hs.phase != hsSS || s.w.ssthresh != maxCwnd {
		t.Fatalf("entered CSS %v, resumed slow start %v, phase %d, ssthresh %d; want slow start again", entered, resumed, c.hs.phase, s.w.ssthresh)
	}
	// Slow start again: the window doubles each round.
	r0, w0 := c.hs.windowEnd, s.segs()
	for c.hs.windowEnd == r0 {
		s.ack()
	}
	r1, w1 := c.hs.windowEnd, s.segs()
	for c.hs.windowEnd == r1 {
		s.ack()
	}
	if g := s.segs() / w1; g < 1.8 || g > 2.2 {
		t.Errorf("after resuming: a round grew cwnd ×%.2f (%.0f to %.0f; %.0f before), want ×2", g, w1, s.segs(), w0)
	}
	t.Logf("CSS then slow start again at %.0f segments", at)
}

// Congestion control is chosen per host, per listener and per dial, and shows in ConnStats.
func TestTCPCongestionControlSelection(t *testing.T) {
	p := newTCPPair(t, TCPConfig{CongestionControl: NewReno})
	l, _, err := p.a.listenTCPConfig(netip.AddrPortFrom(netip.IPv4Unspecified(), 7), 0, nil, TCPSocketConfig{CongestionControl: CUBIC})
	if err != nil {
		t.Fatal(err)
	}
	p.round()
	c, err := p.b.dialAsync(netip.AddrPortFrom(ourIP, 7))
	if err != nil {
		t.Fatal(err)
	}
	p.run(time.Second, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return len(l.q) > 0 })
	sc, _ := l.AcceptTCP()
	if _, ok := sc.tcb.cc.algo.(*cubic); !ok || sc.Stats().CongestionControl != CUBIC {
		t.Errorf("listener with CUBIC on a NewReno host: accepted %T (%q)", sc.tcb.cc.algo, sc.Stats().CongestionControl)
	}
	if _, ok := c.tcb.cc.algo.(*newReno); !ok || c.Stats().CongestionControl != NewReno {
		t.Errorf("dial on a NewReno host: %T (%q)", c.tcb.cc.algo, c.Stats().CongestionControl)
	}
	d, err := p.b.dialAsyncConfig(0, netip.AddrPortFrom(ourIP, 7), TCPSocketConfig{CongestionControl: CUBIC})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.tcb.cc.algo.(*cubic); !ok {
		t.Errorf("dial with CUBIC: %T", d.tcb.cc.algo)
	}
	if _, err := p.b.dialAsyncConfig(0, netip.AddrPortFrom(ourIP, 7), TCPSocketConfig{CongestionControl: "bbr"}); err == nil {
		t.Error("dial with an unknown algorithm: no error")
	}
	if _, err := NewHost(Config{Ifaces: []Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}}}, TCP: TCPConfig{CongestionControl: "vegas"}}); err == nil {
		t.Error("host with an unknown algorithm: no error")
	}
	h, err := NewHost(Config{Ifaces: []Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}}}})
	if err != nil {
		t.Fatal(err)
	}
	if h.tcp.cfg.CongestionControl != DefaultCongestionControl {
		t.Errorf("default %q, want %q", h.tcp.cfg.CongestionControl, DefaultCongestionControl)
	}
}
