package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/bench/report"
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

// peerOptions is a short grid: both stacks, both tests, no loss (with loss a 150 ms window can
// pass without a transaction while a connection waits for gVisor's first retransmission
// timeout, 1 s).
func peerOptions(runs int) Options {
	return Options{Runs: runs, Stacks: []string{"netchan", "gvisor"}, Tests: []string{"bulk", "rr"}, Loss: []float64{0},
		Seed: 1, BulkBytes: 1 << 20, RRConns: 2, RRSize: 64, RRWarmup: 30 * time.Millisecond, RRDuration: 150 * time.Millisecond,
		Timeout: time.Minute, Wire: "pump", LossDirs: "both", MaxForeign: 0.10, Retries: -1}
}

// TestDocument runs a short grid through the runner, writes the document as -json does and
// reads it back: every case and stack has its rounds, each run's values are its record's
// figures (rr's payload Gbit/s from its transactions/s, its latency quantiles), the foreign
// share is the record's and decides contamination, and the ratios pair the rounds.
func TestDocument(t *testing.T) {
	o := peerOptions(2)
	if err := o.check(); err != nil {
		t.Fatal(err)
	}
	var progress []report.Progress
	var done []Run
	doc, err := benchmark(context.Background(), o, "go run . -test", func(p report.Progress) { progress = append(progress, p) },
		func(r Run) { done = append(done, r) })
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "peer.json")
	if err := writeJSON(doc, path); err != nil {
		t.Fatal(err)
	}
	d, err := report.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if d.Scenario != "peer" || d.KeyMetric() != mGbps || len(d.Cases) != 2 || d.Cases[1] != (report.Case{Name: "rr", Group: "rr"}) {
		t.Fatalf("scenario %q, key %q, cases %+v", d.Scenario, d.KeyMetric(), d.Cases)
	}
	if len(d.Runs) != 2*2*2 || len(done) != len(d.Runs) || len(progress) != len(d.Runs) {
		t.Fatalf("%d runs, %d measured, %d progress reports; want 8", len(d.Runs), len(done), len(progress))
	}
	for i, run := range d.Runs {
		r := done[i]
		what := fmt.Sprintf("%s %s round %d", run.Case, run.Variant, run.Round)
		if r.Err != "" || run.Err != r.Err {
			t.Errorf("%s: error %q (document %q)", what, r.Err, run.Err)
			continue
		}
		if r.Stack != run.Variant || r.Round != run.Round || caseName(o, r.Test, r.Loss) != run.Case {
			t.Errorf("%s: record of %s %s loss %g round %d", what, r.Stack, r.Test, r.Loss, r.Round)
		}
		switch r.Test {
		case "bulk":
			if run.Values[mGbps] != r.Bulk.Gbps || run.Values[mCPUPerGB] != r.Bulk.CPUPerGB || run.Foreign != r.Bulk.Others || len(run.Latency) != 0 {
				t.Errorf("%s: values %v, foreign %v, record %+v", what, run.Values, run.Foreign, r.Bulk)
			}
		case "rr":
			x := r.RR
			if run.Values[mTPS] != x.TPS || run.Values[mP99] != x.P99Us || run.Foreign != x.Others {
				t.Errorf("%s: values %v, foreign %v, record %+v", what, run.Values, run.Foreign, x)
			}
			if want := x.TPS * 2 * 64 * 8 / 1e9; run.Values[mGbps] != want || want <= 0 {
				t.Errorf("%s: payload %v Gbit/s, want %v", what, run.Values[mGbps], want)
			}
			lat := run.Latency
			if len(lat) != len(latencyQuantiles) || lat[len(lat)-1] != (report.Quantile{P: 1, Micros: x.MaxUs}) {
				t.Errorf("%s: latency %v, max %v µs", what, lat, x.MaxUs)
			}
			for j := 1; j < len(lat); j++ {
				if lat[j].Micros < lat[j-1].Micros {
					t.Errorf("%s: latency not monotone: %v", what, lat)
				}
			}
		}
		if run.Contaminated != (run.Foreign > o.MaxForeign) {
			t.Errorf("%s: contaminated %v with %.0f%% of the machine foreign", what, run.Contaminated, 100*run.Foreign)
		}
	}
	for _, c := range d.Cases {
		for _, v := range d.Variants {
			if f := d.Figure(c.Name, v); f == nil || f.Runs != 2 {
				t.Errorf("%s %s: figure %+v", c.Name, v, f)
			}
		}
		metric := map[string]string{"bulk": mGbps, "rr": mTPS}[c.Group]
		r := d.Ratio(c.Name, metric+" netchan/gvisor")
		if r == nil || r.Pairs != 2 || r.Target == nil || r.Met == nil {
			t.Errorf("%s: ratio %+v", c.Name, r)
			continue
		}
		if want := d.Figure(c.Name, "netchan").Stats[metric].Median / d.Figure(c.Name, "gvisor").Stats[metric].Median; r.OfMedians != want {
			t.Errorf("%s: ratio of medians %v, want %v", c.Name, r.OfMedians, want)
		}
	}
	var text strings.Builder
	printTables(&text, d)
	for _, want := range []string{"| 0% | rr | p99 µs | lower |", "| 0% | bulk | Gbit/s | higher |", "\n  round 2 loss 0 netchan rr "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}
}

// TestCases: with several loss settings a case is a test at one of them, grouped by test with
// the loss along the axis, and each has the ratios of its test's figures; a loss given twice
// is refused.
func TestCases(t *testing.T) {
	o := peerOptions(1)
	o.Loss = []float64{0, 0.01}
	d, cases, err := newDocument(o, "go run . -loss 0,0.01")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range d.Cases {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "bulk loss 0%,rr loss 0%,bulk loss 1%,rr loss 1%" {
		t.Errorf("cases %s", got)
	}
	if c := d.Cases[3]; c != (report.Case{Name: "rr loss 1%", Group: "rr", X: 0.01}) || cases[c.Name] != (peerCase{test: "rr", loss: 0.01, li: 1}) {
		t.Errorf("case %+v: %+v", c, cases[c.Name])
	}
	if len(d.Ratios) != 2*2+2*4 {
		t.Errorf("%d ratios, want 12 (2 bulk and 4 rr figures at each loss)", len(d.Ratios))
	}
	if r := d.Ratio("rr loss 1%", "p99_us netchan/gvisor"); r == nil || *r.Target != (report.Target{Op: "<=", Value: 1}) {
		t.Errorf("p99 ratio %+v", r)
	}
	o.Loss = []float64{0.01, 0.01}
	if _, _, err := newDocument(o, ""); err == nil {
		t.Error("a loss given twice was accepted")
	}
}

// TestInterrupted: the end of the context stops the grid after the run in progress, and the
// document keeps that run.
func TestInterrupted(t *testing.T) {
	o := peerOptions(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	doc, err := benchmark(ctx, o, "go run .", nil, func(Run) { cancel() })
	if !errors.Is(err, context.Canceled) || doc == nil || len(doc.Runs) != 1 || doc.Runs[0].Err != "" {
		t.Fatalf("err %v, document %v", err, doc)
	}
}

// TestRunWithoutFigures: a failed run keeps its error and stands for nothing; a run that
// neither failed nor measured is an error too.
func TestRunWithoutFigures(t *testing.T) {
	run, err := toRun(Run{Stack: "gvisor", Test: "bulk", Err: "dial: timeout"}, 0.1)
	if err != nil || run.Err != "dial: timeout" || len(run.Values) != 0 {
		t.Errorf("failed run %+v, %v", run, err)
	}
	if run, _ := toRun(Run{Stack: "gvisor", Test: "bulk"}, 0.1); run.Err == "" {
		t.Errorf("a run without results has no error: %+v", run)
	}
}
