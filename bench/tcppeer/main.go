// Command tcppeer compares netchan's TCP stack with gVisor's netstack in one process, side by
// side, through net.Conn.
//
// Each subject is two hosts of one stack (A 198.18.0.1/24 and B 198.18.0.2/24, static ARP to
// each other, MTU 1500) joined by an in-memory wire: two pump goroutines, one per direction,
// copy every frame from one host's transmit side to the other's receive side and lose frames
// at random with a seeded PCG stream (the same seeds for both stacks).
//
//   - netchan: each host is one shard of the production engine (shards.Engine, the same loop
//     as on AF_XDP) running the stack over an in-memory port (runtime/memport). The pump drains
//     one port's tx ring and injects into the other's rx ring; a transmit wakes the pump, as a
//     sendto(2) kick wakes the kernel. The stack's defaults (256 KiB buffers, SACK, timestamps).
//   - gvisor: gvisor.dev/gvisor's netstack (IPv4, ARP with static neighbours, TCP with SACK) on
//     Ethernet over link/channel endpoints; the pump copies each outbound packet into a new
//     packet buffer and injects it into the other stack (so inbound processing runs on the
//     pump, as on a real link endpoint's dispatch goroutine). Buffers sized to the same
//     256 KiB window (see GVisorOptions); -gvisor-defaults keeps gVisor's own.
//
// Tests, both driven through net.Conn/net.Listener (Host.DialTCP/ListenTCP, gonet):
//
//   - bulk: one connection A→B sends -bulk-bytes; from the first write to the receiver's EOF:
//     Gbit/s, and process CPU seconds (getrusage user+sys) per GB (10^9 bytes).
//   - rr: -rr-conns connections each send a -rr-size request and wait for an equal response,
//     in a loop, for -rr-duration after -rr-warmup: transactions/s, CPU µs per transaction,
//     p50 and p99 latency (write of the request to the last byte of the response).
//
// The wire (-wire):
//
//   - pump (default, the harness): one pump goroutine per direction.
//   - inline: no pump; the sender's transmit call delivers (netchan: the shard's Transmit
//     copies into the peer's rx ring, as a copy-mode sendto(2) on veth copies in the sender's
//     system call; gVisor: a channel.Notification injects into the peer in the writing
//     goroutine, as gVisor's link/pipe does).
//
// -loss-dirs ab or ba loses frames in one direction only (bulk data or its ACKs). Flags
// marked EXPERIMENT (-netchan-yield-before-sleep) change how a netchan shard sleeps, to
// measure a proposed change to the shards package; they are not netchan as shipped.
//
// Every run records the process's CPU time (getrusage), the share of the machine that other
// processes took meanwhile (/proc/stat), the wire's counters and both hosts' TCP counters.
//
// Runs go through bench/report's runner: in each of -runs rounds every case (a test at a loss
// setting) runs every stack once, each on a fresh pair, the stacks' order reversed every second
// round; a run in which other processes took more than -max-foreign of the machine is repeated
// (-retries), and a round whose key figure is far from its siblings' median is repeated once and
// left out. -json writes a netchan-bench/1 document (scenario "peer"): its figures are medians
// over the rounds, its ratios netchan/gVisor (of medians, and the median of the per-round
// ratios). The key metric, the one outliers are judged on, is payload Gbit/s, which every case
// has: in rr it is transactions/s × 2 × size × 8, so the check judges rr on its transactions/s
// (the check compares a run with its median, and a fixed factor does not change that ratio).
// The text output (stdout, -txt) is the same figures as one table.
//
// It lives in its own module (bench/tcppeer/go.mod, netchan replaced by ../..) so that gVisor
// never moves the main module's versions. Run it from this directory:
//
//	flock /tmp/netchan-heavy.lock go run . -runs 5 -json /tmp/peer.json
//
// or through `netchan bench peer` from the repository's root, which writes the document to
// bench/results.
//
// and its test (a short verified run of each subject) with `go test .` here; the main module's
// `go test ./...` does not enter this nested module.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netchan/netchan/bench/report"
)

// Options are the command's flags.
type Options struct {
	Runs           int           `json:"runs"`
	Stacks         []string      `json:"stacks"`
	Tests          []string      `json:"tests"`
	Loss           []float64     `json:"loss"`
	Seed           uint64        `json:"seed"`
	BulkBytes      int64         `json:"bulk_bytes"`
	RRConns        int           `json:"rr_conns"`
	RRSize         int           `json:"rr_size"`
	RRWarmup       time.Duration `json:"rr_warmup_ns"`
	RRDuration     time.Duration `json:"rr_duration_ns"`
	RRRate         float64       `json:"rr_rate,omitempty"`
	Timeout        time.Duration `json:"timeout_ns"`
	GVisorDefaults bool          `json:"gvisor_defaults"`
	NetchanSpin    time.Duration `json:"netchan_spin_idle_ns"`
	NetchanMemport bool          `json:"netchan_memport"`
	NetchanYield   bool          `json:"netchan_yield_before_sleep"`
	Wire           string        `json:"wire"`
	LossDirs       string        `json:"loss_dirs"`
	MaxForeign     float64       `json:"max_foreign"`
	Retries        int           `json:"retries"`
	GOMAXPROCS     int           `json:"gomaxprocs"`
	CPUProfile     string        `json:"cpuprofile,omitempty"`
}

// Run is one measurement: the detail of a document's run.
type Run struct {
	Stack   string            `json:"stack"`
	Test    string            `json:"test"`
	Loss    float64           `json:"loss"`
	Round   int               `json:"round"` // 1-based, as the document's
	Seed    uint64            `json:"seed"`
	LoadAvg string            `json:"loadavg_before"`
	Bulk    *BulkResult       `json:"bulk,omitempty"`
	RR      *RRResult         `json:"rr,omitempty"`
	TCP     map[string]uint64 `json:"tcp_counters,omitempty"`
	Profile string            `json:"profile,omitempty"`
	Err     string            `json:"error,omitempty"`
}

func main() {
	var o Options
	var stacks, tests, losses, jsonOut, txtOut string
	var bulkMB int64
	flag.IntVar(&o.Runs, "runs", 5, "rounds; each round runs every stack once per test and loss")
	flag.StringVar(&stacks, "stacks", "netchan,gvisor", "stacks to compare")
	flag.StringVar(&tests, "tests", "bulk,rr", "tests to run")
	flag.StringVar(&losses, "loss", "0,0.01", "comma-separated frame loss probabilities on the wire (each direction)")
	flag.Uint64Var(&o.Seed, "seed", 1, "seed of the loss streams (round r uses seed+r-1, the i-th loss setting seed+1000i more)")
	flag.Int64Var(&bulkMB, "bulk-mb", 256, "bulk transfer size in MiB")
	flag.IntVar(&o.RRConns, "rr-conns", 16, "request/response connections")
	flag.IntVar(&o.RRSize, "rr-size", 128, "request and response size in bytes")
	flag.DurationVar(&o.RRWarmup, "rr-warmup", time.Second, "request/response warm-up (not measured)")
	flag.DurationVar(&o.RRDuration, "rr-duration", 5*time.Second, "request/response measured window")
	flag.Float64Var(&o.RRRate, "rr-rate", 0, "request/response: offered transactions/s over all connections, each connection on its own evenly spaced schedule (0: closed loop, as fast as they go); compares latency at an equal rate")
	flag.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "limit of one bulk run")
	flag.BoolVar(&o.GVisorDefaults, "gvisor-defaults", false, "keep gVisor's own TCP buffer sizes (1 MiB, up to 4 MiB) instead of netchan's 256 KiB window")
	flag.DurationVar(&o.NetchanSpin, "netchan-spin-idle", 0, "the netchan shards' SpinIdle (0: the engine's default, 50µs; negative: no spinning)")
	flag.BoolVar(&o.NetchanMemport, "netchan-memport", false, "run the netchan shards over runtime/memport instead of the wire's own rings (see NetchanOptions.Memport)")
	flag.BoolVar(&o.NetchanYield, "netchan-yield-before-sleep", false, "EXPERIMENT, not netchan as shipped: runtime.Gosched just before a netchan shard sleeps (stands in for a proposed shards change)")
	flag.StringVar(&o.Wire, "wire", "pump", "pump: a pump goroutine per direction copies frames; inline: the sender's transmit call delivers them")
	flag.StringVar(&o.LossDirs, "loss-dirs", "both", "where the loss applies: both, ab (A→B only: bulk data, requests) or ba (B→A only: bulk ACKs, responses)")
	flag.Float64Var(&o.MaxForeign, "max-foreign", 0.10, "a run in which other processes took more than this share of the machine (all CPUs) is contaminated: repeated, and its round stands by its least contaminated attempt")
	flag.IntVar(&o.Retries, "retries", 2, "repeats of a contaminated run (-1: none)")
	flag.StringVar(&o.CPUProfile, "cpuprofile", "", "directory for a CPU profile of every measured window")
	flag.StringVar(&jsonOut, "json", "", "write the report as a netchan-bench/1 document (JSON) to this file")
	flag.StringVar(&txtOut, "txt", "", "also write the tables to this file")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q (every setting is a flag: -h lists them)", flag.Args()))
	}
	o.Stacks = split(stacks)
	o.Tests = split(tests)
	o.BulkBytes = bulkMB << 20
	for _, s := range split(losses) {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < 0 || v >= 1 {
			fail(fmt.Errorf("-loss %q: want probabilities in [0,1)", s))
		}
		o.Loss = append(o.Loss, v)
	}
	if err := o.check(); err != nil {
		fail(err)
	}
	lossDirs = o.LossDirs
	if o.CPUProfile != "" {
		if err := os.MkdirAll(o.CPUProfile, 0o755); err != nil {
			fail(err)
		}
	}
	o.GOMAXPROCS = runtime.GOMAXPROCS(0)
	// An interrupt ends the benchmark after the run in progress; the runs so far are written.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	command := "(cd bench/tcppeer && go run . " + strings.Join(os.Args[1:], " ") + ")"
	doc, err := benchmark(ctx, o, command,
		func(p report.Progress) { fmt.Fprintf(os.Stderr, "tcppeer: %s\n", p) },
		func(r Run) { fmt.Fprintln(os.Stderr, describe(r)) })
	if doc == nil {
		fail(err)
	}
	var out strings.Builder
	printTables(&out, doc)
	fmt.Print(out.String())
	if txtOut != "" {
		if werr := os.WriteFile(txtOut, []byte(out.String()), 0o644); werr != nil {
			fail(errors.Join(err, werr))
		}
	}
	if jsonOut != "" {
		if werr := writeJSON(doc, jsonOut); werr != nil {
			fail(errors.Join(err, werr))
		}
	}
	if err != nil {
		fail(err)
	}
}

func (o Options) check() error {
	if o.Runs <= 0 {
		return fmt.Errorf("-runs %d: want at least one round", o.Runs)
	}
	if len(o.Stacks) == 0 || len(o.Tests) == 0 || len(o.Loss) == 0 {
		return errors.New("-stacks, -tests and -loss each need at least one value")
	}
	for _, s := range o.Stacks {
		if s != "netchan" && s != "gvisor" {
			return fmt.Errorf("-stacks: %q is neither netchan nor gvisor", s)
		}
	}
	for _, t := range o.Tests {
		if t != "bulk" && t != "rr" {
			return fmt.Errorf("-tests: %q is neither bulk nor rr", t)
		}
	}
	if o.Wire != "pump" && o.Wire != "inline" {
		return fmt.Errorf("-wire %q: want pump or inline", o.Wire)
	}
	if o.LossDirs != "both" && o.LossDirs != "ab" && o.LossDirs != "ba" {
		return fmt.Errorf("-loss-dirs %q: want both, ab or ba", o.LossDirs)
	}
	return nil
}

// writeJSON writes doc to path, its profiles named relative to path's directory.
func writeJSON(doc *report.Document, path string) error {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return err
	}
	d := *doc
	d.Files = nil
	for _, f := range doc.Files {
		if a, err := filepath.Abs(f); err == nil {
			if r, err := filepath.Rel(dir, a); err == nil {
				f = r
			}
		}
		d.Files = append(d.Files, f)
	}
	b, err := json.MarshalIndent(&d, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tcppeer:", err)
	os.Exit(2)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// newPair builds a fresh subject.
func newPair(o Options, name string, lossP float64, seed uint64) (Pair, error) {
	switch name {
	case "netchan":
		return newNetchanPair(lossP, seed, NetchanOptions{SpinIdle: o.NetchanSpin, Memport: o.NetchanMemport,
			Inline: o.Wire == "inline", YieldBeforeSleep: o.NetchanYield})
	case "gvisor":
		return newGVisorPair(lossP, seed, GVisorOptions{Defaults: o.GVisorDefaults, Inline: o.Wire == "inline"})
	}
	return nil, fmt.Errorf("no stack %q", name)
}

// runOne measures test on a fresh pair of stack name; attempt > 0 repeats a contaminated or
// outlier run (its own profile file, the same loss stream).
func runOne(o Options, name, test string, lossP float64, round, attempt int, seed uint64) Run {
	run := Run{Stack: name, Test: test, Loss: lossP, Round: round, Seed: seed, LoadAvg: loadAvg()}
	p, err := newPair(o, name, lossP, seed)
	if err != nil {
		run.Err = err.Error()
		return run
	}
	if o.CPUProfile != "" {
		run.Profile = filepath.Join(o.CPUProfile, fmt.Sprintf("%s-%s-loss%g-round%d.pprof", name, test, lossP, round))
		if attempt > 0 {
			run.Profile = strings.TrimSuffix(run.Profile, ".pprof") + fmt.Sprintf("-attempt%d.pprof", attempt)
		}
	}
	switch test {
	case "bulk":
		r, e := RunBulk(p, BulkOptions{Bytes: o.BulkBytes, Timeout: o.Timeout, Profile: run.Profile})
		err = e
		if e == nil {
			run.Bulk = &r
		}
	case "rr":
		r, e := RunRR(p, RROptions{Conns: o.RRConns, Size: o.RRSize, Warmup: o.RRWarmup, Duration: o.RRDuration, Rate: o.RRRate, Profile: run.Profile})
		err = e
		if e == nil {
			run.RR = &r
		}
	}
	run.TCP = p.TCPStats()
	if cerr := p.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	if err != nil {
		run.Err = err.Error()
	}
	return run
}

func describe(r Run) string {
	head := fmt.Sprintf("round %d loss %g %-7s %-4s load %s:", r.Round, r.Loss, r.Stack, r.Test, r.LoadAvg)
	switch {
	case r.Err != "":
		return head + " ERROR " + r.Err
	case r.Bulk != nil:
		b := r.Bulk
		return fmt.Sprintf("%s %.3f Gbit/s, %.3f CPU s/GB, %.2f s, wire %d frames %d lost %d overflow; retransmits %d timeouts %d; others %.0f%%", head, b.Gbps, b.CPUPerGB, b.Seconds, b.Wire.Frames, b.Wire.Lost, b.Wire.Overflow, r.TCP["retransmits"], r.TCP["timeouts"], b.Others*100)
	case r.RR != nil:
		x := r.RR
		return fmt.Sprintf("%s %.0f tx/s, %.2f CPU µs/tx, p50 %.1f µs, p99 %.1f µs, max %.0f µs, wire %d frames %d lost %d overflow; retransmits %d timeouts %d; others %.0f%%", head, x.TPS, x.CPUPerTxUs, x.P50Us, x.P99Us, x.MaxUs, x.Wire.Frames, x.Wire.Lost, x.Wire.Overflow, r.TCP["retransmits"], r.TCP["timeouts"], x.Others*100)
	}
	return head
}

// Metric names of the document.
const (
	mGbps     = "gbps"
	mCPUPerGB = "cpu_s_per_gb"
	mTPS      = "tps"
	mCPUPerTx = "cpu_us_per_transaction"
	mP50      = "p50_us"
	mP99      = "p99_us"
)

var metrics = []report.Metric{
	{Name: mGbps, Unit: "Gbit/s", Better: report.Higher, Key: true,
		About: "payload Gbit/s: bulk, the bytes sent A→B from the first write to the receiver's end of file; rr, requests and responses together (transactions/s × 2 × size × 8), so that every case has the key metric"},
	{Name: mCPUPerGB, Unit: "CPU s/GB", Better: report.Lower, About: "bulk: process CPU seconds (getrusage user+sys) per 10^9 bytes"},
	{Name: mTPS, Unit: "transactions/s", Better: report.Higher, About: "rr: transactions completed in the window per second"},
	{Name: mCPUPerTx, Unit: "CPU µs", Better: report.Lower, About: "rr: process CPU time per transaction"},
	{Name: mP50, Unit: "µs", Better: report.Lower, About: "rr: median latency, the request's write to the response's last byte"},
	{Name: mP99, Unit: "µs", Better: report.Lower, About: "rr: 99th percentile latency"},
}

// figDefs are the rows of the text table, each a metric of one test; each has a ratio
// netchan/gvisor in the document.
var figDefs = []struct{ test, name, metric string }{
	{"bulk", "Gbit/s", mGbps},
	{"bulk", "CPU s/GB", mCPUPerGB},
	{"rr", "transactions/s", mTPS},
	{"rr", "CPU µs/transaction", mCPUPerTx},
	{"rr", "p50 µs", mP50},
	{"rr", "p99 µs", mP99},
}

// peerCase is what a document case stands for.
type peerCase struct {
	test string
	loss float64
	li   int // index of the loss setting (seeds)
}

// caseName names a test at a loss setting: the test alone when there is one setting.
func caseName(o Options, test string, loss float64) string {
	if len(o.Loss) == 1 {
		return test
	}
	return fmt.Sprintf("%s loss %g%%", test, 100*loss)
}

// newDocument is o's grid: a case per loss setting and test (grouped by test, the loss along
// the axis), the stacks as variants, and a ratio netchan/gvisor per figure of the text table,
// with netchan ahead of gVisor as its target.
func newDocument(o Options, command string) (*report.Document, map[string]peerCase, error) {
	d := report.New("peer", command)
	if err := d.SetOptions(o); err != nil {
		return nil, nil, err
	}
	d.Rounds = o.Runs
	d.Variants = slices.Clone(o.Stacks)
	d.Metrics = slices.Clone(metrics)
	d.CaseAxis = "frame loss per direction (share)"
	cases := map[string]peerCase{}
	for li, loss := range o.Loss {
		for _, test := range o.Tests {
			name := caseName(o, test, loss)
			if _, dup := cases[name]; dup {
				return nil, nil, fmt.Errorf("-loss %v: %g given twice", o.Loss, loss)
			}
			cases[name] = peerCase{test: test, loss: loss, li: li}
			d.Cases = append(d.Cases, report.Case{Name: name, Group: test, X: loss})
		}
	}
	d.Setup = []string{
		fmt.Sprintf("one process, two hosts per stack on an in-memory wire (%s), MTU 1500; GOMAXPROCS %d", o.Wire, runtime.GOMAXPROCS(0)),
		fmt.Sprintf("netchan: a shard of shards.Engine per host, spin-idle %v (0 = engine default 50µs), memport %v, yield-before-sleep %v (experiment)", o.NetchanSpin, o.NetchanMemport, o.NetchanYield),
		fmt.Sprintf("gvisor: netstack over link/channel endpoints, gvisor-defaults %v", o.GVisorDefaults),
		fmt.Sprintf("bulk %d MiB over one connection; rr %d conns × %d B for %v after %v warm-up; loss %v in %s direction(s), seed %d",
			o.BulkBytes>>20, o.RRConns, o.RRSize, o.RRDuration, o.RRWarmup, o.Loss, o.LossDirs, o.Seed),
	}
	if o.RRRate > 0 {
		d.Setup = append(d.Setup, fmt.Sprintf("rr paced: %.0f transactions/s offered over all connections (each connection on its own schedule)", o.RRRate))
	}
	if slices.Contains(o.Stacks, "netchan") && slices.Contains(o.Stacks, "gvisor") {
		for _, c := range d.Cases {
			for _, f := range figDefs {
				if f.test != cases[c.Name].test {
					continue
				}
				t := &report.Target{Op: ">=", Value: 1}
				if d.Metric(f.metric).Better == report.Lower {
					t.Op = "<="
				}
				d.Ratios = append(d.Ratios, report.Ratio{Name: f.metric + " netchan/gvisor", Case: c.Name, Metric: f.metric,
					Num: "netchan", Den: "gvisor", Target: t})
			}
		}
	}
	return d, cases, nil
}

// toRun is r as the document's run: its figures, the other processes' share of the machine
// (contaminated above maxForeign), its error, and r itself as the detail.
func toRun(r Run, maxForeign float64) (report.Run, error) {
	detail, err := json.Marshal(r)
	if err != nil {
		return report.Run{}, err
	}
	run := report.Run{Values: map[string]float64{}, Err: r.Err, Loadavg: r.LoadAvg, Detail: detail}
	switch {
	case r.Bulk != nil:
		b := r.Bulk
		run.Values[mGbps], run.Values[mCPUPerGB], run.Foreign = b.Gbps, b.CPUPerGB, b.Others
	case r.RR != nil:
		x := r.RR
		run.Values[mGbps] = x.TPS * 2 * float64(x.Size) * 8 / 1e9
		run.Values[mTPS], run.Values[mCPUPerTx], run.Values[mP50], run.Values[mP99] = x.TPS, x.CPUPerTxUs, x.P50Us, x.P99Us
		run.Latency, run.Foreign = x.Latency, x.Others
	case r.Err == "":
		run.Err = "the run measured nothing"
	}
	run.Contaminated = run.Foreign > maxForeign
	return run, nil
}

// benchmark runs o's grid through report's runner and returns the summarised document (with
// the runs so far on an error or ctx's end). progress hears of each run before it starts,
// done of each run's measurement.
func benchmark(ctx context.Context, o Options, command string, progress func(report.Progress), done func(Run)) (*report.Document, error) {
	doc, cases, err := newDocument(o, command)
	if err != nil {
		return nil, err
	}
	err = doc.Execute(ctx, report.Plan{
		Retries:  o.Retries,
		Progress: progress,
		Measure: func(ctx context.Context, t report.Trial) (report.Run, error) {
			c := cases[t.Case.Name]
			r := runOne(o, t.Variant, c.test, c.loss, t.Round, t.Attempt, o.Seed+uint64(t.Round-1)+uint64(c.li)*1000)
			if done != nil {
				done(r)
			}
			if _, err := os.Stat(r.Profile); r.Profile != "" && err == nil {
				doc.Files = append(doc.Files, r.Profile)
			}
			return toRun(r, o.MaxForeign)
		},
	})
	return doc, err
}

// printTables writes the document as the command's text: what ran, one row per figure with
// both stacks' medians and the ratios, the flags, and every run.
func printTables(w io.Writer, d *report.Document) {
	var o Options
	json.Unmarshal(d.Options, &o)
	// runs[i] is the record of d.Runs[i] (the zero Run where a detail does not decode).
	runs := make([]Run, len(d.Runs))
	for i, r := range d.Runs {
		json.Unmarshal(r.Detail, &runs[i])
	}
	fmt.Fprintf(w, "# tcppeer: netchan TCP vs gVisor netstack, one process, in-memory wire\n\n")
	fmt.Fprintf(w, "command: %s\n", d.Command)
	fmt.Fprintf(w, "started %s, finished %s, %s, %d CPUs, GOMAXPROCS %d\n", d.Started.Format(time.RFC3339), d.Finished.Format(time.RFC3339), d.Machine.GoVersion, d.Machine.CPUs, o.GOMAXPROCS)
	fmt.Fprintf(w, "wire %s; netchan: spin-idle %v (0 = engine default 50µs), memport %v, yield-before-sleep %v (experiment)\n", o.Wire, o.NetchanSpin, o.NetchanMemport, o.NetchanYield)
	fmt.Fprintf(w, "runs %d per figure (interleaved), bulk %d MiB, rr %d conns × %d B for %v after %v warm-up, loss %v, seed %d, gvisor-defaults %v\n",
		o.Runs, o.BulkBytes>>20, o.RRConns, o.RRSize, o.RRDuration, o.RRWarmup, o.Loss, o.Seed, o.GVisorDefaults)
	if o.LossDirs != "both" {
		fmt.Fprintf(w, "loss in one direction only: %s\n", o.LossDirs)
	}
	if o.RRRate > 0 {
		fmt.Fprintf(w, "rr paced: %.0f transactions/s offered over all connections (each connection on its own schedule)\n", o.RRRate)
	}
	var loads []string
	for _, r := range runs {
		if f := strings.Fields(r.LoadAvg); len(f) > 0 {
			loads = append(loads, f[0])
		}
	}
	if len(loads) > 0 {
		fmt.Fprintf(w, "1-min load average before each run (this process included once it runs): %s\n", strings.Join(loads, " "))
	}
	var others []string
	for _, r := range runs {
		switch {
		case r.Bulk != nil:
			others = append(others, fmt.Sprintf("%.0f", r.Bulk.Others*100))
		case r.RR != nil:
			others = append(others, fmt.Sprintf("%.0f", r.RR.Others*100))
		}
	}
	if len(others) > 0 {
		fmt.Fprintf(w, "other processes' share of the machine during each measured window, %%: %s\n", strings.Join(others, " "))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| loss | test | figure | better | netchan median (min–max) | gVisor median (min–max) | netchan/gVisor | paired by round | netchan ahead |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range d.Cases {
		for _, f := range figDefs {
			if f.test != c.Group {
				continue
			}
			cell := func(st string) string {
				fig := d.Figure(c.Name, st)
				if fig == nil || len(fig.Stats[f.metric].Values) == 0 {
					return "–"
				}
				s := fig.Stats[f.metric]
				return fmt.Sprintf("%s (%s–%s, n=%d)", num(s.Median), num(s.Min), num(s.Max), len(s.Values))
			}
			ratio, paired, ahead := 0.0, 0.0, "–"
			if r := d.Ratio(c.Name, f.metric+" netchan/gvisor"); r != nil && r.Met != nil {
				ratio, paired, ahead = r.OfMedians, r.Paired, "no"
				if *r.Met && r.OfMedians != 1 {
					ahead = "yes"
				}
			}
			better := "higher"
			if m := d.Metric(f.metric); m != nil && m.Better == report.Lower {
				better = "lower"
			}
			fmt.Fprintf(w, "| %g%% | %s | %s | %s | %s | %s | %.2f | %.2f | %s |\n", c.X*100, f.test, f.name, better, cell("netchan"), cell("gvisor"), ratio, paired, ahead)
		}
	}
	if len(d.Flags) > 0 {
		fmt.Fprintf(w, "\nflags:\n")
		for _, f := range d.Flags {
			fmt.Fprintln(w, "  "+f)
		}
	}
	var errs []string
	for _, r := range runs {
		if r.Err != "" {
			errs = append(errs, describe(r))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(w, "\nfailed runs (left out of the figures):\n")
		for _, e := range errs {
			fmt.Fprintln(w, "  "+e)
		}
	}
	fmt.Fprintf(w, "\nruns:\n")
	for i, r := range runs {
		mark := ""
		switch dr := d.Runs[i]; {
		case dr.Outlier != "":
			mark = " [outlier: " + dr.Outlier + "]"
		case dr.Contaminated && dr.Used:
			mark = " [contaminated; no cleaner attempt]"
		case dr.Contaminated:
			mark = " [contaminated; another attempt stands]"
		}
		fmt.Fprintln(w, "  "+describe(r)+mark)
	}
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
