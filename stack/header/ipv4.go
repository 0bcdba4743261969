package header

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 header bounds and the protocol numbers netchan handles.
const (
	IPv4MinLen = 20
	IPv4MaxLen = 60
	ProtoICMP  = 1
	ProtoTCP   = 6
	ProtoUDP   = 17
)

// IPv4Error is the reason ParseIPv4 rejected a packet, meant to be counted
// as a drop reason. IPv4OK (zero) means the packet was accepted.
type IPv4Error uint8

// Reasons ParseIPv4 gives, in the order it checks them.
const (
	IPv4OK          IPv4Error = iota
	IPv4Truncated             // shorter than 20 bytes or than its total length
	IPv4BadVersion            // version is not 4
	IPv4BadIHL                // header length below 20 bytes
	IPv4BadLength             // total length below the header length
	IPv4BadChecksum           // header checksum does not verify
)

var ipv4ErrorNames = [...]string{
	IPv4OK:          "ok",
	IPv4Truncated:   "ipv4-truncated",
	IPv4BadVersion:  "ipv4-bad-version",
	IPv4BadIHL:      "ipv4-bad-ihl",
	IPv4BadLength:   "ipv4-bad-length",
	IPv4BadChecksum: "ipv4-bad-checksum",
}

// String returns a short name for the reason, fit for a drop counter.
func (e IPv4Error) String() string {
	if int(e) < len(ipv4ErrorNames) {
		return ipv4ErrorNames[e]
	}
	return "ipv4-unknown-error"
}

// IPv4 is a view of an IPv4 packet (RFC 791): header, options and payload.
// ParseIPv4 cuts it to the header's total length; ParseIPv4Header and
// IPv4InFrame, which check only the header's shape, leave it running to the
// end of the bytes they were given.
type IPv4 []byte

// ParseIPv4 validates b as an IPv4 packet and returns it as a view cut to its
// total length (trailing Ethernet padding dropped). It checks the version,
// IHL ≥ 5, IHL*4 ≤ total length ≤ len(b) and the header checksum; after it
// returns IPv4OK no accessor or setter on the view can panic. It does not
// look at options, fragments or addresses.
func ParseIPv4(b []byte) (IPv4, IPv4Error) {
	if len(b) < IPv4MinLen {
		return nil, IPv4Truncated
	}
	if b[0]>>4 != 4 {
		return nil, IPv4BadVersion
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < IPv4MinLen {
		return nil, IPv4BadIHL
	}
	tl := int(binary.BigEndian.Uint16(b[2:4]))
	if tl < ihl {
		return nil, IPv4BadLength
	}
	if tl > len(b) {
		return nil, IPv4Truncated
	}
	if Checksum(b[:ihl], 0) != 0 {
		return nil, IPv4BadChecksum
	}
	return IPv4(b[:tl]), IPv4OK
}

// IHL returns the header length in bytes (options included).
func (h IPv4) IHL() int { return int(h[0]&0x0f) * 4 }

// TOS returns the type-of-service byte (DSCP and ECN).
func (h IPv4) TOS() uint8 { return h[1] }

// TotalLength returns the total length field in bytes.
func (h IPv4) TotalLength() int { return int(binary.BigEndian.Uint16(h[2:4])) }

// ID returns the identification field.
func (h IPv4) ID() uint16 { return binary.BigEndian.Uint16(h[4:6]) }

// DF reports whether the don't-fragment flag is set.
func (h IPv4) DF() bool { return h[6]&0x40 != 0 }

// MF reports whether the more-fragments flag is set.
func (h IPv4) MF() bool { return h[6]&0x20 != 0 }

// FragmentOffset returns the fragment offset in bytes.
func (h IPv4) FragmentOffset() int { return int(binary.BigEndian.Uint16(h[6:8])&0x1fff) * 8 }

// IsFragment reports whether the packet is a fragment (MF set or a non-zero
// offset).
func (h IPv4) IsFragment() bool { return binary.BigEndian.Uint16(h[6:8])&0x3fff != 0 }

// TTL returns the time to live.
func (h IPv4) TTL() uint8 { return h[8] }

// Protocol returns the payload's protocol number.
func (h IPv4) Protocol() uint8 { return h[9] }

// Checksum returns the header checksum field.
func (h IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(h[10:12]) }

// Src returns the source address.
func (h IPv4) Src() netip.Addr { return netip.AddrFrom4(h.Src4()) }

// Dst returns the destination address.
func (h IPv4) Dst() netip.Addr { return netip.AddrFrom4(h.Dst4()) }

// Src4 returns the source address as raw bytes.
func (h IPv4) Src4() [4]byte { return [4]byte(h[12:16]) }

// Dst4 returns the destination address as raw bytes.
func (h IPv4) Dst4() [4]byte { return [4]byte(h[16:20]) }

// Options returns the option bytes between the fixed header and the payload
// (empty when IHL is 5).
func (h IPv4) Options() []byte { return h[IPv4MinLen:h.IHL()] }

// Header returns the header bytes, options included.
func (h IPv4) Header() []byte { return h[:h.IHL()] }

// Payload returns the bytes after the header.
func (h IPv4) Payload() []byte { return h[h.IHL():] }

// SetTOS sets the type-of-service byte.
func (h IPv4) SetTOS(v uint8) { h[1] = v }

// SetTTL sets the time to live.
func (h IPv4) SetTTL(v uint8) { h[8] = v }

// SetProtocol sets the protocol number.
func (h IPv4) SetProtocol(v uint8) { h[9] = v }

// SetID sets the identification field.
func (h IPv4) SetID(v uint16) { binary.BigEndian.PutUint16(h[4:6], v) }

// SetSrc sets the source address, which must be IPv4 (As4 panics otherwise).
func (h IPv4) SetSrc(a netip.Addr) { h.SetSrc4(a.As4()) }

// SetDst sets the destination address, which must be IPv4 (As4 panics
// otherwise).
func (h IPv4) SetDst(a netip.Addr) { h.SetDst4(a.As4()) }

// SetSrc4 sets the source address from raw bytes.
func (h IPv4) SetSrc4(a [4]byte) { copy(h[12:16], a[:]) }

// SetDst4 sets the destination address from raw bytes.
func (h IPv4) SetDst4(a [4]byte) { copy(h[16:20], a[:]) }

// SetTotalLength sets the total length field. It does not change the view's
// length: reslice the frame and parse again if it should.
func (h IPv4) SetTotalLength(n int) { binary.BigEndian.PutUint16(h[2:4], uint16(n)) }

// SetFragment sets the flags and the fragment offset, given in bytes (a
// multiple of 8; the low three bits are dropped).
func (h IPv4) SetFragment(df, mf bool, offsetBytes int) {
	v := uint16(offsetBytes/8) & 0x1fff
	if df {
		v |= 0x4000
	}
	if mf {
		v |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:8], v)
}

// SetChecksum sets the header checksum field.
func (h IPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(h[10:12], v) }

// ComputeChecksum returns the header checksum computed over the header
// (options included) with the checksum field taken as zero.
func (h IPv4) ComputeChecksum() uint16 {
	return Checksum(h[12:h.IHL()], Sum(h[:10], 0))
}

// FixChecksum stores ComputeChecksum in the checksum field.
func (h IPv4) FixChecksum() { h.SetChecksum(h.ComputeChecksum()) }

// IPv4Fields are the fields EncodeIPv4 writes. Src and Dst must be IPv4.
type IPv4Fields struct {
	TOS            uint8
	TotalLength    int // header and payload, in bytes
	ID             uint16
	DF, MF         bool
	FragmentOffset int // in bytes, a multiple of 8
	TTL, Protocol  uint8
	Src, Dst       netip.Addr
}

// EncodeIPv4 writes a 20-byte IPv4 header (no options) with its checksum
// into b and returns b[:f.TotalLength] as a view. b must hold at least
// max(20, f.TotalLength) bytes; the payload is whatever b holds after the
// header.
func EncodeIPv4(b []byte, f IPv4Fields) IPv4 {
	h := IPv4(b[:max(f.TotalLength, IPv4MinLen)])
	h[0] = 0x45
	h[1] = f.TOS
	h.SetTotalLength(f.TotalLength)
	h.SetID(f.ID)
	h.SetFragment(f.DF, f.MF, f.FragmentOffset)
	h[8] = f.TTL
	h[9] = f.Protocol
	h.SetSrc(f.Src)
	h.SetDst(f.Dst)
	h.SetChecksum(0)
	h.SetChecksum(Checksum(h[:IPv4MinLen], 0))
	return h[:f.TotalLength]
}
