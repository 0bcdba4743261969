package stack

// newReno is RFC 5681's congestion control with RFC 6582's recovery: slow start with
// appropriate byte counting (RFC 3465, L = 2), one MSS per window of acknowledged bytes in
// congestion avoidance, and half the flight on a loss.
type newReno struct {
	caAcc                  uint32 // bytes acknowledged towards the next MSS in congestion avoidance
	undoCwnd, undoSsthresh uint32 // the window before an RTO that may prove spurious
}

func (r *newReno) init(w *ccState, now int64) {
	w.cwnd = initialWindow(w.mss)
	w.ssthresh = maxCwnd
}

func (r *newReno) onAck(w *ccState, a ccAck) {
	if a.inRecovery {
		renoPartialAck(w, a.acked)
		return
	}
	if w.cwnd < w.ssthresh {
		w.cwnd += min(a.acked, 2*w.mss) // RFC 3465, L = 2
		return
	}
	r.caAcc += a.acked
	if r.caAcc >= w.cwnd {
		r.caAcc -= w.cwnd
		w.cwnd += w.mss
	}
}

func (r *newReno) onDupAck(w *ccState, inRecovery bool) {
	if inRecovery {
		renoRecoveryDupAck(w)
	}
}

func (r *newReno) enterRecovery(w *ccState, flight uint32, now int64) {
	w.ssthresh = max(flight/2, 2*w.mss)
	w.cwnd = w.ssthresh + 3*w.mss
}

func (r *newReno) exitRecovery(w *ccState, flight uint32, now int64) { renoExitRecovery(w, flight) }

func (r *newReno) onRTO(w *ccState, flight uint32, undoable, inRecovery bool, now int64) {
	if undoable {
		r.undoCwnd, r.undoSsthresh = w.cwnd, w.ssthresh
		if inRecovery {
			r.undoCwnd = w.ssthresh // the inflated window is not one to return to
		}
	}
	w.ssthresh = max(flight/2, 2*w.mss)
	w.cwnd = w.mss
	r.caAcc = 0
}

func (r *newReno) undo(w *ccState, now int64) {
	w.cwnd, w.ssthresh = max(r.undoCwnd, w.cwnd), max(r.undoSsthresh, w.ssthresh)
}
