package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/metrics"
	"github.com/netchan/netchan/pipelines/echo"
)

// cmdEcho runs the echo service set on netchan's stack: ARP, ICMP echo, UDP echo on port 7.
func cmdEcho(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	addr := fs.String("addr", "", "the echo host's address on --iface, A.B.C.D/NN (or interfaces[0].addresses in --config)")
	gateway := fs.String("gateway", "", "default gateway (or gateway in --config)")
	statsEvery := fs.Duration("stats", time.Second, "print per-shard figures this often (0: only at exit)")
	asJSON := fs.Bool("json", false, "print figures as JSON lines")
	duration := fs.Duration("duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
	faults := registerFault(fs, "the stack")
	rssMode := fs.String("rss", "auto", "who owns a TCP connection: auto (the shard the NIC's RSS steers it to, where the device has RSS; else a software hash), "+
		"off (the software hash), symmetric (make the device's RSS symmetric first), lab or lab-symmetric (the lab's RSS emulation: netchan lab up --rss or --rss=symmetric)")
	udpRate := fs.Int("udp-echo-rate", 0, fmt.Sprintf("UDP echo (port 7): datagrams a second each source address may send, on each shard (0: %d; -1: no limit); "+
		"requests from the ports of services that answer every datagram (%v) are always dropped", echo.DefaultUDPRate, echo.LoopPorts))
	udpBurst := fs.Int("udp-echo-burst", 0, fmt.Sprintf("UDP echo: the most datagrams a source may send at once, the depth of its --udp-echo-rate bucket (0: %d)", echo.DefaultUDPBurst))
	cf := config.RegisterFlags(fs, config.FlagOptions{Interfaces: true, Claims: true, Metrics: true, BusyPoll: true})
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := cf.Resolve()
	if err != nil {
		return err
	}
	if len(cfg.Interfaces) != 1 {
		return errors.New("echo runs on one interface: give --iface IF (or one entry in interfaces of --config)")
	}
	if *addr != "" {
		p, err := flagPrefix("addr", *addr)
		if err != nil {
			return err
		}
		cfg.Interfaces[0].Addresses = []netip.Prefix{p}
	}
	if *gateway != "" {
		if cfg.Gateway, err = netip.ParseAddr(*gateway); err != nil {
			return fmt.Errorf("--gateway %q: %w", *gateway, err)
		}
	}
	if len(cfg.Interfaces[0].Addresses) == 0 {
		return errors.New("echo needs an address: give --addr A.B.C.D/NN (or interfaces[0].addresses in --config)")
	}
	if *udpRate < -1 || *udpBurst < 0 {
		return fmt.Errorf("--udp-echo-rate %d --udp-echo-burst %d: want a rate ≥ 0 (-1: no limit) and a burst ≥ 0 (0: the defaults)", *udpRate, *udpBurst)
	}
	if err := faults.parse(); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.Pipeline.DecodeOptions(&struct{}{}); err != nil {
		return err
	}
	e, err := echo.NewEcho(stackConfig(cfg))
	if err != nil {
		return err
	}
	owner, err := rssResolver(*rssMode)
	if err != nil {
		return err
	}
	e.RSS = owner.resolve
	e.UDPGuard = echo.GuardConfig{Rate: *udpRate, Burst: *udpBurst}
	spec, err := faults.wrap(e.App())
	if err != nil {
		return err
	}
	ctl, err := claimInstance(cfg, "echo")
	if err != nil {
		return err
	}
	defer ctl.Close()
	in, err := startShards(cfg, spec, ctl, false, nil)
	if err != nil {
		return err
	}
	addStackSection(ctl, e.Host, len(cfg.Interfaces))
	ctl.AddSection("owner", func() any { return owner.status })
	fmt.Printf("netchan: owner function: %s\n", owner.status.Why)
	stopMetrics, err := startMetrics(cf.Metrics(), ctl, metrics.Source{Name: cfg.Instance, Instance: in, Host: e.Host})
	if err != nil {
		return errors.Join(err, in.Stop())
	}
	defer stopMetrics()
	ctx, cancel := context.WithCancel(context.Background())
	served, err := e.Start(ctx)
	if err != nil {
		cancel()
		in.Stop()
		return err
	}
	faults.serve(ctl)
	fmt.Printf("netchan: UDP echo drops requests from ports %v; %s\n", echo.LoopPorts, udpLimitText(e.UDPGuard))
	if err := startReload(reloadSetup{command: "echo", cfg: cfg, path: cf.Path(), fs: fs, in: in, ctl: ctl}); err != nil { // the claims given, owned by "config"; SIGHUP (reload.go)
		cancel()
		return errors.Join(err, in.Stop())
	}
	if err := dropPrivileges(ctl, "echo", cf.Path(), cfg.Pipeline.BusyPoll.On); err != nil {
		cancel()
		return errors.Join(err, in.Stop())
	}
	fmt.Printf("netchan: instance %s serving echo (ICMP, UDP 7) on %s %v queues %v (xdp %v), pid %d; ready\n",
		cfg.Instance, in.Interfaces()[0], cfg.Interfaces[0].Addresses, in.Queues(), in.Modes(), os.Getpid())
	err = runUntilDone(in, *duration, *statsEvery, *asJSON)
	cancel()
	return errors.Join(err, <-served)
}

// udpLimitText says what the UDP echo guard's rate limit is.
func udpLimitText(g echo.GuardConfig) string {
	if g = g.Resolved(); g.Rate == echo.NoRateLimit {
		return "no rate limit per source (--udp-echo-rate -1)"
	}
	return fmt.Sprintf("at most %d a second from each source address, %d at once, on each shard (--udp-echo-rate, --udp-echo-burst)", g.Rate, g.Burst)
}
