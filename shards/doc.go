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
// A shard spins while work arrives (without runtime.Gosched: on a thread-locked goroutine a
// yield costs two futex calls and a context switch; the Go runtime's asynchronous preemption
// still gives other goroutines the P), and after Config.SpinIdle without work it sleeps in poll(2) on its
// sockets and an eventfd that other shards signal on hand-off. An idle instance therefore burns
// no core, and a shard does not starve a NAPI thread pinned to its core. GOMAXPROCS stays at the
// machine's core count; socket users and the GC get a P whenever a shard sleeps or yields.
package shards
