package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/stack/header"
)

func TestMain(m *testing.M) {
	trafficgen.RunChildIfAsked()
	labtest.SweepStale()
	os.Exit(m.Run())
}

// TestLabPong runs the example's App in a lab with real traffic from the peer's namespace:
// UDP to 9999 comes back, every frame byte for byte the reflection of one sent; UDP to 9998,
// also claimed here so that it reaches the stage, is dropped as not-pong; UDP to 9997,
// claimed by nobody, stays with the kernel, whose socket on this side receives every datagram.
func TestLabPong(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]

	// Give the kernel an address on netchan's interface (a /32: no route for other labs to
	// trip over) and a socket on 9997 that counts what it gets.
	kaddr := netip.PrefixFrom(ep.Addr.Addr(), 32)
	link, err := netlink.LinkByName(ep.Iface)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: kaddr.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatalf("ip addr add %v dev %s: %v", kaddr, ep.Iface, err)
	}
	sock, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(kaddr.Addr(), 9997)))
	if err != nil {
		t.Fatalf("kernel socket on %v:9997: %v", kaddr.Addr(), err)
	}
	defer sock.Close()
	var kernelGot atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := sock.Read(buf); err != nil {
				return // closed
			}
			kernelGot.Add(1)
		}
	}()

	a := app(9999)
	a.Claims = append(a.Claims, claim.Ports(header.ProtoUDP, netip.Addr{}, 9998, 9998)) // let 9998 reach the stage
	in, err := netchan.Start(netchan.Config{Interfaces: []string{ep.Iface}}, a)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	exe, _ := os.Executable()
	send := func(port uint16, id uint32) trafficgen.Result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg := trafficgen.Config{Iface: ep.Peer.Iface, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
			SrcPort: 5000, DstPort: port, Flows: 4, Size: 200, Count: 500, Rate: 20000, RunID: id, Verify: true, Wait: time.Second}
		out, err := trafficgen.Command(ctx, ep.Peer.NS, []string{exe}, cfg).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("sender to port %d: %v\n%s", port, err, ee.Stderr)
			}
			t.Fatalf("sender to port %d: %v", port, err)
		}
		r, err := trafficgen.Decode(out)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := send(9999, 1); r.Sent != 500 || r.Received != 500 || r.Mismatched != 0 || r.Duplicates != 0 {
		t.Fatalf("port 9999: sent %d, got back %d intact, %d mismatched, %d duplicates; want 500 pongs of 500",
			r.Sent, r.Received, r.Mismatched, r.Duplicates)
	}
	if r := send(9998, 2); r.Sent != 500 || r.Received != 0 {
		t.Fatalf("port 9998: sent %d, %d came back; want none back", r.Sent, r.Received)
	}
	if r := send(9997, 3); r.Sent != 500 || r.Received != 0 {
		t.Fatalf("port 9997: sent %d, %d came back; want none back", r.Sent, r.Received)
	}
	for deadline := time.Now().Add(3 * time.Second); kernelGot.Load() < 500 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := kernelGot.Load(); n != 500 {
		t.Fatalf("the kernel's socket on %v:9997 got %d datagrams of 500: unclaimed traffic must stay with the kernel", kaddr.Addr(), n)
	}
	snap := in.Snapshot()
	if len(snap) != 1 || snap[0].RxPackets != 1000 || snap[0].TxPackets != 500 || snap[0].Drops["not-pong"] != 500 || snap[0].DropsTotal != 500 {
		t.Fatalf("netchan's counters %+v; want rx 1000 (9999 and 9998; 9997 is the kernel's), tx 500, 500 dropped as not-pong", snap)
	}
	if st := in.XDPStats(); len(st) != 1 || st[0].Port != 1000 || st[0].Passed < 500 {
		t.Fatalf("XDP program: %+v; want 1000 claimed by the port rules and at least 500 passed to the kernel", st)
	}
	if err := in.Stop(); err != nil {
		t.Fatal(err)
	}
}
