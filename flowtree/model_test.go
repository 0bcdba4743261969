package flowtree

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// model is the obvious implementation the tree must agree with: a map from
// Key to Handle, plus the match order of Lookup spelled out.
type model struct {
	m    map[Key]Handle
	keys []Key       // the keys of m, for picking one at random
	pos  map[Key]int // index of each key in keys
}

func newModel() *model { return &model{m: map[Key]Handle{}, pos: map[Key]int{}} }

func (m *model) insert(k Key, h Handle) {
	m.m[k] = h
	m.pos[k] = len(m.keys)
	m.keys = append(m.keys, k)
}

func (m *model) delete(k Key) {
	delete(m.m, k)
	i := m.pos[k]
	last := m.keys[len(m.keys)-1]
	m.keys[i] = last
	m.pos[last] = i
	m.keys = m.keys[:len(m.keys)-1]
	delete(m.pos, k)
}

func (m *model) lookup(proto uint8, la, ra netip.Addr, lp, rp uint16) (Handle, bool) {
	if h, ok := m.m[Key{Proto: proto, LocalAddr: la, LocalPort: lp, RemoteAddr: ra, RemotePort: rp}]; ok {
		return h, true
	}
	if h, ok := m.m[ListenerKey(proto, la, lp)]; ok {
		return h, true
	}
	h, ok := m.m[ListenerKey(proto, netip.Addr{}, lp)]
	return h, ok
}

// sorted returns the model's entries whose keys satisfy keep, in tree order.
func (m *model) sorted(keep func(Key) bool) []kv {
	type ekv struct {
		q key
		kv
	}
	var es []ekv
	for k, h := range m.m {
		if keep(k) {
			q, _ := k.encode()
			es = append(es, ekv{q, kv{k, h}})
		}
	}
	slices.SortFunc(es, func(a, b ekv) int {
		for i := range a.q {
			if a.q[i] != b.q[i] {
				return cmp.Compare(a.q[i], b.q[i])
			}
		}
		return 0
	})
	out := make([]kv, len(es))
	for i, e := range es {
		out[i] = e.kv
	}
	return out
}

type kv struct {
	k Key
	h Handle
}

func collectAll(walk func(func(Key, Handle) bool)) []kv {
	var out []kv
	walk(func(k Key, h Handle) bool {
		out = append(out, kv{k, h})
		return true
	})
	return out
}

func sameKVs(t testing.TB, what string, got, want []kv) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d entries, want %d\ngot  %v\nwant %v", what, len(got), len(want), head(got), head(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: entry %d: got %v=%d, want %v=%d", what, i, got[i].k, got[i].h, want[i].k, want[i].h)
		}
	}
}

func head(s []kv) []kv { return s[:min(len(s), 8)] }

// checkTree verifies the structure: crit bits increase downwards, every key
// under child[d] has bit d and shares its node's prefix, the counts match
// Len, and every arena slot is in use, free, in limbo or never used.
func checkTree(t testing.TB, tr *Tree) {
	t.Helper()
	leaves, nodes := 0, 0
	// walk returns one key of the subtree, to check prefixes against.
	var walk func(l, minBit uint32) key
	walk = func(l, minBit uint32) key {
		if l == 0 {
			t.Fatalf("nil link in the tree")
		}
		if l&leafFlag != 0 {
			leaves++
			return tr.leaves[l>>8].key()
		}
		nodes++
		n := &tr.nodes[l>>8]
		b := l & bitMask
		if b < minBit || b >= 112 {
			t.Fatalf("node %d: bit %d, want >= %d", l, b, minBit)
		}
		k0 := walk(n.child[0].Load(), b+1)
		k1 := walk(n.child[1].Load(), b+1)
		if k0.bit(b) != 0 || k1.bit(b) != 1 || critBit(&k0, &k1) != b {
			t.Fatalf("node %d (bit %d): children %x and %x do not split there", l, b, k0, k1)
		}
		return k0
	}
	if r := tr.root.Load(); r != 0 {
		walk(r, 0)
	}
	if leaves > 0 && nodes != leaves-1 {
		t.Fatalf("crit-bit tree has %d leaves and %d nodes", leaves, nodes)
	}
	// Every crit-bit leaf is in its shape's trie, and the tries are well formed.
	if n := checkTries(t, tr); n != tr.Len() {
		t.Fatalf("tries hold %d leaves, Len %d", n, tr.Len())
	}
	tr.Ascend(func(k Key, _ Handle) bool {
		d, f, _ := k.shape()
		if li, _ := tr.lookupLeaf(d, f); li == 0 {
			t.Fatalf("crit-bit entry %v is not in its lookup trie", k)
		}
		return true
	})
	if cbLeaves := leaves; cbLeaves > tr.Len() {
		t.Fatalf("crit-bit tree has %d leaves, Len %d", cbLeaves, tr.Len())
	}
	free := 0
	for i := tr.leafFree; i != 0; i = tr.leaves[i].h.Load() {
		free++
	}
	if int(tr.leafHW) != tr.Len()+free+len(tr.limboLeaves) {
		t.Fatalf("leaves: %d handed out, %d in use + %d free + %d in limbo", tr.leafHW, tr.Len(), free, len(tr.limboLeaves))
	}
	free = 0
	for i := tr.nodeFree; i != 0; i = tr.nodes[i].child[0].Load() >> 8 {
		free++
	}
	if int(tr.nodeHW) != nodes+free+len(tr.limboNodes) {
		t.Fatalf("nodes: %d handed out, %d in use + %d free + %d in limbo", tr.nodeHW, nodes, free, len(tr.limboNodes))
	}
}

// checkTries verifies every shape's lookup trie and returns how many leaves
// they hold: byte positions increase downwards, every key under a node
// shares the bytes before its position and has the node's byte for its slot,
// small nodes have distinct bytes and counts that match, big nodes have more
// than shrinkAt children, every node has at least two, each leaf's key is
// masked to its shape, the probe order lists exactly the shapes with
// entries, most specific first, and every trie node is in use, free, in
// limbo or never used.
func checkTries(t testing.TB, tr *Tree) int {
	t.Helper()
	a := tr.arena.Load()
	total := 0
	var nodes [3]int
	var walk func(l, minPos uint32, d uint32) (k0, k1 uint64, n int)
	walk = func(l, minPos uint32, d uint32) (uint64, uint64, int) {
		if l&kindMask == kLeaf {
			q := tr.leaves[linkIdx(l)].key()
			f := fieldsOf(&q)
			if f.mask(d) != f || f.key(d) != q {
				t.Fatalf("leaf %d (%x) is not masked to its shape %#x", linkIdx(l), q, d)
			}
			k0, k1 := f.tkey(d)
			return k0, k1, 1
		}
		p := linkPos(l)
		if p < minPos || p >= 13 {
			t.Fatalf("trie node %#x at position %d, want >= %d", l, p, minPos)
		}
		var kids []pair
		a.each(l, func(b, c uint32) { kids = append(kids, pair{b, c}) })
		nodes[l&kindMask-kTiny]++
		switch l & kindMask {
		case kTiny, kSmall:
			v := a.view(l)
			cnt, live := v.count(), v.live()
			seen := map[uint32]bool{}
			for i := range cnt {
				b := v.keyByte(i)
				if seen[b] {
					t.Fatalf("node %#x has byte %d twice", l, b)
				}
				seen[b] = true
			}
			if int(live) != len(kids) || live < 2 || int(cnt) > len(v.kid) ||
				l&kindMask == kSmall && live <= shrinkSm {
				t.Fatalf("node %#x: count %d live %d, %d children", l, cnt, live, len(kids))
			}
		case kBig:
			if g := &a.big[linkIdx(l)]; int(g.hdr) != len(kids) || len(kids) <= shrinkBig {
				t.Fatalf("big node %#x: live %d, %d children", l, g.hdr, len(kids))
			}
		default:
			t.Fatalf("bad trie link %#x", l)
		}
		var r0, r1 uint64
		n := 0
		for i, c := range kids {
			k0, k1, m := walk(c.l, p+1, d)
			if tbyte(k0, k1, p) != c.b {
				t.Fatalf("node %#x: child for byte %d holds byte %d", l, c.b, tbyte(k0, k1, p))
			}
			if i == 0 {
				r0, r1 = k0, k1
			} else if firstDiff(r0^k0, r1^k1) != p {
				t.Fatalf("node %#x at %d: children differ first at byte %d", l, p, firstDiff(r0^k0, r1^k1))
			}
			n += m
		}
		return r0, r1, n
	}
	var want []int
	for i := range tr.shapes {
		s := &tr.shapes[i]
		n := 0
		if i == 0 {
			if s.root != 0 {
				t.Fatalf("the connection shape uses its root, not the wide root")
			}
			for j, l := range tr.wide {
				if l == 0 {
					continue
				}
				k0, _, m := walk(l, 0, s.desc)
				if k0>>tr.wshift != uint64(j) {
					t.Fatalf("wide slot %d holds keys of slot %d", j, k0>>tr.wshift)
				}
				n += m
			}
		} else if s.root != 0 {
			_, _, n = walk(s.root, 0, s.desc)
		}
		if n != tr.shapeN[i] {
			t.Fatalf("shape %d (%#x): %d leaves, counted %d", i, s.desc, n, tr.shapeN[i])
		}
		if n > 0 {
			want = append(want, i)
		}
		total += n
	}
	var got []int
	last := uint32(1 << 31)
	for o := tr.order.Load(); o != 0; o >>= 4 {
		i := int(o&15) - 1
		got = append(got, i)
		if r := rank(tr.shapes[i].desc); r > last {
			t.Fatalf("probe order %v is not most specific first", got)
		} else {
			last = r
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("probe order has shapes %v, want %v", got, want)
	}
	for k := range nodes {
		kind := uint32(k) + kTiny
		free := 0
		for i := tr.free[k]; i != 0; i = linkIdx(*a.kid0(kind, i)) {
			free++
		}
		if free != tr.freeN[k] || int(tr.hw[k]) != nodes[k]+free+len(tr.limbo[k]) {
			t.Fatalf("trie nodes of kind %d: %d handed out, %d in use + %d free (%d counted) + %d in limbo",
				kind, tr.hw[k], nodes[k], free, tr.freeN[k], len(tr.limbo[k]))
		}
	}
	return total
}

// keySpace draws keys from small per-field sets so that operations collide,
// listeners shadow flows and prefixes group entries.
type keySpace struct {
	protos        []uint8
	laddrs        []netip.Addr
	raddrs        []netip.Addr
	lports, rport []uint16
}

func a4(s string) netip.Addr { return netip.MustParseAddr(s) }

// spaces returns key spaces from dense (many collisions, shallow tree) to
// random (bits differ anywhere, deep tree).
func spaces(r *rand.Rand) map[string]keySpace {
	rnd := func(n int) []netip.Addr {
		out := make([]netip.Addr, n)
		for i := range out {
			out[i] = addrFrom(r.Uint32())
		}
		return out
	}
	rports := func(n int) []uint16 {
		out := make([]uint16, n)
		for i := range out {
			out[i] = uint16(r.Uint32())
		}
		return out
	}
	return map[string]keySpace{
		"dense": {
			protos: []uint8{6, 17},
			laddrs: []netip.Addr{a4("198.18.0.1"), a4("198.18.0.2"), a4("198.18.1.1"), a4("0.0.0.0")},
			raddrs: []netip.Addr{a4("198.18.0.1"), a4("198.18.9.9"), a4("198.19.0.1"), a4("0.0.0.0")},
			lports: []uint16{0, 80, 443, 65535},
			rport:  []uint16{0, 1, 1024, 40000, 65535},
		},
		"wide": {
			protos: []uint8{0, 1, 6, 17, 255},
			laddrs: append(rnd(20), a4("198.18.0.1"), a4("198.18.0.200"), a4("0.0.0.0"), a4("255.255.255.255")),
			raddrs: append(rnd(200), a4("0.0.0.0"), a4("255.255.255.255")),
			lports: append(rports(10), 0, 80, 65535),
			rport:  append(rports(200), 0, 65535),
		},
	}
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func (s *keySpace) exact(r *rand.Rand) Key {
	return Key{Proto: pick(r, s.protos), LocalAddr: pick(r, s.laddrs), LocalPort: pick(r, s.lports),
		RemoteAddr: pick(r, s.raddrs), RemotePort: pick(r, s.rport)}
}

func (s *keySpace) listener(r *rand.Rand) Key {
	return ListenerKey(pick(r, s.protos), pick(r, s.laddrs), pick(r, s.lports))
}

func (s *keySpace) prefix(r *rand.Rand, addrs []netip.Addr) netip.Prefix {
	return netip.PrefixFrom(pick(r, addrs), pick(r, []int{0, 8, 16, 23, 24, 31, 32})).Masked()
}

func inPrefix(a netip.Addr, p netip.Prefix) bool { return a.IsValid() && p.Contains(a) }

// runModel applies ops random operations to a tree and the model and fails
// at the first disagreement.
func runModel(t *testing.T, r *rand.Rand, ks keySpace, capacity, slack, ops int) {
	tr := newTree(capacity, slack)
	m := newModel()
	var seq Handle
	for op := range ops {
		switch x := r.IntN(100); {
		case x < 30: // insert an exact flow
			k := ks.exact(r)
			seq++
			err := tr.Insert(k, seq)
			_, exists := m.m[k]
			switch {
			case exists:
				if !errors.Is(err, ErrExists) {
					t.Fatalf("op %d: Insert(%v) of a present key: %v, want ErrExists", op, k, err)
				}
			case len(m.m) == capacity:
				if !errors.Is(err, ErrFull) {
					t.Fatalf("op %d: Insert(%v) into a full tree: %v, want ErrFull", op, k, err)
				}
			case err != nil:
				t.Fatalf("op %d: Insert(%v): %v", op, k, err)
			default:
				m.insert(k, seq)
			}
		case x < 34: // insert a listener
			k := ks.listener(r)
			seq++
			err := tr.InsertListener(k.Proto, k.LocalAddr, k.LocalPort, seq)
			_, exists := m.m[k]
			switch {
			case exists:
				if !errors.Is(err, ErrExists) {
					t.Fatalf("op %d: InsertListener(%v) of a present key: %v, want ErrExists", op, k, err)
				}
			case len(m.m) == capacity:
				if !errors.Is(err, ErrFull) {
					t.Fatalf("op %d: InsertListener(%v) into a full tree: %v, want ErrFull", op, k, err)
				}
			case err != nil:
				t.Fatalf("op %d: InsertListener(%v): %v", op, k, err)
			default:
				m.insert(k, seq)
			}
		case x < 60: // delete, mostly a present key
			var k Key
			if len(m.keys) > 0 && r.IntN(4) != 0 {
				k = pick(r, m.keys)
			} else if r.IntN(2) == 0 {
				k = ks.exact(r)
			} else {
				k = ks.listener(r)
			}
			_, want := m.m[k]
			if got := tr.Delete(k); got != want {
				t.Fatalf("op %d: Delete(%v) = %v, want %v", op, k, got, want)
			}
			if want {
				m.delete(k)
			}
		case x < 64: // replace
			var k Key
			if len(m.keys) > 0 && r.IntN(2) == 0 {
				k = pick(r, m.keys)
			} else {
				k = ks.exact(r)
			}
			seq++
			_, want := m.m[k]
			if got := tr.Replace(k, seq); got != want {
				t.Fatalf("op %d: Replace(%v) = %v, want %v", op, k, got, want)
			}
			if want {
				m.m[k] = seq
			}
		case x < 99: // lookup, wildcards included
			k := ks.exact(r)
			if len(m.keys) > 0 && r.IntN(3) == 0 {
				if k = pick(r, m.keys); k.IsListener() {
					k.RemoteAddr, k.RemotePort = pick(r, ks.raddrs), pick(r, ks.rport)
				}
			}
			wh, wok := m.lookup(k.Proto, k.LocalAddr, k.RemoteAddr, k.LocalPort, k.RemotePort)
			gh, gok := tr.Lookup(k.Proto, k.LocalAddr.As4(), k.RemoteAddr.As4(), k.LocalPort, k.RemotePort)
			if gh != wh || gok != wok {
				t.Fatalf("op %d: Lookup(%v) = %d, %v; want %d, %v", op, k, gh, gok, wh, wok)
			}
			wh, wok = m.m[k]
			if gh, gok = tr.Get(k); gh != wh || gok != wok {
				t.Fatalf("op %d: Get(%v) = %d, %v; want %d, %v", op, k, gh, gok, wh, wok)
			}
		default: // ordered walks
			checkWalks(t, r, tr, m, ks)
		}
		if tr.Len() != len(m.m) {
			t.Fatalf("op %d: Len %d, want %d", op, tr.Len(), len(m.m))
		}
		if op%20000 == 0 {
			checkTree(t, tr)
		}
	}
	checkTree(t, tr)
	sameKVs(t, "final Ascend", collectAll(tr.Ascend), m.sorted(func(Key) bool { return true }))
	if tr.recycles == 0 && ops > 10000 {
		t.Errorf("no recycle in %d ops; the test does not exercise reuse", ops)
	}
}

func checkWalks(t *testing.T, r *rand.Rand, tr *Tree, m *model, ks keySpace) {
	t.Helper()
	proto := pick(r, ks.protos)
	switch r.IntN(4) {
	case 0:
		sameKVs(t, "Ascend", collectAll(tr.Ascend), m.sorted(func(Key) bool { return true }))
	case 1:
		sameKVs(t, fmt.Sprintf("AscendProto(%d)", proto),
			collectAll(func(fn func(Key, Handle) bool) { tr.AscendProto(proto, fn) }),
			m.sorted(func(k Key) bool { return k.Proto == proto }))
	case 2:
		p := ks.prefix(r, ks.laddrs)
		sameKVs(t, fmt.Sprintf("AscendPrefix(%d, %v)", proto, p),
			collectAll(func(fn func(Key, Handle) bool) { tr.AscendPrefix(proto, p, fn) }),
			m.sorted(func(k Key) bool { return k.Proto == proto && inPrefix(k.LocalAddr, p) }))
	case 3:
		p := ks.prefix(r, ks.raddrs)
		sameKVs(t, fmt.Sprintf("AscendRemotePrefix(%d, %v)", proto, p),
			collectAll(func(fn func(Key, Handle) bool) { tr.AscendRemotePrefix(proto, p, fn) }),
			m.sorted(func(k Key) bool { return k.Proto == proto && inPrefix(k.RemoteAddr, p) }))
	}
}

// TestModel runs millions of random operations (fewer with -short) against
// the map model, over key spaces of different shapes, capacities that are
// reached and slacks that recycle often.
func TestModel(t *testing.T) {
	ops := 1_000_000 // per case: 4 cases, 4M operations in all
	if testing.Short() {
		ops = 50_000
	}
	seed := uint64(1)
	for name, ks := range spaces(rand.New(rand.NewPCG(7, 7))) {
		for _, c := range []struct{ capacity, slack int }{{300, 1}, {3000, 64}} {
			seed++
			seed := seed
			t.Run(fmt.Sprintf("%s/cap%d/slack%d", name, c.capacity, c.slack), func(t *testing.T) {
				t.Parallel()
				runModel(t, rand.New(rand.NewPCG(seed, 42)), ks, c.capacity, c.slack, ops)
			})
		}
	}
}
