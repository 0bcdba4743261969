package lab_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/lab/rssemu"
)

// helperEnv makes the test binary act as a small tool (send a datagram, ping,
// build a lab) instead of running tests: the tests start it inside a lab
// namespace with `ip netns exec`, so no thread of ours changes namespace.
const helperEnv = "NETCHAN_LAB_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		if err := runHelper(strings.Fields(h)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	labtest.SweepStale() // only labs whose test process has exited
	os.Exit(m.Run())
}

func runHelper(args []string) error {
	switch args[0] {
	case "udp": // udp ADDR:PORT PAYLOAD
		c, err := net.Dial("udp4", args[1])
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(args[2]))
		return err
	case "ping": // ping ADDR: one ICMP echo, 1 s to answer
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		msg := []byte{8, 0, 0, 0, 0x4e, 0x43, 0, 1, 'l', 'a', 'b'}
		binary.BigEndian.PutUint16(msg[2:], ^csum(0, msg))
		dst := &net.IPAddr{IP: net.ParseIP(args[1])}
		if _, err := c.WriteTo(msg, dst); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("ping %s: %w", args[1], err)
			}
			if n >= 8 && buf[0] == 0 && buf[4] == 0x4e && buf[5] == 0x43 && from.String() == args[1] {
				return nil
			}
		}
	case "labping": // labping ADDR COUNT: lab.Ping, 100 ms apart, 1 s to answer each
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		_, err = lab.Ping(context.Background(), os.Stdout, netip.MustParseAddr(args[1]), n, 100*time.Millisecond, time.Second)
		return err
	case "offloads": // offloads IFACE: lab.Offloads as `ethtool -k` lines
		m, err := lab.Offloads(args[1])
		if err != nil {
			return err
		}
		for _, name := range lab.OffloadNames() {
			if on, ok := m[name]; ok {
				fmt.Printf("%s: %s\n", name, map[bool]string{true: "on", false: "off"}[on])
			}
		}
		return nil
	case "up": // up NAME LAYOUT: build a lab and exit, leaving an orphan
		_, err := lab.Up(context.Background(), lab.Config{Name: args[1], Layout: lab.Layout(args[2])})
		return err
	}
	return fmt.Errorf("unknown helper %q", args)
}

// helper runs the test binary as a helper in namespace ns ("" = root).
func helper(t *testing.T, ns string, args ...string) error {
	t.Helper()
	_, err := helperOut(t, ns, args...)
	return err
}

// helperOut is helper that also returns what the helper printed.
func helperOut(t *testing.T, ns string, args ...string) (string, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := (*lab.Lab)(nil).Command(ctx, ns, exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, " "))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v: %w: %s", args, err, out)
	}
	return string(out), nil
}

// out runs argv in namespace ns and returns its output.
func out(t *testing.T, l *lab.Lab, ns string, argv ...string) string {
	t.Helper()
	b, err := l.Command(context.Background(), ns, argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(argv, " "), ns, err, b)
	}
	return string(b)
}

var runPrefix = func() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(36*36*36))
	s := n.Text(36)
	return "ncl" + strings.Repeat("0", 3-len(s)) + s
}()

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []lab.Config{
		{Name: "toolong12"}, {Name: "Bad"}, {Name: "a-b"}, {Name: "nc", Layout: "star"},
		{Name: "nc", QueueCount: 17}, {Name: "nc", QueueCount: -1}, {Name: "nc", RSS: "toeplitz"},
	} {
		if _, err := lab.Up(context.Background(), cfg); err == nil || errors.Is(err, lab.ErrNotRoot) {
			t.Errorf("Up(%+v) = %v, want a config error", cfg, err)
		}
	}
	if err := lab.Down("waytoolong"); err == nil {
		t.Error("Down with an invalid name succeeded")
	}
}

// checkEndpoint checks one of netchan's root links: no kernel address,
// IPv6 off, QueueCount queues, transmit checksum offload off.
func checkEndpoint(t *testing.T, l *lab.Lab, ep lab.Endpoint) {
	t.Helper()
	link, err := netlink.LinkByName(ep.Iface)
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().Index != ep.Index || link.Attrs().HardwareAddr.String() != ep.MAC.String() {
		t.Errorf("%s: index/MAC %d %s, Lab says %d %s", ep.Iface, link.Attrs().Index, link.Attrs().HardwareAddr, ep.Index, ep.MAC)
	}
	if addrs, _ := netlink.AddrList(link, netlink.FAMILY_ALL); len(addrs) != 0 {
		t.Errorf("%s has kernel addresses %v, want none", ep.Iface, addrs)
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv6/conf/" + ep.Iface + "/disable_ipv6"); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("%s: disable_ipv6 = %q, want 1", ep.Iface, b)
	}
	checkQueues(t, l, "", ep.Iface)
	checkOffloads(t, l, "", ep.Iface)
}

// checkHost checks a kernel host's end: its address, offloads off, queues.
func checkHost(t *testing.T, l *lab.Lab, h lab.Host) {
	t.Helper()
	if s := out(t, l, h.NS, "ip", "-4", "-o", "addr", "show", "dev", h.Iface); !strings.Contains(s, " "+h.Addr.String()+" ") {
		t.Errorf("%s/%s addresses %q, want %s", h.NS, h.Iface, s, h.Addr)
	}
	if s := out(t, l, h.NS, "ip", "link", "show", h.Iface); !strings.Contains(s, h.MAC.String()) {
		t.Errorf("%s/%s: MAC %s not in %q", h.NS, h.Iface, h.MAC, s)
	}
	if h.Gateway.IsValid() {
		if s := out(t, l, h.NS, "ip", "-4", "route", "show", "default"); !strings.Contains(s, "via "+h.Gateway.String()+" dev "+h.Iface) {
			t.Errorf("%s: default route %q, want via %s", h.NS, s, h.Gateway)
		}
	}
	if v := sysctl(t, l, h.NS, "net.ipv6.conf."+h.Iface+".disable_ipv6"); v != "1" {
		t.Errorf("%s/%s: disable_ipv6 = %s, want 1", h.NS, h.Iface, v)
	}
	checkQueues(t, l, h.NS, h.Iface)
	checkOffloads(t, l, h.NS, h.Iface)
}

func checkQueues(t *testing.T, l *lab.Lab, ns, iface string) {
	t.Helper()
	s := out(t, l, ns, "ls", "/sys/class/net/"+iface+"/queues")
	if rx, tx := strings.Count(s, "rx-"), strings.Count(s, "tx-"); rx != l.QueueCount || tx != l.QueueCount {
		t.Errorf("%s/%s has %d rx and %d tx queues, want %d", ns, iface, rx, tx, l.QueueCount)
	}
}

// checkOffloads checks iface's offloads with the ethtool binary (installed for tests), and that
// lab.Offloads, run inside the namespace, reads the same.
func checkOffloads(t *testing.T, l *lab.Lab, ns, iface string, more ...string) {
	t.Helper()
	s := out(t, l, ns, "ethtool", "-k", iface)
	mine, err := helperOut(t, ns, "offloads", iface)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append([]string{"tx-checksumming: off", "tcp-segmentation-offload: off", "generic-segmentation-offload: off"}, more...) {
		if !strings.Contains(s, "\n"+f) {
			t.Errorf("%s/%s: ethtool -k lacks %q", ns, iface, f)
		}
		if !strings.Contains("\n"+mine, "\n"+f+"\n") {
			t.Errorf("%s/%s: lab.Offloads lacks %q:\n%s", ns, iface, f, mine)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(mine), "\n") {
		if !strings.Contains(s, "\n"+line) {
			t.Errorf("%s/%s: lab.Offloads says %q, ethtool -k does not", ns, iface, line)
		}
	}
}

func sysctl(t *testing.T, l *lab.Lab, ns, key string) string {
	return strings.TrimSpace(out(t, l, ns, "sysctl", "-n", key))
}

// udpArrives sends one datagram from namespace ns to ep's address and
// returns the frame as it arrives on ep, checked for MACs, addresses, TTL
// and complete checksums (what an AF_XDP socket on ep would see).
func udpArrives(t *testing.T, ns string, ep lab.Endpoint, src netip.Addr, ttl byte) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ep.Index}); err != nil {
		t.Fatal(err)
	}
	tv := syscall.NsecToTimeval(int64(200 * time.Millisecond))
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)

	payload := "netchan-lab-" + runPrefix
	dst := netip.AddrPortFrom(ep.Addr.Addr(), 9)
	if err := helper(t, ns, "udp", dst.String(), payload); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		f := buf[:n]
		if n < 42 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[23] != 17 {
			continue
		}
		ip := f[14:]
		hl := int(ip[0]&15) * 4
		udp := ip[hl:]
		if !strings.HasSuffix(string(udp[8:]), payload) {
			continue
		}
		if got := net.HardwareAddr(f[0:6]); got.String() != ep.MAC.String() {
			t.Errorf("frame to %s, want netchan's MAC %s", got, ep.MAC)
		}
		if got := net.HardwareAddr(f[6:12]); got.String() != ep.Peer.MAC.String() {
			t.Errorf("frame from %s, want %s's MAC %s", got, ep.Peer.Role, ep.Peer.MAC)
		}
		if s, d := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])); s != src || d != dst.Addr() || ip[8] != ttl {
			t.Errorf("packet %s -> %s ttl %d, want %s -> %s ttl %d", s, d, ip[8], src, dst.Addr(), ttl)
		}
		if csum(0, ip[:hl]) != 0xffff {
			t.Error("IPv4 header checksum is wrong")
		}
		ulen := binary.BigEndian.Uint16(udp[4:])
		pseudo := uint32(csum(0, ip[12:20])) + uint32(csum(0, []byte{0, 17, byte(ulen >> 8), byte(ulen)}))
		if binary.BigEndian.Uint16(udp[6:]) == 0 || csum(pseudo, udp[:ulen]) != 0xffff {
			t.Errorf("UDP checksum %#04x is not complete (transmit checksum offload still on?)", binary.BigEndian.Uint16(udp[6:]))
		}
		return
	}
	t.Fatalf("datagram from %s never arrived on %s", ns, ep.Iface)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// csum is the ones' complement sum of b added to sum (not inverted).
func csum(sum uint32, b []byte) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func TestPair(t *testing.T) {
	l := labtest.New(t, lab.Config{StaticARP: true})
	n := l.Name
	if l.Layout != lab.LayoutPair || l.QueueCount != 2 || len(l.Netchan) != 1 || len(l.Hosts) != 1 {
		t.Fatalf("lab %+v", l)
	}
	ep, peer := l.Netchan[0], l.Hosts[0]
	want := lab.Host{Role: "peer", NS: n + "-peer", Iface: n + "p0", MAC: peer.MAC,
		Addr: netip.MustParsePrefix("198.18.0.2/24"), Gateway: netip.MustParseAddr("198.18.0.1")}
	if !reflect.DeepEqual(peer, want) || !reflect.DeepEqual(ep.Peer, want) {
		t.Errorf("peer %+v, want %+v", peer, want)
	}
	if ep.Iface != n+"n0" || ep.Addr != netip.MustParsePrefix("198.18.0.1/24") {
		t.Errorf("endpoint %+v", ep)
	}
	checkEndpoint(t, l, ep)
	checkHost(t, l, peer)
	if s := out(t, l, peer.NS, "ip", "neigh", "show", "198.18.0.1", "dev", peer.Iface); !strings.Contains(s, ep.MAC.String()) || !strings.Contains(s, "PERMANENT") {
		t.Errorf("static ARP entry %q, want %s PERMANENT", s, ep.MAC)
	}
	if s := out(t, l, peer.NS, "ip", "link", "show", "lo"); !strings.Contains(s, "UP") {
		t.Errorf("lo not up in %s: %s", peer.NS, s)
	}
	udpArrives(t, peer.NS, ep, peer.Addr.Addr(), 64)
}

func TestRouted(t *testing.T) {
	l := labtest.New(t, lab.Config{Layout: lab.LayoutRouted, StaticARP: true})
	if len(l.Netchan) != 1 || len(l.Hosts) != 2 || l.Hosts[0].Role != "router" || l.Hosts[1].Role != "peer" {
		t.Fatalf("lab %+v", l)
	}
	ep, rtr, peer := l.Netchan[0], l.Hosts[0], l.Hosts[1]
	if !reflect.DeepEqual(ep.Peer, rtr) || rtr.Addr != netip.MustParsePrefix("198.18.0.254/24") || rtr.Gateway.IsValid() ||
		peer.Addr != netip.MustParsePrefix("198.18.1.2/24") || peer.Gateway != netip.MustParseAddr("198.18.1.254") {
		t.Errorf("lab %+v", l)
	}
	checkEndpoint(t, l, ep)
	checkHost(t, l, rtr)
	checkHost(t, l, peer)
	checkQueues(t, l, rtr.NS, l.Name+"r1")
	checkOffloads(t, l, rtr.NS, l.Name+"r1")
	if f, p := sysctl(t, l, rtr.NS, "net.ipv4.ip_forward"), sysctl(t, l, peer.NS, "net.ipv4.ip_forward"); f != "1" || p != "0" {
		t.Errorf("ip_forward router %s peer %s, want 1 and 0", f, p)
	}
	if err := helper(t, peer.NS, "ping", "198.18.0.254"); err != nil {
		t.Errorf("router not reachable from peer: %v", err)
	}
	udpArrives(t, peer.NS, ep, peer.Addr.Addr(), 63) // forwarded by the router

	// lab.Ping from the peer's namespace: the router answers, with ping(8)'s lines.
	s, err := helperOut(t, peer.NS, "labping", "198.18.1.254", "3")
	if err != nil {
		t.Fatalf("lab.Ping of the router: %v", err)
	}
	for seq := 1; seq <= 3; seq++ {
		if want := fmt.Sprintf("64 bytes from 198.18.1.254: icmp_seq=%d ttl=64 time=", seq); !strings.Contains(s, want) {
			t.Errorf("lab.Ping output lacks %q:\n%s", want, s)
		}
	}
	if !strings.Contains(s, "3 packets transmitted, 3 received, 0% packet loss") {
		t.Errorf("lab.Ping summary:\n%s", s)
	}
	// Nobody has 198.18.1.99: no reply, and the helper fails.
	if s, err := helperOut(t, peer.NS, "labping", "198.18.1.99", "1"); err == nil || !strings.Contains(s, "1 packets transmitted, 0 received") {
		t.Errorf("lab.Ping of an address nobody has: %v\n%s", err, s)
	}
}

func TestNAT(t *testing.T) {
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 4, StaticARP: true})
	if len(l.Netchan) != 2 || len(l.Hosts) != 2 || l.Hosts[0].Role != "client" || l.Hosts[1].Role != "server" {
		t.Fatalf("lab %+v", l)
	}
	in, outside, cli, srv := l.Netchan[0], l.Netchan[1], l.Hosts[0], l.Hosts[1]
	if in.Iface != l.Name+"n0" || in.Addr != netip.MustParsePrefix("198.18.1.1/24") || !reflect.DeepEqual(in.Peer, cli) ||
		outside.Iface != l.Name+"n1" || outside.Addr != netip.MustParsePrefix("198.19.0.1/24") || !reflect.DeepEqual(outside.Peer, srv) ||
		cli.Gateway != in.Addr.Addr() || srv.Gateway != outside.Addr.Addr() {
		t.Errorf("lab %+v", l)
	}
	for _, ep := range l.Netchan {
		checkEndpoint(t, l, ep)
		checkHost(t, l, ep.Peer)
		if f := sysctl(t, l, ep.Peer.NS, "net.ipv4.ip_forward"); f != "0" {
			t.Errorf("ip_forward in %s = %s", ep.Peer.NS, f)
		}
		checkOffloads(t, l, ep.Peer.NS, ep.Peer.Iface, "generic-receive-offload: on")
		udpArrives(t, ep.Peer.NS, ep, ep.Peer.Addr.Addr(), 64)
	}
}

func TestUpIsIdempotent(t *testing.T) {
	ctx := context.Background()
	cfg := lab.Config{Name: labtest.UniqueName(t), Layout: lab.LayoutRouted}
	l1 := labtest.New(t, cfg)
	l2, err := lab.Up(ctx, cfg)
	if err != nil || !reflect.DeepEqual(l1, l2) {
		t.Fatalf("second Up = %+v, %v; want %+v", l2, err, l1)
	}
	cfg.QueueCount = 3 // a different config rebuilds
	l3, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkEndpoint(t, l3, l3.Netchan[0])
	checkHost(t, l3, l3.Hosts[1])
	// A partial leftover (a namespace gone) is rebuilt.
	if err := runRoot(t, "ip", "netns", "del", l3.Hosts[1].NS); err != nil {
		t.Fatal(err)
	}
	l4, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkHost(t, l4, l4.Hosts[1])
	if err := helper(t, l4.Hosts[1].NS, "ping", "198.18.0.254"); err != nil {
		t.Error(err)
	}
}

// TestRSS: with Config.RSS the emulation sits on the host end facing netchan (the router's
// in a routed lab), txrehash is off there, Up stays idempotent and rebuilds a lab whose
// emulation went missing. The traffic checks are runtime/lab/rssemu's.
func TestRSS(t *testing.T) {
	ctx := context.Background()
	cfg := lab.Config{Name: labtest.UniqueName(t), Layout: lab.LayoutRouted, QueueCount: 3, RSS: lab.RSSSymmetric}
	l := labtest.New(t, cfg)
	rtr, peer := l.Hosts[0], l.Hosts[1]
	if l.RSS != lab.RSSSymmetric || !reflect.DeepEqual(l.RETA(), pipelines.DefaultRETA(3)) || !bytes.Equal(l.RSS.Key(), pipelines.SymmetricKey[:]) {
		t.Errorf("lab RSS %q, RETA %v, key %x", l.RSS, l.RETA(), l.RSS.Key())
	}
	if ok, err := rssemu.Attached(rtr.NS, rtr.Iface); !ok || err != nil {
		t.Errorf("emulation on %s/%s: %v, %v", rtr.NS, rtr.Iface, ok, err)
	}
	if ok, err := rssemu.Attached(peer.NS, peer.Iface); ok || err != nil {
		t.Errorf("emulation on %s/%s, which does not face netchan: %v, %v", peer.NS, peer.Iface, ok, err)
	}
	if v := sysctl(t, l, rtr.NS, "net.core.txrehash"); v != "0" {
		t.Errorf("txrehash in %s = %s, want 0", rtr.NS, v)
	}
	l2, err := lab.Up(ctx, cfg)
	if err != nil || !reflect.DeepEqual(l, l2) {
		t.Fatalf("second Up = %+v, %v; want %+v", l2, err, l)
	}
	out(t, l, rtr.NS, "tc", "qdisc", "del", "dev", rtr.Iface, "clsact")
	if _, err := lab.Up(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if ok, err := rssemu.Attached(rtr.NS, rtr.Iface); !ok || err != nil {
		t.Errorf("Up did not rebuild a lab whose emulation was removed: %v, %v", ok, err)
	}
	if (&lab.Lab{QueueCount: 2}).RETA() != nil || lab.RSSOff.Key() != nil {
		t.Error("RETA or Key of a lab without RSS is not nil")
	}
}

func runRoot(t *testing.T, argv ...string) error {
	t.Helper()
	_, err := (*lab.Lab)(nil).Command(context.Background(), "", argv...).CombinedOutput()
	return err
}

// leftovers lists what is on the machine of lab name.
func leftovers(name string) []string {
	var found []string
	ns, _ := filepath.Glob("/run/netns/" + name + "-*")
	found = append(found, ns...)
	links, _ := netlink.LinkList()
	for _, link := range links {
		if a := link.Attrs(); strings.HasPrefix(a.Name, name) || a.Alias == "netchan-lab:"+name {
			found = append(found, "link "+a.Name)
		}
	}
	if _, err := os.Stat(filepath.Join(lab.StateDir, name+".json")); err == nil {
		found = append(found, "state file")
	}
	return found
}

func TestDownRemovesEverything(t *testing.T) {
	for _, layout := range []lab.Layout{lab.LayoutPair, lab.LayoutRouted, lab.LayoutNAT} {
		l := labtest.New(t, lab.Config{Layout: layout})
		if len(leftovers(l.Name)) == 0 {
			t.Fatal("leftovers finds nothing of a live lab")
		}
		if err := lab.Down(l.Name); err != nil {
			t.Fatal(err)
		}
		if left := leftovers(l.Name); len(left) != 0 {
			t.Errorf("%s after Down: %v", layout, left)
		}
		if err := lab.Down(l.Name); err != nil {
			t.Errorf("second Down: %v", err)
		}
	}
}

func TestDownLeavesOtherLabs(t *testing.T) {
	cfg := lab.Config{Layout: lab.LayoutNAT, StaticARP: true}
	a := labtest.New(t, cfg)
	b := labtest.New(t, cfg)
	if err := lab.Down(a.Name); err != nil {
		t.Fatal(err)
	}
	cfg.Name = b.Name
	b2, err := lab.Up(context.Background(), cfg)
	if err != nil || !reflect.DeepEqual(b, b2) {
		t.Fatalf("other lab changed by Down: %+v, %v; was %+v", b2, err, b)
	}
	udpArrives(t, b.Hosts[1].NS, b.Netchan[1], b.Hosts[1].Addr.Addr(), 64)
}

func TestSweep(t *testing.T) {
	ctx := context.Background()
	other := labtest.New(t, lab.Config{})
	mine, orphan := runPrefix+"a", runPrefix+"b"
	t.Cleanup(func() { lab.Down(mine); lab.Down(orphan) })
	if _, err := lab.Up(ctx, lab.Config{Name: mine, Layout: lab.LayoutRouted}); err != nil {
		t.Fatal(err)
	}
	// A lab whose process has exited: SweepOrphans removes it and not mine.
	if err := helper(t, "", "up", orphan, string(lab.LayoutNAT)); err != nil {
		t.Fatal(err)
	}
	if err := lab.SweepOrphans(runPrefix); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(orphan); len(left) != 0 {
		t.Errorf("orphan after SweepOrphans: %v", left)
	}
	if len(leftovers(mine)) == 0 {
		t.Fatal("SweepOrphans removed a lab whose owner is alive")
	}
	// A foreign namespace with a lab-like name is never touched.
	foreign := runPrefix + "f-peer"
	if err := runRoot(t, "ip", "netns", "add", foreign); err != nil {
		t.Fatal(err)
	}
	defer runRoot(t, "ip", "netns", "del", foreign)
	if _, err := lab.Up(ctx, lab.Config{Name: runPrefix + "f"}); err == nil || !strings.Contains(err.Error(), foreign) {
		t.Errorf("Up over a foreign namespace: %v, want an error naming it", err)
	}
	if err := lab.Sweep(runPrefix); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(mine); len(left) != 0 {
		t.Errorf("after Sweep: %v", left)
	}
	if _, err := os.Stat("/run/netns/" + foreign); err != nil {
		t.Errorf("Sweep removed a namespace it did not make: %v", err)
	}
	if l, err := lab.Up(ctx, lab.Config{Name: other.Name}); err != nil || !reflect.DeepEqual(l, other) {
		t.Errorf("Sweep(%q) changed lab %s: %v", runPrefix, other.Name, err)
	}
}
