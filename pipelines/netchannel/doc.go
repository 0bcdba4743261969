// Package netchannel owns netchannels: per-flow channels from the NIC to a Go goroutine, in
// batches and without a copy. A user opens a channel for a flow spec; the XDP program takes
// exactly those flows from the kernel, each shard finds a packet's channel in its flow tree
// and lends the frame to the channel's reader, who reads views into the UMEM, turns them
// around or releases them, all without protocol processing in between. Everything no channel
// names stays with the kernel (ARP, ICMP, other ports, other flows), which may keep the same
// address.
//
// It follows Polyakov's netchannels (2006) and lifts their limits: a read returns a batch,
// not a packet; the reader sees the frame itself (zero copy, also to send); a blocking read
// costs no system call while packets flow. IPv4 only, like the rest of netchan today.
//
// # Use
//
//	set := netchannel.New(netchannel.Config{})
//	in, err := netchan.Start(netchan.Config{Interfaces: []string{"eth1"}, UMEM: netchan.UMEM{Frames: 8192}}, set.App("echo"))
//	...
//	ch, err := set.Open("udp:198.18.0.1:9999", netchannel.Options{})
//	b := netchannel.NewBatch(64)
//	for {
//		n, err := ch.Read(ctx, b)     // blocks; b holds up to 64 views
//		...
//		for i := 0; i < n; i++ {
//			pkt := b.Bytes(i) // the UMEM frame: Ethernet, IPv4, UDP
//			...               // turn it around in place
//		}
//		ch.Send(b) // or ch.Release(b); either empties b
//	}
//
// Set.Wrap puts the Set's stage in front of an App's own pipeline instead. Specs are the claim
// grammar's flow specs (package pipelines/claim): udp:198.18.0.1:9999,
// tcp:198.18.0.1:80<-203.0.113.0/24:*, udp:*<-198.51.100.0/24:53. Of two channels whose specs
// both take a packet, the more specific one gets it (the flow tree's rule); a spec as specific
// as an open one that overlaps it is refused.
//
// # Coexisting with the kernel
//
// On an attached Set (an instance on real interfaces) Open refuses a spec whose local port has
// a kernel socket (found through sock_diag; Options.AllowKernelSocket overrides) and adds the
// port to the namespace's ip_local_reserved_ports while the channel is open, so that the kernel
// does not hand it to its own connections; Close removes it again. A spec with any local port
// is not checked. The XDP program takes a flow spec's packets even when they are addressed to
// the kernel's own address (that is the point); broad claims still do not (runtime/xdpprog).
// A reader that starts flows of its own (Alloc, Send) gets the next hop's MAC from the
// kernel's neighbour table with Set.NextHopMAC (through runtime/hostnet).
//
// Non-first IPv4 fragments carry no ports and never match a flow spec: the XDP program passes
// them to the kernel (counted as FlowFragment), and a shard that gets one through another
// claim counts it (Set.Fragments) and leaves it to the pipeline. The first fragment carries
// the ports and is delivered, so a datagram that fragments is split between the channel and
// the kernel: keep a channel's datagrams within the MTU.
//
// ICMP errors quoting a channel's flow are not delivered to it: the XDP program would have to
// parse the quoted header to claim them without taking the kernel's ICMP; they stay with the
// kernel.
//
// # Shards, rings and who may call what
//
// A channel has one lane per shard. A shard delivers on the lane's rx ring and stocks empty
// frames for Alloc on its spare ring; the reader gives frames back on the back ring, to be
// freed (Release) or transmitted (Send). Each ring has one producer and one consumer, so the
// reader's side is one goroutine at a time: Read, TryRead, Release, Send and Alloc must not run
// concurrently on one channel (they take a mutex, but a batch is not safe to share). Close may
// come from any goroutine: it interrupts a blocked Read. A frame goes back to the shard that
// lent it whatever goroutine releases it.
//
// Read merges the lanes round robin; order holds per flow because a flow arrives on one
// queue. An AF_XDP socket receives only from its own queue, so a channel's flows reach the
// shard whose queue the NIC steers them to: on a NIC, RSS or flow-steering rules (ethtool -N)
// decide; on veth, the sender's transmit queue does (one queue in the lab). A reader sleeps in
// Read only after finding every ring empty; the shard wakes it with one channel send per
// batch it delivers, and never when the reader is awake.
//
// # Limits
//
// A channel's lane holds at most QueueLimit packets waiting and LendCap frames lent (waiting,
// held by the reader, stocked for Alloc, on their way back). Past either, arrivals are the
// channel's own loss, counted (queue-full, lend-cap): a slow reader never takes frames from the
// shard's other flows. Open refuses a channel whose cap does not fit what every shard can
// lend: its UMEM less the fill ring's share, a tx ring, a batch and the hand-off spares
// (pipelines.ShardInfo.Lendable), less the caps of the channels already open. With the default
// UMEM of 4096 frames that is nothing: give netchannels 8192 frames or more.
//
// Close stops the claims, takes the channel out of the trees, gives back what was queued and
// waits (CloseTimeout) for the reader to release what it holds; the instance's Stop closes
// what is still open and does not unmap the UMEM while a reader holds frames (it leaks the
// mapping instead, and says so). With Config.Debug, a frame given back twice panics where it
// happens and released frames are overwritten, so a reader that kept their bytes sees garbage.
//
// Per-channel counters (received, bytes, sent, released, drops by reason, lent, held) come
// from Channel.Stats and Set.Channels.
package netchannel
