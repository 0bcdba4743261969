package capture

import (
	"sync/atomic"

	"github.com/netchan/netchan/pipelines"
)

// Header is what a record says about one packet besides its bytes.
type Header struct {
	Nanos   int64  // wall clock, Unix nanoseconds, when the tap saw it
	ID      uint64 // trace: the packet's id (see Tap); 0 in a capture
	Len     uint32 // the packet's length (the record may hold fewer bytes)
	Shard   uint8
	Stage   uint8 // index in the shard's stages; len(stages) is the local stack
	Point   pipelines.TapPoint
	Verdict pipelines.Verdict
	Reason  pipelines.DropReason
	By      uint8
	ToShard uint8
	InIf    uint8
	OutIf   uint8
}

// MaxIfaces is how many interfaces the per-interface counters tell apart; packets of higher
// interface indices are counted under the last.
const MaxIfaces = 16

func ifIndex(i uint8) int {
	if int(i) >= MaxIfaces {
		return MaxIfaces - 1
	}
	return int(i)
}

type slot struct {
	h    Header
	data []byte // len: the bytes kept; cap: the slot's size
}

// Ring is a bounded single-producer, single-consumer ring of fixed-size slots: the shard's
// tap copies a packet into the next free slot (or counts it dropped when none is free) and a
// goroutine drains them. Put never blocks and never allocates.
type Ring struct {
	slots []slot
	mask  uint64
	head  atomic.Uint64 // next slot the producer writes; written by the producer only
	tail  atomic.Uint64 // next slot the consumer reads; written by the consumer only
	// Per interface: packets the tap selected, and those of them it could not keep.
	Matched [MaxIfaces]atomic.Uint64
	Dropped [MaxIfaces]atomic.Uint64
}

// NewRing makes a ring of n slots (rounded up to a power of two) of snap bytes each.
func NewRing(n, snap int) *Ring {
	size := 1
	for size < n {
		size <<= 1
	}
	buf := make([]byte, size*snap)
	r := &Ring{slots: make([]slot, size), mask: uint64(size - 1)}
	for i := range r.slots {
		r.slots[i].data = buf[i*snap : i*snap : (i+1)*snap]
	}
	return r
}

// Put copies a packet into the ring, up to the slot size; it reports false (and counts the
// packet dropped) when the ring is full.
func (r *Ring) Put(h *Header, data []byte) bool {
	i := ifIndex(h.InIf)
	r.Matched[i].Add(1)
	head := r.head.Load()
	if head-r.tail.Load() > r.mask {
		r.Dropped[i].Add(1)
		return false
	}
	s := &r.slots[head&r.mask]
	s.h = *h
	s.data = s.data[:copy(s.data[:cap(s.data)], data)]
	r.head.Store(head + 1)
	return true
}

// Drain hands every record in the ring to fn, oldest first, and frees its slot after fn
// returns (fn must not keep data); it returns how many it handed.
func (r *Ring) Drain(fn func(h *Header, data []byte)) int {
	tail, head := r.tail.Load(), r.head.Load()
	for t := tail; t != head; t++ {
		s := &r.slots[t&r.mask]
		fn(&s.h, s.data)
		r.tail.Store(t + 1)
	}
	return int(head - tail)
}

// Len is how many records wait in the ring.
func (r *Ring) Len() int { return int(r.head.Load() - r.tail.Load()) }
