// Package wiretest helps the bump-in-the-wire examples test themselves: frames and shard
// descriptions for unit tests on the public stage harness (package pipelines/stagetest, no
// root), and, for lab tests, the lab's nat layout with an example's App started on it, a
// traffic generator in the client namespace, and kernel UDP receivers and pings in the
// namespaces (the test binary re-executes itself there with `ip netns exec`).
package wiretest

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// The unit tests' box: the lab's addresses, made-up MAC addresses.
var (
	Config = wire.Config{Inside: netip.MustParsePrefix("198.18.1.1/24"), Outside: netip.MustParsePrefix("198.19.0.1/24")}

	InsideIf  = pipelines.Interface{Name: "in0", Index: 1, MAC: [6]byte{0x02, 0, 0, 0, 0x01, 0x01}, MTU: 1500}
	OutsideIf = pipelines.Interface{Name: "out0", Index: 2, MAC: [6]byte{0x02, 0, 0, 0, 0x02, 0x01}, MTU: 1500}
	ClientMAC = [6]byte{0x02, 0, 0, 0, 0x01, 0x02}
	ServerMAC = [6]byte{0x02, 0, 0, 0, 0x02, 0x02}
	Client    = netip.MustParseAddr("198.18.1.2")
	Server    = netip.MustParseAddr("198.19.0.2")
)

// Info describes shard of shards with the two interfaces [InsideIf, OutsideIf].
func Info(shard, shards int) pipelines.ShardInfo {
	return pipelines.ShardInfo{Shard: shard, Shards: shards, Ifaces: []pipelines.Interface{InsideIf, OutsideIf}}
}

// peerMAC is the MAC address of the host on interface in's side.
func peerMAC(in int) [6]byte {
	if in == wire.Outside {
		return ServerMAC
	}
	return ClientMAC
}

func ifMAC(in int) [6]byte {
	if in == wire.Outside {
		return OutsideIf.MAC
	}
	return InsideIf.MAC
}

// UDP is a UDP frame received on interface in, from that side's host (ClientMAC or ServerMAC)
// to the box's MAC address on it.
func UDP(in int, src, dst netip.AddrPort, payload []byte) stagetest.In {
	f := stagetest.UDPFrame(src, dst, payload)
	m, p := ifMAC(in), peerMAC(in)
	copy(f[0:6], m[:])
	copy(f[6:12], p[:])
	return stagetest.In{If: in, Data: f}
}

// IPv4 is an IPv4 frame of protocol proto with the transport bytes l4 (not checksummed: the
// examples read only addresses, protocol and ports), received on interface in like UDP's.
func IPv4(in int, proto uint8, src, dst netip.Addr, l4 []byte) stagetest.In {
	f := make([]byte, header.EthernetLen+header.IPv4MinLen+len(l4))
	header.EncodeEthernet(f, ifMAC(in), peerMAC(in), header.EtherTypeIPv4)
	header.EncodeIPv4(f[header.EthernetLen:], header.IPv4Fields{TotalLength: header.IPv4MinLen + len(l4), TTL: 64, Protocol: proto, Src: src, Dst: dst})
	copy(f[header.EthernetLen+header.IPv4MinLen:], l4)
	return stagetest.In{If: in, Data: f}
}

// TCP is a TCP SYN frame (ports and flags only) received on interface in.
func TCP(in int, src, dst netip.AddrPort) stagetest.In {
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	l4[12], l4[13] = 5<<4, 0x02
	return IPv4(in, header.ProtoTCP, src.Addr(), dst.Addr(), l4)
}

// Ping is an ICMP echo request frame received on interface in.
func Ping(in int, src, dst netip.Addr) stagetest.In {
	l4 := make([]byte, 8)
	l4[0] = header.ICMPEchoRequest
	binary.BigEndian.PutUint16(l4[2:], header.Checksum(l4, 0))
	return IPv4(in, header.ProtoICMP, src, dst, l4)
}

// Resolve has the client and the server ask the box for its gateway addresses by ARP, as
// their kernels do before they send through it; the stack answers and learns both, so the
// forward stage knows their MAC addresses from then on.
func Resolve(t testing.TB, h *stagetest.Harness) {
	t.Helper()
	for _, side := range []struct {
		in       int
		mac      [6]byte
		ip, gate netip.Addr
	}{
		{wire.Inside, ClientMAC, Client, Config.Inside.Addr()},
		{wire.Outside, ServerMAC, Server, Config.Outside.Addr()},
	} {
		f := make([]byte, header.EthernetLen+header.ARPLen)
		header.EncodeEthernet(f, header.BroadcastMAC, side.mac, header.EtherTypeARP)
		header.EncodeARP4(f[header.EthernetLen:], header.ARPRequest, side.mac, side.ip.As4(), header.MAC{}, side.gate.As4())
		h.Step(stagetest.In{If: side.in, Data: f})
		// (On the first pass shard 0's stack also announces its addresses: gratuitous ARP.)
		if o := h.Outcomes()[0]; o.Verdict != pipelines.Transmit || o.If != side.in {
			t.Fatalf("ARP request for %v from %v: %+v, want a reply on interface %d", side.gate, side.ip, h.Outcomes(), side.in)
		}
	}
}

// CheckForwarded checks that out is the frame in forwarded: on the other interface, from the
// box's MAC to the next hop's, TTL one lower with a valid header checksum, the rest unchanged.
func CheckForwarded(t testing.TB, in stagetest.In, out stagetest.Out) {
	t.Helper()
	want := 1 - in.If
	if out.If != want {
		t.Errorf("forwarded on interface %d, want %d", out.If, want)
	}
	d := out.Data
	if len(d) != len(in.Data) {
		t.Fatalf("forwarded %d bytes, received %d", len(d), len(in.Data))
	}
	m, p := ifMAC(want), peerMAC(want)
	if [6]byte(d[0:6]) != p || [6]byte(d[6:12]) != m {
		t.Errorf("forwarded from %x to %x, want from %x to %x", d[6:12], d[0:6], m, p)
	}
	ip, e := header.ParseIPv4(d[header.EthernetLen:])
	if e != header.IPv4OK {
		t.Fatalf("forwarded IPv4 header: %v", e)
	}
	if got, sent := ip.TTL(), in.Data[header.EthernetLen+8]; got != sent-1 {
		t.Errorf("TTL %d after forwarding, sent %d", got, sent)
	}
	for i := header.EthernetLen; i < len(d); i++ {
		if i == header.EthernetLen+8 || i == header.EthernetLen+10 || i == header.EthernetLen+11 {
			continue // TTL and header checksum
		}
		if d[i] != in.Data[i] {
			t.Fatalf("byte %d changed in forwarding: %#x, sent %#x", i, d[i], in.Data[i])
		}
	}
}

// Harness runs shard shard of shards of a wire pipeline with filters between wire's local and
// forward stages, on the lab's addresses (Config), with both neighbours resolved.
func Harness(t *testing.T, shard, shards int, filters ...pipelines.Stage) *stagetest.Harness {
	t.Helper()
	r, err := wire.New(Config)
	if err != nil {
		t.Fatal(err)
	}
	h := stagetest.NewPipeline(t, r.Pipeline(shard, filters...), Info(shard, shards))
	Resolve(t, h)
	return h
}
