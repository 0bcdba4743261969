package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/bench/gen"
	"github.com/netchan/netchan/bench/mlrsearch"
)

func TestParseFrameSize(t *testing.T) {
	for _, c := range []struct {
		in    string
		name  string
		sizes gen.Sizes
	}{
		{"64", "64", gen.Sizes{60}},
		{" 1518", "1518", gen.Sizes{1514}},
		{"64fcs", "64", gen.Sizes{60}},
		{"60nofcs", "60nofcs", gen.Sizes{60}},
		{"imix_v4_1", "imix_v4_1", gen.IMIXv4_1},
	} {
		z, err := parseFrameSize(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if z.Name != c.name || fmt.Sprint(z.Sizes) != fmt.Sprint(c.sizes) {
			t.Errorf("%q: got %q %v, want %q %v", c.in, z.Name, z.Sizes, c.name, c.sizes)
		}
	}
	for _, bad := range []string{"", "60", "abc", "64x", "xnofcs"} {
		if _, err := parseFrameSize(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	zs, err := parseFrameSizes("64,570,1518")
	if err != nil {
		t.Fatal(err)
	}
	p := pattern(zs)
	if p.Name != "64,570,1518" || p.Sizes.String() != "60,566,1514" || withFCS(p.Sizes) != "64,570,1518" {
		t.Errorf("pattern %q %v %s", p.Name, p.Sizes, withFCS(p.Sizes))
	}
	if got := withFCS(gen.IMIXv4_1); got != "64,570,1518" || noFCS(gen.IMIXv4_1) != "60,566,1514" {
		t.Errorf("IMIX with the FCS: %s", got)
	}
	if defaultSize("tcp") != "76" || defaultSize("udp") != "64" || defaultSize("icmp") != "64" {
		t.Errorf("default sizes %s %s %s", defaultSize("tcp"), defaultSize("udp"), defaultSize("icmp"))
	}
}

func TestGenFlagsConfig(t *testing.T) {
	base := func() *genFlags {
		return &genFlags{iface: "nosuch0", dstMAC: "02:00:00:00:00:02", src: "198.18.0.1", dst: "198.18.1.2", srcAddrs: 1, queues: 2,
			srcPort: 1024, dstPort: 9, proto: "udp", xdpMode: "auto", quiet: true}
	}
	cfg, err := base().config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Iface != "nosuch0" || cfg.Queues != 2 || cfg.Src.String() != "198.18.0.1" || cfg.Dst.String() != "198.18.1.2" ||
		cfg.DstMAC.String() != "02:00:00:00:00:02" || !cfg.Reflector || cfg.Forwarded || cfg.Proto != gen.UDP {
		t.Errorf("config %+v", cfg)
	}
	f := base()
	f.rssQueues, f.rssKey = 4, "symmetric"
	if cfg, err = f.config(); err != nil || cfg.RSSQueues != 4 || len(cfg.RSSKey) != 40 || cfg.RSSKey[0] != 0x6d {
		t.Errorf("rss: %v %+v", err, cfg)
	}
	f = base()
	f.src, f.dst = "", ""
	if cfg, err = f.config(); err != nil || cfg.Src.String() != "198.18.0.1" || cfg.Dst.String() != "198.18.0.2" {
		t.Errorf("default addresses: %v %v %v", err, cfg.Src, cfg.Dst)
	}
	f = base()
	f.noReply = true
	if cfg, err = f.config(); err != nil || cfg.Reflector {
		t.Errorf("--no-reply: %v reflector %v", err, cfg.Reflector)
	}
	for _, c := range []struct {
		mod  func(*genFlags)
		want string
	}{
		{func(f *genFlags) { f.iface = "" }, "--iface"},
		{func(f *genFlags) { f.dstMAC = "" }, "--dst-mac"},
		{func(f *genFlags) { f.dstMAC = "zz" }, "--dst-mac"},
		{func(f *genFlags) { f.src = "::1" }, "IPv6"},
		{func(f *genFlags) { f.dst = "10.0.0" }, "--dst"},
		{func(f *genFlags) { f.proto = "sctp" }, "--proto"},
		{func(f *genFlags) { f.rxIface = "x" }, "--forwarded"},
		{func(f *genFlags) { f.rssQueues, f.rssKey = 2, "00" }, "--rss-key"},
		{func(f *genFlags) { f.xdpMode = "x" }, "--xdp-mode"},
		{func(f *genFlags) { f.cpus = "a" }, "--cpus"},
		{func(f *genFlags) { f.queues = -1 }, "--queues"},
	} {
		f := base()
		c.mod(f)
		if _, err := f.config(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error naming %s, got %v", c.want, err)
		}
	}
}

func TestSearchFlags(t *testing.T) {
	s := searchFlags{goals: "ndr,pdr", pdr: 0.01, exceed: 0.5, width: 0.02, trial: time.Second, sum: 3 * time.Second, latency: "10,50,90"}
	goals, err := s.goalList()
	if err != nil || len(goals) != 2 || goals[0].Name != "NDR" || goals[1].Name != "PDR" || goals[1].LossRatio != 0.01 ||
		goals[0].RelativeWidth != 0.02 || goals[0].DurationSum != 3*time.Second || goals[1].FinalTrialDuration != time.Second {
		t.Fatalf("goals %v %+v", err, goals)
	}
	fr, err := s.latencyFractions()
	if err != nil || fmt.Sprint(fr) != "[0.1 0.5 0.9]" {
		t.Errorf("fractions %v %v", fr, err)
	}
	s.latency = "none"
	if fr, err = s.latencyFractions(); err != nil || fr != nil {
		t.Errorf("none: %v %v", fr, err)
	}
	s.latency, s.goals = "0", "xdr"
	if _, err := s.latencyFractions(); err == nil {
		t.Error("latency 0%: no error")
	}
	if _, err := s.goalList(); err == nil {
		t.Error("goal xdr: no error")
	}
}

// bottleneck simulates a device that forwards at most limit packets/s (a token bucket with a
// burst of burst packets, refilled between trials), with a round trip of rtt.
type bottleneck struct {
	limit, burst float64
	rtt          time.Duration
	trials       int
	loads        []float64
	noReply      bool
	maxRate      float64
}

func (b *bottleneck) Trial(_ context.Context, load float64, d time.Duration) (*gen.Result, error) {
	b.trials++
	b.loads = append(b.loads, load)
	sent := uint64(math.Round(load * d.Seconds()))
	if b.maxRate > 0 && load > b.maxRate {
		r := &gen.Result{Load: load}
		r.Total.TxPackets = uint64(b.maxRate * d.Seconds())
		return r, fmt.Errorf("%w: asked %.0f, sent %.0f", gen.ErrRateNotReached, load, b.maxRate)
	}
	fwd := min(sent, uint64(b.limit*d.Seconds()+b.burst))
	if b.noReply {
		fwd = 0
	}
	r := &gen.Result{Load: load, Duration: d, Seconds: d.Seconds()}
	r.Total.TxPackets, r.Total.RxPackets, r.Total.Lost = sent, fwd, sent-fwd
	if sent > 0 {
		r.Total.LossRatio = float64(sent-fwd) / float64(sent)
	}
	if fwd > 0 {
		r.Total.Latency = gen.Latency{Kind: "round-trip", Clock: "software", Samples: fwd, P50: b.rtt, P90: b.rtt, P99: b.rtt, Max: b.rtt}
	}
	if b.noReply && sent > 0 {
		return r, fmt.Errorf("%w: nothing", gen.ErrNoReplies)
	}
	return r, nil
}

// TestSearchWith runs the search and the latency trials against a simulated 20 kpps
// bottleneck: both bounds bracket it within the width, the latency trials run at 10, 50 and
// 90 % of the PDR's lower bound, and the table and document say so.
func TestSearchWith(t *testing.T) {
	s := searchFlags{goals: "ndr,pdr", pdr: mlrsearch.PDRLossRatio, exceed: 0.5, width: 0.01, trial: time.Second, sum: 3 * time.Second,
		latency: "10,50,90", latTrial: time.Second, probe: 100 * time.Millisecond, searchMax: time.Hour}
	goals, _ := s.goalList()
	fr, _ := s.latencyFractions()
	b := &bottleneck{limit: 20000, burst: 50, rtt: 30 * time.Microsecond}
	sr := &sizeResult{Size: "64", Frames: "60", FramesFCS: "64", MeanFrame: 60}
	if err := searchWith(context.Background(), b, sr, 2000, 40000, s, goals, fr, func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	if len(sr.Goals) != 2 {
		t.Fatalf("goals %+v", sr.Goals)
	}
	// With a burst of 50 over 1-second trials, the device forwards 20050 in a trial: no loss
	// up to 20050 packets/s (NDR), loss ≤ 0.5 % up to 20050/0.995 = 20151 (PDR).
	for _, g := range sr.Goals {
		top := 20050.0
		if g.Name == "PDR" {
			top = 20050 / 0.995
		}
		if !g.Regular || g.Lower > top || g.Upper <= top || g.Upper-g.Lower > 0.01*g.Upper || g.LowerTrials == 0 || g.UpperTrials == 0 {
			t.Errorf("%s: %+v (threshold %.0f)", g.Name, g, top)
		}
		if g.ConditionalThroughput <= 0 || g.ConditionalThroughput > g.Lower || math.Abs(g.ConditionalBPS-g.ConditionalThroughput*480) > 1e-6*g.ConditionalBPS {
			t.Errorf("%s: conditional throughput %+v", g.Name, g)
		}
	}
	pdr := sr.Goals[1].Lower
	if len(sr.Latency) != 3 {
		t.Fatalf("latency %+v", sr.Latency)
	}
	for i, f := range []float64{0.1, 0.5, 0.9} {
		l := sr.Latency[i]
		if math.Abs(l.Load-f*pdr) > 1e-6 || l.Latency.P50 != 30*time.Microsecond || l.Received != l.Sent {
			t.Errorf("latency %d: %+v (PDR %.0f)", i, l, pdr)
		}
	}
	if b.loads[0] != 2000 || len(sr.Trials) != b.trials-4 { // the probe and three latency trials
		t.Errorf("loads %v, %d trials recorded", b.loads, len(sr.Trials))
	}
	var out bytes.Buffer
	writeSizeText(&out, sr, "udp", 1, 1)
	for _, want := range []string{"size 64", "NDR", "PDR", "regular", "10%", "90%", "30µs"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("\n%s", out.String())
}

// TestSearchWithErrors: a reflector that answers nothing stops the search at the probe, and
// a rate the generator cannot reach stops it with that error.
func TestSearchWithErrors(t *testing.T) {
	s := searchFlags{goals: "ndr", exceed: 0.5, width: 0.01, trial: time.Second, sum: 3 * time.Second, probe: 100 * time.Millisecond, searchMax: time.Hour}
	goals, _ := s.goalList()
	sr := &sizeResult{MeanFrame: 60}
	err := searchWith(context.Background(), &bottleneck{limit: 1e9, noReply: true}, sr, 1000, 2000, s, goals, nil, func(string, ...any) {})
	if !errors.Is(err, gen.ErrNoReplies) || !strings.Contains(err.Error(), "probe") {
		t.Errorf("no reflector: %v", err)
	}
	sr = &sizeResult{MeanFrame: 60}
	err = searchWith(context.Background(), &bottleneck{limit: 1e9, maxRate: 1500}, sr, 1000, 2000, s, goals, nil, func(string, ...any) {})
	if !errors.Is(err, gen.ErrRateNotReached) || !strings.Contains(err.Error(), "--max-rate") || sr.Error == "" {
		t.Errorf("rate not reached: %v (%+v)", err, sr)
	}
}

// TestBenchGenUsageErrors runs the binary with bad command lines: each error names the flag.
func TestBenchGenUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "gen", "--dst-mac", "02:00:00:00:00:01"}, "--iface"},
		{[]string{"bench", "gen", "--iface", "lo"}, "--dst-mac"},
		{[]string{"bench", "gen", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--size", "64", "--imix", "imix_v4_1"}, "not both"},
		{[]string{"bench", "gen", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--size", "10"}, "size"},
		{[]string{"bench", "gen", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--rate", "0"}, "--rate"},
		{[]string{"bench", "search", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--goals", "x"}, "--goals"},
		{[]string{"bench", "search", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--min-rate", "5", "--max-rate", "2"}, "--min-rate"},
		{[]string{"bench", "search", "--iface", "lo", "--dst-mac", "02:00:00:00:00:01", "--no-reply"}, "--no-reply"},
	} {
		out, err := exec.Command(binary, c.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: %v: %s (want %q)", c.args, err, out, c.want)
		}
	}
}
