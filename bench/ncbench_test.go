package bench

import (
	"strings"
	"testing"
)

// TestNetchannelSummarize: CPU above the floor is paired by round against xdp-drop's rx run
// (also for echo), a collapsed run is flagged and left out, and the ratios carry their targets.
func TestNetchannelSummarize(t *testing.T) {
	r := &NetchannelReport{Options: NetchannelOptions{Modes: []string{ModeRx, ModeEcho},
		Variants: []string{Netchannel, Epoll, Mmsg, XDPDrop}, Rates: []int{1000}, Runs: 3, Payload: 128, Collapse: 0.5}}
	add := func(mode, v string, round int, pps, ns, task float64) {
		r.Runs = append(r.Runs, NetchannelRun{Mode: mode, Rate: 1000,
			RunRecord: RunRecord{Variant: v, Round: round, PPS: pps, NsPerPacket: ns, TaskNsPerPacket: task}})
	}
	for round := 0; round < 3; round++ {
		add(ModeRx, XDPDrop, round, 1000, 1000, 500)
		add(ModeRx, Netchannel, round, 1000, 2000, 1500)
		add(ModeRx, Epoll, round, 1000, 4000, 3500)
		add(ModeRx, Mmsg, round, 1000, 3000, 1000)
		add(ModeEcho, Epoll, round, 1000, 5000, 4500)
		add(ModeEcho, Mmsg, round, 1000, 3000, 2500)
	}
	add(ModeEcho, Netchannel, 0, 1000, 2000, 1500)
	add(ModeEcho, Netchannel, 1, 1000, 2200, 1700)
	add(ModeEcho, Netchannel, 2, 100, 90000, 90000) // collapsed: a tenth of its siblings
	r.summarize()

	f := r.Figure(ModeRx, Netchannel, 1000)
	if f == nil || f.AboveFloor == nil || f.AboveFloor.Median != 1000 || f.TaskAboveFloor.Median != 1000 {
		t.Fatalf("rx netchannel figure %+v: want 1000 ns above the floor by both measures", f)
	}
	e := r.Figure(ModeEcho, Netchannel, 1000)
	if e == nil || e.Runs != 2 || e.Collapsed != 1 || e.NsPerPacket.Max != 2200 {
		t.Fatalf("echo netchannel figure %+v: want 2 runs and 1 collapsed, left out", e)
	}
	if !r.Runs[len(r.Runs)-1].Collapsed || r.Runs[len(r.Runs)-1].Used {
		t.Errorf("the collapsed run is not flagged, or still used")
	}
	got := map[string]NetchannelRatio{}
	for _, rt := range r.Ratios {
		got[rt.Mode+" "+rt.Measure+" "+rt.Name] = rt
	}
	// rx core, rx: netchannel 1000 above, epoll 3000 above, mmsg 2000 above.
	if rt := got["rx rx core netchannel/epoll above floor"]; rt.Value != 1.0/3 || rt.Met == nil || !*rt.Met {
		t.Errorf("rx netchannel/epoll %+v: want 0.33, met", rt)
	}
	// own threads, rx: netchannel 1000 above, mmsg 500 above: twice, missed.
	if rt := got["rx own threads netchannel/mmsg above floor"]; rt.Value != 2 || rt.Met == nil || *rt.Met {
		t.Errorf("rx own-threads netchannel/mmsg %+v: want 2, missed", rt)
	}
	// echo pairs by round (round 2 collapsed): netchannel 1000 and 1200 above, epoll 4000.
	if rt := got["echo rx core netchannel/epoll above floor"]; rt.Value != 1100.0/4000 || rt.Paired != (0.25+0.3)/2 {
		t.Errorf("echo netchannel/epoll %+v: want 0.275 of medians and paired", rt)
	}
	tab := r.Table()
	for _, want := range []string{"| rx | 1k/s | netchannel | 1000 |", "Collapsed runs, left out: echo netchannel 1k/s round 2", "(missed)", "(met)"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}
