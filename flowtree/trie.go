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
//	link = arena index<<7 | byte position<<3 | kind   (1 leaf, 2 tiny, 3 small, 4 big)
//
//	tiny:  up to 8 children; key bytes packed in one word, searched with
//	       a SWAR compare; 64 bytes, one cache line
//	small: up to 32 children, key bytes in four words; 192 bytes
//	big:   256 children indexed by the byte; 1028 bytes
//
// A node that fills up is rebuilt as the next kind (tiny at 9 children
// becomes small, small at 33 big); a big one shrinks to small at 16
// children, a small one to tiny at 4. Every reader-visible change is one
// atomic store: a child is appended to a tiny or small node by writing its key byte and
// link past the published count, then storing the count; it is removed by
// storing 0 in its link (a tombstone, revived if the same byte comes back,
// so a byte is never in two slots); a node that is full of tombstones, grows
// or shrinks is copied and the copy published with one store of the parent
// link; a node left with one child is replaced by that child, also one store.
// Retired nodes wait in limbo like the crit-bit tree's (see the package doc).
//
// The arena grows by half when a write needs a node and none is free. The
// writer copies it and publishes the copy with one atomic store; a reader
// that still holds the old copy reads a frozen, consistent image of the trie
// as it was when it was copied (readers load the root before the arena, and
// every link in a copy points inside that copy).
const (
	kLeaf  = 1
	kTiny  = 2
	kSmall = 3
	kBig   = 4

	idxShift   = 7 // link = index<<7 | position<<3 | kind
	kindMask   = 7
	posMask    = 15
	tinyMax    = 8  // children of a tiny node
	smallMax   = 32 // children of a small node
	shrinkBig  = 16 // a big node left with this many children becomes small
	shrinkSm   = 4  // a small node left with this many becomes tiny
	trieDepth  = 14 // key bytes (13) plus the leaf
	tinyBytes  = 64
	smallBytes = 192
	bigBytes   = 1028
	lsb        = 0x0101010101010101
	msb        = 0x8080808080808080
	liveShift  = 8
	countMask  = 0xff
)

func leafLink(i uint32) uint32             { return i<<idxShift | kLeaf }
func nodeLinkK(kind, i, pos uint32) uint32 { return i<<idxShift | pos<<3 | kind }
func linkPos(l uint32) uint32              { return l >> 3 & posMask }
func linkIdx(l uint32) uint32              { return l >> idxShift }
func tbyte(k0, k1 uint64, p uint32) uint32 {
	w := k0
	if p >= 8 {
		w = k1
	}
	return uint32(w>>(56-8*(p&7))) & 0xff
}

// tiny and small are nodes with up to 8 and 32 children. Slot i's key byte
// is byte i%8 of keys[i/8]; hdr holds the slots in use (count, bits 0-7,
// what readers search) and the live children (bits 8-15, for the writer).
// Fields are plain words accessed with sync/atomic so that the arena can be
// copied with copy() when it grows. Both sizes are whole cache lines, and
// arena slices are large allocations, which start on a page: a tiny node is
// one cache line, and a small node of up to 6 children is read from one.
type tiny struct {
	hdr  uint32
	_    uint32
	keys [1]uint64
	kid  [tinyMax]uint32
	_    [16]byte
}

type small struct {
	hdr  uint32
	_    uint32
	keys [4]uint64
	kid  [smallMax]uint32
	_    [24]byte
}

// big is a node with a child slot per byte value; hdr counts the live
// children (for the writer).
type big struct {
	kid [256]uint32
	hdr uint32
}

type arena struct {
	tiny  []tiny  // index 0 unused
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

// match returns the slot among the first cnt packed in keys whose byte is
// b, or a number >= cnt. The lowest byte the SWAR test flags is a true
// match, and a byte is in at most one slot.
func match(w, pat uint64, base, cnt uint32) (uint32, bool) {
	x := w ^ pat
	if m := (x - lsb) &^ x & msb; m != 0 {
		return base + uint32(bits.TrailingZeros64(m))/8, true
	}
	return cnt, false
}

// find follows the key (k0, k1) from the link l down to a leaf and returns
// the leaf's index, or 0 if there is none. The caller compares the leaf's
// key: path compression skips the bytes between nodes. Concurrent readers
// must validate the answer against gen; the loop bounds keep a walk through
// recycled nodes from running away, and every index stays in range.
func (a *arena) find(l uint32, k0, k1 uint64) uint32 {
	for range trieDepth {
		switch l & kindMask {
		case kLeaf:
			return linkIdx(l)
		case kTiny:
			n := &a.tiny[linkIdx(l)]
			cnt := atomic.LoadUint32(&n.hdr) & countMask
			i, _ := match(atomic.LoadUint64(&n.keys[0]), uint64(tbyte(k0, k1, linkPos(l)))*lsb, 0, cnt)
			if i >= cnt {
				return 0
			}
			l = atomic.LoadUint32(&n.kid[i&(tinyMax-1)])
		case kSmall:
			n := &a.small[linkIdx(l)]
			pat := uint64(tbyte(k0, k1, linkPos(l))) * lsb
			cnt := atomic.LoadUint32(&n.hdr) & countMask
			i := uint32(smallMax)
			for w := range uint32(4) {
				if w*8 >= cnt {
					break
				}
				if j, ok := match(atomic.LoadUint64(&n.keys[w]), pat, w*8, cnt); ok {
					i = j
					break
				}
			}
			if i >= cnt {
				return 0
			}
			l = atomic.LoadUint32(&n.kid[i&(smallMax-1)])
		case kBig:
			l = atomic.LoadUint32(&a.big[linkIdx(l)].kid[tbyte(k0, k1, linkPos(l))])
		default:
			return 0
		}
	}
	return 0
}

// The rest is the writer's.

// view is a tiny or small node seen through slices, so that the writer's
// code serves both.
type view struct {
	hdr  *uint32
	keys []uint64
	kid  []uint32
}

func (a *arena) view(l uint32) view {
	if l&kindMask == kTiny {
		n := &a.tiny[linkIdx(l)]
		return view{&n.hdr, n.keys[:], n.kid[:]}
	}
	n := &a.small[linkIdx(l)]
	return view{&n.hdr, n.keys[:], n.kid[:]}
}

func (v view) count() uint32 { return *v.hdr & countMask }
func (v view) live() uint32  { return *v.hdr >> liveShift }

func (v view) keyByte(i uint32) uint32 {
	return uint32(v.keys[i/8]>>(8*(i%8))) & 0xff
}

func (v view) setKey(i, b uint32) {
	w := &v.keys[i/8]
	sh := 8 * (i % 8)
	atomic.StoreUint64(w, *w&^(0xff<<sh)|uint64(b)<<sh)
}

// pair is a child and its byte.
type pair struct{ b, l uint32 }

// each calls fn for every live child of node l, in slot order (by byte for
// a big node).
func (a *arena) each(l uint32, fn func(b, c uint32)) {
	if l&kindMask == kBig {
		for b, c := range &a.big[linkIdx(l)].kid {
			if c != 0 {
				fn(uint32(b), c)
			}
		}
		return
	}
	v := a.view(l)
	for i := range v.count() {
		if c := v.kid[i]; c != 0 {
			fn(v.keyByte(i), c)
		}
	}
}

// childSlot returns the word of node l that holds the live child for byte
// b, or nil.
func (a *arena) childSlot(l, b uint32) *uint32 {
	if l&kindMask == kBig {
		if s := &a.big[linkIdx(l)].kid[b]; *s != 0 {
			return s
		}
		return nil
	}
	v := a.view(l)
	for i := range v.count() {
		if v.keyByte(i) == b && v.kid[i] != 0 {
			return &v.kid[i]
		}
	}
	return nil
}

// anyLeaf returns a leaf under l: it follows the key's bytes while it can,
// then any child. Its key shares with (k0, k1) every byte the nodes on the
// way test, up to the first node where it could not follow the key.
func (a *arena) anyLeaf(l uint32, k0, k1 uint64) uint32 {
	for l&kindMask != kLeaf {
		if s := a.childSlot(l, tbyte(k0, k1, linkPos(l))); s != nil {
			l = *s
			continue
		}
		first := uint32(0)
		a.each(l, func(_, c uint32) {
			if first == 0 {
				first = c
			}
		})
		l = first
	}
	return linkIdx(l)
}

// nodeLen returns the arena length for nodes of a kind.
func (a *arena) nodeLen(kind uint32) int {
	switch kind {
	case kTiny:
		return len(a.tiny)
	case kSmall:
		return len(a.small)
	}
	return len(a.big)
}

// kid0 returns the word free lists are threaded through.
func (a *arena) kid0(kind, i uint32) *uint32 {
	switch kind {
	case kTiny:
		return &a.tiny[i].kid[0]
	case kSmall:
		return &a.small[i].kid[0]
	}
	return &a.big[i].kid[0]
}

// trieReserve makes sure that a node of each kind can be allocated without
// growing the arena, so that the writer can hold pointers into it. The
// arena grows by half.
func (t *Tree) trieReserve() {
	for k := uint32(kTiny); k <= kBig; k++ {
		a := t.arena.Load()
		n := a.nodeLen(k)
		if t.freeN[k-kTiny] > 0 || int(t.hw[k-kTiny])+1 < n {
			continue
		}
		na := *a
		m := n + n/2 + 16
		switch k {
		case kTiny:
			na.tiny = make([]tiny, m)
			copy(na.tiny, a.tiny)
		case kSmall:
			na.small = make([]small, m)
			copy(na.small, a.small)
		default:
			na.big = make([]big, m)
			copy(na.big, a.big)
		}
		t.arena.Store(&na)
	}
}

// newNode returns the index of an unpublished node of a kind.
func (t *Tree) newNodeK(a *arena, kind uint32) uint32 {
	k := kind - kTiny
	i := t.free[k]
	if i != 0 {
		t.free[k] = linkIdx(*a.kid0(kind, i))
		t.freeN[k]--
	} else {
		t.hw[k]++
		i = t.hw[k]
	}
	return i
}

// makeNode returns a link to a new node at position p with the children ps
// (at least two), of the smallest kind that holds them.
func (t *Tree) makeNode(a *arena, p uint32, ps []pair) uint32 {
	n := uint32(len(ps))
	switch {
	case n <= tinyMax:
		i := t.newNodeK(a, kTiny)
		l := nodeLinkK(kTiny, i, p)
		t.fill(a.view(l), ps)
		return l
	case n <= smallMax:
		i := t.newNodeK(a, kSmall)
		l := nodeLinkK(kSmall, i, p)
		t.fill(a.view(l), ps)
		return l
	}
	i := t.newNodeK(a, kBig)
	g := &a.big[i]
	for j := range g.kid {
		atomic.StoreUint32(&g.kid[j], 0)
	}
	for _, x := range ps {
		atomic.StoreUint32(&g.kid[x.b], x.l)
	}
	g.hdr = n
	return nodeLinkK(kBig, i, p)
}

func (t *Tree) fill(v view, ps []pair) {
	for j, x := range ps {
		v.setKey(uint32(j), x.b)
		atomic.StoreUint32(&v.kid[j], x.l)
	}
	n := uint32(len(ps))
	atomic.StoreUint32(v.hdr, n|n<<liveShift)
}

func (t *Tree) retireTrieNode(l uint32) {
	k := l&kindMask - kTiny
	if len(t.limbo[k]) == cap(t.limbo[k]) {
		t.recycle()
	}
	t.limbo[k] = append(t.limbo[k], linkIdx(l))
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
		if l&kindMask == kLeaf || linkPos(l) > p {
			break
		}
		b := tbyte(k0, k1, linkPos(l))
		if linkPos(l) == p {
			t.addChild(a, slot, l, b, leafLink(li))
			return
		}
		slot = a.childSlot(l, b)
	}
	// Split: a new node at p above the subtree at slot.
	ps := [2]pair{{tbyte(o0, o1, p), l}, {tbyte(k0, k1, p), leafLink(li)}}
	atomic.StoreUint32(slot, t.makeNode(a, p, ps[:]))
}

// addChild adds child c under byte b to node l, which slot points to.
func (t *Tree) addChild(a *arena, slot *uint32, l, b, c uint32) {
	if l&kindMask == kBig {
		n := &a.big[linkIdx(l)]
		atomic.StoreUint32(&n.kid[b], c)
		n.hdr++
		return
	}
	v := a.view(l)
	cnt, live := v.count(), v.live()
	for i := range cnt { // a tombstone of the same byte comes back to life
		if v.keyByte(i) == b {
			atomic.StoreUint32(&v.kid[i], c)
			atomic.StoreUint32(v.hdr, cnt|(live+1)<<liveShift)
			return
		}
	}
	if int(cnt) < len(v.kid) {
		v.setKey(cnt, b)
		atomic.StoreUint32(&v.kid[cnt], c)
		atomic.StoreUint32(v.hdr, (cnt+1)|(live+1)<<liveShift) // publish
		return
	}
	// Full: copy the live children and the new one into a node of the
	// right size (the same kind without tombstones, or the next).
	var buf [smallMax + 1]pair
	ps := buf[:0]
	a.each(l, func(b, c uint32) { ps = append(ps, pair{b, c}) })
	ps = append(ps, pair{b, c})
	atomic.StoreUint32(slot, t.makeNode(a, linkPos(l), ps))
	t.retireTrieNode(l)
}

// trieDelete unlinks leaf li, whose trie key is (k0, k1), from the trie whose
// root is *root; the leaf must be there. trieReserve must have run.
func (t *Tree) trieDelete(root *uint32, k0, k1 uint64, li uint32) {
	a := t.arena.Load()
	slot := root
	var pslot *uint32 // the slot that points to the leaf's parent
	var parent uint32
	l := atomic.LoadUint32(slot)
	for l&kindMask != kLeaf {
		pslot, parent = slot, l
		slot = a.childSlot(l, tbyte(k0, k1, linkPos(l)))
		l = atomic.LoadUint32(slot)
	}
	if linkIdx(l) != li {
		panic("flowtree: trieDelete of a leaf that is not in the trie (bug)")
	}
	if pslot == nil {
		atomic.StoreUint32(slot, 0)
		return
	}
	var live uint32
	if parent&kindMask == kBig {
		live = a.big[linkIdx(parent)].hdr - 1
	} else {
		live = a.view(parent).live() - 1
	}
	kind := parent & kindMask
	switch {
	case live == 1: // the other child takes the node's place
		a.each(parent, func(_, c uint32) {
			if c != l {
				atomic.StoreUint32(pslot, c)
			}
		})
		t.retireTrieNode(parent)
	case kind == kBig && live <= shrinkBig || kind == kSmall && live <= shrinkSm:
		var buf [256]pair
		ps := buf[:0]
		a.each(parent, func(b, c uint32) {
			if c != l {
				ps = append(ps, pair{b, c})
			}
		})
		atomic.StoreUint32(pslot, t.makeNode(a, linkPos(parent), ps))
		t.retireTrieNode(parent)
	case kind == kBig:
		atomic.StoreUint32(slot, 0)
		a.big[linkIdx(parent)].hdr--
	default:
		v := a.view(parent)
		atomic.StoreUint32(slot, 0)
		atomic.StoreUint32(v.hdr, v.count()|live<<liveShift)
	}
}

// trieLeaves calls fn for every leaf index under l (writer only).
func (t *Tree) trieLeaves(l uint32, fn func(li uint32) bool) bool {
	if l&kindMask == kLeaf {
		return fn(linkIdx(l))
	}
	ok := true
	t.arena.Load().each(l, func(_, c uint32) {
		if ok {
			ok = t.trieLeaves(c, fn)
		}
	})
	return ok
}

// The exact-flow trie (connections, where the numbers are) has a wide
// root: a multibit-trie top level indexed by the first bits of the key
// (remote port, then remote address), 2 to 4 slots per entry of capacity
// (a power of two, at least 2^8, at most 2^20: 4 MiB), allocated by New, so
// that most lookups go from the wide root straight to a leaf, as a hash
// table's would, without hashing. Each slot heads an ordinary byte trie of the keys that share
// those bits, so depth stays bounded whatever the keys: at worst (all keys
// in one slot) the wide root is one more level above the byte trie.
func wideBits(capacity int) uint32 {
	return min(max(uint32(bits.Len(uint(capacity-1)))+1, 8), 20)
}

// rootSlot returns the word that heads the trie of shape slot si for keys
// starting with k0.
func (t *Tree) rootSlot(si int, k0 uint64) *uint32 {
	if si == 0 {
		return &t.wide[k0>>t.wshift]
	}
	return &t.shapes[si].root
}

// shapeLeaves calls fn for every leaf of shape slot si (writer only).
func (t *Tree) shapeLeaves(si int, fn func(li uint32) bool) bool {
	tops := []uint32{t.shapes[si].root}
	if si == 0 {
		tops = t.wide
	}
	for _, l := range tops {
		if l != 0 && !t.trieLeaves(l, fn) {
			return false
		}
	}
	return true
}
