package flowtree

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
)

// Key names one entry of the tree: an exact flow (all five fields set) or a
// listener (RemoteAddr is the zero Addr and RemotePort is 0). A listener bound
// to every local address has LocalAddr 0.0.0.0; ListenerKey builds listener
// keys and Ascend reports them in that form.
//
// Addresses are IPv4; an IPv4-mapped IPv6 address is accepted and unmapped.
type Key struct {
	Proto                 uint8
	LocalAddr, RemoteAddr netip.Addr
	LocalPort, RemotePort uint16
}

// ListenerKey returns the key of a listener on (proto, local, port). A zero
// local Addr or 0.0.0.0 means any local address.
func ListenerKey(proto uint8, local netip.Addr, port uint16) Key {
	if !local.IsValid() {
		local = netip.IPv4Unspecified()
	}
	return Key{Proto: proto, LocalAddr: local, LocalPort: port}
}

// IsListener reports whether k names a listener rather than an exact flow.
func (k Key) IsListener() bool { return !k.RemoteAddr.IsValid() }

// String formats k as "proto local:port<-remote:port" or, for a listener,
// "proto local:port<-*".
func (k Key) String() string {
	if k.IsListener() {
		return fmt.Sprintf("%d %s<-*", k.Proto, netip.AddrPortFrom(k.LocalAddr, k.LocalPort))
	}
	return fmt.Sprintf("%d %s<-%s", k.Proto, netip.AddrPortFrom(k.LocalAddr, k.LocalPort),
		netip.AddrPortFrom(k.RemoteAddr, k.RemotePort))
}

// key is the internal fixed-width form of a Key: a 128-bit big-endian number
// in four words, so that numeric order is the order of the fields and every
// prefix query is a contiguous range (a subtree). Layout, most significant
// bit first:
//
//	w0: proto(8) | local addr bits 0-23
//	w1: local addr bits 24-31 | local port(16) | kind(8)
//	w2: remote addr(32)
//	w3: remote port(16) | zero(16)
//
// kind is 0 for a listener (remote address and port 0) and 1 for an exact
// flow, so a listener sorts just before the flows of its local address and
// port, and an exact flow never collides with a listener key.
type key [4]uint32

const (
	kindListener = 0
	kindExact    = 1
)

func makeKey(proto uint8, laddr uint32, lport uint16, raddr uint32, rport uint16, kind uint32) key {
	return key{
		uint32(proto)<<24 | laddr>>8,
		laddr<<24 | uint32(lport)<<8 | kind,
		raddr,
		uint32(rport) << 16,
	}
}

func (q *key) proto() uint8        { return uint8(q[0] >> 24) }
func (q *key) laddr() uint32       { return q[0]<<8 | q[1]>>24 }
func (q *key) lport() uint16       { return uint16(q[1] >> 8) }
func (q *key) raddr() uint32       { return q[2] }
func (q *key) rport() uint16       { return uint16(q[3] >> 16) }
func (q *key) listener() bool      { return q[1]&0xff == kindListener }
func (q *key) bit(b uint32) uint32 { return q[(b>>5)&3] >> (31 - b&31) & 1 }
func (q *key) hi() uint64          { return uint64(q[0])<<32 | uint64(q[1]) }
func (q *key) lo() uint64          { return uint64(q[2])<<32 | uint64(q[3]) }

// less reports q < r as 128-bit numbers.
func (q *key) less(r *key) bool {
	for i := range q {
		if q[i] != r[i] {
			return q[i] < r[i]
		}
	}
	return false
}

// next returns q+1 and true, or false when q is the largest key (no successor).
func (q key) next() (key, bool) {
	for i := 3; i >= 0; i-- {
		q[i]++
		if q[i] != 0 {
			return q, true
		}
	}
	return q, false
}

// critBit returns the index (0 = most significant) of the first bit where q
// and r differ, or 128 when they are equal.
func critBit(q, r *key) uint32 {
	for i := range q {
		if x := q[i] ^ r[i]; x != 0 {
			return uint32(i*32 + bits.LeadingZeros32(x))
		}
	}
	return 128
}

func addr4(a netip.Addr) (uint32, bool) {
	a = a.Unmap()
	if !a.Is4() {
		return 0, false
	}
	b := a.As4()
	return binary.BigEndian.Uint32(b[:]), true
}

func addrFrom(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// encode converts k to the internal form. It accepts exact keys and listener
// keys alike; callers that need one kind check IsListener first.
func (k Key) encode() (key, error) {
	laddr, ok := addr4(k.LocalAddr)
	if !ok {
		if !k.IsListener() || k.LocalAddr.IsValid() {
			return key{}, fmt.Errorf("%w: %v: local address must be IPv4", ErrInvalidKey, k)
		}
		laddr = 0 // listener on any address
	}
	if k.IsListener() {
		if k.RemotePort != 0 {
			return key{}, fmt.Errorf("%w: %v: a listener key (no remote address) must have remote port 0", ErrInvalidKey, k)
		}
		return makeKey(k.Proto, laddr, k.LocalPort, 0, 0, kindListener), nil
	}
	raddr, ok := addr4(k.RemoteAddr)
	if !ok {
		return key{}, fmt.Errorf("%w: %v: remote address must be IPv4", ErrInvalidKey, k)
	}
	return makeKey(k.Proto, laddr, k.LocalPort, raddr, k.RemotePort, kindExact), nil
}

// decode converts the internal form back to a Key.
func (q *key) decode() Key {
	k := Key{Proto: q.proto(), LocalAddr: addrFrom(q.laddr()), LocalPort: q.lport()}
	if !q.listener() {
		k.RemoteAddr = addrFrom(q.raddr())
		k.RemotePort = q.rport()
	}
	return k
}
