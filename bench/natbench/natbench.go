package natbench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/stack"
)

// Variants and phases.
const (
	Netchan = "netchan"
	// NetchanXDP is netchan's NAT with its XDP fast path on (nat.EnableXDPFastPath):
	// established flows are translated in the XDP program and redirected to the outside veth.
	NetchanXDP = "netchan-xdp"
	Linux      = "linux"
	Max        = "max"
	Rate       = "rate"
	// RateXDP is Rate with the live-frame XDP engine, paced in its program (trafficgen
	// EngineXDP): frames reach the NAT's veth as XDP frames from a page pool, with no skb,
	// as a NIC driver's ring hands them over. With the AF_XDP engine (Rate) they come as
	// the sender's skbs: veth must copy each one out before an XDP program may run on it, and
	// the sender's socket is charged for it across cores.
	RateXDP = "xdp-rate"
)

// Options of a benchmark.
type Options struct {
	Runs     int           // rounds (default 5)
	Warmup   time.Duration // sending before the window (default 1s)
	Window   time.Duration // measured window (default 4s)
	Flows    int           // UDP source ports (default 16)
	Size     int           // frame size without FCS (default 60)
	Rate     int           // offered packets/s of the rate phase (default 250000)
	GenCPU   int           // the generator's core (default 0)
	NATCPU   int           // the NAT's core (default 1)
	SpinIdle time.Duration // netchan's netchan.Config.SpinIdle (0: the shards' default)
	Variants []string      // default netchan, linux
	Phases   []string      // default max, rate
	// Generator is the argv that runs trafficgen.Main (e.g. netchan lab send, or a test binary).
	Generator []string
	// Profile, when set, is a file for a CPU profile (pprof) of this process over the window of
	// the first netchan max run.
	Profile string
	// MaxForeign is the share of the NAT core that other processes may take in a run (busy
	// time not spent in the NAT's own threads) before the run is contaminated: repeated (up to
	// Retries times), and its round stands by its least contaminated attempt. Default
	// DefaultMaxForeign.
	MaxForeign float64
	// Retries is how often a contaminated run is repeated (report.Plan.Retries: 0 means 2,
	// negative never).
	Retries int
	Command string // recorded in the document
	// Logf hears one line per run with its figures and counters; Progress, where each run
	// stands before it starts.
	Logf     func(string, ...any)  `json:"-"`
	Progress func(report.Progress) `json:"-"`
}

// DefaultMaxForeign is Options.MaxForeign's default, the rx harness's limit.
const DefaultMaxForeign = 0.10

func (o *Options) defaults() {
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.Warmup <= 0 {
		o.Warmup = time.Second
	}
	if o.Window <= 0 {
		o.Window = 4 * time.Second
	}
	if o.Flows <= 0 {
		o.Flows = 16
	}
	if o.Size < 60 {
		o.Size = 60
	}
	if o.Rate <= 0 {
		o.Rate = 250000
	}
	if o.GenCPU == 0 && o.NATCPU == 0 {
		o.NATCPU = 1
	}
	if len(o.Variants) == 0 {
		o.Variants = []string{Netchan, Linux}
	}
	if len(o.Phases) == 0 {
		o.Phases = []string{Max, Rate}
	}
	if o.MaxForeign <= 0 {
		o.MaxForeign = DefaultMaxForeign
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// CPU is the NAT core's time over a window, in nanoseconds.
type CPU struct {
	User    int64 `json:"user_ns"`
	System  int64 `json:"system_ns"`
	SoftIRQ int64 `json:"softirq_ns"`
	IRQ     int64 `json:"irq_ns"`
	Idle    int64 `json:"idle_ns"`
	Busy    int64 `json:"busy_ns"`
}

// RunRecord is one run.
type RunRecord struct {
	Round   int    `json:"round"`
	Variant string `json:"variant"`
	Phase   string `json:"phase"`
	Engine  string `json:"engine"`
	Offered int    `json:"offered_pps,omitempty"` // rate phase
	// Sent and GenPPS are the generator's own figures over its whole run.
	Sent   uint64  `json:"sent"`
	GenPPS float64 `json:"generator_pps"`
	// Delivered is what the server's counting XDP program counted in the window; ServerRx is
	// the server interface's rx_packets over the same window (the cross-check).
	Delivered uint64  `json:"delivered"`
	ServerRx  uint64  `json:"server_rx_packets"`
	Seconds   float64 `json:"seconds"`
	PPS       float64 `json:"pps"`
	// NATInRxDropped and NATOutTxDropped are the NAT's inside interface's rx_dropped (ring full
	// on arrival) and outside interface's tx_dropped (the server's ring full) over the window.
	NATInRxDropped uint64 `json:"nat_in_rx_dropped"`
	// Forwarded is what the NAT put out in the window: Delivered + NATOutTxDropped.
	Forwarded       uint64  `json:"forwarded"`
	ForwardedPPS    float64 `json:"forwarded_pps"`
	NATOutTxDropped uint64  `json:"nat_out_tx_dropped"`
	CPU             CPU     `json:"nat_cpu"`
	// NsPerPacket is the NAT core's busy time per forwarded packet.
	NsPerPacket float64 `json:"cpu_ns_per_packet"`
	// OwnNs is the run time of the NAT's own threads in the window (NAPI threads; for netchan
	// also this process's threads), a figure other processes on the core do not inflate.
	OwnNs          int64   `json:"own_threads_ns"`
	OwnNsPerPacket float64 `json:"own_ns_per_packet"`
	// Foreign is the share of the window the NAT core was busy outside the NAT's own threads
	// (other processes on a shared machine; also interrupts, and softirqs run outside the NAPI
	// threads); Contaminated is Foreign > Options.MaxForeign.
	Foreign      float64 `json:"foreign_share"`
	Contaminated bool    `json:"contaminated"`
	Loadavg      string  `json:"loadavg"`
	// FastPackets (netchan-xdp) is what the XDP fast path translated in the window, ShardRx
	// what netchan's shards received (the AF_XDP path).
	FastPackets uint64 `json:"fast_packets,omitempty"`
	ShardRx     uint64 `json:"shard_rx,omitempty"`
}

// Target is issue 8's goal: netchan at twice Linux's forwarded packets/s on one NAT core. It is
// the target of the packets/s ratios in the phases that offer more than either NAT forwards
// (max, and xdp-rate above their capacity); at the rate phase's equal load both forward what is
// offered, and the phase compares CPU per packet.
const Target = 2.0

// Metrics of a run (the document's metric names).
const (
	MetricPPS          = "pps"
	MetricForwardedPPS = "forwarded_pps"
	MetricNsPerPacket  = "ns_per_packet"
	MetricOwnNs        = "own_ns_per_packet"
	MetricCoreBusy     = "core_busy"
)

// metrics are the document's metrics; the key, delivered packets/s, is the one outlier rounds
// are judged on.
var metrics = []report.Metric{
	{Name: MetricPPS, Unit: "pkt/s", Better: report.Higher, Key: true,
		About: "packets/s delivered to the server: what its counting XDP program counted over the window"},
	{Name: MetricForwardedPPS, Unit: "pkt/s", Better: report.Higher,
		About: "packets/s the NAT put out: delivered plus the outside veth's tx_dropped (the server's ring full)"},
	{Name: MetricNsPerPacket, Unit: "ns/pkt", Better: report.Lower,
		About: "the NAT core's busy time (/proc/stat: user, nice, system, irq, softirq) per forwarded packet"},
	{Name: MetricOwnNs, Unit: "ns/pkt", Better: report.Lower,
		About: "run time of the NAT's own threads (NAPI threads; netchan's process) per forwarded packet: other processes on the core do not inflate it"},
	{Name: MetricCoreBusy, Unit: "share",
		About: "the NAT core's busy time over the window (at max both NATs fill it)"},
}

// newDocument is the grid of o (defaults applied): one case per phase, o's variants, the
// metrics, and per phase and netchan variant the ratios to Linux.
func newDocument(o Options) (*report.Document, error) {
	d := report.New("nat", o.Command)
	if err := d.SetOptions(o); err != nil {
		return nil, err
	}
	d.Rounds = o.Runs
	for _, p := range o.Phases {
		if p != Max && p != Rate && p != RateXDP {
			return nil, fmt.Errorf("natbench: unknown phase %q (want %s, %s or %s)", p, Max, Rate, RateXDP)
		}
		d.Cases = append(d.Cases, report.Case{Name: p, Group: p})
	}
	for _, v := range o.Variants {
		if v != Netchan && v != NetchanXDP && v != Linux {
			return nil, fmt.Errorf("natbench: unknown variant %q (want %s, %s or %s)", v, Netchan, NetchanXDP, Linux)
		}
	}
	d.Variants = slices.Clone(o.Variants)
	d.Metrics = slices.Clone(metrics)
	if !slices.Contains(o.Variants, Linux) {
		return d, nil
	}
	for _, p := range o.Phases {
		for _, v := range o.Variants {
			if v == Linux {
				continue
			}
			r := report.Ratio{Name: MetricForwardedPPS + " " + v + "/linux", Case: p, Metric: MetricForwardedPPS, Num: v, Den: Linux}
			if p == Max || p == RateXDP {
				r.Target = &report.Target{Op: ">=", Value: Target}
			}
			d.Ratios = append(d.Ratios, r,
				report.Ratio{Name: MetricNsPerPacket + " linux/" + v, Case: p, Metric: MetricNsPerPacket, Num: Linux, Den: v})
		}
	}
	return d, nil
}

// toRun is a record as the document's run: its figures as values, its foreign share (above
// maxForeign the run is contaminated) and the record itself as the detail.
func toRun(r RunRecord, maxForeign float64) (report.Run, error) {
	r.Contaminated = r.Foreign > maxForeign
	detail, err := json.Marshal(r)
	if err != nil {
		return report.Run{}, err
	}
	// The NAT's own time counts this whole process (netchan), also its threads on other cores,
	// so the foreign share can come out below zero: no other process took the core.
	run := report.Run{Values: map[string]float64{MetricPPS: r.PPS, MetricForwardedPPS: r.ForwardedPPS}, Foreign: max(0, r.Foreign),
		Contaminated: r.Contaminated, Loadavg: r.Loadavg, Detail: detail}
	if r.Forwarded > 0 {
		// Per packet only when a packet went through: 0 ns/pkt would read as the best figure.
		run.Values[MetricNsPerPacket], run.Values[MetricOwnNs] = r.NsPerPacket, r.OwnNsPerPacket
	}
	if r.Seconds > 0 {
		run.Values[MetricCoreBusy] = float64(r.CPU.Busy) / (r.Seconds * 1e9)
	}
	return run, nil
}

// Records decodes the record (RunRecord) of every run of a document natbench wrote, in the
// document's order of runs.
func Records(d *report.Document) ([]RunRecord, error) {
	recs := make([]RunRecord, 0, len(d.Runs))
	for i, r := range d.Runs {
		var rec RunRecord
		if err := json.Unmarshal(r.Detail, &rec); err != nil {
			return nil, fmt.Errorf("natbench: run %d (%s %s round %d): detail: %w", i, r.Case, r.Variant, r.Round, err)
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// variant is one NAT set up and ready to measure.
type variant struct {
	name       string
	genNS      string // "" = root
	genIface   string
	dstMAC     net.HardwareAddr
	src, dst   netip.Addr
	srvNS      string
	srvIface   string
	counter    *trafficgen.Counter
	srvLinks   *sysstat.NSLinks
	natInNS    string
	natIn      string
	natOutNS   string
	natOut     string
	natLinks   map[string]*sysstat.NSLinks
	napiIfaces [][2]string // (ns, iface) whose NAPI threads run on the NAT core
	napi       []int
	ownProcess bool
	inst       *netchan.Instance
	nat        *nat.NAT
}

// Run builds a lab per variant, runs the rounds through report's Execute (in each round every
// phase, in each phase every variant, the variants' order reversed every second round),
// removes the labs and returns the summarised document. On an error after the labs were built
// the document holds the runs so far.
func Run(ctx context.Context, o Options) (doc *report.Document, err error) {
	o.defaults()
	if len(o.Generator) == 0 {
		return nil, errors.New("natbench: Options.Generator is empty")
	}
	if o.GenCPU == o.NATCPU {
		return nil, fmt.Errorf("natbench: the generator and the NAT need different cores (both %d)", o.GenCPU)
	}
	doc, err = newDocument(o)
	if err != nil {
		return nil, err
	}
	base := "ncn" + randName(3)
	var cleanups []func() error
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			if e := cleanups[i](); e != nil {
				err = errors.Join(err, e)
			}
		}
	}()
	vs := map[string]*variant{}
	for _, name := range o.Variants {
		var v *variant
		var undo []func() error
		var e error
		switch name {
		case Netchan:
			v, undo, e = setupNetchan(ctx, base+"n", &o, doc, false)
		case NetchanXDP:
			v, undo, e = setupNetchan(ctx, base+"x", &o, doc, true)
		case Linux:
			v, undo, e = setupLinux(ctx, base+"l", &o, doc)
		}
		cleanups = append(cleanups, undo...)
		if e != nil {
			return doc, e
		}
		vs[name] = v
	}
	profiled := false
	err = doc.Execute(ctx, report.Plan{
		Retries:  o.Retries,
		Progress: o.Progress,
		Measure: func(ctx context.Context, t report.Trial) (report.Run, error) {
			name, phase := t.Variant, t.Case.Name
			prof := ""
			if o.Profile != "" && !profiled && name == Netchan && phase == Max {
				prof, profiled = o.Profile, true
				doc.Files = append(doc.Files, o.Profile)
			}
			r, err := measure(ctx, &o, vs[name], phase, prof)
			if err != nil {
				return report.Run{}, err
			}
			r.Round = t.Round
			run, err := toRun(r, o.MaxForeign)
			label := fmt.Sprintf("round %d", r.Round)
			if t.Attempt > 0 {
				label += fmt.Sprintf(" attempt %d", t.Attempt)
			}
			o.Logf("%s %-11s %-8s %9.0f pps fwd %9.0f  %6.1f ns/pkt (core busy %3.0f%%, foreign %3.0f%%)  sent %d  counted %d  server rx %d  drops in %d out %d  fast %d  shard rx %d",
				label, name, phase, r.PPS, r.ForwardedPPS, r.NsPerPacket, 100*float64(r.CPU.Busy)/(r.Seconds*1e9), 100*r.Foreign, r.Sent, r.Delivered, r.ServerRx, r.NATInRxDropped, r.NATOutTxDropped, r.FastPackets, r.ShardRx)
			return run, err
		},
	})
	return doc, err
}

func randName(n int) string {
	const alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alpha[int(b[i])%len(alpha)]
	}
	return string(b)
}

func upLab(ctx context.Context, cfg lab.Config) (*lab.Lab, []func() error, error) {
	undo := []func() error{func() error { return lab.Down(cfg.Name) }}
	l, err := lab.Up(ctx, cfg)
	return l, undo, err
}

// sh runs argv in namespace ns ("" = here).
func sh(ctx context.Context, ns string, argv ...string) error {
	out, err := (*lab.Lab)(nil).Command(ctx, ns, argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s%v: %w: %s", nsTag(ns), argv, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func nsTag(ns string) string {
	if ns == "" {
		return ""
	}
	return "[" + ns + "] "
}

// threaded turns threaded NAPI on for iface in ns (sysfs shows the namespace's interfaces only
// inside ip netns exec).
func threaded(ctx context.Context, ns, iface string) error {
	if ns == "" {
		return trafficgen.SetThreadedNAPI(iface)
	}
	return sh(ctx, ns, "sh", "-c", fmt.Sprintf("echo 1 > /sys/class/net/%s/threaded", iface))
}

// inNS runs f on a thread switched into namespace ns.
func inNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err) // the thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// setupServer attaches the counting XDP program to the server's interface and puts its NAPI
// thread on the generator's core.
func setupServer(ctx context.Context, v *variant, o *Options) ([]func() error, error) {
	var undo []func() error
	err := inNS(v.srvNS, func() error {
		ifi, err := net.InterfaceByName(v.srvIface)
		if err != nil {
			return err
		}
		v.counter, err = trafficgen.AttachCounter(ifi.Index, false)
		return err
	})
	if err != nil {
		return undo, fmt.Errorf("server counter on %s: %w", v.srvIface, err)
	}
	undo = append(undo, v.counter.Close)
	if err := threaded(ctx, v.srvNS, v.srvIface); err != nil {
		return undo, err
	}
	_, err = trafficgen.PinNAPIThreads(v.srvIface, []int{o.GenCPU})
	if err != nil {
		return undo, err
	}
	// The server's NAPI thread runs at normal priority next to the spinning generator: when it
	// falls behind, its ring overflows and the NAT's outside interface counts tx_dropped. Those
	// packets went through the NAT, so Forwarded counts them. (Real-time priority for it was
	// tried: it drains the ring after every packet, and the NAT core then pays a cross-core
	// wake-up per packet, which no NIC charges.)

	if v.srvLinks, err = sysstat.OpenNS(v.srvNS); err != nil {
		return undo, err
	}
	undo = append(undo, func() error { v.srvLinks.Close(); return nil })
	v.natLinks = map[string]*sysstat.NSLinks{}
	for _, ns := range []string{v.natInNS, v.natOutNS} {
		if v.natLinks[ns] != nil {
			continue
		}
		nl, err := sysstat.OpenNS(ns)
		if err != nil {
			return undo, err
		}
		v.natLinks[ns] = nl
		undo = append(undo, func() error { nl.Close(); return nil })
	}
	return undo, nil
}

func (v *variant) pinNAPI(ctx context.Context, cpu int) error {
	v.napi = nil
	for _, e := range v.napiIfaces {
		if err := threaded(ctx, e[0], e[1]); err != nil {
			return err
		}
		pids, err := trafficgen.PinNAPIThreads(e[1], []int{cpu})
		if err != nil {
			return err
		}
		v.napi = append(v.napi, pids...)
	}
	return nil
}

func setupNetchan(ctx context.Context, name string, o *Options, doc *report.Document, fast bool) (*variant, []func() error, error) {
	l, undo, err := upLab(ctx, lab.Config{Name: name, Layout: lab.LayoutNAT, QueueCount: 1})
	if err != nil {
		return nil, undo, err
	}
	inside, outside := l.Netchan[0], l.Netchan[1]
	cli, srv := inside.Peer, outside.Peer
	// The server's MAC is a static neighbour, as the Linux router's is (setupLinux): resolved by
	// ARP, the first packets of the max phase met an unresolved server, and under the flood its
	// ARP reply could be lost, so most of a window was dropped waiting (a flaky TestLabCountsAgree).
	host, err := stack.NewHost(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{inside.Addr}}, {Addrs: []netip.Prefix{outside.Addr}}},
		StaticARP: []stack.StaticNeighbor{{Iface: 1, IP: srv.Addr.Addr(), MAC: [6]byte(srv.MAC)}}})
	if err != nil {
		return nil, undo, err
	}
	n, err := nat.New(nat.Config{InsidePrefix: inside.Addr.Masked(), InsideAddr: inside.Addr.Addr(), Outside: outside.Addr.Addr()}, host)
	if err != nil {
		return nil, undo, err
	}
	in, err := netchan.Start(netchan.Config{Interfaces: []string{inside.Iface, outside.Iface}, Queues: []int{0}, XDPMode: xdpprog.ModeNative,
		CPUs: []int{o.NATCPU}, SpinIdle: o.SpinIdle}, n.App(fast))
	if err != nil {
		return nil, undo, fmt.Errorf("netchan NAT: %w", err)
	}
	undo = append(undo, in.Stop)
	vname := Netchan
	if fast {
		vname = NetchanXDP
	}
	v := &variant{name: vname, genNS: cli.NS, genIface: cli.Iface, dstMAC: inside.MAC, src: cli.Addr.Addr(), dst: srv.Addr.Addr(),
		srvNS: srv.NS, srvIface: srv.Iface, natIn: inside.Iface, natOut: outside.Iface,
		napiIfaces: [][2]string{{"", inside.Iface}, {"", outside.Iface}}, ownProcess: true, inst: in, nat: n}
	if err := v.pinNAPI(ctx, o.NATCPU); err != nil {
		return nil, undo, err
	}
	u, err := setupServer(ctx, v, o)
	undo = append(undo, u...)
	if err != nil {
		return nil, undo, err
	}
	doc.Setup = append(doc.Setup, fmt.Sprintf(vname+": lab %s (nat layout, 1 queue): client %s %s on %s → netchan NAT in the root namespace "+
		"(%s inside %v, %s outside %v; nat.New + netchan.Start"+map[bool]string{true: " with the XDP fast path"}[fast]+", 1 shard on CPU %d (spin-idle %v), XDP %v, NAPI threads of both on CPU %d) → server %s %s on %s "+
		"(counting XDP program, NAPI thread on CPU %d)",
		name, cli.NS, cli.Addr, cli.Iface, inside.Iface, inside.Addr, outside.Iface, outside.Addr, o.NATCPU, o.SpinIdle, in.Modes(), o.NATCPU,
		srv.NS, srv.Addr, srv.Iface, o.GenCPU))
	return v, undo, nil
}

func setupLinux(ctx context.Context, name string, o *Options, doc *report.Document) (*variant, []func() error, error) {
	l, undo, err := upLab(ctx, lab.Config{Name: name, Layout: lab.LayoutRouted, QueueCount: 1})
	if err != nil {
		return nil, undo, err
	}
	client := l.Netchan[0]
	rtr, srv := l.Hosts[0], l.Hosts[1]
	rtrOut := name + "r1"
	// The router's own kernel: forwarding is on (the layout does it); add the masquerade.
	if err := sh(ctx, rtr.NS, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", rtrOut, "-j", "MASQUERADE"); err != nil {
		return nil, undo, err
	}
	// The server's MAC is a permanent neighbour of the router: resolved by ARP, the router's
	// request or the server's reply could be lost under the max phase's flood (the kernel's
	// backlog full), and the neighbour then failed and dropped everything forwarded: "nothing
	// reached the server" in one stress round of TestLabCountsAgree. netchan's NAT gets the
	// same static entry (setupNetchan).
	if err := sh(ctx, rtr.NS, "ip", "neigh", "replace", srv.Addr.Addr().String(), "lladdr", srv.MAC.String(), "dev", rtrOut, "nud", "permanent"); err != nil {
		return nil, undo, err
	}
	// veth has NAPI (and a NAPI thread) only with XDP or GRO; GRO on the router's inside end.
	if err := sh(ctx, rtr.NS, "ethtool", "-K", rtr.Iface, "gro", "on"); err != nil {
		return nil, undo, err
	}
	v := &variant{name: Linux, genNS: "", genIface: client.Iface, dstMAC: rtr.MAC, src: client.Addr.Addr(), dst: srv.Addr.Addr(),
		srvNS: srv.NS, srvIface: srv.Iface, natInNS: rtr.NS, natIn: rtr.Iface, natOutNS: rtr.NS, natOut: rtrOut,
		napiIfaces: [][2]string{{rtr.NS, rtr.Iface}}}
	if err := v.pinNAPI(ctx, o.NATCPU); err != nil {
		return nil, undo, err
	}
	u, err := setupServer(ctx, v, o)
	undo = append(undo, u...)
	if err != nil {
		return nil, undo, err
	}
	doc.Setup = append(doc.Setup, fmt.Sprintf("linux: lab %s (routed layout, 1 queue): client root %s %s → router namespace %s "+
		"(%s %s, %s; ip_forward=1, iptables -t nat -A POSTROUTING -o %s -j MASQUERADE, GRO on %s, its NAPI thread on CPU %d) → server %s %s on %s "+
		"(counting XDP program, NAPI thread on CPU %d)",
		name, client.Iface, client.Addr, rtr.NS, rtr.Iface, rtr.Addr, rtrOut, rtrOut, rtr.Iface, o.NATCPU, srv.NS, srv.Addr, srv.Iface, o.GenCPU))
	return v, undo, nil
}

// sample is everything read at one edge of the window.
type sample struct {
	at                time.Time
	counted, serverRx uint64
	inRxDrop, outTxDr uint64
	cpu               sysstat.CPUTimes
	own               int64
}

func (v *variant) sample(cpu int) (sample, error) {
	s := sample{at: time.Now()}
	// The counter is read on both sides of the server's link statistics, and their mean kept,
	// so that the two figures refer to one moment even when this thread is held up in between
	// (at 500k packets/s a 5 ms delay is 2,500 packets).
	c0, _, err := v.counter.Count()
	if err != nil {
		return s, err
	}
	st, err := v.srvLinks.Stats(v.srvIface)
	if err != nil {
		return s, err
	}
	c1, _, err := v.counter.Count()
	if err != nil {
		return s, err
	}
	s.counted, s.serverRx = c0+(c1-c0)/2, st.RxPackets
	if st, err = v.natLinks[v.natInNS].Stats(v.natIn); err != nil {
		return s, err
	}
	s.inRxDrop = st.RxDropped
	if st, err = v.natLinks[v.natOutNS].Stats(v.natOut); err != nil {
		return s, err
	}
	s.outTxDr = st.TxDropped
	if s.cpu, err = readCPU(cpu); err != nil {
		return s, err
	}
	s.own = sysstat.ThreadsRunNs(v.napi)
	if v.ownProcess {
		s.own += sysstat.ProcessRunNs()
	}
	return s, nil
}

func measure(ctx context.Context, o *Options, v *variant, phase, profile string) (RunRecord, error) {
	r := RunRecord{Variant: v.name, Phase: phase, Loadavg: sysstat.Loadavg()}
	cfg := trafficgen.Config{Iface: v.genIface, DstMAC: v.dstMAC, Src: v.src, Dst: v.dst, SrcPort: 40000, DstPort: 9,
		Flows: o.Flows, Size: o.Size, Duration: o.Warmup + o.Window + 300*time.Millisecond, RunID: 8,
		CPUs: []int{o.GenCPU}, Announce: true, Static: true}
	switch phase {
	case Max:
		cfg.Engine = trafficgen.EngineXDP
	case Rate:
		cfg.Engine, cfg.Rate, r.Offered = trafficgen.EngineAFXDP, o.Rate, o.Rate
	case RateXDP:
		cfg.Engine, cfg.Rate, r.Offered = trafficgen.EngineXDP, o.Rate, o.Rate
	default:
		return r, fmt.Errorf("unknown phase %q (want %s, %s or %s)", phase, Max, Rate, RateXDP)
	}
	r.Engine = cfg.Engine
	cctx, cancel := context.WithTimeout(ctx, cfg.Duration+30*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if v.genNS == "" {
		cmd = exec.CommandContext(cctx, o.Generator[0], append(slices.Clone(o.Generator[1:]), cfg.Args()...)...)
		cmd.Env = append(os.Environ(), trafficgen.ChildEnv+"=1")
	} else {
		cmd = trafficgen.Command(cctx, v.genNS, o.Generator, cfg)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return r, err
	}
	if err := cmd.Start(); err != nil {
		return r, err
	}
	started := make(chan struct{})
	var errText strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if strings.Contains(sc.Text(), "trafficgen: sending") && !once {
				once = true
				close(started)
				continue
			}
			errText.WriteString(sc.Text() + "\n")
		}
		if !once {
			close(started)
		}
		io.Copy(io.Discard, stderr)
	}()
	wait := func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("generator: %w: %s", err, strings.TrimSpace(errText.String()))
		}
		return nil
	}
	select {
	case <-started:
	case <-cctx.Done():
		cmd.Process.Kill()
		wait()
		return r, cctx.Err()
	}
	time.Sleep(o.Warmup)
	var fast0, rx0 uint64
	if v.nat != nil {
		fast0 = v.nat.Stats().FastTranslated
	}
	shardRx := func() (n uint64) {
		if v.inst != nil {
			for _, s := range v.inst.Snapshot() {
				n += s.RxPackets
			}
		}
		return n
	}
	rx0 = shardRx()
	s0, err := v.sample(o.NATCPU)
	if err != nil {
		cmd.Process.Kill()
		wait()
		return r, err
	}
	var pf *os.File
	if profile != "" {
		if pf, err = os.Create(profile); err == nil {
			err = pprof.StartCPUProfile(pf)
		}
		if err != nil {
			cmd.Process.Kill()
			wait()
			return r, fmt.Errorf("profile: %w", err)
		}
	}
	time.Sleep(o.Window)
	s1, err := v.sample(o.NATCPU)
	if v.nat != nil {
		r.FastPackets = v.nat.Stats().FastTranslated - fast0
	}
	r.ShardRx = shardRx() - rx0
	if pf != nil {
		pprof.StopCPUProfile()
		pf.Close()
	}
	if err != nil {
		cmd.Process.Kill()
		wait()
		return r, err
	}
	if err := wait(); err != nil {
		return r, err
	}
	res, err := trafficgen.Decode([]byte(strings.TrimSpace(stdout.String())))
	if err != nil {
		return r, err
	}
	r.Sent, r.GenPPS = res.Sent, res.PPS
	if res.Engine != "" {
		r.Engine = res.Engine // what sent: AF_XDP when the kernel refused live frames
	}
	r.Seconds = s1.at.Sub(s0.at).Seconds()
	r.Delivered, r.ServerRx = s1.counted-s0.counted, s1.serverRx-s0.serverRx
	r.NATInRxDropped, r.NATOutTxDropped = s1.inRxDrop-s0.inRxDrop, s1.outTxDr-s0.outTxDr
	d := s1.cpu.Sub(s0.cpu)
	r.CPU = CPU{User: d.User + d.Nice, System: d.System, SoftIRQ: d.SoftIRQ, IRQ: d.IRQ, Idle: d.Idle + d.IOWait, Busy: d.Busy()}
	r.OwnNs = s1.own - s0.own
	r.Forwarded = r.Delivered + r.NATOutTxDropped
	if r.Seconds > 0 {
		r.PPS = float64(r.Delivered) / r.Seconds
		r.ForwardedPPS = float64(r.Forwarded) / r.Seconds
	}
	if r.Forwarded > 0 {
		r.NsPerPacket = float64(r.CPU.Busy) / float64(r.Forwarded)
		r.OwnNsPerPacket = float64(r.OwnNs) / float64(r.Forwarded)
	}
	if r.Seconds > 0 {
		r.Foreign = float64(r.CPU.Busy-r.OwnNs) / (r.Seconds * 1e9)
	}
	time.Sleep(300 * time.Millisecond) // let the NAT core go idle between runs
	return r, nil
}
