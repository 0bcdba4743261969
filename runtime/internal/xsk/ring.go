// Package xsk owns the raw AF_XDP kernel interface: the four single-producer/single-consumer
// rings (fill, completion, rx, tx), socket creation, UMEM registration, mmap and bind. Every
// syscall and every use of unsafe for AF_XDP lives here (files ending in _unsafe.go), so the
// packages above it deal only in descriptors and byte slices.
//
// The rings follow Documentation/networking/af_xdp.rst: the producer writes entries, then
// publishes its index with a store; the consumer loads the producer index, reads entries, then
// publishes its own index. Each side keeps a cached copy of the other side's index and refreshes
// it only when the cached view says the ring is full (producer) or empty (consumer), so a batch
// costs at most one shared load and one shared store.
package xsk

import "sync/atomic"

// Desc is an rx or tx descriptor: a UMEM address (of the first byte of packet data) and length.
// Its layout matches struct xdp_desc.
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// ringIndex holds the shared producer/consumer words and the flags word of a ring.
type ringIndex struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	mask     uint32
	size     uint32
	// cachedProd and cachedCons are this side's view; only one side uses each ring view.
	cachedProd uint32
	cachedCons uint32
}

func newRingIndex(producer, consumer, flags *uint32, size uint32) ringIndex {
	if size == 0 || size&(size-1) != 0 {
		panic("xsk: ring size must be a power of two")
	}
	r := ringIndex{producer: producer, consumer: consumer, flags: flags, mask: size - 1, size: size}
	r.cachedProd = atomic.LoadUint32(producer)
	r.cachedCons = atomic.LoadUint32(consumer)
	return r
}

// free returns how many entries the producer may write, refreshing the consumer index only
// when the cached view has fewer than want free.
func (r *ringIndex) free(want uint32) uint32 {
	n := r.size - (r.cachedProd - r.cachedCons)
	if n >= want {
		return n
	}
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r.size - (r.cachedProd - r.cachedCons)
}

// avail returns how many entries the consumer may read, refreshing the producer index only
// when the cached view is empty.
func (r *ringIndex) avail() uint32 {
	n := r.cachedProd - r.cachedCons
	if n > 0 {
		return n
	}
	r.cachedProd = atomic.LoadUint32(r.producer)
	return r.cachedProd - r.cachedCons
}

// NeedWakeup reports whether the kernel asked to be kicked (XDP_RING_NEED_WAKEUP).
func (r *ringIndex) NeedWakeup() bool {
	return r.flags != nil && atomic.LoadUint32(r.flags)&1 != 0
}

// SetNeedWakeup sets or clears the flag; only the in-memory kernel stand-in uses it.
func (r *ringIndex) SetNeedWakeup(on bool) {
	if r.flags == nil {
		return
	}
	if on {
		atomic.StoreUint32(r.flags, 1)
	} else {
		atomic.StoreUint32(r.flags, 0)
	}
}

// Outstanding is the number of entries the producer published that the consumer has not yet
// released, read fresh from shared memory.
func (r *ringIndex) Outstanding() uint32 {
	return atomic.LoadUint32(r.producer) - atomic.LoadUint32(r.consumer)
}

// Size is the number of entries of the ring.
func (r *ringIndex) Size() uint32 { return r.size }

// Ring is a view of one ring whose entries are T: frame addresses (fill and completion rings)
// or descriptors (rx and tx rings).
type Ring[T uint64 | Desc] struct {
	ringIndex
	entries []T
}

// AddrRing is a fill or completion ring: entries are UMEM frame addresses.
type AddrRing = Ring[uint64]

// DescRing is an rx or tx ring: entries are descriptors.
type DescRing = Ring[Desc]

// NewRing makes a view of a ring whose shared words and entries live wherever the caller
// mapped them (kernel mmap, or ordinary memory for the in-memory port and tests).
func NewRing[T uint64 | Desc](producer, consumer, flags *uint32, entries []T) *Ring[T] {
	return &Ring[T]{ringIndex: newRingIndex(producer, consumer, flags, uint32(len(entries))), entries: entries}
}

// NewAddrRing is NewRing for fill and completion rings.
func NewAddrRing(producer, consumer, flags *uint32, entries []uint64) *AddrRing {
	return NewRing(producer, consumer, flags, entries)
}

// NewDescRing is NewRing for rx and tx rings.
func NewDescRing(producer, consumer, flags *uint32, entries []Desc) *DescRing {
	return NewRing(producer, consumer, flags, entries)
}

// Enqueue writes as many of src as fit and publishes them; it returns the count written.
func (r *Ring[T]) Enqueue(src []T) int {
	n := r.free(uint32(len(src)))
	if n > uint32(len(src)) {
		n = uint32(len(src))
	}
	if n == 0 {
		return 0
	}
	p := r.cachedProd
	for i := uint32(0); i < n; i++ {
		r.entries[(p+i)&r.mask] = src[i]
	}
	r.cachedProd = p + n
	atomic.StoreUint32(r.producer, r.cachedProd)
	return int(n)
}

// Dequeue reads up to len(dst) entries and releases them to the producer.
func (r *Ring[T]) Dequeue(dst []T) int {
	n := r.avail()
	if n > uint32(len(dst)) {
		n = uint32(len(dst))
	}
	if n == 0 {
		return 0
	}
	c := r.cachedCons
	for i := uint32(0); i < n; i++ {
		dst[i] = r.entries[(c+i)&r.mask]
	}
	r.cachedCons = c + n
	atomic.StoreUint32(r.consumer, r.cachedCons)
	return int(n)
}

// MemRing is the shared part of a ring kept in ordinary memory: the in-memory port and tests
// build both sides' views over it.
type MemRing struct {
	Producer, Consumer, Flags uint32
	Addrs                     []uint64
	Descs                     []Desc
}

// NewMemAddrRing allocates an address ring of size entries in ordinary memory.
func NewMemAddrRing(size int) *MemRing { return &MemRing{Addrs: make([]uint64, size)} }

// NewMemDescRing allocates a descriptor ring of size entries in ordinary memory.
func NewMemDescRing(size int) *MemRing { return &MemRing{Descs: make([]Desc, size)} }

// AddrView returns one side's view of an address ring.
func (m *MemRing) AddrView() *AddrRing {
	return NewAddrRing(&m.Producer, &m.Consumer, &m.Flags, m.Addrs)
}

// DescView returns one side's view of a descriptor ring.
func (m *MemRing) DescView() *DescRing {
	return NewDescRing(&m.Producer, &m.Consumer, &m.Flags, m.Descs)
}
