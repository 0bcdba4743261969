//go:build race

package basic

const raceEnabled = true
