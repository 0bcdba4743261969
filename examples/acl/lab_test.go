package main

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/examples/wire/wiretest"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

func TestMain(m *testing.M) {
	wiretest.RunChildIfAsked()
	labtest.SweepStale()
	os.Exit(m.Run())
}

// TestLabACL runs the ACL between the lab's client and server (nat layout, two queues, two
// shards): the client's kernel pings the server through it, the traffic generator in the
// client namespace sends UDP on both queues, and kernel UDP sockets in the server namespace
// count what arrives. Allowed datagrams all arrive, denied ones none, and every rule's
// counters and every shard drop reason match what was sent exactly.
func TestLabACL(t *testing.T) {
	rules := []string{
		"deny udp from 198.18.1.66",
		"allow udp from 198.18.1.0/24 to 198.19.0.2 port 9999",
		"allow icmp",
		"deny udp to any port 9998",
	}
	var acl *ACL
	l := wiretest.StartLab(t, 2, func(cfg wire.Config) (pipelines.App, error) {
		app, a, err := newApp(cfg, mustRules(t, rules...), Deny)
		acl = a
		return app, err
	})
	l.Prime()
	if n := l.Ping(l.Client.NS, l.Server.Addr.Addr(), 3); n != 3 {
		t.Fatalf("the client pinged the server through the ACL: %d of 3 replies", n)
	}
	r9999, r9998, r7777 := l.Receive(9999), l.Receive(9998), l.Receive(7777)
	spoofed := netip.MustParseAddr("198.18.1.66")
	const frame = 60 // the generator's frames: Ethernet, IPv4, UDP, 18 bytes of payload
	sends := []struct {
		src   netip.Addr
		port  uint16
		count uint64
	}{
		{netip.Addr{}, 9999, 1000}, // rule 2
		{netip.Addr{}, 9998, 500},  // rule 4
		{spoofed, 9999, 300},       // rule 1, before rule 2 allows its subnet
		{netip.Addr{}, 7777, 200},  // the default
	}
	for i, s := range sends {
		l.Send(trafficgen.Config{Src: s.src, SrcPort: 5000, DstPort: s.port, Count: s.count, Rate: 20000, Queues: []int{0, 1}, RunID: uint32(i + 1)})
	}
	got := map[uint16]int{9999: r9999.Count(300 * time.Millisecond), 9998: r9998.Count(0), 7777: r7777.Count(0)}
	t.Logf("the server's sockets received %v", got)
	if got[9999] != 1000 || got[9998] != 0 || got[7777] != 0 {
		t.Errorf("server received %v; want 1000 on port 9999 (allowed) and none on 9998 and 7777 (denied)", got)
	}

	cs := acl.Counters()
	for i, c := range cs {
		t.Logf("rule %d: %-55s %5d packets %7d bytes", i+1, c.Rule, c.Packets, c.Bytes)
	}
	want := []struct{ packets, bytes uint64 }{
		{300, 300 * frame},
		{1000, 1000 * frame},
		{6, 6 * 98}, // three echo requests and three replies, 64 bytes of ICMP each
		{500, 500 * frame},
		{200, 200 * frame},
	}
	for i, w := range want {
		if cs[i].Packets != w.packets || cs[i].Bytes != w.bytes {
			t.Errorf("rule %d (%s): %d packets, %d bytes; want %d, %d", i+1, cs[i].Rule, cs[i].Packets, cs[i].Bytes, w.packets, w.bytes)
		}
	}
	drops := l.AllDrops()
	t.Logf("shard drops: %v", drops)
	wantDrops := map[string]uint64{"acl-rule-1": 300, "acl-rule-4": 500, "acl-default": 200}
	for r, n := range wantDrops {
		if drops[r] != n {
			t.Errorf("drops %s: %d, want %d", r, drops[r], n)
		}
	}
	for r, n := range drops {
		if _, ok := wantDrops[r]; !ok {
			t.Errorf("unexpected drops: %s %d", r, n)
		}
	}
	var handed uint64
	rx := make([]uint64, 0, 2)
	for _, s := range l.In.Snapshot() {
		handed += s.HandoffOut
		rx = append(rx, s.RxPackets)
	}
	if len(rx) != 2 || rx[0] == 0 || rx[1] == 0 {
		t.Errorf("shards received %v: want traffic on both queues", rx)
	}
	if handed != 0 {
		t.Errorf("%d packets handed between shards: the ACL has no owner function", handed)
	}
}
