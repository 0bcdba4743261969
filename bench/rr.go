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
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan"
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
	// ServerCPUs pin netchan's shards (shard i on ServerCPUs[i % len]); default: the first CPU
	// that is not ClientCPU. The server process's other threads (socket users, the kernel
	// variant's echo server) are not pinned.
	ServerCPUs []int `json:"server_cpus"`
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
		return fmt.Errorf("bench rr: size %d: want 16..65536 bytes", o.Size)
	}
	if o.Queues <= 0 {
		o.Queues = 1
	}
	cpus, err := machineCPUs()
	if err != nil {
		return err
	}
	if o.ClientCPU >= 0 && !slices.Contains(cpus, o.ClientCPU) {
		return fmt.Errorf("bench rr: client CPU %d is not online (have %v)", o.ClientCPU, cpus)
	}
	if len(o.ServerCPUs) == 0 {
		for _, c := range cpus {
			if c != o.ClientCPU {
				o.ServerCPUs = []int{c}
				break
			}
		}
		if len(o.ServerCPUs) == 0 {
			o.ServerCPUs = []int{cpus[0]}
		}
	}
	if len(o.Variants) == 0 {
		o.Variants = []string{Netchan, Kernel}
	}
	for _, v := range o.Variants {
		if v != Netchan && v != Kernel {
			return fmt.Errorf("bench rr: variant %q: want %s or %s", v, Netchan, Kernel)
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
		return errors.New("bench rr: RROptions.Client must name the program that runs the client")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
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

// RRRun is one variant once.
type RRRun struct {
	Variant  string `json:"variant"`
	Round    int    `json:"round"` // from 0; -1: the profiled run after the rounds
	Attempt  int    `json:"attempt"`
	Loadavg  string `json:"loadavg"`
	Err      string `json:"error,omitempty"`
	Profiled bool   `json:"profiled,omitempty"`
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
	// MachineBusy is the busy share of all CPUs (1 = every CPU all the time).
	MachineBusy float64 `json:"machine_busy"`
	// Foreign is the share of the machine (all CPUs) busy outside the client, the server
	// process and kernel threads: other people's processes, including those that started and
	// ended inside the window, which no scan of /proc sees. On a quiet machine it is about 0
	// (ticks of /proc/stat against exact run times); above MaxForeign the run is
	// contaminated. ForeignSeen is the part of it that other processes alive at the end of
	// the window account for.
	Foreign      float64 `json:"foreign_share"`
	ForeignSeen  float64 `json:"foreign_seen_share"`
	Contaminated bool    `json:"contaminated"`
	Used         bool    `json:"used"` // stands for its round in the figures
	// QuietBefore is the machine's busy share in the last second before the run started
	// (after waiting up to QuietWait for it to fall below MaxForeign), Waited how long that took.
	QuietBefore float64       `json:"busy_before"`
	Waited      time.Duration `json:"waited_ns"`
	// PktsPerTxn counts the server's veth end's packets (both ways) per transaction.
	PktsPerTxn float64 `json:"packets_per_txn"`
	// Window are the server side's counters over the window, Whole from the server's start to
	// after the client ended.
	Window RRCounts `json:"window"`
	Whole  RRCounts `json:"whole"`
	Check  RRCheck  `json:"check"`
}

// RRFigure is one variant over the rounds (medians).
type RRFigure struct {
	Variant         string `json:"variant"`
	Runs            int    `json:"runs"`
	Clean           int    `json:"clean_runs"`
	TPS             Stat   `json:"tps"`
	UsPerTxn        Stat   `json:"us_per_txn"`
	ClientUsPerTxn  Stat   `json:"client_us_per_txn"`
	ServerUsPerTxn  Stat   `json:"server_us_per_txn"`
	KThreadUsPerTxn Stat   `json:"kthreads_us_per_txn"`
	OtherUsPerTxn   Stat   `json:"other_us_per_txn"`
	OwnUsPerTxn     Stat   `json:"own_us_per_txn"`
	P50             Stat   `json:"p50_us"`
	P99             Stat   `json:"p99_us"`
	MachineBusy     Stat   `json:"machine_busy"`
	PktsPerTxn      Stat   `json:"packets_per_txn"`
	ClientRetrans   uint64 `json:"client_retrans_segs"` // summed over the runs in the figure
}

// RRReport is a whole request/response benchmark.
type RRReport struct {
	Kind       string     `json:"kind"` // "rr"
	Command    string     `json:"command"`
	Started    time.Time  `json:"started"`
	Finished   time.Time  `json:"finished"`
	Machine    Machine    `json:"machine"`
	Options    RROptions  `json:"options"`
	Setup      []string   `json:"setup"`
	Figures    []RRFigure `json:"figures"`
	Ratios     []Ratio    `json:"ratios"`
	Runs       []RRRun    `json:"runs"`
	ProfileRun *RRRun     `json:"profile_run,omitempty"`
	// Loadavg is /proc/loadavg before and after.
	LoadavgStart string `json:"loadavg_start"`
	LoadavgEnd   string `json:"loadavg_end"`
}

// RunRR is `netchan bench rr`: TCP request/response over the lab veth, netchan's echo service against a
// Go echo server on kernel sockets, with the same kernel-socket client.
//
// One pair lab (name "ncr" + 4 random characters, removed afterwards, also on error or
// Ctrl-C). Each round runs every variant once, in the order given (netchan, kernel, netchan,
// kernel, ... by default):
//
//	netchan  echo.NewEcho on netchan's veth end (no kernel IPv4 address on it) with
//	         netchan.Start, native XDP, one shard per queue pinned to ServerCPUs, SpinIdle as
//	         given (default: the shards' own, as `netchan echo` runs); TCP echo on port 7
//	         (io.Copy on netchan's net.Conn).
//	kernel   the same veth end gets 198.18.0.1/32 (peer 198.18.0.2) for the run, and a Go
//	         server in this process echoes on a net.Listen socket: per connection a loop of
//	         Read and Write with a Size-byte buffer. Address and neighbour entry go when the
//	         run ends.
//
// The client (rrclient.go) is the same in both: a Go program on kernel sockets in the peer
// namespace, pinned to ClientCPU, Conns connections each doing Size-byte request → Size-byte
// response in a loop, every echoed byte checked. After Warmup the measured window (Duration)
// opens; the client counts the transactions completed in it and their latencies (p50, p99).
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
// a second in which the machine is less than MaxForeign busy. Softirq work runs in whatever task is current, so the split
// between client and server is not the ends' own cost: the receive path of the peer's
// kernel for a response runs in the sender's (the server's) context, and netchan's XDP
// program and the copy into its UMEM run in the client's.
//
// RunRR builds the lab, runs the rounds and removes the lab, also when ctx is cancelled.
func RunRR(ctx context.Context, o RROptions) (rep *RRReport, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, lab.ErrNotRoot
	}
	if err := lab.SweepOrphans("ncr"); err != nil {
		o.Logf("bench rr: sweeping labs of killed benchmarks: %v", err)
	}
	rep = &RRReport{Kind: "rr", Command: o.Command, Started: time.Now(), Machine: machine(), LoadavgStart: sysstat.Loadavg()}
	o.Logf("bench rr: building lab %s (%d queue(s)); client on CPU %d, netchan's shards on CPUs %v; %d connections, %d-byte request/response, %v warm-up, %v window",
		o.LabName, o.Queues, o.ClientCPU, o.ServerCPUs, o.Conns, o.Size, o.Warmup, o.Duration)
	l, err := lab.Up(ctx, lab.Config{Name: o.LabName, Layout: lab.LayoutPair, QueueCount: o.Queues, StaticARP: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		if derr := lab.Down(o.LabName); derr != nil {
			err = errors.Join(err, fmt.Errorf("removing lab %s: %w", o.LabName, derr))
		}
	}()
	b, err := newRRBench(ctx, &o, l)
	if err != nil {
		return nil, err
	}
	defer b.close()
	ep := b.ep
	rep.Setup = []string{
		fmt.Sprintf("lab %s (pair, %d queue(s), static ARP on the peer): root %s (%s) <-> %s %s %s; transmit checksum offload, TSO and GSO off on both ends",
			o.LabName, o.Queues, ep.Iface, ep.MAC, ep.Peer.NS, ep.Peer.Iface, ep.Peer.Addr),
		fmt.Sprintf("client: %s in %s (kernel sockets, Go), %d connections, %d-byte request -> %d-byte response, every byte checked; pinned to CPU %d (-1: not pinned), GOMAXPROCS 1 when pinned",
			strings.Join(o.Client, " "), ep.Peer.NS, o.Conns, o.Size, o.Size, o.ClientCPU),
		fmt.Sprintf("netchan: echo.NewEcho (TCP echo on %s:7, io.Copy on netchan's net.Conn) + netchan.Start on %s, native XDP, %d shard(s) on CPUs %v, spin-idle %v (0: shards' default 50µs); no kernel IPv4 address on %s",
			ep.Addr.Addr(), ep.Iface, o.Queues, o.ServerCPUs, o.SpinIdle, ep.Iface),
		fmt.Sprintf("kernel: %s/32 peer %s on %s for the run, permanent neighbour entry for the peer; Go net.Listen echo server in the benchmark process (Read/Write with a %d-byte buffer per connection), not pinned",
			ep.Addr.Addr(), ep.Peer.Addr.Addr(), ep.Iface, o.Size),
	}
	for round := 0; round < o.Runs; round++ {
		for _, v := range o.Variants {
			var rec RRRun
			for attempt := 0; ; attempt++ {
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				busy, waited, err := b.waitQuiet(ctx)
				if err != nil {
					return rep, err
				}
				rec, err = b.run(v, round, "")
				rec.QuietBefore, rec.Waited = busy, waited
				rec.Attempt = attempt
				if err != nil {
					rec.Err = err.Error()
					o.Logf("bench rr: %s round %d: %v", v, round, err)
					if ctx.Err() != nil {
						return rep, ctx.Err()
					}
					break
				}
				rec.Contaminated = rec.Foreign > o.MaxForeign
				b.log(rec)
				if !rec.Contaminated || attempt >= o.Retries {
					break
				}
				rep.Runs = append(rep.Runs, rec) // kept, marked, not in the figures
			}
			rep.Runs = append(rep.Runs, rec)
		}
	}
	if o.Profile != "" && slices.Contains(o.Variants, Netchan) {
		if _, _, err := b.waitQuiet(ctx); err != nil {
			return rep, err
		}
		rec, err := b.run(Netchan, -1, o.Profile)
		if err != nil {
			rec.Err = err.Error()
			o.Logf("bench rr: profiled netchan run: %v", err)
		} else {
			rec.Contaminated = rec.Foreign > o.MaxForeign
			b.log(rec)
			o.Logf("bench rr: CPU profile of the netchan process over that window: %s", o.Profile)
		}
		rep.ProfileRun = &rec
	}
	rep.Finished = time.Now()
	rep.LoadavgEnd = sysstat.Loadavg()
	rep.Options = o
	rep.summarize()
	return rep, nil
}

type rrBench struct {
	ctx  context.Context
	o    *RROptions
	ep   lab.Endpoint
	root *sysstat.NSLinks
	cpus []int
}

func newRRBench(ctx context.Context, o *RROptions, l *lab.Lab) (*rrBench, error) {
	b := &rrBench{ctx: ctx, o: o, ep: l.Netchan[0]}
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

// waitQuiet waits, up to QuietWait, for one second in which the machine is less than
// MaxForeign busy, and returns the last second's busy share and the time it waited.
func (b *rrBench) waitQuiet(ctx context.Context) (float64, time.Duration, error) {
	start := time.Now()
	if b.o.QuietWait < 0 {
		return 0, 0, nil
	}
	for {
		c0, err := sysstat.ReadCPUTimes(b.cpus...)
		if err != nil {
			return 0, 0, err
		}
		t0 := time.Now()
		if err := sleepCtx(ctx, time.Second); err != nil {
			return 0, 0, err
		}
		c1, err := sysstat.ReadCPUTimes(b.cpus...)
		if err != nil {
			return 0, 0, err
		}
		d := map[int]sysstat.CPUTimes{}
		for cpu, t := range c1 {
			d[cpu] = t.Sub(c0[cpu])
		}
		busy := float64(cpuSum(d).Busy()) / (float64(time.Since(t0)) * float64(len(b.cpus)))
		waited := time.Since(start)
		if busy < b.o.MaxForeign || waited >= b.o.QuietWait {
			if busy >= b.o.MaxForeign {
				b.o.Logf("bench rr: the machine stayed %.0f%% busy for %v; running anyway", 100*busy, b.o.QuietWait)
			}
			return busy, waited, nil
		}
	}
}

func (b *rrBench) log(r RRRun) {
	c := r.Client
	tag := ""
	if r.Contaminated {
		tag = " CONTAMINATED"
	}
	if r.Profiled {
		tag += " (profiled)"
	}
	check := "ok"
	if !r.Check.OK {
		check = "OFF: " + strings.Join(r.Check.Notes, "; ")
	}
	b.o.Logf("  %-7s round %d: %8.0f txn/s, %6.2f µs CPU/txn (client %5.2f, server %5.2f, kthreads %5.2f, other %5.2f), p50 %6.1f µs p99 %7.1f µs, machine %3.0f%% busy (others %2.0f%%, seen %2.0f%%), %.2f pkts/txn, retrans %d/%d, check %s; load %s%s",
		r.Variant, r.Round, r.TPS, r.UsPerTxn, r.ClientUsPerTxn, r.ServerUsPerTxn, r.KThreadUsPerTxn, r.OtherUsPerTxn,
		c.P50, c.P99, 100*r.MachineBusy, 100*r.Foreign, 100*r.ForeignSeen, r.PktsPerTxn, c.TCP.RetransSegs, r.Window.Retransmits, check, r.Loadavg, tag)
}

// rrServer is one variant's server, running.
type rrServer interface {
	counts() RRCounts // cumulative, without the interface counters
	stop() error
}

// rrNetchan is netchan's echo service on the lab's netchan interface.
type rrNetchan struct {
	e      *echo.Echo
	in     *netchan.Instance
	cancel context.CancelFunc
	served <-chan error
}

func (b *rrBench) startNetchan() (*rrNetchan, error) {
	link, err := netlink.LinkByName(b.ep.Iface)
	if err != nil {
		return nil, err
	}
	if addrs, err := netlink.AddrList(link, netlink.FAMILY_V4); err != nil || len(addrs) != 0 {
		return nil, fmt.Errorf("netchan run: %s must carry no kernel IPv4 address (has %v, %v)", b.ep.Iface, addrs, err)
	}
	var mac [6]byte
	copy(mac[:], b.ep.Peer.MAC)
	e, err := echo.NewEcho(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{b.ep.Addr}}},
		StaticARP: []stack.StaticNeighbor{{Iface: 0, IP: b.ep.Peer.Addr.Addr(), MAC: mac}}})
	if err != nil {
		return nil, err
	}
	spec := e.App()
	queues := make([]int, b.o.Queues)
	for i := range queues {
		queues[i] = i
	}
	cfg := netchan.Config{Interfaces: []string{b.ep.Iface}, Queues: queues, XDPMode: xdpprog.ModeNative, CPUs: b.o.ServerCPUs,
		SpinIdle: b.o.SpinIdle, Logf: func(string, ...any) {}}
	// A socket closed by the previous run frees its queue a little after close returns;
	// afxdp retries a busy queue for a while.
	in, err := netchan.Start(cfg, spec)
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

func (b *rrBench) counts(srv rrServer) (RRCounts, error) {
	c := srv.counts()
	st, err := b.root.Stats(b.ep.Iface)
	if err != nil {
		return c, err
	}
	c.IfRx, c.IfTx, c.IfRxDropped, c.IfTxDropped = st.RxPackets, st.TxPackets, st.RxDropped, st.TxDropped
	return c, nil
}

// sample reads everything; the slow scan of every process's threads runs outside the window
// (first at its start, last at its end).
func (b *rrBench) sample(srv rrServer, clientPID int, opening bool) (s rrSample, err error) {
	if opening {
		s.tasks = readTaskTimes(os.Getpid(), clientPID)
	}
	if s.counts, err = b.counts(srv); err != nil {
		return s, err
	}
	if opening {
		s.cpu, err = sysstat.ReadCPUTimes(b.cpus...)
		s.own, s.t = sysstat.ProcessRunNs(), time.Now()
	} else {
		s.t, s.own = time.Now(), sysstat.ProcessRunNs()
		s.cpu, err = sysstat.ReadCPUTimes(b.cpus...)
		s.tasks = readTaskTimes(os.Getpid(), clientPID)
	}
	return s, err
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
func (b *rrBench) run(variant string, round int, profile string) (rec RRRun, err error) {
	o := b.o
	rec = RRRun{Variant: variant, Round: round, Loadavg: sysstat.Loadavg(), Profiled: profile != ""}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	var srv rrServer
	switch variant {
	case Netchan:
		s, err := b.startNetchan()
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
	whole0, err := b.counts(srv)
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
	s0, err := b.sample(srv, cl.cmd.Process.Pid, true)
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
	s1, err := b.sample(srv, cl.cmd.Process.Pid, false)
	if err != nil {
		return rec, err
	}
	if rec.Client, err = cl.result(ctx); err != nil {
		return rec, err
	}
	if err := sleepCtx(ctx, 200*time.Millisecond); err != nil { // the last FINs and ACKs
		return rec, err
	}
	whole1, err := b.counts(srv)
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
	rec.MachineBusy = float64(rec.BusyNs) / (float64(w) * float64(len(b.cpus)))
	machineNs := float64(w) * float64(len(b.cpus))
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
		rec.PktsPerTxn = float64(rec.Window.IfRx+rec.Window.IfTx) / w.Seconds() / rec.TPS
	}
	rec.Check = rrCheck(variant, o.Conns, c, rec.Whole)
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

// summarize computes the figures (each round stands by its least contaminated attempt) and
// the ratios.
func (r *RRReport) summarize() {
	o := r.Options
	r.Figures, r.Ratios = nil, nil
	used := map[string]map[int]*RRRun{}
	for i := range r.Runs {
		run := &r.Runs[i]
		run.Used = false
		if run.Err != "" || !run.Check.OK || run.Round < 0 {
			continue
		}
		if used[run.Variant] == nil {
			used[run.Variant] = map[int]*RRRun{}
		}
		if cur := used[run.Variant][run.Round]; cur == nil || run.Foreign < cur.Foreign {
			used[run.Variant][run.Round] = run
		}
	}
	for _, v := range o.Variants {
		f := RRFigure{Variant: v}
		var tps, us, cl, sv, kt, ot, own, p50, p99, busy, pk []float64
		for round := 0; round < o.Runs; round++ {
			run := used[v][round]
			if run == nil {
				continue
			}
			run.Used = true
			f.Runs++
			if !run.Contaminated {
				f.Clean++
			}
			tps, us = append(tps, run.TPS), append(us, run.UsPerTxn)
			cl, sv = append(cl, run.ClientUsPerTxn), append(sv, run.ServerUsPerTxn)
			kt, ot = append(kt, run.KThreadUsPerTxn), append(ot, run.OtherUsPerTxn)
			own = append(own, run.OwnUsPerTxn)
			p50, p99 = append(p50, run.Client.P50), append(p99, run.Client.P99)
			busy, pk = append(busy, run.MachineBusy), append(pk, run.PktsPerTxn)
			f.ClientRetrans += run.Client.TCP.RetransSegs
		}
		f.TPS, f.UsPerTxn, f.ClientUsPerTxn, f.ServerUsPerTxn = newStat(tps), newStat(us), newStat(cl), newStat(sv)
		f.KThreadUsPerTxn, f.OtherUsPerTxn, f.P50, f.P99 = newStat(kt), newStat(ot), newStat(p50), newStat(p99)
		f.MachineBusy, f.PktsPerTxn, f.OwnUsPerTxn = newStat(busy), newStat(pk), newStat(own)
		r.Figures = append(r.Figures, f)
	}
	fig := func(v string) *RRFigure {
		for i := range r.Figures {
			if r.Figures[i].Variant == v && r.Figures[i].Runs > 0 {
				return &r.Figures[i]
			}
		}
		return nil
	}
	n, k := fig(Netchan), fig(Kernel)
	if n == nil || k == nil {
		return
	}
	ratio := func(name string, get func(*RRRun) float64, med func(*RRFigure) float64, target string, ok func(float64) bool) {
		if med(k) == 0 {
			return
		}
		rt := Ratio{Name: name, Value: med(n) / med(k), Target: target}
		var paired []float64
		for round := 0; round < o.Runs; round++ {
			a, b := used[Netchan][round], used[Kernel][round]
			if a != nil && b != nil && get(b) != 0 {
				paired = append(paired, get(a)/get(b))
			}
		}
		rt.Paired = newStat(paired).Median
		if ok != nil {
			met := ok(rt.Value)
			rt.Met = &met
		}
		r.Ratios = append(r.Ratios, rt)
	}
	ratio("transactions/s netchan/kernel", func(x *RRRun) float64 { return x.TPS }, func(f *RRFigure) float64 { return f.TPS.Median }, "", nil)
	ratio("CPU/transaction netchan/kernel (whole machine)", func(x *RRRun) float64 { return x.UsPerTxn },
		func(f *RRFigure) float64 { return f.UsPerTxn.Median }, "< 1 (seed: 1/3–1/2)", func(v float64) bool { return v < 1 })
	ratio("own CPU/transaction netchan/kernel (client + server + kernel threads)", func(x *RRRun) float64 { return x.OwnUsPerTxn },
		func(f *RRFigure) float64 { return f.OwnUsPerTxn.Median }, "", nil)
	ratio("server-process CPU/transaction netchan/kernel", func(x *RRRun) float64 { return x.ServerUsPerTxn },
		func(f *RRFigure) float64 { return f.ServerUsPerTxn.Median }, "", nil)
	ratio("p50 latency netchan/kernel", func(x *RRRun) float64 { return x.Client.P50 }, func(f *RRFigure) float64 { return f.P50.Median }, "", nil)
	ratio("p99 latency netchan/kernel", func(x *RRRun) float64 { return x.Client.P99 }, func(f *RRFigure) float64 { return f.P99.Median }, "", nil)
}

// Table renders the figures and ratios as Markdown.
func (r *RRReport) Table() string {
	var sb strings.Builder
	sb.WriteString("| rr | transactions/s (median) | min–max | CPU µs/txn (whole machine) | min–max | own µs/txn | client | server process | kernel threads | p50 µs | p99 µs | machine busy | packets/txn | runs (clean) |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range r.Figures {
		fmt.Fprintf(&sb, "| %s | %.0f | %.0f–%.0f | %.2f | %.2f–%.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %.1f | %.0f%% | %.2f | %d (%d) |\n",
			f.Variant, f.TPS.Median, f.TPS.Min, f.TPS.Max, f.UsPerTxn.Median, f.UsPerTxn.Min, f.UsPerTxn.Max, f.OwnUsPerTxn.Median,
			f.ClientUsPerTxn.Median, f.ServerUsPerTxn.Median, f.KThreadUsPerTxn.Median, f.P50.Median, f.P99.Median,
			100*f.MachineBusy.Median, f.PktsPerTxn.Median, f.Runs, f.Clean)
	}
	writeRatios(&sb, r.Ratios)
	return sb.String()
}

// ReadRRReport loads a report written by Write and recomputes its figures and ratios.
func ReadRRReport(path string) (*RRReport, error) { return readReport[RRReport](path) }

// Write stores the report as DIR/rr-YYYYMMDD-HHMMSS.json and returns the path.
func (r *RRReport) Write(dir string) (string, error) {
	return writeReport(dir, "rr", r.Started, r)
}
