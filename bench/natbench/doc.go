// Package natbench measures UDP packets/s through a NAT on one core, side by side: netchan's NAT
// (package nat on shards, AF_XDP) against Linux forwarding with MASQUERADE and conntrack, with the
// same generator, the same receiver and the same core layout (issue 8). `netchan bench nat` runs it.
//
// # Topology
//
// Two labs of runtime/lab, built at the start and removed at the end (also on error or Ctrl-C),
// both named "ncn" + 3 random characters + a letter:
//
//	netchan  lab.LayoutNAT:    client ns c0 ── n0 [root: netchan NAT, shard on the NAT core] n1 ── s0 server ns
//	linux    lab.LayoutRouted: root n0 (client) ── r0 [rtr ns: ip_forward=1, MASQUERADE -o r1] r1 ── p0 server ns
//
// In the Linux lab the client is the root namespace's end of the first veth (the routed layout
// puts it there); it only sends, so the namespace it sits in changes nothing on the NAT path. Every
// veth has one queue.
//
// # Cores
//
// The generator (runtime/trafficgen, pinned to Options.GenCPU) sends UDP over Options.Flows
// source ports from the client's veth end. Everything the NAT does runs on Options.NATCPU: for
// netchan the shard's thread and the NAPI threads of n0 and n1 (threaded NAPI, XDP attached); for
// Linux the NAPI thread of r0 (threaded NAPI, GRO on so veth has NAPI), where the whole forward
// path runs (ip_rcv, conntrack, the nat table, ip_forward, the transmit into r1). The server's veth
// end carries the counting XDP program of trafficgen (count IPv4, XDP_DROP) with its NAPI thread
// pinned to the generator's core, so delivering to the server costs the NAT core nothing and the
// count is exact.
//
// # What a run measures
//
// Each run sends for Warmup + Window; over the Window it takes the packets the server's counter
// counted (packets/s), the NAT core's busy time from /proc/stat (user, nice, system, irq, softirq:
// the NAPI threads' time is system time) and, as a cross-check, the server interface's
// rx_packets. Three phases:
//   - "max": the generator's live-frame XDP engine at full speed, faster than either NAT:
//     packets/s through the NAT;
//   - "rate": the AF_XDP engine at Options.Rate: the frames reach the NAT as the sender's
//     skbs. This gives CPU per packet at equal load when the rate is below both NATs' maximum.
//   - "xdp-rate": the live-frame engine paced at Options.Rate in bursts of 64. The frames reach
//     the NAT as XDP frames with no skb, as a NIC's driver hands them over.
//
// Variants: "netchan" (the NAT on shards, every packet through AF_XDP), "netchan-xdp" (the same
// with its XDP fast path on: established flows never leave the XDP program) and "linux".
//
// # The document
//
// Run returns a bench/report document of scenario "nat": one case per phase (its own group),
// the variants, and per run the packets/s delivered to the server (the key metric), the
// forwarded packets/s, the NAT core's busy time per forwarded packet, the NAT's own threads' time
// per packet and the core's busy share; the run's RunRecord is its detail (Records decodes
// them). report's Execute runs the rounds: in each round every phase, in each phase every
// variant, the variants' order reversed every second round; each variant's lab is built once,
// before the first round. A run in which other processes took more than Options.MaxForeign of
// the NAT core is contaminated and repeated. The ratios are netchan's (and netchan-xdp's)
// forwarded packets/s over Linux's, with issue 8's target (Target, twice Linux) in max and
// xdp-rate, and Linux's CPU per packet over netchan's. A CPU profile (Options.Profile) is named
// in the document's Files.
//
// The live-frame engine writes the frame headers afresh on every frame: a page of its pool
// comes back as the receiver left it, and a NAT rewrites in place, so a reused page would go out
// with the NAT's addresses (docs/bench-notes.md tells how that once looked like a livelock).
package natbench
