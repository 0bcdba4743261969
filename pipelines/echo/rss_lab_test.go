package echo_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/stack"
)

// handoffs sums the packets the shards handed to other shards.
func handoffs(in *netchan.Instance) (n uint64) {
	for _, s := range in.Snapshot() {
		n += s.HandoffOut
	}
	return n
}

// rssRun starts the echo stack with the lab's RSS as its owner function on a 2-queue lab with
// the given emulation, and runs TCP transfers of size bytes each way, both as the kernel's
// server (netchan dials) and as its client (netchan listens). It returns the hand-offs counted
// during the transfers and how many packets each shard received.
func rssRun(t *testing.T, emulation lab.RSS, size int) (uint64, []uint64) {
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 2, RSS: emulation})
	ep := l.Netchan[0]
	peer := ep.Peer
	noKernelIPv4(t, ep.Iface)
	e, in := startEchoSpec(t, ep, stack.Config{}, func(e *echo.Echo) pipelines.App {
		e.RSS = func(a pipelines.Attached) (*pipelines.RSS, error) {
			return pipelines.NewRSS(pipelines.MicrosoftKey[:], pipelines.DefaultRETA(2), a.Queues, true, "the lab's emulation")
		}
		return e.App()
	})
	if len(in.Queues()) != 2 {
		t.Fatalf("queues %v: want two shards", in.Queues())
	}
	serveXfer(t, e, 5001)
	ours := ep.Addr.Addr().String()
	before := handoffs(in)
	const conns = 4
	for i := 0; i < conns; i++ {
		runChild(t, peer.NS, 2*time.Minute, "xferclient", ours+":5001", "U", strconv.Itoa(size))
		runChild(t, peer.NS, 2*time.Minute, "xferclient", ours+":5001", "D", strconv.Itoa(size))
	}
	srv := startKernelServer(t, peer.NS, peer.Addr.Addr().String()+":6001", 2*conns)
	to := peer.Addr.Addr().String() + ":6001"
	for i := 0; i < conns; i++ {
		dialXfer(t, e, to, 'U', size, time.Minute)
		dialXfer(t, e, to, 'D', size, time.Minute)
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("kernel server: %v", err)
	}
	var rx []uint64
	for _, s := range in.Snapshot() {
		rx = append(rx, s.RxPackets)
	}
	return handoffs(in) - before, rx
}

// TestLabRSS: on a lab whose peer steers flows with the Toeplitz hash as an RSS NIC would,
// with that hash as the owner function, TCP connections netchan dials and connections the
// kernel opens to netchan's listener move 10 MB each way byte-exact with no packet handed
// between the two shards (Dial picked source ports whose replies land on the dialling shard);
// without the emulation, the same owner function meets packets on the wrong queue and hands
// them off, so the check can fail.
func TestLabRSS(t *testing.T) {
	labtest.RequireRoot(t)
	size := 10 << 20
	t.Run("emulated", func(t *testing.T) {
		n, rx := rssRun(t, lab.RSSMicrosoft, size)
		t.Logf("hand-offs %d; packets received per shard %v", n, rx)
		if n != 0 {
			t.Errorf("%d packets handed off with the NIC's hash as the owner function: want 0", n)
		}
		if rx[0] == 0 || rx[1] == 0 {
			t.Errorf("packets per shard %v: both shards should carry connections", rx)
		}
	})
	t.Run("not-emulated", func(t *testing.T) {
		n, rx := rssRun(t, lab.RSSOff, 1<<20)
		t.Logf("hand-offs %d; packets received per shard %v", n, rx)
		if n == 0 {
			t.Errorf("no hand-offs without the emulation: the check above could not fail")
		}
	})
}
