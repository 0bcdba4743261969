//go:build linux

package cpu

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// maxCPUs is the number of CPUs a unix.CPUSet (a 1024-bit cpu_set_t) can describe.
const maxCPUs = 1024

// Allowed returns the CPUs in this process's affinity mask (sched_getaffinity), sorted. It gives
// the process's mask even when called from a goroutine that is pinned with [Pin].
func Allowed() ([]int, error) {
	set, err := processMask()
	if err != nil {
		return nil, err
	}
	return maskList(&set), nil
}

// processMask reads the affinity mask of an unpinned thread. A new goroutine never runs on a
// locked thread, and only locked threads have narrowed masks (see the package doc), so the
// mask it reads is the process's.
func processMask() (unix.CPUSet, error) {
	type result struct {
		set unix.CPUSet
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		r.err = unix.SchedGetaffinity(0, &r.set)
		ch <- r
	}()
	r := <-ch
	if r.err != nil {
		return r.set, fmt.Errorf("cpu: reading the process affinity mask (sched_getaffinity): %w", r.err)
	}
	return r.set, nil
}

func maskList(set *unix.CPUSet) []int {
	out := make([]int, 0, set.Count())
	for c := range maxCPUs {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out
}

// Pin locks the calling goroutine to its OS thread and restricts that thread to CPU cpu.
//
// The returned unpin restores the thread's previous affinity mask and unlocks the thread; it
// must be called from the same goroutine (it panics otherwise) and does nothing if called again.
// Pins nest: a pinned goroutine may Pin to another CPU, and each unpin restores the mask its Pin
// found. A goroutine that exits without calling unpin takes its thread with it (the runtime
// destroys a thread whose goroutine exits locked), so no other goroutine ever runs with the
// narrowed mask.
//
// Pin fails with a [*NotAllowedError] (matching [ErrNotAllowed]) if cpu is not in the process's
// affinity mask, which covers offline and nonexistent CPUs.
func Pin(cpu int) (unpin func(), err error) {
	// Lock first: the mask we read and change below must belong to the thread we keep.
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("cpu: reading this thread's affinity mask: %w", err)
	}
	allowed, err := processMask()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	if cpu < 0 || cpu >= maxCPUs || !allowed.IsSet(cpu) {
		runtime.UnlockOSThread()
		return nil, &NotAllowedError{CPU: cpu, Allowed: maskList(&allowed)}
	}
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("cpu: pinning this thread to CPU %d (sched_setaffinity): %w", cpu, err)
	}
	tid := unix.Gettid()
	done := false
	return func() {
		// Check the thread before touching done: another goroutine must not even read it.
		if unix.Gettid() != tid {
			panic("cpu: unpin called from a goroutine other than the one that called Pin")
		}
		if done {
			return
		}
		done = true
		if err := unix.SchedSetaffinity(0, &old); err != nil {
			// Keep the thread locked: when this goroutine exits the runtime destroys the
			// thread instead of handing a one-CPU thread to other goroutines.
			return
		}
		runtime.UnlockOSThread()
	}, nil
}
