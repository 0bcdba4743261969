package flowtree

import (
	"math/bits"
	"sync/atomic"
)

// The lookup trie: one per shape (see spec.go), all in one arena. It is a
// radix tree over bytes of the flow key with optimistic path compression, as
// in the adaptive radix tree (Leis et al., ICDE 2013): a node only says which
// byte of the key it branches on, the bytes every key under it shares are
// not stored, and a lookup checks the whole key once, at the leaf. Byte
// positions strictly increase along every path, so a lookup visits at most
// one node per key byte (13) plus the leaf, whatever the keys.
//
// Key bytes are taken in the order of their entropy in real traffic, not in
// field order: remote port (low byte first), remote address (last byte
// first), local port, local address, protocol. The few top nodes then fan out
// widely on bytes that differ between flows, and bytes every flow shares (the
// protocol, the local address) make no node at all. The trie answers exact
// matches only (wildcards are per-shape masks, applied before the descent),
// so it needs no order; ordered walks use the crit-bit tree.
//
// Node kinds, linked by uint32 links:
//
//	link = arena index<<6 | byte position<<2 | kind   (kind 1 leaf, 2 small, 3 big)
//
//	small: up to 32 children; key bytes packed in four words, searched
//	       eight at a time with a SWAR compare; 168 bytes
//	big:   256 children indexed by the byte; 1028 bytes
//
// A small node grows into a big one when its 33rd child arrives, a big one
// shrinks back when 16 are left. Every reader-visible change is one atomic
// store: a child is appended to a small node by writing its key byte and
// link past the published count, then storing the count; it is removed by
// storing 0 in its link (a tombstone, revived if the same byte comes back,
// so a byte is never in two slots); a node that is full of tombstones, grows
// or shrinks is copied and the copy published with one store of the parent
// link; a node left with one child is replaced by that child, also one store.
// Retired nodes wait in limbo like the crit-bit tree's (see the package doc).
//
// The arena grows by doubling when a write needs a node and none is free. The
// writer copies it and publishes the copy with one atomic store; a reader
// that still holds the old copy reads a frozen, consistent image of the trie
// as it was when it was copied (readers load the root before the arena, and
// every link in a copy points inside that copy).
const (
	kLeaf  = 1
	kSmall = 2
	kBig   = 3

	smallMax    = 32 // children of a small node
	shrinkAt    = 16 // a big node with this many children becomes small
	trieDepth   = 14 // key bytes (13) plus the leaf
	smallBytes  = 192
	bigBytes    = 1028
	lsb         = 0x0101010101010101
	msb         = 0x8080808080808080
	posMask     = 15
	liveShift   = 8
	countMask   = 0xff
	initialBig  = 4
	initialSmal = 64
)

func leafLink(i uint32) uint32       { return i<<6 | kLeaf }
func smallLink(i, pos uint32) uint32 { return i<<6 | pos<<2 | kSmall }
func bigLink(i, pos uint32) uint32   { return i<<6 | pos<<2 | kBig }
func linkPos(l uint32) uint32        { return l >> 2 & posMask }
func tbyte(k0, k1 uint64, p uint32) uint32 {
	w := k0
	if p >= 8 {
		w = k1
	}
	return uint32(w>>(56-8*(p&7))) & 0xff
}

// small is a node with up to 32 children. Slot i's key byte is byte i%8 of
// keys[i/8]; hdr holds the slots in use (count, bits 0-7, what readers
// search) and the live children (bits 8-15, for the writer). Fields are
// plain words accessed with sync/atomic so that the arena can be copied with
// copy() when it grows.
type small struct {
	hdr  uint32
	_    uint32
	keys [4]uint64
	kid  [smallMax]uint32
	_    [24]byte // 192 bytes: nodes start on cache lines, and a node of up to 6 children is one line
}

// big is a node with a child slot per byte value; hdr counts the live
// children (for the writer).
type big struct {
	kid [256]uint32
	hdr uint32
}

type arena struct {
	small []small // index 0 unused
	big   []big   // index 0 unused
}

// tkey returns the trie form of a key: its 13 bytes in trie order, in two
// words (byte 0 is the most significant byte of k0).
func tkey(proto uint8, la uint32, lp uint16, ra uint32, rp uint16) (k0, k1 uint64) {
	k0 = uint64(bits.ReverseBytes16(rp))<<48 | uint64(bits.ReverseBytes32(ra))<<16 | uint64(bits.ReverseBytes16(lp))
	k1 = uint64(bits.ReverseBytes32(la))<<32 | uint64(proto)<<24
	return k0, k1
}

// tkeyOf returns the trie form of the crit-bit-form key q, its kind
// included (byte 13, which no trie branches on: a trie holds one shape, so
// one kind).
func tkeyOf(q *key) (uint64, uint64) {
	k0, k1 := tkey(q.proto(), q.laddr(), q.lport(), q.raddr(), q.rport())
	return k0, k1 | uint64(q[1]&0xff)<<16
}

// critKey is the inverse of tkeyOf.
func critKey(k0, k1 uint64) key {
	return makeKey(uint8(k1>>24), bits.ReverseBytes32(uint32(k1>>32)), bits.ReverseBytes16(uint16(k0)),
		bits.ReverseBytes32(uint32(k0>>16)), bits.ReverseBytes16(uint16(k0>>48)), uint32(k1>>16)&0xff)
}

// firstDiff returns the first byte position where two trie keys differ
// (13 or more when they are equal).
func firstDiff(x0, x1 uint64) uint32 {
	if x0 != 0 {
		return uint32(bits.LeadingZeros64(x0)) / 8
	}
	return 8 + uint32(bits.LeadingZeros64(x1))/8
}

// find follows the key (k0, k1) from the link l down to a leaf and returns
// the leaf's index, or 0 if there is none. The caller compares the leaf's
// key: path compression skips the bytes between nodes. Concurrent readers
// must validate the answer against gen; the loop bounds keep a walk through
// recycled nodes from running away.
func (a *arena) find(l uint32, k0, k1 uint64) uint32 {
	for range trieDepth {
		switch l & 3 {
		case kLeaf:
			return l >> 6
		case kSmall:
			n := &a.small[l>>6]
			pat := uint64(tbyte(k0, k1, linkPos(l))) * lsb
			cnt := atomic.LoadUint32(&n.hdr) & countMask
			i := uint32(smallMax)
			for w := range uint32(4) {
				if w*8 >= cnt {
					break
				}
				x := atomic.LoadUint64(&n.keys[w]) ^ pat
				if m := (x - lsb) &^ x & msb; m != 0 {
					// The lowest flagged byte is a true match; a byte
					// appears in at most one slot.
					i = w*8 + uint32(bits.TrailingZeros64(m))/8
					break
				}
			}
			if i >= cnt {
				return 0
			}
			l = atomic.LoadUint32(&n.kid[i&(smallMax-1)])
		case kBig:
			l = atomic.LoadUint32(&a.big[l>>6].kid[tbyte(k0, k1, linkPos(l))])
		default:
			return 0
		}
	}
	return 0
}

// The rest is the writer's.

func (n *small) keyByte(i uint32) uint32 {
	return uint32(n.keys[i/8]>>(8*(i%8))) & 0xff
}

func (n *small) setKey(i, b uint32) {
	w := &n.keys[i/8]
	sh := 8 * (i % 8)
	atomic.StoreUint64(w, *w&^(0xff<<sh)|uint64(b)<<sh)
}

// slot returns the slot of n holding byte b with a live child, or -1.
func (n *small) slot(b uint32) int {
	cnt := n.hdr & countMask
	for i := range cnt {
		if n.keyByte(i) == b && n.kid[i] != 0 {
			return int(i)
		}
	}
	return -1
}

// childSlot returns the word of node l that holds the child for byte b (it
// may hold 0).
func (a *arena) childSlot(l, b uint32) *uint32 {
	if l&3 == kBig {
		return &a.big[l>>6].kid[b]
	}
	n := &a.small[l>>6]
	if i := n.slot(b); i >= 0 {
		return &n.kid[i]
	}
	return nil
}

// anyLeaf returns a leaf under l that shares the longest prefix with the key
// that the walk to it could establish: it follows the key's bytes while it
// can, then any child.
func (a *arena) anyLeaf(l uint32, k0, k1 uint64) uint32 {
	for l&3 != kLeaf {
		if s := a.childSlot(l, tbyte(k0, k1, linkPos(l))); s != nil && *s != 0 {
			l = *s
			continue
		}
		l = a.firstChild(l)
	}
	return l >> 6
}

func (a *arena) firstChild(l uint32) uint32 {
	if l&3 == kBig {
		for _, c := range &a.big[l>>6].kid {
			if c != 0 {
				return c
			}
		}
	} else {
		n := &a.small[l>>6]
		for i := range n.hdr & countMask {
			if n.kid[i] != 0 {
				return n.kid[i]
			}
		}
	}
	panic("flowtree: trie node without children (bug)")
}

// trieReserve makes sure that one small and one big node can be allocated
// without growing the arena, so that the writer can hold pointers into it.
func (t *Tree) trieReserve() {
	a := t.arena.Load()
	if t.smallFreeN == 0 && int(t.smallHW)+1 >= len(a.small) {
		na := &arena{small: make([]small, 2*len(a.small)), big: a.big}
		copy(na.small, a.small)
		t.arena.Store(na)
		a = na
	}
	if t.bigFreeN == 0 && int(t.bigHW)+1 >= len(a.big) {
		na := &arena{small: a.small, big: make([]big, 2*len(a.big))}
		copy(na.big, a.big)
		t.arena.Store(na)
	}
}

func (t *Tree) newSmall(a *arena) uint32 {
	i := t.smallFree
	if i != 0 {
		t.smallFree = a.small[i].kid[0] >> 6
		t.smallFreeN--
	} else {
		t.smallHW++
		i = t.smallHW
	}
	return i
}

func (t *Tree) newBig(a *arena) uint32 {
	i := t.bigFree
	if i != 0 {
		t.bigFree = a.big[i].kid[0] >> 6
		t.bigFreeN--
	} else {
		t.bigHW++
		i = t.bigHW
	}
	n := &a.big[i]
	for j := range n.kid {
		atomic.StoreUint32(&n.kid[j], 0)
	}
	return i
}

// trieInsert links leaf li, whose trie key is (k0, k1), into the trie whose
// root is *root. The key must not be there yet. trieReserve must have run.
func (t *Tree) trieInsert(root *uint32, k0, k1 uint64, li uint32) {
	a := t.arena.Load()
	slot := root
	l := atomic.LoadUint32(slot)
	if l == 0 {
		atomic.StoreUint32(slot, leafLink(li))
		return
	}
	lf := &t.leaves[a.anyLeaf(l, k0, k1)]
	o0, o1 := lf.t[0].Load(), lf.t[1].Load()
	p := firstDiff(k0^o0, k1^o1)
	if p >= 13 {
		panic("flowtree: trieInsert of a present key (bug)")
	}
	// Every key under a node on the key's path shares the key's bytes before
	// the node's position, up to p: descend while positions are below p.
	for {
		l = atomic.LoadUint32(slot)
		if l&3 == kLeaf || linkPos(l) > p {
			break
		}
		b := tbyte(k0, k1, linkPos(l))
		if linkPos(l) == p {
			t.addChild(a, slot, l, b, leafLink(li))
			return
		}
		slot = a.childSlot(l, b)
	}
	// Split: a new small node at p above the subtree at slot.
	ni := t.newSmall(a)
	n := &a.small[ni]
	atomic.StoreUint64(&n.keys[0], uint64(tbyte(o0, o1, p))|uint64(tbyte(k0, k1, p))<<8)
	atomic.StoreUint32(&n.kid[0], l)
	atomic.StoreUint32(&n.kid[1], leafLink(li))
	atomic.StoreUint32(&n.hdr, 2|2<<liveShift)
	atomic.StoreUint32(slot, smallLink(ni, p))
}

// addChild adds child c under byte b to node l, which slot points to.
func (t *Tree) addChild(a *arena, slot *uint32, l, b, c uint32) {
	p := linkPos(l)
	if l&3 == kBig {
		n := &a.big[l>>6]
		atomic.StoreUint32(&n.kid[b], c)
		n.hdr++
		return
	}
	n := &a.small[l>>6]
	cnt, live := n.hdr&countMask, n.hdr>>liveShift
	for i := range cnt { // a tombstone of the same byte comes back to life
		if n.keyByte(i) == b {
			atomic.StoreUint32(&n.kid[i], c)
			atomic.StoreUint32(&n.hdr, cnt|(live+1)<<liveShift)
			return
		}
	}
	if cnt < smallMax {
		n.setKey(cnt, b)
		atomic.StoreUint32(&n.kid[cnt], c)
		atomic.StoreUint32(&n.hdr, (cnt+1)|(live+1)<<liveShift) // publish
		return
	}
	if live < smallMax {
		// Full of tombstones: copy the live children and the new one.
		mi := t.newSmall(a)
		m := &a.small[mi]
		j := uint32(0)
		for i := range cnt {
			if k := n.kid[i]; k != 0 {
				m.setKey(j, n.keyByte(i))
				atomic.StoreUint32(&m.kid[j], k)
				j++
			}
		}
		m.setKey(j, b)
		atomic.StoreUint32(&m.kid[j], c)
		j++
		atomic.StoreUint32(&m.hdr, j|j<<liveShift)
		atomic.StoreUint32(slot, smallLink(mi, p))
		t.retireSmall(l >> 6)
		return
	}
	// Grow into a big node.
	gi := t.newBig(a)
	g := &a.big[gi]
	for i := range cnt {
		atomic.StoreUint32(&g.kid[n.keyByte(i)], n.kid[i])
	}
	atomic.StoreUint32(&g.kid[b], c)
	g.hdr = smallMax + 1
	atomic.StoreUint32(slot, bigLink(gi, p))
	t.retireSmall(l >> 6)
}

// trieDelete unlinks leaf li, whose trie key is (k0, k1), from the trie whose
// root is *root; the leaf must be there. trieReserve must have run.
func (t *Tree) trieDelete(root *uint32, k0, k1 uint64, li uint32) {
	a := t.arena.Load()
	slot := root
	var pslot *uint32 // the slot that points to the leaf's parent
	var parent uint32
	l := atomic.LoadUint32(slot)
	for l&3 != kLeaf {
		pslot, parent = slot, l
		slot = a.childSlot(l, tbyte(k0, k1, linkPos(l)))
		l = atomic.LoadUint32(slot)
	}
	if l>>6 != li {
		panic("flowtree: trieDelete of a leaf that is not in the trie (bug)")
	}
	if pslot == nil {
		atomic.StoreUint32(slot, 0)
		return
	}
	p := linkPos(parent)
	if parent&3 == kSmall {
		n := &a.small[parent>>6]
		cnt, live := n.hdr&countMask, n.hdr>>liveShift-1
		if live == 1 { // the other child takes the node's place
			for i := range cnt {
				if k := n.kid[i]; k != 0 && &n.kid[i] != slot {
					atomic.StoreUint32(pslot, k)
					break
				}
			}
			t.retireSmall(parent >> 6)
			return
		}
		atomic.StoreUint32(slot, 0)
		atomic.StoreUint32(&n.hdr, cnt|live<<liveShift)
		return
	}
	g := &a.big[parent>>6]
	if g.hdr-1 > shrinkAt {
		atomic.StoreUint32(slot, 0)
		g.hdr--
		return
	}
	// Shrink into a small node.
	mi := t.newSmall(a)
	m := &a.small[mi]
	j := uint32(0)
	for b := range uint32(256) {
		if k := g.kid[b]; k != 0 && &g.kid[b] != slot {
			m.setKey(j, b)
			atomic.StoreUint32(&m.kid[j], k)
			j++
		}
	}
	atomic.StoreUint32(&m.hdr, j|j<<liveShift)
	atomic.StoreUint32(pslot, smallLink(mi, p))
	t.retireBig(parent >> 6)
}

// trieLeaves calls fn for every leaf index under l (writer only).
func (t *Tree) trieLeaves(l uint32, fn func(li uint32) bool) bool {
	a := t.arena.Load()
	switch l & 3 {
	case kLeaf:
		return fn(l >> 6)
	case kSmall:
		n := &a.small[l>>6]
		for i := range n.hdr & countMask {
			if k := n.kid[i]; k != 0 && !t.trieLeaves(k, fn) {
				return false
			}
		}
	case kBig:
		for _, k := range &a.big[l>>6].kid {
			if k != 0 && !t.trieLeaves(k, fn) {
				return false
			}
		}
	}
	return true
}

func (t *Tree) retireSmall(i uint32) {
	if len(t.limboSmall) == cap(t.limboSmall) {
		t.recycle()
	}
	t.limboSmall = append(t.limboSmall, i)
}

func (t *Tree) retireBig(i uint32) {
	if len(t.limboBig) == cap(t.limboBig) {
		t.recycle()
	}
	t.limboBig = append(t.limboBig, i)
}

// The exact-flow trie (connections, where the numbers are) gets a wide root
// as it grows: a multibit-trie top level indexed by the first bits of the
// key (remote port, then remote address), 4 slots per entry at the sizes
// where it is (re)built, so that most lookups go from the wide root straight
// to a leaf, as a hash table's would, without hashing. Each slot heads an
// ordinary byte trie of the keys that share those bits, so depth stays
// bounded whatever the keys. It is rebuilt, off to the side and published
// with one atomic store, when the shape's entries reach 256, 1K, 4K, 16K and
// 64K (then it has 2^18 slots, 1 MiB, and stays); the rebuild costs one
// insert per entry, so inserts stay O(1) amortized, but the insert that
// triggers it takes longer (about 10 ms at 64K). It never shrinks.
type wideRoot struct {
	shift uint32 // 64 - bits: the slot of key (k0, k1) is k0>>shift
	slots []uint32
}

// rootSlot returns the word that heads the trie of shape slot si for keys
// starting with k0 (writer only).
func (t *Tree) rootSlot(si int, k0 uint64) *uint32 {
	s := &t.shapes[si]
	if w := s.wide.Load(); w != nil {
		return &w.slots[k0>>w.shift]
	}
	return &s.root
}

// shapeLeaves calls fn for every leaf of shape slot si (writer only).
func (t *Tree) shapeLeaves(si int, fn func(li uint32) bool) bool {
	s := &t.shapes[si]
	if w := s.wide.Load(); w != nil {
		for _, l := range w.slots {
			if l != 0 && !t.trieLeaves(l, fn) {
				return false
			}
		}
		return true
	}
	if s.root == 0 {
		return true
	}
	return t.trieLeaves(s.root, fn)
}

// maybeWiden rebuilds the exact-flow trie under a wider root when its entry
// count reaches a threshold.
func (t *Tree) maybeWiden() {
	n := t.shapeN[0]
	if n < 1<<8 || n > 1<<16 || n&(n-1) != 0 || bits.TrailingZeros(uint(n))%2 != 0 {
		return
	}
	width := uint32(bits.TrailingZeros(uint(n))) + 2
	if w := t.shapes[0].wide.Load(); w != nil && 64-w.shift >= width {
		return // already as wide: the count came back down and up again
	}
	t.widen(width)
}

func (t *Tree) widen(width uint32) {
	s := &t.shapes[0]
	var leaves, nodes []uint32
	var tops []uint32
	if w := s.wide.Load(); w != nil {
		tops = w.slots
	} else {
		tops = []uint32{s.root}
	}
	a := t.arena.Load()
	var collect func(l uint32)
	collect = func(l uint32) {
		switch l & 3 {
		case kLeaf:
			leaves = append(leaves, l>>6)
		case kSmall:
			nodes = append(nodes, l)
			n := &a.small[l>>6]
			for i := range n.hdr & countMask {
				if k := n.kid[i]; k != 0 {
					collect(k)
				}
			}
		case kBig:
			nodes = append(nodes, l)
			for _, k := range &a.big[l>>6].kid {
				if k != 0 {
					collect(k)
				}
			}
		}
	}
	for _, l := range tops {
		collect(l)
	}
	nw := &wideRoot{shift: 64 - width, slots: make([]uint32, 1<<width)}
	for _, li := range leaves {
		lf := &t.leaves[li]
		k0, k1 := lf.t[0].Load(), lf.t[1].Load()
		t.trieReserve()
		t.trieInsert(&nw.slots[k0>>nw.shift], k0, k1, li)
	}
	s.wide.Store(nw) // publish
	for _, l := range nodes {
		if l&3 == kSmall {
			t.retireSmall(l >> 6)
		} else {
			t.retireBig(l >> 6)
		}
	}
}
