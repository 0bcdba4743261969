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

const benchHTTPUsage = `netchan bench http [flags]

HTTP on one server core, side by side in one run: wrk in a lab's peer namespace (--conns
connections, GET of a --size-byte body) against net/http serving the echo handler on netchan's
stack (netchan's net.Listener through netchan.Start, AF_XDP, no kernel address on the
interface) and against net/http on kernel sockets on the same veth. In both the server process
and the server end's NAPI thread are confined to --server-cpus, wrk and the peer's NAPI thread
to --client-cpu. Interleaved rounds, medians. Figures: requests/s, server-core CPU per request
(/proc/stat), the whole machine's and the client core's, wrk's latency p50/p99; a run with any
wrk error stands for nothing. Ratios netchan/kernel with issue 20's targets (requests/s >= 1.5,
server CPU per request <= 0.7). Progress goes to stderr; the document (netchan-bench/1) to
--out/http-DATE-TIME.json with the command that made it.
`

func init() {
	benchCommands["http"] = benchCommand{run: cmdBenchHTTP, order: 35,
		about: "wrk against net/http on netchan's stack vs on kernel sockets, one server core",
		all:   []string{"--runs", "3", "--warmup", "1s", "--duration", "3s", "--quiet-wait", "5s", "--retries", "1", "--quiet"}}
}

// cmdBenchHTTP runs `netchan bench http`.
func cmdBenchHTTP(args []string) error {
	fs := flag.NewFlagSet("bench http", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, benchHTTPUsage); fs.PrintDefaults() }
	var o bench.HTTPOptions
	fs.IntVar(&o.Runs, "runs", 5, "rounds; each runs every variant once, the order reversed every second round")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "wrk run before the measured one (whole seconds)")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "measured wrk run (whole seconds)")
	fs.IntVar(&o.Conns, "conns", 64, "wrk's connections")
	fs.IntVar(&o.Threads, "threads", 1, "wrk's threads")
	fs.IntVar(&o.Size, "size", 128, "body bytes of each response (GET /bytes/SIZE)")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Second, "wrk's --timeout: a slower response counts as an error (whole seconds)")
	fs.IntVar(&o.Queues, "queues", 1, "veth queues (netchan: one shard each)")
	fs.IntVar(&o.ClientCPU, "client-cpu", 0, "wrk's CPU and the peer NAPI thread's (-1: not pinned)")
	serverCPUs := fs.String("server-cpus", "", "CPUs of the server process, netchan's shards and the server end's NAPI thread (default: the first CPU that is not --client-cpu)")
	fs.IntVar(&o.GOMAXPROCS, "gomaxprocs", 0, "the server process's GOMAXPROCS during a run (0: one per server CPU, as a process started on them gets)")
	fs.DurationVar(&o.SpinIdle, "spin-idle", 0, "netchan's shards spin this long without work before they sleep (0: the shards' default, 50us, as netchan echo runs)")
	variants := fs.String("variants", "netchan,kernel", "netchan, kernel or both")
	fs.Float64Var(&o.MaxForeign, "max-foreign", 0.05, "a run in which other processes took more than this share of the machine is contaminated: repeated, and its round stands by its least contaminated attempt")
	fs.IntVar(&o.Retries, "retries", 2, "repeats of a contaminated run (-1: none)")
	fs.DurationVar(&o.QuietWait, "quiet-wait", 30*time.Second, "before every run, wait up to this long for a second in which the machine is less than --max-foreign busy (negative: do not wait)")
	fs.StringVar(&o.Wrk, "wrk", "wrk", "the wrk program")
	out := fs.String("out", "bench/results", "directory for the JSON document")
	quiet := fs.Bool("quiet", false, "print only the table (progress still goes to stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench http: unexpected arguments %q", fs.Args())
	}
	if *serverCPUs != "" {
		cpus, err := trafficgen.ParseCPUList(*serverCPUs)
		if err != nil {
			return fmt.Errorf("--server-cpus: %w", err)
		}
		o.ServerCPUs = cpus
	}
	o.Variants = strings.Split(*variants, ",")
	o.Command = strings.TrimSpace("netchan bench http " + strings.Join(args, " "))
	o.Progress = printProgress
	if !*quiet {
		o.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	}
	return runReport(*out, func(ctx context.Context) (*report.Document, error) { return bench.RunHTTP(ctx, o) })
}
