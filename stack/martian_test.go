package stack

import (
	"net/netip"
	"testing"

	"github.com/netchan/netchan/stack/header"
)

// landSYN is a land attack (CVE-1999-0016) as a capture shows it: a SYN from 198.18.0.1:80 to
// 198.18.0.1:80, our own address and a listening port, with valid IPv4 and TCP checksums and
// an MSS option, from a peer's MAC address.
var landSYN = []byte{
	0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00,
	0x00, 0x2c, 0x1b, 0x39, 0x40, 0x00, 0x40, 0x06, 0x93, 0x6c, 0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12,
	0x00, 0x01, 0x00, 0x50, 0x00, 0x50, 0x3b, 0x9a, 0xca, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02,
	0xfa, 0xf0, 0x0a, 0xd4, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
}

// withSrc returns a copy of frame (Ethernet, IPv4 without options, then TCP, UDP or ICMP) sent
// from src, its checksums made valid again.
func withSrc(t *testing.T, frame []byte, src netip.Addr) []byte {
	t.Helper()
	f := append([]byte(nil), frame...)
	ip, e := header.ParseIPv4(f[header.EthernetLen:])
	if e != header.IPv4OK {
		t.Fatalf("not an IPv4 frame: %v", e)
	}
	ip.SetSrc(src)
	ip.FixChecksum()
	switch l4 := ip.Payload(); ip.Protocol() {
	case header.ProtoTCP:
		header.TCP(l4).FixChecksum(src, ip.Dst())
	case header.ProtoUDP:
		header.UDP(l4).FixChecksum(src, ip.Dst())
	}
	return f
}

// A packet from a source no host may send from is dropped as martian-source before any
// protocol sees it (RFC 1122 §3.2.1.3; Linux's martian sources): the land SYN above draws no
// SYN-ACK and leaves no half-open connection, while the same SYN from the peer is answered,
// and echo requests and UDP datagrams from each martian source are dropped while those from
// ordinary sources are answered and delivered.
func TestMartianSourceDropped(t *testing.T) {
	hs := newHarness(t, Config{
		Ifaces: []Iface{
			{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}},
			{Addrs: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/16")}}, // another of ours, on another interface
		},
		StaticARP: []StaticNeighbor{{IP: peerIP, MAC: peerMAC}},
	}, 0, 1)
	l, _, err := hs.h.listenTCP(netip.MustParseAddrPort("0.0.0.0:80"), 0)
	if err != nil {
		t.Fatal(err)
	}
	u := hs.listenUDP("0.0.0.0:7") // steps the harness, which registers both listeners

	// The capture is a valid segment: only its source makes it martian.
	if ip, e := header.ParseIPv4(landSYN[14:]); e != header.IPv4OK || !header.TCP(ip.Payload()).ChecksumValid(ip.Src(), ip.Dst()) {
		t.Fatalf("landSYN does not parse: %v", e)
	}
	hs.step(landSYN)
	if d := hs.DropCounts(); d["martian-source"] != 1 || len(hs.sent) != 0 {
		t.Fatalf("land SYN: drops %v, sent %d frames", d, len(hs.sent))
	}
	if l.halfOpen != 0 || hs.s.tcp.nconns != 0 || hs.h.Stats().TCP.PassiveOpens != 0 {
		t.Fatalf("land SYN opened a connection: half-open %d, connections %d", l.halfOpen, hs.s.tcp.nconns)
	}
	hs.step(withSrc(t, landSYN, peerIP))
	if len(hs.sent) != 1 || len(hs.drops) != 0 || header.TCP(hs.sent[0][34:]).Flags() != header.TCPFlagSYN|header.TCPFlagACK {
		t.Fatalf("the same SYN from the peer: sent %d frames, drops %v; want a SYN-ACK", len(hs.sent), hs.drops)
	}

	echo := echoRequest(t, []byte("martian?"))
	udp := udpFrame(t, 5555, 7, []byte("martian?"))
	buf := make([]byte, 64)
	for _, c := range []struct {
		src     string
		martian bool
	}{
		{"198.18.0.1", true},       // ours, on the interface it arrives on (land)
		{"10.1.0.1", true},         // ours, on the other interface
		{"198.18.0.255", true},     // the broadcast address of our network
		{"10.1.255.255", true},     // ... and of the other one
		{"255.255.255.255", true},  // limited broadcast, RFC 1122 §3.2.1.3(c)
		{"224.0.0.1", true},        // multicast
		{"239.255.255.250", true},  // multicast
		{"0.0.0.0", true},          // "this host", RFC 1122 §3.2.1.3(a)
		{"0.1.2.3", true},          // "this network", §3.2.1.3(b)
		{"127.0.0.1", true},        // loopback, §3.2.1.3(g)
		{"127.255.255.254", true},  // loopback
		{"198.18.0.2", false},      // the peer
		{"198.18.0.254", false},    // another host on our network
		{"203.0.113.9", false},     // a host behind a router
		{"223.255.255.254", false}, // just below multicast
		{"1.0.0.1", false},         // just above 0.0.0.0/8
	} {
		src := netip.MustParseAddr(c.src)
		hs.step(withSrc(t, echo, src))
		if got := hs.DropCounts()["martian-source"] == 1; got != c.martian || (c.martian && len(hs.sent) != 0) || (!c.martian && (len(hs.sent) != 1 || len(hs.drops) != 0)) {
			t.Errorf("echo request from %s: drops %v, sent %d; want martian %v", src, hs.drops, len(hs.sent), c.martian)
		}
		delivered := hs.h.Stats().UDPDelivered
		hs.step(withSrc(t, udp, src))
		if got := hs.DropCounts()["martian-source"] == 1; got != c.martian || (hs.h.Stats().UDPDelivered > delivered) == c.martian {
			t.Errorf("UDP from %s: drops %v, delivered %d → %d; want martian %v", src, hs.drops, delivered, hs.h.Stats().UDPDelivered, c.martian)
		}
		if !c.martian {
			if n, from, err := u.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "martian?" || from.Addr() != src {
				t.Errorf("UDP from %s: read %q from %v: %v", src, buf[:n], from, err)
			}
		}
	}
	// A fragment from a martian source is not held for reassembly.
	frag := withSrc(t, udpFrame(t, 5555, 7, make([]byte, 1000)), netip.MustParseAddr("198.18.0.1"))
	ip := header.IPv4(frag[14:])
	ip.SetFragment(false, true, 0)
	ip.FixChecksum()
	hs.step(frag)
	if d := hs.DropCounts(); d["martian-source"] != 1 || hs.s.reasm.count() != 0 {
		t.Fatalf("martian fragment: drops %v, %d datagrams held", d, hs.s.reasm.count())
	}
}
