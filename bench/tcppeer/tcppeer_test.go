package main

import (
	"testing"
	"time"
)

// TestPairs runs a short bulk transfer (SHA-256 of the sent and received bytes compared) and
// a short request/response run (every response checked against its request) on each stack,
// without loss and with 1% seeded loss on the wire.
func TestPairs(t *testing.T) {
	size := int64(8 << 20)
	if testing.Short() {
		size = 2 << 20
	}
	for _, wire := range []string{"pump", "inline"} {
		for _, name := range []string{"netchan", "gvisor"} {
			for _, lossP := range []float64{0, 0.01} {
				t.Run(wire+"/"+name+"/loss="+ftoa(lossP), func(t *testing.T) { testPair(t, wire, name, lossP, size) })
			}
		}
	}
}

func testPair(t *testing.T, wire, name string, lossP float64, size int64) {
	p, err := newPair(Options{Wire: wire}, name, lossP, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, err := RunBulk(p, BulkOptions{Bytes: size, Verify: true, Timeout: time.Minute})
	if err != nil {
		p.Close()
		t.Fatalf("bulk: %v", err)
	}
	if b.SHA256 == "" || b.SHA256 != b.SentSHA256 {
		t.Fatalf("bulk: hashes %q and %q", b.SHA256, b.SentSHA256)
	}
	r, err := RunRR(p, RROptions{Conns: 4, Size: 128, Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond})
	if err != nil {
		p.Close()
		t.Fatalf("rr: %v", err)
	}
	w := p.Wire()
	if err := p.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("bulk %d bytes in %.2fs (%.2f Gbit/s); rr %d transactions, p50 %.0f µs p99 %.0f µs; wire %+v",
		b.Bytes, b.Seconds, b.Gbps, r.Transactions, r.P50Us, r.P99Us, w)
	if r.Transactions == 0 {
		t.Fatal("rr: no transactions")
	}
	if name == "gvisor" && w.Overflow != 0 {
		t.Errorf("gVisor's channel endpoint dropped %d frames for want of room: the queue is too small", w.Overflow)
	}
	if lossP > 0 && w.Lost == 0 {
		t.Errorf("no frame was lost at loss %g", lossP)
	}
	if lossP == 0 && w.Lost != 0 {
		t.Errorf("%d frames lost without loss", w.Lost)
	}
}

// TestLossStream checks the loss stream is seeded: the same seed and direction lose the same
// frames, and the rate is near the probability.
func TestLossStream(t *testing.T) {
	a, b, c := newLoss(0.01, 3, 0), newLoss(0.01, 3, 0), newLoss(0.01, 3, 1)
	same, lost := true, 0
	diff := false
	for range 100000 {
		x, y, z := a.drop(), b.drop(), c.drop()
		same = same && x == y
		diff = diff || x != z
		if x {
			lost++
		}
	}
	if !same || !diff {
		t.Fatalf("same seed same stream: %v; directions differ: %v", same, diff)
	}
	if lost < 850 || lost > 1150 {
		t.Fatalf("lost %d of 100000 at 1%%", lost)
	}
}

func ftoa(f float64) string {
	if f == 0 {
		return "0"
	}
	return "0.01"
}
