package shards

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/memport"
)

// napiLink is a memport link that busy polls like a busy-polling AF_XDP socket on a NIC
// whose interrupts are deferred: frames wait in the "device" (Arrive) until a busy poll
// runs its NAPI, which moves up to budget of them onto the rx ring. Its NAPI id is napi, or,
// with learnOnRx, 0 until the first frame reaches the rx ring (as in copy mode).
type napiLink struct {
	*memport.Link
	budget    int
	learnOnRx bool
	id        uint32
	napi      atomic.Uint32
	polls     atomic.Uint64
	mu        sync.Mutex
	device    [][]byte
}

func (l *napiLink) BusyPolling() bool { return true }

func (l *napiLink) NAPIID() (uint32, error) { return l.napi.Load(), nil }

func (l *napiLink) BusyPoll() {
	l.polls.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for n < len(l.device) && n < l.budget && l.Inject(l.device[n]) {
		n++
	}
	if n > 0 && l.learnOnRx {
		l.napi.Store(l.id)
	}
	l.device = append(l.device[:0], l.device[n:]...)
}

// Arrive puts frames into the device, where only a busy poll takes them.
func (l *napiLink) Arrive(frames ...[]byte) {
	l.mu.Lock()
	l.device = append(l.device, frames...)
	l.mu.Unlock()
}

// Deliver puts a frame on the rx ring as an interrupt-driven NAPI would, recording the NAPI
// id on the way when learnOnRx.
func (l *napiLink) Deliver(f []byte) bool {
	if l.learnOnRx {
		l.napi.Store(l.id)
	}
	return l.Inject(f)
}

func napiQueues(t testing.TB, n int, mk func(i int, ml *memport.Link) Link) ([]Queue, []*memport.Port) {
	var qs []Queue
	var ps []*memport.Port
	for i := 0; i < n; i++ {
		p := memport.New(1, 1024, 2048, 1024)
		t.Cleanup(p.Close)
		qs = append(qs, Queue{ID: i, Mem: p.Mem, FrameSize: p.FrameSize, NumFrames: p.NumFrames, Links: []Link{mk(i, p.Links[0])}})
		ps = append(ps, p)
	}
	return qs, ps
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(f string, a ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(f, a...))
	l.mu.Unlock()
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestBusyPollStates walks each way a link's busy polling can go: on from the start (the
// NAPI id known, as a zero-copy socket's is), waiting until the first packet brings the id
// (copy mode on a NIC), waiting until the first packet shows there is none, unavailable
// because the caller said so (veth), and unavailable because the link cannot busy poll; a
// shard polls only the links that are on, only when their rx ring is empty, and counts the
// packets the polls brought.
func TestBusyPollStates(t *testing.T) {
	frames := make([][]byte, 20)
	for i := range frames {
		frames[i] = frameFor(i).Build()
	}
	type engine struct {
		e  *Engine
		nl *napiLink
		lg *logs
	}
	start := func(t *testing.T, nl *napiLink, unavailable []string) engine {
		var lg logs
		qs, _ := napiQueues(t, 1, func(_ int, ml *memport.Link) Link {
			if nl == nil {
				return ml
			}
			nl.Link = ml
			return nl
		})
		e, err := New(Config{Queues: qs, NewPipeline: reflectPipeline, Debug: true, Logf: lg.logf,
			BusyPoll: BusyPoll{On: true, Unavailable: unavailable}})
		if err != nil {
			t.Fatal(err)
		}
		e.shards[0].refill()
		return engine{e, nl, &lg}
	}
	state := func(e *Engine) BusyPollState {
		bp := e.Snapshot()[0].BusyPoll
		if len(bp) != 1 {
			t.Fatalf("busy-poll states %+v, want one", bp)
		}
		return bp[0]
	}

	t.Run("on", func(t *testing.T) {
		x := start(t, &napiLink{budget: 8, id: 8193}, nil)
		x.nl.napi.Store(8193)
		x = start(t, x.nl, nil) // New reads the id now known
		if st := state(x.e); st.String() != "on (NAPI id 8193)" || st.Iface != "link 0" {
			t.Fatalf("state %+v (%s)", st, st)
		}
		if !strings.Contains(x.lg.String(), "busy polling on link 0: on for queue 0 (NAPI id 8193)") {
			t.Errorf("start log: %q", x.lg)
		}
		x.nl.Arrive(frames...)
		s := x.e.shards[0]
		s.pass() // empty ring: one poll brings 8
		s.pass() // and again
		sn := x.e.Snapshot()[0]
		if sn.BusyPollCalls != 2 || sn.BusyPollRxPackets != 16 || sn.RxPackets != 16 {
			t.Fatalf("after two passes: %d polls brought %d of %d received", sn.BusyPollCalls, sn.BusyPollRxPackets, sn.RxPackets)
		}
		// Frames on the rx ring already: no poll, and what is received is not the poll's.
		for _, f := range frames[:3] {
			x.nl.Inject(f)
		}
		s.pass()
		sn = x.e.Snapshot()[0]
		if sn.BusyPollCalls != 2 || sn.BusyPollRxPackets != 16 || sn.RxPackets != 19 {
			t.Fatalf("with frames waiting: %d polls, %d brought, %d received", sn.BusyPollCalls, sn.BusyPollRxPackets, sn.RxPackets)
		}
		s.pass() // the last 4 from the device
		s.pass() // nothing left: a poll that brings nothing
		sn = x.e.Snapshot()[0]
		if sn.BusyPollCalls != 4 || sn.BusyPollRxPackets != 20 || sn.RxPackets != 23 {
			t.Fatalf("at the end: %d polls, %d brought, %d received", sn.BusyPollCalls, sn.BusyPollRxPackets, sn.RxPackets)
		}
	})

	t.Run("learns", func(t *testing.T) {
		x := start(t, &napiLink{budget: 64, id: 8200, learnOnRx: true}, nil)
		s := x.e.shards[0]
		if st := state(x.e); st.State != "waiting" || !strings.Contains(x.lg.String(), "waiting for the first packet on queue 0") {
			t.Fatalf("before traffic: %s; log %q", st, x.lg)
		}
		x.nl.Arrive(frames...)
		s.pass()
		s.pass()
		if sn := x.e.Snapshot()[0]; sn.BusyPollCalls != 0 || x.nl.polls.Load() != 0 {
			t.Fatalf("a waiting link was polled %d times", x.nl.polls.Load())
		}
		x.nl.Deliver(frames[0]) // the first packet, through the interrupt path
		s.pass()
		if st := state(x.e); st.String() != "on (NAPI id 8200)" || !strings.Contains(x.lg.String(), "shard 0: link 0 queue 0: busy polling on (NAPI id 8200)") {
			t.Fatalf("after the first packet: %s; log %q", st, x.lg)
		}
		s.pass()
		if sn := x.e.Snapshot()[0]; sn.BusyPollCalls != 1 || sn.BusyPollRxPackets != 20 || sn.RxPackets != 21 {
			t.Fatalf("polling: %d polls brought %d of %d", sn.BusyPollCalls, sn.BusyPollRxPackets, sn.RxPackets)
		}
	})

	t.Run("no NAPI id", func(t *testing.T) {
		x := start(t, &napiLink{budget: 64}, nil) // id 0 for ever, as on veth
		s := x.e.shards[0]
		x.nl.Inject(frames[0])
		s.pass()
		st := state(x.e)
		if st.String() != "unavailable (no NAPI id after the first packets)" ||
			!strings.Contains(x.lg.String(), "busy polling unavailable (no NAPI id after the first packets): the shard keeps its usual loop") {
			t.Fatalf("%s; log %q", st, x.lg)
		}
		x.nl.Arrive(frames...)
		for range 5 {
			s.pass()
		}
		if x.nl.polls.Load() != 0 || s.busyOn {
			t.Fatalf("polled %d times without a NAPI id (busyOn %v)", x.nl.polls.Load(), s.busyOn)
		}
	})

	t.Run("unavailable", func(t *testing.T) {
		x := start(t, &napiLink{budget: 64, id: 9000}, []string{"no NAPI id: veth"})
		x.nl.napi.Store(9000)
		x = start(t, x.nl, []string{"no NAPI id: veth"})
		if st := state(x.e); st.String() != "unavailable (no NAPI id: veth)" ||
			!strings.Contains(x.lg.String(), "busy polling on link 0: unavailable (no NAPI id: veth) on queue 0: the usual loop there") {
			t.Fatalf("%s; log %q", st, x.lg)
		}
		x.nl.Arrive(frames...)
		for range 3 {
			x.e.shards[0].pass()
		}
		if x.nl.polls.Load() != 0 {
			t.Fatalf("polled %d times", x.nl.polls.Load())
		}
	})

	t.Run("cannot", func(t *testing.T) {
		x := start(t, nil, nil) // a plain memport link
		if st := state(x.e); st.State != "unavailable" || !strings.Contains(st.Why, "does not busy poll") {
			t.Fatalf("%+v", st)
		}
	})

	t.Run("off", func(t *testing.T) {
		qs, _ := memQueues(t, 1, 1024)
		e, err := New(Config{Queues: qs, NewPipeline: reflectPipeline})
		if err != nil {
			t.Fatal(err)
		}
		if sn := e.Snapshot()[0]; sn.BusyPoll != nil {
			t.Fatalf("busy polling off, yet %+v", sn.BusyPoll)
		}
	})
}

// TestBusyPollPassAllocs: a busy-polling pass (poll, receive what it brought, reflect,
// transmit) allocates nothing.
func TestBusyPollPassAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; run without -race (the test script does)")
	}
	nl := &napiLink{budget: 64, id: 8193}
	nl.napi.Store(8193)
	qs, ps := napiQueues(t, 1, func(_ int, ml *memport.Link) Link { nl.Link = ml; return nl })
	e, err := New(Config{Queues: qs, NewPipeline: reflectPipeline, BusyPoll: BusyPoll{On: true}, Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	s := e.shards[0]
	s.refill()
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = frameFor(i).Build()
	}
	nl.device = make([][]byte, 0, 2*len(frames))
	run := func() {
		nl.Arrive(frames...)
		s.pass()
		ps[0].Links[0].Drain(nil)
		s.pass() // reaps; polls an empty device
	}
	run()
	if a := testing.AllocsPerRun(200, run); a != 0 {
		t.Fatalf("a busy-polling pass allocates %v times", a)
	}
	// run ran once before AllocsPerRun, which runs it once more than asked.
	if c := e.ctrs[0].BusyPollRxPackets.Load(); c != 202*64 || e.ctrs[0].TxPackets.Load() != c {
		t.Fatalf("busy polls brought %d, transmitted %d; want %d each", c, e.ctrs[0].TxPackets.Load(), 202*64)
	}
	if err := s.frames.check(); err != nil {
		t.Fatal(err)
	}
}

// TestBusyPollRun runs two busy-polling shards whose packets arrive only through busy polls
// (the device's interrupts deferred, as preferred busy polling keeps them): every packet is
// reflected, every one counted as brought by a busy poll, while Snapshot reads the states
// from another goroutine (run it with -race). BusyPoll.Idle is longer than the run, so the
// shards never sleep (the fake device has no gro_flush_timeout watchdog to deliver to a
// sleeping shard), and they yield while they poll without work.
func TestBusyPollRun(t *testing.T) {
	var nls []*napiLink
	qs, ps := napiQueues(t, 2, func(i int, ml *memport.Link) Link {
		nl := &napiLink{Link: ml, budget: 32, id: uint32(8193 + i)}
		nl.napi.Store(nl.id)
		nls = append(nls, nl)
		return nl
	})
	var lg logs
	e, err := New(Config{Queues: qs, NewPipeline: reflectPipeline, Debug: true, Logf: lg.logf, BusyPoll: BusyPoll{On: true, Idle: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			for _, sn := range e.Snapshot() {
				_ = sn.BusyPoll[0].String()
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	const per = 2000
	got := [2]int{}
	want := [2][]byte{frameFor(0).Reflected().Build(), frameFor(1).Reflected().Build()}
	for sent := 0; sent < per; sent += 50 {
		for q, nl := range nls {
			f := frameFor(q).Build()
			for range 50 {
				nl.Arrive(f)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for (got[0] < sent+50 || got[1] < sent+50) && time.Now().Before(deadline) {
			for q, p := range ps {
				p.Links[0].Drain(func(d []byte) {
					if !bytes.Equal(d, want[q]) {
						t.Errorf("queue %d sent %x", q, d)
					}
					got[q]++
				})
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	// Idle: the shards poll on without sleeping, and yield about every yieldEvery.
	idleFrom := e.Snapshot()
	time.Sleep(30 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	snaps := e.Snapshot()
	for q := range snaps {
		if y := snaps[q].Yields - idleFrom[q].Yields; y < 5 || snaps[q].BusyPollCalls-idleFrom[q].BusyPollCalls < 100 {
			t.Errorf("shard %d, idle 30 ms: %d yields, %d busy polls", q, y, snaps[q].BusyPollCalls-idleFrom[q].BusyPollCalls)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for q, sn := range snaps {
		if got[q] != per || sn.RxPackets != per || sn.BusyPollRxPackets != per || sn.BusyPollCalls == 0 {
			t.Errorf("shard %d: %d reflected, rx %d, brought by %d busy polls %d; want %d", q, got[q], sn.RxPackets, sn.BusyPollCalls, sn.BusyPollRxPackets, per)
		}
		if s := sn.BusyPoll[0].String(); s != fmt.Sprintf("on (NAPI id %d)", 8193+q) {
			t.Errorf("shard %d: %s", q, s)
		}
		if sn.Sleeps != 0 || sn.Yields == 0 {
			t.Errorf("shard %d slept %d times, yielded %d times; want never, and some", q, sn.Sleeps, sn.Yields)
		}
	}
}
