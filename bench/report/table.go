package report

import (
	"fmt"
	"math"
	"strings"
)

// Format renders v in unit for a table: shares as percentages, large numbers whole, small ones
// with three significant digits.
func Format(v float64, unit string) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Sprint(v)
	case unit == "share":
		return fmt.Sprintf("%.0f%%", 100*v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case v == 0:
		return "0"
	}
	return fmt.Sprintf("%.3g", v)
}

// header names a metric's column with its unit.
func header(m Metric) string {
	if m.Unit == "" || m.Unit == "share" {
		return m.Name
	}
	return fmt.Sprintf("%s (%s)", m.Name, m.Unit)
}

// Table renders the document as Markdown: a heading with the command, one row per case and
// variant (the key metric's median and range, every other metric's median, runs and clean
// runs), the ratios with their targets, and the flags.
func (d *Document) Table() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "### %s: %s\n\n", d.Scenario, d.Command)
	fmt.Fprintf(&sb, "%s, %d rounds; %s, %d CPUs, kernel %s, %s\n\n", d.Started.Format("2006-01-02 15:04 UTC"), d.Rounds,
		d.Machine.Model, d.Machine.CPUs, d.Machine.Kernel, d.Machine.GoVersion)
	key := d.KeyMetric()
	var km *Metric
	var rest []Metric
	for i := range d.Metrics {
		if d.Metrics[i].Name == key {
			km = &d.Metrics[i]
		} else {
			rest = append(rest, d.Metrics[i])
		}
	}
	sb.WriteString("| case | variant |")
	cols := 2
	if km != nil {
		fmt.Fprintf(&sb, " %s median | min–max |", header(*km))
		cols += 2
	}
	for _, m := range rest {
		fmt.Fprintf(&sb, " %s |", header(m))
		cols++
	}
	sb.WriteString(" runs (clean) |\n|")
	sb.WriteString(strings.Repeat("---|", cols+1))
	sb.WriteString("\n")
	for _, f := range d.Figures {
		fmt.Fprintf(&sb, "| %s | %s |", f.Case, f.Variant)
		if km != nil {
			s, ok := f.Stats[km.Name]
			if ok {
				fmt.Fprintf(&sb, " %s | %s–%s |", Format(s.Median, km.Unit), Format(s.Min, km.Unit), Format(s.Max, km.Unit))
			} else {
				sb.WriteString(" – | – |")
			}
		}
		for _, m := range rest {
			if s, ok := f.Stats[m.Name]; ok {
				fmt.Fprintf(&sb, " %s |", Format(s.Median, m.Unit))
			} else {
				sb.WriteString(" – |")
			}
		}
		extra := ""
		if f.Outliers > 0 {
			extra = fmt.Sprintf(", %d outlier(s) left out", f.Outliers)
		}
		fmt.Fprintf(&sb, " %d (%d)%s |\n", f.Runs, f.Clean, extra)
	}
	if len(d.Ratios) > 0 {
		sb.WriteString("\n| ratio | case | metric | of medians | paired by round (min–max, pairs) | target |\n|---|---|---|---|---|---|\n")
		for _, r := range d.Ratios {
			t := ""
			if r.Target != nil {
				t = r.Target.String()
				if r.Met != nil {
					if *r.Met {
						t += " (met)"
					} else {
						t += " (missed)"
					}
				}
			}
			fmt.Fprintf(&sb, "| %s | %s | %s | %.2f | %.2f (%.2f–%.2f, %d) | %s |\n", r.Name, r.Case, r.Metric, r.OfMedians,
				r.Paired, r.PairedMin, r.PairedMax, r.Pairs, t)
		}
	}
	if len(d.Flags) > 0 {
		sb.WriteString("\nFlags:\n")
		for _, f := range d.Flags {
			fmt.Fprintf(&sb, "- %s\n", f)
		}
	}
	return sb.String()
}
