package afxdp_test

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/afxdp"
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

// TestLabNAPIID binds a busy-polling socket to a lab veth in native and in generic XDP mode,
// receives frames through it with a busy poll whenever the rx ring is empty, and reads the
// socket's NAPI id before and after: veth gives none in either mode, so busy polling on veth
// has nothing to run (the package doc). Receiving works as without busy polling.
func TestLabNAPIID(t *testing.T) {
	labtest.RequireRoot(t)
	for _, mode := range []xdpprog.Mode{xdpprog.ModeNative, xdpprog.ModeGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 1})
			ep := l.Netchan[0]
			ifi, err := net.InterfaceByName(ep.Iface)
			if err != nil {
				t.Fatal(err)
			}
			prog, err := xdpprog.Load(xdpprog.Options{Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			if err := prog.Claim("test", claim.All()); err != nil {
				t.Fatal(err)
			}
			if _, err := prog.Attach(ifi.Index, mode); err != nil {
				t.Fatal(err)
			}
			port, err := afxdp.Open(afxdp.Config{Queue: 0, Ifaces: []string{ep.Iface}, NumFrames: 1024, RingSize: 512,
				BusyPoll: afxdp.BusyPoll{On: true}, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			defer port.Close()
			link := port.Links[0]
			if !link.BusyPolling() || link.ZeroCopy {
				t.Fatalf("busy polling %v, zero-copy %v; want a busy-polling copy-mode socket (veth refuses zero-copy)", link.BusyPolling(), link.ZeroCopy)
			}
			if err := prog.RegisterSocket(0, link.FD()); err != nil {
				t.Fatal(err)
			}
			addrs := make([]uint64, 512)
			for i := range addrs {
				addrs[i] = uint64(i) * 2048
			}
			link.Fill(addrs)
			before, err := link.NAPIID()
			if err != nil {
				t.Fatal(err)
			}
			exe, _ := os.Executable()
			const count = 300
			cfg := trafficgen.Config{Iface: ep.Peer.Iface, Queue: 0, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
				SrcPort: 30000, DstPort: 9, Count: count, Rate: 3000, RunID: 7, Wait: 100 * time.Millisecond}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				out, err := trafficgen.Command(ctx, ep.Peer.NS, []string{exe}, cfg).CombinedOutput()
				if err != nil {
					t.Logf("sender: %s", out)
				}
				done <- err
			}()
			descs := make([]afxdp.Desc, 64)
			got, polls, afterPoll := 0, 0, 0
			deadline := time.Now().Add(20 * time.Second)
			for got < count && time.Now().Before(deadline) {
				n := link.Receive(descs)
				if n == 0 {
					link.BusyPoll()
					polls++
					n = link.Receive(descs)
					afterPoll += n
				}
				for i := range descs[:n] {
					addrs[i] = descs[i].Addr &^ 2047
				}
				link.Fill(addrs[:n])
				got += n
				if n == 0 {
					time.Sleep(50 * time.Microsecond)
				}
			}
			if err := <-done; err != nil {
				t.Fatalf("sender: %v", err)
			}
			after, err := link.NAPIID()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v: NAPI id %d before traffic, %d after %d frames; %d busy polls, %d frames on the rx ring right after one", mode, before, after, got, polls, afterPoll)
			if got != count {
				t.Errorf("received %d of %d frames", got, count)
			}
			if before != 0 || after != 0 {
				t.Errorf("veth in %v mode: NAPI id %d before traffic, %d after; the package doc says veth has none", mode, before, after)
			}
		})
	}
}
