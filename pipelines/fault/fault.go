// Package fault owns netchan's fault-injection stage for tests and labs (this kernel has no
// netem): a stage that, in front of other stages, drops, duplicates, reorders and corrupts
// received packets with seeded probabilities, or delays every packet by a fixed time, and the
// counters of what it did.
//
// # How packets enter and leave
//
// The stage sees every packet whose verdict is Continue when it runs, draws one number from a
// PCG generator (math/rand/v2) seeded with Config.Seed mixed with the shard index (so shards
// differ, and a run with the same seed and the same packets repeats), and picks at most one
// fault:
//
//   - drop: the verdict becomes Drop with reason "fault-drop" (ReasonDrop);
//   - duplicate: a copy goes into a new frame from Batch.Alloc, appended to the batch with
//     verdict Continue, so it passes through the rest of the pipeline after the original (when
//     the batch is full, the copy waits in the hold buffer and goes with the next release);
//   - reorder: the bytes are copied into a buffer the stage owns and the frame is Consumed; the
//     packet comes back (in a new frame from Batch.Alloc, verdict Continue, at the end of a
//     batch) once Config.ReorderDepth later packets have passed the stage, or after
//     Config.MaxHold, whichever comes first;
//   - corrupt: one byte between the end of the IPv4 header and the end of the IPv4 datagram is
//     inverted, so the TCP, UDP or ICMP checksum (or reassembly's) must catch it. Frames that are
//     not IPv4 or have no such byte are left alone.
//
// A stage may not keep a frame past Process (a shard hands every verdict back to its rings), so
// held packets live as copies in a preallocated buffer, not as frames, and leave it in order.
// Packets that do not fit it (too long, or Config.HoldSlots already taken) are not reordered
// and are counted as skipped, as are duplicates for which neither the batch nor the buffer had
// room, or the shard no free frame. A release that finds no room is retried on the next pass.
// A busy shard's batches are often full (the batch is the shard's whole pass), which is why
// copies wait in the buffer rather than being given up.
//
// A held packet released by time when no packet arrives has no Process call to ride on: the
// stage is then an Originator and runs the stages that follow it itself (InFront records
// them). A fault stage put in a pipeline without InFront releases held packets only from
// Process, when later packets arrive.
//
// # Delay
//
// Config.Delay (delay=1ms in Parse's syntax) holds every packet that the faults above leave
// undecided, not a drawn share: drop, duplicate and corrupt apply first, a copy is held right
// behind its original, and Delay with Reorder is refused (a delayed stream keeps its order).
// Each packet is copied into a hold slot and its frame Consumed in the pass it arrives in
// (Batch.NowNanos, the pass's start, is its arrival time); it leaves at arrival + Delay, in
// arrival order, in a new frame (Batch.Alloc) that goes through the rest of the pipeline:
// from Process, where what is due leaves before the pass's packets take their slots, or from
// Originate on a pass that received nothing. NextDeadline is the oldest held packet's
// arrival + Delay, so a sleeping shard asks to be woken then.
//
// So a packet never leaves early, and leaves on the first pass at or after its time. A shard
// that slept would wake late: the Go netpoller it sleeps in waits in whole milliseconds (a wait
// under 1 ms becomes 1 ms), and releases were 145-180 µs late at the median that way. With a
// Delay the stage is pipelines.Punctual, so the shard spins instead of sleeping while a release
// is less than a millisecond away, at the price of a core spinning through the last
// millisecond of every delay. Measured through a shard over an in-memory port
// (TestDelayShardTiming, a 1 ms delay, a packet every 1.5 or 3 ms, a 2-CPU VM): 2.6-3.2 µs late
// at the median and 15-25 µs at p99, and the median latency rose by 0.995-1.001 ms.
//
// Capacity: a shard holds what arrives in Delay: rate × Delay packets (500 at 500k packets a
// second for 1 ms), in HoldSlots slots (DefaultDelaySlots when zero, at most MaxHoldSlots),
// each as long as the longest frame (MTU + 18 bytes, at least DefaultSlotBytes), allocated
// once. A packet that finds every slot taken (or is longer than a slot) is dropped with
// ReasonDelayFull and counted in Counters.DelayFull and in the stage's drops, never sent on
// early; a copy that finds none is counted as skipped. Each delayed packet takes two handles
// of a batch, once arriving and once leaving, so a shard whose batches are full of arrivals
// sends held packets on only as room appears, and drops with ReasonDelayFull when it cannot.
//
// Nothing is allocated per packet. Counters are shared by all shards (atomics, added once per
// batch) and can be read from any goroutine.
package fault

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// ReasonDrop is the drop reason of packets the stage drops on purpose.
var ReasonDrop = pipelines.RegisterReason("fault-drop")

// ReasonDelayFull is the drop reason of packets Config.Delay should have held when every hold
// slot was taken (Counters.DelayFull counts them too).
var ReasonDelayFull = pipelines.RegisterReason("fault-delay-full")

// Defaults for the zero values of Config's reorder and hold fields, and bounds.
const (
	DefaultReorderDepth = 3
	DefaultMaxHold      = time.Millisecond
	DefaultHoldSlots    = 64
	// DefaultDelaySlots is HoldSlots' default when Config.Delay is set: what a shard receiving
	// a million packets a second holds during a 1 ms delay.
	DefaultDelaySlots = 1024
	// MaxHoldSlots bounds HoldSlots (the buffer is HoldSlots × the longest frame).
	MaxHoldSlots = 4096
	// MaxDelay bounds Config.Delay.
	MaxDelay = time.Second
)

// Config is what the stage does. Each probability is per packet, in [0, 1], and at most one
// fault happens to a packet, so their sum must not exceed 1.
type Config struct {
	Seed      uint64
	Drop      float64
	Duplicate float64
	Reorder   float64
	Corrupt   float64
	// ReorderDepth is how many later packets pass a held packet before it is released
	// (0: DefaultReorderDepth).
	ReorderDepth int
	// MaxHold is the longest a packet is held (0: DefaultMaxHold).
	MaxHold time.Duration
	// HoldSlots is how many packets one shard may hold at once (0: DefaultHoldSlots, or
	// DefaultDelaySlots with a Delay).
	HoldSlots int
	// Delay holds every packet that passes the stage for this long, then sends it on, in
	// arrival order (0: none; at most MaxDelay). Drop, Duplicate and Corrupt apply first; a
	// Delay and Reorder together are refused. See "Delay" in the package doc.
	Delay time.Duration
}

// Active reports whether the configuration injects any fault (a Delay is one).
func (c Config) Active() bool { return c.Drop+c.Duplicate+c.Reorder+c.Corrupt > 0 || c.Delay > 0 }

// Validate checks the probabilities and the reorder bounds.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("fault: %w", err)
	}
	return nil
}

func (c Config) validate() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"drop", c.Drop}, {"dup", c.Duplicate}, {"reorder", c.Reorder}, {"corrupt", c.Corrupt}} {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 1 {
			return fmt.Errorf("%s=%v: want a probability between 0 and 1 (such as 0.01 or 1%%)", p.name, p.v)
		}
	}
	if s := c.Drop + c.Duplicate + c.Reorder + c.Corrupt; s > 1+1e-9 {
		return fmt.Errorf("drop+dup+reorder+corrupt = %.4g: at most one fault happens to a packet, so the sum must not exceed 1", s)
	}
	if c.ReorderDepth < 0 || c.ReorderDepth > MaxHoldSlots {
		return fmt.Errorf("depth=%d: want 1 to %d later packets (0: %d)", c.ReorderDepth, MaxHoldSlots, DefaultReorderDepth)
	}
	if c.MaxHold < 0 || c.MaxHold > time.Second {
		return fmt.Errorf("hold=%v: want a duration up to 1s (0: %v)", c.MaxHold, DefaultMaxHold)
	}
	if c.HoldSlots < 0 || c.HoldSlots > MaxHoldSlots {
		return fmt.Errorf("slots=%d: want 1 to %d (0: %d, or %d with a delay)", c.HoldSlots, MaxHoldSlots, DefaultHoldSlots, DefaultDelaySlots)
	}
	if c.Delay < 0 || c.Delay > MaxDelay {
		return fmt.Errorf("delay=%v: want a duration from 0 to %v", c.Delay, MaxDelay)
	}
	if c.Delay > 0 && c.Reorder > 0 {
		return fmt.Errorf("delay=%v with reorder=%v: a delayed stream keeps its order, so delay and reorder do not go together", c.Delay, c.Reorder)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.ReorderDepth == 0 {
		c.ReorderDepth = DefaultReorderDepth
	}
	if c.MaxHold == 0 {
		c.MaxHold = DefaultMaxHold
	}
	if c.HoldSlots == 0 {
		c.HoldSlots = DefaultHoldSlots
		if c.Delay > 0 {
			c.HoldSlots = DefaultDelaySlots
		}
	}
	return c
}

// String is the configuration in Parse's syntax (non-zero fields only).
func (c Config) String() string {
	var parts []string
	add := func(k string, v float64) {
		if v != 0 {
			parts = append(parts, k+"="+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	add("drop", c.Drop)
	add("dup", c.Duplicate)
	add("reorder", c.Reorder)
	add("corrupt", c.Corrupt)
	if c.ReorderDepth != 0 {
		parts = append(parts, "depth="+strconv.Itoa(c.ReorderDepth))
	}
	if c.MaxHold != 0 {
		parts = append(parts, "hold="+c.MaxHold.String())
	}
	if c.HoldSlots != 0 {
		parts = append(parts, "slots="+strconv.Itoa(c.HoldSlots))
	}
	if c.Delay != 0 {
		parts = append(parts, "delay="+c.Delay.String())
	}
	parts = append(parts, "seed="+strconv.FormatUint(c.Seed, 10))
	return strings.Join(parts, ",")
}

// Keys are the keys Parse accepts.
const Keys = "drop, dup, reorder, corrupt (probabilities: 0.01 or 1%), seed (an integer), depth (later packets before a reordered one goes), hold (its longest wait, such as 2ms), slots (packets held at once per shard), delay (every packet held this long, such as 1ms)"

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("bad fault specification")

// Parse reads a comma-separated list of key=value pairs such as
// "drop=0.01,dup=0.02,reorder=5%,corrupt=0.001,seed=7" or "delay=1ms" (see Keys) and validates
// the result.
// An empty string is the zero Config (no faults).
func Parse(s string) (Config, error) {
	var c Config
	s = strings.TrimSpace(s)
	if s == "" {
		return c, nil
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return Config{}, fmt.Errorf("%w: %q is not key=value: want %s", ErrSyntax, kv, Keys)
		}
		if k == "duplicate" {
			k = "dup"
		}
		if seen[k] {
			return Config{}, fmt.Errorf("%w: %s given twice", ErrSyntax, k)
		}
		seen[k] = true
		var err error
		switch k {
		case "drop":
			c.Drop, err = parseProb(v)
		case "dup":
			c.Duplicate, err = parseProb(v)
		case "reorder":
			c.Reorder, err = parseProb(v)
		case "corrupt":
			c.Corrupt, err = parseProb(v)
		case "seed":
			c.Seed, err = strconv.ParseUint(v, 0, 64)
			if err != nil {
				err = errors.New("want an unsigned integer")
			}
		case "depth":
			c.ReorderDepth, err = parsePositive(v)
		case "slots":
			c.HoldSlots, err = parsePositive(v)
		case "hold":
			c.MaxHold, err = time.ParseDuration(v)
			if err == nil && c.MaxHold <= 0 {
				err = errors.New("want a positive duration")
			} else if err != nil {
				err = errors.New("want a duration such as 2ms")
			}
		case "delay":
			c.Delay, err = time.ParseDuration(v)
			if err != nil {
				err = errors.New("want a duration such as 1ms")
			}
		default:
			return Config{}, fmt.Errorf("%w: unknown key %q: want %s", ErrSyntax, k, Keys)
		}
		if err != nil {
			return Config{}, fmt.Errorf("%w: %s=%s: %v", ErrSyntax, k, v, err)
		}
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	return c, nil
}

func parseProb(v string) (float64, error) {
	scale := 1.0
	if t, ok := strings.CutSuffix(v, "%"); ok {
		v, scale = t, 0.01
	}
	f, err := strconv.ParseFloat(v, 64)
	f *= scale
	if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
		return 0, errors.New("want a probability between 0 and 1 (such as 0.01 or 1%)")
	}
	return f, nil
}

func parsePositive(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, errors.New("want a positive integer")
	}
	return n, nil
}

// Counters is what the fault stages of all shards did; any goroutine may read them.
type Counters struct {
	Dropped    atomic.Uint64 // dropped with ReasonDrop
	Duplicated atomic.Uint64 // copies sent on (at once, or after waiting for batch room)
	Reordered  atomic.Uint64 // held back
	Delayed    atomic.Uint64 // held for Config.Delay (copies from Duplicate included)
	Released   atomic.Uint64 // reordered and delayed packets sent on
	Corrupted  atomic.Uint64 // one byte inverted
	// DelayFull counts the packets dropped with ReasonDelayFull: Config.Delay found no free
	// hold slot for them (or they were longer than a slot).
	DelayFull atomic.Uint64
	// Skipped counts faults drawn but not carried out: a duplicate without batch room, hold
	// slot or free frame, a packet too long for a hold slot or with every slot taken, a
	// corruption of a frame without IPv4 payload.
	Skipped atomic.Uint64
}

// Stats is a snapshot of Counters.
type Stats struct {
	Dropped    uint64 `json:"dropped"`
	Duplicated uint64 `json:"duplicated"`
	Reordered  uint64 `json:"reordered"`
	Delayed    uint64 `json:"delayed"`
	Released   uint64 `json:"released"`
	Corrupted  uint64 `json:"corrupted"`
	DelayFull  uint64 `json:"delay_full"`
	Skipped    uint64 `json:"skipped"`
}

// Snapshot reads the counters. Released is read first: a stage adds to it after Reordered and
// Delayed, so a snapshot taken while shards run never has more released than held back.
func (c *Counters) Snapshot() Stats {
	released := c.Released.Load()
	return Stats{Dropped: c.Dropped.Load(), Duplicated: c.Duplicated.Load(), Reordered: c.Reordered.Load(),
		Delayed: c.Delayed.Load(), Released: released, Corrupted: c.Corrupted.Load(),
		DelayFull: c.DelayFull.Load(), Skipped: c.Skipped.Load()}
}

// Held is how many reordered and delayed packets are held now (Reordered + Delayed -
// Released; a snapshot taken while shards run may count a batch's packets as still held).
func (s Stats) Held() uint64 { return s.Reordered + s.Delayed - s.Released }

// held is one packet in the hold buffer.
type held struct {
	n        uint32
	hash     uint32
	inIf     uint8
	dup      bool   // a copy (waiting for batch room, or delayed), counted as Duplicated
	delayed  bool   // held for Config.Delay, counted as Released
	due      uint64 // released when seen reaches it
	deadline int64  // or when the clock does
}

// never is the due of a packet released only by time.
const never = math.MaxUint64

// Stage is one shard's fault stage; build it with New.
type Stage struct {
	cfg Config
	c   *Counters
	pcg rand.PCG
	// cumulative thresholds of one draw in [0, 1)
	tDrop, tDup, tReorder, tCorrupt float64

	rest *pipelines.Pipeline // the stages after this one (InFront), for releases in Originate

	slot  int // bytes per hold slot
	buf   []byte
	hold  []held // ring of len HoldSlots
	head  int
	count int
	seen  uint64 // packets that passed the stage

	// this batch's counts, added to c once per batch
	dropped, duplicated, reordered, delayed, released, corrupted, delayFull, skipped uint64
}

// DefaultSlotBytes is a hold slot's size until Start learns the interfaces' MTU.
const DefaultSlotBytes = 2048

// New returns shard's fault stage for cfg, which must pass Validate (New panics otherwise: check
// user input with Validate or Parse first). Counters c may be shared by every shard; nil gives
// the stage counters of its own.
func New(cfg Config, shard int, c *Counters) *Stage {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	if c == nil {
		c = new(Counters)
	}
	s := &Stage{cfg: cfg, c: c, hold: make([]held, cfg.HoldSlots)}
	s.tDrop = cfg.Drop
	s.tDup = s.tDrop + cfg.Duplicate
	s.tReorder = s.tDup + cfg.Reorder
	s.tCorrupt = s.tReorder + cfg.Corrupt
	s.pcg.Seed(cfg.Seed, mix(uint64(shard)))
	if cfg.Reorder > 0 || cfg.Duplicate > 0 || cfg.Delay > 0 {
		s.slot = DefaultSlotBytes
		s.buf = make([]byte, cfg.HoldSlots*s.slot)
	}
	return s
}

// mix spreads a shard index over 64 bits (SplitMix64's finaliser), so nearby shards get
// unrelated streams.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Counters returns the stage's counters.
func (s *Stage) Counters() *Counters { return s.c }

// Config returns the stage's configuration with defaults filled in.
func (s *Stage) Config() Config { return s.cfg }

// InFront puts s before p's stages and returns p. Held packets released outside Process (by
// MaxHold or Delay, when no packet arrives) go through the stages that were in p, and p.Local.
func (s *Stage) InFront(p *pipelines.Pipeline) *pipelines.Pipeline {
	s.rest = &pipelines.Pipeline{Stages: p.Stages, Local: p.Local}
	p.Stages = append([]pipelines.Stage{s}, p.Stages...)
	return p
}

// Name implements pipelines.Stage.
func (s *Stage) Name() string { return "fault" }

// Start implements pipelines.Starter: hold slots are sized for the largest interface MTU.
func (s *Stage) Start(info pipelines.ShardInfo) {
	if s.buf == nil {
		return
	}
	want := DefaultSlotBytes
	for _, ifc := range info.Ifaces {
		if n := ifc.MTU + 18; n > want { // Ethernet header and one VLAN tag
			want = n
		}
	}
	if want != s.slot && s.count == 0 {
		s.slot = want
		s.buf = make([]byte, s.cfg.HoldSlots*s.slot)
	}
}

func (s *Stage) draw() float64 { return float64(s.pcg.Uint64()>>11) * 0x1p-53 }

// Process implements pipelines.Stage.
func (s *Stage) Process(b *pipelines.Batch) {
	n := len(b.Pkts) // packets appended below are not faulted again
	if s.cfg.Delay > 0 && s.count > 0 {
		// What is due leaves first, so its slots are free for this batch's packets.
		s.release(b)
	}
	for i := 0; i < n; i++ {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		s.seen++
		r := s.draw()
		dup := false
		switch {
		case r >= s.tCorrupt:
		case r < s.tDrop:
			b.Drop(i, ReasonDrop)
			s.dropped++
			continue
		case r < s.tDup:
			if s.cfg.Delay > 0 {
				dup = true // the copy is delayed with the packet, right behind it
			} else {
				s.duplicate(b, i)
			}
		case r < s.tReorder:
			s.hold1(b, i)
		default:
			s.corrupt(b.Data(i))
		}
		if s.cfg.Delay > 0 {
			s.delay(b, i, dup)
		}
	}
	s.release(b)
	s.publish()
}

func (s *Stage) duplicate(b *pipelines.Batch, i int) {
	src := b.Data(i)
	if b.Full() {
		if !s.put(b, i, held{dup: true, due: s.seen, deadline: b.NowNanos}) {
			s.skipped++
		}
		return
	}
	j, d, ok := b.Alloc(len(src), pipelines.Continue)
	if !ok {
		s.skipped++
		return
	}
	copy(d, src)
	b.Pkts[j].InIf, b.Pkts[j].Hash = b.Pkts[i].InIf, b.Pkts[i].Hash
	s.duplicated++
}

func (s *Stage) hold1(b *pipelines.Batch, i int) {
	h := held{due: s.seen + uint64(s.cfg.ReorderDepth), deadline: b.NowNanos + int64(s.cfg.MaxHold)}
	if !s.put(b, i, h) {
		s.skipped++
		return
	}
	b.Pkts[i].Verdict = pipelines.Consume
	s.reordered++
}

// delay holds packet i (and, with dup, a copy of it behind it) until Config.Delay has passed.
// A packet that finds no free slot is dropped with ReasonDelayFull, never sent on early; a copy
// that finds none is skipped.
func (s *Stage) delay(b *pipelines.Batch, i int, dup bool) {
	h := held{delayed: true, due: never, deadline: b.NowNanos + int64(s.cfg.Delay)}
	if !s.put(b, i, h) {
		b.Drop(i, ReasonDelayFull)
		s.delayFull++
		if dup {
			s.skipped++
		}
		return
	}
	b.Pkts[i].Verdict = pipelines.Consume
	s.delayed++
	if dup {
		h.dup = true
		if s.put(b, i, h) {
			s.delayed++
		} else {
			s.skipped++
		}
	}
}

// put copies packet i into the hold buffer as h says when it leaves: a reordered packet, due
// after ReorderDepth later packets or MaxHold; a copy (dup), due at once; a delayed packet
// (or copy), due at Delay.
func (s *Stage) put(b *pipelines.Batch, i int, h held) bool {
	d := b.Data(i)
	if s.count == len(s.hold) || len(d) > s.slot {
		return false
	}
	k := (s.head + s.count) % len(s.hold)
	copy(s.buf[k*s.slot:], d)
	p := &b.Pkts[i]
	h.n, h.hash, h.inIf = uint32(len(d)), p.Hash, p.InIf
	s.hold[k] = h
	s.count++
	return true
}

// release sends on, in the order they were held, the held packets that are due.
func (s *Stage) release(b *pipelines.Batch) int {
	got := 0
	for s.count > 0 {
		h := &s.hold[s.head]
		if s.seen < h.due && b.NowNanos < h.deadline {
			break
		}
		j, d, ok := b.Alloc(int(h.n), pipelines.Continue)
		if !ok {
			break // retried on the next pass
		}
		copy(d, s.buf[s.head*s.slot:s.head*s.slot+int(h.n)])
		b.Pkts[j].InIf, b.Pkts[j].Hash = h.inIf, h.hash
		s.head = (s.head + 1) % len(s.hold)
		s.count--
		if h.dup {
			s.duplicated++
		}
		if h.delayed || !h.dup {
			s.released++
		}
		got++
	}
	return got
}

// corrupt inverts one byte of the IPv4 payload (past the IPv4 header, within the datagram's
// total length, so Ethernet padding is never chosen and the checksum must catch it).
func (s *Stage) corrupt(d []byte) {
	ip, ok := header.IPv4InFrame(d)
	if !ok {
		s.skipped++
		return
	}
	start := header.EthernetLen + ip.IHL()
	end := min(header.EthernetLen+ip.TotalLength(), len(d))
	if end <= start {
		s.skipped++
		return
	}
	d[start+int(s.pcg.Uint64()%uint64(end-start))] ^= 0xff
	s.corrupted++
}

// Originate implements pipelines.Originator: held packets whose MaxHold or Delay has passed go
// through the stages after this one (see InFront).
func (s *Stage) Originate(b *pipelines.Batch) {
	if s.count == 0 || s.rest == nil || b.NowNanos < s.hold[s.head].deadline {
		return
	}
	if s.release(b) > 0 {
		s.rest.Run(b)
	}
	s.publish()
}

// NextDeadline implements pipelines.Originator: when the oldest held packet is due (with a
// Delay, its arrival + Delay; the hold buffer is first in, first out).
func (s *Stage) NextDeadline() int64 {
	if s.count == 0 || s.rest == nil {
		return 0
	}
	return s.hold[s.head].deadline
}

// Punctual implements pipelines.Punctual: with a Delay the held packets' deadlines are the
// delay itself, and a shard that slept through the last millisecond before one would release
// the packet up to a millisecond late.
func (s *Stage) Punctual() bool { return s.cfg.Delay > 0 }

// Held is how many packets (reordered and delayed ones, and copies waiting for room) this
// shard's stage holds now; call it from the shard's goroutine.
func (s *Stage) Held() int { return s.count }

func (s *Stage) publish() {
	add := func(c *atomic.Uint64, v *uint64) {
		if *v != 0 {
			c.Add(*v)
			*v = 0
		}
	}
	add(&s.c.Dropped, &s.dropped)
	add(&s.c.Duplicated, &s.duplicated)
	add(&s.c.Reordered, &s.reordered)
	add(&s.c.Delayed, &s.delayed)
	add(&s.c.Released, &s.released)
	add(&s.c.Corrupted, &s.corrupted)
	add(&s.c.DelayFull, &s.delayFull)
	add(&s.c.Skipped, &s.skipped)
}
