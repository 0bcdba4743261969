package shards

import "sync/atomic"

// spsc is a bounded single-producer single-consumer ring. Each side caches the other's index and
// refreshes it only when its cached view says full (producer) or empty (consumer).
type spsc[T any] struct {
	head     atomic.Uint32 // next slot to write; written by the producer
	_        [60]byte      // keep producer and consumer words on separate cache lines
	tail     atomic.Uint32 // next slot to read; written by the consumer
	_        [60]byte
	buf      []T
	mask     uint32
	pCache   uint32 // producer's view of tail
	cCache   uint32 // consumer's view of head
	pHead    uint32
	cTail    uint32
	_padding [32]byte
}

func newSPSC[T any](size int) *spsc[T] {
	if size&(size-1) != 0 {
		panic("shards: ring size must be a power of two")
	}
	return &spsc[T]{buf: make([]T, size), mask: uint32(size - 1)}
}

// push writes as many of src as fit and returns the count.
func (r *spsc[T]) push(src []T) int {
	size := r.mask + 1
	free := size - (r.pHead - r.pCache)
	if free < uint32(len(src)) {
		r.pCache = r.tail.Load()
		free = size - (r.pHead - r.pCache)
	}
	n := uint32(len(src))
	if n > free {
		n = free
	}
	for i := uint32(0); i < n; i++ {
		r.buf[(r.pHead+i)&r.mask] = src[i]
	}
	if n > 0 {
		r.pHead += n
		r.head.Store(r.pHead)
	}
	return int(n)
}

// pop reads up to len(dst) entries and returns the count.
func (r *spsc[T]) pop(dst []T) int {
	avail := r.cCache - r.cTail
	if avail == 0 {
		r.cCache = r.head.Load()
		avail = r.cCache - r.cTail
	}
	n := uint32(len(dst))
	if n > avail {
		n = avail
	}
	for i := uint32(0); i < n; i++ {
		dst[i] = r.buf[(r.cTail+i)&r.mask]
	}
	if n > 0 {
		r.cTail += n
		r.tail.Store(r.cTail)
	}
	return int(n)
}

// len is the number of entries in the ring, as seen by either side.
func (r *spsc[T]) len() uint32 { return r.head.Load() - r.tail.Load() }

// handed is a packet copied into a frame of the owner's UMEM.
type handed struct {
	addr uint64
	len  uint32
	hash uint32
	inIf uint8
}

// handoff joins a sending shard to an owner: the owner lends spare frames of its UMEM on spare,
// the sender returns them filled on pkts.
type handoff struct {
	pkts  *spsc[handed]
	spare *spsc[uint64]
}

const (
	handoffRing = 256
	spareTarget = 128
)

func newHandoff() *handoff {
	return &handoff{pkts: newSPSC[handed](handoffRing), spare: newSPSC[uint64](handoffRing)}
}
