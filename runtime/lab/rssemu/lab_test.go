package rssemu_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/lab/rssemu"
)

// The lab tests send real traffic from kernel sockets in a lab namespace and count, at
// netchan's end, which receive queue every flow arrived on: a small native XDP program keyed
// by rx_queue_index and the 4-tuple, which drops what it counts.

func TestMain(m *testing.M) {
	labtest.SweepStale()
	os.Exit(m.Run())
}

// tuple is an IPv4 4-tuple as the packet carries it.
type tuple struct {
	src, dst     [4]byte
	sport, dport uint16
}

func (f tuple) String() string {
	return fmt.Sprintf("%v:%d->%v:%d", netip.AddrFrom4(f.src), f.sport, netip.AddrFrom4(f.dst), f.dport)
}

func (f tuple) reverse() tuple { return tuple{f.dst, f.src, f.dport, f.sport} }

// counter counts TCP and UDP frames per (rx queue, tuple) on one of netchan's ends.
type counter struct {
	m *ebpf.Map
}

func attachCounter(t *testing.T, ifindex int) *counter {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "rsstest_count", Type: ebpf.Hash, KeySize: 16, ValueSize: 8, MaxEntries: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	r0, r1, r2, r3, r4 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4
	r6, r7, r8, fp := asm.R6, asm.R7, asm.R8, asm.RFP
	insns := asm.Instructions{
		asm.Mov.Reg(r6, r1),
		asm.LoadMem(r7, r6, 0, asm.Word), // data
		asm.LoadMem(r8, r6, 4, asm.Word), // data_end
		asm.Mov.Reg(r2, r7),
		asm.Add.Imm(r2, 14+20+8),
		asm.JGT.Reg(r2, r8, "out"),
		asm.LoadMem(r2, r7, 12, asm.Half),
		asm.HostTo(asm.BE, r2, asm.Half),
		asm.JNE.Imm(r2, 0x0800, "out"),
		asm.LoadMem(r2, r7, 14, asm.Byte),
		asm.JNE.Imm(r2, 0x45, "out"),
		asm.LoadMem(r2, r7, 23, asm.Byte),
		asm.JEq.Imm(r2, 6, "count"),
		asm.JNE.Imm(r2, 17, "out"),
		// Key at fp-16: rx_queue_index, then the 12 bytes of addresses and ports.
		asm.LoadMem(r2, r6, 16, asm.Word).WithSymbol("count"),
		asm.StoreMem(fp, -16, r2, asm.Word),
	}
	for i := int16(0); i < 12; i += 2 {
		insns = append(insns,
			asm.LoadMem(r2, r7, 26+i, asm.Half),
			asm.StoreMem(fp, -12+i, r2, asm.Half),
		)
	}
	insns = append(insns,
		asm.LoadMapPtr(r1, m.FD()),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(r0, 0, "new"),
		asm.Mov.Imm(r1, 1),
		asm.StoreXAdd(r0, r1, asm.DWord),
		asm.Ja.Label("out"),
		asm.Mov.Imm(r1, 1).WithSymbol("new"),
		asm.StoreMem(fp, -24, r1, asm.DWord),
		asm.LoadMapPtr(r1, m.FD()),
		asm.Mov.Reg(r2, fp),
		asm.Add.Imm(r2, -16),
		asm.Mov.Reg(r3, fp),
		asm.Add.Imm(r3, -24),
		asm.Mov.Imm(r4, int32(ebpf.UpdateNoExist)),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(r0, 1).WithSymbol("out"), // XDP_DROP
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "rsstest_count", Type: ebpf.XDP, License: "Dual MIT/GPL", Instructions: insns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	// Native mode: in generic mode veth shifts queues by one.
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		t.Fatalf("attaching the counting XDP program in native mode: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return &counter{m}
}

// queues returns, for every tuple seen, how many frames arrived on each queue.
func (c *counter) queues(t *testing.T) map[tuple]map[int]uint64 {
	t.Helper()
	got := map[tuple]map[int]uint64{}
	var k [16]byte
	var n uint64
	it := c.m.Iterate()
	for it.Next(&k, &n) {
		f := tuple{sport: binary.BigEndian.Uint16(k[12:]), dport: binary.BigEndian.Uint16(k[14:])}
		copy(f.src[:], k[4:8])
		copy(f.dst[:], k[8:12])
		if got[f] == nil {
			got[f] = map[int]uint64{}
		}
		got[f][int(binary.NativeEndian.Uint32(k[:4]))] += n
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// inNS runs fn on a thread in namespace ns. The thread stays locked, so the runtime discards
// it when fn returns and no other goroutine ever runs in ns.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err == nil {
			err = netns.Set(h)
			h.Close()
		}
		if err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// sendUDP sends count datagrams on each flow from kernel UDP sockets in namespace ns, one
// socket per flow, every other one connected.
func sendUDP(t *testing.T, ns string, flows []tuple, count int) {
	t.Helper()
	err := inNS(ns, func() error {
		for i, f := range flows {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = unix.Bind(fd, &unix.SockaddrInet4{Addr: f.src, Port: int(f.sport)})
			dst := &unix.SockaddrInet4{Addr: f.dst, Port: int(f.dport)}
			if err == nil && i%2 == 0 {
				err = unix.Connect(fd, dst)
			}
			for range count {
				if err != nil {
					break
				}
				if i%2 == 0 {
					_, err = unix.Write(fd, []byte("rss"))
				} else {
					err = unix.Sendto(fd, []byte("rss"), 0, dst)
				}
			}
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("flow %v: %w", f, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// connectTCP starts a non-blocking connect for each flow from namespace ns; nobody answers
// (the counter drops them), so each SYN is retransmitted after the initial 1 s timeout. The
// sockets are closed when the test ends.
func connectTCP(t *testing.T, ns string, flows []tuple) {
	t.Helper()
	err := inNS(ns, func() error {
		for _, f := range flows {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			t.Cleanup(func() { unix.Close(fd) })
			if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: f.src, Port: int(f.sport)}); err != nil {
				return err
			}
			if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: f.dst, Port: int(f.dport)}); err != nil && !errors.Is(err, unix.EINPROGRESS) {
				return fmt.Errorf("connect %v: %w", f, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func flowsFrom(src, dst netip.Addr, sport0 uint16, n int) []tuple {
	flows := make([]tuple, n)
	for i := range flows {
		flows[i] = tuple{src.As4(), dst.As4(), sport0 + uint16(i), 9000 + uint16(i%7)}
	}
	return flows
}

// checkQueues checks that every frame of every flow arrived on queue want(flow), and that
// every flow arrived at least min times.
func checkQueues(t *testing.T, got map[tuple]map[int]uint64, flows []tuple, min uint64, want func(tuple) int) {
	t.Helper()
	used := map[int]int{}
	for _, f := range flows {
		q := want(f)
		var total uint64
		for gq, n := range got[f] {
			total += n
			if gq != q {
				t.Errorf("flow %v: %d frame(s) on queue %d, want all on queue %d", f, n, gq, q)
			}
		}
		if total < min {
			t.Errorf("flow %v: %d frame(s) arrived, want at least %d (on queue %d)", f, total, min, q)
		}
		used[q]++
	}
	t.Logf("%d flows, per expected queue: %v", len(flows), used)
}

func readSysctl(t *testing.T, ns, key string) string {
	t.Helper()
	out, err := (*lab.Lab)(nil).Command(context.Background(), ns, "cat", "/proc/sys/"+strings.ReplaceAll(key, ".", "/")).CombinedOutput()
	if err != nil {
		t.Fatalf("reading %s in %s: %v: %s", key, ns, err, out)
	}
	return strings.TrimSpace(string(out))
}

func sh(t *testing.T, ns, script string) string {
	t.Helper()
	out, err := (*lab.Lab)(nil).Command(context.Background(), ns, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", script, ns, err, out)
	}
	return strings.TrimSpace(string(out))
}

// tcpExt returns a TcpExt counter of namespace ns (/proc/net/netstat).
func tcpExt(t *testing.T, ns, name string) uint64 {
	t.Helper()
	lines := strings.Split(sh(t, ns, "cat /proc/net/netstat"), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" {
			continue
		}
		if j := slices.Index(names, name); j > 0 && j < len(values) {
			v, _ := strconv.ParseUint(values[j], 10, 64)
			return v
		}
	}
	t.Fatalf("no TcpExt %s in %s", name, ns)
	return 0
}

func toeplitz(t *testing.T, key []byte) *pipelines.Toeplitz {
	t.Helper()
	tz, err := pipelines.NewToeplitz(key)
	if err != nil {
		t.Fatal(err)
	}
	return tz
}

// TestLabFlowsArriveOnRETAQueue: in a pair lab of 2 queues with emulated RSS, every UDP flow
// from the peer's kernel arrives at netchan's end on RETA[Toeplitz(tuple)] computed in Go;
// TCP SYNs and their retransmissions too, even with txrehash turned back on (the kernel
// rehashes the connection, the emulation keeps its queue).
func TestLabFlowsArriveOnRETAQueue(t *testing.T) {
	l := labtest.New(t, lab.Config{QueueCount: 2, StaticARP: true, RSS: lab.RSSMicrosoft})
	ep, peer := l.Netchan[0], l.Hosts[0]
	if ok, err := rssemu.Attached(peer.NS, peer.Iface); !ok || err != nil {
		t.Fatalf("Attached(%s, %s) = %v, %v", peer.NS, peer.Iface, ok, err)
	}
	if v := readSysctl(t, peer.NS, "net.core.txrehash"); v != "0" {
		t.Errorf("txrehash in %s = %s, want 0", peer.NS, v)
	}
	tz, reta := toeplitz(t, l.RSS.Key()), l.RETA()
	want := func(f tuple) int { return reta.Queue(tz.HashIPv4Ports(f.src, f.dst, f.sport, f.dport)) }
	c := attachCounter(t, ep.Index)

	udp := flowsFrom(peer.Addr.Addr(), ep.Addr.Addr(), 20000, 256)
	sendUDP(t, peer.NS, udp, 3)

	sh(t, peer.NS, "echo 1 > /proc/sys/net/core/txrehash")
	rehash0 := tcpExt(t, peer.NS, "TcpTimeoutRehash")
	tcp := flowsFrom(peer.Addr.Addr(), ep.Addr.Addr(), 30000, 16)
	for i := range tcp {
		tcp[i].dport = 80
	}
	connectTCP(t, peer.NS, tcp)
	time.Sleep(1500 * time.Millisecond) // the first SYN retransmission comes after 1 s

	got := c.queues(t)
	checkQueues(t, got, udp, 3, want)
	checkQueues(t, got, tcp, 2, want)
	if n := tcpExt(t, peer.NS, "TcpTimeoutRehash") - rehash0; n < uint64(len(tcp)) {
		t.Errorf("TcpTimeoutRehash grew by %d, want at least %d: the kernel did not rehash, so this proves nothing", n, len(tcp))
	}
	for q := range 2 {
		if !slices.ContainsFunc(udp, func(f tuple) bool { return want(f) == q }) {
			t.Errorf("no flow hashes to queue %d: the test cannot tell queues apart", q)
		}
	}
}

// TestLabWithoutRSSFlowsStray is the control: without the emulation the kernel's own choice
// sends some flows elsewhere, so the check above can fail.
func TestLabWithoutRSSFlowsStray(t *testing.T) {
	l := labtest.New(t, lab.Config{QueueCount: 2, StaticARP: true})
	ep, peer := l.Netchan[0], l.Hosts[0]
	if ok, err := rssemu.Attached(peer.NS, peer.Iface); ok || err != nil {
		t.Fatalf("Attached on a lab without RSS = %v, %v", ok, err)
	}
	tz, reta := toeplitz(t, pipelines.MicrosoftKey[:]), pipelines.DefaultRETA(2)
	c := attachCounter(t, ep.Index)
	udp := flowsFrom(peer.Addr.Addr(), ep.Addr.Addr(), 20000, 64)
	sendUDP(t, peer.NS, udp, 1)
	got := c.queues(t)
	stray := 0
	for _, f := range udp {
		q := reta.Queue(tz.HashIPv4Ports(f.src, f.dst, f.sport, f.dport))
		for gq := range got[f] {
			if gq != q {
				stray++
			}
		}
	}
	if stray == 0 || len(got) < len(udp) {
		t.Errorf("without emulated RSS %d of %d flows arrived (%d seen), %d off their Toeplitz queue; want all, and some off", len(got), len(udp), len(got), stray)
	}
	t.Logf("%d of %d flows off their Toeplitz queue without the emulation", stray, len(udp))
}

// TestLabSymmetricBothDirections: in a NAT lab (client - netchan - server) with the
// symmetric key, a flow from the client arrives on netchan's inside end on the same queue
// as its reply direction from the server arrives on the outside end, both RETA[Toeplitz].
func TestLabSymmetricBothDirections(t *testing.T) {
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 4, StaticARP: true, RSS: lab.RSSSymmetric})
	in, out := l.Netchan[0], l.Netchan[1]
	cli, srv := in.Peer, out.Peer
	for _, h := range []lab.Host{cli, srv} {
		if ok, err := rssemu.Attached(h.NS, h.Iface); !ok || err != nil {
			t.Fatalf("Attached(%s, %s) = %v, %v", h.NS, h.Iface, ok, err)
		}
	}
	tz, reta := toeplitz(t, pipelines.SymmetricKey[:]), l.RETA()
	want := func(f tuple) int { return reta.Queue(tz.HashIPv4Ports(f.src, f.dst, f.sport, f.dport)) }
	cin, cout := attachCounter(t, in.Index), attachCounter(t, out.Index)

	fwd := flowsFrom(cli.Addr.Addr(), srv.Addr.Addr(), 40000, 128)
	rev := make([]tuple, len(fwd))
	for i, f := range fwd {
		rev[i] = f.reverse()
		if want(f) != want(rev[i]) {
			t.Fatalf("pipelines: symmetric key hashes %v and %v apart", f, rev[i])
		}
	}
	sendUDP(t, cli.NS, fwd, 2)
	sendUDP(t, srv.NS, rev, 2)
	checkQueues(t, cin.queues(t), fwd, 2, want)
	checkQueues(t, cout.queues(t), rev, 2, want)

	// With the Microsoft key the two directions would part: the symmetric key is what holds
	// them together.
	ms := toeplitz(t, pipelines.MicrosoftKey[:])
	if !slices.ContainsFunc(fwd, func(f tuple) bool {
		r := f.reverse()
		return reta.Queue(ms.HashIPv4Ports(f.src, f.dst, f.sport, f.dport)) != reta.Queue(ms.HashIPv4Ports(r.src, r.dst, r.sport, r.dport))
	}) {
		t.Error("the Microsoft key keeps both directions of every flow together too: the test does not tell the keys apart")
	}
}

// TestAttachDetach: Attach on a lab without emulated RSS, with a table of its own; it clears
// XPS and txrehash, flows follow the table, detach puts everything back and is a no-op
// afterwards and once the device is gone.
func TestAttachDetach(t *testing.T) {
	l := labtest.New(t, lab.Config{QueueCount: 4, StaticARP: true})
	ep, peer := l.Netchan[0], l.Hosts[0]
	xps := "/sys/class/net/" + peer.Iface + "/queues/tx-0/xps_cpus"
	sh(t, peer.NS, "echo 1 > "+xps+"; echo 1 > /proc/sys/net/core/txrehash")
	before := sh(t, peer.NS, "cat "+xps)

	if _, err := rssemu.Attach(peer.NS, peer.Iface, pipelines.MicrosoftKey[:], pipelines.RETA{0, 4}); err == nil || !strings.Contains(err.Error(), "4 transmit queues") {
		t.Errorf("Attach with a queue the device lacks: %v", err)
	}
	if _, err := rssemu.Attach(peer.NS, peer.Iface, make([]byte, 8), pipelines.DefaultRETA(4)); !errors.Is(err, pipelines.ErrToeplitzKey) {
		t.Errorf("Attach with an 8-byte key: %v, want ErrToeplitzKey", err)
	}
	if ok, _ := rssemu.Attached(peer.NS, peer.Iface); ok {
		t.Fatal("a failed Attach left the emulation attached")
	}

	key := []byte("netchan's own forty-byte Toeplitz key!!!")
	reta := pipelines.RETA{3, 1, 2, 3, 3, 0, 2}
	detach, err := rssemu.Attach(peer.NS, peer.Iface, key, reta)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { detach() })
	if ok, err := rssemu.Attached(peer.NS, peer.Iface); !ok || err != nil {
		t.Fatalf("Attached = %v, %v", ok, err)
	}
	if v, x := readSysctl(t, peer.NS, "net.core.txrehash"), sh(t, peer.NS, "cat "+xps); v != "0" || strings.Trim(x, "0,") != "" {
		t.Errorf("after Attach txrehash %s, xps_cpus of tx-0 %s; want 0 and 0", v, x)
	}
	tz := toeplitz(t, key)
	c := attachCounter(t, ep.Index)
	udp := flowsFrom(peer.Addr.Addr(), ep.Addr.Addr(), 20000, 128)
	sendUDP(t, peer.NS, udp, 2)
	checkQueues(t, c.queues(t), udp, 2, func(f tuple) int { return reta.Queue(tz.HashIPv4Ports(f.src, f.dst, f.sport, f.dport)) })

	if err := detach(); err != nil {
		t.Fatal(err)
	}
	if ok, err := rssemu.Attached(peer.NS, peer.Iface); ok || err != nil {
		t.Errorf("after detach Attached = %v, %v", ok, err)
	}
	if s := sh(t, peer.NS, "tc qdisc show dev "+peer.Iface); strings.Contains(s, "clsact") {
		t.Errorf("detach left the clsact qdisc: %s", s)
	}
	if v, x := readSysctl(t, peer.NS, "net.core.txrehash"), sh(t, peer.NS, "cat "+xps); v != "1" || x != before {
		t.Errorf("after detach txrehash %s, xps_cpus of tx-0 %s; want them restored to 1 and %s", v, x, before)
	}
	if err := detach(); err != nil {
		t.Errorf("second detach: %v", err)
	}

	// Once the lab is gone, so is the emulation, and detach has nothing to do.
	detach2, err := rssemu.Attach(peer.NS, peer.Iface, key, reta)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Down(l.Name); err != nil {
		t.Fatal(err)
	}
	if err := detach2(); err != nil {
		t.Errorf("detach after the lab is down: %v", err)
	}
}
