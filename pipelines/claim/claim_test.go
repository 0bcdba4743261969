package claim

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func port(p uint16) *uint16 { return &p }

var (
	noAddr = netip.Addr{}
	a1     = netip.MustParseAddr("198.18.0.1")
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Rule
		str  string // String(), when it differs from in
	}{
		{"all", All(), ""},
		{" ALL ", All(), "all"},
		{"198.18.0.0/24", Prefix(netip.MustParsePrefix("198.18.0.0/24")), ""},
		{"198.18.0.1", Prefix(netip.MustParsePrefix("198.18.0.1/32")), "198.18.0.1/32"},
		{"198.18.0.1/32", Prefix(netip.MustParsePrefix("198.18.0.1/32")), ""},
		{"0.0.0.0/0", Prefix(netip.MustParsePrefix("0.0.0.0/0")), ""},
		{"udp:9999", Ports(ProtoUDP, noAddr, 9999, 9999), ""},
		{"UDP:9999", Ports(ProtoUDP, noAddr, 9999, 9999), "udp:9999"},
		{"udp:0", Ports(ProtoUDP, noAddr, 0, 0), ""},
		{"udp:0-65535", Ports(ProtoUDP, noAddr, 0, 65535), ""},
		{"udp:9000-9099", Ports(ProtoUDP, noAddr, 9000, 9099), ""},
		{"udp:53-53", Ports(ProtoUDP, noAddr, 53, 53), "udp:53"},
		{"udp:0053", Ports(ProtoUDP, noAddr, 53, 53), "udp:53"},
		{"tcp:80", Ports(ProtoTCP, noAddr, 80, 80), ""},
		{"tcp:198.18.0.1:80", Ports(ProtoTCP, a1, 80, 80), ""},
		{"udp:198.18.0.1:9000-9010", Ports(ProtoUDP, a1, 9000, 9010), ""},
		{"proto:1", Proto(1), "proto:icmp"},
		{"proto:icmp", Proto(1), ""},
		{"proto:TCP", Proto(6), "proto:tcp"},
		{"proto:udp", Proto(17), ""},
		{"proto:47", Proto(47), ""},
		{"proto:0", Proto(0), ""},
		{"proto:255", Proto(255), ""},
		{"protocol:47", Proto(47), "proto:47"},
		{"arp:198.18.0.1", ARP(a1), ""},
		// Flow specs.
		{"tcp:198.18.0.0/24:80", Flow(ProtoTCP, pfx("198.18.0.0/24"), port(80), netip.Prefix{}, nil), ""},
		{"tcp:198.18.0.1:80<-203.0.113.7:*", Flow(ProtoTCP, pfx("198.18.0.1/32"), port(80), pfx("203.0.113.7/32"), nil), ""},
		{"udp:198.18.0.1:9999<-203.0.113.0/24:*", Flow(ProtoUDP, pfx("198.18.0.1/32"), port(9999), pfx("203.0.113.0/24"), nil), ""},
		{"udp:198.18.0.1:9999<-203.0.113.0/24", Flow(ProtoUDP, pfx("198.18.0.1/32"), port(9999), pfx("203.0.113.0/24"), nil), "udp:198.18.0.1:9999<-203.0.113.0/24:*"},
		{"udp:*<-198.51.100.0/24:53", Flow(ProtoUDP, netip.Prefix{}, nil, pfx("198.51.100.0/24"), port(53)), ""},
		{"udp:*:*<-198.51.100.0/24:53", Flow(ProtoUDP, netip.Prefix{}, nil, pfx("198.51.100.0/24"), port(53)), "udp:*<-198.51.100.0/24:53"},
		{"udp:9999<-*:5000", Flow(ProtoUDP, netip.Prefix{}, port(9999), netip.Prefix{}, port(5000)), ""},
		{"udp:198.18.0.1:*", Flow(ProtoUDP, pfx("198.18.0.1/32"), nil, netip.Prefix{}, nil), ""},
		{"udp:*", Flow(ProtoUDP, netip.Prefix{}, nil, netip.Prefix{}, nil), ""},
		// A flow spec that is a port claim is one.
		{"udp:198.18.0.1:9999<-*:*", Ports(ProtoUDP, a1, 9999, 9999), "udp:198.18.0.1:9999"},
		{"udp:*:9999", Ports(ProtoUDP, noAddr, 9999, 9999), "udp:9999"},
		{"udp:198.18.0.1/32:9999", Ports(ProtoUDP, a1, 9999, 9999), "udp:198.18.0.1:9999"},
		{"udp:0.0.0.0/0:9999<-0.0.0.0/0:*", Ports(ProtoUDP, noAddr, 9999, 9999), "udp:9999"},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
		want := tc.str
		if want == "" {
			want = tc.in
		}
		if s := got.String(); s != want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, s, want)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("Parse(%q) gave a rule that does not validate: %v", tc.in, err)
		}
		if back, err := Parse(got.String()); err != nil || back != got {
			t.Errorf("Parse(%q) = %v, %v: does not round-trip", got.String(), back, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // in the error
	}{
		{"", "empty claim"},
		{"   ", "empty claim"},
		{"udp:70000", "port 70000 is out of range 0-65535"},
		{"udp:99999999999999999999", "out of range 0-65535"},
		{"udp:", "no port"},
		{"udp:-5", "a port is missing"},
		{"udp:5-", "a port is missing"},
		{"udp:x", `port "x" is not a decimal number`},
		{"udp:+5", "not a decimal number"},
		{"udp:10-9", "port range 10-9 is empty"},
		{"udp:1-2-3", "not a decimal number"},
		{"tcp:198.18.0.1:", "a port is missing"},
		{"tcp:198.18.0.7/24:80", "host bits are set in the local prefix: write 198.18.0.0/24"},
		{"udp:198.18.0.1:9000-9010<-203.0.113.7:*", "one local port or *, not a range"},
		{"udp:198.18.0.1:9000<-203.0.113.7:1-2", "one remote port or *, not a range"},
		{"udp:198.18.0.1:9000<-host:*", `remote address "host" is not an IPv4 address`},
		{"udp:198.18.0.1:9000<-[2001:db8::1]:53", "IPv6 is not supported"},
		{"udp:9000<-198.18.0.0/33", "not an IPv4 prefix"},
		{"udp:x<-*:*", `port "x" is not a decimal number`},
		{"tcp:host:80", `"host" is not an IPv4 address`},
		{"udp:[2001:db8::1]:53", "IPv6 is not supported"},
		{"udp:2001:db8::1:53", "IPv6 is not supported"},
		{"2001:db8::/32", "IPv6 is not supported"},
		{"2001:db8::1", "IPv6 is not supported"},
		{"::1", "IPv6 is not supported"},
		{"::ffff:198.18.0.1", "IPv6 is not supported"},
		{"::ffff:198.18.0.0/120", "IPv6 is not supported"},
		{"198.18.0.7/24", "host bits are set: the prefix is 198.18.0.0/24"},
		{"198.18.0.0/33", "not an IPv4 prefix"},
		{"198.18.0.256", "not a claim"},
		{"9999", "a bare number is not a claim: write udp:9999"},
		{"everything", "not a claim"},
		{"sctp:5", `unknown kind "sctp"`},
		{"proto:", "no protocol"},
		{"proto:256", "protocol 256 is out of range 0-255"},
		{"proto:gre", `protocol "gre" is not a number`},
		{"proto:-1", "not a number"},
		{"arp:", "not an IPv4 address"},
		{"arp:2001:db8::1", "IPv6 is not supported"},
	}
	for _, tc := range tests {
		r, err := Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q) = %v, want an error", tc.in, r)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) {
			t.Errorf("Parse(%q): %q does not say %q", tc.in, msg, tc.want)
		}
		if !strings.Contains(msg, Grammar) {
			t.Errorf("Parse(%q): %q does not show the grammar", tc.in, msg)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q): %v does not wrap ErrInvalid", tc.in, err)
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.Claim != tc.in {
			t.Errorf("Parse(%q): %#v, want an *Error naming the input", tc.in, err)
		}
	}
	_, err := Parse("udp:70000")
	t.Logf("example: %v", err)
}

func TestParseList(t *testing.T) {
	got, err := ParseList([]string{"udp:53,tcp:53", " all ", "198.18.0.0/24 , proto:icmp"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{Ports(ProtoUDP, noAddr, 53, 53), Ports(ProtoTCP, noAddr, 53, 53), All(),
		Prefix(netip.MustParsePrefix("198.18.0.0/24")), Proto(1)}
	if !slices.Equal(got, want) {
		t.Fatalf("ParseList = %v, want %v", got, want)
	}
	if got, err := ParseList(nil); err != nil || got != nil {
		t.Fatalf("ParseList(nil) = %v, %v", got, err)
	}
	for _, in := range [][]string{{"udp:53,"}, {"udp:53,,tcp:1"}, {""}, {"all", "udp:70000"}} {
		if _, err := ParseList(in); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseList(%q): %v, want an ErrInvalid error", in, err)
		} else {
			t.Logf("ParseList(%q): %v", in, err)
		}
	}
	_, err = ParseList([]string{"udp:53,,tcp:1"})
	if !strings.Contains(err.Error(), "empty item") {
		t.Errorf("empty item: %v", err)
	}
}

func TestConstructorsAndValidate(t *testing.T) {
	valid := []Rule{
		All(), Proto(0), Proto(255),
		Prefix(netip.MustParsePrefix("198.18.0.7/24")),
		Prefix(netip.MustParsePrefix("::ffff:198.18.0.0/120")), // a 4in6 prefix is unmapped
		Ports(ProtoUDP, noAddr, 0, 65535),
		Ports(ProtoTCP, netip.MustParseAddr("::ffff:198.18.0.1"), 1, 1),
		ARP(a1),
	}
	for _, r := range valid {
		if err := r.Validate(); err != nil {
			t.Errorf("%v: %v", r, err)
		}
		if back, err := Parse(r.String()); err != nil || back != r {
			t.Errorf("Parse(%q) = %v, %v: want the same rule", r.String(), back, err)
		}
	}
	if Prefix(netip.MustParsePrefix("198.18.0.7/24")).Prefix() != netip.MustParsePrefix("198.18.0.0/24") {
		t.Error("Prefix does not clear host bits")
	}
	if Prefix(netip.MustParsePrefix("::ffff:198.18.0.0/120")).Prefix() != netip.MustParsePrefix("198.18.0.0/24") {
		t.Error("Prefix does not unmap a 4in6 prefix")
	}
	invalid := map[string]Rule{
		"zero rule":    {},
		"ipv6 prefix":  Prefix(netip.MustParsePrefix("2001:db8::/32")),
		"no prefix":    Prefix(netip.Prefix{}),
		"icmp ports":   Ports(1, noAddr, 1, 2),
		"empty range":  Ports(ProtoUDP, noAddr, 10, 9),
		"ipv6 address": Ports(ProtoUDP, netip.MustParseAddr("2001:db8::1"), 1, 1),
		"ipv6 arp":     ARP(netip.MustParseAddr("2001:db8::1")),
		"no arp":       ARP(netip.Addr{}),
	}
	for name, r := range invalid {
		err := r.Validate()
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s (%v): Validate = %v, want ErrInvalid", name, r, err)
			continue
		}
		t.Logf("%s: %v", name, err)
		if _, err := r.MarshalText(); err == nil {
			t.Errorf("%s: MarshalText of an invalid rule: no error", name)
		}
	}
	if !(Rule{}).IsZero() || All().IsZero() {
		t.Error("IsZero")
	}
	r := Ports(ProtoUDP, a1, 5, 7)
	if lo, hi := r.Ports(); r.Kind() != KindPorts || r.Proto() != ProtoUDP || r.Addr() != a1 || lo != 5 || hi != 7 {
		t.Errorf("accessors of %v", r)
	}
}

func TestJSON(t *testing.T) {
	in := []Rule{All(), Ports(ProtoTCP, a1, 22, 22), Proto(47)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `["all","tcp:198.18.0.1:22","proto:47"]` {
		t.Fatalf("JSON %s", b)
	}
	var out []Rule
	if err := json.Unmarshal(b, &out); err != nil || !slices.Equal(in, out) {
		t.Fatalf("Unmarshal = %v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`["udp:70000"]`), &out); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Unmarshal of a bad claim: %v", err)
	}
}

func TestCompare(t *testing.T) {
	rules := []Rule{
		ARP(a1), Proto(6), Proto(1),
		Ports(ProtoUDP, a1, 5, 5), Ports(ProtoUDP, noAddr, 5, 6), Ports(ProtoUDP, noAddr, 5, 5), Ports(ProtoTCP, noAddr, 9, 9),
		Prefix(netip.MustParsePrefix("198.18.0.0/16")), Prefix(netip.MustParsePrefix("198.18.0.0/15")), All(),
	}
	slices.SortFunc(rules, Compare)
	var got []string
	for _, r := range rules {
		got = append(got, r.String())
	}
	want := "all 198.18.0.0/15 198.18.0.0/16 tcp:9 udp:5 udp:5-6 udp:198.18.0.1:5 proto:icmp proto:tcp arp:198.18.0.1"
	if strings.Join(got, " ") != want {
		t.Fatalf("sorted: %s\nwant:   %s", strings.Join(got, " "), want)
	}
	for i, a := range rules {
		for j, b := range rules {
			if (Compare(a, b) == 0) != (i == j) {
				t.Errorf("Compare(%v, %v) = %d", a, b, Compare(a, b))
			}
		}
	}
}

// FuzzParse: Parse never panics, every rule it returns is valid, and String of it parses back
// to the same rule.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"all", "198.18.0.0/24", "198.18.0.1", "udp:9999", "tcp:198.18.0.1:1-1024",
		"proto:icmp", "proto:255", "arp:198.18.0.1", "udp:70000", "2001:db8::/32", "udp:[::1]:5", ",", "udp:1-",
		"::ffff:1.2.3.4", "tcp:1.2.3.4:", "PROTO:TCP", "198.18.0.7/24"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Parse(%q) = %#v, which does not validate: %v", s, r, err)
		}
		back, err := Parse(r.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %v, whose String does not parse: %v", s, r, err)
		}
		if back != r {
			t.Fatalf("Parse(%q) = %#v, String %q parses to %#v", s, r, r.String(), back)
		}
		_, _ = ParseList([]string{s})
	})
}
