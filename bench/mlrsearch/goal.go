package mlrsearch

import (
	"fmt"
	"math"
	"time"
)

// Defaults, and where each comes from. RFC 9971 gives a recommended value only for the exceed
// ratio; the others are the values FD.io CSIT uses for its NDR/PDR tests
// (resources/libraries/robot/performance/performance_utils.robot, "Find NDR and PDR intervals
// using optimized search").
const (
	// DefaultExceedRatio is RFC 9971's RECOMMENDED Goal Exceed Ratio (section "Goal Exceed
	// Ratio"); CSIT uses it for both NDR and PDR.
	DefaultExceedRatio = 0.5
	// DefaultRelativeWidth is CSIT's NDR/PDR width. RFC 9971 recommends a relative width no
	// lower than the largest Goal Loss Ratio of the search, which 0.5 % (the PDR's) meets.
	DefaultRelativeWidth = 0.005
	// DefaultFinalTrialDuration is CSIT's final trial duration.
	DefaultFinalTrialDuration = time.Second
	// DefaultDurationSum is CSIT's duration sum: with an exceed ratio of 0.5 and 1-second
	// trials, 11 trials at a load decide it either way.
	DefaultDurationSum = 21 * time.Second
	// DefaultSearchDurationMax is CSIT's search duration limit (1200 s).
	DefaultSearchDurationMax = 20 * time.Minute
	// PDRLossRatio is CSIT's Partial Drop Rate loss ratio, 0.5 %.
	PDRLossRatio = 0.005
)

// A Goal is RFC 9971's Search Goal: what makes a load good enough (its loss ratio, exceed
// ratio, final trial duration and duration sum) and when the search for it may stop (its
// width). Search finds, for each goal, a relevant lower and upper bound no farther apart
// than RelativeWidth.
//
// Fields for which zero is not a valid value in RFC 9971 (the durations and the width) take
// their default when zero; LossRatio and ExceedRatio are used as given, zero included (a zero
// loss ratio is the NDR, a zero exceed ratio makes every trial count, as RFC 2544 does).
type Goal struct {
	// Name labels the goal in results and reports ("NDR", "PDR"). Optional.
	Name string
	// LossRatio is the Goal Loss Ratio, in [0, 1): a trial whose loss ratio is larger is a
	// high-loss trial for this goal.
	LossRatio float64
	// ExceedRatio is the Goal Exceed Ratio, in [0, 1): the share of the duration sum that
	// high-loss trials may take at a load that is still a lower bound.
	ExceedRatio float64
	// RelativeWidth is the Goal Width as a relative difference, in (0, 1): the goal is met
	// when upper − lower ≤ RelativeWidth × upper for its relevant bounds. Zero means
	// DefaultRelativeWidth.
	RelativeWidth float64
	// InitialTrialDuration is the Goal Initial Trial Duration: the shortest trial the search
	// makes for this goal, early on. Zero means FinalTrialDuration (RFC 9971's typical
	// default: no short trials).
	InitialTrialDuration time.Duration
	// FinalTrialDuration is the Goal Final Trial Duration: only trials at least this long can
	// make a load a lower bound. Zero means DefaultFinalTrialDuration.
	FinalTrialDuration time.Duration
	// DurationSum is the Goal Duration Sum: once the full-length trials at a load add up to
	// this (effective durations), the load is certainly a lower or an upper bound. Zero
	// means DefaultDurationSum, or FinalTrialDuration when that is longer.
	DurationSum time.Duration
}

// NDR is the Non-Drop Rate goal: loss ratio 0, with the defaults above (CSIT's NDR).
func NDR() Goal {
	return Goal{
		Name:                 "NDR",
		LossRatio:            0,
		ExceedRatio:          DefaultExceedRatio,
		RelativeWidth:        DefaultRelativeWidth,
		InitialTrialDuration: DefaultFinalTrialDuration,
		FinalTrialDuration:   DefaultFinalTrialDuration,
		DurationSum:          DefaultDurationSum,
	}
}

// PDR is the Partial Drop Rate goal: loss ratio 0.5 %, with the defaults above (CSIT's PDR).
func PDR() Goal {
	g := NDR()
	g.Name = "PDR"
	g.LossRatio = PDRLossRatio
	return g
}

// String is the goal's name, or its loss and exceed ratios when it has none.
func (g Goal) String() string {
	if g.Name != "" {
		return g.Name
	}
	return fmt.Sprintf("loss %g exceed %g", g.LossRatio, g.ExceedRatio)
}

// withDefaults fills the zero fields that have defaults.
func (g Goal) withDefaults() Goal {
	if g.RelativeWidth == 0 {
		g.RelativeWidth = DefaultRelativeWidth
	}
	if g.FinalTrialDuration == 0 {
		g.FinalTrialDuration = DefaultFinalTrialDuration
	}
	if g.InitialTrialDuration == 0 {
		g.InitialTrialDuration = g.FinalTrialDuration
	}
	if g.DurationSum == 0 {
		g.DurationSum = max(DefaultDurationSum, g.FinalTrialDuration)
	}
	return g
}

// minRelativeWidth keeps bisection away from the resolution of float64.
const minRelativeWidth = 1e-9

// validate checks a goal with its defaults filled in.
func (g Goal) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("mlrsearch: goal %s: %s", g, fmt.Sprintf(format, args...))
	}
	switch {
	case math.IsNaN(g.LossRatio) || g.LossRatio < 0 || g.LossRatio >= 1:
		return bad("loss ratio %g is not in [0, 1)", g.LossRatio)
	case math.IsNaN(g.ExceedRatio) || g.ExceedRatio < 0 || g.ExceedRatio >= 1:
		return bad("exceed ratio %g is not in [0, 1)", g.ExceedRatio)
	case math.IsNaN(g.RelativeWidth) || g.RelativeWidth < minRelativeWidth || g.RelativeWidth >= 1:
		return bad("relative width %g is not in [%g, 1)", g.RelativeWidth, minRelativeWidth)
	case g.FinalTrialDuration < 0 || g.InitialTrialDuration < 0 || g.DurationSum < 0:
		return bad("negative duration")
	case g.InitialTrialDuration > g.FinalTrialDuration:
		return bad("initial trial duration %v is longer than the final %v", g.InitialTrialDuration, g.FinalTrialDuration)
	case g.DurationSum < g.FinalTrialDuration:
		// RFC 9971 allows it but does not recommend it (repeatability suffers).
		return bad("duration sum %v is shorter than the final trial duration %v", g.DurationSum, g.FinalTrialDuration)
	}
	return nil
}
