package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/metrics"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/shards"
)

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	statsEvery := fs.Duration("stats", time.Second, "print per-shard figures this often (0: only at exit)")
	asJSON := fs.Bool("json", false, "print figures as JSON lines")
	duration := fs.Duration("duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
	debug := fs.Bool("debug-frames", false, "track every frame's place and check each move (slow)")
	cf := config.RegisterFlags(fs, config.FlagOptions{Interfaces: true, Claims: true, Metrics: true, BusyPoll: true})
	faults := registerFault(fs, "the pipeline")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := faults.parse(); err != nil {
		return err
	}
	cfg, err := cf.Resolve()
	if err != nil {
		return err
	}
	if len(cfg.Interfaces) == 0 {
		return errors.New("give --iface IF (or interfaces in --config FILE)")
	}
	spec, err := basic.ByName(cfg.Pipeline.Name)
	if err != nil {
		return err
	}
	if err := cfg.Pipeline.DecodeOptions(&struct{}{}); err != nil {
		return err
	}
	ctl, err := claimInstance(cfg, "run")
	if err != nil {
		return err
	}
	defer ctl.Close()
	if len(cfg.Claims) > 0 {
		spec.Claims = cfg.Claims // the claims given replace the default, all
	}
	if spec, err = faults.wrap(spec); err != nil {
		return err
	}
	in, err := startShards(cfg, spec, ctl, *debug, nil)
	if err != nil {
		return err
	}
	stopMetrics, err := startMetrics(cf.Metrics(), ctl, metrics.Source{Name: cfg.Instance, Instance: in})
	if err != nil {
		return errors.Join(err, in.Stop())
	}
	defer stopMetrics()
	faults.serve(ctl)
	if err := startReload(reloadSetup{command: "run", cfg: cfg, path: cf.Path(), fs: fs, in: in, ctl: ctl, appClaims: len(cfg.Claims) > 0}); err != nil { // the claims given pass to the owner "config"; SIGHUP (reload.go)
		return errors.Join(err, in.Stop())
	}
	if err := dropPrivileges(ctl, "run", cf.Path(), cfg.Pipeline.BusyPoll.On); err != nil {
		return errors.Join(err, in.Stop())
	}
	fmt.Printf("netchan: instance %s running pipeline %s on %v queues %v (xdp %v), pid %d, status: netchan status --instance %s; ready\n",
		cfg.Instance, spec.Name, in.Interfaces(), in.Queues(), in.Modes(), os.Getpid(), cfg.Instance)
	return runUntilDone(in, *duration, *statsEvery, *asJSON)
}

// runUntilDone prints figures every statsEvery until SIGINT/SIGTERM, duration, or the shards
// stopping, then stops the instance and prints the final figures.
func runUntilDone(in *netchan.Instance, duration, statsEvery time.Duration, asJSON bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	p := newPrinter(asJSON, in.Snapshot())
	var tick <-chan time.Time
	if statsEvery > 0 {
		t := time.NewTicker(statsEvery)
		defer t.Stop()
		tick = t.C
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-in.Done():
			break loop
		case <-tick:
			p.print(in.Snapshot())
		}
	}
	snap := in.Snapshot()
	err := in.Stop()
	p.final(snap)
	return err
}

// printer shows per-shard figures as a table with rates, or as JSON lines.
type printer struct {
	json  bool
	last  []shards.Snapshot
	lastT time.Time
	start time.Time
}

func newPrinter(asJSON bool, first []shards.Snapshot) *printer {
	return &printer{json: asJSON, last: first, lastT: time.Now(), start: time.Now()}
}

func (p *printer) print(snap []shards.Snapshot) {
	now := time.Now()
	dt := now.Sub(p.lastT).Seconds()
	if p.json {
		json.NewEncoder(os.Stdout).Encode(map[string]any{"t": now.Sub(p.start).Seconds(), "shards": snap})
	} else {
		fmt.Printf("%6.1fs", now.Sub(p.start).Seconds())
		for i, s := range snap {
			var rx, tx uint64
			if p.last != nil && dt > 0 {
				rx, tx = s.RxPackets-p.last[i].RxPackets, s.TxPackets-p.last[i].TxPackets
			}
			fmt.Printf("  | shard %d q%d: rx %8.0f/s tx %8.0f/s drop %d hand %d→ %d← pkts/poll %.1f",
				s.Shard, s.Queue, float64(rx)/dt, float64(tx)/dt, s.DropsTotal, s.HandoffOut, s.HandoffIn, s.PacketsPerPoll)
		}
		fmt.Println()
	}
	p.last, p.lastT = snap, now
}

func (p *printer) final(snap []shards.Snapshot) {
	if p.json {
		json.NewEncoder(os.Stdout).Encode(map[string]any{"final": true, "shards": snap})
		return
	}
	for _, s := range snap {
		fmt.Printf("shard %d queue %d: rx %d pkts %d bytes, tx %d pkts %d bytes, drops %v, hand-off out %d in %d\n",
			s.Shard, s.Queue, s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes, s.Drops, s.HandoffOut, s.HandoffIn)
	}
}
