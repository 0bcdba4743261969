package main

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func names(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("be-%d", i)
	}
	return s
}

func mustTable(t *testing.T, backends []string, size int) *Table {
	t.Helper()
	tb, err := NewTable(backends, size)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestTableBalance: the round-robin fill gives every backend ⌊M/N⌋ or ⌈M/N⌉ slots (the Maglev
// paper's balance: each round every backend claims exactly one empty slot), for the default
// size and for small primes.
func TestTableBalance(t *testing.T) {
	for _, size := range []int{DefaultTableSize, 251, 13} {
		for n := 1; n <= 20 && n <= size; n++ {
			tb := mustTable(t, names(n), size)
			counts := tb.Counts()
			sum := 0
			for _, c := range counts {
				sum += c
			}
			lo, hi := slices.Min(counts), slices.Max(counts)
			if sum != size || lo < size/n || hi > (size+n-1)/n {
				t.Errorf("M=%d N=%d: slot counts %v (sum %d); want each %d or %d, sum %d", size, n, counts, sum, size/n, (size+n-1)/n, size)
			}
		}
	}
}

// TestTableLookup: Lookup is hash mod M into the slots; an empty table answers -1.
func TestTableLookup(t *testing.T) {
	tb := mustTable(t, names(3), 13)
	for h := uint64(0); h < 100; h++ {
		if got, want := tb.Backends()[tb.Lookup(h)], tb.Slot(int(h%13)); got != want {
			t.Fatalf("Lookup(%d) = %s; slot %d holds %s", h, got, h%13, want)
		}
	}
	if got := tb.Lookup(1 << 63); got < 0 || got > 2 {
		t.Fatalf("Lookup(1<<63) = %d", got)
	}
	empty := mustTable(t, nil, 13)
	if got := empty.Lookup(5); got != -1 {
		t.Fatalf("empty table: Lookup = %d; want -1", got)
	}
}

// TestTableOrderIndependent: a backend's slots follow from its name, not its place in the list,
// so two load balancers given the same set in different orders agree on every slot.
func TestTableOrderIndependent(t *testing.T) {
	a := names(7)
	b := slices.Clone(a)
	slices.Reverse(b)
	ta, tb := mustTable(t, a, 1009), mustTable(t, b, 1009)
	for s := range 1009 {
		if ta.Slot(s) != tb.Slot(s) {
			t.Fatalf("slot %d: %s in one order, %s in the other", s, ta.Slot(s), tb.Slot(s))
		}
	}
}

func TestTableErrors(t *testing.T) {
	for _, c := range []struct {
		backends []string
		size     int
	}{
		{names(3), 65536},             // not a prime
		{names(3), 1},                 // not a prime
		{names(14), 13},               // more backends than slots
		{[]string{"a", "b", "a"}, 13}, // duplicate
	} {
		if _, err := NewTable(c.backends, c.size); !errors.Is(err, ErrTable) {
			t.Errorf("NewTable(%v, %d) = %v; want an ErrTable", c.backends, c.size, err)
		}
	}
}

// disruption compares two tables slot by slot: the fraction of all slots whose backend
// changed, and the fraction of the slots of backends present in both whose backend changed.
func disruption(before, after *Table, gone string) (changed, movedKept float64) {
	n, kept, moved := 0, 0, 0
	for s := range before.Size() {
		was, is := before.Slot(s), after.Slot(s)
		if was != is {
			n++
		}
		if was != gone {
			kept++
			if was != is {
				moved++
			}
		}
	}
	return float64(n) / float64(before.Size()), float64(moved) / float64(kept)
}

// removeEpsilon bounds, for N = 5..10 and M = 65537, how far the fraction of slots that change
// when one of N backends goes may exceed the removed backend's own share (≈ 1/N, the least any
// scheme can move), and so also the fraction of the other backends' slots that move. Measured
// with the names be-0..be-9: the changed fraction exceeds 1/N by at most 0.0038 (N=9, 10) and
// at most 0.0042 of the other backends' slots move; other name sets measured up to 0.0027 over
// 1/N. ε = 0.01, 1% of the table, leaves room for other names.
const removeEpsilon = 0.01

// TestTableRemoveOne: removing one of N backends (each in turn, N = 5..10) moves the removed
// backend's slots — ⌊M/N⌋ or ⌈M/N⌉, so 1/N within 1/M — and a few others: Maglev's disruption
// is small but not zero. The changed fraction must lie in [1/N − 1/M, 1/N + ε] and the other
// backends' slots that move must stay under ε.
func TestTableRemoveOne(t *testing.T) {
	const m = DefaultTableSize
	for n := 5; n <= 10; n++ {
		all := names(n)
		full := mustTable(t, all, m)
		var worst, worstKept, sum float64
		for r := range n {
			rest := slices.Delete(slices.Clone(all), r, r+1)
			changed, movedKept := disruption(full, mustTable(t, rest, m), all[r])
			if changed < 1/float64(n)-1.0/m || changed > 1/float64(n)+removeEpsilon || movedKept > removeEpsilon {
				t.Errorf("N=%d, remove %s: %.4f of slots changed (want [%.4f, %.4f]), %.4f of the others' slots moved (want ≤ %.3f)",
					n, all[r], changed, 1/float64(n)-1.0/m, 1/float64(n)+removeEpsilon, movedKept, removeEpsilon)
			}
			sum += changed
			worst = max(worst, changed-1/float64(n))
			worstKept = max(worstKept, movedKept)
		}
		t.Logf("N=%2d: 1/N = %.4f, slots changed: mean %.4f, worst 1/N%+.4f; other backends' slots moved: worst %.4f",
			n, 1/float64(n), sum/float64(n), worst, worstKept)
	}
}

// TestTableAddOne: adding an (N+1)th backend moves about 1/(N+1) of the slots, to the new one,
// and few others.
func TestTableAddOne(t *testing.T) {
	const m = DefaultTableSize
	for n := 4; n <= 9; n++ {
		before, after := mustTable(t, names(n), m), mustTable(t, names(n+1), m)
		changed, _ := disruption(before, after, "")
		want := 1 / float64(n+1)
		if changed < want-1.0/m || changed > want+removeEpsilon {
			t.Errorf("N=%d -> %d: %.4f of slots changed; want [%.4f, %.4f]", n, n+1, changed, want-1.0/m, want+removeEpsilon)
		}
		t.Logf("N=%d -> %d: 1/(N+1) = %.4f, slots changed %.4f", n, n+1, want, changed)
	}
}

// TestTableDisruptionShrinksWithSize: the paper's trade-off: the smaller the table against the
// backend count, the more slots of the remaining backends move when one goes. Mean over every
// backend removed in turn, N = 10.
func TestTableDisruptionShrinksWithSize(t *testing.T) {
	const n = 10
	all := names(n)
	last := 1.0
	for _, m := range []int{101, 251, 1009, DefaultTableSize} {
		full := mustTable(t, all, m)
		var sum, worstKept float64
		for r := range n {
			changed, movedKept := disruption(full, mustTable(t, slices.Delete(slices.Clone(all), r, r+1), m), all[r])
			sum += changed
			worstKept = max(worstKept, movedKept)
		}
		mean := sum / n
		t.Logf("M=%5d N=%d: slots changed: mean %.4f (1/N = %.4f); other backends' slots moved: worst %.4f", m, n, mean, 1.0/n, worstKept)
		if mean >= last {
			t.Errorf("M=%d: mean disruption %.4f is not below the smaller table's %.4f", m, mean, last)
		}
		last = mean
	}
}
