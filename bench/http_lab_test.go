package bench

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// TestLabHTTP runs `netchan bench http` briefly (one round, a 1 s wrk run per variant) and
// checks that netchan served the requests (its stack's TCP segments and its shard's receive
// counter grew by at least wrk's request count, and it accepted wrk's connections; the
// kernel variant's requests crossed the interface with no netchan running), that the body
// was right, that no request failed, that the server process and its NAPI thread stayed on
// the server CPU, and that every variant produced a figure, its latency and the ratios.
func TestLabHTTP(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk is missing: apt-get install wrk (the benchmark runs it in the peer's namespace)")
	}
	name := labtest.UniqueName(t)
	t.Cleanup(func() { lab.Down(name) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const conns = 64
	doc, err := RunHTTP(ctx, HTTPOptions{Runs: 1, Warmup: time.Second, Duration: time.Second, Conns: conns, Retries: -1, QuietWait: -1,
		LabName: name, Logf: t.Logf, Progress: func(p report.Progress) { t.Log(p) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + name + "-peer"); err == nil {
		t.Errorf("lab %s still there after RunHTTP", name)
	}
	if len(doc.Runs) != 2 || doc.Runs[0].Variant != Netchan || doc.Runs[1].Variant != Kernel {
		t.Fatalf("runs %+v, want netchan then kernel", doc.Runs)
	}
	recs, err := HTTPRecords(doc)
	if err != nil {
		t.Fatal(err)
	}
	for i, run := range doc.Runs {
		r := recs[i]
		w := r.Wrk
		t.Logf("%s: %s; wrk output:\n%s", run.Variant, r.Probe, r.WrkOutput)
		t.Logf("%s: window %+v, server threads %d (%d off its CPU), GOMAXPROCS %d, NAPI %v, peer NAPI %v",
			run.Variant, r.Window, r.Threads, r.ThreadsOff, r.GOMAXPROCS, r.NAPI, r.PeerNAPI)
		if run.Err != "" {
			t.Errorf("%s: %s", run.Variant, run.Err)
			continue
		}
		if w.Requests == 0 || w.Errors() != 0 || w.RPS <= 0 {
			t.Errorf("%s: wrk %d requests, %d errors, %.0f/s", run.Variant, w.Requests, w.Errors(), w.RPS)
		}
		if r.Probe == "" {
			t.Errorf("%s: no probe", run.Variant)
		}
		if r.Threads == 0 || r.ThreadsOff != 0 || r.GOMAXPROCS != 1 || len(r.NAPI) == 0 || len(r.PeerNAPI) == 0 {
			t.Errorf("%s: server not held on its CPU: %d of %d threads allowed elsewhere, GOMAXPROCS %d, NAPI threads %v, peer's %v",
				run.Variant, r.ThreadsOff, r.Threads, r.GOMAXPROCS, r.NAPI, r.PeerNAPI)
		}
		if r.ServerUsPerReq <= 0 || r.UsPerReq < r.ServerUsPerReq || r.NAPIUsPerReq <= 0 {
			t.Errorf("%s: server %.2f µs/req, machine %.2f, NAPI %.2f", run.Variant, r.ServerUsPerReq, r.UsPerReq, r.NAPIUsPerReq)
		}
		win := r.Window
		if win.IfRx < w.Requests || win.IfTx < w.Requests {
			t.Errorf("%s: interface rx %d tx %d packets for %d requests", run.Variant, win.IfRx, win.IfTx, w.Requests)
		}
		switch run.Variant {
		case Netchan:
			if win.SegmentsIn < w.Requests || win.SegmentsOut < w.Requests || win.ShardRx < w.Requests || win.PassiveOpens < conns {
				t.Errorf("netchan's counters did not move with wrk's %d requests on %d connections: %+v", w.Requests, conns, win)
			}
		case Kernel:
			if win.SegmentsIn != 0 || win.ShardRx != 0 {
				t.Errorf("kernel run counted netchan traffic: %+v", win)
			}
		}
	}
	cs := doc.Cases[0].Name
	for _, v := range []string{Netchan, Kernel} {
		f := doc.Figure(cs, v)
		if f == nil || f.Runs != 1 {
			t.Errorf("%s: figure %+v", v, f)
			continue
		}
		for _, m := range httpMetrics {
			if f.Stats[m.Name].Median <= 0 {
				t.Errorf("%s: no %s in the figure %+v", v, m.Name, f.Stats)
			}
		}
		if len(f.Latency) != 5 || f.Latency[0].P != 0.5 || f.Latency[4].P != 1 || f.Latency[0].Micros > f.Latency[3].Micros {
			t.Errorf("%s: latency %+v", v, f.Latency)
		}
	}
	for _, name := range []string{"rps netchan/kernel", "server CPU/request netchan/kernel"} {
		if r := doc.Ratio(cs, name); r == nil || r.Pairs != 1 || r.OfMedians <= 0 || r.Met == nil {
			t.Errorf("ratio %s: %+v", name, r)
		}
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
