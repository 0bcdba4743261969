package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/netchan/netchan/bench"
)

// TestNetchannelPNG draws a small report and checks that the file is a PNG of six panels'
// size.
func TestNetchannelPNG(t *testing.T) {
	r := &bench.NetchannelReport{Options: bench.NetchannelOptions{Modes: []string{bench.ModeRx, bench.ModeEcho},
		Variants: []string{bench.Netchannel, bench.Epoll, bench.Mmsg, bench.XDPDrop}, Rates: []int{10000, 0}, Payload: 128}}
	ns := map[string]float64{bench.Netchannel: 2000, bench.Epoll: 4000, bench.Mmsg: 3000, bench.XDPDrop: 800}
	for _, mode := range r.Options.Modes {
		for _, v := range r.Options.Variants {
			for _, rate := range r.Options.Rates {
				s := bench.Stat{Median: ns[v]}
				r.Figures = append(r.Figures, bench.NetchannelFigure{Mode: mode, Variant: v, Rate: rate, Runs: 1,
					GenPPS: bench.Stat{Median: 900000}, NsPerPacket: s, TaskNsPerPacket: s, MachineNsPerPacket: s})
			}
		}
	}
	path := filepath.Join(t.TempDir(), "n.png")
	if err := Netchannel(r, path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 1000 {
		t.Errorf("image %v: want two columns and three rows of panels", b)
	}
}
