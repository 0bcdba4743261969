package fault_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/testpkt"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/fault"
	"github.com/netchan/netchan/pipelines/stagetest"
)

var ifaces = []pipelines.Interface{{Name: "test0", MTU: 1500}}

// udpFrame is a valid UDP/IPv4 frame whose payload starts with seq.
func udpFrame(seq, payload int) []byte {
	p := make([]byte, payload)
	binary.BigEndian.PutUint64(p, uint64(seq))
	for i := 8; i < len(p); i++ {
		p[i] = byte(seq*13 + i)
	}
	return testpkt.UDP{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		SrcIP: netip.MustParseAddr("198.18.0.2"), DstIP: netip.MustParseAddr("198.18.0.1"),
		SrcPort: 4000, DstPort: 7, Payload: p,
	}.Build()
}

func seqOf(frame []byte) int { return int(binary.BigEndian.Uint64(frame[42:])) }

// sink transmits every packet that reaches it, so the harness records the order.
func sink() pipelines.Stage {
	return pipelines.Func("sink", func(p *pipelines.Packet, _ []byte) { p.Verdict, p.OutIf = pipelines.Transmit, p.InIf })
}

type run struct {
	t     *testing.T
	h     *stagetest.Harness
	f     *fault.Stage
	sent  [][]byte
	at    []int64 // the harness's clock when each of sent came out
	drops int     // with ReasonDrop
	full  int     // with ReasonDelayFull
}

func newRun(t *testing.T, cfg fault.Config, shard int) *run {
	t.Helper()
	f := fault.New(cfg, shard, nil)
	p := f.InFront(&pipelines.Pipeline{Stages: []pipelines.Stage{sink()}})
	r := &run{t: t, h: stagetest.NewPipeline(t, p, pipelines.ShardInfo{Shard: shard, Shards: 2, Ifaces: ifaces}), f: f}
	t.Cleanup(func() {
		if n := r.h.FreeFrames(); n != stagetest.Frames {
			t.Errorf("frames leaked: %d of %d free", n, stagetest.Frames)
		}
	})
	return r
}

// step runs one batch and records what came out.
func (r *run) step(frames ...[]byte) {
	r.t.Helper()
	in := make([]stagetest.In, len(frames))
	for i, f := range frames {
		in[i] = stagetest.In{Data: f}
	}
	for _, o := range r.h.Step(in...) {
		r.sent = append(r.sent, o.Data)
		r.at = append(r.at, r.h.Now())
	}
	for _, d := range r.h.Drops() {
		switch d {
		case fault.ReasonDrop:
			r.drops++
		case fault.ReasonDelayFull:
			r.full++
		default:
			r.t.Fatalf("dropped with reason %v, want %v or %v", d, fault.ReasonDrop, fault.ReasonDelayFull)
		}
	}
	if n := r.h.FreeFrames(); n != stagetest.Frames {
		r.t.Fatalf("after a step %d of %d frames are free", n, stagetest.Frames)
	}
}

// feed passes n packets (sequence numbers from 0) in batches of per, the clock moving 10 µs a
// batch, then moves the clock past MaxHold and runs an empty pass so held packets come out.
func (r *run) feed(n, per int) [][]byte {
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = udpFrame(i, 64)
	}
	for i := 0; i < n; i += per {
		r.step(frames[i:min(i+per, n)]...)
		r.h.Advance(10 * time.Microsecond)
	}
	r.h.Advance(time.Second)
	r.step()
	return frames
}

func near(t *testing.T, what string, got uint64, n int, p float64) {
	t.Helper()
	want := float64(n) * p
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	if math.Abs(float64(got)-want) > 5*sigma+1 {
		t.Errorf("%s: %d of %d, want about %.0f (p=%v)", what, got, n, want, p)
	} else {
		t.Logf("%s: %d of %d (expected %.0f ± %.0f)", what, got, n, want, sigma)
	}
}

func TestProbabilities(t *testing.T) {
	const n = 20000
	for _, cfg := range []fault.Config{
		{Seed: 1, Drop: 0.1},
		{Seed: 2, Duplicate: 0.1},
		{Seed: 3, Reorder: 0.1},
		{Seed: 4, Corrupt: 0.1},
		{Seed: 5, Drop: 0.05, Duplicate: 0.1, Reorder: 0.15, Corrupt: 0.02},
		{Seed: 6, Drop: 0.25, Duplicate: 0.25, Reorder: 0.25, Corrupt: 0.25},
	} {
		t.Run(cfg.String(), func(t *testing.T) {
			r := newRun(t, cfg, 0)
			r.feed(n, 16)
			st := r.f.Counters().Snapshot()
			if st.Skipped != 0 {
				t.Errorf("skipped %d faults", st.Skipped)
			}
			near(t, "dropped", st.Dropped, n, cfg.Drop)
			near(t, "duplicated", st.Duplicated, n, cfg.Duplicate)
			near(t, "reordered", st.Reordered, n, cfg.Reorder)
			near(t, "corrupted", st.Corrupted, n, cfg.Corrupt)
			if uint64(r.drops) != st.Dropped {
				t.Errorf("%d drops seen, counter %d", r.drops, st.Dropped)
			}
			if got, want := len(r.sent), n-int(st.Dropped)+int(st.Duplicated); got != want {
				t.Errorf("%d packets out, want %d", got, want)
			}
			if st.Released != st.Reordered || r.f.Held() != 0 {
				t.Errorf("reordered %d, released %d, still held %d", st.Reordered, st.Released, r.f.Held())
			}
			bad := 0
			for _, f := range r.sent {
				if _, ok := testpkt.DecodeUDP(f); !ok {
					bad++
				}
			}
			if uint64(bad) != st.Corrupted {
				t.Errorf("%d frames fail their checksums, %d corrupted", bad, st.Corrupted)
			}
		})
	}
}

func TestSameSeedSameDecisions(t *testing.T) {
	cfg := fault.Config{Seed: 7, Drop: 0.1, Duplicate: 0.1, Reorder: 0.1, Corrupt: 0.1}
	out := func(cfg fault.Config, shard int) ([][]byte, fault.Stats) {
		r := newRun(t, cfg, shard)
		r.feed(2000, 8)
		return r.sent, r.f.Counters().Snapshot()
	}
	same := func(a, b [][]byte) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if !bytes.Equal(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	a, sa := out(cfg, 0)
	b, sb := out(cfg, 0)
	if !same(a, b) || sa != sb {
		t.Errorf("same seed, different results: %+v vs %+v", sa, sb)
	}
	c, sc := out(cfg, 1)
	if same(a, c) {
		t.Errorf("shards 0 and 1 made the same decisions (%+v)", sc)
	}
	cfg.Seed = 8
	d, sd := out(cfg, 0)
	if same(a, d) {
		t.Errorf("seeds 7 and 8 made the same decisions (%+v)", sd)
	}
}

// TestReorderByCount: with every packet held and depth 3, packet k comes out right after
// packet k+3 went in.
func TestReorderByCount(t *testing.T) {
	r := newRun(t, fault.Config{Reorder: 1, ReorderDepth: 3, MaxHold: time.Second}, 0)
	for k := 0; k < 20; k++ {
		r.step(udpFrame(k, 32))
		if k < 3 {
			if len(r.sent) != 0 {
				t.Fatalf("after packet %d: %d out, want none", k, len(r.sent))
			}
			continue
		}
		if len(r.sent) != k-2 || seqOf(r.sent[k-3]) != k-3 {
			t.Fatalf("after packet %d: %d out (last %d), want %d ending with %d", k, len(r.sent), seqOf(r.sent[len(r.sent)-1]), k-2, k-3)
		}
	}
	if r.f.Held() != 3 {
		t.Errorf("held %d, want 3", r.f.Held())
	}
	r.h.Advance(time.Second)
	r.step()
	if len(r.sent) != 20 || r.f.Held() != 0 {
		t.Errorf("after MaxHold: %d out, %d held", len(r.sent), r.f.Held())
	}
}

// TestReorderByTime: a held packet with no packet after it comes out after MaxHold from the
// originate pass, through the stages after the fault stage; NextDeadline says when.
func TestReorderByTime(t *testing.T) {
	r := newRun(t, fault.Config{Reorder: 1, MaxHold: time.Millisecond}, 0)
	start := r.h.Now()
	r.step(udpFrame(1, 32))
	if d := r.f.NextDeadline(); d != start+int64(time.Millisecond) {
		t.Errorf("NextDeadline %d, want %d", d, start+int64(time.Millisecond))
	}
	r.h.SetNow(start + int64(time.Millisecond) - 1)
	r.step()
	if len(r.sent) != 0 {
		t.Fatalf("released before MaxHold")
	}
	r.h.Advance(1)
	r.step()
	if len(r.sent) != 1 || seqOf(r.sent[0]) != 1 {
		t.Fatalf("after MaxHold: %d out", len(r.sent))
	}
	if r.f.NextDeadline() != 0 {
		t.Errorf("NextDeadline %d with nothing held", r.f.NextDeadline())
	}
}

// TestReorderWithoutInFront: a fault stage placed by hand releases only from Process (which a
// shard runs only when packets arrive), so it asks for no wake-up.
func TestReorderWithoutInFront(t *testing.T) {
	f := fault.New(fault.Config{Reorder: 1, MaxHold: time.Millisecond}, 0, nil)
	h := stagetest.NewPipeline(t, &pipelines.Pipeline{Stages: []pipelines.Stage{f, sink()}}, pipelines.ShardInfo{Ifaces: ifaces})
	h.Step(stagetest.In{Data: udpFrame(1, 32)})
	h.Advance(time.Hour)
	if f.NextDeadline() != 0 {
		t.Fatal("a deadline without InFront: the shard would wake for nothing")
	}
	out := h.Step(stagetest.In{Data: udpFrame(2, 32)}) // held in turn
	if len(out) != 1 || seqOf(out[0].Data) != 1 {
		t.Fatalf("the next packet's pass let out %d packets, want packet 1", len(out))
	}
}

func TestReorderEveryPacketComesOut(t *testing.T) {
	r := newRun(t, fault.Config{Seed: 11, Reorder: 0.3}, 0)
	frames := r.feed(5000, 16)
	if len(r.sent) != len(frames) {
		t.Fatalf("%d of %d packets out", len(r.sent), len(frames))
	}
	seen := make([]bool, len(frames))
	inversions := 0
	for i, f := range r.sent {
		k := seqOf(f)
		if seen[k] || !bytes.Equal(f, frames[k]) {
			t.Fatalf("packet %d out twice or changed", k)
		}
		seen[k] = true
		if i > 0 && k < seqOf(r.sent[i-1]) {
			inversions++
		}
	}
	st := r.f.Counters().Snapshot()
	t.Logf("%+v, %d inversions", st, inversions)
	if inversions == 0 || st.Reordered != st.Released {
		t.Errorf("%d inversions, %+v", inversions, st)
	}
}

func TestHoldFull(t *testing.T) {
	r := newRun(t, fault.Config{Reorder: 1, HoldSlots: 4, ReorderDepth: 100, MaxHold: time.Second}, 0)
	fr := make([][]byte, 10)
	for i := range fr {
		fr[i] = udpFrame(i, 32)
	}
	r.step(fr...)
	st := r.f.Counters().Snapshot()
	if st.Reordered != 4 || st.Skipped != 6 || len(r.sent) != 6 {
		t.Errorf("%+v, %d out; want 4 held, 6 through", st, len(r.sent))
	}
	r.h.Advance(time.Second)
	r.step()
	if len(r.sent) != 10 {
		t.Errorf("%d out after MaxHold", len(r.sent))
	}
}

func TestDuplicatesIdentical(t *testing.T) {
	r := newRun(t, fault.Config{Seed: 3, Duplicate: 0.5}, 0)
	frames := r.feed(2000, 20)
	count := make([]int, len(frames))
	for _, f := range r.sent {
		k := seqOf(f)
		if !bytes.Equal(f, frames[k]) {
			t.Fatalf("packet %d changed", k)
		}
		count[k]++
	}
	dups := 0
	for k, c := range count {
		if c < 1 || c > 2 {
			t.Fatalf("packet %d out %d times", k, c)
		}
		dups += c - 1
	}
	if st := r.f.Counters().Snapshot(); uint64(dups) != st.Duplicated {
		t.Errorf("%d duplicates out, counter %d", dups, st.Duplicated)
	}
}

func TestCorruptPastIPv4Header(t *testing.T) {
	r := newRun(t, fault.Config{Seed: 9, Corrupt: 1}, 0)
	short := udpFrame(5, 8) // 50 bytes: padded to 60, the padding must never be chosen
	padded := append(append([]byte(nil), short...), make([]byte, 10)...)
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	for i := 0; i < 200; i++ {
		in := [][]byte{udpFrame(i, 200), padded, arp}
		r.sent = r.sent[:0]
		r.step(in...)
		if len(r.sent) != 3 {
			t.Fatalf("%d out", len(r.sent))
		}
		for j, out := range r.sent[:2] {
			var at []int
			for k := range out {
				if out[k] != in[j][k] {
					at = append(at, k)
				}
			}
			end := 14 + int(binary.BigEndian.Uint16(in[j][16:]))
			if len(at) != 1 || at[0] < 34 || at[0] >= end || out[at[0]] != ^in[j][at[0]] {
				t.Fatalf("frame %d: bytes changed at %v, want one byte inverted in [34, %d)", j, at, end)
			}
			if _, ok := testpkt.DecodeUDP(out); ok {
				t.Fatalf("corrupted frame passes its checksums")
			}
		}
		if !bytes.Equal(r.sent[2], arp) {
			t.Fatal("ARP frame changed")
		}
	}
	if st := r.f.Counters().Snapshot(); st.Corrupted != 400 || st.Skipped != 200 {
		t.Errorf("%+v", st)
	}
}

// TestDuplicateWithoutRoom: copies of a full batch's packets wait in the hold buffer for the
// next pass; what does not fit there is skipped.
func TestDuplicateWithoutRoom(t *testing.T) {
	r := newRun(t, fault.Config{Duplicate: 1, HoldSlots: 40}, 0)
	fr := make([][]byte, 64) // the harness's batch holds 64
	for i := range fr {
		fr[i] = udpFrame(i, 32)
	}
	r.step(fr...)
	if st := r.f.Counters().Snapshot(); len(r.sent) != 64 || st.Skipped != 24 || st.Duplicated != 0 || r.f.Held() != 40 {
		t.Errorf("%+v, %d out, %d held", st, len(r.sent), r.f.Held())
	}
	r.step()
	if st := r.f.Counters().Snapshot(); len(r.sent) != 104 || st.Duplicated != 40 || r.f.Held() != 0 {
		t.Errorf("next pass: %+v, %d out, %d held", st, len(r.sent), r.f.Held())
	}
	for i, f := range r.sent[64:] {
		if !bytes.Equal(f, fr[i]) {
			t.Fatalf("copy %d differs", i)
		}
	}
}

func TestParse(t *testing.T) {
	good := []struct {
		in   string
		want fault.Config
	}{
		{"", fault.Config{}},
		{"drop=0.01,dup=0.02,reorder=0.05,corrupt=0.001,seed=7",
			fault.Config{Seed: 7, Drop: 0.01, Duplicate: 0.02, Reorder: 0.05, Corrupt: 0.001}},
		{" reorder = 5% , duplicate=1%, depth=4, hold=2ms, slots=8, seed=0x10 ",
			fault.Config{Seed: 16, Duplicate: 0.01, Reorder: 0.05, ReorderDepth: 4, MaxHold: 2 * time.Millisecond, HoldSlots: 8}},
		{"drop=1", fault.Config{Drop: 1}},
		{"delay=1ms", fault.Config{Delay: time.Millisecond}},
		{"drop=1%,dup=2%,corrupt=0.5%,delay=250us,slots=600,seed=3",
			fault.Config{Seed: 3, Drop: 0.01, Duplicate: 0.02, Corrupt: 0.005, Delay: 250 * time.Microsecond, HoldSlots: 600}},
		{"delay=1s", fault.Config{Delay: time.Second}},
	}
	for _, tc := range good {
		got, err := fault.Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if back, err := fault.Parse(got.String()); err != nil || back != got {
			t.Errorf("Parse(%q.String() = %q) = %+v, %v", tc.in, got.String(), back, err)
		}
	}
	bad := []struct{ in, want string }{
		{"drop", "not key=value"},
		{"drop=", "not key=value"},
		{"loss=0.1", `unknown key "loss"`},
		{"drop=abc", "drop=abc: want a probability"},
		{"drop=1.5", "drop=1.5: want a probability"},
		{"drop=-0.1", "want a probability"},
		{"dup=200%", "want a probability"},
		{"drop=0.6,reorder=0.6", "must not exceed 1"},
		{"seed=-1", "seed=-1: want an unsigned integer"},
		{"depth=0", "depth=0: want a positive integer"},
		{"hold=5", "hold=5: want a duration"},
		{"hold=2s", "hold=2s: want a duration up to 1s"},
		{"drop=0.1,drop=0.2", "drop given twice"},
		{"drop=NaN", "want a probability"},
		{"delay=5", "delay=5: want a duration such as 1ms"},
		{"delay=2s", "delay=2s: want a duration from 0 to 1s"},
		{"delay=-1ms", "delay=-1ms: want a duration from 0 to 1s"},
		{"reorder=0.1,delay=1ms", "delay and reorder do not go together"},
		{"delay=1ms,slots=5000", "slots=5000: want 1 to 4096"},
	}
	for _, tc := range bad {
		_, err := fault.Parse(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, fault.ErrSyntax) {
			t.Errorf("Parse(%q) error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

func TestNewPanicsOnBadConfig(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New accepted drop=2")
		}
	}()
	fault.New(fault.Config{Drop: 2}, 0, nil)
}

// TestProcessAllocs: a pass with every fault happening allocates nothing.
func TestProcessAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	cfg := fault.Config{Seed: 1, Drop: 0.1, Duplicate: 0.1, Reorder: 0.1, Corrupt: 0.1, MaxHold: 50 * time.Microsecond}
	f := fault.New(cfg, 0, nil)
	p := f.InFront(&pipelines.Pipeline{Stages: []pipelines.Stage{sink()}})
	h := stagetest.NewPipeline(t, p, pipelines.ShardInfo{Ifaces: ifaces})
	in := make([]stagetest.In, 24)
	for k := range in {
		in[k] = stagetest.In{Data: udpFrame(1, 100)}
	}
	pass := func() {
		h.Advance(20 * time.Microsecond)
		h.Pass(in...)
	}
	if a := testing.AllocsPerRun(500, pass); a != 0 {
		t.Errorf("%v allocations per pass", a)
	}
	st := f.Counters().Snapshot()
	if st.Dropped == 0 || st.Duplicated == 0 || st.Reordered == 0 || st.Released == 0 || st.Corrupted == 0 {
		t.Errorf("not every fault happened: %+v", st)
	}
	// Empty originate passes (no packet received) release by time, also without allocating.
	var b *pipelines.Batch
	empty := func() {
		h.Advance(time.Millisecond)
		b = h.Pass()
	}
	if a := testing.AllocsPerRun(10, empty); a != 0 {
		t.Errorf("%v allocations per empty pass", a)
	}
	if f.Held() != 0 || h.FreeFrames()+b.Len() != stagetest.Frames {
		t.Errorf("held %d, %d of %d frames free or in the last batch", f.Held(), h.FreeFrames()+b.Len(), stagetest.Frames)
	}
}
