// Package bench holds netchan's measurements: the benchmark harness behind `netchan bench rx`,
// `netchan bench reflect` and `netchan bench netchannel`, its drivers, and the results it keeps
// under bench/results/ with the command that made them.
//
// # What is measured
//
// On a lab veth pair of its own (lab "ncb" + 4 random characters, removed afterwards, also on
// error or Ctrl-C), with the generator (runtime/trafficgen: fixed-size UDP frames over N flows,
// sent from the peer's veth end) on one core and everything that receives on the other, side by
// side:
//
//	rx       kernel        a kernel UDP socket, recvmmsg(2) in batches, drop (bench/kernelsock)
//	         netchan       netchan.Start with the drop pipeline on netchan's AF_XDP port
//	         netchan-loop  netchan's port without the shard: a dedicated tight loop
//	         asavie        github.com/asavie/xdp's socket and rings, same program, sizes, loop shape
//	                       and pipeline (bench/asavie)
//	         xdp-drop      an in-kernel XDP program that counts and drops: the ceiling of the path
//	reflect  kernel        a kernel UDP echo, recvmmsg + sendmmsg back (the socket swaps addresses)
//	         netchan, netchan-loop, asavie   the reflect pipeline (swap and transmit)
//
// Each round runs every variant once at full load (the generator as fast as it can: packets/s)
// and once at a fixed offered load below what the generator can send (receive-core CPU per
// packet); the order of the variants is reversed every second round so no variant always follows
// the same one. Figures are medians over the rounds.
//
// # The report
//
// Run returns a bench/report document (schema netchan-bench/1, scenario rx or reflect) and
// `netchan bench` stores it as bench/results/KIND-DATE.json, prints its table and draws its plots;
// `netchan bench table` prints any stored document again, its figures recomputed from its runs.
// Its cases are the phases: "max" and "load", or with several frame sizes (Options.Sizes) one
// max case per size ("max 60B", "max 1514B") along the axis "frame size (bytes, without FCS)",
// the load phase staying one case at Options.Size. Every run records pps (the key metric:
// packets received, or for reflect the replies back at the generator's interface), tx_pps
// (reflect), ns_per_packet and task_ns_per_packet (receive core and own threads, below), the
// receive core's busy share and the generator's rate; the harness's whole record of the run
// (RunRecord: every counter, the count check, the generator's result, the receiver's detail) is
// the run's detail, read back with RunDetail. The ratios keep the targets the figures are held
// to: rx packets/s netchan ≥ 3× kernel and receive-core CPU per packet netchan ≤ 1/3 of
// kernel's and ≤ 1.5× xdp-drop's; reflect packets/s netchan ≥ 2.5× kernel and ≥ 1.5× asavie.
// Each ratio is given of the medians and paired by round.
//
// At full load the generator uses XDP_TX in live-frame mode by default: AF_XDP copy-mode
// transmit on every queue is no faster than the AF_XDP receivers and would measure itself
// (docs/bench-notes.md has the rates); --engine afxdp measures with it anyway. The load phase
// uses AF_XDP, which paces in bursts of 64 (the live-frame engine can pace too, but the figures
// kept under bench/results were made with AF_XDP).
// The two engines hand the receiver different work: AF_XDP transmit arrives as the sender's
// skbs (freed on the receive core, charging the sender's socket across cores), live frames as
// XDP frames from the sender's page pool (returned across cores).
//
// For reflect, the figure is the replies that reach the generator's interface. On two cores the
// generator's core also absorbs the replies (its veth end's NAPI thread runs there); when it
// falls behind, veth pushes back on the receiver's transmit, so the full-load reflect figure is
// partly the generator core's.
//
// # The netchannel benchmark
//
// `netchan bench netchannel` (RunNetchannel) redoes the experiment of Polyakov's netchannels
// (2006: 2-3x less CPU than epoll + recv/send sockets for 128-byte packets) on the same lab and
// harness: 128-byte UDP payloads (170-byte frames), a fixed set of offered rates and full load,
// receive-only (rx) and echo, side by side in interleaved rounds:
//
//	netchannel  netchan.Start with a netchannel.Set's App (UMEM of 8192 frames), one channel
//	            udp:198.18.0.1:9, one reader goroutine pinned to the receive core: Read, then
//	            Release (rx), or turn each view around in place and Send (echo). The interface
//	            keeps a kernel address (kernelEndpoint, as for the kernel socket)
//	epoll       a kernel UDP socket: epoll_wait, then recvfrom one datagram per call until
//	            EAGAIN (and sendto each back), through x/sys/unix on one locked, pinned thread
//	mmsg        the kernel variant: recvmmsg (+ sendmmsg) batches (bench/kernelsock)
//	xdp-drop    the in-kernel XDP_DROP floor (rx only; it is the floor of echo too)
//
// Its document (scenario netchannel) has a case per mode and offered rate ("rx 10000", "echo
// full"), grouped by mode along the axis "offered packets/s" (full load sits at 0, which plots
// leave out). xdp-drop runs in rx mode only; the runner's grid holds every variant in every case,
// so RunNetchannel answers xdp-drop's echo trials without running them and takes them out of the
// document. Besides the receive core's CPU per packet (/proc/stat) and the own threads'
// (schedstat) every run records the whole machine's, less the generator process's own threads,
// the loss, the machine's busy CPUs and the wake-ups per 1000 packets; each run that stands for
// its round also records its three CPU figures above the floor (ns_above_floor,
// task_ns_above_floor, machine_ns_above_floor): minus the same round's xdp-drop run in rx mode at
// the same rate. The ratios compare netchannel's CPU above the floor with epoll's (target ≤ 0.5)
// and recvmmsg's (≤ 1) by each of the three measures, in each case. A run that delivers less
// than half the median of its siblings (same case and variant; NetchannelOptions.Collapse) is an
// outlier: flagged, left out, and its round run once more. The kernel here accounts /proc/stat by
// ticks (HZ 250), so at low rates the receive-core figure is coarse, and a figure above the floor
// can come out at or below zero; the own-threads figure is exact but misses softirq work done
// outside those threads: the report gives both. A profiled run (NetchannelOptions.Profile) is
// named in the document's files and set-up, outside the figures.
//
// # Fair on two cores
//
// The generator process is pinned to the generator core (every thread). The receiver's thread
// is pinned to the receive core, and so is the receiving veth's NAPI thread: veth does its
// receive work (for AF_XDP: the copy into the UMEM) in NAPI, which by default runs in the
// sender's softirq, on the generator's core. The harness turns threaded NAPI on after each
// attach (XDP for the AF_XDP variants and xdp-drop; GRO for the kernel socket, since veth has
// NAPI only with one of them) and pins the threads again each time, since every attach makes
// them anew. For reflect, the generator attaches a counting XDP program to its own veth end and
// pins that end's NAPI threads to its own core, so replies are counted (and dropped) in the
// driver, on the generator's core, instead of climbing the peer namespace's stack on the
// receive core.
//
// CPU per packet is the receive core's busy time from /proc/stat (user, system, irq, softirq;
// the NAPI thread's time is system time) over the window, divided by the packets handled. On a
// shared machine other processes can run on the receive core too, so each run also records the
// time of the receiver's own threads (this process's threads and the NAPI threads, from
// /proc/PID/schedstat): the "own threads" figure, which other work does not inflate. The
// difference, the share of the receive core that other processes took, marks a run as
// contaminated above Options.MaxForeign (10%): it is repeated (twice at most) and kept in the
// document, and stands for its round only when no attempt of that round was clean. Every run
// records /proc/loadavg before it starts.
//
// # Counts
//
// Every run checks its counts over the whole run against the interfaces' counters (Check): the
// receiver's count plus the drops its side reports (AF_XDP rx-ring-full and no-fill-frame
// drops, the socket's receive-buffer drops) against the receiving interface's rx_packets, the
// generator's count against what left its veth end (tx_packets + tx_dropped, veth drops there
// when the receiving queue's ring is full), and for reflect the receiver's transmissions against
// the interface's tx counters and the generator's reply counter against its rx_packets.
//
// # The kernel socket
//
// netchan's veth end carries no kernel address. For a kernel run it gets 198.18.0.1/32 with the
// peer as point-to-point partner (a route to one host, not to the lab's /24), a permanent
// neighbour entry for the peer and GRO on; all three are removed when the run ends.
package bench
