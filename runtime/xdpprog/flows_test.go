package xdpprog

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/netchan/netchan/pipelines/claim"
)

// Flow specs (claim.KindFlow), tested like the other rules: BPF_PROG_TEST_RUN and the counters.

// flowPkt is one TCP or UDP packet as the flow rule sees it: local is its destination, remote
// its source.
type flowPkt struct {
	proto      layers.IPProtocol
	remote     string
	remotePort uint16
	local      string
	localPort  uint16
}

func udpPkt(remote string, rport uint16, local string, lport uint16) flowPkt {
	return flowPkt{layers.IPProtocolUDP, remote, rport, local, lport}
}

func tcpPkt(remote string, rport uint16, local string, lport uint16) flowPkt {
	return flowPkt{layers.IPProtocolTCP, remote, rport, local, lport}
}

func (f flowPkt) frame(t testing.TB, opts ...ipOpt) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: f.proto,
		SrcIP: net.ParseIP(f.remote).To4(), DstIP: net.ParseIP(f.local).To4()}
	for _, o := range opts {
		o(ip)
	}
	if f.proto == layers.IPProtocolTCP {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.remotePort), DstPort: layers.TCPPort(f.localPort), ACK: true, Window: 1000}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload("flow"))
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.remotePort), DstPort: layers.UDPPort(f.localPort)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, udp, gopacket.Payload("flow"))
}

// runFlow is run that also reports how much FlowFragment moved.
func runFlow(t *testing.T, p *Program, frame []byte) (verdict, uint64) {
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
	return v, after.FlowFragment - before.FlowFragment
}

// mustFlow parses a spec that must be a flow spec (not one that Parse writes as a port claim).
func mustFlow(t testing.TB, s string) claim.Rule {
	t.Helper()
	r := mustParse(t, s)
	if r.Kind() != claim.KindFlow {
		t.Fatalf("%s parses as a %v rule, want a flow spec", s, r.Kind())
	}
	return r
}

// shapesInUse is the number of shape bits set in config[0].
func shapesInUse(p *Program) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bits.OnesCount32(p.cfg & cfgFlowShapes)
}

// TestFlowSpecs claims flow specs of five shapes next to a port claim and feeds packets that
// match one, and packets that differ from one in a single field.
func TestFlowSpecs(t *testing.T) {
	p := loadTest(t)
	for _, s := range []string{
		"udp:198.18.0.1:9999<-203.0.113.7:4000",   // exact 5-tuple
		"tcp:198.18.1.0/24:80",                    // local prefix and port, remote any
		"udp:198.18.0.1:7000<-203.0.113.0/24:*",   // remote prefix, remote port any
		"udp:*<-198.51.100.0/24:53",               // remote prefix and port, local any
		"tcp:*<-*:443",                            // remote port only
		"udp:198.18.2.0/23:*<-192.0.2.128/25:123", // any local port, both prefixes
	} {
		must(t, p.Claim("nc", mustFlow(t, s)))
	}
	claimAs(t, p, "ports", "udp:9999", "udp:5353")
	if n := shapesInUse(p); n != 6 {
		t.Fatalf("%d shapes in use, want 6", n)
	}

	tests := []struct {
		name     string
		frame    []byte
		want     verdict
		fragment bool // counted in FlowFragment
	}{
		{"exact", udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t), vFlow, false},
		{"exact: flow before the port claim", udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t), vFlow, false},
		{"exact but another local address", udpPkt("203.0.113.7", 4000, "198.18.0.2", 9999).frame(t), vPort, false},
		{"exact but another remote address", udpPkt("203.0.113.8", 4000, "198.18.0.1", 9999).frame(t), vPort, false},
		{"exact but another local port", udpPkt("203.0.113.7", 4000, "198.18.0.1", 9998).frame(t), vPass, false},
		{"exact but another remote port", udpPkt("203.0.113.7", 4001, "198.18.0.1", 9999).frame(t), vPort, false},
		{"exact but tcp", tcpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t), vPass, false},
		{"exact, ihl 6", udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t, withPortOption()), vFlow, false},
		{"exact, first fragment (MF, offset 0)", udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t, withFrag(layers.IPv4MoreFragments, 0)), vFlow, false},
		{"exact, DF", udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t, withFrag(layers.IPv4DontFragment, 0)), vFlow, false},
		{"exact, later fragment", udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t, withFrag(layers.IPv4MoreFragments, 1)), vPass, true},
		{"exact, last fragment", udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t, withFrag(0, 185)), vPass, true},

		{"local /24: first address", tcpPkt("192.0.2.1", 50000, "198.18.1.0", 80).frame(t), vFlow, false},
		{"local /24: last address", tcpPkt("203.0.113.9", 1, "198.18.1.255", 80).frame(t), vFlow, false},
		{"local /24: below", tcpPkt("192.0.2.1", 50000, "198.18.0.255", 80).frame(t), vPass, false},
		{"local /24: above", tcpPkt("192.0.2.1", 50000, "198.18.2.0", 80).frame(t), vPass, false},
		{"local /24: another port", tcpPkt("192.0.2.1", 50000, "198.18.1.1", 81).frame(t), vPass, false},
		{"local /24: udp", udpPkt("192.0.2.1", 50000, "198.18.1.1", 80).frame(t), vPass, false},
		{"local /24, ihl 6", tcpPkt("192.0.2.1", 50000, "198.18.1.1", 80).frame(t, withPortOption()), vFlow, false},
		{"local /24, tcp later fragment", tcpPkt("192.0.2.1", 50000, "198.18.1.1", 80).frame(t, withFrag(0, 8)), vPass, true},

		{"remote /24, any remote port", udpPkt("203.0.113.200", 12345, "198.18.0.1", 7000).frame(t), vFlow, false},
		{"remote /24, another remote port", udpPkt("203.0.113.0", 1, "198.18.0.1", 7000).frame(t), vFlow, false},
		{"remote /24: remote outside", udpPkt("203.0.114.1", 12345, "198.18.0.1", 7000).frame(t), vPass, false},
		{"remote /24: another local address", udpPkt("203.0.113.200", 12345, "198.18.0.3", 7000).frame(t), vPass, false},
		{"remote /24: another local port", udpPkt("203.0.113.200", 12345, "198.18.0.1", 7001).frame(t), vPass, false},

		{"remote port 53", udpPkt("198.51.100.9", 53, "10.1.2.3", 33333).frame(t), vFlow, false},
		{"remote port 53, any local", udpPkt("198.51.100.250", 53, "198.18.0.1", 1).frame(t), vFlow, false},
		{"remote port 53: another remote port", udpPkt("198.51.100.9", 54, "10.1.2.3", 33333).frame(t), vPass, false},
		{"remote port 53: remote outside", udpPkt("198.51.101.9", 53, "10.1.2.3", 33333).frame(t), vPass, false},
		{"remote port 53: tcp", tcpPkt("198.51.100.9", 53, "10.1.2.3", 33333).frame(t), vPass, false},
		{"remote port 53: later fragment", udpPkt("198.51.100.9", 53, "10.1.2.3", 33333).frame(t, withFrag(0, 100)), vPass, true},

		{"remote port only", tcpPkt("8.8.8.8", 443, "10.0.0.1", 40000).frame(t), vFlow, false},
		{"remote port only: another port", tcpPkt("8.8.8.8", 444, "10.0.0.1", 40000).frame(t), vPass, false},
		{"remote port only: local port 443", tcpPkt("8.8.8.8", 40000, "10.0.0.1", 443).frame(t), vPass, false},

		{"both prefixes", udpPkt("192.0.2.200", 123, "198.18.3.9", 4444).frame(t), vFlow, false},
		{"both prefixes: remote below /25", udpPkt("192.0.2.127", 123, "198.18.3.9", 4444).frame(t), vPass, false},
		{"both prefixes: local outside /23", udpPkt("192.0.2.200", 123, "198.18.4.9", 4444).frame(t), vPass, false},

		{"nothing named", udpPkt("192.0.2.1", 1, "10.9.9.9", 1).frame(t), vPass, false},
		{"icmp later fragment is not counted", icmpFrame(t, "198.18.0.1", withFrag(0, 3)), vPass, false},
		{"udp port claim, no flow", udpPkt("192.0.2.1", 1, "10.9.9.9", 5353).frame(t), vPort, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, frag := runFlow(t, p, tc.frame)
			if got != tc.want || (frag == 1) != tc.fragment || frag > 1 {
				t.Errorf("verdict %q, FlowFragment +%d; want %q, fragment %v (frame % x)", got, frag, tc.want, tc.fragment, tc.frame)
			}
		})
	}

	// With no flow spec held, fragments are not counted.
	must(t, p.ReleaseOwner("nc"))
	if n := shapesInUse(p); n != 0 {
		t.Fatalf("%d shapes in use after the release, want 0", n)
	}
	if got, frag := runFlow(t, p, udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t, withFrag(0, 185))); got != vPass || frag != 0 {
		t.Errorf("later fragment without flow specs: %q, FlowFragment +%d; want pass, 0", got, frag)
	}
	if got, _ := runFlow(t, p, udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999).frame(t)); got != vPort {
		t.Errorf("after the release: %q, want port (udp:9999)", got)
	}
}

// TestFlowTruncated cuts claimed flow packets (with and without IP options) at every length:
// only those with the whole fixed L4 header at the IHL-aware offset are claimed.
func TestFlowTruncated(t *testing.T) {
	p := loadTest(t)
	must(t, p.Claim("nc", mustFlow(t, "udp:198.18.0.1:9999<-203.0.113.7:4000")))
	must(t, p.Claim("nc", mustFlow(t, "tcp:198.18.0.1:80<-203.0.113.0/24:*")))
	udp := udpPkt("203.0.113.7", 4000, "198.18.0.1", 9999)
	tcp := tcpPkt("203.0.113.7", 4000, "198.18.0.1", 80)
	for _, tc := range []struct {
		name  string
		frame []byte
		min   int
	}{
		{"udp", udp.frame(t), 14 + 20 + 8},
		{"udp, ihl 6", udp.frame(t, withPortOption()), 14 + 24 + 8},
		{"tcp", tcp.frame(t), 14 + 20 + 20},
		{"tcp, ihl 6", tcp.frame(t, withPortOption()), 14 + 24 + 20},
	} {
		for n := 14; n <= len(tc.frame); n++ {
			want := vFlow
			if n < tc.min {
				want = vPass
			}
			if _, got := run(t, p, tc.frame[:n]); got != want {
				t.Errorf("%s, %d of %d bytes: verdict %q, want %q", tc.name, n, len(tc.frame), got, want)
			}
		}
	}
}

// TestFlowKernelAddr: a flow spec names its addresses, so it takes traffic to a kernel
// address that all does not; the kernel-destination check comes after it.
func TestFlowKernelAddr(t *testing.T) {
	p := loadTest(t)
	must(t, p.SetKernelAddrs([]netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}))
	claimAs(t, p, "wide", "all")
	must(t, p.Claim("nc", mustFlow(t, "udp:198.18.0.1:9999<-203.0.113.0/24:*")))
	must(t, p.Claim("nc", mustFlow(t, "tcp:198.18.0.0/24:22<-192.0.2.1:*")))

	for _, tc := range []struct {
		name   string
		frame  []byte
		want   verdict
		kernel bool
	}{
		{"flow to the kernel address", udpPkt("203.0.113.5", 5000, "198.18.0.1", 9999).frame(t), vFlow, false},
		{"flow to the kernel address, ihl 6", udpPkt("203.0.113.5", 5000, "198.18.0.1", 9999).frame(t, withPortOption()), vFlow, false},
		{"other remote to the kernel address", udpPkt("203.0.114.5", 5000, "198.18.0.1", 9999).frame(t), vPass, true},
		{"other port of the kernel address", udpPkt("203.0.113.5", 5000, "198.18.0.1", 9998).frame(t), vPass, true},
		{"later fragment of the flow", udpPkt("203.0.113.5", 5000, "198.18.0.1", 9999).frame(t, withFrag(0, 50)), vPass, true},
		{"tcp flow to the directed broadcast", tcpPkt("192.0.2.1", 1234, "198.18.0.255", 22).frame(t), vFlow, false},
		{"tcp to the kernel address from elsewhere (ssh stays)", tcpPkt("192.0.2.2", 1234, "198.18.0.1", 22).frame(t), vPass, true},
		{"not a kernel address: all", udpPkt("203.0.114.5", 5000, "198.18.0.2", 9999).frame(t), vAll, false},
		{"not a kernel address: the flow first", tcpPkt("192.0.2.1", 1234, "198.18.0.2", 22).frame(t), vFlow, false},
	} {
		got, kernel := runKernel(t, p, tc.frame)
		if got != tc.want || kernel != tc.kernel {
			t.Errorf("%s: verdict %q kernel-destination %v, want %q %v", tc.name, got, kernel, tc.want, tc.kernel)
		}
	}
}

// TestFlowOwners: two owners holding the same spec; it stays claimed until both let go.
func TestFlowOwners(t *testing.T) {
	p := loadTest(t)
	const spec = "udp:198.18.0.1:9999<-203.0.113.0/24:*"
	frame := udpPkt("203.0.113.9", 40000, "198.18.0.1", 9999).frame(t)
	check := func(step string, want verdict) {
		t.Helper()
		if _, got := run(t, p, frame); got != want {
			t.Errorf("%s: verdict %q, want %q", step, got, want)
		}
	}
	must(t, p.Claim("a", mustFlow(t, spec)))
	must(t, p.Claim("a", mustFlow(t, spec))) // one hold
	must(t, p.Claim("b", mustFlow(t, spec)))
	check("both hold it", vFlow)
	if got := fmt.Sprint(p.Claims()); got != "[a: "+spec+" b: "+spec+"]" {
		t.Errorf("Claims = %s", got)
	}
	must(t, p.Unclaim("a", mustFlow(t, spec)))
	check("b still holds it", vFlow)
	if err := p.Unclaim("a", mustFlow(t, spec)); !errors.Is(err, ErrNotClaimed) {
		t.Errorf("second Unclaim by a: %v, want ErrNotClaimed", err)
	}
	must(t, p.Claim("a", mustFlow(t, spec)))
	must(t, p.ReleaseOwner("b"))
	check("a holds it again", vFlow)
	must(t, p.ReleaseOwner("a"))
	check("nobody holds it", vPass)
	if n := shapesInUse(p); n != 0 || len(p.claims.flows) != 0 {
		t.Errorf("after both let go: %d shapes in use, %d flow entries", n, len(p.claims.flows))
	}
}

// TestFlowShapeSlots fills the eight shape slots, is refused a ninth shape (but not another
// spec of a shape in use), and gets it once a slot is freed; the freed shape no longer claims.
func TestFlowShapeSlots(t *testing.T) {
	p := loadTest(t)
	// Eight shapes: UDP to 198.18.0.1:9000 from 10.0.0.0/N, N = 9..16.
	spec := func(n int) string { return fmt.Sprintf("udp:198.18.0.1:9000<-10.0.0.0/%d:*", n) }
	for n := 9; n <= 16; n++ {
		must(t, p.Claim(fmt.Sprintf("o%d", n), mustFlow(t, spec(n))))
	}
	// A second spec of the /16 shape shares its slot.
	must(t, p.Claim("o16b", mustFlow(t, "udp:198.18.0.1:9000<-10.1.0.0/16:*")))
	if n := shapesInUse(p); n != 8 {
		t.Fatalf("%d shapes in use, want 8", n)
	}

	ninth := mustFlow(t, "udp:198.18.0.1:9000<-10.0.0.0/17:*")
	frame9 := udpPkt("10.0.127.1", 1, "198.18.0.1", 9000).frame(t)
	err := p.Claim("o17", ninth)
	if !errors.Is(err, ErrFlowShapes) || !strings.Contains(err.Error(), "at most 8 flow shapes") ||
		!strings.Contains(err.Error(), "fewer distinct prefix lengths") {
		t.Fatalf("a ninth shape: %v, want ErrFlowShapes saying at most 8", err)
	}
	t.Logf("ninth shape: %v", err)
	for _, c := range p.Claims() {
		if c.Owner == "o17" {
			t.Fatalf("the refused claim is held: %v", c)
		}
	}
	if _, v := run(t, p, udpPkt("10.128.0.1", 1, "198.18.0.1", 9000).frame(t)); v != vPass {
		t.Fatalf("outside every held prefix: %q, want pass", v)
	}
	onlyNine := udpPkt("10.64.0.1", 1, "198.18.0.1", 9000).frame(t) // in the /9 only
	if _, v := run(t, p, onlyNine); v != vFlow {
		t.Fatalf("a remote in the /9: %q, want flow", v)
	}

	// Releasing one of the two /16 specs keeps the slot.
	must(t, p.ReleaseOwner("o16b"))
	if err := p.Claim("o17", ninth); !errors.Is(err, ErrFlowShapes) {
		t.Fatalf("a ninth shape with the /16 slot still held: %v, want ErrFlowShapes", err)
	}
	// Releasing the shapes /9 and /16 frees two slots; the /17 now fits.
	must(t, p.ReleaseOwner("o9"))
	must(t, p.ReleaseOwner("o16"))
	if n := shapesInUse(p); n != 6 {
		t.Fatalf("%d shapes in use after releasing two, want 6", n)
	}
	must(t, p.Claim("o17", ninth))
	if n := shapesInUse(p); n != 7 {
		t.Fatalf("%d shapes in use, want 7", n)
	}
	if _, v := run(t, p, onlyNine); v != vPass {
		t.Errorf("a remote only the released /9 claimed: %q, want pass", v)
	}
	if _, v := run(t, p, frame9); v != vFlow {
		t.Errorf("a remote in the held prefixes: %q, want flow", v)
	}
	must(t, p.ReleaseOwner("o10"))
	must(t, p.ReleaseOwner("o11"))
	must(t, p.ReleaseOwner("o12"))
	must(t, p.ReleaseOwner("o13"))
	must(t, p.ReleaseOwner("o14"))
	must(t, p.ReleaseOwner("o15"))
	if _, v := run(t, p, frame9); v != vFlow {
		t.Errorf("the /17 alone: %q, want flow", v)
	}
	if _, v := run(t, p, udpPkt("10.0.128.1", 1, "198.18.0.1", 9000).frame(t)); v != vPass {
		t.Errorf("outside the /17: %q, want pass", v)
	}
	must(t, p.ReleaseOwner("o17"))
	if n := shapesInUse(p); n != 0 {
		t.Fatalf("%d shapes in use after releasing everything, want 0", n)
	}
	if _, v := run(t, p, frame9); v != vPass {
		t.Errorf("nothing held: %q, want pass", v)
	}
}

// TestFlowAfterFastPath: a fast flow is decided before the flow specs; a frame that is not
// one comes back to them.
func TestFlowAfterFastPath(t *testing.T) {
	p := loadFast(t)
	f := FastFlow{Proto: 17, Src: fastSrv, Dst: fastIn, SrcPort: 53, DstPort: 4000, Addr: fastOut, Port: 5000, SrcMAC: fastMAC, DstMAC: fastDst}
	must(t, p.AddFast(f))
	must(t, p.Claim("nc", mustFlow(t, "udp:198.18.1.2:*<-198.19.0.2:53")))
	fast := l4frame{proto: layers.IPProtocolUDP, src: fastSrv, dst: fastIn, sport: 53, dport: 4000, ttl: 64}.build(t)
	before, _ := p.Stats()
	act, _, err := p.TestRun(fast)
	must(t, err)
	after, _ := p.Stats()
	if act != ActionRedirect || after.Fast != before.Fast+1 || after.Flow != before.Flow {
		t.Fatalf("fast flow that a flow spec names: action %d, Fast +%d, Flow +%d; want the fast path",
			act, after.Fast-before.Fast, after.Flow-before.Flow)
	}
	other := l4frame{proto: layers.IPProtocolUDP, src: fastSrv, dst: fastIn, sport: 53, dport: 4001, ttl: 64}.build(t)
	if _, v := run(t, p, other); v != vFlow {
		t.Fatalf("not a fast flow, named by a flow spec: verdict %q, want flow", v)
	}
}
