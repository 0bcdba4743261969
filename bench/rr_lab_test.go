package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// The test binary is also the request/response client: RunRR re-executes it in the peer
// namespace with RRClientEnv set, and init runs before TestMain.
func init() { RunRRClientIfAsked(os.Args[1:]) }

// TestLabBenchRR runs `netchan bench rr` briefly (one round, a 1 s window) and checks that both
// variants did real work and that the counts agree: the client completed transactions and
// checked every echoed byte, netchan's TCP and shard counters moved (and match the interface
// counters), and the kernel variant never touched netchan.
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
	rep, err := RunRR(ctx, RROptions{Runs: 1, Warmup: 300 * time.Millisecond, Duration: time.Second, Retries: -1, QuietWait: -1,
		LabName: name, Client: []string{exe}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + name + "-peer"); err == nil {
		t.Errorf("lab %s still there after RunRR", name)
	}
	if len(rep.Runs) != 2 || rep.Runs[0].Variant != Netchan || rep.Runs[1].Variant != Kernel {
		t.Fatalf("runs %+v, want netchan then kernel", rep.Runs)
	}
	for _, r := range rep.Runs {
		c := r.Client
		t.Logf("%s: %d transactions in %.2fs (%d in all), %d bytes checked, window %+v, whole %+v, client TCP %+v",
			r.Variant, c.Transactions, c.Seconds, c.Total, c.BytesChecked, r.Window, r.Whole, c.TCPWhole)
		if r.Err != "" {
			t.Errorf("%s: %s", r.Variant, r.Err)
			continue
		}
		if !r.Check.OK {
			t.Errorf("%s: counts disagree: %v", r.Variant, r.Check.Notes)
		}
		if c.Transactions == 0 || r.TPS <= 0 || c.Total < c.Transactions {
			t.Errorf("%s: %d transactions in the window, %d in all, %.0f/s", r.Variant, c.Transactions, c.Total, r.TPS)
		}
		if c.Mismatches != 0 || len(c.Errors) != 0 || c.BytesChecked != c.Total*128 {
			t.Errorf("%s: %d mismatches (%s), errors %v, %d bytes checked for %d transactions", r.Variant, c.Mismatches,
				c.FirstMismatch, c.Errors, c.BytesChecked, c.Total)
		}
		if r.UsPerTxn <= 0 || c.P50 <= 0 || c.P99 < c.P50 {
			t.Errorf("%s: %.2f µs/txn, p50 %.1f p99 %.1f", r.Variant, r.UsPerTxn, c.P50, c.P99)
		}
		w := r.Whole
		switch r.Variant {
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
	if len(rep.Figures) != 2 || rep.Figures[0].Runs != 1 || rep.Figures[1].Runs != 1 {
		t.Errorf("figures %+v", rep.Figures)
	}
	path, err := rep.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadRRReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Table() != rep.Table() {
		t.Errorf("the stored report reads back differently:\n%s\nvs\n%s", back.Table(), rep.Table())
	}
	t.Logf("\n%s", rep.Table())
}
