package gen

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/netchan/netchan/stack/header"
)

// Proto is the template a generator sends: UDP, TCP or ICMP echo.
type Proto uint8

const (
	// UDP: a UDP datagram carrying the payload header, checksummed.
	UDP Proto = iota
	// TCP: a plain ACK-flagged TCP segment (no options) carrying the payload header,
	// checksummed. It belongs to no connection: a stateful device in the path may drop it.
	TCP
	// ICMP: an ICMP echo request (identifier = the flow's source port, sequence = the low 16
	// bits of the packet's sequence number) whose data starts with the payload header. Any
	// kernel answers it, so a plain host is a round-trip reflector.
	ICMP
)

func (p Proto) String() string {
	switch p {
	case UDP:
		return "udp"
	case TCP:
		return "tcp"
	case ICMP:
		return "icmp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto reads "udp", "tcp" or "icmp".
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "udp":
		return UDP, nil
	case "tcp":
		return TCP, nil
	case "icmp":
		return ICMP, nil
	}
	return 0, fmt.Errorf("gen: protocol %q: use udp, tcp or icmp", s)
}

func (p Proto) ipProto() uint8 {
	switch p {
	case TCP:
		return header.ProtoTCP
	case ICMP:
		return header.ProtoICMP
	}
	return header.ProtoUDP
}

// l4Len is the length of the template's transport header.
func (p Proto) l4Len() int {
	if p == TCP {
		return header.TCPMinLen
	}
	return 8 // UDP header, ICMP echo header
}

// HeaderLen is the length of everything before the payload header: Ethernet, IPv4 (no
// options) and the transport header.
func (p Proto) HeaderLen() int { return header.EthernetLen + header.IPv4MinLen + p.l4Len() }

// MinFrame is the smallest frame (bytes without the FCS) that carries the payload header:
// 60 for UDP and ICMP (RFC 2544's 64-byte frame), 72 for TCP.
func (p Proto) MinFrame() int { return max(MinFrame, p.HeaderLen()+PayloadLen) }

// Frame sizes are Ethernet frame lengths without the 4-byte FCS, as AF_XDP and the kernel
// count them; RFC 2544 and CSIT figures include the FCS (add FCSLen). WireOverhead is what
// a frame costs on the wire beyond its bytes here: FCS, preamble and start delimiter, and
// the minimum inter-frame gap.
const (
	MinFrame     = 60 // RFC 2544's 64 with the FCS
	FCSLen       = 4
	WireOverhead = FCSLen + 8 + 12
)

// The payload header: the first PayloadLen bytes of every packet's payload (after the UDP,
// TCP or ICMP echo header), big endian. It is small so that a 60-byte UDP or ICMP frame
// (RFC 2544's 64) carries it whole:
//
//	0  2  magic "NG" (0x4e47)
//	2  2  run: the trial's identifier (replies of another trial or run do not count)
//	4  1  tx shard: the shard that sent it, whose sequence space seq belongs to
//	5  1  version (1)
//	6  2  flow: the index of the packet's flow
//	8  4  seq: the low 32 bits of the shard's packet counter (0, 1, 2, ...); the
//	      analyser extends it to 64 bits, nearest to the highest it has seen
//	12 4  tx time: the low 32 bits of the sending pass's clock (pipelines.Now, ns); a
//	      round trip is rx time − tx time modulo 2^32, so up to 4.29 s is measured
//	16 2  frame length, so a truncated reply can be told
//
// The rest of the payload, up to the frame size, is zeros.
const (
	PayloadLen = 18
	Magic      = 0x4e47
	version    = 1
)

// Payload is a decoded payload header.
type Payload struct {
	Run      uint16
	Shard    uint8
	Flow     uint16
	Seq      uint32
	TxTime   uint32
	FrameLen uint16
}

func putPayload(b []byte, p Payload) {
	_ = b[PayloadLen-1]
	binary.BigEndian.PutUint16(b[0:2], Magic)
	binary.BigEndian.PutUint16(b[2:4], p.Run)
	b[4] = p.Shard
	b[5] = version
	binary.BigEndian.PutUint16(b[6:8], p.Flow)
	binary.BigEndian.PutUint32(b[8:12], p.Seq)
	binary.BigEndian.PutUint32(b[12:16], p.TxTime)
	binary.BigEndian.PutUint16(b[16:18], p.FrameLen)
}

// ParsePayload finds the payload header in an Ethernet frame carrying IPv4 UDP, TCP or ICMP
// echo (request or reply): ok is false for anything else, a payload too short or without the
// magic. It does not allocate.
func ParsePayload(frame []byte) (p Payload, ok bool) {
	b, ok := payloadOf(frame)
	if !ok {
		return p, false
	}
	return Payload{Run: binary.BigEndian.Uint16(b[2:4]), Shard: b[4], Flow: binary.BigEndian.Uint16(b[6:8]),
		Seq: binary.BigEndian.Uint32(b[8:12]), TxTime: binary.BigEndian.Uint32(b[12:16]), FrameLen: binary.BigEndian.Uint16(b[16:18])}, true
}

// payloadOf returns the payload header's bytes in frame.
func payloadOf(frame []byte) ([]byte, bool) {
	if len(frame) < header.EthernetLen+header.IPv4MinLen || binary.BigEndian.Uint16(frame[12:14]) != header.EtherTypeIPv4 {
		return nil, false
	}
	ip := frame[header.EthernetLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < header.IPv4MinLen || len(ip) < ihl || binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
		return nil, false
	}
	if tl := int(binary.BigEndian.Uint16(ip[2:4])); tl >= ihl && tl < len(ip) {
		ip = ip[:tl]
	}
	l4 := ip[ihl:]
	var off int
	switch ip[9] {
	case header.ProtoUDP:
		off = 8
	case header.ProtoTCP:
		if len(l4) < header.TCPMinLen {
			return nil, false
		}
		off = int(l4[12]>>4) * 4
	case header.ProtoICMP:
		if len(l4) < 8 || (l4[0] != header.ICMPEchoReply && l4[0] != header.ICMPEchoRequest) {
			return nil, false
		}
		off = 8
	default:
		return nil, false
	}
	if len(l4) < off+PayloadLen || binary.BigEndian.Uint16(l4[off:off+2]) != Magic || l4[off+5] != version {
		return nil, false
	}
	return l4[off : off+PayloadLen], true
}

// Flow is one flow's addresses: the generator sends from Src:SrcPort to Dst:DstPort (for
// ICMP, SrcPort is the echo identifier and DstPort is unused).
type Flow struct {
	SrcMAC, DstMAC [6]byte
	Src, Dst       netip.Addr
	SrcPort        uint16
	DstPort        uint16
}

// template is one flow's headers, built once; write copies them into a frame and fills in
// what changes per packet. It holds no pointers.
type template struct {
	hdr      [header.EthernetLen + header.IPv4MinLen + header.TCPMinLen]byte
	hlen     int
	proto    Proto
	src, dst [4]byte
}

func newTemplate(p Proto, f Flow) template {
	t := template{proto: p, hlen: p.HeaderLen(), src: f.Src.As4(), dst: f.Dst.As4()}
	b := t.hdr[:]
	header.EncodeEthernet(b, f.DstMAC, f.SrcMAC, header.EtherTypeIPv4)
	header.EncodeIPv4(b[header.EthernetLen:], header.IPv4Fields{TotalLength: header.IPv4MinLen, DF: true, TTL: 64,
		Protocol: p.ipProto(), Src: f.Src, Dst: f.Dst})
	l4 := b[header.EthernetLen+header.IPv4MinLen:]
	switch p {
	case UDP:
		header.EncodeUDP(l4, f.SrcPort, f.DstPort, 0)
	case TCP:
		header.EncodeTCP(l4, header.TCPFields{SrcPort: f.SrcPort, DstPort: f.DstPort, Flags: header.TCPFlagACK, Window: 65535}, 0)
	case ICMP:
		m := header.ICMPv4(l4[:8])
		m.SetType(header.ICMPEchoRequest)
		m.SetCode(0)
		m.SetChecksum(0)
		m.SetID(f.SrcPort)
		m.SetSeq(0)
	}
	return t
}

// write builds an n-byte frame (n ≥ proto.MinFrame(), checked by the caller) into d, with
// payload header p, and fixes every checksum. It does not allocate.
func (t *template) write(d []byte, n int, p Payload) {
	d = d[:n]
	copy(d, t.hdr[:t.hlen])
	const ipOff = header.EthernetLen
	const l4Off = ipOff + header.IPv4MinLen
	ip := d[ipOff:l4Off]
	binary.BigEndian.PutUint16(ip[2:4], uint16(n-ipOff))
	binary.BigEndian.PutUint16(ip[4:6], uint16(p.Seq))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], header.Checksum(ip, 0))
	p.FrameLen = uint16(n)
	putPayload(d[t.hlen:], p)
	clear(d[t.hlen+PayloadLen:])
	l4 := d[l4Off:]
	// The zeros after the payload header add nothing to a checksum: sum the headers only.
	sumEnd := t.hlen + PayloadLen - l4Off
	switch t.proto {
	case UDP:
		binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
		l4[6], l4[7] = 0, 0
		c := header.Checksum(l4[:sumEnd], header.PseudoHeaderSum4(t.src, t.dst, header.ProtoUDP, len(l4)))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:8], c)
	case TCP:
		binary.BigEndian.PutUint32(l4[4:8], p.Seq*1000) // any value; this one moves like a sender's
		l4[16], l4[17] = 0, 0
		binary.BigEndian.PutUint16(l4[16:18], header.Checksum(l4[:sumEnd], header.PseudoHeaderSum4(t.src, t.dst, header.ProtoTCP, len(l4))))
	case ICMP:
		binary.BigEndian.PutUint16(l4[6:8], uint16(p.Seq))
		l4[2], l4[3] = 0, 0
		binary.BigEndian.PutUint16(l4[2:4], header.Checksum(l4[:sumEnd], 0))
	}
}
