package mlrsearch

import (
	"context"
	"fmt"
)

// LatencyFractions are the shares of the PDR at which CSIT measures latency after an NDR/PDR
// search: 10 %, 50 % and 90 %.
var LatencyFractions = []float64{0.1, 0.5, 0.9}

// LatencyLoads returns the loads at which to measure latency: each fraction (LatencyFractions
// when none are given) of r's relevant lower bound, which for CSIT is the PDR's (the intended
// load, not the conditional throughput). It returns nil when r has no lower bound.
func LatencyLoads(r GoalResult, fractions ...float64) []float64 {
	if r.RelevantLowerBound == nil {
		return nil
	}
	if len(fractions) == 0 {
		fractions = LatencyFractions
	}
	loads := make([]float64, len(fractions))
	for i, f := range fractions {
		loads[i] = f * r.RelevantLowerBound.Load
	}
	return loads
}

// FrameSizeResult is the search at one frame size.
type FrameSizeResult struct {
	FrameSize int
	Result    Result
}

// SearchFrameSizes searches at each frame size in turn: setup returns the configuration (its
// MaxLoad is usually the line rate at that size) and the trial for a size. It stops at the
// first error, returning the results so far, the failed size's included when its search ran.
func SearchFrameSizes(ctx context.Context, sizes []int, setup func(frameSize int) (Config, Trial, error)) ([]FrameSizeResult, error) {
	var out []FrameSizeResult
	for _, size := range sizes {
		cfg, trial, err := setup(size)
		if err != nil {
			return out, fmt.Errorf("mlrsearch: frame size %d: %w", size, err)
		}
		res, err := Search(ctx, cfg, trial)
		if res.Goals != nil || res.Trials != nil {
			out = append(out, FrameSizeResult{FrameSize: size, Result: res})
		}
		if err != nil {
			return out, fmt.Errorf("mlrsearch: frame size %d: %w", size, err)
		}
	}
	return out, nil
}
