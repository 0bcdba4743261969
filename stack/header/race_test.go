//go:build race

package header

// raceEnabled is true when the race detector is on: testing.AllocsPerRun
// counts the detector's own allocations then, so the allocation checks skip.
const raceEnabled = true
