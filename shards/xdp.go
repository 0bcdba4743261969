package shards

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/cpu"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// Options describe a netchan instance on real interfaces: the public entry point for running a
// pipeline of your own (see examples/).
type Options struct {
	// Ifaces are the pipeline's interfaces; a stage's InIf/OutIf index this list.
	Ifaces []string
	// Queues are the queue indices to own, one shard each; nil means all queues.
	Queues   []int
	XDPMode  xdpprog.Mode
	BindMode afxdp.BindMode
	// Claims select what the XDP program redirects to netchan; the rest goes to the kernel.
	Claims      pipelines.Claims
	NewPipeline func(shard int) *pipelines.Pipeline
	Owner       pipelines.OwnerFunc
	BatchSize   int
	NumFrames   uint32 // per queue; default 4096
	FrameSize   uint32 // default 2048
	RingSize    uint32 // default 2048
	NoPin       bool   // do not pin shards to cores
	SpinIdle    time.Duration
	Debug       bool
	Logf        func(format string, args ...any)
	// CPUs pins shard i to CPUs[i%len(CPUs)] (unless NoPin); nil means the process's allowed
	// CPUs in order.
	CPUs []int
}

// Instance is a running set of shards with their sockets and XDP programs.
type Instance struct {
	Engine   *Engine
	Ifaces   []string
	Queues   []int
	Modes    []xdpprog.Mode // the XDP mode each interface got
	programs []*xdpprog.Program
	ports    []*afxdp.Port
	cancel   context.CancelFunc
	done     chan struct{}
	runErr   error
	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex // guards programs and ports against XDPStats during release
}

// ErrPermission is returned when the process lacks the privileges netchan needs.
var ErrPermission = afxdp.ErrPermission

// capsNeeded are CAP_NET_ADMIN (12), CAP_NET_RAW (13) and CAP_BPF (39).
var capsNeeded = map[int]string{12: "CAP_NET_ADMIN", 13: "CAP_NET_RAW", 39: "CAP_BPF"}

// checkPrivileges reads the effective capability set, so a missing privilege is reported
// before anything is half set up.
func checkPrivileges() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "CapEff:") {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapEff:")), 16, 64)
		if err != nil {
			return nil
		}
		var missing []string
		for bit, name := range capsNeeded {
			if eff&(1<<bit) == 0 {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("netchan needs %s: %w: run as root (sudo) or grant them with setcap/ambient capabilities", strings.Join(missing, ", "), ErrPermission)
		}
	}
	return nil
}

// Start loads and attaches an XDP program on every interface, opens one AF_XDP port per queue
// and starts the shards. Stop undoes all of it.
func Start(o Options) (_ *Instance, err error) {
	if o.Logf == nil {
		o.Logf = log.Printf
	}
	if len(o.Ifaces) == 0 {
		return nil, errors.New("no interfaces: give at least one --iface")
	}
	if o.NewPipeline == nil {
		return nil, errors.New("no pipeline")
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	nq := -1
	for _, name := range o.Ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return nil, fmt.Errorf("interface %q: %w: check the name with `ip link` (and the namespace you run in)", name, afxdp.ErrNoInterface)
		}
		n, err := afxdp.QueueCount(name)
		if err != nil {
			return nil, err
		}
		if nq < 0 || n < nq {
			nq = n
		}
	}
	queues := o.Queues
	if queues == nil {
		for q := 0; q < nq; q++ {
			queues = append(queues, q)
		}
	}
	for _, q := range queues {
		if q < 0 || q >= nq {
			return nil, fmt.Errorf("queue %d: the interfaces have %d queues (0..%d): %w: choose --queues within that range or add queues (ethtool -L IF rx N tx N)", q, nq, nq-1, afxdp.ErrQueueOutOfRange)
		}
	}
	in := &Instance{Ifaces: o.Ifaces, Queues: queues, done: make(chan struct{})}
	defer func() {
		if err != nil {
			in.release()
		}
	}()
	for _, name := range o.Ifaces {
		p, err := xdpprog.Load(xdpprog.Options{Logf: o.Logf})
		if err != nil {
			return nil, fmt.Errorf("loading the XDP program for %s: %w", name, err)
		}
		in.programs = append(in.programs, p)
		if err := applyClaims(p, o.Claims); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	// Attach before binding sockets, so a busy interface is reported as what it is (another
	// program attached). Until a queue's socket is registered, its claimed packets fall back to
	// the kernel.
	for i, name := range o.Ifaces {
		ifi, _ := net.InterfaceByName(name)
		mode, err := in.programs[i].Attach(ifi.Index, o.XDPMode)
		if err != nil {
			return nil, fmt.Errorf("attaching XDP to %s: %w", name, err)
		}
		in.Modes = append(in.Modes, mode)
	}
	var ifs []pipelines.Interface
	for _, name := range o.Ifaces {
		ifi, _ := net.InterfaceByName(name)
		var mac [6]byte
		copy(mac[:], ifi.HardwareAddr)
		ifs = append(ifs, pipelines.Interface{Name: name, Index: ifi.Index, MAC: mac, MTU: ifi.MTU})
	}
	var qs []Queue
	for _, q := range queues {
		port, err := afxdp.Open(afxdp.Config{Queue: q, Ifaces: o.Ifaces, NumFrames: o.NumFrames, FrameSize: o.FrameSize, RingSize: o.RingSize, BindMode: o.BindMode, Logf: o.Logf})
		if err != nil {
			return nil, err
		}
		in.ports = append(in.ports, port)
		queue := Queue{ID: q, Mem: port.Mem(), FrameSize: port.UMEM.FrameSize, NumFrames: port.UMEM.NumFrames}
		for i, l := range port.Links {
			if err := in.programs[i].RegisterSocket(q, l.FD()); err != nil {
				return nil, fmt.Errorf("%s queue %d: registering the socket: %w", l.Iface, q, err)
			}
			queue.Links = append(queue.Links, l)
		}
		qs = append(qs, queue)
	}
	cpus := o.CPUs
	if !o.NoPin && cpus == nil {
		if cpus, err = cpu.Allowed(); err != nil {
			return nil, err
		}
	}
	if o.NoPin {
		cpus = nil
	}
	in.Engine, err = New(Config{Queues: qs, NewPipeline: o.NewPipeline, Owner: o.Owner, BatchSize: o.BatchSize,
		CPUs: cpus, SpinIdle: o.SpinIdle, Debug: o.Debug, Logf: o.Logf, Ifaces: ifs})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() {
		in.runErr = in.Engine.Run(ctx)
		close(in.done)
	}()
	return in, nil
}

func applyClaims(p *xdpprog.Program, c pipelines.Claims) error {
	if c.Empty() {
		return errors.New("the pipeline claims nothing: every packet would go to the kernel")
	}
	if c.AllIPv4 {
		if err := p.ClaimAllIPv4(true); err != nil {
			return err
		}
	}
	for _, pfx := range c.Prefixes {
		if err := p.ClaimPrefix(pfx); err != nil {
			return err
		}
	}
	for _, proto := range c.Protocols {
		if err := p.ClaimProtocol(proto); err != nil {
			return err
		}
	}
	for _, r := range c.Ports {
		if err := p.ClaimPorts(r.Proto, r.Lo, r.Hi); err != nil {
			return err
		}
	}
	for _, a := range c.ARP {
		if err := p.ClaimARP(a); err != nil {
			return err
		}
	}
	return nil
}

// Done is closed when the shards have stopped.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Stop stops the shards (they drain what they can), detaches the XDP programs, closes the
// sockets and unmaps the UMEMs. It returns the shards' frame accounting errors, if any.
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
	if in.Engine != nil {
		in.Engine.markClosed()
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	var errs []error
	for _, p := range in.programs {
		errs = append(errs, p.Close())
	}
	in.programs = nil
	for _, p := range in.ports {
		errs = append(errs, p.Close())
	}
	in.ports = nil
	return errors.Join(errs...)
}

// Programs returns the XDP program of each interface, in Ifaces order (nil after Stop). A
// pipeline that installs fast flows (nat.EnableXDPFastPath) uses them; the Instance still
// owns and closes them.
func (in *Instance) Programs() []*xdpprog.Program {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*xdpprog.Program(nil), in.programs...)
}

// XDPStats sums the XDP programs' counters (packets passed to the kernel, claimed) per interface.
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

// Run starts an instance and stops it when ctx is done.
func Run(ctx context.Context, o Options) error {
	in, err := Start(o)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-in.Done():
	}
	return in.Stop()
}
