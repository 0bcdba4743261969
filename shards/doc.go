// Package shards is netchan's engine: the per-core loops. A shard is one goroutine pinned to one
// core that owns queue q of every interface of the app (one UMEM shared by those sockets), its
// frames, its pipeline instance and its counters.
//
// Most programs do not use this package: the front door, netchan.Start in the module's root
// package, opens the AF_XDP ports, attaches the XDP program and runs an Engine over them. A
// program that brings its own links (in-memory ports from runtime/memport in a test, or AF_XDP
// links it opened itself) runs the engine directly:
//
//	e, err := shards.New(shards.Config{
//		Queues:      queues, // per shard: ID, UMEM (Mem, FrameSize, NumFrames) and its Links
//		NewPipeline: func(shard int) *pipelines.Pipeline { return &pipelines.Pipeline{Stages: []pipelines.Stage{stage}} },
//		Owner:       pipelines.OwnerBySource, // nil: no hand-off
//	})
//	...
//	err = e.Run(ctx) // blocks until ctx is done, then drains; the caller closes the links
//
// Packets enter through each Link's receive ring and leave through its transmit ring, to the
// owner shard's hand-off ring, or as a drop counted by reason. Snapshot reads every shard's
// counters from any goroutine without stopping it.
//
// Each loop runs to completion: reap completions, refill the fill rings, receive a batch, hand
// packets whose flow another shard owns to that shard, take packets handed to it, run the
// pipeline, transmit, publish counters.
//
// # Frames
//
// Every frame of a shard's UMEM is in exactly one place: the free list, the kernel's receive side
// (fill ring, in flight, rx ring), the current batch, a hand-off ring, the local stack, the
// kernel's transmit side (tx ring, in flight, completion ring), or lent (a stage gave it verdict
// Lend, as a netchannel does for its reader, and takes it back with Batch.Adopt). The shard
// counts each place and, with Config.Debug, tracks every frame's place and checks each move, so
// a lost or doubly freed frame is caught where it happens.
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
// A packet the owner function handed over runs the owner's whole pipeline; one a stage handed
// over (Batch.HandTo: NAT's hairpin and fragments) resumes at that stage, so the stages before
// it see each packet once, on the shard that received it.
//
// # Polling and the Go scheduler
//
// A running shard holds one of GOMAXPROCS's Ps, and the runtime keeps timers and goroutines
// readied by a goroutine on that goroutine's P: whatever sits on a shard's P waits as long as the
// shard keeps it. The rules that bound that wait:
//
//   - A shard spins while work arrives and, after Config.SpinIdle without work, parks in the Go
//     netpoller (an epoll fd over its sockets and an eventfd, with the pipeline's next deadline
//     as read deadline): a parked goroutine gives up its P at once, and an idle instance burns
//     no core. Only a sleeping shard is signalled (a flag pair checked in the order that makes a
//     lost wake-up impossible, see kick), so a socket write to a busy shard costs no system call.
//   - An unpinned shard (Config.CPUs empty) is woken by moving its read deadline into the past,
//     and running unpinned shards wake sleeping ones whose rx rings hold frames (wakeSleepers):
//     the netpoller is polled only by an idle P, and spinning shards keep the run queues busy.
//     Pinned shards are woken through the eventfd: a pinned waker spins without yielding and
//     would strand a goroutine it readied on its P.
//   - An unpinned shard yields while it spins, on the first pass after work or after waking a
//     sleeping shard, and otherwise every 10 µs: socket users in the process need a P, and a
//     yield on every pass fights over the global run queue's lock. A pinned shard does not
//     yield while it spins: on a locked thread a yield costs futex hand-offs.
//   - A shard that has worked for yieldEvery (1 ms) without sleeping yields once, by parking on
//     an eventfd it writes, so what waits on its P waits about 1 ms, not the runtime's 10 ms
//     slice. Not runtime.Gosched: the global run queue it uses runs the shard again ahead of
//     the P's own queue.
//   - GOMAXPROCS stays at the runtime's default and socket users share the Ps with the shards:
//     more Ps than cores lets the kernel deschedule threads that hold Ps, and their timers wait.
//
// The measurements and traces behind these rules are in docs/shards-scheduling.md.
//
// # Busy polling
//
// With Config.BusyPoll on, a shard drives the NAPI of its queues itself (preferred busy
// polling; docs/busy-poll.md). Each link whose socket busy polls (BusyPoller, an afxdp.Link
// opened with afxdp.Config.BusyPoll) and has a NAPI id is polled in every pass that finds its
// rx ring empty: a non-blocking recvfrom on the socket itself runs the queue's NAPI poll (up
// to the socket's budget of packets) in the shard's system call, and the receive that follows
// in the same pass takes what it brought. Transmit kicks (sendto) busy poll too. Go's
// netpoller is not involved: its one epoll is the whole process's and cannot busy poll for a
// socket.
//
// The counters say whether it works: BusyPollCalls counts the polls, and BusyPollRxPackets the
// packets a link's receive took in the same pass right after a poll of that link found its rx
// ring empty, so packets the poll brought. With the device's interrupts deferred
// (napi_defer_hard_irqs, gro_flush_timeout) nothing else runs the NAPI meanwhile, and
// BusyPollRxPackets comes close to RxPackets; far below it, the interrupts still do the work.
//
// A busy-polling shard polls for BusyPoll.Idle (1 ms by default, not SpinIdle) without work
// before it sleeps, and yields every yieldEvery meanwhile as a working shard does; while it
// sleeps, the kernel runs the NAPI from its gro_flush_timeout watchdog and then brings the
// interrupts back, so a sleeping shard is woken as usual. An Idle longer than the run makes
// a shard that never sleeps: a core, and its P, taken whole.
//
// The kernel records a socket's NAPI id with its first packet (zero-copy sockets know it at
// once), so a link starts "waiting", runs the usual loop, and after its first received
// packets reads the id once: on, or unavailable ("no NAPI id after the first packets") for
// good. veth and generic XDP give no NAPI id (measured, runtime/afxdp); the front door says
// so before the first packet through BusyPoll.Unavailable. Snapshot.BusyPoll reports every
// link's state, and the engine logs it at start and at each change: a link that cannot busy
// poll is never polled, and its shard's loop is the usual one.
package shards
