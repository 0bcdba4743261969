// Package wire is the forwarding that netchan's bump-in-the-wire examples (examples/acl,
// examples/ratelimit) share: netchan sits between two interfaces, owns one gateway address
// on each (the kernel's interfaces carry none), answers ARP and ping for those addresses with
// its userspace stack, and routes IPv4 between the two subnets. A packet that a filter stage
// lets through is forwarded: its TTL goes down by one (with an incremental header checksum
// update) and the stack's route and neighbour tables give it its interface and next-hop MAC
// address, resolved by ARP the first time.
//
// A pipeline built by Router.Pipeline runs, on every shard:
//
//	local   ARP, and IPv4 to the box itself (its gateway addresses, broadcast, multicast),
//	        go to the stack; malformed IPv4 is dropped as wire-bad-ipv4
//	filters the example's stages, which see only valid transit IPv4 with verdict Continue
//	forward TTL and next hop; a packet whose TTL runs out is answered with ICMP time
//	        exceeded and dropped as wire-ttl-exceeded
//
// with the shard's stack (package stack) as the pipeline's local stack. Filters drop what they
// refuse with reasons of their own; whatever they leave undecided is forwarded.
package wire

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/stack"
	"github.com/netchan/netchan/stack/header"
)

// Interface indexes of the pipeline: the order of the Config's interfaces.
const (
	Inside  = 0
	Outside = 1
)

// Drop reasons of the forwarding.
var (
	ReasonBadIPv4 = pipelines.RegisterReason("wire-bad-ipv4")
	ReasonTTL     = pipelines.RegisterReason("wire-ttl-exceeded")
)

// Config is the box's place between its two subnets.
type Config struct {
	// Inside and Outside are the box's gateway address on each interface with its subnet,
	// e.g. 198.18.1.1/24 and 198.19.0.1/24 (the lab's nat layout).
	Inside, Outside netip.Prefix
	// Routes are static routes beyond the two connected subnets (optional).
	Routes []stack.Route
	// StaticARP are neighbours known without ARP (optional).
	StaticARP []stack.StaticNeighbor
}

// Router is the forwarding shared by every shard of one instance: the stack's host (addresses,
// neighbour and route tables) and the box's own addresses.
type Router struct {
	host *stack.Host
	// own are the addresses the box answers for; bcast the directed broadcasts of its subnets.
	own, bcast [2][4]byte
}

// New checks the configuration and builds the shared stack host.
func New(cfg Config) (*Router, error) {
	for _, p := range []netip.Prefix{cfg.Inside, cfg.Outside} {
		if !p.IsValid() || !p.Addr().Is4() || p.Bits() < 1 || p.Bits() > 30 {
			return nil, fmt.Errorf("wire: gateway %v: want an IPv4 address with its subnet (/1 to /30), such as 198.18.1.1/24", p)
		}
		if p.Addr() == p.Masked().Addr() {
			return nil, fmt.Errorf("wire: gateway %v is its subnet's network address", p)
		}
	}
	if cfg.Inside.Overlaps(cfg.Outside) {
		return nil, errors.New("wire: the inside and outside subnets overlap: there is nothing to route between them")
	}
	host, err := stack.NewHost(stack.Config{
		Ifaces:    []stack.Iface{{Addrs: []netip.Prefix{cfg.Inside}}, {Addrs: []netip.Prefix{cfg.Outside}}},
		Routes:    cfg.Routes,
		StaticARP: cfg.StaticARP,
	})
	if err != nil {
		return nil, fmt.Errorf("wire: %w", err)
	}
	r := &Router{host: host}
	for i, p := range []netip.Prefix{cfg.Inside, cfg.Outside} {
		r.own[i] = p.Addr().As4()
		r.bcast[i] = broadcast(p)
	}
	return r, nil
}

func broadcast(p netip.Prefix) [4]byte {
	a := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	for i := 0; i < 4; i++ {
		a[i] |= byte(host >> (24 - 8*i))
	}
	return a
}

// Host is the stack host behind the router (for its neighbour table and counters).
func (r *Router) Host() *stack.Host { return r.host }

// Claims are what the XDP programs must redirect on both interfaces: every IPv4 packet
// (all of it is routed or refused by netchan; the interfaces carry no kernel address) and
// ARP for the gateway addresses.
func (r *Router) Claims() []claim.Rule { return append(r.host.Claims(), claim.All()) }

// Pipeline builds shard's pipeline: the local stage, filters in order, the forward stage, and
// the shard's stack as the local stack.
func (r *Router) Pipeline(shard int, filters ...pipelines.Stage) *pipelines.Pipeline {
	st := r.host.NewStack(shard)
	stages := make([]pipelines.Stage, 0, len(filters)+2)
	stages = append(stages, local{r})
	stages = append(stages, filters...)
	stages = append(stages, &forward{st: st})
	return &pipelines.Pipeline{Stages: stages, Local: st}
}

// App builds the App for the front door on the interfaces [inside, outside]: newFilters
// makes each shard's filter stages, owner names the shard that owns a packet (nil: LocalOwner,
// which leaves transit packets where they arrived).
func (r *Router) App(name string, newFilters func(shard int) []pipelines.Stage, owner pipelines.OwnerFunc) pipelines.App {
	if owner == nil {
		owner = r.LocalOwner
	}
	return pipelines.App{
		Name:        name,
		Claims:      r.Claims(),
		Owner:       owner,
		NewPipeline: func(shard int) *pipelines.Pipeline { return r.Pipeline(shard, newFilters(shard)...) },
	}
}

// LocalOwner is the owner function of filters that keep no per-flow state: packets for the
// box itself go where the stack wants them (every fragment of a datagram to one shard, for
// reassembly: stack.Host.Owner), transit packets stay where they arrived. A filter with an
// owner function of its own must also send all fragments of a datagram to one shard; an
// owner that hashes addresses, as the rate limiter's does, does.
func (r *Router) LocalOwner(data []byte, shards int) int {
	ip, ok := header.IPv4InFrame(data)
	if !ok || !r.forUs(ip.Dst4()) {
		return -1
	}
	return r.host.Owner(data, shards)
}

// local sends the box's own traffic to the stack and drops malformed IPv4.
type local struct{ r *Router }

func (local) Name() string { return "wire-local" }

func (l local) Process(b *pipelines.Batch) {
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != pipelines.Continue {
			continue
		}
		d := b.Data(i)
		if len(d) < header.EthernetLen || d[12] != header.EtherTypeIPv4>>8 || d[13] != header.EtherTypeIPv4&0xff {
			p.Verdict = pipelines.ToStack // ARP (the stack drops the rest as not-ethernet)
			continue
		}
		ip, e := header.ParseIPv4(d[header.EthernetLen:])
		if e != header.IPv4OK {
			b.Drop(i, ReasonBadIPv4)
			continue
		}
		dst := ip.Dst4()
		if l.r.forUs(dst) {
			p.Verdict = pipelines.ToStack
		}
	}
}

// forUs reports whether dst is the box's: its addresses, broadcast and multicast.
func (r *Router) forUs(dst [4]byte) bool {
	return dst == r.own[0] || dst == r.own[1] || dst == r.bcast[0] || dst == r.bcast[1] ||
		dst == [4]byte{255, 255, 255, 255} || dst[0]&0xf0 == 224
}

// forward lowers the TTL and hands the packet to the stack's routing and neighbours.
type forward struct{ st *stack.Stack }

func (*forward) Name() string { return "wire-forward" }

func (f *forward) Process(b *pipelines.Batch) {
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != pipelines.Continue {
			continue
		}
		ip, ok := header.IPv4InFrame(b.Data(i))
		if !ok { // the local stage let only valid IPv4 through; a filter may have cut it
			b.Drop(i, ReasonBadIPv4)
			continue
		}
		if !DecTTL(ip) {
			f.st.SendICMPError(b, ip, int(p.InIf), header.ICMPTimeExceeded, 0, 0)
			b.Drop(i, ReasonTTL)
			continue
		}
		f.st.Forward(b, i)
	}
}

// DecTTL lowers the TTL by one with an incremental header checksum update (RFC 1624); it
// returns false, changing nothing, when the packet must not be forwarded (TTL ≤ 1).
func DecTTL(ip header.IPv4) bool {
	ttl := ip.TTL()
	if ttl <= 1 {
		return false
	}
	old := uint16(ttl)<<8 | uint16(ip.Protocol()) // the 16-bit word that holds TTL and protocol
	ip.SetTTL(ttl - 1)
	ip.SetChecksum(header.UpdateChecksum16(ip.Checksum(), old, old-0x100))
	return true
}
