package stack

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Neighbour states.
const (
	neighEmpty uint32 = iota
	neighDynamic
	neighStatic
)

// ReachableTime is how long a learned neighbour entry is used before it is resolved again.
const ReachableTime = 5 * time.Minute

// neighSlot is one entry. Readers never lock: a writer makes seq odd, writes, makes it even;
// a reader retries while seq is odd or changed under it.
type neighSlot struct {
	seq     atomic.Uint32
	ip      atomic.Uint32
	mac     atomic.Uint64
	state   atomic.Uint32
	updated atomic.Int64
}

// NeighborTable maps next-hop IPv4 addresses to MAC addresses for one interface. Every shard
// reads it and writes it (ARP replies arrive on any queue); lookups take no lock.
type NeighborTable struct {
	mu    sync.Mutex
	slots []neighSlot
	mask  uint32
}

// Neighbor is one entry, for status and tests.
type Neighbor struct {
	IP     netip.Addr `json:"ip"`
	MAC    string     `json:"mac"`
	Static bool       `json:"static"`
}

const neighProbe = 8

// NewNeighborTable makes a table of size slots (rounded up to a power of two, at least 16).
func NewNeighborTable(size int) *NeighborTable {
	n := 16
	for n < size {
		n <<= 1
	}
	return &NeighborTable{slots: make([]neighSlot, n), mask: uint32(n - 1)}
}

func ipKey(ip [4]byte) uint32 {
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func slotHash(k uint32) uint32 { return (k * 0x9e3779b1) >> 7 }

func macBits(m [6]byte) uint64 {
	return uint64(m[0])<<40 | uint64(m[1])<<32 | uint64(m[2])<<24 | uint64(m[3])<<16 | uint64(m[4])<<8 | uint64(m[5])
}

func bitsMAC(v uint64) (m [6]byte) {
	for i := 5; i >= 0; i-- {
		m[i] = byte(v)
		v >>= 8
	}
	return m
}

// Lookup returns the MAC address of ip if it is known and fresh at now (stage.Now nanoseconds).
func (t *NeighborTable) Lookup(ip [4]byte, now int64) ([6]byte, bool) {
	k := ipKey(ip)
	h := slotHash(k)
	for i := uint32(0); i < neighProbe; i++ {
		s := &t.slots[(h+i)&t.mask]
		for {
			seq := s.seq.Load()
			if seq&1 != 0 {
				continue
			}
			sip, mac, st, upd := s.ip.Load(), s.mac.Load(), s.state.Load(), s.updated.Load()
			if s.seq.Load() != seq {
				continue
			}
			if st == neighEmpty || sip != k {
				break
			}
			if st == neighDynamic && now-upd > int64(ReachableTime) {
				return [6]byte{}, false
			}
			return bitsMAC(mac), true
		}
	}
	return [6]byte{}, false
}

// NeighborUpdate is what Update did with an entry.
type NeighborUpdate uint8

const (
	// NeighborStored: the entry is in the table (new in a free slot, or refreshed).
	NeighborStored NeighborUpdate = iota
	// NeighborEvicted: the entry is in the table, in place of the oldest learned entry of
	// its probe window, which held no free slot.
	NeighborEvicted
	// NeighborPinned: not stored, a static entry holds the address.
	NeighborPinned
	// NeighborFull: not stored, the probe window holds only static entries.
	NeighborFull
)

// Update records ip → mac. A static entry is never replaced by a learned one. When the probe
// window (8 slots from the address's hash) is full, the oldest dynamic entry in it gives way;
// when it holds only static entries, the update is refused.
func (t *NeighborTable) Update(ip [4]byte, mac [6]byte, now int64, static bool) NeighborUpdate {
	k := ipKey(ip)
	h := slotHash(k)
	t.mu.Lock()
	defer t.mu.Unlock()
	var target *neighSlot
	var oldest *neighSlot
	for i := uint32(0); i < neighProbe; i++ {
		s := &t.slots[(h+i)&t.mask]
		st := s.state.Load()
		if st != neighEmpty && s.ip.Load() == k {
			if st == neighStatic && !static {
				return NeighborPinned
			}
			target = s
			break
		}
		if st == neighEmpty && target == nil {
			target = s
		}
		if st == neighDynamic && (oldest == nil || s.updated.Load() < oldest.updated.Load()) {
			oldest = s
		}
	}
	res := NeighborStored
	if target == nil {
		target, res = oldest, NeighborEvicted
	}
	if target == nil {
		return NeighborFull
	}
	state := neighDynamic
	if static {
		state = neighStatic
	}
	target.seq.Add(1)
	target.ip.Store(k)
	target.mac.Store(macBits(mac))
	target.state.Store(state)
	target.updated.Store(now)
	target.seq.Add(1)
	return res
}

// Known reports whether ip has an entry at all (fresh or not); ARP learns from a packet's
// sender only for neighbours already known or talking to us, as RFC 826 says.
func (t *NeighborTable) Known(ip [4]byte) bool {
	k := ipKey(ip)
	h := slotHash(k)
	for i := uint32(0); i < neighProbe; i++ {
		s := &t.slots[(h+i)&t.mask]
		if s.state.Load() != neighEmpty && s.ip.Load() == k {
			return true
		}
	}
	return false
}

// Entries lists the table.
func (t *NeighborTable) Entries() []Neighbor {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Neighbor
	for i := range t.slots {
		s := &t.slots[i]
		st := s.state.Load()
		if st == neighEmpty {
			continue
		}
		k := s.ip.Load()
		m := bitsMAC(s.mac.Load())
		out = append(out, Neighbor{IP: netip.AddrFrom4([4]byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}),
			MAC: macString(m), Static: st == neighStatic})
	}
	return out
}

func macString(m [6]byte) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, v := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[v>>4], hex[v&15])
	}
	return string(b)
}
