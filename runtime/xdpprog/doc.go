// Package xdpprog owns netchan's XDP program: the small BPF program that sits
// on an interface's receive path and decides, packet by packet, whether a
// frame belongs to the netchan pipeline (redirect to the AF_XDP socket of the
// frame's receive queue) or to the kernel (XDP_PASS).
//
// The package owns:
//   - the program itself, assembled at run time with cilium/ebpf's asm package
//     (no C, no clang, no generated object files);
//   - its maps: the XSKMAP (queue index → AF_XDP socket), the claim rules
//     (all-IPv4 flag, LPM trie of destination prefixes, protocol table,
//     per-protocol destination-port bitmaps, a hash of address-qualified
//     ports, ARP target hash, the flow shapes array and the flow hash of flow
//     specs), the deny set of kernel addresses, the fast flow table and its
//     one-slot devmap (see Fast flows), and a per-CPU counters array;
//   - who holds which claim: rules (package pipelines/claim) are owned and
//     reference-counted here, and the maps hold their union (see Rules);
//   - following the interface's kernel IPv4 addresses (FollowKernelAddrs);
//   - the attachment, always through a bpf_link, so the kernel detaches the
//     program when the process dies, even by SIGKILL (a program attached by
//     netlink would outlive the process and black-hole the claimed traffic).
//
// It does not own the AF_XDP sockets: the socket code creates and binds them
// and hands their fds in with [Program.RegisterSocket].
//
// # Data in and out
//
// Control plane (Go → kernel): Claim/Unclaim/ReleaseOwner (and the older
// Claim*/Unclaim* methods) write the rule maps and take effect for the next
// packet; SetKernelAddrs (or FollowKernelAddrs, from netlink address events)
// writes the deny set; RegisterSocket/UnregisterSocket write the XSKMAP.
// Data plane (kernel): frames arrive at the program, claimed frames leave
// through bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS) into the socket
// bound to that queue; everything else goes to the kernel stack.
// Observability (kernel → Go): [Program.Stats] sums the per-CPU counters.
//
// # Decision order
//
//	frame shorter than Ethernet (14 bytes)            → PASS
//	ethertype 0x0806 (ARP):
//	    complete Ethernet/IPv4 ARP (htype 1, ptype 0x0800, hlen 6, plen 4)
//	    and target protocol address in the ARP map     → CLAIM (ARP)
//	    otherwise                                      → PASS
//	ethertype 0x0800 (IPv4):
//	    shorter than a 20-byte header, version != 4,
//	    or IHL < 5                                     → PASS
//	    fast path on, and a fast flow matches          → FAST
//	    a flow shape in use, and TCP or UDP:
//	      fragment offset != 0                         → count FlowFragment, go on
//	                                                     with the rules below
//	      the whole fixed L4 header (TCP 20, UDP 8
//	      bytes) at the IHL-aware offset, and, for a
//	      shape in use, {dst, src, dst port, src port}
//	      masked by the shape, with the protocol and
//	      the shape's slot, in the flow hash           → CLAIM (Flow)
//	    destination is a kernel destination: in the
//	      deny set, 255.255.255.255, or 224.0.0.0/4    → KERNEL (count KernelDst,
//	                                                     skip all-IPv4, only a
//	                                                     /32 prefix applies)
//	    all-IPv4 flag set (not for KERNEL)             → CLAIM (AllIPv4)
//	    destination address in the LPM prefix map,
//	      and the match is a /32 or not KERNEL         → CLAIM (Prefix)
//	    protocol in the protocol map                   → CLAIM (Protocol)
//	    protocol TCP (6) or UDP (17), and
//	      fragment offset == 0, and
//	      the whole fixed L4 header (TCP 20, UDP 8 bytes) is in the frame
//	      at the IHL-aware offset, and
//	      destination port set in that protocol's bitmap → CLAIM (Port)
//	      or {dst addr, dst port, protocol} in the
//	      address-qualified port map                   → CLAIM (AddrPort)
//	    otherwise                                      → PASS
//	anything else (IPv6, VLAN-tagged, ...)             → PASS
//
//	CLAIM = count Claimed and the rule, then
//	        bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS).
//	        When no socket is registered for the queue the helper returns the
//	        fallback XDP_PASS: the frame goes to the kernel and NoSocket counts it.
//	PASS  = count Passed, return XDP_PASS.
//	FAST  = rewrite (see Fast flows), count Fast, bpf_redirect_map(&fastdev, 0,
//	        XDP_DROP); with no target set the frame is dropped and
//	        FastNoTarget counts it.
//
// IPv4 fragments: a fragment with a nonzero offset carries no L4 header, so it
// is never claimed by port or by a flow spec; it is passed to the kernel (it
// is still claimed by the all-IPv4 flag, a prefix or a protocol rule, subject
// to the kernel-address rule). While a flow spec is held, such fragments of
// TCP and UDP are counted in FlowFragment on their way through the other
// rules. The first fragment (offset 0, MF set) does carry the ports and is
// claimed by a port rule or a flow spec, so a fragmented datagram of a
// claimed port or flow is split between the pipeline and the kernel: claim
// traffic that may fragment by prefix or protocol instead.
//
// VLAN-tagged frames (0x8100/0x88a8) are not looked into: they are passed.
//
// # Rules
//
// A rule is a claim.Rule (package pipelines/claim: all, a prefix, udp:/tcp:
// ports with or without an address, flow specs, proto:N, arp:ADDR), held by
// an owner, a name the caller picks (a pipeline, a netchannel, a config
// reload). Claims are owned and reference-counted: a rule's map entry exists
// while at least one owner holds it, so one owner's Unclaim or ReleaseOwner never removes
// what another holds, whether they claimed the same port, overlapping port
// ranges, the same prefix or all. An owner holds a rule or not (claiming it
// twice is one hold); Unclaim of a rule the owner does not hold returns
// ErrNotClaimed. Claims lists owner and rule for status. The older methods
// without an owner (ClaimAllIPv4, ClaimPrefix, ClaimPorts, ClaimProtocol,
// ClaimARP and their Unclaim counterparts) claim as DirectOwner with set
// semantics among themselves: UnclaimPorts cuts DirectOwner's ranges, and
// unclaiming what is not claimed is not an error.
//
// The port bitmaps are recomputed from every held rule over the words a
// change touches and written one 64-port word at a time, so a packet racing a
// change of a range can see part of it. An address-qualified port rule
// (udp:198.18.0.1:9000-9010) puts one hash entry per port: a rule may span at
// most MaxAddrPortRange ports, and the map holds 16384 entries in all; a claim
// that does not fit is refused whole. Prefixes: at most 4096; ARP targets: at
// most 1024.
//
// Flow specs (udp:198.18.0.1:9999<-203.0.113.0/24:*, claim.KindFlow) are
// matched by tuple-space search. A spec's shape is its protocol, the prefix
// length of its local (destination) and remote (source) address (0 for any)
// and whether it names each port. Each shape in use takes one of 8 slots of
// the shapes array, which holds the masks to apply to a packet's addresses
// and ports; a bit per slot in config[0] tells the program which slots to
// probe. The flow hash (16384 entries) holds one key per held spec:
// {local addr, remote addr, local port, remote port, protocol, slot}, masked
// by its shape. The program masks a packet and looks it up once per slot in
// use (the probes are unrolled at assembly; unused slots cost a bit test), so
// its cost grows with the number of distinct shapes, not of specs. A slot is
// reference-counted by the held specs of its shape and freed with the last
// one; its masks are written before its bit is set, and its bit is cleared
// before it is given another shape. A spec that would need a ninth shape is
// refused (ErrFlowShapes): use fewer distinct prefix lengths and port
// patterns. Flow specs are checked before every other IPv4 rule but the fast
// path, so a frame that a flow spec and a wider rule both take counts as Flow.
// They take kernel destinations (see Kernel addresses), also when their local
// side is a prefix or any: a flow spec is a deliberate claim of those flows.
//
// # Kernel addresses
//
// An interface that netchan shares with the kernel carries kernel IPv4
// addresses (the SSH session of a management NIC, say). Traffic to them is
// not taken by a broad rule: SetKernelAddrs (kept up to date by
// FollowKernelAddrs, which follows netlink address events of the interface in
// the calling process's namespace) fills a deny set with the interface's
// addresses and, for prefixes shorter than /31, their directed broadcasts.
// Frames to an address in the deny set, to 255.255.255.255 or to multicast
// 224.0.0.0/4 are taken only by rules that name them: flow specs, ports (with
// or without an address), protocols, and a /32 prefix of that destination;
// all and shorter prefixes pass them to the kernel. The check comes after the
// fast path (a fast flow is the pipeline's own decision) and after the flow
// specs (a flow spec names its addresses and ports like a port claim, and a
// netchannel on the kernel's own address is what they are for; the frames
// they take are not counted in KernelDst), and does not touch ARP, which is
// claimed by target address only.
//
// # Fast flows
//
// A pipeline may take whole flows off its own path: AddFast installs a flow
// (protocol, addresses and ports as received) with what to do to its frames,
// and SetFastTarget names the interface they leave by. A frame takes the fast
// path only if it is IPv4 with a 20-byte header, not a fragment, TTL above 1,
// no longer than the target's MTU (config[1]), and UDP, or TCP without SYN,
// FIN or RST; everything else falls through to the
// claim rules untouched, so the pipeline keeps set-up, tear-down and every
// exception. The program rewrites one address and its port (source or
// destination), lowers the TTL, updates the IPv4 and TCP/UDP checksums
// incrementally (RFC 1624: the per-flow deltas are computed by AddFast, since
// the key fixes the old values; a zero UDP checksum stays zero), writes both
// MACs, stamps the flow's last-packet time and packet count, and redirects.
// The table is a hash map (BPF_F_NO_PREALLOC, Options.MaxFastFlows entries);
// FastSeen reads a flow's figures back. The NAT (package nat) is the user.
//
// # One Program per interface
//
// The XSKMAP is keyed by receive queue index only, so a Program serves one
// interface: Load one Program per interface. Attach refuses an interface that
// already has an XDP program (ErrAlreadyAttached), from netchan or not.
//
// Modes: ModeNative attaches in the driver (XDP_FLAGS_DRV_MODE), ModeGeneric
// in the core network stack after the skb is built (XDP_FLAGS_SKB_MODE, works
// on any device, slower), ModeAuto tries native first and falls back to
// generic, logging why. On veth, native attach needs at least as many receive
// queues on the device as its peer has transmit queues (else ENOSPC), and the
// peer MTU must fit a page (else ERANGE); in generic mode the lab measured
// queue indices off by one on veth (see LAB-NOTES).
package xdpprog
