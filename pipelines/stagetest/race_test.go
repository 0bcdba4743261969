//go:build race

package stagetest_test

// raceEnabled is true when the race detector is on: testing.AllocsPerRun counts its own
// allocations then, so the allocation checks skip.
const raceEnabled = true
