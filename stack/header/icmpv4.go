package header

import "encoding/binary"

// ICMPv4 header length, the types netchan handles and two codes of
// destination unreachable (RFC 792, RFC 1191).
const (
	ICMPv4MinLen        = 8
	ICMPEchoReply       = 0
	ICMPDestUnreachable = 3
	ICMPEchoRequest     = 8
	ICMPTimeExceeded    = 11
	ICMPPortUnreachable = 3 // code of ICMPDestUnreachable
	ICMPFragNeeded      = 4 // code of ICMPDestUnreachable
)

// ICMPv4 is a view of an ICMPv4 message: the 8-byte header (type, code,
// checksum and four type-specific bytes) and the rest of the message.
type ICMPv4 []byte

// ParseICMPv4 returns b as an ICMPv4 view, or false if b is shorter than 8
// bytes. It does not verify the checksum: use ChecksumValid.
func ParseICMPv4(b []byte) (ICMPv4, bool) {
	if len(b) < ICMPv4MinLen {
		return nil, false
	}
	return ICMPv4(b), true
}

// Type returns the message type.
func (m ICMPv4) Type() uint8 { return m[0] }

// Code returns the message code.
func (m ICMPv4) Code() uint8 { return m[1] }

// Checksum returns the checksum field.
func (m ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(m[2:4]) }

// ID returns the echo identifier (bytes 4..6).
func (m ICMPv4) ID() uint16 { return binary.BigEndian.Uint16(m[4:6]) }

// Seq returns the echo sequence number (bytes 6..8).
func (m ICMPv4) Seq() uint16 { return binary.BigEndian.Uint16(m[6:8]) }

// MTU returns the next-hop MTU of a fragmentation-needed message (bytes
// 6..8, RFC 1191).
func (m ICMPv4) MTU() uint16 { return binary.BigEndian.Uint16(m[6:8]) }

// Payload returns the bytes after the 8-byte header: echo data, or the
// offending datagram's header and first bytes in an error message.
func (m ICMPv4) Payload() []byte { return m[ICMPv4MinLen:] }

// SetType sets the message type.
func (m ICMPv4) SetType(v uint8) { m[0] = v }

// SetCode sets the message code.
func (m ICMPv4) SetCode(v uint8) { m[1] = v }

// SetChecksum sets the checksum field.
func (m ICMPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(m[2:4], v) }

// SetID sets the echo identifier.
func (m ICMPv4) SetID(v uint16) { binary.BigEndian.PutUint16(m[4:6], v) }

// SetSeq sets the echo sequence number.
func (m ICMPv4) SetSeq(v uint16) { binary.BigEndian.PutUint16(m[6:8], v) }

// SetRest sets the four type-specific bytes 4..8 (zero them for time
// exceeded and most destination-unreachable messages).
func (m ICMPv4) SetRest(v uint32) { binary.BigEndian.PutUint32(m[4:8], v) }

// SetMTU sets the next-hop MTU of a fragmentation-needed message.
func (m ICMPv4) SetMTU(v uint16) { binary.BigEndian.PutUint16(m[6:8], v) }

// ChecksumValid reports whether the checksum verifies over the whole view.
func (m ICMPv4) ChecksumValid() bool { return Checksum(m, 0) == 0 }

// FixChecksum computes the checksum over the whole view and stores it.
func (m ICMPv4) FixChecksum() {
	m.SetChecksum(0)
	m.SetChecksum(Checksum(m, 0))
}
