package header

import "encoding/binary"

// IPv4InFrame finds the IPv4 header in an Ethernet II frame: the one
// preamble every stage, owner function and counter that looks at IPv4 needs
// before it reads a field. It returns the frame's bytes from the IPv4
// header's first byte to the frame's end as an IPv4 view, and true, when the
// EtherType is 0x0800 and ParseIPv4Header accepts the header (version 4,
// IHL ≥ 5 and the frame holds all IHL*4 header bytes, options included);
// otherwise nil and false. VLAN-tagged frames are not IPv4 here.
//
// It is a shape check for the fast path, not a validation: the total length
// and the checksum are not looked at (use ParseIPv4 where they matter, as the
// stack does), and the view runs to the end of the frame, Ethernet padding
// included. Every header accessor and setter on an accepted view is safe;
// ip.Payload() is the transport header and what follows it, which starts at
// frame offset EthernetLen+ip.IHL(), and ip.IsFirstFragment() says whether
// that is where a transport header is. It does not copy or allocate, and the
// compiler inlines it.
func IPv4InFrame(frame []byte) (IPv4, bool) {
	if len(frame) < EthernetLen+IPv4MinLen || frame[12] != EtherTypeIPv4>>8 || frame[13] != EtherTypeIPv4&0xff {
		return nil, false
	}
	return ParseIPv4Header(frame[EthernetLen:])
}

// ParseIPv4Header checks the shape of the IPv4 header at the start of b:
// version 4, IHL ≥ 5, and b holds all IHL*4 header bytes. It returns b as an
// IPv4 view, not cut to the total length, and true; or nil and false. It
// suits headers that are not a whole packet (the quote in an ICMP error) and
// owner functions that only route; like IPv4InFrame it checks neither total
// length nor checksum, and every header accessor and setter on an accepted
// view is safe.
func ParseIPv4Header(b []byte) (IPv4, bool) {
	// Version 4 and IHL 5..15 are exactly the first bytes 0x45..0x4f.
	if len(b) < IPv4MinLen || b[0] < 0x45 || b[0] > 0x4f || len(b) < int(b[0]&0x0f)*4 {
		return nil, false
	}
	return IPv4(b), true
}

// IsFirstFragment reports whether the fragment offset is zero: the packet is
// not fragmented or is the first fragment of its datagram, so its payload
// starts with the transport header (if it holds that many bytes). Later
// fragments carry no ports.
func (h IPv4) IsFirstFragment() bool { return binary.BigEndian.Uint16(h[6:8])&0x1fff == 0 }

// Ports returns the first two 16-bit fields of the payload, which are the
// source and destination ports for TCP and UDP (check Protocol first), and
// true; false, with zero ports, when the packet is a later fragment or its
// payload is shorter than four bytes.
func (h IPv4) Ports() (src, dst uint16, ok bool) {
	l4 := h.Payload()
	if len(l4) < 4 || !h.IsFirstFragment() {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4]), true
}
