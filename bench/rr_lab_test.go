package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// The test binary is also the request/response client: RunRR re-executes it in the peer
// namespace with RRClientEnv set, and init runs before TestMain.
func init() { RunRRClientIfAsked(os.Args[1:]) }

// TestLabBenchRR runs `netchan bench tcp-rr` briefly (one round, a 1 s window) and checks that
// both variants did real work and that the counts agree: the client completed transactions
// and checked every echoed byte, netchan's TCP and shard counters moved (and match the
// interface counters), the kernel variant never touched netchan, the server process stayed on
// its CPU, and every variant has a figure with its latency; the stored document reads back
// the same.
func TestLabBenchRR(t *testing.T) {
	labtest.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	name := labtest.UniqueName(t)
	t.Cleanup(func() { lab.Down(name) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	doc, err := RunRR(ctx, RROptions{Runs: 1, Warmup: 300 * time.Millisecond, Duration: time.Second, Retries: -1, QuietWait: -1,
		LabName: name, Client: []string{exe}, Logf: t.Logf, Progress: func(p report.Progress) { t.Log(p) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + name + "-peer"); err == nil {
		t.Errorf("lab %s still there after RunRR", name)
	}
	// Execute runs the variants as listed in odd rounds: netchan, then kernel.
	if len(doc.Runs) != 2 || doc.Runs[0].Variant != Netchan || doc.Runs[1].Variant != Kernel {
		t.Fatalf("runs %+v, want netchan then kernel", doc.Runs)
	}
	recs, err := RRRecords(doc)
	if err != nil {
		t.Fatal(err)
	}
	for i, run := range doc.Runs {
		r := recs[i]
		c := r.Client
		t.Logf("%s: %d transactions in %.2fs (%d in all), %d bytes checked, window %+v, whole %+v, client TCP %+v, server threads %d (%d off its CPUs), GOMAXPROCS %d",
			run.Variant, c.Transactions, c.Seconds, c.Total, c.BytesChecked, r.Window, r.Whole, c.TCPWhole, r.Threads, r.ThreadsOff, r.GOMAXPROCS)
		if run.Err != "" {
			t.Errorf("%s: %s", run.Variant, run.Err)
			continue
		}
		if !r.Check.OK {
			t.Errorf("%s: counts disagree: %v", run.Variant, r.Check.Notes)
		}
		if c.Transactions == 0 || r.TPS <= 0 || c.Total < c.Transactions {
			t.Errorf("%s: %d transactions in the window, %d in all, %.0f/s", run.Variant, c.Transactions, c.Total, r.TPS)
		}
		if c.Mismatches != 0 || len(c.Errors) != 0 || c.BytesChecked != c.Total*128 {
			t.Errorf("%s: %d mismatches (%s), errors %v, %d bytes checked for %d transactions", run.Variant, c.Mismatches,
				c.FirstMismatch, c.Errors, c.BytesChecked, c.Total)
		}
		if r.UsPerTxn <= 0 || r.ServerCoreUsPerTxn <= 0 || c.P50 <= 0 || c.P99 < c.P50 {
			t.Errorf("%s: %.2f µs/txn, server core %.2f, p50 %.1f p99 %.1f", run.Variant, r.UsPerTxn, r.ServerCoreUsPerTxn, c.P50, c.P99)
		}
		if r.Threads == 0 || r.ThreadsOff != 0 || r.GOMAXPROCS != 1 {
			t.Errorf("%s: server process not held on its CPU: %d of %d threads allowed elsewhere, GOMAXPROCS %d",
				run.Variant, r.ThreadsOff, r.Threads, r.GOMAXPROCS)
		}
		w := r.Whole
		switch run.Variant {
		case Netchan:
			if w.SegmentsIn < c.Total || w.SegmentsOut < c.Total || w.PassiveOpens < 16 || w.ShardRx < w.SegmentsIn ||
				w.ShardTx < w.SegmentsOut || r.Window.SegmentsIn == 0 {
				t.Errorf("netchan's counters did not move with the client's %d transactions: %+v", c.Total, w)
			}
		case Kernel:
			if w.SegmentsIn != 0 || w.ShardRx != 0 || w.IfRx < c.Total {
				t.Errorf("kernel run: %+v", w)
			}
		}
	}
	cs := doc.Cases[0].Name
	for _, v := range []string{Netchan, Kernel} {
		f := doc.Figure(cs, v)
		if f == nil || f.Runs != 1 || f.Stats[rrTPS].Median <= 0 || f.Stats[rrServerCore].Median <= 0 || len(f.Latency) != 5 {
			t.Errorf("%s: figure %+v", v, f)
		}
	}
	if r := doc.Ratio(cs, "tps netchan/kernel"); r == nil || r.Pairs != 1 || r.OfMedians <= 0 {
		t.Errorf("ratio %+v", r)
	}
	path, err := doc.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	back, err := report.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Table() != doc.Table() {
		t.Errorf("the stored document reads back differently:\n%s\nvs\n%s", back.Table(), doc.Table())
	}
	t.Logf("\n%s", doc.Table())
}
