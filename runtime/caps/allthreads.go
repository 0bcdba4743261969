//go:build linux

package caps

// broadcast makes every thread take a plan's steps where syscall.AllThreadsSyscall refuses
// to (a binary with cgo); nil in a binary without cgo, where it is not needed.
var broadcast func(*plan) error
