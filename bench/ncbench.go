package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/netchan/netchan/bench/stats"
	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// Modes of the netchannel benchmark.
const (
	ModeRx   = "rx"   // receive only: the receiver drops (releases) every datagram
	ModeEcho = "echo" // the receiver sends every datagram back to its sender
)

// What a ratio measures.
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
	// rotating (default 5).
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
	// MaxForeign and Retries: as Options (contaminated runs are repeated).
	MaxForeign float64 `json:"max_foreign"`
	Retries    int     `json:"retries"`
	// QuietWait: before every run, wait up to this long for half a second in which the
	// whole machine is less than QuietBusy busy (other people's builds and tests come in
	// bursts); default 20s, negative: do not wait. QuietBusy defaults to 0.10.
	QuietWait time.Duration `json:"quiet_wait_ns"`
	QuietBusy float64       `json:"quiet_busy"`
	// Collapse: a run whose delivered packets/s is below this share of the median of its
	// siblings (same mode, rate and variant, other rounds) has collapsed: it is flagged and
	// left out of the figures while another run remains (default 0.5).
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

// NetchannelRun is one run of one variant in one mode at one rate.
type NetchannelRun struct {
	Mode string `json:"mode"`
	Rate int    `json:"rate"` // offered packets/s; 0: full load
	// Loss is the share of what the generator sent over the whole run (warm-up included)
	// that the receiver did not get (rx) or that did not come back (echo).
	Loss float64 `json:"loss"`
	// Collapsed: delivered packets/s far below its siblings' median (Options.Collapse).
	Collapsed bool `json:"collapsed,omitempty"`
	// QuietBefore is the whole machine's busy share in the half second before the run
	// started, after waiting Waited seconds (at most QuietWait) for it to fall below QuietBusy.
	QuietBefore float64 `json:"quiet_before"`
	Waited      float64 `json:"waited_s"`
	RunRecord
}

// NetchannelFigure is one variant in one mode at one rate, over the rounds.
type NetchannelFigure struct {
	Mode    string `json:"mode"`
	Variant string `json:"variant"`
	Rate    int    `json:"rate"`
	Runs    int    `json:"runs"`       // rounds in the figure
	Clean   int    `json:"clean_runs"` // of those, with the receive core to themselves
	// Collapsed counts rounds left out because their run collapsed.
	Collapsed int  `json:"collapsed"`
	Noisy     bool `json:"noisy,omitempty"`
	// PPS is delivered packets/s: received (rx) or replies back at the generator (echo).
	PPS    Stat `json:"pps"`
	GenPPS Stat `json:"gen_pps"` // what the generator put on the wire
	Loss   Stat `json:"loss"`
	// NsPerPacket is the receive core's busy time per packet (/proc/stat), TaskNsPerPacket
	// the receiver's own threads' and NAPI threads' (schedstat), MachineNsPerPacket every
	// CPU's busy time less the generator process's threads per packet (RunRecord).
	NsPerPacket        Stat `json:"ns_per_packet"`
	TaskNsPerPacket    Stat `json:"task_ns_per_packet"`
	MachineNsPerPacket Stat `json:"machine_ns_per_packet"`
	RxCoreBusy         Stat `json:"rx_core_busy"`
	MachineBusy        Stat `json:"machine_busy"` // in CPUs
	// SlicesPer1k is how often the receiver's threads and the NAPI threads were scheduled in
	// per 1000 packets (wake-ups: thread switches).
	SlicesPer1k Stat `json:"timeslices_per_1k_packets"`
	// AboveFloor is the receive-core ns/packet above xdp-drop's at the same rate (rx mode,
	// same rounds), paired by round: the median over rounds of (this run − that round's
	// xdp-drop run). TaskAboveFloor and MachineAboveFloor likewise for the own threads'
	// and the whole machine's figures. Absent without a floor.
	AboveFloor        *Stat `json:"above_floor,omitempty"`
	TaskAboveFloor    *Stat `json:"task_above_floor,omitempty"`
	MachineAboveFloor *Stat `json:"machine_above_floor,omitempty"`
}

// NetchannelRatio compares netchannel's CPU above the floor with a socket variant's in one
// mode at one rate.
type NetchannelRatio struct {
	Mode string `json:"mode"`
	Rate int    `json:"rate"`
	// Measure is MeasureRxCore or MeasureOwnThreads.
	Measure string  `json:"measure"`
	Name    string  `json:"name"` // e.g. "netchannel/epoll above floor"
	Value   float64 `json:"value"`
	// Paired is the median over rounds of the ratio within each round.
	Paired float64 `json:"paired"`
	Target string  `json:"target,omitempty"`
	Met    *bool   `json:"met,omitempty"`
}

// NetchannelReport is what RunNetchannel wrote.
type NetchannelReport struct {
	Kind         string             `json:"kind"` // "netchannel"
	Command      string             `json:"command"`
	Started      time.Time          `json:"started"`
	Finished     time.Time          `json:"finished"`
	Machine      Machine            `json:"machine"`
	Options      NetchannelOptions  `json:"options"`
	FrameSize    int                `json:"frame_size"` // Payload + 42, without FCS
	Figures      []NetchannelFigure `json:"figures"`
	Ratios       []NetchannelRatio  `json:"ratios"`
	Runs         []NetchannelRun    `json:"runs"`
	ProfileRun   *NetchannelRun     `json:"profile_run,omitempty"`
	LoadavgStart string             `json:"loadavg_start"`
	LoadavgEnd   string             `json:"loadavg_end"`
}

// RunNetchannel builds a pair lab, runs the netchannel benchmark and removes the lab, also when
// ctx is cancelled. See the package doc and NetchannelOptions.
func RunNetchannel(ctx context.Context, o NetchannelOptions) (*NetchannelReport, error) {
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
	o.LabName, o.GenCPU, o.RxCPU = first.LabName, first.GenCPU, first.RxCPU
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
	rep := &NetchannelReport{Kind: "netchannel", Command: o.Command, Started: time.Now(), Machine: machine(),
		FrameSize: o.Payload + udpFrameOverhead, LoadavgStart: sysstat.Loadavg()}
	o.Logf("bench netchannel: building lab %s; %d-byte UDP payloads (%d-byte frames); generator on CPU %d, receivers and NAPI on CPU %d",
		o.LabName, o.Payload, rep.FrameSize, o.GenCPU, o.RxCPU)
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
		b, err := newBencher(ctx, h, l)
		if err != nil {
			return nil, err
		}
		defer b.close()
		bs[m] = b
	}
	finish := func() {
		rep.Finished = time.Now()
		rep.LoadavgEnd = sysstat.Loadavg()
		rep.Options = o
		rep.summarize()
	}
	for round := 0; round < o.Runs; round++ {
		for mi, mode := range o.Modes {
			for ri, rate := range o.Rates {
				vs := o.modeVariants(mode)
				for i := range vs {
					v := vs[(i+round+ri+mi)%len(vs)]
					if err := ctx.Err(); err != nil {
						finish()
						return rep, err
					}
					for attempt := 0; ; attempt++ {
						quiet, waited, err := waitQuiet(ctx, &o, bs[mode].cpus)
						if err != nil {
							finish()
							return rep, err
						}
						run, err := runNetchannelOnce(bs[mode], mode, v, round, rate)
						run.QuietBefore, run.Waited = quiet, waited.Seconds()
						run.Attempt = attempt
						if err != nil {
							run.Err = err.Error()
							o.Logf("bench netchannel: %s %s %s round %d: %v", mode, v, rateName(rate), round, err)
							rep.Runs = append(rep.Runs, run)
							if ctx.Err() != nil {
								finish()
								return rep, ctx.Err()
							}
							break
						}
						run.Contaminated = run.Foreign > o.MaxForeign
						logNetchannelRun(o.Logf, run)
						rep.Runs = append(rep.Runs, run)
						if !run.Contaminated || attempt >= bs[mode].o.Retries {
							break
						}
					}
				}
			}
		}
	}
	if o.Profile != "" && slices.Contains(o.Variants, Netchannel) && bs[o.ProfileMode] != nil {
		pf, err := os.Create(o.Profile)
		if err != nil {
			return rep, err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			pf.Close()
			return rep, err
		}
		run, err := runNetchannelOnce(bs[o.ProfileMode], o.ProfileMode, Netchannel, -1, o.ProfileRate)
		pprof.StopCPUProfile()
		pf.Close()
		if err != nil {
			run.Err = err.Error()
		}
		logNetchannelRun(o.Logf, run)
		o.Logf("bench netchannel: CPU profile of this process over that run: %s", o.Profile)
		rep.ProfileRun = &run
	}
	finish()
	return rep, nil
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

func runNetchannelOnce(b *bencher, mode, variant string, round, rate int) (NetchannelRun, error) {
	phase := PhaseLoad
	if rate == 0 {
		phase = PhaseMax
	}
	rec, err := b.runAt(variant, phase, round, rate)
	run := NetchannelRun{Mode: mode, Rate: rate, RunRecord: rec}
	if err != nil {
		return run, err
	}
	run.Foreign = rec.RxCPU.Busy - rec.TaskCPU
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

func logNetchannelRun(logf func(string, ...any), r NetchannelRun) {
	logf("  %-4s %-10s %-9s round %2d: %8.0f pkt/s (gen %8.0f, loss %5.2f%%), rx core %6.0f ns/pkt (own %6.0f, %3.0f%% busy, others %3.0f%%), machine %6.0f ns/pkt, check %s; load %s; machine %.0f%% busy before (waited %.1fs)",
		r.Mode, r.Variant, rateName(r.Rate), r.Round, r.PPS, r.GenPPS, 100*r.Loss, r.NsPerPacket, r.TaskNsPerPacket,
		100*r.RxCPU.Busy, 100*r.Foreign, r.MachineNsPerPacket, checkWord(r.Check), r.Loadavg, 100*r.QuietBefore, r.Waited)
}

// summarize picks each round's run (its clean attempt, or the least contaminated one), flags
// collapsed runs, and computes the figures and ratios.
func (r *NetchannelReport) summarize() {
	o := r.Options
	r.Figures, r.Ratios = nil, nil
	type key struct {
		mode, variant string
		rate          int
	}
	used := map[key]map[int]*NetchannelRun{}
	for i := range r.Runs {
		run := &r.Runs[i]
		run.Used, run.Collapsed = false, false
		if run.Err != "" {
			continue
		}
		k := key{run.Mode, run.Variant, run.Rate}
		if used[k] == nil {
			used[k] = map[int]*NetchannelRun{}
		}
		if cur := used[k][run.Round]; cur == nil || run.Foreign < cur.Foreign {
			used[k][run.Round] = run
		}
	}
	// Collapsed runs: far below the median of their siblings; left out while others remain.
	for _, rounds := range used {
		var pps []float64
		for _, run := range rounds {
			pps = append(pps, run.PPS)
		}
		med := stats.Median(pps)
		var keep int
		for _, run := range rounds {
			run.Collapsed = run.PPS < o.Collapse*med
			if !run.Collapsed {
				keep++
			}
		}
		if keep == 0 {
			for _, run := range rounds {
				run.Collapsed = false
			}
		}
	}
	in := func(k key, round int) *NetchannelRun {
		run := used[k][round]
		if run == nil || run.Collapsed {
			return nil
		}
		return run
	}
	floorOf := func(rate, round int) *NetchannelRun { return in(key{ModeRx, XDPDrop, rate}, round) }
	for _, mode := range o.Modes {
		for _, rate := range o.Rates {
			for _, v := range o.modeVariants(mode) {
				k := key{mode, v, rate}
				f := NetchannelFigure{Mode: mode, Variant: v, Rate: rate}
				var pps, gen, loss, ns, tns, mns, busy, mbusy, above, tabove, mabove, slices []float64
				for round := 0; round < o.Runs; round++ {
					if run := used[k][round]; run != nil && run.Collapsed {
						f.Collapsed++
					}
					run := in(k, round)
					if run == nil {
						continue
					}
					run.Used = true
					f.Runs++
					if !run.Contaminated {
						f.Clean++
					}
					pps, gen, loss = append(pps, run.PPS), append(gen, run.GenPPS), append(loss, run.Loss)
					ns, tns, mns = append(ns, run.NsPerPacket), append(tns, run.TaskNsPerPacket), append(mns, run.MachineNsPerPacket)
					busy, mbusy = append(busy, run.RxCPU.Busy), append(mbusy, run.MachineBusy)
					if run.RxPackets > 0 {
						slices = append(slices, 1000*float64(run.TaskSlices)/float64(run.RxPackets))
					}
					if fl := floorOf(rate, round); fl != nil {
						above = append(above, run.NsPerPacket-fl.NsPerPacket)
						tabove = append(tabove, run.TaskNsPerPacket-fl.TaskNsPerPacket)
						mabove = append(mabove, run.MachineNsPerPacket-fl.MachineNsPerPacket)
					}
				}
				f.Noisy = f.Clean < f.Runs
				f.PPS, f.GenPPS, f.Loss = newStat(pps), newStat(gen), newStat(loss)
				f.NsPerPacket, f.TaskNsPerPacket, f.MachineNsPerPacket = newStat(ns), newStat(tns), newStat(mns)
				f.RxCoreBusy, f.MachineBusy, f.SlicesPer1k = newStat(busy), newStat(mbusy), newStat(slices)
				if len(above) > 0 {
					a, ta, m := newStat(above), newStat(tabove), newStat(mabove)
					f.AboveFloor, f.TaskAboveFloor, f.MachineAboveFloor = &a, &ta, &m
				}
				r.Figures = append(r.Figures, f)
			}
		}
	}
	// Ratios of CPU above the floor: netchannel against each socket variant, by the receive
	// core's figure (/proc/stat) and by the own threads' (schedstat).
	measures := []struct {
		name string
		get  func(*NetchannelRun) float64
	}{
		{MeasureRxCore, func(r *NetchannelRun) float64 { return r.NsPerPacket }},
		{MeasureOwnThreads, func(r *NetchannelRun) float64 { return r.TaskNsPerPacket }},
		{MeasureMachine, func(r *NetchannelRun) float64 { return r.MachineNsPerPacket }},
	}
	ratio := func(mode string, rate int, measure int, other, target string, bound float64) {
		get := measures[measure].get
		var num, den, paired []float64
		for round := 0; round < o.Runs; round++ {
			a, b, fl := in(key{mode, Netchannel, rate}, round), in(key{mode, other, rate}, round), floorOf(rate, round)
			if a == nil || b == nil || fl == nil {
				continue
			}
			x, y := get(a)-get(fl), get(b)-get(fl)
			num, den = append(num, x), append(den, y)
			if y > 0 {
				paired = append(paired, x/y)
			}
		}
		if len(num) == 0 || stats.Median(den) <= 0 {
			return
		}
		rt := NetchannelRatio{Mode: mode, Rate: rate, Measure: measures[measure].name, Name: Netchannel + "/" + other + " above floor",
			Value: stats.Median(num) / stats.Median(den), Paired: stats.Median(paired), Target: target}
		met := rt.Value <= bound
		rt.Met = &met
		r.Ratios = append(r.Ratios, rt)
	}
	for m := range measures {
		for _, mode := range o.Modes {
			for _, rate := range o.Rates {
				ratio(mode, rate, m, Epoll, "<= 0.5", 0.5)
				ratio(mode, rate, m, Mmsg, "<= 1", 1)
			}
		}
	}
}

// Figure returns the figure of a variant in a mode at a rate, or nil.
func (r *NetchannelReport) Figure(mode, variant string, rate int) *NetchannelFigure {
	for i := range r.Figures {
		f := &r.Figures[i]
		if f.Mode == mode && f.Variant == variant && f.Rate == rate {
			return f
		}
	}
	return nil
}

// Table renders the figures and ratios as Markdown.
func (r *NetchannelReport) Table() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d-byte UDP payloads (%d-byte frames); medians of %d interleaved rounds; ns/pkt: CPU time per delivered packet; above floor: minus xdp-drop's (rx) at the same rate, paired by round\n\n",
		r.Options.Payload, r.FrameSize, r.Options.Runs)
	sb.WriteString("| mode | offered | variant | delivered pkt/s | loss | rx core ns/pkt | above floor | own threads ns/pkt | above floor | machine ns/pkt | above floor | rx core busy | wake-ups /1k pkt | runs (clean, collapsed) |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	af := func(s *Stat) string {
		if s == nil {
			return "–"
		}
		return fmt.Sprintf("%.0f", s.Median)
	}
	for _, f := range r.Figures {
		fmt.Fprintf(&sb, "| %s | %s | %s | %.0f | %.2f%% | %.0f | %s | %.0f | %s | %.0f | %s | %.0f%% | %.0f | %d (%d, %d) |\n",
			f.Mode, rateName(f.Rate), f.Variant, f.PPS.Median, 100*f.Loss.Median, f.NsPerPacket.Median, af(f.AboveFloor),
			f.TaskNsPerPacket.Median, af(f.TaskAboveFloor), f.MachineNsPerPacket.Median, af(f.MachineAboveFloor), 100*f.RxCoreBusy.Median, f.SlicesPer1k.Median,
			f.Runs, f.Clean, f.Collapsed)
	}
	sb.WriteString("\n| mode | offered | measure | ratio of CPU above the floor | of medians | paired by round | target |\n|---|---|---|---|---|---|---|\n")
	for _, rt := range r.Ratios {
		t := rt.Target
		if rt.Met != nil {
			if *rt.Met {
				t += " (met)"
			} else {
				t += " (missed)"
			}
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %.2f | %.2f | %s |\n", rt.Mode, rateName(rt.Rate), rt.Measure, rt.Name, rt.Value, rt.Paired, t)
	}
	var collapsed []string
	for _, run := range r.Runs {
		if run.Collapsed {
			collapsed = append(collapsed, fmt.Sprintf("%s %s %s round %d (%.0f pkt/s)", run.Mode, run.Variant, rateName(run.Rate), run.Round, run.PPS))
		}
	}
	if len(collapsed) > 0 {
		fmt.Fprintf(&sb, "\nCollapsed runs, left out: %s\n", strings.Join(collapsed, "; "))
	}
	return sb.String()
}

// Write stores the report as DIR/netchannel-YYYYMMDD-HHMMSS.json and returns the path.
func (r *NetchannelReport) Write(dir string) (string, error) {
	return writeReport(dir, "netchannel", r.Started, r)
}

// ReadNetchannelReport loads a report written by Write and recomputes its figures and ratios.
func ReadNetchannelReport(path string) (*NetchannelReport, error) {
	return readReport[NetchannelReport](path)
}
