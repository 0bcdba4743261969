package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netchan/netchan/bench"
	"github.com/netchan/netchan/bench/report"
)

const benchUsage = `netchan bench rx|reflect [flags]

  rx       kernel UDP socket (recvmmsg) vs netchan's AF_XDP drop pipeline vs asavie/xdp vs an
           in-kernel XDP_DROP program, on a lab veth, interleaved runs
  reflect  kernel UDP echo (recvmmsg + sendmmsg) vs netchan's reflect pipeline vs asavie/xdp

The generator runs on --gen-cpu, the receiver and the receiving veth's NAPI thread on --rx-cpu.
Each round runs every variant at full load (packets/s; once per frame size of --sizes) and at
--rate (receive-core CPU per packet). Progress goes to stderr. The result is a netchan-bench/1
document in --out (KIND-DATE.json, with the command that made it); its table is printed, and
netchan bench table prints it again.
`

func init() {
	// bench all: three rounds of short runs, about two minutes each; rx at full load also at
	// three frame sizes (the throughput-against-size plot), about two minutes more.
	short := []string{"--runs", "3", "--window", "2s", "--warmup", "500ms", "--quiet"}
	benchCommands["rx"] = benchCommand{run: func(a []string) error { return cmdBench(append([]string{"rx"}, a...)) }, order: 10,
		about: "kernel vs netchan vs asavie/xdp vs XDP_DROP receiving on a lab veth", all: append(slices.Clone(short), "--sizes", "60,508,1514")}
	benchCommands["reflect"] = benchCommand{run: func(a []string) error { return cmdBench(append([]string{"reflect"}, a...)) }, order: 11,
		about: "kernel UDP echo vs netchan's reflect pipeline vs asavie/xdp on a lab veth", all: short}
}

func cmdBench(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, benchUsage)
		return errors.New("say rx or reflect")
	}
	kind := bench.Kind(args[0])
	if kind != bench.KindRx && kind != bench.KindReflect {
		fmt.Fprint(os.Stderr, benchUsage)
		return fmt.Errorf("unknown benchmark %q: say rx or reflect", args[0])
	}
	fs := flag.NewFlagSet("bench "+args[0], flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, benchUsage); fs.PrintDefaults() }
	o := bench.Options{Kind: kind}
	fs.IntVar(&o.Runs, "runs", 5, "rounds; every variant runs once per case (phase, frame size) in each round, the order reversed every second round")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "sending before the measured window")
	fs.DurationVar(&o.Window, "window", 4*time.Second, "measured window of each run")
	fs.IntVar(&o.Size, "size", 60, "frame size in bytes without FCS (of the load phase, and of the max phase without --sizes)")
	sizes := fs.String("sizes", "", "comma-separated frame sizes without FCS (60 to 1514): the max phase runs once per size")
	fs.IntVar(&o.Flows, "flows", 4, "flows (source ports)")
	fs.IntVar(&o.Queues, "queues", 1, "veth queues; the generator sends on all of them")
	fs.IntVar(&o.Rate, "rate", 200000, "offered packets/s of the load phase (CPU per packet)")
	fs.StringVar(&o.Engine, "engine", "xdp", "the generator at full load: xdp (XDP_TX in live-frame mode: outruns every receiver; one queue) or afxdp (AF_XDP transmit on every queue: slower than the AF_XDP receivers); the load phase always uses afxdp")
	fs.IntVar(&o.GenCPU, "gen-cpu", 0, "the generator's core")
	fs.IntVar(&o.RxCPU, "rx-cpu", 1, "the receiver's core (and its NAPI thread's)")
	fs.IntVar(&o.BatchSize, "batch", 64, "batch size of every receiver")
	fs.IntVar(&o.NumFrames, "frames", 4096, "UMEM frames of both AF_XDP drivers (half of them wait in the fill ring)")
	fs.IntVar(&o.RingSize, "ring-size", 2048, "entries of every AF_XDP ring of both drivers")
	fs.DurationVar(&o.SpinIdle, "spin-idle", 0, "AF_XDP loops spin this long without work before poll(2) (0: not at all, since they share the core with the NAPI thread; the shard default is 50us)")
	fs.Float64Var(&o.MaxForeign, "max-foreign", 0.10, "a run in which other processes took more than this share of the receive core is contaminated: repeated, and left out of the figures if a clean attempt exists")
	fs.IntVar(&o.Retries, "retries", 2, "repeats of a contaminated run (-1: none)")
	variants := fs.String("variants", "", "comma-separated subset: kernel,netchan,netchan-loop,asavie,xdp-drop")
	phases := fs.String("phases", "max,load", "max (packets/s), load (CPU per packet at --rate), or both")
	out := fs.String("out", "bench/results", "directory for the JSON results")
	quiet := fs.Bool("quiet", false, "print only the table (and the progress on stderr)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	// A stray word would otherwise start a benchmark of many minutes with the defaults.
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (netchan bench table FILE prints stored results)", fs.Args())
	}
	if *variants != "" {
		o.Variants = strings.Split(*variants, ",")
	}
	o.Phases = strings.Split(*phases, ",")
	if *sizes != "" {
		var err error
		if o.Sizes, err = parseInts(*sizes); err != nil {
			return fmt.Errorf("--sizes: %w", err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Generator = []string{exe, "lab", "send"}
	o.Command = "netchan bench " + strings.Join(args, " ")
	if !*quiet {
		o.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	}
	o.Progress = printProgress
	return runReport(*out, func(ctx context.Context) (*report.Document, error) { return bench.Run(ctx, o) })
}

// parseInts reads a comma-separated list of whole numbers.
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q: want a whole number", f)
		}
		out = append(out, n)
	}
	return out, nil
}
