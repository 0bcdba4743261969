package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/netchan/netchan/bench"
)

const benchUsage = `netchan bench rx|reflect [flags]
netchan bench table FILE.json...   the figures of stored results as Markdown tables

  rx       kernel UDP socket (recvmmsg) vs netchan's AF_XDP drop pipeline vs asavie/xdp vs an
           in-kernel XDP_DROP program, on a lab veth, interleaved runs
  reflect  kernel UDP echo (recvmmsg + sendmmsg) vs netchan's reflect pipeline vs asavie/xdp

The generator runs on --gen-cpu, the receiver and the receiving veth's NAPI thread on --rx-cpu.
Each round runs every variant at full load (packets/s) and at --rate (receive-core CPU per
packet). Results go to --out as JSON with the command that made them.
`

func init() {
	benchCommands["rx"] = benchCommand{run: func(a []string) error { return cmdBench(append([]string{"rx"}, a...)) }, order: 10,
		about: "kernel vs netchan vs asavie/xdp vs XDP_DROP receiving on a lab veth"}
	benchCommands["reflect"] = benchCommand{run: func(a []string) error { return cmdBench(append([]string{"reflect"}, a...)) }, order: 11,
		about: "kernel UDP echo vs netchan's reflect pipeline vs asavie/xdp on a lab veth"}
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
	fs.IntVar(&o.Runs, "runs", 5, "rounds; every variant runs once per phase in each round, order rotating")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "sending before the measured window")
	fs.DurationVar(&o.Window, "window", 4*time.Second, "measured window of each run")
	fs.IntVar(&o.Size, "size", 60, "frame size in bytes without FCS")
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
	quiet := fs.Bool("quiet", false, "print only the table")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *variants != "" {
		o.Variants = strings.Split(*variants, ",")
	}
	o.Phases = strings.Split(*phases, ",")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Generator = []string{exe, "lab", "send"}
	o.Command = "netchan bench " + strings.Join(args, " ")
	if !*quiet {
		o.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	}
	return runBench(*out, func(ctx context.Context) (benchReport, error) { return bench.Run(ctx, o) })
}

// benchReport is what a bench command stores and prints.
type benchReport interface {
	Write(dir string) (string, error)
	Table() string
}

// runBench runs a benchmark until it ends or SIGINT/SIGTERM cancels it (the lab is removed
// either way), stores its report in dir and prints its table.
func runBench(dir string, run func(context.Context) (benchReport, error)) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx)
	if err != nil {
		return err
	}
	path, err := rep.Write(dir)
	if err != nil {
		return err
	}
	fmt.Print("\n" + rep.Table())
	fmt.Printf("\nresults: %s\n", path)
	return nil
}
