package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// httpPort is where both variants serve HTTP (echo.Echo's port).
const httpPort = 80

// HTTPOptions describe `netchan bench http`.
type HTTPOptions struct {
	Runs int `json:"runs"` // rounds; each runs every variant once (default 5)
	// Warmup is a wrk run before the measured one (default 1s); Duration the measured run
	// (default 5s). wrk counts whole seconds: both are rounded up to them.
	Warmup   time.Duration `json:"warmup_ns"`
	Duration time.Duration `json:"duration_ns"`
	Conns    int           `json:"conns"`       // wrk's connections (default 64)
	Threads  int           `json:"wrk_threads"` // wrk's threads (default 1: it has one core)
	Size     int           `json:"size"`        // body bytes of GET /bytes/Size (default 128)
	// Timeout is wrk's --timeout (default 2s, whole seconds): a response slower than it
	// counts as a timeout error.
	Timeout time.Duration `json:"wrk_timeout_ns"`
	Queues  int           `json:"queues"` // veth queues, one shard each (default 1)
	// ClientCPU holds wrk and the NAPI thread of the peer's veth end (default 0; -1: neither
	// pinned).
	ClientCPU int `json:"client_cpu"`
	// ServerCPUs hold the server: every thread of the server process (this one) for the
	// length of each run, netchan's shards, and the NAPI thread of the server's veth end;
	// default: the first CPU that is not ClientCPU.
	ServerCPUs []int `json:"server_cpus"`
	// GOMAXPROCS is the server process's during a run; 0: one per server CPU, what a process
	// started on those CPUs gets.
	GOMAXPROCS int `json:"gomaxprocs"`
	// SpinIdle is the shards' spin before they sleep; 0: the shards' default (50µs), as
	// `netchan echo` runs.
	SpinIdle time.Duration `json:"spin_idle_ns"`
	Variants []string      `json:"variants"` // default netchan, kernel
	// MaxForeign, Retries and QuietWait: as RROptions' (defaults 0.05, 2, 30s).
	MaxForeign float64       `json:"max_foreign"`
	Retries    int           `json:"retries"`
	QuietWait  time.Duration `json:"quiet_wait_ns"`
	Wrk        string        `json:"wrk"` // the wrk program (default: wrk on PATH)
	LabName    string        `json:"lab"`
	Command    string        `json:"command"`
	// Logf hears one line per run with its figures and counters; Progress where the
	// benchmark stands before each run (report.Plan.Progress).
	Logf     func(string, ...any)  `json:"-"`
	Progress func(report.Progress) `json:"-"`
}

// wholeSeconds rounds d up to whole seconds, at least one.
func wholeSeconds(d time.Duration) time.Duration {
	return max(time.Second, time.Duration(math.Ceil(d.Seconds()))*time.Second)
}

func (o *HTTPOptions) defaults() error {
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.Warmup <= 0 {
		o.Warmup = time.Second
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	o.Warmup, o.Duration, o.Timeout = wholeSeconds(o.Warmup), wholeSeconds(o.Duration), wholeSeconds(o.Timeout)
	if o.Conns <= 0 {
		o.Conns = 64
	}
	if o.Threads <= 0 {
		o.Threads = 1
	}
	if o.Threads > o.Conns {
		return fmt.Errorf("bench http: %d wrk threads for %d connections: wrk wants at least one connection per thread", o.Threads, o.Conns)
	}
	if o.Size == 0 {
		o.Size = 128
	}
	if o.Size < 0 || o.Size > 1<<20 {
		return fmt.Errorf("bench http: size %d: want 0..1048576 bytes", o.Size)
	}
	if o.Queues <= 0 {
		o.Queues = 1
	}
	cpus, err := machineCPUs()
	if err != nil {
		return err
	}
	if o.ServerCPUs, err = serverCPUs(cpus, o.ClientCPU, o.ServerCPUs); err != nil {
		return fmt.Errorf("bench http: %w", err)
	}
	if len(o.Variants) == 0 {
		o.Variants = []string{Netchan, Kernel}
	}
	for _, v := range o.Variants {
		if v != Netchan && v != Kernel {
			return fmt.Errorf("bench http: variant %q: want %s or %s", v, Netchan, Kernel)
		}
	}
	if o.MaxForeign == 0 {
		o.MaxForeign = 0.05
	}
	if o.Retries == 0 {
		o.Retries = 2
	}
	if o.QuietWait == 0 {
		o.QuietWait = 30 * time.Second
	}
	if o.Wrk == "" {
		o.Wrk = "wrk"
	}
	if o.LabName == "" {
		o.LabName = randomName("nch")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// WrkResult is what wrk's report says (wrk --latency).
type WrkResult struct {
	Requests uint64        `json:"requests"`
	Duration time.Duration `json:"duration_ns"` // wrk's own run time
	RPS      float64       `json:"requests_per_s"`
	// Latency of the requests (wrk's thread stats: mean, standard deviation, maximum) and its
	// percentiles (50, 75, 90, 99 as P 0.5 ... 0.99), in microseconds.
	MeanUs      float64           `json:"mean_us"`
	StdevUs     float64           `json:"stdev_us"`
	MaxUs       float64           `json:"max_us"`
	Percentiles []report.Quantile `json:"percentiles"`
	// Socket errors (wrk prints the line only when one is not zero) and responses with a
	// status of 400 or more (wrk's "Non-2xx or 3xx responses").
	Connect uint64 `json:"connect_errors,omitempty"`
	Read    uint64 `json:"read_errors,omitempty"`
	Write   uint64 `json:"write_errors,omitempty"`
	Timeout uint64 `json:"timeouts,omitempty"`
	Non2xx  uint64 `json:"non_2xx,omitempty"`
}

// Errors is every error wrk counted.
func (w WrkResult) Errors() uint64 { return w.Connect + w.Read + w.Write + w.Timeout + w.Non2xx }

// Percentile is wrk's p-th percentile (0..100) in microseconds, and whether wrk printed it.
func (w WrkResult) Percentile(p float64) (float64, bool) {
	for _, q := range w.Percentiles {
		if q.P == p/100 {
			return q.Micros, true
		}
	}
	return 0, false
}

var (
	wrkRequestsRE   = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)\b`)
	wrkLatencyRE    = regexp.MustCompile(`(?m)^\s*Latency\s+([0-9.]+)(us|ms|s|m|h)\s+([0-9.]+)(us|ms|s|m|h)\s+([0-9.]+)(us|ms|s|m|h)`)
	wrkPercentileRE = regexp.MustCompile(`(?m)^\s*([0-9.]+)%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	wrkSocketRE     = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xxRE     = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkRateRE       = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
)

// wrkMicros reads a number with wrk's time unit as microseconds.
func wrkMicros(num, unit string) float64 {
	f, _ := strconv.ParseFloat(num, 64)
	return f * map[string]float64{"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}[unit]
}

// parseWrk reads wrk's report. The request count is required; with --latency the percentile
// lines must be there too (50, 75, 90 and 99).
func parseWrk(out string, latency bool) (WrkResult, error) {
	var r WrkResult
	m := wrkRequestsRE.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no %q line in wrk's output", "N requests in T")
	}
	r.Requests, _ = strconv.ParseUint(m[1], 10, 64)
	r.Duration = time.Duration(wrkMicros(m[2], m[3]) * 1e3)
	if m := wrkLatencyRE.FindStringSubmatch(out); m != nil {
		r.MeanUs, r.StdevUs, r.MaxUs = wrkMicros(m[1], m[2]), wrkMicros(m[3], m[4]), wrkMicros(m[5], m[6])
	}
	if i := strings.Index(out, "Latency Distribution"); i >= 0 {
		for _, m := range wrkPercentileRE.FindAllStringSubmatch(out[i:], -1) {
			p, _ := strconv.ParseFloat(m[1], 64)
			r.Percentiles = append(r.Percentiles, report.Quantile{P: p / 100, Micros: wrkMicros(m[2], m[3])})
		}
		slices.SortFunc(r.Percentiles, func(a, b report.Quantile) int { return cmp.Compare(a.P, b.P) })
	}
	if latency {
		for _, p := range []float64{50, 75, 90, 99} {
			if _, ok := r.Percentile(p); !ok {
				return r, fmt.Errorf("no %v%% line in wrk's latency distribution", p)
			}
		}
	}
	atoi := func(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }
	if m := wrkSocketRE.FindStringSubmatch(out); m != nil {
		r.Connect, r.Read, r.Write, r.Timeout = atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4])
	}
	if m := wrkNon2xxRE.FindStringSubmatch(out); m != nil {
		r.Non2xx = atoi(m[1])
	}
	if m := wrkRateRE.FindStringSubmatch(out); m != nil {
		r.RPS, _ = strconv.ParseFloat(m[1], 64)
	} else if r.Duration > 0 {
		r.RPS = float64(r.Requests) / r.Duration.Seconds()
	}
	return r, nil
}

// HTTPRun is the harness's record of one run (a report.Run's Detail; HTTPRecords decodes
// them).
type HTTPRun struct {
	URL string `json:"url"`
	// Probe is what one GET from the peer's namespace before the load got back (status, body
	// checked byte by byte against echo.BytesPattern).
	Probe  string    `json:"probe"`
	Warmup WrkResult `json:"warmup"`
	Wrk    WrkResult `json:"wrk"`
	// WrkOutput is the measured run's report as wrk printed it.
	WrkOutput string `json:"wrk_output"`
	// Seconds is the window: from before wrk started to after it ended.
	Seconds float64 `json:"seconds"`
	// CPU is each CPU's /proc/stat times over the window; BusyNs their busy time summed.
	CPU    map[int]sysstat.CPUTimes `json:"cpu"`
	BusyNs int64                    `json:"busy_ns"`
	// Per request, in microseconds: the server CPUs' busy time (ServerUsPerReq, the figure),
	// the whole machine's, the client CPU's, and run times (schedstat, rusage): the server
	// process's threads, the server end's NAPI threads, wrk's, every kernel thread's.
	ServerUsPerReq  float64 `json:"server_us_per_req"`
	UsPerReq        float64 `json:"us_per_req"`
	ClientUsPerReq  float64 `json:"client_us_per_req"`
	ProcUsPerReq    float64 `json:"server_process_us_per_req"`
	NAPIUsPerReq    float64 `json:"server_napi_us_per_req"`
	WrkUsPerReq     float64 `json:"wrk_us_per_req"`
	KThreadUsPerReq float64 `json:"kthreads_us_per_req"`
	// ServerBusy is the server CPUs' busy share, MachineBusy every CPU's.
	ServerBusy  float64 `json:"server_busy"`
	MachineBusy float64 `json:"machine_busy"`
	// Foreign and ForeignSeen: as RRRun's (the run's own tasks are the server process, wrk
	// and kernel threads).
	Foreign     float64       `json:"foreign_share"`
	ForeignSeen float64       `json:"foreign_seen_share"`
	QuietBefore float64       `json:"busy_before"`
	Waited      time.Duration `json:"waited_ns"`
	// GOMAXPROCS, Threads, ThreadsOff: as RRRun's.
	GOMAXPROCS int `json:"gomaxprocs"`
	Threads    int `json:"threads"`
	ThreadsOff int `json:"threads_off_server_cpus"`
	// NAPI and PeerNAPI are the NAPI threads of the server's and the peer's veth end, pinned
	// to ServerCPUs and ClientCPU.
	NAPI     []int `json:"napi_threads"`
	PeerNAPI []int `json:"peer_napi_threads,omitempty"`
	// PktsPerReq counts the server's veth end's packets (both ways) per request.
	PktsPerReq float64 `json:"packets_per_req"`
	// Window are the server side's counters over the window, Whole from the server's start to
	// after wrk ended (probe and warm-up included).
	Window RRCounts `json:"window"`
	Whole  RRCounts `json:"whole"`
	Check  RRCheck  `json:"check"`
}

// The http document's metrics.
const (
	httpRPS      = "rps"
	httpServerUs = "server_us_per_req"
	httpUs       = "us_per_req"
	httpClientUs = "client_us_per_req"
	httpP50      = "p50_us"
	httpP99      = "p99_us"
)

var httpMetrics = []report.Metric{
	{Name: httpRPS, Unit: "req/s", Better: report.Higher, Key: true,
		About: "requests wrk completed per second of its run"},
	{Name: httpServerUs, Unit: "µs/req", Better: report.Lower,
		About: "busy time of the server CPUs (/proc/stat: user, nice, system, irq, softirq) per request: the server process and the server end's NAPI thread, pinned there"},
	{Name: httpUs, Unit: "µs/req", Better: report.Lower,
		About: "the whole machine's busy time per request: wrk, the server and the kernel between them"},
	{Name: httpClientUs, Unit: "µs/req", Better: report.Lower,
		About: "busy time of the client CPU per request: wrk and the peer end's NAPI thread"},
	{Name: httpP50, Unit: "µs", Better: report.Lower, About: "wrk's median request latency"},
	{Name: httpP99, Unit: "µs", Better: report.Lower, About: "wrk's 99th percentile request latency"},
}

// Issue 20's acceptance targets for net/http on netchan against net/http on kernel sockets.
const (
	HTTPTargetRPS       = 1.5 // requests/s netchan/kernel at least
	HTTPTargetServerCPU = 0.7 // server CPU per request netchan/kernel at most
)

// httpDocument is the grid of o (defaults applied): one case, o's variants, the metrics, and
// with both variants the ratios netchan/kernel with issue 20's targets.
func httpDocument(o HTTPOptions) (*report.Document, error) {
	d := report.New("http", o.Command)
	if err := d.SetOptions(o); err != nil {
		return nil, err
	}
	d.Rounds = o.Runs
	c := fmt.Sprintf("%d conns GET %dB", o.Conns, o.Size)
	d.Cases = []report.Case{{Name: c}}
	d.Variants = slices.Clone(o.Variants)
	d.Metrics = slices.Clone(httpMetrics)
	if !slices.Contains(o.Variants, Netchan) || !slices.Contains(o.Variants, Kernel) {
		return d, nil
	}
	ratio := func(name, metric string, target *report.Target) report.Ratio {
		return report.Ratio{Name: name + " netchan/kernel", Case: c, Metric: metric, Num: Netchan, Den: Kernel, Target: target}
	}
	d.Ratios = []report.Ratio{
		ratio("rps", httpRPS, &report.Target{Op: ">=", Value: HTTPTargetRPS}),
		ratio("server CPU/request", httpServerUs, &report.Target{Op: "<=", Value: HTTPTargetServerCPU}),
		ratio("CPU/request (whole machine)", httpUs, nil),
		ratio("p50 latency", httpP50, nil),
		ratio("p99 latency", httpP99, nil),
	}
	return d, nil
}

// httpToRun is a record as the document's run: its figures as values, wrk's percentiles and
// maximum as the latency quantiles, its foreign share (above maxForeign the run is
// contaminated), the record as the detail, and as the run's error runErr or the check's
// notes: a run in which wrk counted an error, or whose counters do not account for its
// requests, stands for nothing (wrk's rate counts error responses too, and a timeout is a
// stall of seconds).
func httpToRun(rec HTTPRun, runErr error, maxForeign float64) (report.Run, error) {
	detail, err := json.Marshal(rec)
	if err != nil {
		return report.Run{}, err
	}
	run := report.Run{Foreign: rec.Foreign, Contaminated: rec.Foreign > maxForeign, Detail: detail, Values: map[string]float64{}}
	switch {
	case runErr != nil:
		run.Err = runErr.Error()
	case !rec.Check.OK:
		run.Err = "check failed: " + strings.Join(rec.Check.Notes, "; ")
	}
	w := rec.Wrk
	if w.Requests == 0 {
		return run, nil // per request figures of no request would read as the best
	}
	run.Values[httpRPS], run.Values[httpServerUs], run.Values[httpUs] = w.RPS, rec.ServerUsPerReq, rec.UsPerReq
	if rec.ClientUsPerReq > 0 { // 0: the client was not pinned, so no core is its
		run.Values[httpClientUs] = rec.ClientUsPerReq
	}
	if p, ok := w.Percentile(50); ok {
		run.Values[httpP50] = p
	}
	if p, ok := w.Percentile(99); ok {
		run.Values[httpP99] = p
	}
	run.Latency = slices.Clone(w.Percentiles)
	if w.MaxUs > 0 {
		run.Latency = append(run.Latency, report.Quantile{P: 1, Micros: w.MaxUs})
	}
	return run, nil
}

// HTTPRecords decodes the record (HTTPRun) of every run of an http document, in the
// document's order of runs.
func HTTPRecords(d *report.Document) ([]HTTPRun, error) {
	recs := make([]HTTPRun, 0, len(d.Runs))
	for i, r := range d.Runs {
		var rec HTTPRun
		if err := json.Unmarshal(r.Detail, &rec); err != nil {
			return nil, fmt.Errorf("bench http: run %d (%s %s round %d): detail: %w", i, r.Case, r.Variant, r.Round, err)
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// httpCheck says whether a run's figures can stand: wrk completed requests without an error,
// and the server side's counters over the window account for every one of them (each request
// and each response at least one packet on the server's veth end; for netchan, a TCP segment
// each way in netchan's stack, and every connection wrk opened accepted by netchan), and, for
// netchan, its shards received at least every segment its TCP took in over the whole run (the
// shards publish their counters after the stack counts, so at the window's edges they may lag
// by a pass; the whole run ends after the traffic settled).
func httpCheck(variant string, conns int, w WrkResult, window, whole RRCounts) RRCheck {
	var notes []string
	fail := func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) }
	if w.Requests == 0 {
		fail("wrk completed no request")
	}
	if w.Connect+w.Read+w.Write+w.Timeout > 0 {
		fail("wrk's socket errors: connect %d, read %d, write %d, timeout %d", w.Connect, w.Read, w.Write, w.Timeout)
	}
	if w.Non2xx > 0 {
		fail("%d responses with a status of 400 or more", w.Non2xx)
	}
	if window.IfRx < w.Requests || window.IfTx < w.Requests {
		fail("interface rx %d / tx %d packets for %d requests", window.IfRx, window.IfTx, w.Requests)
	}
	if variant == Netchan {
		if window.PassiveOpens < uint64(conns) {
			fail("netchan accepted %d connections, wrk opened %d", window.PassiveOpens, conns)
		}
		if window.SegmentsIn < w.Requests || window.SegmentsOut < w.Requests {
			fail("netchan TCP segments in %d / out %d for %d requests", window.SegmentsIn, window.SegmentsOut, w.Requests)
		}
		if whole.ShardRx < whole.SegmentsIn {
			fail("shards received %d packets, TCP %d segments", whole.ShardRx, whole.SegmentsIn)
		}
	}
	return RRCheck{OK: len(notes) == 0, Notes: notes}
}

// RunHTTP is `netchan bench http`: wrk against net/http serving GET /bytes/Size
// (echo.HTTPHandler) on netchan's stack and on kernel sockets, over a lab veth, on one server
// core. The document (scenario "http") has one case (Conns connections, Size bytes), the
// variants, and the ratios netchan/kernel with issue 20's targets (requests/s at least 1.5×,
// server CPU per request at most 0.7×).
//
// One pair lab (name "nch" + 4 random characters, removed afterwards, also on error or
// Ctrl-C), GRO on the peer's end (veth has NAPI, and so a NAPI thread to pin, only with GRO or
// XDP). The rounds run through report's Execute:
//
//	netchan  echo.NewEcho on netchan's veth end (no kernel IPv4 address on it) through
//	         netchan.Start, native XDP, one shard per queue pinned to ServerCPUs, SpinIdle
//	         as given; net/http serves echo.HTTPHandler on the stack's net.Listener (port 80).
//	kernel   the same veth end gets its address for the run (as tcp-rr's kernel variant) and
//	         GRO (for its NAPI thread), and net/http serves echo.HTTPHandler on a net.Listen
//	         socket in this process.
//
// In both, for the length of the run every thread of this process is confined to ServerCPUs
// (sched_setaffinity on each thread, as taskset does: net/http's goroutines cannot be pinned
// one by one) with GOMAXPROCS one per server CPU, and the server end's NAPI thread (threaded
// NAPI) is pinned there too, so the server's receive path runs on the server's cores; wrk
// (taskset) and the peer end's NAPI thread run on ClientCPU. Each run: a GET from the peer's
// namespace whose body is checked byte by byte, a wrk warm-up, then the measured wrk run
// (wrk -t Threads -c Conns -d Duration --latency --timeout Timeout) between two samples of
// /proc/stat. The server CPU per request is the server CPUs' busy time over that window
// divided by wrk's requests; the machine's and the client CPU's likewise. Contamination is
// tcp-rr's: busy time that neither the server process, wrk nor kernel threads account for,
// as a share of the machine, above MaxForeign repeats the run. A run with any wrk error or
// counters that do not account for its requests (httpCheck) gets an error and stands for
// nothing.
//
// RunHTTP builds the lab, runs the rounds and removes the lab, also when ctx is cancelled. On
// an error after the lab was built the document holds the runs so far.
func RunHTTP(ctx context.Context, o HTTPOptions) (doc *report.Document, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, lab.ErrNotRoot
	}
	wrk, err := exec.LookPath(o.Wrk)
	if err != nil {
		return nil, fmt.Errorf("bench http: %w (apt-get install wrk)", err)
	}
	if err := lab.SweepOrphans("nch"); err != nil {
		o.Logf("bench http: sweeping labs of killed benchmarks: %v", err)
	}
	if doc, err = httpDocument(o); err != nil {
		return nil, err
	}
	o.Logf("bench http: building lab %s (%d queue(s)); wrk on CPU %d, server on CPUs %v; %d connections, GET of %d bytes, %v warm-up, %v measured",
		o.LabName, o.Queues, o.ClientCPU, o.ServerCPUs, o.Conns, o.Size, o.Warmup, o.Duration)
	l, err := lab.Up(ctx, lab.Config{Name: o.LabName, Layout: lab.LayoutPair, QueueCount: o.Queues, StaticARP: true})
	if err != nil {
		return doc, err
	}
	defer func() {
		if derr := lab.Down(o.LabName); derr != nil {
			err = errors.Join(err, fmt.Errorf("removing lab %s: %w", o.LabName, derr))
		}
	}()
	b := &httpBench{o: &o, ep: l.Netchan[0], wrk: wrk}
	if b.cpus, err = machineCPUs(); err != nil {
		return doc, err
	}
	if b.root, err = sysstat.OpenNS(""); err != nil {
		return doc, err
	}
	defer b.root.Close()
	ep := b.ep
	b.url = fmt.Sprintf("http://%s/bytes/%d", netip.AddrPortFrom(ep.Addr.Addr(), httpPort), o.Size)
	if err := nsCommand(ctx, ep.Peer.NS, "ethtool", "-K", ep.Peer.Iface, "gro", "on"); err != nil {
		return doc, err
	}
	procs := o.GOMAXPROCS
	if procs <= 0 {
		procs = len(o.ServerCPUs)
	}
	version, _ := exec.CommandContext(ctx, wrk, "-v").CombinedOutput() // prints its version, exits 1
	doc.Setup = []string{
		fmt.Sprintf("lab %s (pair, %d queue(s), static ARP on the peer): root %s (%s) <-> %s %s %s; transmit checksum offload, TSO and GSO off on both ends, GRO on at the peer's",
			o.LabName, o.Queues, ep.Iface, ep.MAC, ep.Peer.NS, ep.Peer.Iface, ep.Peer.Addr),
		fmt.Sprintf("client: %s (%s) in %s, %s: -t %d -c %d -d %v --timeout %v --latency %s, after a %v warm-up run and one GET whose body is checked; the peer end's NAPI thread (threaded NAPI): %s",
			wrk, strings.TrimSpace(strings.SplitN(string(version), "\n", 2)[0]), ep.Peer.NS, cpuWords("taskset to CPU", o.ClientCPU),
			o.Threads, o.Conns, o.Duration, o.Timeout, b.url, o.Warmup, cpuWords("pinned to CPU", o.ClientCPU)),
		fmt.Sprintf("server process (this one): every thread confined to CPUs %v for each run (sched_setaffinity on each thread, as taskset does; checked at the window's end), GOMAXPROCS %d; the server end's NAPI thread (threaded NAPI) pinned there too",
			o.ServerCPUs, procs),
		fmt.Sprintf("netchan: net/http serving echo.HTTPHandler on netchan's net.Listener (echo.NewEcho, port %d) + netchan.Start on %s, native XDP, %d shard(s) on CPUs %v, spin-idle %v (0: shards' default 50µs); no kernel IPv4 address on %s",
			httpPort, ep.Iface, o.Queues, o.ServerCPUs, o.SpinIdle, ep.Iface),
		fmt.Sprintf("kernel: %s/32 peer %s on %s for the run, permanent neighbour entry for the peer, GRO on; net/http serving echo.HTTPHandler on net.Listen(%s:%d) in the benchmark process",
			ep.Addr.Addr(), ep.Peer.Addr.Addr(), ep.Iface, ep.Addr.Addr(), httpPort),
	}
	err = doc.Execute(ctx, report.Plan{Measure: b.measure, Retries: o.Retries, Progress: o.Progress})
	return doc, err
}

// cpuWords says where a process runs: "what N", or "not pinned" for -1.
func cpuWords(what string, cpu int) string {
	if cpu < 0 {
		return "not pinned"
	}
	return fmt.Sprintf("%s %d", what, cpu)
}

// nsCommand runs argv in namespace ns ("" = here).
func nsCommand(ctx context.Context, ns string, argv ...string) error {
	out, err := (*lab.Lab)(nil).Command(ctx, ns, argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s (namespace %q): %w: %s", strings.Join(argv, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pinNAPI turns threaded NAPI on for iface in namespace ns (sysfs shows a namespace's
// interfaces only inside it) and pins the interface's NAPI threads to cpus. The threads are
// made anew whenever the veth rebuilds its NAPI (XDP attach, GRO switch), so a run pins them
// after its server started.
func pinNAPI(ctx context.Context, ns, iface string, cpus []int) ([]int, error) {
	if ns == "" {
		if err := trafficgen.SetThreadedNAPI(iface); err != nil {
			return nil, err
		}
	} else if err := nsCommand(ctx, ns, "sh", "-c", fmt.Sprintf("echo 1 > /sys/class/net/%s/threaded", iface)); err != nil {
		return nil, err
	}
	return trafficgen.PinNAPIThreads(iface, cpus)
}

type httpBench struct {
	o    *HTTPOptions
	ep   lab.Endpoint
	root *sysstat.NSLinks
	cpus []int
	wrk  string
	url  string
}

// measure is the plan's Measure: a quiet second, then one run; a run that failed gets its
// error (the benchmark goes on), a cancelled one stops the benchmark.
func (b *httpBench) measure(ctx context.Context, t report.Trial) (report.Run, error) {
	busy, waited, err := quietMachine(ctx, b.cpus, b.o.MaxForeign, b.o.QuietWait, b.o.Logf)
	if err != nil {
		return report.Run{}, err
	}
	rec, err := b.run(ctx, t.Variant)
	if err != nil && ctx.Err() != nil {
		return report.Run{}, ctx.Err()
	}
	rec.QuietBefore, rec.Waited = busy, waited
	if err != nil {
		b.o.Logf("bench http: %s round %d: %v", t.Variant, t.Round, err)
	} else {
		b.log(t, rec)
	}
	return httpToRun(rec, err, b.o.MaxForeign)
}

func (b *httpBench) log(t report.Trial, r HTTPRun) {
	w := r.Wrk
	p50, _ := w.Percentile(50)
	p99, _ := w.Percentile(99)
	tag := ""
	if r.Foreign > b.o.MaxForeign {
		tag = " CONTAMINATED"
	}
	check := "ok"
	if !r.Check.OK {
		check = "OFF: " + strings.Join(r.Check.Notes, "; ")
	}
	b.o.Logf("  %-7s round %d: %8.0f req/s, server %6.2f µs/req (process %5.2f, NAPI %5.2f; core %3.0f%% busy), machine %6.2f µs/req (wrk %5.2f, client core %5.2f), p50 %7.1f µs p99 %7.1f µs max %7.1f µs, %d requests, %.2f pkts/req, others %2.0f%% of the machine (seen %2.0f%%), check %s%s",
		t.Variant, t.Round, w.RPS, r.ServerUsPerReq, r.ProcUsPerReq, r.NAPIUsPerReq, 100*r.ServerBusy, r.UsPerReq, r.WrkUsPerReq, r.ClientUsPerReq,
		p50, p99, w.MaxUs, w.Requests, r.PktsPerReq, 100*r.Foreign, 100*r.ForeignSeen, check, tag)
}

// httpKernel is net/http on a kernel socket on netchan's veth end, in this process.
type httpKernel struct {
	srv    *http.Server
	served chan error
	undo   []func() error
}

func startHTTPKernel(ctx context.Context, ep lab.Endpoint) (_ *httpKernel, err error) {
	s := &httpKernel{}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	undo, err := kernelEndpoint(ep)
	s.undo = append(s.undo, undo...)
	if err != nil {
		return nil, err
	}
	// veth has NAPI (a thread to pin with the server) only with XDP or GRO: GRO on for the run.
	if err := ethtool(ctx, ep.Iface, "gro", "on"); err != nil {
		return nil, err
	}
	s.undo = append(s.undo, func() error { return ethtool(context.Background(), ep.Iface, "gro", "off") })
	if err := peerRoute(ep); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp4", netip.AddrPortFrom(ep.Addr.Addr(), httpPort).String())
	if err != nil {
		return nil, fmt.Errorf("kernel run: %w", err)
	}
	s.srv, s.served = &http.Server{Handler: echo.HTTPHandler()}, make(chan error, 1)
	go func() { s.served <- s.srv.Serve(ln) }()
	return s, nil
}

func (s *httpKernel) counts() RRCounts { return RRCounts{} }

func (s *httpKernel) stop() error {
	var errs []error
	if s.srv != nil {
		errs = append(errs, s.srv.Close())
		if err := <-s.served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
		s.srv = nil
	}
	for i := len(s.undo) - 1; i >= 0; i-- {
		errs = append(errs, s.undo[i]())
	}
	s.undo = nil
	return errors.Join(errs...)
}

// probeHTTP makes one GET of url's path from namespace ns, and checks that the answer is 200
// with size bytes of echo.BytesPattern: wrk counts responses, not what is in them.
func probeHTTP(ns string, addr netip.AddrPort, path string, size int) (string, error) {
	c, err := dialIn(ns, addr, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("probe: connecting to %s from %s: %w", addr, ns, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr.Addr()); err != nil {
		return "", fmt.Errorf("probe: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", fmt.Errorf("probe: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("probe: reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || len(body) != size {
		return "", fmt.Errorf("probe: GET %s: %s with %d bytes, want 200 with %d", path, resp.Status, len(body), size)
	}
	for i, x := range body {
		if x != echo.BytesPattern(i) {
			return "", fmt.Errorf("probe: GET %s: byte %d is %#02x, want %#02x", path, i, x, echo.BytesPattern(i))
		}
	}
	return fmt.Sprintf("GET %s: %s, %d bytes as echo.BytesPattern", path, resp.Status, len(body)), nil
}

// dialIn connects to addr from namespace ns: the socket is made on a thread switched into ns
// (a socket stays in the namespace it was made in; what follows needs no thread of its own).
func dialIn(ns string, addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("namespace %s: %w", ns, err)}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		c, err := net.DialTimeout("tcp4", addr.String(), timeout)
		if serr := netns.Set(orig); serr != nil {
			// The thread stays locked and ends with this goroutine: no other goroutine may
			// run in ns.
			if c != nil {
				c.Close()
			}
			ch <- result{err: errors.Join(err, serr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// runWrk runs wrk for d in the peer's namespace, on ClientCPU, and returns its report, its
// output and the CPU time it used (rusage: user and system, the softirqs that ran in it
// included).
func (b *httpBench) runWrk(ctx context.Context, d time.Duration) (WrkResult, string, time.Duration, error) {
	o := b.o
	cpus := []int{o.ClientCPU}
	if o.ClientCPU < 0 {
		cpus = b.cpus // not pinned: every CPU, not the server's mask it would inherit
	}
	list := make([]string, len(cpus))
	for i, c := range cpus {
		list[i] = strconv.Itoa(c)
	}
	argv := []string{"taskset", "-c", strings.Join(list, ","), b.wrk, "-t", strconv.Itoa(o.Threads), "-c", strconv.Itoa(o.Conns),
		"-d", fmt.Sprintf("%ds", int(d/time.Second)), "--timeout", fmt.Sprintf("%ds", int(o.Timeout/time.Second)), "--latency", b.url}
	cmd := (*lab.Lab)(nil).Command(ctx, b.ep.Peer.NS, argv...)
	out, err := cmd.CombinedOutput()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return WrkResult{}, string(out), cpu, fmt.Errorf("wrk: %w: %s", err, strings.TrimSpace(string(out)))
	}
	r, err := parseWrk(string(out), true)
	if err != nil {
		return r, string(out), cpu, fmt.Errorf("wrk: %w:\n%s", err, out)
	}
	return r, string(out), cpu, nil
}

// run measures one variant once.
func (b *httpBench) run(ctx context.Context, variant string) (rec HTTPRun, err error) {
	o := b.o
	rec = HTTPRun{URL: b.url}
	restore, err := pinServer(o.ServerCPUs, o.GOMAXPROCS)
	if err != nil {
		return rec, fmt.Errorf("pinning the server process: %w", err)
	}
	defer func() {
		if rerr := restore(); rerr != nil && err == nil {
			err = fmt.Errorf("unpinning the server process: %w", rerr)
		}
	}()
	rec.GOMAXPROCS = runtime.GOMAXPROCS(0)
	var srv rrServer
	switch variant {
	case Netchan:
		s, err := startEchoNetchan(b.ep, o.Queues, o.ServerCPUs, o.SpinIdle)
		if err != nil {
			return rec, err
		}
		srv = s
	case Kernel:
		s, err := startHTTPKernel(ctx, b.ep)
		if err != nil {
			return rec, err
		}
		srv = s
	default:
		return rec, fmt.Errorf("unknown variant %q", variant)
	}
	defer func() {
		if serr := srv.stop(); serr != nil && err == nil {
			err = fmt.Errorf("stopping the %s server: %w", variant, serr)
		}
	}()
	if rec.NAPI, err = pinNAPI(ctx, "", b.ep.Iface, o.ServerCPUs); err != nil {
		return rec, err
	}
	if o.ClientCPU >= 0 {
		if rec.PeerNAPI, err = pinNAPI(ctx, b.ep.Peer.NS, b.ep.Peer.Iface, []int{o.ClientCPU}); err != nil {
			return rec, err
		}
	}
	whole0, err := ifCounts(b.root, b.ep.Iface, srv)
	if err != nil {
		return rec, err
	}
	if rec.Probe, err = probeHTTP(b.ep.Peer.NS, netip.AddrPortFrom(b.ep.Addr.Addr(), httpPort), fmt.Sprintf("/bytes/%d", o.Size), o.Size); err != nil {
		// Where the exchange stopped: at the interface, in the server, or on the way back.
		if c, cerr := ifCounts(b.root, b.ep.Iface, srv); cerr == nil {
			d := c.sub(whole0)
			err = fmt.Errorf("%w (since the server started its interface received %d packets and sent %d; netchan's TCP took %d segments in)",
				err, d.IfRx, d.IfTx, d.SegmentsIn)
		}
		if variant == Kernel {
			err = errors.Join(err, peerRoute(b.ep))
		}
		return rec, err
	}
	if rec.Warmup, _, _, err = b.runWrk(ctx, o.Warmup); err != nil {
		return rec, fmt.Errorf("warm-up: %w", err)
	}
	s0, err := sampleWindow(b.root, b.ep.Iface, b.cpus, srv, 0, true)
	if err != nil {
		return rec, err
	}
	napi0 := sysstat.ThreadsRunNs(rec.NAPI)
	var wrkCPU time.Duration
	rec.Wrk, rec.WrkOutput, wrkCPU, err = b.runWrk(ctx, o.Duration)
	if err != nil {
		return rec, err
	}
	napi1 := sysstat.ThreadsRunNs(rec.NAPI)
	s1, err := sampleWindow(b.root, b.ep.Iface, b.cpus, srv, 0, false)
	if err != nil {
		return rec, err
	}
	rec.ThreadsOff, rec.Threads = threadsOutside(o.ServerCPUs)
	if err := sleepCtx(ctx, 200*time.Millisecond); err != nil { // the last FINs and ACKs
		return rec, err
	}
	whole1, err := ifCounts(b.root, b.ep.Iface, srv)
	if err != nil {
		return rec, err
	}

	w := s1.t.Sub(s0.t)
	rec.Seconds = w.Seconds()
	rec.Window, rec.Whole = s1.counts.sub(s0.counts), whole1.sub(whole0)
	rec.CPU = map[int]sysstat.CPUTimes{}
	for cpu, t := range s1.cpu {
		rec.CPU[cpu] = t.Sub(s0.cpu[cpu])
	}
	rec.BusyNs = cpuSum(rec.CPU).Busy()
	machineNs := float64(w) * float64(len(b.cpus))
	rec.MachineBusy = float64(rec.BusyNs) / machineNs
	serverNs := busyOf(rec.CPU, o.ServerCPUs)
	rec.ServerBusy = float64(serverNs) / (float64(w) * float64(len(o.ServerCPUs)))
	kthreads := since(s0.tasks.kernel, s1.tasks.kernel)
	procNs := s1.own - s0.own
	rec.ForeignSeen = float64(since(s0.tasks.foreign, s1.tasks.foreign)) / machineNs
	rec.Foreign = max(0, float64(rec.BusyNs-procNs-int64(wrkCPU)-kthreads)/machineNs)
	if n := float64(rec.Wrk.Requests); n > 0 {
		perReq := func(ns int64) float64 { return float64(ns) / n / 1e3 }
		rec.ServerUsPerReq, rec.UsPerReq = perReq(serverNs), perReq(rec.BusyNs)
		if o.ClientCPU >= 0 {
			rec.ClientUsPerReq = perReq(busyOf(rec.CPU, []int{o.ClientCPU}))
		}
		rec.ProcUsPerReq, rec.NAPIUsPerReq = perReq(procNs), perReq(napi1-napi0)
		rec.WrkUsPerReq, rec.KThreadUsPerReq = perReq(int64(wrkCPU)), perReq(kthreads)
		rec.PktsPerReq = float64(rec.Window.IfRx+rec.Window.IfTx) / n
	}
	rec.Check = httpCheck(variant, o.Conns, rec.Wrk, rec.Window, rec.Whole)
	if rec.ThreadsOff > 0 {
		rec.Check.OK = false
		rec.Check.Notes = append(rec.Check.Notes, fmt.Sprintf("%d of the server process's %d threads were allowed outside CPUs %v",
			rec.ThreadsOff, rec.Threads, o.ServerCPUs))
	}
	return rec, nil
}
