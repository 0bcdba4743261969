// Package stack is netchan's userspace IPv4 stack, one instance per shard, sans-IO: the shard
// hands it received frames (it is a stage) and asks it for frames to send and for its next
// deadline (it is an Originator); it starts no goroutines and no timers, so tests drive it with
// a fake clock.
//
// # Using it
//
// A Host holds the configuration and what the shards share; NewStack builds each shard's
// instance, and the Host's sockets are Go's own interfaces, usable from any goroutine once the
// shards run:
//
//	host, err := stack.NewHost(stack.Config{Ifaces: []stack.Iface{...}, Gateway: gw})
//	...
//	app := pipelines.App{
//		Name: "my-service",
//		NewPipeline: func(shard int) *pipelines.Pipeline {
//			return &pipelines.Pipeline{Stages: []pipelines.Stage{host.NewStack(shard)}}
//		},
//		Claims: host.Claims(), // the host's addresses and ARP for them
//		Owner:  host.Owner,    // the shard that owns a connection or a datagram's fragments
//	}
//	// start app with netchan.Start, then:
//	ln, err := host.Listen("198.18.0.1:80") // a net.Listener: serve it with net/http
//
// Frames enter through the stage (Process) and leave through the batch's verdicts (replies
// made in place) and through Originate (frames the stack starts: socket sends, ARP, timers).
// Users meet the stack only at the sockets' send and receive rings. Every dropped packet is
// counted with a reason (the shard's drop counters) and shown by `netchan status`.
//
// # What is shared and what is per shard
//
// What one Host (shared by every shard of an instance) owns: the configuration (addresses,
// routes, static neighbours), one neighbour table per interface (lock-free reads, because ARP
// replies arrive on any queue), the route table (longest-prefix match, read-only after start),
// and the socket registry. What each Stack (one per shard) owns: its flow tree (which socket a
// datagram belongs to), its fragment reassembly buffers, its pending-resolution queue and its
// IP ID sequence (IDs never collide between shards: shard s of n uses IDs ≡ s mod n).
//
// # Protocols
//
// Ethernet and ARP: requests for our addresses are answered in place (the request frame becomes
// the reply), senders are learned, next hops are resolved with a bounded pending queue, retries
// and a timeout, static entries come from the configuration, and shard 0 sends a gratuitous ARP
// for every address on start.
//
// IPv4: header validation (version, IHL, total length, checksum), martian sources dropped
// (reason martian-source: our own addresses, as in a land attack, our networks' broadcast
// addresses, 0.0.0.0/8, 127.0.0.0/8, multicast and 255.255.255.255), options skipped, fragments
// reassembled with memory and time limits (at the owner shard chosen by Host.Owner from the
// fragment's addresses and ID, since fragments of one datagram may arrive on different queues),
// outgoing datagrams fragmented to the interface MTU.
//
// ICMP: echo requests answered in place (reassembled ones through the fragmenting output path),
// port unreachable for UDP datagrams to closed ports (rate limited), and errors about our own
// datagrams delivered to the socket they concern.
//
// UDP sockets are net.PacketConn values that span all shards: opening and closing reach every
// shard as batched control messages and each registers the socket in its own flow tree; any
// shard delivers what it receives for the socket, and the socket's sends go out through one
// shard. The hand-over between shards and user goroutines is the only place with locks.
//
// # Limits
//
// Every table an attacker can fill has a limit in Config, and every drop at a limit is
// counted, by reason for a received packet and in Stats:
//   - ReassemblyBytes (4 MiB per shard) is charged for the fragment bytes held, not for the
//     size a fragment claims; room is made by giving up the datagrams idle longest
//     (Stats.ReasmEvicted), so a flood of incomplete datagrams pushes out its own kind while
//     datagrams whose fragments keep coming complete.
//   - NeighborTableSize (1024 per interface): a new neighbour takes the place of the oldest
//     learned one in its hash window (Stats.NeighborEvictions), which is resolved again when
//     next used; static entries stay (Stats.NeighborRefused counts the senders not learned).
//   - ARPPendingHops and ARPPendingPerHop (64 and 32 per shard): what waits for resolution
//     beyond them is dropped (arp-pending-full, Stats.ARPPendingFull).
//   - TCPConfig.MaxConns (16384 per shard; a TIME_WAIT connection gives way first) and a
//     listener's backlog (TCPConfig.Backlog, 128): SYNs beyond them are dropped
//     (tcp-connection-limit, tcp-backlog-full), except that a SYN takes the place of a
//     half-open connection whose SYN-ACK went unanswered for an RTO, so a SYN flood does not
//     lock clients out once it stops. There are no SYN cookies.
//
// The TestLimit tests drive each past its limit while other traffic goes on.
//
// # TCP
//
// Connections (tcp*.go) are net.Conn values owned by the shard that owns their 4-tuple (a dial
// picks a source port that hashes to its own shard; segments that arrive elsewhere are handed
// over). The shard runs RFC 9293 with MSS, window scaling, timestamps with PAWS (RFC 7323), SACK
// (RFC 2018), RFC 5961's challenge ACKs, RFC 6528 ISNs, SACK and NewReno recovery (RFC 6675,
// RFC 6582), RTO per RFC 6298 with a 200 ms floor and a backoff bounded by TCPConfig.MaxRTO,
// delayed ACKs, and sender and receiver silly-window avoidance, simultaneous open and close, a
// bounded TIME_WAIT table (MaxTimeWait per shard, oldest evicted), and keepalive
// (TCPConfig.KeepAlive for every connection, or per connection as net.TCPConn: SetKeepAlive,
// SetKeepAliveConfig; after KeepAliveCount unanswered probes the user sees ETIMEDOUT).
//
// Congestion control is NewReno by default, or CUBIC (RFC 9438) with HyStart++ (RFC 9406) in
// the initial slow start where TCPConfig.CongestionControl (a host) or TCPSocketConfig (a
// listener, a dial) selects it. Loss recovery reports its events to the algorithm, which alone
// sets cwnd and ssthresh; fast recovery is RFC 6582's for both. On short paths with small
// windows CUBIC grows as its Reno-friendly estimate; a spurious RTO restores its whole state
// (RFC 9438 §4.9). CUBIC is not the default yet: under every-10th-packet loss against the
// Linux kernel it sends 10 MB in 10–21 s where NewReno takes 0.2–2 s, in a cycle whose every
// turn waits out the receiver's delayed ACK (at 1% random and every-20th loss it is faster).
// Its constants, the measurements and what is still missing (RACK-TLP, PRR, TCP_INFO) are in
// docs/tcp-cc.md.
//
// The receiver acks every second segment as it arrives, turning that segment's frame into the
// ACK (tcpAckInPlace), and the rest after the batch or on the delayed-ACK timer: an ACK per
// receive batch is a stretch ACK whose loss leaves the sender waiting on its timers.
//
// A listener opened with ListenTCPApp hands its connections to a TCPApp on their shard instead
// of to Accept: the app's Ready runs in the shard's pass, reads and writes with
// TryRead/TryWrite, and what it writes leaves in the same pass, with the ACK riding on it (no
// goroutine per connection, no wake-ups between stack and application; `netchan echo` serves
// TCP echo and discard this way).
//
// What the sender adds to RFC 6675, each because a lab case needed it:
//   - A segment never runs past the peer's window, and a window too small to use (or zero) is
//     probed by the persist timer (RFC 9293 §3.8.6.1); for a small non-zero window the same
//     timer is the SWS override, which sends what fits (§3.8.6.2.1). No RTO runs while the
//     window is closed.
//   - Tail loss probes (RFC 8985 §7): when no ACK comes for two smoothed RTTs (at least 2 ms),
//     one new segment, or the last one again, draws a SACK for the tail; a SACK at or above
//     the probe starts recovery, as do three segments' worth SACKed on any ACK, not only on a
//     duplicate, and RFC 5827's early retransmit (fewer than four segments out, the window
//     full, all but the first SACKed).
//   - A lone segment (a request, a response) is probed after those two SRTTs too, without the
//     peer's worst-case delayed ACK (TLPMaxAckDelay, 200 ms) that RFC 8985 allows and Linux
//     and gVisor always add: with it, a lost request or response waits for the RTO. The
//     allowance is added only while more than one in eight of the peer's ACKs of lone segments
//     come late (after the uninflated probe time), a probe the peer reports with a D-SACK
//     block while it had sent no new data counting as late; the receiver sends such D-SACK
//     blocks (RFC 2883) for every segment that arrives wholly a duplicate. A peer that delays
//     every ACK costs one spurious probe before the allowance holds; one whose answers are
//     sometimes slow costs a spurious probe each time (SpuriousTLPs counts them).
//     TCPConfig.TLPAlwaysInflate restores Linux's behaviour.
//   - Lost retransmissions are found from SACKs, not RTOs: retransmissions go out in sequence
//     order, so a SACK for data first sent after the latest retransmission, or for a
//     retransmission later in the same sweep, shows the holes before it lost (RACK's idea,
//     RFC 8985, ordered by sequence instead of by per-segment send times, which the tcb does
//     not keep); they go again once per detection. This holds after an RTO too.
//   - Eifel (RFC 3522, RFC 4015): when the first ACK after an RTO echoes a timestamp from
//     before it, the RTO was spurious (a stalled peer or shard); the window is restored and
//     sending resumes with new data instead of going back over a flight that arrived.
//
// PAWS tolerates a timestamp one tick (1 ms) older than the newest seen, as Linux does: a
// flow's segments can reach the owner shard both directly and through the hand-off ring.
//
// The measurements behind these rules (loss recovery against the Linux kernel, request/response
// against gVisor, RTOs on an overloaded machine) are in docs/stack-tcp.md.
package stack
