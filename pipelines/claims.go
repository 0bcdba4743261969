package pipelines

import "net/netip"

// PortRange is an inclusive range of destination ports of one IP protocol (6 TCP, 17 UDP).
type PortRange struct {
	Proto  uint8
	Lo, Hi uint16
}

// Claims says which received packets the pipeline wants; the XDP program redirects those to
// netchan and passes everything else to the kernel on the same interface.
type Claims struct {
	AllIPv4   bool
	Prefixes  []netip.Prefix // IPv4 destination prefixes
	Protocols []uint8        // every IPv4 packet of these protocols
	Ports     []PortRange    // TCP/UDP destination port ranges
	ARP       []netip.Addr   // ARP packets whose target address is one of these
}

// Empty reports whether the claims select nothing.
func (c Claims) Empty() bool {
	return !c.AllIPv4 && len(c.Prefixes) == 0 && len(c.Protocols) == 0 && len(c.Ports) == 0 && len(c.ARP) == 0
}
