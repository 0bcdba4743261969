// Command plot draws the netchannel benchmark's figures (`netchan bench netchannel`) as PNG
// images with gonum.org/v1/plot:
//
//	go run ./bench/plot bench/results/netchannel-DATE.json...   # writes netchannel-DATE.png beside each
//
// It is a program of its own (layer 6), kept out of the library and out of the netchan binary,
// which gonum/plot and its fonts would make about 7 MB larger.
package main

import (
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/netchan/netchan/bench"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: go run ./bench/plot FILE.json...   (netchannel benchmark results; writes FILE.png beside each)")
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	for _, path := range flag.Args() {
		rep, err := bench.ReadNetchannelReport(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "plot:", err)
			os.Exit(1)
		}
		png := strings.TrimSuffix(path, ".json") + ".png"
		if err := Netchannel(rep, png); err != nil {
			fmt.Fprintln(os.Stderr, "plot:", err)
			os.Exit(1)
		}
		fmt.Println(png)
	}
}

// variantStyle gives every variant the same colour and marker in every panel.
var variantStyle = map[string]struct {
	c     color.RGBA
	shape draw.GlyphDrawer
	dash  bool
}{
	bench.Netchannel: {color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, draw.CircleGlyph{}, false},
	bench.Epoll:      {color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, draw.SquareGlyph{}, false},
	bench.Mmsg:       {color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, draw.TriangleGlyph{}, false},
	bench.XDPDrop:    {color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}, draw.CrossGlyph{}, true},
}

// Netchannel draws a netchannel report as one PNG of up to six panels: CPU per packet against
// offered rate, one line per variant, for receive-only (left) and echo (right); by the receive
// core's busy time (/proc/stat, top), by the receiver's own threads and NAPI threads
// (schedstat, middle) and by the whole machine less the generator (bottom). Both axes are
// logarithmic; full load sits at the rate the generator reached. xdp-drop, the floor, is drawn
// dashed in both modes.
func Netchannel(r *bench.NetchannelReport, path string) error {
	modes := r.Options.Modes
	if len(modes) == 0 {
		return fmt.Errorf("plot: the report has no modes")
	}
	rows := [][]*plot.Plot{}
	for _, what := range []string{whatRxCore, whatOwn, whatMachine} {
		var row []*plot.Plot
		for _, mode := range modes {
			p, err := panel(r, mode, what)
			if err != nil {
				return err
			}
			row = append(row, p)
		}
		rows = append(rows, row)
	}
	w, h := vg.Length(len(modes))*12*vg.Centimeter, vg.Length(len(rows))*8*vg.Centimeter
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(150))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(rows), Cols: len(modes), PadX: 6 * vg.Millimeter, PadY: 6 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	canvases := plot.Align(rows, tiles, dc)
	for i := range rows {
		for j := range rows[i] {
			rows[i][j].Draw(canvases[i][j])
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

// The panels' figures.
const (
	whatRxCore  = "receive core (/proc/stat)"
	whatOwn     = "receiver + NAPI threads (schedstat)"
	whatMachine = "whole machine less the generator"
)

func panel(r *bench.NetchannelReport, mode, what string) (*plot.Plot, error) {
	p := plot.New()
	name := map[string]string{bench.ModeRx: "receive only", bench.ModeEcho: "echo"}[mode]
	p.Title.Text = fmt.Sprintf("%s: %s", name, what)
	p.X.Label.Text = fmt.Sprintf("offered packets/s, %d-byte UDP payloads (rightmost: full load)", r.Options.Payload)
	p.Y.Label.Text = "CPU ns per packet (median)"
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.X.Label.TextStyle.Font.Size, p.Y.Label.TextStyle.Font.Size = vg.Points(8), vg.Points(8)
	p.X.Tick.Label.Font.Size, p.Y.Tick.Label.Font.Size = vg.Points(8), vg.Points(8)
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.Legend.Top = true
	var xs, ys []float64
	for _, v := range r.Options.Variants {
		fmode := mode
		if v == bench.XDPDrop {
			fmode = bench.ModeRx // the floor of both modes
		}
		var pts plotter.XYs
		for _, rate := range r.Options.Rates {
			f := r.Figure(fmode, v, rate)
			if f == nil || f.Runs == 0 {
				continue
			}
			x := float64(rate)
			if rate == 0 {
				x = f.GenPPS.Median
			}
			y := f.NsPerPacket.Median
			switch what {
			case whatOwn:
				y = f.TaskNsPerPacket.Median
			case whatMachine:
				y = f.MachineNsPerPacket.Median
			}
			if x <= 0 || y <= 0 {
				continue
			}
			pts = append(pts, plotter.XY{X: x, Y: y})
			xs, ys = append(xs, x), append(ys, y)
		}
		if len(pts) == 0 {
			continue
		}
		slices.SortFunc(pts, func(a, b plotter.XY) int { return int(a.X - b.X) })
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		st := variantStyle[v]
		l.Color, s.Color, s.Shape = st.c, st.c, st.shape
		l.Width = vg.Points(1.5)
		if st.dash {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, s)
		label := v
		if v == bench.XDPDrop {
			label += " (floor)"
		}
		p.Legend.Add(label, l, s)
	}
	if len(xs) == 0 {
		return p, nil
	}
	p.X.Tick.Marker = ticks(slices.Min(xs), slices.Max(xs), true)
	p.Y.Tick.Marker = ticks(slices.Min(ys), slices.Max(ys), false)
	p.X.Min, p.X.Max = slices.Min(xs)/1.3, slices.Max(xs)*1.3
	p.Y.Min, p.Y.Max = slices.Min(ys)/1.3, slices.Max(ys)*2.5 // room for the legend
	p.Add(plotter.NewGrid())
	return p, nil
}

// ticks puts labelled ticks at 1, 2 and 5 times the powers of ten between lo and hi.
func ticks(lo, hi float64, rate bool) plot.ConstantTicks {
	var t []plot.Tick
	for e := math.Floor(math.Log10(lo / 1.3)); e <= math.Ceil(math.Log10(hi*2.5)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v < lo/1.3 || v > hi*2.5 {
				continue
			}
			t = append(t, plot.Tick{Value: v, Label: short(v, rate)})
		}
	}
	return plot.ConstantTicks(t)
}

func short(v float64, rate bool) string {
	switch {
	case rate && v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case rate && v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", v)
}
