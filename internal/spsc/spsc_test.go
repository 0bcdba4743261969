package spsc

import "testing"

func TestWrap(t *testing.T) {
	r := New[uint64](8)
	next, want := uint64(0), uint64(0)
	buf := make([]uint64, 5)
	for round := 0; round < 1000; round++ {
		k := round%5 + 1
		src := make([]uint64, k)
		for i := range src {
			src[i] = next + uint64(i)
		}
		n := r.Push(src)
		next += uint64(n)
		if r.Len() > 8 {
			t.Fatalf("ring holds %d", r.Len())
		}
		m := r.Pop(buf[:round%4+1])
		for _, v := range buf[:m] {
			if v != want {
				t.Fatalf("popped %d, want %d", v, want)
			}
			want++
		}
	}
}
