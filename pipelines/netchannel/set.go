package netchannel

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/hostnet"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// Config sets a Set's limits; zero fields take the defaults.
type Config struct {
	// MaxChannels is how many channels may be open at once (default 1024).
	MaxChannels int
	// QueueLimit is a channel's default queue per shard, in packets (default 256): what
	// arrives while that many wait for the reader is the channel's loss (queue-full).
	QueueLimit int
	// LendCap is a channel's default cap of frames lent per shard (default 512): queued,
	// held by the reader, stocked for Alloc or on their way back. At the cap, arrivals are the
	// channel's loss (lend-cap). The caps of all open channels must fit what each shard can
	// lend (pipelines.ShardInfo.Lendable): Open refuses a channel that does not fit.
	LendCap int
	// CloseTimeout bounds how long Close (and the instance's Stop) waits for the reader to
	// give its frames back (default 5s).
	CloseTimeout time.Duration
	// Debug tracks every frame the reader holds (a double release panics where it happens)
	// and overwrites released frames, so a reader that kept their bytes sees garbage.
	Debug bool
	Logf  func(format string, args ...any)
}

// Options are one channel's; zero fields take the Set's defaults.
type Options struct {
	// Name names the channel in status and errors (default: its spec).
	Name string
	// QueueLimit and LendCap override the Set's for this channel.
	QueueLimit, LendCap int
	// SendShard is the shard whose frames Alloc hands out (default 0).
	SendShard int
	// AllowKernelSocket opens the channel even where the kernel has a socket on its local
	// port (the channel then takes that socket's packets of the flows it names).
	AllowKernelSocket bool
}

// Set is the netchannels of one instance: one stage per shard, the flow tree each of them
// looks packets up in, and the channels open on them. See the package doc.
type Set struct {
	cfg       Config
	mu        sync.Mutex // guards stages, programs, channels, handles, capUsed
	stages    []*stage
	programs  []*xdpprog.Program
	channels  map[*Channel]struct{}
	handles   []bool // handle h in use
	capUsed   []int  // per shard: the lend caps of open channels
	nextID    int
	stopped   atomic.Bool
	stoppedCh chan struct{}
}

// New makes an empty Set. Start an instance with its App (or Wrap your own), then Open
// channels on it.
func New(cfg Config) *Set {
	if cfg.MaxChannels <= 0 {
		cfg.MaxChannels = 1024
	}
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = 256
	}
	if cfg.LendCap <= 0 {
		cfg.LendCap = 512
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 5 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = log.Printf
	}
	return &Set{cfg: cfg, channels: map[*Channel]struct{}{}, handles: make([]bool, cfg.MaxChannels), stoppedCh: make(chan struct{})}
}

// Stage returns the Set's stage for shard i (made on first use): put it first in shard i's
// pipeline. Packets of no channel pass it undecided.
func (s *Set) Stage(i int) pipelines.Stage {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.stages) <= i {
		s.stages = append(s.stages, newStage(s, len(s.stages)))
		s.capUsed = append(s.capUsed, 0)
	}
	return s.stages[i]
}

// App is an App that carries only netchannels: it claims nothing until a channel opens, and
// drops what no channel takes (a claim of another owner may bring such packets).
func (s *Set) App(name string) pipelines.App {
	return s.Wrap(pipelines.App{Name: name, ClaimsLater: true,
		NewPipeline: func(int) *pipelines.Pipeline { return &pipelines.Pipeline{} }})
}

// Wrap returns app with the Set's stage first in every shard's pipeline and the Set's hooks
// chained to app's: a pipeline can serve netchannels beside its own stages.
func (s *Set) Wrap(app pipelines.App) pipelines.App {
	inner, after, before := app.NewPipeline, app.AfterAttach, app.BeforeUnmap
	app.NewPipeline = func(i int) *pipelines.Pipeline {
		p := inner(i)
		p.Stages = append([]pipelines.Stage{s.Stage(i)}, p.Stages...)
		return p
	}
	app.AfterAttach = func(a pipelines.Attached) error {
		s.Attach(a)
		if after != nil {
			return after(a)
		}
		return nil
	}
	app.BeforeUnmap = func() error {
		err := s.Shutdown()
		if before != nil {
			err = errors.Join(err, before())
		}
		return err
	}
	app.ClaimsLater = true
	return app
}

// Attach gives the Set the instance's XDP programs, which channels claim their flows on; an
// App's AfterAttach calls it (Wrap and App do). A Set never attached (shards on in-memory
// ports) claims nothing and does not look at the host's sockets.
func (s *Set) Attach(a pipelines.Attached) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.programs = a.Programs
}

// Shutdown runs once the shards have stopped: it closes every open channel and waits (up to
// CloseTimeout) until readers hold no frames, so that the UMEM can be unmapped. Its error says
// that some are still held (the front door then leaves the UMEM mapped).
func (s *Set) Shutdown() error {
	if s.stopped.Swap(true) {
		return nil
	}
	close(s.stoppedCh)
	s.mu.Lock()
	open := make([]*Channel, 0, len(s.channels))
	for c := range s.channels {
		open = append(open, c)
	}
	s.mu.Unlock()
	var errs []error
	for _, c := range open {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Fragments counts non-first IPv4 fragments the stages saw: they carry no ports, so they never
// reach a channel (see the package doc).
func (s *Set) Fragments() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for _, st := range s.stages {
		n += st.fragments.Load()
	}
	return n
}

// Channels reads every open channel's figures.
func (s *Set) Channels() []Stats {
	s.mu.Lock()
	open := make([]*Channel, 0, len(s.channels))
	for c := range s.channels {
		open = append(open, c)
	}
	s.mu.Unlock()
	slices.SortFunc(open, func(a, b *Channel) int { return a.id - b.id })
	out := make([]Stats, len(open))
	for i, c := range open {
		out[i] = c.Stats()
	}
	return out
}

// SpecOf turns a flow spec or a one-port claim into the flow tree's Spec.
func SpecOf(r claim.Rule) (flowtree.Spec, error) {
	if err := r.Validate(); err != nil {
		return flowtree.Spec{}, err
	}
	switch r.Kind() {
	case claim.KindFlow:
		lp, lok := r.LocalPort()
		rp, rok := r.RemotePort()
		return flowtree.Spec{Proto: r.Proto(), Local: r.Local(), LocalPort: lp, AnyLocalPort: !lok,
			Remote: r.Remote(), RemotePort: rp, AnyRemotePort: !rok}, nil
	case claim.KindPorts:
		if lo, hi := r.Ports(); lo == hi {
			return flowtree.Spec{Proto: r.Proto(), Local: r.Local(), LocalPort: lo, AnyRemotePort: true}, nil
		}
	}
	return flowtree.Spec{}, fmt.Errorf("netchannel: %v is not a flow spec: a netchannel takes udp: or tcp: with one local port or *, optionally <-REMOTE[:PORT] (like udp:198.18.0.1:9999 or tcp:198.18.0.1:80<-203.0.113.0/24:*)", r)
}

// Open opens a channel for the flows of spec (a flow spec in the claim grammar, such as
// udp:198.18.0.1:9999 or tcp:198.18.0.1:80<-203.0.113.0/24:*): once it returns, every shard
// delivers them to the channel and the XDP program takes them from the kernel. On an attached
// Set it refuses a spec whose local port has a kernel socket (unless AllowKernelSocket) and
// reserves that port so the kernel does not give it to its own connections.
func (s *Set) Open(spec string, opts Options) (*Channel, error) {
	r, err := claim.Parse(spec)
	if err != nil {
		return nil, err
	}
	return s.OpenRule(r, opts)
}

// OpenRule is Open for a parsed rule.
func (s *Set) OpenRule(r claim.Rule, opts Options) (_ *Channel, err error) {
	fs, err := SpecOf(r)
	if err != nil {
		return nil, err
	}
	if s.stopped.Load() {
		return nil, errors.New("netchannel: the instance has stopped")
	}
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = s.cfg.QueueLimit
	}
	if opts.LendCap <= 0 {
		opts.LendCap = s.cfg.LendCap
	}
	if opts.Name == "" {
		opts.Name = r.String()
	}
	s.mu.Lock()
	stages := s.stages
	programs := s.programs
	s.mu.Unlock()
	if len(stages) == 0 {
		return nil, errors.New("netchannel: the Set has no shards yet: start an instance with Set.App or Set.Wrap first")
	}
	for _, st := range stages {
		<-st.started
	}
	if opts.SendShard < 0 || opts.SendShard >= len(stages) {
		return nil, fmt.Errorf("netchannel: send shard %d: there are %d shards", opts.SendShard, len(stages))
	}

	if len(programs) > 0 {
		if err := s.checkKernel(fs, opts); err != nil {
			return nil, err
		}
	}
	c := &Channel{set: s, name: opts.Name, rule: r, spec: fs, lendCap: opts.LendCap, queue: opts.QueueLimit,
		allocLane: opts.SendShard, wakeCh: make(chan struct{}, 1), closeCh: make(chan struct{}), allDone: make(chan struct{})}
	if s.cfg.Debug {
		c.debugHeld = map[uint64]struct{}{}
	}
	// Room in every shard's UMEM, and a handle.
	s.mu.Lock()
	for i, st := range stages {
		if s.capUsed[i]+opts.LendCap > st.info.Lendable {
			s.mu.Unlock()
			return nil, fmt.Errorf("netchannel: %s: a lend cap of %d frames does not fit shard %d: its UMEM of %d frames can lend %d beyond its fill ring, tx ring, batch and hand-off spares, and open channels hold %d: lower Options.LendCap or raise the UMEM's frames (netchan.Config.UMEM.Frames)",
				opts.Name, opts.LendCap, i, st.info.Frames, st.info.Lendable, s.capUsed[i])
		}
	}
	h := slices.Index(s.handles, false)
	if h < 0 {
		s.mu.Unlock()
		return nil, fmt.Errorf("netchannel: %d channels are open, the Set's MaxChannels: close one or raise it", len(s.handles))
	}
	s.handles[h] = true
	for i := range stages {
		s.capUsed[i] += opts.LendCap
	}
	s.nextID++
	c.id, c.h = s.nextID, flowtree.Handle(h)
	s.mu.Unlock()
	c.owner = fmt.Sprintf("netchannel:%s#%d", opts.Name, c.id)
	defer func() {
		if err != nil {
			s.giveUp(c)
		}
	}()

	if len(programs) > 0 {
		if !fs.AnyLocalPort {
			if c.unreserve, err = hostnet.ReservePorts(fs.LocalPort); err != nil {
				return nil, fmt.Errorf("netchannel: %s: %w", opts.Name, err)
			}
		}
	}

	for _, st := range stages {
		ln := newLane(c, st.shard, opts.QueueLimit, opts.LendCap)
		ln.wake, ln.mem, ln.fmask = st.info.Wake, st.info.Mem, uint64(st.info.FrameSize-1)
		if ln.wake == nil {
			ln.wake = func() {}
		}
		c.lanes = append(c.lanes, ln)
	}
	dones := make([]chan error, len(stages))
	for i, st := range stages {
		dones[i] = make(chan error, 1)
		st.do(op{insert: true, spec: fs, h: c.h, ln: c.lanes[i], done: dones[i]})
	}
	var inserted []*stage
	for i, d := range dones {
		var e error
		select {
		case e = <-d:
		case <-s.stoppedCh:
			e = errors.New("the instance stopped")
		}
		if e != nil {
			err = errors.Join(err, e)
			continue
		}
		inserted = append(inserted, stages[i])
	}
	if err != nil {
		for _, st := range inserted {
			st.do(op{spec: fs, h: c.h, done: make(chan error, 1)})
		}
		if errors.Is(err, flowtree.ErrExists) {
			return nil, fmt.Errorf("netchannel: %s: a channel for exactly these flows is open already: %w", opts.Name, err)
		}
		return nil, fmt.Errorf("netchannel: %s: %w", opts.Name, err)
	}
	for i, p := range programs {
		if err := p.Claim(c.owner, r); err != nil {
			for _, q := range programs[:i] {
				q.Unclaim(c.owner, r)
			}
			for _, st := range stages {
				st.do(op{spec: fs, h: c.h, done: make(chan error, 1)})
			}
			return nil, fmt.Errorf("netchannel: %s: claiming its flows in the XDP program: %w", opts.Name, err)
		}
	}
	s.mu.Lock()
	s.channels[c] = struct{}{}
	s.mu.Unlock()
	return c, nil
}

// NextHopMAC returns the MAC address a packet of the reader's own to dst must carry: the next
// hop's (dst itself on a connected network, else the gateway's) from the kernel's neighbour
// table, asking the kernel to resolve it (it sends the ARP) when it has no entry. ctx bounds
// the wait. A reader that starts flows (Alloc, Send) uses it for the Ethernet header.
func (s *Set) NextHopMAC(ctx context.Context, dst netip.Addr) (net.HardwareAddr, error) {
	ifindex, gw, err := hostnet.NextHop(dst)
	if err != nil {
		return nil, fmt.Errorf("netchannel: next hop to %v: %w", dst, err)
	}
	return hostnet.NeighborMAC(ctx, ifindex, gw)
}

// checkKernel refuses a spec on a local port where the kernel has a socket.
func (s *Set) checkKernel(fs flowtree.Spec, opts Options) error {
	if fs.AnyLocalPort || opts.AllowKernelSocket {
		return nil
	}
	socks, err := hostnet.KernelSockets(fs.Proto, fs.Local, fs.LocalPort, false)
	if err != nil {
		return fmt.Errorf("netchannel: %s: looking for kernel sockets on its port: %w", opts.Name, err)
	}
	if len(socks) > 0 {
		return fmt.Errorf("netchannel: %s: the kernel has a socket on this port (%v): its packets would be taken from it; close that socket, pick another port, or set Options.AllowKernelSocket", opts.Name, socks[0])
	}
	return nil
}

// giveUp undoes an Open that failed after taking a handle.
func (s *Set) giveUp(c *Channel) {
	if c.unreserve != nil {
		c.unreserve()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handles[c.h] = false
	for i := range s.capUsed {
		s.capUsed[i] -= c.lendCap
	}
}

// unclaim drops a channel's XDP claims.
func (s *Set) unclaim(c *Channel) error {
	s.mu.Lock()
	programs := s.programs
	s.mu.Unlock()
	var errs []error
	for _, p := range programs {
		if err := p.ReleaseOwner(c.owner); err != nil && !errors.Is(err, xdpprog.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// forget removes a closed channel; its handle is free again once every shard dropped its lane.
func (s *Set) forget(c *Channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.channels[c]; !ok {
		return
	}
	delete(s.channels, c)
	select {
	case <-c.allDone:
		s.handles[c.h] = false
	default:
		// A shard still holds the lane (frames lent): keep the handle, so a new channel
		// cannot get it while the old lane sits in a shard's table.
	}
	for i := range s.capUsed {
		s.capUsed[i] -= c.lendCap
	}
}
