package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// Drop reasons of the rate limiter.
var (
	ReasonExceeded  = pipelines.RegisterReason("ratelimit-exceeded")
	ReasonTableFull = pipelines.RegisterReason("ratelimit-table-full")
)

// probe is how many slots from a prefix's home slot the table looks at.
const probe = 8

// unit is one token: bucket levels count nanotokens, so refilling by elapsed nanoseconds ×
// packets per second stays in exact integers.
const unit = int64(1e9)

// Config is the limit every source prefix gets.
type Config struct {
	Rate      int64 // packets per second a prefix may send, sustained (1 ≤ Rate ≤ 2^30)
	Burst     int64 // the bucket: packets a prefix may send at once after a quiet time (1 ≤ Burst ≤ 2^24)
	PrefixLen int   // the source prefix that shares one bucket: 32 per host, 24 per /24, ...
	Buckets   int   // table slots per shard, a power of two ≥ 8 (default 65536)
}

// Limiter is the rate limiter shared by every shard: the configuration and the counters.
// Each shard runs its own Stage with its own table of buckets; the owner function (Owner)
// sends every packet of a prefix to one shard, so a prefix's bucket is never split.
type Limiter struct {
	cfg  Config
	mask uint32
	max  int64 // a full bucket, in nanotokens
	fill int64 // nanoseconds that fill an empty bucket

	mu     sync.Mutex
	shards []*shard
}

// New checks the configuration.
func New(cfg Config) (*Limiter, error) {
	if cfg.Buckets == 0 {
		cfg.Buckets = 65536
	}
	switch {
	case cfg.Rate < 1 || cfg.Rate > 1<<30:
		return nil, fmt.Errorf("ratelimit: rate %d packets/s: want 1 to %d", cfg.Rate, 1<<30)
	case cfg.Burst < 1 || cfg.Burst > 1<<24:
		return nil, fmt.Errorf("ratelimit: burst %d packets: want 1 to %d", cfg.Burst, 1<<24)
	case cfg.PrefixLen < 1 || cfg.PrefixLen > 32:
		return nil, fmt.Errorf("ratelimit: prefix length %d: want 1 to 32", cfg.PrefixLen)
	case cfg.Buckets < probe || cfg.Buckets > 1<<24 || cfg.Buckets&(cfg.Buckets-1) != 0:
		return nil, fmt.Errorf("ratelimit: %d buckets per shard: want a power of two from %d to %d", cfg.Buckets, probe, 1<<24)
	}
	l := &Limiter{cfg: cfg, mask: ^uint32(0) << (32 - cfg.PrefixLen), max: cfg.Burst * unit}
	l.fill = (l.max + cfg.Rate - 1) / cfg.Rate
	return l, nil
}

// Config is the limiter's configuration, defaults filled in.
func (l *Limiter) Config() Config { return l.cfg }

// key is the masked source address of an IPv4 frame.
func (l *Limiter) key(ip header.IPv4) uint32 {
	s := ip.Src4()
	return binary.BigEndian.Uint32(s[:]) & l.mask
}

// OwnerOf is the shard (of shards) that owns prefix key: a multiplicative hash, its top bits
// scaled to the shard count.
func OwnerOf(key uint32, shards int) int {
	return int(uint64(key*0x9e3779b1) * uint64(shards) >> 32)
}

// Owner is the App's owner function: an IPv4 packet goes to the shard that owns its source
// prefix, wherever it arrived; anything else (ARP) stays where it arrived.
func (l *Limiter) Owner(data []byte, shards int) int {
	ip, ok := header.IPv4InFrame(data)
	if !ok || shards <= 1 {
		return -1
	}
	return OwnerOf(l.key(ip), shards)
}

// bucket is one table slot. The table is a flat array of these (no pointers, so the garbage
// collector never scans it) and only its shard touches it.
type bucket struct {
	key     uint32
	used    bool
	last    int64 // when tokens was last brought up to date (Batch.NowNanos)
	tokens  int64 // nanotokens
	passed  uint64
	dropped uint64
}

// Totals are the limiter's figures, summed over shards.
type Totals struct {
	Passed    uint64 // packets within their prefix's limit (forwarded)
	Exceeded  uint64 // packets dropped as ratelimit-exceeded
	TableFull uint64 // packets dropped as ratelimit-table-full
	Reused    uint64 // slots taken over from a prefix whose bucket had refilled
	Prefixes  uint64 // prefixes in the tables now
}

type totals struct{ passed, exceeded, tableFull, reused, prefixes uint64 }

type pubTotals struct{ passed, exceeded, tableFull, reused, prefixes atomic.Uint64 }

// shard is one shard's stage: its table and its figures, counted in plain memory during a
// batch and published (atomic stores) at its end.
type shard struct {
	l     *Limiter
	id    int
	table []bucket
	shift uint
	local totals
	pub   pubTotals
}

// Stage makes shard's rate-limiting stage with its own table.
func (l *Limiter) Stage(id int) pipelines.Stage {
	s := &shard{l: l, id: id, table: make([]bucket, l.cfg.Buckets)}
	for n := l.cfg.Buckets; n > 1; n >>= 1 {
		s.shift++
	}
	s.shift = 32 - s.shift
	l.mu.Lock()
	l.shards = append(l.shards, s)
	l.mu.Unlock()
	return s
}

func (*shard) Name() string { return "ratelimit" }

// slot finds key's bucket, or makes one: in a free slot of its probe window, else in a slot
// whose bucket has refilled since its last packet (a full bucket is what a new prefix gets,
// so taking it over loses nothing). It returns -1 when every slot of the window belongs to
// a prefix that sent within the last fill time: the table is full there.
func (s *shard) slot(key uint32, now int64) int {
	n := len(s.table) - 1
	home := int((key * 0x85ebca6b) >> s.shift) // another multiplier than OwnerOf's
	free, stale := -1, -1
	for k := 0; k < probe; k++ {
		i := (home + k) & n
		b := &s.table[i]
		switch {
		case b.used && b.key == key:
			return i
		case !b.used:
			if free < 0 {
				free = i
			}
		case stale < 0 && now-b.last >= s.l.fill:
			stale = i
		}
	}
	i := free
	if i < 0 {
		if i = stale; i < 0 {
			return -1
		}
		s.local.reused++
	} else {
		s.local.prefixes++
	}
	s.table[i] = bucket{key: key, used: true, last: now, tokens: s.l.max}
	return i
}

func (s *shard) Process(b *pipelines.Batch) {
	l, now := s.l, b.NowNanos
	before := s.local
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != pipelines.Continue {
			continue
		}
		ip, ok := header.IPv4InFrame(b.Data(i))
		if !ok {
			continue // package wire's local stage passes only IPv4 on
		}
		j := s.slot(l.key(ip), now)
		if j < 0 {
			s.local.tableFull++
			b.Drop(i, ReasonTableFull)
			continue
		}
		e := &s.table[j]
		if el := now - e.last; el > 0 { // refill; a clock that goes back refills nothing
			if el >= l.fill {
				e.tokens = l.max
			} else if e.tokens += el * l.cfg.Rate; e.tokens > l.max {
				e.tokens = l.max
			}
			e.last = now
		}
		if e.tokens >= unit {
			e.tokens -= unit
			e.passed++
			s.local.passed++
			continue
		}
		e.dropped++
		s.local.exceeded++
		b.Drop(i, ReasonExceeded)
	}
	if s.local != before {
		s.pub.passed.Store(s.local.passed)
		s.pub.exceeded.Store(s.local.exceeded)
		s.pub.tableFull.Store(s.local.tableFull)
		s.pub.reused.Store(s.local.reused)
		s.pub.prefixes.Store(s.local.prefixes)
	}
}

// Totals sums the shards' figures; safe while the shards run.
func (l *Limiter) Totals() Totals {
	var t Totals
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.shards {
		t.Passed += s.pub.passed.Load()
		t.Exceeded += s.pub.exceeded.Load()
		t.TableFull += s.pub.tableFull.Load()
		t.Reused += s.pub.reused.Load()
		t.Prefixes += s.pub.prefixes.Load()
	}
	return t
}

// PrefixStats are one prefix's figures since its bucket was made.
type PrefixStats struct {
	Prefix  netip.Prefix
	Shard   int
	Passed  uint64
	Dropped uint64
}

// Prefixes lists every prefix in the tables, most drops first. It reads the tables without
// locks: call it once the shards have stopped (after Instance.Stop), or in a test between
// passes.
func (l *Limiter) Prefixes() []PrefixStats {
	var out []PrefixStats
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.shards {
		for _, b := range s.table {
			if !b.used {
				continue
			}
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], b.key)
			out = append(out, PrefixStats{Prefix: netip.PrefixFrom(netip.AddrFrom4(a), l.cfg.PrefixLen), Shard: s.id, Passed: b.passed, Dropped: b.dropped})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Dropped != out[j].Dropped {
			return out[i].Dropped > out[j].Dropped
		}
		return out[i].Prefix.Addr().Less(out[j].Prefix.Addr())
	})
	return out
}
