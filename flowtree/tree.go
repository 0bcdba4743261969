package flowtree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"sync/atomic"
)

// Handle names the owner of a flow (an endpoint, a NAT mapping side, a
// listener) in a table that belongs to the caller. The tree stores it and
// gives it back; it never interprets it. Every value, 0 included, is a valid
// handle: Lookup's second result says whether there was a match.
type Handle uint32

// Errors returned by the control-plane methods; test with errors.Is. The
// returned errors wrap these and add the key and what to do.
var (
	// ErrFull means the tree holds as many entries as its capacity.
	ErrFull = errors.New("flowtree: tree is full")
	// ErrExists means an entry with the same key is already in the tree.
	ErrExists = errors.New("flowtree: entry already exists")
	// ErrInvalidKey means a key that is not IPv4 or mixes the exact and
	// listener forms.
	ErrInvalidKey = errors.New("flowtree: invalid key")
)

// MaxCapacity is the largest capacity New accepts: a link has 24 bits for
// the arena index, and the arena needs up to 65536+1 slots on top of the
// capacity.
const MaxCapacity = 1<<24 - 1<<16 - 2

// A crit-bit link is a uint32 that names a node or a leaf and says what to
// do there, so a walk needs one load per level:
//
//	bits 31-8: arena index (0 is never used, so the link 0 is nil)
//	bit  7:    1 for a leaf, 0 for a node
//	bits 6-0:  for a node, the key bit it tests (0-111)
const (
	leafFlag = 1 << 7
	bitMask  = 1<<7 - 1
	maxDepth = 128 // tested bits strictly increase along a path
	// Sizes of the arena elements, for Bytes and the documented cost.
	nodeBytes = 8
	leafBytes = 24
)

func nodeLink(i, bit uint32) uint32 { return i<<8 | bit }
func cbLeafLink(i uint32) uint32    { return i<<8 | leafFlag }

// inode is an internal (branch) node of the crit-bit tree: keys whose tested
// bit is 0 are under child[0], the others under child[1]; the bit itself is
// in the link that points here. The links are atomic because readers may
// still be looking at a node while the writer recycles it; they notice
// through Tree.gen and retry.
type inode struct {
	child [2]atomic.Uint32
}

// leaf holds one entry: its key (fields masked to its shape, in the trie
// form) and its handle. The lookup trie of its shape and, for connections
// and listeners, the crit-bit tree both link to it. The key never changes
// while the leaf is reachable; the handle may be replaced in place (one
// atomic word, so a reader sees the old or the new handle, never a mix).
type leaf struct {
	t [2]atomic.Uint64 // the key in trie form (trie.go), kind included
	h atomic.Uint32
}

// key returns the leaf's key in the crit-bit form.
func (l *leaf) key() key { return critKey(l.t[0].Load(), l.t[1].Load()) }

// is reports whether the leaf holds the trie-form key (k0, k1).
func (l *leaf) is(k0, k1 uint64) bool { return l.t[0].Load() == k0 && l.t[1].Load() == k1 }

// shapeSlot is the root of one shape's lookup trie and the shape's
// descriptor; both are read by lookups with atomic loads.
type shapeSlot struct {
	m0, m1 uint64 // trie-form masks of the fields the shape matches
	kind   uint64 // the kind, in trie form
	root   uint32
	desc   uint32
}

// Tree is a flow tree. Lookups and iteration may run on any number of
// goroutines at once, concurrently with one writer; the methods that modify
// the tree (Insert, InsertListener, InsertSpec, Replace, ReplaceSpec, Delete,
// DeleteListener, DeleteSpec) must not run concurrently with each other. The
// zero Tree is not usable; call New.
type Tree struct {
	// Read by every lookup.
	gen    atomic.Uint64 // recycle generation: see the package doc
	order  atomic.Uint64 // shapes with entries, most specific first: slot+1 per 4 bits
	arena  atomic.Pointer[arena]
	leaves []leaf   // index 0 unused
	wide   []uint32 // the connection trie's wide root (trie.go)
	wshift uint32   // 64 - bits of the wide root: the slot of k0 is k0>>wshift
	shapes [maxShapes]shapeSlot
	// Read by walks.
	root  atomic.Uint32 // of the crit-bit tree
	nodes []inode       // index 0 unused

	_ [128]byte // keep the writer's state off the readers' cache lines

	count    atomic.Int64
	capacity int

	// Writer-only state.
	shapeN                  [maxShapes]int // entries per shape
	specShapes              int            // shapes other than the three built-in ones with entries
	shapeUsed               [maxShapes]bool
	nodeFree, leafFree      uint32    // free lists, threaded through child[0] and h
	nodeHW, leafHW          uint32    // highest index ever handed out
	free                    [3]uint32 // trie free lists per kind (tiny, small, big), threaded through kid[0]
	hw                      [3]uint32
	freeN                   [3]int
	limboNodes, limboLeaves []uint32 // retired, waiting for the next recycle
	limbo                   [3][]uint32
	recycles                uint64
}

// New returns an empty tree for at most capacity entries. A listener is one
// entry, an exact flow is one entry and a NAT mapping (two flows, one per
// side) is two. The leaves and the crit-bit tree are allocated here for the
// capacity; the lookup tries start small and grow by half as the keys
// need nodes (see Bytes and the package doc). New panics if capacity is not
// in [1, MaxCapacity].
func New(capacity int) *Tree {
	if capacity < 1 || capacity > MaxCapacity {
		panic(fmt.Sprintf("flowtree.New: capacity %d out of range [1, %d]", capacity, MaxCapacity))
	}
	return newTree(capacity, slack(capacity))
}

// newTree is New with a given slack (at least 1); tests use a tiny slack to
// recycle often.
func newTree(capacity, s int) *Tree {
	t := &Tree{
		capacity: capacity,
		// capacity leaves and capacity-1 nodes are in use at most; s more
		// of each may wait in limbo; index 0 of each is the nil link.
		nodes:       make([]inode, capacity+s),
		leaves:      make([]leaf, capacity+s+1),
		limboNodes:  make([]uint32, 0, s),
		limboLeaves: make([]uint32, 0, s),
	}
	for k := range t.limbo {
		t.limbo[k] = make([]uint32, 0, s)
	}
	wb := wideBits(capacity)
	t.wide, t.wshift = make([]uint32, 1<<wb), 64-wb
	t.arena.Store(&arena{
		tiny:  make([]tiny, 64+capacity/8),
		small: make([]small, 16+capacity/128),
		big:   make([]big, 4+capacity/2048),
	})
	for i, d := range []uint32{descExact, descListener, descAnyLis} {
		t.shapeUsed[i] = true
		t.shapes[i].set(d)
	}
	return t
}

// slack is how many retired nodes (and leaves) may wait before a recycle.
// More slack means rarer recycles, so fewer reader retries, for a little
// more memory: 1/8 of the capacity, at least 256 and at most 65536.
func slack(capacity int) int {
	return min(max(capacity/8, 256), 1<<16)
}

// Len returns the number of entries.
func (t *Tree) Len() int { return int(t.count.Load()) }

// Capacity returns the largest number of entries the tree holds.
func (t *Tree) Capacity() int { return t.capacity }

// Bytes returns the memory the tree holds: what New allocated for the
// capacity (8 bytes per crit-bit node and 24 per leaf, capacity plus slack
// of each, and 20 bytes per slack slot for the limbo lists), plus the lookup
// tries' arena as it is now (64 bytes per tiny node, 192 per small one, 1028
// per big one; it grows by half when full) and the connection trie's wide
// root (4 bytes per slot, 2 to 4 slots per entry of capacity, 1 KiB to
// 4 MiB). Only the writer's goroutine may call it.
func (t *Tree) Bytes() int {
	a := t.arena.Load()
	return 4*len(t.wide) + len(t.nodes)*nodeBytes + len(t.leaves)*leafBytes +
		4*(cap(t.limboNodes)+cap(t.limboLeaves)+3*cap(t.limbo[0])) +
		len(a.tiny)*tinyBytes + len(a.small)*smallBytes + len(a.big)*bigBytes
}

// Lookup returns the handle of the entry that owns a packet: the most
// specific entry that matches (proto, local, lport, remote, rport), in the
// order of the package doc. With connections and listeners only, that is
// the exact flow if there is one, else the listener on (proto, local,
// lport), else the listener on (proto, any address, lport). Addresses are in
// network byte order, as they sit in the IPv4 header.
//
// Lookup takes no lock, does not allocate, probes only the shapes that have
// entries, and may run on any goroutine while the writer changes the tree:
// it sees each entry as it was before or after each change, never a mix.
func (t *Tree) Lookup(proto uint8, local, remote [4]byte, lport, rport uint16) (Handle, bool) {
	k0 := uint64(bits.ReverseBytes16(rport))<<48 | uint64(binary.LittleEndian.Uint32(remote[:]))<<16 | uint64(bits.ReverseBytes16(lport))
	k1 := uint64(binary.LittleEndian.Uint32(local[:]))<<32 | uint64(proto)<<24
	for {
		g := t.gen.Load()
		var h Handle
		var ok bool
		for o := t.order.Load(); o != 0; o >>= 4 {
			if h, ok = t.probe(int(o&15-1), k0, k1); ok {
				break
			}
		}
		if t.gen.Load() == g {
			return h, ok
		}
	}
}

// probe looks the key (k0, k1), in trie form without a kind, up in the trie
// of shape slot si. Concurrent readers must validate the answer against gen.
func (t *Tree) probe(si int, k0, k1 uint64) (Handle, bool) {
	var root uint32 // loaded before the arena: see trie.go
	if si == 0 {
		// Connections: every field exact, the kind is 1.
		k1 |= kindExact << 16
		root = atomic.LoadUint32(&t.wide[k0>>t.wshift])
	} else {
		s := &t.shapes[si]
		k0 &= atomic.LoadUint64(&s.m0)
		k1 = k1&atomic.LoadUint64(&s.m1) | atomic.LoadUint64(&s.kind)
		root = atomic.LoadUint32(&s.root)
	}
	li := t.arena.Load().find(root, k0, k1)
	if li == 0 {
		return 0, false
	}
	lf := &t.leaves[li]
	if lf.t[0].Load() == k0 && lf.t[1].Load() == k1 {
		return Handle(lf.h.Load()), true
	}
	return 0, false
}

// Get returns the handle of the entry whose key is exactly k (an exact flow
// or a listener, without falling back to wildcards). Like Lookup it is safe
// to call concurrently with the writer.
func (t *Tree) Get(k Key) (Handle, bool) {
	d, f, err := k.shape()
	if err != nil {
		return 0, false
	}
	return t.get(d, f)
}

func (t *Tree) get(d uint32, f fields) (Handle, bool) {
	k0, k1 := tkey(f.proto, f.la, f.lp, f.ra, f.rp)
	for {
		g := t.gen.Load()
		var h Handle
		var ok bool
		for i := range t.shapes {
			if atomic.LoadUint32(&t.shapes[i].desc) == d {
				h, ok = t.probe(i, k0, k1)
				break
			}
		}
		if t.gen.Load() == g {
			return h, ok
		}
	}
}

// shape returns the shape and fields of an exact or listener key.
func (k Key) shape() (uint32, fields, error) {
	la, lok := addr4(k.LocalAddr)
	if k.IsListener() {
		if k.RemotePort != 0 || !lok && k.LocalAddr.IsValid() {
			_, err := k.encode()
			return 0, fields{}, err
		}
		f := fields{proto: k.Proto, la: la, lp: k.LocalPort}
		if la == 0 {
			return descAnyLis, f, nil
		}
		return descListener, f, nil
	}
	ra, rok := addr4(k.RemoteAddr)
	if !lok || !rok {
		_, err := k.encode()
		return 0, fields{}, err
	}
	return descExact, fields{proto: k.Proto, la: la, lp: k.LocalPort, ra: ra, rp: k.RemotePort}, nil
}

// find follows q's bits from the crit-bit root to a leaf and returns the
// leaf's index, or 0 if the tree is empty. The leaf is the only one that can
// hold q; the caller compares keys. Only the writer uses it.
func (t *Tree) find(q *key) uint32 {
	nodes, hi, lo := t.nodes, q.hi(), q.lo()
	l := t.root.Load()
	for range maxDepth {
		if l&leafFlag != 0 {
			return l >> 8
		}
		l = nodes[l>>8].child[dir(hi, lo, l)].Load()
	}
	return 0
}

// dir returns which child of the node that link l names holds the key
// (hi, lo): the key's bit that the node tests. The key is split in two
// words so that picking the word is a conditional move, not a load.
func dir(hi, lo uint64, l uint32) uint32 {
	b := l & bitMask
	w := hi
	if b >= 64 {
		w = lo
	}
	return uint32(w << (b & 63) >> 63)
}

// Insert adds an exact flow. It returns an error wrapping ErrExists if the
// key is already there (use Replace to change its handle), ErrFull if the
// tree is at capacity, or ErrInvalidKey if k is not a full IPv4 5-tuple.
func (t *Tree) Insert(k Key, h Handle) error {
	if k.IsListener() {
		return fmt.Errorf("%w: %v: Insert needs a remote address and port; use InsertListener for a listener", ErrInvalidKey, k)
	}
	d, f, err := k.shape()
	if err != nil {
		return err
	}
	return t.insertErr(d, f, h)
}

// InsertListener adds a listener on (proto, local, port). A zero local Addr
// or 0.0.0.0 means any local address. Errors are as for Insert.
func (t *Tree) InsertListener(proto uint8, local netip.Addr, port uint16, h Handle) error {
	d, f, err := ListenerKey(proto, local, port).shape()
	if err != nil {
		return err
	}
	return t.insertErr(d, f, h)
}

func (t *Tree) insertErr(d uint32, f fields, h Handle) error {
	other, err := t.insert(d, f, h)
	if err == nil {
		return nil
	}
	what := func() string {
		q := f.key(d)
		if d>>dKShift&3 == kindSpec {
			return specOf(d, &q).String()
		}
		return q.decode().String()
	}
	switch err {
	case ErrFull:
		return fmt.Errorf("%w: cannot add %v: all %d entries are in use (a NAT mapping takes two); "+
			"raise the capacity passed to flowtree.New or delete idle flows", ErrFull, what(), t.capacity)
	case ErrAmbiguous:
		return fmt.Errorf("%w: %v overlaps %v, which is as specific (same number of exact fields and "+
			"total prefix length); make one of them more specific", ErrAmbiguous, what(), other)
	case ErrTooManyShapes:
		return fmt.Errorf("%w: cannot add %v: %d shapes (patterns of exact, prefix and any fields) are in use; "+
			"reuse the shape of an existing spec", ErrTooManyShapes, what(), maxShapes)
	default:
		return fmt.Errorf("%w: %v; delete it first or use Replace to change its handle", err, what())
	}
}

// insert adds the entry (d, f). Readers see the lookup trie before or after
// the single atomic store that publishes the new leaf, and walks the
// crit-bit tree before or after another; everything a store points to is
// written before it.
func (t *Tree) insert(d uint32, f fields, h Handle) (Spec, error) {
	si, err := t.slotFor(d, true)
	if err != nil {
		return Spec{}, err
	}
	q := f.key(d)
	k0, k1 := f.tkey(d)
	if li := t.arena.Load().find(*t.rootSlot(si, k0), k0, k1); li != 0 && t.leaves[li].is(k0, k1) {
		return Spec{}, ErrExists
	}
	if t.Len() >= t.capacity {
		return Spec{}, ErrFull
	}
	if other, amb := t.ambiguous(d, f); amb {
		return other, ErrAmbiguous
	}
	t.trieReserve()
	li := t.newLeaf(&q, h)
	t.trieInsert(t.rootSlot(si, k0), k0, k1, li) // publish to lookups
	if d>>dKShift&3 != kindSpec {
		t.cbInsert(&q, li) // publish to walks
	}
	if t.shapeN[si]++; t.shapeN[si] == 1 {
		if si >= 3 {
			t.specShapes++
		}
		t.publishOrder()
	}
	t.count.Add(1)
	return Spec{}, nil
}

// cbInsert links leaf li, which holds q, into the crit-bit tree.
func (t *Tree) cbInsert(q *key, li uint32) {
	root := t.root.Load()
	if root == 0 {
		t.root.Store(cbLeafLink(li))
		return
	}
	// Every key under the nodes that q's bits pass agrees with the leaf they
	// lead to up to those nodes' bits, so the first bit where q and that
	// leaf differ is where q branches off: above the first node on the path
	// that tests a later bit, or above the leaf.
	lk := t.leaves[t.find(q)].key()
	cb := critBit(q, &lk)
	nodes, hi, lo := t.nodes, q.hi(), q.lo()
	slot := &t.root
	for {
		l := slot.Load()
		if l&leafFlag != 0 || l&bitMask > cb {
			break
		}
		slot = &nodes[l>>8].child[dir(hi, lo, l)]
	}
	dir := q.bit(cb)
	ni := t.newNode()
	n := &t.nodes[ni]
	n.child[dir].Store(cbLeafLink(li))
	n.child[1-dir].Store(slot.Load())
	slot.Store(nodeLink(ni, cb))
}

// lookupLeaf returns the leaf of the entry (d, f) and its shape slot, or 0.
// Writer only.
func (t *Tree) lookupLeaf(d uint32, f fields) (uint32, int) {
	si, _ := t.slotFor(d, false)
	if si < 0 {
		return 0, -1
	}
	k0, k1 := f.tkey(d)
	li := t.arena.Load().find(*t.rootSlot(si, k0), k0, k1)
	if li == 0 || !t.leaves[li].is(k0, k1) {
		return 0, -1
	}
	return li, si
}

// Replace sets the handle of the entry whose key is exactly k and reports
// whether there was one. Concurrent readers see the old or the new handle.
func (t *Tree) Replace(k Key, h Handle) bool {
	d, f, err := k.shape()
	if err != nil {
		return false
	}
	return t.replace(d, f, h)
}

func (t *Tree) replace(d uint32, f fields, h Handle) bool {
	li, _ := t.lookupLeaf(d, f)
	if li == 0 {
		return false
	}
	t.leaves[li].h.Store(uint32(h))
	return true
}

// Delete removes the entry whose key is exactly k (an exact flow or a
// listener key, as Ascend reports them) and reports whether there was one.
func (t *Tree) Delete(k Key) bool {
	d, f, err := k.shape()
	if err != nil {
		return false
	}
	return t.delete(d, f)
}

// DeleteListener removes the listener on (proto, local, port); a zero local
// Addr or 0.0.0.0 means the listener on any address.
func (t *Tree) DeleteListener(proto uint8, local netip.Addr, port uint16) bool {
	return t.Delete(ListenerKey(proto, local, port))
}

// delete unlinks the entry (d, f) from its trie with one atomic store and,
// for a connection or a listener, from the crit-bit tree with another. What
// it unlinks keeps its contents until a later recycle, so a reader that is
// already inside finishes on the old, consistent subtree.
func (t *Tree) delete(d uint32, f fields) bool {
	li, si := t.lookupLeaf(d, f)
	if li == 0 {
		return false
	}
	t.trieReserve()
	k0, k1 := f.tkey(d)
	t.trieDelete(t.rootSlot(si, k0), k0, k1, li)
	if d>>dKShift&3 != kindSpec {
		q := f.key(d)
		t.cbDelete(&q, li)
	}
	t.retireLeaf(li)
	if t.shapeN[si]--; t.shapeN[si] == 0 {
		if si >= 3 {
			t.specShapes--
		}
		t.publishOrder()
	}
	t.count.Add(-1)
	return true
}

// cbDelete unlinks leaf li, which holds q, from the crit-bit tree with one
// atomic store: the slot that pointed to the leaf's parent now points to the
// leaf's sibling.
func (t *Tree) cbDelete(q *key, li uint32) {
	slot := &t.root
	l := slot.Load()
	var pslot *atomic.Uint32 // slot pointing to the parent
	var parent, pdir uint32
	nodes, hi, lo := t.nodes, q.hi(), q.lo()
	for l&leafFlag == 0 {
		d := dir(hi, lo, l)
		pslot, parent, pdir = slot, l>>8, d
		slot = &nodes[parent].child[d]
		l = slot.Load()
	}
	if l>>8 != li {
		panic("flowtree: crit-bit tree and lookup trie disagree (bug)")
	}
	if parent == 0 {
		t.root.Store(0)
		return
	}
	pslot.Store(t.nodes[parent].child[1-pdir].Load())
	t.retireNode(parent)
}

// newLeaf returns the index of an unpublished leaf holding (q, h). Capacity
// plus slack leaves exist, at most capacity are in use and at most slack in
// limbo, so a free or never-used one always exists.
func (t *Tree) newLeaf(q *key, h Handle) uint32 {
	i := t.leafFree
	if i != 0 {
		t.leafFree = t.leaves[i].h.Load()
	} else {
		t.leafHW++
		i = t.leafHW
	}
	lf := &t.leaves[i]
	k0, k1 := tkeyOf(q)
	lf.t[0].Store(k0)
	lf.t[1].Store(k1)
	lf.h.Store(uint32(h))
	return i
}

// newNode returns the index of an unpublished crit-bit node; see newLeaf.
func (t *Tree) newNode() uint32 {
	i := t.nodeFree
	if i != 0 {
		t.nodeFree = t.nodes[i].child[0].Load() >> 8
	} else {
		t.nodeHW++
		i = t.nodeHW
	}
	return i
}

func (t *Tree) retireLeaf(i uint32) {
	if len(t.limboLeaves) == cap(t.limboLeaves) {
		t.recycle()
	}
	t.limboLeaves = append(t.limboLeaves, i)
}

func (t *Tree) retireNode(i uint32) {
	if len(t.limboNodes) == cap(t.limboNodes) {
		t.recycle()
	}
	t.limboNodes = append(t.limboNodes, i)
}

// recycle makes every retired node and leaf reusable. It first bumps gen, so
// any reader that might still be inside one of them, having started before
// this point, fails its check and retries; a reader that starts after it can
// no longer reach them, because they were unlinked before it began. Free
// lists are threaded through words that readers may still load, so they
// hold valid links.
func (t *Tree) recycle() {
	t.gen.Add(1)
	t.recycles++
	for _, i := range t.limboLeaves {
		t.leaves[i].h.Store(t.leafFree)
		t.leafFree = i
	}
	for _, i := range t.limboNodes {
		t.nodes[i].child[0].Store(nodeLink(t.nodeFree, 0)) // a link, like any child value
		t.nodeFree = i
	}
	a := t.arena.Load()
	for k := range t.limbo {
		kind := uint32(k) + kTiny
		for _, i := range t.limbo[k] {
			atomic.StoreUint32(a.kid0(kind, i), nodeLinkK(kind, t.free[k], 0))
			t.free[k] = i
		}
		t.freeN[k] += len(t.limbo[k])
		t.limbo[k] = t.limbo[k][:0]
	}
	t.limboLeaves = t.limboLeaves[:0]
	t.limboNodes = t.limboNodes[:0]
}
