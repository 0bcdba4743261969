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
// Runs are interleaved (round r runs netchan then gvisor, round r+1 the other way round), each
// on a fresh pair; the figures are medians over -runs rounds, and ratios are netchan/gVisor
// (of medians, and the median of the per-round ratios).
//
// It lives in its own module (bench/tcppeer/go.mod, netchan replaced by ../..) so that gVisor
// never moves the main module's versions. Run it from this directory:
//
//	flock /tmp/netchan-heavy.lock go run . -runs 5 -json ../results/tcppeer.json
//
// and its test (a short verified run of each subject) with `go test .` here; the main module's
// `go test ./...` does not enter this nested module.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netchan/netchan/bench/stats"
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
	GOMAXPROCS     int           `json:"gomaxprocs"`
	CPUProfile     string        `json:"cpuprofile,omitempty"`
}

// Run is one measurement.
type Run struct {
	Stack   string            `json:"stack"`
	Test    string            `json:"test"`
	Loss    float64           `json:"loss"`
	Round   int               `json:"round"`
	Seed    uint64            `json:"seed"`
	LoadAvg string            `json:"loadavg_before"`
	Bulk    *BulkResult       `json:"bulk,omitempty"`
	RR      *RRResult         `json:"rr,omitempty"`
	TCP     map[string]uint64 `json:"tcp_counters,omitempty"`
	Err     string            `json:"error,omitempty"`
}

// Figure is one row of the summary.
type Figure struct {
	Test        string             `json:"test"`
	Loss        float64            `json:"loss"`
	Name        string             `json:"figure"`
	Better      string             `json:"better"` // "higher" or "lower"
	Median      map[string]float64 `json:"median"`
	Min         map[string]float64 `json:"min"`
	Max         map[string]float64 `json:"max"`
	N           map[string]int     `json:"n"`
	Ratio       float64            `json:"ratio_netchan_gvisor"`
	PairedRatio float64            `json:"paired_ratio_netchan_gvisor"`
	Ahead       bool               `json:"netchan_ahead"`
}

// Report is what -json writes.
type Report struct {
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Go       string    `json:"go"`
	CPUs     int       `json:"cpus"`
	Options  Options   `json:"options"`
	Runs     []Run     `json:"runs"`
	Figures  []Figure  `json:"figures"`
}

func main() {
	var o Options
	var stacks, tests, losses, jsonOut, txtOut string
	var bulkMB int64
	flag.IntVar(&o.Runs, "runs", 5, "rounds; each round runs every stack once per test and loss")
	flag.StringVar(&stacks, "stacks", "netchan,gvisor", "stacks to compare")
	flag.StringVar(&tests, "tests", "bulk,rr", "tests to run")
	flag.StringVar(&losses, "loss", "0,0.01", "comma-separated frame loss probabilities on the wire (each direction)")
	flag.Uint64Var(&o.Seed, "seed", 1, "seed of the loss streams (round r uses seed+r)")
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
	flag.StringVar(&o.CPUProfile, "cpuprofile", "", "directory for a CPU profile of every measured window")
	flag.StringVar(&jsonOut, "json", "", "write the report as JSON to this file")
	flag.StringVar(&txtOut, "txt", "", "also write the tables to this file")
	flag.Parse()
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
	for _, s := range o.Stacks {
		if s != "netchan" && s != "gvisor" {
			fail(fmt.Errorf("-stacks: %q is neither netchan nor gvisor", s))
		}
	}
	for _, t := range o.Tests {
		if t != "bulk" && t != "rr" {
			fail(fmt.Errorf("-tests: %q is neither bulk nor rr", t))
		}
	}
	if o.Wire != "pump" && o.Wire != "inline" {
		fail(fmt.Errorf("-wire %q: want pump or inline", o.Wire))
	}
	if o.LossDirs != "both" && o.LossDirs != "ab" && o.LossDirs != "ba" {
		fail(fmt.Errorf("-loss-dirs %q: want both, ab or ba", o.LossDirs))
	}
	lossDirs = o.LossDirs
	if o.CPUProfile != "" {
		if err := os.MkdirAll(o.CPUProfile, 0o755); err != nil {
			fail(err)
		}
	}
	o.GOMAXPROCS = runtime.GOMAXPROCS(0)
	rep := &Report{Command: strings.Join(os.Args, " "), Started: time.Now().UTC(), Go: runtime.Version(), CPUs: runtime.NumCPU(), Options: o}
	for li, lossP := range o.Loss {
		for r := range o.Runs {
			order := slices.Clone(o.Stacks)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, test := range o.Tests {
				for _, st := range order {
					run := runOne(o, st, test, lossP, r, o.Seed+uint64(r)+uint64(li)*1000)
					fmt.Fprintln(os.Stderr, describe(run))
					rep.Runs = append(rep.Runs, run)
				}
			}
		}
	}
	rep.Finished = time.Now().UTC()
	rep.Figures = summarize(o, rep.Runs)
	var out strings.Builder
	printTables(&out, rep)
	fmt.Print(out.String())
	if txtOut != "" {
		if err := os.WriteFile(txtOut, []byte(out.String()), 0o644); err != nil {
			fail(err)
		}
	}
	if jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			fail(err)
		}
		if err := os.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
			fail(err)
		}
	}
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

func runOne(o Options, name, test string, lossP float64, round int, seed uint64) Run {
	run := Run{Stack: name, Test: test, Loss: lossP, Round: round, Seed: seed, LoadAvg: loadAvg()}
	p, err := newPair(o, name, lossP, seed)
	if err != nil {
		run.Err = err.Error()
		return run
	}
	prof := ""
	if o.CPUProfile != "" {
		prof = filepath.Join(o.CPUProfile, fmt.Sprintf("%s-%s-loss%g-round%d.pprof", name, test, lossP, round))
	}
	switch test {
	case "bulk":
		r, e := RunBulk(p, BulkOptions{Bytes: o.BulkBytes, Timeout: o.Timeout, Profile: prof})
		err = e
		if e == nil {
			run.Bulk = &r
		}
	case "rr":
		r, e := RunRR(p, RROptions{Conns: o.RRConns, Size: o.RRSize, Warmup: o.RRWarmup, Duration: o.RRDuration, Rate: o.RRRate, Profile: prof})
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

type figDef struct {
	test, name, better string
	get                func(Run) (float64, bool)
}

var figDefs = []figDef{
	{"bulk", "Gbit/s", "higher", func(r Run) (float64, bool) { return ifBulk(r, func(b *BulkResult) float64 { return b.Gbps }) }},
	{"bulk", "CPU s/GB", "lower", func(r Run) (float64, bool) { return ifBulk(r, func(b *BulkResult) float64 { return b.CPUPerGB }) }},
	{"rr", "transactions/s", "higher", func(r Run) (float64, bool) { return ifRR(r, func(x *RRResult) float64 { return x.TPS }) }},
	{"rr", "CPU µs/transaction", "lower", func(r Run) (float64, bool) { return ifRR(r, func(x *RRResult) float64 { return x.CPUPerTxUs }) }},
	{"rr", "p50 µs", "lower", func(r Run) (float64, bool) { return ifRR(r, func(x *RRResult) float64 { return x.P50Us }) }},
	{"rr", "p99 µs", "lower", func(r Run) (float64, bool) { return ifRR(r, func(x *RRResult) float64 { return x.P99Us }) }},
}

func ifBulk(r Run, f func(*BulkResult) float64) (float64, bool) {
	if r.Bulk == nil {
		return 0, false
	}
	return f(r.Bulk), true
}

func ifRR(r Run, f func(*RRResult) float64) (float64, bool) {
	if r.RR == nil {
		return 0, false
	}
	return f(r.RR), true
}

func summarize(o Options, runs []Run) []Figure {
	var out []Figure
	for _, lossP := range o.Loss {
		for _, d := range figDefs {
			if !slices.Contains(o.Tests, d.test) {
				continue
			}
			f := Figure{Test: d.test, Loss: lossP, Name: d.name, Better: d.better, Median: map[string]float64{},
				Min: map[string]float64{}, Max: map[string]float64{}, N: map[string]int{}}
			byRound := map[int]map[string]float64{}
			for _, st := range o.Stacks {
				var vals []float64
				for _, r := range runs {
					if r.Stack != st || r.Test != d.test || r.Loss != lossP {
						continue
					}
					if v, ok := d.get(r); ok {
						vals = append(vals, v)
						if byRound[r.Round] == nil {
							byRound[r.Round] = map[string]float64{}
						}
						byRound[r.Round][st] = v
					}
				}
				f.N[st] = len(vals)
				if len(vals) > 0 {
					f.Median[st], f.Min[st], f.Max[st] = stats.Median(vals), slices.Min(vals), slices.Max(vals)
				}
			}
			if n, g := f.Median["netchan"], f.Median["gvisor"]; g != 0 {
				f.Ratio = n / g
				var paired []float64
				for _, m := range byRound {
					if a, ok := m["netchan"]; ok {
						if b, ok := m["gvisor"]; ok && b != 0 {
							paired = append(paired, a/b)
						}
					}
				}
				f.PairedRatio = stats.Median(paired)
				if d.better == "higher" {
					f.Ahead = f.Ratio > 1
				} else {
					f.Ahead = f.Ratio < 1
				}
			}
			out = append(out, f)
		}
	}
	return out
}

func printTables(w io.Writer, rep *Report) {
	o := rep.Options
	fmt.Fprintf(w, "# tcppeer: netchan TCP vs gVisor netstack, one process, in-memory wire\n\n")
	fmt.Fprintf(w, "command: %s\n", rep.Command)
	fmt.Fprintf(w, "started %s, finished %s, %s, %d CPUs, GOMAXPROCS %d\n", rep.Started.Format(time.RFC3339), rep.Finished.Format(time.RFC3339), rep.Go, rep.CPUs, o.GOMAXPROCS)
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
	for _, r := range rep.Runs {
		if f := strings.Fields(r.LoadAvg); len(f) > 0 {
			loads = append(loads, f[0])
		}
	}
	if len(loads) > 0 {
		fmt.Fprintf(w, "1-min load average before each run (this process included once it runs): %s\n", strings.Join(loads, " "))
	}
	var others []string
	for _, r := range rep.Runs {
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
	for _, f := range rep.Figures {
		cell := func(st string) string {
			if f.N[st] == 0 {
				return "–"
			}
			return fmt.Sprintf("%s (%s–%s, n=%d)", num(f.Median[st]), num(f.Min[st]), num(f.Max[st]), f.N[st])
		}
		ahead := "no"
		if f.Ahead {
			ahead = "yes"
		}
		if f.Ratio == 0 {
			ahead = "–"
		}
		fmt.Fprintf(w, "| %g%% | %s | %s | %s | %s | %s | %.2f | %.2f | %s |\n", f.Loss*100, f.Test, f.Name, f.Better, cell("netchan"), cell("gvisor"), f.Ratio, f.PairedRatio, ahead)
	}
	var errs []string
	for _, r := range rep.Runs {
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
	for _, r := range rep.Runs {
		fmt.Fprintln(w, "  "+describe(r))
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
