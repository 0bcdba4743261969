package flowtree

import "net/netip"

// Ascend calls fn for every entry in key order (protocol, local address,
// local port, then the listener before the exact flows, ordered by remote
// address and port) until fn returns false.
//
// Iteration takes no lock and may run concurrently with the writer. It
// collects entries in small batches, each a consistent view of its part of
// the tree, and calls fn between batches with nothing held, so fn may modify
// the tree (when it runs on the writer's goroutine). An entry present for the
// whole iteration is reported exactly once; one inserted or deleted meanwhile
// may or may not be; keys always come in strictly increasing order.
func (t *Tree) Ascend(fn func(Key, Handle) bool) {
	s := span{hi: key{^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0)}}
	t.ascend(&s, fn)
}

// AscendProto is Ascend restricted to the entries of one protocol.
func (t *Tree) AscendProto(proto uint8, fn func(Key, Handle) bool) {
	s := span{
		lo: makeKey(proto, 0, 0, 0, 0, 0),
		hi: key{uint32(proto)<<24 | 0xffffff, ^uint32(0), ^uint32(0), ^uint32(0)},
	}
	t.ascend(&s, fn)
}

// AscendPrefix is Ascend restricted to the entries of one protocol whose
// local address is in the IPv4 prefix local (a /32 for one address, a /24
// for one subnet), listeners included. A listener on any address has local
// address 0.0.0.0, so only 0.0.0.0/n prefixes include it. This is a subtree
// walk: its cost grows with the entries it reports, not with the tree. A
// prefix that is not IPv4 matches nothing.
func (t *Tree) AscendPrefix(proto uint8, local netip.Prefix, fn func(Key, Handle) bool) {
	lo, hi, ok := prefixRange(local)
	if !ok {
		return
	}
	s := span{
		lo: makeKey(proto, lo, 0, 0, 0, 0),
		hi: key{uint32(proto)<<24 | hi>>8, hi<<24 | 0xffffff, ^uint32(0), ^uint32(0)},
	}
	t.ascend(&s, fn)
}

// AscendRemotePrefix is Ascend restricted to the exact flows of one protocol
// whose remote address is in the IPv4 prefix remote. The key order puts the
// local address first, so this walks every entry of the protocol and
// filters; use AscendPrefix where the local address will do. A prefix that
// is not IPv4 matches nothing.
func (t *Tree) AscendRemotePrefix(proto uint8, remote netip.Prefix, fn func(Key, Handle) bool) {
	lo, hi, ok := prefixRange(remote)
	if !ok {
		return
	}
	s := span{
		lo:        makeKey(proto, 0, 0, 0, 0, 0),
		hi:        key{uint32(proto)<<24 | 0xffffff, ^uint32(0), ^uint32(0), ^uint32(0)},
		rmask:     ^(hi - lo),
		rval:      lo,
		exactOnly: true,
	}
	t.ascend(&s, fn)
}

// prefixRange returns the first and last IPv4 address of p.
func prefixRange(p netip.Prefix) (lo, hi uint32, ok bool) {
	if !p.IsValid() || !p.Addr().Is4() {
		return 0, 0, false
	}
	lo, _ = addr4(p.Masked().Addr())
	return lo, lo | ^uint32(0)>>p.Bits(), true
}

// span is a key range [lo, hi], optionally filtered on the remote address.
type span struct {
	lo, hi      key
	rmask, rval uint32
	exactOnly   bool
}

func (s *span) match(k *key) bool {
	return !(s.exactOnly && k.listener()) && k.raddr()&s.rmask == s.rval
}

type entry struct {
	k key
	h Handle
}

type frame struct {
	link   uint32
	minBit uint32 // the node at link must test a bit >= minBit
}

const (
	batchMax = 64             // entries collected per consistent view
	stackMax = 2*maxDepth + 2 // pending subtrees: one per level, plus one path
	visitMul = 4              // leaves visited per batch slot (filtered walks)
)

func (t *Tree) ascend(s *span, fn func(Key, Handle) bool) {
	var buf [batchMax]entry
	lo, size := s.lo, batchMax
	for {
		g := t.gen.Load()
		n, last, more, ok := t.collect(s, lo, buf[:size])
		if t.gen.Load() != g {
			// A recycle may have changed what we read: retry, with a smaller
			// batch so that a busy writer cannot starve us.
			size = max(size/2, 1)
			continue
		}
		if !ok {
			panic("flowtree: inconsistent tree without a concurrent recycle (bug)")
		}
		for i := range n {
			if !fn(buf[i].k.decode(), buf[i].h) {
				return
			}
		}
		if !more {
			return
		}
		if lo, more = last.next(); !more {
			return
		}
		size = min(size*2, batchMax)
	}
}

// collect fills buf with the entries of s from lo on, in key order. It
// returns how many it stored, the last key it looked at (the next call
// starts after it), whether entries may remain, and false if what it read
// cannot be a consistent tree, which only happens when a recycle ran
// meanwhile. The caller validates the batch against gen.
//
// The seek is one descent along lo's bits. With c the first bit where lo
// differs from the leaf reached, every node on the path above bit c has a
// prefix lo shares, so a right child passed by (lo has a 0 there) holds only
// larger keys; the subtree below bit c holds keys that all differ from lo at
// bit c, so it is larger than lo or smaller as a whole.
func (t *Tree) collect(s *span, lo key, buf []entry) (n int, last key, more, ok bool) {
	nodes, leaves := t.nodes, t.leaves
	l := t.root.Load()
	if l == 0 {
		return 0, last, false, true
	}
	var path [maxDepth]struct{ link, right uint32 }
	depth, minBit := 0, uint32(0)
	for l&leafFlag == 0 {
		b := l & bitMask
		if l>>8 == 0 || b < minBit || depth == len(path) {
			return 0, last, false, false
		}
		nd := &nodes[l>>8]
		path[depth].link, path[depth].right = l, nd.child[1].Load()
		depth++
		l = nd.child[lo.bit(b)].Load()
		minBit = b + 1
	}
	lk := leaves[l>>8].key()
	c := critBit(&lo, &lk)

	var stack [stackMax]frame
	sp := 0
	// x is the subtree below bit c: the first path node testing a bit past c,
	// or the leaf.
	x, xmin := l, minBit
	for i := range depth {
		p := &path[i]
		b := p.link & bitMask
		if b > c {
			x, xmin = p.link, 0
			if i > 0 {
				xmin = path[i-1].link&bitMask + 1
			}
			break
		}
		if lo.bit(b) == 0 {
			stack[sp] = frame{p.right, b + 1}
			sp++
		}
	}
	if c == 128 || lo.bit(c) == 0 {
		stack[sp] = frame{x, xmin}
		sp++
	}

	visits, maxVisits := 0, visitMul*len(buf)
	for sp > 0 {
		sp--
		f := stack[sp]
		if f.link&leafFlag != 0 {
			lf := &leaves[f.link>>8]
			k := lf.key()
			if s.hi.less(&k) {
				return n, last, false, true
			}
			if k.less(&lo) || (visits > 0 && !last.less(&k)) {
				return n, last, false, false
			}
			last = k
			visits++
			if s.match(&k) {
				buf[n] = entry{k, Handle(lf.h.Load())}
				n++
			}
			if n == len(buf) || visits == maxVisits {
				return n, last, true, true
			}
			continue
		}
		b := f.link & bitMask
		if f.link>>8 == 0 || b < f.minBit || sp+2 > len(stack) {
			return n, last, false, false
		}
		nd := &nodes[f.link>>8]
		stack[sp] = frame{nd.child[1].Load(), b + 1}
		stack[sp+1] = frame{nd.child[0].Load(), b + 1}
		sp += 2
	}
	return n, last, false, true
}
