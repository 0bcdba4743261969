package basic

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

var (
	peer = netip.MustParseAddrPort("198.18.0.2:40000")
	us   = netip.MustParseAddrPort("198.18.0.1:7")
)

func TestReflect(t *testing.T) {
	h := stagetest.New(t, Reflect())
	in := stagetest.UDPFrame(peer, us, []byte("hello"))
	out := h.Feed(in)
	if len(out) != 1 || out[0].If != 0 {
		t.Fatalf("sent %+v, drops %v", out, h.Drops())
	}
	want := stagetest.UDPFrame(us, peer, []byte("hello"))
	copy(want[0:6], in[6:12])
	copy(want[6:12], in[0:6])
	if !bytes.Equal(out[0].Data, want) {
		t.Fatalf("reflected\n%x\nwant\n%x", out[0].Data, want)
	}
	ip, _ := header.ParseIPv4(out[0].Data[header.EthernetLen:])
	if u, _ := header.ParseUDP(ip.Payload()); !u.ChecksumValid(us.Addr(), peer.Addr()) {
		t.Fatal("checksum no longer valid")
	}

	// A later fragment keeps its payload; a header that is not sane is reflected at the
	// Ethernet layer only; a runt is dropped.
	frag := stagetest.UDPFrame(peer, us, []byte("hello"))
	frag[header.EthernetLen+7] = 1 // offset 8
	badIHL := stagetest.UDPFrame(peer, us, []byte("hello"))
	badIHL[header.EthernetLen] = 0x44
	out = h.Feed(frag, badIHL, []byte("short"))
	if len(out) != 2 || h.DropCounts()["malformed"] != 1 {
		t.Fatalf("sent %d, drops %v", len(out), h.DropCounts())
	}
	if !bytes.Equal(out[0].Data[34:], frag[34:]) || !bytes.Equal(out[0].Data[26:30], frag[30:34]) {
		t.Fatal("a later fragment's addresses not swapped or its payload changed")
	}
	if !bytes.Equal(out[1].Data[12:], badIHL[12:]) {
		t.Fatal("a frame with IHL 4 changed past its Ethernet header")
	}
}

func TestReflectUDPPort(t *testing.T) {
	h := stagetest.New(t, ReflectUDPPort(7))
	other := netip.MustParseAddrPort("198.18.0.1:8")
	frag := stagetest.UDPFrame(peer, us, nil)
	frag[header.EthernetLen+7] = 1
	out := h.Feed(stagetest.UDPFrame(peer, us, []byte("x")), stagetest.UDPFrame(peer, other, []byte("x")), frag)
	if v := h.Verdicts(); len(out) != 1 || v[0] != pipelines.Transmit || v[1] != pipelines.Drop || v[2] != pipelines.Drop {
		t.Fatalf("verdicts %v", v)
	}
	if h.DropCounts()["no-verdict"] != 2 {
		t.Fatalf("drops %v", h.DropCounts())
	}
}

func TestCount(t *testing.T) {
	c := &ProtoCounts{}
	h := stagetest.New(t, c.Stage(), Drop())
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	notV4 := stagetest.UDPFrame(peer, us, nil)
	notV4[header.EthernetLen] = 0x65
	h.Feed(stagetest.UDPFrame(peer, us, nil), arp, notV4, []byte("runt"))
	if c.IPv4.Load() != 2 || c.UDP.Load() != 1 || c.ARP.Load() != 1 || c.Other.Load() != 1 || c.TCP.Load() != 0 {
		t.Fatalf("counts ipv4 %d udp %d arp %d other %d", c.IPv4.Load(), c.UDP.Load(), c.ARP.Load(), c.Other.Load())
	}
	if h.DropCounts()["dropped"] != 4 {
		t.Fatalf("drops %v", h.DropCounts())
	}
}

func TestReflectAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("testing.AllocsPerRun counts the race detector's own allocations")
	}
	c := &ProtoCounts{}
	h := stagetest.New(t, c.Stage(), ReflectUDPPort(7), Reflect())
	in := []stagetest.In{{Data: stagetest.UDPFrame(peer, us, []byte("x"))}, {Data: stagetest.UDPFrame(peer, us, nil)}}
	if n := testing.AllocsPerRun(100, func() { h.Pass(in...) }); n != 0 {
		t.Fatalf("%v allocations per pass", n)
	}
}
