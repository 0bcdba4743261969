package report

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Trial is one run the runner asks for.
type Trial struct {
	Case    Case
	Variant string
	Round   int // 1-based
	Attempt int // 0 first
}

// Progress is where a benchmark stands, for Plan.Progress.
type Progress struct {
	Scenario string
	Trial    Trial
	Rounds   int
	Done     int // runs finished, repeats included
	Total    int // runs planned, repeats not included
	// Left estimates the time still needed from the mean run so far (0 before the first run).
	Left time.Duration
	// Repeat says why this run repeats an earlier one ("" for a first attempt).
	Repeat string
}

// String is a one-line account: "nat · round 2/5 · max · netchan-xdp · run 7/18 · ~3m10s left".
func (p Progress) String() string {
	s := fmt.Sprintf("%s · round %d/%d · %s · %s · run %d/%d", p.Scenario, p.Trial.Round, p.Rounds, p.Trial.Case.Name,
		p.Trial.Variant, p.Done+1, p.Total)
	if p.Left > 0 {
		s += fmt.Sprintf(" · ~%s left", p.Left.Round(time.Second))
	}
	if p.Repeat != "" {
		s += " · repeat: " + p.Repeat
	}
	return s
}

// Plan says how Execute runs a document's grid.
type Plan struct {
	// Measure runs one trial and returns its run: Values, Foreign, Contaminated, Detail,
	// Comments, or Err for a run that failed but need not stop the benchmark. An error stops
	// the benchmark (the runs so far stay in the document).
	Measure func(ctx context.Context, t Trial) (Run, error)
	// Retries is how often a contaminated run is repeated (0: default 2; negative: never).
	Retries int
	// NoOutlierRepeat turns off the repeat of an outlier round.
	NoOutlierRepeat bool
	// Progress, if set, hears about each run before it starts.
	Progress func(Progress)
	// Skip, if set, leaves trials out of the grid (a variant that has no meaning in a case):
	// they are not run, counted or estimated, and the case has no figure for the variant.
	Skip func(c Case, variant string) bool
	// Order gives the variants' order in a round (default: as listed, reversed in even
	// rounds, so no variant always follows the same one).
	Order func(round int, variants []string) []string
}

// Execute runs every variant in every case for d.Rounds rounds (see the package doc), then
// repeats each outlier round once, and summarises. d's Cases, Variants, Metrics and Rounds must
// be set. On error (or ctx's end) the document keeps the runs so far and is summarised.
func (d *Document) Execute(ctx context.Context, p Plan) (err error) {
	if d.Rounds <= 0 || len(d.Cases) == 0 || len(d.Variants) == 0 || len(d.Metrics) == 0 {
		return fmt.Errorf("report: %s: a plan needs rounds (%d), cases (%d), variants (%d) and metrics (%d)",
			d.Scenario, d.Rounds, len(d.Cases), len(d.Variants), len(d.Metrics))
	}
	retries := p.Retries
	if retries == 0 {
		retries = 2
	}
	order := p.Order
	if order == nil {
		order = func(round int, vs []string) []string {
			o := slices.Clone(vs)
			if round%2 == 0 {
				slices.Reverse(o)
			}
			return o
		}
	}
	defer func() {
		d.Finished = time.Now().UTC()
		d.LoadavgEnd = Loadavg()
		d.Summarize()
	}()
	skip := func(c Case, v string) bool { return p.Skip != nil && p.Skip(c, v) }
	total := 0
	for _, c := range d.Cases {
		for _, v := range d.Variants {
			if !skip(c, v) {
				total += d.Rounds
			}
		}
	}
	done := 0
	var spent time.Duration
	one := func(t Trial, why string) (Run, error) {
		if err := ctx.Err(); err != nil {
			return Run{}, err
		}
		if p.Progress != nil {
			pr := Progress{Scenario: d.Scenario, Trial: t, Rounds: d.Rounds, Done: done, Total: total, Repeat: why}
			if done > 0 && total > done {
				pr.Left = spent / time.Duration(done) * time.Duration(total-done)
			}
			p.Progress(pr)
		}
		start := time.Now()
		load := Loadavg()
		r, err := p.Measure(ctx, t)
		if err != nil {
			return r, fmt.Errorf("%s round %d, %s %s: %w", d.Scenario, t.Round, t.Case.Name, t.Variant, err)
		}
		r.Case, r.Variant, r.Round, r.Attempt = t.Case.Name, t.Variant, t.Round, t.Attempt
		r.Started, r.Seconds = start.UTC(), time.Since(start).Seconds()
		if r.Loadavg == "" {
			r.Loadavg = load
		}
		d.Runs = append(d.Runs, r)
		done++
		spent += time.Since(start)
		return r, nil
	}
	for round := 1; round <= d.Rounds; round++ {
		vs := order(round, d.Variants)
		for _, c := range d.Cases {
			for _, v := range vs {
				if skip(c, v) {
					continue
				}
				why := ""
				for attempt := 0; ; attempt++ {
					r, err := one(Trial{Case: c, Variant: v, Round: round, Attempt: attempt}, why)
					if err != nil {
						return err
					}
					if r.Err != "" || !r.Contaminated || retries < 0 || attempt >= retries {
						break
					}
					why = fmt.Sprintf("attempt %d was contaminated (%.0f%% of the core foreign)", attempt, 100*r.Foreign)
					total++
				}
			}
		}
	}
	if p.NoOutlierRepeat {
		return nil
	}
	// Repeat each round that outliers left without a run, at most twice: a repeat in line with
	// its siblings stands for the round.
	for pass := 0; pass < 2; pass++ {
		d.Summarize()
		var again []Trial
		seen := map[Trial]bool{}
		for _, r := range d.Runs {
			if r.Outlier == "" || d.Used(r.Case, r.Variant, r.Round) != nil {
				continue
			}
			t := Trial{Variant: r.Variant, Round: r.Round}
			for _, c := range d.Cases {
				if c.Name == r.Case {
					t.Case = c
				}
			}
			if seen[t] {
				continue
			}
			seen[t] = true
			t.Attempt = d.attempts(r.Case, r.Variant, r.Round)
			again = append(again, t)
		}
		if len(again) == 0 {
			break
		}
		total += len(again)
		for _, t := range again {
			if _, err := one(t, "an outlier among its siblings"); err != nil {
				return err
			}
		}
	}
	return nil
}

// attempts counts the runs of one round of one variant in one case.
func (d *Document) attempts(c, v string, round int) int {
	n := 0
	for _, r := range d.Runs {
		if r.Case == c && r.Variant == v && r.Round == round {
			n++
		}
	}
	return n
}
