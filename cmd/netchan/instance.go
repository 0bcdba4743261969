package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/cmd/netchan/doctor"
	"github.com/netchan/netchan/cmd/netchan/metrics"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/caps"
	"github.com/netchan/netchan/stack"
)

// claimInstance checks the privileges a data-plane command needs (so that an unprivileged user
// hears about capabilities, not about /run), then claims the instance name and opens its
// control socket. The caller closes the server when the instance has stopped.
func claimInstance(cfg *config.Config, command string) (*control.Server, error) {
	if err := caps.Check(); err != nil {
		return nil, err
	}
	setupLogging(cfg, command) // log/slog, as --log-format and --log-level say (logging.go)
	ctl, err := control.Listen(control.Config{Name: cfg.Instance, Command: command})
	if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("%w: %w: run as root (sudo): the control socket lives in %s", err, netchan.ErrPermission, control.DefaultDir)
	}
	return ctl, err
}

// privilegesStatus is the "privileges" section: the capabilities kept once set up, and why.
type privilegesStatus struct {
	Kept  string      `json:"kept"`
	Needs []caps.Need `json:"needs"`
}

// dropPrivileges drops the process, on every thread, to the capabilities command still needs
// once set up (doctor.AfterSetup; configPath is the file a reload reads again; busyPoll: the
// shards busy poll, caps.BusyPoll, whose socket options were set at set-up and whose polls
// need nothing), publishes them in the "privileges" section and logs them. Call it when
// set-up is done, before "ready": what runs after it (reload, status, the stop) must do with
// what it kept.
func dropPrivileges(ctl *control.Server, command, configPath string, busyPoll bool) error {
	features := slices.Clone(doctor.AfterSetup[command])
	if busyPoll {
		features = append(features, caps.BusyPoll)
	}
	needs := caps.NeedsFor(configPath, features...)
	kept, err := caps.DropTo(caps.Keep(needs)...)
	if err != nil {
		return fmt.Errorf("dropping the capabilities netchan no longer needs: %w", err)
	}
	ctl.AddSection("privileges", func() any { return privilegesStatus{Kept: kept.String(), Needs: needs} })
	attrs := []any{"kept", kept.String()}
	for _, n := range needs {
		if n.Needs != 0 {
			attrs = append(attrs, n.Feature, n.Needs.String()+": "+n.Why)
		}
	}
	slog.Info("set up: dropped the capabilities no longer needed", attrs...)
	return nil
}

// pipelineStatus is the "pipeline" section of a running instance's status.
type pipelineStatus struct {
	Name       string   `json:"name"`
	Interfaces []string `json:"interfaces"`
	Queues     []int    `json:"queues"`
	XDPModes   []string `json:"xdp_modes"`
	BatchSize  int      `json:"batch_size"`
	Owner      string   `json:"owner"`
	UMEM       struct {
		Frames    uint32 `json:"frames"`
		FrameSize uint32 `json:"frame_size"`
		RingSize  uint32 `json:"ring_size"`
	} `json:"umem"`
}

// claimsStatus is one interface's entry of the "claims" section: every claim with its owner,
// and the kernel addresses that only a claim naming them takes.
type claimsStatus struct {
	Iface       string       `json:"iface"`
	Claims      []ownedClaim `json:"claims"`
	KernelAddrs []string     `json:"kernel_addresses"`
}

type ownedClaim struct {
	Owner string `json:"owner"`
	Claim string `json:"claim"`
}

// xdpStatus is one interface's entry of the "xdp" section.
type xdpStatus struct {
	Iface    string `json:"iface"`
	Mode     string `json:"mode"`
	Claimed  uint64 `json:"claimed"`
	Passed   uint64 `json:"passed"`
	NoSocket uint64 `json:"no_socket"`
	Fast     uint64 `json:"fast,omitempty"` // frames the program translated and redirected itself
	// Flow counts frames a netchannel's flow spec claimed; FlowFragment non-first fragments
	// seen while flow specs were held (no ports: no flow spec can take them).
	Flow         uint64 `json:"flow,omitempty"`
	FlowFragment uint64 `json:"flow_fragment,omitempty"`
}

// startShards starts the shards cfg describes with pipeline spec, and publishes the
// pipeline, shards and xdp sections on ctl.
// A pipeline with options decodes cfg.Pipeline.Options itself before it calls this.
func startShards(cfg *config.Config, spec pipelines.App, ctl *control.Server, debug bool, logf func(string, ...any)) (*netchan.Instance, error) {
	owner := spec.Owner
	switch cfg.Pipeline.Owner {
	case "none":
		owner = nil
	case "flow":
		owner = pipelines.OwnerByFlow
	}
	spec.Owner = owner
	if logf == nil {
		logf = slogf(cfg.InterfaceNames()) // the library's log lines through log/slog (logging.go)
	}
	in, err := netchan.Start(netchanConfig(cfg, debug, logf), spec)
	if err != nil {
		return nil, flagHint(memlockHint(err, cfg))
	}
	ps := pipelineStatus{Name: spec.Name, Interfaces: in.Interfaces(), Queues: in.Queues(), BatchSize: cfg.Pipeline.BatchSize, Owner: "none"}
	if owner != nil {
		ps.Owner = "flow"
	}
	for _, m := range in.Modes() {
		ps.XDPModes = append(ps.XDPModes, m.String())
	}
	ps.UMEM.Frames, ps.UMEM.FrameSize, ps.UMEM.RingSize = cfg.UMEM.Frames, cfg.UMEM.FrameSize, cfg.UMEM.RingSize
	ctl.AddSection("pipeline", func() any { return ps })
	ctl.AddSection("shards", func() any { return in.Snapshot() })
	ctl.AddSection("claims", func() any {
		var out []claimsStatus
		for _, ic := range in.Claims() {
			cs := claimsStatus{Iface: ic.Interface, Claims: []ownedClaim{}, KernelAddrs: []string{}}
			for _, c := range ic.Claims {
				cs.Claims = append(cs.Claims, ownedClaim{Owner: c.Owner, Claim: c.Rule.String()})
			}
			for _, a := range ic.KernelAddrs {
				cs.KernelAddrs = append(cs.KernelAddrs, a.String())
			}
			out = append(out, cs)
		}
		return out
	})
	ctl.AddSection("xdp", func() any {
		var out []xdpStatus
		for i, st := range in.XDPStats() {
			out = append(out, xdpStatus{Iface: in.Interfaces()[i], Mode: in.Modes()[i].String(), Claimed: st.Claimed, Passed: st.Passed, NoSocket: st.NoSocket, Fast: st.Fast,
				Flow: st.Flow, FlowFragment: st.FlowFragment})
		}
		return out
	})
	registerCapture(ctl, in)
	logStarted(in, spec.Name)
	return in, nil
}

// startMetrics serves src's Prometheus metrics on addr (nothing when addr is empty), names
// the endpoint in the status's "metrics" section and returns the function that stops serving.
func startMetrics(addr string, ctl *control.Server, src metrics.Source) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	srv, err := metrics.Listen(addr, src)
	if err != nil {
		return nil, err
	}
	ctl.AddSection("metrics", func() any { return metricsStatus{URL: srv.URL()} })
	slog.Info("serving Prometheus metrics", "url", srv.URL())
	return func() { srv.Close() }, nil
}

// metricsStatus is the "metrics" section of an instance run with --metrics.
type metricsStatus struct {
	URL string `json:"url"`
}

// netchanConfig is the front door's Config for cfg.
func netchanConfig(cfg *config.Config, debug bool, logf func(string, ...any)) netchan.Config {
	return netchan.Config{Interfaces: cfg.InterfaceNames(), Queues: cfg.Queues, XDPMode: cfg.XDPMode,
		BatchSize: cfg.Pipeline.BatchSize, UMEM: netchan.UMEM{Frames: cfg.UMEM.Frames, FrameSize: cfg.UMEM.FrameSize, RingSize: cfg.UMEM.RingSize},
		NoPin: !cfg.Pipeline.Pin, SpinIdle: cfg.Pipeline.SpinIdle, Debug: debug, Logf: logf,
		BusyPoll: netchan.BusyPoll{On: cfg.Pipeline.BusyPoll.On, Budget: cfg.Pipeline.BusyPoll.Budget, Idle: cfg.Pipeline.BusyPoll.Idle}}
}

// flagHint names the flag that changes what a library error is about; the library's own
// message says what to do in its terms.
func flagHint(err error) error {
	switch {
	case errors.Is(err, netchan.ErrQueueOutOfRange), errors.Is(err, netchan.ErrQueueBusy):
		return fmt.Errorf("%w (the queues: --queues, or \"queues\" in --config)", err)
	case errors.Is(err, netchan.ErrNoInterface):
		return fmt.Errorf("%w (the interfaces: --iface, or \"interfaces\" in --config)", err)
	}
	return err
}

// memlockHint adds, to a UMEM registration refused over RLIMIT_MEMLOCK, what the whole run
// locks and the flags that change it.
func memlockHint(err error, cfg *config.Config) error {
	if !errors.Is(err, netchan.ErrMemlock) {
		return err
	}
	queues := len(cfg.Queues)
	what := fmt.Sprintf("%d queue(s)", queues)
	if cfg.Queues == nil {
		queues, what = 0, "every queue"
	}
	per := cfg.UMEM.Bytes()
	total := ""
	if queues > 0 {
		total = fmt.Sprintf(", %d MiB in all", per*uint64(queues)>>20)
	}
	return fmt.Errorf("%w\n  this run locks one UMEM of %d MiB (--frames %d × --frame-size %d) per queue on %s%s; "+
		"without CAP_IPC_LOCK all of a user's locked memory must fit RLIMIT_MEMLOCK: run as root, raise the limit (ulimit -l, prlimit --memlock), or lower --frames (umem.frames in --config); `netchan doctor` checks this",
		err, per>>20, cfg.UMEM.Frames, cfg.UMEM.FrameSize, what, total)
}

// stackConfig turns the configured addresses, routes, gateway and static ARP entries into the
// stack's configuration, interface by interface in pipeline order, with the limits of "stack".
func stackConfig(cfg *config.Config) stack.Config {
	var sc stack.Config
	for i, ifc := range cfg.Interfaces {
		sc.Ifaces = append(sc.Ifaces, stack.Iface{Addrs: ifc.Addresses})
		for _, n := range ifc.StaticARP {
			var mac [6]byte
			copy(mac[:], n.MAC)
			sc.StaticARP = append(sc.StaticARP, stack.StaticNeighbor{Iface: i, IP: n.IP, MAC: mac})
		}
	}
	for _, r := range cfg.Routes {
		sc.Routes = append(sc.Routes, stack.Route{Prefix: r.Prefix, Via: r.Via})
	}
	sc.Gateway = cfg.Gateway
	l := cfg.Stack // the limits ("stack"); 0 leaves the stack's default
	sc.ReassemblyBytes, sc.ReassemblyTimeout, sc.NeighborTableSize = l.ReassemblyBytes, l.ReassemblyTimeout, l.NeighborTableSize
	sc.ARPPendingHops, sc.ARPPendingPerHop = l.ARPPendingHops, l.ARPPendingPerHop
	sc.TCP.MaxConns, sc.TCP.Backlog, sc.TCP.MaxTimeWait = l.TCP.MaxConns, l.TCP.Backlog, l.TCP.MaxTimeWait
	return sc
}

// stackStatus is the "stack" section of an instance that runs the stack.
type stackStatus struct {
	Stats     stack.Stats        `json:"stats"`
	Neighbors [][]stack.Neighbor `json:"neighbors"`
	Routes    []stack.Route      `json:"routes"`
}

func addStackSection(ctl *control.Server, h *stack.Host, ifaces int) {
	ctl.AddSection("stack", func() any {
		st := stackStatus{Stats: h.Stats(), Routes: h.Routes()}
		for i := 0; i < ifaces; i++ {
			st.Neighbors = append(st.Neighbors, h.Neighbors(i))
		}
		return st
	})
	ctl.AddSection("tcp", func() any { return tcpSection(h.TCPConns()) })
}

// maxStatusConns bounds the connections one status request lists, so a server with many
// connections answers quickly; the section says how many were left out.
const maxStatusConns = 10000

// tcpStatus is the "tcp" section: every live connection (TIME_WAIT included) with its
// figures, ordered by shard, local and remote address.
type tcpStatus struct {
	Conns   []stack.ConnStats `json:"conns"`
	Omitted int               `json:"omitted,omitempty"`
}

func tcpSection(conns []stack.ConnStats) tcpStatus {
	ap := func(s string) netip.AddrPort { a, _ := netip.ParseAddrPort(s); return a }
	slices.SortFunc(conns, func(a, b stack.ConnStats) int {
		return cmp.Or(cmp.Compare(a.Shard, b.Shard), ap(a.Local).Compare(ap(b.Local)), ap(a.Remote).Compare(ap(b.Remote)))
	})
	st := tcpStatus{Conns: conns}
	if len(conns) > maxStatusConns {
		st.Conns, st.Omitted = conns[:maxStatusConns], len(conns)-maxStatusConns
	}
	return st
}

// flagPrefix parses an A.B.C.D/NN flag value.
func flagPrefix(name, v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("--%s %q: want an IPv4 address with its prefix length, such as 198.18.0.1/24", name, v)
	}
	return p, nil
}
