package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/metrics"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// cmdDemo is the embedded default: a lab of its own, the reflect pipeline on real AF_XDP
// sockets on every queue, one sender per queue in the peer namespace, live figures, teardown.
func cmdDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	asJSON := fs.Bool("json", false, "print figures as JSON lines")
	nq := fs.Int("queue-count", 2, "queues (and shards)")
	rate := fs.Int("rate", 20000, "frames per second per sender (0: as fast as possible)")
	size := fs.Int("size", 64, "frame size")
	cf := config.RegisterFlags(fs, config.FlagOptions{DefaultInstance: "demo", Metrics: true})
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := cf.Resolve()
	if err != nil {
		return err
	}
	if len(cfg.Interfaces) > 0 || cfg.Queues != nil || cfg.Pipeline.Name != "reflect" || len(cfg.Routes) > 0 || cfg.Gateway.IsValid() {
		fmt.Fprintf(os.Stderr, "netchan demo: the demo builds its own lab and reflects on queues 0..%d: ignoring interfaces, queues, routes, gateway and pipeline.name of %s\n", *nq-1, cf.Path())
	}
	mode := cfg.XDPMode
	ctl, err := claimInstance(cfg, "demo")
	if err != nil {
		return err
	}
	defer ctl.Close()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Generic XDP on veth maps sender queue q to receive queue q-1 (LAB-NOTES), so a generic
	// demo needs one more queue on the sending side.
	labQueues := *nq
	if mode == xdpprog.ModeGeneric {
		labQueues++
	}
	var rnd [2]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("ncd%02x%02x", rnd[0], rnd[1])[:7]
	say := func(format string, a ...any) {
		if !*asJSON {
			fmt.Printf(format+"\n", a...)
		}
	}
	say("netchan demo: building lab %s (%d queues)", name, labQueues)
	l, err := lab.Up(ctx, lab.Config{Name: name, Layout: lab.LayoutPair, QueueCount: labQueues})
	if err != nil {
		return err
	}
	defer func() {
		if err := lab.Down(name); err != nil {
			fmt.Fprintln(os.Stderr, "netchan demo: removing the lab:", err)
		}
		say("netchan demo: lab %s removed", name)
	}()
	ep, peer := l.Netchan[0], l.Netchan[0].Peer
	queues := make([]int, *nq)
	for i := range queues {
		queues[i] = i
	}
	// The stack serves the demo's address (ARP, ping, UDP/TCP echo); the generator's UDP to
	// port 9 is reflected in front of it, on the fast path.
	cfg.Interfaces, cfg.Queues, cfg.Routes, cfg.Gateway = []config.Interface{{Name: ep.Iface, Addresses: []netip.Prefix{ep.Addr}}}, queues, nil, netip.Addr{}
	echo, err := echo.NewEcho(stackConfig(cfg))
	if err != nil {
		return err
	}
	spec := echo.WithReflect(9)
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	go echo.Serve(serveCtx)
	if err := cfg.Pipeline.DecodeOptions(&struct{}{}); err != nil {
		return err
	}
	in, err := startShards(cfg, spec, ctl, false, func(f string, a ...any) { say("  "+f, a...) })
	if err != nil {
		return err
	}
	defer in.Stop()
	addStackSection(ctl, echo.Host, 1)
	stopMetrics, err := startMetrics(cf.Metrics(), ctl, metrics.Source{Name: cfg.Instance, Instance: in, Host: echo.Host})
	if err != nil {
		return err
	}
	defer stopMetrics()
	say("netchan demo: reflect (UDP 9) + echo stack (%v) pipeline on %s queues %v, XDP %v; %s peer %s sends on every queue for %v",
		ep.Addr, ep.Iface, queues, in.Modes(), peer.NS, peer.Iface, *duration)

	type sent struct {
		Queue  int               `json:"queue"`
		Result trafficgen.Result `json:"result"`
		Err    string            `json:"error,omitempty"`
	}
	results := make([]sent, *nq)
	var wg sync.WaitGroup
	for i, q := range queues {
		sq := q
		if in.Modes()[0] == xdpprog.ModeGeneric && q > 0 {
			sq = q + 1
		}
		cfg := trafficgen.Config{Iface: peer.Iface, Queue: sq, DstMAC: ep.MAC, Src: peer.Addr.Addr(), Dst: ep.Addr.Addr(),
			SrcPort: uint16(40000 + 100*q), DstPort: 9, Flows: 4, Size: *size, Duration: *duration, Rate: *rate,
			RunID: uint32(q + 1), Verify: true, Wait: time.Second}
		cmd := trafficgen.Command(ctx, peer.NS, []string{exe, "lab", "send"}, cfg)
		cmd.Stderr = os.Stderr
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i].Queue = queues[i]
			out, err := cmd.Output()
			if err != nil {
				results[i].Err = err.Error()
				return
			}
			results[i].Result, err = trafficgen.Decode(out)
			if err != nil {
				results[i].Err = err.Error()
			}
		}(i)
	}
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	p := newPrinter(*asJSON, in.Snapshot())
	t := time.NewTicker(time.Second)
	defer t.Stop()
wait:
	for {
		select {
		case <-sendersDone:
			break wait
		case <-ctx.Done():
			<-sendersDone
			break wait
		case <-t.C:
			p.print(in.Snapshot())
		}
	}
	// The peer namespace pings the demo's address: ARP and ICMP answered by netchan's stack
	// (the interface has no kernel address). The pinger is netchan itself, re-executed in the
	// peer namespace (a Go ICMP socket, no ping binary), printing ping's lines.
	var problems []string
	pingOut, pingErr := nsPing(ctx, peer.NS, ep.Addr.Addr(), 3)
	if pingErr != nil {
		problems = append(problems, fmt.Sprintf("ping %v from the peer: %v: %s", ep.Addr.Addr(), pingErr, pingOut))
	} else {
		say("netchan demo: %s pings %v:\n%s", peer.NS, ep.Addr.Addr(), pingOut)
	}
	stackStats := echo.Host.Stats()
	snap := in.Snapshot()
	stopErr := in.Stop()
	for _, s := range snap {
		if s.RxPackets == 0 || s.TxPackets == 0 {
			problems = append(problems, fmt.Sprintf("shard %d moved rx %d tx %d", s.Shard, s.RxPackets, s.TxPackets))
		}
	}
	for _, r := range results {
		if r.Err != "" {
			problems = append(problems, fmt.Sprintf("sender on queue %d: %s", r.Queue, r.Err))
		} else if r.Result.Received == 0 {
			problems = append(problems, fmt.Sprintf("sender on queue %d got nothing back", r.Queue))
		}
	}
	if stopErr != nil {
		problems = append(problems, stopErr.Error())
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(map[string]any{"final": true, "shards": snap, "senders": results, "stack": stackStats, "problems": problems})
	} else {
		p.final(snap)
		for _, r := range results {
			fmt.Printf("sender queue %d: sent %d, reflected back %d (byte-checked), mismatched %d, %.0f pkt/s\n",
				r.Queue, r.Result.Sent, r.Result.Received, r.Result.Mismatched, r.Result.PPS)
		}
		fmt.Printf("stack: %d ARP replies, %d ping replies from netchan to the peer's kernel\n", stackStats.ARPRepliesOut, stackStats.EchoReplies)
	}
	if len(problems) > 0 {
		return fmt.Errorf("demo problems: %v", problems)
	}
	return nil
}
