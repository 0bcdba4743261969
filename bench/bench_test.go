package bench

import (
	"strings"
	"testing"
)

func TestStatMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{5}, 5}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{9, 1, 5, 7, 3}, 5},
	} {
		s := newStat(tc.in)
		if s.Median != tc.want {
			t.Errorf("median of %v = %v, want %v", tc.in, s.Median, tc.want)
		}
	}
	s := newStat([]float64{3, 1, 2})
	if s.Min != 1 || s.Max != 3 || s.Values[0] != 3 {
		t.Errorf("stat %+v: min, max or the values in run order are wrong", s)
	}
}

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

func TestSummarize(t *testing.T) {
	r := &Report{Kind: KindRx, Options: Options{Kind: KindRx, Variants: []string{Kernel, Netchan}, Phases: []string{PhaseMax, PhaseLoad}, Runs: 3, Rate: 1000}}
	for i, pps := range []float64{500, 520, 510} {
		r.Runs = append(r.Runs, RunRecord{Variant: Kernel, Phase: PhaseMax, Round: i, PPS: pps},
			RunRecord{Variant: Netchan, Phase: PhaseMax, Round: i, PPS: 3 * pps},
			RunRecord{Variant: Kernel, Phase: PhaseLoad, Round: i, NsPerPacket: 900},
			RunRecord{Variant: Netchan, Phase: PhaseLoad, Round: i, NsPerPacket: 400})
	}
	r.Runs = append(r.Runs, RunRecord{Variant: Netchan, Phase: PhaseMax, PPS: 1e9, Err: "failed runs do not count"})
	r.summarize()
	got := map[string]Ratio{}
	for _, rt := range r.Ratios {
		got[rt.Name] = rt
	}
	if rt := got["pps netchan/kernel"]; rt.Value != 3 || rt.Met == nil || !*rt.Met {
		t.Errorf("pps ratio %+v, want 3 (met)", rt)
	}
	if rt := got["cpu/pkt netchan/kernel"]; rt.Value != 400.0/900 || rt.Met == nil || *rt.Met {
		t.Errorf("cpu ratio %+v, want 0.44 (missed)", rt)
	}
	if tab := r.Table(); !strings.Contains(tab, "| netchan | full load | 1530 |") || !strings.Contains(tab, "| 3 (3) |") {
		t.Errorf("table:\n%s", tab)
	}
}

// TestSummarizeAttempts: a round's clean attempt stands for it; a round without one is
// represented by its least contaminated attempt, and the figure says it is noisy.
func TestSummarizeAttempts(t *testing.T) {
	r := &Report{Kind: KindRx, Options: Options{Kind: KindRx, Variants: []string{Netchan}, Phases: []string{PhaseMax}, Runs: 2}}
	r.Runs = []RunRecord{
		{Variant: Netchan, Phase: PhaseMax, Round: 0, PPS: 10, Foreign: 0.5, Contaminated: true},
		{Variant: Netchan, Phase: PhaseMax, Round: 0, PPS: 100, Foreign: 0.01, Attempt: 1},
		{Variant: Netchan, Phase: PhaseMax, Round: 1, PPS: 20, Foreign: 0.3, Contaminated: true},
		{Variant: Netchan, Phase: PhaseMax, Round: 1, PPS: 30, Foreign: 0.2, Contaminated: true, Attempt: 1},
	}
	r.summarize()
	f := r.Figures[0]
	if f.Runs != 2 || f.Clean != 1 || !f.Noisy || f.PPS.Min != 30 || f.PPS.Max != 100 {
		t.Fatalf("figure %+v: want rounds represented by 100 (clean) and 30 (least contaminated)", f)
	}
	if r.Runs[0].Used || !r.Runs[1].Used || r.Runs[2].Used || !r.Runs[3].Used {
		t.Fatalf("used flags: %v %v %v %v", r.Runs[0].Used, r.Runs[1].Used, r.Runs[2].Used, r.Runs[3].Used)
	}
}
