// Package pipelines is netchan's stage API: the batch of packet handles a shard passes through its
// pipeline, the per-packet verdicts (continue, drop with a named reason, transmit, to the local
// stack), the Stage interface and its single-packet adapter, the owner function that names the
// shard owning a flow, the claim rules a pipeline asks the XDP program for, and the Toeplitz RSS
// hash. It sits at the bottom of the import spine so that shards, the stack, NAT and user code all
// speak it.
//
// A packet handle is a small value (UMEM address, length, metadata) kept in the batch's array;
// the bytes stay in UMEM and stages read and write them in place through Batch.Data. Stages
// never block and never allocate per packet.
package pipelines

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Verdict is what the pipeline decided for one packet.
type Verdict uint8

const (
	// Continue hands the packet to the next stage; after the last stage it is dropped with
	// ReasonNoVerdict.
	Continue Verdict = iota
	Drop
	Transmit
	ToStack
	// Consume means a stage took what it needed from the packet (a socket copied the payload)
	// and the frame goes back to the free list; it is not a drop.
	Consume
	// Handoff sends the packet to shard Packet.ToShard, whose pipeline resumes at the stage
	// that handed it over (NAT uses it when a hairpinned packet's destination belongs to
	// another shard): the stages before it, which this shard's pipeline ran already, do not
	// see the packet twice.
	Handoff
	// Lend means a stage lent the frame out of the pipeline (a netchannel gave it to its
	// reader): the shard counts it as lent, not free, until the stage takes it back with
	// Batch.Adopt. It is not a drop. Set it with Batch.Lend (or Alloc), never directly: the
	// frame may come back on another goroutine before the batch ends, so the shard must count
	// it lent at once.
	Lend
)

func (v Verdict) String() string {
	switch v {
	case Continue:
		return "continue"
	case Drop:
		return "drop"
	case Transmit:
		return "transmit"
	case ToStack:
		return "to-stack"
	case Consume:
		return "consume"
	case Handoff:
		return "handoff"
	case Lend:
		return "lend"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// DropReason names why a packet was dropped; every drop is counted by reason.
type DropReason uint8

// MaxReasons bounds the number of drop reasons, built-in and registered, so counters are arrays.
const MaxReasons = 64

// Built-in drop reasons.
const (
	ReasonNone        DropReason = iota
	ReasonNoVerdict              // no stage decided
	ReasonDropped                // a stage dropped it on purpose (the drop pipeline)
	ReasonMalformed              // too short or not parseable for the stage
	ReasonHandoffFull            // the owner's hand-off ring or spare frames were exhausted
	ReasonTxRingFull             // the tx ring had no room
	ReasonNoInterface            // transmit on an interface the shard does not have
	ReasonNoStack                // ToStack with no local stack attached
	ReasonShutdown               // dropped while the shard drained on shutdown
	numBuiltinReasons
)

var (
	reasonMu    sync.Mutex
	reasonNames = [MaxReasons]string{
		ReasonNone:        "none",
		ReasonNoVerdict:   "no-verdict",
		ReasonDropped:     "dropped",
		ReasonMalformed:   "malformed",
		ReasonHandoffFull: "handoff-full",
		ReasonTxRingFull:  "tx-ring-full",
		ReasonNoInterface: "no-interface",
		ReasonNoStack:     "no-stack",
		ReasonShutdown:    "shutdown",
	}
	reasonCount = int(numBuiltinReasons)
)

// RegisterReason adds a named drop reason (call it from package init or setup, not per packet).
// Registering a name twice returns the same reason.
func RegisterReason(name string) DropReason {
	reasonMu.Lock()
	defer reasonMu.Unlock()
	for i := 0; i < reasonCount; i++ {
		if reasonNames[i] == name {
			return DropReason(i)
		}
	}
	if reasonCount == MaxReasons {
		panic("pipelines: too many drop reasons")
	}
	reasonNames[reasonCount] = name
	reasonCount++
	return DropReason(reasonCount - 1)
}

func (r DropReason) String() string {
	reasonMu.Lock()
	defer reasonMu.Unlock()
	if int(r) < reasonCount {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// ReasonNames returns the names of all reasons known now, indexed by reason.
func ReasonNames() []string {
	reasonMu.Lock()
	defer reasonMu.Unlock()
	return append([]string(nil), reasonNames[:reasonCount]...)
}

// Packet is a packet handle: where its bytes are in the shard's UMEM, and what the pipeline
// decided. It is copied by value between arrays; the frame moves with it.
type Packet struct {
	Addr    uint64 // UMEM address of the first byte
	Len     uint32
	Hash    uint32 // flow hash, when a stage or the owner function computed one
	InIf    uint8  // index of the receiving interface in the pipeline's interface list
	OutIf   uint8  // index of the interface to transmit on, with Transmit
	ToShard uint8  // the shard to hand the packet to, with Handoff
	Verdict Verdict
	Reason  DropReason
	// By is 1 + the index of the stage that decided the packet (len(Stages)+1: the local
	// stack; 0: none yet; ByNone, ByBefore: no stage); Pipeline.Run keeps it,
	// for per-stage drops, capture and trace.
	By uint8
	// Resume, on a packet another shard's stage handed over (Batch.AppendHanded), is 1 + the
	// index of that stage: the pipeline runs the packet from there. 0: from the first stage.
	Resume uint8
}

// parked is the verdict Pipeline.Run gives a handed-over packet until its Resume stage:
// stages look only at Continue packets, so the ones before it pass it by.
const parked Verdict = 0xfd

// Packet.By values that name no stage.
const (
	// ByNone: no stage decided the packet; the pipeline dropped it at its end (no-verdict,
	// no-stack).
	ByNone = 0xfe
	// ByBefore: the packet already had a verdict when the pipeline ran.
	ByBefore = 0xff
)

// Batch is the shard's array of packet handles for one run of the pipeline, plus a view of the
// UMEM that holds their bytes.
type Batch struct {
	Pkts []Packet
	// resuming counts packets appended with a Resume stage past the first since Reset.
	resuming  int
	mem       []byte
	frameMask uint64
	alloc     func() (uint64, bool)
	adopt     func(addr uint64)
	lend      func(addr uint64)
	// Shard is the index of the shard running the batch.
	Shard int
	// NowNanos is the process-wide monotonic clock (Now) at the start of the batch.
	NowNanos int64
}

// Headroom is where Alloc puts a packet's first byte in its frame, as AF_XDP copy mode does for
// received frames, so a stage may prepend headers to any packet.
const Headroom = 256

// SetAllocator is called by the shard that owns the batch: alloc takes a free frame.
func (b *Batch) SetAllocator(alloc func() (addr uint64, ok bool)) { b.alloc = alloc }

// Alloc originates a packet: it takes a free frame from the shard, appends a handle for it
// with length n and the given verdict (Lend lends it at once, as Batch.Lend does), and returns
// its index and bytes (not zeroed). ok is false when the batch is full or the shard has no free
// frame.
func (b *Batch) Alloc(n int, v Verdict) (i int, data []byte, ok bool) {
	if b.Full() || b.alloc == nil || n > int(b.frameMask+1)-Headroom {
		return 0, nil, false
	}
	addr, ok := b.alloc()
	if !ok {
		return 0, nil, false
	}
	b.Pkts = append(b.Pkts, Packet{Addr: addr + Headroom, Len: uint32(n), Verdict: v})
	if v == Lend && b.lend != nil {
		b.lend(addr)
	}
	i = len(b.Pkts) - 1
	return i, b.Data(i), true
}

// SetLender is called by the shard that owns the batch: lend records that a frame of the batch
// was lent out (Lend), adopt that a lent frame came back into the batch (Adopt).
func (b *Batch) SetLender(lend, adopt func(addr uint64)) { b.lend, b.adopt = lend, adopt }

// Lend gives packet i's frame to the stage to lend out of the pipeline (verdict Lend): from now
// on the shard counts it as lent, and only Adopt brings it back. It reports false (and changes
// nothing) when the shard cannot lend.
func (b *Batch) Lend(i int) bool {
	if b.lend == nil {
		return false
	}
	b.lend(b.Pkts[i].Addr)
	b.Pkts[i].Verdict = Lend
	return true
}

// Adopt takes back a frame that a stage lent (verdict Lend) on an earlier pass: it appends a
// handle for it (addr inside the frame, length n, received on inIf) with verdict v (Transmit
// with OutIf set by the caller, Consume to free it, ...) and returns its index. ok is false when
// the batch is full or the shard cannot adopt; the frame then stays lent. Only the stage that
// lent the frame may adopt it, on the shard that lent it, once.
func (b *Batch) Adopt(addr uint64, n uint32, inIf uint8, v Verdict) (i int, ok bool) {
	if b.Full() || b.adopt == nil || uint64(n) > (addr|b.frameMask)+1-addr {
		return 0, false
	}
	b.adopt(addr)
	b.Pkts = append(b.Pkts, Packet{Addr: addr, Len: n, InIf: inIf, Verdict: v})
	return len(b.Pkts) - 1, true
}

// Room is how many more packets the batch can take.
func (b *Batch) Room() int { return cap(b.Pkts) - len(b.Pkts) }

var clockStart = time.Now()

// Now is netchan's monotonic clock in nanoseconds, the same on every shard.
func Now() int64 { return int64(time.Since(clockStart)) }

// NewBatch makes an empty batch of capacity handles over mem, whose frames are frameSize bytes.
func NewBatch(mem []byte, frameSize uint32, capacity int) *Batch {
	if frameSize == 0 || frameSize&(frameSize-1) != 0 {
		panic("pipelines: frame size must be a power of two")
	}
	return &Batch{Pkts: make([]Packet, 0, capacity), mem: mem, frameMask: uint64(frameSize - 1)}
}

// Len is the number of packets in the batch.
func (b *Batch) Len() int { return len(b.Pkts) }

// Data is packet i's bytes in place. Its capacity ends at the end of the packet's frame, so a
// stage may grow the packet within its frame with SetLen.
func (b *Batch) Data(i int) []byte {
	p := &b.Pkts[i]
	end := (p.Addr | b.frameMask) + 1
	return b.mem[p.Addr : p.Addr+uint64(p.Len) : end]
}

// SetLen changes packet i's length; it must stay within the frame.
func (b *Batch) SetLen(i, n int) {
	p := &b.Pkts[i]
	if uint64(n) > (p.Addr|b.frameMask)+1-p.Addr {
		panic("pipelines: packet length beyond its frame")
	}
	p.Len = uint32(n)
}

// Drop sets packet i's verdict to drop with reason r.
func (b *Batch) Drop(i int, r DropReason) { b.Pkts[i].Verdict, b.Pkts[i].Reason = Drop, r }

// Transmit sets packet i's verdict to transmit on interface outIf.
func (b *Batch) Transmit(i int, outIf int) {
	b.Pkts[i].Verdict, b.Pkts[i].OutIf = Transmit, uint8(outIf)
}

// HandTo sets packet i's verdict to hand it to another shard's pipeline.
func (b *Batch) HandTo(i, shard int) { b.Pkts[i].Verdict, b.Pkts[i].ToShard = Handoff, uint8(shard) }

// ToStack sets packet i's verdict to hand it to the local stack.
func (b *Batch) ToStack(i int) { b.Pkts[i].Verdict = ToStack }

// Reset empties the batch (the frames must already be elsewhere).
func (b *Batch) Reset() { b.Pkts, b.resuming = b.Pkts[:0], 0 }

// AppendHanded adds a packet another shard handed over to this batch, undecided, to resume at
// p.Resume (see Packet.Resume); the batch must have room. Shards call it; stages do not.
func (b *Batch) AppendHanded(p Packet) {
	p.Verdict, p.By = Continue, 0
	if p.Resume > 1 {
		b.resuming++
	}
	b.Pkts = append(b.Pkts, p)
}

// Full reports whether the batch has no room left.
func (b *Batch) Full() bool { return len(b.Pkts) == cap(b.Pkts) }

// Stage is one step of a pipeline. Process looks at the packets whose verdict is Continue and
// may set a verdict for each; it must not block, allocate per packet, or keep references to
// packet bytes after it returns.
type Stage interface {
	Name() string
	Process(b *Batch)
}

// PacketFunc decides for one packet; data is the packet's bytes in place.
type PacketFunc func(p *Packet, data []byte)

type funcStage struct {
	name string
	f    PacketFunc
	mem  []byte
}

// Func adapts a per-packet function into a Stage; it is called only for packets whose verdict
// is still Continue.
func Func(name string, f PacketFunc) Stage { return &funcStage{name: name, f: f} }

func (s *funcStage) Name() string { return s.name }

func (s *funcStage) Process(b *Batch) {
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != Continue {
			continue
		}
		s.f(p, b.Data(i))
	}
}

// Interface is what a stage may know about one of the pipeline's interfaces.
type Interface struct {
	Name  string
	Index int
	MAC   [6]byte
	MTU   int
}

// ShardInfo tells a stage about the shard that runs it, before the first batch.
type ShardInfo struct {
	Shard, Shards int
	Ifaces        []Interface
	// Wake makes the shard run a pass soon; any goroutine may call it (a socket write does).
	// Store what the pass should find (with an atomic or under a lock) before calling Wake:
	// it writes to the shard's eventfd only when the shard sleeps, so a shard that is awake
	// must find the news on its own.
	Wake func()
	// Frames is the number of frames of the shard's UMEM, and Lendable how many of them the
	// shard does not need for its own fill rings, tx rings, batch and hand-off spares: what
	// stages may lend out (verdict Lend) in all without starving receive.
	Frames, Lendable int
	// Mem is the shard's UMEM, which its batches' addresses index, and FrameSize the size of
	// its frames: a stage that lends frames hands out views of it.
	Mem       []byte
	FrameSize uint32
}

// Starter is implemented by stages that want ShardInfo before the first batch.
type Starter interface{ Start(ShardInfo) }

// Originator is implemented by stages that send packets of their own (a stack answering
// timers and socket writes). The shard calls Originate on every pass with the batch after the
// received packets have their verdicts; it appends packets with Batch.Alloc and gives each a
// verdict. NextDeadline is the Now value by which it wants to be called again (0: none), so a
// sleeping shard wakes in time.
type Originator interface {
	Originate(b *Batch)
	NextDeadline() int64
}

// Punctual is implemented by an Originator whose deadlines matter to the microsecond (the
// fault stage's fixed delay). A sleeping shard wakes in the Go netpoller, whose timeouts end on
// whole milliseconds, so a deadline less than a millisecond away would be met up to a
// millisecond late; while a punctual stage's deadline is that near, the shard spins instead of
// sleeping. Other originators (the stack's timers) keep the cheaper sleep.
type Punctual interface {
	Punctual() bool
}

// Pipeline is an ordered list of stages. Each shard gets its own Pipeline value (from a
// constructor), so stages may keep per-shard state without locks.
type Pipeline struct {
	Stages []Stage
	// Local is the local stack: packets a stage sent ToStack go to it after the other stages.
	Local       Stage
	originators []Originator
	stats       []StageCounters // one per stage, then one for Local; made by Start
	tap         atomic.Pointer[tapBox]
	calls       uint64 // Run calls, for sampling the clock
	handed      Packet // TapHandoff's packet, kept here so that showing it allocates nothing
}

// StageCounters are one stage's runtime figures on one shard, as VPP's `show runtime` gives
// them: calls with work, packets handed in, packets it decided by verdict, drops by reason,
// and time spent (the clock is read on every TimeSample-th call and the figure scaled, so the
// fast path does not pay for two clock reads per stage and batch). The shard writes them;
// any goroutine reads them with Snapshot.
type StageCounters struct {
	name      string
	calls     atomic.Uint64
	packets   atomic.Uint64
	decided   atomic.Uint64
	drops     [MaxReasons]atomic.Uint64
	nanos     atomic.Uint64
	timedPkts atomic.Uint64 // packets of the calls that were timed
}

// TimeSample is how often (in Run calls) a stage's time is measured.
const TimeSample = 16

// StageSnapshot is a copy of one stage's counters.
type StageSnapshot struct {
	Name    string            `json:"name"`
	Calls   uint64            `json:"calls"`
	Packets uint64            `json:"packets"`
	Decided uint64            `json:"decided"`
	Drops   map[string]uint64 `json:"drops,omitempty"`
	// NanosPerPacket is the measured time per packet handed in, over the sampled calls.
	NanosPerPacket float64 `json:"ns_per_packet"`
	// PacketsPerCall is Packets / Calls.
	PacketsPerCall float64 `json:"packets_per_call"`
}

// Snapshot copies every stage's counters (the local stack last, named after it); safe while
// the shard runs.
func (p *Pipeline) Snapshot() []StageSnapshot {
	out := make([]StageSnapshot, 0, len(p.stats))
	names := ReasonNames()
	for i := range p.stats {
		c := &p.stats[i]
		s := StageSnapshot{Name: c.name, Calls: c.calls.Load(), Packets: c.packets.Load(), Decided: c.decided.Load()}
		for r := range c.drops {
			if n := c.drops[r].Load(); n > 0 {
				if s.Drops == nil {
					s.Drops = map[string]uint64{}
				}
				name := fmt.Sprintf("reason(%d)", r)
				if r < len(names) {
					name = names[r]
				}
				s.Drops[name] = n
			}
		}
		if s.Calls > 0 {
			s.PacketsPerCall = float64(s.Packets) / float64(s.Calls)
		}
		if tp := c.timedPkts.Load(); tp > 0 {
			s.NanosPerPacket = float64(c.nanos.Load()) / float64(tp)
		}
		out = append(out, s)
	}
	return out
}

// TapPoint says where a Tap sees a packet.
type TapPoint uint8

const (
	// TapIn: the packet is about to be handed to the stage (its verdict is Continue).
	TapIn TapPoint = iota
	// TapOut: the stage has just decided the packet (verdict and reason set).
	TapOut
	// TapHandoff: the shard's owner function gave the packet to another shard before any stage
	// ran (stage is -1, the verdict Handoff, ToShard the owner); that shard's pipeline sees a
	// copy next.
	TapHandoff
	// TapRun: a run of the pipeline begins (stage -1, no packet: p and data are nil); the
	// packet handles of the run before are reused from here on.
	TapRun
)

// A Tap sees packets as the pipeline decides them: capture and trace install one on a running
// shard's pipeline with SetTap. Packet runs on the shard's goroutine for every packet at every
// stage while installed, so it must be quick and must not block; data is valid only during the
// call. stage indexes Stages, len(Stages) being the local stack.
type Tap interface {
	Packet(stage int, point TapPoint, p *Packet, data []byte)
}

type tapBox struct{ t Tap }

// SetTap installs t (nil removes it); any goroutine may call it, and the shard sees it from its
// next Run. A pipeline without a tap pays one atomic load per Run.
func (p *Pipeline) SetTap(t Tap) {
	if t == nil {
		p.tap.Store(nil)
		return
	}
	p.tap.Store(&tapBox{t})
}

// TapHandoff shows the tap, if one is installed, a packet the shard hands to shard to before
// its pipeline runs; the shard calls it for each such packet (one atomic load when no tap is
// installed).
func (p *Pipeline) TapHandoff(addr uint64, data []byte, inIf uint8, to int) {
	if tb := p.tap.Load(); tb != nil {
		p.handed = Packet{Addr: addr, Len: uint32(len(data)), InIf: inIf, Verdict: Handoff, ToShard: uint8(to)}
		tb.t.Packet(-1, TapHandoff, &p.handed, data)
	}
}

// StageName is the name of stage i (len(Stages): the local stack).
func (p *Pipeline) StageName(i int) string {
	if i < len(p.Stages) {
		return p.Stages[i].Name()
	}
	if p.Local != nil {
		return p.Local.Name()
	}
	return "local"
}

// Start hands info to every stage that wants it; the shard calls it once.
func (p *Pipeline) Start(info ShardInfo) {
	p.originators = p.originators[:0]
	all := p.Stages
	if p.Local != nil {
		all = append(all[:len(all):len(all)], p.Local)
	}
	if len(p.Stages) >= ByNone-1 {
		panic("pipelines: a pipeline has at most 252 stages")
	}
	p.stats = make([]StageCounters, len(p.Stages)+1)
	for i := range p.Stages {
		p.stats[i].name = p.Stages[i].Name()
	}
	p.stats[len(p.Stages)].name = p.StageName(len(p.Stages))
	for _, s := range all {
		if st, ok := s.(Starter); ok {
			st.Start(info)
		}
		if o, ok := s.(Originator); ok {
			p.originators = append(p.originators, o)
		}
	}
}

// Run passes the batch through every stage in order, then the packets sent ToStack through
// the local stack, and drops what no stage decided. It counts, per stage, the calls, the
// packets handed in, the packets decided and the drops by reason (StageCounters), and shows
// each packet to the tap, if one is installed.
//
// The counting costs one pass over the batch's handles per stage (which stage decided each
// packet, Packet.By) and a few atomic adds per stage and batch; the pass also counts what is
// left undecided and what went to the stack, so Run skips the final passes when nothing is
// (see BenchmarkStageCountersPaired for the cost).
func (p *Pipeline) Run(b *Batch) {
	if p.stats == nil { // a pipeline run without Start (a test's)
		p.stats = make([]StageCounters, len(p.Stages)+1)
	}
	p.calls++
	timed := p.calls%TimeSample == 0
	var tap Tap
	if tb := p.tap.Load(); tb != nil {
		tap = tb.t
		tap.Packet(-1, TapRun, nil, nil)
	}
	undecided, toStack := 0, 0
	pkts := b.Pkts
	i := 0
	for ; i+4 <= len(pkts); i += 4 { // four undecided, unmarked packets at a time (both 0)
		q := pkts[i : i+4 : i+4]
		if uint8(q[0].Verdict|q[1].Verdict|q[2].Verdict|q[3].Verdict)|q[0].By|q[1].By|q[2].By|q[3].By != 0 {
			break
		}
		undecided += 4
	}
	for ; i < len(pkts); i++ {
		pk := &pkts[i]
		if pk.Verdict == Continue {
			pk.By = 0
			undecided++
			continue
		}
		pk.By = ByBefore // decided before the pipeline ran: no stage's
		if pk.Verdict == ToStack {
			toStack++
		}
	}
	waiting := 0
	if b.resuming > 0 {
		waiting = p.park(b)
		undecided -= waiting
	}
	for i, s := range p.Stages {
		if waiting > 0 {
			n := p.unpark(b, i)
			waiting -= n
			undecided += n
		}
		var st int
		undecided, st = p.runStage(b, i, s, undecided, timed, tap)
		toStack += st
	}
	if undecided == 0 && toStack == 0 {
		return // every packet decided, none for the stack: nothing left to do
	}
	pkts = b.Pkts
	hasStack := false
	for i := range pkts {
		switch pkts[i].Verdict {
		case Continue:
			b.Drop(i, ReasonNoVerdict)
			pkts[i].By = ByNone
		case ToStack:
			hasStack = true
		}
	}
	if !hasStack {
		return
	}
	if p.Local == nil {
		for i := range pkts {
			if pkts[i].Verdict == ToStack {
				b.Drop(i, ReasonNoStack)
				pkts[i].By = ByNone
			}
		}
		return
	}
	n := 0
	for i := range pkts {
		if pkts[i].Verdict == ToStack {
			pkts[i].Verdict, pkts[i].By = Continue, 0
			n++
		}
	}
	if left, _ := p.runStage(b, len(p.Stages), p.Local, n, timed, tap); left == 0 {
		return
	}
	pkts = b.Pkts
	for i := range pkts {
		if pkts[i].Verdict == Continue {
			b.Drop(i, ReasonNoVerdict)
			pkts[i].By = ByNone
		}
	}
}

// park holds back the handed-over packets that resume past the first stage, until unpark lets
// each in before its stage; a Resume beyond this pipeline's stages (a pipeline of another
// shape) runs from the first. It returns how many it parked.
func (p *Pipeline) park(b *Batch) int {
	n := 0
	for j := range b.Pkts {
		pk := &b.Pkts[j]
		if pk.Verdict != Continue || pk.Resume <= 1 {
			continue
		}
		if int(pk.Resume) > len(p.Stages) {
			pk.Resume = 0
			continue
		}
		pk.Verdict, pk.By = parked, ByBefore // marked, so no earlier stage is said to decide it
		n++
	}
	return n
}

// unpark makes the packets that resume at stage i undecided again and returns how many.
func (p *Pipeline) unpark(b *Batch, i int) int {
	n := 0
	for j := range b.Pkts {
		if pk := &b.Pkts[j]; pk.Verdict == parked && int(pk.Resume) == i+1 {
			pk.Verdict, pk.By = Continue, 0
			n++
		}
	}
	return n
}

// runStage runs stage s (index i) on the batch's undecided packets, counts what it did and
// returns how many packets are still undecided and how many it sent to the stack.
func (p *Pipeline) runStage(b *Batch, i int, s Stage, undecided int, timed bool, tap Tap) (left, toStack int) {
	c := &p.stats[i]
	if tap != nil {
		for j := range b.Pkts {
			if b.Pkts[j].Verdict == Continue {
				tap.Packet(i, TapIn, &b.Pkts[j], b.Data(j))
			}
		}
	}
	n0 := len(b.Pkts)
	var t0 int64
	if timed {
		t0 = Now()
	}
	s.Process(b)
	if timed {
		c.nanos.Add(uint64(Now() - t0))
		c.timedPkts.Add(uint64(undecided))
	}
	pkts := b.Pkts
	if undecided == 0 && len(pkts) == n0 {
		return 0, 0 // it had nothing to decide and added nothing
	}
	// One tight pass (no calls, so the counts stay in registers): what is left, what the
	// stage decided (marked with its index), how many of those it dropped or sent to the
	// stack. Drops by reason and the tap take a second pass over the stage's own packets,
	// only when there are any.
	by := uint8(i + 1)
	decided, drops := 0, 0
	j := 0
	for ; j+4 <= len(pkts); j += 4 { // skip undecided packets four at a time (Continue is 0)
		q := pkts[j : j+4 : j+4]
		if q[0].Verdict|q[1].Verdict|q[2].Verdict|q[3].Verdict != Continue {
			break
		}
		left += 4
	}
	for ; j < len(pkts); j++ {
		pk := &pkts[j]
		if pk.Verdict == Continue {
			left++
			continue
		}
		if pk.By == 0 {
			pk.By = by
			decided++
			switch pk.Verdict {
			case Drop:
				drops++
			case ToStack:
				toStack++
			}
		}
	}
	if drops > 0 || tap != nil && decided > 0 {
		p.stageOut(b, i, by, tap)
	}
	if undecided > 0 { // a call with nothing to decide is not a call (VPP counts vectors)
		c.calls.Add(1)
		c.packets.Add(uint64(undecided))
	}
	if decided > 0 {
		c.decided.Add(uint64(decided))
	}
	return left, toStack
}

// stageOut counts the drops of the packets stage i (marked by) decided, by reason, and shows
// them to the tap, if any.
func (p *Pipeline) stageOut(b *Batch, i int, by uint8, tap Tap) {
	c := &p.stats[i]
	var reason DropReason
	var run uint64 // drops of reason in a row, added to the shared counter at once
	for j := range b.Pkts {
		pk := &b.Pkts[j]
		if pk.By != by {
			continue
		}
		if pk.Verdict == Drop {
			if pk.Reason != reason && run > 0 {
				c.drops[reason].Add(run)
				run = 0
			}
			reason = pk.Reason
			run++
		}
		if tap != nil {
			tap.Packet(i, TapOut, pk, b.Data(j))
		}
	}
	if run > 0 {
		c.drops[reason].Add(run)
	}
}

// Originate lets every originating stage add its packets.
func (p *Pipeline) Originate(b *Batch) {
	for _, o := range p.originators {
		o.Originate(b)
	}
}

// Originates reports whether any stage originates packets.
func (p *Pipeline) Originates() bool { return len(p.originators) > 0 }

// PunctualDeadline is the earliest deadline of the originating stages that are Punctual (0:
// none).
func (p *Pipeline) PunctualDeadline() int64 {
	var d int64
	for _, o := range p.originators {
		if pu, ok := o.(Punctual); !ok || !pu.Punctual() {
			continue
		}
		if t := o.NextDeadline(); t != 0 && (d == 0 || t < d) {
			d = t
		}
	}
	return d
}

// NextDeadline is the earliest deadline of the originating stages (0: none).
func (p *Pipeline) NextDeadline() int64 {
	var d int64
	for _, o := range p.originators {
		if t := o.NextDeadline(); t != 0 && (d == 0 || t < d) {
			d = t
		}
	}
	return d
}
