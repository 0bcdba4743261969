package natbench_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan/bench/natbench"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

func TestMain(m *testing.M) {
	trafficgen.RunChildIfAsked()
	labtest.SweepStale()
	os.Exit(m.Run())
}

// TestLabCountsAgree runs each variant once per phase, briefly, and checks that the packets the
// benchmark reports (the server's counting XDP program over the window) agree with the server
// interface's rx_packets over the same window, and that traffic went through the NAT at all.
func TestLabCountsAgree(t *testing.T) {
	labtest.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// No repeats of contaminated runs: the check is of the counts, which hold in a contaminated
	// run as in a clean one, and one run per variant and phase keeps the test short.
	doc, err := natbench.Run(ctx, natbench.Options{Runs: 1, Warmup: 500 * time.Millisecond, Window: time.Second, Rate: 50000,
		Retries: -1, Generator: []string{exe}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Runs) != 4 {
		t.Fatalf("%d runs, want 4 (2 variants × 2 phases)", len(doc.Runs))
	}
	recs, err := natbench.Records(doc)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if run := doc.Runs[i]; run.Variant != r.Variant || run.Case != r.Phase || run.Values[natbench.MetricPPS] != r.PPS {
			t.Errorf("run %d is %s %s at %v pkt/s, its record %s %s at %v", i, run.Variant, run.Case, run.Values[natbench.MetricPPS], r.Variant, r.Phase, r.PPS)
		}
		if r.Delivered == 0 {
			t.Errorf("%s %s: nothing reached the server (sent %d)", r.Variant, r.Phase, r.Sent)
			continue
		}
		// The two read the same packets at the same point (veth's NAPI poll on the server's
		// end); rx_packets also counts the odd ARP or IPv6 frame the counter passes, and the two
		// are read a few microseconds apart, while at full load the server's counters lag the
		// counter program by up to one poll's worth of frames (1024 seen on this machine).
		diff := int64(r.ServerRx) - int64(r.Delivered)
		if diff < 0 {
			diff = -diff
		}
		t.Logf("%s %s: counted %d, server rx_packets %d", r.Variant, r.Phase, r.Delivered, r.ServerRx)
		if tol := int64(r.Delivered/200) + 1024; diff > tol {
			t.Errorf("%s %s: benchmark counted %d, server rx_packets %d (|diff| %d > %d)", r.Variant, r.Phase, r.Delivered, r.ServerRx, diff, tol)
		}
		if r.Delivered > r.Sent {
			t.Errorf("%s %s: delivered %d > sent %d", r.Variant, r.Phase, r.Delivered, r.Sent)
		}
		if r.Phase == natbench.Rate && float64(r.Delivered) < 0.5*float64(r.Offered)*r.Seconds {
			t.Errorf("%s rate: %d delivered in %.2fs at %d offered: the NAT loses most of a light load", r.Variant, r.Delivered, r.Seconds, r.Offered)
		}
	}
	t.Logf("\n%s", doc.Table())
}
