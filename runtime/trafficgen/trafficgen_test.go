package trafficgen

import (
	"net"
	"net/netip"
	"testing"

	"netchan/internal/testpkt"
)

// TestBuildMatchesGopacket cross-checks the generator's frames with an independent decoder.
func TestBuildMatchesGopacket(t *testing.T) {
	c := Config{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.1"),
		SrcPort: 40000, DstPort: 9, Flows: 4, RunID: 7,
	}
	buf := make([]byte, 2048)
	for _, size := range []int{60, 61, 128, 1514} {
		c.Size = size
		for seq := uint64(0); seq < 8; seq++ {
			n := c.Build(buf, seq)
			if n != size {
				t.Fatalf("size %d: built %d bytes", size, n)
			}
			u, ok := testpkt.DecodeUDP(buf[:n])
			if !ok {
				t.Fatalf("size %d seq %d: gopacket rejects the frame or its checksums", size, seq)
			}
			if u.SrcIP != c.Src || u.DstIP != c.Dst || u.SrcPort != 40000+uint16(seq%4) || u.DstPort != 9 || len(u.Payload) != size-42 {
				t.Fatalf("decoded %+v", u)
			}
			Reflect(buf[:n])
			r, ok := testpkt.DecodeUDP(buf[:n])
			if !ok || r.SrcIP != c.Dst || r.DstPort != u.SrcPort || r.SrcMAC.String() != c.DstMAC.String() {
				t.Fatalf("reflected frame wrong or checksums broken: %+v", r)
			}
		}
	}
}
