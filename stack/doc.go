// Package stack is netchan's userspace IPv4 stack, one instance per shard, sans-IO: the shard
// hands it received frames (it is a stage) and asks it for frames to send and for its next
// deadline (it is an Originator); it starts no goroutines and no timers, so tests drive it with
// a fake clock.
//
// What one Host (shared by every shard of an instance) owns: the configuration (addresses,
// routes, static neighbours), one neighbour table per interface (lock-free reads, because ARP
// replies arrive on any queue), the route table (longest-prefix match, read-only after start),
// and the socket registry. What each Stack (one per shard) owns: its flow tree (which socket a
// datagram belongs to), its fragment reassembly buffers, its pending-resolution queue and its
// IP ID sequence (IDs never collide between shards: shard s of n uses IDs ≡ s mod n).
//
// Ethernet and ARP: requests for our addresses are answered in place (the request frame becomes
// the reply), senders are learned, next hops are resolved with a bounded pending queue, retries
// and a timeout, static entries come from the configuration, and shard 0 sends a gratuitous ARP
// for every address on start.
//
// IPv4: header validation (version, IHL, total length, checksum), options skipped, fragments
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
// Every dropped packet is counted with a reason (the shard's drop counters) and shown by
// `netchan status`.
package stack
