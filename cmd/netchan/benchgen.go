package main

// netchan bench gen and netchan bench search: the traffic generator and analyser (bench/gen)
// and RFC 9971's throughput search (bench/mlrsearch) on any interface, against a reflector
// at the far end. Nothing here needs the lab.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/netchan/netchan/bench/gen"
	"github.com/netchan/netchan/bench/mlrsearch"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/runtime/xdpprog"
)

const benchGenUsage = `netchan bench gen --iface IF --dst-mac MAC [flags] --rate PPS --duration D
netchan bench search --iface IF --dst-mac MAC [flags] --sizes 64,512,1518 [--max-rate PPS]

gen sends paced traffic (UDP, TCP or ICMP echo; a sequence number and a transmit timestamp in
each payload) on queues 0..N-1 of IF, one pinned shard each, to a reflector at the far end
(netchan run --pipeline reflect, a kernel answering ICMP echo, a hardware loopback), and
analyses what comes back: per-queue packets/s and bits/s, loss, reordering, duplicates and the
round-trip latency histogram. search runs RFC 9971's throughput search (MLRsearch; NDR and PDR
by default) for each frame size, then measures latency at 10, 50 and 90 % of the PDR.

Frame sizes (--size, --sizes) count the 4-byte FCS as RFC 2544 does: 64..1518 on a 1500-byte
MTU (the frames AF_XDP sends are 4 bytes shorter, 60..1514; both are printed). A name
(imix_v4_1) is CSIT's IMIX. Rates are packets/s in total over the queues. --json prints the
result document as the last line of stdout; --out FILE writes it to FILE too.
`

// genFlags are the flags gen and search share.
type genFlags struct {
	iface, rxIface, dstMAC, srcMAC string
	src, dst                       string
	srcAddrs, queues, flows        int
	rssQueues                      int
	rssKey                         string
	srcPort, dstPort               uint
	proto                          string
	drain, maxLag                  time.Duration
	sleep, forwarded, noReply      bool
	xdpMode, cpus                  string
	batch                          int
	json, quiet                    bool
	out                            string
}

func registerGenFlags(fs *flag.FlagSet) *genFlags {
	f := &genFlags{}
	fs.StringVar(&f.iface, "iface", "", "interface to send on and take the replies from (required)")
	fs.StringVar(&f.dstMAC, "dst-mac", "", "the next hop's Ethernet address: the reflector's, or the device under test's (required)")
	fs.StringVar(&f.srcMAC, "src-mac", "", "source Ethernet address (default: the interface's)")
	fs.StringVar(&f.src, "src", "", "source IPv4 address, where the replies come back (default: the interface's first IPv4 address, else 198.18.0.1)")
	fs.StringVar(&f.dst, "dst", "", "destination IPv4 address (default 198.18.0.2, or 198.18.0.1 when that is --src)")
	fs.IntVar(&f.srcAddrs, "src-addrs", 1, "the flows come from this many consecutive source addresses starting at --src")
	fs.IntVar(&f.queues, "queues", 1, "send on queues 0..N-1 of --iface, one pinned shard each (0: every queue)")
	fs.IntVar(&f.flows, "flows", 0, "flows, differing in source port (0: one per queue, or per --rss-queues)")
	fs.IntVar(&f.rssQueues, "rss-queues", 0, "pick the flows' source ports so that a receiver with this many RSS queues (Toeplitz, TCP/IPv4 4-tuple hash, the default indirection table) spreads them evenly (0: consecutive ports)")
	fs.StringVar(&f.rssKey, "rss-key", "microsoft", "with --rss-queues, the receiver's Toeplitz key: microsoft (the usual driver default), symmetric (0x6d5a repeated), or 40 bytes in hex (ethtool -x shows it)")
	fs.UintVar(&f.srcPort, "src-port", 1024, "first flow's source port (ICMP: echo identifier)")
	fs.UintVar(&f.dstPort, "dst-port", 9, "destination port")
	fs.StringVar(&f.proto, "proto", "udp", "udp, tcp (ACK segments of no connection; frames of at least 76 bytes) or icmp (echo requests: any kernel answers them)")
	fs.DurationVar(&f.drain, "drain", 200*time.Millisecond, "after a trial's last packet, wait this long for the last replies")
	fs.DurationVar(&f.maxLag, "max-lag", 100*time.Millisecond, "a shard more than this far behind its schedule skips the slots (counted as missed) instead of catching up")
	fs.BoolVar(&f.sleep, "sleep", false, "shards sleep between slots instead of spinning to them (less CPU; packets leave up to 1 ms late)")
	fs.BoolVar(&f.forwarded, "forwarded", false, "the device under test forwards the packets back as sent (a router routing --dst back here, a loopback without swapping): claim them by their destination; latency is one way")
	fs.StringVar(&f.rxIface, "rx-iface", "", "with --forwarded: the interface the packets come back on, when not --iface")
	fs.BoolVar(&f.noReply, "no-reply", false, "nothing answers (a sink counted elsewhere): do not fail for lack of replies (gen only)")
	fs.StringVar(&f.xdpMode, "xdp-mode", "auto", "XDP attach mode: auto (native, else generic), native, generic")
	fs.StringVar(&f.cpus, "cpus", "", "pin shard i to the i-th of these CPUs (\"0,2\", \"0-3\"; default: the process's allowed CPUs in order)")
	fs.IntVar(&f.batch, "batch-size", 0, "packets per shard pass (0: netchan's default, 64)")
	fs.BoolVar(&f.json, "json", false, "print the result document as JSON on the last line of stdout")
	fs.StringVar(&f.out, "out", "", "also write the result document (JSON) to this file")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress or log lines on stderr")
	return f
}

// config turns the flags into a generator configuration (without sizes and rates).
func (f *genFlags) config() (gen.Config, error) {
	var cfg gen.Config
	if f.iface == "" {
		return cfg, errors.New("give --iface IF: the interface to send on")
	}
	if f.dstMAC == "" {
		return cfg, errors.New("give --dst-mac MAC: the Ethernet address of the reflector or the device under test (ip link show on it, or ip neigh)")
	}
	mac, err := net.ParseMAC(f.dstMAC)
	if err != nil || len(mac) != 6 {
		return cfg, fmt.Errorf("--dst-mac %q: not an Ethernet address (aa:bb:cc:dd:ee:ff)", f.dstMAC)
	}
	cfg.Iface, cfg.DstMAC, cfg.RxIface = f.iface, mac, f.rxIface
	if f.srcMAC != "" {
		if cfg.SrcMAC, err = net.ParseMAC(f.srcMAC); err != nil || len(cfg.SrcMAC) != 6 {
			return cfg, fmt.Errorf("--src-mac %q: not an Ethernet address", f.srcMAC)
		}
	}
	if cfg.Src, err = f.srcAddr(); err != nil {
		return cfg, err
	}
	if f.dst != "" {
		if cfg.Dst, err = netip.ParseAddr(f.dst); err != nil || !cfg.Dst.Is4() {
			return cfg, fmt.Errorf("--dst %q: give an IPv4 address (IPv6 templates are not supported)", f.dst)
		}
	} else {
		cfg.Dst = netip.MustParseAddr("198.18.0.2")
		if cfg.Dst == cfg.Src {
			cfg.Dst = netip.MustParseAddr("198.18.0.1")
		}
	}
	if f.queues < 0 {
		return cfg, fmt.Errorf("--queues %d: give 1 or more (0: every queue)", f.queues)
	}
	if f.srcPort == 0 || f.srcPort > 65535 || f.dstPort > 65535 {
		return cfg, fmt.Errorf("--src-port %d, --dst-port %d: ports are 1..65535", f.srcPort, f.dstPort)
	}
	cfg.Queues, cfg.Flows, cfg.SrcAddrs = f.queues, f.flows, f.srcAddrs
	cfg.SrcPort, cfg.DstPort = uint16(f.srcPort), uint16(f.dstPort)
	if cfg.Proto, err = gen.ParseProto(f.proto); err != nil {
		return cfg, fmt.Errorf("--proto: %w", err)
	}
	if f.rssQueues > 0 {
		cfg.RSSQueues = f.rssQueues
		if cfg.RSSKey, err = parseRSSKey(f.rssKey); err != nil {
			return cfg, err
		}
	}
	cfg.Drain, cfg.MaxLag, cfg.Sleep = f.drain, f.maxLag, f.sleep
	cfg.Forwarded = f.forwarded
	cfg.Reflector = !f.forwarded && !f.noReply
	if f.rxIface != "" && !f.forwarded {
		return cfg, errors.New("--rx-iface is for --forwarded: a reflector answers on the interface it was sent to")
	}
	if cfg.Netchan.XDPMode, err = xdpprog.ParseMode(f.xdpMode); err != nil {
		return cfg, fmt.Errorf("--xdp-mode %q: want auto, native or generic", f.xdpMode)
	}
	if f.cpus != "" {
		if cfg.Netchan.CPUs, err = trafficgen.ParseCPUList(f.cpus); err != nil {
			return cfg, fmt.Errorf("--cpus: %w", err)
		}
	}
	cfg.Netchan.BatchSize = f.batch
	if f.quiet {
		cfg.Netchan.Logf = func(string, ...any) {}
	} else {
		cfg.Netchan.Logf = func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	}
	return cfg, nil
}

// srcAddr is --src, or the interface's first IPv4 address, or 198.18.0.1.
func (f *genFlags) srcAddr() (netip.Addr, error) {
	if f.src != "" {
		a, err := netip.ParseAddr(f.src)
		if err != nil || !a.Is4() {
			return a, fmt.Errorf("--src %q: give an IPv4 address (IPv6 templates are not supported)", f.src)
		}
		return a, nil
	}
	if ifi, err := net.InterfaceByName(f.iface); err == nil {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				return p.Addr(), nil
			}
		}
	}
	return netip.MustParseAddr("198.18.0.1"), nil
}

func parseRSSKey(s string) ([]byte, error) {
	switch strings.ToLower(s) {
	case "", "microsoft":
		return append([]byte(nil), pipelines.MicrosoftKey[:]...), nil
	case "symmetric":
		return append([]byte(nil), pipelines.SymmetricKey[:]...), nil
	}
	k, err := hex.DecodeString(strings.NewReplacer(":", "", "-", "").Replace(s))
	if err != nil || len(k) != 40 {
		return nil, fmt.Errorf("--rss-key %q: microsoft, symmetric, or 40 bytes in hex (6d:5a:...)", s)
	}
	return k, nil
}

// frameSize is one item of --size or --sizes: a size counted with the FCS (RFC 2544), or an
// IMIX by name.
type frameSize struct {
	Name  string    // as given: "64", "imix_v4_1"
	Sizes gen.Sizes // frames without the FCS, as sent
}

// parseFrameSize reads one size: a number counts the FCS ("64" is a 60-byte frame here), a
// number with "nofcs" does not ("60nofcs"), a name is an IMIX.
func parseFrameSize(s string) (frameSize, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	switch {
	case s == "":
		return frameSize{}, errors.New("empty frame size")
	case strings.HasSuffix(s, "nofcs"):
		n, err := strconv.Atoi(strings.TrimSuffix(s, "nofcs"))
		if err != nil {
			return frameSize{}, fmt.Errorf("frame size %q: want a number of bytes", s)
		}
		return frameSize{Name: s, Sizes: gen.Sizes{n}}, nil
	case s[0] >= '0' && s[0] <= '9':
		n := strings.TrimSuffix(s, "fcs")
		if _, err := strconv.Atoi(n); err != nil {
			return frameSize{}, fmt.Errorf("frame size %q: want a number of bytes, with the FCS (64..1518), or an IMIX name (imix_v4_1)", s)
		}
		z, err := gen.ParseSizes(n + "fcs")
		if err != nil {
			return frameSize{}, err
		}
		if z[0] < gen.MinFrame {
			return frameSize{}, fmt.Errorf("frame size %s counts the FCS (RFC 2544): %d bytes without it, below the %d-byte minimum; say 64 or more (or %dnofcs for a size without the FCS)",
				n, z[0], gen.MinFrame, gen.MinFrame)
		}
		return frameSize{Name: n, Sizes: z}, nil
	}
	z, err := gen.ParseSizes(s)
	if err != nil {
		return frameSize{}, fmt.Errorf("frame size %q: %w", s, err)
	}
	return frameSize{Name: s, Sizes: z}, nil
}

// parseFrameSizes reads a comma-separated list of sizes.
func parseFrameSizes(s string) ([]frameSize, error) {
	var out []frameSize
	for _, item := range strings.Split(s, ",") {
		z, err := parseFrameSize(item)
		if err != nil {
			return nil, err
		}
		out = append(out, z)
	}
	return out, nil
}

// pattern joins sizes into the one repeating pattern gen sends (--size 64,570,1518).
func pattern(zs []frameSize) frameSize {
	if len(zs) == 1 {
		return zs[0]
	}
	var p frameSize
	var names []string
	for _, z := range zs {
		names = append(names, z.Name)
		p.Sizes = append(p.Sizes, z.Sizes...)
	}
	p.Name = strings.Join(names, ",")
	return p
}

// withFCS says a pattern's sizes as RFC 2544 counts them.
func withFCS(z gen.Sizes) string { return sizeList(z, gen.FCSLen) }

// noFCS says a pattern's distinct sizes as sent, without the FCS.
func noFCS(z gen.Sizes) string { return sizeList(z, 0) }

// sizeList lists a pattern's distinct sizes, each plus add.
func sizeList(z gen.Sizes, add int) string {
	var b strings.Builder
	seen := map[int]bool{}
	for _, n := range z {
		if seen[n] {
			continue
		}
		seen[n] = true
		if b.Len() > 0 {
			b.WriteString(",")
		}
		fmt.Fprint(&b, n+add)
	}
	return b.String()
}

// defaultSize is the smallest frame the protocol carries (RFC 2544's 64, or 76 for TCP).
func defaultSize(proto string) string {
	if p, err := gen.ParseProto(proto); err == nil {
		return fmt.Sprint(p.MinFrame() + gen.FCSLen)
	}
	return "64"
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// genDoc is the document `netchan bench gen` prints with --json and writes with --out.
type genDoc struct {
	Command   string      `json:"command"`
	Started   time.Time   `json:"started"`
	Iface     string      `json:"iface"`
	Src       string      `json:"src"`
	Dst       string      `json:"dst"`
	DstMAC    string      `json:"dst_mac"`
	Size      string      `json:"size"`       // as given, counting the FCS
	FramesFCS string      `json:"frames_fcs"` // the sizes sent, with the FCS
	Result    *gen.Result `json:"result"`
	Error     string      `json:"error,omitempty"`
}

// cmdBenchGen runs `netchan bench gen`: one trial at --rate for --duration.
func init() {
	benchCommands["search"] = benchCommand{run: cmdBenchSearch, order: 81,
		about: "--iface IF --dst-mac MAC --sizes 64,512,1518: RFC 9971 throughput search (NDR, PDR) for a NIC"}
}

func init() {
	benchCommands["gen"] = benchCommand{run: cmdBenchGen, order: 80,
		about: "--iface IF --dst-mac MAC --rate PPS --duration D: traffic generator and analyser for a NIC"}
}

func cmdBenchGen(args []string) error {
	fs := flag.NewFlagSet("bench gen", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, benchGenUsage); fs.PrintDefaults() }
	f := registerGenFlags(fs)
	size := fs.String("size", "", "frame size with the FCS (64..1518), a comma-separated pattern sent in turn (64,570,1518), or an IMIX name (default: 64, TCP 76)")
	imix := fs.String("imix", "", "an IMIX by name instead of --size: imix_v4_1 (CSIT's 28×64, 16×570, 4×1518)")
	rate := fs.Float64("rate", 10000, "packets/s in total over the queues")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *rate <= 0 || *duration <= 0 {
		return fmt.Errorf("--rate %v, --duration %v: give a positive rate and duration", *rate, *duration)
	}
	if *imix != "" && *size != "" {
		return errors.New("give --size or --imix, not both")
	}
	sz := *size
	if *imix != "" {
		if !strings.HasPrefix(strings.ToLower(*imix), "imix") {
			return fmt.Errorf("--imix %q: name an IMIX (imix_v4_1)", *imix)
		}
		sz = *imix
	}
	if sz == "" {
		sz = defaultSize(f.proto)
	}
	zs, err := parseFrameSizes(sz)
	if err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	p := pattern(zs)
	cfg, err := f.config()
	if err != nil {
		return err
	}
	cfg.Sizes, cfg.Rate, cfg.Duration = p.Sizes, *rate, *duration
	ctx, stop := signalContext()
	defer stop()
	doc := genDoc{Command: "netchan bench gen " + strings.Join(args, " "), Started: time.Now().UTC(), Iface: cfg.Iface,
		Src: cfg.Src.String(), Dst: cfg.Dst.String(), DstMAC: cfg.DstMAC.String(), Size: p.Name, FramesFCS: withFCS(p.Sizes)}
	g, err := gen.Start(cfg)
	if err != nil {
		return err
	}
	if !f.quiet {
		fmt.Fprintf(os.Stderr, "netchan bench gen: %s %s -> %s (MAC %v) on %s queues %v, %.0f packets/s for %v\n",
			cfg.Proto, cfg.Src, cfg.Dst, cfg.DstMAC, cfg.Iface, g.Instance().Queues(), *rate, *duration)
	}
	r, terr := g.Run(ctx)
	if serr := g.Stop(); terr == nil && serr != nil {
		terr = serr
	}
	if r == nil {
		return terr
	}
	doc.Result = r
	if terr != nil {
		doc.Error = terr.Error()
	}
	r.WriteText(os.Stdout)
	fmt.Printf("frame sizes: %s bytes with the FCS (RFC 2544), %s without\n", withFCS(p.Sizes), noFCS(p.Sizes))
	if err := writeDoc(doc, f.json, f.out); err != nil {
		return errors.Join(terr, err)
	}
	return terr
}

// writeDoc prints doc as the last line of stdout (asJSON) and writes it to out (if set).
func writeDoc(doc any, asJSON bool, out string) error {
	if out != "" {
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		if !asJSON {
			fmt.Printf("results: %s\n", out)
		}
	}
	if asJSON {
		b, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		fmt.Println(string(b))
	}
	return nil
}

// searchDoc is the document `netchan bench search` prints with --json and writes with --out.
type searchDoc struct {
	Command string        `json:"command"`
	Started time.Time     `json:"started"`
	Iface   string        `json:"iface"`
	Queues  int           `json:"queues"`
	Proto   string        `json:"proto"`
	Flows   int           `json:"flows"`
	Src     string        `json:"src"`
	Dst     string        `json:"dst"`
	DstMAC  string        `json:"dst_mac"`
	MinRate float64       `json:"min_rate_pps"`
	MaxRate float64       `json:"max_rate_pps"`
	Sizes   []sizeResult  `json:"sizes"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Error   string        `json:"error,omitempty"`
}

// sizeResult is the search at one frame size (or IMIX).
type sizeResult struct {
	Size      string  `json:"size"`       // as given: "64" (with the FCS), "imix_v4_1"
	Frames    string  `json:"frames"`     // the sizes sent, without the FCS
	FramesFCS string  `json:"frames_fcs"` // the same with the FCS
	MeanFrame float64 `json:"mean_frame_bytes"`
	// MaxRate is the search's max load at this size (--max-rate, or the line rate).
	MaxRate        float64         `json:"max_rate_pps"`
	Goals          []goalResult    `json:"goals"`
	Latency        []latencyResult `json:"latency"`
	Trials         []trialResult   `json:"trials"`
	SearchDuration time.Duration   `json:"search_duration_ns"`
	End            string          `json:"end"`
	Error          string          `json:"error,omitempty"`
}

// goalResult is one goal's relevant bounds and conditional throughput (packets/s in total).
type goalResult struct {
	Name        string        `json:"name"`
	LossRatio   float64       `json:"loss_ratio"`
	ExceedRatio float64       `json:"exceed_ratio"`
	Width       float64       `json:"width"`
	FinalTrial  time.Duration `json:"final_trial_ns"`
	DurationSum time.Duration `json:"duration_sum_ns"`
	Status      string        `json:"status"`
	Regular     bool          `json:"regular"`
	// Lower and Upper are the relevant lower and upper bounds (loads, packets/s); LowerTrials
	// and UpperTrials the trials made at them.
	Lower       float64 `json:"lower_pps"`
	Upper       float64 `json:"upper_pps"`
	LowerTrials int     `json:"lower_trials"`
	UpperTrials int     `json:"upper_trials"`
	// ConditionalThroughput is RFC 9971's, in packets/s; BPS counts the frames' bytes without
	// the FCS, WireBPS what they take on the wire (FCS, preamble, gap).
	ConditionalThroughput float64 `json:"conditional_throughput_pps"`
	ConditionalBPS        float64 `json:"conditional_throughput_bps"`
	ConditionalWireBPS    float64 `json:"conditional_throughput_wire_bps"`
}

// latencyResult is a latency trial at a share of the PDR's lower bound.
type latencyResult struct {
	Fraction float64     `json:"fraction"`
	Load     float64     `json:"load_pps"`
	Sent     uint64      `json:"sent"`
	Received uint64      `json:"received"`
	Loss     float64     `json:"loss_ratio"`
	Latency  gen.Latency `json:"latency"`
	Error    string      `json:"error,omitempty"`
}

type trialResult struct {
	Load      float64       `json:"load_pps"`
	Duration  time.Duration `json:"duration_ns"`
	Offered   uint64        `json:"offered"`
	Forwarded uint64        `json:"forwarded"`
	LossRatio float64       `json:"loss_ratio"`
}

// searchFlags are search's own flags.
type searchFlags struct {
	sizes              string
	minRate, maxRate   float64
	goals              string
	trial, initial     time.Duration
	sum, searchMax     time.Duration
	width, exceed, pdr float64
	latTrial           time.Duration
	latency            string
	probe              time.Duration
}

// goalList builds the goals --goals names.
func (s *searchFlags) goalList() ([]mlrsearch.Goal, error) {
	var goals []mlrsearch.Goal
	for _, name := range strings.Split(s.goals, ",") {
		var g mlrsearch.Goal
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "ndr":
			g = mlrsearch.NDR()
		case "pdr":
			g = mlrsearch.PDR()
			g.LossRatio = s.pdr
		default:
			return nil, fmt.Errorf("--goals %q: say ndr, pdr or both", s.goals)
		}
		g.ExceedRatio = s.exceed
		g.RelativeWidth = s.width
		g.FinalTrialDuration = s.trial
		g.InitialTrialDuration = s.initial
		g.DurationSum = s.sum
		goals = append(goals, g)
	}
	return goals, nil
}

// latencyFractions reads --latency ("10,50,90" percent of the PDR; "none").
func (s *searchFlags) latencyFractions() ([]float64, error) {
	if s.latency == "" || s.latency == "none" {
		return nil, nil
	}
	var fr []float64
	for _, p := range strings.Split(s.latency, ",") {
		v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(p), "%"), 64)
		if err != nil || v <= 0 || v > 100 {
			return nil, fmt.Errorf("--latency %q: percentages of the PDR, such as 10,50,90, or none", s.latency)
		}
		fr = append(fr, v/100)
	}
	return fr, nil
}

// lineRate is the link's line rate in frames/s at sizes, from its speed (0 when unknown).
func lineRate(iface string, sizes gen.Sizes) float64 {
	b, err := os.ReadFile("/sys/class/net/" + iface + "/speed")
	if err != nil {
		return 0
	}
	mbps, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil || mbps <= 0 {
		return 0
	}
	return mbps * 1e6 / (8 * (sizes.Mean() + gen.WireOverhead))
}

// cmdBenchSearch runs `netchan bench search`: an RFC 9971 search per frame size, then latency
// trials at shares of the PDR.
func cmdBenchSearch(args []string) error {
	fs := flag.NewFlagSet("bench search", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, benchGenUsage); fs.PrintDefaults() }
	f := registerGenFlags(fs)
	var s searchFlags
	fs.StringVar(&s.sizes, "sizes", "", "frame sizes with the FCS, one search each (64,512,1518); an IMIX name (imix_v4_1) is one size (default: 64, TCP 76)")
	fs.StringVar(&s.sizes, "size", "", "the same as --sizes")
	fs.Float64Var(&s.minRate, "min-rate", 0, "the search's min load, packets/s in total (default: max rate / 100)")
	fs.Float64Var(&s.maxRate, "max-rate", 0, "the search's max load, packets/s in total (default: the link's line rate at each size, from its speed; the generator must reach it)")
	fs.StringVar(&s.goals, "goals", "ndr,pdr", "goals: ndr (loss ratio 0), pdr (--pdr-loss), or both")
	fs.Float64Var(&s.pdr, "pdr-loss", mlrsearch.PDRLossRatio, "the PDR's loss ratio")
	fs.Float64Var(&s.exceed, "exceed-ratio", mlrsearch.DefaultExceedRatio, "the goals' exceed ratio (RFC 9971)")
	fs.Float64Var(&s.width, "width", mlrsearch.DefaultRelativeWidth, "the goals' relative width: a search stops when upper − lower ≤ width × upper")
	fs.DurationVar(&s.trial, "trial", mlrsearch.DefaultFinalTrialDuration, "final trial duration")
	fs.DurationVar(&s.initial, "initial-trial", 0, "initial trial duration, for the coarse phases (0: the final)")
	fs.DurationVar(&s.sum, "duration-sum", mlrsearch.DefaultDurationSum, "the goals' duration sum: full-length trial time that decides a load")
	fs.DurationVar(&s.searchMax, "search-max", mlrsearch.DefaultSearchDurationMax, "the most trial time one frame size's search takes")
	fs.StringVar(&s.latency, "latency", "10,50,90", "measure latency at these percentages of the PDR's lower bound (none: not at all)")
	fs.DurationVar(&s.latTrial, "latency-trial", 0, "duration of each latency trial (0: --trial)")
	fs.DurationVar(&s.probe, "probe", 500*time.Millisecond, "before each search, a trial this long at the min load checks that replies come back")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if f.noReply {
		return errors.New("--no-reply: a search counts the packets that come back")
	}
	if s.sizes == "" {
		s.sizes = defaultSize(f.proto)
	}
	sizes, err := parseFrameSizes(s.sizes)
	if err != nil {
		return fmt.Errorf("--sizes: %w", err)
	}
	goals, err := s.goalList()
	if err != nil {
		return err
	}
	fractions, err := s.latencyFractions()
	if err != nil {
		return err
	}
	if s.latTrial <= 0 {
		s.latTrial = s.trial
	}
	if s.maxRate < 0 || s.minRate < 0 || s.maxRate > 0 && s.minRate >= s.maxRate {
		return fmt.Errorf("--min-rate %v, --max-rate %v: want 0 < min < max", s.minRate, s.maxRate)
	}
	cfg, err := f.config()
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	start := time.Now()
	doc := searchDoc{Command: "netchan bench search " + strings.Join(args, " "), Started: start.UTC(), Iface: cfg.Iface,
		Proto: cfg.Proto.String(), Src: cfg.Src.String(), Dst: cfg.Dst.String(), DstMAC: cfg.DstMAC.String(), MinRate: s.minRate, MaxRate: s.maxRate}
	logf := func(format string, a ...any) {
		if !f.quiet {
			fmt.Fprintf(os.Stderr, format+"\n", a...)
		}
	}
	var serr error
	for _, z := range sizes {
		sr, queues, flows, err := searchSize(ctx, cfg, z, s, goals, fractions, logf)
		if queues > 0 {
			doc.Queues, doc.Flows = queues, flows
		}
		if sr != nil {
			doc.Sizes = append(doc.Sizes, *sr)
			writeSizeText(os.Stdout, sr, doc.Proto, queues, flows)
		}
		if err != nil {
			serr = fmt.Errorf("size %s: %w", z.Name, err)
			break
		}
	}
	doc.Elapsed = time.Since(start)
	if serr != nil {
		doc.Error = serr.Error()
	}
	if err := writeDoc(doc, f.json, f.out); err != nil {
		return errors.Join(serr, err)
	}
	return serr
}

// searchSize starts the generator for one frame size, checks that replies come back, runs the
// search and the latency trials, and stops the generator.
func searchSize(ctx context.Context, cfg gen.Config, z frameSize, s searchFlags, goals []mlrsearch.Goal, fractions []float64,
	logf func(string, ...any)) (*sizeResult, int, int, error) {
	sr := &sizeResult{Size: z.Name, Frames: noFCS(z.Sizes), FramesFCS: withFCS(z.Sizes), MeanFrame: z.Sizes.Mean()}
	maxRate, minRate := s.maxRate, s.minRate
	if maxRate == 0 {
		if maxRate = lineRate(cfg.Iface, z.Sizes); maxRate == 0 {
			return nil, 0, 0, fmt.Errorf("%s reports no link speed: give --max-rate PPS", cfg.Iface)
		}
	}
	if minRate == 0 {
		minRate = maxRate / 100
	}
	if minRate >= maxRate {
		return nil, 0, 0, fmt.Errorf("--min-rate %.0f is not below the max rate %.0f", minRate, maxRate)
	}
	sr.MaxRate = maxRate
	cfg.Sizes = z.Sizes
	g, err := gen.Start(cfg)
	if err != nil {
		return nil, 0, 0, err
	}
	defer g.Stop()
	queues, flows := len(g.Instance().Queues()), len(g.FlowList())
	logf("netchan bench search: size %s (%s bytes without the FCS), %s %s -> %s (MAC %v) on %s, %d queues, %d flows, loads %.0f..%.0f packets/s",
		z.Name, z.Sizes, cfg.Proto, cfg.Src, cfg.Dst, cfg.DstMAC, cfg.Iface, queues, flows, minRate, maxRate)
	return sr, queues, flows, searchWith(ctx, g, sr, minRate, maxRate, s, goals, fractions, logf)
}

// trialer runs generator trials: *gen.Gen, or a simulation in tests.
type trialer interface {
	Trial(ctx context.Context, load float64, duration time.Duration) (*gen.Result, error)
}

// searchWith checks that replies come back (a trial at the min load), runs the search
// between minRate and maxRate with g's trials and then the latency trials, filling in sr.
func searchWith(ctx context.Context, g trialer, sr *sizeResult, minRate, maxRate float64, s searchFlags, goals []mlrsearch.Goal,
	fractions []float64, logf func(string, ...any)) error {
	// The reflector must answer something: a search against nothing would report min load as
	// an upper bound after many trials.
	if s.probe > 0 {
		r, err := g.Trial(ctx, minRate, s.probe)
		if err != nil {
			return fmt.Errorf("probe at the min load %.0f packets/s for %v: %w", minRate, s.probe, err)
		}
		logf("probe: %.0f packets/s for %v: sent %d, %d came back", minRate, s.probe, r.Total.TxPackets, r.Total.RxPackets)
	}
	trial := func(ctx context.Context, load float64, d time.Duration) (mlrsearch.TrialResult, error) {
		r, err := g.Trial(ctx, load, d)
		if r == nil {
			return mlrsearch.TrialResult{}, err
		}
		if errors.Is(err, gen.ErrRateNotReached) {
			return mlrsearch.TrialResult{}, fmt.Errorf("trial at %.0f packets/s: %w; give a --max-rate below what it reached", load, err)
		}
		if err != nil && !errors.Is(err, gen.ErrNoReplies) { // no reply in a trial is a loss of 1
			return mlrsearch.TrialResult{}, err
		}
		offered := r.Total.TxPackets - r.Total.TxDropped
		fwd := r.Total.TxPackets - min(r.Total.Lost, r.Total.TxPackets) // distinct sequence numbers back
		tr := mlrsearch.TrialResult{Offered: offered, Forwarded: fwd}
		sr.Trials = append(sr.Trials, trialResult{Load: load, Duration: d, Offered: offered, Forwarded: fwd, LossRatio: tr.LossRatio()})
		logf("trial %d: %.0f packets/s for %v: offered %d, forwarded %d, loss %.4f%%", len(sr.Trials), load, d, offered, fwd, 100*tr.LossRatio())
		return tr, nil
	}
	res, err := mlrsearch.Search(ctx, mlrsearch.Config{MinLoad: minRate, MaxLoad: maxRate, Goals: goals, SearchDurationMax: s.searchMax}, trial)
	sr.SearchDuration, sr.End = res.SearchDuration, res.End.String()
	bitsPerFrame := 8 * sr.MeanFrame
	for _, gr := range res.Goals {
		o := goalResult{Name: gr.Goal.String(), LossRatio: gr.Goal.LossRatio, ExceedRatio: gr.Goal.ExceedRatio, Width: gr.Goal.RelativeWidth,
			FinalTrial: gr.Goal.FinalTrialDuration, DurationSum: gr.Goal.DurationSum, Status: gr.Status.String(), Regular: gr.Regular(),
			Lower: gr.Lower, Upper: gr.Upper, ConditionalThroughput: gr.ConditionalThroughput}
		if gr.RelevantLowerBound != nil {
			o.LowerTrials = len(gr.RelevantLowerBound.Trials)
		}
		if gr.RelevantUpperBound != nil {
			o.UpperTrials = len(gr.RelevantUpperBound.Trials)
		}
		o.ConditionalBPS = gr.ConditionalThroughput * bitsPerFrame
		o.ConditionalWireBPS = gr.ConditionalThroughput * (bitsPerFrame + 8*gen.WireOverhead)
		sr.Goals = append(sr.Goals, o)
	}
	if err != nil {
		sr.Error = err.Error()
		return err
	}
	// Latency at shares of the PDR's lower bound (CSIT's), or of the last goal's without a PDR.
	var lat *mlrsearch.GoalResult
	if lat = res.Goal("PDR"); lat == nil && len(res.Goals) > 0 {
		lat = &res.Goals[len(res.Goals)-1]
	}
	if len(fractions) == 0 || lat == nil {
		return nil
	}
	for i, load := range mlrsearch.LatencyLoads(*lat, fractions...) {
		r, err := g.Trial(ctx, load, s.latTrial)
		l := latencyResult{Fraction: fractions[i], Load: load}
		if r != nil {
			l.Sent, l.Received, l.Loss, l.Latency = r.Total.TxPackets, r.Total.RxPackets, r.Total.LossRatio, r.Total.Latency
		}
		if err != nil {
			l.Error = err.Error()
		}
		logf("latency at %.0f%% of %s (%.0f packets/s): p50 %v p90 %v p99 %v", 100*fractions[i], lat.Goal, load, l.Latency.P50, l.Latency.P90, l.Latency.P99)
		sr.Latency = append(sr.Latency, l)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// writeSizeText prints one size's search as tables.
func writeSizeText(w io.Writer, sr *sizeResult, proto string, queues, flows int) {
	fmt.Fprintf(w, "\nsize %s: %s frames of %s bytes with the FCS (%s without), %d queues, %d flows; %d trials, %v of trial time, end: %s\n",
		sr.Size, proto, sr.FramesFCS, sr.Frames, queues, flows, len(sr.Trials), sr.SearchDuration, sr.End)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "goal\tloss ratio\tlower pps\tupper pps\twidth\tcond. throughput pps\tMbit/s\twire Mbit/s\tstatus\t")
	for _, g := range sr.Goals {
		width := "-"
		if g.Upper > 0 && g.Lower > 0 {
			width = fmt.Sprintf("%.2f%%", 100*(g.Upper-g.Lower)/g.Upper)
		}
		fmt.Fprintf(tw, "%s\t%g\t%.0f\t%.0f\t%s\t%.0f\t%.2f\t%.2f\t%s\t\n", g.Name, g.LossRatio, g.Lower, g.Upper, width,
			g.ConditionalThroughput, g.ConditionalBPS/1e6, g.ConditionalWireBPS/1e6, g.Status)
	}
	tw.Flush()
	if len(sr.Latency) > 0 {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "latency at\tload pps\tsent\treceived\tloss %\tp50\tp90\tp99\tp99.9\tmax\t")
		for _, l := range sr.Latency {
			fmt.Fprintf(tw, "%.0f%%\t%.0f\t%d\t%d\t%.4f\t%v\t%v\t%v\t%v\t%v\t\n", 100*l.Fraction, l.Load, l.Sent, l.Received, 100*l.Loss,
				shortDur(l.Latency.P50), shortDur(l.Latency.P90), shortDur(l.Latency.P99), shortDur(l.Latency.P999), shortDur(l.Latency.Max))
		}
		tw.Flush()
		if k := sr.Latency[0].Latency.Kind; k != "" {
			fmt.Fprintf(w, "latency: %s, %s timestamps, at shares of the PDR's lower bound\n", k, sr.Latency[0].Latency.Clock)
		}
	}
	if sr.Error != "" {
		fmt.Fprintf(w, "error: %s\n", sr.Error)
	}
}

func shortDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}
