package header

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Sum returns the one's-complement sum of b as 16-bit big-endian words, added
// to initial, without folding it to 16 bits or complementing it (RFC 1071).
// An odd trailing byte counts as the high byte of a word padded with zero, so
// when sums of several pieces are combined by passing one as the next one's
// initial value, every piece but the last must have an even length.
//
// The result is any 32-bit value congruent to the sum modulo 0xffff; fold it
// with Checksum(nil, s) or pass it on.
func Sum(b []byte, initial uint32) uint32 {
	acc := uint64(initial)
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		acc += c // acc is at most 2^64-2 after a carry, so this cannot wrap
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc += c
		b = b[8:]
	}
	for len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += c
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += c
	}
	// 2^32 ≡ 1 (mod 0xffff): fold the two halves with end-around carry.
	hi, lo := uint32(acc>>32), uint32(acc)
	s, c32 := bits.Add32(hi, lo, 0)
	return s + c32 // s is at most 2^32-2 after a carry
}

// fold reduces a running sum to 16 bits with end-around carry. It returns 0
// only for a zero sum.
func fold(s uint32) uint16 {
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return uint16(s)
}

// Checksum returns the Internet checksum (RFC 1071) of b added to initial:
// the one's complement of the folded one's-complement sum, ready to store in
// a checksum field (which must be zero in b, or left out of it). Over data
// that already holds a correct checksum it returns 0.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(Sum(b, initial))
}

// PseudoHeaderSum returns the running sum of the pseudo-header that UDP and
// TCP checksums cover: source and destination address, protocol and
// upper-layer length (RFC 768, RFC 9293; for IPv6 addresses RFC 8200
// section 8.1). Pass it as Checksum's initial value.
func PseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	if src.Is4() && dst.Is4() {
		return PseudoHeaderSum4(src.As4(), dst.As4(), proto, length)
	}
	s, d := src.As16(), dst.As16()
	sum := Sum(s[:], uint32(proto)+uint32(length)&0xffff+uint32(length)>>16)
	return Sum(d[:], sum)
}

// PseudoHeaderSum4 is PseudoHeaderSum for raw IPv4 addresses.
func PseudoHeaderSum4(src, dst [4]byte, proto uint8, length int) uint32 {
	return uint32(src[0])<<8 + uint32(src[1]) + uint32(src[2])<<8 + uint32(src[3]) +
		uint32(dst[0])<<8 + uint32(dst[1]) + uint32(dst[2])<<8 + uint32(dst[3]) +
		uint32(proto) + uint32(length)&0xffff + uint32(length)>>16
}

// UpdateChecksum16 returns the checksum sum updated for one 16-bit word of
// the covered data changing from old to new, by RFC 1624 equation 3:
// HC' = ~(~HC + ~m + m'). Unlike RFC 1141's equation it agrees with a full
// recomputation in the 0x0000/0xffff corner cases.
//
// For UDP, whose checksum 0 means "none", the caller leaves a zero checksum
// alone and stores 0xffff for a result of 0.
func UpdateChecksum16(sum, old, new uint16) uint16 {
	s := uint32(^sum) + uint32(^old) + uint32(new)
	return ^fold(s)
}

// UpdateChecksum32 returns the checksum sum updated for a 4-byte field (an
// IPv4 address, or two adjacent 16-bit words) changing from old to new. It
// also serves TCP and UDP checksums, whose pseudo-header covers the
// addresses.
func UpdateChecksum32(sum uint16, old, new [4]byte) uint16 {
	s := uint32(^sum) +
		uint32(^binary.BigEndian.Uint16(old[0:])) + uint32(^binary.BigEndian.Uint16(old[2:])) +
		uint32(binary.BigEndian.Uint16(new[0:])) + uint32(binary.BigEndian.Uint16(new[2:]))
	return ^fold(s)
}
