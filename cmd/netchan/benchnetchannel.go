package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/netchan/netchan/bench"
	"github.com/netchan/netchan/bench/report"
)

const benchNetchannelUsage = `netchan bench netchannel [flags]

Polyakov's netchannel experiment (2006) redone: CPU per packet of 128-byte UDP datagrams (UDP
payload; 170-byte frames) on the receiving side of a lab veth, at fixed offered rates and at full
load, receive-only (rx) and echo, side by side in interleaved rounds:

  netchannel  netchan.Start with a netchannel.Set, one channel udp:ADDR:9, one reader goroutine
              (Read, then Release; or turn each view around in place and Send); the interface
              keeps its kernel address
  epoll       a kernel UDP socket: epoll_wait + recvfrom (+ sendto), one datagram per call
  mmsg        a kernel UDP socket: recvmmsg (+ sendmmsg) batches
  xdp-drop    an in-kernel XDP program that counts and drops: the floor (rx only)

Figures: delivered packets/s, loss, CPU per packet on the receive core (/proc/stat), of the
receiver's own threads (schedstat) and for the whole machine, and each above the xdp-drop floor
(the same round's xdp-drop run at the same rate); medians over rounds, collapsed runs flagged,
left out and their round run again. Progress goes to stderr. The result is a netchan-bench/1
document in --out (netchannel-DATE.json, with the command); its table is printed, and
netchan bench table prints it again.
`

// cmdBenchNetchannel runs `netchan bench netchannel`.
func init() {
	// bench all: three rounds of short runs at two rates (the CPU-against-rate plot) and full
	// load, about four minutes.
	benchCommands["netchannel"] = benchCommand{run: cmdBenchNetchannel, order: 50,
		about: "netchannel vs epoll vs recvmmsg vs XDP_DROP, CPU per packet (Polyakov's experiment)",
		all:   []string{"--runs", "3", "--window", "2s", "--warmup", "500ms", "--rates", "20000,100000,full", "--quiet-wait", "5s", "--quiet"}}
}

func cmdBenchNetchannel(args []string) error {
	fs := flag.NewFlagSet("bench netchannel", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, benchNetchannelUsage); fs.PrintDefaults() }
	var o bench.NetchannelOptions
	fs.IntVar(&o.Runs, "runs", 5, "rounds; every variant runs once per mode and rate in each round, the order reversed every second round")
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
	fs.Float64Var(&o.Collapse, "collapse", 0.5, "a run delivering less than this share of its siblings' median packets/s (or more than its inverse times it) is an outlier: flagged, left out, its round run again (negative: no check)")
	fs.StringVar(&o.Profile, "profile", "", "after the rounds, one more netchannel run with a CPU profile (pprof) of this process, written to this file")
	fs.StringVar(&o.ProfileMode, "profile-mode", "echo", "the profiled run's mode")
	fs.IntVar(&o.ProfileRate, "profile-rate", 100000, "the profiled run's offered packets/s (0: full load)")
	out := fs.String("out", "bench/results", "directory for the JSON results")
	quiet := fs.Bool("quiet", false, "print only the table (and the progress on stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// A stray word (the table subcommand this command had) would otherwise start a benchmark of
	// many minutes with the defaults.
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (netchan bench table FILE prints stored results)", fs.Args())
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
	o.Progress = printProgress
	return runReport(*out, func(ctx context.Context) (*report.Document, error) {
		d, err := bench.RunNetchannel(ctx, o)
		if d != nil {
			relativeFiles(d, *out)
		}
		return d, err
	})
}

// relativeFiles names a document's files (the profile) relative to dir, where the document is
// stored, as the document format asks.
func relativeFiles(d *report.Document, dir string) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return
	}
	for i, f := range d.Files {
		if !filepath.IsAbs(f) {
			continue
		}
		if rel, err := filepath.Rel(abs, f); err == nil {
			d.Files[i] = rel
		}
	}
}
