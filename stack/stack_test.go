package stack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

func TestARPReplyForOurAddress(t *testing.T) {
	hs := newHarness(t, Config{}, 0, 1)
	out := hs.step(arpRequest(t, ourIP))
	if len(out) != 1 {
		t.Fatalf("sent %d frames, want 1 ARP reply", len(out))
	}
	p := decode(out[0])
	arp, _ := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if arp == nil || arp.Operation != layers.ARPReply || !bytes.Equal(arp.SourceHwAddress, ourMAC[:]) ||
		!bytes.Equal(arp.SourceProtAddress, ourIP.AsSlice()) || !bytes.Equal(arp.DstProtAddress, peerIP.AsSlice()) ||
		!bytes.Equal(eth.DstMAC, peerMAC[:]) || !bytes.Equal(eth.SrcMAC, ourMAC[:]) {
		t.Fatalf("bad ARP reply: %v", p)
	}
	if mac, ok := hs.h.neigh[0].Lookup(peerIP.As4(), hs.Now()); !ok || mac != peerMAC {
		t.Fatalf("requester not learned")
	}
	// Not our address: no reply, nothing learned about strangers.
	other := newHarness(t, Config{}, 0, 1)
	if out := other.step(arpRequest(t, netip.MustParseAddr("198.18.0.99"))); len(out) != 0 {
		t.Fatalf("answered ARP for an address that is not ours")
	}
	if other.h.neigh[0].Known(peerIP.As4()) {
		t.Fatalf("learned a neighbour from a request not for us")
	}
}

func TestEchoReplyInPlace(t *testing.T) {
	hs := newHarness(t, Config{}, 0, 1)
	payload := []byte("abcdefghijklmnopqrstuvwxyz0123456789")
	out := hs.step(echoRequest(t, payload))
	if len(out) != 1 {
		t.Fatalf("sent %d frames", len(out))
	}
	p := decode(out[0])
	if p.ErrorLayer() != nil {
		t.Fatalf("gopacket: %v", p.ErrorLayer().Error())
	}
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if icmp.TypeCode.Type() != 0 || icmp.Id != 0x1234 || icmp.Seq != 1 || !bytes.Equal(icmp.Payload, payload) {
		t.Fatalf("bad echo reply %v", icmp)
	}
	if !ip.SrcIP.Equal(ourIP.AsSlice()) || !ip.DstIP.Equal(peerIP.AsSlice()) {
		t.Fatalf("addresses %v → %v", ip.SrcIP, ip.DstIP)
	}
	if header.Checksum(out[0][14:34], 0) != 0 || header.Checksum(out[0][34:], 0) != 0 {
		t.Fatalf("checksums do not verify")
	}
}

func TestEchoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; the test script runs this without -race")
	}
	hs := newHarness(t, Config{}, 0, 1)
	req := echoRequest(t, make([]byte, 56))
	hs.step(req)
	in := []stagetest.In{{Data: req}}
	a := testing.AllocsPerRun(500, func() { hs.Pass(in...) })
	if a != 0 {
		t.Fatalf("receiving and answering an echo request allocates %v times", a)
	}
	if hs.h.Stats().EchoReplies < 500 {
		t.Fatalf("echo replies %d", hs.h.Stats().EchoReplies)
	}
}

func TestUDPSocketReceiveAndPortUnreachable(t *testing.T) {
	hs := newHarness(t, Config{}, 0, 1)
	c, err := hs.h.ListenUDP(netip.MustParseAddrPort("0.0.0.0:7"))
	if err != nil {
		t.Fatal(err)
	}
	hs.step() // applies the registration
	if out := hs.step(udpFrame(t, 5555, 7, []byte("hello"))); len(out) != 0 {
		t.Fatalf("sent %d frames for a delivered datagram", len(out))
	}
	buf := make([]byte, 100)
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" || from != netip.AddrPortFrom(peerIP, 5555) {
		t.Fatalf("read %q from %v: %v", buf[:n], from, err)
	}
	// Closed port: ICMP port unreachable quoting the datagram (the peer is known from ARP).
	hs.step(arpRequest(t, ourIP))
	orig := udpFrame(t, 5555, 8, []byte("nobody"))
	out := hs.step(orig)
	if len(out) != 1 || len(hs.drops) != 1 || hs.drops[0] != ReasonNoSocket {
		t.Fatalf("closed port: sent %d, drops %v", len(out), hs.drops)
	}
	p := decode(out[0])
	icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if icmp == nil || icmp.TypeCode != layers.CreateICMPv4TypeCode(3, 3) || !bytes.Equal(icmp.Payload, orig[14:14+20+8]) {
		t.Fatalf("bad port unreachable: %v", p)
	}
	if header.Checksum(out[0][34:], 0) != 0 {
		t.Fatal("ICMP checksum")
	}
	// Read deadline.
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, _, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatal("read returned without data or deadline")
	}
	c.Close()
	hs.step()
	if out := hs.step(udpFrame(t, 5555, 7, []byte("late"))); len(out) != 1 {
		t.Fatalf("after Close, port 7 must be closed (port unreachable), sent %d", len(out))
	}
}

func TestUDPSendResolvesARP(t *testing.T) {
	hs := newHarness(t, Config{ARPRetry: time.Second, ARPAttempts: 2}, 0, 1)
	c, err := hs.h.ListenUDP(netip.MustParseAddrPort("0.0.0.0:9000"))
	if err != nil {
		t.Fatal(err)
	}
	hs.step()
	c.WriteToUDPAddrPort([]byte("ping!"), netip.AddrPortFrom(peerIP, 53))
	out := hs.step()
	if len(out) != 1 {
		t.Fatalf("want one ARP request, sent %d", len(out))
	}
	arp, _ := decode(out[0]).Layer(layers.LayerTypeARP).(*layers.ARP)
	if arp == nil || arp.Operation != layers.ARPRequest || !bytes.Equal(arp.DstProtAddress, peerIP.AsSlice()) {
		t.Fatalf("not an ARP request for the peer: %v", decode(out[0]))
	}
	if d := hs.s.NextDeadline(); d != hs.Now()+int64(time.Second) {
		t.Fatalf("deadline %d, want retry at %d", d, hs.Now()+int64(time.Second))
	}
	hs.Advance(100 * time.Millisecond)
	out = hs.step(arpReply(t))
	if len(out) != 1 {
		t.Fatalf("after the ARP reply: sent %d frames, want the datagram", len(out))
	}
	p := decode(out[0])
	u, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if u == nil || string(u.Payload) != "ping!" || u.SrcPort != 9000 || u.DstPort != 53 || !bytes.Equal(eth.DstMAC, peerMAC[:]) {
		t.Fatalf("bad datagram %v", p)
	}
	if header.UDP(out[0][34:]).ChecksumValid(ourIP, peerIP) == false {
		t.Fatal("UDP checksum")
	}
	// An unanswered next hop: retries, then the datagram is dropped and counted.
	c.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("198.18.0.77:1"))
	if out := hs.step(); len(out) != 1 {
		t.Fatalf("want ARP request, sent %d", len(out))
	}
	hs.Advance(time.Second)
	if out := hs.step(); len(out) != 1 {
		t.Fatalf("want ARP retry, sent %d", len(out))
	}
	hs.Advance(time.Second)
	hs.step()
	if hs.h.Stats().ARPTimeouts != 1 || len(hs.s.pending) != 0 {
		t.Fatalf("arp timeouts %d, pending %d", hs.h.Stats().ARPTimeouts, len(hs.s.pending))
	}
}

// fragmentsOf splits an IPv4 datagram (header without options + payload) into frames.
func fragmentsOf(t testing.TB, dgram []byte, per int) [][]byte {
	payload := dgram[20:]
	var out [][]byte
	for off := 0; off < len(payload); off += per {
		end := off + per
		if end > len(payload) {
			end = len(payload)
		}
		f := make([]byte, 14+20+end-off)
		copy(f, serialize(t, ethLayer(peerMAC, ourMAC, layers.EthernetTypeIPv4))[:14])
		ip := header.IPv4(f[14:])
		copy(ip, dgram[:20])
		ip.SetTotalLength(20 + end - off)
		ip.SetFragment(false, end < len(payload), off)
		ip.FixChecksum()
		copy(f[34:], payload[off:end])
		out = append(out, f)
	}
	return out
}

func TestReassembleUDPAndFragmentedEcho(t *testing.T) {
	hs := newHarness(t, Config{}, 0, 1)
	c, _ := hs.h.ListenUDP(netip.MustParseAddrPort("0.0.0.0:7"))
	hs.step()
	big := make([]byte, 5000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	frame := udpFrame(t, 4444, 7, big)
	frags := fragmentsOf(t, frame[14:], 1480)
	// Out of order, with a duplicate.
	order := []int{2, 0, 3, 0, 1}
	for _, k := range order {
		hs.step(frags[k])
	}
	buf := make([]byte, 9000)
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], big) {
		t.Fatalf("reassembled %d bytes (%v), want %d intact", n, err, len(big))
	}
	// A 3000-byte echo request comes in three fragments; the reply leaves in three, once the
	// peer answers our ARP request (a reassembled reply goes through routing and resolution).
	req := echoRequest(t, big[:3000])
	var out [][]byte
	for _, f := range fragmentsOf(t, req[14:], 1480) {
		out = append(out, hs.step(f)...)
	}
	if len(out) != 1 || decode(out[0]).Layer(layers.LayerTypeARP) == nil {
		t.Fatalf("want one ARP request for the peer, sent %d", len(out))
	}
	out = append([][]byte(nil), hs.step(arpReply(t))...)
	var payload []byte
	for _, f := range out {
		ip, e := header.ParseIPv4(f[14:])
		if e != header.IPv4OK || len(f) > 1514 {
			t.Fatalf("bad fragment: %v, %d bytes", e, len(f))
		}
		payload = append(payload, ip.Payload()...)
	}
	m := header.ICMPv4(payload)
	if len(out) != 3 || m.Type() != 0 || !m.ChecksumValid() || !bytes.Equal(m.Payload(), big[:3000]) {
		t.Fatalf("fragmented echo reply: %d frames, type %d", len(out), m.Type())
	}
}

func TestReassemblyMemoryLimitAndTimeout(t *testing.T) {
	const limit = 256 << 10
	hs := newHarness(t, Config{ReassemblyBytes: limit, ReassemblyTimeout: time.Second}, 0, 1)
	// A flood of first fragments of distinct datagrams, each claiming a large size.
	for i := 0; i < 2000; i++ {
		f := udpFrame(t, 1000, 7, make([]byte, 1400))
		ip := header.IPv4(f[14:])
		ip.SetID(uint16(i))
		ip.SetFragment(false, true, 8*uint16Off(i))
		ip.FixChecksum()
		hs.step(f)
		if hs.s.reasm.used > limit {
			t.Fatalf("reassembly uses %d bytes, limit %d", hs.s.reasm.used, limit)
		}
	}
	if hs.s.reasm.count() == 0 {
		t.Fatal("nothing held")
	}
	hs.Advance(2 * time.Second)
	hs.step()
	if hs.s.reasm.count() != 0 || hs.s.reasm.used != 0 || hs.h.Stats().ReasmTimeouts == 0 {
		t.Fatalf("after the timeout: %d datagrams, %d bytes held", hs.s.reasm.count(), hs.s.reasm.used)
	}
}

func uint16Off(i int) int { return (i % 7) * 100 }

func TestIPIDsDoNotCollideBetweenShards(t *testing.T) {
	seen := map[uint16]int{}
	for shard := 0; shard < 3; shard++ {
		hs := newHarness(t, Config{}, shard, 3)
		for i := 0; i < 70000/3; i++ {
			id := hs.s.nextID()
			if int(id)%3 != shard {
				t.Fatalf("shard %d produced id %d", shard, id)
			}
			if s, ok := seen[id]; ok && s != shard {
				t.Fatalf("id %d used by shards %d and %d", id, s, shard)
			}
			seen[id] = shard
		}
	}
}

func TestRouteTable(t *testing.T) {
	rt, err := NewRouteTable([][]netip.Prefix{{netip.MustParsePrefix("198.18.0.1/24")}, {netip.MustParsePrefix("198.19.0.1/24")}},
		[]Route{{Prefix: netip.MustParsePrefix("198.18.128.0/20"), Via: netip.MustParseAddr("198.19.0.254")}},
		netip.MustParseAddr("198.18.0.254"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dst, nh string
		ifc     int
	}{
		{"198.18.0.9", "198.18.0.9", 0},
		{"198.19.0.9", "198.19.0.9", 1},
		{"198.18.130.1", "198.19.0.254", 1},
		{"203.0.113.1", "198.18.0.254", 0},
	}
	for _, c := range cases {
		ifc, nh, _, ok := rt.Lookup(netip.MustParseAddr(c.dst).As4())
		if !ok || ifc != c.ifc || netip.AddrFrom4(nh).String() != c.nh {
			t.Errorf("%s: iface %d via %v, want %d via %s", c.dst, ifc, netip.AddrFrom4(nh), c.ifc, c.nh)
		}
	}
	if _, err := NewRouteTable([][]netip.Prefix{{netip.MustParsePrefix("198.18.0.1/24")}}, nil, netip.MustParseAddr("10.9.9.9")); err == nil {
		t.Fatal("a gateway off every network was accepted")
	}
}

func TestBadPacketsAreCountedDrops(t *testing.T) {
	hs := newHarness(t, Config{}, 0, 1)
	good := udpFrame(t, 1, 7, []byte("x"))
	badCsum := append([]byte(nil), good...)
	badCsum[14+20+8] ^= 0xff // the payload byte (gopacket pads the frame to 60 bytes)
	badIP := append([]byte(nil), good...)
	badIP[14+10] ^= 0xff
	cases := map[string]struct {
		f    []byte
		want any
	}{
		"l4 checksum": {badCsum, ReasonBadChecksum},
		"ip checksum": {badIP, ReasonIPBadChecksum},
		"truncated":   {good[:20], ReasonIPTruncated},
		"short":       {good[:10], ReasonNotEthernet},
	}
	for name, c := range cases {
		hs.step(c.f)
		if len(hs.drops) != 1 || hs.drops[0] != c.want {
			t.Errorf("%s: drops %v, want %v", name, hs.drops, c.want)
		}
	}
}

func TestGratuitousARP(t *testing.T) {
	hs := newHarness(t, Config{}, 0, 1)
	hs.s.garp = false
	out := hs.step()
	if len(out) != 1 {
		t.Fatalf("sent %d", len(out))
	}
	arp, _ := decode(out[0]).Layer(layers.LayerTypeARP).(*layers.ARP)
	if arp == nil || !bytes.Equal(arp.SourceProtAddress, arp.DstProtAddress) || !bytes.Equal(arp.SourceProtAddress, ourIP.AsSlice()) {
		t.Fatalf("not a gratuitous ARP: %v", decode(out[0]))
	}
	if out := hs.step(); len(out) != 0 {
		t.Fatal("announced twice")
	}
}

var _ = binary.BigEndian
var _ = gopacket.Payload(nil)
