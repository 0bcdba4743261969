package gen

import (
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
)

// TestGeneratorAllocs: a pass that builds a full batch of frames allocates nothing.
func TestGeneratorAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("testing.AllocsPerRun counts the race detector's own allocations")
	}
	for _, p := range []Proto{UDP, TCP, ICMP} {
		sizes := IMIXv4_1
		if p == TCP {
			sizes = Sizes{72, 566, 1514}
		}
		g := newGen(t, Config{Proto: p, Sizes: sizes, Flows: 16})
		h := harnesses(t, g, 1)[0]
		g.Begin(1e9, time.Hour)
		h.Pass()
		sent := 0
		if n := testing.AllocsPerRun(200, func() {
			h.Advance(time.Microsecond)
			b := h.Pass()
			sent += b.Len()
		}); n != 0 {
			t.Fatalf("%v: %v allocations per pass", p, n)
		}
		if sent < 200*stagetest.BatchSize {
			t.Fatalf("%v: %d frames in 201 passes: the batches were not full", p, sent)
		}
	}
}

// TestAnalyserAllocs: a pass that takes a full batch of replies allocates nothing.
func TestAnalyserAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("testing.AllocsPerRun counts the race detector's own allocations")
	}
	g := newGen(t, Config{Flows: 4})
	h := harnesses(t, g, 1)[0]
	g.Begin(1e6, time.Hour)
	frames := sendN(t, h, stagetest.BatchSize)
	in := make([]stagetest.In, stagetest.BatchSize)
	for i := range in {
		in[i] = stagetest.In{Data: reply(frames[i])}
	}
	g.Begin(0, time.Hour) // a trial that only counts: the batch holds replies alone
	h.Step()
	id := g.cur.Load().id
	for i := range in { // re-stamp the replies with the counting trial's run
		in[i].Data[34+8+2] = byte(id >> 8)
		in[i].Data[34+8+3] = byte(id)
	}
	if n := testing.AllocsPerRun(200, func() {
		h.Advance(time.Microsecond)
		h.Pass(in...)
	}); n != 0 {
		t.Fatalf("%v allocations per pass", n)
	}
	b := h.Pass(in...)
	for i := range b.Pkts {
		if b.Pkts[i].Verdict.String() != "consume" {
			t.Fatalf("reply %d: %v (%v)", i, b.Pkts[i].Verdict, b.Pkts[i].Reason)
		}
	}
}

// BenchmarkGenerate measures a generator pass per packet (full batches of 60-byte UDP, or
// IMIX), on the harness: the cost of building frames, not of sending them.
func BenchmarkGenerate(b *testing.B) {
	for _, c := range []struct {
		name  string
		sizes Sizes
	}{{"udp60", Sizes{60}}, {"imix", IMIXv4_1}} {
		b.Run(c.name, func(b *testing.B) {
			g, err := New(Config{Src: src, Dst: dst, DstMAC: dstMAC, Sizes: c.sizes, Flows: 16})
			if err != nil {
				b.Fatal(err)
			}
			app := g.App()
			h := stagetest.NewPipeline(b, app.NewPipeline(0), pipelines.ShardInfo{})
			g.Begin(1e12, time.Hour)
			h.Pass()
			n := 0
			b.ResetTimer()
			for n < b.N {
				h.Advance(time.Microsecond)
				n += h.Pass().Len()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/packet")
		})
	}
}

// BenchmarkAnalyse measures an analyser pass per reply (full batches).
func BenchmarkAnalyse(b *testing.B) {
	g, err := New(Config{Src: src, Dst: dst, DstMAC: dstMAC, Flows: 16})
	if err != nil {
		b.Fatal(err)
	}
	h := stagetest.NewPipeline(b, g.App().NewPipeline(0), pipelines.ShardInfo{})
	g.Begin(1e6, time.Hour)
	h.Step()
	var frames [][]byte
	for len(frames) < stagetest.BatchSize {
		h.Advance(10 * time.Microsecond)
		for _, o := range h.Step() {
			frames = append(frames, o.Data)
		}
	}
	g.Begin(0, time.Hour)
	h.Step()
	id := g.cur.Load().id
	in := make([]stagetest.In, stagetest.BatchSize)
	for i := range in {
		in[i] = stagetest.In{Data: reply(frames[i])}
		in[i].Data[34+8+2], in[i].Data[34+8+3] = byte(id>>8), byte(id)
	}
	b.ResetTimer()
	n := 0
	for n < b.N {
		h.Advance(time.Microsecond)
		n += h.Pass(in...).Len()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/packet")
}
