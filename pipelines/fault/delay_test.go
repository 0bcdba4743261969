package fault_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/testpkt"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/fault"
	"github.com/netchan/netchan/pipelines/stagetest"
)

// TestDelayReleasesOnTime: packets arriving one by one leave in arrival order, unchanged, in
// the first pass at or after arrival + Delay (exactly then when the passes fall on it).
func TestDelayReleasesOnTime(t *testing.T) {
	for _, tc := range []struct {
		delay, step time.Duration // the delay, and the clock's move between passes
		every       int           // a packet arrives every this many passes
	}{
		{time.Millisecond, 10 * time.Microsecond, 1},
		{time.Millisecond, 3 * time.Microsecond, 3},         // due times fall between passes
		{1500 * time.Microsecond, 10 * time.Microsecond, 7}, // more passes than packets
		{20 * time.Microsecond, 10 * time.Microsecond, 1},
	} {
		t.Run(fmt.Sprintf("%v/step=%v/every=%d", tc.delay, tc.step, tc.every), func(t *testing.T) {
			r := newRun(t, fault.Config{Delay: tc.delay}, 0)
			const n = 300
			frames := make([][]byte, n)
			arrived := make([]int64, n)
			maxHeld := 0
			limit := n*tc.every + int(tc.delay/tc.step) + 2
			for k, pass := 0, 0; len(r.sent) < n; pass++ {
				if pass > limit {
					t.Fatalf("after %d passes %d of %d out, %d held", pass, len(r.sent), n, r.f.Held())
				}
				if pass%tc.every == 0 && k < n {
					frames[k] = udpFrame(k, 20+k%200)
					arrived[k] = r.h.Now()
					r.step(frames[k])
					if c := r.h.Consumed(); c != 1 {
						t.Fatalf("packet %d: %d consumed in its pass, want it held", k, c)
					}
					k++
				} else {
					r.step()
				}
				maxHeld = max(maxHeld, r.f.Held())
				r.h.Advance(tc.step)
			}
			for i, f := range r.sent {
				k := seqOf(f)
				if k != i || !bytes.Equal(f, frames[k]) {
					t.Fatalf("out %d: packet %d (changed: %v), want packet %d unchanged", i, k, !bytes.Equal(f, frames[k]), i)
				}
				due := arrived[k] + int64(tc.delay)
				if r.at[i] < due || r.at[i] >= due+int64(tc.step) {
					t.Fatalf("packet %d arrived at %d, left at %d: %v after, want %v (to the next pass, %v)",
						k, arrived[k], r.at[i], time.Duration(r.at[i]-arrived[k]), tc.delay, tc.step)
				}
				if tc.delay%tc.step == 0 && r.at[i] != due {
					t.Fatalf("packet %d left %v after arriving, want exactly %v", k, time.Duration(r.at[i]-arrived[k]), tc.delay)
				}
			}
			// Held at the end of a pass: the packets that arrived in the last Delay.
			interval := tc.step * time.Duration(tc.every)
			if want := int((tc.delay + interval - 1) / interval); maxHeld != want {
				t.Errorf("at most %d held, want %d (a packet every %v for %v)", maxHeld, want, interval, tc.delay)
			}
			st := r.f.Counters().Snapshot()
			if st.Delayed != n || st.Released != n || st.DelayFull != 0 || st.Skipped != 0 || st.Held() != 0 || r.f.Held() != 0 {
				t.Errorf("%+v, %d held", st, r.f.Held())
			}
			if r.f.NextDeadline() != 0 {
				t.Errorf("NextDeadline %d with nothing held", r.f.NextDeadline())
			}
		})
	}
}

// TestDelayFull: a burst larger than HoldSlots keeps what fits; the rest is dropped with
// ReasonDelayFull, counted by the stage and in the pipeline's drops of the fault stage. Slots
// that are due are freed for a pass's packets before they are held.
func TestDelayFull(t *testing.T) {
	r := newRun(t, fault.Config{Delay: time.Millisecond, HoldSlots: 8}, 0)
	burst := func(from int) [][]byte {
		fr := make([][]byte, 20)
		for i := range fr {
			fr[i] = udpFrame(from+i, 32)
		}
		return fr
	}
	t0 := r.h.Now()
	a := burst(0)
	r.step(a...)
	if n := r.h.DropCounts()["fault-delay-full"]; n != 12 || r.full != 12 || r.h.Consumed() != 8 || len(r.sent) != 0 {
		t.Fatalf("burst of 20 into 8 slots: %d delay-full drops, %d consumed, %d out; want 12, 8, 0", n, r.h.Consumed(), len(r.sent))
	}
	for k, o := range r.h.Outcomes() {
		if want := k >= 8; (o.Verdict == pipelines.Drop) != want {
			t.Fatalf("packet %d: %v; want the first 8 held and the rest dropped", k, o.Verdict)
		}
	}
	if st := r.f.Counters().Snapshot(); st.Delayed != 8 || st.DelayFull != 12 || st.Released != 0 || st.Held() != 8 || st.Skipped != 0 {
		t.Errorf("%+v", st)
	}
	r.h.SetNow(t0 + int64(time.Millisecond) - 1)
	r.step()
	if len(r.sent) != 0 {
		t.Fatalf("%d out before the delay", len(r.sent))
	}
	r.h.SetNow(t0 + int64(time.Millisecond))
	b := burst(20)
	r.step(b...) // the 8 due leave first, freeing their slots for 8 of the new burst
	if len(r.sent) != 8 || r.full != 24 || r.h.Consumed() != 8 {
		t.Fatalf("second burst: %d out, %d delay-full drops in all, %d consumed; want 8, 24, 8", len(r.sent), r.full, r.h.Consumed())
	}
	r.h.Advance(time.Millisecond)
	r.step()
	want := append(append([][]byte(nil), a[:8]...), b[:8]...)
	if len(r.sent) != len(want) {
		t.Fatalf("%d out, want %d", len(r.sent), len(want))
	}
	for i := range want {
		if !bytes.Equal(r.sent[i], want[i]) {
			t.Fatalf("out %d is packet %d, want %d", i, seqOf(r.sent[i]), seqOf(want[i]))
		}
	}
	st := r.f.Counters().Snapshot()
	if st.Delayed != 16 || st.DelayFull != 24 || st.Released != 16 || st.Held() != 0 || st.Dropped != 0 {
		t.Errorf("%+v", st)
	}
	var drops map[string]uint64
	for _, s := range r.h.Pipeline().Snapshot() {
		if s.Name == "fault" {
			drops = s.Drops
		}
	}
	if drops["fault-delay-full"] != 24 || len(drops) != 1 {
		t.Errorf("the fault stage's drops: %v, want fault-delay-full: 24", drops)
	}
}

// TestDelayOriginate: with no packet after them, held packets leave from Originate (what a
// shard calls on a pass that received nothing, and after sleeping until NextDeadline), each
// at its own arrival + Delay, through the stages after the fault stage.
func TestDelayOriginate(t *testing.T) {
	const delay = time.Millisecond
	f := fault.New(fault.Config{Delay: delay}, 0, nil)
	p := f.InFront(&pipelines.Pipeline{Stages: []pipelines.Stage{sink()}})
	h := stagetest.NewPipeline(t, p, pipelines.ShardInfo{Ifaces: ifaces})
	t0 := h.Now()
	at := []time.Duration{0, 100 * time.Microsecond, 250 * time.Microsecond, 250 * time.Microsecond}
	frames := make([][]byte, len(at))
	for k := range at {
		h.SetNow(t0 + int64(at[k]))
		frames[k] = udpFrame(k, 100)
		if out := h.Step(stagetest.In{Data: frames[k]}); len(out) != 0 {
			t.Fatalf("packet %d: %d out at once", k, len(out))
		}
	}
	if d := f.NextDeadline(); d != t0+int64(delay) || h.NextDeadline() != d {
		t.Fatalf("NextDeadline %d (the pipeline's %d), want %d", d, h.NextDeadline(), t0+int64(delay))
	}

	// A pass of its own: only Originate runs, as on a shard's pass that received nothing.
	mem := make([]byte, 8*stagetest.FrameSize)
	var free []uint64
	for i := 0; i < 8; i++ {
		free = append(free, uint64(i*stagetest.FrameSize))
	}
	b := pipelines.NewBatch(mem, stagetest.FrameSize, 8)
	b.SetAllocator(func() (uint64, bool) {
		if len(free) == 0 {
			return 0, false
		}
		a := free[len(free)-1]
		free = free[:len(free)-1]
		return a, true
	})
	originate := func(now int64) []int {
		t.Helper()
		b.Reset()
		b.NowNanos = now
		p.Originate(b)
		var seqs []int
		for i, pk := range b.Pkts {
			d := b.Data(i)
			if pk.Verdict != pipelines.Transmit || !bytes.Equal(d, frames[seqOf(d)]) {
				t.Fatalf("originated packet %d: %v, unchanged %v; want it transmitted by the sink unchanged", seqOf(d), pk.Verdict, bytes.Equal(d, frames[seqOf(d)]))
			}
			seqs = append(seqs, seqOf(d))
			free = append(free, pk.Addr&^uint64(stagetest.FrameSize-1))
		}
		return seqs
	}
	for _, c := range []struct {
		now  time.Duration // after t0
		want []int
		next time.Duration // NextDeadline after the pass (-1: none)
	}{
		{delay - 1, nil, delay},
		{delay, []int{0}, delay + 100*time.Microsecond},
		{delay + 249*time.Microsecond, []int{1}, delay + 250*time.Microsecond},
		{delay + 250*time.Microsecond - 1, nil, delay + 250*time.Microsecond},
		{delay + 250*time.Microsecond, []int{2, 3}, -1},
	} {
		got := originate(t0 + int64(c.now))
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Fatalf("at +%v: %v out, want %v", c.now, got, c.want)
		}
		want := int64(0)
		if c.next >= 0 {
			want = t0 + int64(c.next)
		}
		if d := f.NextDeadline(); d != want {
			t.Fatalf("at +%v: NextDeadline %d, want %d", c.now, d, want)
		}
	}
	if st := f.Counters().Snapshot(); st.Delayed != 4 || st.Released != 4 || f.Held() != 0 {
		t.Errorf("%+v, %d held", st, f.Held())
	}

	// The same through the harness, as a sleeping shard woken at each deadline would run.
	for k := range at {
		h.SetNow(t0 + int64(time.Second) + int64(at[k]))
		h.Step(stagetest.In{Data: frames[k]})
	}
	var out []int
	for h.AdvanceToDeadline() {
		for _, o := range h.Sent() {
			k := seqOf(o.Data)
			out = append(out, k)
			if got, want := h.Now(), t0+int64(time.Second)+int64(at[k]+delay); got != want {
				t.Errorf("packet %d left at %d, want %d", k, got, want)
			}
		}
	}
	if fmt.Sprint(out) != "[0 1 2 3]" {
		t.Errorf("woken at the deadlines: %v out, want [0 1 2 3]", out)
	}
}

// TestDelayWithFaults: drop, duplicate and corrupt apply first; what survives, copies
// included (right behind their original), leaves Delay later, in order.
func TestDelayWithFaults(t *testing.T) {
	const delay = 200 * time.Microsecond
	cfg := fault.Config{Seed: 5, Drop: 0.1, Duplicate: 0.1, Corrupt: 0.1, Delay: delay}
	r := newRun(t, cfg, 0)
	const n = 3000
	frames := make([][]byte, n)
	arrived := make([]int64, n)
	for k := 0; k < n; k++ {
		frames[k] = udpFrame(k, 64)
		arrived[k] = r.h.Now()
		r.step(frames[k])
		r.h.Advance(10 * time.Microsecond)
	}
	for r.f.Held() > 0 {
		r.step()
		r.h.Advance(10 * time.Microsecond)
	}
	st := r.f.Counters().Snapshot()
	t.Logf("%+v", st)
	near(t, "dropped", st.Dropped, n, cfg.Drop)
	near(t, "duplicated", st.Duplicated, n, cfg.Duplicate)
	near(t, "corrupted", st.Corrupted, n, cfg.Corrupt)
	if uint64(r.drops) != st.Dropped || st.DelayFull != 0 || st.Skipped != 0 {
		t.Errorf("%d drops seen; %+v", r.drops, st)
	}
	if st.Delayed != uint64(n)-st.Dropped+st.Duplicated || st.Released != st.Delayed || uint64(len(r.sent)) != st.Delayed {
		t.Errorf("%d out; %+v: want every packet not dropped and every copy delayed and released", len(r.sent), st)
	}
	last, copies, bad := -1, 0, 0
	for i, f := range r.sent {
		k := identify(f, frames, max(last, 0))
		if k < 0 {
			t.Fatalf("out %d matches no packet from %d on", i, last)
		}
		switch {
		case k > last:
		case k == last:
			copies++ // a copy, right behind its original
			if !bytes.Equal(f, r.sent[i-1]) {
				t.Fatalf("copy of packet %d differs from it", k)
			}
		default:
			t.Fatalf("packet %d out after packet %d", k, last)
		}
		last = k
		if r.at[i] != arrived[k]+int64(delay) {
			t.Fatalf("packet %d left %v after arriving, want %v", k, time.Duration(r.at[i]-arrived[k]), delay)
		}
		if _, ok := testpkt.DecodeUDP(f); !ok {
			bad++
		} else if !bytes.Equal(f, frames[k]) {
			t.Fatalf("packet %d changed but passes its checksums", k)
		}
	}
	// At most one fault happens to a packet, so no copy is of a corrupted packet.
	if uint64(copies) != st.Duplicated || uint64(bad) != st.Corrupted {
		t.Errorf("%d copies out, %d failing their checksums; %+v", copies, bad, st)
	}
}

// identify finds the packet f is, or a corruption of (one byte inverted, which may be in the
// sequence number), among frames from the index from on; -1 if none.
func identify(f []byte, frames [][]byte, from int) int {
	for k := from; k < len(frames); k++ {
		if len(f) != len(frames[k]) {
			continue
		}
		diff := 0
		for j := range f {
			if f[j] != frames[k][j] {
				diff++
			}
		}
		if diff <= 1 {
			return k
		}
	}
	return -1
}

// TestDelayZero: Delay 0 is no delay: the stage holds nothing and keeps its defaults.
func TestDelayZero(t *testing.T) {
	a, err := fault.Parse("drop=0.2,dup=0.2,corrupt=0.2,seed=3,delay=0")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := fault.Parse("drop=0.2,dup=0.2,corrupt=0.2,seed=3")
	if a != b {
		t.Fatalf("delay=0 parsed as %+v, want %+v", a, b)
	}
	if c, _ := fault.Parse("delay=0"); c.Active() || c != (fault.Config{}) {
		t.Errorf("delay=0 alone: %+v, active %v", c, c.Active())
	}
	if c, _ := fault.Parse("delay=1ms"); !c.Active() {
		t.Error("delay=1ms is not active")
	}
	r := newRun(t, a, 0)
	if got := r.f.Config().HoldSlots; got != fault.DefaultHoldSlots {
		t.Errorf("HoldSlots %d, want %d", got, fault.DefaultHoldSlots)
	}
	fr := make([][]byte, 32)
	for i := range fr {
		fr[i] = udpFrame(i, 64)
	}
	r.step(fr...)
	st := r.f.Counters().Snapshot()
	if got, want := len(r.sent), 32-r.drops+int(st.Duplicated); got != want || r.f.Held() != 0 || st.Delayed != 0 || r.f.NextDeadline() != 0 {
		t.Errorf("%d out in the same pass, want %d; %d held; %+v", got, want, r.f.Held(), st)
	}
	if c := fault.New(fault.Config{Delay: time.Millisecond}, 0, nil).Config(); c.HoldSlots != fault.DefaultDelaySlots {
		t.Errorf("with a delay HoldSlots defaults to %d, want %d", c.HoldSlots, fault.DefaultDelaySlots)
	}
}

// TestDelayAllocs: passes that hold, release, drop, duplicate and corrupt with a delay, and
// the originate passes that release by time, allocate nothing.
func TestDelayAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	cfg := fault.Config{Seed: 1, Drop: 0.1, Duplicate: 0.1, Corrupt: 0.1, Delay: 50 * time.Microsecond}
	f := fault.New(cfg, 0, nil)
	p := f.InFront(&pipelines.Pipeline{Stages: []pipelines.Stage{sink()}})
	h := stagetest.NewPipeline(t, p, pipelines.ShardInfo{Ifaces: ifaces})
	in := make([]stagetest.In, 24)
	for k := range in {
		in[k] = stagetest.In{Data: udpFrame(k, 100)}
	}
	pass := func() {
		h.Advance(20 * time.Microsecond)
		h.Pass(in...)
	}
	if a := testing.AllocsPerRun(500, pass); a != 0 {
		t.Errorf("%v allocations per pass", a)
	}
	st := f.Counters().Snapshot()
	if st.Dropped == 0 || st.Duplicated == 0 || st.Delayed == 0 || st.Released == 0 || st.Corrupted == 0 || st.DelayFull != 0 {
		t.Errorf("not every fault happened, or some found no slot: %+v", st)
	}
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
