// Package nat is netchan's sharded NAT44 (source NAT, masquerade): a pipeline stage on two
// interfaces, inside and outside, that rewrites TCP, UDP and ICMP query packets in place with
// incremental checksum updates (RFC 1624) and forwards each frame out of the other interface
// without copying it (the two interfaces' sockets share one UMEM per queue).
//
// # Sharding
//
// Each shard owns a slice of the external port range and its own flow tree of mappings. The
// owner of an inside flow is chosen from the inside source address alone, so one inside
// endpoint always maps at one shard and keeps one external port whatever queue its packets
// arrive on (endpoint-independent mapping, RFC 4787 REQ-1); return traffic is owned by the
// shard whose slice holds its destination port. Owner implements that rule, and the shards
// hand packets that arrive on the wrong queue to their owner. On a NIC with RSS the queue is
// chosen by the NIC's hash: with a symmetric key both directions of a flow land on one queue,
// but the owner here is a function of the inside address and of the external port, not of the
// 4-tuple, so hand-offs remain; steering rules (ethtool -N flow-type ... action Q) that send an
// external port range to its owner's queue remove them for return traffic.
//
// # Mappings
//
// A mapping is two entries of the shard's flow tree: (protocol, inside address, inside port)
// and (protocol, outside address, external port), both naming one slot of the shard's mapping
// arena. The slot remembers up to maxDests remote endpoints with their state, which serves
// address-and-port-dependent filtering (the default: an inbound packet must come from an
// endpoint the inside host sent to) and the timeouts: TCP established ≥ 2 h 4 min and
// transitory 4 min (RFC 5382), UDP 5 min (≥ 2 min, RFC 4787), ICMP 60 s. Expired mappings give
// their port back. The arena is bounded: when it is full new flows are dropped and counted, and
// existing ones keep working.
//
// # The NAT box as a host
//
// ARP, and ICMP echo to the NAT's own addresses, go to the shard's stack instance, which also
// resolves next hops (the neighbour and route tables) for forwarded frames and sends ICMP
// time-exceeded when a TTL runs out. ICMP errors from outside about a translated flow reach the
// inside host with the quoted header translated back.
package nat
