package stagetest_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

var (
	a = netip.MustParseAddrPort("198.18.0.2:40000")
	b = netip.MustParseAddrPort("198.18.0.1:7")
)

// byFirstByte decides each packet by its first byte, so one frame can ask for any verdict:
// 'T' transmit on the interface in byte 1, 'D' drop ("dropped"), 'C' consume, 'H' hand to the
// shard in byte 1, 'S' to the stack; anything else stays undecided.
func byFirstByte(p *pipelines.Packet, d []byte) {
	switch d[0] {
	case 'T':
		p.Verdict, p.OutIf = pipelines.Transmit, d[1]
	case 'D':
		p.Verdict, p.Reason = pipelines.Drop, pipelines.ReasonDropped
	case 'C':
		p.Verdict = pipelines.Consume
	case 'H':
		p.Verdict, p.ToShard = pipelines.Handoff, d[1]
	case 'S':
		p.Verdict = pipelines.ToStack
	}
}

func twoIfaces() []pipelines.Interface {
	return []pipelines.Interface{stagetest.Interface, {Name: "test1", Index: 2, MAC: [6]byte{2, 0, 0, 0, 0, 3}, MTU: 1500}}
}

func TestVerdictsAndResults(t *testing.T) {
	h := stagetest.NewPipeline(t, &pipelines.Pipeline{Stages: []pipelines.Stage{pipelines.Func("first-byte", byFirstByte)}},
		pipelines.ShardInfo{Shard: 1, Shards: 3, Ifaces: twoIfaces()})
	in := []stagetest.In{
		{If: 0, Data: []byte("T\x01out on 1")},
		{If: 1, Data: []byte("D")},
		{If: 0, Data: []byte("C")},
		{If: 1, Data: []byte("H\x02to shard 2")},
		{If: 0, Data: []byte("?undecided")},
		{If: 0, Data: []byte("S no stack")},
		{If: 0, Data: []byte("T\x05no such interface")},
		{If: 0, Data: []byte("H\x01to myself")},
		{If: 0, Data: []byte("H\x09no such shard")},
	}
	sent := h.Step(in...)
	want := []pipelines.Verdict{pipelines.Transmit, pipelines.Drop, pipelines.Consume, pipelines.Handoff,
		pipelines.Drop, pipelines.Drop, pipelines.Drop, pipelines.Drop, pipelines.Drop}
	got := h.Verdicts()
	if len(got) != len(want) {
		t.Fatalf("verdicts %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("verdict %d = %v, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
	if len(sent) != 1 || sent[0].If != 1 || string(sent[0].Data) != "T\x01out on 1" || sent[0].Originated {
		t.Fatalf("sent %+v", sent)
	}
	if hd := h.Handed(); len(hd) != 1 || hd[0].Shard != 2 || hd[0].If != 1 || string(hd[0].Data) != "H\x02to shard 2" {
		t.Fatalf("handed %+v", hd)
	}
	if h.Consumed() != 1 {
		t.Fatalf("consumed %d", h.Consumed())
	}
	wantDrops := map[string]int{"dropped": 1, "no-verdict": 1, "no-stack": 1, "no-interface": 1, "handoff-full": 2}
	if dc := h.DropCounts(); len(dc) != len(wantDrops) {
		t.Fatalf("drop counts %v, want %v", dc, wantDrops)
	} else {
		for k, v := range wantDrops {
			if dc[k] != v {
				t.Fatalf("drop counts %v, want %v", dc, wantDrops)
			}
		}
	}
	if d := h.Drops(); len(d) != 6 || d[0] != pipelines.ReasonDropped || d[1] != pipelines.ReasonNoVerdict {
		t.Fatalf("drops %v", d)
	}
	for i, o := range h.Outcomes() {
		if o.Fed != i || o.Originated() || !bytes.Equal(o.Data, in[i].Data) {
			t.Fatalf("outcome %d: %+v", i, o)
		}
	}
	if h.FreeFrames() != stagetest.Frames || h.Passes() != 1 {
		t.Fatalf("%d frames free after a step, %d passes", h.FreeFrames(), h.Passes())
	}
	// The next step starts afresh.
	h.Step()
	if len(h.Outcomes())+len(h.Sent())+len(h.Drops())+len(h.Handed())+h.Consumed() != 0 {
		t.Fatal("results of the previous step survive an empty one")
	}
}

// TestHandoffBetweenHarnesses: a handed packet steps into the other shard's harness as is.
func TestHandoffBetweenHarnesses(t *testing.T) {
	info := pipelines.ShardInfo{Shards: 2, Ifaces: twoIfaces()}
	h0 := stagetest.NewPipeline(t, &pipelines.Pipeline{Stages: []pipelines.Stage{pipelines.Func("hand", func(p *pipelines.Packet, _ []byte) {
		p.Verdict, p.ToShard = pipelines.Handoff, 1
	})}}, info)
	var gotIf uint8
	info.Shard = 1
	h1 := stagetest.NewPipeline(t, &pipelines.Pipeline{Stages: []pipelines.Stage{pipelines.Func("take", func(p *pipelines.Packet, _ []byte) {
		gotIf, p.Verdict = p.InIf, pipelines.Consume
	})}}, info)
	h0.Step(stagetest.In{If: 1, Data: []byte("x")})
	h1.Step(h0.Handed()[0].In)
	if h1.Consumed() != 1 || gotIf != 1 {
		t.Fatalf("shard 1 consumed %d, arrived on %d", h1.Consumed(), gotIf)
	}
}

// localStack stands for the stack: it answers what reaches it by transmitting it.
type localStack struct{ seen int }

func (s *localStack) Name() string { return "local" }
func (s *localStack) Process(b *pipelines.Batch) {
	for i := range b.Pkts {
		if b.Pkts[i].Verdict == pipelines.Continue {
			s.seen++
			b.Transmit(i, 0)
		}
	}
}

func TestToStackReachesLocal(t *testing.T) {
	l := &localStack{}
	h := stagetest.NewPipeline(t, &pipelines.Pipeline{Stages: []pipelines.Stage{pipelines.Func("first-byte", byFirstByte)}, Local: l}, pipelines.ShardInfo{})
	if out := h.Feed([]byte("S"), []byte("D")); len(out) != 1 || l.seen != 1 {
		t.Fatalf("sent %d, the local stage saw %d", len(out), l.seen)
	}
}

// clockStage records the batch's clock and shard and calls Wake from Start.
type clockStage struct {
	now   []int64
	shard int
}

func (c *clockStage) Name() string { return "clock" }
func (c *clockStage) Start(info pipelines.ShardInfo) {
	info.Wake()
	info.Wake()
}
func (c *clockStage) Process(b *pipelines.Batch) {
	c.now = append(c.now, b.NowNanos)
	c.shard = b.Shard
	for i := range b.Pkts {
		b.Drop(i, pipelines.ReasonDropped)
	}
}

func TestClock(t *testing.T) {
	c := &clockStage{}
	h := stagetest.NewPipeline(t, &pipelines.Pipeline{Stages: []pipelines.Stage{c}}, pipelines.ShardInfo{Shard: 2, Shards: 4})
	if h.Now() != 1 {
		t.Fatalf("the clock starts at %d, want 1", h.Now())
	}
	h.Step()
	h.Advance(time.Second)
	h.Step()
	h.SetNow(42)
	h.Pass()
	if len(c.now) != 3 || c.now[0] != 1 || c.now[1] != 1+int64(time.Second) || c.now[2] != 42 {
		t.Fatalf("the stage saw the clock at %v", c.now)
	}
	if c.shard != 2 || h.Wakes() != 2 || h.Info().Shard != 2 || h.Info().Shards != 4 {
		t.Fatalf("shard %d, wakes %d, info %+v", c.shard, h.Wakes(), h.Info())
	}
	if h.AdvanceToDeadline() || h.Now() != 42 {
		t.Fatal("AdvanceToDeadline moved without a deadline")
	}
}

func TestOriginatedAndDeadline(t *testing.T) {
	tk := &ticker{period: int64(time.Millisecond)}
	h := stagetest.New(t, pipelines.Func("reflect", func(p *pipelines.Packet, _ []byte) { p.Verdict, p.OutIf = pipelines.Transmit, p.InIf }), tk)
	h.Step()
	if h.NextDeadline() != 1+int64(time.Millisecond) {
		t.Fatalf("deadline %d", h.NextDeadline())
	}
	h.Advance(3 * time.Millisecond) // three periods pass: three frames at once, after the fed one
	out := h.Feed([]byte("fed"))
	if len(out) != 4 || out[0].Originated || !out[1].Originated || !out[3].Originated {
		t.Fatalf("sent %+v", out)
	}
	if o := h.Originated(); len(o) != 3 || o[0].Fed != -1 || len(o[0].Data) != 60 {
		t.Fatalf("originated %+v", o)
	}
	if !h.AdvanceToDeadline() || h.Now() != 1+4*int64(time.Millisecond) || len(h.Originated()) != 1 {
		t.Fatalf("now %d, originated %d", h.Now(), len(h.Originated()))
	}
}

// TestPassAllocs: Pass leaves the verdicts and frames in the batch until the next pass, and does
// not allocate.
func TestPassAllocs(t *testing.T) {
	h := stagetest.New(t, pipelines.Func("first-byte", byFirstByte))
	in := []stagetest.In{{Data: []byte("T\x00")}, {Data: []byte("D")}}
	bt := h.Pass(in...)
	if bt.Len() != 2 || bt.Pkts[0].Verdict != pipelines.Transmit || bt.Pkts[1].Reason != pipelines.ReasonDropped ||
		string(bt.Data(0)) != "T\x00" || h.FreeFrames() != stagetest.Frames-2 {
		t.Fatalf("batch %+v, %d frames free", bt.Pkts, h.FreeFrames())
	}
	h.Step()
	if h.FreeFrames() != stagetest.Frames {
		t.Fatalf("%d frames free after the next step", h.FreeFrames())
	}
	if raceEnabled {
		t.Skip("testing.AllocsPerRun counts the race detector's own allocations")
	}
	if n := testing.AllocsPerRun(100, func() { h.Pass(in...) }); n != 0 {
		t.Fatalf("Pass allocates %v times", n)
	}
}

func TestUDPFrame(t *testing.T) {
	f := stagetest.UDPFrame(a, b, []byte("hello"))
	e, _ := header.ParseEthernet(f)
	ip, why := header.ParseIPv4(e.Payload())
	if why != header.IPv4OK || e.Type() != header.EtherTypeIPv4 || e.Dst() != stagetest.Interface.MAC || e.Src() != stagetest.PeerMAC {
		t.Fatalf("frame %x: %v", f, why)
	}
	u, ok := header.ParseUDP(ip.Payload())
	if !ok || !u.ChecksumValid(a.Addr(), b.Addr()) || u.SrcPort() != a.Port() || u.DstPort() != b.Port() || string(u.Payload()) != "hello" ||
		ip.Src() != a.Addr() || ip.Dst() != b.Addr() {
		t.Fatalf("datagram %x", []byte(u))
	}
}

// TestFailures: a misused harness fails the test; without a test it panics.
func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(h *stagetest.Harness)
	}{
		{"unknown interface", func(h *stagetest.Harness) { h.Step(stagetest.In{If: 3, Data: []byte("T")}) }},
		{"frame too big", func(h *stagetest.Harness) { h.Feed(make([]byte, stagetest.FrameSize)) }},
		{"too many frames", func(h *stagetest.Harness) { h.Feed(make([][]byte, stagetest.BatchSize+1)...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := stagetest.New(nil, pipelines.Func("first-byte", byFirstByte))
			defer func() {
				if r := recover(); r == nil || !strings.HasPrefix(r.(string), "stagetest: ") {
					t.Fatalf("recovered %v, want a stagetest panic", r)
				}
			}()
			tc.f(h)
		})
	}
}
