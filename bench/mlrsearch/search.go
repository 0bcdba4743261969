package mlrsearch

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// Config is RFC 9971's Controller Input: the goals, and the loads the search may use.
type Config struct {
	// MinLoad and MaxLoad bound every Trial Load: 0 < MinLoad < MaxLoad. The unit is the
	// caller's (frames per second per interface, in RFC 9971's terms).
	MinLoad, MaxLoad float64
	// Goals are searched for together, all trials counting for all goals. Empty means
	// NDR() and PDR().
	Goals []Goal
	// SearchDurationMax ends the search before a trial that would take the search duration
	// (the sum of the trials' effective durations) past it, judged by the trial's intended
	// duration (a trial whose effective duration turns out longer can take the sum past
	// it); the goals not met by then are StatusIncomplete. Zero means
	// DefaultSearchDurationMax.
	SearchDurationMax time.Duration
	// Logf, if set, is told of every trial and why it was chosen.
	Logf func(format string, args ...any)
}

// Status says what a GoalResult means.
type Status int

const (
	// StatusIncomplete: the search ended (time limit, cancellation, trial error) before this
	// goal's stopping conditions; the bounds, if any, are as they were then.
	StatusIncomplete Status = iota
	// StatusRegular is RFC 9971's Regular Goal Result: both relevant bounds exist and are
	// no farther apart than the goal's width.
	StatusRegular
	// StatusNoUpperBound: MaxLoad is a lower bound, so no upper bound exists up to MaxLoad
	// (the SUT met the goal up to the largest load allowed). RFC 9971 says the relevant
	// upper bound does not exist; the result reports MaxLoad as an effective relevant lower
	// bound, with its conditional throughput, and as GoalResult.Upper.
	StatusNoUpperBound
	// StatusMinLoadUpperBound: MinLoad is an upper bound, so there is no lower bound: even
	// the smallest load allowed fails the goal.
	StatusMinLoadUpperBound
)

func (s Status) String() string {
	switch s {
	case StatusRegular:
		return "regular"
	case StatusNoUpperBound:
		return "no upper bound up to max load"
	case StatusMinLoadUpperBound:
		return "min load is an upper bound"
	}
	return "incomplete"
}

// End says why a search ended.
type End int

const (
	// EndDone: every goal reached its stopping conditions.
	EndDone End = iota
	// EndTimeLimit: the next trial would have taken the search past SearchDurationMax.
	EndTimeLimit
	// EndCanceled: the context was done.
	EndCanceled
	// EndError: a trial failed.
	EndError
)

func (e End) String() string {
	switch e {
	case EndDone:
		return "done"
	case EndTimeLimit:
		return "time limit"
	case EndCanceled:
		return "canceled"
	}
	return "trial error"
}

// Bound is a load classified as a bound, with every trial made at it.
type Bound struct {
	Load   float64
	Trials []TrialResult
}

// GoalResult is RFC 9971's Goal Result for one goal.
type GoalResult struct {
	// Goal is the goal searched for, its defaults filled in.
	Goal   Goal
	Status Status
	// RelevantLowerBound is the largest load below RelevantUpperBound classified as a lower
	// bound (with StatusNoUpperBound: MaxLoad, an effective lower bound); nil when there is
	// none.
	RelevantLowerBound *Bound
	// RelevantUpperBound is the smallest load classified as an upper bound; nil when there
	// is none.
	RelevantUpperBound *Bound
	// ConditionalThroughput is RFC 9971's conditional throughput at RelevantLowerBound (a
	// forwarding rate, in the unit of the loads); zero without a lower bound.
	ConditionalThroughput float64
	// Lower and Upper are the bounds' loads as a report shows them: Lower is
	// RelevantLowerBound's load, Upper RelevantUpperBound's or, with StatusNoUpperBound,
	// MaxLoad (nothing above it was tried). Zero when there is no such bound.
	Lower, Upper float64
}

// Regular reports whether r is RFC 9971's Regular Goal Result.
func (r GoalResult) Regular() bool { return r.Status == StatusRegular }

// Result is RFC 9971's Controller Output: a GoalResult per goal, in the order of
// Config.Goals, and, for the report, every trial made and what they took.
type Result struct {
	Goals []GoalResult
	// Trials are all trials, in the order made.
	Trials []TrialResult
	// SearchDuration is the sum of the trials' effective durations.
	SearchDuration time.Duration
	End            End
}

// Goal returns the result of the goal named name, or nil.
func (r *Result) Goal(name string) *GoalResult {
	for i := range r.Goals {
		if r.Goals[i].Goal.Name == name {
			return &r.Goals[i]
		}
	}
	return nil
}

// Search finds, for every goal of cfg, the relevant lower and upper bound and the
// conditional throughput (RFC 9971's MLRsearch), calling trial for each measurement. It
// makes no decision at random: the same trial results give the same search.
//
// The error is non-nil when cfg is invalid, when ctx is done (it wraps ctx.Err()) and when a
// trial fails or returns no offered frames; the Result then still holds the trials made and
// the bounds they gave. Running out of SearchDurationMax is not an error: Result.End says so
// and the unmet goals are StatusIncomplete.
func Search(ctx context.Context, cfg Config, trial Trial) (Result, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return Result{}, err
	}
	s := &search{cfg: cfg, trials: map[float64][]TrialResult{}}
	for _, g := range cfg.Goals {
		s.sels = append(s.sels, newSelector(g))
	}
	res := Result{End: EndDone}
	for {
		if err = ctx.Err(); err != nil {
			res.End = EndCanceled
			err = fmt.Errorf("mlrsearch: %w", err)
			break
		}
		var best nomination
		var noms []nomination
		for i, sel := range s.sels {
			n := sel.nominate(s)
			n.goal = i
			noms = append(noms, n)
			if n.ok && (!best.ok || n.load < best.load || n.load == best.load && n.duration > best.duration) {
				best = n
			}
		}
		if !best.ok {
			break
		}
		if res.SearchDuration+best.duration > cfg.SearchDurationMax {
			res.End = EndTimeLimit
			break
		}
		r, terr := trial(ctx, best.load, best.duration)
		if terr != nil {
			if ctx.Err() != nil {
				res.End, err = EndCanceled, fmt.Errorf("mlrsearch: trial at load %g: %w", best.load, terr)
			} else {
				res.End, err = EndError, fmt.Errorf("mlrsearch: trial at load %g for %v: %w", best.load, best.duration, terr)
			}
			break
		}
		r.Load, r.Duration = best.load, best.duration
		if r.Offered == 0 {
			res.End, err = EndError, fmt.Errorf("mlrsearch: trial at load %g for %v offered no frames", best.load, best.duration)
			break
		}
		s.add(r)
		res.Trials = append(res.Trials, r)
		res.SearchDuration += r.Effective()
		if cfg.Logf != nil {
			cfg.Logf("mlrsearch: trial %d: load %.6g for %v: loss ratio %.3g (goal %s, phase %d, %s)",
				len(res.Trials), r.Load, r.Duration, r.LossRatio(), cfg.Goals[best.goal], s.sels[best.goal].phase, best.step)
		}
		for i, n := range noms {
			if n.ok && n.load == best.load {
				s.sels[i].won(n)
			}
		}
	}
	for _, g := range cfg.Goals {
		res.Goals = append(res.Goals, s.result(g))
	}
	return res, err
}

func (cfg Config) normalized() (Config, error) {
	if !(cfg.MinLoad > 0) || !(cfg.MaxLoad > cfg.MinLoad) || math.IsInf(cfg.MaxLoad, 0) {
		return cfg, fmt.Errorf("mlrsearch: want 0 < MinLoad < MaxLoad < +Inf, have MinLoad %g, MaxLoad %g", cfg.MinLoad, cfg.MaxLoad)
	}
	if len(cfg.Goals) == 0 {
		cfg.Goals = []Goal{NDR(), PDR()}
	} else {
		cfg.Goals = slices.Clone(cfg.Goals)
	}
	for i := range cfg.Goals {
		cfg.Goals[i] = cfg.Goals[i].withDefaults()
		if err := cfg.Goals[i].validate(); err != nil {
			return cfg, err
		}
	}
	if cfg.SearchDurationMax == 0 {
		cfg.SearchDurationMax = DefaultSearchDurationMax
	}
	if cfg.SearchDurationMax < 0 {
		return cfg, fmt.Errorf("mlrsearch: negative SearchDurationMax %v", cfg.SearchDurationMax)
	}
	return cfg, nil
}

// search is the state shared by the goals' selectors: the trials by load.
type search struct {
	cfg    Config
	sels   []*selector
	trials map[float64][]TrialResult
	loads  []float64 // the keys of trials, ascending
}

func (s *search) add(r TrialResult) {
	if _, ok := s.trials[r.Load]; !ok {
		i, _ := slices.BinarySearch(s.loads, r.Load)
		s.loads = slices.Insert(s.loads, i, r.Load)
	}
	s.trials[r.Load] = append(s.trials[r.Load], r)
}

// bounds are the relevant bounds for c, as RFC 9971 defines them: hi the smallest load that
// is an upper bound, lo the largest load below hi that is a lower bound; 0 for none.
func (s *search) bounds(c criteria) (lo, hi float64) {
	for _, l := range s.loads {
		switch c.classify(s.trials[l]) {
		case UpperBound:
			return lo, l
		case LowerBound:
			lo = l
		}
	}
	return lo, 0
}

func (s *search) result(g Goal) GoalResult {
	c := g.criteria()
	lo, hi := s.bounds(c)
	r := GoalResult{Goal: g, Lower: lo, Upper: hi}
	switch {
	case lo != 0 && hi != 0 && hi-lo <= g.RelativeWidth*hi:
		r.Status = StatusRegular
	case lo == s.cfg.MaxLoad && hi == 0:
		r.Status, r.Upper = StatusNoUpperBound, s.cfg.MaxLoad
	case hi == s.cfg.MinLoad && lo == 0:
		r.Status = StatusMinLoadUpperBound
	}
	if lo != 0 {
		r.RelevantLowerBound = &Bound{Load: lo, Trials: slices.Clone(s.trials[lo])}
		r.ConditionalThroughput = c.conditionalThroughput(lo, s.trials[lo])
	}
	if hi != 0 {
		r.RelevantUpperBound = &Bound{Load: hi, Trials: slices.Clone(s.trials[hi])}
	}
	return r
}
