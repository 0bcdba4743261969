// Package bench holds netchan's measurements: the benchmark harness behind `netchan bench rx`
// and `netchan bench reflect`, its drivers, and the results it keeps under bench/results/ with
// the command that made them.
//
// # What is measured
//
// On a lab veth pair of its own (lab "ncb" + 4 random characters, removed afterwards, also on
// error or Ctrl-C), with the generator (runtime/trafficgen: AF_XDP transmit of fixed-size UDP
// frames over N flows on every queue of the peer's veth end) on one core and everything that
// receives on the other, side by side:
//
//	rx       kernel        a kernel UDP socket, recvmmsg(2) in batches, drop (bench/kernelsock)
//	         netchan       shards.Start with the drop pipeline on netchan's AF_XDP port
//	         netchan-loop  netchan's port without the shard: a dedicated tight loop
//	         asavie        github.com/asavie/xdp's socket and rings, same program, sizes, loop shape
//	                       and pipeline (bench/asavie)
//	         xdp-drop      an in-kernel XDP program that counts and drops: the ceiling of the path
//	reflect  kernel        a kernel UDP echo, recvmmsg + sendmmsg back (the socket swaps addresses)
//	         netchan, netchan-loop, asavie   the reflect pipeline (swap and transmit)
//
// Each round runs every variant once at full load (the generator as fast as it can: packets/s)
// and once at a fixed offered load below what the generator can send (receive-core CPU per
// packet); the order rotates from round to round so no variant always follows the same one.
// Figures are medians over the rounds.
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
// /proc/PID/schedstat, plus the core's irq and softirq time): the "own threads" figure, which
// other work does not inflate. Every run records /proc/loadavg before it starts.
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
