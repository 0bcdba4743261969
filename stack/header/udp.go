package header

import (
	"encoding/binary"
	"net/netip"
)

// UDPLen is the length of a UDP header.
const UDPLen = 8

// UDP is a view of a UDP datagram (RFC 768), cut to its length field.
type UDP []byte

// ParseUDP returns b as a UDP view cut to the length field, or false unless
// b holds at least 8 bytes and 8 ≤ length ≤ len(b). It does not verify the
// checksum: use ChecksumValid.
func ParseUDP(b []byte) (UDP, bool) {
	if len(b) < UDPLen {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	if n < UDPLen || n > len(b) {
		return nil, false
	}
	return UDP(b[:n]), true
}

// SrcPort returns the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[0:2]) }

// DstPort returns the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[2:4]) }

// Length returns the length field (header and payload) in bytes.
func (u UDP) Length() int { return int(binary.BigEndian.Uint16(u[4:6])) }

// Checksum returns the checksum field (0: none was computed).
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:8]) }

// Payload returns the bytes after the header.
func (u UDP) Payload() []byte { return u[UDPLen:] }

// SetSrcPort sets the source port.
func (u UDP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(u[0:2], v) }

// SetDstPort sets the destination port.
func (u UDP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(u[2:4], v) }

// SetLength sets the length field. It does not change the view's length.
func (u UDP) SetLength(n int) { binary.BigEndian.PutUint16(u[4:6], uint16(n)) }

// SetChecksum sets the checksum field.
func (u UDP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(u[6:8], v) }

// ChecksumValid reports whether the checksum is 0 (not used) or verifies
// over the pseudo-header and the whole view.
func (u UDP) ChecksumValid(src, dst netip.Addr) bool {
	return u.Checksum() == 0 || Checksum(u, PseudoHeaderSum(src, dst, ProtoUDP, len(u))) == 0
}

// FixChecksum computes the checksum over the pseudo-header and the whole
// view and stores it, as 0xffff when it computes to 0 (RFC 768).
func (u UDP) FixChecksum(src, dst netip.Addr) {
	u.SetChecksum(0)
	c := Checksum(u, PseudoHeaderSum(src, dst, ProtoUDP, len(u)))
	if c == 0 {
		c = 0xffff
	}
	u.SetChecksum(c)
}

// EncodeUDP writes a UDP header with the given ports, length 8+payloadLen
// and checksum 0 into b, and returns b[:8+payloadLen] as a view. The payload
// is whatever b holds after the header; call FixChecksum once it is in place.
func EncodeUDP(b []byte, srcPort, dstPort uint16, payloadLen int) UDP {
	u := UDP(b[:UDPLen+payloadLen])
	u.SetSrcPort(srcPort)
	u.SetDstPort(dstPort)
	u.SetLength(UDPLen + payloadLen)
	u.SetChecksum(0)
	return u
}
