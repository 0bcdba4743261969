package header

import "encoding/binary"

// MAC is an Ethernet (EUI-48) address.
type MAC [6]byte

// BroadcastMAC is ff:ff:ff:ff:ff:ff.
var BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// String formats m as six lower-case hex pairs separated by colons. It
// allocates: keep it off the data path.
func (m MAC) String() string {
	const hex = "0123456789abcdef"
	var b [17]byte
	for i, v := range m {
		if i > 0 {
			b[3*i-1] = ':'
		}
		b[3*i] = hex[v>>4]
		b[3*i+1] = hex[v&0x0f]
	}
	return string(b[:])
}

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == BroadcastMAC }

// IsMulticast reports whether m is a group address (broadcast included).
func (m MAC) IsMulticast() bool { return m[0]&1 != 0 }

// Ethernet header length and the EtherTypes netchan handles.
const (
	EthernetLen   = 14
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86dd
)

// Ethernet is a view of an Ethernet II frame: destination, source, EtherType
// and payload. VLAN tags are not interpreted (Type returns 0x8100).
type Ethernet []byte

// ParseEthernet returns b as an Ethernet view, or false if b is shorter than
// an Ethernet header.
func ParseEthernet(b []byte) (Ethernet, bool) {
	if len(b) < EthernetLen {
		return nil, false
	}
	return Ethernet(b), true
}

// Dst returns the destination address.
func (e Ethernet) Dst() MAC { return MAC(e[0:6]) }

// Src returns the source address.
func (e Ethernet) Src() MAC { return MAC(e[6:12]) }

// Type returns the EtherType.
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:14]) }

// SetDst sets the destination address.
func (e Ethernet) SetDst(m MAC) { copy(e[0:6], m[:]) }

// SetSrc sets the source address.
func (e Ethernet) SetSrc(m MAC) { copy(e[6:12], m[:]) }

// SetType sets the EtherType.
func (e Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(e[12:14], t) }

// Payload returns the bytes after the header (padding included).
func (e Ethernet) Payload() []byte { return e[EthernetLen:] }

// EncodeEthernet writes an Ethernet header into b (at least EthernetLen bytes)
// and returns b as a view.
func EncodeEthernet(b []byte, dst, src MAC, etherType uint16) Ethernet {
	e := Ethernet(b)
	_ = e[EthernetLen-1] // one bounds check, and a clear panic for a short b
	e.SetDst(dst)
	e.SetSrc(src)
	e.SetType(etherType)
	return e
}
