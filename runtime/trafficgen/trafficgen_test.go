package trafficgen

import (
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/testpkt"
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

// TestArgsRoundTrip: every field a sender process needs survives Args → ParseArgs.
func TestArgsRoundTrip(t *testing.T) {
	c := Config{Iface: "ncbp0", Queue: 0, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.1"), SrcPort: 40000, DstPort: 9,
		Flows: 4, Size: 128, Count: 0, Duration: 3 * time.Second, Rate: 200000, RunID: 3, Wait: time.Second,
		Queues: []int{0, 1, 3}, Static: true, CPUs: []int{0}, CountReplies: true, Announce: true}
	got, err := ParseArgs(c.Args())
	if err != nil {
		t.Fatal(err)
	}
	got.SrcMAC, c.SrcMAC = nil, nil
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
	old := Config{Iface: "x", DstMAC: c.DstMAC, Src: c.Src, Dst: c.Dst, Count: 5}
	for _, a := range old.Args() {
		if a == "--queues" || a == "--static" || a == "--cpus" || a == "--count-replies" || a == "--announce" {
			t.Errorf("a config without the new fields renders %s", a)
		}
	}
}

func TestParseCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		ok   bool
	}{
		{"", nil, true}, {"0", []int{0}, true}, {"0,2", []int{0, 2}, true}, {"1-3", []int{1, 2, 3}, true},
		{"0,2-3", []int{0, 2, 3}, true}, {"x", nil, false}, {"3-1", nil, false}, {"-1", nil, false},
	} {
		got, err := ParseCPUList(tc.in)
		if (err == nil) != tc.ok || (tc.ok && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if s := FormatCPUList([]int{0, 2, 3}); s != "0,2,3" {
		t.Errorf("FormatCPUList = %q", s)
	}
}
