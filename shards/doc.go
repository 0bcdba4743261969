// Package shards owns netchan's per-core loops. A shard is one goroutine pinned to one core that
// owns queue q of every interface of the pipeline (one UMEM shared by those sockets), its frames,
// its pipeline instance and its counters. Each loop runs to completion: reap completions, refill
// the fill rings, receive a batch, hand packets whose flow another shard owns to that shard, take
// packets handed to it, run the pipeline, transmit, publish counters.
//
// # Frames
//
// Every frame of a shard's UMEM is in exactly one place: the free list, the kernel's receive side
// (fill ring, in flight, rx ring), the current batch, a hand-off ring, the local stack, or the
// kernel's transmit side (tx ring, in flight, completion ring). The shard counts each place and,
// with Config.Debug, tracks every frame's place and checks each move, so a lost or doubly freed
// frame is caught where it happens.
//
// # Hand-off
//
// A packet that arrives at a shard that does not own its flow is copied into a frame of the
// owner's UMEM and its own frame is freed at once (copies are counted). The owner gives each
// other shard spare frames of its own through a single-producer ring; the receiving shard copies
// the packet into one of those frames and publishes it on a second single-producer ring to the
// owner. So no shard ever writes another's free list or rings, and a handed-off frame is always
// owned by the UMEM it sits in. When the owner has lent no spare frame yet, the packets wait (in
// the receiving shard's frames) and the receiving shard takes less from its rx ring, so a burst
// is absorbed instead of dropped (counted as a hand-off stall); an owner that lends nothing for
// 100 ms gets its waiting packets dropped as handoff-full, so it cannot stall other flows for long.
//
// # Polling and the Go scheduler
//
// A shard's goroutine is locked to its thread and pinned to a core, and while it runs it holds
// one of GOMAXPROCS's Ps. The Go runtime keeps timers and newly readied goroutines on the P of
// whoever made them, so whatever sits on a shard's P (a socket user the stack just woke, a
// ticker whose goroutine last ran there) waits as long as the shard keeps that P: up to the
// runtime's 10 ms preemption slice while the shard is busy, and, when it slept in poll(2), until
// the runtime's monitor took the P back from the blocked system call (up to 10 ms as well).
// Execution traces of TestLabWrk (wrk with 64 connections and a 1 ms ticker, two shards on two
// cores) put most of the ticker's late time on a P held by a shard sleeping in poll(2). So:
//
//   - A shard spins while work arrives, and after Config.SpinIdle without work it sleeps by
//     parking in the Go netpoller: an epoll fd over its sockets and an eventfd that other
//     shards and socket users signal, read with the pipeline's next deadline as the read
//     deadline. Only a sleeping shard is signalled (a flag pair checked in the order that
//     makes a lost wake-up impossible, see kick): a socket write to a busy shard costs no
//     system call. The netpoller is polled only by a P with nothing else to run, and an
//     unpinned shard yields on every pass of its spin, which keeps the run queues busy; so
//     an unpinned shard is woken directly, by moving its read deadline into the past (the
//     waker's goroutine readies it), and running unpinned shards look at sleeping ones' rx
//     rings and wake those with frames (wakeSleepers). At 2000 transactions/s in
//     bench/tcppeer this took p50 from 139 to 16 µs. Pinned shards keep the eventfd: a
//     pinned waker spins without yielding and would strand the woken goroutine on its P.
//     A parked goroutine gives up its P at once, so a sleeping shard strands nothing (in the
//     traces the ticker's time lost to shards fell from 300-400 ms to 10-20 ms in 2 s of
//     load). An idle instance still burns no core (about 1% for two shards), and a shard does
//     not starve a NAPI thread pinned to its core.
//   - An unpinned shard (Config.CPUs empty) yields while it spins: its goroutine is not locked
//     to a thread, so a yield is a cheap trip through the run queue, and socket users in the
//     same process (which need a P to run) are not held off by a spinning shard. In the
//     in-process peer benchmark (bench/tcppeer, two shards and their socket users on two Ps)
//     this turned request/response from 0.9x to about 2x gVisor's rate. It yields on the
//     first pass after work or after it woke a sleeping shard (what that readied waits on its
//     P), and otherwise every 10 µs, not on every pass: a yield goes through the global run
//     queue's lock, which the two spinning shards fought over (a quarter of the process's CPU
//     in the 1%-loss request/response test). That took one connection's request/response p50
//     from 11 to 6.6 µs there, and the 1%-loss test's p50 from about 16 to 14-15.6 µs.
//     A pinned shard's goroutine is locked to its thread, where a yield costs futex
//     hand-offs, so it spins without yielding (it is meant to own its core).
//   - A shard that has worked for yieldEvery (1 ms) without sleeping yields once, so what waits
//     on its P waits about that long, not 10 ms. Not on every pass: on a locked thread a yield
//     hands the P to another thread and back through futex wake-ups, measured at 13-25% of a
//     core when done per pass. The yield parks the shard on an eventfd it writes, so the
//     netpoller readies it and it runs again once its P has run what was queued there.
//     runtime.Gosched put it on the global run queue instead, which a P serves every 61st
//     time it schedules, ahead of its own queue: an execution trace of TestLabWrk showed the
//     ticker readied by its timer into the P's next slot, the shard taken up from the global
//     queue in front of it, and the socket users the shard then woke pushing the ticker to the
//     back of a queue of some 150 net/http goroutines. With the eventfd yield the ticker's p99
//     under wrk fell from 1.3-2.1 ms to 1.0-1.2 ms (8 runs), and wrk's rate rose from 70-76k
//     to 80-85k requests/s.
//
// GOMAXPROCS stays at the runtime's default (the cores the process may use), and socket users
// share the Ps with the shards. Raising it to shards + cores did not raise wrk's request rate
// measurably and made the ticker worse (p99 about 10 ms instead of 4 on two cores): with more
// running threads than cores, the kernel deschedules threads that hold Ps, and the timers on
// those Ps wait with them. Under wrk on two cores the ticker's p99 is now about yieldEvery
// (1.0-1.2 ms); a plain Go net/http server on the kernel's TCP under the same load shows 4-6 ms.
package shards
