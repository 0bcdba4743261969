// Package stats holds the arithmetic the benchmarks share over their runs' figures; the
// benchmarks in other modules (bench/tcppeer) use it too, so a median means the same in every
// report.
package stats

import "slices"

// Median is the middle value of v, or the mean of the two middle values when len(v) is even;
// 0 for an empty v. v is not changed.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
