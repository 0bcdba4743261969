package xdpprog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines/claim"
)

// Lab tests of owned claims, the kernel-destination rule and FollowKernelAddrs, with real
// traffic over a veth pair between two namespaces the test creates (and removes). The program
// runs in a helper process inside namespace A (so that FollowKernelAddrs subscribes to A's
// address events); the test drives it through stdin.

// ask sends one command to a helper and returns its answer line (which starts with prefix).
func (c *child) ask(t *testing.T, cmd, prefix string) string {
	t.Helper()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		t.Fatalf("helper command %q: %v; stderr:\n%s", cmd, err, c.stderr)
	}
	return c.expect(t, prefix)
}

// counters parses "ostats k=v k=v ...".
func (c *child) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	line := c.ask(t, "stats", "ostats ")
	m := map[string]uint64{}
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("helper stats %q: %v", line, err)
		}
		m[k] = n
	}
	return m
}

// waitCounters polls the helper's counters until ok accepts the change since before, or 3 s
// pass; it returns the last change.
func (c *child) waitCounters(t *testing.T, before map[string]uint64, ok func(d map[string]uint64) bool) map[string]uint64 {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		now := c.counters(t)
		d := map[string]uint64{}
		for k, v := range now {
			d[k] = v - before[k]
		}
		if ok(d) || time.Now().After(deadline) {
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// protected asks the helper for its deny set.
func (c *child) protected(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(strings.TrimPrefix(c.ask(t, "protected", "protected"), "protected"))
}

// waitProtected polls the deny set until it is want (addresses joined by spaces, sorted) and
// returns how long that took; it fails after within.
func (c *child) waitProtected(t *testing.T, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := c.protected(t)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("deny set %q after %v, want %q", got, within, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLabOwnedClaims: on an interface with a kernel address, two owners claim udp:9999 and a
// third claims all. Real UDP from the peer namespace shows: 9999 is claimed while either owner
// holds it and passes after both let go; all takes traffic to other addresses but not to the
// kernel address (a kernel socket on 9998 gets every datagram); once the address is removed
// from the interface, FollowKernelAddrs drops it from the deny set and all takes it too.
func TestLabOwnedClaims(t *testing.T) {
	requireRoot(t)
	nsA, nsB, a, b := addressedPair(t)

	c := startChild(t, nsA, "owners", "NCX_IFNAME="+a, "NCX_MODE=native", "NCX_KERNEL_UDP=198.18.0.1:9998")
	f := strings.Fields(c.expect(t, "attached "))
	if len(f) != 3 || f[1] != "native" {
		t.Fatalf("helper attached %q, want native mode", f)
	}
	mac := f[2]
	// No ARP on the way: the datagrams are counted one for one.
	for _, addr := range []string{"198.18.0.1", "198.18.0.100"} {
		ipCmd(t, "-n", nsB, "neigh", "replace", addr, "lladdr", mac, "dev", b, "nud", "permanent")
	}
	c.waitProtected(t, "198.18.0.1 198.18.0.255", time.Second)

	const n = 20
	send := func(target string, port int) {
		t.Helper()
		out := runHelper(t, nsB, "udpsend", "NCX_TARGET="+target, "NCX_PORT="+strconv.Itoa(port), "NCX_COUNT="+strconv.Itoa(n))
		if out != "sent "+strconv.Itoa(n) {
			t.Fatalf("udpsend: %q", out)
		}
	}
	do := func(cmd string) {
		t.Helper()
		if line := c.ask(t, cmd, "ok"); line != "ok" {
			t.Fatalf("%s: %q", cmd, line)
		}
	}

	do("claim pipeline udp:9999")
	do("claim netchannel udp:9999")
	do("claim wide all")
	if got := c.ask(t, "claims", "claims "); got != "claims netchannel: udp:9999, pipeline: udp:9999, wide: all" {
		t.Errorf("helper's Claims(): %q", got)
	}

	before := c.counters(t)
	send("198.18.0.1", 9999)
	d := c.waitCounters(t, before, func(d map[string]uint64) bool { return d["port"] >= n })
	if d["port"] != n || d["all"] != 0 {
		t.Errorf("udp:9999 held by two owners: port +%d all +%d, want +%d and 0", d["port"], d["all"], n)
	}

	before = c.counters(t)
	send("198.18.0.1", 9998)
	d = c.waitCounters(t, before, func(d map[string]uint64) bool { return d["udp9998"] >= n })
	if d["udp9998"] != n || d["all"] != 0 || d["claimed"] != 0 || d["kerneldst"] < n {
		t.Errorf("udp 9998 to the kernel address with all claimed: kernel socket +%d, all +%d, claimed +%d, kerneldst +%d; want +%d, 0, 0, >= %d",
			d["udp9998"], d["all"], d["claimed"], d["kerneldst"], n, n)
	}

	before = c.counters(t)
	send("198.18.0.100", 1234)
	d = c.waitCounters(t, before, func(d map[string]uint64) bool { return d["all"] >= n })
	if d["all"] != n || d["kerneldst"] != 0 {
		t.Errorf("udp to 198.18.0.100 with all claimed: all +%d kerneldst +%d, want +%d and 0", d["all"], d["kerneldst"], n)
	}

	do("unclaim pipeline udp:9999")
	before = c.counters(t)
	send("198.18.0.1", 9999)
	d = c.waitCounters(t, before, func(d map[string]uint64) bool { return d["port"] >= n })
	if d["port"] != n {
		t.Errorf("udp:9999 after one owner unclaimed: port +%d, want +%d (the other still holds it)", d["port"], n)
	}

	do("release netchannel")
	before = c.counters(t)
	send("198.18.0.1", 9999)
	d = c.waitCounters(t, before, func(d map[string]uint64) bool { return d["passed"] >= n })
	if d["port"] != 0 || d["claimed"] != 0 || d["passed"] < n {
		t.Errorf("udp:9999 after both let go: port +%d claimed +%d passed +%d; want 0, 0, >= %d", d["port"], d["claimed"], d["passed"], n)
	}

	// The address leaves the interface: the follower drops it, and all takes its traffic.
	ipCmd(t, "-n", nsA, "addr", "del", "198.18.0.1/24", "dev", a)
	took := c.waitProtected(t, "", time.Second)
	t.Logf("deny set followed the address removal in %v", took)
	before = c.counters(t)
	send("198.18.0.1", 9998)
	d = c.waitCounters(t, before, func(d map[string]uint64) bool { return d["all"] >= n })
	if d["all"] != n || d["udp9998"] != 0 {
		t.Errorf("udp 9998 to the former kernel address: all +%d, kernel socket +%d; want +%d and 0", d["all"], d["udp9998"], n)
	}

	c.stdin.Close()
	c.expect(t, "closed")
	<-c.done
	if !c.cmd.ProcessState.Success() {
		t.Fatalf("helper: %v; stderr:\n%s", c.cmd.ProcessState, c.stderr)
	}
}

// TestFollowKernelAddrs adds and removes addresses on an interface (one end of a veth pair:
// this kernel may have no dummy driver) in a namespace the test creates, and watches a helper inside it (FollowKernelAddrs works in its own process's
// namespace) follow within a second; then it deletes the interface, stops the follower, and
// checks that no goroutine and no socket is left.
func TestFollowKernelAddrs(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	d := ncxName("d")
	ipCmd(t, "-n", ns, "link", "add", d, "type", "veth", "peer", "name", d+"p")
	ipCmd(t, "-n", ns, "link", "set", "dev", d, "up")
	ipCmd(t, "-n", ns, "addr", "add", "198.18.0.7/24", "dev", d)

	c := startChild(t, ns, "follow", "NCX_IFNAME="+d)
	c.expect(t, "following")
	if got := c.protected(t); got != "198.18.0.7 198.18.0.255" {
		t.Fatalf("deny set at start %q, want the address there before: 198.18.0.7 198.18.0.255", got)
	}
	probe := func(addr, want string) {
		t.Helper()
		if got := c.ask(t, "probe "+addr, "probe "); got != "probe "+want {
			t.Errorf("udp to %s with all claimed: %q, want %q", addr, got, want)
		}
	}
	probe("198.18.0.7", "passed")
	probe("198.18.1.7", "claimed")

	ipCmd(t, "-n", ns, "addr", "add", "198.18.1.7/30", "dev", d)
	took := c.waitProtected(t, "198.18.0.7 198.18.0.255 198.18.1.7", time.Second)
	t.Logf("address added: followed in %v", took)
	probe("198.18.1.7", "passed")

	ipCmd(t, "-n", ns, "addr", "del", "198.18.0.7/24", "dev", d)
	took = c.waitProtected(t, "198.18.1.7", time.Second)
	t.Logf("address removed: followed in %v", took)
	probe("198.18.0.7", "claimed")
	probe("198.18.0.255", "claimed")

	// An IPv6 address and an address on another interface change nothing.
	ipCmd(t, "-n", ns, "addr", "add", "2001:2::7/64", "dev", d, "nodad")
	ipCmd(t, "-n", ns, "addr", "add", "198.18.9.9/32", "dev", "lo")
	time.Sleep(100 * time.Millisecond)
	if got := c.protected(t); got != "198.18.1.7" {
		t.Errorf("after an IPv6 address and one on lo: %q, want 198.18.1.7", got)
	}

	ipCmd(t, "-n", ns, "link", "del", d)
	took = c.waitProtected(t, "", time.Second)
	t.Logf("interface deleted: followed in %v", took)

	line := c.ask(t, "stop", "stopped ")
	var g0, g1, fd0, fd1 int
	if _, err := fmt.Sscanf(line, "stopped goroutines=%d/%d fds=%d/%d", &g0, &g1, &fd0, &fd1); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	if g1 > g0 || fd1 > fd0 {
		t.Errorf("after stop: goroutines %d (before %d), fds %d (before %d): the follower leaked", g1, g0, fd1, fd0)
	}
	t.Logf("%s", line)
	c.stdin.Close()
	c.expect(t, "closed")
	<-c.done
	if !c.cmd.ProcessState.Success() {
		t.Fatalf("helper: %v; stderr:\n%s", c.cmd.ProcessState, c.stderr)
	}
}

// TestFollowKernelAddrsErrors: an interface that does not exist is refused at once.
func TestFollowKernelAddrsErrors(t *testing.T) {
	p := loadTest(t)
	stop, err := FollowKernelAddrs(1<<30, p, t.Logf)
	if err == nil {
		stop()
		t.Fatal("FollowKernelAddrs of a missing interface: no error")
	}
	if !errors.Is(err, ErrNoInterface) {
		t.Errorf("missing interface: %v, want ErrNoInterface", err)
	}
	t.Logf("missing interface: %v", err)
}

// helperOwners attaches the program to NCX_IFNAME (NCX_MODE), follows the interface's kernel
// addresses, listens with a kernel UDP socket on NCX_KERNEL_UDP, prints "attached MODE MAC",
// and then answers commands on stdin:
//
//	claim OWNER RULE | unclaim OWNER RULE | release OWNER   → "ok" or "error: ..."
//	claims                                                  → "claims owner: rule, ..."
//	stats                                                   → "ostats k=v ..."
//	protected                                               → "protected a b ..."
//
// At EOF it stops following, closes the program and prints "closed".
func helperOwners() error {
	ifi, err := net.InterfaceByName(os.Getenv("NCX_IFNAME"))
	if err != nil {
		return err
	}
	mode, err := ParseMode(os.Getenv("NCX_MODE"))
	if err != nil {
		return err
	}
	var kernelUDP atomic.Uint64
	if ap := os.Getenv("NCX_KERNEL_UDP"); ap != "" {
		conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ap)))
		if err != nil {
			return err
		}
		defer conn.Close()
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := conn.ReadFromUDP(buf); err != nil {
					return
				}
				kernelUDP.Add(1)
			}
		}()
	}
	p, err := Load(Options{Logf: func(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) }})
	if err != nil {
		return err
	}
	used, err := p.Attach(ifi.Index, mode)
	if err != nil {
		return err
	}
	stop, err := FollowKernelAddrs(ifi.Index, p, func(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) })
	if err != nil {
		return err
	}
	fmt.Printf("attached %s %s\n", used, ifi.HardwareAddr)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		reply := func(err error) {
			if err != nil {
				fmt.Printf("error: %v\n", err)
				return
			}
			fmt.Println("ok")
		}
		switch {
		case (f[0] == "claim" || f[0] == "unclaim") && len(f) == 3:
			r, err := claim.Parse(f[2])
			if err == nil {
				if f[0] == "claim" {
					err = p.Claim(f[1], r)
				} else {
					err = p.Unclaim(f[1], r)
				}
			}
			reply(err)
		case f[0] == "release" && len(f) == 2:
			reply(p.ReleaseOwner(f[1]))
		case f[0] == "claims":
			var cs []string
			for _, c := range p.Claims() {
				cs = append(cs, c.String())
			}
			fmt.Printf("claims %s\n", strings.Join(cs, ", "))
		case f[0] == "stats":
			s, err := p.Stats()
			if err != nil {
				return err
			}
			fmt.Printf("ostats passed=%d claimed=%d nosocket=%d all=%d prefix=%d port=%d addrport=%d flow=%d flowfragment=%d kerneldst=%d udp9998=%d\n",
				s.Passed, s.Claimed, s.NoSocket, s.AllIPv4, s.Prefix, s.Port, s.AddrPort, s.Flow, s.FlowFragment, s.KernelDst, kernelUDP.Load())
		case f[0] == "protected":
			fmt.Printf("protected %s\n", joinAddrs(p.ProtectedAddrs()))
		default:
			fmt.Printf("error: unknown command %q\n", sc.Text())
		}
	}
	stop()
	if err := p.Close(); err != nil {
		return err
	}
	fmt.Println("closed")
	return nil
}

func joinAddrs(as []netip.Addr) string {
	var ss []string
	for _, a := range as {
		ss = append(ss, a.String())
	}
	return strings.Join(ss, " ")
}

// helperUDPSend sends NCX_COUNT datagrams to NCX_TARGET:NCX_PORT and prints "sent N".
func helperUDPSend() error {
	target, err := netip.ParseAddr(os.Getenv("NCX_TARGET"))
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(os.Getenv("NCX_PORT"))
	if err != nil {
		return err
	}
	count, err := strconv.Atoi(os.Getenv("NCX_COUNT"))
	if err != nil {
		return err
	}
	// Not connected: the ICMP port unreachable of a datagram that the kernel got (and had no
	// socket for) must not fail the next send.
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(target, uint16(port)))
	sent := 0
	for i := range count {
		if _, err := conn.WriteToUDP(fmt.Appendf(nil, "netchan owned claims %d", i), to); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		sent++
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("sent %d\n", sent)
	return nil
}

// helperFollow loads a program that claims all (owner "test"), follows the kernel addresses of
// NCX_IFNAME, prints "following", and answers on stdin:
//
//	protected   → "protected a b ..."
//	probe ADDR  → runs a UDP frame to ADDR through the program: "probe claimed|passed"
//	stop        → stops the follower: "stopped goroutines=BEFORE/AFTER fds=BEFORE/AFTER"
//
// At EOF it closes the program and prints "closed".
func helperFollow() error {
	ifi, err := net.InterfaceByName(os.Getenv("NCX_IFNAME"))
	if err != nil {
		return err
	}
	p, err := Load(Options{})
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.Claim("test", claim.All()); err != nil {
		return err
	}
	g0, fd0 := runtime.NumGoroutine(), countFDs()
	stop, err := FollowKernelAddrs(ifi.Index, p, func(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) })
	if err != nil {
		return err
	}
	fmt.Println("following")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "protected":
			fmt.Printf("protected %s\n", joinAddrs(p.ProtectedAddrs()))
		case len(f) == 2 && f[0] == "probe":
			frame, err := probeFrame(f[1])
			if err != nil {
				return err
			}
			before, err := p.Stats()
			if err != nil {
				return err
			}
			if _, _, err := p.TestRun(frame); err != nil {
				return err
			}
			after, err := p.Stats()
			if err != nil {
				return err
			}
			if after.Claimed > before.Claimed {
				fmt.Println("probe claimed")
			} else {
				fmt.Println("probe passed")
			}
		case len(f) == 1 && f[0] == "stop":
			stop()
			stop() // twice is harmless
			g1 := runtime.NumGoroutine()
			for deadline := time.Now().Add(time.Second); g1 > g0 && time.Now().Before(deadline); g1 = runtime.NumGoroutine() {
				time.Sleep(10 * time.Millisecond)
			}
			fmt.Printf("stopped goroutines=%d/%d fds=%d/%d\n", g0, g1, fd0, countFDs())
		default:
			fmt.Printf("error: unknown command %q\n", sc.Text())
		}
	}
	if err := p.Close(); err != nil {
		return err
	}
	fmt.Println("closed")
	return nil
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// probeFrame is an Ethernet/IPv4/UDP frame to addr, port 4242.
func probeFrame(addr string) ([]byte, error) {
	dst, err := netip.ParseAddr(addr)
	if err != nil || !dst.Is4() {
		return nil, fmt.Errorf("probe %q: want an IPv4 address", addr)
	}
	f := make([]byte, 14+20+8)
	copy(f[0:6], macB)
	copy(f[6:12], macA)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	ip[3] = 28
	copy(ip[12:16], []byte{198, 18, 0, 2})
	d4 := dst.As4()
	copy(ip[16:20], d4[:])
	udp := ip[20:]
	udp[0], udp[1] = 0x9c, 0x40 // 40000
	udp[2], udp[3] = 0x10, 0x92 // 4242
	udp[5] = 8
	return f, nil
}
