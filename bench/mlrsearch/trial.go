package mlrsearch

import (
	"context"
	"time"
)

// A Trial is RFC 9971's Measurer: it sends traffic at load (the per-interface intended load,
// in whatever unit the caller uses for MinLoad and MaxLoad, typically frames per second) for
// duration and reports what came back. It should return promptly with an error when ctx is
// done. Search calls it from one goroutine, one trial at a time.
//
// Search sets the result's Load and Duration itself; the trial fills in Offered, Forwarded
// and, optionally, EffectiveDuration.
type Trial func(ctx context.Context, load float64, duration time.Duration) (TrialResult, error)

// TrialResult is RFC 9971's Trial Result: the trial's input (load and duration) and output
// (frame counts, from which the loss ratio and forwarding rate follow).
type TrialResult struct {
	// Load is the Trial Load (intended load) and Duration the Trial Duration (intended
	// duration) the trial was asked for.
	Load     float64
	Duration time.Duration
	// Offered is the number of frames the trial expected the SUT to forward (the frames
	// sent to it); Forwarded is the number it did forward (received back). Offered must not
	// be zero: Search reports an error for such a trial, since its loss ratio is undefined
	// (RFC 9971 recommends a min load that sends at least one frame in the shortest trial).
	Offered, Forwarded uint64
	// EffectiveDuration is RFC 9971's Trial Effective Duration, the time the trial counts
	// for in duration sums and in the search's duration limit. Zero means Duration. A
	// measurer that wants its overheads (setup, wait for the last frames) to count returns
	// them here.
	EffectiveDuration time.Duration
}

// LossRatio is RFC 9971's Trial Loss Ratio: (Offered − Forwarded) / Offered, 1 when nothing
// was offered. More frames forwarded than offered (duplicates) count as no loss: RFC 9971's
// forwarding ratio is at most 1.
func (r TrialResult) LossRatio() float64 {
	if r.Offered == 0 {
		return 1
	}
	if r.Forwarded >= r.Offered {
		return 0
	}
	return float64(r.Offered-r.Forwarded) / float64(r.Offered)
}

// ForwardingRate is RFC 9971's Trial Forwarding Rate: Load × (1 − LossRatio).
func (r TrialResult) ForwardingRate() float64 { return r.Load * (1 - r.LossRatio()) }

// Effective is the Trial Effective Duration: EffectiveDuration, or Duration when that is not
// positive.
func (r TrialResult) Effective() time.Duration {
	if r.EffectiveDuration > 0 {
		return r.EffectiveDuration
	}
	return r.Duration
}
