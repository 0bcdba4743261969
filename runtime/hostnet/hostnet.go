// Package hostnet answers what the host kernel has on an address that a
// netchannel shares with it: the kernel's own sockets there, the ports the
// kernel must not hand out as ephemeral ports, and the next hop's MAC.
//
// A netchannel (pipelines/netchannel) takes single flows from an interface
// whose address the kernel keeps. Before it opens a flow spec it asks
// KernelSockets whether the kernel already has a socket on that address and
// port (and refuses the spec, naming the socket, if it has); it reserves the
// spec's local port with ReservePorts so that the kernel's own connections
// never pick it as an ephemeral port; and it finds the MAC to send to with
// NextHop and NeighborMAC, from the kernel's routing and neighbour tables.
//
// # What it owns
//
// Nothing in the kernel but the entries ReservePorts adds to
// /proc/sys/net/ipv4/ip_local_reserved_ports (removed again by release) and,
// through NeighborMAC, a resolution request for a neighbour entry, which the
// kernel then keeps and ages as it does any other. Everything else is read.
//
// # Which namespace
//
// Every function works in the network namespace of the calling thread: the
// process's, unless the caller locked its goroutine to a thread it moved into
// another namespace (runtime.LockOSThread and netns.Set), as the tests do.
// A reservation stays bound to the namespace it was made in: its release
// writes there, from whichever thread calls it.
//
// # Use
//
//	socks, err := hostnet.KernelSockets(hostnet.ProtoUDP, netip.MustParsePrefix("198.18.0.1/32"), 9999, false)
//	if len(socks) > 0 { return fmt.Errorf("port 9999 is in use by the kernel: %v", socks[0]) }
//	release, err := hostnet.ReservePorts(9999)
//	defer release()
//	ifindex, gw, err := hostnet.NextHop(remote)
//	mac, err := hostnet.NeighborMAC(ctx, ifindex, gw)
//
// The neighbour's ARP reply has to reach the kernel: an XDP program on the
// interface must pass ARP.
package hostnet
