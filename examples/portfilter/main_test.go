package main

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

func TestMain(m *testing.M) {
	trafficgen.RunChildIfAsked()
	labtest.SweepStale()
	os.Exit(m.Run())
}

// TestLabPortFilter runs the example's pipeline in a lab: UDP to the port comes back reflected;
// UDP to port 8, also claimed here, reaches the custom stage and is dropped with its own reason;
// UDP to port 9, claimed by nobody, stays with the kernel.
func TestLabPortFilter(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	a := app(7)
	a.Claims = append(a.Claims, claim.Ports(17, netip.Addr{}, 8, 8)) // let port 8 reach the stage
	in, err := netchan.Start(netchan.Config{Interfaces: []string{ep.Iface}}, a)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	exe, _ := os.Executable()
	run := func(port uint16, id uint32) trafficgen.Result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg := trafficgen.Config{Iface: ep.Peer.Iface, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
			SrcPort: 5000, DstPort: port, Count: 500, Rate: 20000, RunID: id, Verify: true, Wait: time.Second}
		out, err := trafficgen.Command(ctx, ep.Peer.NS, []string{exe}, cfg).Output()
		if err != nil {
			t.Fatal(err)
		}
		r, err := trafficgen.Decode(out)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := run(7, 1); r.Received != r.Sent || r.Sent != 500 {
		t.Fatalf("port 7: sent %d, reflected %d", r.Sent, r.Received)
	}
	if r := run(8, 2); r.Received != 0 {
		t.Fatalf("port 8 was reflected (%d)", r.Received)
	}
	if r := run(9, 3); r.Received != 0 {
		t.Fatalf("port 9 was reflected (%d)", r.Received)
	}
	snap := in.Snapshot()
	if snap[0].RxPackets != 1000 || snap[0].TxPackets != 500 || snap[0].Drops["not-our-port"] != 500 {
		t.Fatalf("netchan saw rx %d tx %d drops %v; want 1000 in, 500 out, 500 not-our-port (port 9 stays with the kernel)",
			snap[0].RxPackets, snap[0].TxPackets, snap[0].Drops)
	}
	if err := in.Stop(); err != nil {
		t.Fatal(err)
	}
}
