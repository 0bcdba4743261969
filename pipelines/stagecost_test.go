package pipelines

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"
)

// What the per-stage counters cost: Pipeline.Run as committed (counting calls, packets,
// decisions and drops per stage, sampling the clock every TimeSample-th run, the tap check)
// against baselineRun, Run as it was before the counters, on the same pipeline of three Func
// stages over batches of 64 packets. BenchmarkStageCountersPaired interleaves the two in
// rounds and reports the medians and their ratio; bench/results/stage-counters-*.txt has the
// figures.

// baselineRun is Pipeline.Run before the per-stage counters (commit dabdd90's parent), kept
// as the baseline of the paired benchmark.
func baselineRun(p *Pipeline, b *Batch) {
	for _, s := range p.Stages {
		s.Process(b)
	}
	toStack := false
	for i := range b.Pkts {
		switch b.Pkts[i].Verdict {
		case Continue:
			b.Drop(i, ReasonNoVerdict)
		case ToStack:
			toStack = true
		}
	}
	if !toStack {
		return
	}
	if p.Local == nil {
		for i := range b.Pkts {
			if b.Pkts[i].Verdict == ToStack {
				b.Drop(i, ReasonNoStack)
			}
		}
		return
	}
	for i := range b.Pkts {
		if b.Pkts[i].Verdict == ToStack {
			b.Pkts[i].Verdict = Continue
		}
	}
	p.Local.Process(b)
	for i := range b.Pkts {
		if b.Pkts[i].Verdict == Continue {
			b.Drop(i, ReasonNoVerdict)
		}
	}
}

var costReason = RegisterReason("bench-short")

// costPipeline is three small stages: a length check that drops runts (none here), a TTL
// decrement, and a MAC swap that transmits.
func costPipeline() *Pipeline {
	check := Func("check", func(p *Packet, d []byte) {
		if len(d) < 34 || d[12] != 0x08 || d[13] != 0 {
			p.Verdict, p.Reason = Drop, costReason
		}
	})
	ttl := Func("ttl", func(p *Packet, d []byte) { d[22]-- })
	swap := Func("swap", func(p *Packet, d []byte) {
		var m [6]byte
		copy(m[:], d[0:6])
		copy(d[0:6], d[6:12])
		copy(d[6:12], m[:])
		p.Verdict, p.OutIf = Transmit, p.InIf
	})
	return &Pipeline{Stages: []Stage{check, ttl, swap}}
}

const costBatch = 64

// costBatchOf makes a batch of 64 IPv4 frames of 60 bytes, one per 2048-byte frame.
func costBatchOf() *Batch {
	mem := make([]byte, costBatch*2048)
	b := NewBatch(mem, 2048, costBatch)
	for i := 0; i < costBatch; i++ {
		addr := uint64(i*2048 + Headroom)
		d := mem[addr : addr+60]
		d[12], d[13], d[14], d[22] = 0x08, 0x00, 0x45, 64
		b.Pkts = append(b.Pkts, Packet{Addr: addr, Len: 60})
	}
	return b
}

// runBatches runs the pipeline over the batch n times, making the handles anew before each
// run as a shard's receive does (shards/shard.go appends Packet{Addr, Len, InIf}), and
// returns ns per packet.
func runBatches(p *Pipeline, b *Batch, n int, counted bool) float64 {
	t0 := time.Now()
	for k := 0; k < n; k++ {
		for i := range b.Pkts {
			b.Pkts[i] = Packet{Addr: uint64(i*2048 + Headroom), Len: 60}
		}
		if counted {
			p.Run(b)
		} else {
			baselineRun(p, b)
		}
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(n*costBatch)
}

func benchRun(b *testing.B, counted bool) {
	p, batch := costPipeline(), costBatchOf()
	p.Start(ShardInfo{})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		runBatches(p, batch, 1, counted)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*costBatch), "ns/pkt")
}

// BenchmarkRunCounted: Pipeline.Run with the per-stage counters.
func BenchmarkRunCounted(b *testing.B) { benchRun(b, true) }

// BenchmarkRunBaseline: the same pipeline through baselineRun.
func BenchmarkRunBaseline(b *testing.B) { benchRun(b, false) }

// BenchmarkStageCountersPaired: each of b.N rounds runs the baseline and the counted Run for
// batchesPerRound batches each, in alternating order (ABBA), on one locked OS thread; it
// reports the median ns per packet of each, and the medians of the rounds' ratios and
// differences (ns/pkt-added). Run it with
// a fixed round count:
//
//	go test -run '^$' -bench StageCountersPaired -benchtime 41x ./pipelines/
func BenchmarkStageCountersPaired(b *testing.B) {
	const batchesPerRound = 20000
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pc, pb := costPipeline(), costPipeline()
	pc.Start(ShardInfo{})
	pb.Start(ShardInfo{})
	bc, bb := costBatchOf(), costBatchOf()
	runBatches(pc, bc, batchesPerRound, true) // warm both
	runBatches(pb, bb, batchesPerRound, false)
	var counted, base, ratio, added []float64
	round := 0
	for b.Loop() {
		var c, o float64
		if round%2 == 0 {
			o = runBatches(pb, bb, batchesPerRound, false)
			c = runBatches(pc, bc, batchesPerRound, true)
		} else {
			c = runBatches(pc, bc, batchesPerRound, true)
			o = runBatches(pb, bb, batchesPerRound, false)
		}
		counted, base, ratio, added = append(counted, c), append(base, o), append(ratio, c/o), append(added, c-o)
		round++
	}
	med := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		if len(s)%2 == 1 {
			return s[len(s)/2]
		}
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	b.ReportMetric(med(counted), "ns/pkt-counted")
	b.ReportMetric(med(base), "ns/pkt-baseline")
	b.ReportMetric(med(ratio), "ratio")
	b.ReportMetric(med(added), "ns/pkt-added")
	if st := pc.Snapshot(); st[2].Packets == 0 || st[2].Decided != st[2].Packets {
		b.Fatalf("the counted pipeline counted nothing: %+v", st)
	}
	b.Logf("%d rounds of %d batches of %d packets: counted %.2f ns/packet, baseline %.2f ns/packet, median ratio %.4f, median added %.2f ns/packet; stages %s",
		round, batchesPerRound, costBatch, med(counted), med(base), med(ratio), med(added), fmtStages(pc.Snapshot()))
}

func fmtStages(st []StageSnapshot) string {
	s := ""
	for _, x := range st {
		s += fmt.Sprintf("[%s calls %d packets %d decided %d %.1f ns/pkt] ", x.Name, x.Calls, x.Packets, x.Decided, x.NanosPerPacket)
	}
	return s
}

// TestStageCountersMixedDrops: drops of alternating reasons in one batch are each counted
// under their own reason and stage (runStage adds them per run of one reason), packets sent to
// the stack after every other packet was decided still reach the local stack, and what the
// local stack leaves undecided is dropped as no-verdict.
func TestStageCountersMixedDrops(t *testing.T) {
	odd := RegisterReason("bench-odd")
	mixed := Func("mixed", func(p *Packet, d []byte) {
		switch d[0] % 4 {
		case 0:
			p.Verdict, p.Reason = Drop, costReason
		case 1:
			p.Verdict, p.Reason = Drop, odd
		case 2:
			p.Verdict = ToStack
		default:
			p.Verdict = Transmit
		}
	})
	local := Func("local", func(p *Packet, d []byte) {
		if d[0]%8 == 2 {
			p.Verdict = Consume
		}
	})
	pipe := &Pipeline{Stages: []Stage{mixed}, Local: local}
	pipe.Start(ShardInfo{})
	b := costBatchOf()
	for i := range b.Pkts {
		b.Data(i)[0] = byte(i)
	}
	pipe.Run(b)
	st := pipe.Snapshot()
	if st[0].Drops["bench-short"] != 16 || st[0].Drops["bench-odd"] != 16 || st[0].Decided != 64 || st[0].Packets != 64 {
		t.Errorf("mixed: %+v, want 16 drops of each reason, 64 decided of 64", st[0])
	}
	if st[1].Packets != 16 || st[1].Decided != 8 {
		t.Errorf("local: %+v, want 16 packets in, 8 decided", st[1])
	}
	var noVerdict, consumed int
	for _, p := range b.Pkts {
		switch {
		case p.Verdict == Drop && p.Reason == ReasonNoVerdict && p.By == ByNone:
			noVerdict++
		case p.Verdict == Consume && p.By == 2:
			consumed++
		case p.By != 1 && p.Verdict != Consume:
			t.Errorf("packet %+v: want By 1 (the mixed stage)", p)
		}
	}
	if noVerdict != 8 || consumed != 8 {
		t.Errorf("%d no-verdict drops, %d consumed; want 8 and 8", noVerdict, consumed)
	}
}
