// Package plot draws netchan-bench/1 documents (bench/report) as PNG images with
// gonum.org/v1/plot. `netchan bench` calls it after every run, so each document in
// bench/results/ has its pictures beside it:
//
//	SCENARIO-DATE-figures.png   per group of cases: the key metric and the first lower-is-better
//	                            metric (CPU per packet, per transaction) by variant — bars with the
//	                            min–max range, or lines along the case axis (offered rate, frame
//	                            size) where the group's cases lie on one
//	SCENARIO-DATE-ratios.png    each ratio paired by round, with its min–max, met or missed
//	SCENARIO-DATE-latency.png   latency CDFs per case, where the runs measured latency
//	SCENARIO-DATE-queues.png    the key metric per receive queue, where the runs counted per queue
//
// and Ratios draws every scenario's ratios in one picture (`netchan bench all`).
//
// Only the netchan command imports it: gonum/plot and its fonts (about 7 MB of the binary) stay
// out of the library packages.
package plot

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/netchan/netchan/bench/report"
)

// palette gives the variants of a document their colours in order; netchan's own variants
// come first in most documents.
var palette = []color.RGBA{
	{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	{R: 0x55, G: 0x55, B: 0x55, A: 0xff},
	{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

var glyphs = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.CrossGlyph{},
	draw.PlusGlyph{}, draw.RingGlyph{}, draw.PyramidGlyph{}}

func style(i int) (color.RGBA, draw.GlyphDrawer) {
	return palette[i%len(palette)], glyphs[i%len(glyphs)]
}

// Document draws d's pictures next to its JSON file in dir (see the package doc) and returns
// their paths.
func Document(d *report.Document, dir string) ([]string, error) {
	base := strings.TrimSuffix(d.Path(dir), ".json")
	var out []string
	save := func(suffix string, rows [][]*gplot.Plot) error {
		if len(rows) == 0 {
			return nil
		}
		p := base + "-" + suffix + ".png"
		if err := write(p, rows); err != nil {
			return err
		}
		out = append(out, p)
		return nil
	}
	figs, err := figurePlots(d)
	if err != nil {
		return out, err
	}
	if err := save("figures", figs); err != nil {
		return out, err
	}
	if len(d.Ratios) > 0 {
		p, n, err := ratioPlot(fmt.Sprintf("%s: ratios paired by round (median, min–max)", d.Scenario), []*report.Document{d})
		if err != nil {
			return out, err
		}
		if p != nil {
			path := base + "-ratios.png"
			w, h := ratioSize(n)
			if err := writeSized(path, [][]*gplot.Plot{{p}}, w, h); err != nil {
				return out, err
			}
			out = append(out, path)
		}
	}
	lat, err := latencyPlots(d)
	if err != nil {
		return out, err
	}
	if err := save("latency", lat); err != nil {
		return out, err
	}
	q, err := queuePlots(d)
	if err != nil {
		return out, err
	}
	if err := save("queues", q); err != nil {
		return out, err
	}
	return out, nil
}

// Ratios draws the ratios of every document (one scenario each) in one bar chart at path.
func Ratios(docs []*report.Document, path string) error {
	p, n, err := ratioPlot("netchan against its peers: ratios paired by round (median, min–max)", docs)
	if err != nil {
		return err
	}
	if p == nil {
		return fmt.Errorf("plot: none of the %d documents has a ratio with figures", len(docs))
	}
	w, h := ratioSize(n)
	return writeSized(path, [][]*gplot.Plot{{p}}, w, h)
}

// write lays the panels out in a grid, 12 × 8 cm each, and stores them as one PNG.
func write(path string, rows [][]*gplot.Plot) error {
	cols := 0
	for _, r := range rows {
		cols = max(cols, len(r))
	}
	return writeSized(path, rows, vg.Length(cols)*12*vg.Centimeter, vg.Length(len(rows))*8*vg.Centimeter)
}

// writeSized lays the panels out in a grid over w × h and stores them as one PNG.
func writeSized(path string, rows [][]*gplot.Plot, w, h vg.Length) error {
	cols := 0
	for _, r := range rows {
		cols = max(cols, len(r))
	}
	for i := range rows {
		for len(rows[i]) < cols {
			rows[i] = append(rows[i], nil)
		}
	}
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(120))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: len(rows), Cols: cols, PadX: 6 * vg.Millimeter, PadY: 6 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	for i := range rows {
		for j := range rows[i] {
			if rows[i][j] != nil {
				rows[i][j].Draw(tiles.At(dc, j, i))
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newPlot(title string) *gplot.Plot {
	p := gplot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.X.Label.TextStyle.Font.Size, p.Y.Label.TextStyle.Font.Size = vg.Points(8), vg.Points(8)
	p.X.Tick.Label.Font.Size, p.Y.Tick.Label.Font.Size = vg.Points(7), vg.Points(7)
	p.Legend.TextStyle.Font.Size = vg.Points(7)
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

func axisLabel(m report.Metric) string {
	l := m.Name
	if m.Unit != "" && m.Unit != "share" {
		l += " (" + m.Unit + ")"
	}
	if m.Better != "" {
		l += ", " + string(m.Better) + " is better"
	}
	return l + ", median"
}

// shown is the metrics a figure panel shows: the key metric and a lower-is-better one.
func shown(d *report.Document) []report.Metric {
	var ms []report.Metric
	if m := d.Metric(d.KeyMetric()); m != nil {
		ms = append(ms, *m)
	}
	// A cost per unit of work (ns/pkt, µs/tx, CPU s/GB) before any other lower-is-better
	// metric (a loss share).
	var second *report.Metric
	for i := range d.Metrics {
		m := &d.Metrics[i]
		if m.Better != report.Lower || len(ms) > 0 && m.Name == ms[0].Name {
			continue
		}
		if strings.Contains(m.Unit, "/") {
			second = m
			break
		}
		if second == nil {
			second = m
		}
	}
	if second != nil {
		ms = append(ms, *second)
	}
	return ms
}

// groups splits the document's cases by Group, in their order.
func groups(d *report.Document) [][]report.Case {
	var out [][]report.Case
	idx := map[string]int{}
	for _, c := range d.Cases {
		i, ok := idx[c.Group]
		if !ok {
			i = len(out)
			idx[c.Group] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], c)
	}
	return out
}

func figurePlots(d *report.Document) ([][]*gplot.Plot, error) {
	var rows [][]*gplot.Plot
	for _, g := range groups(d) {
		var row []*gplot.Plot
		along := 0
		for _, c := range g {
			if c.X > 0 {
				along++
			}
		}
		for _, m := range shown(d) {
			var p *gplot.Plot
			var err error
			if along >= 2 {
				p, err = linePanel(d, g, m)
			} else {
				p, err = barPanel(d, g, m)
			}
			if err != nil {
				return nil, err
			}
			if p != nil {
				row = append(row, p)
			}
		}
		if len(row) > 0 {
			rows = append(rows, row)
		}
	}
	return rows, nil
}

type whiskers struct{ x, y, lo, hi []float64 }

func (w whiskers) Len() int                        { return len(w.x) }
func (w whiskers) XY(i int) (float64, float64)     { return w.x[i], w.y[i] }
func (w whiskers) YError(i int) (float64, float64) { return w.y[i] - w.lo[i], w.hi[i] - w.y[i] }

// barPanel: cases along X, one bar per variant with its min–max whisker.
func barPanel(d *report.Document, cases []report.Case, m report.Metric) (*gplot.Plot, error) {
	title := d.Scenario
	if cases[0].Group != "" {
		title += " " + cases[0].Group
	}
	p := newPlot(title)
	p.Y.Label.Text = axisLabel(m)
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.Name
	}
	n := len(d.Variants)
	slot := 0.8 / float64(n)
	// Bars are as wide as a slot of a 12 cm panel's data area (about 10 cm across the cases),
	// at most 1.5 cm.
	width := vg.Length(min(10/float64(len(cases))*slot, 1.5)) * vg.Centimeter
	any := false
	top := 0.0
	for j, v := range d.Variants {
		vals := make(plotter.Values, len(cases))
		var w whiskers
		for i, c := range cases {
			f := d.Figure(c.Name, v)
			if f == nil || f.Runs == 0 {
				continue
			}
			s, ok := f.Stats[m.Name]
			if !ok {
				continue
			}
			vals[i] = s.Median
			top = max(top, s.Max)
			x := float64(i) - 0.4 + (float64(j)+0.5)*slot
			w.x, w.y, w.lo, w.hi = append(w.x, x), append(w.y, s.Median), append(w.lo, s.Min), append(w.hi, s.Max)
		}
		if w.Len() == 0 {
			continue
		}
		any = true
		b, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return nil, err
		}
		col, _ := style(j)
		b.Color = col
		b.LineStyle.Width = 0
		b.XMin = -0.4 + (float64(j)+0.5)*slot
		p.Add(b)
		p.Legend.Add(v, b)
		e, err := plotter.NewYErrorBars(w)
		if err != nil {
			return nil, err
		}
		e.Width = vg.Points(0.8)
		p.Add(e)
	}
	if !any {
		return nil, nil
	}
	p.NominalX(names...)
	p.Y.Min, p.Y.Max = 0, top*1.3 // room for the legend
	return p, nil
}

// linePanel: the metric against the cases' X, one line per variant.
func linePanel(d *report.Document, cases []report.Case, m report.Metric) (*gplot.Plot, error) {
	title := d.Scenario
	if cases[0].Group != "" {
		title += " " + cases[0].Group
	}
	p := newPlot(title)
	p.X.Label.Text = d.CaseAxis
	p.Y.Label.Text = axisLabel(m)
	var xs []float64
	any := false
	top := 0.0
	for j, v := range d.Variants {
		var pts plotter.XYs
		var w whiskers
		for _, c := range cases {
			f := d.Figure(c.Name, v)
			if f == nil || f.Runs == 0 || c.X <= 0 {
				continue
			}
			s, ok := f.Stats[m.Name]
			if !ok {
				continue
			}
			pts = append(pts, plotter.XY{X: c.X, Y: s.Median})
			top = max(top, s.Max)
			w.x, w.y, w.lo, w.hi = append(w.x, c.X), append(w.y, s.Median), append(w.lo, s.Min), append(w.hi, s.Max)
			xs = append(xs, c.X)
		}
		if len(pts) == 0 {
			continue
		}
		any = true
		slices.SortFunc(pts, func(a, b plotter.XY) int { return cmpFloat(a.X, b.X) })
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		col, g := style(j)
		l.Color, s.Color, s.Shape = col, col, g
		l.Width = vg.Points(1.2)
		p.Add(l, s)
		p.Legend.Add(v, l, s)
		e, err := plotter.NewYErrorBars(w)
		if err != nil {
			return nil, err
		}
		e.Color = col
		p.Add(e)
	}
	if !any {
		return nil, nil
	}
	if slices.Max(xs) >= 10*slices.Min(xs) {
		p.X.Scale = gplot.LogScale{}
		p.X.Tick.Marker = logTicks(slices.Min(xs)/1.2, slices.Max(xs)*1.2)
		p.X.Min, p.X.Max = slices.Min(xs)/1.2, slices.Max(xs)*1.2
	}
	p.Y.Min, p.Y.Max = 0, top*1.3 // room for the legend
	return p, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ratioPlot: one dot per ratio of every document (the paired median) with its min–max as a
// whisker, on a logarithmic axis (a ratio of 2 and one of 1/2 lie as far from parity); green
// where it meets its target, red where it misses, blue without one. It returns the plot and
// how many ratios it holds (nil, 0: none has figures).
func ratioPlot(title string, docs []*report.Document) (*gplot.Plot, int, error) {
	type dot struct {
		name      string
		v, lo, hi float64
		c         color.RGBA
	}
	var dots []dot
	for _, d := range docs {
		for _, r := range d.Ratios {
			if r.Pairs == 0 || r.Paired <= 0 {
				continue
			}
			name := r.Name
			if len(docs) > 1 {
				name = d.Scenario + ": " + name
			}
			if len(d.Cases) > 1 {
				name += " (" + r.Case + ")"
			}
			c := palette[1]
			if r.Target != nil {
				name += ", target " + r.Target.String()
				if r.Met != nil {
					c = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
					if !*r.Met {
						c = palette[0]
					}
				}
			}
			dots = append(dots, dot{name, r.Paired, max(r.PairedMin, r.Paired/1e3), r.PairedMax, c})
		}
	}
	if len(dots) == 0 {
		return nil, 0, nil
	}
	slices.Reverse(dots) // the first ratio on top
	p := newPlot(title)
	p.X.Label.Text = "ratio, paired by round (1 = parity; logarithmic)"
	p.X.Scale = gplot.LogScale{}
	names := make([]string, len(dots))
	lo, hi := 1.0, 1.0
	for i, dt := range dots {
		names[i] = dt.name
		y := float64(i)
		l, err := plotter.NewLine(plotter.XYs{{X: dt.lo, Y: y}, {X: dt.hi, Y: y}})
		if err != nil {
			return nil, 0, err
		}
		l.Color, l.Width = dt.c, vg.Points(1)
		sc, err := plotter.NewScatter(plotter.XYs{{X: dt.v, Y: y}})
		if err != nil {
			return nil, 0, err
		}
		sc.Color, sc.Shape, sc.Radius = dt.c, draw.CircleGlyph{}, vg.Points(3)
		p.Add(l, sc)
		lo, hi = min(lo, dt.lo), max(hi, dt.hi)
	}
	one, err := plotter.NewLine(plotter.XYs{{X: 1, Y: -0.5}, {X: 1, Y: float64(len(dots)) - 0.5}})
	if err != nil {
		return nil, 0, err
	}
	one.Dashes = []vg.Length{vg.Points(3), vg.Points(2)}
	p.Add(one)
	p.NominalY(names...)
	p.X.Min, p.X.Max = lo/1.5, hi*1.5
	p.X.Tick.Marker = logTicks(p.X.Min, p.X.Max)
	return p, len(dots), nil
}

// logTicks labels 1, 2 and 5 times the powers of ten between lo and hi.
func logTicks(lo, hi float64) gplot.ConstantTicks {
	var t []gplot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, e); v >= lo && v <= hi {
				t = append(t, gplot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return t
}

// ratioSize is the picture of n ratios: wide enough for their names, a line each.
func ratioSize(n int) (w, h vg.Length) {
	return 26 * vg.Centimeter, vg.Length(max(6, 2.5+0.45*float64(n))) * vg.Centimeter
}

// latencyPlots: one CDF panel per case whose figures have latency quantiles.
func latencyPlots(d *report.Document) ([][]*gplot.Plot, error) {
	var row []*gplot.Plot
	for _, c := range d.Cases {
		p := newPlot(fmt.Sprintf("%s %s: latency CDF (medians of the rounds' quantiles)", d.Scenario, c.Name))
		p.X.Label.Text = "latency (µs)"
		p.Y.Label.Text = "share of requests at most"
		var xs []float64
		for j, v := range d.Variants {
			f := d.Figure(c.Name, v)
			if f == nil || len(f.Latency) == 0 {
				continue
			}
			var pts plotter.XYs
			for _, q := range f.Latency {
				if q.Micros > 0 {
					pts = append(pts, plotter.XY{X: q.Micros, Y: q.P})
					xs = append(xs, q.Micros)
				}
			}
			if len(pts) == 0 {
				continue
			}
			l, s, err := plotter.NewLinePoints(pts)
			if err != nil {
				return nil, err
			}
			col, g := style(j)
			l.Color, s.Color, s.Shape = col, col, g
			p.Add(l, s)
			p.Legend.Add(v, l, s)
		}
		if len(xs) == 0 {
			continue
		}
		p.Legend.Top, p.Legend.Left = false, true
		if slices.Max(xs) >= 10*slices.Min(xs) {
			p.X.Scale = gplot.LogScale{}
			p.X.Min, p.X.Max = slices.Min(xs)/1.2, slices.Max(xs)*1.2
			p.X.Tick.Marker = logTicks(p.X.Min, p.X.Max)
		}
		p.Y.Min, p.Y.Max = 0, 1
		row = append(row, p)
	}
	return chunk(row, 2), nil
}

// queuePlots: per case, the key metric per receive queue, one bar per variant.
func queuePlots(d *report.Document) ([][]*gplot.Plot, error) {
	key := d.KeyMetric()
	var row []*gplot.Plot
	for _, c := range d.Cases {
		nq := 0
		for _, v := range d.Variants {
			if f := d.Figure(c.Name, v); f != nil {
				nq = max(nq, len(f.Queues))
			}
		}
		if nq == 0 {
			continue
		}
		p := newPlot(fmt.Sprintf("%s %s: %s per queue", d.Scenario, c.Name, key))
		p.Y.Label.Text = axisLabel(*d.Metric(key))
		n := len(d.Variants)
		top := 0.0
		slot := 0.8 / float64(n)
		for j, v := range d.Variants {
			f := d.Figure(c.Name, v)
			if f == nil || len(f.Queues) == 0 {
				continue
			}
			vals := make(plotter.Values, nq)
			copy(vals, f.Queues)
			top = max(top, slices.Max(f.Queues))
			b, err := plotter.NewBarChart(vals, vg.Length(10/float64(nq)*slot)*vg.Centimeter)
			if err != nil {
				return nil, err
			}
			col, _ := style(j)
			b.Color, b.LineStyle.Width = col, 0
			b.XMin = -0.4 + (float64(j)+0.5)*slot
			p.Add(b)
			p.Legend.Add(v, b)
		}
		names := make([]string, nq)
		for i := range names {
			names[i] = fmt.Sprintf("queue %d", i)
		}
		p.NominalX(names...)
		p.Y.Min, p.Y.Max = 0, top*1.3 // room for the legend
		row = append(row, p)
	}
	return chunk(row, 2), nil
}

func chunk(ps []*gplot.Plot, n int) [][]*gplot.Plot {
	var rows [][]*gplot.Plot
	for len(ps) > 0 {
		k := min(n, len(ps))
		rows = append(rows, ps[:k])
		ps = ps[k:]
	}
	return rows
}
