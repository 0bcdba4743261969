package stack

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
)

var (
	ourMAC  = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	peerMAC = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	ourIP   = netip.MustParseAddr("198.18.0.1")
	peerIP  = netip.MustParseAddr("198.18.0.2")
)

// harness drives one Stack without a shard (pipelines/stagetest): frames in on interface 0,
// frames out, a fake clock.
type harness struct {
	*stagetest.Harness
	t     testing.TB
	h     *Host
	s     *Stack
	sent  [][]byte // frames the stack transmitted in the last step
	drops []pipelines.DropReason
}

func newHarness(t testing.TB, cfg Config, shard, shards int) *harness {
	t.Helper()
	if cfg.Ifaces == nil {
		cfg.Ifaces = []Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}}}
	}
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := h.NewStack(shard)
	hs := &harness{t: t, h: h, s: s}
	hs.Harness = stagetest.NewPipeline(t, &pipelines.Pipeline{Stages: []pipelines.Stage{s}},
		pipelines.ShardInfo{Shard: shard, Shards: shards, Ifaces: []pipelines.Interface{{Name: "t0", MAC: ourMAC, MTU: 1500}}})
	s.garp = true // tests that want the gratuitous ARP clear it
	return hs
}

// step runs the stack over frames received on interface 0 and its originate pass, and
// collects what it transmits.
func (hs *harness) step(frames ...[]byte) [][]byte {
	in := make([]stagetest.In, len(frames))
	for i, f := range frames {
		in[i] = stagetest.In{Data: f}
	}
	hs.sent = hs.sent[:0]
	for _, o := range hs.Step(in...) {
		hs.sent = append(hs.sent, o.Data)
	}
	hs.drops = hs.Drops()
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
