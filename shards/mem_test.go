package shards

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/testpkt"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/runtime/memport"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
)

func memQueues(t testing.TB, n int, frames uint32) ([]Queue, []*memport.Port) {
	var qs []Queue
	var ps []*memport.Port
	for i := 0; i < n; i++ {
		p := memport.New(1, frames, 2048, 1024)
		t.Cleanup(p.Close)
		qs = append(qs, Queue{ID: i, Mem: p.Mem, FrameSize: p.FrameSize, NumFrames: p.NumFrames, Links: []Link{p.Links[0]}})
		ps = append(ps, p)
	}
	return qs, ps
}

func reflectPipeline(int) *pipelines.Pipeline {
	return &pipelines.Pipeline{Stages: []pipelines.Stage{basic.Reflect()}}
}

// frameFor builds a UDP frame whose source address picks its owner under OwnerBySource.
func frameFor(i int) testpkt.UDP {
	return testpkt.UDP{
		SrcMAC: macA, DstMAC: macB,
		SrcIP:   netip.AddrFrom4([4]byte{198, 18, 0, byte(2 + i%50)}),
		DstIP:   netip.MustParseAddr("198.18.0.1"),
		SrcPort: uint16(10000 + i), DstPort: 7,
		Payload: []byte(fmt.Sprintf("packet %06d", i)),
	}
}

// TestMemHandoff runs two shards on in-memory ports with the owner chosen by source address:
// packets injected on shard 0's queue that shard 1 owns must be handed over, reflected by
// shard 1 and come out of shard 1's port byte-exact, with no frame lost, while another
// goroutine reads the counters (run it with -race).
func TestMemHandoff(t *testing.T) {
	qs, ps := memQueues(t, 2, 1024)
	e, err := New(Config{Queues: qs, NewPipeline: reflectPipeline, Owner: pipelines.OwnerBySource, Debug: true, SpinIdle: 20 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- e.Run(ctx) }()

	var stopReader atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stopReader.Load() {
			for _, s := range e.Snapshot() {
				_ = s.RxPackets + s.HandoffOut
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()

	const total = 3000
	want := map[string]bool{}
	owners := [2]int{}
	for i := 0; i < total; i++ {
		u := frameFor(i)
		want[string(u.Reflected().Build())] = true
		owners[pipelines.OwnerBySource(u.Build(), 2)]++
	}
	if owners[0] == 0 || owners[1] == 0 {
		t.Fatalf("test frames all map to one owner: %v", owners)
	}
	got := map[string]bool{}
	gotOn := [2]int{}
	drain := func() {
		for i, p := range ps {
			p.Links[0].Drain(func(d []byte) {
				got[string(bytes.Clone(d))] = true
				gotOn[i]++
			})
		}
	}
	for i := 0; i < total; i++ {
		f := frameFor(i).Build()
		deadline := time.Now().Add(5 * time.Second)
		for !ps[0].Links[0].Inject(f) {
			drain()
			if time.Now().After(deadline) {
				t.Fatalf("could not inject frame %d", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		if i%64 == 0 {
			drain()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < total && time.Now().Before(deadline) {
		drain()
		time.Sleep(time.Millisecond)
	}
	stopReader.Store(true)
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	snaps := e.Snapshot()
	if len(got) != total {
		t.Fatalf("got %d of %d reflected frames back; counters %+v", len(got), total, snaps)
	}
	for f := range want {
		if !got[f] {
			t.Fatalf("a reflected frame is missing or differs")
		}
	}
	if gotOn[0] != owners[0] || gotOn[1] != owners[1] {
		t.Errorf("frames left shard 0/1: %v, owners say %v", gotOn, owners)
	}
	if snaps[0].HandoffOut != uint64(owners[1]) || snaps[1].HandoffIn != uint64(owners[1]) {
		t.Errorf("hand-off counters out=%d in=%d, want %d", snaps[0].HandoffOut, snaps[1].HandoffIn, owners[1])
	}
	if snaps[0].RxPackets != total || snaps[0].TxPackets+snaps[1].TxPackets != total {
		t.Errorf("rx %d tx %d+%d, want %d", snaps[0].RxPackets, snaps[0].TxPackets, snaps[1].TxPackets, total)
	}
	for i, pl := range e.FramePlaces() {
		if pl["batch"] != 0 || pl["handoff"] != 0 || pl["kernel-tx"] != 0 {
			t.Errorf("shard %d frames not home after shutdown: %v", i, pl)
		}
	}
	// Both shards received or took over packets, so both had busy time; the run lasted at
	// least as long as their busy and idle time together.
	for i, sn := range snaps {
		if sn.BusyNanos == 0 || sn.BusyNanos+sn.IdleNanos > uint64(time.Since(began)) {
			t.Errorf("shard %d: busy %d ns, idle %d ns, in a run of %v", i, sn.BusyNanos, sn.IdleNanos, time.Since(began))
		}
	}
}

// TestPassAllocs checks that a whole receive → hand-off → pipeline → transmit pass over a batch
// of real frames allocates nothing.
func TestPassAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; run without -race (the test script does)")
	}
	qs, ps := memQueues(t, 2, 1024)
	e, err := New(Config{Queues: qs, NewPipeline: reflectPipeline, Owner: pipelines.OwnerBySource})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range e.shards {
		s.refill()
	}
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = frameFor(i).Build()
	}
	run := func() {
		for _, f := range frames {
			if !ps[0].Links[0].Inject(f) {
				t.Fatal("inject failed")
			}
		}
		e.shards[0].pass()
		e.shards[1].pass()
		e.shards[1].pass()
		for _, p := range ps {
			p.Links[0].Drain(nil)
		}
		e.shards[0].pass()
		e.shards[1].pass()
	}
	run()
	if a := testing.AllocsPerRun(200, run); a != 0 {
		t.Fatalf("a pass allocates %v times", a)
	}
	if e.ctrs[0].HandoffOut.Load() == 0 || e.ctrs[1].TxPackets.Load() == 0 {
		t.Fatalf("the measured passes did no hand-off or transmit: %+v", e.Snapshot())
	}
	for _, s := range e.shards {
		if err := s.frames.check(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSleepAllocs checks that a shard's sleep, woken by another shard or timed out, returns
// when it should and allocates nothing (it parks in the Go netpoller with a deadline).
func TestSleepAllocs(t *testing.T) {
	qs, _ := memQueues(t, 1, 1024)
	e, err := New(Config{Queues: qs, NewPipeline: reflectPipeline})
	if err != nil {
		t.Fatal(err)
	}
	s := e.shards[0]
	// Another goroutine wakes the shard once per sleep, when it finds it asleep (while waking
	// is set), as a kick does. Sleeps are numbered: the shard may be asleep again before the
	// waker sees it awake.
	var waking, viaDeadline atomic.Bool
	var round atomic.Int64
	done := make(chan struct{})
	defer close(done)
	go func() {
		var last int64
		for {
			select {
			case <-done:
				return
			default:
			}
			if r := round.Load(); r != last && waking.Load() && s.sleeping.Load() {
				last = r
				if viaDeadline.Load() {
					s.wakeNow() // as wakeSleepers
				} else {
					s.wake() // as kick
				}
			}
			runtime.Gosched()
		}
	}()
	woken := func() { round.Add(1); s.sleep() }
	waking.Store(true)
	// A lost wake-up sleeps the whole sleepMax every time; the waker goroutine missing its
	// chance (test.sh runs packages side by side on two cores) only now and then.
	for _, deadline := range []bool{false, true} {
		viaDeadline.Store(deadline)
		var took []time.Duration
		for range 3 {
			start := time.Now()
			woken()
			if took = append(took, time.Since(start)); took[len(took)-1] < sleepMax/4 {
				break
			}
		}
		if d := took[len(took)-1]; d >= sleepMax/4 {
			t.Fatalf("sleeps woken (through the deadline: %v) took %v", deadline, took)
		}
	}
	waking.Store(false)
	s.txPending[0] = true // a pending transmission caps the sleep at 1 ms
	timedOut := func() { s.sleep() }
	start := time.Now()
	timedOut()
	if d := time.Since(start); d < time.Millisecond || d > sleepMax/4 {
		t.Fatalf("a 1 ms sleep took %v", d)
	}
	s.txPending[0] = false
	if raceEnabled {
		return // the race detector allocates on its own
	}
	waking.Store(true)
	if a := testing.AllocsPerRun(50, woken); a != 0 {
		t.Errorf("a woken sleep allocates %v times", a)
	}
	waking.Store(false)
	s.txPending[0] = true
	if a := testing.AllocsPerRun(20, timedOut); a != 0 {
		t.Errorf("a timed-out sleep allocates %v times", a)
	}
}

// TestDebugCatchesDoubleFree shows the frame check is not vacuous.
func TestDebugCatchesDoubleFree(t *testing.T) {
	f := newFrames(8, 2048, true)
	var a [2]uint64
	f.get(a[:], placeBatch)
	f.put(a[0], placeBatch)
	if err := f.check(); err != nil {
		t.Fatalf("consistent state reported: %v", err)
	}
	f.put(a[0], placeBatch)
	if err := f.check(); err == nil {
		t.Fatal("double free not caught")
	}
	g := newFrames(8, 2048, false)
	g.get(a[:1], placeBatch)
	g.moved(placeBatch, placeKernelTx, 2)
	if err := g.check(); err == nil {
		t.Fatal("negative count not caught")
	}
}

// TestHandoffStuckOwner shows the bound on waiting for an owner: packets for an owner that
// lends no spare frames wait (and hold back receiving), then are dropped as handoff-full,
// and every frame is accounted for.
func TestHandoffStuckOwner(t *testing.T) {
	qs, ps := memQueues(t, 2, 1024)
	e, err := New(Config{Queues: qs, NewPipeline: reflectPipeline, Owner: pipelines.OwnerBySource, Debug: true})
	if err != nil {
		t.Fatal(err)
	}
	s0 := e.shards[0]
	s0.refill()
	var forOne [][]byte
	for i := 0; len(forOne) < 10; i++ {
		if f := frameFor(i).Build(); pipelines.OwnerBySource(f, 2) == 1 {
			forOne = append(forOne, f)
		}
	}
	for _, f := range forOne {
		ps[0].Links[0].Inject(f)
	}
	s0.pass() // shard 1 never runs, so it never lends a spare frame
	if len(s0.pend[1]) != len(forOne) || e.ctrs[0].Drops[pipelines.ReasonHandoffFull].Load() != 0 {
		t.Fatalf("want %d packets waiting and none dropped; waiting %d", len(forOne), len(s0.pend[1]))
	}
	time.Sleep(stallLimit + 10*time.Millisecond)
	s0.pass()
	s0.pass()
	if got := e.ctrs[0].Drops[pipelines.ReasonHandoffFull].Load(); got != uint64(len(forOne)) || len(s0.pend[1]) != 0 {
		t.Fatalf("after the stall limit: %d dropped as handoff-full, %d still waiting", got, len(s0.pend[1]))
	}
	if err := s0.frames.check(); err != nil {
		t.Fatal(err)
	}
	if s0.frames.count[placeBatch] != 0 {
		t.Fatalf("frames left in the batch: %v", s0.frames.places())
	}
}
