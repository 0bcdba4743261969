// Package spsc is netchan's bounded single-producer single-consumer ring, the lock-free queue
// between two goroutines that shards use for hand-offs and netchannels between a shard and a
// reader: one goroutine pushes, one pops, neither waits, and nothing is allocated after New.
package spsc

import "sync/atomic"

// Ring is a bounded single-producer single-consumer ring. Each side caches the other's index and
// refreshes it only when its cached view says full (producer) or empty (consumer).
type Ring[T any] struct {
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

func New[T any](size int) *Ring[T] {
	if size&(size-1) != 0 {
		panic("spsc: ring size must be a power of two")
	}
	return &Ring[T]{buf: make([]T, size), mask: uint32(size - 1)}
}

// Push writes as many of src as fit and returns the count; only the producer calls it.
func (r *Ring[T]) Push(src []T) int {
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

// Pop reads up to len(dst) entries and returns the count; only the consumer calls it.
func (r *Ring[T]) Pop(dst []T) int {
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

// Len is the number of entries in the ring, as seen by either side.
func (r *Ring[T]) Len() uint32 { return r.head.Load() - r.tail.Load() }

// Size is the ring's capacity.
func (r *Ring[T]) Size() int { return int(r.mask) + 1 }
