package wire_test

import (
	"net/netip"
	"testing"

	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/examples/wire/wiretest"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

func newHarness(t *testing.T, filters ...pipelines.Stage) *stagetest.Harness {
	t.Helper()
	return wiretest.Harness(t, 0, 1, filters...)
}

// TestForward: a datagram from the client leaves on the outside interface to the server's MAC
// address with its TTL one lower and a valid checksum, and the answer goes back the same way.
func TestForward(t *testing.T) {
	h := newHarness(t)
	cli, srv := netip.AddrPortFrom(wiretest.Client, 5000), netip.AddrPortFrom(wiretest.Server, 9999)
	for _, in := range []stagetest.In{
		wiretest.UDP(wire.Inside, cli, srv, []byte("hello")),
		wiretest.UDP(wire.Outside, srv, cli, []byte("back")),
		wiretest.TCP(wire.Inside, cli, srv),
		wiretest.Ping(wire.Outside, wiretest.Server, wiretest.Client),
	} {
		out := h.Step(in)
		if len(out) != 1 {
			t.Fatalf("sent %d frames, want 1: %+v", len(out), h.Outcomes())
		}
		wiretest.CheckForwarded(t, in, out[0])
	}
}

// TestLocal: the box's own addresses are the stack's (ping the gateway); a TTL that runs out is
// answered with ICMP time exceeded; a broken header is dropped by name; an unresolved next hop
// makes the stack ask by ARP.
func TestLocal(t *testing.T) {
	h := newHarness(t)
	out := h.Step(wiretest.Ping(wire.Inside, wiretest.Client, wiretest.Config.Inside.Addr()))
	if len(out) != 1 || out[0].If != wire.Inside || header.ICMPv4(out[0].Data[34:])[0] != header.ICMPEchoReply {
		t.Fatalf("ping the gateway: %+v", h.Outcomes())
	}

	f := wiretest.UDP(wire.Inside, netip.AddrPortFrom(wiretest.Client, 5000), netip.AddrPortFrom(wiretest.Server, 9999), nil)
	ip := header.IPv4(f.Data[header.EthernetLen:])
	ip.SetTTL(1)
	ip.FixChecksum()
	out = h.Step(f)
	if h.DropCounts()["wire-ttl-exceeded"] != 1 || len(out) != 1 || out[0].If != wire.Inside ||
		header.ICMPv4(out[0].Data[34:]).Type() != header.ICMPTimeExceeded {
		t.Fatalf("TTL 1: %+v", h.Outcomes())
	}

	ip.SetTTL(64) // no checksum fix: broken
	h.Step(f)
	if h.DropCounts()["wire-bad-ipv4"] != 1 {
		t.Fatalf("bad checksum: %v", h.DropCounts())
	}

	// A server address the box never heard of: the stack keeps the datagram and asks by ARP.
	other := netip.MustParseAddr("198.19.0.77")
	out = h.Step(wiretest.UDP(wire.Inside, netip.AddrPortFrom(wiretest.Client, 5000), netip.AddrPortFrom(other, 9999), nil))
	if len(out) != 1 || out[0].If != wire.Outside || header.Ethernet(out[0].Data).Type() != header.EtherTypeARP {
		t.Fatalf("unresolved next hop: %+v", h.Outcomes())
	}
}

// TestDecTTL: the incremental update gives the checksum a full computation gives.
func TestDecTTL(t *testing.T) {
	b := make([]byte, header.IPv4MinLen)
	for ttl := 0; ttl < 256; ttl++ {
		for _, proto := range []uint8{1, 6, 17, 255} {
			ip := header.EncodeIPv4(b, header.IPv4Fields{TotalLength: header.IPv4MinLen, ID: uint16(ttl * 977), TTL: uint8(ttl), Protocol: proto,
				Src: wiretest.Client, Dst: wiretest.Server})
			ok := wire.DecTTL(ip)
			if ok != (ttl > 1) {
				t.Fatalf("TTL %d: DecTTL %v", ttl, ok)
			}
			if ok && (ip.TTL() != uint8(ttl-1) || header.Checksum(ip.Header(), 0) != 0) {
				t.Fatalf("TTL %d proto %d: after DecTTL TTL %d, checksum %#x (recomputed %#x)", ttl, proto, ip.TTL(), ip.Checksum(), ip.ComputeChecksum())
			}
		}
	}
}

// TestForwardAllocs: forwarding a batch allocates nothing.
func TestForwardAllocs(t *testing.T) {
	h := newHarness(t)
	cli, srv := netip.AddrPortFrom(wiretest.Client, 5000), netip.AddrPortFrom(wiretest.Server, 9999)
	in := []stagetest.In{wiretest.UDP(wire.Inside, cli, srv, []byte("x")), wiretest.UDP(wire.Outside, srv, cli, []byte("y"))}
	if a := testing.AllocsPerRun(100, func() { h.Pass(in...) }); a != 0 {
		t.Errorf("%v allocations per pass", a)
	}
}

// TestLocalOwner: fragments of a datagram to the box meet at one shard; transit packets and ARP
// stay where they arrived.
func TestLocalOwner(t *testing.T) {
	r, err := wire.New(wiretest.Config)
	if err != nil {
		t.Fatal(err)
	}
	frag := func(dst netip.Addr, offset int) []byte {
		f := wiretest.UDP(wire.Inside, netip.AddrPortFrom(wiretest.Client, 5000), netip.AddrPortFrom(dst, 7), make([]byte, 64)).Data
		ip := header.IPv4(f[header.EthernetLen:])
		ip.SetID(4242)
		ip.SetFragment(false, offset == 0, offset)
		ip.FixChecksum()
		return f
	}
	gw := wiretest.Config.Inside.Addr()
	for _, shards := range []int{2, 3, 8} {
		first, later := r.LocalOwner(frag(gw, 0), shards), r.LocalOwner(frag(gw, 64), shards)
		if first < 0 || first >= shards || later != first {
			t.Errorf("%d shards: fragments to the gateway go to shards %d and %d", shards, first, later)
		}
		if o := r.LocalOwner(frag(wiretest.Server, 64), shards); o != -1 {
			t.Errorf("%d shards: a transit fragment goes to shard %d, want -1", shards, o)
		}
	}
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	if o := r.LocalOwner(arp, 2); o != -1 {
		t.Errorf("ARP goes to shard %d", o)
	}
}
