package stack

import "math"

// CUBIC's constants (RFC 9438 §5): C in segments per second cubed, the multiplicative
// decrease β_cubic, and the Reno-friendly additive increase α_cubic = 3(1−β)/(1+β), which
// makes CUBIC's average window that of Reno's 1 and 0.5 (§4.3).
const (
	cubicC     = 0.4
	cubicBeta  = 0.7
	cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)
)

// cubic is RFC 9438's congestion control. In congestion avoidance the window follows
//
//	W_cubic(t) = C·(t − K)³ + W_max,   K = ∛((W_max − cwnd_epoch) / C)
//
// where t is the time since the congestion avoidance stage began, cwnd_epoch the window
// then, and W_max the window at the last congestion event: concave below W_max (fast at
// first, flat near it) and convex above (probing ever faster). Each ACK moves cwnd towards
// W_cubic(t + RTT), at most half a window per RTT. Where Reno's window would be larger, as
// with short RTTs and small windows, the Reno-friendly estimate W_est is used (§4.3).
// Windows here are in segments; the sender's cwnd is in bytes.
//
// W_max is taken from the bytes in flight at the congestion event, the window actually in
// use: cwnd itself keeps growing while the application or the peer's window leaves it
// unused (no RFC 7661 validation yet), and a W_max from it would overstate the path.
//
// Slow start is HyStart++ (RFC 9406) in the initial slow start and RFC 3465's otherwise.
// Fast recovery is RFC 5681's (renoRecoveryDupAck and the others in tcp_cc.go) from the
// reduced ssthresh.
type cubic struct {
	wMax      float64 // W_max, segments (0: no congestion event since the last RTO)
	k         float64 // K, seconds
	epoch     int64   // when this congestion avoidance stage began (0: not begun)
	wEst      float64 // W_est, segments
	cwndPrior float64 // the window at the last congestion event, segments (α_cubic becomes 1 once W_est reaches it)
	acc       float64 // bytes of increase not yet in cwnd
	hs        hystart
	prior     cubicPrior // before the last undoable RTO (§4.9)
}

// cubicPrior is what an undo restores (RFC 9438 §4.9).
type cubicPrior struct {
	cwnd, ssthresh        uint32
	wMax, k, wEst, cwndPr float64
	epoch                 int64
	hs                    hystart
}

func (c *cubic) init(w *ccState, now int64) {
	w.cwnd = initialWindow(w.mss)
	w.ssthresh = maxCwnd
	c.hs.init()
}

func (c *cubic) onAck(w *ccState, a ccAck) {
	if a.inRecovery {
		renoPartialAck(w, a.acked)
		return
	}
	if w.cwnd < w.ssthresh {
		if w.ssthresh == maxCwnd && c.hs.on() { // the initial slow start
			inc, toCA := c.hs.onAck(a, w.mss)
			w.cwnd += inc
			if toCA {
				w.ssthresh = w.cwnd // RFC 9406 §4.3: congestion avoidance from here
			}
			return
		}
		w.cwnd += min(a.acked, 2*w.mss) // RFC 3465, L = 2
		return
	}
	c.avoid(w, a)
}

// wCubic is W_cubic(t) for t in seconds (RFC 9438 §4.2, figure 1).
func (c *cubic) wCubic(t float64) float64 {
	d := t - c.k
	return cubicC*d*d*d + c.wMax
}

// avoid is congestion avoidance (RFC 9438 §4.2 to §4.5) for one ACK.
func (c *cubic) avoid(w *ccState, a ccAck) {
	mss := float64(w.mss)
	cwnd := float64(w.cwnd) / mss
	if c.epoch == 0 {
		// A new stage: K from the window now (§4.2). With no congestion event to return to
		// (after an RTO, §4.8, or a slow start that HyStart++ ended) or one below the window
		// now, W_max is the window now and K is 0: the curve starts at its flat point.
		c.epoch = a.now
		c.acc = 0
		if c.wMax <= cwnd {
			c.wMax, c.k = cwnd, 0
		} else {
			c.k = math.Cbrt((c.wMax - cwnd) / cubicC)
		}
		c.wEst = cwnd
	}
	t := float64(a.now-c.epoch) / 1e9
	acked := float64(a.acked) / mss

	// The Reno-friendly estimate (§4.3): α_cubic per window acknowledged, 1 once W_est has
	// regained the window of the last congestion event.
	alpha := cubicAlpha
	if c.wEst >= c.cwndPrior {
		alpha = 1
	}
	c.wEst += alpha * acked / cwnd
	if c.wCubic(t) < c.wEst {
		if est := uint32(min(c.wEst*mss, maxCwnd)); est > w.cwnd {
			w.cwnd = est
		}
		c.acc = 0
		return
	}
	// The concave (cwnd < W_max, §4.4) and convex (§4.5) regions: towards W_cubic one RTT
	// ahead, by (target − cwnd)/cwnd per segment acknowledged, at most 1.5·cwnd.
	target := min(max(c.wCubic(t+float64(a.srtt)/1e9), cwnd), 1.5*cwnd)
	c.acc += (target - cwnd) / cwnd * float64(a.acked)
	if c.acc >= 1 {
		inc := math.Floor(c.acc)
		c.acc -= inc
		w.cwnd = uint32(min(float64(w.cwnd)+inc, maxCwnd))
	}
}

// reduce is the multiplicative decrease of a congestion event with flight bytes out (RFC 9438
// §4.6), with fast convergence (§4.7): a flow whose window was below its last W_max lowers
// W_max further, leaving bandwidth to newer flows.
func (c *cubic) reduce(w *ccState, flight uint32) {
	win := float64(flight) / float64(w.mss)
	if win < c.wMax {
		c.wMax = win * (1 + cubicBeta) / 2
	} else {
		c.wMax = win
	}
	c.cwndPrior = win
	w.ssthresh = max(uint32(math.Round(float64(flight)*cubicBeta)), 2*w.mss)
	c.epoch, c.acc = 0, 0
	c.hs.stop()
}

func (c *cubic) onDupAck(w *ccState, inRecovery bool) {
	if inRecovery {
		renoRecoveryDupAck(w)
	}
}

func (c *cubic) enterRecovery(w *ccState, flight uint32, now int64) {
	c.reduce(w, flight)
	w.cwnd = w.ssthresh + 3*w.mss
}

func (c *cubic) exitRecovery(w *ccState, flight uint32, now int64) { renoExitRecovery(w, flight) }

// onRTO is §4.8: ssthresh as for any congestion event, cwnd one segment, and the next
// congestion avoidance stage starts with K = 0 and W_max and W_est at its first window.
func (c *cubic) onRTO(w *ccState, flight uint32, undoable, inRecovery bool, now int64) {
	if undoable {
		c.prior = cubicPrior{cwnd: w.cwnd, ssthresh: w.ssthresh, wMax: c.wMax, k: c.k, wEst: c.wEst,
			cwndPr: c.cwndPrior, epoch: c.epoch, hs: c.hs}
		if inRecovery {
			c.prior.cwnd = w.ssthresh // the inflated window is not one to return to
		}
	}
	c.reduce(w, flight)
	c.wMax = 0
	w.cwnd = w.mss
}

// undo is §4.9: the RTO was spurious, so the state from before it comes back, the window at
// least as large as it was.
func (c *cubic) undo(w *ccState, now int64) {
	p := &c.prior
	w.cwnd, w.ssthresh = max(p.cwnd, w.cwnd), max(p.ssthresh, w.ssthresh)
	c.wMax, c.k, c.wEst, c.cwndPrior, c.epoch, c.hs = p.wMax, p.k, p.wEst, p.cwndPr, p.epoch, p.hs
	c.acc = 0
}
