package pipelines

import "encoding/binary"

// OwnerFunc names the shard (0..shards-1) that owns a packet's flow, from the packet's bytes;
// -1 means "whichever shard received it". It runs on every received packet, so it must be cheap
// and allocation-free. A nil OwnerFunc means no hand-off: each shard owns what its queue gets.
type OwnerFunc func(data []byte, shards int) int

// ipv4 returns the offset of the IPv4 header in an Ethernet frame and its length, or -1.
func ipv4(data []byte) (off, ihl int) {
	if len(data) < 14+20 || binary.BigEndian.Uint16(data[12:14]) != 0x0800 {
		return -1, 0
	}
	ihl = int(data[14]&0x0f) * 4
	if data[14]>>4 != 4 || ihl < 20 || len(data) < 14+ihl {
		return -1, 0
	}
	return 14, ihl
}

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
	off, _ := ipv4(data)
	if off < 0 || shards <= 1 {
		return -1
	}
	return int(mix32(binary.BigEndian.Uint32(data[off+12:off+16])) % uint32(shards))
}

// FlowHash is a symmetric hash of the IPv4 addresses and, for TCP and UDP, ports: both
// directions of a flow get the same value. ok is false for frames that are not IPv4.
func FlowHash(data []byte) (h uint32, ok bool) {
	off, ihl := ipv4(data)
	if off < 0 {
		return 0, false
	}
	a := binary.BigEndian.Uint32(data[off+12 : off+16])
	b := binary.BigEndian.Uint32(data[off+16 : off+20])
	proto := data[off+9]
	h = (a ^ b) + uint32(proto)
	fragOff := binary.BigEndian.Uint16(data[off+6:off+8]) & 0x1fff
	if (proto == 6 || proto == 17) && fragOff == 0 && len(data) >= off+ihl+4 {
		sp := binary.BigEndian.Uint16(data[off+ihl : off+ihl+2])
		dp := binary.BigEndian.Uint16(data[off+ihl+2 : off+ihl+4])
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
