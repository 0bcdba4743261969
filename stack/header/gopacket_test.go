package header

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// decodeGopacket decodes a frame with gopacket into the same summary that
// decodeOurs fills, as an independent reference. Checksums are judged by
// gopacket itself: each layer is serialized again with ComputeChecksums and
// the checksum gopacket writes is compared with the one in the frame.
func decodeGopacket(frame []byte) (summary, error) {
	var s summary
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: false, NoCopy: true})
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil {
		return s, errors.New("gopacket: no Ethernet layer")
	}
	s.Eth = ethSum{Dst: MAC(eth.DstMAC), Src: MAC(eth.SrcMAC), Type: binary.BigEndian.Uint16(frame[12:14])}
	if arp, _ := p.Layer(layers.LayerTypeARP).(*layers.ARP); arp != nil {
		s.ARP = &arpSum{Op: arp.Operation,
			SenderMAC: MAC(arp.SourceHwAddress), SenderIP: netip.AddrFrom4([4]byte(arp.SourceProtAddress)),
			TargetMAC: MAC(arp.DstHwAddress), TargetIP: netip.AddrFrom4([4]byte(arp.DstProtAddress))}
		return s, nil
	}
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil {
		if el := p.ErrorLayer(); el != nil {
			return s, el.Error()
		}
		return s, nil
	}
	if c, err := gopacketChecksum(ip, nil, 10); err != nil || c != ip.Checksum {
		return s, errors.New("gopacket: IPv4 header checksum does not verify")
	}
	s.IP = &ipSum{IHL: int(ip.IHL) * 4, TOS: ip.TOS, TotalLength: int(ip.Length), ID: ip.Id,
		DF: ip.Flags&layers.IPv4DontFragment != 0, MF: ip.Flags&layers.IPv4MoreFragments != 0,
		FragmentOffset: int(ip.FragOffset) * 8, TTL: ip.TTL, Protocol: uint8(ip.Protocol), Checksum: ip.Checksum,
		Src: netip.AddrFrom4([4]byte(ip.SrcIP.To4())), Dst: netip.AddrFrom4([4]byte(ip.DstIP.To4())),
		Options: hex.EncodeToString(ip.Contents[IPv4MinLen:]), PayloadLen: len(ip.Payload)}
	if icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); icmp != nil {
		c, err := gopacketChecksum(icmp, icmp.Payload, 2)
		s.ICMP = &icmpSum{Type: icmp.TypeCode.Type(), Code: icmp.TypeCode.Code(), Checksum: icmp.Checksum,
			ID: icmp.Id, Seq: icmp.Seq, PayloadLen: len(icmp.Payload), ChecksumGood: err == nil && c == icmp.Checksum}
	}
	if udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP); udp != nil {
		c := *udp
		if err := c.SetNetworkLayerForChecksum(ip); err != nil {
			return s, err
		}
		sum, err := gopacketChecksum(&c, udp.Payload, 6)
		s.UDP = &udpSum{SrcPort: uint16(udp.SrcPort), DstPort: uint16(udp.DstPort), Length: int(udp.Length),
			Checksum: udp.Checksum, PayloadLen: len(udp.Payload),
			// 0 means "no checksum"; gopacket stores a computed 0 as 0, RFC 768 as 0xffff.
			ChecksumGood: err == nil && (udp.Checksum == 0 || sum == udp.Checksum || sum == 0 && udp.Checksum == 0xffff)}
	}
	if tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp != nil {
		c := *tcp
		if err := c.SetNetworkLayerForChecksum(ip); err != nil {
			return s, err
		}
		sum, err := gopacketChecksum(&c, tcp.Payload, 16)
		s.TCP = &tcpSum{SrcPort: uint16(tcp.SrcPort), DstPort: uint16(tcp.DstPort), Seq: tcp.Seq, Ack: tcp.Ack,
			DataOffset: int(tcp.DataOffset) * 4, Flags: tcp.Contents[13], Window: tcp.Window, Checksum: tcp.Checksum,
			Urgent: tcp.Urgent, PayloadLen: len(tcp.Payload), ChecksumGood: err == nil && sum == tcp.Checksum,
			Opts: gopacketTCPOptions(tcp.Options)}
	}
	// A failure above the transport layer (gopacket guesses DNS, TLS, ...
	// from the ports) is not ours to judge.
	if el := p.ErrorLayer(); el != nil && s.ICMP == nil && s.UDP == nil && s.TCP == nil {
		return s, el.Error()
	}
	return s, nil
}

// gopacketChecksum serializes l (and payload) with ComputeChecksums and
// returns the checksum gopacket wrote at offset at.
func gopacketChecksum(l gopacket.SerializableLayer, payload []byte, at int) (uint16, error) {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, l, gopacket.Payload(payload)); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint16(buf.Bytes()[at:]), nil
}

// gopacketTCPOptions turns gopacket's option list into TCPOptions: a
// reference parser independent of ParseTCPOptions.
func gopacketTCPOptions(opts []layers.TCPOption) TCPOptions {
	var o TCPOptions
	for _, opt := range opts {
		d := opt.OptionData
		switch opt.OptionType {
		case layers.TCPOptionKindMSS:
			o.MSS, o.HasMSS = binary.BigEndian.Uint16(d), true
		case layers.TCPOptionKindWindowScale:
			o.WScale, o.HasWScale = d[0], true
		case layers.TCPOptionKindSACKPermitted:
			o.SACKPermitted = true
		case layers.TCPOptionKindTimestamps:
			o.TSVal, o.TSEcr, o.HasTS = binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:]), true
		case layers.TCPOptionKindSACK:
			o.SACK, o.NumSACK = [4][2]uint32{}, len(d)/8
			for j := range o.NumSACK {
				o.SACK[j] = [2]uint32{binary.BigEndian.Uint32(d[8*j:]), binary.BigEndian.Uint32(d[8*j+4:])}
			}
		}
	}
	return o
}

func TestGopacketFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			got, err := decodeGopacket(mustHex(fx.hex))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, fx.want) {
				t.Fatalf("gopacket decoded\n%s\nwant\n%s", dump(got), dump(fx.want))
			}
		})
	}
}

// TestGopacketDecodesOurs builds random frames with this package's
// encoders; gopacket must decode the same fields and agree that every
// checksum verifies.
func TestGopacketDecodesOurs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 500
	}
	for i := range n {
		want, payload := randSummary(rng)
		frame := encodeFrame(want, payload)
		ours, _, stop := decodeOurs(frame)
		if stop != "" {
			t.Fatalf("frame %d: our decoder rejects our encoding at %s: %x", i, stop, frame)
		}
		if !sameModChecksums(ours, want) {
			t.Fatalf("frame %d: decoded\n%s\nwant\n%s", i, dump(ours), dump(want))
		}
		gp, err := decodeGopacket(frame)
		if err != nil {
			t.Fatalf("frame %d: gopacket: %v\n%x", i, err, frame)
		}
		if !reflect.DeepEqual(gp, asGopacketSees(ours)) {
			t.Fatalf("frame %d %x:\ngopacket\n%s\nours\n%s", i, frame, dump(gp), dump(ours))
		}
	}
}

// TestOursDecodesGopacket has gopacket serialize random frames (with
// ComputeChecksums and FixLengths); our parsers must accept them, read the
// same fields and find every checksum good.
func TestOursDecodesGopacket(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	n := 3000
	if testing.Short() {
		n = 500
	}
	for i := range n {
		frame := randGopacketFrame(t, rng)
		gp, err := decodeGopacket(frame)
		if err != nil {
			t.Fatalf("frame %d: gopacket rejects its own frame: %v", i, err)
		}
		ours, _, stop := decodeOurs(frame)
		if stop != "" {
			t.Fatalf("frame %d: rejected at %s: %x", i, stop, frame)
		}
		if !reflect.DeepEqual(gp, asGopacketSees(ours)) {
			t.Fatalf("frame %d %x:\ngopacket\n%s\nours\n%s", i, frame, dump(gp), dump(ours))
		}
		for _, good := range []bool{ours.ICMP == nil || ours.ICMP.ChecksumGood, ours.UDP == nil || ours.UDP.ChecksumGood, ours.TCP == nil || ours.TCP.ChecksumGood} {
			if !good {
				t.Fatalf("frame %d: a checksum gopacket computed does not verify: %s", i, dump(ours))
			}
		}
	}
}

// asGopacketSees drops the transport layer of a fragment, which gopacket
// does not decode (decodeOurs does: whether to look into a fragment is the
// stack's choice, not the views').
func asGopacketSees(s summary) summary {
	if s.IP != nil && (s.IP.MF || s.IP.FragmentOffset != 0) {
		s.ICMP, s.UDP, s.TCP = nil, nil, nil
	}
	return s
}

// sameModChecksums compares two summaries, ignoring the checksum values in
// want (which randSummary cannot know); validity must be true in got.
func sameModChecksums(got, want summary) bool {
	w := want
	if w.IP != nil {
		c := *w.IP
		c.Checksum = got.IP.Checksum
		w.IP = &c
	}
	if w.ICMP != nil {
		c := *w.ICMP
		c.Checksum, c.ChecksumGood = got.ICMP.Checksum, true
		w.ICMP = &c
	}
	if w.UDP != nil {
		c := *w.UDP
		c.Checksum, c.ChecksumGood = got.UDP.Checksum, true
		w.UDP = &c
	}
	if w.TCP != nil {
		c := *w.TCP
		c.Checksum, c.ChecksumGood = got.TCP.Checksum, true
		w.TCP = &c
	}
	return reflect.DeepEqual(got, w)
}

func randAddr(rng *rand.Rand) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], rng.Uint32())
	return netip.AddrFrom4(a)
}

func randMAC(rng *rand.Rand) MAC {
	var m MAC
	for i := range m {
		m[i] = byte(rng.UintN(256))
	}
	return m
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

func randTCPOptions(rng *rand.Rand) TCPOptions {
	var o TCPOptions
	if rng.IntN(2) == 0 {
		o.MSS, o.HasMSS = uint16(rng.Uint32()), true
	}
	if rng.IntN(2) == 0 {
		o.WScale, o.HasWScale = uint8(rng.UintN(15)), true
	}
	o.SACKPermitted = rng.IntN(2) == 0
	if rng.IntN(2) == 0 {
		o.TSVal, o.TSEcr, o.HasTS = rng.Uint32(), rng.Uint32(), true
	}
	_, room := tcpOptionsLayout(&TCPOptions{MSS: o.MSS, HasMSS: o.HasMSS, WScale: o.WScale, HasWScale: o.HasWScale,
		SACKPermitted: o.SACKPermitted, HasTS: o.HasTS, NumSACK: 4})
	o.NumSACK = rng.IntN(room + 1)
	for j := range o.NumSACK {
		o.SACK[j] = [2]uint32{rng.Uint32(), rng.Uint32()}
	}
	return o
}

// randSummary returns a random ARP, ICMP, UDP or TCP frame's fields (the
// checksums left for the encoder to compute) and its payload.
func randSummary(rng *rand.Rand) (summary, []byte) {
	s := summary{Eth: ethSum{Dst: randMAC(rng), Src: randMAC(rng), Type: EtherTypeIPv4}}
	kind := rng.IntN(4)
	if kind == 0 {
		s.Eth.Type = EtherTypeARP
		s.ARP = &arpSum{Op: uint16(1 + rng.IntN(2)), SenderMAC: randMAC(rng), SenderIP: randAddr(rng),
			TargetMAC: randMAC(rng), TargetIP: randAddr(rng)}
		return s, nil
	}
	payload := randBytes(rng, rng.IntN(300))
	off := 0
	if rng.IntN(4) == 0 {
		off = 8 * rng.IntN(0x2000)
	}
	s.IP = &ipSum{IHL: IPv4MinLen, TOS: uint8(rng.UintN(256)), ID: uint16(rng.Uint32()), DF: rng.IntN(2) == 0, MF: rng.IntN(4) == 0,
		FragmentOffset: off, TTL: uint8(rng.UintN(256)), Src: randAddr(rng), Dst: randAddr(rng)}
	switch kind {
	case 1:
		s.IP.Protocol = ProtoICMP
		s.ICMP = &icmpSum{Type: uint8(rng.UintN(256)), Code: uint8(rng.UintN(256)), ID: uint16(rng.Uint32()), Seq: uint16(rng.Uint32()),
			PayloadLen: len(payload)}
		s.IP.PayloadLen = ICMPv4MinLen + len(payload)
	case 2:
		s.IP.Protocol = ProtoUDP
		s.UDP = &udpSum{SrcPort: uint16(rng.Uint32()), DstPort: uint16(rng.Uint32()), Length: UDPLen + len(payload), PayloadLen: len(payload)}
		s.IP.PayloadLen = s.UDP.Length
	case 3:
		s.IP.Protocol = ProtoTCP
		o := randTCPOptions(rng)
		s.TCP = &tcpSum{SrcPort: uint16(rng.Uint32()), DstPort: uint16(rng.Uint32()), Seq: rng.Uint32(), Ack: rng.Uint32(),
			DataOffset: TCPMinLen + TCPOptionsLen(&o), Flags: uint8(rng.UintN(256)), Window: uint16(rng.Uint32()),
			Urgent: uint16(rng.Uint32()), PayloadLen: len(payload), Opts: o}
		s.IP.PayloadLen = s.TCP.DataOffset + len(payload)
	}
	s.IP.TotalLength = IPv4MinLen + s.IP.PayloadLen
	return s, payload
}

// randGopacketFrame has gopacket build a random frame.
func randGopacketFrame(t *testing.T, rng *rand.Rand) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(randBytes(rng, 6)), DstMAC: net.HardwareAddr(randBytes(rng, 6)),
		EthernetType: layers.EthernetTypeIPv4}
	ls := []gopacket.SerializableLayer{eth}
	kind := rng.IntN(4)
	if kind == 0 {
		eth.EthernetType = layers.EthernetTypeARP
		ls = append(ls, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: uint16(1 + rng.IntN(2)),
			SourceHwAddress: randBytes(rng, 6), SourceProtAddress: randBytes(rng, 4),
			DstHwAddress: randBytes(rng, 6), DstProtAddress: randBytes(rng, 4)})
	} else {
		ip := &layers.IPv4{Version: 4, TOS: uint8(rng.UintN(256)), Id: uint16(rng.Uint32()), Flags: layers.IPv4Flag(rng.UintN(4)),
			TTL: uint8(rng.UintN(256)), SrcIP: randBytes(rng, 4), DstIP: randBytes(rng, 4)}
		if rng.IntN(4) == 0 {
			ip.FragOffset = uint16(rng.UintN(0x2000))
		}
		if rng.IntN(4) == 0 { // a record-route option, padded with an EOL and zeros
			n := 1 + rng.IntN(4)
			ip.Options = []layers.IPv4Option{{OptionType: 7, OptionLength: uint8(3 + 4*n), OptionData: append([]byte{4}, randBytes(rng, 4*n)...)},
				{OptionType: 0, OptionLength: 1}}
		}
		ls = append(ls, ip)
		switch kind {
		case 1:
			ip.Protocol = layers.IPProtocolICMPv4
			ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(uint8(rng.UintN(256)), uint8(rng.UintN(256))),
				Id: uint16(rng.Uint32()), Seq: uint16(rng.Uint32())})
		case 2:
			ip.Protocol = layers.IPProtocolUDP
			udp := &layers.UDP{SrcPort: layers.UDPPort(rng.Uint32()), DstPort: layers.UDPPort(rng.Uint32())}
			if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			ls = append(ls, udp)
		case 3:
			ip.Protocol = layers.IPProtocolTCP
			tcp := &layers.TCP{SrcPort: layers.TCPPort(rng.Uint32()), DstPort: layers.TCPPort(rng.Uint32()), Seq: rng.Uint32(),
				Ack: rng.Uint32(), Window: uint16(rng.Uint32()), Urgent: uint16(rng.Uint32()),
				FIN: rng.IntN(2) == 0, SYN: rng.IntN(2) == 0, RST: rng.IntN(2) == 0, PSH: rng.IntN(2) == 0,
				ACK: rng.IntN(2) == 0, URG: rng.IntN(2) == 0, ECE: rng.IntN(2) == 0, CWR: rng.IntN(2) == 0}
			if rng.IntN(2) == 0 {
				tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionData: randBytes(rng, 2)})
			}
			if rng.IntN(2) == 0 {
				tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted})
			}
			if rng.IntN(2) == 0 {
				tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
					layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{uint8(rng.UintN(15))}})
			}
			if rng.IntN(2) == 0 {
				tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionData: randBytes(rng, 8)})
			}
			if rng.IntN(3) == 0 {
				tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionData: randBytes(rng, 8*(1+rng.IntN(2)))})
			}
			if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			ls = append(ls, tcp)
		}
	}
	ls = append(ls, gopacket.Payload(randBytes(rng, rng.IntN(300))))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}
