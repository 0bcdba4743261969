package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/pipelines/netchannel"
)

// netchannelFrames is the UMEM netchannel runs with when the configuration leaves the default:
// channels lend frames beyond what a shard keeps for its rings.
const netchannelFrames = 8192

// cmdNetchannel opens netchannels on an interface and echoes what each receives: every UDP
// datagram of an --echo spec goes back to its sender, turned around in place. The kernel keeps
// the interface's addresses and everything no spec names; status shows each channel.
func cmdNetchannel(args []string) error {
	fs := flag.NewFlagSet("netchannel", flag.ContinueOnError)
	var specs []string
	fs.Func("echo", "a UDP flow spec to echo (repeatable), in the claim grammar: udp:ADDR:PORT, udp:ADDR:PORT<-PREFIX:*, ...", func(v string) error {
		specs = append(specs, v)
		return nil
	})
	statsEvery := fs.Duration("stats", time.Second, "print per-shard figures this often (0: only at exit)")
	asJSON := fs.Bool("json", false, "print figures as JSON lines")
	duration := fs.Duration("duration", 0, "stop after this long (0: until SIGINT/SIGTERM)")
	queue := fs.Int("queue", 0, "packets a channel may have waiting per shard (0: netchannel's default)")
	lendCap := fs.Int("lend-cap", 0, "frames a channel may have lent per shard (0: netchannel's default)")
	cf := config.RegisterFlags(fs, config.FlagOptions{Interfaces: true, Metrics: false})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(specs) == 0 {
		return errors.New("netchannel: give at least one --echo SPEC (like --echo udp:198.18.0.1:9999)")
	}
	var rules []claim.Rule
	for _, s := range specs {
		r, err := claim.Parse(s)
		if err != nil {
			return fmt.Errorf("--echo: %w", err)
		}
		if r.Proto() != claim.ProtoUDP {
			return fmt.Errorf("--echo %s: the echo turns UDP datagrams around; a TCP flow needs a stack (netchan echo)", s)
		}
		if _, err := netchannel.SpecOf(r); err != nil {
			return fmt.Errorf("--echo: %w", err)
		}
		rules = append(rules, r)
	}
	cfg, err := cf.Resolve()
	if err != nil {
		return err
	}
	if cfg.UMEM.Frames == config.DefaultFrames {
		cfg.UMEM.Frames = netchannelFrames
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	set := netchannel.New(netchannel.Config{QueueLimit: *queue, LendCap: *lendCap})
	ctl, err := claimInstance(cfg, "netchannel")
	if err != nil {
		return err
	}
	defer ctl.Close()
	in, err := startShards(cfg, set.App("netchannel"), ctl, false, nil)
	if err != nil {
		return err
	}
	ctl.AddSection("netchannels", func() any { return netchannelStatus{Channels: set.Channels(), Fragments: set.Fragments()} })
	var chans []*netchannel.Channel
	closeAll := func() error {
		var errs []error
		for _, ch := range chans {
			errs = append(errs, ch.Close())
		}
		return errors.Join(errs...)
	}
	for _, r := range rules {
		ch, err := set.OpenRule(r, netchannel.Options{})
		if err != nil {
			return errors.Join(err, closeAll(), in.Stop())
		}
		chans = append(chans, ch)
	}
	if err := dropPrivileges(ctl, "netchannel", "", cfg.Pipeline.BusyPoll.On); err != nil {
		return errors.Join(err, closeAll(), in.Stop())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	echoErrs := make([]error, len(chans))
	for i, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			echoErrs[i] = echoChannel(ctx, ch)
		}()
	}
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.String()
	}
	fmt.Printf("netchan: instance %s echoing %s on %s queues %v (xdp %v), pid %d; ready\n",
		cfg.Instance, strings.Join(names, ", "), in.Interfaces()[0], in.Queues(), in.Modes(), os.Getpid())
	err = runUntilDone(in, *duration, *statsEvery, *asJSON)
	cancel()
	err = errors.Join(err, closeAll())
	wg.Wait()
	return errors.Join(append([]error{err}, echoErrs...)...)
}

// echoChannel turns every datagram of ch around and sends it back until ctx ends or ch
// closes.
func echoChannel(ctx context.Context, ch *netchannel.Channel) error {
	b := netchannel.NewBatch(64)
	for {
		n, err := ch.Read(ctx, b)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, netchannel.ErrClosed) {
				return nil
			}
			return err
		}
		for i := 0; i < n; i++ {
			basic.TurnAround(b.Bytes(i))
		}
		if err := ch.Send(b); err != nil {
			return err
		}
	}
}

// netchannelStatus is the "netchannels" section of a netchannel instance.
type netchannelStatus struct {
	Channels  []netchannel.Stats `json:"channels"`
	Fragments uint64             `json:"fragments_without_ports"`
}
