package bench

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/runtime/trafficgen"
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

// TestRRToRun: a record becomes a run with the document's metric names, the client's latency
// quantiles, the contamination verdict and, for a failed run or counts that disagree, an
// error, and a run without transactions carries no per-transaction figures (a 0 µs/tx would
// read as the best).
func TestRRToRun(t *testing.T) {
	rec := RRRun{TPS: 50000, UsPerTxn: 30, OwnUsPerTxn: 29, ServerUsPerTxn: 17, ServerCoreUsPerTxn: 19, ClientUsPerTxn: 12,
		Foreign: 0.01, Check: RRCheck{OK: true},
		Client: RRClientResult{P50: 100, P90: 150, P99: 300, P999: 900, Max: 2000}}
	run, err := rrToRun(rec, nil, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{rrTPS: 50000, rrUs: 30, rrOwnUs: 29, rrServerUs: 17, rrServerCore: 19, rrClientUs: 12, rrP50: 100, rrP99: 300}
	for k, v := range want {
		if run.Values[k] != v {
			t.Errorf("%s = %v, want %v", k, run.Values[k], v)
		}
	}
	for _, m := range rrMetrics {
		if _, ok := run.Values[m.Name]; !ok {
			t.Errorf("metric %s has no value", m.Name)
		}
	}
	if run.Err != "" || run.Contaminated || run.Foreign != 0.01 {
		t.Errorf("clean run: err %q, contaminated %v, foreign %v", run.Err, run.Contaminated, run.Foreign)
	}
	if len(run.Latency) != 5 || run.Latency[0] != (report.Quantile{P: 0.5, Micros: 100}) || run.Latency[4] != (report.Quantile{P: 1, Micros: 2000}) {
		t.Errorf("latency %+v", run.Latency)
	}
	var back RRRun
	if err := json.Unmarshal(run.Detail, &back); err != nil || back.TPS != rec.TPS || back.Client.P999 != 900 {
		t.Errorf("detail %s: %v", run.Detail, err)
	}

	dirty := rec
	dirty.Foreign = 0.2
	if run, _ := rrToRun(dirty, nil, 0.05); !run.Contaminated {
		t.Error("a run with 20% of the machine foreign must be contaminated at a 5% limit")
	}
	bad := rec
	bad.Check = RRCheck{Notes: []string{"interface rx 3 / tx 3 packets for 900 transactions"}}
	if run, _ := rrToRun(bad, nil, 0.05); !strings.Contains(run.Err, "interface rx 3") {
		t.Errorf("counts that disagree: err %q", run.Err)
	}
	if run, _ := rrToRun(RRRun{}, errors.New("the client did not connect within 30s"), 0.05); !strings.Contains(run.Err, "did not connect") || len(run.Values) != 0 {
		t.Errorf("failed run: err %q, values %v", run.Err, run.Values)
	}
}

// TestRRDocument: the grid has one case and, with both variants, the ratios netchan/kernel on
// the document's metrics (the whole machine's with its target); a document of one variant has
// no ratio.
func TestRRDocument(t *testing.T) {
	o := RROptions{Runs: 3, Conns: 16, Size: 128, Variants: []string{Netchan, Kernel}}
	d, err := rrDocument(o)
	if err != nil {
		t.Fatal(err)
	}
	if d.Scenario != "tcp-rr" || d.Rounds != 3 || len(d.Cases) != 1 || d.Cases[0].Name != "16 conns 128B" || d.KeyMetric() != rrTPS {
		t.Errorf("document %s, %d rounds, cases %+v, key %s", d.Scenario, d.Rounds, d.Cases, d.KeyMetric())
	}
	var targeted int
	for _, r := range d.Ratios {
		if d.Metric(r.Metric) == nil || r.Case != d.Cases[0].Name || r.Num != Netchan || r.Den != Kernel {
			t.Errorf("ratio %+v does not fit the grid", r)
		}
		if r.Target != nil {
			targeted++
			if r.Metric != rrUs || r.Target.Op != "<=" || r.Target.Value != 1 {
				t.Errorf("target of %s: %+v", r.Name, r.Target)
			}
		}
	}
	if len(d.Ratios) != 7 || targeted != 1 {
		t.Errorf("%d ratios, %d with a target; want 7 and 1", len(d.Ratios), targeted)
	}
	o.Variants = []string{Netchan}
	if d, _ := rrDocument(o); len(d.Ratios) != 0 {
		t.Errorf("one variant: ratios %+v", d.Ratios)
	}
}

func TestServerCPUs(t *testing.T) {
	for _, c := range []struct {
		online        []int
		client        int
		given, want   []int
		wantErrSubstr string
	}{
		{online: []int{0, 1}, client: 0, want: []int{1}},
		{online: []int{0, 1}, client: 1, want: []int{0}},
		{online: []int{0, 1}, client: -1, want: []int{0}},
		{online: []int{0}, client: 0, want: []int{0}},
		{online: []int{0, 1, 2, 3}, client: 0, given: []int{2, 3}, want: []int{2, 3}},
		{online: []int{0, 1}, client: 2, wantErrSubstr: "client CPU 2"},
		{online: []int{0, 1}, client: 0, given: []int{5}, wantErrSubstr: "server CPU 5"},
	} {
		got, err := serverCPUs(c.online, c.client, c.given)
		if c.wantErrSubstr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErrSubstr) {
				t.Errorf("%+v: err %v, want one naming %q", c, err, c.wantErrSubstr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, %v", c, got, err)
		}
	}
}

// TestPinServer confines the test process to one CPU and back: every thread's mask, threads
// started meanwhile included, and GOMAXPROCS follow, and restore gives back what it found.
func TestPinServer(t *testing.T) {
	before := trafficgen.ProcessCPUs()
	if len(before) < 2 {
		t.Skip("needs two CPUs in this process's affinity")
	}
	procs := runtime.GOMAXPROCS(0)
	cpu := before[len(before)-1]
	restore, err := pinServer([]int{cpu}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A thread made while pinned: a goroutine locked to its thread makes the runtime start
	// another for the rest.
	started, release := make(chan struct{}), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		close(started)
		<-release
	}()
	<-started
	off, total := threadsOutside([]int{cpu})
	gmp := runtime.GOMAXPROCS(0)
	close(release)
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if off != 0 || total == 0 {
		t.Errorf("pinned to CPU %d: %d of %d threads allowed elsewhere", cpu, off, total)
	}
	if gmp != 1 {
		t.Errorf("GOMAXPROCS %d while pinned to one CPU, want 1", gmp)
	}
	if after := trafficgen.ProcessCPUs(); !slices.Equal(after, before) || runtime.GOMAXPROCS(0) != procs {
		t.Errorf("after restore: CPUs %v (were %v), GOMAXPROCS %d (was %d)", after, before, runtime.GOMAXPROCS(0), procs)
	}
	if n := threadsNarrowed(t, before); n != 0 {
		t.Errorf("after restore %d threads are still allowed fewer CPUs than %v", n, before)
	}
}

// threadsNarrowed counts this process's threads whose mask is not all of cpus.
func threadsNarrowed(t *testing.T, cpus []int) int {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		var set unix.CPUSet
		if unix.SchedGetaffinity(tid, &set) != nil {
			continue // ended meanwhile
		}
		for _, c := range cpus {
			if !set.IsSet(c) {
				n++
				break
			}
		}
	}
	return n
}
