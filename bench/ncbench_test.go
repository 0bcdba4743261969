package bench

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netchan/netchan/bench/report"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// TestNetchannelDocument: a case per mode and rate along the offered-rate axis, full load at
// X 0, and the outlier rule from Collapse.
func TestNetchannelDocument(t *testing.T) {
	o := NetchannelOptions{Rates: []int{10000, 0}, Generator: []string{"gen"}}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	d, cases, err := o.document()
	if err != nil {
		t.Fatal(err)
	}
	if got := caseNames(d); got != "rx 10000,rx full,echo 10000,echo full" {
		t.Errorf("cases %s", got)
	}
	if c := d.Cases[2]; c.Group != ModeEcho || c.X != 10000 || cases[c.Name].rate != 10000 || cases[c.Name].mode != ModeEcho {
		t.Errorf("echo 10000: %+v %+v", c, cases[c.Name])
	}
	if c := d.Cases[1]; c.X != 0 || cases[c.Name].rate != 0 {
		t.Errorf("rx full: %+v", c)
	}
	if d.Outliers.Factor != 2 || d.Outliers.Metric != mPPS {
		t.Errorf("outlier rule %+v, want pps within a factor of 2 (collapse 0.5)", d.Outliers)
	}
	for _, m := range []string{mNsAbove, mTaskNsAbove, mMachineNsAbove, mLoss, mSlicesPer1k} {
		if d.Metric(m) == nil {
			t.Errorf("no metric %s", m)
		}
	}
	o = NetchannelOptions{Collapse: 0.25, Modes: []string{ModeEcho}, Generator: []string{"gen"}}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if d, _, _ = o.document(); d.Outliers.Factor != 4 || len(d.Ratios) != 0 {
		t.Errorf("collapse 0.25, echo alone: rule %+v, %d ratios (no floor without rx mode)", d.Outliers, len(d.Ratios))
	}
	o = NetchannelOptions{Collapse: -1, Generator: []string{"gen"}}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if d, _, _ = o.document(); d.Outliers.Factor >= 0 {
		t.Errorf("collapse -1: rule %+v, want off", d.Outliers)
	}
	if err := (&NetchannelOptions{Collapse: 1, Generator: []string{"gen"}}).defaults(); err == nil {
		t.Errorf("collapse 1 accepted")
	}
}

// TestNetchannelSummarize runs a grid through the plan with a fake lab: xdp-drop never runs in
// echo mode and progress counts only the runs that happen; CPU above the floor is paired by
// round against xdp-drop's rx run (also for echo); a collapsed run is left out (its round
// repeated once, collapsing again); the ratios carry their targets; and the document read back
// gives the same figures.
func TestNetchannelSummarize(t *testing.T) {
	o := NetchannelOptions{Rates: []int{1000}, Runs: 3, Retries: -1, Generator: []string{"gen"}}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	d, cases, err := o.document()
	if err != nil {
		t.Fatal(err)
	}
	// rx core and own-threads ns/packet of each mode and variant; the machine's is the rx core's.
	ns := map[string][2]float64{
		"rx " + XDPDrop: {1000, 500}, "rx " + Netchannel: {2000, 1500}, "rx " + Epoll: {4000, 3500}, "rx " + Mmsg: {3000, 1000},
		"echo " + Epoll: {5000, 4500}, "echo " + Mmsg: {3000, 2500}, "echo " + Netchannel: {2000, 1500},
	}
	calls := map[string]int{}
	var progress []report.Progress
	o.Progress = func(p report.Progress) { progress = append(progress, p) }
	err = d.Execute(context.Background(), o.plan(d, cases, func(ctx context.Context, mode, v string, rate, runID int) (NetchannelRun, error) {
		k := mode + " " + v
		calls[k]++
		x, ok := ns[k]
		if !ok {
			t.Errorf("%s ran", k)
		}
		run := NetchannelRun{Mode: mode, Rate: rate, RunRecord: RunRecord{Variant: v, PPS: 1000, RxPackets: 5000, TaskSlices: 50,
			NsPerPacket: x[0], TaskNsPerPacket: x[1], MachineNsPerPacket: x[0]}}
		if k == "echo netchannel" {
			switch calls[k] {
			case 2:
				run.NsPerPacket, run.MachineNsPerPacket, run.TaskNsPerPacket = 2200, 2200, 1700
			case 3, 4: // round 3 collapses, and again when it is repeated
				run.PPS, run.NsPerPacket, run.TaskNsPerPacket, run.MachineNsPerPacket = 100, 90000, 90000, 90000
			}
		}
		return run, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	settle(d, cases)
	if calls["echo "+XDPDrop] != 0 || calls["echo netchannel"] != 5 {
		t.Errorf("calls %v: want no echo xdp-drop, and echo netchannel's third round repeated twice", calls)
	}
	if len(d.Runs) != 3*7+2 {
		t.Errorf("%d runs, want 23 (3 rounds of 7, two repeats)", len(d.Runs))
	}
	if len(progress) != len(d.Runs) || progress[0].Total != 21 || progress[0].Done != 0 || progress[20].Done != 20 {
		t.Errorf("progress: %d calls; first %+v; 21st %+v", len(progress), progress[0], progress[min(20, len(progress)-1)])
	}
	for _, p := range progress {
		if p.Trial.Variant == XDPDrop && cases[p.Trial.Case.Name].mode == ModeEcho {
			t.Errorf("progress told of %s %s", p.Trial.Case.Name, p.Trial.Variant)
		}
	}
	for _, f := range d.Flags {
		if strings.Contains(f, "echo 1000 "+XDPDrop) {
			t.Errorf("flag about a trial outside the grid: %s", f)
		}
	}
	if d.Figure("echo 1000", XDPDrop) != nil {
		t.Errorf("a figure of xdp-drop in echo mode")
	}
	f := d.Figure("rx 1000", Netchannel)
	if f == nil || f.Stats[mNsAbove].Median != 1000 || f.Stats[mTaskNsAbove].Median != 1000 || f.Stats[mSlicesPer1k].Median != 10 {
		t.Fatalf("rx netchannel figure %+v: want 1000 ns above the floor by both measures, 10 wake-ups per 1k packets", f)
	}
	if fl := d.Figure("rx 1000", XDPDrop); fl == nil || fl.Stats[mNsAbove].Median != 0 {
		t.Errorf("the floor's own figure above the floor: %+v, want 0", fl)
	}
	e := d.Figure("echo 1000", Netchannel)
	if e == nil || e.Runs != 3 || e.Outliers != 2 || e.Stats[mNsPerPkt].Max != 2200 {
		t.Fatalf("echo netchannel figure %+v: want 3 runs, the collapsed round's first 2 attempts left out and its second repeat standing", e)
	}
	for _, r := range d.Runs {
		if r.Case == "echo 1000" && r.Variant == Netchannel && r.Round == 3 && r.Attempt < 2 && (r.Used || r.Outlier == "") {
			t.Errorf("collapsed run %+v: used, or not flagged", r)
		}
	}
	// rx core, rx: netchannel 1000 above, epoll 3000 above: a third, met.
	if rt := d.Ratio("rx 1000", "rx core netchannel/epoll above floor"); rt == nil || !near(rt.OfMedians, 1.0/3) || rt.Met == nil || !*rt.Met {
		t.Errorf("rx netchannel/epoll %+v: want 0.33, met", rt)
	}
	// own threads, rx: netchannel 1000 above, mmsg 500 above: twice, missed.
	if rt := d.Ratio("rx 1000", "own threads netchannel/mmsg above floor"); rt == nil || !near(rt.OfMedians, 2) || rt.Met == nil || *rt.Met {
		t.Errorf("rx own-threads netchannel/mmsg %+v: want 2, missed", rt)
	}
	// echo pairs by round (round 3 collapsed twice, then its second repeat stands): netchannel
	// 1000, 1200 and 1000 above, epoll 4000.
	if rt := d.Ratio("echo 1000", "rx core netchannel/epoll above floor"); rt == nil || !near(rt.OfMedians, 1000.0/4000) ||
		!near(rt.Paired, 0.25) || !near(rt.PairedMax, 0.3) || rt.Pairs != 3 {
		t.Errorf("echo netchannel/epoll %+v: want 0.25 of medians and paired, up to 0.3, 3 pairs", rt)
	}
	tab := d.Table()
	for _, want := range []string{"| rx 1000 | netchannel | 1000 |", "left out as an outlier", "(missed)", "(met)"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	path, err := d.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	back, err := report.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if rt := back.Ratio("echo 1000", "rx core netchannel/epoll above floor"); rt == nil || !near(rt.OfMedians, 1000.0/4000) {
		t.Errorf("read back: echo netchannel/epoll %+v", rt)
	}
	if filepath.Base(path) != filepath.Base(d.Path(".")) {
		t.Errorf("written as %s", path)
	}
}

// TestNetchannelDetail: the netchannel variant's receiver counts come back typed from a run's
// detail.
func TestNetchannelDetail(t *testing.T) {
	run := NetchannelRun{Mode: ModeEcho, Rate: 1000, RunRecord: RunRecord{Variant: Netchannel,
		Receiver: NetchannelCounts{Reads: 7, Kernel: NetchannelKernelUDP{NoPorts: 3}}}}
	b, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	back, err := NetchannelDetail(report.Run{Variant: Netchannel, Detail: b})
	if err != nil {
		t.Fatal(err)
	}
	c, ok := back.Receiver.(NetchannelCounts)
	if !ok || c.Reads != 7 || c.Kernel.NoPorts != 3 || back.Mode != ModeEcho || back.Rate != 1000 {
		t.Errorf("detail read back as %+v (receiver %T)", back, back.Receiver)
	}
	if _, err := NetchannelDetail(report.Run{Variant: Epoll}); err == nil {
		t.Errorf("a run without detail decoded")
	}
}
