//go:build !race

package echo_test

// raceEnabled is true when the race detector is on: testing.AllocsPerRun counts its own
// allocations then, so the allocation checks skip.
const raceEnabled = false
