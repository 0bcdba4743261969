// Package header owns netchan's zero-copy views of packet headers (Ethernet,
// ARP, IPv4, ICMPv4, UDP, TCP and TCP options), their validation, and the
// Internet checksum with its incremental update. The stack, the NAT and the
// bundled pipelines read and write frames through it; it knows nothing about
// sockets, routes or state.
//
// A view is a named byte slice (Ethernet, IPv4, TCP, ...) that aliases the
// frame it was made from: nothing is copied, and a setter writes straight
// into the frame (in UMEM, on the data path). Data enters through a Parse
// function, which validates the bytes and returns the view cut to the
// header's own length (Ethernet padding after an IPv4 packet, a UDP datagram
// or an ARP message is cut off); it leaves through the accessors, setters and
// the Encode functions, which write a header into a buffer the caller owns.
//
// The rule is "parse once, then accessors cannot panic": after a Parse
// function has accepted a view, every accessor and setter on it is safe
// whatever the bytes say. A view made by converting a short slice by hand has
// no such promise. Setters change only their own field: the caller fixes the
// checksum afterwards, either in full (FixChecksum) or incrementally
// (UpdateChecksum16, UpdateChecksum32, as RFC 1624 describes).
//
// To find the IPv4 header in a frame without validating the whole packet (an
// owner function, a reflect or filter stage, a counter), use IPv4InFrame: one
// inlined check of the EtherType, version, IHL and header length, whose view
// answers the header fields, IsFirstFragment and Ports. ParseIPv4Header is the
// same check for an IPv4 header that does not sit in an Ethernet frame (the
// quote in an ICMP error).
//
// Parsers return a bool or, for IPv4, a small IPv4Error that names the
// reason, so that a stage can count drops by reason; nothing here returns an
// error value, logs or allocates on the data path. Addresses are net/netip
// values (which do not allocate for IPv4) with [4]byte accessors beside them
// for the hottest paths.
package header
