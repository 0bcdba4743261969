package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/stack"
)

// rrPort is TCP echo's port.
const rrPort = 7

// RROptions describe a request/response benchmark.
type RROptions struct {
	Runs     int           `json:"runs"`        // rounds; each runs every variant once (default 5)
	Warmup   time.Duration `json:"warmup_ns"`   // transactions before the window (default 1s)
	Duration time.Duration `json:"duration_ns"` // the measured window (default 5s)
	Conns    int           `json:"conns"`       // client connections (default 16)
	Size     int           `json:"size"`        // request and response bytes (default 128)
	Queues   int           `json:"queues"`      // veth queues, one shard each (default 1)
	// ClientCPU pins every thread of the client (default 0; -1: not pinned).
	ClientCPU int `json:"client_cpu"`
	// ServerCPUs hold the server: netchan's shards (shard i on ServerCPUs[i % len]) and, for
	// the length of each run, every thread of the server process (this one) in both variants;
	// default: the first CPU that is not ClientCPU.
	ServerCPUs []int `json:"server_cpus"`
	// GOMAXPROCS is the server process's during a run; 0: one per server CPU, what a process
	// started on those CPUs gets.
	GOMAXPROCS int `json:"gomaxprocs"`
	// SpinIdle is the shards' spin before poll(2); 0: the shards' default (50µs), as `netchan
	// echo` runs.
	SpinIdle time.Duration `json:"spin_idle_ns"`
	Variants []string      `json:"variants"` // default netchan, kernel
	// MaxForeign is the share of the machine (all CPUs) that may be busy outside the run's
	// own tasks (client, server process, kernel threads; see RRRun.Foreign) before the run
	// counts as contaminated (default 0.05); Retries is how often such a run is repeated
	// (default 2; -1: never).
	MaxForeign float64 `json:"max_foreign"`
	Retries    int     `json:"retries"`
	// QuietWait: before every run, wait up to this long for one second in which the machine
	// is less than MaxForeign busy (other people's work comes in bursts); default 30s,
	// negative: do not wait.
	QuietWait time.Duration `json:"quiet_wait_ns"`
	// Profile, when set, is a file for a CPU profile (pprof) of this process (the netchan
	// server) over the window of one more netchan run after the rounds, left out of the figures.
	Profile string               `json:"profile,omitempty"`
	LabName string               `json:"lab"`
	Command string               `json:"command"`
	Client  []string             `json:"-"` // argv that runs RRClientMain with RRClientEnv set
	Logf    func(string, ...any) `json:"-"`
	// Progress hears where the benchmark stands before each run (report.Plan.Progress).
	Progress func(report.Progress) `json:"-"`
}

func (o *RROptions) defaults() error {
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.Warmup <= 0 {
		o.Warmup = time.Second
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Conns <= 0 {
		o.Conns = 16
	}
	if o.Size == 0 {
		o.Size = 128
	}
	if o.Size < 16 || o.Size > 65536 {
		return fmt.Errorf("bench tcp-rr: size %d: want 16..65536 bytes", o.Size)
	}
	if o.Queues <= 0 {
		o.Queues = 1
	}
	cpus, err := machineCPUs()
	if err != nil {
		return err
	}
	if o.ServerCPUs, err = serverCPUs(cpus, o.ClientCPU, o.ServerCPUs); err != nil {
		return fmt.Errorf("bench tcp-rr: %w", err)
	}
	if len(o.Variants) == 0 {
		o.Variants = []string{Netchan, Kernel}
	}
	for _, v := range o.Variants {
		if v != Netchan && v != Kernel {
			return fmt.Errorf("bench tcp-rr: variant %q: want %s or %s", v, Netchan, Kernel)
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
	if o.LabName == "" {
		o.LabName = randomName("ncr")
	}
	if len(o.Client) == 0 {
		return errors.New("bench tcp-rr: RROptions.Client must name the program that runs the client")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// serverCPUs checks the client's CPU (-1: none) and the server's (given: each online; none:
// the first online CPU that is not the client's, or the first CPU on a one-CPU machine).
func serverCPUs(online []int, client int, given []int) ([]int, error) {
	if client >= 0 && !slices.Contains(online, client) {
		return nil, fmt.Errorf("client CPU %d is not online (have %v)", client, online)
	}
	for _, c := range given {
		if !slices.Contains(online, c) {
			return nil, fmt.Errorf("server CPU %d is not online (have %v)", c, online)
		}
	}
	if len(given) > 0 {
		return given, nil
	}
	for _, c := range online {
		if c != client {
			return []int{c}, nil
		}
	}
	return []int{online[0]}, nil
}

// RRCounts are the server side's counters over an interval.
type RRCounts struct {
	// The server's veth end (netchan's interface in both variants).
	IfRx        uint64 `json:"if_rx_packets"`
	IfTx        uint64 `json:"if_tx_packets"`
	IfRxDropped uint64 `json:"if_rx_dropped"`
	IfTxDropped uint64 `json:"if_tx_dropped"`
	// netchan only: the stack's TCP counters and the shards'.
	SegmentsIn   uint64 `json:"tcp_segments_in,omitempty"`
	SegmentsOut  uint64 `json:"tcp_segments_out,omitempty"`
	Retransmits  uint64 `json:"tcp_retransmits,omitempty"`
	Timeouts     uint64 `json:"tcp_timeouts,omitempty"`
	PassiveOpens uint64 `json:"tcp_passive_opens,omitempty"`
	ResetsOut    uint64 `json:"tcp_resets_out,omitempty"`
	ShardRx      uint64 `json:"shard_rx_packets,omitempty"`
	ShardTx      uint64 `json:"shard_tx_packets,omitempty"`
	Polls        uint64 `json:"shard_polls,omitempty"`
	Sleeps       uint64 `json:"shard_sleeps,omitempty"`
	Kicks        uint64 `json:"shard_kicks,omitempty"`
	Drops        uint64 `json:"shard_drops,omitempty"`
	HandoffOut   uint64 `json:"shard_handoff_out,omitempty"`
}

func (c RRCounts) sub(o RRCounts) RRCounts {
	return RRCounts{c.IfRx - o.IfRx, c.IfTx - o.IfTx, c.IfRxDropped - o.IfRxDropped, c.IfTxDropped - o.IfTxDropped,
		c.SegmentsIn - o.SegmentsIn, c.SegmentsOut - o.SegmentsOut, c.Retransmits - o.Retransmits, c.Timeouts - o.Timeouts,
		c.PassiveOpens - o.PassiveOpens, c.ResetsOut - o.ResetsOut, c.ShardRx - o.ShardRx, c.ShardTx - o.ShardTx,
		c.Polls - o.Polls, c.Sleeps - o.Sleeps, c.Kicks - o.Kicks, c.Drops - o.Drops, c.HandoffOut - o.HandoffOut}
}

// RRCheck says whether a run's counts agree with each other.
type RRCheck struct {
	OK    bool     `json:"ok"`
	Notes []string `json:"notes,omitempty"`
}

// RRRun is the harness's record of one run (a report.Run's Detail; RRRecords decodes them).
type RRRun struct {
	// Profiled: the extra netchan run after the rounds, under a CPU profile (not in the
	// document's runs; its figures are in the document's setup).
	Profiled bool `json:"profiled,omitempty"`
	// Seconds is the window as this process sampled it (the client's own is Client.Seconds).
	Seconds float64        `json:"seconds"`
	Client  RRClientResult `json:"client"`
	// TPS is the client's transactions in its window per second.
	TPS float64 `json:"tps"`
	// CPU is each CPU's /proc/stat times over the window; BusyNs their busy time summed.
	CPU    map[int]sysstat.CPUTimes `json:"cpu"`
	BusyNs int64                    `json:"busy_ns"`
	// UsPerTxn is the whole machine's busy time per transaction, in microseconds, split into
	// the client process, the server process (this one), kernel threads and the rest.
	UsPerTxn        float64 `json:"us_per_txn"`
	ClientUsPerTxn  float64 `json:"client_us_per_txn"`
	ServerUsPerTxn  float64 `json:"server_us_per_txn"`
	KThreadUsPerTxn float64 `json:"kthreads_us_per_txn"`
	OtherUsPerTxn   float64 `json:"other_us_per_txn"`
	// OwnUsPerTxn is client + server + kernel threads: the run's own share, which other
	// people's work on the machine does not inflate (the cross-check of UsPerTxn).
	OwnUsPerTxn float64 `json:"own_us_per_txn"`
	// ServerCoreUsPerTxn and ClientCoreUsPerTxn are the busy time (/proc/stat) of the server's
	// CPUs and of the client's CPU per transaction: each core's whole load, softirqs that ran
	// there included (0 for the client's when it is not pinned).
	ServerCoreUsPerTxn float64 `json:"server_core_us_per_txn"`
	ClientCoreUsPerTxn float64 `json:"client_core_us_per_txn"`
	// MachineBusy is the busy share of all CPUs (1 = every CPU all the time).
	MachineBusy float64 `json:"machine_busy"`
	// Foreign is the share of the machine (all CPUs) busy outside the client, the server
	// process and kernel threads: other people's processes, including those that started and
	// ended inside the window, which no scan of /proc sees. On a quiet machine it is about 0
	// (ticks of /proc/stat against exact run times); above MaxForeign the run is
	// contaminated. ForeignSeen is the part of it that other processes alive at the end of
	// the window account for.
	Foreign     float64 `json:"foreign_share"`
	ForeignSeen float64 `json:"foreign_seen_share"`
	// QuietBefore is the machine's busy share in the last second before the run started
	// (after waiting up to QuietWait for it to fall below MaxForeign), Waited how long that took.
	QuietBefore float64       `json:"busy_before"`
	Waited      time.Duration `json:"waited_ns"`
	// GOMAXPROCS is the server process's during the run; Threads its threads at the window's
	// end, ThreadsOff those of them allowed on a CPU outside ServerCPUs (0 when the pinning held).
	GOMAXPROCS int `json:"gomaxprocs"`
	Threads    int `json:"threads"`
	ThreadsOff int `json:"threads_off_server_cpus"`
	// PktsPerTxn counts the server's veth end's packets (both ways) per transaction.
	PktsPerTxn float64 `json:"packets_per_txn"`
	// Window are the server side's counters over the window, Whole from the server's start to
	// after the client ended.
	Window RRCounts `json:"window"`
	Whole  RRCounts `json:"whole"`
	Check  RRCheck  `json:"check"`
}

// The tcp-rr document's metrics.
const (
	rrTPS        = "tps"
	rrUs         = "us_per_txn"
	rrOwnUs      = "own_us_per_txn"
	rrServerUs   = "server_us_per_txn"
	rrServerCore = "server_core_us_per_txn"
	rrClientUs   = "client_us_per_txn"
	rrP50        = "p50_us"
	rrP99        = "p99_us"
)

var rrMetrics = []report.Metric{
	{Name: rrTPS, Unit: "tx/s", Better: report.Higher, Key: true,
		About: "transactions the client completed in its window, per second"},
	{Name: rrUs, Unit: "µs/tx", Better: report.Lower,
		About: "the whole machine's busy time (/proc/stat, every CPU) per transaction: client, server and the kernel between them"},
	{Name: rrOwnUs, Unit: "µs/tx", Better: report.Lower,
		About: "run time (schedstat) of the client, the server process and kernel threads per transaction: what other people's work does not inflate"},
	{Name: rrServerUs, Unit: "µs/tx", Better: report.Lower,
		About: "run time (schedstat) of the server process's threads per transaction, the softirqs that ran in them included"},
	{Name: rrServerCore, Unit: "µs/tx", Better: report.Lower,
		About: "busy time of the server CPUs (/proc/stat) per transaction; on veth the receive work runs on the sender's core, so this holds the client's receive of each response and not the server's receive of the request"},
	{Name: rrClientUs, Unit: "µs/tx", Better: report.Lower,
		About: "run time (schedstat) of the client's threads per transaction"},
	{Name: rrP50, Unit: "µs", Better: report.Lower, About: "the client's median transaction latency (write to last byte read)"},
	{Name: rrP99, Unit: "µs", Better: report.Lower, About: "the client's 99th percentile transaction latency"},
}

// rrDocument is the grid of o (defaults applied): one case, o's variants, the metrics, and
// with both variants the ratios netchan/kernel.
func rrDocument(o RROptions) (*report.Document, error) {
	d := report.New("tcp-rr", o.Command)
	if err := d.SetOptions(o); err != nil {
		return nil, err
	}
	d.Rounds = o.Runs
	c := fmt.Sprintf("%d conns %dB", o.Conns, o.Size)
	d.Cases = []report.Case{{Name: c}}
	d.Variants = slices.Clone(o.Variants)
	d.Metrics = slices.Clone(rrMetrics)
	if !slices.Contains(o.Variants, Netchan) || !slices.Contains(o.Variants, Kernel) {
		return d, nil
	}
	ratio := func(name, metric string, target *report.Target) report.Ratio {
		return report.Ratio{Name: name + " netchan/kernel", Case: c, Metric: metric, Num: Netchan, Den: Kernel, Target: target}
	}
	d.Ratios = []report.Ratio{
		ratio("tps", rrTPS, nil),
		// The seed's claim was a third to a half of the kernel's CPU per transaction; the
		// target is the modest one that netchan should cost less at all.
		ratio("CPU/txn (whole machine)", rrUs, &report.Target{Op: "<=", Value: 1}),
		ratio("own CPU/txn (client + server + kernel threads)", rrOwnUs, nil),
		ratio("server-process CPU/txn", rrServerUs, nil),
		ratio("server-core CPU/txn", rrServerCore, nil),
		ratio("p50 latency", rrP50, nil),
		ratio("p99 latency", rrP99, nil),
	}
	return d, nil
}

// rrToRun is a record as the document's run: its figures as values and the client's latency
// quantiles, its foreign share (above maxForeign the run is contaminated), the record as the
// detail, and as the run's error runErr, or the check's notes when the counts disagree (such
// a run stands for nothing).
func rrToRun(rec RRRun, runErr error, maxForeign float64) (report.Run, error) {
	detail, err := json.Marshal(rec)
	if err != nil {
		return report.Run{}, err
	}
	run := report.Run{Foreign: rec.Foreign, Contaminated: rec.Foreign > maxForeign, Detail: detail, Values: map[string]float64{}}
	switch {
	case runErr != nil:
		run.Err = runErr.Error()
	case !rec.Check.OK:
		run.Err = "counts disagree: " + strings.Join(rec.Check.Notes, "; ")
	}
	if rec.TPS > 0 {
		// Per transaction only with transactions: 0 µs/tx would read as the best figure.
		run.Values[rrTPS], run.Values[rrUs], run.Values[rrOwnUs] = rec.TPS, rec.UsPerTxn, rec.OwnUsPerTxn
		run.Values[rrServerUs], run.Values[rrServerCore], run.Values[rrClientUs] = rec.ServerUsPerTxn, rec.ServerCoreUsPerTxn, rec.ClientUsPerTxn
		c := rec.Client
		run.Values[rrP50], run.Values[rrP99] = c.P50, c.P99
		run.Latency = []report.Quantile{{P: 0.5, Micros: c.P50}, {P: 0.9, Micros: c.P90}, {P: 0.99, Micros: c.P99},
			{P: 0.999, Micros: c.P999}, {P: 1, Micros: c.Max}}
	}
	return run, nil
}

// RRRecords decodes the record (RRRun) of every run of a tcp-rr document, in the document's
// order of runs.
func RRRecords(d *report.Document) ([]RRRun, error) {
	recs := make([]RRRun, 0, len(d.Runs))
	for i, r := range d.Runs {
		var rec RRRun
		if err := json.Unmarshal(r.Detail, &rec); err != nil {
			return nil, fmt.Errorf("bench tcp-rr: run %d (%s %s round %d): detail: %w", i, r.Case, r.Variant, r.Round, err)
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// RunRR is `netchan bench tcp-rr`: TCP request/response over the lab veth, netchan's echo
// service against a Go echo server on kernel sockets, with the same kernel-socket client. The
// document (scenario "tcp-rr") has one case (Conns connections, Size bytes), the variants and
// the ratios netchan/kernel.
//
// One pair lab (name "ncr" + 4 random characters, removed afterwards, also on error or
// Ctrl-C). The rounds run through report's Execute (the variants' order reversed every second
// round, contaminated runs repeated, an outlier round once more):
//
//	netchan  echo.NewEcho on netchan's veth end (no kernel IPv4 address on it) with
//	         netchan.Start, native XDP, one shard per queue pinned to ServerCPUs, SpinIdle as
//	         given (default: the shards' own, as `netchan echo` runs); TCP echo on port 7 is a
//	         stack.TCPApp: each request is echoed on its connection's shard, in the pass it
//	         arrives in.
//	kernel   the same veth end gets 198.18.0.1/32 (peer 198.18.0.2) for the run, and a Go
//	         server in this process echoes on a net.Listen socket: per connection a loop of
//	         Read and Write with a Size-byte buffer. Address and neighbour entry go when the
//	         run ends.
//
// In both, every thread of this process (the server process) is confined to ServerCPUs for
// the run, with GOMAXPROCS one per server CPU (pinServer), so the server's cores are the same
// in both variants and their busy time is the server's.
//
// The client (rrclient.go) is the same in both: a Go program on kernel sockets in the peer
// namespace, pinned to ClientCPU, Conns connections each doing Size-byte request → Size-byte
// response in a loop, every echoed byte checked. After Warmup the measured window (Duration)
// opens; the client counts the transactions completed in it and their latencies (quantiles
// 0.5 to 0.999 and the maximum: the run's latency).
//
// CPU per transaction is the whole machine's busy time from /proc/stat (every CPU: user, nice,
// system, irq, softirq) over the window divided by the transactions in it: both ends and the
// kernel work between them, which is what the two variants differ in. It is split by run
// time (schedstat) into the client process, the server process (this one: shards, echo
// goroutines, or the kernel echo server) and kernel threads (their sum is the "own" figure);
// "other" is the rest: other people's work, and softirqs that ran while a CPU was idle. That
// rest, as a share of the machine, is the run's contamination (about 0 on a quiet machine):
// above MaxForeign the run is repeated (Retries times at most) and the least contaminated
// attempt stands for its round. Before every run the benchmark waits (QuietWait at most) for
// a second in which the machine is less than MaxForeign busy. The server core's figure is the
// busy time of ServerCPUs. Softirq work runs in whatever task is current, so neither split is
// the ends' own cost: the receive path of the peer's kernel for a response runs in the
// sender's (the server's) context and on its core, and netchan's XDP program and the copy
// into its UMEM run in the client's. A run whose counts disagree (rrCheck) gets an error and
// stands for nothing.
//
// RunRR builds the lab, runs the rounds and removes the lab, also when ctx is cancelled. On an
// error after the lab was built the document holds the runs so far.
func RunRR(ctx context.Context, o RROptions) (doc *report.Document, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, lab.ErrNotRoot
	}
	if err := lab.SweepOrphans("ncr"); err != nil {
		o.Logf("bench tcp-rr: sweeping labs of killed benchmarks: %v", err)
	}
	if doc, err = rrDocument(o); err != nil {
		return nil, err
	}
	o.Logf("bench tcp-rr: building lab %s (%d queue(s)); client on CPU %d, server on CPUs %v; %d connections, %d-byte request/response, %v warm-up, %v window",
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
	b, err := newRRBench(&o, l)
	if err != nil {
		return doc, err
	}
	defer b.close()
	ep := b.ep
	procs := o.GOMAXPROCS
	if procs <= 0 {
		procs = len(o.ServerCPUs)
	}
	doc.Setup = []string{
		fmt.Sprintf("lab %s (pair, %d queue(s), static ARP on the peer): root %s (%s) <-> %s %s %s; transmit checksum offload, TSO and GSO off on both ends",
			o.LabName, o.Queues, ep.Iface, ep.MAC, ep.Peer.NS, ep.Peer.Iface, ep.Peer.Addr),
		fmt.Sprintf("client: %s in %s (kernel sockets, Go), %d connections, %d-byte request -> %d-byte response, every byte checked; pinned to CPU %d (-1: not pinned), GOMAXPROCS 1 when pinned",
			strings.Join(o.Client, " "), ep.Peer.NS, o.Conns, o.Size, o.Size, o.ClientCPU),
		fmt.Sprintf("server process (this one): every thread confined to CPUs %v for each run (sched_setaffinity on each thread, as taskset does; checked at the window's end), GOMAXPROCS %d",
			o.ServerCPUs, procs),
		fmt.Sprintf("netchan: echo.NewEcho (TCP echo on %s:7 as a stack.TCPApp on the connection's shard) + netchan.Start on %s, native XDP, %d shard(s) on CPUs %v, spin-idle %v (0: shards' default 50µs); no kernel IPv4 address on %s",
			ep.Addr.Addr(), ep.Iface, o.Queues, o.ServerCPUs, o.SpinIdle, ep.Iface),
		fmt.Sprintf("kernel: %s/32 peer %s on %s for the run, permanent neighbour entry for the peer; Go net.Listen echo server in the benchmark process (Read/Write with a %d-byte buffer per connection)",
			ep.Addr.Addr(), ep.Peer.Addr.Addr(), ep.Iface, o.Size),
		"veth: receive work runs in the sender's softirq (no threaded NAPI), on the sender's core",
	}
	err = doc.Execute(ctx, report.Plan{Measure: b.measure, Retries: o.Retries, Progress: o.Progress})
	if err != nil {
		return doc, err
	}
	if o.Profile != "" && slices.Contains(o.Variants, Netchan) {
		if _, _, err := quietMachine(ctx, b.cpus, o.MaxForeign, o.QuietWait, o.Logf); err != nil {
			return doc, err
		}
		rec, err := b.run(ctx, Netchan, o.Profile)
		if err != nil {
			if ctx.Err() != nil {
				return doc, ctx.Err()
			}
			doc.Setup = append(doc.Setup, fmt.Sprintf("profile %s: the profiled netchan run after the rounds failed: %v", o.Profile, err))
		} else {
			b.log("profiled", rec)
			// The profile is where the caller said, not necessarily beside the document: its
			// absolute path.
			prof, aerr := filepath.Abs(o.Profile)
			if aerr != nil {
				prof = o.Profile
			}
			doc.Files = append(doc.Files, prof)
			doc.Setup = append(doc.Setup, fmt.Sprintf("profile %s: CPU profile (pprof) of the benchmark process over the window of one more netchan run after the rounds, not in the figures: %.0f tx/s, %.2f µs/tx (server process %.2f, server core %.2f), foreign %.0f%%",
				o.Profile, rec.TPS, rec.UsPerTxn, rec.ServerUsPerTxn, rec.ServerCoreUsPerTxn, 100*rec.Foreign))
		}
	}
	return doc, nil
}

// measure is the plan's Measure: a quiet second, then one run; a run that failed gets its
// error (the benchmark goes on), a cancelled one stops the benchmark.
func (b *rrBench) measure(ctx context.Context, t report.Trial) (report.Run, error) {
	busy, waited, err := quietMachine(ctx, b.cpus, b.o.MaxForeign, b.o.QuietWait, b.o.Logf)
	if err != nil {
		return report.Run{}, err
	}
	rec, err := b.run(ctx, t.Variant, "")
	if err != nil && ctx.Err() != nil {
		return report.Run{}, ctx.Err()
	}
	rec.QuietBefore, rec.Waited = busy, waited
	if err != nil {
		b.o.Logf("bench tcp-rr: %s round %d: %v", t.Variant, t.Round, err)
	} else {
		b.log(fmt.Sprintf("round %d", t.Round), rec)
	}
	return rrToRun(rec, err, b.o.MaxForeign)
}

type rrBench struct {
	o    *RROptions
	ep   lab.Endpoint
	root *sysstat.NSLinks
	cpus []int
}

func newRRBench(o *RROptions, l *lab.Lab) (*rrBench, error) {
	b := &rrBench{o: o, ep: l.Netchan[0]}
	var err error
	if b.cpus, err = machineCPUs(); err != nil {
		return nil, err
	}
	if b.root, err = sysstat.OpenNS(""); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *rrBench) close() { b.root.Close() }

func (b *rrBench) log(what string, r RRRun) {
	c := r.Client
	tag := ""
	if r.Foreign > b.o.MaxForeign {
		tag = " CONTAMINATED"
	}
	check := "ok"
	if !r.Check.OK {
		check = "OFF: " + strings.Join(r.Check.Notes, "; ")
	}
	b.o.Logf("  %-8s %8.0f txn/s, %6.2f µs CPU/txn (client %5.2f, server %5.2f, kthreads %5.2f, other %5.2f; server core %5.2f, client core %5.2f), p50 %6.1f µs p99 %7.1f µs, machine %3.0f%% busy (others %2.0f%%, seen %2.0f%%), %.2f pkts/txn, retrans %d/%d, check %s%s",
		what, r.TPS, r.UsPerTxn, r.ClientUsPerTxn, r.ServerUsPerTxn, r.KThreadUsPerTxn, r.OtherUsPerTxn, r.ServerCoreUsPerTxn, r.ClientCoreUsPerTxn,
		c.P50, c.P99, 100*r.MachineBusy, 100*r.Foreign, 100*r.ForeignSeen, r.PktsPerTxn, c.TCP.RetransSegs, r.Window.Retransmits, check, tag)
}

// rrServer is one variant's server, running.
type rrServer interface {
	counts() RRCounts // cumulative, without the interface counters
	stop() error
}

// rrNetchan is netchan's echo service (echo.NewEcho: TCP echo on 7, HTTP on 80, ...) on the
// lab's netchan interface.
type rrNetchan struct {
	e      *echo.Echo
	in     *netchan.Instance
	cancel context.CancelFunc
	served <-chan error
}

// startEchoNetchan starts echo.NewEcho on ep's interface (which must carry no kernel IPv4
// address) through netchan.Start: native XDP, one shard per queue on cpus, the peer a static
// neighbour.
func startEchoNetchan(ep lab.Endpoint, queues int, cpus []int, spinIdle time.Duration) (*rrNetchan, error) {
	link, err := netlink.LinkByName(ep.Iface)
	if err != nil {
		return nil, err
	}
	if addrs, err := netlink.AddrList(link, netlink.FAMILY_V4); err != nil || len(addrs) != 0 {
		return nil, fmt.Errorf("netchan run: %s must carry no kernel IPv4 address (has %v, %v)", ep.Iface, addrs, err)
	}
	var mac [6]byte
	copy(mac[:], ep.Peer.MAC)
	e, err := echo.NewEcho(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{ep.Addr}}},
		StaticARP: []stack.StaticNeighbor{{Iface: 0, IP: ep.Peer.Addr.Addr(), MAC: mac}}})
	if err != nil {
		return nil, err
	}
	qs := make([]int, queues)
	for i := range qs {
		qs[i] = i
	}
	cfg := netchan.Config{Interfaces: []string{ep.Iface}, Queues: qs, XDPMode: xdpprog.ModeNative, CPUs: cpus,
		SpinIdle: spinIdle, Logf: func(string, ...any) {}}
	// A socket closed by the previous run frees its queue a little after close returns;
	// afxdp retries a busy queue for a while.
	in, err := netchan.Start(cfg, e.App())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served, err := e.Start(ctx)
	if err != nil {
		cancel()
		in.Stop()
		return nil, err
	}
	return &rrNetchan{e: e, in: in, cancel: cancel, served: served}, nil
}

func (s *rrNetchan) counts() RRCounts {
	t := s.e.Host.Stats().TCP
	c := RRCounts{SegmentsIn: t.SegmentsIn, SegmentsOut: t.SegmentsOut, Retransmits: t.Retransmits, Timeouts: t.Timeouts,
		PassiveOpens: t.PassiveOpens, ResetsOut: t.ResetsOut}
	for _, sh := range s.in.Snapshot() {
		c.ShardRx += sh.RxPackets
		c.ShardTx += sh.TxPackets
		c.Polls += sh.Polls
		c.Sleeps += sh.Sleeps
		c.Kicks += sh.Kicks
		c.Drops += sh.DropsTotal
		c.HandoffOut += sh.HandoffOut
	}
	return c
}

func (s *rrNetchan) stop() error {
	s.cancel()
	err := <-s.served
	return errors.Join(err, s.in.Stop())
}

// rrKernel is a Go echo server on kernel sockets, on the same veth end.
type rrKernel struct {
	ln    net.Listener
	undo  []func() error
	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func (b *rrBench) startKernel() (_ *rrKernel, err error) {
	s := &rrKernel{conns: map[net.Conn]bool{}}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	undo, err := kernelEndpoint(b.ep)
	s.undo = append(s.undo, undo...)
	if err != nil {
		return nil, err
	}
	if err := peerRoute(b.ep); err != nil {
		return nil, err
	}
	s.ln, err = net.Listen("tcp4", netip.AddrPortFrom(b.ep.Addr.Addr(), rrPort).String())
	if err != nil {
		return nil, fmt.Errorf("kernel run: %w", err)
	}
	size := b.o.Size
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				buf := make([]byte, size)
				for {
					n, err := c.Read(buf)
					if err != nil {
						break
					}
					if _, err := c.Write(buf[:n]); err != nil {
						break
					}
				}
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
	return s, nil
}

func (s *rrKernel) counts() RRCounts { return RRCounts{} }

// peerRoute checks that the kernel sends to ep's peer out of ep's interface. Every lab gives
// its ends the same addresses, so a kernel variant of another lab at the same time (another
// benchmark or lab test) routes the peer's address out of its own interface, and a server
// here then answers into the wrong veth: its client sees nothing but timeouts.
func peerRoute(ep lab.Endpoint) error {
	routes, err := netlink.RouteGet(ep.Peer.Addr.Addr().AsSlice())
	if err != nil {
		return fmt.Errorf("kernel run: route to the peer %s: %w", ep.Peer.Addr.Addr(), err)
	}
	for _, r := range routes {
		if r.LinkIndex != ep.Index {
			name := strconv.Itoa(r.LinkIndex)
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return fmt.Errorf("kernel run: the peer %s is routed out of %s, not %s: another lab's kernel variant holds its address (run lab tests and benchmarks one at a time)",
				ep.Peer.Addr.Addr(), name, ep.Iface)
		}
	}
	return nil
}

func (s *rrKernel) stop() error {
	if s.ln != nil {
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		s.ln = nil
	}
	var errs []error
	for i := len(s.undo) - 1; i >= 0; i-- {
		errs = append(errs, s.undo[i]())
	}
	s.undo = nil
	return errors.Join(errs...)
}

// rrSample is the state at one edge of the window.
type rrSample struct {
	t      time.Time
	cpu    map[int]sysstat.CPUTimes
	own    int64
	tasks  taskTimes
	counts RRCounts
}

// ifCounts adds the server's veth end's counters to srv's.
func ifCounts(root *sysstat.NSLinks, iface string, srv rrServer) (RRCounts, error) {
	c := srv.counts()
	st, err := root.Stats(iface)
	if err != nil {
		return c, err
	}
	c.IfRx, c.IfTx, c.IfRxDropped, c.IfTxDropped = st.RxPackets, st.TxPackets, st.RxDropped, st.TxDropped
	return c, nil
}

// sampleWindow reads everything at one edge of a window (cpus: every CPU of the machine); the
// slow scan of every process's threads runs outside the window (first at its start, last at
// its end). client is the client's process id, left out of the scan.
func sampleWindow(root *sysstat.NSLinks, iface string, cpus []int, srv rrServer, client int, opening bool) (s rrSample, err error) {
	if opening {
		s.tasks = readTaskTimes(os.Getpid(), client)
	}
	if s.counts, err = ifCounts(root, iface, srv); err != nil {
		return s, err
	}
	if opening {
		s.cpu, err = sysstat.ReadCPUTimes(cpus...)
		s.own, s.t = sysstat.ProcessRunNs(), time.Now()
	} else {
		s.t, s.own = time.Now(), sysstat.ProcessRunNs()
		s.cpu, err = sysstat.ReadCPUTimes(cpus...)
		s.tasks = readTaskTimes(os.Getpid(), client)
	}
	return s, err
}

// busyOf sums the busy time of the given CPUs in d.
func busyOf(d map[int]sysstat.CPUTimes, cpus []int) int64 {
	var s int64
	for _, c := range cpus {
		s += d[c].Busy()
	}
	return s
}

// rrClient is the client process.
type rrClient struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	stdout    strings.Builder
	errText   strings.Builder
	connected chan struct{}
	done      chan struct{}
	waitErr   error
}

func (b *rrBench) startClient(ctx context.Context) (*rrClient, error) {
	o := b.o
	args := []string{"netns", "exec", b.ep.Peer.NS, o.Client[0]}
	args = append(args, o.Client[1:]...)
	args = append(args, "--addr", netip.AddrPortFrom(b.ep.Addr.Addr(), rrPort).String(), "--conns", strconv.Itoa(o.Conns),
		"--size", strconv.Itoa(o.Size), "--cpu", strconv.Itoa(o.ClientCPU))
	c := &rrClient{cmd: exec.CommandContext(ctx, "ip", args...), connected: make(chan struct{}), done: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), RRClientEnv+"=1")
	c.cmd.Stdout = &c.stdout
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the client: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			if sc.Text() == rrConnected {
				once.Do(func() { close(c.connected) })
				continue
			}
			c.errText.WriteString(sc.Text() + "\n")
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() {
		defer close(c.done)
		wg.Wait()
		c.waitErr = c.cmd.Wait()
	}()
	return c, nil
}

func (c *rrClient) send(line string) error {
	_, err := io.WriteString(c.stdin, line+"\n")
	return err
}

// result closes stdin (the client stops if it has not yet) and waits for its report.
func (c *rrClient) result(ctx context.Context) (RRClientResult, error) {
	var r RRClientResult
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
		return r, errors.New("the client did not finish within 30s of stop")
	case <-ctx.Done():
		<-c.done
		return r, ctx.Err()
	}
	if c.waitErr != nil {
		return r, fmt.Errorf("client: %w: %s", c.waitErr, strings.TrimSpace(c.errText.String()))
	}
	if err := json.Unmarshal([]byte(c.stdout.String()), &r); err != nil {
		return r, fmt.Errorf("client printed %q: %w", c.stdout.String(), err)
	}
	return r, nil
}

// run measures one variant once; profile, if set, gets a CPU profile of this process over
// the window.
func (b *rrBench) run(ctx context.Context, variant string, profile string) (rec RRRun, err error) {
	o := b.o
	rec = RRRun{Profiled: profile != ""}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
		s, err := b.startKernel()
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
	whole0, err := ifCounts(b.root, b.ep.Iface, srv)
	if err != nil {
		return rec, err
	}
	cl, err := b.startClient(ctx)
	if err != nil {
		return rec, err
	}
	defer func() {
		if err != nil {
			cl.cmd.Process.Kill()
			<-cl.done
		}
	}()
	select {
	case <-cl.connected:
	case <-cl.done:
		return rec, fmt.Errorf("the client ended before connecting: %v: %s", cl.waitErr, strings.TrimSpace(cl.errText.String()))
	case <-time.After(30 * time.Second):
		return rec, errors.New("the client did not connect within 30s")
	case <-ctx.Done():
		return rec, ctx.Err()
	}
	if err := sleepCtx(ctx, o.Warmup); err != nil {
		return rec, err
	}
	s0, err := sampleWindow(b.root, b.ep.Iface, b.cpus, srv, cl.cmd.Process.Pid, true)
	if err != nil {
		return rec, err
	}
	if err := cl.send("start"); err != nil {
		return rec, fmt.Errorf("client: %w", err)
	}
	var pf *os.File
	if profile != "" {
		if pf, err = os.Create(profile); err == nil {
			if err = pprof.StartCPUProfile(pf); err != nil {
				pf.Close()
			}
		}
		if err != nil {
			return rec, fmt.Errorf("profile: %w", err)
		}
	}
	serr := sleepCtx(ctx, o.Duration)
	if pf != nil {
		pprof.StopCPUProfile()
		pf.Close()
	}
	if serr != nil {
		return rec, serr
	}
	if err := cl.send("stop"); err != nil {
		return rec, fmt.Errorf("client: %w", err)
	}
	s1, err := sampleWindow(b.root, b.ep.Iface, b.cpus, srv, cl.cmd.Process.Pid, false)
	if err != nil {
		return rec, err
	}
	rec.ThreadsOff, rec.Threads = threadsOutside(o.ServerCPUs)
	if rec.Client, err = cl.result(ctx); err != nil {
		return rec, err
	}
	if err := sleepCtx(ctx, 200*time.Millisecond); err != nil { // the last FINs and ACKs
		return rec, err
	}
	whole1, err := ifCounts(b.root, b.ep.Iface, srv)
	if err != nil {
		return rec, err
	}

	c := rec.Client
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
	rec.ForeignSeen = float64(since(s0.tasks.foreign, s1.tasks.foreign)) / machineNs
	ownNs := (s1.own - s0.own) + c.CPUNs + since(s0.tasks.kernel, s1.tasks.kernel)
	rec.Foreign = max(0, float64(rec.BusyNs-ownNs)/machineNs)
	if c.Seconds > 0 {
		rec.TPS = float64(c.Transactions) / c.Seconds
	}
	if rec.TPS > 0 {
		// Per second of this process's window, divided by the client's transactions per
		// second: the two windows differ by the time a line takes through a pipe.
		perTxn := func(ns int64) float64 { return float64(ns) / w.Seconds() / rec.TPS / 1e3 }
		rec.UsPerTxn = perTxn(rec.BusyNs)
		rec.ServerUsPerTxn = perTxn(s1.own - s0.own)
		rec.KThreadUsPerTxn = perTxn(since(s0.tasks.kernel, s1.tasks.kernel))
		rec.ClientUsPerTxn = float64(c.CPUNs) / c.Seconds / rec.TPS / 1e3
		rec.OwnUsPerTxn = rec.ServerUsPerTxn + rec.KThreadUsPerTxn + rec.ClientUsPerTxn
		rec.OtherUsPerTxn = rec.UsPerTxn - rec.OwnUsPerTxn
		rec.ServerCoreUsPerTxn = perTxn(busyOf(rec.CPU, o.ServerCPUs))
		if o.ClientCPU >= 0 {
			rec.ClientCoreUsPerTxn = perTxn(busyOf(rec.CPU, []int{o.ClientCPU}))
		}
		rec.PktsPerTxn = float64(rec.Window.IfRx+rec.Window.IfTx) / w.Seconds() / rec.TPS
	}
	rec.Check = rrCheck(variant, o.Conns, c, rec.Whole)
	if rec.ThreadsOff > 0 {
		rec.Check.OK = false
		rec.Check.Notes = append(rec.Check.Notes, fmt.Sprintf("%d of the server process's %d threads were allowed outside CPUs %v",
			rec.ThreadsOff, rec.Threads, o.ServerCPUs))
	}
	return rec, nil
}

// rrCheck compares the client's figures with the server side's over the whole run: every
// request reached the server's interface (and, for netchan, its shard and TCP) as at least
// one packet and every response left it as at least one, the client checked every byte, and
// the client namespace's TCP segments match the interface's packets.
func rrCheck(variant string, conns int, c RRClientResult, whole RRCounts) RRCheck {
	var notes []string
	fail := func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) }
	if c.Transactions == 0 {
		fail("no transaction in the window")
	}
	if len(c.Errors) > 0 {
		fail("client errors: %s", strings.Join(c.Errors, "; "))
	}
	if c.Mismatches > 0 {
		fail("%d echoes differed from their request (first: %s)", c.Mismatches, c.FirstMismatch)
	}
	if c.BytesChecked != c.Total*uint64(c.Size) {
		fail("client checked %d bytes, want %d transactions × %d", c.BytesChecked, c.Total, c.Size)
	}
	if whole.IfRx < c.Total || whole.IfTx < c.Total {
		fail("interface rx %d / tx %d packets for %d transactions", whole.IfRx, whole.IfTx, c.Total)
	}
	// The peer's segments are all that crosses the veth besides the odd ARP packet.
	near := func(what string, a, b uint64) {
		if relDiff(a, b) > 0.005 && max(a, b)-min(a, b) > 16 {
			fail("%s: %d vs %d", what, a, b)
		}
	}
	near("client namespace TCP out segments vs interface rx", c.TCPWhole.OutSegs, whole.IfRx)
	near("client namespace TCP in segments vs interface tx", c.TCPWhole.InSegs, whole.IfTx)
	if variant == Netchan {
		if whole.PassiveOpens < uint64(conns) {
			fail("netchan accepted %d connections, want %d", whole.PassiveOpens, conns)
		}
		if whole.SegmentsIn < c.Total || whole.SegmentsOut < c.Total {
			fail("netchan TCP segments in %d / out %d for %d transactions", whole.SegmentsIn, whole.SegmentsOut, c.Total)
		}
		if whole.ShardRx < whole.SegmentsIn {
			fail("shards received %d packets, TCP %d segments", whole.ShardRx, whole.SegmentsIn)
		}
		near("shard rx vs interface rx", whole.ShardRx, whole.IfRx)
		near("shard tx vs interface tx", whole.ShardTx, whole.IfTx)
	}
	return RRCheck{OK: len(notes) == 0, Notes: notes}
}
