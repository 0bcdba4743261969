package pipelines

import (
	"encoding/binary"

	"github.com/netchan/netchan/stack/header"
)

// OwnerFunc names the shard (0..shards-1) that owns a packet's flow, from the packet's bytes;
// -1 means "whichever shard received it". It runs on every received packet, so it must be cheap
// and allocation-free. A nil OwnerFunc means no hand-off: each shard owns what its queue gets.
type OwnerFunc func(data []byte, shards int) int

func mix32(x uint32) uint32 {
	x ^= x >> 16
	x *= 0x7feb352d
	x ^= x >> 15
	x *= 0x846ca68b
	x ^= x >> 16
	return x
}

// OwnerBySource assigns a flow by its IPv4 source address, so every packet of one inside host
// lands at one shard whatever queue it arrives on (what NAT needs for endpoint-independent
// mapping). Non-IPv4 stays where it arrived.
func OwnerBySource(data []byte, shards int) int {
	ip, ok := header.IPv4InFrame(data)
	if !ok || shards <= 1 {
		return -1
	}
	return int(mix32(binary.BigEndian.Uint32(ip[12:16])) % uint32(shards))
}

// FlowHash is a symmetric hash of the IPv4 addresses and, for TCP and UDP, ports: both
// directions of a flow get the same value. ok is false for frames that are not IPv4.
func FlowHash(data []byte) (h uint32, ok bool) {
	ip, ok := header.IPv4InFrame(data)
	if !ok {
		return 0, false
	}
	a := binary.BigEndian.Uint32(ip[12:16])
	b := binary.BigEndian.Uint32(ip[16:20])
	proto := ip.Protocol()
	h = (a ^ b) + uint32(proto)
	if sp, dp, ok := ip.Ports(); ok && (proto == header.ProtoTCP || proto == header.ProtoUDP) {
		h += uint32(sp ^ dp)
		h ^= uint32(sp)*uint32(dp) + (uint32(sp)+uint32(dp))<<16
	}
	return mix32(h), true
}

// OwnerByFlow assigns a flow by FlowHash, so both directions of a flow meet at one shard.
func OwnerByFlow(data []byte, shards int) int {
	h, ok := FlowHash(data)
	if !ok || shards <= 1 {
		return -1
	}
	return int(h % uint32(shards))
}
