package xdpprog

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// The claim logic is tested without any interface: BPF_PROG_TEST_RUN runs
// the loaded program on crafted frames. With no socket registered, a claimed
// frame returns the fallback XDP_PASS just like an unclaimed one, so the
// verdict is read from the counters: a claimed frame moves Claimed, NoSocket
// and its rule's counter; a passed frame moves Passed only.

// requireRoot fails (never skips) a test that needs root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test loads BPF programs (and creates network namespaces): run it as root, e.g. `sudo go test ./runtime/xdpprog/`; CAP_BPF+CAP_NET_ADMIN+CAP_SYS_ADMIN would do too")
	}
}

func loadTest(t *testing.T) *Program {
	t.Helper()
	requireRoot(t)
	p, err := Load(Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// verdict names what the program did with one frame.
type verdict string

const (
	vPass     verdict = "pass"
	vARP      verdict = "arp"
	vAll      verdict = "all-ipv4"
	vPrefix   verdict = "prefix"
	vProtocol verdict = "protocol"
	vPort     verdict = "port"
	vAddrPort verdict = "addr-port"
	vFlow     verdict = "flow"
	vRejected verdict = "rejected by test run" // the kernel refused to run it (< 14 bytes)
)

func sub(a, b Stats) Stats {
	return Stats{
		Passed: a.Passed - b.Passed, Claimed: a.Claimed - b.Claimed, NoSocket: a.NoSocket - b.NoSocket,
		ARP: a.ARP - b.ARP, AllIPv4: a.AllIPv4 - b.AllIPv4, Prefix: a.Prefix - b.Prefix,
		Protocol: a.Protocol - b.Protocol, Port: a.Port - b.Port, AddrPort: a.AddrPort - b.AddrPort,
		Flow: a.Flow - b.Flow, FlowFragment: a.FlowFragment - b.FlowFragment,
		KernelDst: a.KernelDst - b.KernelDst, Fast: a.Fast - b.Fast, FastNoTarget: a.FastNoTarget - b.FastNoTarget,
	}
}

// run runs the program once on frame and returns the return code and the
// verdict read from the counters; it fails the test if the counters moved in
// a way that fits no verdict.
func run(t *testing.T, p *Program, frame []byte) (uint32, verdict) {
	t.Helper()
	before, err := p.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	ret, err := p.prog.Run(&ebpf.RunOptions{Data: frame, Repeat: 1})
	after, serr := p.Stats()
	if serr != nil {
		t.Fatalf("Stats: %v", serr)
	}
	d := sub(after, before)
	if err != nil {
		if len(frame) < 14 && errors.Is(err, unix.EINVAL) && d == (Stats{}) {
			return 0, vRejected
		}
		t.Fatalf("test run of a %d-byte frame: %v", len(frame), err)
	}
	rules := map[verdict]uint64{vARP: d.ARP, vAll: d.AllIPv4, vPrefix: d.Prefix, vProtocol: d.Protocol, vPort: d.Port, vAddrPort: d.AddrPort, vFlow: d.Flow}
	if d.Passed == 1 && d.Claimed == 0 && d.NoSocket == 0 {
		for r, n := range rules {
			if n != 0 {
				t.Fatalf("passed frame also counted rule %s: %+v", r, d)
			}
		}
		return ret, vPass
	}
	if d.Passed == 0 && d.Claimed == 1 {
		var got []verdict
		for r, n := range rules {
			if n == 1 {
				got = append(got, r)
			} else if n != 0 {
				t.Fatalf("rule %s counted %d for one frame: %+v", r, n, d)
			}
		}
		if len(got) != 1 {
			t.Fatalf("claimed frame counted %d rules: %+v", len(got), d)
		}
		if d.NoSocket+boolU64(ret == xdpRedirect) != 1 {
			t.Fatalf("claimed frame: return %d but NoSocket moved by %d", ret, d.NoSocket)
		}
		return ret, got[0]
	}
	t.Fatalf("counters moved oddly for one frame: %+v (return %d)", d, ret)
	return 0, ""
}

func boolU64(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
)

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("SerializeLayers: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: typ}
}

func arpFrame(t *testing.T, op uint16, target string) []byte {
	return serialize(t, eth(layers.EthernetTypeARP), &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
		SourceHwAddress: macA, SourceProtAddress: net.ParseIP("198.18.0.2").To4(),
		DstHwAddress: make([]byte, 6), DstProtAddress: net.ParseIP(target).To4(),
	})
}

type ipOpt func(*layers.IPv4)

func withFrag(flags layers.IPv4Flag, offset uint16) ipOpt {
	return func(ip *layers.IPv4) { ip.Flags, ip.FragOffset = flags, offset }
}

// withPortOption adds a 4-byte IP option (router alert) whose bytes 2..3
// read as dst port 5000 to a parser that ignores IHL.
func withPortOption() ipOpt {
	return func(ip *layers.IPv4) {
		ip.Options = []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0x13, 0x88}}}
	}
}

func ip4(proto layers.IPProtocol, dst string, opts ...ipOpt) *layers.IPv4 {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto,
		SrcIP: net.ParseIP("198.18.0.2").To4(), DstIP: net.ParseIP(dst).To4()}
	for _, o := range opts {
		o(ip)
	}
	return ip
}

func udpFrame(t *testing.T, dst string, port uint16, opts ...ipOpt) []byte {
	ip := ip4(layers.IPProtocolUDP, dst, opts...)
	udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, udp, gopacket.Payload("hello netchan"))
}

func tcpFrame(t *testing.T, dst string, port uint16, opts ...ipOpt) []byte {
	ip := ip4(layers.IPProtocolTCP, dst, opts...)
	tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(port), SYN: true, Window: 1000}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, tcp)
}

func icmpFrame(t *testing.T, dst string, opts ...ipOpt) []byte {
	return serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4, dst, opts...),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1},
		gopacket.Payload("ping"))
}

func greFrame(t *testing.T, dst string) []byte {
	return serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolGRE, dst), gopacket.Payload("12345678"))
}

func ipv6UDPFrame(t *testing.T, port uint16) []byte {
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64,
		SrcIP: net.ParseIP("2001:2::2"), DstIP: net.ParseIP("2001:2::1")}
	udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth(layers.EthernetTypeIPv6), ip, udp, gopacket.Payload("v6"))
}

func vlanUDPFrame(t *testing.T, dst string, port uint16) []byte {
	ip := ip4(layers.IPProtocolUDP, dst)
	udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth(layers.EthernetTypeDot1Q),
		&layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4}, ip, udp, gopacket.Payload("vlan"))
}

// patch returns a copy of frame with b[off] = v.
func patch(frame []byte, off int, v byte) []byte {
	f := append([]byte(nil), frame...)
	f[off] = v
	return f
}

// claimSet claims the rules the table below expects.
func claimSet(t *testing.T, p *Program) {
	t.Helper()
	must(t, p.ClaimARP(netip.MustParseAddr("198.18.0.10")))
	must(t, p.ClaimPorts(ProtoUDP, 5000, 5010))
	must(t, p.ClaimPorts(ProtoUDP, 140, 260)) // spans three bitmap words
	must(t, p.ClaimPorts(ProtoUDP, 65535, 65535))
	must(t, p.ClaimPorts(ProtoTCP, 80, 80))
	must(t, p.ClaimPorts(ProtoTCP, 0, 0))
	must(t, p.ClaimProtocol(1))
	must(t, p.ClaimPrefix(netip.MustParsePrefix("198.18.1.0/24")))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestClaimRules(t *testing.T) {
	p := loadTest(t)
	claimSet(t, p)
	const dst = "198.18.0.1" // not in any claimed prefix

	tests := []struct {
		name  string
		frame []byte
		want  verdict
	}{
		{"arp request to claimed target", arpFrame(t, layers.ARPRequest, "198.18.0.10"), vARP},
		{"arp reply to claimed target", arpFrame(t, layers.ARPReply, "198.18.0.10"), vARP},
		{"arp to unclaimed target", arpFrame(t, layers.ARPRequest, "198.18.0.11"), vPass},
		{"arp with ptype not IPv4", patch(arpFrame(t, layers.ARPRequest, "198.18.0.10"), 16, 0x86), vPass},
		{"arp with plen 16", patch(arpFrame(t, layers.ARPRequest, "198.18.0.10"), 19, 16), vPass},

		{"udp lo-1", udpFrame(t, dst, 4999), vPass},
		{"udp lo", udpFrame(t, dst, 5000), vPort},
		{"udp mid", udpFrame(t, dst, 5005), vPort},
		{"udp hi", udpFrame(t, dst, 5010), vPort},
		{"udp hi+1", udpFrame(t, dst, 5011), vPass},
		{"udp 139", udpFrame(t, dst, 139), vPass},
		{"udp 140", udpFrame(t, dst, 140), vPort},
		{"udp 191", udpFrame(t, dst, 191), vPort},
		{"udp 192", udpFrame(t, dst, 192), vPort},
		{"udp 255", udpFrame(t, dst, 255), vPort},
		{"udp 256", udpFrame(t, dst, 256), vPort},
		{"udp 260", udpFrame(t, dst, 260), vPort},
		{"udp 261", udpFrame(t, dst, 261), vPass},
		{"udp 65535", udpFrame(t, dst, 65535), vPort},
		{"udp 65534", udpFrame(t, dst, 65534), vPass},
		{"udp 80 (claimed for tcp only)", udpFrame(t, dst, 80), vPass},
		{"udp 0", udpFrame(t, dst, 0), vPass},

		{"tcp 80", tcpFrame(t, dst, 80), vPort},
		{"tcp 0", tcpFrame(t, dst, 0), vPort},
		{"tcp 81", tcpFrame(t, dst, 81), vPass},
		{"tcp 79", tcpFrame(t, dst, 79), vPass},
		{"tcp 5000 (claimed for udp only)", tcpFrame(t, dst, 5000), vPass},

		{"icmp with protocol 1 claimed", icmpFrame(t, dst), vProtocol},
		{"gre (protocol not claimed)", greFrame(t, dst), vPass},

		{"prefix first address", udpFrame(t, "198.18.1.0", 9), vPrefix},
		{"prefix inside", udpFrame(t, "198.18.1.77", 9), vPrefix},
		{"prefix last address", udpFrame(t, "198.18.1.255", 9), vPrefix},
		{"below prefix", udpFrame(t, "198.18.0.255", 9), vPass},
		{"above prefix", udpFrame(t, "198.18.2.0", 9), vPass},
		{"prefix wins over port", udpFrame(t, "198.18.1.1", 5000), vPrefix},
		{"icmp to prefix: prefix is checked first", icmpFrame(t, "198.18.1.1"), vPrefix},

		{"ihl 6, real port claimed", udpFrame(t, dst, 5001, withPortOption()), vPort},
		{"ihl 6, option bytes look like a claimed port", udpFrame(t, dst, 4000, withPortOption()), vPass},
		{"ihl 4 is invalid", patch(udpFrame(t, dst, 5000), 14, 0x44), vPass},
		{"version 6 in an IPv4 ethertype", patch(udpFrame(t, dst, 5000), 14, 0x65), vPass},

		{"first fragment (MF, offset 0) by port", udpFrame(t, dst, 5000, withFrag(layers.IPv4MoreFragments, 0)), vPort},
		{"later fragment (offset 1) by port", udpFrame(t, dst, 5000, withFrag(layers.IPv4MoreFragments, 1)), vPass},
		{"last fragment (offset 185) by port", udpFrame(t, dst, 5000, withFrag(0, 185)), vPass},
		{"tcp later fragment by port", tcpFrame(t, dst, 80, withFrag(0, 8191)), vPass},
		{"later fragment by protocol", icmpFrame(t, dst, withFrag(0, 3)), vProtocol},
		{"later fragment by prefix", udpFrame(t, "198.18.1.1", 1, withFrag(0, 3)), vPrefix},
		{"DF set, offset 0", udpFrame(t, dst, 5000, withFrag(layers.IPv4DontFragment, 0)), vPort},

		{"ipv6 udp to a claimed port", ipv6UDPFrame(t, 5000), vPass},
		{"vlan-tagged udp to a claimed port", vlanUDPFrame(t, dst, 5000), vPass},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ret, got := run(t, p, tc.frame)
			if got != tc.want {
				t.Errorf("verdict %q, want %q (frame % x)", got, tc.want, tc.frame)
			}
			if ret != xdpPass {
				t.Errorf("return code %d, want XDP_PASS (2): no socket is registered", ret)
			}
		})
	}
}

func TestClaimAllIPv4(t *testing.T) {
	p := loadTest(t)
	const dst = "198.18.0.1"
	check := func(name string, frame []byte, want verdict) {
		t.Helper()
		if _, got := run(t, p, frame); got != want {
			t.Errorf("%s: verdict %q, want %q", name, got, want)
		}
	}
	check("udp before", udpFrame(t, dst, 4242), vPass)
	must(t, p.ClaimAllIPv4(true))
	check("udp", udpFrame(t, dst, 4242), vAll)
	check("icmp", icmpFrame(t, dst), vAll)
	check("gre", greFrame(t, dst), vAll)
	check("later fragment", udpFrame(t, dst, 1, withFrag(0, 100)), vAll)
	check("ipv6", ipv6UDPFrame(t, 4242), vPass)
	check("arp", arpFrame(t, layers.ARPRequest, dst), vPass)
	check("vlan", vlanUDPFrame(t, dst, 4242), vPass)
	must(t, p.ClaimPrefix(netip.MustParsePrefix("198.18.0.0/16")))
	check("all-ipv4 is checked before prefixes", udpFrame(t, dst, 4242), vAll)
	must(t, p.ClaimAllIPv4(false))
	check("prefix after all-ipv4 off", udpFrame(t, dst, 4242), vPrefix)
	must(t, p.UnclaimPrefix(netip.MustParsePrefix("198.18.0.0/16")))
	check("udp after", udpFrame(t, dst, 4242), vPass)
}

func TestUnclaim(t *testing.T) {
	p := loadTest(t)
	claimSet(t, p)
	const dst = "198.18.0.1"
	check := func(name string, frame []byte, want verdict) {
		t.Helper()
		if _, got := run(t, p, frame); got != want {
			t.Errorf("%s: verdict %q, want %q", name, got, want)
		}
	}
	must(t, p.UnclaimPorts(ProtoUDP, 5000, 5000))
	check("unclaimed port", udpFrame(t, dst, 5000), vPass)
	check("rest of the range", udpFrame(t, dst, 5001), vPort)
	must(t, p.UnclaimPorts(ProtoUDP, 0, 65535))
	check("all udp ports unclaimed", udpFrame(t, dst, 5001), vPass)
	check("udp 65535 unclaimed", udpFrame(t, dst, 65535), vPass)
	check("tcp untouched", tcpFrame(t, dst, 80), vPort)
	must(t, p.UnclaimPorts(ProtoTCP, 80, 80))
	check("tcp 80 unclaimed", tcpFrame(t, dst, 80), vPass)

	must(t, p.UnclaimProtocol(1))
	check("icmp unclaimed", icmpFrame(t, dst), vPass)
	must(t, p.UnclaimPrefix(netip.MustParsePrefix("198.18.1.99/24"))) // host bits ignored
	check("prefix unclaimed", udpFrame(t, "198.18.1.1", 9), vPass)
	must(t, p.UnclaimARP(netip.MustParseAddr("198.18.0.10")))
	check("arp unclaimed", arpFrame(t, layers.ARPRequest, "198.18.0.10"), vPass)

	// Unclaiming what is not claimed is not an error.
	must(t, p.UnclaimARP(netip.MustParseAddr("198.18.0.10")))
	must(t, p.UnclaimPrefix(netip.MustParsePrefix("198.18.7.0/24")))
	must(t, p.UnclaimProtocol(99))

	// Narrower and wider prefixes are separate claims.
	must(t, p.ClaimPrefix(netip.MustParsePrefix("198.18.0.0/15")))
	must(t, p.ClaimPrefix(netip.MustParsePrefix("198.18.5.0/24")))
	must(t, p.UnclaimPrefix(netip.MustParsePrefix("198.18.5.0/24")))
	check("wider prefix still claims", udpFrame(t, "198.18.5.1", 9), vPrefix)
	check("outside /15", udpFrame(t, "198.20.0.1", 9), vPass)
}

// TestTruncated cuts frames that a rule claims at every length from 0 up to
// and past the shortest frame that can be claimed: every shorter one must
// pass (and the kernel must not refuse or crash), the shortest and longer
// ones must be claimed. Frames under 14 bytes are refused by
// BPF_PROG_TEST_RUN itself (EINVAL, ETH_HLEN minimum); that is accepted.
func TestTruncated(t *testing.T) {
	p := loadTest(t)
	claimSet(t, p)
	const dst = "198.18.0.1"
	tests := []struct {
		name  string
		frame []byte
		min   int // shortest claimable length
		want  verdict
	}{
		{"arp", arpFrame(t, layers.ARPRequest, "198.18.0.10"), 14 + 28, vARP},
		{"udp port", udpFrame(t, dst, 5000), 14 + 20 + 8, vPort},
		{"udp port, ihl 6", udpFrame(t, dst, 5000, withPortOption()), 14 + 24 + 8, vPort},
		{"tcp port", tcpFrame(t, dst, 80), 14 + 20 + 20, vPort},
		{"icmp protocol", icmpFrame(t, dst), 14 + 20, vProtocol},
		{"prefix", udpFrame(t, "198.18.1.1", 9), 14 + 20, vPrefix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.frame) < tc.min {
				t.Fatalf("fixture is %d bytes, shorter than %d", len(tc.frame), tc.min)
			}
			for n := 0; n <= len(tc.frame); n++ {
				want := tc.want
				switch {
				case n < 14:
					want = vRejected
				case n < tc.min:
					want = vPass
				}
				ret, got := run(t, p, tc.frame[:n])
				if got != want {
					t.Errorf("%d of %d bytes: verdict %q, want %q", n, len(tc.frame), got, want)
				}
				if got != vRejected && ret != xdpPass {
					t.Errorf("%d bytes: return %d, want XDP_PASS", n, ret)
				}
			}
		})
	}
	// Not a single claim without a whole Ethernet header, whatever is claimed.
	must(t, p.ClaimAllIPv4(true))
	for n := 14; n < 14+20; n++ {
		if _, got := run(t, p, udpFrame(t, dst, 1)[:n]); got != vPass {
			t.Errorf("all-ipv4, %d bytes: verdict %q, want pass", n, got)
		}
	}
}

// TestRedirectWithSocket registers an (unbound) AF_XDP socket for queue 0,
// the queue BPF_PROG_TEST_RUN reports, and checks that claimed frames now
// return XDP_REDIRECT without counting NoSocket; a socket on another queue
// does not count.
func TestRedirectWithSocket(t *testing.T) {
	p := loadTest(t)
	must(t, p.ClaimPorts(ProtoUDP, 5000, 5000))
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("AF_XDP socket: %v", err)
	}
	defer unix.Close(fd)

	must(t, p.RegisterSocket(1, fd))
	before, _ := p.Stats()
	if ret, v := run(t, p, udpFrame(t, "198.18.0.1", 5000)); ret != xdpPass || v != vPort {
		t.Fatalf("socket on queue 1 only: return %d verdict %q, want XDP_PASS (fallback) and port", ret, v)
	}
	if after, _ := p.Stats(); after.NoSocket != before.NoSocket+1 {
		t.Fatalf("NoSocket %d, want %d", after.NoSocket, before.NoSocket+1)
	}

	must(t, p.RegisterSocket(0, fd))
	before, _ = p.Stats()
	if ret, v := run(t, p, udpFrame(t, "198.18.0.1", 5000)); ret != xdpRedirect || v != vPort {
		t.Fatalf("socket on queue 0: return %d verdict %q, want XDP_REDIRECT (4) and port", ret, v)
	}
	if after, _ := p.Stats(); after.NoSocket != before.NoSocket || after.Claimed != before.Claimed+1 {
		t.Fatalf("after redirect: %+v, before %+v", after, before)
	}
	if ret, v := run(t, p, udpFrame(t, "198.18.0.1", 5001)); ret != xdpPass || v != vPass {
		t.Fatalf("unclaimed frame with a socket registered: return %d verdict %q", ret, v)
	}

	must(t, p.UnregisterSocket(0))
	must(t, p.UnregisterSocket(0)) // idempotent
	if ret, _ := run(t, p, udpFrame(t, "198.18.0.1", 5000)); ret != xdpPass {
		t.Fatalf("after UnregisterSocket: return %d, want XDP_PASS", ret)
	}
}

func TestArgumentErrors(t *testing.T) {
	p := loadTest(t)
	errs := map[string]error{
		"ports of icmp":          p.ClaimPorts(1, 1, 2),
		"empty range":            p.ClaimPorts(ProtoUDP, 10, 9),
		"ipv6 prefix":            p.ClaimPrefix(netip.MustParsePrefix("2001:2::/64")),
		"zero prefix":            p.ClaimPrefix(netip.Prefix{}),
		"ipv6 arp":               p.ClaimARP(netip.MustParseAddr("2001:2::1")),
		"4in6 arp":               p.ClaimARP(netip.MustParseAddr("::ffff:198.18.0.1")),
		"queue -1":               p.RegisterSocket(-1, 3),
		"queue 64":               p.RegisterSocket(64, 3),
		"stdout is not an xsk":   p.RegisterSocket(0, 1),
		"unregister queue 1000":  p.UnregisterSocket(1000),
		"unclaim ports of proto": p.UnclaimPorts(47, 1, 2),
	}
	for name, err := range errs {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := Load(Options{MaxQueues: -1}); err == nil {
		t.Error("MaxQueues -1: no error")
	}
	if _, err := p.Attach(1, Mode(7)); err == nil {
		t.Error("Attach with Mode(7): no error")
	}

	must(t, p.Close())
	must(t, p.Close())
	for name, err := range map[string]error{
		"claim":    p.ClaimAllIPv4(true),
		"register": p.RegisterSocket(0, 1),
		"stats":    func() error { _, err := p.Stats(); return err }(),
		"attach":   func() error { _, err := p.Attach(1, ModeAuto); return err }(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []Mode{ModeAuto, ModeNative, ModeGeneric} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	for in, want := range map[string]Mode{"NATIVE": ModeNative, "skb": ModeGeneric, "drv": ModeNative} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseMode("offload"); err == nil || !strings.Contains(err.Error(), "auto, native or generic") {
		t.Errorf("ParseMode(offload): %v", err)
	}
}
