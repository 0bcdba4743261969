package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netchan/netchan/bench/natbench"
	"github.com/netchan/netchan/bench/report"
)

const benchNATUsage = `netchan bench nat [flags]

UDP packets/s through a NAT on one core, side by side in one run: netchan's NAT (nat.New on
shards, AF_XDP; variant netchan-xdp with its XDP fast path on) against Linux forwarding with
iptables MASQUERADE and conntrack in a router namespace, same generator and receiver,
interleaved rounds, medians. Phases: max (generator at full speed: packets/s delivered to the
server), rate (AF_XDP generator at --rate: the NAT gets skbs; NAT-core CPU per packet) and
xdp-rate (XDP generator paced at --rate: the NAT gets XDP frames, as from a NIC). The generator
runs on --gen-cpu; the NAT (netchan's shard and NAPI threads, or the router's NAPI thread) on
--nat-cpu. A run in which other processes took more than --max-foreign of the NAT core is
repeated. Progress goes to stderr; the document (netchan-bench/1) to --out/nat-DATE-TIME.json
with the command that made it, and its table to stdout.
`

func init() {
	benchCommands["nat"] = benchCommand{run: cmdBenchNAT, order: 20,
		about: "netchan's NAT (and its XDP fast path) vs Linux MASQUERADE, one NAT core",
		// Three rounds of the three NATs in max and rate: 18 runs of about 3.5 s and the labs'
		// set-up, under two minutes without repeats.
		all: []string{"--runs", "3", "--window", "2s", "--warmup", "500ms", "--variants", "netchan,netchan-xdp,linux", "--phases", "max,rate", "--quiet"}}
}

// cmdBenchNAT runs `netchan bench nat`.
func cmdBenchNAT(args []string) error {
	fs := flag.NewFlagSet("bench nat", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, benchNATUsage); fs.PrintDefaults() }
	var o natbench.Options
	fs.IntVar(&o.Runs, "runs", 5, "rounds; each runs every variant once per phase, the order alternating")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "sending before the measured window")
	fs.DurationVar(&o.Window, "window", 4*time.Second, "measured window of each run")
	fs.IntVar(&o.Flows, "flows", 16, "UDP flows (source ports)")
	fs.IntVar(&o.Size, "size", 60, "frame size in bytes without FCS")
	fs.IntVar(&o.Rate, "rate", 250000, "offered packets/s of the rate phase")
	fs.IntVar(&o.GenCPU, "gen-cpu", 0, "the generator's core (and the server's NAPI thread)")
	fs.IntVar(&o.NATCPU, "nat-cpu", 1, "the NAT's core")
	fs.DurationVar(&o.SpinIdle, "spin-idle", 0, "netchan's shard spins this long without work before it sleeps (0: the shards' default, 50us, as `netchan nat` runs; 1ns: sleep at once, since the shard shares the NAT core with the NAPI threads that feed it)")
	fs.Float64Var(&o.MaxForeign, "max-foreign", natbench.DefaultMaxForeign, "a run in which other processes took more than this share of the NAT core is contaminated: repeated, and its round stands by its least contaminated attempt")
	fs.IntVar(&o.Retries, "retries", 2, "repeats of a contaminated run (-1: none)")
	variants := fs.String("variants", "netchan,linux", "comma-separated: netchan, netchan-xdp (the NAT's XDP fast path on), linux")
	phases := fs.String("phases", "max,rate", "comma-separated: max, rate (AF_XDP generator at --rate: skbs), xdp-rate (live-frame XDP generator paced at --rate: XDP frames, as from a NIC)")
	fs.StringVar(&o.Profile, "profile", "", "write a CPU profile (pprof) of the first netchan max run's window to this file")
	out := fs.String("out", "bench/results", "directory for the JSON results")
	quiet := fs.Bool("quiet", false, "print only the progress and the table, not every run's figures")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench nat: unexpected arguments %q", fs.Args())
	}
	o.Variants = strings.Split(*variants, ",")
	o.Phases = strings.Split(*phases, ",")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Generator = []string{exe, "lab", "send"}
	o.Command = "netchan bench nat " + strings.Join(args, " ")
	o.Progress = printProgress
	if !*quiet {
		o.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	}
	return runReport(*out, func(ctx context.Context) (*report.Document, error) {
		doc, err := natbench.Run(ctx, o)
		if doc != nil {
			doc.Files = relativeTo(*out, doc.Files)
		}
		return doc, err
	})
}

// relativeTo makes the paths of files (as given on the command line) relative to dir, where
// the document that names them is written; a path that has no relative form stays as it is.
func relativeTo(dir string, files []string) []string {
	out := make([]string, 0, len(files))
	for _, f := range files {
		if a, err := filepath.Abs(f); err == nil {
			if d, err := filepath.Abs(dir); err == nil {
				if r, err := filepath.Rel(d, a); err == nil {
					f = r
				}
			}
		}
		out = append(out, f)
	}
	return out
}
