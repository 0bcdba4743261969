package stack

import "fmt"

// Congestion control. The window the sender may have in flight (cwnd) and the slow-start
// threshold (ssthresh) are set here and nowhere else: loss recovery (tcp_recv.go, the RTO in
// tcp_send.go) reports events, and the connection's algorithm answers them by changing its
// ccState. Everything runs on the connection's shard; no event allocates.

// CongestionControl names a congestion control algorithm (TCPConfig.CongestionControl,
// TCPSocketConfig); the empty name takes the default.
type CongestionControl string

const (
	// CUBIC is RFC 9438's, with HyStart++ (RFC 9406) in the initial slow start.
	CUBIC CongestionControl = "cubic"
	// NewReno is RFC 5681's with RFC 6582's recovery: the default.
	NewReno CongestionControl = "newreno"
)

// DefaultCongestionControl is what an empty CongestionControl selects. It stays NewReno for
// now: under every-10th-packet loss CUBIC falls into a cycle whose every turn waits out the
// receiver's delayed ACK, and sends 10 MB to the Linux kernel in 10–21 s where NewReno takes
// 0.2–2 s (docs/tcp-cc.md); the choice is to be made again with PRR and RACK in place.
const DefaultCongestionControl = NewReno

// resolve returns the algorithm cc names, def for the empty name.
func (cc CongestionControl) resolve(def CongestionControl) (CongestionControl, error) {
	switch cc {
	case "":
		return def, nil
	case CUBIC, NewReno:
		return cc, nil
	}
	return "", fmt.Errorf("stack: unknown congestion control %q (want %q or %q)", string(cc), CUBIC, NewReno)
}

// newCongestionControl makes a connection's algorithm; cc is resolved.
func newCongestionControl(cc CongestionControl) congestionControl {
	if cc == NewReno {
		return &newReno{}
	}
	return &cubic{}
}

// congestionControl is one algorithm (NewReno, CUBIC). Each connection has its own value,
// made when the connection is; its methods change the window in w and their own state.
type congestionControl interface {
	// init sets the initial window once the handshake has fixed w.mss.
	init(w *ccState, now int64)
	// onAck is an ACK of new data, a partial ACK in recovery (RFC 6582) included.
	onAck(w *ccState, a ccAck)
	// onDupAck is a duplicate ACK, or one that SACKed new data (RFC 6675); when it is the one
	// that starts recovery it comes first, with inRecovery false, and enterRecovery after it.
	onDupAck(w *ccState, inRecovery bool)
	// enterRecovery is a loss found by duplicate ACKs or SACK: fast retransmit starts, with
	// flight bytes outstanding.
	enterRecovery(w *ccState, flight uint32, now int64)
	// exitRecovery is the full ACK that ends recovery, with flight bytes still outstanding.
	exitRecovery(w *ccState, flight uint32, now int64)
	// onRTO is a retransmission timeout with flight bytes outstanding. With undoable the RTO
	// may yet prove spurious (RFC 3522): the algorithm keeps what undo needs to restore.
	onRTO(w *ccState, flight uint32, undoable, inRecovery bool, now int64)
	// undo reverts the response to the last undoable RTO, which proved spurious (RFC 4015).
	undo(w *ccState, now int64)
}

// ccAck describes an ACK of new data.
type ccAck struct {
	acked      uint32 // bytes newly acknowledged
	flight     uint32 // bytes still outstanding after it
	ack        uint32 // the acknowledgment number
	sndMax     uint32 // the highest sequence sent (HyStart++'s rounds end there)
	rtt        int64  // an RTT sample taken from this ACK (0: none)
	srtt       int64  // the smoothed RTT (0: none yet)
	now        int64
	inRecovery bool // a partial ACK
}

// ccState is a connection's congestion control: the window the sender reads, and the
// algorithm that sets it.
type ccState struct {
	cwnd, ssthresh uint32
	mss            uint32
	algo           congestionControl
}

// maxCwnd bounds the window: far above any receive window (1 GiB, window scale 14).
const maxCwnd = 1 << 30

// initialWindow is RFC 6928's: min(10·MSS, max(2·MSS, 14600)).
func initialWindow(mss uint32) uint32 { return min(10*mss, max(2*mss, 14600)) }

// The events, as loss recovery calls them. They clamp what every algorithm must respect.

func (w *ccState) init(mss uint32, now int64) {
	w.mss = mss
	w.algo.init(w, now)
}

func (w *ccState) onAck(a ccAck) {
	w.algo.onAck(w, a)
	w.cwnd = min(w.cwnd, maxCwnd)
}

func (w *ccState) onDupAck(inRecovery bool) { w.algo.onDupAck(w, inRecovery) }

func (w *ccState) enterRecovery(flight uint32, now int64) { w.algo.enterRecovery(w, flight, now) }

func (w *ccState) exitRecovery(flight uint32, now int64) {
	w.algo.exitRecovery(w, flight, now)
	w.cwnd = min(w.cwnd, maxCwnd)
}

func (w *ccState) onRTO(flight uint32, undoable, inRecovery bool, now int64) {
	w.algo.onRTO(w, flight, undoable, inRecovery, now)
}

func (w *ccState) undo(now int64) { w.algo.undo(w, now) }

// Fast recovery as RFC 5681 §3.2 and RFC 6582 have it, shared by the algorithms, which differ
// in how far they reduce ssthresh: on entry cwnd is ssthresh plus the three segments the
// duplicate ACKs say have left, each further duplicate ACK adds one, a partial ACK takes off
// what it acknowledged and adds one back, and the full ACK leaves cwnd at ssthresh or just
// above what is still in flight.

func renoRecoveryDupAck(w *ccState) { w.cwnd += w.mss }

func renoPartialAck(w *ccState, acked uint32) {
	if acked >= w.cwnd {
		w.cwnd = w.mss
	} else {
		w.cwnd -= acked
	}
	if acked >= w.mss {
		w.cwnd += w.mss
	}
}

func renoExitRecovery(w *ccState, flight uint32) {
	w.cwnd = min(w.ssthresh, max(flight, w.mss)+w.mss) // RFC 6582 §3.2 step 6, option 1
}
