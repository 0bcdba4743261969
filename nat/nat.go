package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/stack"
	"github.com/netchan/netchan/stack/header"
)

// Interface indexes of the NAT pipeline.
const (
	Inside  = 0
	Outside = 1
)

// Filtering chooses which inbound packets a mapping lets through (RFC 4787 section 5).
type Filtering int

const (
	// APDF lets in only packets from a remote address and port the inside host sent to.
	APDF Filtering = iota
	// EIF lets in packets from anyone to a mapped port.
	EIF
)

// ParseFiltering reads "apdf" or "eif".
func ParseFiltering(s string) (Filtering, error) {
	switch s {
	case "", "apdf":
		return APDF, nil
	case "eif":
		return EIF, nil
	}
	return 0, fmt.Errorf("filtering %q: want eif or apdf", s)
}

// Timeouts of idle mappings.
type Timeouts struct {
	TCPEstablished, TCPTransitory, UDP, ICMP time.Duration
}

// Forward is a static port forward (DNAT): the outside address's ExtPort goes to Inside.
type Forward struct {
	Proto   uint8
	ExtPort uint16
	Inside  netip.AddrPort
}

// Config describes the NAT.
type Config struct {
	InsidePrefix   netip.Prefix // the inside network
	InsideAddr     netip.Addr   // the NAT's own inside address
	Outside        netip.Addr   // the outside address inside hosts are translated to
	PortLo, PortHi uint16       // external ports for dynamic mappings (default 1024..65535)
	Filtering      Filtering
	Timeouts       Timeouts
	MaxMappings    int // per shard (default 65536)
	// MaxMappingsPerHost bounds the dynamic mappings of one inside host, all protocols
	// together (default 4096; negative: no limit). Static forwards do not count. RFC 6888
	// REQ-4 asks a carrier-grade NAT to limit the external ports one subscriber holds, so
	// that one host cannot take the ports of all the others; Linux's masquerade has no such
	// limit. A host's mappings all live at its shard (Owner), which counts them.
	MaxMappingsPerHost int
	Forwards           []Forward
	// Fragments bounds the handling of fragmented datagrams (doc.go, "Fragments").
	Fragments FragmentLimits
}

// Drop reasons of the NAT.
var (
	ReasonNoMapping   = pipelines.RegisterReason("nat-no-mapping")
	ReasonFiltered    = pipelines.RegisterReason("nat-filtered")
	ReasonTableFull   = pipelines.RegisterReason("nat-table-full")
	ReasonTTL         = pipelines.RegisterReason("nat-ttl-exceeded")
	ReasonProto       = pipelines.RegisterReason("nat-unsupported")
	ReasonNotInside   = pipelines.RegisterReason("nat-source-not-inside")
	ReasonFragment    = pipelines.RegisterReason("nat-bad-fragment") // a fragment no datagram can have
	ReasonTruncated   = pipelines.RegisterReason("nat-truncated")
	ReasonBadIPv4     = pipelines.RegisterReason("nat-bad-ipv4")
	ReasonNotForUs    = pipelines.RegisterReason("nat-not-for-us")
	ReasonWrongShard  = pipelines.RegisterReason("nat-wrong-shard")
	ReasonBadICMPQuot = pipelines.RegisterReason("nat-bad-icmp-quote")
	// ReasonBadICMPSum: an ICMP error (either way) whose ICMP checksum fails (RFC 5508
	// REQ-3); it is not translated, as the translation would make the checksum valid.
	ReasonBadICMPSum = pipelines.RegisterReason("nat-bad-icmp-checksum")
	// ReasonHostLimit: a new flow of an inside host that holds MaxMappingsPerHost mappings.
	ReasonHostLimit = pipelines.RegisterReason("nat-host-limit")
	// ReasonSpoofed: a source address that cannot be the sender's (RFC 2827, RFC 3704): from
	// outside, the inside network, the NAT's own addresses or a martian; from inside, the
	// NAT's own addresses, the inside network's address or broadcast, or a martian.
	ReasonSpoofed = pipelines.RegisterReason("nat-spoofed-source")
)

// hairpinIf is the Packet.InIf of the inbound half of a hairpinned packet, handed by the
// shard that translated its source to the shard that holds its destination's mapping. It
// names no interface, so no received frame carries it: a frame from the wire with the
// outside address as its source is spoofed, whichever interface it came in on.
const hairpinIf = 2

// NAT is the translator shared by all shards (configuration and counters); each shard has its
// own Shard with its mappings.
type NAT struct {
	cfg     Config
	host    *stack.Host
	inside  [4]byte
	outside [4]byte
	insNet  uint32
	insMask uint32
	// insBcast is the inside network's broadcast address (insNet is its network address);
	// checkNetBcast tells whether they are kept from being sources (prefixes up to /30).
	insBcast      uint32
	checkNetBcast bool
	// perHost is Config.MaxMappingsPerHost with the default filled in (0: no limit).
	perHost int
	// ports holds, per protocol (protoIdx) and external port, 1 + the shard whose mapping
	// holds the port, or 0 when it is free (see portOwner). Shards claim a port with
	// CompareAndSwap(0, shard+1) and free it with Store(0); anyone reads it.
	ports [3][]atomic.Uint32

	mu    sync.Mutex
	byID  []*Shard
	ctr   Counters
	fast  atomic.Pointer[fastPaths]
	drops *xdpprog.RedirectDrops // guarded by mu
	// xdp are the programs of EnableXDPFastPath (guarded by mu); fastOff is set when the
	// fast path was turned off because the kernel refused its redirects.
	xdp     [2]*xdpprog.Program
	fastOff atomic.Bool
	// timeouts and forwards are the values in force: New stores the configured ones,
	// SetTimeouts and SetForwards swap them; the shards load them once per expiry scan.
	timeouts atomic.Pointer[Timeouts]
	forwards atomic.Pointer[[]Forward]
	// The constant fastMaxAge and the function monoToStage (fastpath.go), as fields so that
	// tests can change them.
	fastMaxAge  int64
	monoToStage func() int64
}

// Counters are the NAT's packet figures, summed over shards.
type Counters struct {
	Translated atomic.Uint64
	// ICMPErrorsTranslated counts ICMP errors translated either way, ICMPErrorsOut those
	// from the inside.
	ICMPErrorsTranslated atomic.Uint64
	ICMPErrorsOut        atomic.Uint64
}

// shardCounters are one shard's mapping figures; its shard writes them, anyone reads them.
type shardCounters struct {
	Created, Expired atomic.Int64
	// Fast path: flows installed and removed (one per direction), and failed table operations.
	FastInstalled, FastRemoved, FastErrors atomic.Int64
	// FwdPending counts the static forwards waiting for their ports (SetForwards).
	FwdPending atomic.Int64
	// Packets dropped as nat-table-full, nat-host-limit and nat-spoofed-source.
	TableFull, HostLimit, Spoofed atomic.Uint64
}

// New checks the configuration. host is the stack instance that owns the NAT box's own
// addresses (inside and outside), its neighbour and route tables.
func New(cfg Config, host *stack.Host) (*NAT, error) {
	if !cfg.InsidePrefix.Addr().Is4() || !cfg.Outside.Is4() || !cfg.InsideAddr.Is4() {
		return nil, errors.New("nat: inside prefix, inside address and outside address must be IPv4")
	}
	if cfg.PortLo == 0 {
		cfg.PortLo = 1024
	}
	if cfg.PortHi == 0 {
		cfg.PortHi = 65535
	}
	if cfg.PortHi < cfg.PortLo {
		return nil, fmt.Errorf("nat: port range %d-%d is empty", cfg.PortLo, cfg.PortHi)
	}
	var err error
	if cfg.Timeouts, err = cfg.Timeouts.withDefaults(); err != nil {
		return nil, err
	}
	if cfg.MaxMappings < 0 {
		return nil, fmt.Errorf("nat: max mappings %d: want a positive count (0: the default 65536)", cfg.MaxMappings)
	}
	if cfg.MaxMappings == 0 {
		cfg.MaxMappings = 65536
	}
	perHost := cfg.MaxMappingsPerHost
	switch {
	case perHost == 0:
		perHost = 4096
	case perHost < 0:
		perHost = 0
	}
	if cfg.Fragments, err = cfg.Fragments.withDefaults(); err != nil {
		return nil, err
	}
	if err := checkForwards(cfg.Forwards, cfg.InsidePrefix); err != nil {
		return nil, err
	}
	p := cfg.InsidePrefix.Masked()
	n := &NAT{cfg: cfg, host: host, inside: cfg.InsideAddr.As4(), outside: cfg.Outside.As4(), insNet: be32(p.Addr().As4()),
		fastMaxAge: int64(fastMaxAge), monoToStage: monoToStage}
	if p.Bits() > 0 {
		n.insMask = ^uint32(0) << (32 - p.Bits())
	}
	n.insBcast = n.insNet | ^n.insMask
	n.checkNetBcast = p.Bits() <= 30 // a /31 has no network or broadcast address (RFC 3021)
	n.perHost = perHost
	for i := range n.ports {
		n.ports[i] = make([]atomic.Uint32, 65536)
	}
	t := cfg.Timeouts
	n.timeouts.Store(&t)
	fw := slices.Clone(cfg.Forwards)
	n.forwards.Store(&fw)
	return n, nil
}

// withDefaults fills the zero timeouts with the defaults (RFC 5382's 2h4m and 4m for TCP,
// RFC 4787's 5m for UDP, 1m for ICMP); a negative one is an error.
func (t Timeouts) withDefaults() (Timeouts, error) {
	for _, f := range []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{{"tcp_established", &t.TCPEstablished, 2*time.Hour + 4*time.Minute}, {"tcp_transitory", &t.TCPTransitory, 4 * time.Minute},
		{"udp", &t.UDP, 5 * time.Minute}, {"icmp", &t.ICMP, time.Minute}} {
		if *f.d < 0 {
			return t, fmt.Errorf("nat: timeout %s %v: want a positive duration", f.name, *f.d)
		}
		if *f.d == 0 {
			*f.d = f.def
		}
	}
	return t, nil
}

// checkForwards checks each forward's protocol and inside address, and that no external
// port of a protocol is forwarded twice.
func checkForwards(fw []Forward, inside netip.Prefix) error {
	seen := map[[2]uint16]int{}
	for i, f := range fw {
		if f.Proto != header.ProtoTCP && f.Proto != header.ProtoUDP {
			return fmt.Errorf("nat: forward of port %d: protocol must be tcp or udp", f.ExtPort)
		}
		if f.ExtPort == 0 || f.Inside.Port() == 0 {
			return fmt.Errorf("nat: forward of port %d to %v: ports must be 1-65535", f.ExtPort, f.Inside)
		}
		if !inside.Contains(f.Inside.Addr()) {
			return fmt.Errorf("nat: forward of port %d to %v: not on the inside network %v", f.ExtPort, f.Inside, inside)
		}
		k := [2]uint16{uint16(f.Proto), f.ExtPort}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("nat: forward of %s port %d is given twice (forwards %d and %d)", protoName(f.Proto), f.ExtPort, j, i)
		}
		seen[k] = i
	}
	return nil
}

// Timeouts are the idle timeouts in force (the configured ones with defaults filled in, or
// the last SetTimeouts).
func (n *NAT) Timeouts() Timeouts { return *n.timeouts.Load() }

// SetTimeouts replaces the idle timeouts while the shards run: zero fields take the
// defaults, as in Config. Each shard reads the timeouts once per expiry scan, so the next
// scan (within about 10 ms) judges every mapping by the new values; a mapping idle longer
// than a shortened timeout expires then.
func (n *NAT) SetTimeouts(t Timeouts) error {
	t, err := t.withDefaults()
	if err != nil {
		return err
	}
	n.timeouts.Store(&t)
	return nil
}

// Forwards are the static port forwards in force (the configured ones, or the last
// SetForwards).
func (n *NAT) Forwards() []Forward { return slices.Clone(*n.forwards.Load()) }

// SetForwards replaces the static port forwards while the shards run. The forwards are
// checked as New checks them; each shard then applies the difference in its own goroutine,
// at its next expiry scan: removed forwards' mappings are deleted (flows through them stop),
// new ones installed. A new forward whose external port a dynamic mapping holds at that
// moment waits until the port is free (Stats.ForwardsPending counts those).
func (n *NAT) SetForwards(fw []Forward) error {
	if err := checkForwards(fw, n.cfg.InsidePrefix); err != nil {
		return err
	}
	fw = slices.Clone(fw)
	n.forwards.Store(&fw)
	return nil
}

func be32(a [4]byte) uint32 { return binary.BigEndian.Uint32(a[:]) }

func (n *NAT) isInside(a [4]byte) bool { return be32(a)&n.insMask == n.insNet }

// sliceOf is the shard whose slice of external ports holds port, or -1.
func (n *NAT) sliceOf(port uint16, shards int) int {
	lo, hi := n.cfg.PortLo, n.cfg.PortHi
	if port < lo || port > hi || shards < 1 {
		return -1
	}
	size := (int(hi) - int(lo) + 1) / shards
	if size == 0 {
		return 0
	}
	s := (int(port) - int(lo)) / size
	if s >= shards {
		s = shards - 1
	}
	return s
}

// slice returns shard s's external ports.
func (n *NAT) sliceRange(s, shards int) (lo, hi uint16) {
	size := (int(n.cfg.PortHi) - int(n.cfg.PortLo) + 1) / shards
	if size == 0 {
		return n.cfg.PortLo, n.cfg.PortHi
	}
	l := int(n.cfg.PortLo) + s*size
	h := l + size - 1
	if s == shards-1 {
		h = int(n.cfg.PortHi)
	}
	return uint16(l), uint16(h)
}

// portOwner is the shard that owns packets to external port p of proto: the shard whose
// mapping holds the port (NAT.ports), else, when the port is free, the shard whose slice
// holds it, so that packets to unknown ports still go somewhere deterministic (-1: outside
// the range, they stay where they arrived).
func (n *NAT) portOwner(proto uint8, p uint16, shards int) int {
	if v := n.ports[protoIdx(proto)][p].Load(); v != 0 && int(v) <= shards {
		return int(v) - 1
	}
	return n.sliceOf(p, shards)
}

// claimPort takes external port p of protocol index pi for shard; false when a mapping
// (of any shard) holds it. Of two shards that claim one free port at once, one wins.
func (n *NAT) claimPort(pi int, p uint16, shard int) bool {
	return n.ports[pi][p].CompareAndSwap(0, uint32(shard)+1)
}

// releasePort gives back a port shard holds.
func (n *NAT) releasePort(pi int, p uint16, shard int) {
	n.ports[pi][p].CompareAndSwap(uint32(shard)+1, 0)
}

// hostOwner is the shard that owns inside host a's flows (as Owner says for its packets),
// or -1 with one shard.
func (n *NAT) hostOwner(a [4]byte, shards int) int {
	var f [header.EthernetLen + header.IPv4MinLen]byte
	binary.BigEndian.PutUint16(f[12:14], header.EtherTypeIPv4)
	f[header.EthernetLen] = 0x45
	copy(f[header.EthernetLen+12:], a[:])
	return pipelines.OwnerBySource(f[:], shards)
}

// martian reports whether a may not be the source of a packet on any network: "this"
// network 0/8, loopback 127/8, multicast 224/4, the reserved 240/4 and the limited
// broadcast 255.255.255.255.
func martian(a uint32) bool { return a>>24 == 0 || a>>24 == 127 || a>>28 >= 0xe }

// spoofed is the reason to drop a packet with source address src that came in on
// interface inIf (Inside or Outside), or 0 when the source may be its sender's: ingress
// filtering (RFC 2827, RFC 3704), so that nothing with a forged source is translated.
func (n *NAT) spoofed(src [4]byte, inIf int) pipelines.DropReason {
	a := be32(src)
	switch {
	case martian(a) || src == n.outside || src == n.inside: // a land attack, or no host's
		return ReasonSpoofed
	case inIf == Outside:
		if n.isInside(src) {
			return ReasonSpoofed
		}
	case !n.isInside(src):
		return ReasonNotInside
	case n.checkNetBcast && (a == n.insNet || a == n.insBcast):
		return ReasonSpoofed
	}
	return 0
}

// Owner is the NAT pipeline's owner function: inside flows by inside source address, return
// traffic by the shard holding its external port (for ICMP errors, the port in the quoted
// header; portOwner), fragments from outside by their datagram (addresses, protocol and IP
// ID: only the first fragment has a port; that shard hands the datagram's fragments to the
// port's owner), everything else where it arrived.
func (n *NAT) Owner(data []byte, shards int) int {
	ip, ok := header.IPv4InFrame(data)
	if shards <= 1 || !ok {
		return -1
	}
	if n.isInside(ip.Src4()) {
		return pipelines.OwnerBySource(data, shards)
	}
	if ip.IsFragment() {
		return fragOwner(ip, shards)
	}
	l4 := ip.Payload()
	if ip.Dst4() != n.outside || len(l4) < 8 {
		return -1
	}
	switch ip.Protocol() {
	case header.ProtoTCP, header.ProtoUDP:
		return n.portOwner(ip.Protocol(), binary.BigEndian.Uint16(l4[2:4]), shards)
	case header.ProtoICMP:
		switch l4[0] {
		case header.ICMPEchoReply:
			return n.portOwner(header.ProtoICMP, binary.BigEndian.Uint16(l4[4:6]), shards)
		case header.ICMPDestUnreachable, header.ICMPTimeExceeded:
			q, ok := header.ParseIPv4Header(l4[8:]) // the quoted header and 8 bytes after it
			if !ok || len(q) < q.IHL()+8 {
				return -1
			}
			ql4 := q.Payload()
			switch q.Protocol() {
			case header.ProtoTCP, header.ProtoUDP:
				return n.portOwner(q.Protocol(), binary.BigEndian.Uint16(ql4[0:2]), shards)
			case header.ProtoICMP:
				return n.portOwner(header.ProtoICMP, binary.BigEndian.Uint16(ql4[4:6]), shards)
			}
		}
	}
	return -1
}

// Claims are what the XDP programs must redirect: every IPv4 packet (the inside network's
// traffic is all ours to translate; on the outside, packets not for the outside address are
// dropped as not-for-us) and ARP for the NAT's own addresses.
func (n *NAT) Claims() []claim.Rule {
	return append(n.host.Claims(), claim.All())
}

// App is the NAT as an App for the front door (package netchan): its pipeline, claims and
// owner function on the interfaces [Inside, Outside]; with fastPath, established flows are
// handed to the two XDP programs once they are attached (EnableXDPFastPath), and the
// instance's Stop releases what that started.
func (n *NAT) App(fastPath bool) pipelines.App {
	app := pipelines.App{Name: "nat", NewPipeline: n.Pipeline, Claims: n.Claims(), Owner: n.Owner}
	if fastPath {
		app.AfterAttach = func(a pipelines.Attached) error {
			if len(a.Programs) != 2 {
				return fmt.Errorf("nat: the fast path needs the two interfaces [inside, outside], not %d", len(a.Programs))
			}
			return n.EnableXDPFastPath(a.Programs[Inside], a.Programs[Outside])
		}
		app.Close = n.Close
	}
	return app
}

// Pipeline builds shard's pipeline: the NAT stage, with the shard's stack as the local stack.
func (n *NAT) Pipeline(shard int) *pipelines.Pipeline {
	st := n.host.NewStack(shard)
	s := newShard(n, shard, st)
	n.mu.Lock()
	for len(n.byID) <= shard {
		n.byID = append(n.byID, nil)
	}
	n.byID[shard] = s
	n.mu.Unlock()
	return &pipelines.Pipeline{Stages: []pipelines.Stage{s}, Local: st}
}

// Stats are the NAT's counters: totals, and the mapping counts of each shard.
type Stats struct {
	Active     int64  `json:"mappings_active"`
	Created    int64  `json:"mappings_created"`
	Expired    int64  `json:"mappings_expired"`
	Translated uint64 `json:"packets_translated"`
	// ICMPErrorsTranslated counts the ICMP errors translated, both ways: from outside about
	// a translated flow, to the inside host (RFC 5508 REQ-4), and from the inside about a
	// packet that came in, to the remote (REQ-5); ICMPErrorsOut counts the latter. A
	// hairpinned error counts in both directions, as hairpinned packets count twice in
	// Translated.
	ICMPErrorsTranslated uint64 `json:"icmp_errors_translated"`
	ICMPErrorsOut        uint64 `json:"icmp_errors_out"`
	// The XDP fast path (EnableFastPath): packets the programs translated by themselves,
	// flows installed now, ever, and failed table operations.
	FastTranslated uint64 `json:"fast_packets_translated"`
	FastActive     int64  `json:"fast_flows_active"`
	FastInstalled  int64  `json:"fast_flows_installed"`
	FastErrors     int64  `json:"fast_errors"`
	// FastRedirectDrops counts frames the kernel dropped at XDP devmap redirects (all of
	// the host's; see FastPathHint) since EnableXDPFastPath.
	FastRedirectDrops uint64 `json:"fast_redirect_drops"`
	// FastOff is set when the fast path was turned off because the kernel refused its
	// redirects (see FastPathHint); the shards carry every packet since.
	FastOff bool `json:"fast_path_off"`
	// ForwardsPending counts, over shards, static forwards not installed yet because a
	// dynamic mapping holds their external port or inside endpoint (SetForwards).
	ForwardsPending int64 `json:"forwards_pending,omitempty"`
	// Packets dropped because a new mapping could not be made: the shard's arena
	// (MaxMappings) or its external ports were all taken (nat-table-full), or the inside
	// host held MaxMappingsPerHost mappings (nat-host-limit). First fragments count, the
	// other fragments of their datagrams do not.
	TableFullDrops uint64 `json:"table_full_drops"`
	HostLimitDrops uint64 `json:"host_limit_drops"`
	// SpoofedDrops counts packets dropped for a source address that cannot be their
	// sender's (nat-spoofed-source; doc.go, "Spoofed sources").
	SpoofedDrops uint64 `json:"spoofed_drops"`
	// Fragments are the fragment figures (doc.go, "Fragments").
	Fragments FragmentStats `json:"fragments"`
	Shards    []ShardStats  `json:"shards,omitempty"`
}

// ShardStats are one shard's mapping counts and its slice of external ports.
type ShardStats struct {
	Shard   int    `json:"shard"`
	Ports   string `json:"ports"`
	Active  int64  `json:"mappings_active"`
	Created int64  `json:"mappings_created"`
	Expired int64  `json:"mappings_expired"`
}

// Stats reads the counters; safe from any goroutine.
func (n *NAT) Stats() Stats {
	st := Stats{Translated: n.ctr.Translated.Load(), ICMPErrorsTranslated: n.ctr.ICMPErrorsTranslated.Load(),
		ICMPErrorsOut: n.ctr.ICMPErrorsOut.Load(), FastOff: n.fastOff.Load()}
	n.mu.Lock()
	shards := append([]*Shard(nil), n.byID...)
	if n.drops != nil {
		st.FastRedirectDrops, _ = n.drops.Count()
	}
	n.mu.Unlock()
	for _, s := range shards {
		if s == nil {
			continue
		}
		ss := ShardStats{Shard: s.id, Ports: fmt.Sprintf("%d-%d", s.lo, s.hi),
			Active: s.ctr.Created.Load() - s.ctr.Expired.Load(), Created: s.ctr.Created.Load(), Expired: s.ctr.Expired.Load()}
		st.Active += ss.Active
		st.Created += ss.Created
		st.Expired += ss.Expired
		st.Shards = append(st.Shards, ss)
		st.FastInstalled += s.ctr.FastInstalled.Load()
		st.FastActive += s.ctr.FastInstalled.Load() - s.ctr.FastRemoved.Load()
		st.FastErrors += s.ctr.FastErrors.Load()
		st.ForwardsPending += s.ctr.FwdPending.Load()
		st.TableFullDrops += s.ctr.TableFull.Load()
		st.HostLimitDrops += s.ctr.HostLimit.Load()
		st.SpoofedDrops += s.ctr.Spoofed.Load()
		s.fctr.addTo(&st.Fragments)
	}
	if fp := n.fast.Load(); fp != nil {
		for _, t := range []FastPath{fp.in, fp.out} {
			if x, err := t.Stats(); err == nil {
				st.FastTranslated += x.Fast
			}
		}
	}
	return st
}

// Mapping is one translation, for status.
type Mapping struct {
	Shard    int    `json:"shard"`
	Proto    string `json:"proto"`
	Inside   string `json:"inside"`
	External string `json:"external"`
}

// Mappings lists every shard's mappings in the flow tree's order (protocol, inside address,
// inside port); it reads the trees without locks while the shards run.
func (n *NAT) Mappings() []Mapping {
	n.mu.Lock()
	shards := append([]*Shard(nil), n.byID...)
	n.mu.Unlock()
	var out []Mapping
	for _, s := range shards {
		if s == nil {
			continue
		}
		for _, proto := range []uint8{header.ProtoICMP, header.ProtoTCP, header.ProtoUDP} {
			ext := map[flowtree.Handle]uint16{}
			s.tree.AscendPrefix(proto, netip.PrefixFrom(n.cfg.Outside, 32), func(k flowtree.Key, h flowtree.Handle) bool {
				ext[h] = k.LocalPort
				return true
			})
			s.tree.AscendPrefix(proto, n.cfg.InsidePrefix, func(k flowtree.Key, h flowtree.Handle) bool {
				if k.IsListener() {
					out = append(out, Mapping{Shard: s.id, Proto: protoName(proto),
						Inside:   netip.AddrPortFrom(k.LocalAddr, k.LocalPort).String(),
						External: netip.AddrPortFrom(n.cfg.Outside, ext[h]).String()})
				}
				return true
			})
		}
	}
	return out
}

func protoName(p uint8) string {
	switch p {
	case header.ProtoTCP:
		return "tcp"
	case header.ProtoUDP:
		return "udp"
	case header.ProtoICMP:
		return "icmp"
	}
	return fmt.Sprint(p)
}
