// Package stagetest runs stages without a shard, for tests: frames go into a batch over
// ordinary memory with a free list, the pipeline decides, and the test reads what was
// transmitted, dropped or consumed. A fake clock is the test's to move.
package stagetest

import (
	"testing"

	"github.com/netchan/netchan/pipelines"
)

// FrameSize of the harness's frames.
const FrameSize = 2048

// Harness owns the memory and the batch.
type Harness struct {
	t    testing.TB
	Pipe *pipelines.Pipeline
	Mem  []byte
	Free []uint64
	B    *pipelines.Batch
	Now  int64
	// Results of the last Step.
	Sent  []Out
	Drops []pipelines.DropReason
	// Handed are packets handed to another shard; If holds the target shard.
	Handed []Out
	// Consumed counts frames the stages took (socket deliveries, parked copies).
	Consumed int
}

// Out is a transmitted frame and its interface.
type Out struct {
	If   int
	Data []byte
}

// New starts pipe with ShardInfo for shard of shards over ifaces.
func New(t testing.TB, pipe *pipelines.Pipeline, shard, shards int, ifaces []pipelines.Interface) *Harness {
	h := &Harness{t: t, Pipe: pipe, Mem: make([]byte, 512*FrameSize), Now: 1}
	for i := 511; i >= 0; i-- {
		h.Free = append(h.Free, uint64(i*FrameSize))
	}
	h.B = pipelines.NewBatch(h.Mem, FrameSize, 64)
	h.B.SetAllocator(h.alloc)
	pipe.Start(pipelines.ShardInfo{Shard: shard, Shards: shards, Ifaces: ifaces, Wake: func() {}})
	return h
}

func (h *Harness) alloc() (uint64, bool) {
	if len(h.Free) == 0 {
		return 0, false
	}
	a := h.Free[len(h.Free)-1]
	h.Free = h.Free[:len(h.Free)-1]
	return a, true
}

// In is a frame received on interface If.
type In struct {
	If   int
	Data []byte
}

// Step runs the pipeline over the frames and an originate pass, records the outcome, and
// returns every frame to the free list.
func (h *Harness) Step(in ...In) []Out {
	b := h.B
	b.Reset()
	b.NowNanos = h.Now
	for _, f := range in {
		a, ok := h.alloc()
		if !ok {
			h.t.Fatal("stagetest: out of frames")
		}
		copy(h.Mem[a+pipelines.Headroom:], f.Data)
		b.Pkts = append(b.Pkts, pipelines.Packet{Addr: a + pipelines.Headroom, Len: uint32(len(f.Data)), InIf: uint8(f.If)})
	}
	h.Pipe.Run(b)
	h.Pipe.Originate(b)
	h.Sent, h.Drops, h.Handed, h.Consumed = h.Sent[:0], h.Drops[:0], h.Handed[:0], 0
	for i, p := range b.Pkts {
		switch p.Verdict {
		case pipelines.Transmit:
			h.Sent = append(h.Sent, Out{If: int(p.OutIf), Data: append([]byte(nil), b.Data(i)...)})
		case pipelines.Drop:
			h.Drops = append(h.Drops, p.Reason)
		case pipelines.Consume:
			h.Consumed++
		case pipelines.Handoff:
			h.Handed = append(h.Handed, Out{If: int(p.ToShard), Data: append([]byte(nil), b.Data(i)...)})
		default:
			h.t.Fatalf("stagetest: packet %d left with verdict %v", i, p.Verdict)
		}
		h.Free = append(h.Free, p.Addr&^(FrameSize-1))
	}
	return h.Sent
}
