package pipelines_test

import (
	"fmt"
	"net/netip"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// tooBig is the drop reason of sizeLimit; a shard's counters show it by name.
var tooBig = pipelines.RegisterReason("too-big")

// sizeLimit is a Stage written as a whole-batch loop: it drops the packets no earlier stage
// decided that are longer than max, and adds up the bytes of the others once per batch (a
// shard runs one batch at a time, so no lock or atomic is needed here).
type sizeLimit struct {
	max    uint32
	passed uint64
}

func (s *sizeLimit) Name() string { return "size-limit" }

func (s *sizeLimit) Process(b *pipelines.Batch) {
	var bytes uint64
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != pipelines.Continue {
			continue // decided already
		}
		if p.Len > s.max {
			b.Drop(i, tooBig)
			continue
		}
		bytes += uint64(p.Len) // left undecided: the next stage decides
	}
	s.passed += bytes
}

// A Stage as a whole-batch loop, followed by a one-line stage that sends what is left back out
// of the interface it came in on; the harness runs them as a shard would, without root.
func ExampleStage() {
	limit := &sizeLimit{max: 100}
	back := pipelines.Func("back", func(p *pipelines.Packet, _ []byte) {
		p.Verdict, p.OutIf = pipelines.Transmit, p.InIf
	})
	h := stagetest.New(nil, limit, back) // in a test: stagetest.New(t, ...)

	src, dst := netip.MustParseAddrPort("198.18.0.2:40000"), netip.MustParseAddrPort("198.18.0.1:9999")
	small := stagetest.UDPFrame(src, dst, make([]byte, 18))  // 60 bytes
	large := stagetest.UDPFrame(src, dst, make([]byte, 100)) // 142 bytes
	sent := h.Feed(small, large, small)

	for _, o := range h.Outcomes() {
		fmt.Println(o.Fed, len(o.Data), o.Verdict, o.Reason)
	}
	fmt.Println("sent:", len(sent), "passed bytes:", limit.passed)
	fmt.Println("drops:", h.DropCounts())
	// Output:
	// 0 60 transmit none
	// 1 142 drop too-big
	// 2 60 transmit none
	// sent: 2 passed bytes: 120
	// drops: map[too-big:1]
}

// ttlExceeded is the drop reason of the hop stage below.
var ttlExceeded = pipelines.RegisterReason("ttl-exceeded")

// Func turns a function of one packet into a Stage: it is called for each packet still
// undecided, with the packet's handle and its bytes (in place: no copy). This one does what a
// router does to the IPv4 header: packets whose TTL would reach 0 are dropped with a reason of
// their own, the others go out with the TTL one lower and the header checksum updated.
func ExampleFunc() {
	hop := pipelines.Func("hop", func(p *pipelines.Packet, frame []byte) {
		ip, ok := header.IPv4InFrame(frame)
		if !ok {
			p.Verdict, p.Reason = pipelines.Drop, pipelines.ReasonMalformed
			return
		}
		if ip.TTL() <= 1 {
			p.Verdict, p.Reason = pipelines.Drop, ttlExceeded
			return
		}
		old := uint16(ip.TTL())<<8 | uint16(ip.Protocol()) // the 16-bit word that holds the TTL
		ip.SetTTL(ip.TTL() - 1)
		ip.SetChecksum(header.UpdateChecksum16(ip.Checksum(), old, old-0x100))
		p.Verdict, p.OutIf = pipelines.Transmit, p.InIf
	})
	h := stagetest.New(nil, hop)

	fresh := stagetest.UDPFrame(netip.MustParseAddrPort("198.18.0.2:40000"), netip.MustParseAddrPort("198.18.0.1:53"), []byte("query"))
	dying := append([]byte(nil), fresh...)
	ip, _ := header.IPv4InFrame(dying)
	ip.SetTTL(1)
	ip.FixChecksum()
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06

	sent := h.Feed(fresh, dying, arp)
	for _, o := range h.Outcomes() {
		fmt.Println(o.Fed, o.Verdict, o.Reason)
	}
	out, _ := header.IPv4InFrame(sent[0].Data)
	fmt.Println("ttl:", out.TTL(), "checksum valid:", out.Checksum() == out.ComputeChecksum())
	fmt.Println("drops:", h.DropCounts())
	// Output:
	// 0 transmit none
	// 1 drop ttl-exceeded
	// 2 drop malformed
	// ttl: 63 checksum valid: true
	// drops: map[malformed:1 ttl-exceeded:1]
}
