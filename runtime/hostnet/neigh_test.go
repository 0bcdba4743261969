package hostnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestNeighborMAC(t *testing.T) {
	p := newPair(t)
	var before []netlink.Neigh
	in(t, p.a, func() error {
		var err error
		before, err = netlink.NeighList(p.ifindexA, netlink.FAMILY_V4)
		return err
	})
	if len(before) != 0 {
		t.Fatalf("a new namespace has neighbour entries: %v", before)
	}
	for i, what := range []string{"resolved by the kernel on request", "from the table"} {
		var mac net.HardwareAddr
		start := time.Now()
		in(t, p.a, func() error {
			var err error
			mac, err = NeighborMAC(ctxTimeout(t, 5*time.Second), p.ifindexA, p.addrB)
			return err
		})
		t.Logf("%s in %v: %v", what, time.Since(start), mac)
		if string(mac) != string(p.macB) {
			t.Errorf("call %d (%s): MAC %v, want %s's %v", i, what, mac, p.nameB, p.macB)
		}
	}
	in(t, p.a, func() error {
		n, err := findNeigh(p.ifindexA, netlink.FAMILY_V4, p.addrB)
		if err == nil && (n == nil || n.State&usableStates == 0) {
			t.Errorf("entry after resolving: %+v", n)
		}
		return err
	})
}

func TestNeighborMACNoAnswer(t *testing.T) {
	p := newPair(t)
	nobody := netip.MustParseAddr("198.18.0.99")

	// Default probes (3 × 1 s): the context ends first, the entry INCOMPLETE.
	var err error
	start := time.Now()
	in(t, p.a, func() error {
		_, err = NeighborMAC(ctxTimeout(t, 300*time.Millisecond), p.ifindexA, nobody)
		return nil
	})
	t.Logf("after %v: %v", time.Since(start), err)
	if err == nil || !strings.Contains(err.Error(), "198.18.0.99 on hna0") || !strings.Contains(err.Error(), "did not answer ARP") ||
		!strings.Contains(err.Error(), "INCOMPLETE") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want: neighbour 198.18.0.99 on hna0 did not answer ARP (INCOMPLETE), deadline exceeded", err)
	}

	// One probe 100 ms long: the kernel gives up (FAILED) before the context ends.
	setSysctl(t, p.a, "net/ipv4/neigh/hna0/mcast_solicit", "1")
	setSysctl(t, p.a, "net/ipv4/neigh/hna0/retrans_time_ms", "100")
	other := netip.MustParseAddr("198.18.0.98")
	start = time.Now()
	in(t, p.a, func() error {
		_, err = NeighborMAC(ctxTimeout(t, 5*time.Second), p.ifindexA, other)
		return nil
	})
	took := time.Since(start)
	t.Logf("after %v: %v", took, err)
	if err == nil || !strings.Contains(err.Error(), "did not answer ARP") || !strings.Contains(err.Error(), "FAILED") {
		t.Errorf("err = %v, want: did not answer ARP (kernel entry FAILED)", err)
	}
	if took > 3*time.Second {
		t.Errorf("took %v to see the entry fail", took)
	}
	// A FAILED entry is probed again on the next request, and fails again.
	start = time.Now()
	in(t, p.a, func() error {
		_, err = NeighborMAC(ctxTimeout(t, 5*time.Second), p.ifindexA, other)
		return nil
	})
	took = time.Since(start)
	t.Logf("second try after %v: %v", took, err)
	if err == nil || !strings.Contains(err.Error(), "FAILED") {
		t.Errorf("second try: err = %v, want FAILED", err)
	}
	if took < 50*time.Millisecond {
		t.Errorf("second try failed after %v, before a 100 ms probe could have: the entry was not probed again", took)
	}

	in(t, p.a, func() error {
		if _, err := NeighborMAC(context.Background(), 9999, other); err == nil || !strings.Contains(err.Error(), "interface index 9999") {
			t.Errorf("ifindex 9999: err = %v", err)
		}
		if _, err := NeighborMAC(context.Background(), p.ifindexA, netip.Addr{}); err == nil {
			t.Error("no address: no error")
		}
		return nil
	})
}

func TestNextHop(t *testing.T) {
	p := newPair(t)
	if err := p.ha.RouteAdd(&netlink.Route{LinkIndex: p.ifindexA,
		Dst: ipNet("198.19.0.0/24"), Gw: p.addrB.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	in(t, p.a, func() error {
		for _, c := range []struct{ dst, gw string }{
			{"198.18.0.2", "198.18.0.2"}, // on-link
			{"198.18.0.77", "198.18.0.77"},
			{"198.19.0.5", "198.18.0.2"}, // via a gateway
		} {
			ifindex, gw, err := NextHop(netip.MustParseAddr(c.dst))
			if err != nil || ifindex != p.ifindexA || gw != netip.MustParseAddr(c.gw) {
				t.Errorf("NextHop(%s) = %d, %v, %v; want %d, %s", c.dst, ifindex, gw, err, p.ifindexA, c.gw)
			}
		}
		for _, c := range []struct{ dst, want string }{
			{"198.18.0.1", "address of this host"},
			{"198.18.0.255", "broadcast"},
			{"203.0.113.1", "no route to 203.0.113.1"},
		} {
			_, _, err := NextHop(netip.MustParseAddr(c.dst))
			t.Logf("NextHop(%s): %v", c.dst, err)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("NextHop(%s): err = %v, want it to say %q", c.dst, err, c.want)
			}
		}
		return nil
	})
}
