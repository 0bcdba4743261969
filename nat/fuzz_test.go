package nat

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// The fuzz NAT's limits: a few mappings and external ports, so that the fuzzer reaches the
// table-full and port-exhaustion paths, short timeouts so that advancing the clock expires
// mappings, and one static forward.
var (
	fuzzCfg = Config{MaxMappings: 8, PortLo: 20000, PortHi: 20015,
		Timeouts: Timeouts{TCPEstablished: 10 * time.Second, TCPTransitory: 3 * time.Second, UDP: 2 * time.Second, ICMP: time.Second},
		Forwards: []Forward{{Proto: header.ProtoUDP, ExtPort: 8080, Inside: netip.AddrPortFrom(client, 80)}}}
	fuzzPrefix = netip.MustParsePrefix("198.18.1.0/24")
)

// Bits of a fuzz record's first byte; the rest of it (>> 3) moves the clock on by that many
// quarter seconds before the frame goes in.
const (
	recOutside = 1 << 0 // received on the outside interface (else inside)
	recKeepIP  = 1 << 1 // keep the IPv4 header checksum (else it is made valid)
	recKeepL4  = 1 << 2 // keep the TCP, UDP or ICMP checksum (else an unfragmented packet's is made valid)
)

// FuzzNATFrames feeds whole frames, received on either interface, through a NAT shard's
// pipeline (the NAT stage with the shard's stack behind it), with the clock moving between
// them. The input is a list of records: a byte of flags (interface, checksums left as they
// are instead of made valid, clock),
// a 16-bit length and the frame. After each frame it checks: nothing panics; the frame gets
// a verdict (the harness fails on a packet left undecided); every IPv4 packet sent on the
// outside interface has a valid header checksum and the outside address as its source, and
// one translated from the inside leaves from an external port the NAT may hand out; every
// IPv4 packet sent on the inside interface has a valid header checksum; a packet whose
// transport checksum verified when it came in still verifies when it goes out, and one the
// NAT or its stack made verifies; the mappings stay within MaxMappings (plus the static
// forwards), each on the outside address and one of its ports, and the list agrees with the
// counters.
func FuzzNATFrames(f *testing.F) {
	for _, recs := range natSeeds(f) {
		f.Add(recs)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fx := newFixture(t, fuzzCfg, 0, 1)
		for n := 0; len(data) >= 3 && n < 32; n++ {
			flags := data[0]
			size := min(int(binary.BigEndian.Uint16(data[1:3])), len(data)-3, header.EthernetLen+1500)
			frame := append([]byte(nil), data[3:3+size]...)
			data = data[3+size:]
			if flags&recKeepL4 == 0 {
				natFixL4(frame)
			}
			if flags&recKeepIP == 0 {
				natFixIPv4(frame)
			}
			in := Inside
			if flags&recOutside != 0 {
				in = Outside
			}
			fx.h.Advance(time.Duration(flags>>3) * 250 * time.Millisecond)
			natStepChecked(t, fx, in, frame)
		}
	})
}

// natStepChecked runs the pipeline over one frame received on interface in and checks what
// came out.
func natStepChecked(t *testing.T, fx *fixture, in int, frame []byte) {
	t.Helper()
	fx.h.Step(stagetest.In{If: in, Data: frame})
	fed := 0
	for _, o := range fx.h.Outcomes() {
		if o.Fed == 0 {
			fed++
		}
		if o.Verdict != pipelines.Transmit {
			continue
		}
		d := o.Data
		if len(d) < header.EthernetLen || binary.BigEndian.Uint16(d[12:14]) != header.EtherTypeIPv4 {
			continue // ARP
		}
		ip, e := header.ParseIPv4(d[header.EthernetLen:])
		if e != header.IPv4OK {
			t.Fatalf("sent on interface %d an IPv4 packet with a bad header (%v): % x", o.If, e, d)
		}
		switch o.If {
		case Outside:
			if ip.Src() != outside {
				t.Fatalf("sent outward a packet from %v (received on %d: % x): % x", ip.Src(), in, frame, d)
			}
			if sport, ok := natSrcPort(ip); ok && in == Inside && !o.Originated() && !natExtPort(sport) {
				t.Fatalf("translated outward from port %d, outside %d-%d and the forwards: % x", sport, fuzzCfg.PortLo, fuzzCfg.PortHi, d)
			}
		case Inside:
		default:
			t.Fatalf("sent on interface %d", o.If)
		}
		if ip.IsFragment() {
			continue
		}
		if o.Originated() || natL4Valid(frame) {
			if !natL4Valid(d) {
				t.Fatalf("sent on interface %d a packet whose transport checksum does not verify (received on %d, originated %v): % x\nreceived % x", o.If, in, o.Originated(), d, frame)
			}
		}
	}
	if fed != 1 {
		t.Fatalf("the frame has %d outcomes", fed)
	}
	st := fx.n.Stats()
	limit := int64(fuzzCfg.MaxMappings + len(fuzzCfg.Forwards))
	if st.Active < 0 || st.Active > limit {
		t.Fatalf("%d mappings active, the limit is %d", st.Active, limit)
	}
	ms := fx.n.Mappings()
	if int64(len(ms)) != st.Active {
		t.Fatalf("%d mappings listed, %d counted active: %+v", len(ms), st.Active, ms)
	}
	for _, m := range ms {
		ext, err := netip.ParseAddrPort(m.External)
		if err != nil || ext.Addr() != outside || !natExtPort(ext.Port()) {
			t.Fatalf("mapping %+v: external address outside %v %d-%d and the forwards", m, outside, fuzzCfg.PortLo, fuzzCfg.PortHi)
		}
		if ins, err := netip.ParseAddrPort(m.Inside); err != nil || !fuzzPrefix.Contains(ins.Addr()) {
			t.Fatalf("mapping %+v: inside endpoint not on the inside network", m)
		}
	}
}

// natExtPort reports whether p is an external port of the fuzz NAT.
func natExtPort(p uint16) bool {
	if p >= fuzzCfg.PortLo && p <= fuzzCfg.PortHi {
		return true
	}
	for _, fw := range fuzzCfg.Forwards {
		if fw.ExtPort == p {
			return true
		}
	}
	return false
}

// natSrcPort is the source port of an unfragmented TCP or UDP packet.
func natSrcPort(ip header.IPv4) (uint16, bool) {
	if ip.IsFragment() || (ip.Protocol() != header.ProtoTCP && ip.Protocol() != header.ProtoUDP) || len(ip.Payload()) < 8 {
		return 0, false
	}
	return binary.BigEndian.Uint16(ip.Payload()), true
}

// natL4Valid reports whether f is an unfragmented IPv4 TCP, UDP (checksum 0: none) or ICMP
// packet whose transport checksum verifies.
func natL4Valid(f []byte) bool {
	if len(f) < header.EthernetLen || binary.BigEndian.Uint16(f[12:14]) != header.EtherTypeIPv4 {
		return false
	}
	ip, e := header.ParseIPv4(f[header.EthernetLen:])
	if e != header.IPv4OK || ip.IsFragment() {
		return false
	}
	pl := ip.Payload()
	switch ip.Protocol() {
	case header.ProtoTCP:
		t, ok := header.ParseTCP(pl)
		return ok && t.ChecksumValid(ip.Src(), ip.Dst())
	case header.ProtoUDP:
		u, ok := header.ParseUDP(pl)
		return ok && (u.Checksum() == 0 || u.ChecksumValid(ip.Src(), ip.Dst()))
	case header.ProtoICMP:
		m, ok := header.ParseICMPv4(pl)
		return ok && m.ChecksumValid()
	}
	return false
}

// natFixIPv4 recomputes the IPv4 header checksum of a frame, if it has a header to fix.
func natFixIPv4(f []byte) {
	if ip, ok := header.IPv4InFrame(f); ok {
		ip.FixChecksum()
	}
}

// natFixL4 recomputes the transport checksum of an unfragmented packet whose header and
// total length are sound (the header checksum aside).
func natFixL4(f []byte) {
	ip, ok := header.IPv4InFrame(f)
	if !ok || ip.TotalLength() < ip.IHL() || ip.TotalLength() > len(ip) || ip.IsFragment() {
		return
	}
	pl := ip[ip.IHL():ip.TotalLength()]
	switch ip.Protocol() {
	case header.ProtoTCP:
		if t, ok := header.ParseTCP(pl); ok {
			t.FixChecksum(ip.Src(), ip.Dst())
		}
	case header.ProtoUDP:
		if u, ok := header.ParseUDP(pl); ok {
			u.FixChecksum(ip.Src(), ip.Dst())
		}
	case header.ProtoICMP:
		if m, ok := header.ParseICMPv4(pl); ok {
			m.FixChecksum()
		}
	}
}

// natRec is one record of FuzzNATFrames's input.
type natRec struct {
	flags uint8
	frame []byte
}

func natRecords(recs ...natRec) []byte {
	var b []byte
	for _, r := range recs {
		b = append(b, r.flags)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.frame)))
		b = append(b, r.frame...)
	}
	return b
}

// natFragments cuts the IPv4 packet of frame f into fragments of at most mtu bytes of
// payload (a multiple of 8), each a frame with f's Ethernet header.
func natFragments(f []byte, mtu int) [][]byte {
	ip := header.IPv4(f[header.EthernetLen:])
	pl := ip.Payload()
	var out [][]byte
	for off := 0; off < len(pl); off += mtu {
		n := min(mtu, len(pl)-off)
		fr := make([]byte, header.EthernetLen+header.IPv4MinLen+n)
		copy(fr, f[:header.EthernetLen])
		header.EncodeIPv4(fr[header.EthernetLen:], header.IPv4Fields{TotalLength: header.IPv4MinLen + n, ID: ip.ID(), MF: off+n < len(pl),
			FragmentOffset: off, TTL: ip.TTL(), Protocol: ip.Protocol(), Src: ip.Src(), Dst: ip.Dst()})
		copy(fr[header.EthernetLen+header.IPv4MinLen:], pl[off:off+n])
		out = append(out, fr)
	}
	return out
}

// natSeeds are valid conversations through the fuzz NAT: UDP, TCP and ICMP both ways, an
// ICMP error about a translated datagram, ICMP errors from the inside about a reply (the
// client's and an inside router's), a static forward, fragmented datagrams both ways
// (in order and not), the NAT's own addresses spoken to, and a TTL running out.
func natSeeds(t testing.TB) [][]byte {
	const port = 20005 // in the NAT's range: preserved
	out := func(l4 gopacket.SerializableLayer, payload []byte) []byte {
		return frame(t, clientMAC, inMAC, client, server, 64, l4, payload)
	}
	in := func(l4 gopacket.SerializableLayer, payload []byte) []byte {
		return frame(t, serverMAC, outMAC, server, outside, 64, l4, payload)
	}
	udp := func(s, d uint16) *layers.UDP {
		return &layers.UDP{SrcPort: layers.UDPPort(s), DstPort: layers.UDPPort(d)}
	}
	tcp := func(s, d uint16, seq, ack uint32, syn, ackf, fin, rst bool) *layers.TCP {
		return &layers.TCP{SrcPort: layers.TCPPort(s), DstPort: layers.TCPPort(d), Seq: seq, Ack: ack, SYN: syn, ACK: ackf, FIN: fin, RST: rst, Window: 1000}
	}
	big := make([]byte, 3000)
	for i := range big {
		big[i] = byte(i)
	}
	udpOutFrags := natFragments(out(udp(port, 53), big), 1480)
	udpInFrags := natFragments(in(udp(53, port), big), 1480)
	icmpFrags := natFragments(out(&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: port, Seq: 1}, big), 1000)

	translated := out(udp(port, 9), []byte("x"))
	quote := append([]byte(nil), translated[14:14+28]...)
	header.IPv4(quote).SetSrc(outside)
	header.IPv4(quote).FixChecksum()
	binary.BigEndian.PutUint16(quote[20+6:], 0) // a quoted UDP checksum of 0 (none)

	// The client's port unreachable about the reply it got (the reply as the NAT delivers
	// it: to the client's port, TTL 63), and a router's time exceeded about it.
	answer := frame(t, serverMAC, inMAC, server, client, 63, udp(53, port), []byte("answer"))[14:]
	unreachOut := frame(t, clientMAC, inMAC, client, server, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, answer)
	exceededOut := frame(t, clientMAC, inMAC, netip.MustParseAddr("198.18.1.254"), server, 64,
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(11, 0)}, answer[:28])

	ping := func(dst netip.Addr, outsideIf bool) []byte {
		if outsideIf {
			return frame(t, serverMAC, outMAC, server, dst, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, []byte("ping"))
		}
		return frame(t, clientMAC, inMAC, client, dst, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, []byte("ping"))
	}
	arp := serializeARP(t)
	return [][]byte{
		natRecords(natRec{0, out(udp(port, 53), []byte("query"))}, natRec{recOutside, in(udp(53, port), []byte("answer"))},
			natRec{recOutside, in(udp(54, port), []byte("stranger"))}, natRec{recOutside | 12<<3, in(udp(53, port), []byte("late"))}),
		natRecords(natRec{0, out(tcp(port, 80, 1, 0, true, false, false, false), nil)},
			natRec{recOutside, in(tcp(80, port, 100, 2, true, true, false, false), nil)},
			natRec{0, out(tcp(port, 80, 2, 101, false, true, false, false), []byte("GET /"))},
			natRec{recOutside, in(tcp(80, port, 101, 7, false, true, true, false), []byte("200"))},
			natRec{0, out(tcp(port, 80, 7, 105, false, true, true, false), nil)},
			natRec{recOutside, in(tcp(80, port, 105, 8, false, false, false, true), nil)}),
		natRecords(natRec{0, out(&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: port, Seq: 1}, []byte("ping"))},
			natRec{recOutside, in(&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0), Id: port, Seq: 1}, []byte("ping"))},
			natRec{0, translated},
			natRec{recOutside, in(&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, quote)}),
		natRecords(natRec{0, out(udp(port, 53), []byte("query"))}, natRec{recOutside, in(udp(53, port), []byte("answer"))},
			natRec{0, unreachOut}, natRec{0, exceededOut}),
		natRecords(natRec{recOutside, in(udp(4444, 8080), []byte("to the forward"))}, natRec{0, out(udp(80, 4444), []byte("back"))}),
		natRecords(natRec{0, udpOutFrags[0]}, natRec{0, udpOutFrags[1]}, natRec{0, udpOutFrags[2]},
			natRec{recOutside, udpInFrags[2]}, natRec{recOutside, udpInFrags[0]}, natRec{recOutside, udpInFrags[1]}),
		natRecords(natRec{0, icmpFrags[2]}, natRec{0, icmpFrags[1]}, natRec{0, icmpFrags[0]}, natRec{0, icmpFrags[1]}),
		natRecords(natRec{0, ping(insideAddr, false)}, natRec{recOutside, ping(outside, true)}, natRec{recOutside, ping(insideAddr, true)},
			natRec{0, frame(t, clientMAC, inMAC, client, server, 1, udp(port, 53), []byte("ttl"))},
			natRec{0, frame(t, clientMAC, inMAC, netip.MustParseAddr("10.0.0.1"), server, 64, udp(port, 53), []byte("spoofed"))},
			natRec{0, arp}),
	}
}

// serializeARP is an ARP request from the client for the NAT's inside address.
func serializeARP(t testing.TB) []byte {
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
		&layers.Ethernet{SrcMAC: mac(clientMAC), DstMAC: mac([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: clientMAC[:], SourceProtAddress: client.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: insideAddr.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}
