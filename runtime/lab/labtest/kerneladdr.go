package labtest

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// KernelAddr gives the kernel IPv4 address p on iface (in the test's own namespace, such as a
// lab's netchan end, which the lab leaves without one) and removes it when the test ends.
func KernelAddr(t testing.TB, iface string, p netip.Prefix) {
	t.Helper()
	link, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	if err := netlink.AddrAdd(link, a); err != nil {
		t.Fatalf("ip addr add %v dev %s: %v", p, iface, err)
	}
	t.Cleanup(func() { netlink.AddrDel(link, a) })
}
