package header

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// frameWith returns a copy of the fixture frame fx with its bytes from off
// replaced by b.
func frameWith(fx string, off int, b ...byte) []byte {
	f := mustHex(fx)
	copy(f[off:], b)
	return f
}

func TestIPv4InFrame(t *testing.T) {
	type want struct {
		ok           bool
		ihl          int
		proto        uint8
		first        bool
		portsOK      bool
		sport, dport uint16
	}
	dns := want{ok: true, ihl: 20, proto: ProtoUDP, first: true, portsOK: true, sport: 0xc2b1, dport: 53}
	syn := want{ok: true, ihl: 20, proto: ProtoTCP, first: true, portsOK: true, sport: 0x8006, dport: 8080}
	for _, tc := range []struct {
		name  string
		frame []byte
		want
	}{
		{"udp", mustHex(fxDNSQuery), dns},
		{"tcp", mustHex(fxTCPSYN), syn},
		{"icmp", mustHex(fxEchoRequest), want{ok: true, ihl: 20, proto: ProtoICMP, first: true, portsOK: true, sport: 0x0800, dport: 0x321e}},
		// Record route: IHL 15, 40 bytes of options; the payload starts after them.
		{"options", mustHex(fxEchoRRReq), want{ok: true, ihl: 60, proto: ProtoICMP, first: true, portsOK: true, sport: 0x0800, dport: 0xe77d}},
		// The header alone: accepted, with no transport bytes.
		{"header only", mustHex(fxDNSQuery)[:EthernetLen+IPv4MinLen], want{ok: true, ihl: 20, proto: ProtoUDP, first: true}},
		{"three transport bytes", mustHex(fxDNSQuery)[:EthernetLen+IPv4MinLen+3], want{ok: true, ihl: 20, proto: ProtoUDP, first: true}},
		// The total length and the checksum are not looked at.
		{"bad checksum", frameWith(fxDNSQuery, EthernetLen+10, 0, 0), dns},
		{"total length beyond the frame", frameWith(fxDNSQuery, EthernetLen+2, 0xff, 0xff), dns},
		{"total length below the header", frameWith(fxDNSQuery, EthernetLen+2, 0, 4), dns},
		// Fragments: the first (MF, offset 0) carries the ports, a later one does not.
		{"first fragment", frameWith(fxDNSQuery, EthernetLen+6, 0x20, 0), dns},
		{"later fragment", frameWith(fxDNSQuery, EthernetLen+6, 0x20, 0x01), want{ok: true, ihl: 20, proto: ProtoUDP}},
		{"last fragment", frameWith(fxDNSQuery, EthernetLen+6, 0x00, 0xb9), want{ok: true, ihl: 20, proto: ProtoUDP}},
		{"DF", frameWith(fxDNSQuery, EthernetLen+6, 0x40, 0), dns},

		{"empty", nil, want{}},
		{"ethernet only", mustHex(fxDNSQuery)[:EthernetLen], want{}},
		{"truncated header", mustHex(fxDNSQuery)[:EthernetLen+IPv4MinLen-1], want{}},
		{"options beyond the frame", mustHex(fxEchoRRReq)[:EthernetLen+59], want{}},
		{"IHL beyond the frame", frameWith(fxDNSQuery, EthernetLen, 0x4f)[:EthernetLen+40], want{}},
		{"arp", mustHex(fxARPRequest), want{}},
		{"ipv6 ethertype", frameWith(fxDNSQuery, 12, 0x86, 0xdd), want{}},
		{"vlan tag", frameWith(fxDNSQuery, 12, 0x81, 0x00), want{}},
		{"version 6", frameWith(fxDNSQuery, EthernetLen, 0x65), want{}},
		{"version 0", frameWith(fxDNSQuery, EthernetLen, 0x05), want{}},
		{"IHL 4", frameWith(fxDNSQuery, EthernetLen, 0x44), want{}},
		{"IHL 0", frameWith(fxDNSQuery, EthernetLen, 0x40), want{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, ok := IPv4InFrame(tc.frame)
			if ok != tc.ok {
				t.Fatalf("IPv4InFrame ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				if ip != nil {
					t.Fatal("rejected with a view")
				}
				return
			}
			if &ip[0] != &tc.frame[EthernetLen] || len(ip) != len(tc.frame)-EthernetLen {
				t.Fatal("the view is not the frame's bytes from offset 14 to its end")
			}
			sp, dp, pok := ip.Ports()
			got := want{ok: ok, ihl: ip.IHL(), proto: ip.Protocol(), first: ip.IsFirstFragment(), portsOK: pok, sport: sp, dport: dp}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			if len(ip.Header()) != tc.ihl || len(ip.Payload()) != len(tc.frame)-EthernetLen-tc.ihl {
				t.Fatal("header and payload do not split at IHL")
			}
			if ip.IsFirstFragment() != (ip.FragmentOffset() == 0) {
				t.Fatal("IsFirstFragment disagrees with FragmentOffset")
			}
		})
	}
}

// TestParseIPv4Header checks the bare-header form on an ICMP error's quote,
// which is cut short after 8 transport bytes.
func TestParseIPv4Header(t *testing.T) {
	unreach := mustHex(fxPortUnreach)
	quote := unreach[EthernetLen+IPv4MinLen+ICMPv4MinLen:]
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"quote", quote, true},
		{"quote header only", quote[:IPv4MinLen], true},
		{"quote truncated", quote[:IPv4MinLen-1], false},
		{"empty", nil, false},
		{"options missing", append([]byte{0x46}, quote[1:IPv4MinLen+3]...), false},
		{"options present", append([]byte{0x46}, quote[1:IPv4MinLen+4]...), true},
		{"version 5", append([]byte{0x55}, quote[1:]...), false},
		{"IHL 4", append([]byte{0x44}, quote[1:]...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := ParseIPv4Header(tc.b)
			if ok != tc.ok || (ok && len(h) != len(tc.b)) || (!ok && h != nil) {
				t.Fatalf("ParseIPv4Header = %d bytes, %v; want %v", len(h), ok, tc.ok)
			}
		})
	}
	q, _ := ParseIPv4Header(quote)
	if sp, dp, ok := q.Ports(); !ok || sp != 0xc2b1 || dp != 53 || q.Src4() != ipA.As4() || q.Protocol() != ProtoUDP {
		t.Fatalf("quoted header reads %d→%d %v from %v proto %d", sp, dp, ok, q.Src(), q.Protocol())
	}
}

// refIPv4InFrame is IPv4InFrame's documented rule, written out.
func refIPv4InFrame(f []byte) bool {
	if len(f) < EthernetLen+IPv4MinLen || binary.BigEndian.Uint16(f[12:14]) != EtherTypeIPv4 {
		return false
	}
	v, ihl := f[EthernetLen]>>4, int(f[EthernetLen]&0x0f)*4
	return v == 4 && ihl >= IPv4MinLen && len(f) >= EthernetLen+ihl
}

func FuzzIPv4InFrame(f *testing.F) {
	seedFrames(f, func(b []byte) []byte { return b })
	f.Add(mustHex(fxEchoRRReq)[:EthernetLen+59])
	f.Fuzz(func(t *testing.T, frame []byte) {
		ip, ok := IPv4InFrame(frame)
		if want := refIPv4InFrame(frame); ok != want {
			t.Fatalf("IPv4InFrame = %v, want %v", ok, want)
		}
		if h, hok := ParseIPv4Header(frame[min(len(frame), EthernetLen):]); len(frame) >= EthernetLen &&
			binary.BigEndian.Uint16(frame[12:14]) == EtherTypeIPv4 && (hok != ok || len(h) != len(ip)) {
			t.Fatal("IPv4InFrame and ParseIPv4Header disagree on an IPv4 frame")
		}
		if !ok {
			return
		}
		if len(ip) != len(frame)-EthernetLen {
			t.Fatal("view is not the rest of the frame")
		}
		// Every accessor and setter is safe on an accepted view, and the
		// setters write back what the accessors read.
		h := IPv4(bytes.Clone(ip))
		before := bytes.Clone(h)
		sinkU64 += uint64(h.IHL()) + uint64(h.TOS()) + uint64(h.TotalLength()) + uint64(h.ID()) +
			uint64(h.FragmentOffset()) + uint64(h.TTL()) + uint64(h.Protocol()) + uint64(h.Checksum()) +
			uint64(len(h.Options())) + uint64(len(h.Header())) + uint64(h.ComputeChecksum())
		sp, dp, pok := h.Ports()
		l4 := frame[EthernetLen+h.IHL():]
		if pok != (h.FragmentOffset() == 0 && len(l4) >= 4) || (pok && (sp != binary.BigEndian.Uint16(l4) || dp != binary.BigEndian.Uint16(l4[2:]))) {
			t.Fatalf("Ports = %d, %d, %v", sp, dp, pok)
		}
		if !bytes.Equal(h.Payload(), l4) || len(h.Header())+len(h.Payload()) != len(h) {
			t.Fatal("header and payload do not split at IHL")
		}
		h.SetTOS(h.TOS())
		h.SetTotalLength(h.TotalLength())
		h.SetID(h.ID())
		h.SetTTL(h.TTL())
		h.SetProtocol(h.Protocol())
		h.SetSrc(h.Src())
		h.SetDst(h.Dst())
		h.SetChecksum(h.Checksum())
		if !bytes.Equal(before, h) {
			t.Fatalf("setters changed\n%x to\n%x", before, []byte(h))
		}
		h.FixChecksum()
	})
}

func TestIPv4InFrameAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("testing.AllocsPerRun counts the race detector's own allocations: allocation checks run without -race")
	}
	frames := [][]byte{mustHex(fxDNSQuery), mustHex(fxEchoRRReq), mustHex(fxARPRequest), mustHex(fxDNSQuery)[:20]}
	n := testing.AllocsPerRun(100, func() {
		for _, f := range frames {
			ip, ok := IPv4InFrame(f)
			sinkBool = ok
			if ok {
				sp, dp, pok := ip.Ports()
				sinkU64 += uint64(sp) + uint64(dp) + uint64(ip.IHL())
				sinkBool = pok || ip.IsFirstFragment()
				sinkAddr = ip.Src()
			}
		}
	})
	if n != 0 {
		t.Fatalf("IPv4InFrame and its view allocate %v times per run", n)
	}
}

func BenchmarkIPv4InFrame(b *testing.B) {
	f := mustHex(fxDNSQuery)
	for b.Loop() {
		ip, ok := IPv4InFrame(f)
		if ok {
			_, dp, _ := ip.Ports()
			sinkU64 += uint64(dp)
		}
	}
}
