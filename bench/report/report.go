package report

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/netchan/netchan/bench/stats"
)

// SchemaVersion names the document format; Read refuses files without it.
const SchemaVersion = "netchan-bench/1"

// Document is one benchmark run of one scenario: see the package doc.
type Document struct {
	Schema   string          `json:"schema"`
	Scenario string          `json:"scenario"`
	Command  string          `json:"command"`
	Started  time.Time       `json:"started"`
	Finished time.Time       `json:"finished"`
	Machine  Machine         `json:"machine"`
	Options  json.RawMessage `json:"options,omitempty"`
	Setup    []string        `json:"setup,omitempty"`
	Rounds   int             `json:"rounds"`
	// CaseAxis names the cases' X values ("offered packets/s", "frame size (bytes)"), if they
	// have any.
	CaseAxis string      `json:"case_axis,omitempty"`
	Cases    []Case      `json:"cases"`
	Variants []string    `json:"variants"`
	Metrics  []Metric    `json:"metrics"`
	Outliers OutlierRule `json:"outlier_rule"`
	Runs     []Run       `json:"runs"`
	Figures  []Figure    `json:"figures"`
	Ratios   []Ratio     `json:"ratios"`
	Flags    []string    `json:"flags,omitempty"`
	// Files are other files the benchmark wrote (profiles, captures), relative to the
	// document's directory.
	Files []string `json:"files,omitempty"`
	// LoadavgStart and LoadavgEnd are /proc/loadavg before and after: other work on the
	// machine shows here.
	LoadavgStart string `json:"loadavg_start,omitempty"`
	LoadavgEnd   string `json:"loadavg_end,omitempty"`
}

// Case is one cell of the grid every variant runs in: a phase, a mode, a rate, a size.
type Case struct {
	Name string `json:"name"`
	// Group gathers cases that share an axis (a mode, a phase): a plot draws one panel per
	// group, its cases along CaseAxis.
	Group string `json:"group,omitempty"`
	// X places the case on the document's CaseAxis (an offered rate, a frame size); 0 with
	// no axis.
	X float64 `json:"x,omitempty"`
}

// Better says which way a metric improves.
type Better string

const (
	Higher Better = "higher"
	Lower  Better = "lower"
)

// Metric is one value every run records.
type Metric struct {
	Name   string `json:"name"`
	Unit   string `json:"unit"` // "pkt/s", "ns/pkt", "share" (0–1, shown as %), "µs", ...
	Better Better `json:"better,omitempty"`
	// Key marks the headline metric: shown first, and the one outliers are judged on (the
	// first key metric, unless OutlierRule.Metric names another).
	Key bool `json:"key,omitempty"`
	// About says what the metric counts, for the table's readers.
	About string `json:"about,omitempty"`
}

// OutlierRule decides when a round's run is too far from its siblings to stand for it.
type OutlierRule struct {
	Metric string `json:"metric,omitempty"` // default: the first key metric
	// Factor: a run below median/Factor (a metric where higher is better) or above
	// median×Factor (lower is better; either, for a metric with no better side) is an outlier;
	// the median is over every run of its case and variant, all rounds and attempts, itself
	// included, at least three. Default 2; negative turns the check off.
	Factor float64 `json:"factor,omitempty"`
}

// Machine describes where the benchmark ran.
type Machine struct {
	Kernel    string `json:"kernel"`
	CPUs      int    `json:"cpus"`
	Model     string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
}

// ThisMachine reads the kernel release and CPU model of the machine the process runs on.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// Run is one run of one variant in one case and round.
type Run struct {
	Case    string `json:"case"`
	Variant string `json:"variant"`
	Round   int    `json:"round"`   // 1-based
	Attempt int    `json:"attempt"` // 0 first; repeats of a contaminated or outlier run count up
	// Values holds the run's measurements by metric name.
	Values map[string]float64 `json:"values"`
	// Latency is the run's latency distribution as quantiles (P 1 is the maximum), where the
	// harness measures one; Figure.Latency and the CDF plot come from it.
	Latency []Quantile `json:"latency,omitempty"`
	// Queues is the key metric per receive queue, where the harness counts per queue.
	Queues []float64 `json:"queues,omitempty"`
	// Foreign is the measured core's busy share taken by other processes; above the harness's
	// limit the run is Contaminated and repeated.
	Foreign      float64 `json:"foreign,omitempty"`
	Contaminated bool    `json:"contaminated,omitempty"`
	// Err: the run failed; it is kept for the record and stands for nothing.
	Err string `json:"error,omitempty"`
	// Outlier says why the summary left this run out (set by Summarize).
	Outlier string `json:"outlier,omitempty"`
	// Used: this run stands for its round in the figures (set by Summarize).
	Used     bool            `json:"used"`
	Loadavg  string          `json:"loadavg,omitempty"`
	Started  time.Time       `json:"started"`
	Seconds  float64         `json:"seconds,omitempty"` // wall time the run took, set-up included
	Detail   json.RawMessage `json:"detail,omitempty"`  // the harness's own record of the run
	Comments []string        `json:"comments,omitempty"`
}

// Quantile is one point of a latency distribution: a share P of the samples took at most
// Micros microseconds.
type Quantile struct {
	P      float64 `json:"p"`
	Micros float64 `json:"us"`
}

// Stat is a metric over the runs of a figure.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Values []float64 `json:"values"`
}

// NewStat summarises v (nil: the zero Stat).
func NewStat(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	return Stat{Median: stats.Median(v), Min: slices.Min(v), Max: slices.Max(v), Values: v}
}

// Figure is one variant in one case over the rounds.
type Figure struct {
	Case    string `json:"case"`
	Variant string `json:"variant"`
	Runs    int    `json:"runs"`       // rounds with a run standing for them
	Clean   int    `json:"clean_runs"` // of those, runs that were not contaminated
	// Outliers counts runs of this figure left out as outliers.
	Outliers int             `json:"outliers,omitempty"`
	Stats    map[string]Stat `json:"stats"`
	// Latency is, for each quantile the runs share, the median over the runs' values.
	Latency []Quantile `json:"latency,omitempty"`
	// Queues is, per queue, the median over the runs of the key metric.
	Queues []float64 `json:"queues,omitempty"`
}

// Target is the bound a ratio should meet ("≥ 2.5").
type Target struct {
	Op    string  `json:"op"` // ">=" or "<="
	Value float64 `json:"value"`
}

func (t Target) String() string {
	op := map[string]string{">=": "≥", "<=": "≤"}[t.Op]
	return fmt.Sprintf("%s %.3g", op, t.Value)
}

// Ratio compares two variants' figures of one metric in one case. Name, Case, Metric, Num, Den
// and Target are the harness's; Summarize fills the rest.
type Ratio struct {
	Name   string  `json:"name"`
	Case   string  `json:"case"`
	Metric string  `json:"metric"`
	Num    string  `json:"num"`
	Den    string  `json:"den"`
	Target *Target `json:"target,omitempty"`
	// OfMedians is Num's median over Den's.
	OfMedians float64 `json:"of_medians"`
	// Paired is the median over rounds of the ratio within each round (both runs minutes
	// apart at most): less sensitive to the machine's drift. PairedMin/Max bound it.
	Paired    float64 `json:"paired"`
	PairedMin float64 `json:"paired_min"`
	PairedMax float64 `json:"paired_max"`
	Pairs     int     `json:"pairs"`
	// Met says whether OfMedians meets the target (absent without a target or figures).
	Met *bool `json:"met,omitempty"`
}

// New starts a document for scenario with the machine's description and the start time.
func New(scenario, command string) *Document {
	return &Document{Schema: SchemaVersion, Scenario: scenario, Command: command, Started: time.Now().UTC(),
		Machine: ThisMachine(), LoadavgStart: Loadavg()}
}

// Loadavg is /proc/loadavg without its newline ("" where there is none).
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// SetOptions stores the harness's options as JSON.
func (d *Document) SetOptions(o any) error {
	b, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("report: options: %w", err)
	}
	d.Options = b
	return nil
}

// Metric returns the metric named name, or nil.
func (d *Document) Metric(name string) *Metric {
	for i := range d.Metrics {
		if d.Metrics[i].Name == name {
			return &d.Metrics[i]
		}
	}
	return nil
}

// KeyMetric is the metric outliers are judged on: OutlierRule.Metric, else the first key
// metric, else the first metric ("" without metrics).
func (d *Document) KeyMetric() string {
	if d.Outliers.Metric != "" {
		return d.Outliers.Metric
	}
	for _, m := range d.Metrics {
		if m.Key {
			return m.Name
		}
	}
	if len(d.Metrics) > 0 {
		return d.Metrics[0].Name
	}
	return ""
}

// Figure returns the figure of variant in case c, or nil.
func (d *Document) Figure(c, variant string) *Figure {
	for i := range d.Figures {
		if d.Figures[i].Case == c && d.Figures[i].Variant == variant {
			return &d.Figures[i]
		}
	}
	return nil
}

// Ratio returns the ratio named name in case c, or nil.
func (d *Document) Ratio(c, name string) *Ratio {
	for i := range d.Ratios {
		if d.Ratios[i].Case == c && d.Ratios[i].Name == name {
			return &d.Ratios[i]
		}
	}
	return nil
}

// Used returns the run standing for round of variant in case c, or nil.
func (d *Document) Used(c, variant string, round int) *Run {
	for i := range d.Runs {
		r := &d.Runs[i]
		if r.Used && r.Case == c && r.Variant == variant && r.Round == round {
			return r
		}
	}
	return nil
}

type cell struct{ c, v string }

// Summarize chooses the run standing for each round, leaves outliers out, and computes the
// figures, the ratios and the flags (see the package doc). It is deterministic: it starts
// again from the runs each time.
func (d *Document) Summarize() {
	d.Figures, d.Flags = nil, nil
	for i := range d.Runs {
		d.Runs[i].Used, d.Runs[i].Outlier = false, ""
	}
	key := d.KeyMetric()
	factor := d.Outliers.Factor
	if factor == 0 {
		factor = 2
	}
	// candidates[cell][round]: indices of runs without an error, best first.
	cands := map[cell]map[int][]int{}
	for i, r := range d.Runs {
		if r.Err != "" {
			continue
		}
		k := cell{r.Case, r.Variant}
		if cands[k] == nil {
			cands[k] = map[int][]int{}
		}
		cands[k][r.Round] = append(cands[k][r.Round], i)
	}
	for _, byRound := range cands {
		for _, idx := range byRound {
			slices.SortStableFunc(idx, func(a, b int) int {
				ra, rb := &d.Runs[a], &d.Runs[b]
				if ra.Contaminated != rb.Contaminated {
					if ra.Contaminated {
						return 1
					}
					return -1
				}
				switch {
				case ra.Foreign < rb.Foreign:
					return -1
				case ra.Foreign > rb.Foreign:
					return 1
				}
				return 0
			})
		}
	}
	cells := make([]cell, 0, len(cands))
	for k := range cands {
		cells = append(cells, k)
	}
	slices.SortFunc(cells, func(a, b cell) int {
		if x := d.caseIndex(a.c) - d.caseIndex(b.c); x != 0 {
			return x
		}
		if x := slices.Index(d.Variants, a.v) - slices.Index(d.Variants, b.v); x != 0 {
			return x
		}
		return strings.Compare(a.c+"\x00"+a.v, b.c+"\x00"+b.v)
	})
	// Leave outliers out: a run far from the median of every run of its cell (all rounds and
	// attempts, at least three) on the side that is worse. A collapsed round cannot drag the
	// median along, as long as most runs did not collapse; a run far on the better side is
	// kept (the median may be the collapsed one), unless the metric has no better side.
	better := Better("")
	if m := d.Metric(key); m != nil {
		better = m.Better
	}
	for _, k := range cells {
		if factor <= 0 || key == "" {
			break
		}
		byRound := cands[k]
		rounds := make([]int, 0, len(byRound))
		var vals []float64
		for round, idx := range byRound {
			rounds = append(rounds, round)
			for _, i := range idx {
				vals = append(vals, d.Runs[i].Values[key])
			}
		}
		if len(vals) < 3 {
			continue
		}
		slices.Sort(rounds)
		med := stats.Median(vals)
		if med <= 0 {
			continue
		}
		for _, round := range rounds {
			idx := byRound[round]
			var out []int
			keep := idx[:0:0]
			for _, i := range idx {
				v := d.Runs[i].Values[key]
				low, high := v < med/factor, v > med*factor
				if low && better != Lower || high && better != Higher {
					out = append(out, i)
				} else {
					keep = append(keep, i)
				}
			}
			byRound[round] = keep
			for _, i := range out {
				r := &d.Runs[i]
				v := r.Values[key]
				r.Outlier = fmt.Sprintf("%s %s %s, %.2g× the median %s of its cell's %d runs", key, Format(v, d.unit(key)), d.unit(key), v/med, Format(med, d.unit(key)), len(vals))
				next := "no other attempt of that round stands: the figure has one round fewer"
				if len(keep) > 0 {
					next = fmt.Sprintf("attempt %d (%s) stands for the round", d.Runs[keep[0]].Attempt, Format(d.Runs[keep[0]].Values[key], d.unit(key)))
				}
				d.flag("%s %s round %d, attempt %d: left out as an outlier (%s); %s", k.c, k.v, round, r.Attempt, r.Outlier, next)
			}
		}
	}
	for _, byRound := range cands {
		for _, idx := range byRound {
			if len(idx) > 0 {
				d.Runs[idx[0]].Used = true
			}
		}
	}
	for _, c := range d.Cases {
		for _, v := range d.Variants {
			f := Figure{Case: c.Name, Variant: v, Stats: map[string]Stat{}}
			vals := map[string][]float64{}
			lat := map[float64][]float64{}
			var queues [][]float64
			for round := 1; round <= d.Rounds; round++ {
				r := d.Used(c.Name, v, round)
				if r == nil {
					continue
				}
				f.Runs++
				if !r.Contaminated {
					f.Clean++
				}
				for _, m := range d.Metrics {
					if x, ok := r.Values[m.Name]; ok {
						vals[m.Name] = append(vals[m.Name], x)
					}
				}
				for _, q := range r.Latency {
					lat[q.P] = append(lat[q.P], q.Micros)
				}
				for i, x := range r.Queues {
					if i == len(queues) {
						queues = append(queues, nil)
					}
					queues[i] = append(queues[i], x)
				}
			}
			for p, x := range lat {
				if len(x) == f.Runs { // a quantile every run has
					f.Latency = append(f.Latency, Quantile{P: p, Micros: stats.Median(x)})
				}
			}
			slices.SortFunc(f.Latency, func(a, b Quantile) int { return cmp.Compare(a.P, b.P) })
			for _, x := range queues {
				f.Queues = append(f.Queues, stats.Median(x))
			}
			for i := range d.Runs {
				if r := &d.Runs[i]; r.Outlier != "" && r.Case == c.Name && r.Variant == v {
					f.Outliers++
				}
			}
			for name, x := range vals {
				f.Stats[name] = NewStat(x)
			}
			if f.Runs == 0 && !d.ran(c.Name, v) {
				continue // not in this run's grid (a subset of variants or cases)
			}
			if f.Runs < d.Rounds {
				d.flag("%s %s: %d of %d rounds have a run that stands for them", c.Name, v, f.Runs, d.Rounds)
			}
			if f.Clean < f.Runs {
				d.flag("%s %s: %d of %d runs were contaminated (no clean attempt in their round): the figure is noisy", c.Name, v, f.Runs-f.Clean, f.Runs)
			}
			d.Figures = append(d.Figures, f)
		}
	}
	for i := range d.Ratios {
		d.ratio(&d.Ratios[i])
	}
}

// caseIndex is c's place in d.Cases (len(d.Cases) if it is not there).
func (d *Document) caseIndex(c string) int {
	for i := range d.Cases {
		if d.Cases[i].Name == c {
			return i
		}
	}
	return len(d.Cases)
}

// ran reports whether any run of variant v in case c exists.
func (d *Document) ran(c, v string) bool {
	for i := range d.Runs {
		if d.Runs[i].Case == c && d.Runs[i].Variant == v {
			return true
		}
	}
	return false
}

func (d *Document) unit(metric string) string {
	if m := d.Metric(metric); m != nil {
		return m.Unit
	}
	return ""
}

func (d *Document) flag(format string, args ...any) {
	d.Flags = append(d.Flags, fmt.Sprintf(format, args...))
}

func (d *Document) ratio(rt *Ratio) {
	rt.OfMedians, rt.Paired, rt.PairedMin, rt.PairedMax, rt.Pairs, rt.Met = 0, 0, 0, 0, 0, nil
	fn, fd := d.Figure(rt.Case, rt.Num), d.Figure(rt.Case, rt.Den)
	if fn == nil || fd == nil || fn.Runs == 0 || fd.Runs == 0 {
		return
	}
	// A ratio of a non-positive figure means nothing (CPU above a floor that came out at or
	// below it, at the tick resolution): the ratio stays empty, neither met nor missed.
	num, den := fn.Stats[rt.Metric].Median, fd.Stats[rt.Metric].Median
	if num < 0 || den <= 0 {
		return
	}
	rt.OfMedians = num / den
	var paired []float64
	for round := 1; round <= d.Rounds; round++ {
		a, b := d.Used(rt.Case, rt.Num, round), d.Used(rt.Case, rt.Den, round)
		if a == nil || b == nil {
			continue
		}
		x, okA := a.Values[rt.Metric]
		y, okB := b.Values[rt.Metric]
		if okA && okB && x >= 0 && y > 0 && !math.IsNaN(x/y) {
			paired = append(paired, x/y)
		}
	}
	s := NewStat(paired)
	rt.Paired, rt.PairedMin, rt.PairedMax, rt.Pairs = s.Median, s.Min, s.Max, len(paired)
	if rt.Target != nil && rt.OfMedians != 0 {
		met := rt.OfMedians >= rt.Target.Value
		if rt.Target.Op == "<=" {
			met = rt.OfMedians <= rt.Target.Value
		}
		rt.Met = &met
	}
}
