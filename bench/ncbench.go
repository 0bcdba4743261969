package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"time"

	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// Modes of the netchannel benchmark.
const (
	ModeRx   = "rx"   // receive only: the receiver drops (releases) every datagram
	ModeEcho = "echo" // the receiver sends every datagram back to its sender
)

// What a ratio of CPU above the floor measures (the first word of its name).
const (
	// MeasureRxCore: the receive core's busy time from /proc/stat. This kernel accounts it by
	// ticks (CONFIG_TICK_CPU_ACCOUNTING, HZ 250): each tick charges 4 ms to what runs then,
	// which at low rates can alias with the traffic's own timing.
	MeasureRxCore = "rx core"
	// MeasureOwnThreads: the run time (schedstat, exact) of this process's threads and the
	// receiving veth's NAPI threads: misses softirq work done outside them.
	MeasureOwnThreads = "own threads"
	// MeasureMachine: every CPU's busy time (/proc/stat) less the generator process's threads
	// (schedstat): coarse at low rates, where it can even come out negative.
	MeasureMachine = "machine"
)

// Metric names of the netchannel document besides the rx document's (mPPS, mGenPPS,
// mNsPerPkt, mTaskNsPkt, mRxCoreBusy).
const (
	mLoss              = "loss"
	mMachineNsPkt      = "machine_ns_per_packet"
	mMachineBusy       = "machine_busy"
	mSlicesPer1k       = "timeslices_per_1k"
	mNsAbove           = "ns_above_floor"
	mTaskNsAbove       = "task_ns_above_floor"
	mMachineNsAbove    = "machine_ns_above_floor"
	netchannelCaseAxis = "offered packets/s"
)

// aboveFloor pairs each CPU-per-packet metric with its figure above the xdp-drop floor, and
// names what it measures.
var aboveFloor = []struct{ of, above, measure string }{
	{mNsPerPkt, mNsAbove, MeasureRxCore},
	{mTaskNsPkt, mTaskNsAbove, MeasureOwnThreads},
	{mMachineNsPkt, mMachineNsAbove, MeasureMachine},
}

// udpFrameOverhead is Ethernet (14) + IPv4 (20) + UDP (8): a frame is the UDP payload plus it.
const udpFrameOverhead = 42

// NetchannelOptions describe the netchannel benchmark (RunNetchannel): Polyakov's 2006
// netchannel experiment (CPU of a netchannel against epoll + recv/send sockets for 128-byte
// datagrams) redone on netchan, with recvmmsg batches and the in-kernel XDP_DROP floor beside.
type NetchannelOptions struct {
	// Modes: ModeRx, ModeEcho (default both).
	Modes []string `json:"modes"`
	// Variants: netchannel, epoll, mmsg, xdp-drop (default all; xdp-drop runs in rx only and
	// is the floor of both modes).
	Variants []string `json:"variants"`
	// Rates are the offered packets/s; 0 is full load (the generator as fast as it can).
	// Default 10k, 50k, 100k, 200k and full load.
	Rates []int `json:"rates"`
	// Runs is the number of rounds; each runs every variant once per mode and rate, the order
	// of the variants reversed every second round (default 5).
	Runs   int           `json:"runs"`
	Warmup time.Duration `json:"warmup_ns"` // default 1s
	Window time.Duration `json:"window_ns"` // default 5s
	// Payload is the UDP payload in bytes (default 128); a frame is Payload + 42 bytes
	// (Ethernet, IPv4, UDP headers; no FCS).
	Payload int `json:"udp_payload"`
	Flows   int `json:"flows"` // source ports (default 4)
	GenCPU  int `json:"gen_cpu"`
	RxCPU   int `json:"receive_cpu"`
	// BatchSize is the batch of netchan's shard, the netchannel reader and recvmmsg (64).
	BatchSize int `json:"batch_size"`
	// NumFrames is netchan's UMEM (default 8192: a channel lends up to 1024 frames beyond
	// the fill ring); RingSize its AF_XDP rings (2048).
	NumFrames int           `json:"umem_frames"`
	RingSize  int           `json:"ring_size"`
	SpinIdle  time.Duration `json:"spin_idle_ns"` // netchan's shard (default: none, as bench rx)
	// MaxForeign and Retries: as Options (contaminated runs are repeated; defaults 0.10 and
	// 2, negative Retries: never).
	MaxForeign float64 `json:"max_foreign"`
	Retries    int     `json:"retries"`
	// QuietWait: before every run, wait up to this long for half a second in which the
	// whole machine is less than QuietBusy busy (other people's builds and tests come in
	// bursts); default 20s, negative: do not wait. QuietBusy defaults to 0.10.
	QuietWait time.Duration `json:"quiet_wait_ns"`
	QuietBusy float64       `json:"quiet_busy"`
	// Collapse: a run whose delivered packets/s is below this share of the median of its
	// siblings (same mode, rate and variant, other rounds; three at least) has collapsed: it
	// is flagged and left out, and its round is run once more (default 0.5, below 1;
	// negative: no check). It becomes the document's outlier rule.
	Collapse float64 `json:"collapse"`
	// Profile, when set, is a file for a CPU profile (pprof) of this process over one more
	// netchannel run after the rounds (ProfileMode at ProfileRate), left out of the figures.
	Profile     string               `json:"profile,omitempty"`
	ProfileMode string               `json:"profile_mode,omitempty"`
	ProfileRate int                  `json:"profile_rate,omitempty"`
	LabName     string               `json:"lab"`
	Command     string               `json:"command"`
	Generator   []string             `json:"-"`
	Logf        func(string, ...any) `json:"-"`
	// Progress, if set, hears before each run where the benchmark stands (report.Plan).
	Progress func(report.Progress) `json:"-"`
}

func (o *NetchannelOptions) defaults() error {
	if len(o.Modes) == 0 {
		o.Modes = []string{ModeRx, ModeEcho}
	}
	for _, m := range o.Modes {
		if m != ModeRx && m != ModeEcho {
			return fmt.Errorf("bench netchannel: mode %q: want %s or %s", m, ModeRx, ModeEcho)
		}
	}
	if len(o.Variants) == 0 {
		o.Variants = []string{Netchannel, Epoll, Mmsg, XDPDrop}
	}
	for _, v := range o.Variants {
		if !slices.Contains([]string{Netchannel, Epoll, Mmsg, XDPDrop}, v) {
			return fmt.Errorf("bench netchannel: variant %q: want %s, %s, %s or %s", v, Netchannel, Epoll, Mmsg, XDPDrop)
		}
	}
	if len(o.Rates) == 0 {
		o.Rates = []int{10000, 50000, 100000, 200000, 0}
	}
	for _, r := range o.Rates {
		if r < 0 {
			return fmt.Errorf("bench netchannel: rate %d: want packets/s, or 0 for full load", r)
		}
	}
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.Warmup <= 0 {
		o.Warmup = time.Second
	}
	if o.Window <= 0 {
		o.Window = 5 * time.Second
	}
	if o.Payload == 0 {
		o.Payload = 128
	}
	if o.Payload < 18 || o.Payload > 1472 {
		return fmt.Errorf("bench netchannel: payload %d: want 18..1472 bytes", o.Payload)
	}
	if o.NumFrames == 0 {
		o.NumFrames = netchannelFrames
	}
	if o.Collapse == 0 {
		o.Collapse = 0.5
	}
	if o.Collapse >= 1 {
		return fmt.Errorf("bench netchannel: collapse %g: want a share below 1 (negative: no check)", o.Collapse)
	}
	if o.MaxForeign == 0 {
		o.MaxForeign = 0.10
	}
	if o.Retries == 0 {
		o.Retries = 2
	}
	if o.QuietWait == 0 {
		o.QuietWait = 20 * time.Second
	}
	if o.QuietBusy == 0 {
		o.QuietBusy = 0.10
	}
	if o.ProfileMode == "" {
		o.ProfileMode = ModeEcho
	}
	if o.ProfileRate == 0 {
		o.ProfileRate = 100000
	}
	if len(o.Generator) == 0 {
		return errors.New("bench netchannel: NetchannelOptions.Generator must name the program that runs the traffic generator")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// harness turns the options into the harness's for one mode.
func (o *NetchannelOptions) harness(mode string) Options {
	kind := KindRx
	if mode == ModeEcho {
		kind = KindReflect
	}
	return Options{Kind: kind, Variants: o.modeVariants(mode), Runs: o.Runs, Warmup: o.Warmup, Window: o.Window,
		Size: o.Payload + udpFrameOverhead, Flows: o.Flows, Queues: 1, Engine: trafficgen.EngineXDP,
		GenCPU: o.GenCPU, RxCPU: o.RxCPU, MaxForeign: o.MaxForeign, Retries: o.Retries, BatchSize: o.BatchSize,
		NumFrames: o.NumFrames, RingSize: o.RingSize, SpinIdle: o.SpinIdle, LabName: o.LabName, Command: o.Command,
		Generator: o.Generator, Logf: o.Logf}
}

// modeVariants are the variants that run in a mode: xdp-drop only receives.
func (o *NetchannelOptions) modeVariants(mode string) []string {
	var vs []string
	for _, v := range o.Variants {
		if v == XDPDrop && mode != ModeRx {
			continue
		}
		vs = append(vs, v)
	}
	return vs
}

// NetchannelRun is the harness's own record of one run of one variant in one mode at one rate
// (a report.Run's Detail).
type NetchannelRun struct {
	Mode string `json:"mode"`
	Rate int    `json:"rate"` // offered packets/s; 0: full load
	// Loss is the share of what the generator sent over the whole run (warm-up included)
	// that the receiver did not get (rx) or that did not come back (echo).
	Loss float64 `json:"loss"`
	// QuietBefore is the whole machine's busy share in the half second before the run
	// started, after waiting Waited seconds (at most QuietWait) for it to fall below QuietBusy.
	QuietBefore float64 `json:"quiet_before"`
	Waited      float64 `json:"waited_s"`
	RunRecord
}

// NetchannelDetail decodes the harness's record of a run of a netchannel document; the
// netchannel variant's Receiver comes back as NetchannelCounts, the others' as generic JSON.
func NetchannelDetail(r report.Run) (NetchannelRun, error) {
	var run NetchannelRun
	if len(r.Detail) == 0 {
		return run, fmt.Errorf("%s %s round %d: no detail", r.Case, r.Variant, r.Round)
	}
	if err := json.Unmarshal(r.Detail, &run); err != nil {
		return run, err
	}
	if r.Variant == Netchannel && run.Receiver != nil {
		var c struct {
			Receiver NetchannelCounts `json:"receiver"`
		}
		if err := json.Unmarshal(r.Detail, &c); err != nil {
			return run, err
		}
		run.Receiver = c.Receiver
	}
	return run, nil
}

// RunNetchannel builds a pair lab, runs the netchannel benchmark and removes the lab, also when
// ctx is cancelled. See the package doc and NetchannelOptions. When a run's error (or ctx's end)
// stops the benchmark, the document holds the runs before it.
func RunNetchannel(ctx context.Context, o NetchannelOptions) (*report.Document, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	hos := map[string]*Options{}
	for _, m := range o.Modes {
		h := o.harness(m)
		if err := h.defaults(); err != nil {
			return nil, err
		}
		hos[m] = &h
	}
	first := hos[o.Modes[0]]
	o.LabName, o.GenCPU, o.RxCPU, o.Flows = first.LabName, first.GenCPU, first.RxCPU, first.Flows
	for _, h := range hos {
		h.LabName, h.GenCPU, h.RxCPU = o.LabName, o.GenCPU, o.RxCPU
	}
	if os.Geteuid() != 0 {
		return nil, lab.ErrNotRoot
	}
	if err := lab.SweepOrphans("ncb"); err != nil {
		o.Logf("bench: sweeping labs of killed benchmarks: %v", err)
	}
	for _, c := range []int{o.GenCPU, o.RxCPU} {
		if !slices.Contains(trafficgen.ProcessCPUs(), c) {
			return nil, fmt.Errorf("bench netchannel: CPU %d is not in this process's affinity mask %v", c, trafficgen.ProcessCPUs())
		}
	}
	d, cases, err := o.document()
	if err != nil {
		return nil, err
	}
	o.Logf("bench netchannel: building lab %s; %d-byte UDP payloads (%d-byte frames); generator on CPU %d, receivers and NAPI on CPU %d",
		o.LabName, o.Payload, o.Payload+udpFrameOverhead, o.GenCPU, o.RxCPU)
	l, err := lab.Up(ctx, lab.Config{Name: o.LabName, Layout: lab.LayoutPair, QueueCount: 1, StaticARP: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := lab.Down(o.LabName); err != nil {
			o.Logf("bench: removing lab %s: %v", o.LabName, err)
		}
	}()
	bs := map[string]*bencher{}
	for m, h := range hos {
		b, err := newBencher(h, l)
		if err != nil {
			return nil, err
		}
		defer b.close()
		bs[m] = b
	}
	err = d.Execute(ctx, o.plan(d, cases, func(ctx context.Context, mode, variant string, rate, runID int) (NetchannelRun, error) {
		quiet, waited, err := waitQuiet(ctx, &o, bs[mode].cpus)
		if err != nil {
			return NetchannelRun{Mode: mode, Rate: rate}, err
		}
		run, err := runNetchannelOnce(ctx, bs[mode], mode, variant, rate, runID)
		run.QuietBefore, run.Waited = quiet, waited.Seconds()
		return run, err
	}))
	settle(d, cases)
	if err != nil {
		return d, err
	}
	if o.Profile != "" && slices.Contains(o.Variants, Netchannel) && bs[o.ProfileMode] != nil {
		if err := o.profile(ctx, d, bs[o.ProfileMode]); err != nil {
			return d, err
		}
	}
	return d, nil
}

// profile runs netchannel once more (ProfileMode at ProfileRate) with a CPU profile of this
// process, and names the profile and that run's figures in the document's files and set-up.
func (o *NetchannelOptions) profile(ctx context.Context, d *report.Document, b *bencher) error {
	pf, err := os.Create(o.Profile)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		pf.Close()
		return err
	}
	// Every run so far had its own run ID, 1 up: the next is new.
	run, err := runNetchannelOnce(ctx, b, o.ProfileMode, Netchannel, o.ProfileRate, len(d.Runs)+1)
	pprof.StopCPUProfile()
	if cerr := pf.Close(); err == nil {
		err = cerr
	}
	path, aerr := filepath.Abs(o.Profile)
	if aerr != nil {
		path = o.Profile
	}
	d.Files = append(d.Files, path)
	what := fmt.Sprintf("profile %s: a CPU profile (pprof) of this process over one more netchannel run after the rounds, %s at %s, left out of the figures",
		path, o.ProfileMode, rateName(o.ProfileRate))
	if err != nil {
		d.Setup = append(d.Setup, what+"; the run failed: "+err.Error())
		return nil
	}
	logNetchannelRun(o.Logf, run, 0)
	o.Logf("bench netchannel: CPU profile of this process over that run: %s", o.Profile)
	d.Setup = append(d.Setup, fmt.Sprintf("%s: %.0f pkt/s delivered, %.0f ns/pkt on the receive core (own threads %.0f)",
		what, run.PPS, run.NsPerPacket, run.TaskNsPerPacket))
	return nil
}

// ncCase is what a netchannel case asks of a run.
type ncCase struct {
	report.Case
	mode string
	rate int // offered packets/s; 0: full load
}

// ncCaseName names the case of mode at rate: "rx 10000", "echo full".
func ncCaseName(mode string, rate int) string {
	if rate == 0 {
		return mode + " full"
	}
	return mode + " " + strconv.Itoa(rate)
}

// document lays out the netchannel document: a case per mode and rate, the metrics with their
// figures above the floor, the outlier rule from Collapse, and the ratios of CPU above the
// floor with their targets.
func (o *NetchannelOptions) document() (*report.Document, map[string]ncCase, error) {
	d := report.New("netchannel", o.Command)
	if err := d.SetOptions(o); err != nil {
		return nil, nil, err
	}
	d.Rounds = o.Runs
	d.Setup = []string{
		fmt.Sprintf("%d-byte UDP payloads (%d-byte frames without FCS), %d flows; lab %s: a veth pair with one queue",
			o.Payload, o.Payload+udpFrameOverhead, o.Flows, o.LabName),
		fmt.Sprintf("the generator on CPU %d (live-frame XDP at full load, AF_XDP at the offered rates); the receivers and the receiving veth's NAPI threads on CPU %d",
			o.GenCPU, o.RxCPU),
		fmt.Sprintf("each run: %v warm-up, %v measured window", o.Warmup, o.Window),
		"xdp-drop only receives: it runs in rx mode and is the floor of both modes; CPU above the floor is a run's CPU per packet less that of the same round's xdp-drop run (rx) at the same rate",
		fmt.Sprintf("a run is contaminated when other processes take more than %.0f%% of the receive core", 100*o.MaxForeign),
	}
	if o.QuietWait > 0 {
		d.Setup = append(d.Setup, fmt.Sprintf("before each run, up to %v of waiting for half a second in which the machine is less than %.0f%% busy",
			o.QuietWait, 100*o.QuietBusy))
	}
	d.CaseAxis = netchannelCaseAxis
	cases := map[string]ncCase{}
	for _, m := range o.Modes {
		for _, r := range o.Rates {
			// Full load has no offered rate to place it by (the generator's is measured, not
			// set): X 0, which plots leave out.
			c := ncCase{Case: report.Case{Name: ncCaseName(m, r), Group: m, X: float64(r)}, mode: m, rate: r}
			d.Cases = append(d.Cases, c.Case)
			cases[c.Name] = c
		}
	}
	d.Variants = slices.Clone(o.Variants)
	d.Metrics = []report.Metric{
		{Name: mPPS, Unit: "pkt/s", Better: report.Higher, Key: true,
			About: "delivered: datagrams received (rx) or replies back at the generator's interface (echo), per second of the window"},
		{Name: mGenPPS, Unit: "pkt/s", About: "what the generator put on the wire"},
		{Name: mLoss, Unit: "share", Better: report.Lower,
			About: "the share of what the generator sent over the whole run that was not received (rx) or did not come back (echo)"},
		{Name: mNsPerPkt, Unit: "ns/pkt", Better: report.Lower, About: "the receive core's busy time (/proc/stat) per delivered packet"},
		{Name: mTaskNsPkt, Unit: "ns/pkt", Better: report.Lower,
			About: "the run time of the receiver's threads and the receiving veth's NAPI threads (schedstat) per delivered packet"},
		{Name: mMachineNsPkt, Unit: "ns/pkt", Better: report.Lower,
			About: "every CPU's busy time less the generator process's threads per delivered packet"},
		{Name: mRxCoreBusy, Unit: "share", About: "the receive core's busy share of the window"},
		{Name: mMachineBusy, Unit: "CPUs", About: "every CPU's busy time over the window"},
		{Name: mSlicesPer1k, Unit: "/1k pkt", Better: report.Lower,
			About: "times the receiver's threads and the NAPI threads were scheduled in, per 1000 packets received"},
	}
	for _, a := range aboveFloor {
		d.Metrics = append(d.Metrics, report.Metric{Name: a.above, Unit: "ns/pkt", Better: report.Lower,
			About: fmt.Sprintf("%s less the xdp-drop run's (rx, same round and rate)", a.of)})
	}
	// The old collapse check flagged a run below Collapse × its siblings' median; the outlier
	// rule keeps that bound (median / Factor) and adds its mirror above (median × Factor),
	// which at an offered rate cannot fire (nothing delivers more than is offered) and at full
	// load catches a run that doubled its siblings' rate.
	switch {
	case o.Collapse < 0:
		d.Outliers = report.OutlierRule{Metric: mPPS, Factor: -1}
	default:
		d.Outliers = report.OutlierRule{Metric: mPPS, Factor: 1 / o.Collapse}
	}
	if slices.Contains(o.Modes, ModeRx) && slices.Contains(o.Variants, XDPDrop) && slices.Contains(o.Variants, Netchannel) {
		for _, a := range aboveFloor {
			for _, m := range o.Modes {
				for _, r := range o.Rates {
					for _, other := range []struct {
						v     string
						bound float64
					}{{Epoll, 0.5}, {Mmsg, 1}} {
						if slices.Contains(o.Variants, other.v) {
							d.Ratios = append(d.Ratios, report.Ratio{Name: fmt.Sprintf("%s %s/%s above floor", a.measure, Netchannel, other.v),
								Case: ncCaseName(m, r), Metric: a.above, Num: Netchannel, Den: other.v,
								Target: &report.Target{Op: "<=", Value: other.bound}})
						}
					}
				}
			}
		}
	}
	return d, cases, nil
}

// inGrid says whether variant runs in case c.
func inGrid(c ncCase, variant string) bool { return variant != XDPDrop || c.mode == ModeRx }

// ncMeasureFunc measures one run of variant in mode at rate (0: full load); runID tells its
// frames from earlier runs'.
type ncMeasureFunc func(ctx context.Context, mode, variant string, rate, runID int) (NetchannelRun, error)

// plan runs the document's trials through measure: a run that fails is recorded with its error
// and the benchmark goes on, unless ctx ended. Trials outside the grid (xdp-drop in echo mode)
// are skipped.
func (o *NetchannelOptions) plan(d *report.Document, cases map[string]ncCase, measure ncMeasureFunc) report.Plan {
	runID := 0
	p := report.Plan{Retries: o.Retries, Progress: o.Progress}
	p.Skip = func(c report.Case, v string) bool { return !inGrid(cases[c.Name], v) }
	p.Measure = func(ctx context.Context, t report.Trial) (report.Run, error) {
		c, ok := cases[t.Case.Name]
		if !ok {
			return report.Run{}, fmt.Errorf("case %q is not in the benchmark", t.Case.Name)
		}
		runID++
		run, err := measure(ctx, c.mode, t.Variant, c.rate, runID)
		if err != nil {
			if ctx.Err() != nil {
				return report.Run{}, err
			}
			o.Logf("bench netchannel: %s %s %s round %d: %v", c.mode, t.Variant, rateName(c.rate), t.Round, err)
			return report.Run{Err: err.Error(), Detail: detail(run)}, nil
		}
		logNetchannelRun(o.Logf, run, t.Round)
		r := reportNetchannelRun(run)
		r.Contaminated = r.Foreign > o.MaxForeign
		return r, nil
	}
	return p
}

// reportNetchannelRun turns a measured run into the document's: its values, how much of the
// receive core other processes took, and its record as the detail.
func reportNetchannelRun(run NetchannelRun) report.Run {
	r := report.Run{Values: map[string]float64{mPPS: run.PPS, mGenPPS: run.GenPPS, mRxCoreBusy: run.RxCPU.Busy,
		mMachineBusy: run.MachineBusy}, Foreign: run.foreign(), Detail: detail(run)}
	if run.Check.GenSent > 0 {
		r.Values[mLoss] = run.Loss
	}
	// Without a packet delivered there is no CPU per packet (rather than one of 0).
	if run.PPS > 0 {
		r.Values[mNsPerPkt] = run.NsPerPacket
		r.Values[mTaskNsPkt] = run.TaskNsPerPacket
		r.Values[mMachineNsPkt] = run.MachineNsPerPacket
	}
	if run.RxPackets > 0 {
		r.Values[mSlicesPer1k] = 1000 * float64(run.TaskSlices) / float64(run.RxPackets)
	}
	if !run.Check.OK() {
		r.Comments = append(r.Comments, "counts disagree with the interface counters: "+run.Check.Note)
	}
	return r
}

// settle finishes the document after Execute: it summarises to learn which run stands for each round, stores in each of those runs its CPU per
// packet above the same round's xdp-drop run (rx) at the same rate, and summarises again, so
// the figures and ratios include those values.
func settle(d *report.Document, cases map[string]ncCase) {
	d.Summarize()
	for i := range d.Runs {
		r := &d.Runs[i]
		for _, a := range aboveFloor {
			delete(r.Values, a.above)
		}
		c, ok := cases[r.Case]
		if !r.Used || !ok {
			continue
		}
		fl := d.Used(ncCaseName(ModeRx, c.rate), XDPDrop, r.Round)
		if fl == nil {
			continue
		}
		for _, a := range aboveFloor {
			x, okx := r.Values[a.of]
			y, oky := fl.Values[a.of]
			if okx && oky {
				r.Values[a.above] = x - y
			}
		}
	}
	d.Summarize()
}

// waitQuiet waits, up to QuietWait, for half a second in which the machine is less than
// QuietBusy busy, and returns the last half second's busy share and how long it waited.
func waitQuiet(ctx context.Context, o *NetchannelOptions, cpus []int) (float64, time.Duration, error) {
	if o.QuietWait < 0 {
		return 0, 0, nil
	}
	start := time.Now()
	for {
		c0, err := sysstat.ReadCPUTimes(cpus...)
		if err != nil {
			return 0, 0, err
		}
		t0 := time.Now()
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return 0, 0, err
		}
		c1, err := sysstat.ReadCPUTimes(cpus...)
		if err != nil {
			return 0, 0, err
		}
		var busy int64
		for _, c := range cpus {
			busy += c1[c].Sub(c0[c]).Busy()
		}
		share := float64(busy) / (float64(time.Since(t0)) * float64(len(cpus)))
		waited := time.Since(start)
		if share < o.QuietBusy || waited >= o.QuietWait {
			if share >= o.QuietBusy {
				o.Logf("bench netchannel: the machine stayed %.0f%% busy for %v; running anyway", 100*share, o.QuietWait)
			}
			return share, waited, nil
		}
	}
}

// runNetchannelOnce measures variant once in mode at rate (0: full load), with the loss over
// the whole run.
func runNetchannelOnce(ctx context.Context, b *bencher, mode, variant string, rate, runID int) (NetchannelRun, error) {
	phase := PhaseLoad
	if rate == 0 {
		phase = PhaseMax
	}
	rec, err := b.runAt(ctx, variant, phase, b.o.Size, rate, runID)
	run := NetchannelRun{Mode: mode, Rate: rate, RunRecord: rec}
	if err != nil {
		return run, err
	}
	got := rec.Check.Received
	if mode == ModeEcho {
		got = rec.Check.Replies
	}
	if rec.Check.GenSent > 0 {
		run.Loss = max(0, 1-float64(got)/float64(rec.Check.GenSent))
	}
	return run, nil
}

func rateName(rate int) string {
	if rate == 0 {
		return "full load"
	}
	return fmt.Sprintf("%dk/s", rate/1000)
}

func logNetchannelRun(logf func(string, ...any), r NetchannelRun, round int) {
	logf("  %-4s %-10s %-9s round %2d: %8.0f pkt/s (gen %8.0f, loss %5.2f%%), rx core %6.0f ns/pkt (own %6.0f, %3.0f%% busy, others %3.0f%%), machine %6.0f ns/pkt, check %s; machine %.0f%% busy before (waited %.1fs)",
		r.Mode, r.Variant, rateName(r.Rate), round, r.PPS, r.GenPPS, 100*r.Loss, r.NsPerPacket, r.TaskNsPerPacket,
		100*r.RxCPU.Busy, 100*r.foreign(), r.MachineNsPerPacket, checkWord(r.Check), 100*r.QuietBefore, r.Waited)
}
