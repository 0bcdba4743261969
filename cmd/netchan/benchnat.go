package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/netchan/netchan/bench/natbench"
)

const benchNATUsage = `netchan bench nat [flags]

UDP packets/s through a NAT on one core, side by side in one run: netchan's NAT (nat.New on
shards, AF_XDP; variant netchan-xdp with its XDP fast path on) against Linux forwarding with
iptables MASQUERADE and conntrack in a router namespace, same generator and receiver,
interleaved rounds, medians. Phases: max (generator at full speed: packets/s delivered to the
server), rate (AF_XDP generator at --rate: the NAT gets skbs; NAT-core CPU per packet) and
xdp-rate (XDP generator paced at --rate: the NAT gets XDP frames, as from a NIC). The generator
runs on --gen-cpu; the NAT (netchan's shard and NAPI threads, or the router's NAPI thread) on
--nat-cpu. Results go to --out/nat-DATE.json with the command.
`

// cmdBenchNAT runs `netchan bench nat`.
func init() {
	benchCommands["nat"] = benchCommand{run: cmdBenchNAT, order: 20,
		about: "netchan's NAT (and its XDP fast path) vs Linux MASQUERADE, one NAT core"}
}

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
	variants := fs.String("variants", "netchan,linux", "comma-separated: netchan, netchan-xdp (the NAT's XDP fast path on), linux")
	phases := fs.String("phases", "max,rate", "comma-separated: max, rate (AF_XDP generator at --rate: skbs), xdp-rate (live-frame XDP generator paced at --rate: XDP frames, as from a NIC)")
	fs.StringVar(&o.Profile, "profile", "", "write a CPU profile (pprof) of the first netchan max run's window to this file")
	out := fs.String("out", "bench/results", "directory for the JSON results")
	quiet := fs.Bool("quiet", false, "print only the table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Variants = strings.Split(*variants, ",")
	o.Phases = strings.Split(*phases, ",")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Generator = []string{exe, "lab", "send"}
	o.Command = "netchan bench nat " + strings.Join(args, " ")
	if !*quiet {
		o.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := natbench.Run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Print(rep.Table())
	path, err := rep.Write(*out)
	if err != nil {
		return err
	}
	fmt.Println("results:", path)
	return nil
}
