package hostnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NextHop returns the interface and the next hop the kernel's routing would
// send a packet to dst through, in the calling thread's network namespace
// (netlink RTM_GETROUTE, as `ip route get DST`). gw is the route's gateway,
// or dst itself when dst is on-link. It fails for an address of this host
// and for a route that is not unicast (broadcast, unreachable, blackhole,
// prohibit).
func NextHop(dst netip.Addr) (ifindex int, gw netip.Addr, err error) {
	dst = dst.Unmap()
	if !dst.IsValid() {
		return 0, netip.Addr{}, errors.New("hostnet: NextHop: no address")
	}
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("hostnet: no route to %s: %w", dst, err)
	}
	if len(routes) == 0 {
		return 0, netip.Addr{}, fmt.Errorf("hostnet: no route to %s: the kernel answered with none", dst)
	}
	r := routes[0]
	switch r.Type {
	case unix.RTN_UNICAST:
	case unix.RTN_LOCAL:
		return 0, netip.Addr{}, fmt.Errorf("hostnet: %s is an address of this host: it has no next hop", dst)
	default:
		return 0, netip.Addr{}, fmt.Errorf("hostnet: the route to %s is not unicast (%s)", dst, routeTypeName(r.Type))
	}
	if r.LinkIndex <= 0 {
		return 0, netip.Addr{}, fmt.Errorf("hostnet: the route to %s has no output interface", dst)
	}
	gw = dst
	if a, ok := netip.AddrFromSlice(r.Gw); ok && len(r.Gw) > 0 {
		gw = a.Unmap()
	} else if via, ok := r.Via.(*netlink.Via); ok && via != nil {
		if a, ok := netip.AddrFromSlice(via.Addr); ok {
			gw = a.Unmap()
		}
	}
	return r.LinkIndex, gw, nil
}

func routeTypeName(t int) string {
	switch t {
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_ANYCAST:
		return "anycast"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_NAT:
		return "nat"
	}
	return fmt.Sprintf("type %d", t)
}

// usableStates are the neighbour states whose link-layer address can be used.
const usableStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT

// Poll intervals while NeighborMAC waits for the kernel to resolve: short
// first (an answer on a local link takes well under a millisecond), then
// backing off.
const (
	neighPollFirst = time.Millisecond
	neighPollMax   = 20 * time.Millisecond
)

// NeighborMAC returns the link-layer address of addr on interface ifindex
// from the kernel's neighbour table, in the calling thread's network
// namespace: the address of a REACHABLE, STALE, DELAY, PROBE or PERMANENT
// entry.
//
// If there is no such entry, it asks the kernel to resolve addr — an
// RTM_NEWNEIGH request with NTF_USE, as `ip neigh replace ADDR dev IF use`
// sends, which makes the kernel treat the entry as used by a packet: it
// creates it if needed and sends its own ARP requests (neighbour
// solicitations for IPv6), with its own retries and timers; this package
// sends nothing on the wire — and waits, polling the table, until the entry
// has an address, the kernel gives up on it (FAILED), or ctx ends. Give ctx
// a deadline: without one NeighborMAC can wait until the kernel's probes run
// out (net.ipv4.neigh.IF.mcast_solicit × retrans_time_ms, 3 × 1 s by
// default).
func NeighborMAC(ctx context.Context, ifindex int, addr netip.Addr) (net.HardwareAddr, error) {
	addr = addr.Unmap()
	if !addr.IsValid() || addr.IsUnspecified() || addr.IsMulticast() {
		return nil, fmt.Errorf("hostnet: NeighborMAC: %v is not a unicast address", addr)
	}
	family, proto := netlink.FAMILY_V4, "ARP"
	if addr.Is6() {
		family, proto = netlink.FAMILY_V6, "neighbour solicitation"
	}
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("hostnet: neighbour %s: interface index %d: %w", addr, ifindex, err)
	}
	dev := fmt.Sprintf("%s (ifindex %d)", link.Attrs().Name, ifindex)
	if link.Attrs().Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("hostnet: neighbour %s on %s: the interface is down", addr, dev)
	}
	n, err := findNeigh(ifindex, family, addr)
	if err != nil {
		return nil, fmt.Errorf("hostnet: neighbour %s on %s: %w", addr, dev, err)
	}
	if mac, ok := usable(n); ok {
		return mac, nil
	}
	if n != nil && n.State&netlink.NUD_NOARP != 0 {
		return nil, fmt.Errorf("hostnet: neighbour %s on %s: the interface does not use %s (NOARP entry)", addr, dev, proto)
	}
	resolve := func() error {
		err := netlink.NeighSet(&netlink.Neigh{LinkIndex: ifindex, Family: family, IP: addr.AsSlice(),
			State: netlink.NUD_NONE, Flags: netlink.NTF_USE})
		if err != nil {
			return fmt.Errorf("hostnet: neighbour %s on %s: asking the kernel to resolve it (RTM_NEWNEIGH with NTF_USE): %w", addr, dev, err)
		}
		return nil
	}
	if err := resolve(); err != nil {
		return nil, err
	}
	state := "none"
	for wait := neighPollFirst; ; wait = min(2*wait, neighPollMax) {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("hostnet: neighbour %s on %s did not answer %s (kernel entry %s): %w", addr, dev, proto, state, ctx.Err())
		case <-t.C:
		}
		n, err := findNeigh(ifindex, family, addr)
		if err != nil {
			return nil, fmt.Errorf("hostnet: neighbour %s on %s: %w", addr, dev, err)
		}
		if mac, ok := usable(n); ok {
			return mac, nil
		}
		switch {
		case n == nil || n.State == netlink.NUD_NONE:
			// Gone (garbage-collected or deleted) or not started: ask again.
			state = "none"
			if err := resolve(); err != nil {
				return nil, err
			}
		case n.State&netlink.NUD_FAILED != 0:
			return nil, fmt.Errorf("hostnet: neighbour %s on %s did not answer %s (kernel entry FAILED)", addr, dev, proto)
		default:
			state = neighStateName(n.State)
		}
	}
}

// findNeigh returns the neighbour entry for addr on ifindex, or nil.
func findNeigh(ifindex, family int, addr netip.Addr) (*netlink.Neigh, error) {
	var (
		list []netlink.Neigh
		err  error
	)
	for try := 0; try < dumpTries; try++ {
		if list, err = netlink.NeighList(ifindex, family); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading the neighbour table: %w", err)
	}
	want := addr.AsSlice()
	for i := range list {
		if list[i].LinkIndex == ifindex && bytes.Equal(ipBytes(list[i].IP, addr.Is4()), want) {
			return &list[i], nil
		}
	}
	return nil, nil
}

func ipBytes(ip net.IP, v4 bool) []byte {
	if v4 {
		return ip.To4()
	}
	return ip.To16()
}

func usable(n *netlink.Neigh) (net.HardwareAddr, bool) {
	if n == nil || n.State&usableStates == 0 || len(n.HardwareAddr) == 0 {
		return nil, false
	}
	zero := true
	for _, b := range n.HardwareAddr {
		zero = zero && b == 0
	}
	if zero {
		return nil, false
	}
	return append(net.HardwareAddr(nil), n.HardwareAddr...), true
}

func neighStateName(st int) string {
	switch st {
	case netlink.NUD_NONE:
		return "none"
	case netlink.NUD_INCOMPLETE:
		return "INCOMPLETE"
	case netlink.NUD_REACHABLE:
		return "REACHABLE"
	case netlink.NUD_STALE:
		return "STALE"
	case netlink.NUD_DELAY:
		return "DELAY"
	case netlink.NUD_PROBE:
		return "PROBE"
	case netlink.NUD_FAILED:
		return "FAILED"
	case netlink.NUD_NOARP:
		return "NOARP"
	case netlink.NUD_PERMANENT:
		return "PERMANENT"
	}
	return fmt.Sprintf("state %#x", st)
}
