package echo

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// Drop reasons of the UDP echo guard (Guard).
var (
	// ReasonLoopPort: a UDP echo request from a source port on LoopPorts.
	ReasonLoopPort = pipelines.RegisterReason("echo-loop-port")
	// ReasonRateLimit: a UDP echo request over its source address's rate (GuardConfig).
	ReasonRateLimit = pipelines.RegisterReason("echo-rate-limit")
)

// EchoPort is the UDP (and TCP) echo port, RFC 862.
const EchoPort = 7

// The guard's defaults and bounds (GuardConfig).
const (
	// DefaultUDPRate is the datagrams a second one source address may send to UDP port 7 on
	// one shard: far above what a person or a monitoring probe sends, and low enough that a
	// spoofed flood reflected at a victim carries at most about 12 Mbit/s of 1472-byte
	// datagrams per shard.
	DefaultUDPRate = 1000
	// DefaultUDPBurst is the bucket's depth: one second's worth of DefaultUDPRate. A client
	// that sends no more than the rate in any second never loses a datagram to the limit, and
	// a test that sends a few hundred requests in a row at a LAN's round-trip time (tens of µs
	// apart) passes whole.
	DefaultUDPBurst = 1000
	// DefaultGuardSlots is the size of each shard's table of buckets (24 bytes a slot: 96 KiB).
	DefaultGuardSlots = 4096
	// NoRateLimit as GuardConfig.Rate turns the rate limit off (the loop ports stay dropped).
	NoRateLimit = -1

	maxGuardRate  = 1_000_000_000 // one datagram a nanosecond
	maxGuardBurst = 1 << 20
	maxGuardSlots = 1 << 20
)

// LoopPorts are the UDP source ports whose datagrams the echo service never answers. The
// rule: the port of a service that answers every datagram it gets, whatever it holds, so
// that it and our echo, each answering the other, would ping-pong forever on one spoofed
// datagram (CERT CA-1996-01, the echo/chargen loop); plus two ports no client ever sends
// from. FreeBSD's inetd drops datagrams to its built-in UDP services (echo, discard,
// daytime, chargen, time) from the ports of those same services, for the same reason.
//
//	0    no port: RFC 768 says a sender that wants no reply puts 0 there; an answer has
//	     nowhere to go
//	7    echo (RFC 862): answers every datagram with itself, the canonical loop
//	9    discard (RFC 863): answers nothing, so it does not loop; but no client sends from
//	     it, so a datagram from it is forged, and our answer is wasted
//	11   systat/active users (RFC 866): answers every datagram with the user list
//	13   daytime (RFC 867): answers every datagram with the time
//	17   qotd (RFC 865): answers every datagram with a quote
//	19   chargen (RFC 864): answers every datagram with 0 to 512 characters
//	37   time (RFC 868): answers every datagram with the time
//	53   domain, 69 tftp, 123 ntp: widely deployed servers answer an error, or an answer,
//	     with an error, which loops through an echo as through each other ("Loop DoS",
//	     CVE-2024-2169; ntpd's mode 7 error loop, CVE-2009-3563); their servers send from
//	     these ports and no echo client does
//
// Not listed: the rest of the ports below 1024. The services there answer requests, not
// answers, so a datagram bounced through our echo dies after a round or two; the per-source
// rate limit bounds whatever loop a port not listed here still makes. (OpenBSD's inetd drops
// every source port below 1024 for its built-in services; that is a wider net than the rule
// needs.)
var LoopPorts = []uint16{0, 7, 9, 11, 13, 17, 19, 37, 53, 69, 123}

// loopPortSet has bit p set for every port p of LoopPorts (all below 128).
var loopPortSet = func() (s [2]uint64) {
	for _, p := range LoopPorts {
		s[p>>6] |= 1 << (p & 63)
	}
	return s
}()

func isLoopPort(p uint16) bool { return p < 128 && loopPortSet[p>>6]&(1<<(p&63)) != 0 }

// GuardConfig configures the UDP echo guard (Echo.UDPGuard). Zero fields take the defaults.
type GuardConfig struct {
	// Rate is the datagrams a second that one source address may send to UDP port 7, on one
	// shard. 0: DefaultUDPRate; negative (NoRateLimit): no rate limit, only the loop ports
	// are dropped. At most 1e9.
	Rate int
	// Burst is how many datagrams above the rate a source may send at once after a quiet
	// time (the bucket's depth). ≤ 0: DefaultUDPBurst. At most 2^20.
	Burst int
	// Slots is the number of buckets in each shard's table, rounded up to a power of two.
	// ≤ 0: DefaultGuardSlots. At most 2^20.
	Slots int
	// Seed keys the hash that places an address in the table. 0: a random seed for each
	// shard's table, so that which addresses share a bucket cannot be foreseen.
	Seed uint64
}

// Resolved is c as a guard runs it: the defaults in for zero fields, Rate NoRateLimit for
// any negative one, the bounds applied and Slots rounded up to a power of two (Seed stays).
func (c GuardConfig) Resolved() GuardConfig {
	switch {
	case c.Rate == 0:
		c.Rate = DefaultUDPRate
	case c.Rate < 0:
		c.Rate = NoRateLimit
	case c.Rate > maxGuardRate:
		c.Rate = maxGuardRate
	}
	if c.Burst <= 0 {
		c.Burst = DefaultUDPBurst
	}
	c.Burst = min(c.Burst, maxGuardBurst)
	if c.Slots <= 0 {
		c.Slots = DefaultGuardSlots
	}
	c.Slots = 1 << bits.Len(uint(min(c.Slots, maxGuardSlots)-1))
	return c
}

// unit is one datagram in a bucket: bucket levels count nano-datagrams, so that refilling
// by elapsed nanoseconds × datagrams a second stays in exact integers.
const unit = int64(1e9)

// slot is one bucket of a guard's table: no pointers, so the garbage collector never scans
// the table, and only the guard's shard touches it.
type slot struct {
	addr   uint32 // the source address that owns the bucket (0 in a slot never used)
	credit int64  // nano-datagrams
	last   int64  // Batch.NowNanos when credit was last brought up to date
}

// Guard is the stage in front of the stack that keeps the UDP echo service (port 7) from
// being played into a loop or flooded. For each IPv4 UDP datagram to port 7 it drops, in
// this order:
//
//   - a datagram from a source port on LoopPorts, with reason echo-loop-port;
//   - a datagram over its source address's token bucket (Rate a second, Burst deep), with
//     reason echo-rate-limit. Datagrams from the loop ports take no tokens.
//
// Everything else goes on unchanged (verdict Continue) to the next stage: other protocols
// and ports, TCP echo (a TCP connection needs a handshake, which a forged source cannot
// complete, so TCP echo cannot be played into a loop), ICMP (the stack answers echo
// requests and never answers echo replies, so two ICMP echoers cannot bounce). It looks
// only at the header's shape, as owner functions do (header.IPv4InFrame): lengths and
// checksums are the stack's to check after it, so a malformed datagram to port 7 takes
// its source's token like any other. A later fragment carries no ports and goes on; the
// first fragment, which does, is checked and charged once for the whole datagram, and
// without it the stack's reassembly never completes the rest (it drops them at its
// timeout). It does not look at the destination address: a datagram to port 7 of an
// address not ours (an App that claims all IPv4, WithReflect's) may be counted here
// before the stack would drop it as not-for-us.
//
// Buckets. Each shard's Guard has a table of Slots buckets, each owned by one source
// address, in a flat array with no pointers. An address may use two slots, picked by a
// seeded hash: its own if one of them is, else one whose bucket is full (its owner, if
// any, has been quiet for Burst/Rate seconds: a full bucket is exactly what a new address
// gets, so taking it over loses its owner nothing and gives the newcomer nothing extra).
// When neither is, the table is crowded there and the address shares the fuller of the
// two buckets without owning it: its datagrams and the owner's draw from one bucket. A
// crowded table thus limits the addresses that share a bucket together, never more
// loosely: two flooding addresses that keep meeting in one slot cannot reset each other's
// bucket, and together get Rate and Burst, not twice that. A forged source can always
// spend its victim's tokens by sending as the victim (that is what per-source limiting
// can and cannot do), and a flood from many forged sources is bounded by the echo
// service's own capacity, not by this table.
//
// Shards. The stack does not steer unfragmented UDP to a shard (its owner function leaves
// it on the shard whose queue received it), so a source's datagrams are limited on each
// shard they arrive at, by that shard's table: a source whose datagrams the NIC spreads
// over k queues (a 4-tuple RSS hash and many source ports) gets up to k × Rate and
// k × Burst. A NIC that hashes UDP on addresses only keeps a source on one shard; the
// lab's veth receives on the queue the sender transmitted on, so a sender that moves
// between CPUs may spread over queues. Fragments go to the shard the stack's owner
// function picks for reassembly, so their first fragments are charged there. (Steering
// every datagram to port 7 to a shard by its source address would make the limit exact
// across shards, at the cost of a hand-off for most datagrams; it is not done.)
//
// Time is Batch.NowNanos (a fake clock in stagetest); a clock that goes back refills
// nothing. Process never blocks and allocates nothing.
type Guard struct {
	rate  int64 // datagrams a second = nano-datagrams a nanosecond; ≤ 0: no limit
	depth int64 // a full bucket, in nano-datagrams
	fill  int64 // nanoseconds that fill an empty bucket
	seed  uint64
	mask  uint32
	slots []slot
}

// NewGuard makes one shard's guard with its own table.
func NewGuard(cfg GuardConfig) *Guard {
	cfg = cfg.Resolved()
	g := &Guard{rate: int64(cfg.Rate), depth: int64(cfg.Burst) * unit, seed: cfg.Seed, mask: uint32(cfg.Slots - 1)}
	if g.seed == 0 {
		g.seed = rand.Uint64() | 1
	}
	if g.rate > 0 {
		g.fill = (g.depth + g.rate - 1) / g.rate
		g.slots = make([]slot, cfg.Slots)
		for i := range g.slots {
			g.slots[i].credit = g.depth // a slot never used is a full bucket
		}
	}
	return g
}

// Name is the stage's name in per-stage counters.
func (*Guard) Name() string { return "udp-echo-guard" }

// Process drops the batch's UDP echo requests from loop ports and over their source's rate.
func (g *Guard) Process(b *pipelines.Batch) {
	now := b.NowNanos
	for i := range b.Pkts {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		ip, ok := header.IPv4InFrame(b.Data(i))
		if !ok || ip.Protocol() != header.ProtoUDP {
			continue
		}
		sport, dport, ok := ip.Ports()
		if !ok || dport != EchoPort {
			continue
		}
		if isLoopPort(sport) {
			b.Drop(i, ReasonLoopPort)
			continue
		}
		if g.rate > 0 && !g.take(binary.BigEndian.Uint32(ip[12:16]), now) {
			b.Drop(i, ReasonRateLimit)
		}
	}
}

// hash mixes addr with the seed (splitmix64's finaliser): its two halves pick the two slots.
func (g *Guard) hash(addr uint32) uint64 {
	x := uint64(addr) ^ g.seed
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// refill brings s's bucket up to now.
func (g *Guard) refill(s *slot, now int64) {
	el := now - s.last
	if el <= 0 {
		return // a clock that goes back refills nothing
	}
	s.last = now
	if el >= g.fill {
		s.credit = g.depth
		return
	}
	s.credit = min(s.credit+el*g.rate, g.depth)
}

// take takes one datagram from addr's bucket and reports whether there was one.
func (g *Guard) take(addr uint32, now int64) bool {
	h := g.hash(addr)
	a, b := &g.slots[uint32(h)&g.mask], &g.slots[uint32(h>>32)&g.mask]
	var s *slot
	switch {
	case a.addr == addr:
		s = a
	case b.addr == addr:
		s = b
	default:
		g.refill(a, now)
		g.refill(b, now)
		switch {
		case a.credit == g.depth:
			s, a.addr = a, addr
		case b.credit == g.depth:
			s, b.addr = b, addr
		case b.credit > a.credit:
			s = b // crowded: share the fuller bucket; its owner stays
		default:
			s = a
		}
	}
	g.refill(s, now)
	if s.credit < unit {
		return false
	}
	s.credit -= unit
	return true
}
