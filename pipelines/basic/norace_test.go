//go:build !race

package basic

const raceEnabled = false
