package header

import (
	"encoding/hex"
	"net/netip"
	"strings"
)

// Frames captured with tcpdump on a veth pair between two network
// namespaces (Linux 6.18, transmit checksum offload off so that every
// checksum is complete): host A 198.18.0.1 / 02:6e:63:00:00:01 and host B
// 198.18.0.2 / 02:6e:63:00:00:02. A ran `ping -c1 -s 16`, `ping -c1 -R -s 8`
// (record route: IPv4 options), `dig @198.18.0.2 example.com` (B has no DNS
// server and answered with ICMP port unreachable) and `curl` against a
// `python3 -m http.server 8080` on B. The expected values come from tcpdump's
// decoding of the same frames.
var (
	fxARPRequest   = "ffffffffffff026e6300000108060001080006040001026e63000001c6120001000000000000c6120002"
	fxARPReply     = "026e63000001026e6300000208060001080006040002026e63000002c6120002026e63000001c6120001"
	fxEchoRequest  = "026e63000002026e6300000108004500002ca9aa4000400104ffc6120001c61200020800321e051a0001bcb9066b00000000f5a1080000000000"
	fxEchoReply    = "026e63000001026e6300000208004500002c83c7000040016ae2c6120002c612000100003a1e051a0001bcb9066b00000000f5a1080000000000"
	fxEchoRRReq    = "026e63000002026e6300000108004f00004ca0bd4000400115a9c6120001c612000201072708c612000100000000000000000000000000000000000000000000000000000000000000000800e77d047100010001020304050607"
	fxEchoRRReply  = "026e63000001026e6300000208004f00004c7b280000400114e8c6120002c6120001072710c6120001c6120002c6120002000000000000000000000000000000000000000000000000000000ef7d047100010001020304050607"
	fxDNSQuery     = "026e63000002026e63000001080045000050e874000040110601c6120001c6120002c2b10035003ce896532201200001000000000001076578616d706c6503636f6d000001000100002904d000000000000c000a00083b499b559c7e2ceb"
	fxPortUnreach  = "026e63000001026e63000002080045c0006c83d20000400169d7c6120002c6120001030389720000000045000050e874000040110601c6120001c6120002c2b10035003ce896532201200001000000000001076578616d706c6503636f6d000001000100002904d000000000000c000a00083b499b559c7e2ceb"
	fxTCPSYN       = "026e63000002026e6300000108004500003c9832400040061662c6120001c612000280061f90d3b76e2000000000a002faf01aff0000020405b40402080ac4450031000000000103030a"
	fxTCPSYNACK    = "026e63000001026e6300000208004500003c000040004006ae94c6120002c61200011f90800699c1c379d3b76e21a012fe887bee0000020405b40402080a1d4220eac44500310103030a"
	fxTCPACK       = "026e63000002026e630000010800450000349833400040061669c6120001c612000280061f90d3b76e2199c1c37a8010003fa90700000101080ac44500311d4220ea"
	fxTCPHTTPGet   = "026e63000002026e630000010800450000839834400040061619c6120001c612000280061f90d3b76e2199c1c37a8018003fe05000000101080ac44500311d4220ea474554202f20485454502f312e310d0a486f73743a203139382e31382e302e323a383038300d0a557365722d4167656e743a206375726c2f372e38382e310d0a4163636570743a202a2f2a0d0a0d0a"
	fxRRReqOptions = "01072708c6120001" + strings.Repeat("00", 32)
	fxRRRepOptions = "072710c6120001c6120002c6120002" + strings.Repeat("00", 25)
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

var (
	macA = MAC{0x02, 0x6e, 0x63, 0x00, 0x00, 0x01}
	macB = MAC{0x02, 0x6e, 0x63, 0x00, 0x00, 0x02}
	ipA  = netip.MustParseAddr("198.18.0.1")
	ipB  = netip.MustParseAddr("198.18.0.2")
)

// summary is everything the decoders below read from a frame, in a form
// that compares with ==/reflect.DeepEqual. Checksum validity is part of it.
type summary struct {
	Eth  ethSum
	ARP  *arpSum
	IP   *ipSum
	ICMP *icmpSum
	UDP  *udpSum
	TCP  *tcpSum
}

type ethSum struct {
	Dst, Src MAC
	Type     uint16
}

type arpSum struct {
	Op                   uint16
	SenderMAC, TargetMAC MAC
	SenderIP, TargetIP   netip.Addr
}

type ipSum struct {
	IHL            int
	TOS            uint8
	TotalLength    int
	ID             uint16
	DF, MF         bool
	FragmentOffset int
	TTL, Protocol  uint8
	Checksum       uint16
	Src, Dst       netip.Addr
	Options        string // hex
	PayloadLen     int
}

type icmpSum struct {
	Type, Code   uint8
	Checksum     uint16
	ID, Seq      uint16
	PayloadLen   int
	ChecksumGood bool
}

type udpSum struct {
	SrcPort, DstPort uint16
	Length           int
	Checksum         uint16
	PayloadLen       int
	ChecksumGood     bool
}

type tcpSum struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	DataOffset       int
	Flags            uint8
	Window           uint16
	Checksum         uint16
	Urgent           uint16
	PayloadLen       int
	ChecksumGood     bool
	Opts             TCPOptions
}

type fixture struct {
	name string
	hex  string
	want summary
}

func ip(tl int, id uint16, df bool, proto uint8, csum uint16, src, dst netip.Addr, payload int) *ipSum {
	return &ipSum{IHL: 20, TotalLength: tl, ID: id, DF: df, TTL: 64, Protocol: proto, Checksum: csum, Src: src, Dst: dst, PayloadLen: payload}
}

func withOpts(h *ipSum, ihl int, opts string) *ipSum {
	h.IHL, h.Options = ihl, opts
	return h
}

func withTOS(h *ipSum, tos uint8) *ipSum {
	h.TOS = tos
	return h
}

var (
	ethAB = ethSum{Dst: macB, Src: macA, Type: EtherTypeIPv4}
	ethBA = ethSum{Dst: macA, Src: macB, Type: EtherTypeIPv4}
)

var fixtures = []fixture{
	{"arp-request", fxARPRequest, summary{
		Eth: ethSum{Dst: BroadcastMAC, Src: macA, Type: EtherTypeARP},
		ARP: &arpSum{Op: ARPRequest, SenderMAC: macA, SenderIP: ipA, TargetIP: ipB},
	}},
	{"arp-reply", fxARPReply, summary{
		Eth: ethSum{Dst: macA, Src: macB, Type: EtherTypeARP},
		ARP: &arpSum{Op: ARPReply, SenderMAC: macB, SenderIP: ipB, TargetMAC: macA, TargetIP: ipA},
	}},
	{"icmp-echo-request", fxEchoRequest, summary{
		Eth:  ethAB,
		IP:   ip(44, 43434, true, ProtoICMP, 0x04ff, ipA, ipB, 24),
		ICMP: &icmpSum{Type: ICMPEchoRequest, Checksum: 0x321e, ID: 1306, Seq: 1, PayloadLen: 16, ChecksumGood: true},
	}},
	{"icmp-echo-reply", fxEchoReply, summary{
		Eth:  ethBA,
		IP:   ip(44, 33735, false, ProtoICMP, 0x6ae2, ipB, ipA, 24),
		ICMP: &icmpSum{Type: ICMPEchoReply, Checksum: 0x3a1e, ID: 1306, Seq: 1, PayloadLen: 16, ChecksumGood: true},
	}},
	{"icmp-echo-request-record-route", fxEchoRRReq, summary{
		Eth:  ethAB,
		IP:   withOpts(ip(76, 41149, true, ProtoICMP, 0x15a9, ipA, ipB, 16), 60, fxRRReqOptions),
		ICMP: &icmpSum{Type: ICMPEchoRequest, Checksum: 0xe77d, ID: 1137, Seq: 1, PayloadLen: 8, ChecksumGood: true},
	}},
	{"icmp-echo-reply-record-route", fxEchoRRReply, summary{
		Eth:  ethBA,
		IP:   withOpts(ip(76, 31528, false, ProtoICMP, 0x14e8, ipB, ipA, 16), 60, fxRRRepOptions),
		ICMP: &icmpSum{Type: ICMPEchoReply, Checksum: 0xef7d, ID: 1137, Seq: 1, PayloadLen: 8, ChecksumGood: true},
	}},
	{"udp-dns-query", fxDNSQuery, summary{
		Eth: ethAB,
		IP:  ip(80, 59508, false, ProtoUDP, 0x0601, ipA, ipB, 60),
		UDP: &udpSum{SrcPort: 49841, DstPort: 53, Length: 60, Checksum: 0xe896, PayloadLen: 52, ChecksumGood: true},
	}},
	{"icmp-port-unreachable", fxPortUnreach, summary{
		Eth:  ethBA,
		IP:   withTOS(ip(108, 33746, false, ProtoICMP, 0x69d7, ipB, ipA, 88), 0xc0),
		ICMP: &icmpSum{Type: ICMPDestUnreachable, Code: ICMPPortUnreachable, Checksum: 0x8972, PayloadLen: 80, ChecksumGood: true},
	}},
	{"tcp-syn", fxTCPSYN, summary{
		Eth: ethAB,
		IP:  ip(60, 38962, true, ProtoTCP, 0x1662, ipA, ipB, 40),
		TCP: &tcpSum{SrcPort: 32774, DstPort: 8080, Seq: 3552013856, DataOffset: 40, Flags: TCPFlagSYN,
			Window: 64240, Checksum: 0x1aff, ChecksumGood: true,
			Opts: TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 3292856369, HasTS: true, WScale: 10, HasWScale: true}},
	}},
	{"tcp-syn-ack", fxTCPSYNACK, summary{
		Eth: ethBA,
		IP:  ip(60, 0, true, ProtoTCP, 0xae94, ipB, ipA, 40),
		TCP: &tcpSum{SrcPort: 8080, DstPort: 32774, Seq: 2579612537, Ack: 3552013857, DataOffset: 40, Flags: TCPFlagSYN | TCPFlagACK,
			Window: 65160, Checksum: 0x7bee, ChecksumGood: true,
			Opts: TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 490873066, TSEcr: 3292856369, HasTS: true, WScale: 10, HasWScale: true}},
	}},
	{"tcp-ack", fxTCPACK, summary{
		Eth: ethAB,
		IP:  ip(52, 38963, true, ProtoTCP, 0x1669, ipA, ipB, 32),
		TCP: &tcpSum{SrcPort: 32774, DstPort: 8080, Seq: 3552013857, Ack: 2579612538, DataOffset: 32, Flags: TCPFlagACK,
			Window: 63, Checksum: 0xa907, ChecksumGood: true,
			Opts: TCPOptions{TSVal: 3292856369, TSEcr: 490873066, HasTS: true}},
	}},
	{"tcp-http-get", fxTCPHTTPGet, summary{
		Eth: ethAB,
		IP:  ip(131, 38964, true, ProtoTCP, 0x1619, ipA, ipB, 111),
		TCP: &tcpSum{SrcPort: 32774, DstPort: 8080, Seq: 3552013857, Ack: 2579612538, DataOffset: 32, Flags: TCPFlagPSH | TCPFlagACK,
			Window: 63, Checksum: 0xe050, PayloadLen: 79, ChecksumGood: true,
			Opts: TCPOptions{TSVal: 3292856369, TSEcr: 490873066, HasTS: true}},
	}},
}

// padTo60 returns a copy of b padded with zeros to the 60-byte Ethernet
// minimum, as a real NIC sends it (veth does not pad).
func padTo60(b []byte) []byte {
	out := append([]byte(nil), b...)
	for len(out) < 60 {
		out = append(out, 0)
	}
	return out
}
