package bench

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/netchan/netchan/bench/report"
)

func TestCheckEvaluate(t *testing.T) {
	ok := Check{GenSent: 1000, PeerTx: 900, PeerTxDrop: 100, IfRx: 900, Received: 890, RecvDrops: 10}
	ok.evaluate(KindRx)
	if !ok.OK() || ok.Note != "" {
		t.Errorf("exact accounting rejected: %+v", ok)
	}
	bad := Check{GenSent: 1000, PeerTx: 1000, IfRx: 1000, Received: 900}
	bad.evaluate(KindRx)
	if bad.OK() || !strings.Contains(bad.Note, "interface rx") {
		t.Errorf("a 10%% shortfall passed: %+v", bad)
	}
	refl := Check{GenSent: 1000, PeerTx: 1000, IfRx: 1000, Received: 1000, Sent: 1000, IfTx: 990, IfTxDrop: 10, Replies: 990, PeerRx: 990}
	refl.evaluate(KindReflect)
	if !refl.OK() {
		t.Errorf("reflect accounting rejected: %+v", refl)
	}
	refl.Replies = 500
	refl.evaluate(KindReflect)
	if refl.OK() {
		t.Errorf("lost replies passed: %+v", refl)
	}
}

func caseNames(d *report.Document) string {
	var s []string
	for _, c := range d.Cases {
		s = append(s, c.Name)
	}
	return strings.Join(s, ",")
}

// TestDocumentCases: one frame size keeps the cases "max" and "load"; several make one max case
// per size along the frame-size axis, and each max case gets the max phase's ratios.
func TestDocumentCases(t *testing.T) {
	o := Options{Kind: KindRx, Generator: []string{"gen"}}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	d, cases, err := o.document()
	if err != nil {
		t.Fatal(err)
	}
	if got := caseNames(d); got != "max,load" || d.CaseAxis != "" {
		t.Errorf("one size: cases %s, axis %q; want max,load and none", got, d.CaseAxis)
	}
	if c := cases["load"]; c.size != 60 || c.rate != 200000 || c.phase != PhaseLoad {
		t.Errorf("load case %+v: want 60-byte frames at 200000 pkt/s", c)
	}
	if m := d.Metric(mTxPPS); m != nil {
		t.Errorf("rx has a %s metric", m.Name)
	}
	if d.KeyMetric() != mPPS || d.Rounds != 5 || len(d.Variants) != 5 {
		t.Errorf("key %s, %d rounds, variants %v", d.KeyMetric(), d.Rounds, d.Variants)
	}

	o = Options{Kind: KindReflect, Sizes: []int{60, 1514}, Generator: []string{"gen"}}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	d, cases, err = o.document()
	if err != nil {
		t.Fatal(err)
	}
	if got := caseNames(d); got != "max 60B,max 1514B,load" || d.CaseAxis == "" {
		t.Fatalf("two sizes: cases %s, axis %q", got, d.CaseAxis)
	}
	if c := d.Cases[1]; c.Group != PhaseMax || c.X != 1514 || cases[c.Name].size != 1514 || cases[c.Name].rate != 0 {
		t.Errorf("max 1514B case %+v, %+v", c, cases[c.Name])
	}
	if c := d.Cases[2]; c.Group != PhaseLoad || c.X != 0 || cases[c.Name].size != 60 {
		t.Errorf("load case %+v, %+v: want the load phase at --size", c, cases[c.Name])
	}
	for _, c := range []string{"max 60B", "max 1514B"} {
		var found *report.Ratio
		for i := range d.Ratios {
			if r := &d.Ratios[i]; r.Case == c && r.Name == "pps netchan/kernel" {
				found = r
			}
		}
		if found == nil || found.Target == nil || found.Target.Op != ">=" || found.Target.Value != 2.5 {
			t.Errorf("%s: ratio pps netchan/kernel %+v, want a target of at least 2.5", c, found)
		}
	}
	if d.Metric(mTxPPS) == nil {
		t.Errorf("reflect lacks %s", mTxPPS)
	}

	for _, bad := range []Options{
		{Kind: KindRx, Sizes: []int{59}},
		{Kind: KindRx, Sizes: []int{60, 1515}},
		{Kind: KindRx, Sizes: []int{60, 128, 60}},
		{Kind: KindRx, Sizes: []int{60, 128}, Phases: []string{PhaseLoad}},
		{Kind: KindRx, Phases: []string{PhaseMax, PhaseLoad, PhaseMax}},
	} {
		bad.Generator = []string{"gen"}
		if err := bad.defaults(); err == nil {
			t.Errorf("sizes %v, phases %v accepted", bad.Sizes, bad.Phases)
		}
	}
}

// TestPlan runs a document's grid through the plan with a fake lab: every case asks for its
// phase, frame size and rate; a failed run is kept with its error while the benchmark goes on;
// a contaminated run is repeated, and not with negative Retries; the ratios come out of the
// runs' values with their targets.
func TestPlan(t *testing.T) {
	for _, retries := range []int{0, -1} {
		o := Options{Kind: KindRx, Variants: []string{Kernel, Netchan}, Runs: 3, Rate: 1000, Sizes: []int{60, 1000},
			Retries: retries, Generator: []string{"gen"}}
		if err := o.defaults(); err != nil {
			t.Fatal(err)
		}
		d, cases, err := o.document()
		if err != nil {
			t.Fatal(err)
		}
		type call struct {
			variant, phase string
			size, rate     int
		}
		calls := map[call]int{}
		ids := map[int]bool{}
		var progress int
		o.Progress = func(report.Progress) { progress++ }
		err = d.Execute(context.Background(), o.plan(cases, func(ctx context.Context, v string, c benchCase, runID int) (RunRecord, error) {
			calls[call{v, c.phase, c.size, c.rate}]++
			if ids[runID] {
				t.Errorf("run ID %d given twice", runID)
			}
			ids[runID] = true
			rec := RunRecord{Variant: v, Phase: c.phase, Size: c.size, Offered: c.rate}
			pps := 500.0
			if v == Netchan {
				pps = 1500
			}
			switch {
			case c.Name == "max 1000B" && v == Kernel && calls[call{v, c.phase, c.size, c.rate}] == 2:
				return rec, errors.New("the receiver did not start") // the second round's
			case c.phase == PhaseLoad:
				rec.PPS = 1000
				rec.NsPerPacket = map[string]float64{Kernel: 900, Netchan: 400}[v]
				rec.TaskNsPerPacket = rec.NsPerPacket / 2
			case c.Name == "max 60B" && v == Netchan && calls[call{v, c.phase, c.size, c.rate}] == 1:
				rec.PPS, rec.RxCPU.Busy, rec.TaskCPU = pps, 0.9, 0.5 // others took 40%: contaminated
			default:
				rec.PPS = pps
			}
			return rec, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []call{{Kernel, PhaseMax, 60, 0}, {Netchan, PhaseMax, 1000, 0}, {Kernel, PhaseLoad, 60, 1000}} {
			if calls[c] != 3 {
				t.Errorf("retries %d: %+v ran %d times, want once a round", retries, c, calls[c])
			}
		}
		want := 4 // the contaminated round-1 run repeated once
		if retries < 0 {
			want = 3
		}
		if n := calls[call{Netchan, PhaseMax, 60, 0}]; n != want {
			t.Errorf("retries %d: netchan max 60B ran %d times, want %d", retries, n, want)
		}
		if progress != len(d.Runs) {
			t.Errorf("progress heard %d times for %d runs", progress, len(d.Runs))
		}
		f := d.Figure("max 1000B", Kernel)
		if f == nil || f.Runs != 2 {
			t.Errorf("kernel max 1000B figure %+v: want the 2 rounds without an error", f)
		}
		var failed, contaminated int
		for _, r := range d.Runs {
			if r.Err != "" {
				failed++
				if r.Case != "max 1000B" || r.Variant != Kernel || r.Used {
					t.Errorf("failed run %+v", r)
				}
			}
			if r.Contaminated {
				contaminated++
				if r.Foreign < 0.39 || r.Foreign > 0.41 {
					t.Errorf("contaminated run's foreign share %v, want 0.4", r.Foreign)
				}
			}
			if r.Err == "" && r.Case != PhaseLoad {
				if _, ok := r.Values[mNsPerPkt]; !ok {
					t.Errorf("%s %s: no ns/packet", r.Case, r.Variant)
				}
			}
		}
		if failed != 1 || contaminated != 1 {
			t.Errorf("%d failed and %d contaminated runs, want 1 and 1", failed, contaminated)
		}
		if u := d.Used("max 60B", Netchan, 1); u == nil || u.Contaminated != (retries < 0) {
			t.Errorf("retries %d: round 1 of netchan max 60B stands as %+v", retries, u)
		}
		rec, err := RunDetail(d.Runs[0])
		if err != nil || rec.Variant != d.Runs[0].Variant || rec.Size != 60 {
			t.Errorf("detail of run 0: %+v, %v", rec, err)
		}
		for _, c := range []string{"max 60B", "max 1000B"} {
			if r := d.Ratio(c, "pps netchan/kernel"); r == nil || r.OfMedians != 3 || r.Met == nil || !*r.Met {
				t.Errorf("%s: pps netchan/kernel %+v, want 3 (met)", c, r)
			}
		}
		if r := d.Ratio(PhaseLoad, "cpu/pkt netchan/kernel"); r == nil || r.OfMedians != 400.0/900 || r.Met == nil || *r.Met {
			t.Errorf("cpu/pkt netchan/kernel %+v, want 0.44 (missed)", r)
		}
		if r := d.Ratio(PhaseLoad, "cpu/pkt netchan/xdp-drop"); r != nil {
			t.Errorf("a ratio with a variant that did not run: %+v", r)
		}
	}
}
