package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/doctor"
)

// errFindings makes main exit 1 without printing anything more: the findings said it.
var errFindings = errors.New("doctor found problems")

// cmdDoctor checks the machine (and the interfaces given) and says what to fix.
func cmdDoctor(args []string) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	var ifaces []string
	fs.Func("iface", "interface to check (repeat for several); default: the interfaces of --config", func(v string) error {
		ifaces = append(ifaces, v)
		return nil
	})
	path := fs.String("config", "", "configuration file of the run to check for (interfaces, queues, umem, pipeline.busy_poll)")
	queues := fs.String("queues", "all", "queues a run would own: all, or a list such as 0,1")
	frames := fs.Uint("frames", config.DefaultFrames, "UMEM frames per queue a run would use")
	frameSize := fs.Uint("frame-size", config.DefaultFrameSize, "UMEM frame size a run would use")
	busyPoll := fs.Bool("busy-poll", false, "check for a run with --busy-poll (pipeline.busy_poll.on in --config): what stands in busy polling's way is a warning")
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := config.Default()
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
	}
	o := doctor.Options{Ifaces: cfg.InterfaceNames(), Queues: cfg.Queues, Frames: cfg.UMEM.Frames, FrameSize: cfg.UMEM.FrameSize, ConfigPath: *path,
		BusyPoll: cfg.Pipeline.BusyPoll.On}
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "iface":
			o.Ifaces = ifaces
		case "queues":
			var qerr error
			if o.Queues, qerr = config.ParseQueues(*queues); qerr != nil {
				err = fmt.Errorf("--queues %q: %v", *queues, qerr)
			}
		case "frames":
			o.Frames = uint32(*frames)
		case "frame-size":
			o.FrameSize = uint32(*frameSize)
		case "busy-poll":
			o.BusyPoll = *busyPoll
		}
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	findings := doctor.Check(ctx, o)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"ok": !doctor.Bad(findings), "findings": findings}); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		for _, f := range findings {
			subject := f.Check
			if f.Subject != "" {
				subject = f.Subject + " " + f.Check
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Severity, subject, f.What)
			if f.Fix != "" {
				fmt.Fprintf(tw, "\t\t→ %s\n", f.Fix)
			}
		}
		tw.Flush()
		n := 0
		for _, f := range findings {
			if f.Severity >= doctor.Warn {
				n++
			}
		}
		if n == 0 {
			fmt.Println("all is well")
		} else {
			fmt.Printf("%d finding(s) to act on\n", n)
		}
		if len(o.Ifaces) == 0 {
			fmt.Println("(give --iface IF to check an interface: queues, XDP, veth peer offloads)")
		}
	}
	if doctor.Bad(findings) {
		return errFindings
	}
	return nil
}
