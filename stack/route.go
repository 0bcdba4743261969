package stack

import (
	"fmt"
	"net/netip"
	"sort"
)

// Route sends traffic for Prefix out of interface Iface, to Via (a gateway) or, for a
// connected route, straight to the destination.
type Route struct {
	Prefix netip.Prefix `json:"prefix"`
	Via    netip.Addr   `json:"via,omitempty"`
	Iface  int          `json:"iface"`
	// Src is the address we send from over this route.
	Src netip.Addr `json:"src"`
}

// RouteTable is a longest-prefix-match table; it is built once and read by every shard.
type RouteTable struct {
	routes []route // longest prefix first
}

type route struct {
	Route
	net, mask uint32
}

// NewRouteTable builds the table from interface addresses (connected routes), static routes
// and a default gateway. A route via a gateway takes the interface whose connected prefix
// holds the gateway.
func NewRouteTable(ifaceAddrs [][]netip.Prefix, static []Route, gateway netip.Addr) (*RouteTable, error) {
	t := &RouteTable{}
	for i, addrs := range ifaceAddrs {
		for _, a := range addrs {
			t.add(Route{Prefix: a.Masked(), Iface: i, Src: a.Addr()})
		}
	}
	connected := append([]route(nil), t.routes...)
	viaRoute := func(r Route) (Route, error) {
		for _, c := range connected {
			if c.Prefix.Contains(r.Via) {
				r.Iface, r.Src = c.Iface, c.Src
				return r, nil
			}
		}
		return r, fmt.Errorf("route %v via %v: no interface address is on the gateway's network; add an address in its prefix", r.Prefix, r.Via)
	}
	for _, r := range static {
		if !r.Prefix.Addr().Is4() {
			return nil, fmt.Errorf("route %v: IPv4 only", r.Prefix)
		}
		if r.Via.IsValid() {
			var err error
			if r, err = viaRoute(r); err != nil {
				return nil, err
			}
		} else if !r.Src.IsValid() {
			return nil, fmt.Errorf("route %v: give a gateway (via)", r.Prefix)
		}
		t.add(r)
	}
	if gateway.IsValid() {
		r, err := viaRoute(Route{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Via: gateway})
		if err != nil {
			return nil, err
		}
		t.add(r)
	}
	return t, nil
}

func (t *RouteTable) add(r Route) {
	r.Prefix = r.Prefix.Masked()
	a := r.Prefix.Addr().As4()
	bits := r.Prefix.Bits()
	var mask uint32
	if bits > 0 {
		mask = ^uint32(0) << (32 - bits)
	}
	t.routes = append(t.routes, route{Route: r, net: ipKey(a), mask: mask})
	sort.SliceStable(t.routes, func(i, j int) bool { return t.routes[i].Prefix.Bits() > t.routes[j].Prefix.Bits() })
}

// Lookup finds the route for dst: the interface, the next hop (the gateway, or dst itself on a
// connected route) and our source address. Allocation-free.
func (t *RouteTable) Lookup(dst [4]byte) (iface int, nextHop [4]byte, src [4]byte, ok bool) {
	k := ipKey(dst)
	for i := range t.routes {
		r := &t.routes[i]
		if k&r.mask == r.net {
			nextHop = dst
			if r.Via.IsValid() {
				nextHop = r.Via.As4()
			}
			return r.Iface, nextHop, r.Src.As4(), true
		}
	}
	return 0, nextHop, src, false
}

// Routes lists the table, longest prefix first.
func (t *RouteTable) Routes() []Route {
	out := make([]Route, len(t.routes))
	for i, r := range t.routes {
		out[i] = r.Route
	}
	return out
}
