package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// udpCounters reads the kernel's UDP counters of this namespace (InDatagrams, NoPorts,
// InErrors) from /proc/net/snmp.
func udpCounters(t *testing.T) (in, noPorts, inErrors uint64) {
	t.Helper()
	v := snmp(t, "Udp", "InDatagrams", "NoPorts", "InErrors")
	return v[0], v[1], v[2]
}

// snmp reads counters of one protocol of this namespace from /proc/net/snmp.
func snmp(t *testing.T, proto string, names ...string) []uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		var out []uint64
		for _, name := range names {
			i := slices.Index(header, name)
			if i < 0 || i >= len(f) {
				t.Fatalf("/proc/net/snmp has no %s %s", proto, name)
			}
			v, _ := strconv.ParseUint(f[i], 10, 64)
			out = append(out, v)
		}
		return out
	}
	t.Fatalf("/proc/net/snmp has no %s lines", proto)
	return nil
}

// peerTCP opens a TCP connection from the peer's kernel to addr:port, sends a line and
// returns the line that comes back.
func peerTCP(t *testing.T, ns string, addr netip.Addr, port int) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%d && echo hello >&3 && read -t 5 line <&3 && echo \"$line\"", addr, port)).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// lineEcho serves one line back on every connection to l and counts the connections.
func lineEcho(l net.Listener, accepted *atomic.Int64) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		accepted.Add(1)
		go func() {
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Write([]byte(line))
		}()
	}
}

// TestRunLeavesKernelAddresses is the claim acceptance check on an interface that carries
// kernel addresses: `netchan run --pipeline reflect` with no claim (all) leaves the kernel's
// own addresses to the kernel — ping and a TCP session keep working, also for an address added
// while netchan runs — and with --claim udp:9999 it reflects UDP to port 9999 of that address
// (netchan's counters move, the kernel's UDP counters do not) while a kernel UDP socket on port
// 9998 of the same address still gets every datagram.
func TestRunLeavesKernelAddresses(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	peer := ep.Peer
	kaddr := ep.Addr // 198.18.0.1/24: the kernel owns it here
	later := netip.PrefixFrom(netip.MustParseAddr("198.18.0.77"), 24)
	labtest.KernelAddr(t, ep.Iface, kaddr)

	out, err := exec.Command("ip", "netns", "exec", peer.NS, "ethtool", "-k", peer.Iface).Output()
	if err != nil || !strings.Contains(string(out), "tx-checksumming: off") {
		t.Fatalf("the peer's transmit checksum offload must be off (the lab turns it off, as the docs tell users): %v\n%s", err, out)
	}

	ln, err := net.Listen("tcp4", net.JoinHostPort(kaddr.Addr().String(), "5555"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go lineEcho(ln, &accepted)

	// 1. No claim: the pipeline's default, all, which must leave kernel addresses alone.
	name := "claims" + l.Name
	run, _ := startRun(t, "--iface", ep.Iface, "--pipeline", "reflect", "--instance", name, "--stats", "0")
	labtest.KernelAddr(t, ep.Iface, later) // an address event while netchan runs
	time.Sleep(200 * time.Millisecond)
	// A reflected echo request comes back to the peer as a request, which its kernel answers,
	// and that answer comes back reflected as a reply: ping would pass with netchan taking
	// everything. So the checks are on this namespace's kernel: it must have answered.
	for _, a := range []netip.Addr{kaddr.Addr(), later.Addr()} {
		before := snmp(t, "Icmp", "InEchos", "OutEchoReps")
		out, err := exec.Command("ip", "netns", "exec", peer.NS, "ping", "-c", "3", "-i", "0.2", "-W", "2", a.String()).CombinedOutput()
		after := snmp(t, "Icmp", "InEchos", "OutEchoReps")
		if err != nil || after[0]-before[0] < 3 || after[1]-before[1] < 3 {
			t.Fatalf("with claim all, the kernel's address %v must answer ping itself: the kernel got %d echo requests and sent %d replies of 3; ping: %v\n%s",
				a, after[0]-before[0], after[1]-before[1], err, out)
		}
	}
	if got, err := peerTCP(t, peer.NS, kaddr.Addr(), 5555); err != nil || got != "hello" || accepted.Load() != 1 {
		t.Fatalf("with claim all, a kernel TCP session to %v: got %q (%v), the kernel's listener accepted %d connections; want hello through 1",
			kaddr.Addr(), got, err, accepted.Load())
	}
	var cs struct {
		Claims []claimsStatus `json:"claims"`
	}
	raw := statusInto(t, name, &cs)
	if len(cs.Claims) != 1 || len(cs.Claims[0].Claims) != 1 || cs.Claims[0].Claims[0] != (ownedClaim{Owner: "reflect", Claim: "all"}) ||
		!slices.Contains(cs.Claims[0].KernelAddrs, kaddr.String()) || !slices.Contains(cs.Claims[0].KernelAddrs, later.String()) {
		t.Fatalf("status claims section: want reflect holding all, and both kernel addresses: %s", raw)
	}
	st := readStatus(t, name)
	if len(st.XDP) != 1 || st.XDP[0].Passed == 0 {
		t.Fatalf("xdp section %+v: the program passed nothing to the kernel", st.XDP)
	}
	t.Logf("claim all: xdp %+v", st.XDP[0])
	stopRun(run)

	// 2. --claim udp:9999: UDP to 9999 of the kernel's address is netchan's, UDP to 9998 the
	// kernel's.
	run, _ = startRun(t, "--iface", ep.Iface, "--pipeline", "reflect", "--claim", "udp:9999", "--instance", name, "--stats", "0")
	defer stopRun(run)
	udp, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(kaddr.Addr(), 9998)))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	send := func(port uint16, count uint64, verify bool, id uint32) trafficgen.Result {
		cfg := trafficgen.Config{Iface: peer.Iface, DstMAC: ep.MAC, Src: peer.Addr.Addr(), Dst: kaddr.Addr(),
			SrcPort: 20000, DstPort: port, Count: count, Rate: 20000, RunID: id, Verify: verify, Wait: 2 * time.Second}
		return labSend(t, peer.NS, cfg)
	}
	in0, noPorts0, inErr0 := udpCounters(t)
	const count = 500
	r := send(9999, count, true, 7)
	in1, noPorts1, inErr1 := udpCounters(t)
	if r.Sent != count || r.Received != count || r.Mismatched != 0 {
		t.Fatalf("udp:9999: sent %d, %d came back reflected intact (%d mismatched); want %d", r.Sent, r.Received, r.Mismatched, count)
	}
	// Whatever else this namespace does may move the kernel's counters a little; had the kernel
	// taken the 500 datagrams, InDatagrams or NoPorts would have moved by 500.
	if d := (in1 - in0) + (noPorts1 - noPorts0) + (inErr1 - inErr0); d >= count/10 {
		t.Fatalf("the kernel's UDP counters moved by %d while netchan reflected %d datagrams to port 9999", d, count)
	}
	st = readStatus(t, name)
	if len(st.Shards) == 0 || st.Shards[0].RxPackets < count || st.Shards[0].TxPackets < count {
		t.Fatalf("netchan's counters: %+v; want at least %d received and transmitted", st.Shards, count)
	}
	const kernelCount = 200
	if r := send(9998, kernelCount, false, 8); r.Sent != kernelCount {
		t.Fatalf("udp to 9998: sent %d of %d", r.Sent, kernelCount)
	}
	// The socket's buffer holds what arrived while the sender ran; read until it is empty.
	n := 0
	buf := make([]byte, 2048)
	for n < kernelCount {
		udp.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := udp.Read(buf); err != nil {
			break
		}
		n++
	}
	if n != kernelCount {
		t.Fatalf("the kernel UDP socket on %v:9998 got %d of %d datagrams", kaddr.Addr(), n, kernelCount)
	}
	st2 := readStatus(t, name)
	if st2.Shards[0].RxPackets != st.Shards[0].RxPackets {
		t.Fatalf("netchan received %d packets while the peer sent to the kernel's port 9998", st2.Shards[0].RxPackets-st.Shards[0].RxPackets)
	}
}
