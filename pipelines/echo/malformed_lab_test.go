package echo_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/hostile"
	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/shards"
	"github.com/netchan/netchan/stack"
)

func init() { nschild.Register("rawframes", hostile.SendMain) }

// writeFrames writes frames to a file of the test's for rawframes (hostile.SendMain).
func writeFrames(t *testing.T, name string, frames ...[]byte) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if err := hostile.WriteFrames(file, frames...); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestLabMalformed sends hostile frames at netchan's echo host from a packet socket in the
// peer's namespace, many times over: netchan stays up, every frame that reached it is dropped
// with a named reason or answered (never left undecided), and it keeps serving ping and UDP echo.
func TestLabMalformed(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 1})
	ep := l.Netchan[0]
	peer := ep.Peer
	noKernelIPv4(t, ep.Iface)
	e, in := startEcho(t, ep, stack.Config{})
	_ = e
	frames := hostile.Frames(hostile.Target{SrcMAC: peer.MAC, DstMAC: ep.MAC, Src: peer.Addr.Addr(), Dst: ep.Addr.Addr(), Self: ep.Addr.Addr(), Port: 7})
	file := filepath.Join(t.TempDir(), "frames.hex")
	names, err := hostile.WriteFile(file, frames)
	if err != nil {
		t.Fatal(err)
	}
	ping(t, peer.NS, ep.Addr.Addr().String(), 2, 56) // ARP settled before counting
	before := shards.TrafficOf(in.Snapshot())
	const repeat = 200
	out := runChild(t, peer.NS, 2*time.Minute, "rawframes", peer.Iface, file, strconv.Itoa(repeat))
	t.Logf("sent %s frames (%d kinds × %d): %s", out, len(frames), repeat, strings.Join(names, ", "))
	deadline := time.Now().Add(5 * time.Second)
	d := shards.TrafficOf(in.Snapshot()).Since(before)
	for time.Now().Before(deadline) && d.RxPackets < uint64(len(frames)*repeat)/2 {
		time.Sleep(100 * time.Millisecond)
		d = shards.TrafficOf(in.Snapshot()).Since(before)
	}
	rx, dropped, drops := d.RxPackets, d.DropsTotal, d.Drops
	t.Logf("netchan received %d of them (the XDP program passes what it cannot parse to the kernel); dropped %d: %s; transmitted %d",
		rx, dropped, d.DropsString(), d.TxPackets)
	if rx == 0 {
		t.Fatal("none of the malformed frames reached netchan: the test tests nothing")
	}
	if drops["no-verdict"] > 0 {
		t.Errorf("%d frames were left undecided: every drop must have a reason", drops["no-verdict"])
	}
	if dropped == 0 {
		t.Error("no drops counted for malformed frames")
	}
	// Still serving.
	ping(t, peer.NS, ep.Addr.Addr().String(), 3, 56)
	res := runChild(t, peer.NS, time.Minute, "udpclient", ep.Addr.Addr().String()+":7", "200", "512")
	if !strings.Contains(res, `"OK":200`) {
		t.Errorf("UDP echo after the malformed frames: %s", res)
	}
}
