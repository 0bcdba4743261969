// Package gen is netchan's traffic generator and analyser for multi-queue interfaces: netchan
// used as its own generator (as MoonGen uses DPDK). It is tooling (the bench layer), built on
// the root package's App and Start; no library package imports it.
//
// # How it works
//
// Gen.App is a netchan App. On each shard (one per queue, pinned) its pipeline has two
// stages:
//
//   - "gen-tx", an Originator: on each pass it allocates frames (Batch.Alloc), writes the
//     template with the next flow's addresses and ports and the payload header, fixes the
//     checksums and gives each a Transmit verdict. It is paced by the batch clock
//     (Batch.NowNanos): slot k of a shard's schedule is due at t0 + k/rate, a pass sends every
//     slot due by its clock (as many as the batch has room and the shard has free frames),
//     and NextDeadline asks for a pass at the next slot; the stage is pipelines.Punctual,
//     so the shard spins rather than sleeps while that slot is under a millisecond away
//     (the netpoller's sleeps end on whole milliseconds). At 1 kpps per shard and above,
//     packets leave 40-60 ns after their slot at the median (measured on veth, lab tests);
//     below, a shard sleeps between packets and they leave up to a millisecond late
//     (Config.Sleep makes every rate sleep). At high rates a pass sends what is due, up to
//     the batch's room. A shard that falls behind catches up in bursts, up to
//     Config.MaxLag; slots due longer ago are skipped and counted (Missed), so the achieved
//     rate is reported, never hidden, and Stats.Lateness gives each packet's lateness.
//   - "gen-rx", the analyser: it takes the replies of the running trial (the payload's magic
//     and run identifier), counts packets and bytes, tracks the sending shard's sequence
//     space (loss, reordering and duplicates, RFC 4737 style, with a bitmap window; see
//     Tracker), records the round trip (rx pass clock − tx time) in a per-shard log-linear
//     histogram (Histogram: HDR-style, 2 significant digits), and consumes the frame.
//     Owner (the App's owner function) hands each reply to the shard whose packet it
//     answers (the payload's tx shard), so every sequence space is tracked by one shard
//     without locks. Nothing allocates per packet.
//
// The App claims only the replies: for UDP and TCP the flows' source addresses and port
// range (udp:SRC:LO-HI), for ICMP the source addresses (SRC/32); the kernel keeps the rest.
// A reflector must send its answer to our source address: swapping MACs, addresses and
// ports (pipelines/basic.Reflect, a NIC loopback with swapping, netchan reflect), or a
// kernel answering ICMP echo, which makes any host a round-trip reflector.
//
// A trial (Gen.Trial, or Begin and Collect) runs on the started instance: every shard starts
// its schedule at its next pass, sends for the trial's duration, waits Config.Drain for the
// last replies, then publishes its counters once; Collect merges them into a Result (per
// queue and in total: packets, bytes, packets/s and bits/s, loss, reordering, duplicates,
// latency percentiles) and Trial adds the shards' own counters (frames dropped for a full
// tx ring, frames received per queue) and Config.Received, an external receive counter. Each
// trial has its own run identifier in the payload, so a late reply of one trial never
// counts in the next. Counts is the figure pair a throughput search (bench/mlrsearch) needs;
// an adapter is a few lines:
//
//	func(ctx context.Context, load float64, d time.Duration) (mlrsearch.TrialResult, error) {
//		sent, received, err := g.Counts(ctx, load, d)
//		return mlrsearch.TrialResult{Load: load, Duration: d, Offered: sent, Forwarded: received}, err
//	}
//
// # Measured here
//
// On the 2-core lab VM (veth, AF_XDP copy mode, 60-byte UDP, the peer's kernel as the sink,
// dropping the frames in raw PREROUTING once its veth counted them): the peer counted
// exactly R × T at 1 kpps for 10 s and at 10, 100 and 500 kpps for 2 s, on 1 and 2 queues;
// the ceiling was 0.79-0.82 Mpps on one queue and 1.6-1.66 Mpps on two (TestLabRates, TestLabMaxRate;
// the sink's receive runs on the sending core). With the kernel's closed-port path as the
// sink instead (ICMP port unreachable), one core reached only ~0.37 Mpps. Round trips: ICMP
// echo through the peer's kernel 7-50 µs at the median, through netchan reflect in the
// peer's namespace 160-450 µs (both instances sharing the 2 cores).
//
// # Conventions
//
// Frame sizes are Ethernet frame lengths WITHOUT the 4-byte FCS, as AF_XDP and the kernel
// count them: 60 to MTU+14 bytes. RFC 2544 and CSIT count the FCS: their 64-byte frame is
// 60 bytes here, their 1518 is 1514. ParseSizes takes "64fcs" to mean RFC's 64. Rates in
// bits/s count the frame bytes here (BPS) and, as WireBPS, the line rate they take (plus
// WireOverhead = FCS, preamble and inter-frame gap, 24 bytes per frame). IMIX_v4_1 (CSIT:
// 28×64, 16×570, 4×1518 with the FCS) is 28×60, 16×566, 4×1514 here, interleaved in a fixed
// 48-frame pattern, so runs repeat.
//
// The payload header (18 bytes, see PayloadLen) is small so that a 60-byte UDP or ICMP
// frame carries it; TCP (a plain ACK segment without options) needs 72 bytes. Its sequence
// number and tx time are 32 bits on the wire: the analyser extends sequence numbers to 64
// bits, and round trips up to 4.29 s are measured.
//
// Timestamps are software ones from the shards' pass clock (pipelines.Now, monotonic, one
// clock for every shard of the process): tx time is when the sending pass began, rx time
// when the receiving pass began, so a figure includes up to a pass of batching at each end
// and the hand-off between shards. Hardware timestamps (NIC rx timestamps through XDP
// metadata) are not read: neither veth nor AF_XDP copy mode has them. Latency is round trip
// through a reflector (Config.Reflector; Latency.Kind "round-trip") or one way through a
// device that forwards the packets back to the generator, on the same interface or on a
// second one (Config.Forwarded, RxIface; "one-way"): the same process sends and receives,
// so both ends read one clock. A receiver in another process or on another host is not
// supported: pipelines.Now is this process's clock.
//
// # Queues and flows
//
// The total rate is split evenly over the shards; shard i sends flows i, i+shards, ... in
// turn. On veth there is no RSS: a frame arrives at the peer on the queue it was sent on,
// so sending on N queues loads the peer's N queues. On a NIC the receiver's RSS hash picks
// the queue: RSSFlows chooses source ports so that the Toeplitz hash (pipelines.Toeplitz,
// MicrosoftKey by default) through the indirection table (pipelines.DefaultRETA) puts flow
// i on queue i % queues, every queue getting its share.
package gen
