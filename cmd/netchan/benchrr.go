package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/netchan/netchan/bench"
	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/runtime/trafficgen"
)

const benchRRUsage = `netchan bench tcp-rr [flags]   (also: netchan bench rr)

TCP request/response over a lab veth, side by side in one run: a Go client on kernel sockets in
the peer namespace (--conns connections, each --size bytes out and --size bytes back in a loop,
every byte checked) against netchan's TCP echo (echo.NewEcho through netchan.Start, AF_XDP, no
kernel address on the interface) and against a Go echo server on kernel sockets on the same
veth; in both the server process is confined to --server-cpus for the run. Interleaved rounds,
medians. Figures: transactions/s, CPU per transaction (the whole machine's, the server
process's, the server cores', the client's), latency p50/p99. Progress goes to stderr; the
document (netchan-bench/1) to --out/tcp-rr-DATE-TIME.json with the command that made it
(netchan bench table shows it again).
`

// cmdBenchRR runs `netchan bench tcp-rr`; the same command, re-executed in the lab's peer
// namespace with bench.RRClientEnv set, is the client.
func init() {
	benchCommands["tcp-rr"] = benchCommand{run: cmdBenchRR, order: 30,
		about: "TCP request/response: netchan's echo vs a Go echo on kernel sockets",
		all:   []string{"--runs", "3", "--warmup", "500ms", "--duration", "3s", "--quiet-wait", "5s", "--retries", "1", "--quiet"}}
	benchCommands["rr"] = benchCommand{run: cmdBenchRR, order: 31, about: "the same as tcp-rr"}
}

func cmdBenchRR(args []string) error {
	bench.RunRRClientIfAsked(args)
	fs := flag.NewFlagSet("bench tcp-rr", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, benchRRUsage); fs.PrintDefaults() }
	var o bench.RROptions
	fs.IntVar(&o.Runs, "runs", 5, "rounds; each runs every variant once, the order reversed every second round")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "transactions before the measured window")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "measured window of each run")
	fs.IntVar(&o.Conns, "conns", 16, "client connections")
	fs.IntVar(&o.Size, "size", 128, "bytes per request and per response")
	fs.IntVar(&o.Queues, "queues", 1, "veth queues (netchan: one shard each)")
	fs.IntVar(&o.ClientCPU, "client-cpu", 0, "pin the client to this CPU (-1: not pinned)")
	serverCPUs := fs.String("server-cpus", "", "CPUs of the server process and netchan's shards (default: the first CPU that is not --client-cpu)")
	fs.IntVar(&o.GOMAXPROCS, "gomaxprocs", 0, "the server process's GOMAXPROCS during a run (0: one per server CPU, as a process started on them gets)")
	fs.DurationVar(&o.SpinIdle, "spin-idle", 0, "netchan's shards spin this long without work before poll(2) (0: the shards' default, 50us, as netchan echo runs)")
	variants := fs.String("variants", "netchan,kernel", "netchan, kernel or both")
	fs.Float64Var(&o.MaxForeign, "max-foreign", 0.05, "a run in which other processes took more than this share of the machine is contaminated: repeated, and its round stands by its least contaminated attempt")
	fs.IntVar(&o.Retries, "retries", 2, "repeats of a contaminated run (-1: none)")
	fs.DurationVar(&o.QuietWait, "quiet-wait", 30*time.Second, "before every run, wait up to this long for a second in which the machine is less than --max-foreign busy (negative: do not wait)")
	fs.StringVar(&o.Profile, "profile", "", "after the rounds, one more netchan run with a CPU profile (pprof) of the netchan process over its window, written to this file")
	out := fs.String("out", "bench/results", "directory for the JSON document")
	quiet := fs.Bool("quiet", false, "print only the table (progress still goes to stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench tcp-rr: unexpected arguments %q (netchan bench table shows stored documents)", fs.Args())
	}
	if *serverCPUs != "" {
		cpus, err := trafficgen.ParseCPUList(*serverCPUs)
		if err != nil {
			return fmt.Errorf("--server-cpus: %w", err)
		}
		o.ServerCPUs = cpus
	}
	o.Variants = strings.Split(*variants, ",")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Client = []string{exe, "bench", "tcp-rr"}
	o.Command = strings.TrimSpace("netchan bench tcp-rr " + strings.Join(args, " "))
	o.Progress = printProgress
	if !*quiet {
		o.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	}
	return runReport(*out, func(ctx context.Context) (*report.Document, error) { return bench.RunRR(ctx, o) })
}
