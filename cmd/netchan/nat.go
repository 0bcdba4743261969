package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/metrics"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/stack"
)

// natOptions are the nat pipeline's options in --config (pipeline.options).
type natOptions struct {
	Ports     string `json:"ports"`     // "LO-HI"
	Filtering string `json:"filtering"` // "apdf" (default) or "eif"
	// XDPFastPath hands established UDP and TCP flows to the XDP programs
	// (nat.EnableXDPFastPath); default true.
	XDPFastPath *bool `json:"xdp_fastpath"`
	Forwards    []struct {
		Proto  string `json:"proto"` // "tcp" or "udp"
		Port   uint16 `json:"port"`
		Inside string `json:"inside"` // "A.B.C.D:PORT"
	} `json:"forwards"`
	// MaxMappings bounds each shard's mappings (0: 65536); MaxMappingsPerHost one inside
	// host's dynamic mappings (0: 4096; -1: no limit).
	MaxMappings        int `json:"max_mappings"`
	MaxMappingsPerHost int `json:"max_mappings_per_host"`
	Timeouts           struct {
		TCPEstablished string `json:"tcp_established"`
		TCPTransitory  string `json:"tcp_transitory"`
		UDP            string `json:"udp"`
		ICMP           string `json:"icmp"`
	} `json:"timeouts"`
}

// cmdNAT runs the NAT44 pipeline between an inside and an outside interface.
func cmdNAT(args []string) error {
	fs := flag.NewFlagSet("nat", flag.ContinueOnError)
	insideIf := fs.String("inside", "", "inside interface")
	insideAddr := fs.String("inside-addr", "", "the NAT's address on the inside network, A.B.C.D/NN")
	outsideIf := fs.String("outside", "", "outside interface")
	outsideAddr := fs.String("outside-addr", "", "the outside address inside hosts are translated to, A.B.C.D/NN")
	gateway := fs.String("gateway", "", "default gateway on the outside")
	ports := fs.String("ports", "", "external port range LO-HI (default 1024-65535)")
	filtering := fs.String("filtering", "", "apdf (address-and-port-dependent, default) or eif (endpoint-independent)")
	maxMappings := fs.Int("max-mappings", 0, "mappings each shard holds at most; new flows beyond are dropped as nat-table-full (0: 65536)")
	maxPerHost := fs.Int("max-mappings-per-host", 0, "dynamic mappings one inside host holds at most; its new flows beyond are dropped as nat-host-limit (0: 4096; -1: no limit)")
	fastPath := fs.Bool("xdp-fastpath", true, "translate established UDP and TCP flows in the XDP programs and redirect them to the other interface, bypassing the shards (on veth the peers need GRO on or an XDP program; if the kernel refuses the redirects, the fast path turns itself off)")
	statsEvery := fs.Duration("stats", time.Second, "print per-shard figures this often (0: only at exit)")
	asJSON := fs.Bool("json", false, "print figures as JSON lines")
	duration := fs.Duration("duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
	cf := config.RegisterFlags(fs, config.FlagOptions{Claims: true, Metrics: true, BusyPoll: true})
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := cf.Resolve()
	if err != nil {
		return err
	}
	var opt natOptions
	if err := cfg.Pipeline.DecodeOptions(&opt); err != nil {
		return err
	}
	for len(cfg.Interfaces) < 2 {
		cfg.Interfaces = append(cfg.Interfaces, config.Interface{})
	}
	set := func(i int, name, addr, flagName string) error {
		if name != "" {
			cfg.Interfaces[i].Name = name
		}
		if addr != "" {
			p, err := flagPrefix(flagName, addr)
			if err != nil {
				return err
			}
			cfg.Interfaces[i].Addresses = []netip.Prefix{p}
		}
		if cfg.Interfaces[i].Name == "" || len(cfg.Interfaces[i].Addresses) == 0 {
			side := [2]string{"inside", "outside"}[i]
			return fmt.Errorf("nat needs --%s IF and --%s-addr A.B.C.D/NN (or interfaces[%d] in --config)", side, side, i)
		}
		return nil
	}
	if err := errors.Join(set(nat.Inside, *insideIf, *insideAddr, "inside-addr"), set(nat.Outside, *outsideIf, *outsideAddr, "outside-addr")); err != nil {
		return err
	}
	if *gateway != "" {
		if cfg.Gateway, err = netip.ParseAddr(*gateway); err != nil {
			return fmt.Errorf("--gateway %q: %w", *gateway, err)
		}
	}
	if *ports != "" {
		opt.Ports = *ports
	}
	if *filtering != "" {
		opt.Filtering = *filtering
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "xdp-fastpath":
			opt.XDPFastPath = fastPath
		case "max-mappings":
			opt.MaxMappings = *maxMappings
		case "max-mappings-per-host":
			opt.MaxMappingsPerHost = *maxPerHost
		}
	})
	if err := cfg.Validate(); err != nil {
		return err
	}
	nc, err := natConfig(cfg, opt)
	if err != nil {
		return err
	}
	host, err := stack.NewHost(stackConfig(cfg))
	if err != nil {
		return err
	}
	n, err := nat.New(nc, host)
	if err != nil {
		return err
	}
	fast := opt.XDPFastPath == nil || *opt.XDPFastPath
	spec := n.App(fast)
	ctl, err := claimInstance(cfg, "nat")
	if err != nil {
		return err
	}
	defer ctl.Close()
	in, err := startShards(cfg, spec, ctl, false, nil)
	if err != nil {
		return err
	}
	if fast {
		go reportFastOff(n, in.Done())
	}
	addStackSection(ctl, host, 2)
	stopMetrics, err := startMetrics(cf.Metrics(), ctl, metrics.Source{Name: cfg.Instance, Instance: in, Host: host, NAT: n})
	if err != nil {
		return errors.Join(err, in.Stop())
	}
	defer stopMetrics()
	ctl.AddSection("nat", func() any { return natSection(n.Stats(), n.Mappings()) })
	if err := startNATReload(cfg, cf, fs, in, ctl, n, opt); err != nil { // the claims given, owned by "config"; SIGHUP (reload.go)
		return errors.Join(err, in.Stop())
	}
	if err := dropPrivileges(ctl, "nat", cf.Path(), cfg.Pipeline.BusyPoll.On); err != nil {
		return errors.Join(err, in.Stop())
	}
	fmt.Printf("netchan: instance %s translating %s (%v) → %s (%v), queues %v (xdp %v), pid %d; ready\n",
		cfg.Instance, in.Interfaces()[0], nc.InsidePrefix, in.Interfaces()[1], nc.Outside, in.Queues(), in.Modes(), os.Getpid())
	return runUntilDone(in, *duration, *statsEvery, *asJSON)
}

// natConfig builds the NAT's configuration from the interfaces and the pipeline options; the
// errors name the option.
func natConfig(cfg *config.Config, opt natOptions) (nat.Config, error) {
	in, out := cfg.Interfaces[nat.Inside].Addresses[0], cfg.Interfaces[nat.Outside].Addresses[0]
	nc := nat.Config{InsidePrefix: in.Masked(), InsideAddr: in.Addr(), Outside: out.Addr()}
	var err error
	if opt.Ports != "" {
		lo, hi, ok := strings.Cut(opt.Ports, "-")
		l, e1 := strconv.ParseUint(lo, 10, 16)
		h, e2 := strconv.ParseUint(hi, 10, 16)
		if !ok || e1 != nil || e2 != nil || l == 0 || l > h {
			return nc, fmt.Errorf("ports %q: want LO-HI with 1 ≤ LO ≤ HI ≤ 65535, such as 1024-65535", opt.Ports)
		}
		nc.PortLo, nc.PortHi = uint16(l), uint16(h)
	}
	if nc.Filtering, err = nat.ParseFiltering(opt.Filtering); err != nil {
		return nc, err
	}
	if opt.MaxMappings < 0 {
		return nc, fmt.Errorf("pipeline.options.max_mappings %d: want a count of mappings per shard (0: 65536)", opt.MaxMappings)
	}
	if opt.MaxMappingsPerHost < -1 {
		return nc, fmt.Errorf("pipeline.options.max_mappings_per_host %d: want a count of mappings per inside host (0: 4096; -1: no limit)", opt.MaxMappingsPerHost)
	}
	nc.MaxMappings, nc.MaxMappingsPerHost = opt.MaxMappings, opt.MaxMappingsPerHost
	for name, pair := range map[string]struct {
		s string
		d *time.Duration
	}{"tcp_established": {opt.Timeouts.TCPEstablished, &nc.Timeouts.TCPEstablished}, "tcp_transitory": {opt.Timeouts.TCPTransitory, &nc.Timeouts.TCPTransitory},
		"udp": {opt.Timeouts.UDP, &nc.Timeouts.UDP}, "icmp": {opt.Timeouts.ICMP, &nc.Timeouts.ICMP}} {
		if pair.s == "" {
			continue
		}
		if *pair.d, err = time.ParseDuration(pair.s); err != nil || *pair.d <= 0 {
			return nc, fmt.Errorf("pipeline.options.timeouts.%s %q: want a positive duration such as 5m", name, pair.s)
		}
	}
	for i, f := range opt.Forwards {
		var proto uint8
		switch f.Proto {
		case "tcp":
			proto = 6
		case "udp":
			proto = 17
		default:
			return nc, fmt.Errorf("pipeline.options.forwards[%d].proto %q: want tcp or udp", i, f.Proto)
		}
		ap, err := netip.ParseAddrPort(f.Inside)
		if err != nil || f.Port == 0 {
			return nc, fmt.Errorf("pipeline.options.forwards[%d]: want port (1-65535) and inside A.B.C.D:PORT", i)
		}
		nc.Forwards = append(nc.Forwards, nat.Forward{Proto: proto, ExtPort: f.Port, Inside: ap})
	}
	return nc, nil
}

// reportFastOff tells the user when the NAT has turned its XDP fast path off.
func reportFastOff(n *nat.NAT, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if n.Stats().FastOff {
				slog.Warn("XDP fast path off: " + nat.FastPathHint + " (netchan nat --xdp-fastpath=false)")
				return
			}
		}
	}
}

// natStatus is the "nat" section: the NAT's counters and its mappings, at most maxStatusConns
// of them (as the tcp section), so that status and top stay quick on a large NAT; Omitted
// says how many were left out.
type natStatus struct {
	Stats    nat.Stats     `json:"stats"`
	Mappings []nat.Mapping `json:"mappings"`
	Omitted  int           `json:"omitted,omitempty"`
}

func natSection(st nat.Stats, ms []nat.Mapping) natStatus {
	out := natStatus{Stats: st, Mappings: ms}
	if len(ms) > maxStatusConns {
		out.Mappings, out.Omitted = ms[:maxStatusConns], len(ms)-maxStatusConns
	}
	return out
}
