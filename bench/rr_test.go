package bench

import (
	"math"
	"strings"
	"testing"
)

func TestRRHistogram(t *testing.T) {
	// Bucket boundaries are continuous and monotonic.
	prev := -1
	for v := int64(0); v < 1<<20; v += 1 + v/97 {
		b := rrBucket(v)
		if b < prev {
			t.Fatalf("bucket(%d) = %d < bucket before (%d)", v, b, prev)
		}
		prev = b
		if mid := rrBucketMid(b); v >= 128 && math.Abs(mid-float64(v))/float64(v) > 0.02 {
			t.Fatalf("value %d in bucket %d whose middle is %.0f", v, b, mid)
		}
	}
	if b := rrBucket(math.MaxInt64); b >= 64*64 {
		t.Errorf("bucket(MaxInt64) = %d, past the end", b)
	}
	var h rrHist
	for i := 1; i <= 1000; i++ {
		h.add(int64(i) * 1000) // 1..1000 µs
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 500}, {0.99, 990}, {0.999, 999}} {
		if got := h.quantile(c.q); math.Abs(got-c.want)/c.want > 0.02 {
			t.Errorf("quantile %.3f = %.1f µs, want %.0f", c.q, got, c.want)
		}
	}
	var m rrHist
	m.merge(&h)
	m.merge(&h)
	if m.n != 2000 || m.quantile(0.5) != h.quantile(0.5) || m.mean() != h.mean() {
		t.Errorf("merge: n %d, p50 %.1f vs %.1f", m.n, m.quantile(0.5), h.quantile(0.5))
	}
}

func TestRRFill(t *testing.T) {
	a, b, c := make([]byte, 128), make([]byte, 128), make([]byte, 128)
	rrFill(a, 1, 5)
	rrFill(b, 1, 6)
	rrFill(c, 2, 5)
	if string(a) == string(b) || string(a) == string(c) {
		t.Error("requests of different transactions or connections must differ")
	}
}

func TestRRCheck(t *testing.T) {
	good := RRClientResult{Size: 128, Transactions: 900, Total: 1000, BytesChecked: 128000,
		TCPWhole: TCPSNMP{OutSegs: 1040, InSegs: 1030}}
	whole := RRCounts{IfRx: 1042, IfTx: 1031, SegmentsIn: 1040, SegmentsOut: 1030, PassiveOpens: 16, ShardRx: 1042, ShardTx: 1031}
	if c := rrCheck(Netchan, 16, good, whole); !c.OK {
		t.Errorf("good run: %v", c.Notes)
	}
	bad := good
	bad.Mismatches, bad.FirstMismatch = 1, "x"
	if c := rrCheck(Kernel, 16, bad, whole); c.OK || !strings.Contains(strings.Join(c.Notes, ";"), "differed") {
		t.Errorf("mismatch not caught: %v", c.Notes)
	}
	w := whole
	w.SegmentsIn = 10
	if c := rrCheck(Netchan, 16, good, w); c.OK {
		t.Error("netchan TCP counters that did not move must fail")
	}
	w = whole
	w.IfRx = 2000
	if c := rrCheck(Kernel, 16, good, w); c.OK {
		t.Error("interface packets the client's TCP does not account for must fail")
	}
}
