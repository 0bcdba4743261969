package header

import (
	"net/netip"
	"testing"
)

// Sinks keep the compiler from dropping the reads below.
var (
	sinkU64  uint64
	sinkAddr netip.Addr
	sinkMAC  MAC
	sinkBool bool
)

// TestAllocs checks that parsing, reading and writing every header and
// computing checksums allocate nothing.
func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("testing.AllocsPerRun counts the race detector's own allocations: allocation checks run without -race")
	}
	arp := mustHex(fxARPRequest)
	echo := mustHex(fxEchoRequest)
	dns := mustHex(fxDNSQuery)
	syn := mustHex(fxTCPSYN)
	out := make([]byte, 128)
	src, dst := ipA, ipB
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"ethernet", func() {
			e, ok := ParseEthernet(echo)
			sinkBool = ok
			sinkMAC = e.Dst()
			e.SetDst(e.Src())
			e.SetSrc(sinkMAC)
			e.SetType(e.Type())
			sinkU64 += uint64(len(e.Payload()))
			EncodeEthernet(out, sinkMAC, BroadcastMAC, EtherTypeARP)
		}},
		{"arp", func() {
			a, ok := ParseARP(arp[EthernetLen:])
			sinkBool = ok
			sinkU64 += uint64(a.Op())
			sinkMAC = a.SenderMAC()
			sinkMAC = a.TargetMAC()
			sinkAddr = a.SenderIP()
			sinkAddr = a.TargetIP()
			sinkU64 += uint64(a.SenderIP4()[0] + a.TargetIP4()[3])
			EncodeARP(out, ARPReply, a.TargetMAC(), a.TargetIP(), a.SenderMAC(), a.SenderIP())
		}},
		{"ipv4", func() {
			h, why := ParseIPv4(echo[EthernetLen:])
			sinkBool = why == IPv4OK
			sinkU64 += uint64(h.IHL()) + uint64(h.TOS()) + uint64(h.TotalLength()) + uint64(h.ID()) +
				uint64(h.FragmentOffset()) + uint64(h.TTL()) + uint64(h.Protocol()) + uint64(h.Checksum()) +
				uint64(len(h.Options())) + uint64(len(h.Payload()))
			sinkBool = h.DF() || h.MF() || h.IsFragment()
			sinkAddr = h.Src()
			sinkAddr = h.Dst()
			s4, d4 := h.Src4(), h.Dst4()
			h.SetSrc(h.Dst())
			h.SetDst(sinkAddr)
			h.SetSrc4(s4)
			h.SetDst4(d4)
			h.SetTTL(h.TTL())
			h.SetID(h.ID())
			h.SetTotalLength(h.TotalLength())
			h.SetFragment(h.DF(), h.MF(), h.FragmentOffset())
			h.SetChecksum(UpdateChecksum16(h.Checksum(), 0x4001, 0x4001))
			h.SetChecksum(UpdateChecksum32(h.Checksum(), s4, s4))
			h.FixChecksum()
			EncodeIPv4(out, IPv4Fields{TotalLength: 60, TTL: 64, Protocol: ProtoUDP, Src: src, Dst: dst})
			sinkU64 += uint64(why.String()[0])
		}},
		{"icmpv4", func() {
			h, _ := ParseIPv4(echo[EthernetLen:])
			m, ok := ParseICMPv4(h.Payload())
			sinkBool = ok && m.ChecksumValid()
			sinkU64 += uint64(m.Type()) + uint64(m.Code()) + uint64(m.Checksum()) + uint64(m.ID()) + uint64(m.Seq()) +
				uint64(m.MTU()) + uint64(len(m.Payload()))
			m.SetType(m.Type())
			m.SetCode(m.Code())
			m.SetID(m.ID())
			m.SetSeq(m.Seq())
			m.SetChecksum(m.Checksum())
			m.FixChecksum()
		}},
		{"udp", func() {
			h, _ := ParseIPv4(dns[EthernetLen:])
			u, ok := ParseUDP(h.Payload())
			sinkBool = ok && u.ChecksumValid(h.Src(), h.Dst())
			sinkU64 += uint64(u.SrcPort()) + uint64(u.DstPort()) + uint64(u.Length()) + uint64(u.Checksum()) + uint64(len(u.Payload()))
			u.SetSrcPort(u.SrcPort())
			u.SetDstPort(u.DstPort())
			u.SetLength(u.Length())
			u.SetChecksum(u.Checksum())
			u.FixChecksum(h.Src(), h.Dst())
			EncodeUDP(out, 1, 2, 10).FixChecksum(src, dst)
		}},
		{"tcp", func() {
			h, _ := ParseIPv4(syn[EthernetLen:])
			s, ok := ParseTCP(h.Payload())
			sinkBool = ok && s.ChecksumValid(h.Src(), h.Dst())
			sinkU64 += uint64(s.SrcPort()) + uint64(s.DstPort()) + uint64(s.Seq()) + uint64(s.Ack()) + uint64(s.DataOffset()) +
				uint64(s.Flags()) + uint64(s.Window()) + uint64(s.Checksum()) + uint64(s.Urgent()) +
				uint64(len(s.Options())) + uint64(len(s.Payload()))
			s.SetSrcPort(s.SrcPort())
			s.SetDstPort(s.DstPort())
			s.SetSeq(s.Seq())
			s.SetAck(s.Ack())
			s.SetDataOffset(s.DataOffset())
			s.SetFlags(s.Flags())
			s.SetWindow(s.Window())
			s.SetUrgent(s.Urgent())
			s.SetChecksum(s.Checksum())
			s.FixChecksum(h.Src(), h.Dst())
			var o TCPOptions
			sinkBool = ParseTCPOptions(s.Options(), &o)
			o.NumSACK = 1
			sinkU64 += uint64(EncodeTCPOptions(out, &o))
			EncodeTCP(out, TCPFields{SrcPort: 1, DstPort: 2, Flags: TCPFlagSYN, Options: &o}, 0).FixChecksum(src, dst)
		}},
		{"checksum", func() {
			sinkU64 += uint64(Checksum(syn, PseudoHeaderSum(src, dst, ProtoTCP, len(syn))))
			sinkU64 += uint64(PseudoHeaderSum4(src.As4(), dst.As4(), ProtoUDP, 8))
		}},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", tc.name, n)
		}
	}
}
