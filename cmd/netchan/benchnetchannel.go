package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/netchan/netchan/bench"
)

const benchNetchannelUsage = `netchan bench netchannel [flags]
netchan bench netchannel table FILE.json...   the figures of stored results as Markdown tables

Polyakov's netchannel experiment (2006) redone: CPU per packet of 128-byte UDP datagrams (UDP
payload; 170-byte frames) on the receiving side of a lab veth, at fixed offered rates and at full
load, receive-only (rx) and echo, side by side in interleaved rounds:

  netchannel  netchan.Start with a netchannel.Set, one channel udp:ADDR:9, one reader goroutine
              (Read, then Release; or turn each view around in place and Send); the interface
              keeps its kernel address
  epoll       a kernel UDP socket: epoll_wait + recvfrom (+ sendto), one datagram per call
  mmsg        a kernel UDP socket: recvmmsg (+ sendmmsg) batches
  xdp-drop    an in-kernel XDP program that counts and drops: the floor (rx only)

Figures: delivered packets/s, loss, CPU per packet on the receive core (/proc/stat) and for the
whole machine, and CPU above the xdp-drop floor; medians over rounds, collapsed runs flagged and
left out. Results go to --out as netchannel-DATE.json with the command; ` + "`go run ./bench/plot FILE.json`" + `
draws FILE.png beside it (a program of its own: gonum/plot stays out of this binary).
`

// cmdBenchNetchannel runs `netchan bench netchannel`.
func init() {
	benchCommands["netchannel"] = benchCommand{run: cmdBenchNetchannel, order: 50,
		about: "netchannel vs epoll vs recvmmsg vs XDP_DROP, CPU per packet (Polyakov's experiment)"}
}

func cmdBenchNetchannel(args []string) error {
	if len(args) > 0 && args[0] == "table" {
		if len(args) < 2 {
			return fmt.Errorf("bench netchannel table: give the JSON files")
		}
		for _, path := range args[1:] {
			rep, err := bench.ReadNetchannelReport(path)
			if err != nil {
				return err
			}
			fmt.Printf("%s (%s, %s)\n\n%s\n", path, rep.Command, rep.Started.Format(time.RFC3339), rep.Table())
		}
		return nil
	}
	fs := flag.NewFlagSet("bench netchannel", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, benchNetchannelUsage); fs.PrintDefaults() }
	var o bench.NetchannelOptions
	fs.IntVar(&o.Runs, "runs", 5, "rounds; every variant runs once per mode and rate in each round, order rotating")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "sending before the measured window")
	fs.DurationVar(&o.Window, "window", 5*time.Second, "measured window of each run")
	rates := fs.String("rates", "10000,50000,100000,200000,full", "offered packets/s, comma-separated; full (or 0): the generator as fast as it can")
	modes := fs.String("mode", "rx,echo", "rx (receive only), echo, or both")
	variants := fs.String("variants", "netchannel,epoll,mmsg,xdp-drop", "comma-separated subset")
	fs.IntVar(&o.Payload, "payload", 128, "UDP payload bytes (a frame is 42 more)")
	fs.IntVar(&o.Flows, "flows", 4, "flows (source ports)")
	fs.IntVar(&o.GenCPU, "gen-cpu", 0, "the generator's core")
	fs.IntVar(&o.RxCPU, "rx-cpu", 1, "the receivers' core (and the receiving veth's NAPI thread's)")
	fs.IntVar(&o.BatchSize, "batch", 64, "batch of netchan's shard, the netchannel reader and recvmmsg")
	fs.IntVar(&o.NumFrames, "frames", 8192, "netchan's UMEM frames")
	fs.IntVar(&o.RingSize, "ring-size", 2048, "entries of netchan's AF_XDP rings")
	fs.DurationVar(&o.SpinIdle, "spin-idle", 0, "netchan's shard spins this long without work before poll(2) (0: not at all)")
	fs.Float64Var(&o.MaxForeign, "max-foreign", 0.10, "a run in which other processes took more than this share of the receive core is contaminated and repeated")
	fs.IntVar(&o.Retries, "retries", 2, "repeats of a contaminated run (-1: none)")
	fs.DurationVar(&o.QuietWait, "quiet-wait", 20*time.Second, "before every run, wait up to this long for half a second in which the machine is less than --quiet-busy busy (negative: do not wait)")
	fs.Float64Var(&o.QuietBusy, "quiet-busy", 0.10, "the machine's busy share (all CPUs) that counts as quiet")
	fs.Float64Var(&o.Collapse, "collapse", 0.5, "a run delivering less than this share of its siblings' median packets/s has collapsed: flagged, left out")
	fs.StringVar(&o.Profile, "profile", "", "after the rounds, one more netchannel run with a CPU profile (pprof) of this process, written to this file")
	fs.StringVar(&o.ProfileMode, "profile-mode", "echo", "the profiled run's mode")
	fs.IntVar(&o.ProfileRate, "profile-rate", 100000, "the profiled run's offered packets/s (0: full load)")
	out := fs.String("out", "bench/results", "directory for the JSON results")
	quiet := fs.Bool("quiet", false, "print only the table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, r := range strings.Split(*rates, ",") {
		if r == "full" {
			o.Rates = append(o.Rates, 0)
			continue
		}
		n, err := strconv.Atoi(r)
		if err != nil {
			return fmt.Errorf("--rates: %q: want packets/s or full", r)
		}
		o.Rates = append(o.Rates, n)
	}
	o.Modes = strings.Split(*modes, ",")
	o.Variants = strings.Split(*variants, ",")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Generator = []string{exe, "lab", "send"}
	o.Command = "netchan bench netchannel " + strings.Join(args, " ")
	if !*quiet {
		o.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	}
	err = runBench(*out, func(ctx context.Context) (benchReport, error) { return bench.RunNetchannel(ctx, o) })
	if err == nil {
		fmt.Println("draw the plot: go run ./bench/plot RESULTS.json (writes RESULTS.png beside it)")
	}
	return err
}
