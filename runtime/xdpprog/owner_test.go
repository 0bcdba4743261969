package xdpprog

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/netchan/netchan/pipelines/claim"
)

// Owned claims and the kernel-destination rule, tested like the claim rules: BPF_PROG_TEST_RUN
// and the counters.

func mustParse(t testing.TB, s string) claim.Rule {
	t.Helper()
	r, err := claim.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runKernel is run that also reports whether the frame counted as a kernel destination.
func runKernel(t *testing.T, p *Program, frame []byte) (verdict, bool) {
	t.Helper()
	before, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	_, v := run(t, p, frame)
	after, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	switch d := after.KernelDst - before.KernelDst; d {
	case 0, 1:
		return v, d == 1
	default:
		t.Fatalf("KernelDst moved by %d for one frame", d)
	}
	return v, false
}

func claimAs(t testing.TB, p *Program, owner string, rules ...string) {
	t.Helper()
	for _, s := range rules {
		must(t, p.Claim(owner, mustParse(t, s)))
	}
}

func unclaimAs(t testing.TB, p *Program, owner string, rules ...string) {
	t.Helper()
	for _, s := range rules {
		must(t, p.Unclaim(owner, mustParse(t, s)))
	}
}

// TestKernelDst checks the decision order with a deny set: kernel addresses, their directed
// broadcasts, 255.255.255.255 and multicast are not taken by all or a wider prefix, and are
// taken by ports (with and without an address), protocols and a /32 of the address.
func TestKernelDst(t *testing.T) {
	p := loadTest(t)
	must(t, p.SetKernelAddrs([]netip.Prefix{
		netip.MustParsePrefix("198.18.0.1/24"), // and 198.18.0.255
		netip.MustParsePrefix("198.18.7.0/31"), // no broadcast for /31
		netip.MustParsePrefix("198.18.9.9/32"),
	}))
	wantProtected := []string{"198.18.0.1", "198.18.0.255", "198.18.7.0", "198.18.9.9"}
	if got := fmt.Sprint(p.ProtectedAddrs()); got != fmt.Sprint(addrs(wantProtected...)) {
		t.Fatalf("ProtectedAddrs = %s, want %v", got, wantProtected)
	}

	type probe struct {
		name   string
		frame  []byte
		want   verdict
		kernel bool
	}
	check := func(step string, probes []probe) {
		t.Helper()
		for _, pr := range probes {
			got, kernel := runKernel(t, p, pr.frame)
			if got != pr.want || kernel != pr.kernel {
				t.Errorf("%s: %s: verdict %q kernel-destination %v, want %q %v", step, pr.name, got, kernel, pr.want, pr.kernel)
			}
		}
	}

	claimAs(t, p, "wide", "all")
	check("all", []probe{
		{"udp to the kernel address", udpFrame(t, "198.18.0.1", 4242), vPass, true},
		{"icmp to the kernel address", icmpFrame(t, "198.18.0.1"), vPass, true},
		{"udp to the directed broadcast", udpFrame(t, "198.18.0.255", 4242), vPass, true},
		{"udp to the /31 address", udpFrame(t, "198.18.7.0", 4242), vPass, true},
		{"udp to the /31's other address", udpFrame(t, "198.18.7.1", 4242), vAll, false},
		{"udp to the /32 address", udpFrame(t, "198.18.9.9", 4242), vPass, true},
		{"udp to 255.255.255.255", udpFrame(t, "255.255.255.255", 67), vPass, true},
		{"udp to 224.0.0.251 (mDNS)", udpFrame(t, "224.0.0.251", 5353), vPass, true},
		{"udp to 239.255.255.250", udpFrame(t, "239.255.255.250", 1900), vPass, true},
		{"udp to 240.0.0.1 (not multicast)", udpFrame(t, "240.0.0.1", 1), vAll, false},
		{"udp to 223.255.255.255 (not multicast)", udpFrame(t, "223.255.255.255", 1), vAll, false},
		{"udp to 255.255.255.254", udpFrame(t, "255.255.255.254", 1), vAll, false},
		{"udp to another address", udpFrame(t, "198.18.0.2", 4242), vAll, false},
		{"udp to the network address", udpFrame(t, "198.18.0.0", 4242), vAll, false},
		{"later fragment to the kernel address", udpFrame(t, "198.18.0.1", 1, withFrag(0, 100)), vPass, true},
		{"arp for the kernel address (not claimed)", arpFrame(t, layers.ARPRequest, "198.18.0.1"), vPass, false},
	})

	unclaimAs(t, p, "wide", "all")
	claimAs(t, p, "wide", "198.18.0.0/16", "224.0.0.0/4")
	check("wider prefixes", []probe{
		{"udp to the kernel address", udpFrame(t, "198.18.0.1", 4242), vPass, true},
		{"udp to the directed broadcast", udpFrame(t, "198.18.0.255", 4242), vPass, true},
		{"multicast", udpFrame(t, "224.0.0.251", 5353), vPass, true},
		{"udp to another address", udpFrame(t, "198.18.0.2", 4242), vPrefix, false},
	})

	claimAs(t, p, "named", "udp:9999", "tcp:198.18.0.1:22", "udp:198.18.0.255:7000-7001")
	check("ports", []probe{
		{"udp:9999 to the kernel address", udpFrame(t, "198.18.0.1", 9999), vPort, true},
		{"udp:9999 to the directed broadcast", udpFrame(t, "198.18.0.255", 9999), vPort, true},
		{"udp:9999 to 255.255.255.255", udpFrame(t, "255.255.255.255", 9999), vPort, true},
		{"udp:9999 to multicast", udpFrame(t, "239.1.1.1", 9999), vPort, true},
		{"udp:9998 to the kernel address", udpFrame(t, "198.18.0.1", 9998), vPass, true},
		{"tcp:198.18.0.1:22", tcpFrame(t, "198.18.0.1", 22), vAddrPort, true},
		{"tcp:22 to another kernel address", tcpFrame(t, "198.18.9.9", 22), vPass, true},
		{"udp 22 to the address (tcp claimed)", udpFrame(t, "198.18.0.1", 22), vPass, true},
		{"udp:198.18.0.255:7001", udpFrame(t, "198.18.0.255", 7001), vAddrPort, true},
		{"udp 7002 to the broadcast", udpFrame(t, "198.18.0.255", 7002), vPass, true},
		{"tcp 22 to an address a prefix claims: the prefix first", tcpFrame(t, "198.18.0.2", 22), vPrefix, false},
		{"tcp later fragment to the address", tcpFrame(t, "198.18.0.1", 22, withFrag(0, 8)), vPass, true},
	})

	claimAs(t, p, "named", "proto:icmp")
	check("protocol", []probe{
		{"icmp to the kernel address", icmpFrame(t, "198.18.0.1"), vProtocol, true},
		{"icmp to multicast", icmpFrame(t, "224.0.0.1"), vProtocol, true},
		{"gre to the kernel address", greFrame(t, "198.18.0.1"), vPass, true},
	})

	claimAs(t, p, "named", "198.18.0.1/32")
	check("/32", []probe{
		{"gre to the kernel address", greFrame(t, "198.18.0.1"), vPrefix, true},
		{"udp to the kernel address", udpFrame(t, "198.18.0.1", 4242), vPrefix, true},
		{"the broadcast is still protected", udpFrame(t, "198.18.0.255", 4242), vPass, true},
	})
	claimAs(t, p, "named", "224.0.0.251/32")
	check("/32 of a group", []probe{{"mDNS", udpFrame(t, "224.0.0.251", 5353), vPrefix, true}})

	// The set is replaced: the old addresses are taken by wide rules again.
	must(t, p.ReleaseOwner("named"))
	must(t, p.SetKernelAddrs([]netip.Prefix{netip.MustParsePrefix("198.18.3.3/30")}))
	// 198.18.3.3 is also the /30's broadcast: one entry.
	if got := fmt.Sprint(p.ProtectedAddrs()); got != fmt.Sprint(addrs("198.18.3.3")) {
		t.Fatalf("ProtectedAddrs after replace = %s, want [198.18.3.3]", got)
	}
	check("replaced", []probe{
		{"the old kernel address", udpFrame(t, "198.18.0.1", 4242), vPrefix, false},
		{"the new one", udpFrame(t, "198.18.3.3", 4242), vPass, true},
		{"multicast stays protected", udpFrame(t, "224.0.0.251", 5353), vPass, true},
	})
	must(t, p.SetKernelAddrs(nil))
	if got := p.ProtectedAddrs(); len(got) != 0 {
		t.Fatalf("ProtectedAddrs after SetKernelAddrs(nil) = %v", got)
	}
	check("empty", []probe{
		{"the old address", udpFrame(t, "198.18.3.3", 4242), vPrefix, false},
		{"broadcast stays protected", udpFrame(t, "255.255.255.255", 67), vPass, true},
	})

	for _, bad := range [][]netip.Prefix{
		{netip.MustParsePrefix("2001:db8::1/64")},
		{{}},
	} {
		if err := p.SetKernelAddrs(bad); err == nil {
			t.Errorf("SetKernelAddrs(%v): no error", bad)
		} else {
			t.Logf("SetKernelAddrs(%v): %v", bad, err)
		}
	}
	var many []netip.Prefix
	for i := range maxKernelAddrs + 1 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 32))
	}
	if err := p.SetKernelAddrs(many); err == nil || !strings.Contains(err.Error(), "more than the deny set holds") {
		t.Errorf("SetKernelAddrs of %d addresses: %v", len(many), err)
	}
	must(t, p.SetKernelAddrs(many[:maxKernelAddrs]))
	must(t, p.SetKernelAddrs(many[1:])) // a full set replaced by another full set
	if n := len(p.ProtectedAddrs()); n != maxKernelAddrs {
		t.Fatalf("%d protected addresses, want %d", n, maxKernelAddrs)
	}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// TestKernelDstAfterFastPath: the fast flow check comes before the kernel-destination rule.
func TestKernelDstAfterFastPath(t *testing.T) {
	p := loadFast(t)
	must(t, p.SetKernelAddrs([]netip.Prefix{netip.PrefixFrom(netip.AddrFrom4(fastIn), 24)}))
	f := FastFlow{Proto: 17, Src: fastSrv, Dst: fastIn, SrcPort: 53, DstPort: 4000, Addr: fastOut, Port: 5000, SrcMAC: fastMAC, DstMAC: fastDst}
	must(t, p.AddFast(f))
	frame := l4frame{proto: layers.IPProtocolUDP, src: fastSrv, dst: fastIn, sport: 53, dport: 4000, ttl: 64, payload: []byte("x")}.build(t)
	before, _ := p.Stats()
	act, _, err := p.TestRun(frame)
	must(t, err)
	after, _ := p.Stats()
	if act != ActionRedirect || after.Fast != before.Fast+1 || after.KernelDst != before.KernelDst {
		t.Fatalf("fast flow to a kernel address: action %d, Fast +%d, KernelDst +%d; want a redirect by the fast path",
			act, after.Fast-before.Fast, after.KernelDst-before.KernelDst)
	}
	other := l4frame{proto: layers.IPProtocolUDP, src: fastSrv, dst: fastIn, sport: 53, dport: 4001, ttl: 64}.build(t)
	claimAs(t, p, "x", "all")
	if v, kernel := runKernel(t, p, other); v != vPass || !kernel {
		t.Fatalf("not a fast flow, to the kernel address, all claimed: verdict %q kernel %v, want pass, true", v, kernel)
	}
}

// TestOwnedClaims: one owner's Unclaim never removes what another holds.
func TestOwnedClaims(t *testing.T) {
	p := loadTest(t)
	const dst = "198.18.0.1"
	check := func(step string, frame []byte, want verdict) {
		t.Helper()
		if _, got := run(t, p, frame); got != want {
			t.Errorf("%s: verdict %q, want %q", step, got, want)
		}
	}

	// The same port, two owners.
	claimAs(t, p, "pipeline", "udp:9999")
	claimAs(t, p, "netchannel", "udp:9999")
	claimAs(t, p, "pipeline", "udp:9999") // again: still one hold
	check("two owners", udpFrame(t, dst, 9999), vPort)
	unclaimAs(t, p, "pipeline", "udp:9999")
	check("after the first unclaims", udpFrame(t, dst, 9999), vPort)
	if err := p.Unclaim("pipeline", mustParse(t, "udp:9999")); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("second Unclaim by the same owner: %v, want ErrNotClaimed", err)
	}
	check("after a second unclaim by the first", udpFrame(t, dst, 9999), vPort)
	unclaimAs(t, p, "netchannel", "udp:9999")
	check("after both unclaimed", udpFrame(t, dst, 9999), vPass)

	// Overlapping ranges.
	claimAs(t, p, "a", "udp:9000-9010")
	claimAs(t, p, "b", "udp:9005-9100")
	unclaimAs(t, p, "a", "udp:9000-9010")
	check("9004 (a's only)", udpFrame(t, dst, 9004), vPass)
	check("9005 (b's too)", udpFrame(t, dst, 9005), vPort)
	check("9010 (b's too)", udpFrame(t, dst, 9010), vPort)
	check("9100", udpFrame(t, dst, 9100), vPort)
	must(t, p.ReleaseOwner("b"))
	check("9005 after b's release", udpFrame(t, dst, 9005), vPass)

	// The same prefix, all, protocol, ARP and address-qualified ports.
	for _, owner := range []string{"a", "b"} {
		claimAs(t, p, owner, "198.18.1.0/24", "proto:47", "arp:198.18.0.10", "tcp:198.18.0.1:80-90")
	}
	claimAs(t, p, "a", "tcp:198.18.0.1:85-100")
	unclaimAs(t, p, "a", "198.18.1.0/24", "proto:47", "arp:198.18.0.10", "tcp:198.18.0.1:80-90")
	check("prefix b holds", udpFrame(t, "198.18.1.5", 1), vPrefix)
	check("protocol b holds", greFrame(t, dst), vProtocol)
	check("arp b holds", arpFrame(t, layers.ARPRequest, "198.18.0.10"), vARP)
	check("tcp 80 to the address, b's", tcpFrame(t, dst, 80), vAddrPort)
	check("tcp 95 to the address, a's", tcpFrame(t, dst, 95), vAddrPort)
	check("tcp 80 to another address", tcpFrame(t, "198.18.0.2", 80), vPass)
	must(t, p.ReleaseOwner("b"))
	check("prefix released", udpFrame(t, "198.18.1.5", 1), vPass)
	check("protocol released", greFrame(t, dst), vPass)
	check("arp released", arpFrame(t, layers.ARPRequest, "198.18.0.10"), vPass)
	check("tcp 80 released", tcpFrame(t, dst, 80), vPass)
	check("tcp 85 still a's", tcpFrame(t, dst, 85), vAddrPort)
	must(t, p.ReleaseOwner("a"))
	check("tcp 85 released", tcpFrame(t, dst, 85), vPass)
	if n := len(p.claims.addrPorts); n != 0 {
		t.Fatalf("%d address-qualified ports left in the map's shadow", n)
	}

	claimAs(t, p, "a", "all")
	claimAs(t, p, "b", "all")
	unclaimAs(t, p, "a", "all")
	check("all, b's", udpFrame(t, dst, 1), vAll)
	must(t, p.ClaimAllIPv4(false)) // DirectOwner holds no all: nothing changes
	check("all after ClaimAllIPv4(false)", udpFrame(t, dst, 1), vAll)
	unclaimAs(t, p, "b", "all")
	check("all released", udpFrame(t, dst, 1), vPass)

	// DirectOwner (the methods without an owner) and a named owner.
	must(t, p.ClaimPorts(ProtoUDP, 5000, 5010))
	claimAs(t, p, "app", "udp:5005")
	must(t, p.UnclaimPorts(ProtoUDP, 0, 65535))
	check("5000 (direct's only)", udpFrame(t, dst, 5000), vPass)
	check("5005 (app's)", udpFrame(t, dst, 5005), vPort)
	must(t, p.ClaimPrefix(netip.MustParsePrefix("198.18.2.0/24")))
	claimAs(t, p, "app", "198.18.2.0/24")
	must(t, p.UnclaimPrefix(netip.MustParsePrefix("198.18.2.0/24")))
	check("prefix app holds", udpFrame(t, "198.18.2.1", 1), vPrefix)

	// UnclaimPorts cuts DirectOwner's ranges.
	must(t, p.ClaimPorts(ProtoTCP, 100, 200))
	must(t, p.ClaimPorts(ProtoTCP, 150, 300))
	must(t, p.UnclaimPorts(ProtoTCP, 120, 160))
	want := []string{
		"app: 198.18.2.0/24", "app: udp:5005",
		"direct: tcp:100-119", "direct: tcp:161-200", "direct: tcp:161-300",
	}
	var got []string
	for _, c := range p.Claims() {
		got = append(got, c.String())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Claims() = %q, want %q", got, want)
	}
	for port, v := range map[uint16]verdict{119: vPort, 120: vPass, 160: vPass, 161: vPort, 300: vPort, 301: vPass} {
		check(fmt.Sprintf("tcp %d after the cut", port), tcpFrame(t, dst, port), v)
	}
	must(t, p.ReleaseOwner(DirectOwner))
	check("tcp 161 after direct's release", tcpFrame(t, dst, 161), vPass)
	must(t, p.ReleaseOwner("nobody"))

	// Argument errors.
	for name, err := range map[string]error{
		"empty owner":         p.Claim("", claim.All()),
		"zero rule":           p.Claim("a", claim.Rule{}),
		"ipv6 prefix":         p.Claim("a", claim.Prefix(netip.MustParsePrefix("2001:db8::/32"))),
		"icmp ports":          p.Claim("a", claim.Ports(1, netip.Addr{}, 1, 1)),
		"address range 1025":  p.Claim("a", mustParse(t, "udp:198.18.0.1:1000-2024")),
		"unclaim not claimed": p.Unclaim("a", claim.All()),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	must(t, p.Claim("a", mustParse(t, "udp:198.18.0.1:1000-2023"))) // 1024 ports is the bound
	must(t, p.ReleaseOwner("a"))
	if n := len(p.claims.addrPorts); n != 0 {
		t.Fatalf("%d address-qualified ports left after release", n)
	}
}

// TestAddrPortMapFull fills the address-qualified port map and checks that the rule that does
// not fit is refused whole, with nothing of it left behind.
func TestAddrPortMapFull(t *testing.T) {
	p := loadTest(t)
	per := MaxAddrPortRange
	for i := range maxAddrPorts / per {
		r := claim.Ports(ProtoUDP, netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)}), 1, uint16(per))
		must(t, p.Claim("filler", r))
	}
	over := claim.Ports(ProtoUDP, netip.MustParseAddr("198.18.1.1"), 100, 110)
	err := p.Claim("late", over)
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("claim past a full map: %v, want a map-full error", err)
	}
	t.Logf("full: %v", err)
	if n := len(p.claims.addrPorts); n != maxAddrPorts {
		t.Fatalf("%d entries after the refused claim, want %d", n, maxAddrPorts)
	}
	if cs := p.Claims(); len(cs) != maxAddrPorts/per {
		t.Fatalf("%d claims held, want %d", len(cs), maxAddrPorts/per)
	}
	if _, v := run(t, p, udpFrame(t, "198.18.1.1", 100)); v != vPass {
		t.Fatalf("a port of the refused claim: %q, want pass", v)
	}
	if _, v := run(t, p, udpFrame(t, "198.18.0.3", 1024)); v != vAddrPort {
		t.Fatalf("a port of a held claim: %q, want addr-port", v)
	}
	must(t, p.ReleaseOwner("filler"))
	must(t, p.Claim("late", over))
	if _, v := run(t, p, udpFrame(t, "198.18.1.1", 110)); v != vAddrPort {
		t.Fatalf("after room was made: %q, want addr-port", v)
	}
}
