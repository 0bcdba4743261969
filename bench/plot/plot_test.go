package plot

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netchan/netchan/bench/report"
)

// doc builds a document with every kind of picture: bars (the max group), lines along an axis
// (the load group's rates), latency quantiles and per-queue values, and a ratio.
func doc() *report.Document {
	d := report.New("demo", "netchan bench demo")
	d.Rounds = 3
	d.CaseAxis = "offered packets/s"
	d.Cases = []report.Case{{Name: "max", Group: "max"}, {Name: "load 10000", Group: "load", X: 1e4}, {Name: "load 100000", Group: "load", X: 1e5}}
	d.Variants = []string{"netchan", "kernel"}
	d.Metrics = []report.Metric{{Name: "pps", Unit: "pkt/s", Key: true, Better: report.Higher}, {Name: "ns_per_packet", Unit: "ns/pkt", Better: report.Lower}}
	d.Ratios = []report.Ratio{{Name: "pps netchan/kernel", Case: "max", Metric: "pps", Num: "netchan", Den: "kernel", Target: &report.Target{Op: ">=", Value: 2}}}
	for round := 1; round <= 3; round++ {
		for _, c := range d.Cases {
			for i, v := range d.Variants {
				pps := 1e5 * float64(2-i) * (1 + 0.01*float64(round))
				d.Runs = append(d.Runs, report.Run{Case: c.Name, Variant: v, Round: round,
					Values:  map[string]float64{"pps": pps, "ns_per_packet": 1e9 / pps},
					Latency: []report.Quantile{{P: 0.5, Micros: 10 * float64(i+1)}, {P: 0.99, Micros: 40 * float64(i+1)}, {P: 1, Micros: 300}},
					Queues:  []float64{pps / 2, pps / 2}})
			}
		}
	}
	d.Summarize()
	return d
}

// has reports whether img has a pixel of colour c.
func has(img image.Image, c color.RGBA) bool {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if uint8(r>>8) == c.R && uint8(g>>8) == c.G && uint8(bl>>8) == c.B {
				return true
			}
		}
	}
	return false
}

func TestDocument(t *testing.T) {
	dir := t.TempDir()
	d := doc()
	paths, err := Document(d, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]image.Point{"figures": {2, 2}, "ratios": {1, 1}, "latency": {2, 2}, "queues": {2, 2}}
	if len(paths) != len(want) {
		t.Fatalf("drew %v, want %d pictures", paths, len(want))
	}
	for _, p := range paths {
		kind := strings.TrimSuffix(p[strings.LastIndex(p, "-")+1:], ".png")
		grid, ok := want[kind]
		if !ok {
			t.Errorf("unexpected picture %s", p)
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if kind == "ratios" {
			// 26 cm wide, 6 cm for up to 8 ratios, at 120 dpi; the one ratio (2.0 against a
			// target of 2) is met: green.
			if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w != 1228 || h != 283 {
				t.Errorf("%s: %d×%d pixels, want 1228×283", filepath.Base(p), w, h)
			}
			if !has(img, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}) || has(img, palette[0]) {
				t.Errorf("%s: the met ratio is not drawn green only", filepath.Base(p))
			}
			continue
		}
		// 12 × 8 cm per panel at 120 dpi.
		if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w != grid.X*567 || h != grid.Y*378 {
			t.Errorf("%s: %d×%d pixels, want %d×%d panels of 567×378", filepath.Base(p), w, h, grid.X, grid.Y)
		}
		if !has(img, palette[0]) {
			t.Errorf("%s: nothing drawn in the first variant's colour", filepath.Base(p))
		}
		if !has(img, palette[1]) {
			t.Errorf("%s: nothing drawn in the second variant's colour", filepath.Base(p))
		}
	}
	all := filepath.Join(dir, "all.png")
	if err := Ratios([]*report.Document{d, d}, all); err != nil {
		t.Fatal(err)
	}
	empty := report.New("none", "x")
	if err := Ratios([]*report.Document{empty}, filepath.Join(dir, "none.png")); err == nil {
		t.Error("Ratios of documents without ratios drew a picture")
	}
}
