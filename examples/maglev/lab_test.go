package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/stack/header"
)

// The lab test re-executes its own binary inside a namespace (`ip netns exec NS`) to run a
// kernel UDP client or server there; these variables say which function and with what.
const (
	childEnv = "MAGLEV_TEST_CHILD"
	argsEnv  = "MAGLEV_TEST_ARGS"
	nsPrefix = "maglev-" // namespaces are maglev-PID-ID-ROLE, so a later run can sweep a killed run's
)

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		if err := runChild(name, os.Getenv(argsEnv)); err != nil {
			fmt.Fprintf(os.Stderr, "maglev child %s: %v\n", name, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	sweepStale()
	os.Exit(m.Run())
}

// sweepStale removes the namespaces of lab runs whose process has exited (killed runs); the
// root end of the load balancer's veth goes with its peer in the switch namespace.
func sweepStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(f[0], nsPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// backendArgs and clientArgs are the children's arguments, passed as JSON.
type backendArgs struct {
	Name string
	VIP  string
	Port int
}

type clientArgs struct {
	Src     string // the client's address
	VIP     string
	Port    int
	Ports   []int // one flow per source port
	Packets int   // per flow
}

// clientResult maps each source port to the backend that answered each of its packets.
type clientResult struct {
	Replies map[int][]string
	Lost    int // packets that got no reply after every retry
}

func runChild(name, args string) error {
	switch name {
	case "backend":
		var a backendArgs
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			return err
		}
		return backend(a)
	case "client":
		var a clientArgs
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			return err
		}
		return client(a)
	}
	return fmt.Errorf("no child function %q", name)
}

// backend is a real server behind the VIP: a kernel UDP socket bound to VIP:port (so replies
// leave from the VIP, straight to the client: direct server return) that answers every
// datagram with its name and counts datagrams per client address. It prints "ready", serves
// until its stdin closes, then prints the counts as JSON.
func backend(a backendArgs) error {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a.VIP), uint16(a.Port))))
	if err != nil {
		return err
	}
	var mu sync.Mutex
	counts := map[string]int{}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			counts[from.String()]++
			mu.Unlock()
			conn.WriteToUDPAddrPort([]byte(a.Name), from)
		}
	}()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	conn.Close()
	mu.Lock()
	defer mu.Unlock()
	return json.NewEncoder(os.Stdout).Encode(counts)
}

// client opens one UDP socket per source port, connected to VIP:port, and sends Packets
// datagrams on each, one at a time, waiting for the answer (a datagram may be sent up to 4
// times); it prints a clientResult.
func client(a clientArgs) error {
	res := clientResult{Replies: map[int][]string{}}
	var mu sync.Mutex
	work := make(chan int)
	errc := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for port := range work {
				conn, err := net.DialUDP("udp4",
					net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a.Src), uint16(port))),
					net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a.VIP), uint16(a.Port))))
				if err != nil {
					errc <- err
					continue
				}
				buf := make([]byte, 2048)
				var got []string
				lost := 0
				for k := range a.Packets {
					answered := false
					for try := 0; try < 4 && !answered; try++ {
						fmt.Fprintf(conn, "flow %d packet %d", port, k)
						conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
						if n, err := conn.Read(buf); err == nil {
							got = append(got, string(buf[:n]))
							answered = true
						}
					}
					if !answered {
						lost++
					}
				}
				conn.Close()
				mu.Lock()
				res.Replies[port] = got
				res.Lost += lost
				mu.Unlock()
			}
		}()
	}
	for _, p := range a.Ports {
		work <- p
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// childCmd runs child function name with args inside namespace ns.
func childCmd(ctx context.Context, t *testing.T, ns, name string, args any) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, exe)
	cmd.Env = append(os.Environ(), childEnv+"="+name, argsEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	return cmd
}

// run runs a command and fails the test with its output if it fails.
func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// topology is the lab: one L2 segment, a bridge in namespace sw, joining the load balancer (a
// veth whose other end, lbIf, is in the root namespace, without an IPv4 address: netchan
// runs there), the client (198.18.0.2/24) and the backends (198.18.0.11.., each holding the
// VIP on lo, with arp_ignore=1 and arp_announce=2 so that only the load balancer answers ARP
// for the VIP).
type topology struct {
	lbIf     string
	clientNS string
	backends []labBackend
}

type labBackend struct {
	ns   string
	addr netip.Addr
	mac  header.MAC
	Backend
}

const (
	labClient = "198.18.0.2"
	labVIP    = "198.18.0.100"
	labPort   = 9000
)

// buildTopology builds the namespaces and links with ip(8); t.Cleanup removes them, pass or
// fail (deleting the switch namespace also deletes the root end of the load balancer's veth).
func buildTopology(t *testing.T, nBackends int) *topology {
	t.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	id := fmt.Sprintf("%06x", rnd[:])
	ns := func(role string) string { return fmt.Sprintf("%s%d-%s-%s", nsPrefix, os.Getpid(), id, role) }
	addNS := func(name string) {
		run(t, "ip", "netns", "add", name)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("cleanup: ip netns del %s: %v %s", name, err, out)
			}
		})
		run(t, "ip", "-n", name, "link", "set", "lo", "up")
		run(t, "ip", "netns", "exec", name, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
	}
	sw := ns("sw")
	addNS(sw)
	run(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", sw, "link", "set", "br0", "up")

	top := &topology{lbIf: "mgl" + id, clientNS: ns("cli")}
	// The load balancer's veth: two queues each way (so two shards), created in the root
	// namespace with its peer straight in sw.
	run(t, "ip", "link", "add", top.lbIf, "numtxqueues", "2", "numrxqueues", "2", "type", "veth",
		"peer", "name", "lb", "netns", sw, "numtxqueues", "2", "numrxqueues", "2")
	t.Cleanup(func() { exec.Command("ip", "link", "del", top.lbIf).Run() }) // gone already if sw went first
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+top.lbIf+"/disable_ipv6", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "link", "set", top.lbIf, "up")
	run(t, "ip", "-n", sw, "link", "set", "lb", "master", "br0", "up")
	run(t, "ip", "netns", "exec", sw, "ethtool", "-K", "lb", "tx", "off")

	// hostLink makes the veth from a host namespace (end "eth0") to a bridge port in sw.
	hostLink := func(host, port string, mac string) {
		argv := []string{"ip", "-n", host, "link", "add", "eth0"}
		if mac != "" {
			argv = append(argv, "address", mac)
		}
		run(t, append(argv, "type", "veth", "peer", "name", port, "netns", sw)...)
		run(t, "ip", "-n", sw, "link", "set", port, "master", "br0", "up")
		// A kernel socket's frames leave a veth with partial checksums, which the load
		// balancer would forward as they are and the backend would drop: compute them.
		run(t, "ip", "netns", "exec", host, "ethtool", "-K", "eth0", "tx", "off")
	}
	addNS(top.clientNS)
	hostLink(top.clientNS, "cli", "")
	run(t, "ip", "-n", top.clientNS, "addr", "add", labClient+"/24", "dev", "eth0")
	run(t, "ip", "-n", top.clientNS, "link", "set", "eth0", "up")

	for i := 1; i <= nBackends; i++ {
		b := labBackend{ns: ns(fmt.Sprintf("be%d", i)), addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}),
			mac: header.MAC{0x02, 0, 0, 0, 0x0b, byte(i)}}
		b.Backend = Backend{Name: fmt.Sprintf("be%d", i), MAC: b.mac}
		addNS(b.ns)
		hostLink(b.ns, fmt.Sprintf("be%d", i), b.mac.String())
		run(t, "ip", "-n", b.ns, "addr", "add", b.addr.String()+"/24", "dev", "eth0")
		run(t, "ip", "-n", b.ns, "addr", "add", labVIP+"/32", "dev", "lo")
		run(t, "ip", "netns", "exec", b.ns, "sh", "-c",
			"for c in all eth0; do echo 1 > /proc/sys/net/ipv4/conf/$c/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$c/arp_announce; done")
		run(t, "ip", "-n", b.ns, "link", "set", "eth0", "up")
		top.backends = append(top.backends, b)
	}
	return top
}

// startBackends starts each backend's UDP server and returns a function that stops them and
// returns what each counted, by name.
func startBackends(ctx context.Context, t *testing.T, top *topology) func() map[string]map[string]int {
	t.Helper()
	type proc struct {
		name  string
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	var procs []proc
	for _, b := range top.backends {
		cmd := childCmd(ctx, t, b.ns, "backend", backendArgs{Name: b.Name, VIP: labVIP, Port: labPort})
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		p := proc{b.Name, cmd, stdin, bufio.NewReader(stdout)}
		if line, err := p.out.ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("backend %s did not start: %q %v", b.Name, line, err)
		}
		procs = append(procs, p)
	}
	return func() map[string]map[string]int {
		all := map[string]map[string]int{}
		for _, p := range procs {
			p.stdin.Close()
			var counts map[string]int
			if err := json.NewDecoder(p.out).Decode(&counts); err != nil {
				t.Fatalf("backend %s: %v", p.name, err)
			}
			if err := p.cmd.Wait(); err != nil {
				t.Fatalf("backend %s: %v", p.name, err)
			}
			all[p.name] = counts
		}
		return all
	}
}

// runClient runs the client over ports and returns, per port, the one backend that answered
// all its packets; it fails the test if a flow got answers from two backends or lost packets.
func runClient(ctx context.Context, t *testing.T, top *topology, ports []int, packets int) map[int]string {
	t.Helper()
	out, err := childCmd(ctx, t, top.clientNS, "client",
		clientArgs{Src: labClient, VIP: labVIP, Port: labPort, Ports: ports, Packets: packets}).Output()
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	var res clientResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	if res.Lost != 0 {
		t.Errorf("client: %d of %d packets got no reply", res.Lost, len(ports)*packets)
	}
	got := map[int]string{}
	for _, p := range ports {
		r := res.Replies[p]
		if len(r) == 0 {
			t.Fatalf("flow from port %d: no reply", p)
		}
		for _, name := range r {
			if name != r[0] {
				t.Fatalf("flow from port %d was answered by %v: more than one backend", p, r)
			}
		}
		got[p] = r[0]
	}
	return got
}

// TestLabMaglev runs the load balancer on a real veth with two shards in front of three
// backend namespaces that hold the VIP, and a client namespace that opens UDP flows to it.
//  1. 600 flows, 3 packets each: every flow is answered, all by one backend, the one the Maglev
//     table names for its 5-tuple; the replies come from the VIP straight from the backend
//     (direct server return); the spread is near even.
//  2. be2 is removed while the load balancer runs. The same 600 flows again, plus 600 new ones:
//     every tracked flow of be1 and be3 stays where it was; be2's flows move to the backend the
//     new table names; new flows follow the new table.
//  3. The 600 first flows once more: the moved flows stay on their new backend.
//
// Then every backend's own count is checked against what the client saw.
func TestLabMaglev(t *testing.T) {
	labtest.RequireRoot(t)
	top := buildTopology(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stopBackends := startBackends(ctx, t, top)

	var bs []Backend
	for _, b := range top.backends {
		bs = append(bs, b.Backend)
	}
	lb, err := NewLB(netip.MustParseAddr(labVIP), bs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := netchan.Start(netchan.Config{Interfaces: []string{top.lbIf}, Logf: t.Logf}, lb.App())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	t.Logf("load balancer on %s: %d shards, XDP %v", top.lbIf, in.Shards(), in.Modes())

	client, vip := netip.MustParseAddr(labClient).As4(), netip.MustParseAddr(labVIP).As4()
	predict := func(tb *Table, port int) string {
		return tb.Backends()[tb.Lookup(lb.FlowHash(header.ProtoUDP, client, vip, uint16(port), labPort))]
	}
	ports := func(from, n int) []int {
		p := make([]int, n)
		for i := range p {
			p[i] = from + i
		}
		return p
	}
	const nflows = 600
	tracked, fresh := ports(20000, nflows), ports(30000, nflows)

	// 1. New flows follow the table, spread near evenly.
	table1 := lb.Table()
	first := runClient(ctx, t, top, tracked, 3)
	spread := map[string]int{}
	for _, p := range tracked {
		if want := predict(table1, p); first[p] != want {
			t.Errorf("flow from port %d answered by %s; the table names %s", p, first[p], want)
		}
		spread[first[p]]++
	}
	t.Logf("phase 1: %d flows over 3 backends: %v", nflows, spread)
	for _, b := range top.backends {
		if n := spread[b.Name]; n < nflows/3-nflows/10 || n > nflows/3+nflows/10 {
			t.Errorf("backend %s got %d of %d flows; want %d±%d", b.Name, n, nflows, nflows/3, nflows/10)
		}
	}

	// 2. Remove be2 at run time.
	if err := lb.RemoveBackend("be2"); err != nil {
		t.Fatal(err)
	}
	table2 := lb.Table()
	second := runClient(ctx, t, top, append(slices.Clone(tracked), fresh...), 3)
	movedOfGone, stayed := 0, 0
	for _, p := range tracked {
		switch {
		case first[p] == "be2":
			movedOfGone++
			if want := predict(table2, p); second[p] != want {
				t.Errorf("flow from port %d of removed be2 went to %s; the new table names %s", p, second[p], want)
			}
		case second[p] != first[p]:
			t.Errorf("tracked flow from port %d moved from %s to %s when be2 was removed", p, first[p], second[p])
		default:
			stayed++
		}
	}
	remapped := 0
	newSpread := map[string]int{}
	for _, p := range fresh {
		if want := predict(table2, p); second[p] != want {
			t.Errorf("new flow from port %d answered by %s; the new table names %s", p, second[p], want)
		}
		if second[p] != predict(table1, p) {
			remapped++
		}
		newSpread[second[p]]++
	}
	if newSpread["be2"] != 0 {
		t.Errorf("%d new flows went to the removed be2", newSpread["be2"])
	}
	frac := float64(remapped) / nflows
	t.Logf("phase 2 (be2 removed): %d tracked flows stayed, be2's %d moved; new flows %v, %.3f of them remapped from the old table (1/N = 0.333)",
		stayed, movedOfGone, newSpread, frac)
	if frac < 1.0/3-0.1 || frac > 1.0/3+0.1 {
		t.Errorf("%.3f of new flows remapped by the removal of one of 3 backends; want 1/3±0.1", frac)
	}

	// 3. The moved flows stay on their new backend.
	third := runClient(ctx, t, top, tracked, 1)
	for _, p := range tracked {
		if third[p] != second[p] {
			t.Errorf("flow from port %d: %s after the removal, then %s", p, second[p], third[p])
		}
	}

	// Every backend saw exactly the flows the client saw it answer.
	counts := stopBackends()
	for _, p := range append(slices.Clone(tracked), fresh...) {
		from := netip.AddrPortFrom(netip.MustParseAddr(labClient), uint16(p)).String()
		want := map[string]bool{second[p]: true}
		if f, ok := first[p]; ok {
			want[f] = true
		}
		for name, c := range counts {
			if (c[from] > 0) != want[name] {
				t.Errorf("flow from port %d: backend %s counted %d packets; the client saw answers from %v", p, name, c[from], want)
			}
		}
	}

	s := lb.Stats()
	t.Logf("load balancer: %+v", s)
	for _, sh := range in.Snapshot() {
		t.Logf("shard %d: rx %d tx %d, handed %d to the other shard, got %d from it; drops %v",
			sh.Shard, sh.RxPackets, sh.TxPackets, sh.HandoffOut, sh.HandoffIn, sh.Drops)
		if sh.DropsTotal != 0 {
			t.Errorf("shard %d dropped %d packets: %v", sh.Shard, sh.DropsTotal, sh.Drops)
		}
	}
	if s.NewFlows != 2*nflows || s.Rescheduled != uint64(movedOfGone) || s.ARPReplies == 0 || s.Untracked != 0 {
		t.Errorf("load balancer stats %+v; want %d new flows, %d rescheduled, ARP answered", s, 2*nflows, movedOfGone)
	}
	if err := in.Stop(); err != nil {
		t.Fatal(err)
	}
}
