package stack

import (
	"math"
	"time"
)

// HyStart++'s constants (RFC 9406 §4.3). The RTT threshold is an eighth of the last round's
// minimum RTT, clamped to 4–16 ms; eight samples make a round's minimum; conservative slow
// start grows at a quarter of slow start's rate for at most five rounds. L bounds the growth
// per ACK to eight segments, the RFC's value for a sender that does not pace.
const (
	hsMinRTTThresh  = int64(4 * time.Millisecond)
	hsMaxRTTThresh  = int64(16 * time.Millisecond)
	hsMinRTTDivisor = 8
	hsNRTTSample    = 8
	hsCSSGrowthDiv  = 4
	hsCSSRounds     = 5
	hsL             = 8
	hsNoRTT         = math.MaxInt64
)

// HyStart++ phases.
const (
	hsDone uint8 = iota // the initial slow start is over (a loss, or CSS ended)
	hsSS                // slow start, watching each round's minimum RTT
	hsCSS               // conservative slow start after an RTT rise
)

// hystart is HyStart++ (RFC 9406): slow start that leaves early when the RTT rises (a queue
// builds) instead of overshooting until loss. A rise of a round's minimum RTT over the last
// round's by the threshold starts conservative slow start (CSS); if the RTT then falls below
// the minimum that started it the rise was spurious and slow start resumes, and after
// CSS_ROUNDS rounds in CSS congestion avoidance begins.
//
// It needs eight RTT samples a round: with timestamps every ACK gives one (of 2 ms or more:
// tcpNewAck's rule for the 1 ms timestamp clock), without them only the timed segment does,
// one a round, and HyStart++ never leaves slow start early.
type hystart struct {
	phase                        uint8
	started                      bool
	windowEnd                    uint32 // the round ends when this is acknowledged (SND.NXT at its start)
	lastRoundMinRTT, curRoundMin int64
	samples                      int
	cssBaseline                  int64 // the round minimum RTT that started CSS
	cssRounds                    int
}

func (h *hystart) init() { *h = hystart{phase: hsSS, lastRoundMinRTT: hsNoRTT, curRoundMin: hsNoRTT} }

func (h *hystart) on() bool { return h.phase != hsDone }

func (h *hystart) stop() { h.phase = hsDone }

// onAck takes an ACK in the initial slow start and returns how much cwnd grows, and whether
// congestion avoidance begins.
func (h *hystart) onAck(a ccAck, mss uint32) (inc uint32, toCA bool) {
	if !h.started || seqGEQ(a.ack, h.windowEnd) { // a new round (§4.2)
		h.started = true
		h.windowEnd = a.sndMax
		h.lastRoundMinRTT, h.curRoundMin, h.samples = h.curRoundMin, hsNoRTT, 0
		if h.phase == hsCSS {
			if h.cssRounds++; h.cssRounds >= hsCSSRounds {
				h.phase = hsDone
				return 0, true
			}
		}
	}
	inc = min(a.acked, hsL*mss)
	if a.rtt > 0 {
		h.curRoundMin = min(h.curRoundMin, a.rtt)
		h.samples++
	}
	switch h.phase {
	case hsSS:
		if h.samples >= hsNRTTSample && h.curRoundMin != hsNoRTT && h.lastRoundMinRTT != hsNoRTT {
			thresh := max(hsMinRTTThresh, min(h.lastRoundMinRTT/hsMinRTTDivisor, hsMaxRTTThresh))
			if h.curRoundMin >= h.lastRoundMinRTT+thresh {
				h.cssBaseline = h.curRoundMin
				h.phase, h.cssRounds = hsCSS, 0
			}
		}
	case hsCSS:
		if h.samples >= hsNRTTSample && h.curRoundMin < h.cssBaseline {
			h.phase = hsSS // the rise was spurious (§4.3): back to slow start
		} else {
			inc /= hsCSSGrowthDiv
		}
	}
	return inc, false
}
