package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/pipelines/claim"
)

// Reload: SIGHUP, or `netchan reload --instance NAME [--config FILE]` (the control socket's
// "reload" action), re-reads the instance's configuration file and applies what can change
// while the XDP programs stay attached and the UMEMs mapped:
//
//   - claims: the file's "claims" are held by the owner "config" (never the App's own), and a
//     reload claims the new ones before it releases the old, through Instance.Claim/Unclaim;
//   - the pipeline's own options that say so (the NAT's timeouts and forwards);
//   - log.level.
//
// Everything else (instance, interfaces and their addresses, queues, xdp_mode, routes,
// gateway, pipeline name, batch size, owner, pinning, spin_idle, busy_poll, UMEM, log.format, the stack's
// limits in "stack", the NAT's ports, filtering, fast path, max_mappings and
// max_mappings_per_host) needs a restart: a file that changes one is refused with the field
// named, as is a file that does not load or validate, and nothing changes. A flag given
// on the command line keeps overriding the file, as at start. The "reload" status section
// shows the values in force and the last reload's time and result.

// configOwner owns the claims of the configuration ("claims" in the file, --claim).
const configOwner = "config"

// stageReloader is a pipeline whose own options (pipeline.options) can partly change while it
// runs.
type stageReloader interface {
	// prepare checks next's options against the running ones (set: the flags given on the
	// command line, which keep overriding the file); it returns the function that applies
	// them and says what changed, or an error that names the field (one that needs a restart
	// included). prepare changes nothing.
	prepare(next *config.Config, set map[string]bool) (apply func() []string, err error)
	// status is the options in force, for the "reload" section.
	status() any
}

// reloadSetup is what startReload needs of a data-plane command.
type reloadSetup struct {
	command string
	cfg     *config.Config // the configuration in force (the file merged with the flags)
	path    string         // the --config file ("" none)
	fs      *flag.FlagSet  // the command's flags: those set on the command line keep overriding the file
	in      *netchan.Instance
	ctl     *control.Server
	// appClaims: the App was started with cfg.Claims as its own (run: they replace its
	// default, and an App must claim something at start); they pass to the owner config.
	appClaims bool
	stage     stageReloader // nil: the pipeline has no options
}

// reloader applies reloads to one running instance; mu orders them.
type reloader struct {
	mu      sync.Mutex
	s       reloadSetup
	running config.Config
	path    string
	claims  []claim.Rule // held by configOwner
	reloads int
	last    *reloadResult
}

// reloadResult is what one reload did, or why it refused.
type reloadResult struct {
	Time    time.Time `json:"time"`
	Trigger string    `json:"trigger"` // SIGHUP or control
	Config  string    `json:"config"`
	OK      bool      `json:"ok"`
	Changes []string  `json:"changes"`         // what changed ("no change" when nothing did)
	Error   string    `json:"error,omitempty"` // why it refused; nothing changed then
	Field   string    `json:"field,omitempty"` // the field the refusal is about
}

// reloadStatus is the "reload" section.
type reloadStatus struct {
	Config   string        `json:"config"`
	Claims   []string      `json:"claims"` // held by the owner config
	LogLevel string        `json:"log_level"`
	Options  any           `json:"options,omitempty"` // the pipeline's reloadable options in force
	Reloads  int           `json:"reloads"`           // applied so far
	Last     *reloadResult `json:"last,omitempty"`
}

// reloadRequest is the control action's request.
type reloadRequest struct {
	Config string `json:"config,omitempty"` // "" the instance's file
}

// startReload hands the configuration's claims to the owner config, publishes the "reload"
// section and action, and follows SIGHUP until the instance stops.
func startReload(s reloadSetup) error {
	r := &reloader{s: s, running: *s.cfg, path: s.path}
	if s.path != "" {
		if abs, err := filepath.Abs(s.path); err == nil {
			r.path = abs
		}
	}
	claims := dedupe(s.cfg.Claims)
	if err := s.in.Claim(configOwner, claims...); err != nil {
		return fmt.Errorf("claims: %w", err)
	}
	if s.appClaims {
		if err := s.in.Unclaim(s.in.Owner(), claims...); err != nil {
			return fmt.Errorf("claims: %w", err)
		}
	}
	r.claims = claims
	if len(claims) > 0 {
		slog.Info("claims of the configuration", "owner", configOwner, "claims", ruleStrings(claims))
	}
	s.ctl.AddSection("reload", r.status)
	s.ctl.AddAction("reload", func(ctx context.Context, raw json.RawMessage) (any, error) {
		var req reloadRequest
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &req); err != nil {
				return nil, fmt.Errorf("reload request: %w", err)
			}
		}
		return r.reload(req.Config, "control"), nil
	})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-s.in.Done():
				return
			case <-hup:
				r.reload("", "SIGHUP")
			}
		}
	}()
	return nil
}

func (r *reloader) status() any {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := reloadStatus{Config: r.path, Claims: ruleStrings(r.claims), LogLevel: r.running.Log.Level, Reloads: r.reloads, Last: r.last}
	if r.s.stage != nil {
		st.Options = r.s.stage.status()
	}
	return st
}

// reload re-reads path (or the instance's file) and applies it, or refuses it whole.
func (r *reloader) reload(path, trigger string) *reloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	if path == "" {
		path = r.path
	}
	res := &reloadResult{Time: time.Now(), Trigger: trigger, Config: path, Changes: []string{}}
	changes, err := r.apply(path)
	if err != nil {
		res.Error = err.Error()
		var fe *config.FieldError
		if errors.As(err, &fe) {
			res.Field = fe.Field
		}
		slog.Warn("reload refused: the configuration in force stays", "trigger", trigger, "config", path, "field", res.Field, "error", err)
	} else {
		res.OK, res.Changes = true, changes
		r.path = path
		r.reloads++
		slog.Info("reloaded", "trigger", trigger, "config", path, "changes", changes)
	}
	r.last = res
	return res
}

// restartFields are the fields a reload may not change, with why.
var restartFields = []struct {
	field string
	get   func(*config.Config) any
}{
	{"instance", func(c *config.Config) any { return c.Instance }},
	{"interfaces", func(c *config.Config) any { return c.Interfaces }},
	{"queues", func(c *config.Config) any { return c.Queues }},
	{"xdp_mode", func(c *config.Config) any { return c.XDPMode }},
	{"routes", func(c *config.Config) any { return c.Routes }},
	{"gateway", func(c *config.Config) any { return c.Gateway }},
	{"pipeline.name", func(c *config.Config) any { return c.Pipeline.Name }},
	{"pipeline.batch_size", func(c *config.Config) any { return c.Pipeline.BatchSize }},
	{"pipeline.owner", func(c *config.Config) any { return c.Pipeline.Owner }},
	{"pipeline.pin", func(c *config.Config) any { return c.Pipeline.Pin }},
	{"pipeline.spin_idle", func(c *config.Config) any { return c.Pipeline.SpinIdle }},
	{"pipeline.busy_poll.on", func(c *config.Config) any { return c.Pipeline.BusyPoll.On }},
	{"pipeline.busy_poll.budget", func(c *config.Config) any { return c.Pipeline.BusyPoll.Budget }},
	{"pipeline.busy_poll.idle", func(c *config.Config) any { return c.Pipeline.BusyPoll.Idle }},
	{"umem", func(c *config.Config) any { return c.UMEM }},
	{"log.format", func(c *config.Config) any { return c.Log.Format }},
	{"stack.reassembly_bytes", func(c *config.Config) any { return c.Stack.ReassemblyBytes }},
	{"stack.reassembly_timeout", func(c *config.Config) any { return c.Stack.ReassemblyTimeout }},
	{"stack.neighbor_table_size", func(c *config.Config) any { return c.Stack.NeighborTableSize }},
	{"stack.arp_pending_hops", func(c *config.Config) any { return c.Stack.ARPPendingHops }},
	{"stack.arp_pending_per_hop", func(c *config.Config) any { return c.Stack.ARPPendingPerHop }},
	{"stack.tcp.max_connections", func(c *config.Config) any { return c.Stack.TCP.MaxConns }},
	{"stack.tcp.backlog", func(c *config.Config) any { return c.Stack.TCP.Backlog }},
	{"stack.tcp.max_time_wait", func(c *config.Config) any { return c.Stack.TCP.MaxTimeWait }},
}

// restartOnly refuses next if it changes a field of restartFields from running's value.
func restartOnly(running, next *config.Config) error {
	for _, f := range restartFields {
		if !reflect.DeepEqual(f.get(next), f.get(running)) {
			why := "the XDP programs, AF_XDP sockets and UMEMs are set up for it"
			switch {
			case f.field == "instance":
				why = "it names the control socket"
			case f.field == "routes" || f.field == "gateway":
				why = "the stack's tables are built at start"
			case strings.HasPrefix(f.field, "stack."):
				why = "the stack's tables and buffers are sized at start"
			case f.field == "log.format":
				why = "the log handler is made at start"
			case strings.HasPrefix(f.field, "pipeline.busy_poll."):
				why = "the AF_XDP sockets' busy-poll options are set at set-up and the shards are built for it"
			case strings.HasPrefix(f.field, "pipeline."):
				why = "the shards are built for it"
			}
			return needsRestart(f.field, why)
		}
	}
	return nil
}

// needsRestart is the error of a reload that changes field.
func needsRestart(field, why string) error {
	return &config.FieldError{Field: field, Msg: "changing it needs a restart (" + why + "); nothing was changed"}
}

func (r *reloader) apply(path string) ([]string, error) {
	if path == "" {
		return nil, errors.New("the instance was started without --config: give the file (netchan reload --config FILE)")
	}
	next, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	r.s.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	r.keepFlags(next, set)
	if err := restartOnly(&r.running, next); err != nil {
		return nil, err
	}
	var applyStage func() []string
	if r.s.stage != nil {
		if applyStage, err = r.s.stage.prepare(next, set); err != nil {
			return nil, err
		}
	} else if err := next.Pipeline.DecodeOptions(&struct{}{}); err != nil {
		return nil, err
	}

	// Apply: claims first (the only step that can fail; Claim undoes its own part), then
	// the options, then release the claims that went away.
	claims := dedupe(next.Claims)
	add := slices.DeleteFunc(slices.Clone(claims), func(c claim.Rule) bool { return slices.Contains(r.claims, c) })
	drop := slices.DeleteFunc(slices.Clone(r.claims), func(c claim.Rule) bool { return slices.Contains(claims, c) })
	if err := r.s.in.Claim(configOwner, add...); err != nil {
		return nil, &config.FieldError{Field: "claims", Msg: err.Error() + "; nothing was changed"}
	}
	var changes []string
	if len(add) > 0 {
		changes = append(changes, "claims added: "+strings.Join(ruleStrings(add), " "))
	}
	if applyStage != nil {
		changes = append(changes, applyStage()...)
	}
	if len(drop) > 0 {
		if err := r.s.in.Unclaim(configOwner, drop...); err != nil {
			slog.Warn("reload: releasing claims", "claims", ruleStrings(drop), "error", err)
		}
		changes = append(changes, "claims released: "+strings.Join(ruleStrings(drop), " "))
	}
	r.claims = claims
	if next.Log.Level != r.running.Log.Level {
		logLevel.Set(parseLevel(next.Log.Level))
		changes = append(changes, fmt.Sprintf("log.level: %s → %s", r.running.Log.Level, next.Log.Level))
	}
	r.running = *next
	if len(changes) == 0 {
		changes = []string{"no change"}
	}
	return changes, nil
}

// keepFlags makes the values given by flags on the command line override next, as they
// override the file at start: they are the running configuration's.
func (r *reloader) keepFlags(next *config.Config, set map[string]bool) {
	run := &r.running
	pad := func(n int) {
		for len(next.Interfaces) < n {
			next.Interfaces = append(next.Interfaces, config.Interface{})
		}
	}
	side := func(i int, nameFlag, addrFlag string) {
		if !set[nameFlag] && !set[addrFlag] || i >= len(run.Interfaces) {
			return
		}
		pad(i + 1)
		if set[nameFlag] {
			next.Interfaces[i].Name = run.Interfaces[i].Name
		}
		if set[addrFlag] {
			next.Interfaces[i].Addresses = run.Interfaces[i].Addresses
		}
	}
	for name := range set {
		switch name {
		case "instance":
			next.Instance = run.Instance
		case "iface":
			next.Interfaces = run.Interfaces
		case "queues":
			next.Queues = run.Queues
		case "xdp-mode":
			next.XDPMode = run.XDPMode
		case "pipeline":
			next.Pipeline.Name = run.Pipeline.Name
		case "frames":
			next.UMEM.Frames = run.UMEM.Frames
		case "frame-size":
			next.UMEM.FrameSize = run.UMEM.FrameSize
		case "ring-size":
			next.UMEM.RingSize = run.UMEM.RingSize
		case "batch-size":
			next.Pipeline.BatchSize = run.Pipeline.BatchSize
		case "claim":
			next.Claims = run.Claims
		case "log-format":
			next.Log.Format = run.Log.Format
		case "log-level":
			next.Log.Level = run.Log.Level
		case "gateway":
			next.Gateway = run.Gateway
		case "busy-poll":
			next.Pipeline.BusyPoll.On = run.Pipeline.BusyPoll.On
		case "busy-poll-budget":
			next.Pipeline.BusyPoll.Budget = run.Pipeline.BusyPoll.Budget
		case "busy-poll-idle":
			next.Pipeline.BusyPoll.Idle = run.Pipeline.BusyPoll.Idle
		}
	}
	if !set["iface"] {
		side(0, "inside", "inside-addr") // nat
		side(1, "outside", "outside-addr")
		if set["addr"] && len(run.Interfaces) > 0 { // echo
			pad(1)
			next.Interfaces[0].Addresses = run.Interfaces[0].Addresses
		}
	}
	if r.s.command == "nat" {
		pad(2) // as cmdNAT pads the file's list before its flags fill it
	}
}

func dedupe(rules []claim.Rule) []claim.Rule {
	var out []claim.Rule
	for _, c := range rules {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func ruleStrings(rules []claim.Rule) []string {
	out := []string{}
	for _, c := range rules {
		out = append(out, c.String())
	}
	return out
}

// cmdReload asks a running instance to reload its configuration file (or FILE).
func cmdReload(args []string) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	instance := fs.String("instance", config.DefaultInstance, "the instance to reload (the --instance it was started with)")
	path := fs.String("config", "", "the configuration file to apply (default: the one the instance was started or last reloaded with)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: give the file with --config FILE", fs.Arg(0))
	}
	if err := config.ValidInstance(*instance); err != nil {
		return fmt.Errorf("--instance: %w", err)
	}
	req := reloadRequest{}
	if *path != "" {
		abs, err := filepath.Abs(*path) // the instance has its own working directory
		if err != nil {
			return err
		}
		req.Config = abs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var res reloadResult
	if err := control.Call(ctx, "", *instance, "reload", req, &res); err != nil {
		return err
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(res)
	} else if res.OK {
		fmt.Printf("instance %s reloaded %s:\n  %s\n", *instance, res.Config, strings.Join(res.Changes, "\n  "))
	}
	if !res.OK {
		return fmt.Errorf("instance %s refused the reload (the configuration in force stays): %s", *instance, res.Error)
	}
	return nil
}

// natReload is the NAT's part of a reload: its timeouts and forwards change in place
// (nat.SetTimeouts, nat.SetForwards); its ports, filtering and fast path need a restart.
type natReload struct {
	n    *nat.NAT
	opt  natOptions // in force (the file's, with the flags over it)
	conf nat.Config // built from opt at start
}

func newNATReload(n *nat.NAT, cfg *config.Config, opt natOptions) (*natReload, error) {
	nc, err := natConfig(cfg, opt)
	return &natReload{n: n, opt: opt, conf: nc}, err
}

func (r *natReload) prepare(next *config.Config, set map[string]bool) (func() []string, error) {
	var o natOptions
	if err := next.Pipeline.DecodeOptions(&o); err != nil {
		return nil, err
	}
	if set["ports"] {
		o.Ports = r.opt.Ports
	}
	if set["filtering"] {
		o.Filtering = r.opt.Filtering
	}
	if set["xdp-fastpath"] {
		o.XDPFastPath = r.opt.XDPFastPath
	}
	if set["max-mappings"] {
		o.MaxMappings = r.opt.MaxMappings
	}
	if set["max-mappings-per-host"] {
		o.MaxMappingsPerHost = r.opt.MaxMappingsPerHost
	}
	nc, err := natConfig(next, o)
	if err != nil {
		return nil, optionsError(err)
	}
	if _, err := nat.New(nc, nil); err != nil { // checks the forwards against the inside network
		return nil, optionsError(err)
	}
	if err := natRestartOnly(r.conf, nc, r.opt, o); err != nil {
		return nil, err
	}
	return func() []string {
		var changes []string
		old := r.n.Timeouts()
		if err := r.n.SetTimeouts(nc.Timeouts); err != nil { // checked by nat.New above
			slog.Error("reload: NAT timeouts", "error", err)
		}
		now := r.n.Timeouts()
		for _, t := range []struct {
			name     string
			old, new time.Duration
		}{{"tcp_established", old.TCPEstablished, now.TCPEstablished}, {"tcp_transitory", old.TCPTransitory, now.TCPTransitory},
			{"udp", old.UDP, now.UDP}, {"icmp", old.ICMP, now.ICMP}} {
			if t.old != t.new {
				changes = append(changes, fmt.Sprintf("pipeline.options.timeouts.%s: %v → %v", t.name, t.old, t.new))
			}
		}
		oldFw := r.n.Forwards()
		if !slices.Equal(oldFw, nc.Forwards) {
			if err := r.n.SetForwards(nc.Forwards); err != nil {
				slog.Error("reload: NAT forwards", "error", err)
			}
			changes = append(changes, fmt.Sprintf("pipeline.options.forwards: %s → %s", forwardsString(oldFw), forwardsString(nc.Forwards)))
		}
		r.opt, r.conf = o, nc
		return changes
	}, nil
}

// natRestartOnly refuses a reload whose NAT options (next, built into nc) change one that
// the running NAT (opt, built into conf) cannot change in place.
func natRestartOnly(conf, nc nat.Config, opt, next natOptions) error {
	fast := func(o natOptions) bool { return o.XDPFastPath == nil || *o.XDPFastPath }
	switch {
	case nc.PortLo != conf.PortLo || nc.PortHi != conf.PortHi:
		return needsRestart("pipeline.options.ports", "the shards' port slices and mappings are built on it")
	case nc.Filtering != conf.Filtering:
		return needsRestart("pipeline.options.filtering", "the mappings in place were made under it")
	case fast(next) != fast(opt):
		return needsRestart("pipeline.options.xdp_fastpath", "the fast path is set up with the XDP programs at start")
	case nc.MaxMappings != conf.MaxMappings:
		return needsRestart("pipeline.options.max_mappings", "each shard's mapping arena is allocated at start")
	case nc.MaxMappingsPerHost != conf.MaxMappingsPerHost:
		return needsRestart("pipeline.options.max_mappings_per_host", "the NAT's shards are built with it")
	}
	return nil
}

// optionsError names pipeline.options in an error of the NAT's options that does not.
func optionsError(err error) error {
	var fe *config.FieldError
	if errors.As(err, &fe) {
		return err
	}
	msg := strings.TrimPrefix(err.Error(), "nat: ")
	field := "pipeline.options"
	switch {
	case strings.HasPrefix(msg, "pipeline.options."):
		field, msg, _ = strings.Cut(msg, " ")
	case strings.HasPrefix(msg, "forward "):
		field = "pipeline.options.forwards"
	case strings.HasPrefix(msg, "ports "), strings.HasPrefix(msg, "port range"):
		field = "pipeline.options.ports"
	case strings.HasPrefix(msg, "filtering "):
		field = "pipeline.options.filtering"
	}
	return &config.FieldError{Field: field, Msg: msg}
}

func forwardsString(fw []nat.Forward) string {
	if len(fw) == 0 {
		return "none"
	}
	var s []string
	for _, f := range fw {
		p := "udp"
		if f.Proto == 6 {
			p = "tcp"
		}
		s = append(s, fmt.Sprintf("%s/%d→%v", p, f.ExtPort, f.Inside))
	}
	return strings.Join(s, " ")
}

// natOptionsStatus is the NAT's part of the "reload" section.
type natOptionsStatus struct {
	Timeouts struct {
		TCPEstablished string `json:"tcp_established"`
		TCPTransitory  string `json:"tcp_transitory"`
		UDP            string `json:"udp"`
		ICMP           string `json:"icmp"`
	} `json:"timeouts"`
	Forwards []string `json:"forwards"`
}

func (r *natReload) status() any {
	var st natOptionsStatus
	t := r.n.Timeouts()
	st.Timeouts.TCPEstablished, st.Timeouts.TCPTransitory, st.Timeouts.UDP, st.Timeouts.ICMP = t.TCPEstablished.String(), t.TCPTransitory.String(), t.UDP.String(), t.ICMP.String()
	st.Forwards = []string{}
	for _, f := range r.n.Forwards() {
		st.Forwards = append(st.Forwards, forwardsString([]nat.Forward{f}))
	}
	return map[string]any{"nat": st}
}

// startNATReload is startReload for `netchan nat`.
func startNATReload(cfg *config.Config, cf *config.Flags, fs *flag.FlagSet, in *netchan.Instance, ctl *control.Server, n *nat.NAT, opt natOptions) error {
	st, err := newNATReload(n, cfg, opt)
	if err != nil {
		return err
	}
	return startReload(reloadSetup{command: "nat", cfg: cfg, path: cf.Path(), fs: fs, in: in, ctl: ctl, stage: st})
}
