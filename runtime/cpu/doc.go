// Package cpu owns what netchan knows about the machine's processors and how a shard's goroutine
// is tied to one of them.
//
// Data enters from three places: the cpuid instruction (vendor, brand, core counts and feature
// flags, through github.com/klauspost/cpuid/v2), sysfs (/sys/devices/system/cpu: which CPUs are
// online, their core, package and NUMA node ids) and the kernel's affinity mask
// (sched_getaffinity). It leaves as a [Topology] value, a list of [Allowed] CPU numbers, and the
// unpin function that [Pin] returns. Nothing here runs on the data path.
//
// # Pinning and the Go scheduler
//
// [Pin] locks the calling goroutine to its OS thread (runtime.LockOSThread) and then narrows that
// thread's affinity mask to one CPU; unpin restores the thread's previous mask before unlocking.
// The order matters: a thread whose mask has been narrowed is never handed back to the Go
// scheduler, so no other goroutine ever inherits a one-CPU mask. Three runtime facts make this
// hold without further bookkeeping:
//
//   - A locked thread runs only the goroutine locked to it.
//   - A goroutine that exits while still locked takes its thread with it: the runtime destroys
//     the thread rather than reusing it. Forgetting unpin therefore leaks nothing but a thread.
//   - Threads the runtime creates while the current goroutine is locked are cloned from the
//     runtime's template thread, which is started by the first LockOSThread (before Pin narrows
//     any mask), so they do not inherit the pinned mask either.
//
// That is also why [Allowed] reads the mask from a fresh goroutine: such a goroutine always runs
// on an unlocked thread, whose mask is the process's, even when the caller itself is pinned.
//
// # Limits
//
// Masks are read with a fixed 1024-bit cpu_set_t (unix.CPUSet), so CPU numbers 1024 and above are
// never reported as allowed and cannot be pinned to. [Current] uses the getcpu system call; it is
// the one use of unsafe in this package and lives in getcpu_unsafe.go.
package cpu
