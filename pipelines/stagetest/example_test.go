package stagetest_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// reasonBlocked counts the datagrams blockPort drops; shards show it by name.
var reasonBlocked = pipelines.RegisterReason("blocked-port")

// blockPort is a small stage: UDP datagrams to port are dropped, every other IPv4 packet is
// sent back out of the interface it came in on, and the rest is left to the next stage.
func blockPort(port uint16) pipelines.Stage {
	return pipelines.Func("block-port", func(p *pipelines.Packet, d []byte) {
		ip, ok := header.IPv4InFrame(d)
		if !ok {
			return // not IPv4: undecided
		}
		if _, dst, ok := ip.Ports(); ok && ip.Protocol() == header.ProtoUDP && dst == port {
			p.Verdict, p.Reason = pipelines.Drop, reasonBlocked
			return
		}
		p.Verdict, p.OutIf = pipelines.Transmit, p.InIf
	})
}

// A stage tested end to end: three frames in, one verdict each, drops counted by name.
func Example() {
	h := stagetest.New(nil, blockPort(53)) // in a test: stagetest.New(t, ...)

	src := netip.MustParseAddrPort("198.18.0.2:40000")
	dns := stagetest.UDPFrame(src, netip.MustParseAddrPort("198.18.0.1:53"), []byte("query"))
	ntp := stagetest.UDPFrame(src, netip.MustParseAddrPort("198.18.0.1:123"), []byte("time"))
	arp := make([]byte, 42) // not IPv4: no stage decides, so the pipeline drops it
	arp[12], arp[13] = 0x08, 0x06

	h.Advance(time.Second) // the clock the stages see in Batch.NowNanos
	sent := h.Step(stagetest.In{Data: dns}, stagetest.In{Data: ntp}, stagetest.In{Data: arp})

	for _, o := range h.Outcomes() {
		fmt.Println(o.Fed, o.Verdict, o.Reason)
	}
	fmt.Println("sent:", len(sent), "on interface", sent[0].If)
	fmt.Println("drops:", h.DropCounts())
	fmt.Println("clock:", h.Now())
	// Output:
	// 0 drop blocked-port
	// 1 transmit none
	// 2 drop no-verdict
	// sent: 1 on interface 0
	// drops: map[blocked-port:1 no-verdict:1]
	// clock: 1000000001
}

// ticker originates one frame every period: a stage with a timer, as the stack's
// retransmissions are.
type ticker struct {
	period int64
	next   int64
}

func (t *ticker) Name() string             { return "ticker" }
func (t *ticker) Process(*pipelines.Batch) {}
func (t *ticker) NextDeadline() int64      { return t.next }

func (t *ticker) Originate(b *pipelines.Batch) {
	if t.next == 0 {
		t.next = b.NowNanos + t.period
	}
	for b.NowNanos >= t.next {
		if _, d, ok := b.Alloc(60, pipelines.Transmit); ok {
			clear(d)
		}
		t.next += t.period
	}
}

// A stage with a timer: AdvanceToDeadline moves the fake clock to the pipeline's next deadline
// and runs the pass a shard woken by it would run.
func ExampleHarness_AdvanceToDeadline() {
	h := stagetest.New(nil, &ticker{period: int64(10 * time.Millisecond)})
	h.Step() // the first pass arms the timer
	fmt.Println("deadline:", h.NextDeadline())
	for range 2 {
		h.AdvanceToDeadline()
		fmt.Println("now", h.Now(), "originated", len(h.Originated()), "sent", len(h.Sent()))
	}
	// Output:
	// deadline: 10000001
	// now 10000001 originated 1 sent 1
	// now 20000001 originated 1 sent 1
}
