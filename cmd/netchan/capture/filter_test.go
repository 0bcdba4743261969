package capture

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/netchan/netchan/stack/header"
)

// udpFrame builds an Ethernet/IPv4/UDP frame.
func udpFrame(src, dst string, sport, dport uint16) []byte {
	return l4Frame(header.ProtoUDP, src, dst, sport, dport)
}

func l4Frame(proto uint8, src, dst string, sport, dport uint16) []byte {
	f := make([]byte, 64)
	f[12], f[13] = 0x08, 0x00
	f[14] = 0x45
	f[16], f[17] = 0, 50
	f[22] = 64
	f[23] = proto
	copy(f[26:30], netip.MustParseAddr(src).AsSlice())
	copy(f[30:34], netip.MustParseAddr(dst).AsSlice())
	f[34], f[35] = byte(sport>>8), byte(sport)
	f[36], f[37] = byte(dport>>8), byte(dport)
	if proto == header.ProtoUDP {
		f[39] = 30 // UDP length: the IP packet's 50 bytes less its header
	}
	return f
}

func arpFrame(sender, target string) []byte {
	f := make([]byte, 60)
	f[12], f[13] = 0x08, 0x06
	a := f[14:]
	a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7] = 0, 1, 8, 0, 6, 4, 0, 1
	copy(a[14:18], netip.MustParseAddr(sender).AsSlice())
	copy(a[24:28], netip.MustParseAddr(target).AsSlice())
	return f
}

func TestFilterMatch(t *testing.T) {
	u := udpFrame("198.18.0.2", "198.18.0.1", 20000, 9)
	tc := l4Frame(header.ProtoTCP, "198.18.0.2", "198.18.0.1", 5555, 80)
	ic := l4Frame(header.ProtoICMP, "198.18.0.3", "198.18.0.1", 0, 0)
	arp := arpFrame("198.18.0.2", "198.18.0.1")
	cases := []struct {
		expr string
		want [4]bool // u, tc, ic, arp
	}{
		{"", [4]bool{true, true, true, true}},
		{"udp", [4]bool{true, false, false, false}},
		{"tcp", [4]bool{false, true, false, false}},
		{"icmp", [4]bool{false, false, true, false}},
		{"arp", [4]bool{false, false, false, true}},
		{"ip", [4]bool{true, true, true, false}},
		{"not ip", [4]bool{false, false, false, true}},
		{"udp and dst port 9", [4]bool{true, false, false, false}},
		{"udp && src port 9", [4]bool{false, false, false, false}},
		{"port 80 or port 9", [4]bool{true, true, false, false}},
		{"host 198.18.0.3", [4]bool{false, false, true, false}},
		{"src host 198.18.0.2", [4]bool{true, true, false, true}},
		{"dst host 198.18.0.2", [4]bool{false, false, false, false}},
		{"host 198.18.0.1 and not (udp or tcp)", [4]bool{false, false, true, true}},
		{"!udp && !tcp", [4]bool{false, false, true, true}},
		{"shard 0", [4]bool{true, true, true, true}},
		{"shard 1 or udp", [4]bool{true, false, false, false}},
	}
	for _, c := range cases {
		f, err := Parse(c.expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.expr, err)
			continue
		}
		for i, fr := range [][]byte{u, tc, ic, arp} {
			if got := f.Match(fr, 0); got != c.want[i] {
				t.Errorf("%q on frame %d: %v, want %v", c.expr, i, got, c.want[i])
			}
		}
	}
	var nilF *Filter
	if !nilF.Match(u, 0) || !nilF.Match(nil, 0) {
		t.Error("a nil filter must match everything")
	}
	if f, _ := Parse("udp"); f.Match(nil, 0) || f.Match(u[:20], 0) {
		t.Error("short frames must not match udp")
	}
}

func TestFilterErrors(t *testing.T) {
	cases := map[string]string{
		"udp and":    "at the end: expected a primitive",
		"port":       "port wants a number",
		"port 70000": `at "70000"`,
		"host 1.2.3": "host wants an IPv4 address",
		"host ::1":   "host wants an IPv4 address",
		"(udp":       "expected ')'",
		"udp)":       "a ')' without its '('",
		"src udp":    "expected 'host' or 'port' after src/dst",
		"udp tcp":    `at "tcp" (offset 4): expected 'and', 'or'`,
		"bogus":      `at "bogus" (offset 0): expected a primitive`,
		"shard 300":  "shard wants a number from 0 to 255",
		strings.Repeat("(", 100) + "udp" + strings.Repeat(")", 100): "nested more than",
		"udp & tcp": `at "&"`,
	}
	for expr, want := range cases {
		_, err := Parse(expr)
		var se *SyntaxError
		if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", expr, err, want)
		}
	}
}

func TestFilterNoAllocs(t *testing.T) {
	f, err := Parse("(udp and dst port 9) or (tcp and not src host 10.0.0.1) or arp and host 198.18.0.1")
	if err != nil {
		t.Fatal(err)
	}
	u := udpFrame("198.18.0.2", "198.18.0.1", 20000, 9)
	if n := testing.AllocsPerRun(1000, func() { f.Match(u, 1) }); n != 0 {
		t.Errorf("Match allocates %v per call", n)
	}
}

// FuzzFilter: any expression either parses or fails with a SyntaxError, never panics; a
// parsed filter evaluates any frame without panicking, and its own String parses to a filter
// that agrees with it.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"udp and dst port 9", "not (host 1.2.3.4 or arp)", "src port 53 || tcp", "((", "shard 1 and !icmp", "port 65535"} {
		f.Add(s, udpFrame("1.2.3.4", "5.6.7.8", 53, 9))
	}
	f.Fuzz(func(t *testing.T, expr string, frame []byte) {
		flt, err := Parse(expr)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Pos < 0 || se.Pos > len(expr) {
				t.Fatalf("Parse(%q): %v", expr, err)
			}
			return
		}
		got := flt.Match(frame, 0)
		again, err := Parse(flt.String())
		if flt.String() == "(all)" {
			return
		}
		if err != nil || again.Match(frame, 0) != got {
			t.Fatalf("%q re-parsed as %q: %v", expr, flt.String(), err)
		}
	})
}
