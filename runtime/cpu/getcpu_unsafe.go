//go:build linux

package cpu

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Current returns the CPU the calling thread is running on now (getcpu(2)), or -1 if the kernel
// will not say. Unless the calling goroutine is pinned with [Pin], the answer may be stale by
// the time it is returned; it is meant for tests and diagnostics.
func Current() int {
	var cpu, node uint32
	_, _, errno := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), uintptr(unsafe.Pointer(&node)), 0)
	if errno != 0 {
		return -1
	}
	return int(cpu)
}
