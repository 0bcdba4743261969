package stack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/stack/header"
)

// Drop reasons of the stack; they appear by name in the shard's drop counters.
var (
	ReasonNotEthernet   = pipelines.RegisterReason("not-ethernet")
	ReasonNotForUs      = pipelines.RegisterReason("not-for-us")
	ReasonBadARP        = pipelines.RegisterReason("bad-arp")
	ReasonIPTruncated   = pipelines.RegisterReason("ip-truncated")
	ReasonIPBadHeader   = pipelines.RegisterReason("ip-bad-header")
	ReasonIPBadChecksum = pipelines.RegisterReason("ip-bad-checksum")
	ReasonBadChecksum   = pipelines.RegisterReason("l4-bad-checksum")
	ReasonL4Truncated   = pipelines.RegisterReason("l4-truncated")
	ReasonNoSocket      = pipelines.RegisterReason("no-socket")
	ReasonSocketFull    = pipelines.RegisterReason("socket-full")
	ReasonUnknownProto  = pipelines.RegisterReason("unknown-protocol")
	ReasonICMPIgnored   = pipelines.RegisterReason("icmp-ignored")
	ReasonReasmLimit    = pipelines.RegisterReason("reassembly-limit")
	ReasonFragment      = pipelines.RegisterReason("fragment-held") // not a loss: copied into a reassembly buffer
	ReasonBadFragment   = pipelines.RegisterReason("bad-fragment")
	ReasonNoRoute       = pipelines.RegisterReason("no-route")
	ReasonNoFrame       = pipelines.RegisterReason("no-frame")
	// ReasonARPPendingFull: a packet to forward whose next hop is being resolved, with no room
	// left to wait (Config.ARPPendingHops, ARPPendingPerHop).
	ReasonARPPendingFull = pipelines.RegisterReason("arp-pending-full")
	// ReasonMartianSource: a packet from a source no host may send from (RFC 1122 §3.2.1.3,
	// Linux's martian sources): one of our own addresses (a land attack), the broadcast of
	// one of our networks, 255.255.255.255, multicast (224.0.0.0/4), 0.0.0.0/8 or loopback
	// (127.0.0.0/8).
	ReasonMartianSource = pipelines.RegisterReason("martian-source")
)

// Iface configures one of the pipeline's interfaces, in pipeline order.
type Iface struct {
	Addrs []netip.Prefix
	MTU   int // default: the interface's MTU, else 1500
}

// Config is what a Host needs.
type Config struct {
	Ifaces    []Iface
	Routes    []Route
	Gateway   netip.Addr
	StaticARP []StaticNeighbor
	// ReassemblyBytes bounds each shard's fragment buffers (default 4 MiB): the bytes of the
	// fragments held, and an overhead for each (64 bytes) and for each datagram (256). When a
	// fragment needs room, the datagrams that have waited longest for their next fragment are
	// given up (Stats.ReasmEvicted); a fragment whose datagram alone would outgrow the budget
	// is dropped (reason reassembly-limit). At most 256 datagrams wait at once per shard.
	ReassemblyBytes int
	// ReassemblyTimeout drops incomplete datagrams after this long (default 30 s).
	ReassemblyTimeout time.Duration
	// ARPRetry is the time between ARP requests for an unresolved next hop (default 1 s);
	// after ARPAttempts requests (default 3) its queued datagrams are dropped.
	ARPRetry    time.Duration
	ARPAttempts int
	// NeighborTableSize is the number of entries of each interface's neighbour table (default
	// 1024, rounded up to a power of two, at least 16, at most 1<<20). An address has a window
	// of 8 entries from its hash: a learned address that finds its window full takes the place
	// of the window's oldest learned entry (Stats.NeighborEvictions); one that finds only
	// static entries there is not kept (Stats.NeighborRefused).
	NeighborTableSize int
	// ARPPendingHops bounds the next hops each shard resolves at once (default 64), and
	// ARPPendingPerHop the datagrams that wait for each (default 32). A datagram beyond either
	// is dropped: Stats.ARPPendingFull counts them all, and a forwarded packet's drop has the
	// reason arp-pending-full.
	ARPPendingHops, ARPPendingPerHop int
	// ICMPErrorsPerSecond limits the port-unreachable messages each shard sends (default 1000).
	ICMPErrorsPerSecond int
	// TCP tunes TCP.
	TCP TCPConfig
}

// StaticNeighbor is a permanent neighbour entry on interface Iface.
type StaticNeighbor struct {
	Iface int
	IP    netip.Addr
	MAC   [6]byte
}

// Host is the part of the stack that all shards of one instance share.
type Host struct {
	cfg    Config
	routes *RouteTable
	neigh  []*NeighborTable
	// addrs are our addresses per interface, as uint32 keys, for the per-packet "is it ours".
	addrs [][]uint32
	// ownSrc are the sources that are ours: every interface's addresses and the broadcast
	// address of each of their networks (martianSource).
	ownSrc  []uint32
	stacks  []*Stack
	started atomic.Int32
	udp     udpRegistry
	tcp     tcpHost
	ctr     Counters
	rss     atomic.Pointer[pipelines.RSS] // the NIC's steering, when it has RSS (SetRSS)

	mu sync.Mutex
}

// Counters are stack-wide figures (per-shard drops live in the shard counters).
type Counters struct {
	ARPRequestsIn, ARPRepliesOut, ARPRequestsOut, ARPRepliesIn atomic.Uint64
	EchoReplies, PortUnreachOut, ICMPErrorsIn                  atomic.Uint64
	UDPIn, UDPOut, UDPDelivered                                atomic.Uint64
	FragmentsIn, Reassembled, ReasmTimeouts, FragmentsOut      atomic.Uint64
	ARPTimeouts, NoRoute                                       atomic.Uint64
	NeighborEvictions, NeighborRefused, ARPPendingFull         atomic.Uint64
	ReasmEvicted                                               atomic.Uint64
}

// NewHost checks the configuration and builds the shared tables.
func NewHost(cfg Config) (*Host, error) {
	if len(cfg.Ifaces) == 0 {
		return nil, errors.New("stack: no interfaces")
	}
	if cfg.ReassemblyBytes == 0 {
		cfg.ReassemblyBytes = 4 << 20
	}
	if cfg.ReassemblyTimeout == 0 {
		cfg.ReassemblyTimeout = 30 * time.Second
	}
	if cfg.ARPRetry == 0 {
		cfg.ARPRetry = time.Second
	}
	if cfg.ARPAttempts == 0 {
		cfg.ARPAttempts = 3
	}
	if cfg.ICMPErrorsPerSecond == 0 {
		cfg.ICMPErrorsPerSecond = 1000
	}
	if cfg.NeighborTableSize <= 0 {
		cfg.NeighborTableSize = 1024
	}
	if cfg.NeighborTableSize > 1<<20 {
		return nil, fmt.Errorf("stack: NeighborTableSize %d: at most %d entries per interface", cfg.NeighborTableSize, 1<<20)
	}
	if cfg.ARPPendingHops <= 0 {
		cfg.ARPPendingHops = 64
	}
	if cfg.ARPPendingPerHop <= 0 {
		cfg.ARPPendingPerHop = 32
	}
	if _, err := cfg.TCP.CongestionControl.resolve(DefaultCongestionControl); err != nil {
		return nil, err
	}
	h := &Host{cfg: cfg}
	h.tcp.init(cfg.TCP)
	if h.tcp.cfg.MaxConns > 16384 {
		return nil, fmt.Errorf("stack: TCP.MaxConns %d: at most 16384 connections per shard", h.tcp.cfg.MaxConns)
	}
	var ifAddrs [][]netip.Prefix
	for i, ifc := range cfg.Ifaces {
		var keys []uint32
		for _, a := range ifc.Addrs {
			if !a.Addr().Is4() {
				return nil, fmt.Errorf("stack: interface %d: address %v is not IPv4", i, a)
			}
			keys = append(keys, ipKey(a.Addr().As4()))
			h.ownSrc = append(h.ownSrc, ipKey(a.Addr().As4()))
			if a.Bits() <= 30 {
				h.ownSrc = append(h.ownSrc, ipKey(a.Addr().As4())|^uint32(0)>>a.Bits())
			}
		}
		h.addrs = append(h.addrs, keys)
		ifAddrs = append(ifAddrs, ifc.Addrs)
		h.neigh = append(h.neigh, NewNeighborTable(cfg.NeighborTableSize))
	}
	var err error
	if h.routes, err = NewRouteTable(ifAddrs, cfg.Routes, cfg.Gateway); err != nil {
		return nil, err
	}
	for _, n := range cfg.StaticARP {
		if n.Iface < 0 || n.Iface >= len(h.neigh) {
			return nil, fmt.Errorf("stack: static ARP entry %v on interface %d: no such interface", n.IP, n.Iface)
		}
		if h.neigh[n.Iface].Update(n.IP.As4(), n.MAC, 0, true) == NeighborFull {
			return nil, fmt.Errorf("stack: static ARP entry %v on interface %d: its window of the neighbour table holds only static entries; raise NeighborTableSize", n.IP, n.Iface)
		}
	}
	return h, nil
}

// Claims are what the XDP program must redirect for this host: IPv4 to our addresses and ARP
// asking for them. Everything else stays with the kernel.
func (h *Host) Claims() []claim.Rule {
	var c []claim.Rule
	for _, ifc := range h.cfg.Ifaces {
		for _, a := range ifc.Addrs {
			c = append(c, claim.Prefix(netip.PrefixFrom(a.Addr(), 32)), claim.ARP(a.Addr()))
		}
	}
	return c
}

// SetRSS tells the stack how the NIC steers flows to queues, and which shard owns each queue;
// call it before the shards start (an App's AfterAttach), since it moves the owner of every
// connection. With it, a connection's owner is the shard the NIC steers its segments to, and
// Dial picks source ports whose replies the NIC steers to the dialling shard, so nothing is
// handed off; without it (nil, or a device without RSS such as veth) the owner is the software
// hash pipelines.FlowHash and segments that arrive elsewhere are handed off.
func (h *Host) SetRSS(r *pipelines.RSS) { h.rss.Store(r) }

// RSS returns what SetRSS set (nil: the software hash).
func (h *Host) RSS() *pipelines.RSS { return h.rss.Load() }

// Owner sends every fragment of a datagram to one shard (chosen from its addresses and ID, or
// with RSS from its addresses as the NIC does), so it can be reassembled; a TCP segment goes to
// the shard that owns its connection (with RSS the shard the NIC steers it to; otherwise a
// symmetric hash of the 4-tuple, pipelines.FlowHash, so both directions and segments that moved
// queues meet there); everything else stays where it arrived (UDP sockets span all shards).
func (h *Host) Owner(data []byte, shards int) int {
	ip, ok := header.IPv4InFrame(data)
	if shards <= 1 || !ok {
		return -1
	}
	rss := h.rss.Load()
	if !ip.IsFragment() {
		if ip.Protocol() == header.ProtoTCP {
			if rss != nil {
				return rss.Owner(data, shards)
			}
			return pipelines.OwnerByFlow(data, shards)
		}
		return -1
	}
	if rss != nil {
		return rss.ShardOf([4]byte(ip[12:16]), [4]byte(ip[16:20]), 0, 0, false)
	}
	k := binary.BigEndian.Uint32(ip[12:16]) ^ binary.BigEndian.Uint32(ip[16:20])*31 ^ uint32(ip.ID())*0x9e3779b1
	return int(slotHash(k) % uint32(shards))
}

// isOurs reports whether ip is one of our addresses on interface ifc.
func (h *Host) isOurs(ifc int, ip uint32) bool {
	if ifc >= len(h.addrs) {
		return false
	}
	for _, a := range h.addrs[ifc] {
		if a == ip {
			return true
		}
	}
	return false
}

// martianSource reports whether src may not be the source of a packet that arrives from the
// wire (RFC 1122 §3.2.1.3; Linux's ip_route_input_slow and fib_validate_source, without
// accept_local or route_localnet): 0.0.0.0/8 ("this network", a source only while a host
// learns its address, which DHCP does by broadcast, and the stack takes only datagrams to its
// own unicast addresses), loopback 127.0.0.0/8, multicast 224.0.0.0/4, the limited broadcast
// 255.255.255.255, one of our addresses (a land attack: a SYN from ourselves to ourselves),
// or the broadcast address of one of our networks.
func (h *Host) martianSource(src uint32) bool {
	switch top := src >> 24; {
	case top == 0, top == 127, top>>4 == 0xe, src == 0xffffffff:
		return true
	}
	for _, a := range h.ownSrc {
		if a == src {
			return true
		}
	}
	return false
}

// Neighbors lists interface i's neighbour table.
func (h *Host) Neighbors(i int) []Neighbor { return h.neigh[i].Entries() }

// Routes lists the route table.
func (h *Host) Routes() []Route { return h.routes.Routes() }

// Stats is a copy of the stack's counters, for status.
type Stats struct {
	ARPRequestsIn  uint64   `json:"arp_requests_in"`
	ARPRepliesOut  uint64   `json:"arp_replies_out"`
	ARPRequestsOut uint64   `json:"arp_requests_out"`
	ARPRepliesIn   uint64   `json:"arp_replies_in"`
	ARPTimeouts    uint64   `json:"arp_timeouts"`
	EchoReplies    uint64   `json:"icmp_echo_replies"`
	PortUnreachOut uint64   `json:"icmp_port_unreachable_out"`
	ICMPErrorsIn   uint64   `json:"icmp_errors_in"`
	UDPIn          uint64   `json:"udp_in"`
	UDPDelivered   uint64   `json:"udp_delivered"`
	UDPOut         uint64   `json:"udp_out"`
	FragmentsIn    uint64   `json:"fragments_in"`
	Reassembled    uint64   `json:"reassembled"`
	ReasmTimeouts  uint64   `json:"reassembly_timeouts"`
	FragmentsOut   uint64   `json:"fragments_out"`
	NoRoute        uint64   `json:"no_route"`
	ReasmBytes     []int    `json:"reassembly_bytes_per_shard"`
	Sockets        int      `json:"udp_sockets"`
	TCP            TCPStats `json:"tcp"`

	// NeighborEvictions counts learned neighbour entries replaced by a new address because
	// their window of the table was full; NeighborRefused the addresses not kept because
	// their window held only static entries (Config.NeighborTableSize).
	NeighborEvictions uint64 `json:"neighbor_evictions"`
	NeighborRefused   uint64 `json:"neighbor_refused"`
	// ARPPendingFull counts datagrams dropped because their next hop was being resolved and
	// the shard's pending queue had no room (Config.ARPPendingHops, ARPPendingPerHop).
	ARPPendingFull uint64 `json:"arp_pending_full"`
	// ReasmEvicted counts incomplete datagrams given up to keep within Config.ReassemblyBytes.
	ReasmEvicted uint64 `json:"reassembly_evicted"`
}

// Stats reads the counters; safe from any goroutine.
func (h *Host) Stats() Stats {
	c := &h.ctr
	s := Stats{
		ARPRequestsIn: c.ARPRequestsIn.Load(), ARPRepliesOut: c.ARPRepliesOut.Load(),
		ARPRequestsOut: c.ARPRequestsOut.Load(), ARPRepliesIn: c.ARPRepliesIn.Load(), ARPTimeouts: c.ARPTimeouts.Load(),
		EchoReplies: c.EchoReplies.Load(), PortUnreachOut: c.PortUnreachOut.Load(), ICMPErrorsIn: c.ICMPErrorsIn.Load(),
		UDPIn: c.UDPIn.Load(), UDPDelivered: c.UDPDelivered.Load(), UDPOut: c.UDPOut.Load(),
		FragmentsIn: c.FragmentsIn.Load(), Reassembled: c.Reassembled.Load(), ReasmTimeouts: c.ReasmTimeouts.Load(),
		FragmentsOut: c.FragmentsOut.Load(), NoRoute: c.NoRoute.Load(), Sockets: h.udp.count(),
		NeighborEvictions: c.NeighborEvictions.Load(), NeighborRefused: c.NeighborRefused.Load(), ARPPendingFull: c.ARPPendingFull.Load(),
		ReasmEvicted: c.ReasmEvicted.Load(),
	}
	s.TCP = h.tcp.stats()
	h.mu.Lock()
	for _, st := range h.stacks {
		s.ReasmBytes = append(s.ReasmBytes, int(st.reasmUsed.Load()))
	}
	h.mu.Unlock()
	return s
}
