package shards_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/runtime/xdpprog"
)

func TestMain(m *testing.M) {
	trafficgen.RunChildIfAsked()
	labtest.SweepStale()
	os.Exit(m.Run())
}

// senderQueue is the peer's transmit queue that reaches receive queue q: the same index in
// native mode; in generic mode veth maps sender queues 0,1,2,3 to 0,0,1,2 (LAB-NOTES).
func senderQueue(q int, mode xdpprog.Mode) int {
	if mode == xdpprog.ModeGeneric && q > 0 {
		return q + 1
	}
	return q
}

// send runs one sender per given queue in the peer namespace and returns their results.
func send(t *testing.T, l *lab.Lab, queues []int, mode xdpprog.Mode, count uint64, flows int) []trafficgen.Result {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ep := l.Netchan[0]
	res := make([]trafficgen.Result, len(queues))
	errs := make([]error, len(queues))
	var wg sync.WaitGroup
	for i, q := range queues {
		cfg := trafficgen.Config{Iface: ep.Peer.Iface, Queue: senderQueue(q, mode), DstMAC: ep.MAC,
			Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(), SrcPort: uint16(30000 + 1000*i), DstPort: 9,
			Flows: flows, Size: 60 + 37*i, Count: count, Rate: 20000, RunID: uint32(100 + i), Verify: true, Wait: 3 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := trafficgen.Command(ctx, ep.Peer.NS, []string{exe}, cfg)
		cmd.Stderr = os.Stderr
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			out, err := cmd.Output()
			if err != nil {
				errs[i] = fmt.Errorf("sender %d: %w", i, err)
				return
			}
			res[i], errs[i] = trafficgen.Decode(out)
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return res
}

// noKernelIPv4 proves that the kernel could not have answered: netchan's interface has no IPv4.
func noKernelIPv4(t *testing.T, iface string) {
	t.Helper()
	link, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 0 {
		t.Fatalf("%s carries kernel IPv4 addresses %v", iface, addrs)
	}
}

func start(t *testing.T, cfg netchan.Config, app netchan.App) *netchan.Instance {
	t.Helper()
	in, err := netchan.Start(cfg, app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop() })
	return in
}

// TestLabReflect sends real frames across a veth into the reflect pipeline on real AF_XDP
// sockets and checks that every one comes back byte for byte, in native and generic XDP mode,
// on one and two queues, and that netchan's own counters account for them.
func TestLabReflect(t *testing.T) {
	labtest.RequireRoot(t)
	for _, mode := range []xdpprog.Mode{xdpprog.ModeNative, xdpprog.ModeGeneric} {
		for _, nq := range []int{1, 2} {
			t.Run(fmt.Sprintf("%v/%dq", mode, nq), func(t *testing.T) {
				labQueues := nq
				if mode == xdpprog.ModeGeneric {
					labQueues++
				}
				l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: labQueues})
				ep := l.Netchan[0]
				noKernelIPv4(t, ep.Iface)
				var queues []int
				for q := 0; q < nq; q++ {
					queues = append(queues, q)
				}
				var logMu sync.Mutex
				var logs []string
				spec, _ := basic.ByName("reflect")
				in := start(t, netchan.Config{Interfaces: []string{ep.Iface}, Queues: queues, XDPMode: mode, Debug: true,
					Logf: func(f string, a ...any) { logMu.Lock(); logs = append(logs, fmt.Sprintf(f, a...)); logMu.Unlock() }}, spec)
				if in.Modes()[0] != mode {
					t.Fatalf("attached in %v, asked for %v", in.Modes()[0], mode)
				}
				// veth refuses zero-copy: bind mode auto must have fallen back, and said so.
				logMu.Lock()
				fellBack := strings.Contains(strings.Join(logs, "\n"), "falling back to copy mode")
				logMu.Unlock()
				if !fellBack {
					t.Errorf("no copy-mode fallback logged; logs: %q", logs)
				}
				const count = 2000
				res := send(t, l, queues, mode, count, 4)
				snap := in.Snapshot()
				if err := in.Stop(); err != nil {
					t.Fatalf("stop: %v", err)
				}
				for i, r := range res {
					if r.Sent != count || r.Received != count || r.Mismatched != 0 || r.Duplicates != 0 {
						t.Errorf("queue %d: sent %d, got back %d intact, %d mismatched, %d duplicates", queues[i], r.Sent, r.Received, r.Mismatched, r.Duplicates)
					}
				}
				for i, s := range snap {
					if s.RxPackets < count || s.TxPackets < count || s.Queue != queues[i] {
						t.Errorf("shard %d (queue %d): rx %d tx %d, want ≥ %d each", i, s.Queue, s.RxPackets, s.TxPackets, count)
					}
					if s.DropsTotal != 0 {
						t.Errorf("shard %d dropped %v", i, s.Drops)
					}
				}
				for _, st := range in.XDPStats() {
					if st.Claimed < uint64(count*nq) {
						t.Errorf("XDP program claimed %d, want ≥ %d", st.Claimed, count*nq)
					}
				}
			})
		}
	}
}

// TestLabHandoff sends every frame on queue 0 while the owner function spreads flows over two
// shards: shard 0 must hand shard 1's flows over, nothing may be lost, and the frame
// accounting must hold (Debug tracks every frame).
func TestLabHandoff(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 2})
	ep := l.Netchan[0]
	noKernelIPv4(t, ep.Iface)
	spec, _ := basic.ByName("reflect")
	spec.Owner = pipelines.OwnerByFlow
	in := start(t, netchan.Config{Interfaces: []string{ep.Iface}, Queues: []int{0, 1}, XDPMode: xdpprog.ModeNative, Debug: true}, spec)
	const count = 4000
	res := send(t, l, []int{0}, xdpprog.ModeNative, count, 16)
	snap := in.Snapshot()
	if err := in.Stop(); err != nil {
		t.Fatalf("stop (frame accounting): %v", err)
	}
	r := res[0]
	if r.Sent != count || r.Received != count || r.Mismatched != 0 {
		t.Fatalf("sent %d, got back %d intact, %d mismatched", r.Sent, r.Received, r.Mismatched)
	}
	if snap[0].HandoffOut == 0 || snap[1].HandoffIn != snap[0].HandoffOut {
		t.Fatalf("hand-off out %d, in %d", snap[0].HandoffOut, snap[1].HandoffIn)
	}
	if snap[1].RxPackets != 0 {
		t.Fatalf("shard 1 received %d on its own queue; the test wants everything on queue 0", snap[1].RxPackets)
	}
	if snap[0].TxPackets+snap[1].TxPackets != count || snap[1].TxPackets != snap[1].HandoffIn {
		t.Fatalf("tx %d + %d, want %d with shard 1 sending what it was handed (%d)", snap[0].TxPackets, snap[1].TxPackets, count, snap[1].HandoffIn)
	}
	for i, pl := range in.FramePlaces() {
		if pl["batch"] != 0 || pl["handoff"] != 0 || pl["kernel-tx"] != 0 {
			t.Errorf("shard %d frames not home after shutdown: %v", i, pl)
		}
	}
	t.Logf("handed off %d of %d; shard 0 tx %d, shard 1 tx %d", snap[0].HandoffOut, count, snap[0].TxPackets, snap[1].TxPackets)
}

// TestLabSharedUMEMForward forwards frames between two interfaces whose sockets share one
// UMEM: a frame received on one interface is transmitted, same frame, on the other (no copy in
// user space), in both directions at once.
func TestLabSharedUMEMForward(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 1})
	in0, out0 := l.Netchan[0], l.Netchan[1]
	noKernelIPv4(t, in0.Iface)
	noKernelIPv4(t, out0.Iface)
	eps := []lab.Endpoint{in0, out0}
	cross := func(int) *pipelines.Pipeline {
		return &pipelines.Pipeline{Stages: []pipelines.Stage{pipelines.Func("cross", func(p *pipelines.Packet, d []byte) {
			out := 1 - int(p.InIf)
			copy(d[0:6], eps[out].Peer.MAC)
			copy(d[6:12], eps[out].MAC)
			p.Verdict, p.OutIf = pipelines.Transmit, uint8(out)
		})}}
	}
	in := start(t, netchan.Config{Interfaces: []string{in0.Iface, out0.Iface}, Queues: []int{0}, XDPMode: xdpprog.ModeNative, Debug: true},
		netchan.App{Name: "cross", Claims: []claim.Rule{claim.All()}, NewPipeline: cross})
	exe, _ := os.Executable()
	const count = 3000
	flow := func(from, to lab.Endpoint, id uint32) trafficgen.Config {
		return trafficgen.Config{Iface: from.Peer.Iface, DstMAC: from.MAC, Src: from.Peer.Addr.Addr(), Dst: to.Peer.Addr.Addr(),
			SrcPort: 7000, DstPort: 9, Flows: 3, Size: 200, Count: count, Rate: 20000, RunID: id, Wait: 10 * time.Second}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type job struct {
		recv, send trafficgen.Config
		recvNS     string
		sendNS     string
	}
	var jobs []job
	for i, dir := range [][2]lab.Endpoint{{in0, out0}, {out0, in0}} {
		s := flow(dir[0], dir[1], uint32(200+i))
		r := s
		r.Iface, r.Receive = dir[1].Peer.Iface, true
		jobs = append(jobs, job{recv: r, send: s, recvNS: dir[1].Peer.NS, sendNS: dir[0].Peer.NS})
	}
	results := make([]trafficgen.Result, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		rc := trafficgen.Command(ctx, j.recvNS, []string{exe}, j.recv)
		stderr, _ := rc.StderrPipe()
		var out strings.Builder
		rc.Stdout = &out
		if err := rc.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		n, _ := stderr.Read(buf) // "trafficgen: listening"
		if !strings.Contains(string(buf[:n]), "listening") {
			t.Fatalf("receiver: %q", buf[:n])
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rc.Wait()
			results[i], _ = trafficgen.Decode([]byte(out.String()))
		}(i)
	}
	var sendWG sync.WaitGroup
	for _, j := range jobs {
		sendWG.Add(1)
		go func(j job) {
			defer sendWG.Done()
			if out, err := trafficgen.Command(ctx, j.sendNS, []string{exe}, j.send).CombinedOutput(); err != nil {
				t.Errorf("sender: %v: %s", err, out)
			}
		}(j)
	}
	sendWG.Wait()
	wg.Wait()
	snap := in.Snapshot()
	if err := in.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for i, r := range results {
		if r.Received != count || r.Mismatched != 0 {
			t.Errorf("direction %d: %d of %d forwarded intact, %d mismatched", i, r.Received, count, r.Mismatched)
		}
	}
	if snap[0].RxPackets != 2*count || snap[0].TxPackets != 2*count || snap[0].HandoffCopies != 0 {
		t.Errorf("shard: rx %d tx %d copies %d; want %d, %d, 0", snap[0].RxPackets, snap[0].TxPackets, snap[0].HandoffCopies, 2*count, 2*count)
	}
}
