package main

import (
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
)

// DefaultTableSize is the lookup table's default size M: a prime, as the Maglev paper wants
// (every skip in [1, M-1] is then coprime with M, so every backend's preference list is a
// permutation of all M slots), and large against the backend count (the paper uses M = 65537
// and recommends M ≥ 100·N, which keeps the slot counts of any two backends within 1% of each
// other).
const DefaultTableSize = 65537

// MaxBackends bounds the backends of one Table: slots store backend indices as uint16.
const MaxBackends = 1<<16 - 1

// ErrTable is matched (errors.Is) by every error NewTable returns.
var ErrTable = errors.New("maglev table")

// Table is a Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software
// Network Load Balancer", NSDI 2016, section 3.4): Size slots, each naming a backend by its
// index in the list given to NewTable. A flow goes to the backend of slot hash % Size.
//
// A Table is immutable once built, so any number of goroutines may call Lookup at once; a
// change of the backend set builds a new Table (see LB, which swaps it in atomically).
type Table struct {
	backends []string
	slots    []uint16 // backend index per slot
	counts   []int    // slots per backend
}

// NewTable builds the table of size slots for backends, named by strings that are unique and
// stable (the name, not the position in the list, decides a backend's slots: the same set in
// another order, or on another load balancer, gives the same table up to the indices: the
// backends take their turns in name order).
// size must be a prime at least as large as len(backends). An empty backend list gives a
// table whose Lookup returns -1.
//
// Population follows the paper's Algorithm 1. Backend i's preference list is the permutation
// p_i(j) = (offset_i + j·skip_i) mod M, with offset_i = h1(name) mod M and
// skip_i = h2(name) mod (M−1) + 1 from two independent hashes of the name. The backends then
// take turns, round-robin: at its turn each backend claims the next slot of its list that is
// still empty, until every slot is taken. Each round gives every backend exactly one slot, so
// slot counts differ by at most one between any two backends (⌊M/N⌋ or ⌈M/N⌉ each).
// The cost is O(M log M) expected; the permutations are walked, not stored.
func NewTable(backends []string, size int) (*Table, error) {
	if !isPrime(size) {
		return nil, fmt.Errorf("%w: size %d is not a prime (use %d, or another prime ≥ 100× the backends)", ErrTable, size, DefaultTableSize)
	}
	if len(backends) > size || len(backends) > MaxBackends {
		return nil, fmt.Errorf("%w: %d backends do not fit %d slots (at most min(size, %d))", ErrTable, len(backends), size, MaxBackends)
	}
	seen := make(map[string]bool, len(backends))
	for _, b := range backends {
		if seen[b] {
			return nil, fmt.Errorf("%w: backend %q is listed twice: names must be unique", ErrTable, b)
		}
		seen[b] = true
	}
	t := &Table{
		backends: append([]string(nil), backends...),
		slots:    make([]uint16, size),
		counts:   make([]int, len(backends)),
	}
	n := len(backends)
	if n == 0 {
		return t, nil
	}
	m := uint64(size)
	pos := make([]uint64, n)  // where backend i's permutation stands: p_i(next_i)
	skip := make([]uint64, n) // its step
	for i, name := range backends {
		h1, h2 := nameHashes(name)
		pos[i] = h1 % m
		skip[i] = h2%(m-1) + 1
	}
	// Turns go in name order, not list order: contested slots go to whoever claims first, so
	// this makes the table a function of the set alone.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return backends[order[a]] < backends[order[b]] })
	taken := make([]bool, size)
	filled := 0
	for {
		for _, i := range order {
			c := pos[i]
			for taken[c] {
				c += skip[i]
				if c >= m {
					c -= m
				}
			}
			taken[c] = true
			t.slots[c] = uint16(i)
			t.counts[i]++
			if c += skip[i]; c >= m {
				c -= m
			}
			pos[i] = c
			if filled++; filled == size {
				return t, nil
			}
		}
	}
}

// Lookup returns the index (in the list given to NewTable) of the backend for a flow of the
// given hash, or -1 when the table has no backend. It does not allocate.
func (t *Table) Lookup(hash uint64) int {
	if len(t.backends) == 0 {
		return -1
	}
	return int(t.slots[hash%uint64(len(t.slots))])
}

// Size is the number of slots, M.
func (t *Table) Size() int { return len(t.slots) }

// Backends returns the backend names, in the order given to NewTable.
func (t *Table) Backends() []string { return append([]string(nil), t.backends...) }

// Counts returns how many slots each backend holds, by index.
func (t *Table) Counts() []int { return append([]int(nil), t.counts...) }

// Slot returns the name of the backend holding slot i ("" when the table is empty).
func (t *Table) Slot(i int) string {
	if len(t.backends) == 0 {
		return ""
	}
	return t.backends[t.slots[i]]
}

// nameHashes returns the two hashes of a backend name that give its offset and skip: FNV-1a
// of the name under two different one-byte prefixes, each run through a 64-bit finalizer so
// that names differing in one character ("be1", "be2") get unrelated values.
func nameHashes(name string) (h1, h2 uint64) {
	f := fnv.New64a()
	f.Write([]byte{'o'})
	f.Write([]byte(name))
	h1 = mix64(f.Sum64())
	f.Reset()
	f.Write([]byte{'s'})
	f.Write([]byte(name))
	h2 = mix64(f.Sum64() ^ 0x9e3779b97f4a7c15)
	return h1, h2
}

// mix64 is the finalizer of MurmurHash3 (fmix64): every input bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
