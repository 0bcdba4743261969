package stack

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"netchan/pipelines/stage"
)

var (
	ourMAC  = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	peerMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	ourIP   = netip.MustParseAddr("198.18.0.1")
	peerIP  = netip.MustParseAddr("198.18.0.2")
)

// harness drives one Stack without a shard: frames in, frames out, a fake clock.
type harness struct {
	t     testing.TB
	h     *Host
	s     *Stack
	mem   []byte
	free  []uint64
	b     *stage.Batch
	now   int64
	sent  [][]byte // frames the stack transmitted in the last step
	drops []stage.DropReason
}

const hFrame = 2048

func newHarness(t testing.TB, cfg Config, shard, shards int) *harness {
	t.Helper()
	if cfg.Ifaces == nil {
		cfg.Ifaces = []Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}}}
	}
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := &harness{t: t, h: h, mem: make([]byte, 256*hFrame), now: 1}
	for i := 255; i >= 0; i-- {
		hs.free = append(hs.free, uint64(i*hFrame))
	}
	hs.b = stage.NewBatch(hs.mem, hFrame, 64)
	hs.b.SetAllocator(func() (uint64, bool) {
		if len(hs.free) == 0 {
			return 0, false
		}
		a := hs.free[len(hs.free)-1]
		hs.free = hs.free[:len(hs.free)-1]
		return a, true
	})
	hs.s = h.NewStack(shard)
	hs.s.Start(stage.ShardInfo{Shard: shard, Shards: shards, Ifaces: []stage.Interface{{Name: "t0", MAC: ourMAC, MTU: 1500}}, Wake: func() {}})
	hs.s.garp = true // tests that want the gratuitous ARP clear it
	return hs
}

// step runs the stack over frames (received on interface 0) and its originate pass, and
// collects what it transmits; every frame goes back to the free list.
func (hs *harness) step(frames ...[]byte) [][]byte {
	b := hs.b
	b.Reset()
	b.NowNanos = hs.now
	for _, f := range frames {
		a := hs.free[len(hs.free)-1]
		hs.free = hs.free[:len(hs.free)-1]
		copy(hs.mem[a+stage.Headroom:], f)
		b.Pkts = append(b.Pkts, stage.Packet{Addr: a + stage.Headroom, Len: uint32(len(f))})
	}
	hs.s.Process(b)
	hs.s.Originate(b)
	hs.sent, hs.drops = hs.sent[:0], hs.drops[:0]
	for i, p := range b.Pkts {
		switch p.Verdict {
		case stage.Transmit:
			hs.sent = append(hs.sent, append([]byte(nil), b.Data(i)...))
		case stage.Drop:
			hs.drops = append(hs.drops, p.Reason)
		case stage.Continue:
			hs.t.Fatalf("packet %d left undecided", i)
		}
		hs.free = append(hs.free, p.Addr&^(hFrame-1))
	}
	return hs.sent
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func ethLayer(src, dst [6]byte, typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: net.HardwareAddr(src[:]), DstMAC: net.HardwareAddr(dst[:]), EthernetType: typ}
}

func ipLayer(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Id: 7}
}

func arpRequest(t testing.TB, target netip.Addr) []byte {
	return serialize(t, ethLayer(peerMAC, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, layers.EthernetTypeARP),
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: peerMAC[:], SourceProtAddress: peerIP.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: target.AsSlice()})
}

func arpReply(t testing.TB) []byte {
	return serialize(t, ethLayer(peerMAC, ourMAC, layers.EthernetTypeARP),
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPReply, SourceHwAddress: peerMAC[:], SourceProtAddress: peerIP.AsSlice(),
			DstHwAddress: ourMAC[:], DstProtAddress: ourIP.AsSlice()})
}

func echoRequest(t testing.TB, payload []byte) []byte {
	return serialize(t, ethLayer(peerMAC, ourMAC, layers.EthernetTypeIPv4), ipLayer(peerIP, ourIP, layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 0x1234, Seq: 1}, gopacket.Payload(payload))
}

func udpFrame(t testing.TB, sport, dport uint16, payload []byte) []byte {
	ip := ipLayer(peerIP, ourIP, layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	u.SetNetworkLayerForChecksum(ip)
	return serialize(t, ethLayer(peerMAC, ourMAC, layers.EthernetTypeIPv4), ip, u, gopacket.Payload(payload))
}

func decode(frame []byte) gopacket.Packet {
	return gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{})
}

func pkt(addr uint64, n int) stage.Packet { return stage.Packet{Addr: addr, Len: uint32(n)} }
