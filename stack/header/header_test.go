package header

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
)

func TestDecodeFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			frame := mustHex(fx.hex)
			got, _, stop := decodeOurs(frame)
			if stop != "" {
				t.Fatalf("rejected by %s", stop)
			}
			if !reflect.DeepEqual(got, fx.want) {
				t.Fatalf("decoded\n%s\nwant\n%s", dump(got), dump(fx.want))
			}
			// A NIC pads short frames to 60 bytes: the views must cut the
			// padding off and decode the same.
			padded := padTo60(frame)
			got, _, stop = decodeOurs(padded)
			if stop != "" || !reflect.DeepEqual(got, fx.want) {
				t.Fatalf("padded to %d bytes: stop %q, decoded\n%s", len(padded), stop, dump(got))
			}
		})
	}
}

func TestEncodeFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			frame := mustHex(fx.hex)
			_, payload, _ := decodeOurs(frame)
			if got := encodeFrame(fx.want, payload); !bytes.Equal(got, frame) {
				t.Fatalf("encoded\n%x\nwant\n%x", got, frame)
			}
		})
	}
}

// TestTruncatedFixtures feeds every prefix of every fixture to the decoder
// chain and to each layer's parser: shorter than the layer needs must be
// rejected, long enough must be accepted with the right bounds, and nothing
// may panic.
func TestTruncatedFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			frame := mustHex(fx.hex)
			for n := range len(frame) {
				if _, _, stop := decodeOurs(frame[:n]); stop == "" {
					t.Fatalf("prefix of %d of %d bytes accepted", n, len(frame))
				}
			}
			padded := padTo60(frame)
			for n := len(frame); n <= len(padded); n++ {
				if got, _, stop := decodeOurs(padded[:n]); stop != "" || !reflect.DeepEqual(got, fx.want) {
					t.Fatalf("%d bytes with padding: stop %q", n, stop)
				}
			}

			for n := range len(frame) + 1 {
				e, ok := ParseEthernet(frame[:n])
				if ok != (n >= EthernetLen) {
					t.Fatalf("ParseEthernet(%d bytes) = %v", n, ok)
				}
				if ok {
					exerciseEthernet(t, e)
				}
			}
			l3 := frame[EthernetLen:]
			if fx.want.ARP != nil {
				for n := range len(l3) + 1 {
					a, ok := ParseARP(l3[:n])
					if ok != (n >= ARPLen) {
						t.Fatalf("ParseARP(%d bytes) = %v", n, ok)
					}
					if ok {
						exerciseARP(t, a)
					}
				}
				return
			}
			for n := range len(l3) + 1 {
				h, why := ParseIPv4(l3[:n])
				if want := IPv4OK; n < len(l3) {
					want = IPv4Truncated
					if why != want {
						t.Fatalf("ParseIPv4(%d of %d bytes) = %v, want %v", n, len(l3), why, want)
					}
					continue
				}
				if why != IPv4OK {
					t.Fatalf("ParseIPv4 = %v", why)
				}
				exerciseIPv4(t, h)
			}
			h, _ := ParseIPv4(l3)
			l4 := h.Payload()
			for n := range len(l4) + 1 {
				p := l4[:n]
				switch h.Protocol() {
				case ProtoICMP:
					m, ok := ParseICMPv4(p)
					if ok != (n >= ICMPv4MinLen) {
						t.Fatalf("ParseICMPv4(%d bytes) = %v", n, ok)
					}
					if ok {
						exerciseICMPv4(t, m)
					}
				case ProtoUDP:
					u, ok := ParseUDP(p)
					if ok != (n == len(l4)) {
						t.Fatalf("ParseUDP(%d of %d bytes) = %v", n, len(l4), ok)
					}
					if ok {
						exerciseUDP(t, u)
					}
				case ProtoTCP:
					s, ok := ParseTCP(p)
					if ok != (n >= fx.want.TCP.DataOffset) {
						t.Fatalf("ParseTCP(%d bytes) = %v", n, ok)
					}
					if ok {
						if len(s.Payload()) != n-fx.want.TCP.DataOffset {
							t.Fatalf("ParseTCP(%d bytes): payload %d", n, len(s.Payload()))
						}
						exerciseTCP(t, s)
					}
				}
			}
		})
	}
}

// TestTCPOptionsPrefixes cuts the options of Linux's SYN at every length:
// exactly the cuts at option boundaries are well formed.
func TestTCPOptionsPrefixes(t *testing.T) {
	opts := mustHex("020405b40402080ac4450031000000000103030a")
	boundaries := map[int]TCPOptions{
		0:  {},
		4:  {MSS: 1460, HasMSS: true},
		6:  {MSS: 1460, HasMSS: true, SACKPermitted: true},
		16: {MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 3292856369, HasTS: true},
		17: {MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 3292856369, HasTS: true},
		20: {MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 3292856369, HasTS: true, WScale: 10, HasWScale: true},
	}
	for n := range len(opts) + 1 {
		var o TCPOptions
		ok := ParseTCPOptions(opts[:n], &o)
		want, boundary := boundaries[n]
		if ok != boundary || ok && o != want {
			t.Fatalf("ParseTCPOptions(%d bytes) = %v %+v, want %v %+v", n, ok, o, boundary, want)
		}
	}
}

func TestParseTCPOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		hex  string
		ok   bool
		want TCPOptions
	}{
		{"empty", "", true, TCPOptions{}},
		{"eol-stops", "00020405b4", true, TCPOptions{}},
		{"nops", "01010101", true, TCPOptions{}},
		{"unknown-kind-skipped", "1e0400000204ffff", true, TCPOptions{MSS: 0xffff, HasMSS: true}},
		{"sack-1", "0101050a0000000100000002", true, TCPOptions{SACK: [4][2]uint32{{1, 2}}, NumSACK: 1}},
		{"sack-4-exact", "05220000000100000002000000030000000400000005000000060000000700000008", true,
			TCPOptions{SACK: [4][2]uint32{{1, 2}, {3, 4}, {5, 6}, {7, 8}}, NumSACK: 4}},
		{"sack-5", "052a" + "0000000100000002000000030000000400000005000000060000000700000008000000090000000a", false, TCPOptions{}},
		{"sack-odd", "050b000000010000000200", false, TCPOptions{}},
		{"sack-empty", "0502", false, TCPOptions{}},
		{"mss-short", "020305", false, TCPOptions{}},
		{"mss-long", "0205000000", false, TCPOptions{}},
		{"ws-bad", "030400", false, TCPOptions{}},
		{"sackok-bad", "0403ff", false, TCPOptions{}},
		{"ts-bad", "0809000000000000000000", false, TCPOptions{}},
		{"len-0", "1e00", false, TCPOptions{}},
		{"len-1", "1e01", false, TCPOptions{}},
		{"len-past-end", "1e06000000", false, TCPOptions{}},
		{"no-len", "02", false, TCPOptions{}},
		{"no-len-after-nop", "0102", false, TCPOptions{}},
		{"repeat-last-wins", "02040001020400020103030e", true, TCPOptions{MSS: 2, HasMSS: true, WScale: 14, HasWScale: true}},
		{"repeat-sack-last-wins", "0512000000010000000200000003000000040101050a0000000500000006", true,
			TCPOptions{SACK: [4][2]uint32{{5, 6}}, NumSACK: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := TCPOptions{MSS: 99, HasMSS: true, NumSACK: 3} // must be reset
			ok := ParseTCPOptions(mustHex(tc.hex), &o)
			if ok != tc.ok || ok && o != tc.want {
				t.Fatalf("= %v %+v, want %v %+v", ok, o, tc.ok, tc.want)
			}
		})
	}
}

func TestEncodeTCPOptions(t *testing.T) {
	blocks := [4][2]uint32{{1, 2}, {3, 4}, {5, 6}, {7, 8}}
	for _, tc := range []struct {
		name string
		o    TCPOptions
		hex  string
		back *TCPOptions // what parsing the bytes gives, when not o itself
	}{
		{"none", TCPOptions{}, "", nil},
		{"linux-syn", TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 3292856369, HasTS: true, WScale: 10, HasWScale: true},
			"020405b40402080ac4450031000000000103030a", nil},
		{"ts-only", TCPOptions{TSVal: 3292856369, TSEcr: 490873066, HasTS: true}, "0101080ac44500311d4220ea", nil},
		{"sackok-only", TCPOptions{SACKPermitted: true}, "01010402", nil},
		{"mss-ws", TCPOptions{MSS: 8960, HasMSS: true, WScale: 7, HasWScale: true}, "0204230001030307", nil},
		{"ts-sack-2", TCPOptions{TSVal: 1, TSEcr: 2, HasTS: true, SACK: [4][2]uint32{{1, 2}, {3, 4}}, NumSACK: 2},
			"0101080a0000000100000002" + "01010512" + "0000000100000002" + "0000000300000004", nil},
		{"ts-sack-4-clamped-to-3", TCPOptions{TSVal: 1, TSEcr: 2, HasTS: true, SACK: blocks, NumSACK: 4},
			"0101080a0000000100000002" + "0101051a" + "000000010000000200000003000000040000000500000006",
			&TCPOptions{TSVal: 1, TSEcr: 2, HasTS: true, SACK: [4][2]uint32{{1, 2}, {3, 4}, {5, 6}}, NumSACK: 3}},
		{"sack-4", TCPOptions{SACK: blocks, NumSACK: 4},
			"01010522" + "0000000100000002000000030000000400000005000000060000000700000008", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := mustHex(tc.hex)
			buf := make([]byte, TCPMaxOptionsLen)
			n := EncodeTCPOptions(buf, &tc.o)
			if n != TCPOptionsLen(&tc.o) || n%4 != 0 || !bytes.Equal(buf[:n], want) {
				t.Fatalf("encoded %d bytes %x, want %x", n, buf[:n], want)
			}
			back := tc.o
			if tc.back != nil {
				back = *tc.back
			}
			var o TCPOptions
			if !ParseTCPOptions(buf[:n], &o) || o != back {
				t.Fatalf("parsed back %+v, want %+v", o, back)
			}
		})
	}
}

func TestParseIPv4Errors(t *testing.T) {
	good := mustHex(fxEchoRequest)[EthernetLen:]
	for _, tc := range []struct {
		name   string
		mutate func(b []byte) []byte
		want   IPv4Error
	}{
		{"ok", func(b []byte) []byte { return b }, IPv4OK},
		{"short", func(b []byte) []byte { return b[:19] }, IPv4Truncated},
		{"version-6", func(b []byte) []byte { b[0] = 0x65; return b }, IPv4BadVersion},
		{"ihl-4", func(b []byte) []byte { b[0] = 0x44; return b }, IPv4BadIHL},
		{"ihl-past-total", func(b []byte) []byte { b[0] = 0x4f; return b }, IPv4BadLength},
		{"total-below-ihl", func(b []byte) []byte { b[3] = 19; return b }, IPv4BadLength},
		{"total-zero", func(b []byte) []byte { b[2], b[3] = 0, 0; return b }, IPv4BadLength},
		{"total-past-end", func(b []byte) []byte { b[3]++; return b }, IPv4Truncated},
		{"checksum", func(b []byte) []byte { b[8]--; return b }, IPv4BadChecksum},
		{"checksum-0xffff-for-0x0000", func(b []byte) []byte { return ipv4WithZeroChecksum(b, true) }, IPv4OK},
		{"checksum-0x0000", func(b []byte) []byte { return ipv4WithZeroChecksum(b, false) }, IPv4OK},
		{"padded", func(b []byte) []byte { return append(b, 0, 0, 0) }, IPv4OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(bytes.Clone(good))
			h, why := ParseIPv4(b)
			if why != tc.want {
				t.Fatalf("ParseIPv4 = %v, want %v", why, tc.want)
			}
			if why == IPv4OK {
				if len(h) != h.TotalLength() {
					t.Fatalf("view %d bytes, total length %d", len(h), h.TotalLength())
				}
				exerciseIPv4(t, h)
			} else if h != nil {
				t.Fatal("rejected with a non-nil view")
			}
		})
	}
	names := map[string]bool{}
	for e := IPv4OK; e <= IPv4BadChecksum+1; e++ {
		names[e.String()] = true
	}
	if len(names) != int(IPv4BadChecksum)+2 {
		t.Fatalf("IPv4Error names are not distinct: %v", names)
	}
}

// ipv4WithZeroChecksum returns b with its ID chosen so that the header
// checksum computes to 0x0000, stored as 0x0000 or, if ffff, as 0xffff (both
// are zero in one's complement, and receivers accept both).
func ipv4WithZeroChecksum(b []byte, ffff bool) []byte {
	h := IPv4(b)
	h.SetID(0)
	h.SetChecksum(0)
	s := fold(Sum(h.Header(), 0))
	h.SetID(0xffff - s)
	if h.ComputeChecksum() != 0 {
		panic("ipv4WithZeroChecksum")
	}
	if ffff {
		h.SetChecksum(0xffff)
	}
	return b
}

func TestParseARPRejects(t *testing.T) {
	good := mustHex(fxARPRequest)[EthernetLen:]
	for _, tc := range []struct {
		name string
		at   int
		val  byte
	}{
		{"htype", 1, 6}, {"htype-high", 0, 1}, {"ptype", 2, 0x86}, {"hlen", 4, 8}, {"plen", 5, 16},
	} {
		b := bytes.Clone(good)
		b[tc.at] = tc.val
		if _, ok := ParseARP(b); ok {
			t.Errorf("%s: accepted %x", tc.name, b)
		}
	}
	a, ok := ParseARP(append(bytes.Clone(good), make([]byte, 18)...))
	if !ok || len(a) != ARPLen {
		t.Fatalf("padded ARP: ok %v, view %d bytes", ok, len(a))
	}
}

func TestParseUDPRejects(t *testing.T) {
	good := mustHex(fxDNSQuery)[EthernetLen+IPv4MinLen:]
	for _, tc := range []struct {
		name   string
		length int
		extra  int
		ok     bool
	}{
		{"exact", 60, 0, true}, {"padded", 60, 6, true}, {"length-7", 7, 0, false},
		{"length-0", 0, 0, false}, {"length-8", 8, 0, true}, {"length-past-end", 61, 0, false},
	} {
		b := append(bytes.Clone(good), make([]byte, tc.extra)...)
		binary.BigEndian.PutUint16(b[4:], uint16(tc.length))
		u, ok := ParseUDP(b)
		if ok != tc.ok || ok && len(u) != tc.length {
			t.Errorf("%s: ok %v, view %d bytes", tc.name, ok, len(u))
		}
	}
}

func TestParseTCPRejects(t *testing.T) {
	good := mustHex(fxTCPSYN)[EthernetLen+IPv4MinLen:]
	for off := range 16 {
		b := bytes.Clone(good)
		b[12] = uint8(off)<<4 | b[12]&0x0f
		_, ok := ParseTCP(b)
		if want := off >= 5 && off*4 <= len(b); ok != want {
			t.Errorf("data offset %d: ok %v", off*4, ok)
		}
	}
}

// TestICMPErrorQuote reads the datagram quoted in the port-unreachable
// fixture: the NAT will translate such quotes.
func TestICMPErrorQuote(t *testing.T) {
	_, quote, stop := decodeOurs(mustHex(fxPortUnreach))
	if stop != "" {
		t.Fatal(stop)
	}
	h, why := ParseIPv4(quote)
	if why != IPv4OK || h.Src() != ipA || h.Dst() != ipB || h.Protocol() != ProtoUDP {
		t.Fatalf("quoted IPv4: %v", why)
	}
	u, ok := ParseUDP(h.Payload())
	if !ok || u.SrcPort() != 49841 || u.DstPort() != 53 || !u.ChecksumValid(h.Src(), h.Dst()) {
		t.Fatalf("quoted UDP: %v", ok)
	}
}

func TestICMPFragNeeded(t *testing.T) {
	b := make([]byte, ICMPv4MinLen+28)
	m, _ := ParseICMPv4(b)
	m.SetType(ICMPDestUnreachable)
	m.SetCode(ICMPFragNeeded)
	m.SetMTU(1400)
	m.FixChecksum()
	if m.MTU() != 1400 || m.ID() != 0 || !m.ChecksumValid() || !bytes.Equal(b[:8], []byte{3, 4, 0xf7, 0x83, 0, 0, 0x05, 0x78}) {
		t.Fatalf("frag needed: %x", b[:8])
	}
}

func TestIPv4SettersAndFragments(t *testing.T) {
	b := make([]byte, 40)
	h := EncodeIPv4(b, IPv4Fields{TotalLength: 40, ID: 7, MF: true, FragmentOffset: 1480, TTL: 64, Protocol: ProtoUDP,
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.19.255.254")})
	if !h.MF() || h.DF() || h.FragmentOffset() != 1480 || !h.IsFragment() || h.Checksum() != h.ComputeChecksum() {
		t.Fatalf("fragment fields wrong: %x", b[:20])
	}
	h.SetFragment(true, false, 0)
	if h.IsFragment() || !h.DF() || h.MF() {
		t.Fatal("SetFragment(true, false, 0)")
	}
	h.SetFragment(false, false, 8)
	if !h.IsFragment() || h.FragmentOffset() != 8 {
		t.Fatal("last fragment is a fragment")
	}
	h.SetSrc4([4]byte{1, 2, 3, 4})
	h.SetDst(netip.MustParseAddr("5.6.7.8"))
	h.SetTTL(1)
	h.SetID(0x1234)
	h.SetTotalLength(40)
	h.FixChecksum()
	if _, why := ParseIPv4(b); why != IPv4OK {
		t.Fatal(why)
	}
	if h.Src() != netip.AddrFrom4([4]byte{1, 2, 3, 4}) || h.Dst4() != [4]byte{5, 6, 7, 8} || h.TTL() != 1 || h.ID() != 0x1234 {
		t.Fatal("setters")
	}
}

func TestMAC(t *testing.T) {
	if s := (MAC{0x02, 0x6e, 0x63, 0xa0, 0xff, 0x01}).String(); s != "02:6e:63:a0:ff:01" {
		t.Fatal(s)
	}
	if BroadcastMAC.String() != "ff:ff:ff:ff:ff:ff" || !BroadcastMAC.IsBroadcast() || !BroadcastMAC.IsMulticast() || macA.IsMulticast() {
		t.Fatal("broadcast")
	}
}

func dump(s summary) string {
	out := fmt.Sprintf("  %+v", s.Eth)
	for _, p := range []any{s.ARP, s.IP, s.ICMP, s.UDP, s.TCP} {
		if !reflect.ValueOf(p).IsNil() {
			out += fmt.Sprintf("\n  %+v", p)
		}
	}
	return out
}
