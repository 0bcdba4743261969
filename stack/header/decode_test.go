package header

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// decodeOurs runs a frame through this package's parsers, the way the stack
// will. stop names the layer that rejected the frame ("" if none); payload is
// the innermost payload.
func decodeOurs(frame []byte) (s summary, payload []byte, stop string) {
	e, ok := ParseEthernet(frame)
	if !ok {
		return s, nil, "ethernet"
	}
	s.Eth = ethSum{Dst: e.Dst(), Src: e.Src(), Type: e.Type()}
	switch e.Type() {
	case EtherTypeARP:
		a, ok := ParseARP(e.Payload())
		if !ok {
			return s, nil, "arp"
		}
		s.ARP = &arpSum{Op: a.Op(), SenderMAC: a.SenderMAC(), SenderIP: a.SenderIP(), TargetMAC: a.TargetMAC(), TargetIP: a.TargetIP()}
		return s, nil, ""
	case EtherTypeIPv4:
	default:
		return s, e.Payload(), ""
	}
	h, why := ParseIPv4(e.Payload())
	if why != IPv4OK {
		return s, nil, why.String()
	}
	s.IP = &ipSum{
		IHL: h.IHL(), TOS: h.TOS(), TotalLength: h.TotalLength(), ID: h.ID(),
		DF: h.DF(), MF: h.MF(), FragmentOffset: h.FragmentOffset(),
		TTL: h.TTL(), Protocol: h.Protocol(), Checksum: h.Checksum(),
		Src: h.Src(), Dst: h.Dst(), Options: hex.EncodeToString(h.Options()),
		PayloadLen: len(h.Payload()),
	}
	switch h.Protocol() {
	case ProtoICMP:
		m, ok := ParseICMPv4(h.Payload())
		if !ok {
			return s, nil, "icmp"
		}
		s.ICMP = &icmpSum{Type: m.Type(), Code: m.Code(), Checksum: m.Checksum(), ID: m.ID(), Seq: m.Seq(),
			PayloadLen: len(m.Payload()), ChecksumGood: m.ChecksumValid()}
		return s, m.Payload(), ""
	case ProtoUDP:
		u, ok := ParseUDP(h.Payload())
		if !ok {
			return s, nil, "udp"
		}
		s.UDP = &udpSum{SrcPort: u.SrcPort(), DstPort: u.DstPort(), Length: u.Length(), Checksum: u.Checksum(),
			PayloadLen: len(u.Payload()), ChecksumGood: u.ChecksumValid(h.Src(), h.Dst())}
		return s, u.Payload(), ""
	case ProtoTCP:
		t, ok := ParseTCP(h.Payload())
		if !ok {
			return s, nil, "tcp"
		}
		s.TCP = &tcpSum{SrcPort: t.SrcPort(), DstPort: t.DstPort(), Seq: t.Seq(), Ack: t.Ack(),
			DataOffset: t.DataOffset(), Flags: t.Flags(), Window: t.Window(), Checksum: t.Checksum(),
			Urgent: t.Urgent(), PayloadLen: len(t.Payload()), ChecksumGood: t.ChecksumValid(h.Src(), h.Dst())}
		if !ParseTCPOptions(t.Options(), &s.TCP.Opts) {
			return s, nil, "tcp-options"
		}
		return s, t.Payload(), ""
	}
	return s, h.Payload(), ""
}

// encodeFrame builds a frame from a summary with this package's encoders:
// the inverse of decodeOurs. Checksums are computed, not copied.
func encodeFrame(s summary, payload []byte) []byte {
	n := EthernetLen
	switch {
	case s.ARP != nil:
		n += ARPLen
	case s.IP != nil:
		n += s.IP.TotalLength
	}
	b := make([]byte, n)
	e := EncodeEthernet(b, s.Eth.Dst, s.Eth.Src, s.Eth.Type)
	if a := s.ARP; a != nil {
		EncodeARP(e.Payload(), a.Op, a.SenderMAC, a.SenderIP, a.TargetMAC, a.TargetIP)
		return b
	}
	if s.IP == nil {
		return b
	}
	f := s.IP
	h := EncodeIPv4(e.Payload(), IPv4Fields{TOS: f.TOS, TotalLength: f.TotalLength, ID: f.ID, DF: f.DF, MF: f.MF,
		FragmentOffset: f.FragmentOffset, TTL: f.TTL, Protocol: f.Protocol, Src: f.Src, Dst: f.Dst})
	if f.IHL > IPv4MinLen {
		h[0] = 0x40 | uint8(f.IHL/4)
		copy(h[IPv4MinLen:], mustHex(f.Options))
		h.FixChecksum()
	}
	switch {
	case s.ICMP != nil:
		m := ICMPv4(h.Payload())
		m.SetType(s.ICMP.Type)
		m.SetCode(s.ICMP.Code)
		m.SetID(s.ICMP.ID)
		m.SetSeq(s.ICMP.Seq)
		copy(m.Payload(), payload)
		m.FixChecksum()
	case s.UDP != nil:
		copy(h.Payload()[UDPLen:], payload)
		u := EncodeUDP(h.Payload(), s.UDP.SrcPort, s.UDP.DstPort, len(payload))
		u.FixChecksum(h.Src(), h.Dst())
	case s.TCP != nil:
		f := s.TCP
		copy(h.Payload()[f.DataOffset:], payload)
		t := EncodeTCP(h.Payload(), TCPFields{SrcPort: f.SrcPort, DstPort: f.DstPort, Seq: f.Seq, Ack: f.Ack,
			Flags: f.Flags, Window: f.Window, Urgent: f.Urgent, Options: &f.Opts}, len(payload))
		t.FixChecksum(h.Src(), h.Dst())
	}
	return b
}

// The checks below call every accessor and every setter of an accepted
// view. Each setter writes back what its accessor read, so the bytes must
// not change: accessors and setters agree on every field's place.

func exerciseEthernet(t testing.TB, e Ethernet) {
	t.Helper()
	before := bytes.Clone(e)
	e.SetDst(e.Dst())
	e.SetSrc(e.Src())
	e.SetType(e.Type())
	_ = e.Payload()
	_ = e.Dst().IsBroadcast() || e.Src().IsMulticast()
	if !bytes.Equal(before, e) {
		t.Fatalf("Ethernet setters changed %x to %x", before, []byte(e))
	}
}

func exerciseARP(t testing.TB, a ARP) {
	t.Helper()
	before := bytes.Clone(a)
	EncodeARP(a, a.Op(), a.SenderMAC(), a.SenderIP(), a.TargetMAC(), a.TargetIP())
	if a.SenderIP4() != a.SenderIP().As4() || a.TargetIP4() != a.TargetIP().As4() {
		t.Fatal("ARP raw and netip addresses differ")
	}
	if !bytes.Equal(before, a) {
		t.Fatalf("EncodeARP of the fields read changed %x to %x", before, []byte(a))
	}
}

func exerciseIPv4(t testing.TB, h IPv4) {
	t.Helper()
	before := bytes.Clone(h)
	if h.IHL() < IPv4MinLen || h.IHL() > IPv4MaxLen || h.TotalLength() != len(h) {
		t.Fatalf("accepted IPv4 with IHL %d, total length %d, view %d", h.IHL(), h.TotalLength(), len(h))
	}
	if !sameChecksum(h.ComputeChecksum(), h.Checksum()) {
		t.Fatalf("accepted IPv4 whose checksum %#04x is not %#04x", h.Checksum(), h.ComputeChecksum())
	}
	if len(h.Options())+len(h.Payload())+IPv4MinLen != len(h) || len(h.Header()) != h.IHL() {
		t.Fatal("IPv4 options, header and payload do not add up")
	}
	if h.Src4() != h.Src().As4() || h.Dst4() != h.Dst().As4() {
		t.Fatal("IPv4 raw and netip addresses differ")
	}
	if h.IsFragment() != (h.MF() || h.FragmentOffset() != 0) {
		t.Fatal("IsFragment disagrees with MF and the offset")
	}
	h.SetTOS(h.TOS())
	h.SetTotalLength(h.TotalLength())
	h.SetID(h.ID())
	h.SetFragment(h.DF(), h.MF(), h.FragmentOffset())
	h.SetTTL(h.TTL())
	h.SetProtocol(h.Protocol())
	h.SetSrc(h.Src())
	h.SetDst(h.Dst())
	h.SetChecksum(h.Checksum())
	h[6] |= before[6] & 0x80 // the reserved flag, which SetFragment clears
	if !bytes.Equal(before, h) {
		t.Fatalf("IPv4 setters changed\n%x to\n%x", before, []byte(h))
	}
	h.FixChecksum()
	if !sameChecksum(h.Checksum(), binary.BigEndian.Uint16(before[10:])) {
		t.Fatal("FixChecksum changed a valid header's checksum")
	}
}

func exerciseICMPv4(t testing.TB, m ICMPv4) {
	t.Helper()
	before := bytes.Clone(m)
	valid := m.ChecksumValid()
	if len(m.Payload())+ICMPv4MinLen != len(m) || m.MTU() != m.Seq() {
		t.Fatal("ICMPv4 payload or MTU wrong")
	}
	m.SetType(m.Type())
	m.SetCode(m.Code())
	m.SetChecksum(m.Checksum())
	m.SetID(m.ID())
	m.SetSeq(m.Seq())
	m.SetMTU(m.MTU())
	m.SetRest(uint32(m.ID())<<16 | uint32(m.Seq()))
	if !bytes.Equal(before, m) {
		t.Fatalf("ICMPv4 setters changed %x to %x", before, []byte(m))
	}
	m.FixChecksum()
	if !m.ChecksumValid() || valid && !sameChecksum(m.Checksum(), binary.BigEndian.Uint16(before[2:])) {
		t.Fatal("ICMPv4 FixChecksum wrong")
	}
}

func exerciseUDP(t testing.TB, u UDP) {
	t.Helper()
	before := bytes.Clone(u)
	if u.Length() != len(u) || len(u.Payload())+UDPLen != len(u) {
		t.Fatalf("accepted UDP with length %d, view %d", u.Length(), len(u))
	}
	u.SetSrcPort(u.SrcPort())
	u.SetDstPort(u.DstPort())
	u.SetLength(u.Length())
	u.SetChecksum(u.Checksum())
	if !bytes.Equal(before, u) {
		t.Fatalf("UDP setters changed %x to %x", before, []byte(u))
	}
	src, dst := ipA, ipB
	valid := u.ChecksumValid(src, dst)
	u.FixChecksum(src, dst)
	if !u.ChecksumValid(src, dst) || u.Checksum() == 0 || valid && before[6]|before[7] != 0 && !bytes.Equal(before, u) {
		t.Fatal("UDP FixChecksum wrong")
	}
}

func exerciseTCP(t testing.TB, s TCP) {
	t.Helper()
	before := bytes.Clone(s)
	if s.DataOffset() < TCPMinLen || s.DataOffset() > len(s) ||
		len(s.Options())+TCPMinLen != s.DataOffset() || len(s.Payload())+s.DataOffset() != len(s) {
		t.Fatalf("accepted TCP with data offset %d, view %d", s.DataOffset(), len(s))
	}
	var o TCPOptions
	_ = ParseTCPOptions(s.Options(), &o)
	s.SetSrcPort(s.SrcPort())
	s.SetDstPort(s.DstPort())
	s.SetSeq(s.Seq())
	s.SetAck(s.Ack())
	s.SetDataOffset(s.DataOffset())
	s.SetFlags(s.Flags())
	s.SetWindow(s.Window())
	s.SetChecksum(s.Checksum())
	s.SetUrgent(s.Urgent())
	if !bytes.Equal(before, s) {
		t.Fatalf("TCP setters changed %x to %x", before, []byte(s))
	}
	valid := s.ChecksumValid(ipA, ipB)
	s.FixChecksum(ipA, ipB)
	if !s.ChecksumValid(ipA, ipB) || valid && !sameChecksum(s.Checksum(), binary.BigEndian.Uint16(before[16:])) {
		t.Fatal("TCP FixChecksum wrong")
	}
}

// sameChecksum reports whether two checksum fields are equal in one's
// complement arithmetic, where 0x0000 and 0xffff are both zero: a receiver
// accepts either.
func sameChecksum(a, b uint16) bool {
	return a == b || a|b == 0xffff && (a == 0 || b == 0)
}
