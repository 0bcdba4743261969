// Package nat is netchan's sharded NAT44 (source NAT, masquerade): a pipeline stage on two
// interfaces, inside and outside, that rewrites TCP, UDP and ICMP query packets in place with
// incremental checksum updates (RFC 1624) and forwards each frame out of the other interface
// without copying it (the two interfaces' sockets share one UMEM per queue).
//
// # Using it
//
// The NAT is a host on both networks, so it is built on a stack.Host whose interfaces are
// [Inside, Outside], and it runs as an App whose interfaces are in the same order:
//
//	host, err := stack.NewHost(stack.Config{Ifaces: []stack.Iface{inside, outside}, Gateway: gw})
//	...
//	n, err := nat.New(nat.Config{InsidePrefix: lan, InsideAddr: lanAddr, Outside: wanAddr}, host)
//	...
//	inst, err := netchan.Start(netchan.Config{Interfaces: []string{"lan0", "wan0"}}, n.App(true))
//
// App(true) turns on the XDP fast path once the programs are attached (see below); App(false)
// keeps every packet on the shards. Stats reads the mappings and counters from any goroutine.
//
// # Sharding
//
// Each shard has its own flow tree of mappings. The owner of an inside flow is chosen from
// the inside source address alone, so one inside host's mappings all live at one shard and it
// keeps one external port per inside endpoint whatever queue its packets arrive on
// (endpoint-independent mapping, RFC 4787 REQ-1). External ports are shared by all shards
// through a port table per protocol (TCP, UDP, ICMP identifiers): 65536 atomic words, no
// pointers, no lock, each 0 when the port is free or 1 + the shard whose mapping holds it. A
// shard claims a port with a compare-and-swap from 0 when it makes a mapping and clears it
// when the mapping goes (expiry, a removed forward); only the holder clears it. Return
// traffic is owned by the shard the table names for its destination port (for ICMP errors,
// the port in the quoted header), and, when the port is free, by the shard whose slice of the
// port range holds it, so that packets to unknown ports still go to one deterministic place.
// Fragments from outside are the exception (see Fragments): only a datagram's first fragment
// has the port, so they are owned by their datagram. Owner implements these rules, and the
// shards hand packets that arrive on the wrong queue to their owner.
//
// Port preservation works at every shard: a new mapping keeps the inside port as its external
// port when that port is in the range (Config.PortLo-PortHi) and free, whichever shard's slice
// it lies in; with port slices alone, only hosts whose ports fell in their own shard's slice
// could keep them (half of them with two shards). When two shards want one port at once, the
// compare-and-swap gives it to one; the other takes another port. Ports that cannot be kept
// come from the shard's own slice first (each shard starts its search in its own slice, so
// shards rarely contend), then from the rest of the range, always claimed in the table. A
// shard that finds every port of a protocol taken stops searching for 10 ms (or until it
// frees one itself), so a flood of new flows cannot make it walk the range per packet.
//
// The table is read on the receive path (Owner) without synchronising with the shards that
// write it, so a packet can be steered by a claim that changes before it is processed: a
// reply to a port whose mapping expired meanwhile, or the first packet to a port a mapping
// took meanwhile. Such a packet meets no mapping at its shard and is dropped as nat-no-mapping,
// as it would have been a moment later or earlier; the claim itself is never shared by two
// shards.
//
// Static forwards live at one shard, the owner of their inside host: that shard sees the
// inside endpoint's outbound packets, claims the forward's external port in the table (so
// inbound packets, hairpinned ones included, find it by Owner) and counts it pending while a
// dynamic mapping of any shard holds the port or the inside endpoint (SetForwards). When
// SetForwards moves a port from a host of one shard to a host of another, the old shard frees
// the port at its next expiry scan and the new one takes it at its next scan after that.
//
// On a NIC with RSS the queue is chosen by the NIC's hash: with a symmetric key both
// directions of a flow land on one queue, but the owner here is a function of the inside
// address and of the external port, not of the 4-tuple, so hand-offs remain; steering rules
// (ethtool -N flow-type ... action Q) that send an external port range to its slice's queue
// remove most of them for return traffic (not those of preserved ports outside the owner's
// slice). The NAT does not pick external ports by the NIC's hash (as the stack's Dial does
// with pipelines.RSS): with endpoint-independent mapping one external port serves every
// remote the inside endpoint talks to, and the remote's address and port are half of the
// hash's input, so no port can be chosen that lands every remote's replies on one queue.
//
// # Mappings
//
// A mapping is two entries of the shard's flow tree: (protocol, inside address, inside port)
// and (protocol, outside address, external port), both naming one slot of the shard's mapping
// arena. The slot remembers up to maxDests remote endpoints with their state, which serves
// address-and-port-dependent filtering (the default: an inbound packet must come from an
// endpoint the inside host sent to) and the timeouts: TCP established ≥ 2 h 4 min and
// transitory 4 min (RFC 5382), UDP 5 min (≥ 2 min, RFC 4787), ICMP 60 s. Expired mappings give
// their port back. The arena is bounded (Config.MaxMappings per shard, default 65536): when it
// is full, or every external port of the protocol is taken, new flows are dropped and counted
// (nat-table-full, Stats.TableFullDrops), and existing ones keep working. One inside host
// holds at most Config.MaxMappingsPerHost dynamic mappings, all protocols together (default
// 4096; negative: no limit); its new flows beyond are dropped and counted (nat-host-limit,
// Stats.HostLimitDrops) while its existing mappings and every other host's go on, so that one
// host cannot take the ports and the arena of all the others. RFC 6888 (REQ-4) asks a
// carrier-grade NAT to limit the external ports a subscriber may hold; Linux's masquerade
// has no such limit. The count lives at the host's shard (a pointer-free open-addressing
// table sized with the arena), which holds all of the host's mappings; static forwards do
// not count.
//
// # Spoofed sources
//
// Before anything is translated, or handed to the NAT's stack, the source address is checked
// against the interface the packet came in on (ingress filtering, RFC 2827, RFC 3704): the
// inside takes only sources on the inside network, as strict reverse-path forwarding would,
// and the outside takes any source but those that belong inside or to nobody. Dropped as nat-spoofed-source (Stats.SpoofedDrops): from outside, a source on the inside
// network, the NAT's own outside or inside address (a land attack) or a martian; from inside,
// the NAT's own addresses, the inside network's network or broadcast address (prefixes up to
// /30: a /31 has none, RFC 3021) or a martian. Martians are 0/8, 127/8, 224/4 (multicast),
// 240/4 and 255.255.255.255. Other sources from inside that are not on the inside network
// remain nat-source-not-inside. A hairpinned packet's inbound half, whose source is the
// outside address, never comes from a wire: the shard that translated its source hands it to
// the shard that holds its destination port with Packet.InIf set to 2, which names no
// interface, so a frame from the wire that looks like it is dropped as spoofed. (Within one
// shard the two halves are translated in one go.) The XDP fast path checks no source, and
// need not: it translates only packets of exact 5-tuples a shard installed after letting a
// packet of that flow through these checks, so a packet with a spoofed source can take it only
// by carrying an installed flow's remote address and port, which are not of a filtered kind.
//
// # Fragments
//
// Fragmented datagrams are translated in both directions, their fragments in any order (RFC
// 4787 REQ-14), without reassembling them: each fragment leaves as it came, rewritten. Only a
// datagram's first fragment carries its ports, so the first fragment is translated as an
// unfragmented packet would be (mapping, filtering, addresses, ports, the transport checksum,
// which covers the whole datagram, updated incrementally) and its outcome is remembered for
// the datagram, keyed by its source, destination, protocol, IP ID and direction: the other
// fragments get the same addresses (and IP ID), or the same drop, or go to the same shard.
// Fragments that come before their first fragment are copied out of their frames and held;
// when the first fragment comes they are sent on after it, and if it does not come within
// FragmentLimits.Timeout they are dropped. The record of a datagram goes once every byte of
// it has passed (a copy arriving after that starts a new record, held until the timeout) or
// at the timeout.
//
// Fragments of one datagram must meet at one shard. Outbound, the owner is the inside
// source's, as for all its packets, and that shard holds the mapping. Inbound, Owner sends
// every fragment to the shard chosen from the datagram's addresses, protocol and IP ID (the
// stack's rule for reassembly, stack.Host.Owner); when that is not the shard that holds the
// first fragment's destination port (by the port table, see Sharding), it hands the first
// fragment there and every other fragment after it (held ones included), and that shard
// translates them, holding any that still come before the first. A hairpinned datagram is
// translated out at the sender's shard, then goes as an inbound datagram to the shard of its
// destination port, its fragments likewise. The XDP fast path never takes a fragment (the programs pass anything with MF or an
// offset to the shards), so a flow installed from a first fragment carries only the flow's
// unfragmented packets.
//
// IP IDs: outbound fragmented datagrams leave with a new IP ID, one per datagram (its
// fragments and copies of its first fragment share it), so that two inside hosts' datagrams
// cannot meet at a remote's reassembly with one ID (RFC 6864): each shard counts per bucket of
// (destination, protocol), from a random start, and takes only the IDs congruent to its index
// modulo the number of shards, so shards never hand out the same ID. A datagram that passes
// whole keeps its ID (it is atomic here, and the fast path does not rewrite IDs): one that a
// router behind the NAT fragments is not covered.
//
// Limits, per shard (Config.Fragments, FragmentLimits; zero takes the default):
//
//	Timeout        5 s    how long a datagram's record and its held fragments live
//	Held           256    early fragments held at once (at most Held frames' worth of memory)
//	HeldPerSource  64     of them from one source address (a whole 64 KiB datagram)
//	Datagrams      1024   fragmented datagrams tracked at once
//
// Every drop is counted by reason in the shard's drop counters, and in Stats.Fragments:
// nat-frag-timeout (held fragments whose first fragment did not come), nat-frag-buffer-full
// (an early fragment over Held or HeldPerSource: Stats tells BufferFull from SourceLimit),
// nat-frag-table-full (a fragment of a new datagram over Datagrams), nat-bad-fragment (a
// fragment no datagram can have: beyond 65535 bytes, a middle fragment not a multiple of 8
// bytes, or a TCP fragment that would overlap the TCP header, RFC 1858). A first fragment that
// cannot be translated is dropped with the reason an unfragmented packet would be, and so are
// the datagram's other fragments. Under a flood of fragments whose first never comes the
// limits hold the memory; datagrams whose first fragment comes first need no buffer and go on
// while the buffer is full, as does unfragmented traffic. Stats.Fragments.In counts fragments
// as the shards receive them, so one handed from one shard to another counts at both.
// Fragmented ICMP errors and fragmented echo requests to the outside address are not
// supported (dropped as nat-unsupported); fragments to the NAT's inside address go to its
// stack, which reassembles them.
//
// # The NAT box as a host
//
// ARP, and ICMP echo to the NAT's own addresses, go to the shard's stack instance, which also
// resolves next hops (the neighbour and route tables) for forwarded frames and sends ICMP
// time-exceeded when a TTL runs out. ICMP errors through the NAT, either way, are translated
// (see ICMP errors).
//
// # ICMP errors
//
// Destination unreachable and time exceeded are translated both ways, as RFC 5508 (BCP 148)
// asks; an error quotes the IP header and at least 8 bytes of the packet it is about, and the
// quote is translated as that packet was, back: its address, its port (or echo identifier),
// the quoted header checksum and the quoted transport checksum where the quote holds it
// (UDP's and ICMP's lie in the first 8 bytes, TCP's only in longer quotes; a UDP checksum of 0
// stays 0), each updated incrementally (RFC 1624); the ICMP checksum is computed afresh over
// the message, after it was found valid: one that fails is dropped as nat-bad-icmp-checksum
// (REQ-3), since the translation would make it valid. Neither direction refreshes or removes
// the mapping (REQ-6). Stats.ICMPErrorsTranslated counts both directions, ICMPErrorsOut those
// from the inside. Other ICMP messages than echo and these two (parameter problem, source
// quench, redirect) stay nat-unsupported, and so do fragmented ICMP errors.
//
// From outside (REQ-4), an error about a packet the NAT sent out is owned by the shard of the
// quoted source port (Owner), which holds its mapping: the quoted source becomes the inside
// endpoint again and the outer destination the inside host. A quote not from the outside
// address, or shorter than its header and 8 bytes, is dropped as nat-bad-icmp-quote; one
// whose port no mapping holds, as nat-no-mapping.
//
// From inside (REQ-5), an error is about a packet an inside host received from outside: an
// inside host's port unreachable after its socket closed and a late reply came, or a time
// exceeded or fragmentation-needed from a router on the inside. The quote is that packet as
// the inside host got it (from the remote, to the inside endpoint); the mapping of its
// destination endpoint reverts it to how it arrived (to the outside address and the external
// port), the outer source becomes the outside address, and the error goes out to the remote
// with its TTL lowered. Dropped and counted instead: nat-bad-icmp-quote when the quote cannot
// be of such a packet (shorter than its header and 8 bytes, a later fragment, a source other
// than the error's destination, a destination off the inside network, an ICMP message other
// than an echo reply); nat-no-mapping when no mapping holds the quoted inside endpoint; and,
// under address-and-port-dependent filtering, nat-filtered when the mapping would not have
// let the quoted packet in (its source is no remote endpoint the mapping knows, and the
// mapping is not a static forward), so that the NAT sends errors only about traffic it could
// have delivered, as the inbound path decides; endpoint-independent filtering lets any remote
// in, and so its errors out. Like all packets from the inside, an error is owned by the shard
// of its source address; the mapping lives at the shard of the quoted destination, which is
// the same host when an inside host reports on its own traffic. When a router on the inside
// sends the error about another inside host, the shards differ and the error is handed to the
// quoted host's shard, which translates it (a rare packet, and the alternative, a drop, would
// lose the fragmentation-needed that path MTU discovery through an inside router needs). An
// error to the outside address about a hairpinned packet (REQ-7) is translated out and then
// in again, as a hairpinned packet is: handed, when another shard holds the quoted source's
// port, to that shard, which delivers it to the inside host that sent the packet. The XDP fast
// path never carries ICMP (its programs take TCP and UDP flows only), so errors always come
// to the shards.
//
// # The XDP fast path
//
// With the fast path (App(true), which calls EnableXDPFastPath after attach) the shards
// hand established flows to the XDP programs of the two interfaces, the way Linux's
// flowtable offload or an OVS datapath takes over from the slow path: after a shard has
// translated and forwarded a packet of a mapping's endpoint, it installs that direction's
// flow (the 5-tuple as it arrives, the new address and port, the MACs the stack just wrote)
// in the program of the interface the packet came in on. The next packets of the flow are
// rewritten in the program (incremental checksums, TTL) and redirected to the other
// interface through a devmap: no AF_XDP socket, no copy into a UMEM, no shard.
//
//	inside host ──► [XDP inside: fast flow? rewrite src, TTL, MACs ─► redirect] ──► outside
//	                       │ no (first packet, SYN/FIN/RST, ICMP, TTL ≤ 1, options, fragment, > MTU)
//	                       ▼
//	                 AF_XDP ─► shard: mapping, filtering, state ─► forward + install flow
//
// The shard stays in charge. UDP flows are installed after their first packet each way,
// TCP ones once established; SYN, FIN and RST always reach the shard, so its state tracking
// and timeouts hold; the filtering holds because only endpoints the shard let through are
// installed (each flow is an exact 5-tuple). Under endpoint-independent filtering, packets
// from an endpoint the inside host never sent to pass but stay on the shard's path: the
// mapping keeps no state for that endpoint, so there is nothing to install. Before the expiry
// scan drops a mapping that looks idle it reads when its flows last forwarded a packet; a
// mapping's flows leave the programs with it, with an endpoint that gives way to another, and
// after 30 s (so that a changed neighbour MAC is picked up by the reinstall). Stats counts
// packets translated in the programs, flows installed, failed table operations, and frames
// the kernel dropped at the redirect (FastRedirectDrops, from the xdp_redirect_err and
// xdp_devmap_xmit tracepoints).
//
// Where a flow changes path (its first packets, FIN and RST, the reinstall every 30 s), a
// packet on the shard's path can be overtaken by the next ones on the fast path, as in any
// flow offload: a short reordering that TCP and UDP applications tolerate.
//
// On veth, a frame redirected into a veth reaches its peer only if the peer runs NAPI (an
// XDP program or GRO on): without it the kernel refuses the redirect and the frame is lost,
// so turn GRO on at the peers (`ethtool -K PEER gro on`; `netchan lab up --layout nat`
// does). The NAT watches for such refusals on its own devmaps (xdpprog.RedirectDrops.Watch):
// after the first one it turns the fast path off for good (Stats.FastOff) and the shards
// carry every packet, so a misfit peer costs the frames of about 10 ms, not the flows; tell
// the user FastPathHint then (`netchan nat` prints it). A NIC driver takes redirected frames
// whenever it has an XDP program, as netchan attaches one to both.
package nat
