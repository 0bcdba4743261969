package echo_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/pipelines/fault"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/stack"
)

// startFaultEcho runs the echo service set with a fault stage in front of the stack.
func startFaultEcho(t *testing.T, ep lab.Endpoint, cfg fault.Config, fc *fault.Counters) (*echo.Echo, *netchan.Instance) {
	t.Helper()
	return startEchoSpec(t, ep, stack.Config{}, func(e *echo.Echo) pipelines.App {
		sp, err := echo.WithFault(e.App(), cfg, fc)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	})
}

// drops sums one drop reason over the shards.
func drops(in *netchan.Instance, reason string) uint64 {
	var n uint64
	for _, s := range in.Snapshot() {
		n += s.Drops[reason]
	}
	return n
}

// TestLabFault: the reordering and duplication this kernel cannot make (no netem) come from
// netchan's fault stage in front of its stack, on two queues: the Linux kernel uploads and
// downloads 20 MB through it (SHA-256 checked, 60 s each), then netchan's client does the
// same against a kernel server. netchan's TCP must see the reordering and the duplicates
// (out-of-order and duplicate segments), and the stack must catch every corrupted packet by
// its checksum.
func TestLabFault(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 2})
	ep := l.Netchan[0]
	peer := ep.Peer
	noKernelIPv4(t, ep.Iface)
	cfg := fault.Config{Seed: 7, Drop: 0.005, Duplicate: 0.05, Reorder: 0.05, Corrupt: 0.001}
	var fc fault.Counters
	e, in := startFaultEcho(t, ep, cfg, &fc)
	serveXfer(t, e, 5001)
	ours := ep.Addr.Addr().String()
	const size = 20 << 20
	const limit = 60 * time.Second

	step := func(name string, fn func(t *testing.T) time.Duration) {
		t.Run(name, func(t *testing.T) {
			tcp0, f0 := e.Host.Stats().TCP, fc.Snapshot()
			d := fn(t)
			tcp1, f1 := e.Host.Stats().TCP, fc.Snapshot()
			if d > limit {
				t.Errorf("%d MB took %v, limit %v", size>>20, d, limit)
			}
			t.Logf("%d MB in %v (%.0f Mbit/s); faults: dropped %d, duplicated %d, reordered %d, corrupted %d, skipped %d",
				size>>20, d.Round(time.Millisecond), float64(size)*8/d.Seconds()/1e6, f1.Dropped-f0.Dropped,
				f1.Duplicated-f0.Duplicated, f1.Reordered-f0.Reordered, f1.Corrupted-f0.Corrupted, f1.Skipped-f0.Skipped)
			logTCPDelta(t, name, tcp0, tcp1)
		})
	}
	step("linux-client-upload", func(t *testing.T) time.Duration {
		return secs(runChild(t, peer.NS, limit+10*time.Second, "xferclient", ours+":5001", "U", strconv.Itoa(size)))
	})
	upload := e.Host.Stats().TCP
	step("linux-client-download", func(t *testing.T) time.Duration {
		return secs(runChild(t, peer.NS, limit+10*time.Second, "xferclient", ours+":5001", "D", strconv.Itoa(size)))
	})
	srv := startKernelServer(t, peer.NS, peer.Addr.Addr().String()+":6001", 2)
	to := peer.Addr.Addr().String() + ":6001"
	step("netchan-client-upload", func(t *testing.T) time.Duration { return dialXfer(t, e, to, 'U', size, limit+10*time.Second) })
	step("netchan-client-download", func(t *testing.T) time.Duration { return dialXfer(t, e, to, 'D', size, limit+10*time.Second) })
	if err := srv.Wait(); err != nil {
		t.Fatalf("kernel server: %v", err)
	}

	// Held packets go within MaxHold (1 ms) even when nothing else arrives.
	deadline := time.Now().Add(2 * time.Second)
	for fc.Snapshot().Held() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st, tcp := fc.Snapshot(), e.Host.Stats().TCP
	t.Logf("fault counters (%v): %+v", cfg, st)
	for _, sh := range in.Snapshot() {
		t.Logf("shard %d: rx %d, polls %d, %.1f packets per poll, handoff in %d out %d", sh.Shard, sh.RxPackets, sh.Polls, sh.PacketsPerPoll, sh.HandoffIn, sh.HandoffOut)
	}
	t.Logf("drops: fault-drop %d, l4-bad-checksum %d, ip-bad-checksum %d", drops(in, "fault-drop"),
		drops(in, "l4-bad-checksum"), drops(in, "ip-bad-checksum"))
	if st.Reordered == 0 || st.Duplicated == 0 || st.Dropped == 0 {
		t.Errorf("the fault stage did not reorder, duplicate and drop: %+v", st)
	}
	if st.Held() != 0 {
		t.Errorf("%d packets still held after the transfers", st.Held())
	}
	if upload.OOOSegments == 0 || upload.DupSegments == 0 {
		t.Errorf("netchan's TCP saw %d out-of-order and %d duplicate segments in the upload; want both > 0",
			upload.OOOSegments, upload.DupSegments)
	}
	if tcp.OOOSegments <= upload.OOOSegments {
		t.Errorf("no out-of-order segments in the netchan client's download (%d before, %d after)", upload.OOOSegments, tcp.OOOSegments)
	}
	if got := drops(in, "fault-drop"); got != st.Dropped {
		t.Errorf("shards counted %d fault-drop drops, the stage %d", got, st.Dropped)
	}
	if got := drops(in, "l4-bad-checksum") + drops(in, "ip-bad-checksum"); got < st.Corrupted {
		t.Errorf("%d corrupted packets, only %d dropped for a bad checksum", st.Corrupted, got)
	}
}
