// Code generated from the hash-indexed flowtree (before issue 17) for the paired
// benchmarks: hashTree is that version's Tree, kept only so that
// bench_test.go can compare the trie lookups with it in the same run.

package flowtree

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
)

const (
	hNodeBytes   = 8
	hLeafBytes   = 24
	hBucketBytes = 4
	hLeafFlag    = 1 << 7
	hBitMask     = 1<<7 - 1
	hMaxDepth    = 128
)

func hNodeLink(i, bit uint32) uint32 { return i<<8 | bit }
func hLeafLink(i uint32) uint32      { return i<<8 | hLeafFlag }

// hInode is an internal (branch) node: keys whose tested bit is 0 are under
// child[0], the others under child[1]; the bit itself is in the link that
// points here. The links are atomic because readers may still be looking at
// a node while the writer recycles it; they notice through hashTree.gen and
// retry.
type hInode struct {
	child [2]atomic.Uint32
}

// hLeaf holds one entry: its key and its handle, and links it into its hash
// bucket's chain. The key never changes while the hLeaf is reachable; the
// handle may be replaced in place (one atomic word, so a reader sees the old
// or the new handle, never a mix).
type hLeaf struct {
	k    [4]atomic.Uint32
	h    atomic.Uint32
	next atomic.Uint32 // next hLeaf index in the bucket's chain; 0 ends it
}

func (l *hLeaf) key() key {
	return key{l.k[0].Load(), l.k[1].Load(), l.k[2].Load(), l.k[3].Load()}
}

// hashTree is a flow tree. Lookups and iteration may run on any number of
// goroutines at once, concurrently with one writer; the methods that modify
// the tree (Insert, InsertListener, Replace, Delete, DeleteListener) must not
// run concurrently with each other. The zero hashTree is not usable; call New.
type hashTree struct {
	// Read by every lookup; the fields themselves change only when the root
	// link changes or a batch of retired nodes is recycled.
	root    atomic.Uint32
	gen     atomic.Uint64 // recycle generation: see the package doc
	nodes   []hInode      // index 0 unused
	leaves  []hLeaf       // index 0 unused
	buckets []atomic.Uint32
	mask    uint64 // len(buckets)-1
	seed    [2]uint64

	_ [128]byte // keep the writer's state off the readers' cache line

	count    atomic.Int64
	capacity int

	// Writer-only state.
	nodeFree, leafFree uint32   // free lists, threaded through child[0] and h
	nodeHW, leafHW     uint32   // highest index ever handed out
	limboNodes         []uint32 // retired, waiting for the next recycle
	limboLeaves        []uint32
	recycles           uint64
}

// New returns an empty tree for at most capacity entries. A listener is one
// entry, an exact flow is one entry and a NAT mapping (two flows, one per
// side) is two. All memory is allocated here, 38.5 to 46 bytes per entry of
// capacity (see Bytes and the package doc); nothing is allocated afterwards.
// New panics if capacity is not in [1, MaxCapacity].
func newHashTree(capacity int) *hashTree {
	if capacity < 1 || capacity > MaxCapacity {
		panic(fmt.Sprintf("flowtree.New: capacity %d out of range [1, %d]", capacity, MaxCapacity))
	}
	return newHashTreeSlack(capacity, hSlack(capacity))
}

// newHashTreeSlack is New with a given hSlack (at least 1); tests use a tiny hSlack to
// recycle often.
func newHashTreeSlack(capacity, s int) *hashTree {
	nb := 1 << bits.Len(uint(capacity-1)) // a power of two >= capacity
	return &hashTree{
		capacity: capacity,
		// capacity leaves and capacity-1 nodes are in use at most; s more
		// of each may wait in limbo; index 0 of each is the nil link.
		nodes:       make([]hInode, capacity+s),
		leaves:      make([]hLeaf, capacity+s+1),
		buckets:     make([]atomic.Uint32, nb),
		mask:        uint64(nb - 1),
		seed:        [2]uint64{rand.Uint64(), rand.Uint64()},
		limboNodes:  make([]uint32, 0, s),
		limboLeaves: make([]uint32, 0, s),
	}
}

// hSlack is how many retired nodes (and leaves) may wait before a recycle.
// More hSlack means rarer recycles, so fewer reader retries, for a little
// more memory: 1/8 of the capacity, at least 256 and at most 65536.
func hSlack(capacity int) int {
	return min(max(capacity/8, 256), 1<<16)
}

// Len returns the number of entries.
func (t *hashTree) Len() int { return int(t.count.Load()) }

// Capacity returns the largest number of entries the tree holds.
func (t *hashTree) Capacity() int { return t.capacity }

// Bytes returns the memory the tree allocated in New, which does not change
// afterwards: 8 bytes per node and 24 per hLeaf, capacity plus hSlack of each;
// 4 bytes per hash bucket, the capacity rounded up to a power of two; and 8
// bytes per hSlack slot for the limbo lists.
func (t *hashTree) Bytes() int {
	return len(t.nodes)*hNodeBytes + len(t.leaves)*hLeafBytes + len(t.buckets)*hBucketBytes +
		4*(cap(t.limboNodes)+cap(t.limboLeaves))
}

// Lookup returns the handle of the entry that owns a packet: the exact flow
// (proto, local, lport, remote, rport) if there is one, else the listener on
// (proto, local, lport), else the listener on (proto, any address, lport).
// Addresses are in network byte order, as they sit in the IPv4 header.
//
// Lookup takes no lock, does not allocate, and may run on any goroutine while
// the writer changes the tree: it sees each entry as it was before or after
// each change, never a mix.
func (t *hashTree) Lookup(proto uint8, local, remote [4]byte, lport, rport uint16) (Handle, bool) {
	la := binary.BigEndian.Uint32(local[:])
	q := makeKey(proto, la, lport, binary.BigEndian.Uint32(remote[:]), rport, kindExact)
	for {
		g := t.gen.Load()
		h, ok := t.get(&q)
		if !ok {
			l := makeKey(proto, la, lport, 0, 0, kindListener)
			if h, ok = t.get(&l); !ok && la != 0 {
				l = makeKey(proto, 0, lport, 0, 0, kindListener)
				h, ok = t.get(&l)
			}
		}
		if t.gen.Load() == g {
			return h, ok
		}
	}
}

// Get returns the handle of the entry whose key is exactly k (an exact flow
// or a listener, without falling back to wildcards). Like Lookup it is safe
// to call concurrently with the writer.
func (t *hashTree) Get(k Key) (Handle, bool) {
	q, err := k.encode()
	if err != nil {
		return 0, false
	}
	for {
		g := t.gen.Load()
		h, ok := t.get(&q)
		if t.gen.Load() == g {
			return h, ok
		}
	}
}

// get returns the handle stored under q, from the hash index. Concurrent
// readers must validate the answer against gen: a recycled hLeaf can give
// any answer. The chain bound only matters when the walk runs through
// recycled leaves, whose next links may form a cycle.
func (t *hashTree) get(q *key) (Handle, bool) {
	leaves := t.leaves
	i := t.bucket(q).Load()
	for range len(leaves) {
		if i == 0 {
			break
		}
		lf := &leaves[i]
		if lf.k[0].Load() == q[0] && lf.k[1].Load() == q[1] && lf.k[2].Load() == q[2] && lf.k[3].Load() == q[3] {
			return Handle(lf.h.Load()), true
		}
		i = lf.next.Load()
	}
	return 0, false
}

// bucket returns q's hash bucket. The hash is one 64x64->128-bit multiply of
// the key's two halves, each first mixed with a per-tree random seed, folded
// to 64 bits (the mixing step of wyhash): cheap, and the seed keeps an
// outsider who picks ports and addresses from lining up long chains.
func (t *hashTree) bucket(q *key) *atomic.Uint32 {
	h, l := bits.Mul64(q.hi()^t.seed[0], q.lo()^t.seed[1])
	return &t.buckets[(h^l)&t.mask]
}

// find follows q's bits from the root to a hLeaf and returns the hLeaf's index,
// or 0 if the tree is empty. The hLeaf is the only one that can hold q; the
// caller compares keys. Only the writer uses it.
func (t *hashTree) find(q *key) uint32 {
	nodes, hi, lo := t.nodes, q.hi(), q.lo()
	l := t.root.Load()
	for range hMaxDepth {
		if l&hLeafFlag != 0 {
			return l >> 8
		}
		l = nodes[l>>8].child[hDir(hi, lo, l)].Load()
	}
	return 0
}

// hDir returns which child of the node that link l names holds the key
// (hi, lo): the key's bit that the node tests. The key is split in two
// words so that picking the word is a conditional move, not a load.
func hDir(hi, lo uint64, l uint32) uint32 {
	b := l & hBitMask
	w := hi
	if b >= 64 {
		w = lo
	}
	return uint32(w << (b & 63) >> 63)
}

// Insert adds an exact flow. It returns an error wrapping ErrExists if the
// key is already there (use Replace to change its handle), ErrFull if the
// tree is at capacity, or ErrInvalidKey if k is not a full IPv4 5-tuple.
func (t *hashTree) Insert(k Key, h Handle) error {
	if k.IsListener() {
		return fmt.Errorf("%w: %v: Insert needs a remote address and port; use InsertListener for a listener", ErrInvalidKey, k)
	}
	q, err := k.encode()
	if err != nil {
		return err
	}
	return t.insertErr(&q, h)
}

// InsertListener adds a listener on (proto, local, port). A zero local Addr
// or 0.0.0.0 means any local address. Errors are as for Insert.
func (t *hashTree) InsertListener(proto uint8, local netip.Addr, port uint16, h Handle) error {
	q, err := ListenerKey(proto, local, port).encode()
	if err != nil {
		return err
	}
	return t.insertErr(&q, h)
}

func (t *hashTree) insertErr(q *key, h Handle) error {
	switch err := t.insert(q, h); err {
	case nil:
		return nil
	case ErrFull:
		return fmt.Errorf("%w: cannot add %v: all %d entries are in use (a NAT mapping takes two); "+
			"raise the capacity passed to flowtree.New or delete idle flows", ErrFull, q.decode(), t.capacity)
	default:
		return fmt.Errorf("%w: %v; delete it first or use Replace to change its handle", err, q.decode())
	}
}

// insert adds q. Readers see the tree before or after the single atomic
// store that publishes the new hLeaf (and its branch node); everything the
// store points to is written before it.
func (t *hashTree) insert(q *key, h Handle) error {
	root := t.root.Load()
	if root == 0 {
		l := t.newLeaf(q, h)
		t.root.Store(l)
		t.hashInsert(q, l>>8)
		t.count.Add(1)
		return nil
	}
	// Every key under the nodes that q's bits pass agrees with the hLeaf they
	// lead to up to those nodes' bits, so the first bit where q and that
	// hLeaf differ is where q branches off: above the first node on the path
	// that tests a later bit, or above the hLeaf.
	lk := t.leaves[t.find(q)].key()
	cb := critBit(q, &lk)
	if cb == 128 {
		return ErrExists
	}
	if t.Len() >= t.capacity {
		return ErrFull
	}
	nodes, hi, lo := t.nodes, q.hi(), q.lo()
	slot := &t.root
	for {
		l := slot.Load()
		if l&hLeafFlag != 0 || l&hBitMask > cb {
			break
		}
		slot = &nodes[l>>8].child[hDir(hi, lo, l)]
	}
	hDir := q.bit(cb)
	ni := t.newNode()
	n := &t.nodes[ni]
	l := t.newLeaf(q, h)
	n.child[hDir].Store(l)
	n.child[1-hDir].Store(slot.Load())
	slot.Store(hNodeLink(ni, cb)) // publish to walks
	t.hashInsert(q, l>>8)         // publish to lookups
	t.count.Add(1)
	return nil
}

// hashInsert puts hLeaf i, which holds q, at the head of q's bucket chain.
func (t *hashTree) hashInsert(q *key, i uint32) {
	b := t.bucket(q)
	t.leaves[i].next.Store(b.Load())
	b.Store(i)
}

// hashDelete unlinks hLeaf i, which holds q, from q's bucket chain with one
// atomic store. The hLeaf keeps its next link until a later recycle, so a
// reader standing on it walks on into the rest of the chain.
func (t *hashTree) hashDelete(q *key, i uint32) {
	b := t.bucket(q)
	next := t.leaves[i].next.Load()
	if b.Load() == i {
		b.Store(next)
		return
	}
	p := &t.leaves[b.Load()]
	for p.next.Load() != i {
		p = &t.leaves[p.next.Load()]
	}
	p.next.Store(next)
}

// Replace sets the handle of the entry whose key is exactly k and reports
// whether there was one. Concurrent readers see the old or the new handle.
func (t *hashTree) Replace(k Key, h Handle) bool {
	q, err := k.encode()
	if err != nil || t.root.Load() == 0 {
		return false
	}
	lf := &t.leaves[t.find(&q)]
	if lf.key() != q {
		return false
	}
	lf.h.Store(uint32(h))
	return true
}

// Delete removes the entry whose key is exactly k (an exact flow or a
// listener key, as Ascend reports them) and reports whether there was one.
func (t *hashTree) Delete(k Key) bool {
	q, err := k.encode()
	if err != nil {
		return false
	}
	return t.delete(&q)
}

// DeleteListener removes the listener on (proto, local, port); a zero local
// Addr or 0.0.0.0 means the listener on any address.
func (t *hashTree) DeleteListener(proto uint8, local netip.Addr, port uint16) bool {
	return t.Delete(ListenerKey(proto, local, port))
}

// delete unlinks q's hLeaf with one atomic store: the slot that pointed to
// the hLeaf's parent now points to the hLeaf's sibling. The parent and the
// hLeaf keep their contents until a later recycle, so a reader that is
// already inside them finishes its walk on the old, consistent subtree.
func (t *hashTree) delete(q *key) bool {
	slot := &t.root
	l := slot.Load()
	if l == 0 {
		return false
	}
	var pslot *atomic.Uint32 // slot pointing to the parent
	var parent, pdir uint32
	nodes, hi, lo := t.nodes, q.hi(), q.lo()
	for l&hLeafFlag == 0 {
		d := hDir(hi, lo, l)
		pslot, parent, pdir = slot, l>>8, d
		slot = &nodes[parent].child[d]
		l = slot.Load()
	}
	li := l >> 8
	if t.leaves[li].key() != *q {
		return false
	}
	if parent == 0 {
		t.root.Store(0)
	} else {
		pslot.Store(t.nodes[parent].child[1-pdir].Load())
		t.retireNode(parent)
	}
	t.hashDelete(q, li)
	t.retireLeaf(li)
	t.count.Add(-1)
	return true
}

// newLeaf returns a link to an unpublished hLeaf holding (q, h). Capacity
// plus hSlack leaves exist, at most capacity are in use and at most hSlack in
// limbo, so a free or never-used one always exists.
func (t *hashTree) newLeaf(q *key, h Handle) uint32 {
	i := t.leafFree
	if i != 0 {
		t.leafFree = t.leaves[i].h.Load()
	} else {
		t.leafHW++
		i = t.leafHW
	}
	lf := &t.leaves[i]
	for j, w := range q {
		lf.k[j].Store(w)
	}
	lf.h.Store(uint32(h))
	return hLeafLink(i)
}

// newNode returns the index of an unpublished node; see newLeaf.
func (t *hashTree) newNode() uint32 {
	i := t.nodeFree
	if i != 0 {
		t.nodeFree = t.nodes[i].child[0].Load() >> 8
	} else {
		t.nodeHW++
		i = t.nodeHW
	}
	return i
}

func (t *hashTree) retireLeaf(i uint32) {
	if len(t.limboLeaves) == cap(t.limboLeaves) {
		t.recycle()
	}
	t.limboLeaves = append(t.limboLeaves, i)
}

func (t *hashTree) retireNode(i uint32) {
	if len(t.limboNodes) == cap(t.limboNodes) {
		t.recycle()
	}
	t.limboNodes = append(t.limboNodes, i)
}

// recycle makes every retired node and hLeaf reusable. It first bumps gen, so
// any reader that might still be inside one of them, having started before
// this point, fails its check and retries; a reader that starts after it can
// no longer reach them, because they were unlinked before it began.
func (t *hashTree) recycle() {
	t.gen.Add(1)
	t.recycles++
	for _, i := range t.limboLeaves {
		t.leaves[i].h.Store(t.leafFree)
		t.leafFree = i
	}
	for _, i := range t.limboNodes {
		t.nodes[i].child[0].Store(hNodeLink(t.nodeFree, 0)) // a link, like any child value
		t.nodeFree = i
	}
	t.limboLeaves = t.limboLeaves[:0]
	t.limboNodes = t.limboNodes[:0]
}
