package nat_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/stack"
)

func TestMain(m *testing.M) {
	nschild.Register("udp-reporter", udpReporter)
	nschild.Register("udp-send", udpSend)
	nschild.Register("tcp-echo", tcpEcho)
	nschild.Register("tcp-client", tcpClient)
	nschild.Register("hairpin", hairpin)
	nschild.RunIfChild()
	labtest.SweepStale()
	os.Exit(m.Run())
}

// udpReporter (server side) answers each datagram with the source address it saw.
func udpReporter(args []string) error {
	c, err := net.ListenPacket("udp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(os.Stderr, "listening")
	buf := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			return nil
		}
		c.WriteTo([]byte(from.String()), from)
	}
}

// udpSend (client side) sends from a fixed local port to each server, optionally pinned to a
// CPU per send (XPS then picks the veth queue), and prints what each server saw.
// args: local port, then server[@cpu]...
func udpSend(args []string) error {
	c, err := net.ListenPacket("udp4", "0.0.0.0:"+args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	var seen []string
	runtime.LockOSThread()
	for _, a := range args[1:] {
		server, cpuStr, _ := strings.Cut(a, "@")
		if cpuStr != "" {
			var set unix.CPUSet
			set.Set(atoi(cpuStr))
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				return err
			}
		}
		to, err := net.ResolveUDPAddr("udp4", server)
		if err != nil {
			return err
		}
		buf := make([]byte, 256)
		got := "lost"
		for try := 0; try < 3 && got == "lost"; try++ {
			c.WriteTo([]byte("who am i"), to)
			c.SetReadDeadline(time.Now().Add(time.Second))
			if n, _, err := c.ReadFrom(buf); err == nil {
				got = string(buf[:n])
			}
		}
		seen = append(seen, got)
	}
	return json.NewEncoder(os.Stdout).Encode(seen)
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// hairpin (client side): socket A learns its external address from the reporter at args[0];
// socket B, bound to address args[1], sends to that external address; A must receive it from
// B's external address.
func hairpin(args []string) error {
	a, err := net.ListenPacket("udp4", "0.0.0.0:7001")
	if err != nil {
		return err
	}
	b, err := net.ListenPacket("udp4", args[1]+":7002")
	if err != nil {
		return err
	}
	reporter, _ := net.ResolveUDPAddr("udp4", args[0])
	buf := make([]byte, 256)
	learn := func(c net.PacketConn) (string, error) {
		c.WriteTo([]byte("?"), reporter)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := c.ReadFrom(buf)
		return string(buf[:n]), err
	}
	extA, err := learn(a)
	if err != nil {
		return err
	}
	extB, err := learn(b)
	if err != nil {
		return err
	}
	to, _ := net.ResolveUDPAddr("udp4", extA)
	b.WriteTo([]byte("hairpin"), to)
	a.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := a.ReadFrom(buf)
	if err != nil {
		return fmt.Errorf("A (%s) got nothing from B (%s): %w", extA, extB, err)
	}
	if string(buf[:n]) != "hairpin" || from.String() != extB {
		return fmt.Errorf("A got %q from %v, want \"hairpin\" from B's external %s", buf[:n], from, extB)
	}
	fmt.Println("ok", extA, extB)
	return nil
}

// tcpEcho (server side) echoes one connection and prints the peer address it saw.
func tcpEcho(args []string) error {
	l, err := net.Listen("tcp4", args[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "listening")
	c, err := l.Accept()
	if err != nil {
		return err
	}
	fmt.Println(c.RemoteAddr())
	io.Copy(c, c)
	c.Close()
	return nil
}

// tcpClient sends n bytes through the echo server and checks the SHA-256 of what returns.
func tcpClient(args []string) error {
	c, err := net.DialTimeout("tcp4", args[0], 5*time.Second)
	if err != nil {
		return err
	}
	n := atoi(args[1])
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*13 + i>>8)
	}
	go func() { c.Write(data); c.(*net.TCPConn).CloseWrite() }()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	back, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if sha256.Sum256(back) != sha256.Sum256(data) {
		return fmt.Errorf("echoed %d bytes, sha256 differs", len(back))
	}
	fmt.Println("ok", len(back))
	return nil
}

type natLab struct {
	l        *lab.Lab
	n        *nat.NAT
	host     *stack.Host
	in       *netchan.Instance
	cli, srv lab.Host
}

func startNAT(t *testing.T, queues int, cfg nat.Config, fast ...bool) *natLab {
	t.Helper()
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: queues})
	inside, outside := l.Netchan[0], l.Netchan[1]
	for _, ep := range l.Netchan {
		link, err := netlink.LinkByName(ep.Iface)
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := netlink.AddrList(link, netlink.FAMILY_V4); len(a) != 0 {
			t.Fatalf("%s carries kernel IPv4 addresses %v", ep.Iface, a)
		}
	}
	// netchan runs in this (the root) namespace: it must be the only thing that can translate.
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("net.ipv4.ip_forward is %q in netchan's namespace; the NAT test needs it 0 so the kernel cannot forward", b)
	}
	for _, tbl := range []string{"filter", "nat", "mangle"} {
		out, _ := exec.Command("iptables", "-t", tbl, "-S").CombinedOutput()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" && !strings.HasPrefix(line, "-P ") {
				t.Fatalf("iptables %s table has rules (%q); the NAT test needs none so the kernel cannot translate", tbl, line)
			}
		}
	}
	if out, _ := exec.Command("nft", "list", "ruleset").CombinedOutput(); strings.Contains(string(out), "masquerade") || strings.Contains(string(out), "snat") {
		t.Fatalf("nftables has NAT rules:\n%s", out)
	}
	host, err := stack.NewHost(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{inside.Addr}}, {Addrs: []netip.Prefix{outside.Addr}}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.InsidePrefix, cfg.InsideAddr, cfg.Outside = inside.Addr.Masked(), inside.Addr.Addr(), outside.Addr.Addr()
	n, err := nat.New(cfg, host)
	if err != nil {
		t.Fatal(err)
	}
	in, err := netchan.Start(netchan.Config{Interfaces: []string{inside.Iface, outside.Iface}, XDPMode: xdpprog.ModeNative, Debug: true},
		n.App(len(fast) > 0 && fast[0]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return &natLab{l: l, n: n, host: host, in: in, cli: inside.Peer, srv: outside.Peer}
}

// serve starts a child on the server and waits for its "listening" line.
func serve(t *testing.T, ns, fn string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := nschild.Command(ctx, ns, fn, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := stderr.Read(buf)
	if !strings.Contains(string(buf[:n]), "listening") {
		t.Fatalf("%s: %q", fn, buf[:n])
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, &out
}

func run(t *testing.T, ns, fn string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := nschild.Command(ctx, ns, fn, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", fn, args, err, out)
	}
	return string(out)
}

// TestLabNAT: kernels on both sides; only netchan translates (its interfaces carry no kernel
// address and the XDP programs claim all IPv4 on them, so the kernel never sees it).
func TestLabNAT(t *testing.T) {
	labtest.RequireRoot(t)
	nl := startNAT(t, 2, nat.Config{Timeouts: nat.Timeouts{UDP: 2 * time.Second}})
	outside := nl.l.Netchan[1].Addr.Addr().String()
	srv := nl.srv.Addr.Addr().String()
	// A second server address, to show endpoint-independent mapping.
	if out, err := exec.Command("ip", "-n", nl.srv.NS, "addr", "add", "198.19.0.3/24", "dev", nl.srv.Iface).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	serve(t, nl.srv.NS, "udp-reporter", "0.0.0.0:9999")

	// UDP: the server sees the outside address; the same inside port keeps one external port
	// towards two servers, also when the client's packets leave on two different queues (XPS
	// maps each transmit queue of the client's veth to one CPU; the sender pins itself).
	for q := 0; q < 2; q++ {
		xps := fmt.Sprintf("/sys/class/net/%s/queues/tx-%d/xps_cpus", nl.cli.Iface, q)
		if out, err := exec.Command("ip", "netns", "exec", nl.cli.NS, "sh", "-c", fmt.Sprintf("echo %x > %s", 1<<q, xps)).CombinedOutput(); err != nil {
			t.Fatalf("xps: %v %s", err, out)
		}
	}
	before := nl.in.Snapshot()
	var seen []string
	json.Unmarshal([]byte(run(t, nl.cli.NS, "udp-send", "5000", srv+":9999@0", "198.19.0.3:9999@1", srv+":9999@1")), &seen)
	// Port 5000 is kept whichever shard owns the client (doc.go, "Sharding").
	if len(seen) != 3 || seen[0] != outside+":5000" || seen[1] != seen[0] || seen[2] != seen[0] {
		t.Fatalf("servers saw %v; want %s:5000 every time", seen, outside)
	}
	after := nl.in.Snapshot()
	for q := range after {
		if after[q].RxPackets == before[q].RxPackets {
			t.Errorf("queue %d received nothing: the client's packets did not use both queues (%+v)", q, after[q])
		}
	}
	var handed uint64
	for _, s := range after {
		handed += s.HandoffOut
	}
	if handed == 0 {
		t.Error("no hand-off: packets of one inside host on two queues must meet at one owner")
	}

	// TCP through the NAT, 1 MB checked by SHA-256.
	_, saw := serve(t, nl.srv.NS, "tcp-echo", "0.0.0.0:8000")
	if out := run(t, nl.cli.NS, "tcp-client", srv+":8000", strconv.Itoa(1<<20)); !strings.HasPrefix(out, "ok") {
		t.Fatalf("tcp: %s", out)
	}
	time.Sleep(100 * time.Millisecond)
	if !strings.HasPrefix(saw.String(), outside+":") {
		t.Fatalf("the TCP server saw %q, want the outside address", saw.String())
	}

	// ping through the NAT, and to the NAT itself on both sides.
	for _, dst := range []string{srv, nl.l.Netchan[0].Addr.Addr().String()} {
		if out, err := exec.Command("ip", "netns", "exec", nl.cli.NS, "ping", "-c", "2", "-i", "0.2", "-W", "2", dst).CombinedOutput(); err != nil {
			t.Fatalf("ping %s: %v\n%s", dst, err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "exec", nl.srv.NS, "ping", "-c", "2", "-i", "0.2", "-W", "2", outside).CombinedOutput(); err != nil {
		t.Fatalf("ping the outside address: %v\n%s", err, out)
	}

	// A closed server port: the client's connected socket gets ECONNREFUSED from the
	// translated ICMP error.
	var out []byte
	for try := 0; try < 3 && !strings.Contains(strings.ToLower(string(out)), "refused"); try++ {
		out, _ = exec.Command("ip", "netns", "exec", nl.cli.NS, "bash", "-c",
			"exec 3<>/dev/udp/"+srv+"/4444; echo x >&3; sleep 1; echo y >&3").CombinedOutput()
	}
	if !strings.Contains(strings.ToLower(string(out)), "refused") {
		t.Errorf("closed port: %q, want connection refused", out)
	}
	if nl.n.Stats().ICMPErrorsTranslated == 0 {
		t.Error("no ICMP error translated")
	}

	// Unsolicited inbound: dropped and counted.
	dropsBefore := dropCount(nl.in, "nat-no-mapping")
	exec.Command("ip", "netns", "exec", nl.srv.NS, "bash", "-c", "echo hi > /dev/udp/"+outside+"/40000").Run()
	time.Sleep(200 * time.Millisecond)
	if dropCount(nl.in, "nat-no-mapping") == dropsBefore {
		t.Error("unsolicited inbound packet not dropped as nat-no-mapping")
	}

	// Hairpin: a second socket of the client reaches the first through the outside address,
	// and sees it coming from the second socket's external address.
	// B uses a second client address that another shard owns, so the hairpinned packet is
	// translated at one shard and delivered by the other.
	second := ""
	for _, c := range []string{"198.18.1.3", "198.18.1.4", "198.18.1.5", "198.18.1.6"} {
		if ownerOf(nl.n, c) != ownerOf(nl.n, nl.cli.Addr.Addr().String()) {
			second = c
			break
		}
	}
	if out, err := exec.Command("ip", "-n", nl.cli.NS, "addr", "add", second+"/24", "dev", nl.cli.Iface).CombinedOutput(); err != nil {
		t.Fatalf("second client address %q: %v %s", second, err, out)
	}
	if out := run(t, nl.cli.NS, "hairpin", srv+":9999", second); !strings.HasPrefix(out, "ok") {
		t.Fatalf("hairpin: %s", out)
	}
	if ms := nl.n.Mappings(); len(ms) < 2 {
		t.Errorf("mappings: %+v", ms)
	}

	// Mappings expire on the shortened UDP timeout.
	st := nl.n.Stats()
	time.Sleep(3 * time.Second)
	if st2 := nl.n.Stats(); st2.Expired <= st.Expired {
		t.Errorf("no mapping expired: before %+v after %+v", st, st2)
	}
}

// setXPS maps transmit queue q of a host's veth to CPU q, for q < queues, so that a sender
// pinned to CPU q sends on queue q (and netchan receives on its queue q).
func setXPS(t *testing.T, h lab.Host, queues int) {
	t.Helper()
	for q := 0; q < queues; q++ {
		xps := fmt.Sprintf("/sys/class/net/%s/queues/tx-%d/xps_cpus", h.Iface, q)
		if out, err := exec.Command("ip", "netns", "exec", h.NS, "sh", "-c", fmt.Sprintf("echo %x > %s", 1<<q, xps)).CombinedOutput(); err != nil {
			t.Fatalf("xps: %v %s", err, out)
		}
	}
}

// TestLabNATPortPreservation: with two shards, flows from several source ports of one
// inside host, some in its shard's slice of external ports and some in the other's, each
// leave from their inside port (the server sees it), and the replies find their way back
// whichever queue they arrive on.
func TestLabNATPortPreservation(t *testing.T) {
	labtest.RequireRoot(t)
	nl := startNAT(t, 2, nat.Config{})
	outside := nl.l.Netchan[1].Addr.Addr().String()
	srv := nl.srv.Addr.Addr().String()
	serve(t, nl.srv.NS, "udp-reporter", "0.0.0.0:9999")
	setXPS(t, nl.cli, 2)
	setXPS(t, nl.srv, 2) // the reporter's replies leave on the queue of the CPU it runs on
	// Slices with 2 shards: 1024-33279 and 33280-65535.
	ports := []int{5000, 20000, 33279, 33280, 40000, 60000}
	for i, p := range ports {
		var seen []string
		out := run(t, nl.cli.NS, "udp-send", strconv.Itoa(p), fmt.Sprintf("%s:9999@%d", srv, i%2), fmt.Sprintf("%s:9999@%d", srv, (i+1)%2))
		if err := json.Unmarshal([]byte(out), &seen); err != nil {
			t.Fatalf("udp-send: %v: %q", err, out)
		}
		want := fmt.Sprintf("%s:%d", outside, p)
		if len(seen) != 2 || seen[0] != want || seen[1] != want {
			t.Errorf("from inside port %d the server saw %v, want %s both times", p, seen, want)
		}
	}
	ms := nl.n.Mappings()
	if len(ms) != len(ports) {
		t.Errorf("mappings %+v, want %d", ms, len(ports))
	}
	for _, m := range ms {
		if m.Shard != ownerOf(nl.n, nl.cli.Addr.Addr().String()) {
			t.Errorf("mapping %+v is not at the client's shard", m)
		}
	}
	t.Logf("client owned by shard %d; mappings %+v; stats %+v", ownerOf(nl.n, nl.cli.Addr.Addr().String()), ms, nl.n.Stats())
}

// TestLabNATStaticForward: with two shards, a UDP and a TCP forward to the inside host are
// reached from outside on both queues, and the inside host sees the remote's own address.
func TestLabNATStaticForward(t *testing.T) {
	labtest.RequireRoot(t)
	nl := startNAT(t, 2, nat.Config{Forwards: []nat.Forward{
		{Proto: 17, ExtPort: 8053, Inside: netip.MustParseAddrPort("198.18.1.2:9999")},
		{Proto: 6, ExtPort: 8022, Inside: netip.MustParseAddrPort("198.18.1.2:8000")}}})
	if got := nl.cli.Addr.Addr().String(); got != "198.18.1.2" {
		t.Fatalf("the lab's client is %s; the forwards name 198.18.1.2", got)
	}
	outside := nl.l.Netchan[1].Addr.Addr().String()
	srv := nl.srv.Addr.Addr().String()
	serve(t, nl.cli.NS, "udp-reporter", "0.0.0.0:9999")
	setXPS(t, nl.srv, 2)
	setXPS(t, nl.cli, 2)
	before := nl.in.Snapshot()
	var seen []string
	out := run(t, nl.srv.NS, "udp-send", "7777", outside+":8053@0", outside+":8053@1", outside+":8053@0", outside+":8053@1")
	if err := json.Unmarshal([]byte(out), &seen); err != nil {
		t.Fatalf("udp-send: %v: %q", err, out)
	}
	for _, s := range seen {
		if s != srv+":7777" {
			t.Fatalf("through the UDP forward the inside host saw %v, want %s:7777 every time", seen, srv)
		}
	}
	after := nl.in.Snapshot()
	for q := range after {
		if after[q].RxPackets == before[q].RxPackets {
			t.Errorf("queue %d received nothing: the server's datagrams did not use both queues", q)
		}
	}
	_, saw := serve(t, nl.cli.NS, "tcp-echo", "0.0.0.0:8000")
	if out := run(t, nl.srv.NS, "tcp-client", outside+":8022", strconv.Itoa(1<<20)); !strings.HasPrefix(out, "ok") {
		t.Fatalf("tcp through the forward: %s", out)
	}
	time.Sleep(100 * time.Millisecond)
	if !strings.HasPrefix(saw.String(), srv+":") {
		t.Fatalf("the inside TCP server saw %q, want the remote's address %s", saw.String(), srv)
	}
	if st := nl.n.Stats(); st.ForwardsPending != 0 || len(nl.n.Mappings()) != 2 {
		t.Errorf("stats %+v, mappings %+v: want the two forwards installed once each", st, nl.n.Mappings())
	}
}

func dropCount(in *netchan.Instance, reason string) uint64 {
	var n uint64
	for _, s := range in.Snapshot() {
		n += s.Drops[reason]
	}
	return n
}

// ownerOf is the shard (of 2) that owns an inside host's flows.
func ownerOf(n *nat.NAT, addr string) int {
	f := make([]byte, 64)
	f[12], f[13], f[14] = 0x08, 0x00, 0x45
	copy(f[26:30], netip.MustParseAddr(addr).AsSlice())
	copy(f[30:34], netip.MustParseAddr("198.19.0.2").AsSlice())
	f[23] = 17
	return n.Owner(f, 2)
}

// TestLabNATFastPath: with the XDP fast path on, established flows are translated by the XDP
// programs and redirected from one veth to the other; the shards see only each flow's first
// packets, SYN, FIN and RST. The transfer is checked end to end as without it.
func TestLabNATFastPath(t *testing.T) {
	labtest.RequireRoot(t)
	nl := startNAT(t, 2, nat.Config{}, true) // two queues, two shards: each installs the flows it owns
	outside := nl.l.Netchan[1].Addr.Addr().String()
	srv := nl.srv.Addr.Addr().String()
	// (A veth delivers redirected frames only to a peer that runs NAPI, an XDP program or
	// GRO: the lab's NAT layout turns GRO on at the hosts.)
	serve(t, nl.srv.NS, "udp-reporter", "0.0.0.0:9999")
	var seen []string
	json.Unmarshal([]byte(run(t, nl.cli.NS, "udp-send", "5000", srv+":9999", srv+":9999", srv+":9999", srv+":9999")), &seen)
	if len(seen) != 4 || !strings.HasPrefix(seen[0], outside+":") || seen[3] != seen[0] {
		t.Fatalf("servers saw %v; want %s with one port every time", seen, outside)
	}
	udpFast := nl.n.Stats().FastTranslated
	if udpFast < 4 { // datagrams 2-4 and their replies (the first reply installs the way back)
		t.Errorf("fast path translated %d UDP packets, want at least 4", udpFast)
	}

	rxBefore := shardRx(nl.in)
	_, saw := serve(t, nl.srv.NS, "tcp-echo", "0.0.0.0:8000")
	const size = 8 << 20
	if out := run(t, nl.cli.NS, "tcp-client", srv+":8000", strconv.Itoa(size)); !strings.HasPrefix(out, "ok") {
		t.Fatalf("tcp: %s", out)
	}
	time.Sleep(100 * time.Millisecond)
	if !strings.HasPrefix(saw.String(), outside+":") {
		t.Fatalf("the TCP server saw %q, want the outside address", saw.String())
	}
	st := nl.n.Stats()
	tcpFast, shardPkts := st.FastTranslated-udpFast, shardRx(nl.in)-rxBefore
	t.Logf("TCP echo of %d MB: %d packets on the fast path, %d through the shards; stats %+v", size>>20, tcpFast, shardPkts, st)
	// 8 MB each way is thousands of segments (fewer when the kernels send GSO frames); the shards see the handshake, the
	// teardown and each direction's first packet after it.
	if tcpFast < 1000 || shardPkts > 100 {
		t.Errorf("fast path carried %d packets and the shards %d: the fast path did not take the established flow", tcpFast, shardPkts)
	}
	if st.FastErrors != 0 || st.FastRedirectDrops != 0 {
		t.Errorf("fast path errors: %d, frames dropped at the redirect: %d", st.FastErrors, st.FastRedirectDrops)
	}
	var xs xdpprog.Stats
	for _, x := range nl.in.XDPStats() {
		xs.Fast += x.Fast
		xs.FastNoTarget += x.FastNoTarget
	}
	if xs.Fast != st.FastTranslated || xs.FastNoTarget != 0 {
		t.Errorf("XDP counters %+v, NAT counts %d fast packets", xs, st.FastTranslated)
	}
}

func shardRx(in *netchan.Instance) uint64 {
	var n uint64
	for _, s := range in.Snapshot() {
		n += s.RxPackets
	}
	return n
}

// TestLabNATFastPathPeerWithoutNAPI: a veth peer with neither GRO nor an XDP program refuses
// what the fast path redirects into it. The NAT sees the refusal, turns the fast path off,
// and the shards carry the flow from then on: one datagram is lost, the next ones get
// through.
func TestLabNATFastPathPeerWithoutNAPI(t *testing.T) {
	labtest.RequireRoot(t)
	nl := startNAT(t, 1, nat.Config{}, true)
	if out, err := exec.Command("ip", "netns", "exec", nl.srv.NS, "ethtool", "-K", nl.srv.Iface, "gro", "off").CombinedOutput(); err != nil {
		t.Fatalf("gro off: %v %s", err, out)
	}
	serve(t, nl.srv.NS, "udp-reporter", "0.0.0.0:9999")
	srv := nl.srv.Addr.Addr().String()
	outside := nl.l.Netchan[1].Addr.Addr().String()
	var seen []string
	json.Unmarshal([]byte(run(t, nl.cli.NS, "udp-send", "5000", srv+":9999", srv+":9999", srv+":9999", srv+":9999")), &seen)
	st := nl.n.Stats()
	t.Logf("servers saw %v; stats %+v", seen, st)
	if !st.FastOff || st.FastRedirectDrops == 0 {
		t.Fatalf("want the refused redirects counted and the fast path turned off: %+v", st)
	}
	if len(seen) != 4 || !strings.HasPrefix(seen[0], outside+":") || seen[2] != seen[0] || seen[3] != seen[0] {
		t.Fatalf("servers saw %v; want the first datagram and those after the fall-back through the NAT", seen)
	}
	if n := nl.in.XDPStats()[0].Fast; n > 2 {
		t.Errorf("the fast path took %d datagrams; after the first refusal it should take none", n)
	}
}
