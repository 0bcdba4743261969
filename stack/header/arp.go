package header

import (
	"encoding/binary"
	"net/netip"
)

// ARP message length (Ethernet/IPv4) and operations (RFC 826).
const (
	ARPLen     = 28
	ARPRequest = 1
	ARPReply   = 2
)

// ARP is a view of an Ethernet/IPv4 ARP message (RFC 826).
type ARP []byte

// ParseARP returns b as an ARP view cut to ARPLen bytes, or false unless b
// holds an Ethernet/IPv4 ARP message: hardware type 1, protocol type 0x0800,
// address lengths 6 and 4, and at least ARPLen bytes. The operation is not
// checked.
func ParseARP(b []byte) (ARP, bool) {
	if len(b) < ARPLen ||
		binary.BigEndian.Uint16(b[0:2]) != 1 ||
		binary.BigEndian.Uint16(b[2:4]) != EtherTypeIPv4 ||
		b[4] != 6 || b[5] != 4 {
		return nil, false
	}
	return ARP(b[:ARPLen]), true
}

// Op returns the operation (ARPRequest, ARPReply).
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[6:8]) }

// SenderMAC returns the sender hardware address.
func (a ARP) SenderMAC() MAC { return MAC(a[8:14]) }

// SenderIP returns the sender protocol address.
func (a ARP) SenderIP() netip.Addr { return netip.AddrFrom4(a.SenderIP4()) }

// SenderIP4 returns the sender protocol address as raw bytes.
func (a ARP) SenderIP4() [4]byte { return [4]byte(a[14:18]) }

// TargetMAC returns the target hardware address.
func (a ARP) TargetMAC() MAC { return MAC(a[18:24]) }

// TargetIP returns the target protocol address.
func (a ARP) TargetIP() netip.Addr { return netip.AddrFrom4(a.TargetIP4()) }

// TargetIP4 returns the target protocol address as raw bytes.
func (a ARP) TargetIP4() [4]byte { return [4]byte(a[24:28]) }

// EncodeARP writes an Ethernet/IPv4 ARP message into b, which must hold at
// least ARPLen bytes. The addresses must be IPv4 (As4 panics otherwise).
func EncodeARP(b []byte, op uint16, senderMAC MAC, senderIP netip.Addr, targetMAC MAC, targetIP netip.Addr) {
	EncodeARP4(b, op, senderMAC, senderIP.As4(), targetMAC, targetIP.As4())
}

// EncodeARP4 is EncodeARP with raw IPv4 addresses.
func EncodeARP4(b []byte, op uint16, senderMAC MAC, senderIP [4]byte, targetMAC MAC, targetIP [4]byte) {
	b = b[:ARPLen]
	binary.BigEndian.PutUint16(b[0:2], 1)
	binary.BigEndian.PutUint16(b[2:4], EtherTypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], op)
	copy(b[8:14], senderMAC[:])
	copy(b[14:18], senderIP[:])
	copy(b[18:24], targetMAC[:])
	copy(b[24:28], targetIP[:])
}
