package report

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// reflectDoc is a reflect-like grid: one case, three variants, five rounds.
func reflectDoc() *Document {
	d := New("reflect", "netchan bench reflect --runs 5")
	d.Rounds = 5
	d.Cases = []Case{{Name: "max"}}
	d.Variants = []string{"kernel", "netchan", "asavie"}
	d.Metrics = []Metric{{Name: "pps", Unit: "pkt/s", Better: Higher, Key: true}, {Name: "ns_per_packet", Unit: "ns/pkt", Better: Lower}}
	d.Ratios = []Ratio{{Name: "pps netchan/asavie", Case: "max", Metric: "pps", Num: "netchan", Den: "asavie", Target: &Target{Op: ">=", Value: 1}}}
	return d
}

func run(c, v string, round, attempt int, pps float64) Run {
	return Run{Case: c, Variant: v, Round: round, Attempt: attempt, Values: map[string]float64{"pps": pps, "ns_per_packet": 1e9 / pps}}
}

// TestCollapsedRoundFlagged plants the collapse the issue saw (asavie at 4.8k packets/s among
// 375k) in round 3: the summary leaves it out of the median and the paired ratio and flags it.
func TestCollapsedRoundFlagged(t *testing.T) {
	d := reflectDoc()
	asavie := []float64{375e3, 371e3, 4.8e3, 380e3, 369e3}
	for round := 1; round <= 5; round++ {
		d.Runs = append(d.Runs, run("max", "kernel", round, 0, 103e3), run("max", "netchan", round, 0, 410e3),
			run("max", "asavie", round, 0, asavie[round-1]))
	}
	d.Summarize()
	f := d.Figure("max", "asavie")
	if f == nil {
		t.Fatal("no asavie figure")
	}
	if f.Runs != 4 || f.Outliers != 1 {
		t.Errorf("asavie figure: %d runs, %d outliers; want 4 and 1", f.Runs, f.Outliers)
	}
	if got := f.Stats["pps"].Median; got != (371e3+375e3)/2 {
		t.Errorf("asavie median %v, want 373000 (the collapsed round left out)", got)
	}
	if got := f.Stats["pps"].Min; got < 300e3 {
		t.Errorf("asavie min %v: the collapsed round is in the figure", got)
	}
	collapsed := &d.Runs[3*2+2]
	if collapsed.Used || !strings.Contains(collapsed.Outlier, "4800") {
		t.Errorf("collapsed run: used %v, outlier %q", collapsed.Used, collapsed.Outlier)
	}
	if len(d.Flags) == 0 || !strings.Contains(strings.Join(d.Flags, "\n"), "max asavie round 3, attempt 0: left out as an outlier") {
		t.Errorf("flags %q do not name the collapsed round", d.Flags)
	}
	r := d.Ratio("max", "pps netchan/asavie")
	if r == nil || r.Pairs != 4 || r.PairedMax > 2 || r.Met == nil || !*r.Met {
		t.Errorf("ratio %+v: want 4 pairs, none from round 3 (410k/4.8k = 85), met", r)
	}
	if tab := d.Table(); !strings.Contains(tab, "1 outlier(s) left out") || !strings.Contains(tab, "left out as an outlier") {
		t.Errorf("table does not show the outlier:\n%s", tab)
	}
	for _, v := range []string{"kernel", "netchan"} {
		if f := d.Figure("max", v); f.Runs != 5 || f.Outliers != 0 {
			t.Errorf("%s: %d runs, %d outliers; want 5 and 0", v, f.Runs, f.Outliers)
		}
	}
}

// TestTwoRoundsNoVerdict: with two rounds there is no majority, and nothing is left out.
func TestTwoRoundsNoVerdict(t *testing.T) {
	d := reflectDoc()
	d.Rounds = 2
	d.Runs = []Run{run("max", "asavie", 1, 0, 375e3), run("max", "asavie", 2, 0, 4.8e3)}
	d.Summarize()
	if f := d.Figure("max", "asavie"); f.Runs != 2 || f.Outliers != 0 {
		t.Errorf("figure %+v", f)
	}
}

// TestContaminatedChoice: a clean attempt stands for its round before a contaminated one, and
// among contaminated attempts the least contaminated.
func TestContaminatedChoice(t *testing.T) {
	d := reflectDoc()
	d.Rounds = 1
	a := run("max", "netchan", 1, 0, 100e3)
	a.Contaminated, a.Foreign = true, 0.3
	b := run("max", "netchan", 1, 1, 200e3)
	b.Contaminated, b.Foreign = true, 0.2
	d.Runs = []Run{a, b}
	d.Summarize()
	if u := d.Used("max", "netchan", 1); u == nil || u.Attempt != 1 {
		t.Fatalf("used %+v, want attempt 1 (less contaminated)", u)
	}
	if !strings.Contains(strings.Join(d.Flags, "\n"), "contaminated") {
		t.Errorf("flags %q: want the noisy figure flagged", d.Flags)
	}
	c := run("max", "netchan", 1, 2, 300e3)
	d.Runs = append(d.Runs, c)
	d.Summarize()
	if u := d.Used("max", "netchan", 1); u == nil || u.Attempt != 2 {
		t.Fatalf("used %+v, want attempt 2 (clean)", u)
	}
}

// TestExecute runs a grid through a fake Measure: the order rotates, a contaminated run is
// repeated, an outlier round is repeated once and its repeat stands, and progress is told.
func TestExecute(t *testing.T) {
	d := reflectDoc()
	d.Cases = []Case{{Name: "max"}, {Name: "load", X: 200e3}}
	var order []string
	var progress []Progress
	calls := map[Trial]int{}
	err := d.Execute(context.Background(), Plan{
		Measure: func(ctx context.Context, tr Trial) (Run, error) {
			order = append(order, tr.Variant)
			calls[Trial{Case: tr.Case, Variant: tr.Variant, Round: tr.Round}]++
			pps := map[string]float64{"kernel": 100e3, "netchan": 400e3, "asavie": 370e3}[tr.Variant]
			r := Run{Values: map[string]float64{"pps": pps + float64(tr.Round), "ns_per_packet": 10}}
			switch {
			case tr.Variant == "asavie" && tr.Round == 3 && tr.Case.Name == "max" && tr.Attempt == 0:
				r.Values["pps"] = 4.8e3 // collapsed
			case tr.Variant == "kernel" && tr.Round == 2 && tr.Case.Name == "max" && tr.Attempt == 0:
				r.Contaminated, r.Foreign = true, 0.4
			}
			return r, nil
		},
		Progress: func(p Progress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order[:3], ","); got != "kernel,netchan,asavie" {
		t.Errorf("round 1 order %s", got)
	}
	if got := strings.Join(order[6:9], ","); got != "asavie,netchan,kernel" {
		t.Errorf("round 2 order %s, want reversed", got)
	}
	if n := calls[Trial{Case: Case{Name: "max"}, Variant: "kernel", Round: 2}]; n != 2 {
		t.Errorf("contaminated kernel run of round 2 ran %d times, want 2", n)
	}
	if n := calls[Trial{Case: Case{Name: "max"}, Variant: "asavie", Round: 3}]; n != 2 {
		t.Errorf("outlier asavie round 3 ran %d times, want 2", n)
	}
	u := d.Used("max", "asavie", 3)
	if u == nil || u.Attempt != 1 || u.Values["pps"] != 370e3+3 {
		t.Errorf("asavie round 3 stands as %+v, want its repeat", u)
	}
	if f := d.Figure("max", "asavie"); f.Runs != 5 || f.Outliers != 1 {
		t.Errorf("asavie figure: %d runs, %d outliers; want 5 and 1", f.Runs, f.Outliers)
	}
	if len(d.Runs) != 5*2*3+2 {
		t.Errorf("%d runs recorded, want 32 (30 + a contaminated repeat + an outlier repeat)", len(d.Runs))
	}
	if len(progress) != len(d.Runs) || progress[0].Total != 30 || progress[len(progress)-1].Repeat == "" {
		t.Errorf("progress: %d reports (first %+v, last %+v)", len(progress), progress[0], progress[len(progress)-1])
	}
	if s := progress[5].String(); !strings.Contains(s, "reflect · round 1/5 · load") || !strings.Contains(s, "run 6/30") {
		t.Errorf("progress line %q", s)
	}
	if d.Finished.IsZero() || len(d.Figures) != 6 {
		t.Errorf("finished %v, %d figures", d.Finished, len(d.Figures))
	}
}

// TestExecuteStops: Measure's error stops the benchmark and the runs so far are kept.
func TestExecuteStops(t *testing.T) {
	d := reflectDoc()
	boom := errors.New("lab gone")
	n := 0
	err := d.Execute(context.Background(), Plan{Measure: func(ctx context.Context, tr Trial) (Run, error) {
		n++
		if n == 4 {
			return Run{}, boom
		}
		return Run{Values: map[string]float64{"pps": 1}}, nil
	}})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "round 2") || len(d.Runs) != 3 {
		t.Errorf("err %v, %d runs", err, len(d.Runs))
	}
}

// TestWriteRead: a written document reads back with the same figures, and ReadDir skips JSON
// of another kind and names it.
func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	d := reflectDoc()
	for round := 1; round <= 5; round++ {
		d.Runs = append(d.Runs, run("max", "netchan", round, 0, 400e3+float64(round)), run("max", "asavie", round, 0, 370e3))
	}
	if err := d.SetOptions(map[string]int{"runs": 5}); err != nil {
		t.Fatal(err)
	}
	d.Summarize()
	p, err := d.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rx-20261125-121538.json"), []byte(`{"kind":"rx"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	docs, skipped, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || len(skipped) != 1 || !strings.HasSuffix(skipped[0], "rx-20261125-121538.json") {
		t.Fatalf("docs %d, skipped %v", len(docs), skipped)
	}
	got := docs[0]
	if got.Table() != d.Table() {
		t.Errorf("table after reading %s differs:\n%s\nwant\n%s", p, got.Table(), d.Table())
	}
	if r := got.Ratio("max", "pps netchan/asavie"); r == nil || r.Pairs != 5 {
		t.Errorf("ratio after reading: %+v", r)
	}
	if _, err := Read(filepath.Join(dir, "rx-20261125-121538.json")); !errors.Is(err, ErrNotReport) {
		t.Errorf("reading an old result: %v, want ErrNotReport", err)
	}
	if l := Latest(append(docs, docs...), "nat", "reflect"); len(l) != 1 || l[0] != got {
		t.Errorf("Latest: %v", l)
	}
}

// TestLatencyAndQueues: a figure's latency quantiles and per-queue values are the medians of
// its runs', over the runs that stand for their rounds.
func TestLatencyAndQueues(t *testing.T) {
	d := reflectDoc()
	d.Rounds = 3
	for round := 1; round <= 3; round++ {
		r := run("max", "netchan", round, 0, 400e3)
		r.Latency = []Quantile{{P: 0.99, Micros: float64(10 * round)}, {P: 0.5, Micros: float64(round)}}
		r.Queues = []float64{100e3 * float64(round), 300e3}
		d.Runs = append(d.Runs, r)
	}
	d.Summarize()
	f := d.Figure("max", "netchan")
	if len(f.Latency) != 2 || f.Latency[0] != (Quantile{P: 0.5, Micros: 2}) || f.Latency[1] != (Quantile{P: 0.99, Micros: 20}) {
		t.Errorf("latency %+v, want p50 2 µs and p99 20 µs in order", f.Latency)
	}
	if len(f.Queues) != 2 || f.Queues[0] != 200e3 || f.Queues[1] != 300e3 {
		t.Errorf("queues %v", f.Queues)
	}
}

// TestRatioOfNonPositive: a ratio whose denominator's median is 0 or below (CPU above a floor
// that measured at or under it) is left empty, neither met nor missed.
func TestRatioOfNonPositive(t *testing.T) {
	d := reflectDoc()
	d.Rounds = 1
	d.Runs = []Run{run("max", "netchan", 1, 0, 400e3), {Case: "max", Variant: "asavie", Round: 1, Values: map[string]float64{"pps": -5}}}
	d.Summarize()
	if r := d.Ratio("max", "pps netchan/asavie"); r.OfMedians != 0 || r.Pairs != 0 || r.Met != nil {
		t.Errorf("ratio over a negative figure: %+v", r)
	}
}

// TestExecuteSkip: a skipped trial is not run, not counted in the progress, and has no figure.
func TestExecuteSkip(t *testing.T) {
	d := reflectDoc()
	d.Rounds = 2
	var totals []int
	ran := 0
	err := d.Execute(context.Background(), Plan{
		Measure: func(ctx context.Context, tr Trial) (Run, error) {
			ran++
			return Run{Values: map[string]float64{"pps": 1}}, nil
		},
		Skip:     func(c Case, v string) bool { return v == "asavie" },
		Progress: func(p Progress) { totals = append(totals, p.Total) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if ran != 4 || len(totals) != 4 || totals[0] != 4 {
		t.Errorf("ran %d trials, progress totals %v; want 4 and 4", ran, totals)
	}
	if d.Figure("max", "asavie") != nil || d.Figure("max", "netchan") == nil {
		t.Errorf("figures %+v: want none for the skipped variant", d.Figures)
	}
}

// TestCollapsesDoNotOutvote: when most of a cell's runs collapsed, the good run is on the
// better side of the median and stays; a repeat that comes back in line stands for its round,
// and judged against every run the remaining collapse is left out.
func TestCollapsesDoNotOutvote(t *testing.T) {
	d := reflectDoc()
	d.Rounds = 3
	d.Runs = []Run{run("max", "netchan", 1, 0, 334984), run("max", "netchan", 2, 0, 62350), run("max", "netchan", 3, 0, 5821)}
	d.Summarize()
	if d.Runs[0].Outlier != "" || !d.Runs[0].Used || d.Runs[2].Outlier == "" {
		t.Fatalf("runs %+v: want the good run used and the deepest collapse left out", d.Runs)
	}
	d.Runs = append(d.Runs, run("max", "netchan", 3, 1, 246384))
	d.Summarize()
	if u := d.Used("max", "netchan", 3); u == nil || u.Attempt != 1 {
		t.Errorf("round 3 stands as %+v, want its repeat", u)
	}
	if d.Runs[1].Outlier == "" || d.Used("max", "netchan", 2) != nil {
		t.Errorf("round 2's collapse (62350 against a median of 154367) is not left out: %+v", d.Runs[1])
	}
	if f := d.Figure("max", "netchan"); f.Runs != 2 || f.Stats["pps"].Min < 200e3 {
		t.Errorf("figure %+v: want the two good rounds", f)
	}
}
