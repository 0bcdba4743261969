package mlrsearch

import (
	"slices"
	"time"
)

// Class is RFC 9971's Load Classification of a load for one goal, from the trials made at
// that load so far.
type Class int

const (
	// Undecided: more trials are needed at this load.
	Undecided Class = iota
	// LowerBound: whatever the trials missing to the goal's duration sum show, the load
	// meets the goal (its loss ratio, with the exceed ratio's tolerance).
	LowerBound
	// UpperBound: whatever the missing trials show, the load fails the goal.
	UpperBound
)

func (c Class) String() string {
	switch c {
	case LowerBound:
		return "lower bound"
	case UpperBound:
		return "upper bound"
	}
	return "undecided"
}

// criteria are what load classification needs from a goal. The search also classifies with
// coarser criteria of its own (shorter trials, a smaller duration sum) on the way to a goal.
type criteria struct {
	lossRatio   float64
	exceedRatio float64
	final       time.Duration // trials at least this long are full-length
	durationSum float64       // seconds
}

func (g Goal) criteria() criteria {
	return criteria{g.LossRatio, g.ExceedRatio, g.FinalTrialDuration, g.DurationSum.Seconds()}
}

// sums are the four sums of effective durations (seconds) RFC 9971's classification starts
// from: full-length or short (by intended duration) × low-loss or high-loss.
type sums struct {
	fullLow, fullHigh, shortLow, shortHigh float64
}

func (c criteria) sums(trials []TrialResult) sums {
	var s sums
	for _, t := range trials {
		d := t.Effective().Seconds()
		high := t.LossRatio() > c.lossRatio
		switch {
		case t.Duration >= c.final && high:
			s.fullHigh += d
		case t.Duration >= c.final:
			s.fullLow += d
		case high:
			s.shortHigh += d
		default:
			s.shortLow += d
		}
	}
	return s
}

// classify is RFC 9971's load classification (appendix "Load Classification Code").
//
// Short trials count through their excess only: short low-loss time cancels short high-loss
// time in the proportion exceed/(1 − exceed), and whatever high-loss time is left over counts
// as if it were full-length. Then the time missing to the duration sum is imagined twice: all
// low-loss (the optimistic case) and all high-loss (the pessimistic one). The load is a lower
// bound when even the pessimistic high-loss share is within the exceed ratio, an upper bound
// when even the optimistic one is not, undecided otherwise.
func (c criteria) classify(trials []TrialResult) Class {
	high, whole, fullLow := c.effective(trials)
	allowed := whole * c.exceedRatio             // high-loss time a lower bound may have
	optimisticLower := high <= allowed           // the missing time all low-loss
	pessimisticLower := whole-fullLow <= allowed // the missing time all high-loss
	switch {
	case pessimisticLower && optimisticLower:
		return LowerBound
	case !pessimisticLower && !optimisticLower:
		return UpperBound
	}
	return Undecided
}

// effective returns the effective high-loss sum, the effective whole sum and the full-length
// low-loss sum of RFC 9971's classification: the optimistic exceed ratio is high / whole, the
// pessimistic one (whole − fullLow) / whole.
func (c criteria) effective(trials []TrialResult) (high, whole, fullLow float64) {
	s := c.sums(trials)
	coefficient := c.exceedRatio / (1 - c.exceedRatio)
	excess := max(0, s.shortHigh-s.shortLow*coefficient)
	high = s.fullHigh + excess
	whole = max(s.fullLow+high, c.durationSum)
	return high, whole, s.fullLow
}

// conditionalThroughput is RFC 9971's conditional throughput computation (appendix
// "Conditional Throughput Code"): the full-length trials sorted by loss ratio, the time
// missing to the duration sum counted as trials that lost everything, and the loss ratio at
// the (1 − exceed ratio) quantile of that time applied to the load.
func (c criteria) conditionalThroughput(load float64, trials []TrialResult) float64 {
	var full []TrialResult
	total := 0.0
	for _, t := range trials {
		if t.Duration >= c.final {
			full = append(full, t)
			total += t.Effective().Seconds()
		}
	}
	slices.SortStableFunc(full, func(a, b TrialResult) int {
		la, lb := a.LossRatio(), b.LossRatio()
		switch {
		case la < lb:
			return -1
		case la > lb:
			return 1
		}
		return 0
	})
	remaining := max(c.durationSum, total) * (1 - c.exceedRatio)
	quantile, set := 1.0, false
	for _, t := range full {
		if set && remaining <= 0 {
			break
		}
		quantile, set = t.LossRatio(), true
		remaining -= t.Effective().Seconds()
	}
	if remaining > 0 {
		// The quantile falls in the missing time: trials that lost everything.
		quantile = 1
	}
	return load * (1 - quantile)
}

// Classify is RFC 9971's Load Classification: whether a load whose trials so far are trials
// is a lower bound, an upper bound or undecided for goal g (its zero durations and width
// taking their defaults, as in Search). All trials must be at the same load.
func Classify(g Goal, trials []TrialResult) Class {
	return g.withDefaults().criteria().classify(trials)
}

// ConditionalThroughput is RFC 9971's Conditional Throughput of goal g at load, from the
// trials made at that load: the forwarding rate of the full-length trial at the (1 − exceed
// ratio) quantile of effective time by loss ratio, with time missing to the duration sum
// counted as total loss. At a load that is a lower bound its loss ratio is at most the
// goal's. It is zero when there are no full-length trials.
func ConditionalThroughput(g Goal, load float64, trials []TrialResult) float64 {
	return g.withDefaults().criteria().conditionalThroughput(load, trials)
}
