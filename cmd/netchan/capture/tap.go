package capture

import (
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/pipelines"
)

// Select says which packets a tap keeps.
type Select struct {
	Filter *Filter
	// Stage is the stage whose packets a capture keeps (an index into the shard's stages,
	// len(stages) being the local stack); -1 with Drops: every stage.
	Stage int
	// Out keeps what the stage emits (TapOut, every verdict but drop) instead of what it
	// sees (TapIn).
	Out bool
	// Drops keeps what the stage drops (TapOut with verdict Drop), the reason in the header.
	Drops bool
	// Trace follows packets: those that match Filter when they meet the first stage (up to
	// Budget of them, over all shards) are kept at every stage, in and out, and followed
	// through hand-offs to other shards.
	Trace bool
}

// Tracer is the state a trace's taps share across shards: how many more packets to follow,
// and the packets handed to another shard that its tap should keep following.
type Tracer struct {
	Budget  atomic.Int64
	pending atomic.Int64
	handed  [64]struct{ key, id atomic.Uint64 }
}

// expect records that a packet whose bytes hash to key is on its way to another shard as
// trace id. When the table is full the hand-off is not followed.
func (tr *Tracer) expect(key, id uint64) {
	if key == 0 {
		key = 1
	}
	for i := range tr.handed {
		e := &tr.handed[i]
		if e.key.Load() == 0 {
			e.id.Store(id)
			if e.key.CompareAndSwap(0, key) {
				tr.pending.Add(1)
				return
			}
		}
	}
}

// take finds and removes a handed packet by its bytes' hash.
func (tr *Tracer) take(key uint64) (uint64, bool) {
	if key == 0 {
		key = 1
	}
	for i := range tr.handed {
		e := &tr.handed[i]
		if e.key.Load() == key {
			id := e.id.Load()
			if e.key.CompareAndSwap(key, 0) {
				tr.pending.Add(-1)
				return id, true
			}
		}
	}
	return 0, false
}

// Pending is how many handed packets no shard has picked up yet.
func (tr *Tracer) Pending() int64 { return tr.pending.Load() }

// Hash is the FNV-1a hash of a packet's bytes: how a trace recognises a packet another shard
// handed over (the bytes are copied unchanged).
func Hash(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// maxTraced bounds the packets one shard follows within one run of its pipeline.
const maxTraced = 64

// Tap is one shard's pipelines.Tap for a capture or a trace: it selects packets as Select
// says and copies them into the shard's Ring. It runs on the shard's goroutine and neither
// blocks nor allocates.
type Tap struct {
	shard uint8
	ring  *Ring
	sel   Select
	tr    *Tracer
	// trace state of the current run: the packets followed, by handle
	lastKey int
	n       int
	pkts    [maxTraced]*pipelines.Packet
	ids     [maxTraced]uint64
}

// NewTap makes shard's tap, writing to ring; tr is shared by all shards' taps of a trace
// (nil for a capture).
func NewTap(shard int, ring *Ring, sel Select, tr *Tracer) *Tap {
	return &Tap{shard: uint8(shard), ring: ring, sel: sel, tr: tr}
}

// Packet implements pipelines.Tap.
func (t *Tap) Packet(stage int, point pipelines.TapPoint, p *pipelines.Packet, data []byte) {
	if t.sel.Trace {
		t.trace(stage, point, p, data)
		return
	}
	s := &t.sel
	if s.Drops {
		if point != pipelines.TapOut || p.Verdict != pipelines.Drop || (s.Stage >= 0 && stage != s.Stage) {
			return
		}
	} else {
		if stage != s.Stage {
			return
		}
		if s.Out != (point == pipelines.TapOut) || (s.Out && p.Verdict == pipelines.Drop) {
			return
		}
	}
	if !s.Filter.Match(data, int(t.shard)) {
		return
	}
	t.put(stage, point, p, data, 0)
}

func (t *Tap) put(stage int, point pipelines.TapPoint, p *pipelines.Packet, data []byte, id uint64) {
	h := Header{Nanos: nowNanos(), ID: id, Len: uint32(len(data)), Shard: t.shard, Stage: uint8(stage), Point: point,
		Verdict: p.Verdict, Reason: p.Reason, By: p.By, ToShard: p.ToShard, InIf: p.InIf, OutIf: p.OutIf}
	t.ring.Put(&h, data)
}

func (t *Tap) trace(stage int, point pipelines.TapPoint, p *pipelines.Packet, data []byte) {
	if point == pipelines.TapHandoff {
		t.traceHandoff(p, data)
		return
	}
	// Within one run of the pipeline the taps come in stage order, each stage's TapIn before
	// its TapOut: going back means a new run, whose packet handles are new packets.
	key := stage*2 + int(point)
	if key < t.lastKey {
		t.n = 0
	}
	t.lastKey = key
	if stage == 0 && point == pipelines.TapIn {
		var id uint64
		followed := false
		if t.tr.pending.Load() > 0 {
			id, followed = t.tr.take(Hash(data))
		}
		if !followed {
			if !t.sel.Filter.Match(data, int(t.shard)) || t.tr.Budget.Add(-1) < 0 {
				return
			}
			id = Hash(data)*31 + uint64(t.shard) + 1
		}
		if t.n == maxTraced {
			t.ring.Dropped[ifIndex(p.InIf)].Add(1)
			return
		}
		t.pkts[t.n], t.ids[t.n] = p, id
		t.n++
		t.put(stage, point, p, data, id)
		return
	}
	for i := 0; i < t.n; i++ {
		if t.pkts[i] != p {
			continue
		}
		id := t.ids[i]
		t.put(stage, point, p, data, id)
		if point == pipelines.TapOut && p.Verdict == pipelines.Handoff {
			t.tr.expect(Hash(data), id)
		}
		return
	}
}

func nowNanos() int64 { return time.Now().UnixNano() }
