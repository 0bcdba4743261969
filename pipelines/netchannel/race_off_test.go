//go:build !race

package netchannel

const raceEnabled = false
