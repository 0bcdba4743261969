package header

import (
	"encoding/binary"
	"net/netip"
)

// TCP header bounds.
const (
	TCPMinLen        = 20
	TCPMaxLen        = 60
	TCPMaxOptionsLen = TCPMaxLen - TCPMinLen
)

// TCP flags (the byte at offset 13).
const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
	TCPFlagURG = 0x20
	TCPFlagECE = 0x40
	TCPFlagCWR = 0x80
)

// TCP is a view of a TCP segment (RFC 9293): header, options and payload.
// The segment's length is the view's length, which the caller takes from the
// IPv4 total length (IPv4.Payload).
type TCP []byte

// ParseTCP returns b as a TCP view, or false unless b holds at least 20
// bytes and 20 ≤ data offset ≤ len(b). It does not verify the checksum or
// parse the options: use ChecksumValid and ParseTCPOptions.
func ParseTCP(b []byte) (TCP, bool) {
	if len(b) < TCPMinLen {
		return nil, false
	}
	off := int(b[12]>>4) * 4
	if off < TCPMinLen || off > len(b) {
		return nil, false
	}
	return TCP(b), true
}

// SrcPort returns the source port.
func (t TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(t[0:2]) }

// DstPort returns the destination port.
func (t TCP) DstPort() uint16 { return binary.BigEndian.Uint16(t[2:4]) }

// Seq returns the sequence number.
func (t TCP) Seq() uint32 { return binary.BigEndian.Uint32(t[4:8]) }

// Ack returns the acknowledgment number.
func (t TCP) Ack() uint32 { return binary.BigEndian.Uint32(t[8:12]) }

// DataOffset returns the header length in bytes (options included).
func (t TCP) DataOffset() int { return int(t[12]>>4) * 4 }

// Flags returns the flag byte (TCPFlagFIN ... TCPFlagCWR).
func (t TCP) Flags() uint8 { return t[13] }

// Window returns the (unscaled) window.
func (t TCP) Window() uint16 { return binary.BigEndian.Uint16(t[14:16]) }

// Checksum returns the checksum field.
func (t TCP) Checksum() uint16 { return binary.BigEndian.Uint16(t[16:18]) }

// Urgent returns the urgent pointer.
func (t TCP) Urgent() uint16 { return binary.BigEndian.Uint16(t[18:20]) }

// Options returns the option bytes (empty when the data offset is 20).
func (t TCP) Options() []byte { return t[TCPMinLen:t.DataOffset()] }

// Payload returns the bytes after the header.
func (t TCP) Payload() []byte { return t[t.DataOffset():] }

// SetSrcPort sets the source port.
func (t TCP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(t[0:2], v) }

// SetDstPort sets the destination port.
func (t TCP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(t[2:4], v) }

// SetSeq sets the sequence number.
func (t TCP) SetSeq(v uint32) { binary.BigEndian.PutUint32(t[4:8], v) }

// SetAck sets the acknowledgment number.
func (t TCP) SetAck(v uint32) { binary.BigEndian.PutUint32(t[8:12], v) }

// SetDataOffset sets the header length, given in bytes (a multiple of 4
// from 20 to 60), and keeps the four reserved bits. It does not move the
// payload; a view whose data offset grows past its length is no longer
// safe to use.
func (t TCP) SetDataOffset(n int) { t[12] = uint8(n/4)<<4 | t[12]&0x0f }

// SetFlags sets the flag byte.
func (t TCP) SetFlags(v uint8) { t[13] = v }

// SetWindow sets the window.
func (t TCP) SetWindow(v uint16) { binary.BigEndian.PutUint16(t[14:16], v) }

// SetChecksum sets the checksum field.
func (t TCP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(t[16:18], v) }

// SetUrgent sets the urgent pointer.
func (t TCP) SetUrgent(v uint16) { binary.BigEndian.PutUint16(t[18:20], v) }

// ChecksumValid reports whether the checksum verifies over the
// pseudo-header and the whole view.
func (t TCP) ChecksumValid(src, dst netip.Addr) bool {
	return Checksum(t, PseudoHeaderSum(src, dst, ProtoTCP, len(t))) == 0
}

// FixChecksum computes the checksum over the pseudo-header and the whole
// view and stores it.
func (t TCP) FixChecksum(src, dst netip.Addr) {
	t.SetChecksum(0)
	t.SetChecksum(Checksum(t, PseudoHeaderSum(src, dst, ProtoTCP, len(t))))
}

// TCPFields are the fields EncodeTCP writes.
type TCPFields struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window, Urgent   uint16
	Options          *TCPOptions // nil: none
}

// EncodeTCP writes a TCP header with f's fields, f.Options encoded by
// EncodeTCPOptions and checksum 0 into b, and returns the header and the
// payloadLen bytes after it as a view. b must hold TCPMinLen +
// TCPOptionsLen(f.Options) + payloadLen bytes; the payload is whatever b
// holds after the header. Call FixChecksum once the payload is in place.
func EncodeTCP(b []byte, f TCPFields, payloadLen int) TCP {
	_ = b[TCPMinLen-1]
	n := TCPMinLen
	if f.Options != nil {
		n += EncodeTCPOptions(b[TCPMinLen:], f.Options)
	}
	t := TCP(b[:n+payloadLen])
	t.SetSrcPort(f.SrcPort)
	t.SetDstPort(f.DstPort)
	t.SetSeq(f.Seq)
	t.SetAck(f.Ack)
	t[12] = uint8(n/4) << 4
	t.SetFlags(f.Flags)
	t.SetWindow(f.Window)
	t.SetChecksum(0)
	t.SetUrgent(f.Urgent)
	return t
}
