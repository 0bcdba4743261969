package config

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// Flags are the data-plane flags: --config and the flags that override its fields. A command
// registers them on its FlagSet, parses, then calls Resolve.
type Flags struct {
	fs         *flag.FlagSet
	defaultIn  string
	withIfaces bool

	path      string
	instance  string
	ifaces    stringList
	claims    stringList
	queues    string
	xdpMode   string
	pipeline  string
	frames    uint
	frameSize uint
	ringSize  uint
	batch     int
	metrics   string
	logFormat string
	logLevel  string

	busyPoll       bool
	busyPollBudget int
	busyPollIdle   time.Duration
}

// FlagOptions choose which flags a command has.
type FlagOptions struct {
	// Interfaces adds --iface, --pipeline and --queues (run has them; demo builds its own lab
	// with its own queue count and always reflects).
	Interfaces bool
	// Claims adds --claim (repeatable), in the grammar of package claim.
	Claims bool
	// Metrics adds --metrics ADDR: serve Prometheus metrics on ADDR (Flags.Metrics).
	Metrics bool
	// BusyPoll adds --busy-poll, --busy-poll-budget and --busy-poll-idle (pipeline.busy_poll).
	BusyPoll bool
	// DefaultInstance replaces DefaultInstance as the name used when neither flag nor file
	// gives one.
	DefaultInstance string
}

// flagField maps a flag to the config field it overrides, so a bad value is reported under
// the name the user typed.
var flagField = map[string]string{
	"instance":   "instance",
	"queues":     "queues",
	"xdp-mode":   "xdp_mode",
	"pipeline":   "pipeline.name",
	"frames":     "umem.frames",
	"frame-size": "umem.frame_size",
	"ring-size":  "umem.ring_size",
	"batch-size": "pipeline.batch_size",
	"iface":      "interfaces",
	"claim":      "claims",
	"log-format": "log.format",
	"log-level":  "log.level",

	"busy-poll":        "pipeline.busy_poll.on",
	"busy-poll-budget": "pipeline.busy_poll.budget",
	"busy-poll-idle":   "pipeline.busy_poll.idle",
}

// RegisterFlags adds the data-plane flags to fs.
func RegisterFlags(fs *flag.FlagSet, o FlagOptions) *Flags {
	f := &Flags{fs: fs, defaultIn: o.DefaultInstance, withIfaces: o.Interfaces}
	if f.defaultIn == "" {
		f.defaultIn = DefaultInstance
	}
	d := Default()
	fs.StringVar(&f.path, "config", "", "JSON configuration file (schema: go doc github.com/netchan/netchan/cmd/netchan/config); flags given on the command line override it")
	fs.StringVar(&f.instance, "instance", f.defaultIn, "instance name: the control socket is /run/netchan/NAME.sock (netchan status --instance NAME)")
	fs.StringVar(&f.xdpMode, "xdp-mode", "auto", "XDP attach mode: auto (native, else generic), native, generic")
	fs.UintVar(&f.frames, "frames", uint(d.UMEM.Frames), "UMEM frames per queue (locked memory: frames × frame size × queues)")
	fs.UintVar(&f.frameSize, "frame-size", uint(d.UMEM.FrameSize), "UMEM frame size: 2048 or 4096")
	fs.UintVar(&f.ringSize, "ring-size", uint(d.UMEM.RingSize), "entries of each AF_XDP ring (power of two)")
	fs.IntVar(&f.batch, "batch-size", d.Pipeline.BatchSize, "packets per shard pass")
	fs.StringVar(&f.logFormat, "log-format", d.Log.Format, "log lines on stderr (log/slog): text or json")
	fs.StringVar(&f.logLevel, "log-level", d.Log.Level, "the least important log lines shown: debug, info, warn or error")
	if o.Claims {
		fs.Var(&f.claims, "claim", "take these packets from the kernel (repeatable): all, A.B.C.D/N, udp:[ADDR:]PORT[-PORT], tcp:[ADDR:]PORT[-PORT], proto:N; "+
			"traffic to the interface's own kernel addresses is taken only by a claim that names it")
	}
	if o.Metrics {
		fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics on this address, such as 127.0.0.1:9464 (GET /metrics; port 0 picks one, shown by netchan status); empty: none")
	}
	if o.BusyPoll {
		fs.BoolVar(&f.busyPoll, "busy-poll", false, "preferred busy polling: each shard runs its queues' NAPI poll itself (a NIC in native XDP mode with napi_defer_hard_irqs and gro_flush_timeout set; "+
			"unavailable on veth and with generic XDP, where netchan says so and runs its usual loop; needs CAP_NET_ADMIN at set-up; docs/busy-poll.md)")
		fs.IntVar(&f.busyPollBudget, "busy-poll-budget", 0, "with --busy-poll: the most packets one busy poll takes from the driver, 1..65535 (0: 64)")
		fs.DurationVar(&f.busyPollIdle, "busy-poll-idle", 0, "with --busy-poll: a shard polls this long without work before it sleeps (0: 1ms; longer than the run: it never sleeps and takes its core whole)")
	}
	if o.Interfaces {
		fs.Var(&f.ifaces, "iface", "interface to run on (repeat for pipelines with several); replaces the file's interface list")
		fs.StringVar(&f.pipeline, "pipeline", d.Pipeline.Name, "bundled pipeline: reflect, drop, count")
		fs.StringVar(&f.queues, "queues", "all", "queues to own, one shard each: all, or a list such as 0,1")
	}
	return f
}

// Metrics is the --metrics address ("": no metrics endpoint).
func (f *Flags) Metrics() string { return f.metrics }

// Path is the --config value.
func (f *Flags) Path() string { return f.path }

// Resolve loads --config (or starts from Default), overrides the fields whose flags were set
// on the command line, and validates the result.
func (f *Flags) Resolve() (*Config, error) {
	c := Default()
	if f.path != "" {
		var err error
		if c, err = Load(f.path); err != nil {
			return nil, err
		}
	}
	if c.Instance == DefaultInstance {
		c.Instance = f.defaultIn
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var err error
	for name := range set {
		switch name {
		case "instance":
			c.Instance = f.instance
		case "queues":
			if c.Queues, err = ParseQueues(f.queues); err != nil {
				return nil, fmt.Errorf("--queues %q: %v: want all or a comma-separated list of queue numbers such as 0,1: %w", f.queues, err, afxdp.ErrQueueOutOfRange)
			}
		case "xdp-mode":
			if c.XDPMode, err = xdpprog.ParseMode(f.xdpMode); err != nil {
				return nil, fmt.Errorf("--xdp-mode %q: want auto, native or generic", f.xdpMode)
			}
		case "pipeline":
			c.Pipeline.Name = f.pipeline
		case "claim":
			if c.Claims, err = claim.ParseList(f.claims); err != nil {
				return nil, fmt.Errorf("--claim: %w", err)
			}
		case "frames":
			c.UMEM.Frames = clamp32(f.frames)
		case "frame-size":
			c.UMEM.FrameSize = clamp32(f.frameSize)
		case "ring-size":
			c.UMEM.RingSize = clamp32(f.ringSize)
		case "batch-size":
			c.Pipeline.BatchSize = f.batch
		case "log-format":
			c.Log.Format = f.logFormat
		case "log-level":
			c.Log.Level = f.logLevel
		case "busy-poll":
			c.Pipeline.BusyPoll.On = f.busyPoll
		case "busy-poll-budget":
			c.Pipeline.BusyPoll.Budget = f.busyPollBudget
		case "busy-poll-idle":
			c.Pipeline.BusyPoll.Idle = f.busyPollIdle
		case "iface":
			old := c.Interfaces
			c.Interfaces = nil
			for _, name := range f.ifaces {
				iface := Interface{Name: name}
				for _, o := range old {
					if o.Name == name {
						iface = o // keep the file's addresses for an interface named again
					}
				}
				c.Interfaces = append(c.Interfaces, iface)
			}
		}
	}
	if err := c.Validate(); err != nil {
		return nil, flagError(err, set)
	}
	return c, nil
}

func clamp32(v uint) uint32 {
	if v > 1<<31 {
		return 1 << 31
	}
	return uint32(v)
}

// flagError renames a field error after the flag that set the field.
func flagError(err error, set map[string]bool) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	for name, field := range flagField {
		if set[name] && (fe.Field == field || strings.HasPrefix(fe.Field, field+"[")) {
			return fmt.Errorf("--%s: %s: %w", name, fe.Msg, ErrInvalid)
		}
	}
	return err
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
