// Package testpkt builds and decodes frames for tests with github.com/google/gopacket, an
// independent encoder/decoder, so tests never check netchan's packet code with itself.
package testpkt

import (
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// UDP describes a UDP/IPv4/Ethernet frame.
type UDP struct {
	SrcMAC, DstMAC   net.HardwareAddr
	SrcIP, DstIP     netip.Addr
	SrcPort, DstPort uint16
	Payload          []byte
	TTL              uint8
}

// Build serializes the frame with correct lengths and checksums.
func (u UDP) Build() []byte {
	ttl := u.TTL
	if ttl == 0 {
		ttl = 64
	}
	eth := &layers.Ethernet{SrcMAC: u.SrcMAC, DstMAC: u.DstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: layers.IPProtocolUDP,
		SrcIP: u.SrcIP.AsSlice(), DstIP: u.DstIP.AsSlice(), Id: 1, Flags: layers.IPv4DontFragment}
	udp := &layers.UDP{SrcPort: layers.UDPPort(u.SrcPort), DstPort: layers.UDPPort(u.DstPort)}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(u.Payload))
	if err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// Reflected is what the reflect pipeline must make of u: addresses and ports swapped.
func (u UDP) Reflected() UDP {
	r := u
	r.SrcMAC, r.DstMAC = u.DstMAC, u.SrcMAC
	r.SrcIP, r.DstIP = u.DstIP, u.SrcIP
	r.SrcPort, r.DstPort = u.DstPort, u.SrcPort
	return r
}

// DecodeUDP parses a frame with gopacket; ok is false unless it is a valid UDP/IPv4 frame
// whose IPv4 and UDP checksums verify.
func DecodeUDP(frame []byte) (u UDP, ok bool) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if eth == nil || ip == nil || udp == nil {
		return UDP{}, false
	}
	if csum16(frame[14:14+int(ip.IHL)*4]) != 0 {
		return UDP{}, false
	}
	src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
	dst, _ := netip.AddrFromSlice(ip.DstIP.To4())
	if udp.Checksum != 0 {
		l4 := frame[14+int(ip.IHL)*4 : 14+int(ip.Length)]
		var ph []byte
		ph = append(ph, src.AsSlice()...)
		ph = append(ph, dst.AsSlice()...)
		ph = append(ph, 0, 17, byte(len(l4)>>8), byte(len(l4)))
		if csum16(append(ph, l4...)) != 0 {
			return UDP{}, false
		}
	}
	return UDP{SrcMAC: eth.SrcMAC, DstMAC: eth.DstMAC, SrcIP: src, DstIP: dst,
		SrcPort: uint16(udp.SrcPort), DstPort: uint16(udp.DstPort), Payload: udp.Payload, TTL: ip.TTL}, true
}

func csum16(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
