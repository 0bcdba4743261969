package header

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// refChecksum is RFC 1071's algorithm written out word by word.
func refChecksum(b []byte, initial uint32) uint16 {
	s := uint64(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func TestChecksumRFCExamples(t *testing.T) {
	// RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
	rfc1071 := mustHex("0001f203f4f5f6f7")
	if got := fold(Sum(rfc1071, 0)); got != 0xddf2 {
		t.Errorf("RFC 1071 sum = %#04x, want 0xddf2", got)
	}
	if got := Checksum(rfc1071, 0); got != 0x220d {
		t.Errorf("RFC 1071 checksum = %#04x, want 0x220d", got)
	}
	// The IPv4 header commonly used to teach the checksum (checksum b861).
	h := mustHex("450000730000400040110000c0a80001c0a800c7")
	if got := Checksum(h, 0); got != 0xb861 {
		t.Errorf("IPv4 example checksum = %#04x, want 0xb861", got)
	}
	binary.BigEndian.PutUint16(h[10:], 0xb861)
	if Checksum(h, 0) != 0 || IPv4(h).ComputeChecksum() != 0xb861 {
		t.Error("IPv4 example does not verify")
	}
	// RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives 0x0000,
	// which is what a full recomputation gives (RFC 1141's equation gives 0xffff).
	if got := UpdateChecksum16(0xdd2f, 0x5555, 0x3285); got != 0x0000 {
		t.Errorf("RFC 1624 example = %#04x, want 0x0000", got)
	}
	if Checksum(nil, 0) != 0xffff || Checksum([]byte{0}, 0) != 0xffff {
		t.Error("checksum of nothing is 0xffff")
	}
}

func TestSumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		b := randBytes(rng, rng.IntN(200))
		init := rng.Uint32()
		if rng.IntN(4) == 0 {
			init = 0
		}
		if got, want := Checksum(b, init), refChecksum(b, init); got != want {
			t.Fatalf("Checksum(%x, %#x) = %#04x, want %#04x", b, init, got, want)
		}
		// Sums of even-length pieces combine through initial.
		cut := rng.IntN(len(b)+1) &^ 1
		if got, want := Checksum(b[cut:], Sum(b[:cut], init)), refChecksum(b, init); got != want {
			t.Fatalf("split at %d: %#04x, want %#04x", cut, got, want)
		}
	}
	// The largest IPv4 packet of 0xff bytes, and a larger buffer, with the
	// largest initial value: no carry may be lost.
	for _, n := range []int{65535, 1 << 20} {
		b := bytes.Repeat([]byte{0xff}, n)
		if got, want := Checksum(b, 0xffffffff), refChecksum(b, 0xffffffff); got != want {
			t.Fatalf("%d bytes of 0xff: %#04x, want %#04x", n, got, want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 1000 {
		proto, length := uint8(rng.UintN(256)), rng.IntN(1<<16)
		src, dst := randAddr(rng), randAddr(rng)
		s, d := src.As4(), dst.As4()
		ph := append(append(append(s[:0:0], s[:]...), d[:]...), 0, proto, byte(length>>8), byte(length))
		if got, want := fold(PseudoHeaderSum(src, dst, proto, length)), ^refChecksum(ph, 0); got != want {
			t.Fatalf("IPv4 pseudo-header sum %#04x, want %#04x", got, want)
		}
		if PseudoHeaderSum4(s, d, proto, length) != PseudoHeaderSum(src, dst, proto, length) {
			t.Fatal("PseudoHeaderSum4 differs")
		}
		// IPv6 (RFC 8200 section 8.1): addresses, 32-bit length, 3 zero bytes, next header.
		length = rng.IntN(1 << 20)
		s6, d6 := [16]byte(randBytes(rng, 16)), [16]byte(randBytes(rng, 16))
		ph6 := append(append(s6[:], d6[:]...), byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
		got := fold(PseudoHeaderSum(netip.AddrFrom16(s6), netip.AddrFrom16(d6), proto, length))
		if want := ^refChecksum(ph6, 0); got != want {
			t.Fatalf("IPv6 pseudo-header sum %#04x, want %#04x", got, want)
		}
	}
}

// randIPv4 returns a random 20-byte IPv4 header with a valid checksum.
func randIPv4(rng *rand.Rand) IPv4 {
	return EncodeIPv4(make([]byte, IPv4MinLen), IPv4Fields{TOS: uint8(rng.UintN(256)), TotalLength: IPv4MinLen,
		ID: uint16(rng.Uint32()), DF: rng.IntN(2) == 0, TTL: uint8(rng.UintN(256)), Protocol: uint8(rng.UintN(256)),
		Src: randAddr(rng), Dst: randAddr(rng)})
}

// ipv4Change is a field change made the way a router or the NAT makes it:
// in place, with an incremental checksum update. It returns the updated
// checksum; the header's checksum field is left as it was.
type ipv4Change func(h IPv4, rng *rand.Rand) uint16

var ipv4Changes = map[string]ipv4Change{
	"ttl": func(h IPv4, rng *rand.Rand) uint16 { // the TTL shares its word with the protocol
		old := binary.BigEndian.Uint16(h[8:])
		h.SetTTL(uint8(rng.UintN(256)))
		return UpdateChecksum16(h.Checksum(), old, binary.BigEndian.Uint16(h[8:]))
	},
	"ttl-decrement": func(h IPv4, rng *rand.Rand) uint16 {
		old := binary.BigEndian.Uint16(h[8:])
		h.SetTTL(h.TTL() - 1)
		return UpdateChecksum16(h.Checksum(), old, binary.BigEndian.Uint16(h[8:]))
	},
	"src": func(h IPv4, rng *rand.Rand) uint16 {
		old, new := h.Src4(), randAddr(rng).As4()
		h.SetSrc4(new)
		return UpdateChecksum32(h.Checksum(), old, new)
	},
	"dst": func(h IPv4, rng *rand.Rand) uint16 {
		old, new := h.Dst4(), randAddr(rng).As4()
		h.SetDst4(new)
		return UpdateChecksum32(h.Checksum(), old, new)
	},
	"id": func(h IPv4, rng *rand.Rand) uint16 {
		old, new := h.ID(), uint16(rng.Uint32())
		h.SetID(new)
		return UpdateChecksum16(h.Checksum(), old, new)
	},
}

// setIDForChecksum sets h's ID so that its checksum computes to want (0x0000
// is the corner RFC 1624 is about) and stores it.
func setIDForChecksum(h IPv4, want uint16) {
	h.SetID(0)
	s := fold(Sum(h[:10], Sum(h[12:20], 0))) // the header's sum without ID and checksum
	// ID must make the sum ^want: s + id ≡ ^want (mod 0xffff).
	id := uint32(^want) + 0xffff - uint32(s)
	h.SetID(fold(id))
	h.FixChecksum()
	if h.Checksum() != want {
		panic("setIDForChecksum")
	}
}

func TestIncrementalIPv4(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for name, change := range ipv4Changes {
		t.Run(name, func(t *testing.T) {
			for i := range 20000 {
				h := randIPv4(rng)
				switch i % 4 {
				case 1: // the checksum before the change is 0x0000
					setIDForChecksum(h, 0)
				case 2: // the checksum after the change is 0x0000
					if name == "id" {
						continue
					}
					c := IPv4(bytes.Clone(h))
					change(c, rand.New(rand.NewPCG(uint64(i), 0)))
					setIDForChecksum(c, 0)
					h.SetID(c.ID())
					h.FixChecksum()
				}
				before := bytes.Clone(h)
				got := change(h, rand.New(rand.NewPCG(uint64(i), 0)))
				want := h.ComputeChecksum()
				if i%4 == 2 && want != 0 {
					t.Fatalf("setup: checksum after the change is %#04x", want)
				}
				if got != want {
					t.Fatalf("%x changed to %x: incremental %#04x, full %#04x", before, []byte(h), got, want)
				}
				h.SetChecksum(got)
				if _, why := ParseIPv4(h); why != IPv4OK {
					t.Fatal(why)
				}
			}
		})
	}
}

// TestIncrementalTransport rewrites what the NAT rewrites: an address (in
// the IPv4 header and in the TCP or UDP pseudo-header) and a port. The
// incremental updates must equal a full recomputation, including UDP's
// stored 0xffff for a computed 0.
func TestIncrementalTransport(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for i := range 20000 {
		proto := uint8(ProtoTCP)
		if i%2 == 1 {
			proto = ProtoUDP
		}
		payload := randBytes(rng, rng.IntN(64))
		n := IPv4MinLen + TCPMinLen + len(payload)
		if proto == ProtoUDP {
			n = IPv4MinLen + UDPLen + len(payload)
		}
		b := make([]byte, n)
		h := EncodeIPv4(b, IPv4Fields{TotalLength: n, ID: uint16(rng.Uint32()), TTL: 64, Protocol: proto, Src: randAddr(rng), Dst: randAddr(rng)})
		var l4csum func() uint16
		var setL4 func(uint16)
		var fix func()
		var ports []byte
		if proto == ProtoTCP {
			s := EncodeTCP(h.Payload(), TCPFields{SrcPort: uint16(rng.Uint32()), DstPort: uint16(rng.Uint32()), Seq: rng.Uint32(), Flags: TCPFlagACK}, 0)
			copy(s.Payload(), payload)
			l4csum, setL4, fix, ports = s.Checksum, s.SetChecksum, func() { s.FixChecksum(h.Src(), h.Dst()) }, s[:4]
		} else {
			copy(h.Payload()[UDPLen:], payload)
			u := EncodeUDP(h.Payload(), uint16(rng.Uint32()), uint16(rng.Uint32()), len(payload))
			l4csum, setL4, fix, ports = u.Checksum, u.SetChecksum, func() { u.FixChecksum(h.Src(), h.Dst()) }, u[:4]
			if i%8 == 1 {
				// Make the UDP checksum compute to 0, stored as 0xffff: the
				// port word absorbs the difference.
				u.SetSrcPort(0)
				u.FixChecksum(h.Src(), h.Dst())
				u.SetSrcPort(u.Checksum())
				u.FixChecksum(h.Src(), h.Dst())
				if u.Checksum() != 0xffff {
					t.Fatalf("setup: UDP checksum %#04x", u.Checksum())
				}
			}
		}
		fix()
		update := func(old, new uint16) { // a port word
			c := UpdateChecksum16(l4csum(), old, new)
			if proto == ProtoUDP && c == 0 {
				c = 0xffff
			}
			setL4(c)
		}
		update32 := func(old, new [4]byte) {
			c := UpdateChecksum32(l4csum(), old, new)
			if proto == ProtoUDP && c == 0 {
				c = 0xffff
			}
			setL4(c)
		}

		// Source NAT: a new source address and port.
		oldAddr, newAddr := h.Src4(), randAddr(rng).As4()
		h.SetSrc4(newAddr)
		h.SetChecksum(UpdateChecksum32(h.Checksum(), oldAddr, newAddr))
		update32(oldAddr, newAddr)
		oldPort, newPort := binary.BigEndian.Uint16(ports), uint16(rng.Uint32())
		if proto == ProtoUDP && i%8 == 3 {
			// Choose the new port so that the checksum computes to 0 after it.
			scratch := UDP(bytes.Clone(h.Payload()))
			scratch.SetSrcPort(0)
			scratch.FixChecksum(h.Src(), h.Dst())
			newPort = scratch.Checksum()
		}
		binary.BigEndian.PutUint16(ports, newPort)
		update(oldPort, newPort)
		if proto == ProtoUDP && i%8 == 3 && l4csum() != 0xffff {
			t.Fatalf("setup: UDP checksum after the port change %#04x", l4csum())
		}

		got := bytes.Clone(b)
		h.FixChecksum()
		fix()
		if !bytes.Equal(got, b) {
			t.Fatalf("proto %d: incremental\n%x\nfull\n%x", proto, got, b)
		}
	}
}
