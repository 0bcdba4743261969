// Package stagetest is the test harness for stage authors: it runs a stage, or a whole
// pipeline, the way a shard would, over ordinary memory, with a fake clock and no root, no NIC
// and no AF_XDP socket. Frames go in; what comes out is read back per packet: its verdict, the
// reason of a drop (by name), the frames transmitted with their interface, the frames handed to
// another shard, the frames the stages originated and the frames they consumed.
//
// The harness owns a batch over Frames frames of FrameSize bytes and the free list behind it,
// so Batch.Alloc (and with it pipelines.Originator) works as on a shard. A Step is one pass of
// a shard: the frames given are received (copied into free frames, Headroom bytes in), the
// pipeline runs (Pipeline.Run, so the local stack, Continue and ToStack are handled as a shard
// handles them), then its originate pass (Pipeline.Originate); every packet's outcome is
// recorded, and every frame goes back to the free list. Like a shard, the harness drops a
// packet sent to an interface the pipeline does not have (pipelines.ReasonNoInterface) and
// one handed to a shard that is not another valid shard (pipelines.ReasonHandoffFull).
//
// The clock is the harness's: each pass gives the stages Batch.NowNanos = Now(), which starts
// at 1 (0 means "no deadline" to pipelines.Originator) and moves only when the test moves it
// (Advance, SetNow, or AdvanceToDeadline, which jumps to the pipeline's next deadline and runs
// a pass). Stages must read time from Batch.NowNanos, as the stack, the NAT and the fault
// stage do; pipelines.Now is the real clock, for goroutines outside the shard, and the harness
// does not fake it.
//
// A typical test:
//
//	h := stagetest.New(t, myStage())
//	h.Step(stagetest.In{Data: frame})
//	if out := h.Sent(); len(out) != 1 || out[0].If != 0 { ... }
//	if n := h.DropCounts()["malformed"]; n != 0 { ... }
//
// For an allocation test (testing.AllocsPerRun) or a benchmark, Pass runs the same pass
// without recording anything and returns the batch with its verdicts in place; it does not
// allocate. A Harness belongs to one goroutine, as a shard's pipeline does; only the Wake
// function it gives the stages may be called from others.
package stagetest

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// The harness's memory: Frames frames of FrameSize bytes, and batches of up to BatchSize
// packets (received and originated together).
const (
	FrameSize = 2048
	Frames    = 512
	BatchSize = 64
)

// Interface is the interface New gives a pipeline (interface 0): its MAC address is the
// destination of the frames UDPFrame builds.
var Interface = pipelines.Interface{Name: "test0", Index: 1, MAC: [6]byte{0x02, 0, 0, 0, 0, 0x01}, MTU: 1500}

// PeerMAC is the source address of the frames UDPFrame builds.
var PeerMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02}

// In is a frame received on interface If (an index into the pipeline's interfaces).
type In struct {
	If   int
	Data []byte
}

// Out is a frame transmitted on interface If. Originated is true when a stage made it
// (Batch.Alloc, from Process or Originate) rather than turning a received frame around.
type Out struct {
	If         int
	Data       []byte
	Originated bool
}

// Handoff is a packet handed to shard Shard's pipeline. Its In is what that shard receives: the
// same interface and the bytes as this pass left them, ready to Step on another Harness.
type Handoff struct {
	Shard int
	In
}

// Outcome is what a pass decided for one packet: Verdict is Transmit, Drop, Consume or Handoff
// (the others never survive a pass), with the interface (Transmit), the reason (Drop) or the
// shard (Handoff). Data is a copy of the packet's bytes as the pass left them. Fed is the
// packet's index among the frames given to Step, or -1 for a packet a stage originated.
type Outcome struct {
	Verdict pipelines.Verdict
	Reason  pipelines.DropReason
	If      int // the interface it leaves on (Transmit) or arrived on (otherwise)
	Shard   int // the shard it is handed to (Handoff)
	Fed     int
	Data    []byte
}

// Originated reports whether a stage made the packet rather than receiving it.
func (o Outcome) Originated() bool { return o.Fed < 0 }

// Harness runs a pipeline as one shard would. Make it with New or NewPipeline.
type Harness struct {
	t     testing.TB
	pipe  *pipelines.Pipeline
	info  pipelines.ShardInfo
	mem   []byte
	free  []uint64
	batch *pipelines.Batch
	fed   int  // packets of the batch that were received; the rest were originated
	held  bool // the batch's frames are not yet back on the free list (after Pass)
	now   int64
	wakes atomic.Int64

	outcomes []Outcome
	sent     []Out
	drops    []pipelines.DropReason
	handed   []Handoff
	consumed int
	passes   int
}

// New runs stages as the pipeline of shard 0 of 1 with one interface, Interface. The harness
// fails t when a pass goes wrong (a frame too big, too many frames, a packet left undecided);
// t may be nil outside a test (an Example, a tool), and then it panics instead.
func New(t testing.TB, stages ...pipelines.Stage) *Harness {
	if t != nil {
		t.Helper()
	}
	return NewPipeline(t, &pipelines.Pipeline{Stages: stages}, pipelines.ShardInfo{})
}

// NewPipeline runs pipe as the shard info describes, and starts it (Pipeline.Start) with that
// info. Zero fields get defaults: Shards 1, Ifaces []{Interface}, and a Wake that counts its
// calls (Wakes).
func NewPipeline(t testing.TB, pipe *pipelines.Pipeline, info pipelines.ShardInfo) *Harness {
	h := &Harness{t: t, pipe: pipe, mem: make([]byte, Frames*FrameSize), free: make([]uint64, 0, Frames), now: 1}
	if t != nil {
		t.Helper()
	}
	if info.Shards == 0 {
		info.Shards = 1
	}
	if info.Shard < 0 || info.Shard >= info.Shards {
		h.fatalf("stagetest: shard %d of %d", info.Shard, info.Shards)
	}
	if info.Ifaces == nil {
		info.Ifaces = []pipelines.Interface{Interface}
	}
	if info.Wake == nil {
		info.Wake = func() { h.wakes.Add(1) }
	}
	h.info = info
	for i := Frames - 1; i >= 0; i-- {
		h.free = append(h.free, uint64(i*FrameSize))
	}
	h.batch = pipelines.NewBatch(h.mem, FrameSize, BatchSize)
	h.batch.SetAllocator(h.alloc)
	h.batch.Shard = info.Shard
	pipe.Start(info)
	return h
}

// fatalf fails the test, or panics without one.
func (h *Harness) fatalf(format string, args ...any) {
	if h.t == nil {
		panic(fmt.Sprintf(format, args...))
	}
	h.t.Fatalf(format, args...)
}

func (h *Harness) alloc() (uint64, bool) {
	if len(h.free) == 0 {
		return 0, false
	}
	a := h.free[len(h.free)-1]
	h.free = h.free[:len(h.free)-1]
	return a, true
}

// Pipeline is the pipeline the harness runs.
func (h *Harness) Pipeline() *pipelines.Pipeline { return h.pipe }

// Info is the ShardInfo the pipeline was started with.
func (h *Harness) Info() pipelines.ShardInfo { return h.info }

// Now is the harness's clock, in nanoseconds: what the next pass puts in Batch.NowNanos.
func (h *Harness) Now() int64 { return h.now }

// Advance moves the clock forward by d.
func (h *Harness) Advance(d time.Duration) { h.now += int64(d) }

// SetNow sets the clock to ns (it may go backwards: the test decides).
func (h *Harness) SetNow(ns int64) { h.now = ns }

// NextDeadline is the pipeline's earliest deadline (0: none), on the harness's clock.
func (h *Harness) NextDeadline() int64 { return h.pipe.NextDeadline() }

// AdvanceToDeadline moves the clock to the pipeline's next deadline, if it has one that is
// not in the past, and runs a pass with no frames received, as a shard woken by the deadline
// would. It reports whether there was a deadline.
func (h *Harness) AdvanceToDeadline() bool {
	d := h.pipe.NextDeadline()
	if d == 0 {
		return false
	}
	h.now = max(h.now, d)
	h.Step()
	return true
}

// Wakes counts the calls of the default ShardInfo.Wake so far.
func (h *Harness) Wakes() int { return int(h.wakes.Load()) }

// FreeFrames is the number of frames on the free list. After a Step it is Frames unless a
// stage lost a frame (took one with Batch.Alloc and dropped its handle); after a Pass the
// batch still holds its frames.
func (h *Harness) FreeFrames() int { return len(h.free) }

// Passes counts the passes run so far (Step, Pass and AdvanceToDeadline).
func (h *Harness) Passes() int { return h.passes }

// load takes the previous pass's frames back and puts the received frames in the batch.
func (h *Harness) load(in []In) *pipelines.Batch {
	b := h.batch
	h.recycle()
	b.Reset()
	if len(in) > b.Room() {
		h.fatalf("stagetest: %d frames in one pass, the batch holds %d", len(in), BatchSize)
	}
	for _, f := range in {
		if len(f.Data) > FrameSize-pipelines.Headroom {
			h.fatalf("stagetest: a %d-byte frame does not fit a %d-byte frame after %d bytes of headroom", len(f.Data), FrameSize, pipelines.Headroom)
		}
		if f.If < 0 || f.If >= len(h.info.Ifaces) {
			h.fatalf("stagetest: frame received on interface %d; the pipeline has %d", f.If, len(h.info.Ifaces))
		}
		a, ok := h.alloc()
		if !ok {
			h.fatalf("stagetest: out of frames")
		}
		a += pipelines.Headroom
		copy(h.mem[a:], f.Data)
		b.Pkts = append(b.Pkts, pipelines.Packet{Addr: a, Len: uint32(len(f.Data)), InIf: uint8(f.If)})
	}
	h.fed = len(in)
	b.Shard = h.info.Shard
	b.NowNanos = h.now
	h.held = true
	return b
}

// recycle returns the frames of the last pass's batch to the free list.
func (h *Harness) recycle() {
	if !h.held {
		return
	}
	for _, p := range h.batch.Pkts {
		h.free = append(h.free, p.Addr&^(FrameSize-1))
	}
	h.held = false
}

// settle applies what a shard does with verdicts it cannot carry out: a transmit on an
// interface it does not have, or a hand-off to no other shard, becomes a drop.
func (h *Harness) settle(b *pipelines.Batch) {
	for i := range b.Pkts {
		p := &b.Pkts[i]
		switch p.Verdict {
		case pipelines.Transmit:
			if int(p.OutIf) >= len(h.info.Ifaces) {
				b.Drop(i, pipelines.ReasonNoInterface)
			}
		case pipelines.Handoff:
			if int(p.ToShard) >= h.info.Shards || int(p.ToShard) == h.info.Shard {
				b.Drop(i, pipelines.ReasonHandoffFull)
			}
		}
	}
}

// Pass runs one pass over the frames, as Step does, but records nothing: it returns the batch
// with every packet's verdict in place, valid until the next Step or Pass, which take its
// frames back. It does not allocate, so it suits testing.AllocsPerRun and benchmarks.
func (h *Harness) Pass(in ...In) *pipelines.Batch {
	b := h.load(in)
	h.pipe.Run(b)
	h.pipe.Originate(b)
	h.settle(b)
	h.passes++
	return b
}

// Step runs one pass over the frames (received in order, on their interfaces), records every
// packet's outcome, returns every frame to the free list, and returns the frames transmitted
// (Sent). It fails the test if a packet is left without a final verdict.
func (h *Harness) Step(in ...In) []Out {
	b := h.Pass(in...)
	h.outcomes, h.sent, h.drops, h.handed, h.consumed = h.outcomes[:0], h.sent[:0], h.drops[:0], h.handed[:0], 0
	for i, p := range b.Pkts {
		o := Outcome{Verdict: p.Verdict, If: int(p.InIf), Fed: i, Data: append([]byte(nil), b.Data(i)...)}
		if i >= h.fed {
			o.Fed = -1
		}
		switch p.Verdict {
		case pipelines.Transmit:
			o.If = int(p.OutIf)
			h.sent = append(h.sent, Out{If: o.If, Data: o.Data, Originated: o.Originated()})
		case pipelines.Drop:
			o.Reason = p.Reason
			h.drops = append(h.drops, p.Reason)
		case pipelines.Consume:
			h.consumed++
		case pipelines.Handoff:
			o.Shard = int(p.ToShard)
			h.handed = append(h.handed, Handoff{Shard: o.Shard, In: In{If: o.If, Data: o.Data}})
		default:
			h.fatalf("stagetest: packet %d left the pass with verdict %v", i, p.Verdict)
		}
		h.outcomes = append(h.outcomes, o)
	}
	h.recycle()
	return h.sent
}

// Feed is Step with frames received on interface 0.
func (h *Harness) Feed(frames ...[]byte) []Out {
	in := make([]In, len(frames))
	for i, f := range frames {
		in[i] = In{Data: f}
	}
	return h.Step(in...)
}

// The results of the last Step. The slices are the harness's, valid until the next Step.

// Outcomes is every packet of the last Step in batch order: the received frames first, in the
// order given, then the originated ones.
func (h *Harness) Outcomes() []Outcome { return h.outcomes }

// Verdicts is each packet's verdict, in the order of Outcomes.
func (h *Harness) Verdicts() []pipelines.Verdict {
	v := make([]pipelines.Verdict, len(h.outcomes))
	for i, o := range h.outcomes {
		v[i] = o.Verdict
	}
	return v
}

// Sent is the frames transmitted, in batch order.
func (h *Harness) Sent() []Out { return h.sent }

// Drops is the reason of each dropped packet, in batch order.
func (h *Harness) Drops() []pipelines.DropReason { return h.drops }

// DropCounts counts the drops of the last Step by reason name (pipelines.DropReason.String),
// the names a shard's drop counters show.
func (h *Harness) DropCounts() map[string]int {
	m := make(map[string]int, len(h.drops))
	for _, r := range h.drops {
		m[r.String()]++
	}
	return m
}

// Handed is the packets handed to other shards.
func (h *Harness) Handed() []Handoff { return h.handed }

// Consumed counts the packets a stage consumed (a socket took the payload, a stage kept a
// copy): their frames went back to the free list, and they are not drops.
func (h *Harness) Consumed() int { return h.consumed }

// Originated is the outcomes of the packets the stages made, received ones left out.
func (h *Harness) Originated() []Outcome {
	var o []Outcome
	for _, x := range h.outcomes {
		if x.Originated() {
			o = append(o, x)
		}
	}
	return o
}

// UDPFrame builds an Ethernet/IPv4/UDP frame from src to dst carrying payload, with valid
// checksums, from PeerMAC to Interface's MAC: a frame to feed a stage. src and dst must be IPv4.
func UDPFrame(src, dst netip.AddrPort, payload []byte) []byte {
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		panic(fmt.Sprintf("stagetest: UDPFrame needs IPv4 addresses, not %v and %v", src, dst))
	}
	n := header.IPv4MinLen + header.UDPLen + len(payload)
	f := make([]byte, header.EthernetLen+n)
	header.EncodeEthernet(f, Interface.MAC, PeerMAC, header.EtherTypeIPv4)
	ip := header.EncodeIPv4(f[header.EthernetLen:], header.IPv4Fields{TotalLength: n, TTL: 64, Protocol: header.ProtoUDP, Src: src.Addr(), Dst: dst.Addr()})
	copy(ip.Payload()[header.UDPLen:], payload)
	header.EncodeUDP(ip.Payload(), src.Port(), dst.Port(), len(payload)).FixChecksum(src.Addr(), dst.Addr())
	return f
}
