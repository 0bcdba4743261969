package flowtree

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The benchmarks compare the tree with the two obvious alternatives a shard
// could use: a Go map of endpoint pointers behind a sync.RWMutex, and a
// sync.Map. Results and the command that made them are in
// bench/results/flowtree.txt (made with the first, hash-indexed version).
// paired_test.go compares the tries with that version, in paired rounds.

var benchSizes = []struct {
	name string
	n    int
}{{"1K", 1 << 10}, {"64K", 1 << 16}, {"1M", 1 << 20}}

// fkey is the map's key: the 5-tuple in 16 bytes.
type fkey struct {
	laddr, raddr uint32
	lport, rport uint16
	proto        uint8
}

// endpoint stands for what a map of pointers points to.
type endpoint struct {
	h     Handle
	state [3]uint32
}

type rwMap struct {
	mu sync.RWMutex
	m  map[fkey]*endpoint
}

type benchKey struct {
	fk            fkey
	k             Key
	local, remote [4]byte
}

// fixture is one structure filled with n flows. keys are in random order;
// extra are flows that are not in the structure, for writers and inserts.
type fixture struct {
	impl  string
	n     int
	keys  []benchKey
	extra []benchKey
	tree  *Tree
	rw    *rwMap
	sm    *sync.Map
	mc    *memCtl
}

// memCtl is the memory control of BenchmarkScaling: a read-only chained hash table laid out
// like the first version's hash index (4-byte buckets, 24-byte leaves in insertion order, the
// same counts), with none of the tree's code: no key encoding, no generation checks. It shows
// what two readers of that much shared, read-only memory get from this machine.
type memCtl struct {
	buckets []uint32
	leaves  []memLeaf
	shift   uint
}

type memLeaf struct {
	k       fkey
	h, next uint32
}

func (c *memCtl) hash(k *fkey) uint32 {
	x := (uint64(k.laddr)<<32 | uint64(k.raddr)) ^ (uint64(k.lport)<<16|uint64(k.rport))*0x9e3779b97f4a7c15
	x *= 0xff51afd7ed558ccd
	return uint32(x >> c.shift)
}

func newMemCtl(keys []benchKey, capacity int) *memCtl {
	nb := 1
	for nb < capacity {
		nb <<= 1
	}
	c := &memCtl{buckets: make([]uint32, nb), leaves: make([]memLeaf, capacity+1), shift: uint(64 - bits.Len(uint(nb-1)))}
	for i := range keys {
		b := &c.buckets[c.hash(&keys[i].fk)]
		c.leaves[i+1] = memLeaf{k: keys[i].fk, h: uint32(i), next: *b}
		*b = uint32(i + 1)
	}
	return c
}

func (c *memCtl) lookup(k *fkey) Handle {
	for j := c.buckets[c.hash(k)]; j != 0; j = c.leaves[j].next {
		if c.leaves[j].k == *k {
			return Handle(c.leaves[j].h)
		}
	}
	return 0
}

const extraKeys = 1 << 12

// Only one fixture is kept at a time, so that a big one does not slow down
// (or, for the GC benchmark, get marked in) the benchmarks of another.
var cached *fixture

func getFixture(b *testing.B, impl string, n int) *fixture {
	if cached != nil && cached.impl == impl && cached.n == n {
		return cached
	}
	b.StopTimer()
	defer b.StartTimer()
	cached = nil
	runtime.GC()
	f := &fixture{impl: impl, n: n}
	f.keys, f.extra = benchKeys(n, extraKeys)
	switch impl {
	case "tree":
		f.tree = New(n + extraKeys)
		for i, k := range f.keys {
			if err := f.tree.Insert(k.k, Handle(i)); err != nil {
				b.Fatal(err)
			}
		}
	case "memctl":
		f.mc = newMemCtl(f.keys, n+extraKeys)
	case "rwmap":
		f.rw = &rwMap{m: make(map[fkey]*endpoint)}
		for i, k := range f.keys {
			f.rw.m[k.fk] = &endpoint{h: Handle(i)}
		}
	case "syncmap":
		f.sm = new(sync.Map)
		for i, k := range f.keys {
			f.sm.Store(k.fk, &endpoint{h: Handle(i)})
		}
	default:
		b.Fatalf("unknown impl %q", impl)
	}
	cached = f
	return f
}

// keyCache keeps the keys of the last size asked for: making 1M of them
// takes a while.
var keyCache struct {
	n, extra   int
	keys, more []benchKey
}

// benchKeys returns n+extra distinct TCP flows to a few local addresses and
// ports from random remote addresses in 198.18.0.0/15 and random ports, in
// random order.
func benchKeys(n, extra int) (keys, more []benchKey) {
	if keyCache.n != n || keyCache.extra != extra {
		keyCache.keys, keyCache.more = nil, nil
		keyCache.keys, keyCache.more = makeBenchKeys(n, extra)
		keyCache.n, keyCache.extra = n, extra
	}
	return keyCache.keys, keyCache.more
}

func makeBenchKeys(n, extra int) (keys, more []benchKey) {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	seen := make(map[fkey]bool, n+extra)
	all := make([]benchKey, 0, n+extra)
	for len(all) < n+extra {
		fk := fkey{
			laddr: 0xc6120001 + uint32(r.IntN(4)), // 198.18.0.1-4
			lport: []uint16{80, 443, 8080, 53}[r.IntN(4)],
			raddr: 0xc6120000 | r.Uint32()&0x1ffff, // 198.18.0.0/15
			rport: uint16(1024 + r.IntN(64512)),
			proto: tcp,
		}
		if seen[fk] {
			continue
		}
		seen[fk] = true
		var bk benchKey
		bk.fk = fk
		binary.BigEndian.PutUint32(bk.local[:], fk.laddr)
		binary.BigEndian.PutUint32(bk.remote[:], fk.raddr)
		bk.k = Key{Proto: fk.proto, LocalAddr: addrFrom(fk.laddr), LocalPort: fk.lport, RemoteAddr: addrFrom(fk.raddr), RemotePort: fk.rport}
		all = append(all, bk)
	}
	return all[:n], all[n:]
}

// lookupFunc returns a function that looks up key i of f.
func (f *fixture) lookupFunc() func(i int) Handle {
	keys, mask := f.keys, len(f.keys)-1
	switch f.impl {
	case "tree":
		t := f.tree
		return func(i int) Handle {
			k := &keys[i&mask]
			h, _ := t.Lookup(k.fk.proto, k.local, k.remote, k.fk.lport, k.fk.rport)
			return h
		}
	case "memctl":
		c := f.mc
		return func(i int) Handle { return c.lookup(&keys[i&mask].fk) }
	case "rwmap":
		m := f.rw
		return func(i int) Handle {
			k := &keys[i&mask]
			m.mu.RLock()
			e := m.m[k.fk]
			m.mu.RUnlock()
			return e.h
		}
	default:
		m := f.sm
		return func(i int) Handle {
			k := &keys[i&mask]
			e, _ := m.Load(k.fk)
			return e.(*endpoint).h
		}
	}
}

// insertFunc and deleteFunc add and remove extra key i of f.
func (f *fixture) insertFunc() func(i int) {
	extra := f.extra
	switch f.impl {
	case "tree":
		t := f.tree
		return func(i int) {
			if err := t.Insert(extra[i].k, Handle(i)); err != nil {
				panic(err)
			}
		}
	case "rwmap":
		m := f.rw
		return func(i int) {
			e := &endpoint{h: Handle(i)}
			m.mu.Lock()
			m.m[extra[i].fk] = e
			m.mu.Unlock()
		}
	default:
		m := f.sm
		return func(i int) { m.Store(extra[i].fk, &endpoint{h: Handle(i)}) }
	}
}

func (f *fixture) deleteFunc() func(i int) {
	extra := f.extra
	switch f.impl {
	case "tree":
		t := f.tree
		return func(i int) {
			if !t.Delete(extra[i].k) {
				panic("delete of an inserted key failed")
			}
		}
	case "rwmap":
		m := f.rw
		return func(i int) {
			m.mu.Lock()
			delete(m.m, extra[i].fk)
			m.mu.Unlock()
		}
	default:
		m := f.sm
		return func(i int) { m.Delete(extra[i].fk) }
	}
}

// startWriter runs inserts and deletes of the extra keys on another
// goroutine, as fast as it can, until the returned function is called; that
// function returns how many insert+delete pairs it made.
func (f *fixture) startWriter() (stop func() int) {
	ins, del := f.insertFunc(), f.deleteFunc()
	var done atomic.Bool
	var writes int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !done.Load(); i++ {
			j := i & (extraKeys - 1)
			ins(j)
			del(j)
			writes++
		}
	}()
	return func() int {
		done.Store(true)
		wg.Wait()
		return writes
	}
}

var sink atomic.Uint32

// runReaders splits b.N lookups over the given number of goroutines.
func runReaders(b *testing.B, readers int, lookup func(int) Handle) {
	var wg sync.WaitGroup
	b.ResetTimer()
	for r := range readers {
		lo, hi := b.N*r/readers, b.N*(r+1)/readers
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s Handle
			for i := lo; i < hi; i++ {
				s += lookup(i + r*7919)
			}
			sink.Add(uint32(s))
		}()
	}
	wg.Wait()
	b.StopTimer()
}

// BenchmarkLookup measures one lookup of a present flow, with and without a
// writer goroutine inserting and deleting other flows at full speed. With a
// writer, writes/op says how many insert+delete pairs it made per lookup.
func BenchmarkLookup(b *testing.B) {
	for _, size := range benchSizes {
		for _, impl := range []string{"tree", "rwmap", "syncmap"} {
			for _, writer := range []bool{false, true} {
				name := size.name + "/" + impl
				if writer {
					name += "+writer"
				}
				b.Run(name, func(b *testing.B) {
					f := getFixture(b, impl, size.n)
					lookup := f.lookupFunc()
					var stop func() int
					if writer {
						stop = f.startWriter()
					}
					runReaders(b, 1, lookup)
					if writer {
						b.ReportMetric(float64(stop())/float64(b.N), "writes/op")
					}
				})
			}
		}
	}
}

// BenchmarkScaling measures how lookup throughput grows from one reader
// goroutine to two, with no writer. Each iteration is one round: k lookups
// on one goroutine, then k lookups on each of two goroutines at once, with k
// sized so that the first takes about 40ms. Two readers need two idle cores,
// and on a shared VM other processes come and go, so a round counts only if
// the rest of the machine used less than 20ms of CPU time during it (from
// /proc/stat and /proc/self/stat; where those are missing every round
// counts). Metrics, medians over the counted rounds:
//
//   - 1r-ns, 2r-ns: wall time per lookup with one and two readers;
//   - x: (lookups/s with 2 readers) / (lookups/s with 1);
//   - clean: the fraction of rounds that counted (if none did, all count).
//
// "control" is not a lookup but a few multiplications per call that touch
// no memory: it shares nothing, so its x is the most that this machine gives
// two goroutines at that moment, and the others should be read against it.
// "memctl" is the memory control (memCtl): the tree's lookup footprint and
// access pattern with none of its code, so the tree's x read against memctl's
// x tells what the tree's own code costs in scaling, apart from the machine's
// memory system.
// ns/op is the time of one round. Use a long -benchtime (2s) for enough
// rounds.
func BenchmarkScaling(b *testing.B) {
	for _, size := range benchSizes {
		for _, impl := range []string{"tree", "memctl", "rwmap", "syncmap", "control"} {
			if impl == "control" && size.n != benchSizes[0].n {
				continue
			}
			b.Run(size.name+"/"+impl, func(b *testing.B) {
				lookup := control
				if impl != "control" {
					lookup = getFixture(b, impl, size.n).lookupFunc()
				}
				const probe = 20000
				k := int(probe * 40e-3 / timeReaders(1, probe, lookup))
				var all, clean [][3]float64 // 1r-ns, 2r-ns, x
				b.ResetTimer()
				for range b.N {
					m0, s0, ok0 := cpuTicks()
					w1 := timeReaders(1, k, lookup)
					w2 := timeReaders(2, k, lookup)
					m1, s1, ok1 := cpuTicks()
					r := [3]float64{w1 / float64(k) * 1e9, w2 / float64(2*k) * 1e9, 2 * w1 / w2}
					all = append(all, r)
					if !ok0 || !ok1 || (m1-m0)-(s1-s0) < 2 {
						clean = append(clean, r)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(len(clean))/float64(len(all)), "clean")
				if len(clean) == 0 {
					clean = all
				}
				for i, unit := range []string{"1r-ns", "2r-ns", "x"} {
					v := make([]float64, len(clean))
					for j, r := range clean {
						v[j] = r[i]
					}
					b.ReportMetric(median(v), unit)
				}
			})
		}
	}
}

// BenchmarkScalingPaired measures the tree's scaling and the memory control's (memCtl) in
// alternate rounds, so that both see the same state of a shared machine: per round, x of
// each (as in BenchmarkScaling) and their quotient. Metrics, medians over the rounds:
// x-tree, x-memctl, and tree/memctl (1.0: the tree's code costs nothing in scaling beyond what
// reading that much shared memory costs on this machine).
func BenchmarkScalingPaired(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			f := getFixture(b, "tree", size.n)
			tree := f.lookupFunc()
			mc := newMemCtl(f.keys, size.n+extraKeys)
			keys, mask := f.keys, len(f.keys)-1
			ctl := func(i int) Handle { return mc.lookup(&keys[i&mask].fk) }
			const probe = 20000
			k := int(probe * 40e-3 / timeReaders(1, probe, tree))
			var xt, xm, q []float64
			b.ResetTimer()
			for round := range b.N {
				x := func(lookup func(int) Handle) float64 {
					return 2 * timeReaders(1, k, lookup) / timeReaders(2, k, lookup)
				}
				var a, c float64
				if round%2 == 0 {
					a, c = x(tree), x(ctl)
				} else {
					c, a = x(ctl), x(tree)
				}
				xt, xm, q = append(xt, a), append(xm, c), append(q, a/c)
			}
			b.StopTimer()
			b.ReportMetric(median(xt), "x-tree")
			b.ReportMetric(median(xm), "x-memctl")
			b.ReportMetric(median(q), "tree/memctl")
		})
	}
}

// cpuTicks returns the CPU time used so far by the whole machine and by this
// process, in clock ticks (usually 10ms), or false if /proc cannot tell.
func cpuTicks() (machine, self int64, ok bool) {
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(st), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, false
	}
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		machine += n
	}
	ps, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, false
	}
	_, rest, _ := strings.Cut(string(ps), ") ")
	f = strings.Fields(rest) // state ppid ... utime (12th) stime (13th)
	if len(f) < 13 {
		return 0, 0, false
	}
	for _, i := range []int{11, 12} {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		self += n
	}
	return machine, self, true
}

// control stands in for a lookup that shares nothing with other readers.
func control(i int) Handle {
	x := uint64(i)
	for range 8 {
		x = x*6364136223846793005 + 1442695040888963407
		x ^= x >> 29
	}
	return Handle(x)
}

// timeReaders runs k lookups on each of readers goroutines at once and
// returns the wall time in seconds.
func timeReaders(readers, k int, lookup func(int) Handle) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s Handle
			for i := range k {
				s += lookup(i + r*7919)
			}
			sink.Add(uint32(s))
		}()
	}
	wg.Wait()
	return time.Since(start).Seconds()
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// BenchmarkWrite measures inserting and deleting flows in a structure that
// holds n of them, with no concurrent readers: batches of up to n/8 new
// flows are inserted, then deleted. ns/op is one insert plus one delete;
// insert-ns and delete-ns split it.
func BenchmarkWrite(b *testing.B) {
	for _, size := range benchSizes {
		for _, impl := range []string{"tree", "rwmap", "syncmap"} {
			b.Run(size.name+"/"+impl, func(b *testing.B) {
				f := getFixture(b, impl, size.n)
				ins, del := f.insertFunc(), f.deleteFunc()
				var tIns, tDel time.Duration
				off := 0
				b.ResetTimer()
				for i := 0; i < b.N; {
					batch := min(b.N-i, extraKeys, size.n/8)
					t0 := time.Now()
					for j := range batch {
						ins((off + j) & (extraKeys - 1))
					}
					t1 := time.Now()
					for j := range batch {
						del((off + j) & (extraKeys - 1))
					}
					tIns, tDel = tIns+t1.Sub(t0), tDel+time.Since(t1)
					i += batch
					off += batch
				}
				b.ReportMetric(float64(tIns.Nanoseconds())/float64(b.N), "insert-ns")
				b.ReportMetric(float64(tDel.Nanoseconds())/float64(b.N), "delete-ns")
			})
		}
	}
}

// BenchmarkMemory reports the bytes per flow of each structure, measured as
// the growth of the live heap while it is built (for the maps, the endpoint
// objects they point to are allocated first and not counted). For the tree
// the number is its whole arena, allocated for capacity n.
func BenchmarkMemory(b *testing.B) {
	for _, size := range benchSizes {
		for _, impl := range []string{"tree", "rwmap", "syncmap"} {
			b.Run(size.name+"/"+impl, func(b *testing.B) {
				cached = nil
				keys, _ := benchKeys(size.n, extraKeys)
				eps := make([]*endpoint, len(keys))
				for i := range eps {
					eps[i] = &endpoint{h: Handle(i)}
				}
				before := liveHeap()
				var keep any
				switch impl {
				case "tree":
					t := New(size.n)
					for i, k := range keys {
						t.Insert(k.k, Handle(i))
					}
					keep = t
				case "rwmap":
					m := &rwMap{m: make(map[fkey]*endpoint)}
					for i, k := range keys {
						m.m[k.fk] = eps[i]
					}
					keep = m
				default:
					m := new(sync.Map)
					for i, k := range keys {
						m.Store(k.fk, eps[i])
					}
					keep = m
				}
				after := liveHeap()
				runtime.KeepAlive(keep)
				runtime.KeepAlive(eps)
				runtime.KeepAlive(keys)
				b.ReportMetric(float64(after-before)/float64(size.n), "B/entry")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkGC measures what a full garbage collection costs while 1M flows
// are live: ns/op is the wall time of runtime.GC and mark-ms/op the mark
// CPU time (runtime/metrics). "none" is the same heap without any table;
// "map" is a Go map of pointers to 1M endpoint objects; "tree" is the tree
// (its endpoints would live in a pointer-free table and are not counted).
func BenchmarkGC(b *testing.B) {
	const n = 1 << 20
	for _, impl := range []string{"none", "tree", "map"} {
		b.Run("1M/"+impl, func(b *testing.B) {
			cached = nil
			keys, _ := benchKeys(n, extraKeys)
			var keep any
			switch impl {
			case "tree":
				t := New(n)
				for i, k := range keys {
					t.Insert(k.k, Handle(i))
				}
				keep = t
			case "map":
				m := make(map[fkey]*endpoint)
				for i, k := range keys {
					m[k.fk] = &endpoint{h: Handle(i)}
				}
				keep = m
			}
			keys, keyCache.keys, keyCache.more, keyCache.n = nil, nil, nil, 0
			runtime.GC()
			mark0 := gcMarkSeconds()
			b.ResetTimer()
			for range b.N {
				runtime.GC()
			}
			b.StopTimer()
			b.ReportMetric((gcMarkSeconds()-mark0)*1e3/float64(b.N), "mark-ms/op")
			runtime.KeepAlive(keep)
		})
	}
}

var markMetrics = []metrics.Sample{
	{Name: "/cpu/classes/gc/mark/assist:cpu-seconds"},
	{Name: "/cpu/classes/gc/mark/dedicated:cpu-seconds"},
	{Name: "/cpu/classes/gc/mark/idle:cpu-seconds"},
}

func gcMarkSeconds() float64 {
	metrics.Read(markMetrics)
	s := 0.0
	for _, m := range markMetrics {
		s += m.Value.Float64()
	}
	return s
}
