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
	handed  [64]struct{ key, id, at atomic.Uint64 }
}

// reserved marks a hand-off slot being filled: its id is not written yet.
const reserved = ^uint64(0)

// expectTTL is how long a hand-off waits to be picked up by its owner's tap before the trace
// stops waiting for it (the owner dropped the copy, or a lookalike took the entry).
const expectTTL = time.Second

// expect records that a packet whose bytes hash to key is on its way to another shard as
// trace id. When the table is full the hand-off is not followed.
func (tr *Tracer) expect(key, id uint64) {
	if key == 0 || key == reserved {
		key = 1
	}
	for i := range tr.handed {
		e := &tr.handed[i]
		// Reserve the slot before writing its id, so that two shards filling slots at once
		// cannot leave one's key with the other's id.
		if e.key.Load() == 0 && e.key.CompareAndSwap(0, reserved) {
			e.id.Store(id)
			e.at.Store(uint64(nowNanos()))
			e.key.Store(key)
			tr.pending.Add(1)
			return
		}
	}
}

// Expire forgets hand-offs older than expectTTL that no shard picked up, so that a trace does
// not wait for them for ever; Serve calls it while a trace runs.
func (tr *Tracer) Expire() {
	old := uint64(nowNanos() - int64(expectTTL))
	for i := range tr.handed {
		e := &tr.handed[i]
		if k := e.key.Load(); k != 0 && k != reserved && e.at.Load() < old && e.key.CompareAndSwap(k, 0) {
			tr.pending.Add(-1)
		}
	}
}

// take finds and removes a handed packet by its bytes' hash.
func (tr *Tracer) take(key uint64) (uint64, bool) {
	if key == 0 || key == reserved {
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
	n    int
	pkts [maxTraced]*pipelines.Packet
	ids  [maxTraced]uint64
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
	if point == pipelines.TapRun {
		t.n = 0 // a new run: its packet handles are new packets
		return
	}
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
