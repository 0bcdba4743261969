package stack

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// FuzzStackInput feeds arbitrary frames (and arbitrary IPv4 packets wrapped in a valid
// Ethernet header addressed to us) through the whole stack: nothing may panic, and every
// packet must get a verdict (the harness fails on an undecided one).
func FuzzStackInput(f *testing.F) {
	f.Add(echoRequest(f, []byte("seed")), false)
	f.Add(udpFrame(f, 1, 7, []byte("seed")), false)
	f.Add(arpRequest(f, ourIP), false)
	f.Add(udpFrame(f, 1, 7, make([]byte, 100))[14:], true)
	hs := newHarness(f, Config{}, 0, 1)
	if _, err := hs.h.ListenUDP(netip.MustParseAddrPort("0.0.0.0:7")); err != nil {
		f.Fatal(err)
	}
	hs.step()
	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		if len(data) > 1500 {
			data = data[:1500]
		}
		frame := data
		if wrap {
			frame = append(append([]byte(nil), echoRequest(t, nil)[:14]...), data...)
			if len(frame) >= 34 {
				// Point it at us with a valid header checksum so the deeper layers are reached.
				copy(frame[14+16:14+20], ourIP.AsSlice())
				frame[14+10], frame[14+11] = 0, 0
				ihl := int(frame[14]&0x0f) * 4
				if ihl >= 20 && 14+ihl <= len(frame) {
					var s uint32
					for i := 14; i < 14+ihl; i += 2 {
						s += uint32(binary.BigEndian.Uint16(frame[i:]))
					}
					for s > 0xffff {
						s = s&0xffff + s>>16
					}
					binary.BigEndian.PutUint16(frame[14+10:], ^uint16(s))
				}
			}
		}
		hs.Advance(time.Millisecond)
		hs.step(frame)
		if hs.s.reasm.used > hs.h.cfg.ReassemblyBytes {
			t.Fatalf("reassembly holds %d bytes", hs.s.reasm.used)
		}
	})
}
