package capture

import (
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/pipelines"
)

// PointHandoff marks a record that no tap made: the receiving shard's owner function gave the
// packet to another shard, which gets a copy before any stage runs (Header.Stage is
// StageOwner, ToShard the owner).
const PointHandoff pipelines.TapPoint = 2

// StageOwner is the Stage of a PointHandoff record.
const StageOwner = 0xff

// OwnerHook lets a trace see the hand-offs a shard makes before its pipeline runs, which no
// stage's tap sees: Wrap the App's owner function with it before the instance starts. With no
// trace running it costs one atomic load per received packet.
type OwnerHook struct {
	p atomic.Pointer[ownerTrace]
}

type ownerTrace struct {
	rings    []*Ring
	tr       *Tracer
	filter   *Filter
	cpuShard map[int]int // the CPU each pinned shard runs on → the shard
}

// Wrap returns owner, watched by h; nil stays nil.
func (h *OwnerHook) Wrap(owner pipelines.OwnerFunc) pipelines.OwnerFunc {
	if owner == nil {
		return nil
	}
	return func(data []byte, shards int) int {
		o := owner(data, shards)
		if ot := h.p.Load(); ot != nil && o >= 0 {
			ot.see(data, o)
		}
		return o
	}
}

// see runs on the receiving shard's goroutine: it finds which shard that is from the CPU the
// shard is pinned to (a trace-only system call), and for a packet that matches the trace and
// goes to another shard records the hand-off and asks the owner's tap to follow the copy.
func (ot *ownerTrace) see(data []byte, o int) {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil || set.Count() != 1 {
		return // not a pinned shard: which one received it is unknown
	}
	cpu := -1
	for c := 0; c < len(set)*64 && cpu < 0; c++ {
		if set.IsSet(c) {
			cpu = c
		}
	}
	r, ok := ot.cpuShard[cpu]
	if !ok || r == o || r >= len(ot.rings) {
		return
	}
	if !ot.filter.Match(data, r) || ot.tr.Budget.Add(-1) < 0 {
		return
	}
	h := Hash(data)
	id := h*31 + uint64(r) + 1
	ot.tr.expect(h, id)
	hdr := Header{Nanos: nowNanos(), ID: id, Len: uint32(len(data)), Shard: uint8(r), Stage: StageOwner, Point: PointHandoff,
		Verdict: pipelines.Handoff, ToShard: uint8(o)}
	ot.rings[r].Put(&hdr, data)
}
