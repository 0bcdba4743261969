package nat

import "math/bits"

// hostCounts counts the dynamic mappings of each inside host at its shard, for
// Config.MaxMappingsPerHost: an open-addressing table with linear probing over a power-of-two
// array of at least twice as many slots as the shard has mappings, so it is never more than
// half full. It holds no pointers and never allocates after init; a host leaves the table when
// its count drops to zero (backward-shift deletion, no tombstones). Only its shard touches it.
type hostCounts struct {
	slots []hostSlot
	shift uint8
}

type hostSlot struct {
	ip uint32 // the host's address
	n  uint32 // its mappings; 0: the slot is free
}

// init sizes the table for up to maxHosts hosts.
func (h *hostCounts) init(maxHosts int) {
	size := max(1<<bits.Len(uint(2*max(maxHosts, 1)-1)), 16)
	h.slots = make([]hostSlot, size)
	h.shift = uint8(32 - bits.TrailingZeros(uint(size)))
}

func (h *hostCounts) home(ip uint32) int { return int((ip * 0x9e3779b1) >> h.shift) }

// find is the slot of ip, or the free slot where it would go.
func (h *hostCounts) find(ip uint32) int {
	mask := len(h.slots) - 1
	i := h.home(ip)
	for h.slots[i].n != 0 && h.slots[i].ip != ip {
		i = (i + 1) & mask
	}
	return i
}

// get is ip's count.
func (h *hostCounts) get(ip uint32) uint32 { return h.slots[h.find(ip)].n }

// inc counts one more mapping of ip.
func (h *hostCounts) inc(ip uint32) {
	i := h.find(ip)
	h.slots[i].ip = ip
	h.slots[i].n++
}

// dec counts one mapping of ip less; ip must have one.
func (h *hostCounts) dec(ip uint32) {
	i := h.find(ip)
	if h.slots[i].n == 0 {
		return
	}
	if h.slots[i].n--; h.slots[i].n > 0 {
		return
	}
	// Knuth's algorithm R: move later entries of the probe run into the hole when the hole
	// lies between their home slot and where they are.
	mask := len(h.slots) - 1
	j := i
	for {
		j = (j + 1) & mask
		if h.slots[j].n == 0 {
			break
		}
		k := h.home(h.slots[j].ip)
		if (i <= j && i < k && k <= j) || (i > j && (i < k || k <= j)) {
			continue // k is cyclically in (i, j]: the entry stays
		}
		h.slots[i] = h.slots[j]
		i = j
	}
	h.slots[i] = hostSlot{}
}

// hosts is the number of hosts counted (for tests).
func (h *hostCounts) hosts() int {
	c := 0
	for _, s := range h.slots {
		if s.n != 0 {
			c++
		}
	}
	return c
}
