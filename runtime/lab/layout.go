package lab

import (
	"fmt"
	"net/netip"
)

// A plan is everything a layout builds for one lab name. Up builds it, the
// state file records it, Down removes it.
type plan struct {
	namespaces   []string
	veths        []veth
	hosts        []Host     // Role, NS, Iface, Addr, Gateway (MAC filled in later)
	extraAddrs   []nsAddr   // kernel addresses that are not a Host's main address
	forward      []string   // namespaces with net.ipv4.ip_forward=1
	endpoints    []Endpoint // Iface, Addr (Index, MAC, Peer filled in later)
	endpointPeer []int      // index into hosts of each endpoint's peer
}

// A veth pair; an empty namespace means the root namespace (the one this
// process runs in). Every pair that touches the root namespace has its root
// end first.
type veth struct{ ns0, if0, ns1, if1 string }

type nsAddr struct {
	ns, iface string
	addr      netip.Prefix
}

// nsSuffixes lists every namespace suffix any layout uses; Down looks for
// these (and deletes one only if it carries this lab's mark).
var nsSuffixes = []string{"-peer", "-rtr", "-cli", "-srv"}

func planFor(name string, layout Layout) (plan, error) {
	pfx := netip.MustParsePrefix
	ip := netip.MustParseAddr
	n0, n1 := name+"n0", name+"n1"
	switch layout {
	case LayoutPair:
		peer := name + "-peer"
		return plan{
			namespaces: []string{peer},
			veths:      []veth{{"", n0, peer, name + "p0"}},
			hosts: []Host{
				{Role: "peer", NS: peer, Iface: name + "p0", Addr: pfx("198.18.0.2/24"), Gateway: ip("198.18.0.1")},
			},
			endpoints:    []Endpoint{{Iface: n0, Addr: pfx("198.18.0.1/24")}},
			endpointPeer: []int{0},
		}, nil
	case LayoutRouted:
		rtr, peer := name+"-rtr", name+"-peer"
		return plan{
			namespaces: []string{rtr, peer},
			veths: []veth{
				{"", n0, rtr, name + "r0"},
				{rtr, name + "r1", peer, name + "p0"},
			},
			hosts: []Host{
				{Role: "router", NS: rtr, Iface: name + "r0", Addr: pfx("198.18.0.254/24")},
				{Role: "peer", NS: peer, Iface: name + "p0", Addr: pfx("198.18.1.2/24"), Gateway: ip("198.18.1.254")},
			},
			extraAddrs:   []nsAddr{{rtr, name + "r1", pfx("198.18.1.254/24")}},
			forward:      []string{rtr},
			endpoints:    []Endpoint{{Iface: n0, Addr: pfx("198.18.0.1/24")}},
			endpointPeer: []int{0},
		}, nil
	case LayoutNAT:
		cli, srv := name+"-cli", name+"-srv"
		return plan{
			namespaces: []string{cli, srv},
			veths: []veth{
				{"", n0, cli, name + "c0"},
				{"", n1, srv, name + "s0"},
			},
			hosts: []Host{
				{Role: "client", NS: cli, Iface: name + "c0", Addr: pfx("198.18.1.2/24"), Gateway: ip("198.18.1.1")},
				{Role: "server", NS: srv, Iface: name + "s0", Addr: pfx("198.19.0.2/24"), Gateway: ip("198.19.0.1")},
			},
			endpoints: []Endpoint{
				{Iface: n0, Addr: pfx("198.18.1.1/24")}, // inside
				{Iface: n1, Addr: pfx("198.19.0.1/24")}, // outside
			},
			endpointPeer: []int{0, 1},
		}, nil
	}
	return plan{}, fmt.Errorf("lab: unknown layout %q (want %q, %q or %q)", layout, LayoutPair, LayoutRouted, LayoutNAT)
}

// rootLinks returns the names of the links the plan puts in the root namespace, for a while
// or for good: Up makes every veth end there (to set its offloads) before it moves the
// namespaced ends away, so all of them must be free there and Down must find any left behind.
func (p plan) rootLinks() []string {
	var names []string
	for _, v := range p.veths {
		names = append(names, v.if0, v.if1)
	}
	return names
}

// ends returns every veth end as (namespace, interface).
func (p plan) ends() [][2]string {
	var ends [][2]string
	for _, v := range p.veths {
		ends = append(ends, [2]string{v.ns0, v.if0}, [2]string{v.ns1, v.if1})
	}
	return ends
}
