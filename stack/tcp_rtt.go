package stack

import "math/bits"

// rttEstimator is RFC 6298's: the smoothed round-trip time and its variation from RTT
// samples, the retransmission timeout they give within the configured minimum and maximum,
// and its exponential backoff, which the maximum bounds too (§5.5).
type rttEstimator struct {
	srtt, rttvar   int64 // ns; valid once ok
	rto            int64 // ns, before backoff
	minRTO, maxRTO int64
	backoff        int // doublings of rto since the last sample or acknowledgment
	ok             bool
}

// rttGranularity is the clock granularity G of RFC 6298 §2: the timestamp clock's tick, the
// coarsest clock samples come from.
const rttGranularity = tsHz

func (e *rttEstimator) init(cfg *TCPConfig) {
	*e = rttEstimator{rto: int64(cfg.InitialRTO), minRTO: int64(cfg.MinRTO), maxRTO: int64(cfg.MaxRTO)}
}

// sample takes an RTT measurement r (RFC 6298 §2.2, §2.3) and ends any backoff (§5.7).
func (e *rttEstimator) sample(r int64) {
	if !e.ok {
		e.srtt, e.rttvar, e.ok = r, r/2, true
	} else {
		d := e.srtt - r
		if d < 0 {
			d = -d
		}
		e.rttvar = (3*e.rttvar + d) / 4
		e.srtt = (7*e.srtt + r) / 8
	}
	e.rto = min(max(e.srtt+max(rttGranularity, 4*e.rttvar), e.minRTO), e.maxRTO)
	e.backoff = 0
}

// timeout is the retransmission (or persist) timeout: rto doubled for each backoff, at most
// maxRTO.
func (e *rttEstimator) timeout() int64 {
	if e.rto <= 0 || e.backoff >= 63-bits.Len64(uint64(e.rto)) {
		return e.maxRTO // the shift would overflow, so the product is far above any maximum
	}
	return min(e.rto<<e.backoff, e.maxRTO)
}
