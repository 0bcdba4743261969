package flowtree

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The paired benchmarks of issue 17 compare the trie lookups (Tree) with the
// hash-indexed tree they replaced (hashTree, oldtree_test.go) in the same run:
// every round times both, in alternating order, on the same keys, so that
// both see the same state of a shared machine; the reported ratios are
// medians of the per-round ratios. Results and the command that made them
// are in bench/results/flowtree-part2.txt.

// pairImpl is the part of both trees that the benchmarks use.
type pairImpl interface {
	Lookup(proto uint8, local, remote [4]byte, lport, rport uint16) (Handle, bool)
	Insert(k Key, h Handle) error
	Delete(k Key) bool
}

type benchPair struct {
	n     int
	keys  []benchKey
	extra []benchKey
	impl  [2]pairImpl // 0: trie (Tree), 1: hash (hashTree)
}

var pairNames = [2]string{"trie", "hash"}

var cachedPair *benchPair

func getPair(b *testing.B, n int) *benchPair {
	if cachedPair != nil && cachedPair.n == n {
		return cachedPair
	}
	cachedPair, cached = nil, nil
	runtime.GC()
	p := &benchPair{n: n}
	p.keys, p.extra = benchKeys(n, extraKeys)
	p.impl[0], p.impl[1] = New(n+extraKeys), newHashTree(n+extraKeys)
	for _, t := range p.impl {
		for i, k := range p.keys {
			if err := t.Insert(k.k, Handle(i)); err != nil {
				b.Fatal(err)
			}
		}
	}
	cachedPair = p
	return p
}

func lookupOf(t pairImpl, keys []benchKey) func(int) Handle {
	mask := len(keys) - 1
	return func(i int) Handle {
		k := &keys[i&mask]
		h, _ := t.Lookup(k.fk.proto, k.local, k.remote, k.fk.lport, k.fk.rport)
		return h
	}
}

// churn runs inserts and deletes of extra on t until stopped.
func churn(t pairImpl, extra []benchKey) (stop func() int) {
	var done atomic.Bool
	var wg sync.WaitGroup
	writes := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !done.Load(); i++ {
			k := extra[i&(len(extra)-1)].k
			if err := t.Insert(k, Handle(i)); err != nil {
				panic(err)
			}
			t.Delete(k)
			writes++
		}
	}()
	return func() int { done.Store(true); wg.Wait(); return writes }
}

// pairedRounds runs b.N rounds; each calls measure(i) for both impls, in
// alternating order, and records the values; it reports the median of each
// and of their ratio (trie/hash) under the given unit.
func pairedRounds(b *testing.B, unit string, measure func(impl int) float64) {
	var v [2][]float64
	var q []float64
	b.ResetTimer()
	for round := range b.N {
		var m [2]float64
		for j := range 2 {
			i := (round + j) & 1
			m[i] = measure(i)
		}
		v[0], v[1], q = append(v[0], m[0]), append(v[1], m[1]), append(q, m[0]/m[1])
	}
	b.StopTimer()
	for i := range 2 {
		b.ReportMetric(median(v[i]), pairNames[i]+"-"+unit)
	}
	b.ReportMetric(median(q), "trie/hash")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPairedLookup measures one lookup of a present flow in each tree,
// with and without a writer goroutine inserting and deleting other flows in
// the tree being measured at full speed. A round is about 10ms of lookups on
// each tree. Use -benchtime 40x or so.
func BenchmarkPairedLookup(b *testing.B) {
	for _, size := range benchSizes {
		for _, writer := range []bool{false, true} {
			name := size.name
			if writer {
				name += "+writer"
			}
			b.Run(name, func(b *testing.B) {
				p := getPair(b, size.n)
				var look [2]func(int) Handle
				for i := range 2 {
					look[i] = lookupOf(p.impl[i], p.keys)
				}
				const probe = 20000
				k := max(int(probe*10e-3/timeReaders(1, probe, look[1])), 1000)
				off := 0
				pairedRounds(b, "ns", func(i int) float64 {
					var stop func() int
					if writer {
						stop = churn(p.impl[i], p.extra)
					}
					off += 7919
					lk := look[i]
					d := timeReaders(1, k, func(j int) Handle { return lk(j + off) })
					if writer {
						stop()
					}
					return d / float64(k) * 1e9
				})
			})
		}
	}
}

// BenchmarkPairedWrite measures inserts and deletes: per round, a batch of
// up to n/8 (at most 4096) new flows is inserted into each tree holding n
// flows, then deleted.
func BenchmarkPairedWrite(b *testing.B) {
	for _, size := range benchSizes {
		for _, op := range []string{"insert", "delete"} {
			b.Run(size.name+"/"+op, func(b *testing.B) {
				p := getPair(b, size.n)
				batch := min(extraKeys, size.n/8)
				pairedRounds(b, "ns", func(i int) float64 {
					t := p.impl[i]
					t0 := time.Now()
					for j := range batch {
						if err := t.Insert(p.extra[j].k, Handle(j)); err != nil {
							panic(err)
						}
					}
					t1 := time.Now()
					for j := range batch {
						t.Delete(p.extra[j].k)
					}
					t2 := time.Now()
					d := t1.Sub(t0)
					if op == "delete" {
						d = t2.Sub(t1)
					}
					return float64(d.Nanoseconds()) / float64(batch)
				})
			})
		}
	}
}

// BenchmarkPairedScaling measures the 2-reader scaling of each tree (as
// BenchmarkScaling's x: lookups/s with two readers over lookups/s with one)
// in alternating rounds.
func BenchmarkPairedScaling(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			p := getPair(b, size.n)
			var look [2]func(int) Handle
			for i := range 2 {
				look[i] = lookupOf(p.impl[i], p.keys)
			}
			const probe = 20000
			k := int(probe * 20e-3 / timeReaders(1, probe, look[1]))
			pairedRounds(b, "x", func(i int) float64 {
				return 2 * timeReaders(1, k, look[i]) / timeReaders(2, k, look[i])
			})
		})
	}
}

// BenchmarkPairedMemory reports the bytes per entry of each tree built with
// capacity n and filled with n flows: the live heap's growth (which for the
// trie includes its arena's growth) and what Bytes reports.
func BenchmarkPairedMemory(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			cachedPair, cached = nil, nil
			keys, _ := benchKeys(size.n, extraKeys)
			for i, name := range pairNames {
				before := liveHeap()
				var t pairImpl
				var bytes int
				if i == 0 {
					t = New(size.n)
				} else {
					t = newHashTree(size.n)
				}
				for j, k := range keys {
					t.Insert(k.k, Handle(j))
				}
				after := liveHeap()
				switch x := t.(type) {
				case *Tree:
					bytes = x.Bytes()
				case *hashTree:
					bytes = x.Bytes()
				}
				runtime.KeepAlive(t)
				b.ReportMetric(float64(after-before)/float64(size.n), name+"-B/entry")
				b.ReportMetric(float64(bytes)/float64(size.n), name+"-Bytes/entry")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkPairedGC measures a full collection with 1M flows live in each
// tree, as BenchmarkGC does (mark CPU per collection), in alternating rounds.
func BenchmarkPairedGC(b *testing.B) {
	const n = 1 << 20
	cachedPair, cached = nil, nil
	keys, _ := benchKeys(n, extraKeys)
	tr, ht := New(n), newHashTree(n)
	for i, k := range keys {
		tr.Insert(k.k, Handle(i))
		ht.Insert(k.k, Handle(i))
	}
	keyCache.keys, keyCache.more, keyCache.n = nil, nil, 0
	keys = nil
	runtime.GC()
	pairedRounds(b, "mark-ms", func(int) float64 {
		m0 := gcMarkSeconds()
		runtime.GC()
		return (gcMarkSeconds() - m0) * 1e3
	})
	runtime.KeepAlive(tr)
	runtime.KeepAlive(ht)
}

// adversarialKeys returns 2^13 flows built so that, in the trie's byte
// order, every one of the 13 key bytes takes one of two values: the trie is
// a complete binary tree of 13 levels, the deepest any set of keys can make,
// and every lookup walks all of it. This is what someone who picks ports and
// addresses to share long prefixes can do at worst.
func adversarialKeys() []benchKey {
	var out []benchKey
	for m := range 1 << 13 {
		var tb [13]byte
		for j := range tb {
			tb[j] = byte(0x55)
			if m>>j&1 != 0 {
				tb[j] = 0xaa
			}
		}
		fk := fkey{
			rport: uint16(tb[0]) | uint16(tb[1])<<8,
			raddr: uint32(tb[2]) | uint32(tb[3])<<8 | uint32(tb[4])<<16 | uint32(tb[5])<<24,
			lport: uint16(tb[6]) | uint16(tb[7])<<8,
			laddr: uint32(tb[8]) | uint32(tb[9])<<8 | uint32(tb[10])<<16 | uint32(tb[11])<<24,
			proto: tb[12],
		}
		var bk benchKey
		bk.fk = fk
		binary.BigEndian.PutUint32(bk.local[:], fk.laddr)
		binary.BigEndian.PutUint32(bk.remote[:], fk.raddr)
		bk.k = Key{Proto: fk.proto, LocalAddr: addrFrom(fk.laddr), LocalPort: fk.lport, RemoteAddr: addrFrom(fk.raddr), RemotePort: fk.rport}
		out = append(out, bk)
	}
	rand.New(rand.NewPCG(5, 5)).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// maxTrieDepth returns the deepest path of the exact-flow trie: the wide
// root and the nodes below it, not the leaf.
func maxTrieDepth(t *Tree) int {
	a := t.arena.Load()
	var walk func(l uint32) int
	walk = func(l uint32) int {
		if l == 0 || l&kindMask == kLeaf {
			return 0
		}
		d := 0
		a.each(l, func(_, c uint32) { d = max(d, walk(c)) })
		return d + 1
	}
	d := 0
	for _, l := range t.wide {
		d = max(d, walk(l))
	}
	return d + 1 // the wide root is a level
}

// BenchmarkAdversarial measures lookups in the trie of 8192 flows chosen to
// make it as deep as it can be (adversarialKeys), paired with 8192 random
// flows (benchKeys), and the hash-indexed tree on the adversarial keys for
// reference. depth is the deepest path of each trie: bounded by the 13 key
// bytes whatever the keys.
func BenchmarkAdversarial(b *testing.B) {
	const n = 1 << 13
	adv := adversarialKeys()
	rnd, _ := benchKeys(n, extraKeys)
	ta, tr, ha := New(n), New(n), newHashTree(n)
	for i := range n {
		if ta.Insert(adv[i].k, Handle(i)) != nil || tr.Insert(rnd[i].k, Handle(i)) != nil || ha.Insert(adv[i].k, Handle(i)) != nil {
			b.Fatal("insert failed")
		}
	}
	looks := []func(int) Handle{lookupOf(ta, adv), lookupOf(tr, rnd), lookupOf(ha, adv)}
	names := []string{"adversarial", "random", "hash-adversarial"}
	const k = 200000
	v := make([][]float64, len(looks))
	var q []float64
	b.ResetTimer()
	for round := range b.N {
		var m [3]float64
		for j := range looks {
			i := (round + j) % len(looks)
			m[i] = timeReaders(1, k, looks[i]) / k * 1e9
			v[i] = append(v[i], m[i])
		}
		q = append(q, m[0]/m[1])
	}
	b.StopTimer()
	for i, name := range names {
		b.ReportMetric(median(v[i]), name+"-ns")
	}
	b.ReportMetric(median(q), "adv/random")
	b.ReportMetric(float64(maxTrieDepth(ta)), "adv-depth")
	b.ReportMetric(float64(maxTrieDepth(tr)), "random-depth")
	b.ReportMetric(0, "ns/op")
}

// TestAdversarialDepth checks the bound the benchmark relies on.
func TestAdversarialDepth(t *testing.T) {
	tr := New(1 << 13)
	for i, k := range adversarialKeys() {
		if err := tr.Insert(k.k, Handle(i)); err != nil {
			t.Fatal(err)
		}
	}
	if d := maxTrieDepth(tr); d < 12 || d > 14 {
		t.Errorf("adversarial trie depth %d, want 12 to 14 (13 key bytes, the wide root)", d)
	}
	checkTree(t, tr)
}
