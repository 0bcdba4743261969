package gen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/shards"
)

// Errors a caller can test with errors.Is; the wrapping error's message says what to do.
var (
	// ErrRateNotReached: the generator sent less than 99% of the asked rate (the Result
	// says what it reached).
	ErrRateNotReached = errors.New("gen: asked rate not reached")
	// ErrNoReplies: Config.Reflector or Config.Forwarded is set, packets were sent and
	// none of the trial came back.
	ErrNoReplies = errors.New("gen: no replies")
	// ErrQueues: the interface has fewer queues than asked.
	ErrQueues = errors.New("gen: not enough queues")
)

// Config describes a generator. Src, Dst and DstMAC are required.
type Config struct {
	// Iface is the interface to send on and to take replies from (Start only).
	Iface string
	// Queues is the number of queues to send on, 0..Queues-1, one shard each (0: every queue
	// of Iface).
	Queues int
	// SrcMAC is the frames' source address (default: the interface's); DstMAC the next
	// hop's (the device under test or the reflector).
	SrcMAC, DstMAC net.HardwareAddr
	// Src and Dst are the IPv4 addresses; with SrcAddrs > 1 the flows come from SrcAddrs
	// consecutive addresses starting at Src (see Flows).
	Src, Dst netip.Addr
	SrcAddrs int
	// SrcPort is the first flow's source port (default 1024), DstPort the destination port
	// (default 9, discard). For ICMP the source port is the echo identifier.
	SrcPort, DstPort uint16
	// Flows is the number of flows (default: one per queue); FlowList, if set, replaces them
	// (RSSFlows picks flows that a receiver's RSS spreads over its queues). Shard i sends
	// flows i, i+shards, ... in turn (shard i sends flow i%flows when there are fewer flows
	// than shards).
	Flows    int
	FlowList []Flow
	// RSSQueues, when above 0, picks the flows' source ports with RSSFlows so that a
	// receiver with that many RSS queues, key RSSKey (nil: pipelines.MicrosoftKey) and
	// indirection table RETA (nil: pipelines.DefaultRETA) puts the same number of flows on
	// each queue.
	RSSQueues int
	RSSKey    []byte
	RETA      pipelines.RETA
	// Proto is the template: UDP (default), TCP or ICMP.
	Proto Proto
	// Sizes is the frame-size pattern (default {60}); see Sizes and MinFrame for the
	// convention (no FCS here).
	Sizes Sizes
	// Rate is Run's total rate in packets per second, split evenly over the shards;
	// Duration is Run's length.
	Rate     float64
	Duration time.Duration
	// Drain is how long a trial waits for replies after its last packet (default 200ms).
	Drain time.Duration
	// MaxLag bounds how far a shard's schedule may fall behind (default 100ms): a shard that
	// could not run for a while catches up in bursts, but slots due longer ago than MaxLag
	// are skipped and counted in Missed, and none is sent later than MaxLag after the
	// trial's end. (On the shared 2-core lab machine, shards stalled for tens of
	// milliseconds at times: with 10ms, 1 kpps lost 3% of its slots.)
	MaxLag time.Duration
	// Sleep lets the shards sleep between slots instead of spinning to them: much less CPU
	// at low rates, but each packet leaves up to a millisecond late (the netpoller's sleeps
	// end on whole milliseconds; the counts stay exact). By default the generator is
	// punctual (pipelines.Punctual) and a shard spins while its next slot is under 1 ms away.
	Sleep bool
	// Reflector says a reflector answers the packets at Dst (swapping addresses and ports,
	// or a kernel answering ICMP echo): a trial that sent packets and got no reply fails with
	// ErrNoReplies. Latency is round trip.
	Reflector bool
	// Forwarded says the device under test forwards the packets back to the generator as
	// they were sent but for the MACs and the TTL (a router whose route for Dst points back
	// at us, a switch, a second port through RxIface): the App then claims the packets to
	// Dst (UDP/TCP: Dst and the destination ports; ICMP: Dst/32) besides the replies, no
	// packet at all back fails with ErrNoReplies, and latency is one way (the same clock
	// sends and receives). Dst must not be an address of this host's kernel on the
	// receiving interface.
	Forwarded bool
	// RxIface is the interface forwarded packets come back on, when not Iface (Start
	// only): the shards own the same queue of both.
	RxIface string
	// Received, if set, is an external receive counter (a sink's interface statistics, a
	// device's port counter) read before and after each trial: Result.External is the
	// difference, and Counts uses it as the received figure.
	Received func() (uint64, error)
	// Netchan is the rest of the netchan configuration (XDP mode, UMEM, batch size, CPUs,
	// Logf); Start sets its Interfaces and Queues.
	Netchan netchan.Config
}

// Gen is a generator and analyser: a netchan App (App) and, once started (Start), the
// instance running it. Trials run one after another on the same instance.
type Gen struct {
	cfg    Config
	flows  []Flow
	claims []claim.Rule
	cur    atomic.Pointer[trial]
	runID  uint16

	mu      sync.Mutex
	shardsN int
	wakes   []func()
	results []shardResult
	trials  int
	done    chan struct{} // signalled when a shard publishes

	in *netchan.Instance
}

// New checks cfg and builds the flows; it needs no root and opens nothing.
func New(cfg Config) (*Gen, error) {
	if !cfg.Src.Is4() || !cfg.Dst.Is4() {
		return nil, fmt.Errorf("gen: source %v and destination %v: give both, as IPv4 addresses", cfg.Src, cfg.Dst)
	}
	if len(cfg.DstMAC) != 6 {
		return nil, fmt.Errorf("gen: destination MAC %q: give the next hop's Ethernet address (ip neigh; ip link show on the peer)", cfg.DstMAC)
	}
	if cfg.SrcMAC != nil && len(cfg.SrcMAC) != 6 {
		return nil, fmt.Errorf("gen: source MAC %q is not an Ethernet address", cfg.SrcMAC)
	}
	if cfg.Proto > ICMP {
		return nil, fmt.Errorf("gen: %v: use UDP, TCP or ICMP", cfg.Proto)
	}
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = Sizes{MinFrame}
	}
	if err := cfg.Sizes.Check(cfg.Proto, 0); err != nil {
		return nil, err
	}
	if cfg.SrcPort == 0 {
		cfg.SrcPort = 1024
	}
	if cfg.DstPort == 0 {
		cfg.DstPort = 9
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 200 * time.Millisecond
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = 100 * time.Millisecond
	}
	if cfg.Rate < 0 {
		return nil, fmt.Errorf("gen: rate %v packets/s: give a positive rate", cfg.Rate)
	}
	g := &Gen{cfg: cfg, done: make(chan struct{}, 1)}
	if cfg.FlowList != nil {
		g.flows = append([]Flow(nil), cfg.FlowList...)
	} else {
		n := cfg.Flows
		if n == 0 {
			n = max(cfg.Queues, 1)
		}
		var err error
		if cfg.RSSQueues > 0 {
			if cfg.Flows == 0 {
				n = max(n, cfg.RSSQueues)
			}
			g.flows, err = RSSFlows(n, cfg.Src, cfg.Dst, cfg.SrcPort, cfg.DstPort, cfg.RSSKey, cfg.RETA, cfg.RSSQueues)
		} else {
			g.flows, err = Flows(n, cfg.Src, cfg.Dst, cfg.SrcPort, cfg.DstPort, cfg.SrcAddrs)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(g.flows) == 0 || len(g.flows) > 65536 {
		return nil, fmt.Errorf("gen: %d flows: use 1 to 65536", len(g.flows))
	}
	// Replies come to our source addresses: claim exactly them (UDP/TCP: the flows' source
	// ports; ICMP: the addresses), so the kernel keeps everything else.
	type key struct {
		a      netip.Addr
		lo, hi uint16
	}
	var ks []key
	for _, f := range g.flows {
		if !f.Src.Is4() || !f.Dst.Is4() {
			return nil, fmt.Errorf("gen: flow %v->%v: IPv4 only", f.Src, f.Dst)
		}
		found := false
		for i := range ks {
			if ks[i].a == f.Src {
				ks[i].lo, ks[i].hi = min(ks[i].lo, f.SrcPort), max(ks[i].hi, f.SrcPort)
				found = true
			}
		}
		if !found {
			ks = append(ks, key{f.Src, f.SrcPort, f.SrcPort})
		}
	}
	var ds []key // forwarded packets: to the flows' destinations and ports
	for _, f := range g.flows {
		found := false
		for i := range ds {
			if ds[i].a == f.Dst {
				ds[i].lo, ds[i].hi = min(ds[i].lo, f.DstPort), max(ds[i].hi, f.DstPort)
				found = true
			}
		}
		if !found {
			ds = append(ds, key{f.Dst, f.DstPort, f.DstPort})
		}
	}
	if cfg.Reflector && cfg.Forwarded {
		return nil, errors.New("gen: Reflector and Forwarded: the packets come back either answered (reflector) or as sent (forwarded), not both")
	}
	if cfg.Forwarded {
		ks = append(ks, ds...)
	}
	for _, k := range ks {
		if cfg.Proto == ICMP {
			g.claims = append(g.claims, claim.Prefix(netip.PrefixFrom(k.a, 32)))
		} else {
			g.claims = append(g.claims, claim.Ports(cfg.Proto.ipProto(), k.a, k.lo, k.hi))
		}
	}
	var b [2]byte
	rand.Read(b[:])
	g.runID = binary.BigEndian.Uint16(b[:])
	return g, nil
}

// Config is the generator's configuration with its defaults filled in.
func (g *Gen) Config() Config { return g.cfg }

// Claims are what the App takes from the kernel: the replies' destination (our source
// addresses and ports; for ICMP the source addresses) and, with Forwarded, the packets' own
// destination.
func (g *Gen) Claims() []claim.Rule { return g.claims }

// FlowList is the generator's flows, in flow-index order.
func (g *Gen) FlowList() []Flow { return g.flows }

// App is the generator as a netchan App: on each shard an analyser stage ("gen-rx", replies
// of the running trial) and a generator stage ("gen-tx", an Originator), the claims of the
// replies, and Owner, which hands each reply to the shard that sent the packet it answers.
func (g *Gen) App() netchan.App {
	return netchan.App{
		Name:   "gen",
		Claims: g.claims,
		Owner:  Owner,
		NewPipeline: func(shard int) *pipelines.Pipeline {
			s := &shardGen{g: g, shard: shard}
			return &pipelines.Pipeline{Stages: []pipelines.Stage{&analyser{s}, &generator{s}}}
		},
	}
}

// start builds shard info.Shard's templates.
func (s *shardGen) start(info pipelines.ShardInfo) {
	g := s.g
	s.shard, s.shards = info.Shard, info.Shards
	var src [6]byte
	if g.cfg.SrcMAC != nil {
		src = [6]byte(g.cfg.SrcMAC)
	} else if s.outIf < len(info.Ifaces) {
		src = info.Ifaces[s.outIf].MAC
	}
	dst := [6]byte(g.cfg.DstMAC)
	n := len(g.flows)
	for f := range n {
		if f%s.shards == s.shard || n < s.shards && f == s.shard%n {
			fl := g.flows[f]
			fl.SrcMAC, fl.DstMAC = src, dst
			s.tmpls = append(s.tmpls, newTemplate(g.cfg.Proto, fl))
			s.flowIDs = append(s.flowIDs, uint16(f))
		}
	}
	s.sizes = g.cfg.Sizes
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shardsN < info.Shards {
		g.shardsN = info.Shards
		g.wakes = append(g.wakes, make([]func(), info.Shards-len(g.wakes))...)
		g.results = append(g.results, make([]shardResult, info.Shards-len(g.results))...)
	}
	g.wakes[s.shard] = info.Wake
}

func (g *Gen) notify() {
	select {
	case g.done <- struct{}{}:
	default:
	}
}

// Start checks the interface and starts the generator on it: one shard per queue, queues
// 0..Queues-1.
func Start(cfg Config) (*Gen, error) {
	ifaces := []string{cfg.Iface}
	if cfg.RxIface != "" && cfg.RxIface != cfg.Iface {
		if !cfg.Forwarded {
			return nil, fmt.Errorf("gen: a receive interface (%s) is for forwarded packets: set Forwarded", cfg.RxIface)
		}
		ifaces = append(ifaces, cfg.RxIface)
	}
	ifi, err := net.InterfaceByName(cfg.Iface)
	if err != nil {
		return nil, fmt.Errorf("gen: interface %q: %w: check the name with `ip link`", cfg.Iface, netchan.ErrNoInterface)
	}
	for _, name := range ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return nil, fmt.Errorf("gen: interface %q: %w: check the name with `ip link`", name, netchan.ErrNoInterface)
		}
		n, err := afxdp.QueueCount(name)
		if err != nil {
			return nil, err
		}
		if cfg.Queues == 0 {
			cfg.Queues = n
		}
		if cfg.Queues > 256 {
			return nil, fmt.Errorf("%w: %d queues asked: the payload names the sending shard in one byte, so at most 256", ErrQueues, cfg.Queues)
		}
		if cfg.Queues > n || cfg.Queues < 0 {
			return nil, fmt.Errorf("%w: %s has %d queues (ethtool -l %s), asked %d: ask for fewer or add queues (ethtool -L %s rx N tx N, or combined N)",
				ErrQueues, name, n, name, cfg.Queues, name)
		}
	}
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = Sizes{MinFrame}
	}
	if err := cfg.Sizes.Check(cfg.Proto, ifi.MTU); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Iface, err)
	}
	if cfg.SrcMAC == nil {
		cfg.SrcMAC = ifi.HardwareAddr
	}
	g, err := New(cfg)
	if err != nil {
		return nil, err
	}
	nc := cfg.Netchan
	nc.Interfaces = ifaces
	nc.Queues = nil
	for q := range cfg.Queues {
		nc.Queues = append(nc.Queues, q)
	}
	if g.in, err = netchan.Start(nc, g.App()); err != nil {
		return nil, err
	}
	return g, nil
}

// Instance is the running netchan instance (nil unless started by Start).
func (g *Gen) Instance() *netchan.Instance { return g.in }

// Stop stops the instance.
func (g *Gen) Stop() error {
	if g.in == nil {
		return nil
	}
	return g.in.Stop()
}

// Begin starts a trial at load packets per second in all (split evenly over the shards) for
// duration, and wakes the shards; each starts its schedule at its next pass. Collect waits
// for its results. A load of 0 sends nothing and only counts replies.
func (g *Gen) Begin(load float64, duration time.Duration) int {
	g.mu.Lock()
	g.trials++
	n := max(g.shardsN, 1)
	t := &trial{number: g.trials, id: g.runID + uint16(g.trials), perShard: load / float64(n), duration: int64(duration),
		drain: int64(g.cfg.Drain), maxLag: int64(g.cfg.MaxLag)}
	g.mu.Unlock()
	g.cur.Store(t)
	g.wakeAll()
	return t.number
}

// wakeAll makes every shard run a pass soon, to see a new or stopped trial.
func (g *Gen) wakeAll() {
	g.mu.Lock()
	wakes := append([]func(){}, g.wakes...)
	g.mu.Unlock()
	for _, w := range wakes {
		if w != nil {
			w()
		}
	}
}

// published returns the shards' results of trial number once every shard has published it.
func (g *Gen) published(number int) ([]shardResult, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shardsN == 0 {
		return nil, false
	}
	for _, r := range g.results {
		if r.number != number {
			return nil, false
		}
	}
	return append([]shardResult(nil), g.results...), true
}

// Collect waits until every shard has finished trial number (Begin's) and returns its
// results. When ctx ends first it stops the trial (the shards send nothing more from their
// next pass) and returns ctx's error.
func (g *Gen) Collect(ctx context.Context, number int) (*Result, error) {
	t := g.cur.Load()
	if t == nil || t.number != number {
		return nil, fmt.Errorf("gen: trial %d is not the running one", number)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if res, ok := g.published(number); ok {
			return g.result(t, res), nil
		}
		select {
		case <-ctx.Done():
			if g.cur.CompareAndSwap(t, nil) {
				g.wakeAll()
			}
			return nil, fmt.Errorf("gen: trial %d stopped before the shards finished it: %w", number, ctx.Err())
		case <-g.done:
		case <-tick.C:
		}
	}
}

// Trial runs one measurement on the started generator: load packets per second in all for
// duration, then Drain for the last replies. It returns the Result, and with it an error
// wrapping ErrRateNotReached (the generator sent under 99% of load) or ErrNoReplies
// (Config.Reflector and no reply), when so.
func (g *Gen) Trial(ctx context.Context, load float64, duration time.Duration) (*Result, error) {
	if g.in == nil {
		return nil, errors.New("gen: Trial needs a started generator (Start)")
	}
	if load < 0 || duration <= 0 {
		return nil, fmt.Errorf("gen: trial at %v packets/s for %v: give a load ≥ 0 and a duration > 0", load, duration)
	}
	var ext0 uint64
	if g.cfg.Received != nil {
		var err error
		if ext0, err = g.cfg.Received(); err != nil {
			return nil, fmt.Errorf("gen: reading the receive counter: %w", err)
		}
	}
	before := g.in.Snapshot()
	number := g.Begin(load, duration)
	wait, cancel := context.WithTimeout(ctx, duration+g.cfg.Drain+g.cfg.MaxLag+5*time.Second)
	defer cancel()
	r, err := g.Collect(wait, number)
	if err != nil {
		return nil, err
	}
	after := g.in.Snapshot()
	queues := g.in.Queues()
	for i := range r.Queues {
		q := &r.Queues[i]
		if i < len(queues) {
			q.Queue = queues[i]
		}
		if i < len(before) && i < len(after) {
			q.RxQueuePackets = after[i].RxPackets - before[i].RxPackets
			q.TxDropped = after[i].Drops[pipelines.ReasonTxRingFull.String()] - before[i].Drops[pipelines.ReasonTxRingFull.String()]
			r.Total.RxQueuePackets += q.RxQueuePackets
			q.RxLocalDrops = kernelDrops(after[i]) - kernelDrops(before[i])
			r.Total.RxLocalDrops += q.RxLocalDrops
			r.Total.TxDropped += q.TxDropped
		}
	}
	if g.cfg.Received != nil {
		ext1, err := g.cfg.Received()
		if err != nil {
			return r, fmt.Errorf("gen: reading the receive counter: %w", err)
		}
		r.External = ext1 - ext0
		r.HasExternal = true
	}
	return r, g.check(r)
}

// check turns a result into the errors Trial reports.
func (g *Gen) check(r *Result) error {
	var errs []error
	if sent := float64(r.Total.TxPackets-r.Total.TxDropped) / max(r.Seconds, 1e-9); r.Load > 0 && sent < 0.99*r.Load {
		errs = append(errs, fmt.Errorf("%w: asked %.0f packets/s, sent %.0f packets/s (%.1f%%; %d slots missed, %d dropped for a full tx ring) on %d queues: use more queues or a lower rate",
			ErrRateNotReached, r.Load, sent, 100*sent/r.Load, r.Total.Missed, r.Total.TxDropped, len(r.Queues)))
	}
	if g.cfg.Reflector && r.Total.TxPackets > 0 && r.Total.RxPackets == 0 {
		errs = append(errs, fmt.Errorf("%w: sent %d %s packets to %v (MAC %v) and received no reply of this trial: check that a reflector answers there, that it sends back to %v, and that nothing in between drops the packets (%d other frames arrived)",
			ErrNoReplies, r.Total.TxPackets, g.cfg.Proto, g.cfg.Dst, g.cfg.DstMAC, g.cfg.Src, r.Stale+r.Foreign))
	}
	if g.cfg.Forwarded && r.Total.TxPackets > 0 && r.Total.RxPackets == 0 {
		errs = append(errs, fmt.Errorf("%w: sent %d %s packets to %v through MAC %v and none came back forwarded: check that the device forwards them and routes %v back to this interface (%d other frames arrived)",
			ErrNoReplies, r.Total.TxPackets, g.cfg.Proto, g.cfg.Dst, g.cfg.DstMAC, g.cfg.Dst, r.Stale+r.Foreign))
	}
	return errors.Join(errs...)
}

// Run runs one trial at Config.Rate for Config.Duration.
func (g *Gen) Run(ctx context.Context) (*Result, error) {
	return g.Trial(ctx, g.cfg.Rate, g.cfg.Duration)
}

// Counts runs a trial and returns what a throughput search needs: packets sent (given to
// the tx rings) and received (Config.Received's count when set, else the replies). The
// error wraps ErrRateNotReached when the generator could not offer load: the search should
// treat that trial as not measured. An adapter to bench/mlrsearch's Trial is a few lines.
func (g *Gen) Counts(ctx context.Context, load float64, duration time.Duration) (sent, received uint64, err error) {
	r, err := g.Trial(ctx, load, duration)
	if r == nil {
		return 0, 0, err
	}
	sent = r.Total.TxPackets - r.Total.TxDropped
	received = r.Total.RxPackets
	if r.HasExternal {
		received = r.External
	}
	return sent, received, err
}

// Stats are one queue's (or all queues') figures for a trial. Packets and bytes are frames
// without the FCS; BPS counts those bytes, WireBPS adds WireOverhead per frame (FCS,
// preamble, inter-frame gap: the line rate they take).
type Stats struct {
	Shard int `json:"shard"`
	Queue int `json:"queue"`
	// TxPackets, TxBytes: frames the generator built and gave the tx ring; TxDropped of them
	// the shard dropped for a full tx ring; Missed: schedule slots skipped because the shard
	// fell more than MaxLag behind.
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	TxDropped uint64 `json:"tx_dropped"`
	Missed    uint64 `json:"missed"`
	// Lateness is how late the packets left against their slots in the schedule (the
	// sending pass's clock − the slot's time: 0 for a shard woken exactly on time, its
	// wake-up latency otherwise); Behind is its maximum, the longest a catch-up burst had
	// waited.
	Lateness  Latency       `json:"pacing_lateness"`
	Behind    time.Duration `json:"behind_ns"`
	TxPPS     float64       `json:"tx_pps"`
	TxBPS     float64       `json:"tx_bps"`
	TxWireBPS float64       `json:"tx_wire_bps"`
	// RxPackets, RxBytes: replies of this shard's packets (counted by this shard after the
	// hand-off, whatever queue they arrived on), over the same interval as the tx rates.
	RxPackets uint64  `json:"rx_packets"`
	RxBytes   uint64  `json:"rx_bytes"`
	RxPPS     float64 `json:"rx_pps"`
	RxBPS     float64 `json:"rx_bps"`
	// RxQueuePackets: frames that arrived on this queue, any shard's replies (the shard's
	// receive counter; Trial only).
	RxQueuePackets uint64 `json:"rx_queue_packets"`
	// RxLocalDrops: frames the kernel could not hand to this queue's socket (its rx ring
	// full, XDP_STATISTICS rx_ring_full and rx_dropped; Trial only): loss at the
	// generator's own receive side (a shard that did not keep up), not at the device under
	// test; any shard's replies.
	RxLocalDrops uint64 `json:"rx_local_drops"`
	// Lost: sent minus the distinct sequence numbers that came back; Reordered and
	// Duplicates as RFC 4737 counts them; Late: reordered by more than the tracking window.
	Lost       uint64  `json:"lost"`
	LossRatio  float64 `json:"loss_ratio"`
	Reordered  uint64  `json:"reordered"`
	Duplicates uint64  `json:"duplicates"`
	Late       uint64  `json:"late"`
	Latency    Latency `json:"latency"`
}

// Result is one trial's figures, per queue and in total.
type Result struct {
	// Load is the asked rate in packets/s (all queues); Duration the trial's length; Seconds
	// the measured interval (from a shard's first packet to its last, at least Duration,
	// longest over the shards).
	Load     float64       `json:"load_pps"`
	Duration time.Duration `json:"duration_ns"`
	Seconds  float64       `json:"seconds"`
	Proto    string        `json:"proto"`
	Sizes    string        `json:"sizes"`
	Flows    int           `json:"flows"`
	Queues   []Stats       `json:"queues"`
	Total    Stats         `json:"total"`
	// Stale: frames of another trial or run; Foreign: frames without a payload header.
	Stale   uint64 `json:"stale"`
	Foreign uint64 `json:"foreign"`
	// External is Config.Received's count over the trial (HasExternal: it was read).
	External    uint64 `json:"external"`
	HasExternal bool   `json:"has_external"`
}

func (g *Gen) result(t *trial, res []shardResult) *Result {
	r := &Result{Load: t.perShard * float64(len(res)), Duration: time.Duration(t.duration), Proto: g.cfg.Proto.String(),
		Sizes: g.cfg.Sizes.String(), Flows: len(g.flows)}
	var all, late Histogram
	tot := &r.Total
	tot.Shard, tot.Queue = -1, -1
	for i := range res {
		s := &res[i]
		secs := float64(max(s.txEnd-s.t0, t.duration)) / 1e9
		r.Seconds = max(r.Seconds, secs)
		q := Stats{Shard: i, Queue: i, TxPackets: s.sent, TxBytes: s.txBytes, Missed: s.missed, Behind: time.Duration(s.lateness.Max()),
			RxPackets: s.rxPkts, RxBytes: s.rxBytes, Reordered: s.tracker.Reordered, Duplicates: s.tracker.Duplicates, Late: s.tracker.Late}
		if s.sent > s.tracker.Unique {
			q.Lost = s.sent - s.tracker.Unique
		}
		rates(&q, secs)
		q.Latency = s.hist.Summary()
		q.Lateness = s.lateness.Summary()
		q.Lateness.Kind, q.Lateness.Clock = "pacing", "software"
		late.Add(&s.lateness)
		q.Latency.Kind, q.Latency.Clock = g.latencyKind(), "software"
		all.Add(&s.hist)
		r.Queues = append(r.Queues, q)
		r.Stale += s.stale
		r.Foreign += s.foreign
		tot.TxPackets += q.TxPackets
		tot.TxBytes += q.TxBytes
		tot.Missed += q.Missed
		tot.Behind = max(tot.Behind, q.Behind)
		tot.RxPackets += q.RxPackets
		tot.RxBytes += q.RxBytes
		tot.Lost += q.Lost
		tot.Reordered += q.Reordered
		tot.Duplicates += q.Duplicates
		tot.Late += q.Late
		tot.TxPPS += q.TxPPS
		tot.TxBPS += q.TxBPS
		tot.TxWireBPS += q.TxWireBPS
		tot.RxPPS += q.RxPPS
		tot.RxBPS += q.RxBPS
	}
	if tot.TxPackets > 0 {
		tot.LossRatio = float64(tot.Lost) / float64(tot.TxPackets)
	}
	tot.Latency = all.Summary()
	tot.Latency.Kind, tot.Latency.Clock = g.latencyKind(), "software"
	tot.Lateness = late.Summary()
	tot.Lateness.Kind, tot.Lateness.Clock = "pacing", "software"
	return r
}

func rates(q *Stats, secs float64) {
	if secs <= 0 {
		return
	}
	q.TxPPS = float64(q.TxPackets) / secs
	q.TxBPS = 8 * float64(q.TxBytes) / secs
	q.TxWireBPS = 8 * float64(q.TxBytes+WireOverhead*q.TxPackets) / secs
	q.RxPPS = float64(q.RxPackets) / secs
	q.RxBPS = 8 * float64(q.RxBytes) / secs
	if q.TxPackets > 0 {
		q.LossRatio = float64(q.Lost) / float64(q.TxPackets)
	}
}

// latencyKind says what the latency figures measure.
func (g *Gen) latencyKind() string {
	if g.cfg.Forwarded {
		return "one-way"
	}
	return "round-trip"
}

// kernelDrops sums the kernel's receive drops of a shard's sockets.
func kernelDrops(s shards.Snapshot) uint64 {
	var n uint64
	for _, k := range s.Kernel {
		n += k.RxDropped + k.RxRingFull
	}
	return n
}
