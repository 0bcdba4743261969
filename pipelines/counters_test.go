package pipelines_test

import (
	"testing"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
)

var reasonOdd = pipelines.RegisterReason("test-odd")

type tapRecord struct {
	stage int
	point pipelines.TapPoint
	v     pipelines.Verdict
	first byte
}

type recordTap struct {
	seen []tapRecord
	runs int
}

func (r *recordTap) Packet(stage int, point pipelines.TapPoint, p *pipelines.Packet, data []byte) {
	if point == pipelines.TapRun {
		r.runs++
		return
	}
	r.seen = append(r.seen, tapRecord{stage, point, p.Verdict, data[0]})
}

// TestStageCounters: per-stage calls, packets, decisions and drops by reason, with the local
// stack counted as the last stage, and a tap that sees each packet go in and come out.
func TestStageCounters(t *testing.T) {
	odd := pipelines.Func("drop-odd", func(p *pipelines.Packet, d []byte) {
		if d[0]%2 == 1 {
			p.Verdict, p.Reason = pipelines.Drop, reasonOdd
		}
	})
	toStack := pipelines.Func("to-stack", func(p *pipelines.Packet, d []byte) {
		if d[0] < 6 {
			p.Verdict = pipelines.ToStack
		}
	})
	local := pipelines.Func("local", func(p *pipelines.Packet, d []byte) { p.Verdict = pipelines.Consume })
	pipe := &pipelines.Pipeline{Stages: []pipelines.Stage{odd, toStack}, Local: local}
	h := stagetest.NewPipeline(t, pipe, pipelines.ShardInfo{})
	tap := &recordTap{}
	pipe.SetTap(tap)
	var frames [][]byte
	for i := 0; i < 10; i++ {
		f := make([]byte, 60)
		f[0] = byte(i)
		frames = append(frames, f)
	}
	h.Feed(frames...)
	got := pipe.Snapshot()
	if len(got) != 3 {
		t.Fatalf("snapshot has %d stages, want 3 (two and the local stack): %+v", len(got), got)
	}
	// drop-odd: 10 in, 5 dropped; to-stack: 5 in (0, 2, 4, 6, 8), 3 to the stack; the other 2
	// reach the end undecided (no-verdict, no stage's); local: 3 in, 3 consumed.
	want := []struct {
		name                    string
		calls, packets, decided uint64
		drops                   uint64
	}{{"drop-odd", 1, 10, 5, 5}, {"to-stack", 1, 5, 3, 0}, {"local", 1, 3, 3, 0}}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Calls != w.calls || g.Packets != w.packets || g.Decided != w.decided || g.Drops["test-odd"] != w.drops {
			t.Errorf("stage %d: %+v, want %+v", i, g, w)
		}
	}
	var in, out int
	for _, r := range tap.seen {
		if r.point == pipelines.TapIn {
			in++
		} else {
			out++
		}
	}
	if tap.runs != 1 {
		t.Errorf("tap saw %d runs begin, want 1", tap.runs)
	}
	if in != 18 || out != 11 {
		t.Errorf("tap saw %d packets go in and %d come out, want 18 (10+5+3) and 11 (5+3+3): %+v", in, out, tap.seen)
	}
	pipe.SetTap(nil)
	h.Feed(frames[:2]...)
	if len(tap.seen) != in+out {
		t.Errorf("a removed tap still saw packets")
	}
	if s := pipe.Snapshot()[0]; s.Calls != 2 || s.Packets != 12 {
		t.Errorf("drop-odd after a second batch: %+v", s)
	}
}

// TestRunAllocs: counting stages allocates nothing.
func TestRunAllocs(t *testing.T) {
	odd := pipelines.Func("drop-odd", func(p *pipelines.Packet, d []byte) {
		if d[0]%2 == 1 {
			p.Verdict, p.Reason = pipelines.Drop, reasonOdd
		}
	})
	pipe := &pipelines.Pipeline{Stages: []pipelines.Stage{odd}}
	h := stagetest.NewPipeline(t, pipe, pipelines.ShardInfo{})
	f := make([]byte, 60)
	in := []stagetest.In{{Data: f}, {Data: f}}
	if n := testing.AllocsPerRun(100, func() { h.Pass(in...) }); n != 0 {
		t.Fatalf("%v allocations per pass", n)
	}
}

// TestTapHandoff: a hand-off the shard makes before the pipeline reaches the tap as stage -1
// with the Handoff verdict and the owner, without allocating; with no tap it is a no-op.
func TestTapHandoff(t *testing.T) {
	pipe := &pipelines.Pipeline{Stages: []pipelines.Stage{pipelines.Func("x", func(*pipelines.Packet, []byte) {})}}
	pipe.Start(pipelines.ShardInfo{Shards: 2})
	data := []byte{7, 1, 2, 3}
	pipe.TapHandoff(0x1000, data, 1, 1) // no tap: nothing to see
	tap := &recordTap{seen: make([]tapRecord, 0, 256)}
	pipe.SetTap(tap)
	pipe.TapHandoff(0x1000, data, 1, 1)
	if len(tap.seen) != 1 || tap.seen[0] != (tapRecord{-1, pipelines.TapHandoff, pipelines.Handoff, 7}) {
		t.Fatalf("tap saw %+v", tap.seen)
	}
	if n := testing.AllocsPerRun(100, func() { pipe.TapHandoff(0x1000, data, 1, 1) }); n != 0 {
		t.Fatalf("%v allocations per hand-off shown to a tap", n)
	}
}
