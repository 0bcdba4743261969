package mlrsearch

import (
	"math"
	"time"
)

// The load selection. RFC 9971 leaves it to the implementation; this one follows the shape
// of CSIT's (a coarse-to-fine chain of targets per goal, external search that widens its
// steps, bisection in logarithmic space, the lowest load measured first), simplified:
//
// Each goal is searched in phases: precedingPhases coarse ones, then the goal itself. A
// coarse phase classifies loads with shorter trials and a smaller duration sum and stops at
// a wider width; each finer phase starts from the bounds the previous one found. Within a
// phase, with the phase's relevant bounds lo and hi (RFC 9971's definitions applied with the
// phase's criteria), the goal's selector nominates, in this order:
//
//   - the load it measured last, while that load is still undecided between lo and hi
//     (more trials at the same load, up to the phase's duration sum);
//   - a seed: the middle of the previous phase's bounds, then those bounds themselves, when
//     they lie between lo and hi;
//   - with both bounds: the geometric middle of lo and hi, or a load measured before (for
//     another goal) in the middle half of the interval, to share its trials; but when lo
//     came from a step down (below), steps up from lo as below while they stay under the
//     middle (a step down that found a lower bound, most often from the forwarding-rate
//     hint, is likely close under the goal's throughput);
//   - with an upper bound only: a step down from hi (external search), one phase width the
//     first time and doubling (in logarithmic space) each time it finds another upper bound,
//     or lower when hi's trials forwarded less (hi × forwarding ratio / (1 − loss ratio));
//     min load when the step would come within one width of it;
//   - with a lower bound only: a step up from lo, the same way, max load when within one width;
//   - with neither: max load.
//
// A phase is over when its bounds are within its width, when max load is a lower bound or
// when min load is an upper bound. Search measures, of all goals' nominations, the lowest
// load (RFC 9971: bounds found at smaller loads first are less likely to be invalidated),
// with the longest duration asked for it. Every nominated load is undecided for the phase
// that nominates it (a load strictly between the relevant bounds cannot be decided), so
// every trial brings some goal closer to its stopping conditions; the final bounds are
// always the goal's own RFC 9971 relevant bounds, whichever phase measured their trials.

// precedingPhases is the number of coarse phases before a goal's own (CSIT's default number
// of preceding targets).
const precedingPhases = 2

type phase struct {
	criteria
	width float64 // relative width at which the phase is over
}

type step int

const (
	stepStart step = iota
	stepRepeat
	stepSeed
	stepBisect
	stepDown
	stepUp
)

func (s step) String() string {
	return [...]string{"start at max load", "more trials", "seed from the previous phase", "bisect", "external search down", "external search up"}[s]
}

type nomination struct {
	ok       bool
	load     float64
	duration time.Duration
	step     step
	goal     int
}

// selector searches for one goal.
type selector struct {
	phases   []phase // phases[0] is the goal itself; higher indices are coarser
	phase    int     // the current one
	seeds    []float64
	pending  float64 // the load measured last, 0 for none
	up, down int     // external search steps made in a row
	gallop   bool    // the last new load came from a step down: step up from it, not bisect
}

// newSelector makes the phases of g: for phase p (0 the goal, precedingPhases the coarsest),
// with f = p / precedingPhases, the trial duration goes geometrically from the final to the
// initial trial duration (final^(1−f) × initial^f), the duration sum from the goal's to the
// initial trial duration the same way, and the relative width doubles in logarithmic space
// with each p (1 − (1 − width)^(2^p)).
func newSelector(g Goal) *selector {
	sel := &selector{phase: precedingPhases}
	for p := 0; p <= precedingPhases; p++ {
		ph := phase{criteria: g.criteria(), width: g.RelativeWidth}
		if p > 0 {
			f := float64(p) / precedingPhases
			geo := func(a, b float64) float64 { return math.Pow(a, 1-f) * math.Pow(b, f) }
			initial := g.InitialTrialDuration.Seconds()
			d := time.Duration(geo(g.FinalTrialDuration.Seconds(), initial) * float64(time.Second)).Round(time.Millisecond)
			ph.final = min(max(d, g.InitialTrialDuration), g.FinalTrialDuration)
			ph.durationSum = max(geo(g.DurationSum.Seconds(), initial), ph.final.Seconds())
			ph.width = 1 - math.Pow(1-g.RelativeWidth, math.Exp2(float64(p)))
		}
		sel.phases = append(sel.phases, ph)
	}
	return sel
}

// done reports whether a phase with relevant bounds lo and hi is over.
func (ph phase) done(lo, hi, minLoad, maxLoad float64) bool {
	return lo != 0 && hi != 0 && hi-lo <= ph.width*hi ||
		lo == maxLoad && hi == 0 ||
		hi == minLoad && lo == 0
}

// nominate returns the next trial this goal wants, or a nomination that is not ok when the
// goal has met its stopping conditions.
func (sel *selector) nominate(s *search) nomination {
	minLoad, maxLoad := s.cfg.MinLoad, s.cfg.MaxLoad
	for {
		ph := sel.phases[sel.phase]
		lo, hi := s.bounds(ph.criteria)
		if ph.done(lo, hi, minLoad, maxLoad) {
			if sel.phase == 0 {
				return nomination{}
			}
			sel.enter(sel.phase-1, lo, hi)
			continue
		}
		inside := func(x float64) bool { return x > lo && (hi == 0 || x < hi) }
		nom := func(load float64, st step) nomination {
			return nomination{ok: true, load: load, duration: ph.final, step: st}
		}
		if sel.pending != 0 && inside(sel.pending) {
			return nom(sel.pending, stepRepeat)
		}
		for _, x := range sel.seeds {
			if inside(x) {
				return nom(x, stepSeed)
			}
		}
		switch {
		case lo != 0 && hi != 0:
			mid := sel.bisect(s, lo, hi)
			if x := sel.stepUp(ph, lo, maxLoad); sel.gallop && x < mid {
				return nom(x, stepUp)
			}
			return nom(mid, stepBisect)
		case hi != 0:
			return nom(sel.stepDown(s, ph, hi), stepDown)
		case lo != 0:
			return nom(sel.stepUp(ph, lo, maxLoad), stepUp)
		}
		return nom(maxLoad, stepStart)
	}
}

// enter starts phase p from the bounds of the phase before it.
func (sel *selector) enter(p int, lo, hi float64) {
	sel.phase, sel.pending, sel.up, sel.down, sel.gallop, sel.seeds = p, 0, 0, 0, false, nil
	if lo != 0 && hi != 0 && hi-lo > sel.phases[p].width*hi {
		sel.seeds = append(sel.seeds, math.Sqrt(lo*hi))
	}
	if lo != 0 {
		sel.seeds = append(sel.seeds, lo)
	}
	if hi != 0 {
		sel.seeds = append(sel.seeds, hi)
	}
}

// bisect returns the geometric middle of lo and hi or, to share trials, the load already
// measured in the middle half of the interval (in logarithmic space) closest to it.
func (sel *selector) bisect(s *search, lo, hi float64) float64 {
	best, dist := math.Sqrt(lo*hi), 0.25
	span := math.Log(hi / lo)
	for _, l := range s.loads {
		if l <= lo || l >= hi {
			continue
		}
		if d := math.Abs(math.Log(l/lo)/span - 0.5); d <= dist {
			best, dist = l, d
		}
	}
	return best
}

func (sel *selector) stepDown(s *search, ph phase, hi float64) float64 {
	x := hi * math.Pow(1-ph.width, math.Exp2(float64(sel.down)))
	// The forwarding rate seen at hi, allowing for the goal's loss: a DUT that forwards at
	// most R frames/s meets a loss ratio r up to R / (1 − r).
	least := 1.0
	for _, t := range s.trials[hi] {
		least = min(least, t.LossRatio())
	}
	x = min(x, hi*(1-least)/(1-ph.lossRatio))
	if x <= s.cfg.MinLoad/(1-ph.width) {
		x = s.cfg.MinLoad
	}
	return x
}

func (sel *selector) stepUp(ph phase, lo, maxLoad float64) float64 {
	x := lo / math.Pow(1-ph.width, math.Exp2(float64(sel.up)))
	if x >= maxLoad*(1-ph.width) {
		x = maxLoad
	}
	return x
}

// won is told that the selector's nomination n was measured.
func (sel *selector) won(n nomination) {
	switch n.step {
	case stepDown:
		sel.down, sel.up, sel.gallop = sel.down+1, 0, true
	case stepUp:
		sel.up, sel.down = sel.up+1, 0
	case stepRepeat:
	default:
		sel.up, sel.down, sel.gallop = 0, 0, false
	}
	sel.pending = n.load
}
