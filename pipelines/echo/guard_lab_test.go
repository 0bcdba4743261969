package echo_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/internal/hostile"
	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/stack"
)

// guardFigures are the counters the guard lab test reads: the shards' drops by the guard's
// reasons, and the stack's UDP datagrams in (valid, past the guard) and out (echoes).
type guardFigures struct {
	loopPort, rateLimit uint64
	udpIn, udpOut       uint64
	rx                  uint64
	kernelLost          uint64 // frames the kernel could not put on a shard's rx ring
	fillEmpty           uint64
}

func readGuardFigures(e *echo.Echo, in *netchan.Instance) guardFigures {
	var g guardFigures
	for _, s := range in.Snapshot() {
		g.loopPort += s.Drops["echo-loop-port"]
		g.rateLimit += s.Drops["echo-rate-limit"]
		g.rx += s.RxPackets
		for _, k := range s.Kernel {
			g.kernelLost += k.RxDropped + k.RxRingFull
			g.fillEmpty += k.FillRingEmpty
		}
	}
	st := e.Host.Stats()
	g.udpIn, g.udpOut = st.UDPIn, st.UDPOut
	return g
}

// txDropped is an interface's tx drop counter (ip -s link) in namespace ns: a veth counts
// there the frames its peer's ring had no room for. (The frames an AF_XDP socket cannot
// take are counted by the socket, and again in the receiving veth's rx drops.)
func txDropped(t *testing.T, ns, iface string) uint64 {
	t.Helper()
	args := []string{"-n", ns, "-s", "-j", "link", "show", "dev", iface}
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		t.Fatalf("ip %v: %v", args, err)
	}
	var links []struct {
		Stats struct {
			TX struct{ Dropped uint64 }
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip %v: %v %s", args, err, out)
	}
	return links[0].Stats.TX.Dropped
}

// settledFigures waits until netchan has received no packet and the stack has sent no UDP
// for 300 ms (at most 10 s) and returns the figures then.
func settledFigures(e *echo.Echo, in *netchan.Instance) guardFigures {
	last := readGuardFigures(e, in)
	quiet := time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		g := readGuardFigures(e, in)
		if g != last {
			last, quiet = g, time.Now()
		} else if time.Since(quiet) >= 300*time.Millisecond {
			break
		}
	}
	return last
}

// TestLabEchoGuard runs the echo service with its default guard (1000 datagrams/s and a
// burst of 1000 per source, one queue so one shard) and, from a packet socket in the
// peer's namespace, sends UDP echo requests from every loop port and from a client port,
// then floods from a second address of the peer's while a kernel UDP client keeps asking
// for echoes:
//
//   - each request from a loop port is dropped as echo-loop-port and none is answered,
//     while every request from the client port is;
//   - of the flood, the stack sees at least the burst and at most burst + rate × the
//     flood's time, the rest is counted as echo-rate-limit, and the two add up to the
//     flood less what the veth pair and the AF_XDP socket counted lost before netchan's
//     pipeline;
//   - the kernel client, another source, gets all its echoes during the flood.
func TestLabEchoGuard(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 1})
	ep := l.Netchan[0]
	peer := ep.Peer
	noKernelIPv4(t, ep.Iface)
	e, in := startEcho(t, ep, stack.Config{})
	ours := ep.Addr.Addr()
	ping(t, peer.NS, ours.String(), 2, 56) // ARP settled both ways before counting

	peerMAC, ourMAC := peer.MAC, ep.MAC
	to := netip.AddrPortFrom(ours, echo.EchoPort)

	// Loop ports and a client port, from the peer's address.
	const rounds = 20
	var frames [][]byte
	for _, p := range echo.LoopPorts {
		frames = append(frames, hostile.UDP(peerMAC, ourMAC, netip.AddrPortFrom(peer.Addr.Addr(), p), to, []byte("loop?")))
	}
	frames = append(frames, hostile.UDP(peerMAC, ourMAC, netip.AddrPortFrom(peer.Addr.Addr(), 40000), to, []byte("client")))
	before := settledFigures(e, in)
	runChild(t, peer.NS, time.Minute, "rawframes", peer.Iface, writeFrames(t, "loop.hex", frames...), strconv.Itoa(rounds))
	after := settledFigures(e, in)
	loop, answered, udpIn := after.loopPort-before.loopPort, after.udpOut-before.udpOut, after.udpIn-before.udpIn
	t.Logf("%d requests from loop ports %v and %d from port 40000: echo-loop-port drops %d, datagrams to the stack %d, echoes sent %d",
		rounds*len(echo.LoopPorts), echo.LoopPorts, rounds, loop, udpIn, answered)
	if loop != uint64(rounds*len(echo.LoopPorts)) {
		t.Errorf("echo-loop-port drops: %d, want %d", loop, rounds*len(echo.LoopPorts))
	}
	if udpIn != rounds || answered != rounds || after.rateLimit != before.rateLimit {
		t.Errorf("the stack got %d datagrams and sent %d echoes (rate-limit drops %d), want %d and %d (0): the client port's only",
			udpIn, answered, after.rateLimit-before.rateLimit, rounds, rounds)
	}

	// The flood, from a second address on the peer's interface (so the peer's kernel answers
	// ARP for it), while a kernel client on the peer's own address asks for echoes.
	a4 := peer.Addr.Addr().As4()
	a4[3] += 100
	flooder := netip.AddrFrom4(a4)
	if out, err := exec.Command("ip", "-n", peer.NS, "addr", "add", flooder.String()+"/32", "dev", peer.Iface).CombinedOutput(); err != nil {
		t.Fatalf("adding %v in %s: %v %s", flooder, peer.NS, err, out)
	}
	const flood, clientCount = 30000, 300
	file := writeFrames(t, "flood.hex", hostile.UDP(peerMAC, ourMAC, netip.AddrPortFrom(flooder, 40001), to, make([]byte, 64)))
	before = settledFigures(e, in)
	vethBefore := txDropped(t, peer.NS, peer.Iface)
	type result struct {
		r          clientResult
		start, end time.Time
		err        error
	}
	client := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	floodStart := time.Now()
	go func() {
		time.Sleep(100 * time.Millisecond) // the flood is under way
		res := result{start: time.Now()}
		out, err := nschild.Command(ctx, peer.NS, "udpclient", to.String(), strconv.Itoa(clientCount), "100").Output()
		res.end = time.Now()
		if err == nil {
			err = json.Unmarshal(out, &res.r)
		}
		res.err = err
		client <- res
	}()
	runChild(t, peer.NS, time.Minute, "rawframes", peer.Iface, file, strconv.Itoa(flood))
	floodEnd := time.Now()
	res := <-client
	if res.err != nil {
		t.Fatalf("udp client: %v", res.err)
	}
	after = settledFigures(e, in)
	vethLost := txDropped(t, peer.NS, peer.Iface) - vethBefore
	lost := vethLost + after.kernelLost - before.kernelLost
	secs := floodEnd.Sub(floodStart).Seconds()
	limited := after.rateLimit - before.rateLimit
	passed := int64(after.udpIn-before.udpIn) - int64(res.r.Sent) // the client's requests all reach the stack
	maxPassed := float64(echo.DefaultUDPBurst) + float64(echo.DefaultUDPRate)*secs
	t.Logf("flood from %v: %d sent in %.3f s (%.0f/s); netchan received %d packets; the stack got %d of the flood, %d dropped as echo-rate-limit; burst + rate × time ≤ %.0f",
		flooder, flood, secs, flood/secs, after.rx-before.rx, passed, limited, maxPassed)
	t.Logf("lost before netchan's pipeline: %d by the peer's veth (tx dropped), %d by the AF_XDP socket (rx_dropped + rx_ring_full; fill ring empty %d times)",
		vethLost, after.kernelLost-before.kernelLost, after.fillEmpty-before.fillEmpty)
	t.Logf("client from %v: %+v, from %.3f s to %.3f s into the flood", peer.Addr.Addr(), res.r,
		res.start.Sub(floodStart).Seconds(), res.end.Sub(floodStart).Seconds())
	if res.r.OK != clientCount {
		t.Errorf("the client got %d of %d echoes during the flood", res.r.OK, clientCount)
	}
	if !res.end.Before(floodEnd) {
		t.Errorf("the client ended %.3f s into the flood, after it (%.3f s): it did not run during the flood",
			res.end.Sub(floodStart).Seconds(), secs)
	}
	if passed < echo.DefaultUDPBurst || float64(passed) > maxPassed {
		t.Errorf("the stack got %d of the flood, want from the burst (%d) to burst + rate × %.3f s (%.0f)", passed, echo.DefaultUDPBurst, secs, maxPassed)
	}
	// Every flood datagram that reached the pipeline either passed or was rate-limited; the
	// rest were lost on the way in (a busy two-core machine lets the veth ring overflow),
	// and only the frames counted lost may be missing.
	if got := uint64(passed) + limited; got > flood || got+lost < flood {
		t.Errorf("of %d flood datagrams %d reached the stack and %d were rate-limited; %d frames were lost before the pipeline: %d unaccounted for",
			flood, passed, limited, lost, int64(flood)-int64(got)-int64(lost))
	}
	if after.loopPort != before.loopPort {
		t.Errorf("%d echo-loop-port drops during the flood, want 0", after.loopPort-before.loopPort)
	}
}
