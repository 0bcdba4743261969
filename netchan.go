// Package netchan is the front door of netchan, a sharded packet-processing framework: one
// pinned goroutine per core owns one AF_XDP queue of every interface, runs a pipeline of
// stages over batches of packets, and hands the flows another core owns to that core.
//
// A program describes where to run in a Config (interfaces, queues, CPUs, UMEM, XDP mode) and
// what to run in an App (a pipeline per shard, the claims that select its packets, the owner
// function that names the shard owning a flow, an optional hook after attach), then calls
// Start, which attaches the XDP program, opens the AF_XDP sockets and starts the shards:
//
//	claims, _ := claim.ParseList([]string{"udp:9999"})
//	app := netchan.App{
//		Name:        "reflect-9999",
//		Claims:      claims, // what the XDP program takes from the kernel
//		NewPipeline: func(int) *pipelines.Pipeline { return &pipelines.Pipeline{Stages: []pipelines.Stage{basic.Reflect()}} },
//	}
//	in, err := netchan.Start(netchan.Config{Interfaces: []string{"eth1"}}, app)
//	...
//	defer in.Stop()
//
// Everything the App does not claim stays with the kernel. Stop detaches the programs, closes
// the sockets and unmaps the UMEMs; the programs are attached through bpf_link, so the kernel
// removes them also when the process dies.
//
// The stage API is package pipelines; bundled apps are in pipelines/basic (reflect, drop,
// count), pipelines/echo (the userspace stack's echo services), nat (NAT44); package
// pipelines/stagetest runs a stage without root. See the README for the layers.
package netchan

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/caps"
	"github.com/netchan/netchan/runtime/cpu"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/shards"
)

// App is what runs on the shards: see pipelines.App.
type App = pipelines.App

// Errors a caller can test with errors.Is; the wrapping error's message says what to do.
var (
	// ErrPermission: the process lacks a capability (caps.Needed: CAP_NET_ADMIN, CAP_NET_RAW,
	// CAP_BPF, CAP_PERFMON) or the kernel refused for lack of privilege.
	ErrPermission = caps.ErrPermission
	// ErrNoInterface: an interface of the Config does not exist in this namespace.
	ErrNoInterface = afxdp.ErrNoInterface
	// ErrQueueOutOfRange: a queue of the Config is past the interfaces' queue count.
	ErrQueueOutOfRange = afxdp.ErrQueueOutOfRange
	// ErrQueueBusy: another AF_XDP socket is bound to a queue of the Config.
	ErrQueueBusy = afxdp.ErrQueueBusy
	// ErrMemlock: the UMEM does not fit the locked-memory limit.
	ErrMemlock = afxdp.ErrMemlock
)

// Config says where an App runs. The zero value of every field but Interfaces is a working
// default.
type Config struct {
	// Interfaces are the App's interfaces; a stage's InIf/OutIf index this list.
	Interfaces []string
	// Queues are the queue indices to own, one shard each; nil means every queue the
	// interfaces have (the smallest count among them).
	Queues []int
	// CPUs pins shard i to CPUs[i%len(CPUs)]; nil means the process's allowed CPUs in order.
	CPUs []int
	// NoPin leaves the shards unpinned.
	NoPin bool
	// XDPMode chooses native or generic XDP; the zero value tries native, then generic.
	XDPMode xdpprog.Mode
	// BindMode chooses zero-copy or copy AF_XDP; the zero value tries zero-copy first.
	BindMode afxdp.BindMode
	// UMEM sizes each queue's shared packet memory.
	UMEM UMEM
	// BatchSize is the most packets one pass of a shard takes (default 64).
	BatchSize int
	// SpinIdle is how long an idle shard spins before it sleeps (default 50µs).
	SpinIdle time.Duration
	// BusyPoll makes the shards drive their queues' NAPI themselves (preferred busy polling,
	// docs/busy-poll.md); the zero value is off.
	BusyPoll BusyPoll
	// Debug tracks every frame's place and checks each move (slow; for tests).
	Debug bool
	// Logf receives the instance's few log lines (default log.Printf).
	Logf func(format string, args ...any)
}

// UMEM sizes one queue's packet memory; zero fields take the defaults.
type UMEM struct {
	Frames    uint32 // frames per queue (default 4096)
	FrameSize uint32 // bytes per frame, a power of two (default 2048)
	RingSize  uint32 // entries of each AF_XDP ring (default 2048)
}

// BusyPoll asks for preferred busy polling: every AF_XDP socket gets SO_BUSY_POLL,
// SO_PREFER_BUSY_POLL and SO_BUSY_POLL_BUDGET (which need CAP_NET_ADMIN at Start), and each
// shard runs a queue's NAPI poll itself, with a recvfrom on the socket, in every pass that finds
// the queue's rx ring empty, and polls on for Idle without work before it sleeps. It helps on a NIC in native XDP mode with
// napi_defer_hard_irqs and gro_flush_timeout set (docs/busy-poll.md); veth and generic XDP
// give the sockets no NAPI id, so there Start logs that busy polling is unavailable and the
// shards keep their usual loop. Snapshot reports each link's state (shards.BusyPollState)
// and the counters BusyPollCalls and BusyPollRxPackets.
type BusyPoll struct {
	On bool
	// Budget is the most packets one busy poll takes from the driver (default 64).
	Budget int
	// Idle is how long a shard polls without work before it sleeps (default 1ms); longer
	// than the run, it never sleeps and takes its core whole.
	Idle time.Duration
}

// busyPollUnavailable says why busy polling cannot work on an interface attached in mode,
// before any packet: "" when it may (the shards then learn the NAPI id from the first one).
func busyPollUnavailable(iface string, mode xdpprog.Mode) string {
	if mode == xdpprog.ModeGeneric {
		return "no NAPI id: generic XDP"
	}
	if drv, _ := afxdp.Driver(iface); drv == "veth" {
		return "no NAPI id: veth"
	}
	return ""
}

// Instance is a running App: its shards, sockets and XDP programs.
type Instance struct {
	app      App
	engine   *shards.Engine
	ifaces   []string
	queues   []int
	modes    []xdpprog.Mode
	programs []*xdpprog.Program
	follows  []func() // stop following each interface's kernel addresses
	ports    []*afxdp.Port
	cancel   context.CancelFunc
	done     chan struct{}
	runErr   error
	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex // guards programs and ports against readers during release
}

// Start checks privileges and the Config, loads and attaches an XDP program on every
// interface with the App's claims, opens one AF_XDP port per queue, runs the App's
// AfterAttach hook and starts the shards. On error nothing is left behind.
func Start(cfg Config, app App) (_ *Instance, err error) {
	if cfg.Logf == nil {
		cfg.Logf = log.Printf
	}
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("netchan: no interfaces: name at least one in Config.Interfaces")
	}
	if app.NewPipeline == nil {
		return nil, errors.New("netchan: the App has no NewPipeline")
	}
	if len(app.Claims) == 0 && !app.ClaimsLater {
		return nil, errors.New("netchan: the App claims nothing: every packet would go to the kernel (set App.ClaimsLater if it claims after Start, as netchannels do)")
	}
	if cfg.BusyPoll.On && (cfg.BusyPoll.Budget < 0 || cfg.BusyPoll.Budget > 65535 || cfg.BusyPoll.Idle < 0) {
		return nil, fmt.Errorf("netchan: busy polling with budget %d and idle %v: the budget must be 0..65535 (0: 64), the idle time not negative", cfg.BusyPoll.Budget, cfg.BusyPoll.Idle)
	}
	if err := caps.Check(); err != nil {
		return nil, err
	}
	nq := -1
	var ifis []*net.Interface
	for _, name := range cfg.Interfaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("interface %q: %w: check the name with `ip link` (and the namespace you run in)", name, ErrNoInterface)
		}
		ifis = append(ifis, ifi)
		n, err := afxdp.QueueCount(name)
		if err != nil {
			return nil, err
		}
		if nq < 0 || n < nq {
			nq = n
		}
	}
	queues := cfg.Queues
	if queues == nil {
		for q := 0; q < nq; q++ {
			queues = append(queues, q)
		}
	}
	for _, q := range queues {
		if q < 0 || q >= nq {
			return nil, fmt.Errorf("queue %d: the interfaces have %d queues (0..%d): %w: choose queues within that range or add queues to the device (ethtool -L IF rx N tx N)", q, nq, nq-1, ErrQueueOutOfRange)
		}
	}
	in := &Instance{app: app, ifaces: cfg.Interfaces, queues: queues, done: make(chan struct{})}
	defer func() {
		if err != nil {
			in.release()
		}
	}()
	for _, name := range cfg.Interfaces {
		p, err := xdpprog.Load(xdpprog.Options{Logf: cfg.Logf})
		if err != nil {
			return nil, fmt.Errorf("loading the XDP program for %s: %w", name, err)
		}
		in.programs = append(in.programs, p)
		for _, r := range app.Claims {
			if err := p.Claim(in.Owner(), r); err != nil {
				return nil, fmt.Errorf("%s: claim %s: %w", name, r, err)
			}
		}
	}
	// Attach before binding sockets, so a busy interface is reported as what it is (another
	// program attached). Until a queue's socket is registered, its claimed packets fall back to
	// the kernel.
	for i, name := range cfg.Interfaces {
		ifi := ifis[i]
		// The kernel's own addresses on the interface (and those it gets later) stay the
		// kernel's unless a claim names them: known before the program sees a packet.
		stop, err := xdpprog.FollowKernelAddrs(ifi.Index, in.programs[i], cfg.Logf)
		if err != nil {
			return nil, fmt.Errorf("following the kernel addresses of %s: %w", name, noInterface(err))
		}
		in.follows = append(in.follows, stop)
		mode, err := in.programs[i].Attach(ifi.Index, cfg.XDPMode)
		if err != nil {
			return nil, fmt.Errorf("attaching XDP to %s: %w", name, noInterface(err))
		}
		in.modes = append(in.modes, mode)
		kept := "the rest"
		if ka := in.programs[i].KernelAddrs(); len(ka) > 0 {
			kept = fmt.Sprintf("the rest, and traffic to its own addresses %v unless a claim names them", ka)
		}
		claims := claimList(app.Claims)
		if claims == "" {
			claims = "nothing yet (its claims come later)"
		}
		cfg.Logf("netchan: %s: %s claims %s; the kernel keeps %s", name, in.Owner(), claims, kept)
	}
	var ifs []pipelines.Interface
	for i, name := range cfg.Interfaces {
		ifi := ifis[i]
		var mac [6]byte
		copy(mac[:], ifi.HardwareAddr)
		ifs = append(ifs, pipelines.Interface{Name: name, Index: ifi.Index, MAC: mac, MTU: ifi.MTU})
	}
	var busy shards.BusyPoll
	sockBusy := afxdp.BusyPoll{}
	if cfg.BusyPoll.On {
		busy = shards.BusyPoll{On: true, Idle: cfg.BusyPoll.Idle, Unavailable: make([]string, len(cfg.Interfaces))}
		for i, name := range cfg.Interfaces {
			if why := busyPollUnavailable(name, in.modes[i]); why != "" {
				busy.Unavailable[i] = why
				cfg.Logf("netchan: %s: busy polling unavailable (%s): its shards keep their usual loop", name, why)
			} else {
				// One socket per interface and queue, all opened alike: options on all of
				// them once any interface can use them.
				sockBusy = afxdp.BusyPoll{On: true, Budget: cfg.BusyPoll.Budget}
			}
		}
	}
	var qs []shards.Queue
	for _, q := range queues {
		port, err := afxdp.Open(afxdp.Config{Queue: q, Ifaces: cfg.Interfaces, NumFrames: cfg.UMEM.Frames, FrameSize: cfg.UMEM.FrameSize,
			RingSize: cfg.UMEM.RingSize, BindMode: cfg.BindMode, BusyPoll: sockBusy, Logf: cfg.Logf})
		if err != nil {
			return nil, err
		}
		in.ports = append(in.ports, port)
		queue := shards.Queue{ID: q, Mem: port.Mem(), FrameSize: port.UMEM.FrameSize, NumFrames: port.UMEM.NumFrames, RingSize: port.RingSize}
		for i, l := range port.Links {
			if err := in.programs[i].RegisterSocket(q, l.FD()); err != nil {
				return nil, fmt.Errorf("%s queue %d: registering the socket: %w", l.Iface, q, err)
			}
			queue.Links = append(queue.Links, l)
		}
		qs = append(qs, queue)
	}
	cpus := cfg.CPUs
	if !cfg.NoPin && cpus == nil {
		if cpus, err = cpu.Allowed(); err != nil {
			return nil, err
		}
	}
	if cfg.NoPin {
		cpus = nil
	}
	if app.AfterAttach != nil {
		if err := app.AfterAttach(pipelines.Attached{Ifaces: in.ifaces, Programs: in.programs, Queues: in.queues}); err != nil {
			return nil, fmt.Errorf("%s: after attaching: %w", app.Name, err)
		}
	}
	in.engine, err = shards.New(shards.Config{Queues: qs, NewPipeline: app.NewPipeline, Owner: app.Owner, BatchSize: cfg.BatchSize,
		CPUs: cpus, SpinIdle: cfg.SpinIdle, Debug: cfg.Debug, Logf: cfg.Logf, Ifaces: ifs, BusyPoll: busy})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() {
		in.runErr = in.engine.Run(ctx)
		close(in.done)
	}()
	return in, nil
}

// noInterface makes the XDP program's missing-interface error the front door's too.
func noInterface(err error) error {
	if errors.Is(err, xdpprog.ErrNoInterface) && !errors.Is(err, ErrNoInterface) {
		return fmt.Errorf("%w: %w", ErrNoInterface, err)
	}
	return err
}

// Run starts app and stops it when ctx is done or the shards stop.
func Run(ctx context.Context, cfg Config, app App) error {
	in, err := Start(cfg, app)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-in.Done():
	}
	return in.Stop()
}

// Owner is the owner of the App's own claims (Claim, Unclaim): the App's name, or "app".
func (in *Instance) Owner() string {
	if in.app.Name == "" {
		return "app"
	}
	return in.app.Name
}

func claimList(rules []claim.Rule) string {
	var b strings.Builder
	for i, r := range rules {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// Claim makes owner hold rules on every interface of the instance, beside the App's own
// claims (owned by the App's name) and those of other owners: a packet is taken while any
// owner holds a rule that takes it, so one owner's Unclaim never removes another's. On error
// the rules this call added are released again.
func (in *Instance) Claim(owner string, rules ...claim.Rule) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	type held struct {
		p *xdpprog.Program
		r claim.Rule
	}
	if in.programs == nil {
		return errors.New("netchan: the instance has stopped")
	}
	var done []held
	for i, p := range in.programs {
		for _, r := range rules {
			if slices.ContainsFunc(p.Claims(), func(c xdpprog.OwnedClaim) bool { return c.Owner == owner && c.Rule == r }) {
				continue // already held: not this call's to undo
			}
			if err := p.Claim(owner, r); err != nil {
				for _, h := range done {
					h.p.Unclaim(owner, h.r)
				}
				return fmt.Errorf("%s: %w", in.ifaces[i], err)
			}
			done = append(done, held{p, r})
		}
	}
	return nil
}

// Unclaim drops owner's hold of rules on every interface; the packets stay claimed while
// another owner holds a rule that takes them.
func (in *Instance) Unclaim(owner string, rules ...claim.Rule) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.programs == nil {
		return errors.New("netchan: the instance has stopped")
	}
	var errs []error
	for i, p := range in.programs {
		for _, r := range rules {
			if err := p.Unclaim(owner, r); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", in.ifaces[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// InterfaceClaims are the claims of one interface with their owners, and the kernel addresses
// that only a claim naming them takes.
type InterfaceClaims struct {
	Interface   string               `json:"interface"`
	Claims      []xdpprog.OwnedClaim `json:"claims"`
	KernelAddrs []netip.Prefix       `json:"kernel_addresses"`
}

// Claims lists every interface's claims and kernel addresses (nil after Stop).
func (in *Instance) Claims() []InterfaceClaims {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []InterfaceClaims
	for i, p := range in.programs {
		out = append(out, InterfaceClaims{Interface: in.ifaces[i], Claims: p.Claims(), KernelAddrs: p.KernelAddrs()})
	}
	return out
}

// Done is closed when the shards have stopped.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Wait blocks until the shards have stopped (after Stop, or when they fail) and returns what
// Stop returns.
func (in *Instance) Wait() error {
	<-in.done
	return in.Stop()
}

// Stop stops the shards (they drain what they can), detaches the XDP programs, closes the
// sockets, unmaps the UMEMs and runs the App's Close. It returns the shards' frame accounting
// errors, if any. Calling it again returns the same result.
func (in *Instance) Stop() error {
	in.stopOnce.Do(func() {
		if in.cancel != nil {
			in.cancel()
			<-in.done
		}
		in.stopErr = errors.Join(in.runErr, in.release())
	})
	return in.stopErr
}

func (in *Instance) release() error {
	if in.engine != nil {
		in.engine.MarkClosed()
	}
	for _, stop := range in.follows {
		stop()
	}
	in.follows = nil
	in.mu.Lock()
	defer in.mu.Unlock()
	var errs []error
	for _, p := range in.programs {
		errs = append(errs, p.Close())
	}
	in.programs = nil
	keepMem := false
	if in.app.BeforeUnmap != nil {
		if err := in.app.BeforeUnmap(); err != nil {
			keepMem = true
			errs = append(errs, fmt.Errorf("%s: the UMEMs stay mapped (leaked) because frames are still lent: %w", in.app.Name, err))
		}
		in.app.BeforeUnmap = nil
	}
	for _, p := range in.ports {
		if keepMem {
			errs = append(errs, p.CloseSockets())
			continue
		}
		errs = append(errs, p.Close())
	}
	in.ports = nil
	if in.app.Close != nil {
		errs = append(errs, in.app.Close())
		in.app.Close = nil
	}
	return errors.Join(errs...)
}

// Name is the App's name.
func (in *Instance) Name() string { return in.app.Name }

// Interfaces are the instance's interfaces, in Config order.
func (in *Instance) Interfaces() []string { return in.ifaces }

// Queues are the queue indices the shards own, shard i owning Queues()[i].
func (in *Instance) Queues() []int { return in.queues }

// Modes are the XDP modes each interface got, in Interfaces order.
func (in *Instance) Modes() []xdpprog.Mode { return in.modes }

// Shards is the number of shards.
func (in *Instance) Shards() int { return in.engine.Shards() }

// SetTap installs t on shard i's pipeline (nil removes it); see pipelines.Tap.
func (in *Instance) SetTap(shard int, t pipelines.Tap) { in.engine.SetTap(shard, t) }

// StageNames names shard i's stages in order, the local stack last.
func (in *Instance) StageNames(shard int) []string { return in.engine.StageNames(shard) }

// Snapshot copies every shard's counters (packets, bytes, drops by reason, hand-offs, the
// kernel's AF_XDP statistics); safe while the shards run.
func (in *Instance) Snapshot() []shards.Snapshot { return in.engine.Snapshot() }

// FramePlaces reports, after Stop, how many frames each shard had in each place; every frame
// is in the free list or the fill ring when nothing leaked.
func (in *Instance) FramePlaces() []map[string]int { return in.engine.FramePlaces() }

// Programs returns the XDP program of each interface, in Interfaces order (nil after Stop).
// The Instance owns and closes them.
func (in *Instance) Programs() []*xdpprog.Program {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*xdpprog.Program(nil), in.programs...)
}

// XDPStats sums the XDP programs' counters (packets passed to the kernel, claimed) per
// interface.
func (in *Instance) XDPStats() []xdpprog.Stats {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []xdpprog.Stats
	for _, p := range in.programs {
		st, _ := p.Stats()
		out = append(out, st)
	}
	return out
}
