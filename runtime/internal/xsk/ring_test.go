package xsk

import (
	"math/rand"
	"testing"
)

// TestRingWrap drives a producer and a consumer view of one ring through uint32 index
// wrap-around with random batch sizes, and checks order, bounds and the shared indices.
func TestRingWrap(t *testing.T) {
	for _, size := range []int{1, 2, 8, 64} {
		m := NewMemAddrRing(size)
		// Start near the top of uint32 so the indices wrap during the test.
		m.Producer, m.Consumer = ^uint32(0)-100, ^uint32(0)-100
		prod, cons := m.AddrView(), m.AddrView()
		rng := rand.New(rand.NewSource(int64(size)))
		var next, want uint64
		src := make([]uint64, 2*size+3)
		dst := make([]uint64, 2*size+3)
		for round := 0; round < 20000; round++ {
			k := rng.Intn(len(src))
			for i := range src[:k] {
				src[i] = next + uint64(i)
			}
			n := prod.Enqueue(src[:k])
			next += uint64(n)
			if out := m.Producer - m.Consumer; out > uint32(size) {
				t.Fatalf("size %d: %d entries outstanding", size, out)
			}
			if n < k && m.Producer-m.Consumer != uint32(size) {
				t.Fatalf("size %d: enqueue stopped at %d of %d with room left", size, n, k)
			}
			c := cons.Dequeue(dst[:rng.Intn(len(dst))])
			for _, v := range dst[:c] {
				if v != want {
					t.Fatalf("size %d: dequeued %d, want %d", size, v, want)
				}
				want++
			}
		}
		if m.Producer > 1<<20 {
			t.Fatalf("size %d: indices did not wrap (producer %d)", size, m.Producer)
		}
	}
}

func TestDescRingWrap(t *testing.T) {
	m := NewMemDescRing(16)
	m.Producer, m.Consumer = ^uint32(0)-5, ^uint32(0)-5
	prod, cons := m.DescView(), m.DescView()
	var seq uint64
	got := make([]Desc, 7)
	for round := 0; round < 1000; round++ {
		in := []Desc{{Addr: seq, Len: uint32(seq)}, {Addr: seq + 1, Len: uint32(seq + 1)}, {Addr: seq + 2, Len: uint32(seq + 2)}}
		n := prod.Enqueue(in)
		c := cons.Dequeue(got)
		for i, d := range got[:c] {
			if d.Addr != uint64(d.Len) || (round == 0 && i == 0 && d.Addr != 0) {
				t.Fatalf("descriptor torn: %+v", d)
			}
		}
		seq += uint64(n)
	}
}

func TestNeedWakeupFlag(t *testing.T) {
	m := NewMemAddrRing(4)
	r := m.AddrView()
	if r.NeedWakeup() {
		t.Fatal("flag set on a new ring")
	}
	r.SetNeedWakeup(true)
	if !m.AddrView().NeedWakeup() {
		t.Fatal("flag not visible to the other side")
	}
}
