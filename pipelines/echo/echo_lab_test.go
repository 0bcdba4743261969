package echo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/stack"
)

func TestMain(m *testing.M) {
	nschild.Register("udpclient", udpClient)
	nschild.Register("udpserver", udpServer)
	nschild.RunIfChild()
	labtest.SweepStale()
	os.Exit(m.Run())
}

type clientResult struct{ Sent, OK, Bad, Lost int }

func pattern(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i*31 + j*7)
	}
	return b
}

// udpClient is a kernel UDP client (Go's net package) in the peer's namespace: it sends
// count datagrams of size bytes to server and checks each echo.
func udpClient(args []string) error {
	server, count, size := args[0], atoi(args[1]), atoi(args[2])
	c, err := net.Dial("udp4", server)
	if err != nil {
		return err
	}
	defer c.Close()
	var r clientResult
	buf := make([]byte, 70000)
	for i := 0; i < count; i++ {
		want := pattern(i, size)
		if _, err := c.Write(want); err != nil {
			return err
		}
		r.Sent++
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		switch {
		case err != nil:
			r.Lost++
		case bytes.Equal(buf[:n], want):
			r.OK++
		default:
			r.Bad++
		}
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// udpServer is a kernel UDP echo server in the peer's namespace for count datagrams.
func udpServer(args []string) error {
	c, err := net.ListenPacket("udp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(os.Stderr, "listening")
	buf := make([]byte, 70000)
	for i := 0; i < atoi(args[1]); i++ {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		c.WriteTo(buf[:n], from)
	}
	return nil
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func runClient(t *testing.T, ns, server string, count, size int) clientResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := nschild.Command(ctx, ns, "udpclient", server, strconv.Itoa(count), strconv.Itoa(size)).Output()
	if err != nil {
		t.Fatalf("udp client: %v: %s", err, out)
	}
	var r clientResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("udp client printed %q", out)
	}
	return r
}

func noKernelIPv4(t *testing.T, iface string) {
	t.Helper()
	link, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4); len(addrs) != 0 {
		t.Fatalf("%s carries kernel IPv4 addresses %v", iface, addrs)
	}
}

// startEcho runs the echo service set on the lab's netchan interface.
func startEcho(t *testing.T, ep lab.Endpoint, cfg stack.Config) (*echo.Echo, *netchan.Instance) {
	t.Helper()
	return startEchoSpec(t, ep, cfg, (*echo.Echo).App)
}

// startEchoSpec is startEcho running the pipeline that spec makes of the echo stack.
func startEchoSpec(t *testing.T, ep lab.Endpoint, cfg stack.Config, spec func(*echo.Echo) pipelines.App) (*echo.Echo, *netchan.Instance) {
	t.Helper()
	cfg.Ifaces = []stack.Iface{{Addrs: []netip.Prefix{ep.Addr}}}
	e, err := echo.NewEcho(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sp := spec(e)
	in, err := netchan.Start(netchan.Config{Interfaces: []string{ep.Iface}, XDPMode: xdpprog.ModeNative}, sp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served, err := e.Start(ctx)
	if err != nil {
		cancel()
		in.Stop()
		t.Fatalf("echo service: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("echo service: %v", err)
		}
		if err := in.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return e, in
}

func ping(t *testing.T, ns, addr string, count int, size int) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2",
		"-s", strconv.Itoa(size), addr).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", addr, ns, err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("%d received", count)) {
		t.Fatalf("ping: %s", out)
	}
}

func neighMAC(t *testing.T, ns, addr string) string {
	out, _ := exec.Command("ip", "netns", "exec", ns, "ip", "neigh", "show", addr).CombinedOutput()
	return string(out)
}

// TestLabEchoPair: the Linux kernel in the peer namespace talks to netchan's stack, whose
// interface has no kernel address, so only netchan can answer.
func TestLabEchoPair(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 2})
	ep := l.Netchan[0]
	peer := ep.Peer
	noKernelIPv4(t, ep.Iface)
	e, in := startEcho(t, ep, stack.Config{})
	ours := ep.Addr.Addr().String()

	// netchan → kernel: our socket sends to a kernel UDP echo server; netchan resolves the
	// peer by ARP first.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := nschild.Command(ctx, peer.NS, "udpserver", peer.Addr.Addr().String()+":9999", "50")
	stderr, _ := srv.StderrPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := stderr.Read(buf)
	if !strings.Contains(string(buf[:n]), "listening") {
		t.Fatalf("server: %q", buf[:n])
	}
	c, err := e.Host.ListenUDP(netip.MustParseAddrPort("0.0.0.0:0"))
	if err != nil {
		t.Fatal(err)
	}
	to := netip.AddrPortFrom(peer.Addr.Addr(), 9999)
	rbuf := make([]byte, 2000)
	for i := 0; i < 50; i++ {
		want := pattern(i, 300)
		if _, err := c.WriteToUDPAddrPort(want, to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := c.ReadFromUDPAddrPort(rbuf)
		if err != nil || from != to || !bytes.Equal(rbuf[:n], want) {
			t.Fatalf("datagram %d: %v from %v (%d bytes)", i, err, from, n)
		}
	}
	c.Close()
	if err := srv.Wait(); err != nil {
		t.Fatalf("kernel server: %v", err)
	}
	st := e.Host.Stats()
	if st.ARPRequestsOut == 0 || st.ARPRepliesIn == 0 {
		t.Errorf("netchan did not resolve the peer by ARP: %+v", st)
	}
	found := false
	for _, nb := range e.Host.Neighbors(0) {
		found = found || (nb.IP == peer.Addr.Addr() && nb.MAC == peer.MAC.String())
	}
	if !found {
		t.Errorf("peer %v %v not in netchan's neighbour table: %v", peer.Addr.Addr(), peer.MAC, e.Host.Neighbors(0))
	}

	// kernel → netchan: the peer forgets us, resolves us again by ARP, and pings.
	exec.Command("ip", "netns", "exec", peer.NS, "ip", "neigh", "flush", "all").Run()
	before := e.Host.Stats()
	ping(t, peer.NS, ours, 3, 56)
	after := e.Host.Stats()
	if after.ARPRequestsIn == before.ARPRequestsIn || after.ARPRepliesOut == before.ARPRepliesOut || after.EchoReplies < before.EchoReplies+3 {
		t.Errorf("ping did not go through netchan's ARP and ICMP: before %+v after %+v", before, after)
	}
	if m := neighMAC(t, peer.NS, ours); !strings.Contains(m, ep.MAC.String()) {
		t.Errorf("the kernel's neighbour entry for %s is %q, want netchan's MAC %v", ours, m, ep.MAC)
	}

	// A kernel UDP client and netchan's UDP echo, small datagrams and 20,000-byte ones that
	// are fragmented both ways.
	r := runClient(t, peer.NS, ours+":7", 200, 100)
	if r.OK != 200 {
		t.Fatalf("small datagrams: %+v", r)
	}
	r = runClient(t, peer.NS, ours+":7", 20, 20000)
	if r.OK != 20 {
		t.Fatalf("20,000-byte datagrams: %+v", r)
	}
	st = e.Host.Stats()
	if st.Reassembled < 20 || st.FragmentsOut < 20*14 || st.UDPDelivered < 220 {
		t.Errorf("stack counters: %+v", st)
	}
	// A big ping, fragmented both ways.
	ping(t, peer.NS, ours, 2, 4000)
	var rx uint64
	for _, s := range in.Snapshot() {
		rx += s.RxPackets
	}
	if rx == 0 {
		t.Error("netchan's shards counted nothing")
	}
	// The closed port answers with ICMP port unreachable, which the kernel turns into
	// ECONNREFUSED for a connected socket.
	if err := refused(peer.NS, ours+":4444"); err != nil {
		t.Error(err)
	}
	if e.Host.Stats().PortUnreachOut == 0 {
		t.Error("no port unreachable counted")
	}
}

// refused checks that a connected kernel UDP socket gets ECONNREFUSED from netchan.
func refused(ns, addr string) error {
	var out []byte
	var err error
	for try := 0; try < 3; try++ {
		out, err = exec.Command("ip", "netns", "exec", ns, "bash", "-c",
			"exec 3<>/dev/udp/"+strings.Replace(addr, ":", "/", 1)+"; echo x >&3; sleep 1; echo y >&3").CombinedOutput()
		if err != nil {
			break
		}
	}
	if err == nil {
		return fmt.Errorf("second write to a closed port succeeded; want connection refused (%s)", out)
	}
	if !strings.Contains(strings.ToLower(string(out)), "refused") {
		return errors.New("closed port: " + string(out))
	}
	return nil
}

// TestLabEchoRouted: netchan reaches a peer behind a router namespace through a static route.
func TestLabEchoRouted(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutRouted, QueueCount: 1})
	ep := l.Netchan[0]
	router := ep.Peer
	var peer lab.Host
	for _, h := range l.Hosts {
		if h.Role == "peer" {
			peer = h
		}
	}
	noKernelIPv4(t, ep.Iface)
	e, _ := startEcho(t, ep, stack.Config{Routes: []stack.Route{{Prefix: peer.Addr.Masked(), Via: router.Addr.Addr()}}})
	ours := ep.Addr.Addr().String()
	ping(t, peer.NS, ours, 3, 56)
	r := runClient(t, peer.NS, ours+":7", 100, 500)
	if r.OK != 100 {
		t.Fatalf("UDP echo through the router: %+v", r)
	}
	st := e.Host.Stats()
	if st.EchoReplies < 3 || st.UDPOut < 100 {
		t.Errorf("stack counters: %+v", st)
	}
	found := false
	for _, nb := range e.Host.Neighbors(0) {
		found = found || nb.IP == router.Addr.Addr()
	}
	if !found {
		t.Errorf("router %v not resolved: %v", router.Addr.Addr(), e.Host.Neighbors(0))
	}
}
