package echo_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack"
	"github.com/netchan/netchan/stack/header"
)

var (
	guardUs   = netip.MustParseAddr("198.18.0.1")
	guardPeer = netip.MustParseAddr("198.18.0.2")
	sourceA   = netip.MustParseAddr("198.18.7.1")
	sourceB   = netip.MustParseAddr("198.18.7.2")
	sourceC   = netip.MustParseAddr("198.18.7.3")
)

// request is a UDP echo request (to our port 7) from addr:port.
func request(addr netip.Addr, port uint16) []byte {
	return stagetest.UDPFrame(netip.AddrPortFrom(addr, port), netip.AddrPortFrom(guardUs, echo.EchoPort), []byte("ping"))
}

// consume is the stage after the guard in the guard-only tests: whatever the guard lets
// through is consumed, so a pass's outcomes are Consume (passed) or Drop (the guard's).
func consume() pipelines.Stage {
	return pipelines.Func("sink", func(p *pipelines.Packet, _ []byte) { p.Verdict = pipelines.Consume })
}

// offer steps n copies of frame through h and returns how many the guard passed, failing
// the test on a drop for any reason but echo-rate-limit.
func offer(t *testing.T, h *stagetest.Harness, frame []byte, n int) (passed int) {
	t.Helper()
	in := make([]stagetest.In, n)
	for i := range in {
		in[i] = stagetest.In{Data: frame}
	}
	h.Step(in...)
	for _, o := range h.Outcomes() {
		switch {
		case o.Verdict == pipelines.Consume:
			passed++
		case o.Verdict != pipelines.Drop || o.Reason != echo.ReasonRateLimit:
			t.Fatalf("outcome %v %v", o.Verdict, o.Reason)
		}
	}
	return passed
}

// TestGuardLoopPorts: a UDP echo request from each of LoopPorts is dropped as
// echo-loop-port and counted by the guard's stage; the same ports to other destination
// ports, a client's port to 7, TCP to 7 from port 19 and a later fragment are left alone.
func TestGuardLoopPorts(t *testing.T) {
	h := stagetest.New(t, echo.NewGuard(echo.GuardConfig{Seed: 1}), consume())
	var in []stagetest.In
	for _, p := range echo.LoopPorts {
		in = append(in, stagetest.In{Data: request(guardPeer, p)})
	}
	h.Step(in...)
	if got := h.DropCounts(); len(got) != 1 || got["echo-loop-port"] != len(echo.LoopPorts) {
		t.Fatalf("drops %v, want echo-loop-port %d (ports %v)", got, len(echo.LoopPorts), echo.LoopPorts)
	}
	for _, want := range []uint16{0, 7, 9, 13, 17, 19, 37} {
		found := false
		for _, p := range echo.LoopPorts {
			found = found || p == want
		}
		if !found {
			t.Errorf("LoopPorts %v lacks %d", echo.LoopPorts, want)
		}
	}
	st := h.Pipeline().Snapshot()
	if st[0].Name != "udp-echo-guard" || st[0].Drops["echo-loop-port"] != uint64(len(echo.LoopPorts)) {
		t.Errorf("stage counters %+v", st[0])
	}

	tcp := request(guardPeer, 19)
	tcp[header.EthernetLen+9] = header.ProtoTCP // only the protocol matters to the guard
	first := request(guardPeer, 19)
	ip := header.IPv4(first[header.EthernetLen:])
	ip.SetFragment(false, true, 0) // a first fragment carries the ports: checked
	ip.FixChecksum()
	later := request(guardPeer, 40000)
	ip = header.IPv4(later[header.EthernetLen:])
	ip.SetFragment(false, false, 8) // a later fragment whose payload happens to read as port 19 → 7
	binary.BigEndian.PutUint16(ip.Payload()[0:2], 19)
	ip.FixChecksum()
	ok := []stagetest.In{
		{Data: request(guardPeer, 40000)},
		{Data: request(guardPeer, 1024)},
		{Data: stagetest.UDPFrame(netip.AddrPortFrom(guardPeer, 19), netip.AddrPortFrom(guardUs, 9), nil)},
		{Data: stagetest.UDPFrame(netip.AddrPortFrom(guardPeer, 7), netip.AddrPortFrom(guardUs, 5000), nil)},
		{Data: tcp},
		{Data: later},
		{Data: first},
	}
	h.Step(ok...)
	for i, o := range h.Outcomes() {
		want := pipelines.Consume
		if i == len(ok)-1 {
			want = pipelines.Drop
		}
		if o.Verdict != want || o.Verdict == pipelines.Drop && o.Reason != echo.ReasonLoopPort {
			t.Errorf("frame %d: %v %v, want %v", i, o.Verdict, o.Reason, want)
		}
	}
}

// TestAppGuard runs Echo.App's own pipeline (the guard, then the stack) on one shard with
// Serve answering: a request from a client port is echoed, requests from every loop port
// are dropped as echo-loop-port and none is answered.
func TestAppGuard(t *testing.T) {
	e, err := echo.NewEcho(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{netip.PrefixFrom(guardUs, 24)}}},
		StaticARP: []stack.StaticNeighbor{{IP: guardPeer, MAC: stagetest.PeerMAC}}})
	if err != nil {
		t.Fatal(err)
	}
	h := stagetest.NewPipeline(t, e.App().NewPipeline(0), pipelines.ShardInfo{})
	if st := h.Pipeline().Snapshot(); st[0].Name != "udp-echo-guard" {
		t.Fatalf("App's first stage is %q, want udp-echo-guard", st[0].Name)
	}
	// Listening takes a pass of the shard to install each socket: the test's goroutine runs
	// passes, as a shard would, until Start returns.
	ctx, cancel := context.WithCancel(context.Background())
	var served <-chan error
	started := make(chan error, 1)
	go func() {
		var err error
		served, err = e.Start(ctx)
		started <- err
	}()
wait:
	for {
		select {
		case err := <-started:
			if err != nil {
				t.Fatal(err)
			}
			break wait
		case <-time.After(time.Millisecond):
			h.Step()
		}
	}
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	var in []stagetest.In
	for _, p := range echo.LoopPorts {
		in = append(in, stagetest.In{Data: request(guardPeer, p)})
	}
	in = append(in, stagetest.In{Data: request(guardPeer, 40000)})
	var answers [][]byte
	for _, o := range h.Step(in...) {
		answers = append(answers, o.Data)
	}
	if got := h.DropCounts(); len(got) != 1 || got["echo-loop-port"] != len(echo.LoopPorts) {
		t.Fatalf("drops %v, want echo-loop-port %d", got, len(echo.LoopPorts))
	}
	// Serve answers on its goroutine; the stack sends the answer on a later pass, or on the
	// same one when Serve writes before the pass drains the send queues.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		h.Advance(time.Millisecond)
		for _, o := range h.Step() {
			answers = append(answers, o.Data)
		}
		if len(answers) > 0 {
			time.Sleep(20 * time.Millisecond) // a wrong answer to a loop port would come now
			h.Advance(time.Millisecond)
			for _, o := range h.Step() {
				answers = append(answers, o.Data)
			}
			break
		}
	}
	if len(answers) != 1 {
		t.Fatalf("%d frames sent, want the one answer to port 40000", len(answers))
	}
	ip, ok := header.IPv4InFrame(answers[0])
	sport, dport, _ := ip.Ports()
	if !ok || ip.Protocol() != header.ProtoUDP || ip.Dst() != guardPeer || sport != echo.EchoPort || dport != 40000 ||
		!bytes.Equal(ip.Payload()[header.UDPLen:ip.TotalLength()-ip.IHL()], []byte("ping")) {
		t.Fatalf("answer %x", answers[0])
	}
}

// TestGuardRateLimit drives the token bucket with the harness's clock. Source A offers 10
// datagrams every millisecond for a second (10× its rate of 1000/s): exactly its burst
// (100) plus the rate × the 999 ms between its first and last pass (999) get through. B
// offers one a millisecond, its rate, in the same passes and loses none. After 50 quiet
// milliseconds A has 50 again; and at a step that is no whole number of datagrams (333 µs,
// a third of one), the fractions carry: 3000 passes of 3 give 100 + ⌊1000 × 0.999 s⌋.
func TestGuardRateLimit(t *testing.T) {
	h := stagetest.New(t, echo.NewGuard(echo.GuardConfig{Rate: 1000, Burst: 100, Seed: 1}), consume())
	fa, fb := request(sourceA, 40000), request(sourceB, 40001)
	passedA, passedB := 0, 0
	for ms := 0; ms < 1000; ms++ {
		in := []stagetest.In{{Data: fb}}
		for k := 0; k < 10; k++ {
			in = append(in, stagetest.In{Data: fa})
		}
		h.Step(in...)
		for i, o := range h.Outcomes() {
			switch {
			case o.Verdict == pipelines.Consume && i == 0:
				passedB++
			case o.Verdict == pipelines.Consume:
				passedA++
			case o.Verdict != pipelines.Drop || o.Reason != echo.ReasonRateLimit || i == 0:
				t.Fatalf("ms %d frame %d: %v %v", ms, i, o.Verdict, o.Reason)
			}
		}
		h.Advance(time.Millisecond)
	}
	if passedA != 100+999 || passedB != 1000 {
		t.Fatalf("in a second A (10000 offered) passed %d, want 1099 (burst 100 + 1000/s × 0.999 s); B (1000 offered) passed %d, want 1000", passedA, passedB)
	}
	h.Advance(49 * time.Millisecond) // 50 ms after A's last pass
	if n := offer(t, h, fa, 60); n != 50 {
		t.Fatalf("after 50 quiet ms A passed %d of 60, want 50", n)
	}

	h = stagetest.New(t, echo.NewGuard(echo.GuardConfig{Rate: 1000, Burst: 100, Seed: 1}), consume())
	total := 0
	for k := 0; k < 3000; k++ {
		total += offer(t, h, fa, 3)
		h.Advance(333 * time.Microsecond)
	}
	if want := 100 + 1000*2999*333/1_000_000; total != want { // 2999 steps of 333 µs: 998.667 ms
		t.Fatalf("3000 passes of 3, 333 µs apart: %d passed, want %d", total, want)
	}
}

// TestGuardDefaults: the zero GuardConfig (what Echo.App uses unless told) limits a source
// to DefaultUDPBurst + DefaultUDPRate × time, and NoRateLimit lets a flood through while
// still dropping the loop ports.
func TestGuardDefaults(t *testing.T) {
	h := stagetest.New(t, echo.NewGuard(echo.GuardConfig{}), consume())
	fa := request(sourceA, 40000)
	total := 0
	for ms := 0; ms < 2000; ms++ { // 64 a millisecond: 64000/s
		total += offer(t, h, fa, stagetest.BatchSize)
		h.Advance(time.Millisecond)
	}
	if want := echo.DefaultUDPBurst + echo.DefaultUDPRate*1999/1000; total != want || want != 2999 {
		t.Fatalf("defaults: %d of %d passed in 1.999 s, want %d", total, 2000*stagetest.BatchSize, want)
	}

	h = stagetest.New(t, echo.NewGuard(echo.GuardConfig{Rate: echo.NoRateLimit}), consume())
	total = 0
	for ms := 0; ms < 100; ms++ {
		total += offer(t, h, fa, stagetest.BatchSize)
		h.Advance(time.Millisecond)
	}
	h.Step(stagetest.In{Data: request(sourceA, 19)})
	if total != 100*stagetest.BatchSize || h.DropCounts()["echo-loop-port"] != 1 {
		t.Fatalf("NoRateLimit: %d of %d passed; loop port drops %v", total, 100*stagetest.BatchSize, h.DropCounts())
	}
}

// TestGuardCollisions: with a one-slot table every address meets every other in one
// bucket, which shows the policy. A owns the slot and empties it; B, finding the slot
// neither its own nor full, shares A's bucket and gets nothing. A and B flooding by turns
// for a second get the rate between them (1000), not twice it: they cannot reset each
// other's bucket. Once the bucket has been full (100 ms quiet: Burst/Rate), C takes the
// slot over with a fresh burst of 100, and A, its former owner, now shares C's bucket.
func TestGuardCollisions(t *testing.T) {
	h := stagetest.New(t, echo.NewGuard(echo.GuardConfig{Rate: 1000, Burst: 100, Slots: 1, Seed: 1}), consume())
	fa, fb, fc := request(sourceA, 40000), request(sourceB, 40000), request(sourceC, 40000)
	if n := offer(t, h, fa, 50) + offer(t, h, fa, 50); n != 100 {
		t.Fatalf("A's burst: %d of 100", n)
	}
	if n := offer(t, h, fb, 10); n != 0 {
		t.Fatalf("B, sharing A's empty bucket: %d of 10 passed, want 0", n)
	}
	total := 0
	for ms := 1; ms <= 1000; ms++ {
		h.Advance(time.Millisecond)
		f := fa
		if ms%2 == 0 {
			f = fb
		}
		total += offer(t, h, f, 10)
	}
	if total != 1000 {
		t.Fatalf("A and B by turns for a second: %d passed, want 1000 (one bucket's rate)", total)
	}
	h.Advance(100 * time.Millisecond)
	if n := offer(t, h, fc, 60) + offer(t, h, fc, 60) + offer(t, h, fc, 30); n != 100 {
		t.Fatalf("C taking over the refilled slot: %d of 150 passed, want its burst, 100", n)
	}
	if n := offer(t, h, fa, 10); n != 0 {
		t.Fatalf("A after C took the slot: %d of 10 passed, want 0", n)
	}
}

// TestGuardSources: with the default table many sources each get their own bucket: 200
// sources, each offering twice its burst at once, each get exactly the burst.
func TestGuardSources(t *testing.T) {
	h := stagetest.New(t, echo.NewGuard(echo.GuardConfig{Rate: 1000, Burst: 10, Seed: 7}), consume())
	for k := 0; k < 200; k++ {
		src := netip.AddrFrom4([4]byte{198, 18, byte(10 + k/250), byte(1 + k%250)})
		if n := offer(t, h, request(src, 40000), 20); n != 10 {
			t.Fatalf("source %d (%v): %d of 20 passed, want 10", k, src, n)
		}
	}
}

// TestGuardClockBack: a clock that goes back refills nothing.
func TestGuardClockBack(t *testing.T) {
	h := stagetest.New(t, echo.NewGuard(echo.GuardConfig{Rate: 1000, Burst: 10, Seed: 1}), consume())
	fa := request(sourceA, 40000)
	h.SetNow(int64(time.Second))
	if n := offer(t, h, fa, 20); n != 10 {
		t.Fatalf("%d of 20", n)
	}
	h.SetNow(int64(500 * time.Millisecond))
	if n := offer(t, h, fa, 20); n != 0 {
		t.Fatalf("after the clock went back: %d passed, want 0", n)
	}
	h.SetNow(int64(time.Second + 5*time.Millisecond))
	if n := offer(t, h, fa, 20); n != 5 {
		t.Fatalf("5 ms after the last refill: %d passed, want 5", n)
	}
}

// TestGuardAllocs: a pass through the guard (loop ports, a flood over its rate, sources
// within it, other traffic) allocates nothing.
func TestGuardAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("testing.AllocsPerRun counts the race detector's own allocations")
	}
	g := echo.NewGuard(echo.GuardConfig{Rate: 1000, Burst: 100})
	h := stagetest.New(t, g, consume())
	var in []stagetest.In
	for k := 0; k < stagetest.BatchSize; k++ {
		var f []byte
		switch k % 4 {
		case 0:
			f = request(guardPeer, 19)
		case 1:
			f = request(sourceA, 40000)
		case 2:
			f = request(netip.AddrFrom4([4]byte{198, 18, 9, byte(k)}), 40000)
		default:
			f = stagetest.UDPFrame(netip.AddrPortFrom(guardPeer, 5000), netip.AddrPortFrom(guardUs, 53), nil)
		}
		in = append(in, stagetest.In{Data: f})
	}
	pass := func() {
		h.Advance(100 * time.Microsecond)
		h.Pass(in...)
	}
	if a := testing.AllocsPerRun(1000, pass); a != 0 {
		t.Errorf("%v allocations per pass", a)
	}
	h.Step(in...)
	if d := h.DropCounts(); d["echo-loop-port"] != 16 || d["echo-rate-limit"] == 0 {
		t.Errorf("the pass did not exercise both drops: %v", d)
	}
}

// TestGuardConfigResolved: zero fields take the defaults, a negative rate turns the limit
// off, and the bounds apply.
func TestGuardConfigResolved(t *testing.T) {
	for _, c := range []struct{ in, want echo.GuardConfig }{
		{echo.GuardConfig{}, echo.GuardConfig{Rate: echo.DefaultUDPRate, Burst: echo.DefaultUDPBurst, Slots: echo.DefaultGuardSlots}},
		{echo.GuardConfig{Rate: -5, Burst: -1, Slots: 1000, Seed: 3}, echo.GuardConfig{Rate: echo.NoRateLimit, Burst: echo.DefaultUDPBurst, Slots: 1024, Seed: 3}},
		{echo.GuardConfig{Rate: 2e9, Burst: 1 << 30, Slots: 1 << 30}, echo.GuardConfig{Rate: 1e9, Burst: 1 << 20, Slots: 1 << 20}},
		{echo.GuardConfig{Rate: 1, Burst: 1, Slots: 1}, echo.GuardConfig{Rate: 1, Burst: 1, Slots: 1}},
	} {
		if got := c.in.Resolved(); got != c.want {
			t.Errorf("%+v resolved to %+v, want %+v", c.in, got, c.want)
		}
	}
}

// BenchmarkGuard measures Process on a batch of 64 packets: TCP passing by, UDP echo
// requests within their sources' limits, and a flood over its limit.
func BenchmarkGuard(b *testing.B) {
	for _, bc := range []struct {
		name  string
		frame func(k int) []byte
	}{
		{"tcp", func(int) []byte {
			f := request(guardPeer, 40000)
			f[header.EthernetLen+9] = header.ProtoTCP
			return f
		}},
		{"udp-echo-64-sources", func(k int) []byte { return request(netip.AddrFrom4([4]byte{198, 18, 9, byte(k * 4)}), 40000) }},
		{"udp-echo-flood", func(int) []byte { return request(sourceA, 40000) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const frameSize = 2048
			mem := make([]byte, 64*frameSize)
			batch := pipelines.NewBatch(mem, frameSize, 64)
			for k := 0; k < 64; k++ {
				n := copy(mem[k*frameSize:], bc.frame(k))
				batch.Pkts = append(batch.Pkts, pipelines.Packet{Addr: uint64(k * frameSize), Len: uint32(n)})
			}
			g := echo.NewGuard(echo.GuardConfig{})
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch.NowNanos = int64(i) * 1000 // 64 packets a µs: a flood far over its rate
				for k := range batch.Pkts {
					batch.Pkts[k].Verdict = pipelines.Continue
				}
				g.Process(batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/pkt")
		})
	}
}
