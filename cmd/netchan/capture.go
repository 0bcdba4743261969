package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/cmd/netchan/capture"
	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/control"
)

// registerCapture serves captures and traces of in on its control socket (the "tap" stream):
// one at a time, each installing a tap on every shard for as long as its client wants it.
func registerCapture(ctl *control.Server, in *netchan.Instance) {
	var busy sync.Mutex
	fast := func() uint64 {
		var n uint64
		for _, s := range in.XDPStats() {
			n += s.Fast
		}
		return n
	}
	ctl.AddStream("tap", func(ctx context.Context, args url.Values, w control.StreamWriter) error {
		req, err := capture.ParseRequest(args)
		if err != nil {
			return err
		}
		if !busy.TryLock() {
			return errors.New("a capture or trace is already running on this instance: one at a time")
		}
		defer busy.Unlock()
		return capture.Serve(ctx, in, req, capture.Options{XDPFast: fast}, w)
	})
}

// openTap opens the tap stream of an instance and stops it (politely: the instance still
// sends its last figures) on SIGINT or SIGTERM; the returned stop does the same.
func openTap(instance string, req capture.Request) (*control.Stream, func(), error) {
	if err := config.ValidInstance(instance); err != nil {
		return nil, nil, fmt.Errorf("--instance: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := control.OpenStream(ctx, "", instance, "tap", req.Values())
	if err != nil {
		cancel()
		return nil, nil, err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			signal.Stop(sig)
			sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer scancel()
			if st.Stop(sctx) != nil {
				cancel() // the instance does not answer: drop the connection
				return
			}
			// The instance ends the stream within a moment; if it does not, drop it.
			time.AfterFunc(5*time.Second, cancel)
		})
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			stop()
		case <-done:
		}
	}()
	return st, func() { close(done); stop(); cancel() }, nil
}

// cmdCapture writes what a stage of a running instance sees, emits or drops as pcapng.
func cmdCapture(args []string) error {
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	instance := fs.String("instance", config.DefaultInstance, "instance to capture from (the --instance it was started with)")
	stage := fs.String("stage", "", "the stage, by name or index (netchan status lists them; default: the first, or with --drops every stage)")
	out := fs.Bool("out", false, "capture what the stage emits (its verdicts other than drop) instead of what it sees")
	drops := fs.Bool("drops", false, "capture what the stage drops, each with its reason as the packet's comment")
	filter := fs.String("filter", "", `which packets: udp, tcp, icmp, arp, ip, [src|dst] host A.B.C.D, [src|dst] port N, shard N, with and, or, not and parentheses (e.g. "udp and dst port 9")`)
	count := fs.Int("c", 0, "stop after writing this many packets (0: until Ctrl-C)")
	file := fs.String("w", "", "pcapng file to write (- for standard output)")
	snap := fs.Int("snap", 0, fmt.Sprintf("bytes kept of each packet (default and most %d)", capture.MaxSnap))
	slots := fs.Int("slots", 0, "ring slots per shard between the shard and the capture (default 1024); a full ring counts what it could not keep")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (the filter goes in --filter \"...\")", fs.Arg(0))
	}
	if *file == "" {
		return errors.New("give the file to write with -w FILE (- for standard output)")
	}
	if _, err := capture.Parse(*filter); err != nil {
		return err
	}
	if *count < 0 {
		return errors.New("-c wants a count ≥ 0")
	}
	req := capture.Request{Filter: *filter, Stage: *stage, Out: *out, Drops: *drops, Count: *count, Snap: *snap, Slots: *slots}
	if _, err := capture.ParseRequest(req.Values()); err != nil {
		return err
	}
	var w io.Writer = os.Stdout
	var f *os.File
	if *file != "-" {
		var err error
		if f, err = os.Create(*file); err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	st, stop, err := openTap(*instance, req)
	if err != nil {
		return err
	}
	defer st.Close()
	defer stop()
	fmt.Fprintf(os.Stderr, "netchan capture: capturing from instance %s; Ctrl-C to stop\n", *instance)
	sum, err := capture.WritePcapng(st, w, "netchan capture")
	if sum == nil {
		return err
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	var matched uint64
	if sum.Stats != nil {
		for _, m := range sum.Stats.Matched {
			matched += m
		}
	}
	how := "the connection dropped"
	if sum.End != nil {
		how = sum.End.Why
	}
	fmt.Fprintf(os.Stderr, "netchan capture: %s: %d packets written to %s; selected %d, could not keep %d (ring full; in the file as isb_ifdrop) (%s)\n",
		sum.Info.Select, sum.Written, *file, matched, sum.Dropped(), how)
	return err
}
