package capture

import "github.com/netchan/netchan/pipelines"

// PointHandoff marks the record of a hand-off the receiving shard's owner function made
// before any stage ran (Header.Stage is StageOwner, ToShard the owner); the owner's pipeline
// then sees the copy. The shard shows it to the tap (pipelines.TapHandoff).
const PointHandoff = pipelines.TapHandoff

// StageOwner is the Stage of a PointHandoff record.
const StageOwner = 0xff

// traceHandoff records, for a trace, a matching packet the shard hands to its owner before the
// pipeline, and asks the owner's tap to follow the copy.
func (t *Tap) traceHandoff(p *pipelines.Packet, data []byte) {
	if !t.sel.Filter.Match(data, int(t.shard)) || t.tr.Budget.Add(-1) < 0 {
		return
	}
	if p == nil {
		return
	}
	h := Hash(data)
	id := h*31 + uint64(t.shard) + 1
	t.tr.expect(h, id)
	hdr := Header{Nanos: nowNanos(), ID: id, Len: uint32(len(data)), Shard: t.shard, Stage: StageOwner, Point: PointHandoff,
		Verdict: pipelines.Handoff, ToShard: p.ToShard, InIf: p.InIf}
	t.ring.Put(&hdr, data)
}
