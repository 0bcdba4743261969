package gen

import (
	"math"
	"math/bits"
	"time"
)

// Histogram counts durations in nanoseconds in log-linear buckets, as HdrHistogram does with
// 2 significant digits: values below 256 ns have a bucket each; above, every power of two is
// split into 128 buckets, so a bucket is at most 1/128 (0.78%) of its values wide. Values
// from 0 to HistMax (about 18 minutes) are counted; larger ones count in the last bucket
// (and in Max exactly). It is a flat array without pointers (34 KiB), written by one shard
// without allocating, and merged with Add.
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	min, max int64
	sum      float64
}

const (
	histSubBits  = 7
	histSub      = 1 << histSubBits // 128 buckets per power of two
	histMaxBits  = 40
	histBuckets  = (histMaxBits-histSubBits)*histSub + histSub
	HistMax      = int64(1)<<histMaxBits - 1
	HistRelError = 1.0 / histSub
)

// bucket returns the index of v's bucket.
func bucket(v int64) int {
	if v < 0 {
		v = 0
	}
	if v > HistMax {
		v = HistMax
	}
	u := uint64(v)
	if u < 2*histSub {
		return int(u)
	}
	e := bits.Len64(u) - 1 - histSubBits // ≥ 1
	return (e+1)*histSub + int(u>>e) - histSub
}

// bucketRange returns the smallest and largest values of bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*histSub {
		return int64(i), int64(i)
	}
	e := i/histSub - 1
	sub := int64(i%histSub + histSub)
	lo = sub << e
	return lo, lo + 1<<e - 1
}

// Record counts one value in nanoseconds.
func (h *Histogram) Record(ns int64) {
	if ns < 0 {
		ns = 0
	}
	h.counts[bucket(ns)]++
	if h.n == 0 || ns < h.min {
		h.min = ns
	}
	if ns > h.max {
		h.max = ns
	}
	h.n++
	h.sum += float64(ns)
}

// Reset empties h.
func (h *Histogram) Reset() { *h = Histogram{} }

// Add merges o into h.
func (h *Histogram) Add(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max and Min are the largest and smallest values recorded, exactly (0 when empty).
func (h *Histogram) Max() int64 { return h.max }
func (h *Histogram) Min() int64 { return h.min }

// Mean is the average of the values recorded, exactly.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value below or at which a fraction q (0..1) of the values lie: the
// upper end of the bucket holding the ceil(q·n)-th smallest value, capped at Max. It is never
// below the true value and at most HistRelError (1/128) of it above (exact under 256 ns).
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketRange(i)
			return min(hi, h.max)
		}
	}
	return h.max
}

// Latency is a latency distribution's summary.
type Latency struct {
	// Kind is "round-trip" (through a reflector) or "one-way" (sender and receiver share a
	// clock); Clock says where the timestamps come from ("software": the shards' pass clock).
	Kind    string        `json:"kind"`
	Clock   string        `json:"clock"`
	Samples uint64        `json:"samples"`
	Min     time.Duration `json:"min_ns"`
	Mean    time.Duration `json:"mean_ns"`
	P50     time.Duration `json:"p50_ns"`
	P90     time.Duration `json:"p90_ns"`
	P99     time.Duration `json:"p99_ns"`
	P999    time.Duration `json:"p99_9_ns"`
	Max     time.Duration `json:"max_ns"`
}

// Summary gives h's percentiles.
func (h *Histogram) Summary() Latency {
	return Latency{Samples: h.n, Min: time.Duration(h.min), Mean: time.Duration(h.Mean()),
		P50: time.Duration(h.Quantile(0.50)), P90: time.Duration(h.Quantile(0.90)), P99: time.Duration(h.Quantile(0.99)),
		P999: time.Duration(h.Quantile(0.999)), Max: time.Duration(h.max)}
}
