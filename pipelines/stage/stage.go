// Package stage is netchan's stage API: the batch of packet handles a shard passes through its
// pipeline, the per-packet verdicts (continue, drop with a named reason, transmit, to the local
// stack), the Stage interface and its single-packet adapter, the owner function that names the
// shard owning a flow, the claim rules a pipeline asks the XDP program for, and the Toeplitz RSS
// hash. It sits at the bottom of the import spine so that shards, the stack, NAT and user code all
// speak it.
//
// A packet handle is a small value (UMEM address, length, metadata) kept in the batch's array;
// the bytes stay in UMEM and stages read and write them in place through Batch.Data. Stages
// never block and never allocate per packet.
package stage

import (
	"fmt"
	"sync"
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
		panic("stage: too many drop reasons")
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
	Verdict Verdict
	Reason  DropReason
}

// Batch is the shard's array of packet handles for one run of the pipeline, plus a view of the
// UMEM that holds their bytes.
type Batch struct {
	Pkts      []Packet
	mem       []byte
	frameMask uint64
	// Shard is the index of the shard running the batch.
	Shard int
	// NowNanos is the shard's monotonic clock at the start of the batch.
	NowNanos int64
}

// NewBatch makes an empty batch of capacity handles over mem, whose frames are frameSize bytes.
func NewBatch(mem []byte, frameSize uint32, capacity int) *Batch {
	if frameSize == 0 || frameSize&(frameSize-1) != 0 {
		panic("stage: frame size must be a power of two")
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
		panic("stage: packet length beyond its frame")
	}
	p.Len = uint32(n)
}

// Drop sets packet i's verdict to drop with reason r.
func (b *Batch) Drop(i int, r DropReason) { b.Pkts[i].Verdict, b.Pkts[i].Reason = Drop, r }

// Transmit sets packet i's verdict to transmit on interface outIf.
func (b *Batch) Transmit(i int, outIf int) {
	b.Pkts[i].Verdict, b.Pkts[i].OutIf = Transmit, uint8(outIf)
}

// ToStack sets packet i's verdict to hand it to the local stack.
func (b *Batch) ToStack(i int) { b.Pkts[i].Verdict = ToStack }

// Reset empties the batch (the frames must already be elsewhere).
func (b *Batch) Reset() { b.Pkts = b.Pkts[:0] }

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

// Pipeline is an ordered list of stages with its steering and claim rules. Each shard gets its
// own Pipeline value (from a constructor), so stages may keep per-shard state without locks.
type Pipeline struct {
	Stages []Stage
}

// Run passes the batch through every stage in order, then drops what no stage decided.
func (p *Pipeline) Run(b *Batch) {
	for _, s := range p.Stages {
		s.Process(b)
	}
	for i := range b.Pkts {
		if b.Pkts[i].Verdict == Continue {
			b.Drop(i, ReasonNoVerdict)
		}
	}
}
