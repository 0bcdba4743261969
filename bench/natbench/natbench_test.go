package natbench

import (
	"strings"
	"testing"

	"github.com/netchan/netchan/bench/report"
)

// TestDocumentGrid: one case per phase, the variants as given, delivered packets/s as the key,
// and per phase and netchan variant a forwarded packets/s ratio to Linux (with issue 8's target
// where the phase offers more than the NATs forward) and a CPU-per-packet ratio.
func TestDocumentGrid(t *testing.T) {
	o := Options{Command: "netchan bench nat --phases max,rate,xdp-rate", Variants: []string{Netchan, NetchanXDP, Linux},
		Phases: []string{Max, Rate, RateXDP}, Generator: []string{"gen"}}
	o.defaults()
	d, err := newDocument(o)
	if err != nil {
		t.Fatal(err)
	}
	if d.Scenario != "nat" || d.Rounds != 5 || len(d.Cases) != 3 || d.Cases[2] != (report.Case{Name: RateXDP, Group: RateXDP}) {
		t.Errorf("scenario %q, %d rounds, cases %+v", d.Scenario, d.Rounds, d.Cases)
	}
	if d.KeyMetric() != MetricPPS || d.Metric(MetricNsPerPacket).Better != report.Lower {
		t.Errorf("key metric %q, metrics %+v", d.KeyMetric(), d.Metrics)
	}
	if len(d.Ratios) != 3*2*2 {
		t.Fatalf("%d ratios, want 12 (3 phases × 2 netchan variants × pps and CPU)", len(d.Ratios))
	}
	for _, phase := range []string{Max, Rate, RateXDP} {
		for _, v := range []string{Netchan, NetchanXDP} {
			pps := d.Ratio(phase, "forwarded_pps "+v+"/linux")
			if pps == nil || pps.Num != v || pps.Den != Linux || pps.Metric != MetricForwardedPPS {
				t.Errorf("%s %s: packets/s ratio %+v", phase, v, pps)
				continue
			}
			if wantTarget := phase != Rate; (pps.Target != nil) != wantTarget || (wantTarget && *pps.Target != (report.Target{Op: ">=", Value: Target})) {
				t.Errorf("%s %s: target %v, want one: %v", phase, v, pps.Target, wantTarget)
			}
			if cpu := d.Ratio(phase, "ns_per_packet linux/"+v); cpu == nil || cpu.Num != Linux || cpu.Den != v || cpu.Target != nil {
				t.Errorf("%s %s: CPU ratio %+v", phase, v, cpu)
			}
		}
	}
	if !strings.Contains(string(d.Options), `"Rate":250000`) {
		t.Errorf("options %s: want the defaults applied", d.Options)
	}

	o.Variants = []string{Netchan, NetchanXDP}
	if d, err := newDocument(o); err != nil || len(d.Ratios) != 0 {
		t.Errorf("without linux: %v, ratios %+v", err, d.Ratios)
	}
	o.Phases = []string{"burst"}
	if _, err := newDocument(o); err == nil || !strings.Contains(err.Error(), `unknown phase "burst"`) {
		t.Errorf("unknown phase: %v", err)
	}
	o.Phases, o.Variants = []string{Max}, []string{"dpdk"}
	if _, err := newDocument(o); err == nil || !strings.Contains(err.Error(), `unknown variant "dpdk"`) {
		t.Errorf("unknown variant: %v", err)
	}
}

// TestRunFromRecord: a record becomes a run with its figures as values, contaminated above the
// foreign limit only, and the record itself as the detail that Records gives back.
func TestRunFromRecord(t *testing.T) {
	rec := RunRecord{Round: 2, Variant: Linux, Phase: Max, Delivered: 900000, ServerRx: 900010, Seconds: 2, PPS: 450000,
		Forwarded: 1000000, ForwardedPPS: 500000, CPU: CPU{Busy: 1.9e9}, NsPerPacket: 1900, OwnNs: 1.8e9, OwnNsPerPacket: 1800,
		Foreign: 0.05, Loadavg: "1.00 0.50 0.25 2/300 42"}
	clean, err := toRun(rec, 0.10)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{MetricPPS: 450000, MetricForwardedPPS: 500000, MetricNsPerPacket: 1900, MetricOwnNs: 1800, MetricCoreBusy: 0.95}
	for k, v := range want {
		if got, ok := clean.Values[k]; !ok || got != v {
			t.Errorf("%s: %v (present %v), want %v", k, got, ok, v)
		}
	}
	if clean.Contaminated || clean.Foreign != 0.05 || clean.Loadavg != rec.Loadavg {
		t.Errorf("clean run: contaminated %v, foreign %v, loadavg %q", clean.Contaminated, clean.Foreign, clean.Loadavg)
	}
	rec.Foreign = 0.15
	dirty, err := toRun(rec, 0.10)
	if err != nil {
		t.Fatal(err)
	}
	if !dirty.Contaminated {
		t.Error("a run with 15% of the core foreign is not contaminated at a 10% limit")
	}
	rec.Foreign = -0.11
	if own, _ := toRun(rec, 0.10); own.Foreign != 0 || own.Contaminated {
		t.Errorf("own threads' time above the core's busy time: foreign %v, contaminated %v; want 0 and clean", own.Foreign, own.Contaminated)
	}
	rec.Foreign = 0.15
	if lax, _ := toRun(rec, 0.20); lax.Contaminated {
		t.Error("a run with 15% of the core foreign is contaminated at a 20% limit")
	}
	recs, err := Records(&report.Document{Runs: []report.Run{clean, dirty}})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].ServerRx != 900010 || recs[0].Contaminated || !recs[1].Contaminated || recs[1].Round != 2 {
		t.Errorf("records %+v", recs)
	}
	if _, err := Records(&report.Document{Runs: []report.Run{{Case: Max, Variant: Linux, Round: 1}}}); err == nil {
		t.Error("a run without a detail decoded")
	}

	// A run that forwarded nothing has no CPU per packet: a zero would read as the best figure.
	none, err := toRun(RunRecord{Variant: Netchan, Phase: Rate, Seconds: 1, CPU: CPU{Busy: 1e8}}, 0.10)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := none.Values[MetricNsPerPacket]; ok || none.Values[MetricPPS] != 0 {
		t.Errorf("values of a run that forwarded nothing: %v", none.Values)
	}
}
