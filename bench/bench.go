package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/netchan/netchan/bench/stats"
	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// Kind is what is measured.
type Kind string

const (
	// KindRx: the generator sends, the receiver drops.
	KindRx Kind = "rx"
	// KindReflect: the receiver sends every packet back; the generator's side counts replies.
	KindReflect Kind = "reflect"
)

// Phases of a run.
const (
	// PhaseMax: the generator sends as fast as it can; the figure is packets/s.
	PhaseMax = "max"
	// PhaseLoad: the generator sends at Options.LoadRate; the figure is receive-core CPU per packet.
	PhaseLoad = "load"
)

// benchPort is the UDP destination port of the generated traffic.
const benchPort = 9

// Options describe a benchmark.
type Options struct {
	Kind     Kind     `json:"kind"`
	Variants []string `json:"variants"` // default: every variant of the kind
	Phases   []string `json:"phases"`   // default: max and load
	Runs     int      `json:"runs"`     // rounds; each round runs every variant once per phase (default 5)
	// Warmup runs before the measured window starts; Window is the measured time.
	Warmup time.Duration `json:"warmup_ns"`
	Window time.Duration `json:"window_ns"`
	Size   int           `json:"frame_size"` // frame size without FCS (default 60)
	Flows  int           `json:"flows"`      // distinct source ports (default 4)
	Queues int           `json:"queues"`     // veth queues; the generator sends on all (default 1)
	Rate   int           `json:"load_rate"`  // offered packets/s of the load phase (default 200000)
	// Engine is the generator's in the max phase: trafficgen.EngineXDP (default: XDP_TX in
	// live-frame mode, 5-8 Mpps here, so it outruns every receiver) or trafficgen.EngineAFXDP
	// (AF_XDP copy-mode transmit on every queue, 0.7-0.9 Mpps here: below what the AF_XDP
	// receivers take, so at full load they measure the generator). The load phase always uses
	// AF_XDP, which paces smoothly (bursts of 64); the live-frame engine can only pace in bursts
	// of 10 ms (one BPF_PROG_RUN call costs about 2 ms), which overflow veth's 256-entry ring.
	Engine string `json:"engine"`
	GenCPU int    `json:"gen_cpu"`     // the generator's core (default 0)
	RxCPU  int    `json:"receive_cpu"` // the receiver's and its NAPI thread's core (default 1)
	// MaxForeign is the share of the receive core that other processes may take during a
	// run (its busy time minus the receiver's own threads') before the run counts as
	// contaminated: it is repeated up to Retries times, and contaminated runs are kept in the
	// report but left out of the figures when enough clean ones exist. Default 0.10 and 2.
	MaxForeign float64 `json:"max_foreign"`
	Retries    int     `json:"retries"`
	// Sizes of both AF_XDP drivers (netchan's port and asavie): defaults are netchan's.
	BatchSize int `json:"batch_size"`  // 64
	NumFrames int `json:"umem_frames"` // 4096
	RingSize  int `json:"ring_size"`   // 2048
	// SpinIdle is how long the AF_XDP loops (shard, netchan-loop, asavie) spin without work
	// before they sleep in poll(2). 0 (default): not at all. The receiver shares its core with
	// the NAPI thread that fills its ring, so spinning takes time from the very work it waits
	// for (measured: more CPU per packet, fewer packets/s); 50µs is the shard's own default.
	SpinIdle  time.Duration        `json:"spin_idle_ns"`
	LabName   string               `json:"lab"`     // default ncb + 4 random characters
	Command   string               `json:"command"` // the command line, recorded in the report
	Generator []string             `json:"-"`       // argv that runs trafficgen.Main (netchan lab send, or a test binary)
	Logf      func(string, ...any) `json:"-"`
}

func (o *Options) defaults() error {
	switch o.Kind {
	case KindRx:
		if len(o.Variants) == 0 {
			o.Variants = []string{Kernel, Netchan, NetchanLoop, Asavie, XDPDrop}
		}
	case KindReflect:
		if len(o.Variants) == 0 {
			o.Variants = []string{Kernel, Netchan, NetchanLoop, Asavie}
		}
		if slices.Contains(o.Variants, XDPDrop) {
			return fmt.Errorf("bench reflect: %s only receives", XDPDrop)
		}
	default:
		return fmt.Errorf("bench: kind %q: want rx or reflect", o.Kind)
	}
	if len(o.Phases) == 0 {
		o.Phases = []string{PhaseMax, PhaseLoad}
	}
	for _, p := range o.Phases {
		if p != PhaseMax && p != PhaseLoad {
			return fmt.Errorf("bench: phase %q: want max or load", p)
		}
	}
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.Warmup == 0 {
		o.Warmup = time.Second
	}
	if o.Window == 0 {
		o.Window = 4 * time.Second
	}
	if o.Size == 0 {
		o.Size = 60
	}
	if o.Flows == 0 {
		o.Flows = 4
	}
	if o.Queues == 0 {
		o.Queues = 1
	}
	if o.Rate == 0 {
		o.Rate = 200000
	}
	switch o.Engine {
	case "":
		o.Engine = trafficgen.EngineXDP
	case trafficgen.EngineAFXDP:
	case trafficgen.EngineXDP:
		if o.Queues > 1 {
			return fmt.Errorf("bench: the %s engine sends on the queue of its core only: use --queues 1", o.Engine)
		}
	default:
		return fmt.Errorf("bench: engine %q: want %s or %s", o.Engine, trafficgen.EngineAFXDP, trafficgen.EngineXDP)
	}
	if o.GenCPU == o.RxCPU {
		if o.GenCPU == 0 {
			o.RxCPU = 1
		} else {
			return fmt.Errorf("bench: generator and receiver need different CPUs (both %d)", o.GenCPU)
		}
	}
	if o.BatchSize == 0 {
		o.BatchSize = 64
	}
	if o.NumFrames == 0 {
		o.NumFrames = 4096
	}
	if o.RingSize == 0 {
		o.RingSize = 2048
	}
	if o.LabName == "" {
		o.LabName = randomName("ncb")
	}
	if o.MaxForeign == 0 {
		o.MaxForeign = 0.10
	}
	if o.Retries == 0 {
		o.Retries = 2
	}
	if o.SpinIdle <= 0 {
		o.SpinIdle = time.Nanosecond // the drivers read 0 as their default: ask for (almost) none
	}
	if len(o.Generator) == 0 {
		return errors.New("bench: Options.Generator must name the program that runs the traffic generator")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

func randomName(prefix string) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 7-len(prefix))
	rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return prefix + string(b)
}

// Stat is a figure over the runs.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Values []float64 `json:"values"`
}

func newStat(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	return Stat{Median: stats.Median(v), Min: slices.Min(v), Max: slices.Max(v), Values: v}
}

// Figure is one variant in one phase, over the runs.
type Figure struct {
	Variant string `json:"variant"`
	Phase   string `json:"phase"`
	Offered int    `json:"offered_pps"` // 0: as fast as the generator can
	Runs    int    `json:"runs"`        // runs in the figure: one per round
	Clean   int    `json:"clean_runs"`  // of those, runs that had the receive core to themselves
	// Noisy: some round had no clean attempt; its least contaminated one is in the figure.
	Noisy bool `json:"noisy,omitempty"`
	// PPS is packets/s handled: received (rx), or replies that came back to the generator's
	// interface (reflect).
	PPS Stat `json:"pps"`
	// TxPPS is what the receiver sent per second (reflect), dropped on the way or not.
	TxPPS Stat `json:"tx_pps"`
	// NsPerPacket is the receive core's busy time (user, system, irq, softirq, NAPI thread)
	// divided by the packets handled.
	NsPerPacket Stat `json:"ns_per_packet"`
	// TaskNsPerPacket counts only the receiver's threads, the NAPI threads and the receive
	// core's softirqs (see RunRecord.TaskNsPerPacket): the cross-check on a busy machine.
	TaskNsPerPacket Stat `json:"task_ns_per_packet"`
	// RxCoreBusy is the receive core's busy share of the window (1 = 100%).
	RxCoreBusy Stat `json:"rx_core_busy"`
	// GenPPS is what the generator put on the wire (peer tx_packets + tx_dropped per second).
	GenPPS Stat `json:"gen_pps"`
}

// Ratio compares two figures' medians.
type Ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	// Paired is the median over rounds of the ratio within each round (the two runs of a round
	// ran minutes apart at most): less sensitive to the machine's drift than Value.
	Paired float64 `json:"paired"`
	// Target, when set, is the bound the issue asks for; Met says whether Value is within it.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

// Report is what a benchmark wrote.
type Report struct {
	Kind     Kind        `json:"kind"`
	Command  string      `json:"command"`
	Started  time.Time   `json:"started"`
	Finished time.Time   `json:"finished"`
	Machine  Machine     `json:"machine"`
	Options  Options     `json:"options"`
	Figures  []Figure    `json:"figures"`
	Ratios   []Ratio     `json:"ratios"`
	Runs     []RunRecord `json:"runs"`
	// Loadavg is /proc/loadavg before and after the benchmark (each run records its own too):
	// other work on the machine shows here.
	LoadavgStart string `json:"loadavg_start"`
	LoadavgEnd   string `json:"loadavg_end"`
}

// Machine describes where the benchmark ran.
type Machine struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	Model  string `json:"cpu_model"`
}

func machine() Machine {
	m := Machine{}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "processor") {
				m.CPUs++
			}
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" && m.Model == "" {
				m.Model = strings.TrimSpace(v)
			}
		}
	}
	return m
}

// RunRecord is one run of one variant.
type RunRecord struct {
	Variant string `json:"variant"`
	Phase   string `json:"phase"`
	Round   int    `json:"round"`
	Attempt int    `json:"attempt"` // retries of a contaminated run count up
	// Foreign is the receive core's busy share not spent in the receiver's own threads (other
	// processes on the machine); above Options.MaxForeign the run is Contaminated.
	Foreign      float64 `json:"foreign"`
	Contaminated bool    `json:"contaminated,omitempty"`
	// Used: this run stands for its round in the figures (the clean or least contaminated
	// attempt).
	Used    bool    `json:"used"`
	Loadavg string  `json:"loadavg"` // before the run
	Offered int     `json:"offered_pps"`
	Engine  string  `json:"engine"` // the generator's
	Seconds float64 `json:"window_s"`
	// Window figures.
	RxPackets uint64 `json:"rx_packets"`        // the receiver's own count
	TxPackets uint64 `json:"tx_packets"`        // the receiver's own count (reflect)
	Replies   uint64 `json:"replies,omitempty"` // arriving back at the generator's interface (reflect)
	// PPS is packets/s handled: received (rx), or replies that came back to the generator's
	// interface (reflect).
	PPS         float64 `json:"pps"`
	ReplyPPS    float64 `json:"reply_pps,omitempty"` // replies/s arriving at the generator (reflect)
	TxPPS       float64 `json:"tx_pps,omitempty"`    // what the receiver sent, per second (reflect)
	RxCPU       CPUUse  `json:"rx_cpu"`
	GenCPU      CPUUse  `json:"gen_cpu"`
	NsPerPacket float64 `json:"ns_per_packet"`
	// TaskCPU and TaskNsPerPacket count only the receiver's own work: the run time of this
	// process's threads (the receiver, and the harness, which sleeps) and of the receiving
	// veth's NAPI threads, from /proc/PID/schedstat. With threaded NAPI the receive work runs in
	// those threads and transmit work in the sender's system calls, so little of it is left to
	// softirq, which is not counted here: on a busy machine other processes' softirqs (their
	// own veths, timers) land on the receive core too. Other processes that run on the receive
	// core inflate NsPerPacket, not these.
	TaskCPU         float64 `json:"task_cpu"`
	TaskNsPerPacket float64 `json:"task_ns_per_packet"`
	// TaskSlices is how often those threads were scheduled in over the window (schedstat's
	// timeslices): every wake-up of a sleeping thread counts one.
	TaskSlices int64 `json:"task_timeslices,omitempty"`
	// MachineBusy is every CPU's busy time over the window (/proc/stat), in CPUs (0 to the
	// machine's CPU count); GenTaskCPU the generator process's threads' run time (schedstat),
	// in CPUs. MachineNsPerPacket is MachineBusy less GenTaskCPU per packet handled: what the
	// whole machine spent on the packets besides generating them (the receiver, both veth
	// ends' NAPI threads, softirqs, and anything else that ran). The generator paces by
	// spinning at higher rates, which would otherwise dominate the figure.
	MachineBusy        float64 `json:"machine_busy,omitempty"`
	GenTaskCPU         float64 `json:"gen_task_cpu,omitempty"`
	MachineNsPerPacket float64 `json:"machine_ns_per_packet,omitempty"`
	GenPPS             float64 `json:"gen_pps"`
	// Check compares the receiver's counts over the whole run with the interface counters.
	Check     Check             `json:"check"`
	Generator trafficgen.Result `json:"generator"`
	Receiver  any               `json:"receiver,omitempty"`
	NAPI      []int             `json:"napi_threads"`
	Err       string            `json:"error,omitempty"`
}

// CPUUse is a core's time in the window, in shares of the window.
type CPUUse struct {
	Busy    float64 `json:"busy"`
	User    float64 `json:"user"`
	System  float64 `json:"system"`
	SoftIRQ float64 `json:"softirq"`
	Steal   float64 `json:"steal"`
}

func cpuUse(d sysstat.CPUTimes, window time.Duration) CPUUse {
	w := float64(window)
	return CPUUse{Busy: float64(d.Busy()) / w, User: float64(d.User+d.Nice) / w, System: float64(d.System) / w,
		SoftIRQ: float64(d.SoftIRQ+d.IRQ) / w, Steal: float64(d.Steal) / w}
}

// Check holds the whole run's counts, from the receiver's start to after the generator ended.
type Check struct {
	GenSent uint64 `json:"gen_sent"` // the generator's own count
	// PeerTx is what left the generator's veth end: tx_packets + tx_dropped (veth drops there
	// when the receiving queue's ring is full).
	PeerTx     uint64 `json:"peer_tx"`
	PeerTxDrop uint64 `json:"peer_tx_dropped"`
	IfRx       uint64 `json:"if_rx"`          // rx_packets of the receiving interface
	Received   uint64 `json:"received"`       // the receiver's count
	RecvDrops  uint64 `json:"receiver_drops"` // drops the receiver's side reports (socket, xsk)
	IfTx       uint64 `json:"if_tx,omitempty"`
	// IfTxDrop: veth drops what does not fit the peer's receive ring (the peer's NAPI behind).
	IfTxDrop    uint64  `json:"if_tx_dropped,omitempty"`
	Sent        uint64  `json:"sent,omitempty"`    // the receiver's tx count (reflect)
	PeerRx      uint64  `json:"peer_rx,omitempty"` // rx_packets of the generator's interface
	Replies     uint64  `json:"replies,omitempty"` // the generator's XDP counter
	Discrepancy float64 `json:"discrepancy"`       // worst relative disagreement found
	Note        string  `json:"note,omitempty"`
}

// Tolerance is the relative disagreement between a receiver's count and the interface counters
// that Check accepts.
const Tolerance = 0.005

func relDiff(a, b uint64) float64 {
	if a == b {
		return 0
	}
	d := float64(a) - float64(b)
	if d < 0 {
		d = -d
	}
	m := float64(max(a, b))
	return d / m
}

// evaluate fills Discrepancy and Note: the receiver plus its drops must account for what the
// interface received, the interface for what the generator sent, and (reflect) the replies
// counted at the generator for what the receiver sent.
func (c *Check) evaluate(kind Kind) {
	var notes []string
	worst := 0.0
	cmp := func(what string, a, b uint64) {
		d := relDiff(a, b)
		if d > worst {
			worst = d
		}
		if d > Tolerance {
			notes = append(notes, fmt.Sprintf("%s: %d vs %d (%.2f%%)", what, a, b, 100*d))
		}
	}
	cmp("receiver+drops vs interface rx", c.Received+c.RecvDrops, c.IfRx)
	cmp("generator sent vs peer tx+dropped", c.GenSent, c.PeerTx+c.PeerTxDrop)
	if kind == KindReflect {
		cmp("receiver tx vs interface tx+dropped", c.Sent, c.IfTx+c.IfTxDrop)
		cmp("generator's reply counter vs peer rx", c.Replies, c.PeerRx)
	}
	c.Discrepancy = worst
	c.Note = strings.Join(notes, "; ")
}

// OK reports whether every count agreed within Tolerance.
func (c Check) OK() bool { return c.Discrepancy <= Tolerance }

// Run builds a lab, runs the benchmark and removes the lab, also when ctx is cancelled.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, lab.ErrNotRoot
	}
	if err := lab.SweepOrphans("ncb"); err != nil {
		o.Logf("bench: sweeping labs of killed benchmarks: %v", err)
	}
	rep := &Report{Kind: o.Kind, Command: o.Command, Started: time.Now(), Machine: machine(), LoadavgStart: sysstat.Loadavg()}
	for _, c := range []int{o.GenCPU, o.RxCPU} {
		if !slices.Contains(trafficgen.ProcessCPUs(), c) {
			return nil, fmt.Errorf("bench: CPU %d is not in this process's affinity mask %v", c, trafficgen.ProcessCPUs())
		}
	}
	o.Logf("bench %s: building lab %s (%d queue(s)); generator (%s) on CPU %d, receiver and NAPI on CPU %d",
		o.Kind, o.LabName, o.Queues, o.Engine, o.GenCPU, o.RxCPU)
	l, err := lab.Up(ctx, lab.Config{Name: o.LabName, Layout: lab.LayoutPair, QueueCount: o.Queues, StaticARP: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := lab.Down(o.LabName); err != nil {
			o.Logf("bench: removing lab %s: %v", o.LabName, err)
		}
	}()
	b, err := newBencher(ctx, &o, l)
	if err != nil {
		return nil, err
	}
	defer b.close()
	for round := 0; round < o.Runs; round++ {
		for pi, phase := range o.Phases {
			// Rotate the order every round so no variant always runs first (or after another).
			n := len(o.Variants)
			for i := 0; i < n; i++ {
				v := o.Variants[(i+round+pi)%n]
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				var rec RunRecord
				for attempt := 0; ; attempt++ {
					var err error
					rec, err = b.run(v, phase, round)
					rec.Attempt = attempt
					if err != nil {
						rec.Err = err.Error()
						o.Logf("bench: %s %s round %d: %v", v, phase, round, err)
						if ctx.Err() != nil {
							return rep, ctx.Err()
						}
						break
					}
					rec.Foreign = rec.RxCPU.Busy - rec.TaskCPU
					rec.Contaminated = rec.Foreign > o.MaxForeign
					o.Logf("  %-12s %-4s round %d: %9.0f pkt/s, %6.0f ns/pkt (own threads %6.0f), rx core %3.0f%% busy (others %3.0f%%), generator %9.0f pkt/s, check %s; load %s",
						v, phase, round, rec.PPS, rec.NsPerPacket, rec.TaskNsPerPacket, 100*rec.RxCPU.Busy, 100*rec.Foreign,
						rec.GenPPS, checkWord(rec.Check), rec.Loadavg)
					if !rec.Contaminated || attempt >= o.Retries {
						break
					}
					rep.Runs = append(rep.Runs, rec) // kept, marked, left out of the figures
				}
				rep.Runs = append(rep.Runs, rec)
			}
		}
	}
	rep.Finished = time.Now()
	rep.LoadavgEnd = sysstat.Loadavg()
	rep.Options = o
	rep.summarize()
	return rep, nil
}

func checkWord(c Check) string {
	if c.OK() {
		return "ok"
	}
	return "OFF: " + c.Note
}

// bencher holds what every run shares.
type bencher struct {
	ctx    context.Context
	o      *Options
	lab    *lab.Lab
	ep     lab.Endpoint
	root   *sysstat.NSLinks
	peer   *sysstat.NSLinks
	queues []int
	cpus   []int // every CPU of the machine, for the whole-machine figure
}

func newBencher(ctx context.Context, o *Options, l *lab.Lab) (*bencher, error) {
	b := &bencher{ctx: ctx, o: o, lab: l, ep: l.Netchan[0]}
	for q := 0; q < o.Queues; q++ {
		b.queues = append(b.queues, q)
	}
	var err error
	if b.cpus, err = machineCPUs(); err != nil {
		return nil, err
	}
	for _, c := range []int{o.GenCPU, o.RxCPU} {
		if !slices.Contains(b.cpus, c) {
			b.cpus = append(b.cpus, c)
		}
	}
	if b.root, err = sysstat.OpenNS(""); err != nil {
		return nil, err
	}
	if b.peer, err = sysstat.OpenNS(b.ep.Peer.NS); err != nil {
		b.root.Close()
		return nil, err
	}
	return b, nil
}

func (b *bencher) close() {
	b.root.Close()
	b.peer.Close()
}

// sample is the state of everything at one instant.
type sample struct {
	t    time.Time
	rcv  rcvCounts
	cpu  map[int]sysstat.CPUTimes
	root sysstat.IfStats
	peer sysstat.IfStats
	// Run time of this process's threads and of the receiving veth's NAPI threads.
	procNs, napiNs int64
	// genNs is the generator process's threads' run time (0 before it starts).
	genNs int64
	// slices: times this process's threads and the NAPI threads were scheduled in.
	slices int64
}

func (b *bencher) sample(r receiver, napi []int, gen int) (sample, error) {
	s := sample{t: time.Now(), rcv: r.counts(), procNs: sysstat.ProcessRunNs(), napiNs: sysstat.ThreadsRunNs(napi),
		slices: sysstat.ProcessSlices() + sysstat.ThreadsSlices(napi)}
	if gen != 0 {
		s.genNs = sysstat.PIDRunNs(gen)
	}
	var err error
	if s.cpu, err = sysstat.ReadCPUTimes(b.cpus...); err != nil {
		return s, err
	}
	if s.root, err = b.root.Stats(b.ep.Iface); err != nil {
		return s, err
	}
	if s.peer, err = b.peer.Stats(b.ep.Peer.Iface); err != nil {
		return s, err
	}
	return s, nil
}

// run measures one variant once.
func (b *bencher) run(variant, phase string, round int) (RunRecord, error) {
	return b.runAt(variant, phase, round, b.o.Rate)
}

// runAt measures one variant once; in the load phase the generator offers rate packets/s.
func (b *bencher) runAt(variant, phase string, round, rate int) (rec RunRecord, err error) {
	o := b.o
	rec = RunRecord{Variant: variant, Phase: phase, Round: round, Loadavg: sysstat.Loadavg()}
	if phase == PhaseLoad {
		rec.Offered = rate
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	setup := rxSetup{kind: o.Kind, ep: b.ep, queues: b.queues, cpu: o.RxCPU, opts: o,
		logf: func(string, ...any) {}, ctx: ctx}
	// A socket closed by the previous run frees its queue a little after close returns;
	// afxdp retries a busy queue for a while.
	rcv, err := startReceiver(variant, setup)
	if err != nil {
		return rec, err
	}
	defer func() {
		if serr := rcv.stop(); serr != nil && err == nil {
			err = fmt.Errorf("stopping %s: %w", variant, serr)
		}
	}()
	// The receiving veth's NAPI thread runs with the receiver; its threads are made anew at
	// every XDP attach (and GRO switch), so pin them for this run.
	if err := trafficgen.SetThreadedNAPI(b.ep.Iface); err != nil {
		return rec, err
	}
	if rec.NAPI, err = trafficgen.PinNAPIThreads(b.ep.Iface, []int{o.RxCPU}); err != nil {
		return rec, err
	}
	start, err := b.sample(rcv, rec.NAPI, 0)
	if err != nil {
		return rec, err
	}
	cfg := trafficgen.Config{Iface: b.ep.Peer.Iface, Queues: b.queues, DstMAC: b.ep.MAC,
		Src: b.ep.Peer.Addr.Addr(), Dst: b.ep.Addr.Addr(), SrcPort: 40000, DstPort: benchPort, Flows: o.Flows,
		Size: o.Size, Duration: o.Warmup + o.Window + min(o.Window/2, 500*time.Millisecond), Rate: rec.Offered,
		RunID: uint32(round + 1), Static: true, CPUs: []int{o.GenCPU}, CountReplies: o.Kind == KindReflect,
		Announce: true, Wait: time.Second, Engine: trafficgen.EngineAFXDP}
	if phase == PhaseMax {
		cfg.Engine = o.Engine
	}
	rec.Engine = cfg.Engine
	gen, err := b.startGenerator(ctx, cfg)
	if err != nil {
		return rec, err
	}
	defer gen.kill()
	select {
	case <-gen.sending:
	case <-gen.done:
		return rec, fmt.Errorf("generator ended before sending: %v", gen.err)
	case <-time.After(10 * time.Second):
		return rec, errors.New("generator did not start sending within 10s")
	case <-ctx.Done():
		return rec, ctx.Err()
	}
	if err := sleepCtx(ctx, o.Warmup); err != nil {
		return rec, err
	}
	s0, err := b.sample(rcv, rec.NAPI, gen.pid)
	if err != nil {
		return rec, err
	}
	if err := sleepCtx(ctx, o.Window); err != nil {
		return rec, err
	}
	s1, err := b.sample(rcv, rec.NAPI, gen.pid)
	if err != nil {
		return rec, err
	}
	select {
	case <-gen.done:
	case <-time.After(o.Window + 10*time.Second):
		return rec, errors.New("generator did not finish")
	case <-ctx.Done():
		return rec, ctx.Err()
	}
	if gen.err != nil {
		return rec, gen.err
	}
	rec.Generator = gen.res
	if err := sleepCtx(ctx, 100*time.Millisecond); err != nil { // let the last packets land
		return rec, err
	}
	end, err := b.sample(rcv, rec.NAPI, 0)
	if err != nil {
		return rec, err
	}

	w := s1.t.Sub(s0.t)
	rec.Seconds = w.Seconds()
	rec.RxPackets = s1.rcv.Rx - s0.rcv.Rx
	rec.TxPackets = s1.rcv.Tx - s0.rcv.Tx
	handled := rec.RxPackets
	if o.Kind == KindReflect {
		// Reflected: replies that reached the generator's interface. What the receiver handed
		// to its interface (TxPPS) can be more: when the generator's side falls behind, veth
		// pushes back (its ring to the peer is full) and drops, and a kernel socket counts a
		// datagram the device dropped as sent.
		rec.Replies = s1.peer.RxPackets - s0.peer.RxPackets
		rec.ReplyPPS = float64(rec.Replies) / w.Seconds()
		rec.TxPPS = float64(rec.TxPackets) / w.Seconds()
		handled = rec.Replies
	}
	rec.PPS = float64(handled) / w.Seconds()
	rxd := s1.cpu[o.RxCPU].Sub(s0.cpu[o.RxCPU])
	rec.RxCPU = cpuUse(rxd, w)
	rec.GenCPU = cpuUse(s1.cpu[o.GenCPU].Sub(s0.cpu[o.GenCPU]), w)
	var all sysstat.CPUTimes
	for _, c := range b.cpus {
		all = all.Add(s1.cpu[c].Sub(s0.cpu[c]))
	}
	rec.MachineBusy = float64(all.Busy()) / float64(w)
	genNs := s1.genNs - s0.genNs
	rec.GenTaskCPU = float64(genNs) / float64(w)
	task := (s1.procNs - s0.procNs) + (s1.napiNs - s0.napiNs)
	rec.TaskCPU = float64(task) / float64(w)
	rec.TaskSlices = s1.slices - s0.slices
	if handled > 0 {
		rec.NsPerPacket = float64(rxd.Busy()) / float64(handled)
		rec.TaskNsPerPacket = float64(task) / float64(handled)
		rec.MachineNsPerPacket = float64(all.Busy()-genNs) / float64(handled)
	}
	pd := s1.peer.Sub(s0.peer)
	rec.GenPPS = float64(pd.TxPackets+pd.TxDropped) / w.Seconds()
	rec.Receiver = end.rcv.Detail

	rd, ped := end.root.Sub(start.root), end.peer.Sub(start.peer)
	if gen.res.Engine != "" {
		rec.Engine = gen.res.Engine // what sent: AF_XDP when the kernel refused live frames
	}
	rec.Check = Check{GenSent: gen.res.Sent, PeerTx: ped.TxPackets, PeerTxDrop: ped.TxDropped, IfRx: rd.RxPackets,
		Received: end.rcv.Rx - start.rcv.Rx, RecvDrops: end.rcv.Drops - start.rcv.Drops}
	if o.Kind == KindReflect {
		rec.Check.IfTx, rec.Check.IfTxDrop, rec.Check.Sent = rd.TxPackets, rd.TxDropped, end.rcv.Tx-start.rcv.Tx
		rec.Check.PeerRx, rec.Check.Replies = ped.RxPackets, gen.res.Replies
	}
	rec.Check.evaluate(o.Kind)
	return rec, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// generator is a running trafficgen process in the peer namespace.
type generator struct {
	sending chan struct{}
	done    chan struct{}
	res     trafficgen.Result
	err     error
	kill    func()
	pid     int // the generator process (ip netns exec execs it in place)
}

func (b *bencher) startGenerator(ctx context.Context, cfg trafficgen.Config) (*generator, error) {
	gctx, cancel := context.WithCancel(ctx)
	cmd := trafficgen.Command(gctx, b.ep.Peer.NS, b.o.Generator, cfg)
	var out strings.Builder
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("starting the generator: %w", err)
	}
	g := &generator{sending: make(chan struct{}), done: make(chan struct{}), kill: cancel, pid: cmd.Process.Pid}
	var errText strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			if line == "trafficgen: sending" {
				once.Do(func() { close(g.sending) })
				continue
			}
			errText.WriteString(line + "\n")
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() {
		defer close(g.done)
		wg.Wait()
		if err := cmd.Wait(); err != nil {
			g.err = fmt.Errorf("generator: %w: %s", err, strings.TrimSpace(errText.String()))
			return
		}
		g.res, g.err = trafficgen.Decode([]byte(out.String()))
	}()
	return g, nil
}

// summarize computes the figures and ratios from the runs. Each round gives a figure one run:
// its clean attempt, or, if every attempt was contaminated, the least contaminated one.
func (r *Report) summarize() {
	o := r.Options
	r.Figures, r.Ratios = nil, nil
	// used[variant, phase][round] is the run that stands for that round.
	used := map[[2]string]map[int]*RunRecord{}
	for i := range r.Runs {
		run := &r.Runs[i]
		run.Used = false
		if run.Err != "" {
			continue
		}
		k := [2]string{run.Variant, run.Phase}
		if used[k] == nil {
			used[k] = map[int]*RunRecord{}
		}
		if cur := used[k][run.Round]; cur == nil || run.Foreign < cur.Foreign {
			used[k][run.Round] = run
		}
	}
	idx := map[[2]string]int{}
	for _, p := range o.Phases {
		for _, v := range o.Variants {
			var pps, tpps, ns, tns, busy, gen []float64
			f := Figure{Variant: v, Phase: p}
			for round := 0; round < o.Runs; round++ {
				run := used[[2]string{v, p}][round]
				if run == nil {
					continue
				}
				run.Used = true
				f.Runs++
				if !run.Contaminated {
					f.Clean++
				}
				pps = append(pps, run.PPS)
				tpps = append(tpps, run.TxPPS)
				ns = append(ns, run.NsPerPacket)
				tns = append(tns, run.TaskNsPerPacket)
				busy = append(busy, run.RxCPU.Busy)
				gen = append(gen, run.GenPPS)
			}
			f.Noisy = f.Clean < f.Runs
			f.PPS, f.TxPPS, f.NsPerPacket, f.TaskNsPerPacket = newStat(pps), newStat(tpps), newStat(ns), newStat(tns)
			f.RxCoreBusy, f.GenPPS = newStat(busy), newStat(gen)
			if p == PhaseLoad {
				f.Offered = o.Rate
			}
			idx[[2]string{v, p}] = len(r.Figures)
			r.Figures = append(r.Figures, f)
		}
	}
	get := func(v, p string) *Figure {
		i, ok := idx[[2]string{v, p}]
		if !ok {
			return nil
		}
		return &r.Figures[i]
	}
	value := func(run *RunRecord, pps bool) float64 {
		if pps {
			return run.PPS
		}
		return run.NsPerPacket
	}
	ratio := func(name, a, b, phase string, pps bool, target string, ok func(float64) bool) {
		fa, fb := get(a, phase), get(b, phase)
		if fa == nil || fb == nil || fa.Runs == 0 || fb.Runs == 0 {
			return
		}
		num, den := fa.NsPerPacket.Median, fb.NsPerPacket.Median
		if pps {
			num, den = fa.PPS.Median, fb.PPS.Median
		}
		if den == 0 {
			return
		}
		rt := Ratio{Name: name, Value: num / den, Target: target}
		var paired []float64
		for round := 0; round < o.Runs; round++ {
			ra, rb := used[[2]string{a, phase}][round], used[[2]string{b, phase}][round]
			if ra != nil && rb != nil && value(rb, pps) != 0 {
				paired = append(paired, value(ra, pps)/value(rb, pps))
			}
		}
		rt.Paired = newStat(paired).Median
		if ok != nil {
			met := ok(rt.Value)
			rt.Met = &met
		}
		r.Ratios = append(r.Ratios, rt)
	}
	ge := func(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }
	le := func(x float64) func(float64) bool { return func(v float64) bool { return v <= x } }
	switch r.Kind {
	case KindRx:
		ratio("pps netchan/kernel", Netchan, Kernel, PhaseMax, true, ">= 3", ge(3))
		ratio("pps asavie/kernel", Asavie, Kernel, PhaseMax, true, "", nil)
		ratio("pps netchan/asavie", Netchan, Asavie, PhaseMax, true, "", nil)
		ratio("pps netchan-loop/kernel", NetchanLoop, Kernel, PhaseMax, true, "", nil)
		ratio("pps netchan/xdp-drop", Netchan, XDPDrop, PhaseMax, true, "", nil)
		ratio("cpu/pkt netchan/kernel", Netchan, Kernel, PhaseLoad, false, "<= 1/3", le(1.0/3))
		ratio("cpu/pkt netchan/xdp-drop", Netchan, XDPDrop, PhaseLoad, false, "<= 1.5", le(1.5))
		ratio("cpu/pkt asavie/kernel", Asavie, Kernel, PhaseLoad, false, "", nil)
		ratio("cpu/pkt netchan/asavie", Netchan, Asavie, PhaseLoad, false, "", nil)
	case KindReflect:
		ratio("pps netchan/kernel", Netchan, Kernel, PhaseMax, true, ">= 2.5", ge(2.5))
		ratio("pps netchan/asavie", Netchan, Asavie, PhaseMax, true, ">= 1.5", ge(1.5))
		ratio("pps asavie/kernel", Asavie, Kernel, PhaseMax, true, "", nil)
		ratio("pps netchan-loop/kernel", NetchanLoop, Kernel, PhaseMax, true, "", nil)
		ratio("cpu/pkt netchan/kernel", Netchan, Kernel, PhaseLoad, false, "", nil)
		ratio("cpu/pkt netchan/asavie", Netchan, Asavie, PhaseLoad, false, "", nil)
	}
}

// Table renders the figures and ratios as a Markdown table.
func (r *Report) Table() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "| %s | phase | packets/s (median) | min–max | receive-core ns/packet | own threads ns/packet | receive core busy | runs (clean) |\n|---|---|---|---|---|---|---|---|\n", r.Kind)
	for _, f := range r.Figures {
		phase := "full load"
		if f.Phase == PhaseLoad {
			phase = fmt.Sprintf("%d pkt/s offered", f.Offered)
		}
		fmt.Fprintf(&sb, "| %s | %s | %.0f | %.0f–%.0f | %.0f | %.0f | %.0f%% | %d (%d) |\n", f.Variant, phase, f.PPS.Median, f.PPS.Min, f.PPS.Max,
			f.NsPerPacket.Median, f.TaskNsPerPacket.Median, 100*f.RxCoreBusy.Median, f.Runs, f.Clean)
	}
	writeRatios(&sb, r.Ratios)
	return sb.String()
}

// writeRatios renders the ratios as a Markdown table, each target marked met or missed.
func writeRatios(sb *strings.Builder, ratios []Ratio) {
	sb.WriteString("\n| ratio | of medians | paired by round | target |\n|---|---|---|---|\n")
	for _, rt := range ratios {
		t := rt.Target
		if rt.Met != nil {
			if *rt.Met {
				t += " (met)"
			} else {
				t += " (missed)"
			}
		}
		fmt.Fprintf(sb, "| %s | %.2f | %.2f | %s |\n", rt.Name, rt.Value, rt.Paired, t)
	}
}

// writeReport stores a report as DIR/KIND-YYYYMMDD-HHMMSS.json (started in UTC) and returns
// the path.
func writeReport(dir, kind string, started time.Time, report any) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-%s.json", kind, started.UTC().Format("20060102-150405")))
	b, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return "", err
	}
	return p, os.WriteFile(p, append(b, '\n'), 0o644)
}

// readReport loads a report stored by writeReport and recomputes its figures and ratios.
func readReport[R any, P interface {
	*R
	summarize()
}](path string) (P, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := P(new(R))
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.summarize()
	return r, nil
}

// ReadReport loads a report written by Write and recomputes its figures and ratios.
func ReadReport(path string) (*Report, error) { return readReport[Report](path) }

// Write stores the report as DIR/KIND-YYYYMMDD-HHMMSS.json and returns the path.
func (r *Report) Write(dir string) (string, error) {
	return writeReport(dir, string(r.Kind), r.Started, r)
}
