package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

var testVIP = netip.MustParseAddr("198.18.0.100")

// testBackends returns n backends be-0.. with MACs 02:00:00:00:01:i.
func testBackends(n int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{Name: fmt.Sprintf("be-%d", i), MAC: header.MAC{0x02, 0, 0, 0, 0x01, byte(i)}}
	}
	return bs
}

func newTestLB(t *testing.T, n int, opts Options) *LB {
	t.Helper()
	lb, err := NewLB(testVIP, testBackends(n), opts)
	if err != nil {
		t.Fatal(err)
	}
	return lb
}

// flow is a client's UDP flow to the VIP.
type flow struct {
	src   netip.AddrPort
	dport uint16
}

// makeFlows returns n distinct flows from 500 clients in 198.18.1.0/24 and 198.18.2.0/24, from
// source ports base, base+1, ...
func makeFlows(n int, base uint16) []flow {
	fs := make([]flow, n)
	for i := range fs {
		ip := netip.AddrFrom4([4]byte{198, 18, byte(1 + i%500/250), byte(1 + i%250)})
		fs[i] = flow{src: netip.AddrPortFrom(ip, base+uint16(i/500)), dport: 80}
	}
	return fs
}

func (f flow) frame(payload string) []byte {
	return stagetest.UDPFrame(f.src, netip.AddrPortFrom(testVIP, f.dport), []byte(payload))
}

// hash is the flow's table hash, as the stage computes it.
func (f flow) hash(lb *LB) uint64 {
	return lb.FlowHash(header.ProtoUDP, f.src.Addr().As4(), testVIP.As4(), f.src.Port(), f.dport)
}

// feed sends one packet of every flow through the harness, 64 a pass, and returns the backend
// each went to. Every packet must be transmitted on interface 0 from the interface's MAC to a
// backend's MAC, with the rest of the frame unchanged.
func feed(t *testing.T, h *stagetest.Harness, backends []Backend, flows []flow) []string {
	t.Helper()
	byMAC := map[header.MAC]string{}
	for _, b := range backends {
		byMAC[b.MAC] = b.Name
	}
	got := make([]string, 0, len(flows))
	for start := 0; start < len(flows); start += stagetest.BatchSize {
		var in []stagetest.In
		for _, f := range flows[start:min(start+stagetest.BatchSize, len(flows))] {
			in = append(in, stagetest.In{Data: f.frame("hello")})
		}
		h.Step(in...)
		outs := h.Outcomes()
		if len(outs) != len(in) {
			t.Fatalf("%d packets in, %d outcomes", len(in), len(outs))
		}
		for i, o := range outs {
			if o.Verdict != pipelines.Transmit || o.If != 0 {
				t.Fatalf("flow %v: verdict %v reason %v if %d; want transmit on 0", flows[start+i].src, o.Verdict, o.Reason, o.If)
			}
			eth := header.Ethernet(o.Data)
			name, ok := byMAC[eth.Dst()]
			if !ok {
				t.Fatalf("flow %v: sent to %v, not a backend's MAC", flows[start+i].src, eth.Dst())
			}
			if eth.Src() != stagetest.Interface.MAC || !bytes.Equal(o.Data[12:], in[i].Data[12:]) {
				t.Fatalf("flow %v: frame changed beyond the Ethernet addresses", flows[start+i].src)
			}
			got = append(got, name)
		}
	}
	return got
}

// TestStageFollowsTable: every new flow goes to the backend the Maglev table names for its
// 5-tuple hash, and the spread over N backends is near 1/N each.
func TestStageFollowsTable(t *testing.T) {
	const n, nflows = 5, 20000
	lb := newTestLB(t, n, Options{})
	h := stagetest.New(t, lb.NewStage())
	flows := makeFlows(nflows, 10000)
	got := feed(t, h, lb.Backends(), flows)
	tb := lb.Table()
	count := map[string]int{}
	for i, f := range flows {
		if want := tb.Backends()[tb.Lookup(f.hash(lb))]; got[i] != want {
			t.Fatalf("flow %v went to %s; the table names %s", f.src, got[i], want)
		}
		count[got[i]]++
	}
	for name, c := range count {
		if frac := float64(c) / nflows; frac < 0.18 || frac > 0.22 {
			t.Errorf("%s got %.3f of the flows; want 0.2±0.02", name, frac)
		}
	}
	t.Logf("spread of %d flows over %d backends: %v", nflows, n, count)
	if s := lb.Stats(); s.NewFlows != nflows || s.Conns != nflows || s.Tracked != 0 {
		t.Fatalf("stats %+v; want %d new flows and connections", s, nflows)
	}
}

// flowsRemapEpsilon bounds how far the fraction of new flows remapped by a removal may stray
// from 1/N: the table's own excess (≤ 0.004 measured, see removeEpsilon) plus sampling noise of
// 20000 flows (σ ≤ 0.003 for p ≤ 0.2), with room.
const flowsRemapEpsilon = 0.02

// TestStageRemoveBackend, for N = 5..10: feed 20000 flows (tracked), remove one backend, feed
// the same flows again, and 20000 new ones.
//   - Every tracked flow of a remaining backend stays on it: none moves, also those whose table
//     slot changed (Maglev's small disruption, absorbed by the connection table).
//   - Every flow of the removed backend moves to the backend the new table names, and stays
//     there afterwards (its entry now names the new backend).
//   - New flows: the fraction that goes elsewhere than the old table would have sent it is
//     1/N within flowsRemapEpsilon.
func TestStageRemoveBackend(t *testing.T) {
	const nflows = 20000
	var absorbed int
	for n := 5; n <= 10; n++ {
		lb := newTestLB(t, n, Options{})
		h := stagetest.New(t, lb.NewStage())
		backends := lb.Backends()
		flows := makeFlows(nflows, 10000)
		before := feed(t, h, backends, flows)
		oldTable := lb.Table()

		gone := backends[n/2].Name
		if err := lb.RemoveBackend(gone); err != nil {
			t.Fatal(err)
		}
		newTable := lb.Table()
		after := feed(t, h, backends, flows)
		moved, ofGone, slotChanged := 0, 0, 0
		for i, f := range flows {
			wantNew := newTable.Backends()[newTable.Lookup(f.hash(lb))]
			switch {
			case before[i] == gone:
				ofGone++
				if after[i] != wantNew {
					t.Fatalf("N=%d: flow %v of removed %s went to %s; the new table names %s", n, f.src, gone, after[i], wantNew)
				}
			case after[i] != before[i]:
				moved++
			case wantNew != before[i]:
				slotChanged++ // the table would move it; the connection table keeps it
			}
		}
		if moved != 0 {
			t.Errorf("N=%d: %d tracked flows of remaining backends moved; want 0", n, moved)
		}
		again := feed(t, h, backends, flows)
		for i := range flows {
			if again[i] != after[i] {
				t.Fatalf("N=%d: flow %v went to %s, then %s", n, flows[i].src, after[i], again[i])
			}
		}

		fresh := makeFlows(nflows, 30000)
		got := feed(t, h, backends, fresh)
		remapped := 0
		for i, f := range fresh {
			if old := oldTable.Backends()[oldTable.Lookup(f.hash(lb))]; got[i] != old {
				remapped++
			}
		}
		frac := float64(remapped) / nflows
		if d := frac - 1/float64(n); d < -flowsRemapEpsilon || d > flowsRemapEpsilon {
			t.Errorf("N=%d: %.4f of new flows remapped; want 1/N = %.4f ± %.2f", n, frac, 1/float64(n), flowsRemapEpsilon)
		}
		s := lb.Stats()
		if s.Rescheduled != uint64(ofGone) || s.NewFlows != 2*nflows || s.Tracked != uint64(2*nflows-ofGone) {
			t.Errorf("N=%d: stats %+v; want %d rescheduled, %d new flows, %d tracked", n, s, ofGone, 2*nflows, 2*nflows-ofGone)
		}
		t.Logf("N=%2d: removed %s: its %d flows (%.4f) moved, %d tracked flows whose slot changed stayed, 0 other tracked flows moved; new flows remapped %.4f (1/N = %.4f)",
			n, gone, ofGone, float64(ofGone)/nflows, slotChanged, frac, 1/float64(n))
		absorbed += slotChanged
	}
	if absorbed == 0 {
		t.Errorf("no tracked flow had its table slot change: the test did not show what the connection table is for")
	}
}

// TestStageAddBackend: adding a backend moves no tracked flow; new flows follow the new table.
func TestStageAddBackend(t *testing.T) {
	lb := newTestLB(t, 4, Options{})
	h := stagetest.New(t, lb.NewStage())
	flows := makeFlows(5000, 10000)
	before := feed(t, h, lb.Backends(), flows)
	if err := lb.AddBackend(Backend{Name: "be-new", MAC: header.MAC{2, 0, 0, 0, 2, 1}}); err != nil {
		t.Fatal(err)
	}
	after := feed(t, h, lb.Backends(), flows)
	for i := range flows {
		if after[i] != before[i] {
			t.Fatalf("flow %v moved from %s to %s when a backend was added", flows[i].src, before[i], after[i])
		}
	}
	fresh := makeFlows(5000, 30000)
	got := feed(t, h, lb.Backends(), fresh)
	newOnes := 0
	for _, g := range got {
		if g == "be-new" {
			newOnes++
		}
	}
	if frac := float64(newOnes) / 5000; frac < 0.17 || frac > 0.23 {
		t.Errorf("the added backend got %.3f of new flows; want about 1/5", frac)
	}
}

// TestStageExpiry: a full connection table forwards new flows by the table alone (counted as
// untracked); entries idle longer than Idle are removed by the sweep, and their room serves new
// flows again.
func TestStageExpiry(t *testing.T) {
	lb := newTestLB(t, 3, Options{Conns: 64, Idle: time.Second})
	h := stagetest.New(t, lb.NewStage())
	feed(t, h, lb.Backends(), makeFlows(64, 10000))
	feed(t, h, lb.Backends(), makeFlows(10, 20000))
	if s := lb.Stats(); s.Conns != 64 || s.Untracked != 10 {
		t.Fatalf("stats %+v; want 64 connections and 10 untracked flows", s)
	}
	h.Advance(500 * time.Millisecond)
	feed(t, h, lb.Backends(), makeFlows(10, 10000)) // the first 10 stay fresh
	h.Advance(700 * time.Millisecond)               // the other 54 are now idle for 1.2s
	feed(t, h, lb.Backends(), makeFlows(10, 10000)) // two passes: the hand covers 64 slots
	feed(t, h, lb.Backends(), makeFlows(10, 10000))
	if s := lb.Stats(); s.Expired != 54 || s.Conns != 10 {
		t.Fatalf("stats %+v; want 54 expired, 10 connections", s)
	}
	feed(t, h, lb.Backends(), makeFlows(10, 20000))
	if s := lb.Stats(); s.Conns != 20 || s.Untracked != 10 {
		t.Fatalf("stats %+v; want 20 connections, still 10 untracked", s)
	}
}

// TestStageARP: an ARP request for the VIP is answered in place from the interface's MAC;
// other ARP is dropped with lb-not-vip.
func TestStageARP(t *testing.T) {
	lb := newTestLB(t, 3, Options{})
	h := stagetest.New(t, lb.NewStage())
	asker := netip.MustParseAddr("198.18.0.2").As4()
	req := func(target [4]byte) []byte {
		b := make([]byte, header.EthernetLen+header.ARPLen)
		header.EncodeEthernet(b, header.BroadcastMAC, stagetest.PeerMAC, header.EtherTypeARP)
		header.EncodeARP4(b[header.EthernetLen:], header.ARPRequest, stagetest.PeerMAC, asker, header.MAC{}, target)
		return b
	}
	out := h.Feed(req(testVIP.As4()))
	if len(out) != 1 {
		t.Fatalf("ARP request for the VIP: %d frames sent; want the reply", len(out))
	}
	eth, _ := header.ParseEthernet(out[0].Data)
	a, ok := header.ParseARP(eth.Payload())
	if !ok || eth.Dst() != stagetest.PeerMAC || eth.Src() != stagetest.Interface.MAC || a.Op() != header.ARPReply ||
		a.SenderMAC() != stagetest.Interface.MAC || a.SenderIP4() != testVIP.As4() || a.TargetMAC() != stagetest.PeerMAC || a.TargetIP4() != asker {
		t.Fatalf("bad ARP reply % x", out[0].Data)
	}
	h.Feed(req([4]byte{198, 18, 0, 99}))
	if d := h.DropCounts(); d["lb-not-vip"] != 1 {
		t.Fatalf("ARP for another address: drops %v; want lb-not-vip", d)
	}
	if s := lb.Stats(); s.ARPReplies != 1 {
		t.Fatalf("stats %+v; want 1 ARP reply", s)
	}
}

// TestStageDrops: what the load balancer does not forward, and why.
func TestStageDrops(t *testing.T) {
	lb := newTestLB(t, 3, Options{})
	h := stagetest.New(t, lb.NewStage())
	client := netip.MustParseAddrPort("198.18.1.1:4000")
	udp := func() []byte { return stagetest.UDPFrame(client, netip.AddrPortFrom(testVIP, 80), []byte("x")) }
	icmp := udp()
	ip, _ := header.IPv4InFrame(icmp)
	ip.SetProtocol(header.ProtoICMP)
	ip.FixChecksum()
	frag := udp()
	ip, _ = header.IPv4InFrame(frag)
	ip.SetFragment(false, false, 8)
	ip.FixChecksum()
	other := stagetest.UDPFrame(client, netip.MustParseAddrPort("198.18.0.101:80"), []byte("x"))
	ipv6 := udp()
	header.Ethernet(ipv6).SetType(header.EtherTypeIPv6)
	h.Feed(icmp, frag, other, ipv6)
	want := map[string]int{"lb-not-tcp-udp": 1, "lb-fragment": 1, "lb-not-vip": 1, "lb-not-ipv4-arp": 1}
	if got := h.DropCounts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("drops %v; want %v", got, want)
	}

	// TCP is balanced like UDP.
	tcp := udp()
	ip, _ = header.IPv4InFrame(tcp)
	ip.SetProtocol(header.ProtoTCP)
	ip.FixChecksum()
	if out := h.Feed(tcp); len(out) != 1 {
		t.Fatalf("TCP to the VIP: %v; want it forwarded", h.Outcomes())
	}

	// With no backend left, new and tracked flows alike are dropped with lb-no-backend.
	if err := lb.SetBackends(nil); err != nil {
		t.Fatal(err)
	}
	h.Feed(udp(), stagetest.UDPFrame(netip.MustParseAddrPort("198.18.1.2:4000"), netip.AddrPortFrom(testVIP, 80), nil))
	if got := h.DropCounts(); got["lb-no-backend"] != 2 {
		t.Fatalf("no backends: drops %v; want 2 lb-no-backend", got)
	}
	if err := lb.RemoveBackend("be-0"); err == nil || !strings.Contains(err.Error(), "no backend") {
		t.Fatalf("RemoveBackend of a missing backend: %v", err)
	}
}

// TestStageAllocs: the stage allocates nothing per packet, for tracked flows, new flows
// (connection-table inserts) and expiry alike.
func TestStageAllocs(t *testing.T) {
	lb := newTestLB(t, 5, Options{Conns: 4096, Idle: time.Millisecond})
	h := stagetest.New(t, lb.NewStage())
	flows := makeFlows(6400, 10000)
	batches := make([][]stagetest.In, 100)
	for i := range batches {
		for _, f := range flows[i*64 : (i+1)*64] {
			batches[i] = append(batches[i], stagetest.In{Data: f.frame("hello")})
		}
	}
	next := 0
	allocs := testing.AllocsPerRun(len(batches)-1, func() { // new flows: 64 inserts a pass
		b := h.Pass(batches[next]...)
		if b.Pkts[0].Verdict != pipelines.Transmit {
			t.Fatalf("verdict %v", b.Pkts[0].Verdict)
		}
		next++
		h.SetNow(h.Now() + int64(time.Millisecond/4)) // entries expire as the hand comes round
	})
	if allocs != 0 {
		t.Errorf("new flows: %v allocations per pass; want 0", allocs)
	}
	if allocs := testing.AllocsPerRun(100, func() { h.Pass(batches[5]...) }); allocs != 0 { // tracked or re-inserted
		t.Errorf("known flows: %v allocations per pass; want 0", allocs)
	}
	if s := lb.Stats(); s.Expired == 0 || s.NewFlows < 6400 {
		t.Errorf("stats %+v: the allocation test did not insert and expire", s)
	}
}

// TestOwner: the owner function keeps a flow on one shard and spreads flows over the shards;
// ARP stays where it arrived.
func TestOwner(t *testing.T) {
	lb := newTestLB(t, 3, Options{})
	count := make([]int, 4)
	for _, f := range makeFlows(4000, 10000) {
		fr := f.frame("x")
		s := lb.Owner(fr, 4)
		if s < 0 || s >= 4 || lb.Owner(f.frame("other payload"), 4) != s {
			t.Fatalf("flow %v: owner %d, not stable", f.src, s)
		}
		count[s]++
		if lb.Owner(fr, 1) != -1 {
			t.Fatalf("one shard: owner should be -1")
		}
	}
	for s, c := range count {
		if c < 900 || c > 1100 {
			t.Errorf("shard %d owns %d of 4000 flows; want about 1000", s, c)
		}
	}
	arp := make([]byte, header.EthernetLen+header.ARPLen)
	header.EncodeEthernet(arp, header.BroadcastMAC, stagetest.PeerMAC, header.EtherTypeARP)
	if lb.Owner(arp, 4) != -1 {
		t.Errorf("ARP has an owner shard")
	}
}

func TestParseBackends(t *testing.T) {
	bs, err := parseBackends(strings.NewReader("# backends\nbe1 02:00:00:00:00:11\n\n be2  02:00:00:00:00:12 # second\n"))
	if err != nil || len(bs) != 2 || bs[0].Name != "be1" || bs[1].MAC != (header.MAC{2, 0, 0, 0, 0, 0x12}) {
		t.Fatalf("parseBackends = %v, %v", bs, err)
	}
	for _, bad := range []string{"be1\n", "be1 02:00:00:00:00\n", "be1 02:00:00:00:00:11 x\n"} {
		if _, err := parseBackends(strings.NewReader(bad)); err == nil {
			t.Errorf("parseBackends(%q) accepted it", bad)
		}
	}
}
