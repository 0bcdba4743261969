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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/netchan/netchan/bench/report"
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
	Runs     int      `json:"runs"`     // rounds; each round runs every variant once per case (default 5)
	// Warmup runs before the measured window starts; Window is the measured time.
	Warmup time.Duration `json:"warmup_ns"`
	Window time.Duration `json:"window_ns"`
	Size   int           `json:"frame_size"` // frame size without FCS (default 60)
	// Sizes are the frame sizes (without FCS, 60 to 1514) of the max phase, one case each
	// ("max 60B", "max 1514B"); default Size alone (the case is then "max"). The load phase
	// sends Size.
	Sizes  []int `json:"frame_sizes,omitempty"`
	Flows  int   `json:"flows"`     // distinct source ports (default 4)
	Queues int   `json:"queues"`    // veth queues; the generator sends on all (default 1)
	Rate   int   `json:"load_rate"` // offered packets/s of the load phase (default 200000)
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
	// contaminated: it is repeated up to Retries times (negative: never), and a contaminated
	// run stands for its round only when no attempt of that round was clean. Default 0.10
	// and 2.
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
	Logf      func(string, ...any) `json:"-"`       // one line per run, and the set-up
	// Progress, if set, hears before each run where the benchmark stands (report.Plan).
	Progress func(report.Progress) `json:"-"`
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
	for i, p := range o.Phases {
		if p != PhaseMax && p != PhaseLoad {
			return fmt.Errorf("bench: phase %q: want max or load", p)
		}
		if slices.Contains(o.Phases[:i], p) {
			return fmt.Errorf("bench: phase %q given twice", p)
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
	if len(o.Sizes) == 0 {
		o.Sizes = []int{o.Size}
	}
	for i, n := range append([]int{o.Size}, o.Sizes...) {
		if n < 60 || n > 1514 {
			return fmt.Errorf("bench: frame size %d: want 60 to 1514 bytes (without FCS)", n)
		}
		if i > 1 && slices.Contains(o.Sizes[:i-1], n) {
			return fmt.Errorf("bench: frame size %d given twice", n)
		}
	}
	if len(o.Sizes) > 1 && !slices.Contains(o.Phases, PhaseMax) {
		return errors.New("bench: several frame sizes are cases of the max phase, which is not in the phases")
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

// RunRecord is the harness's own record of one run of one variant (a report.Run's Detail).
type RunRecord struct {
	Variant string  `json:"variant"`
	Phase   string  `json:"phase"`
	Size    int     `json:"frame_size"` // without FCS
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
}

// foreign is the receive core's busy share not spent in the receiver's own threads: other
// processes on the machine (report.Run.Foreign). /proc/stat charges whole ticks, so on a quiet
// core the difference can come out below 0: that counts as none (the record keeps both figures).
func (r *RunRecord) foreign() float64 { return max(0, r.RxCPU.Busy-r.TaskCPU) }

// RunDetail decodes the harness's record of a run of an rx or reflect document (its Receiver
// stays generic JSON).
func RunDetail(r report.Run) (RunRecord, error) {
	var rec RunRecord
	if len(r.Detail) == 0 {
		return rec, fmt.Errorf("%s %s round %d: no detail", r.Case, r.Variant, r.Round)
	}
	err := json.Unmarshal(r.Detail, &rec)
	return rec, err
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

// Run builds a lab, runs the benchmark and removes the lab, also when ctx is cancelled. When a
// run's error (or ctx's end) stops the benchmark, the document holds the runs before it.
func Run(ctx context.Context, o Options) (*report.Document, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, lab.ErrNotRoot
	}
	if err := lab.SweepOrphans("ncb"); err != nil {
		o.Logf("bench: sweeping labs of killed benchmarks: %v", err)
	}
	for _, c := range []int{o.GenCPU, o.RxCPU} {
		if !slices.Contains(trafficgen.ProcessCPUs(), c) {
			return nil, fmt.Errorf("bench: CPU %d is not in this process's affinity mask %v", c, trafficgen.ProcessCPUs())
		}
	}
	d, cases, err := o.document()
	if err != nil {
		return nil, err
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
	b, err := newBencher(&o, l)
	if err != nil {
		return nil, err
	}
	defer b.close()
	err = d.Execute(ctx, o.plan(cases, func(ctx context.Context, variant string, c benchCase, runID int) (RunRecord, error) {
		return b.runAt(ctx, variant, c.phase, c.size, c.rate, runID)
	}))
	return d, err
}

// benchCase is what a document's case asks of a run.
type benchCase struct {
	report.Case
	phase string
	size  int // frame size without FCS
	rate  int // offered packets/s; 0: as fast as the generator can
}

// Metric names of the rx and reflect documents.
const (
	mPPS        = "pps"
	mTxPPS      = "tx_pps"
	mNsPerPkt   = "ns_per_packet"
	mTaskNsPkt  = "task_ns_per_packet"
	mRxCoreBusy = "rx_core_busy"
	mGenPPS     = "gen_pps"
)

// document lays out the benchmark's document: its cases (the phases; the max phase once per
// frame size), metrics and ratios with the targets the figures are held to.
func (o *Options) document() (*report.Document, map[string]benchCase, error) {
	d := report.New(string(o.Kind), o.Command)
	if err := d.SetOptions(o); err != nil {
		return nil, nil, err
	}
	d.Rounds = o.Runs
	d.Setup = []string{
		fmt.Sprintf("lab %s: a veth pair with %d queue(s); the generator (runtime/trafficgen, %d flows) sends from the peer's end on CPU %d: %s at full load, %s at the load rate",
			o.LabName, o.Queues, o.Flows, o.GenCPU, o.Engine, trafficgen.EngineAFXDP),
		fmt.Sprintf("the receiver and the receiving veth's NAPI threads on CPU %d; batch %d, UMEM %d frames, rings %d, spin before poll %v",
			o.RxCPU, o.BatchSize, o.NumFrames, o.RingSize, o.SpinIdle),
		fmt.Sprintf("each run: %v warm-up, %v measured window; load phase at %d packets/s with %d-byte frames (without FCS)",
			o.Warmup, o.Window, o.Rate, o.Size),
		fmt.Sprintf("a run is contaminated when other processes take more than %.0f%% of the receive core", 100*o.MaxForeign),
	}
	cases := map[string]benchCase{}
	add := func(c benchCase) {
		d.Cases = append(d.Cases, c.Case)
		cases[c.Name] = c
	}
	var maxCases []string
	for _, p := range o.Phases {
		switch {
		case p == PhaseLoad:
			add(benchCase{Case: report.Case{Name: PhaseLoad, Group: PhaseLoad}, phase: PhaseLoad, size: o.Size, rate: o.Rate})
		case len(o.Sizes) == 1:
			add(benchCase{Case: report.Case{Name: PhaseMax, Group: PhaseMax}, phase: PhaseMax, size: o.Sizes[0]})
			maxCases = append(maxCases, PhaseMax)
		default:
			for _, n := range o.Sizes {
				name := fmt.Sprintf("%s %dB", PhaseMax, n)
				add(benchCase{Case: report.Case{Name: name, Group: PhaseMax, X: float64(n)}, phase: PhaseMax, size: n})
				maxCases = append(maxCases, name)
			}
			d.CaseAxis = "frame size (bytes, without FCS)"
		}
	}
	d.Variants = slices.Clone(o.Variants)
	handled := "packets received by the receiver"
	if o.Kind == KindReflect {
		handled = "replies that reached the generator's interface"
	}
	d.Metrics = []report.Metric{
		{Name: mPPS, Unit: "pkt/s", Better: report.Higher, Key: true, About: handled + ", per second of the window"},
	}
	if o.Kind == KindReflect {
		// rx sends nothing: the metric is reflect's alone.
		d.Metrics = append(d.Metrics, report.Metric{Name: mTxPPS, Unit: "pkt/s",
			About: "what the receiver handed to its interface per second, dropped on the way back or not"})
	}
	d.Metrics = append(d.Metrics,
		report.Metric{Name: mNsPerPkt, Unit: "ns/pkt", Better: report.Lower,
			About: "the receive core's busy time (/proc/stat: user, system, irq, softirq) per packet handled"},
		report.Metric{Name: mTaskNsPkt, Unit: "ns/pkt", Better: report.Lower,
			About: "the run time of the receiver's threads and the receiving veth's NAPI threads (schedstat) per packet handled: what other processes on the core do not inflate"},
		report.Metric{Name: mRxCoreBusy, Unit: "share", About: "the receive core's busy share of the window"},
		report.Metric{Name: mGenPPS, Unit: "pkt/s", About: "what the generator put on the wire: its veth end's tx_packets + tx_dropped per second"},
	)
	ratio := func(c, name, metric, num, den string, target *report.Target) {
		if slices.Contains(o.Variants, num) && slices.Contains(o.Variants, den) {
			d.Ratios = append(d.Ratios, report.Ratio{Name: name, Case: c, Metric: metric, Num: num, Den: den, Target: target})
		}
	}
	atLeast := func(v float64) *report.Target { return &report.Target{Op: ">=", Value: v} }
	atMost := func(v float64) *report.Target { return &report.Target{Op: "<=", Value: v} }
	hasLoad := slices.Contains(o.Phases, PhaseLoad)
	switch o.Kind {
	case KindRx:
		for _, c := range maxCases {
			ratio(c, "pps netchan/kernel", mPPS, Netchan, Kernel, atLeast(3))
			ratio(c, "pps asavie/kernel", mPPS, Asavie, Kernel, nil)
			ratio(c, "pps netchan/asavie", mPPS, Netchan, Asavie, nil)
			ratio(c, "pps netchan-loop/kernel", mPPS, NetchanLoop, Kernel, nil)
			ratio(c, "pps netchan/xdp-drop", mPPS, Netchan, XDPDrop, nil)
		}
		if hasLoad {
			ratio(PhaseLoad, "cpu/pkt netchan/kernel", mNsPerPkt, Netchan, Kernel, atMost(1.0/3))
			ratio(PhaseLoad, "cpu/pkt netchan/xdp-drop", mNsPerPkt, Netchan, XDPDrop, atMost(1.5))
			ratio(PhaseLoad, "cpu/pkt asavie/kernel", mNsPerPkt, Asavie, Kernel, nil)
			ratio(PhaseLoad, "cpu/pkt netchan/asavie", mNsPerPkt, Netchan, Asavie, nil)
		}
	case KindReflect:
		for _, c := range maxCases {
			ratio(c, "pps netchan/kernel", mPPS, Netchan, Kernel, atLeast(2.5))
			ratio(c, "pps netchan/asavie", mPPS, Netchan, Asavie, atLeast(1.5))
			ratio(c, "pps asavie/kernel", mPPS, Asavie, Kernel, nil)
			ratio(c, "pps netchan-loop/kernel", mPPS, NetchanLoop, Kernel, nil)
		}
		if hasLoad {
			ratio(PhaseLoad, "cpu/pkt netchan/kernel", mNsPerPkt, Netchan, Kernel, nil)
			ratio(PhaseLoad, "cpu/pkt netchan/asavie", mNsPerPkt, Netchan, Asavie, nil)
		}
	}
	return d, cases, nil
}

// measureFunc measures one run of variant in case c; runID tells its frames from earlier
// runs'.
type measureFunc func(ctx context.Context, variant string, c benchCase, runID int) (RunRecord, error)

// plan runs the document's trials through measure: a run that fails is recorded with its error
// and the benchmark goes on, unless ctx ended.
func (o *Options) plan(cases map[string]benchCase, measure measureFunc) report.Plan {
	runID := 0
	return report.Plan{
		Retries:  o.Retries, // after defaults: positive, or negative for none, as the Plan reads it
		Progress: o.Progress,
		Measure: func(ctx context.Context, t report.Trial) (report.Run, error) {
			c, ok := cases[t.Case.Name]
			if !ok {
				return report.Run{}, fmt.Errorf("case %q is not in the benchmark", t.Case.Name)
			}
			runID++
			rec, err := measure(ctx, t.Variant, c, runID)
			if err != nil {
				if ctx.Err() != nil {
					return report.Run{}, err
				}
				o.Logf("bench: %s %s round %d: %v", t.Variant, c.Name, t.Round, err)
				return report.Run{Err: err.Error(), Detail: detail(rec)}, nil
			}
			r := o.reportRun(rec)
			o.Logf("  %-12s %-9s round %d: %9.0f pkt/s, %6.0f ns/pkt (own threads %6.0f), rx core %3.0f%% busy (others %3.0f%%), generator %9.0f pkt/s, check %s",
				t.Variant, c.Name, t.Round, rec.PPS, rec.NsPerPacket, rec.TaskNsPerPacket, 100*rec.RxCPU.Busy, 100*r.Foreign,
				rec.GenPPS, checkWord(rec.Check))
			return r, nil
		},
	}
}

// reportRun turns a measured run into the document's: its values, how much of the receive core
// other processes took, and its record as the detail.
func (o *Options) reportRun(rec RunRecord) report.Run {
	r := report.Run{Values: map[string]float64{mPPS: rec.PPS, mRxCoreBusy: rec.RxCPU.Busy, mGenPPS: rec.GenPPS},
		Foreign: rec.foreign(), Detail: detail(rec)}
	r.Contaminated = r.Foreign > o.MaxForeign
	if o.Kind == KindReflect {
		r.Values[mTxPPS] = rec.TxPPS
	}
	// Without a packet handled there is no CPU per packet (rather than one of 0).
	if rec.PPS > 0 {
		r.Values[mNsPerPkt] = rec.NsPerPacket
		r.Values[mTaskNsPkt] = rec.TaskNsPerPacket
	}
	if !rec.Check.OK() {
		r.Comments = append(r.Comments, "counts disagree with the interface counters: "+rec.Check.Note)
	}
	return r
}

// detail is a run's record as JSON (nothing if it does not encode).
func detail(rec any) json.RawMessage {
	b, err := json.Marshal(rec)
	if err != nil {
		return nil
	}
	return b
}

func checkWord(c Check) string {
	if c.OK() {
		return "ok"
	}
	return "OFF: " + c.Note
}

// bencher holds what every run shares.
type bencher struct {
	o      *Options
	lab    *lab.Lab
	ep     lab.Endpoint
	root   *sysstat.NSLinks
	peer   *sysstat.NSLinks
	queues []int
	cpus   []int // every CPU of the machine, for the whole-machine figure
}

func newBencher(o *Options, l *lab.Lab) (*bencher, error) {
	b := &bencher{o: o, lab: l, ep: l.Netchan[0]}
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

// runAt measures one variant once with frames of size bytes (without FCS); in the load phase
// the generator offers rate packets/s. runID tells this run's frames from earlier runs'.
func (b *bencher) runAt(ctx context.Context, variant, phase string, size, rate, runID int) (rec RunRecord, err error) {
	o := b.o
	rec = RunRecord{Variant: variant, Phase: phase, Size: size}
	if phase == PhaseLoad {
		rec.Offered = rate
	}
	ctx, cancel := context.WithCancel(ctx)
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
		Size: size, Duration: o.Warmup + o.Window + min(o.Window/2, 500*time.Millisecond), Rate: rec.Offered,
		RunID: uint32(runID), Static: true, CPUs: []int{o.GenCPU}, CountReplies: o.Kind == KindReflect,
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
