package bench

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/bench/report"
)

// wrkClean is wrk's report with --latency, captured from TestLabHTTP (netchan, 64
// connections, 1 s; wrk debian/4.1.0-3+b2).
const wrkClean = `Running 1s test @ http://198.18.0.1:80/bytes/128
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.94ms  435.66us   9.26ms   89.06%
    Req/Sec    60.35k     4.39k   66.11k    54.55%
  Latency Distribution
     50%    0.88ms
     75%    1.02ms
     90%    1.23ms
     99%    2.56ms
  65971 requests in 1.10s, 15.41MB read
Requests/sec:  59946.44
Transfer/sec:     14.01MB
`

// wrkErrors has socket errors, error responses and latencies in seconds: not captured (no lab
// run had errors), laid out by wrk's printf formats (src/wrk.c), the trailing blank of a time
// with a one-letter unit included.
const wrkErrors = `Running 3s test @ http://198.18.0.1:80/bytes/128
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.10ms   80.40ms    1.99s    99.01%
    Req/Sec     5.20k     2.10k    9.80k    61.11%
  Latency Distribution
     50%    1.10ms
     75%    2.30ms
     90%    4.80ms
     99%    1.20s 
  15012 requests in 3.01s, 3.57MB read
  Socket errors: connect 0, read 3, write 1, timeout 12
  Non-2xx or 3xx responses: 7
Requests/sec:   4987.37
Transfer/sec:      1.19MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkClean, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 65971 || r.Duration != 1100*time.Millisecond || r.RPS != 59946.44 || r.Errors() != 0 {
		t.Errorf("clean report: %+v", r)
	}
	if !wrkApprox(r.MeanUs, 940) || !wrkApprox(r.StdevUs, 435.66) || !wrkApprox(r.MaxUs, 9260) {
		t.Errorf("thread stats: mean %v stdev %v max %v µs", r.MeanUs, r.StdevUs, r.MaxUs)
	}
	want := []report.Quantile{{P: 0.5, Micros: 880}, {P: 0.75, Micros: 1020}, {P: 0.9, Micros: 1230}, {P: 0.99, Micros: 2560}}
	if len(r.Percentiles) != len(want) {
		t.Fatalf("percentiles %v, want %v", r.Percentiles, want)
	}
	for i, q := range want {
		if r.Percentiles[i].P != q.P || !wrkApprox(r.Percentiles[i].Micros, q.Micros) {
			t.Errorf("percentile %d: %+v, want %+v", i, r.Percentiles[i], q)
		}
	}
	if p, ok := r.Percentile(99); !ok || !wrkApprox(p, 2560) {
		t.Errorf("Percentile(99) = %v, %v", p, ok)
	}
	if _, ok := r.Percentile(99.9); ok {
		t.Error("wrk prints no 99.9th percentile")
	}

	r, err = parseWrk(wrkErrors, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 15012 || r.Duration != 3010*time.Millisecond || r.Connect != 0 || r.Read != 3 || r.Write != 1 ||
		r.Timeout != 12 || r.Non2xx != 7 || r.Errors() != 23 || !wrkApprox(r.MaxUs, 1.99e6) || len(r.Percentiles) != 4 ||
		!wrkApprox(r.Percentiles[3].Micros, 1.2e6) || r.Percentiles[3].P != 0.99 || !wrkApprox(r.Percentiles[0].Micros, 1100) {
		t.Errorf("report with errors: %+v", r)
	}

	// Without --latency's lines a latency run is refused, a run that did not ask accepted.
	short := strings.Join(linesWithout(strings.Split(wrkClean, "\n"), 5, 10), "\n")
	if _, err := parseWrk(short, true); err == nil || !strings.Contains(err.Error(), "50%") {
		t.Errorf("a report without the latency distribution: %v", err)
	}
	if r, err := parseWrk(short, false); err != nil || r.Requests != 65971 {
		t.Errorf("the same report without --latency: %+v, %v", r, err)
	}
	if _, err := parseWrk("unable to connect to 198.18.0.1:80 Connection refused\n", false); err == nil {
		t.Error("a report without a request count parsed")
	}
}

// wrkApprox: a and b agree to 1e-9 (scaling a decimal figure to µs is not exact in binary).
func wrkApprox(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }

// linesWithout returns l without its elements from i to j.
func linesWithout(l []string, i, j int) []string { return append(l[:i:i], l[j:]...) }

func TestHTTPCheck(t *testing.T) {
	w := WrkResult{Requests: 10000}
	window := RRCounts{IfRx: 10070, IfTx: 10064, SegmentsIn: 10070, SegmentsOut: 10064, PassiveOpens: 64, ShardRx: 10070, ShardTx: 10064}
	if c := httpCheck(Netchan, 64, w, window, window); !c.OK {
		t.Errorf("good netchan run: %v", c.Notes)
	}
	if c := httpCheck(Kernel, 64, w, RRCounts{IfRx: 10070, IfTx: 10064}, RRCounts{IfRx: 10400, IfTx: 10390}); !c.OK {
		t.Errorf("good kernel run: %v", c.Notes)
	}
	for name, c := range map[string]struct {
		variant string
		w       WrkResult
		window  RRCounts
		note    string
	}{
		"no request":       {Kernel, WrkResult{}, window, "no request"},
		"socket errors":    {Kernel, WrkResult{Requests: 10000, Timeout: 1}, window, "timeout 1"},
		"error responses":  {Netchan, WrkResult{Requests: 10000, Non2xx: 4}, window, "4 responses"},
		"interface behind": {Kernel, w, RRCounts{IfRx: 10070, IfTx: 500}, "interface rx"},
		"netchan idle":     {Netchan, w, RRCounts{IfRx: 10070, IfTx: 10064, PassiveOpens: 64}, "netchan TCP segments"},
		"conns not seen":   {Netchan, w, func() RRCounts { x := window; x.PassiveOpens = 10; return x }(), "accepted 10"},
	} {
		got := httpCheck(c.variant, 64, c.w, c.window, c.window)
		if got.OK || !strings.Contains(strings.Join(got.Notes, "; "), c.note) {
			t.Errorf("%s: %+v, want a note with %q", name, got, c.note)
		}
	}
	// The shards' counters may lag the stack's by a pass at the window's edges (a run saw 59771
	// against 59772): only the whole run, after the traffic settled, must agree.
	lag := window
	lag.ShardRx = lag.SegmentsIn - 1
	if c := httpCheck(Netchan, 64, w, lag, window); !c.OK {
		t.Errorf("a shard counter a packet behind at the window's edge: %v", c.Notes)
	}
	if c := httpCheck(Netchan, 64, w, window, lag); c.OK || !strings.Contains(strings.Join(c.Notes, "; "), "shards received") {
		t.Errorf("shards behind TCP over the whole run: %+v", c)
	}
}

// TestHTTPToRun: a record becomes a run with the document's metric names, wrk's percentiles
// and maximum as quantiles, the contamination verdict, and a failed check as its error.
func TestHTTPToRun(t *testing.T) {
	w, err := parseWrk(wrkClean, true)
	if err != nil {
		t.Fatal(err)
	}
	rec := HTTPRun{Wrk: w, ServerUsPerReq: 9.5, UsPerReq: 21, ClientUsPerReq: 11, Foreign: 0.02, Check: RRCheck{OK: true}}
	run, err := httpToRun(rec, nil, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{httpRPS: 59946.44, httpServerUs: 9.5, httpUs: 21, httpClientUs: 11, httpP50: 880, httpP99: 2560}
	for k, v := range want {
		if !wrkApprox(run.Values[k], v) {
			t.Errorf("%s = %v, want %v", k, run.Values[k], v)
		}
	}
	for _, m := range httpMetrics {
		if _, ok := run.Values[m.Name]; !ok {
			t.Errorf("metric %s has no value", m.Name)
		}
	}
	wantQ := []report.Quantile{{P: 0.5, Micros: 880}, {P: 0.75, Micros: 1020}, {P: 0.9, Micros: 1230}, {P: 0.99, Micros: 2560}, {P: 1, Micros: 9260}}
	if len(run.Latency) != len(wantQ) {
		t.Fatalf("latency %+v, want %+v", run.Latency, wantQ)
	}
	for i := range wantQ {
		if run.Latency[i].P != wantQ[i].P || !wrkApprox(run.Latency[i].Micros, wantQ[i].Micros) {
			t.Errorf("quantile %d: %+v, want %+v", i, run.Latency[i], wantQ[i])
		}
	}
	if run.Err != "" || run.Contaminated {
		t.Errorf("clean run: err %q, contaminated %v", run.Err, run.Contaminated)
	}
	var back HTTPRun
	if err := json.Unmarshal(run.Detail, &back); err != nil || back.Wrk.Requests != w.Requests || !slices.Equal(back.Wrk.Percentiles, w.Percentiles) {
		t.Errorf("detail: %v, %+v", err, back.Wrk)
	}

	bad := rec
	bad.Check = httpCheck(Kernel, 64, WrkResult{Requests: 100, Non2xx: 3}, RRCounts{IfRx: 200, IfTx: 200}, RRCounts{IfRx: 300, IfTx: 300})
	bad.Foreign = 0.3
	run, _ = httpToRun(bad, nil, 0.05)
	if !strings.Contains(run.Err, "3 responses") || !run.Contaminated {
		t.Errorf("error responses: err %q, contaminated %v", run.Err, run.Contaminated)
	}
	run, _ = httpToRun(HTTPRun{}, errors.New("wrk: exit status 1"), 0.05)
	if run.Err == "" || len(run.Values) != 0 || len(run.Latency) != 0 {
		t.Errorf("failed run: %+v", run)
	}
	unpinned := rec
	unpinned.ClientUsPerReq = 0
	if run, _ := httpToRun(unpinned, nil, 0.05); func() bool { _, ok := run.Values[httpClientUs]; return ok }() {
		t.Error("an unpinned client has no core of its own: no client CPU figure")
	}
}

// TestHTTPDocument: the ratios carry issue 20's targets on requests/s and server CPU per
// request; options round wrk's times up to whole seconds.
func TestHTTPDocument(t *testing.T) {
	o := HTTPOptions{Runs: 3, Conns: 64, Size: 128, Variants: []string{Netchan, Kernel}}
	d, err := httpDocument(o)
	if err != nil {
		t.Fatal(err)
	}
	if d.Scenario != "http" || d.Cases[0].Name != "64 conns GET 128B" || d.KeyMetric() != httpRPS {
		t.Errorf("document %s, cases %+v, key %s", d.Scenario, d.Cases, d.KeyMetric())
	}
	targets := map[string]report.Target{}
	for _, r := range d.Ratios {
		if d.Metric(r.Metric) == nil || r.Num != Netchan || r.Den != Kernel {
			t.Errorf("ratio %+v does not fit the grid", r)
		}
		if r.Target != nil {
			targets[r.Metric] = *r.Target
		}
	}
	if len(targets) != 2 || targets[httpRPS] != (report.Target{Op: ">=", Value: 1.5}) ||
		targets[httpServerUs] != (report.Target{Op: "<=", Value: 0.7}) {
		t.Errorf("targets %+v", targets)
	}
	for in, want := range map[time.Duration]time.Duration{time.Second: time.Second, 1500 * time.Millisecond: 2 * time.Second,
		time.Millisecond: time.Second, 3 * time.Second: 3 * time.Second} {
		if got := wholeSeconds(in); got != want {
			t.Errorf("wholeSeconds(%v) = %v, want %v", in, got, want)
		}
	}
}
