package shards

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/cpu"
)

// Config describes the shards to run: one per Queue.
type Config struct {
	Queues []Queue
	// NewPipeline builds shard i's pipeline; each shard gets its own stages.
	NewPipeline func(shard int) *pipelines.Pipeline
	// Owner names the shard owning a packet's flow; nil means no hand-off.
	Owner pipelines.OwnerFunc
	// BatchSize is the most packets one pass takes (default 64).
	BatchSize int
	// CPUs pins shard i to CPUs[i%len(CPUs)]; empty means no pinning.
	CPUs []int
	// SpinIdle is how long a shard spins without work before it sleeps in poll(2) (default 50µs).
	SpinIdle time.Duration
	// Debug records every frame's place and checks each move (slower; for tests).
	Debug bool
	// DrainWait bounds how long shutdown waits for transmissions to complete (default 500ms).
	DrainWait time.Duration
	Logf      func(format string, args ...any)
	// Ifaces describe the interfaces behind each queue's links, in link order, for stages
	// that need names or MAC addresses (the stack does).
	Ifaces []pipelines.Interface
	// BusyPoll makes each shard drive its links' NAPI itself (doc.go, "Busy polling"). The
	// zero value is off.
	BusyPoll BusyPoll
}

// BusyPoll configures the shards' busy-polling mode.
type BusyPoll struct {
	On bool
	// Idle is how long a shard whose links busy poll goes on polling without work before it
	// sleeps (default DefaultBusyPollIdle). It replaces SpinIdle while a link busy polls. To
	// never sleep, give it longer than the run.
	Idle time.Duration
	// Unavailable[i], when not empty, says why link i of every queue (links are in interface
	// order) cannot busy poll, for what the caller knows before the first packet: "no NAPI
	// id: veth". Such links are never polled and Snapshot reports them unavailable.
	Unavailable []string
}

// DefaultBusyPollIdle is BusyPoll.Idle's default: well above the gro_flush_timeout that
// docs/busy-poll.md advises (200 µs), so that traffic pausing for less than that keeps its
// interrupts deferred and its NAPI in the shard.
const DefaultBusyPollIdle = time.Millisecond

// Engine runs the shards.
type Engine struct {
	cfg    Config
	shards []*shard
	ctrs   []Counters
	mu     sync.RWMutex // guards kernel stats reads against closing links
	closed bool
	places []map[string]int
}

// New checks the configuration and prepares the shards; Run starts them.
func New(cfg Config) (*Engine, error) {
	if len(cfg.Queues) == 0 {
		return nil, errors.New("shards: no queues")
	}
	if cfg.NewPipeline == nil {
		return nil, errors.New("shards: no pipeline")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 64
	}
	if cfg.BatchSize > handoffRing/2 {
		return nil, fmt.Errorf("shards: batch size %d: at most %d", cfg.BatchSize, handoffRing/2)
	}
	if cfg.SpinIdle == 0 {
		cfg.SpinIdle = 50 * time.Microsecond
	}
	if cfg.DrainWait == 0 {
		cfg.DrainWait = 500 * time.Millisecond
	}
	if cfg.Logf == nil {
		cfg.Logf = log.Printf
	}
	if cfg.BusyPoll.Idle == 0 {
		cfg.BusyPoll.Idle = DefaultBusyPollIdle
	}
	n := len(cfg.Queues)
	e := &Engine{cfg: cfg, ctrs: make([]Counters, n)}
	for i, q := range cfg.Queues {
		if len(q.Links) == 0 || len(q.Links) > 255 {
			return nil, fmt.Errorf("shards: queue %d has %d links", q.ID, len(q.Links))
		}
		if q.FrameSize == 0 || q.FrameSize&(q.FrameSize-1) != 0 || len(q.Mem) != int(q.NumFrames)*int(q.FrameSize) {
			return nil, fmt.Errorf("shards: queue %d: UMEM of %d bytes does not hold %d frames of %d", q.ID, len(q.Mem), q.NumFrames, q.FrameSize)
		}
		s := &shard{
			id: i, cpu: -1, q: q, nShards: n, owner: cfg.Owner, c: &e.ctrs[i],
			frames: newFrames(q.NumFrames, q.FrameSize, cfg.Debug), spinIdle: cfg.SpinIdle,
			pipe: cfg.NewPipeline(i), logf: cfg.Logf,
		}
		if cfg.BusyPoll.On {
			if err := s.initBusyPoll(cfg.BusyPoll, cfg.Ifaces); err != nil {
				return nil, err
			}
		}
		if len(cfg.CPUs) > 0 {
			s.cpu = cfg.CPUs[i%len(cfg.CPUs)]
		}
		if err := s.init(cfg.BatchSize); err != nil {
			return nil, err
		}
		s.pipe.Start(pipelines.ShardInfo{Shard: i, Shards: n, Ifaces: cfg.Ifaces, Wake: s.kick,
			Frames: int(q.NumFrames), Lendable: s.lendable(cfg.BatchSize), Mem: q.Mem, FrameSize: q.FrameSize})
		s.originates = s.pipe.Originates() // known once Start has seen the stages
		e.shards = append(e.shards, s)
	}
	if cfg.BusyPoll.On {
		e.logBusyPoll()
	}
	for _, s := range e.shards {
		s.peers = e.shards
		s.out = make([]*handoff, n)
		s.in = make([]*handoff, n)
	}
	if cfg.Owner != nil && n > 1 {
		for _, src := range e.shards {
			for _, dst := range e.shards {
				if src != dst {
					h := newHandoff()
					src.out[dst.id] = h
					dst.in[src.id] = h
				}
			}
		}
	}
	return e, nil
}

// SetTap installs t on shard i's pipeline (nil removes it): capture and trace see its packets
// stage by stage from the shard's next pass. See pipelines.Tap.
func (e *Engine) SetTap(i int, t pipelines.Tap) { e.shards[i].pipe.SetTap(t) }

// StageNames names shard i's stages in order, the local stack last.
func (e *Engine) StageNames(i int) []string {
	p := e.shards[i].pipe
	names := make([]string, 0, len(p.Stages)+1)
	for j := 0; j <= len(p.Stages); j++ {
		names = append(names, p.StageName(j))
	}
	return names
}

// Shards is the number of shards.
func (e *Engine) Shards() int { return len(e.shards) }

// Run starts every shard and blocks until ctx is done, then stops them, drains, and returns
// any frame accounting error. Links are not closed: their owner closes them after Run.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(e.shards))
	running.add(e.shards)
	defer running.remove(e.shards)
	for _, s := range e.shards {
		s.refill()
		wg.Add(1)
		go func(s *shard) {
			defer wg.Done()
			if s.cpu >= 0 {
				unpin, err := cpu.Pin(s.cpu)
				if err != nil {
					errs[s.id] = fmt.Errorf("shard %d: %w", s.id, err)
					e.cfg.Logf("shard %d: not pinned: %v", s.id, err)
				} else {
					s.pinned = true
					defer unpin()
				}
			}
			s.run()
		}(s)
	}
	<-ctx.Done()
	for _, s := range e.shards {
		s.stop.Store(true)
		s.kick() // a shard about to sleep sees kicked; a sleeping one is woken
	}
	wg.Wait()
	for _, s := range e.shards {
		s.returnStash()
	}
	e.places = make([]map[string]int, len(e.shards))
	for _, s := range e.shards {
		if err := s.drain(e.cfg.DrainWait); err != nil {
			errs[s.id] = fmt.Errorf("shard %d: %w", s.id, err)
		}
		e.places[s.id] = s.frames.places()
	}
	return errors.Join(errs...)
}

// FramePlaces reports, after Run returned, how many frames each shard had in each place.
func (e *Engine) FramePlaces() []map[string]int { return e.places }

// Snapshot copies every shard's counters; safe while the shards run.
func (e *Engine) Snapshot() []Snapshot {
	out := make([]Snapshot, len(e.shards))
	e.mu.RLock()
	defer e.mu.RUnlock()
	for i, s := range e.shards {
		out[i] = e.ctrs[i].snapshot()
		out[i].Shard, out[i].Queue, out[i].CPU = i, s.q.ID, s.cpu
		out[i].Stages = s.pipe.Snapshot()
		if !e.closed {
			for _, l := range s.q.Links {
				st := l.Stats()
				out[i].Kernel = append(out[i].Kernel, KernelStats{st.RxDropped, st.RxRingFull, st.FillRingEmpty, st.TxInvalid, st.RxInvalid})
			}
		}
		for li := range s.busy {
			out[i].BusyPoll = append(out[i].BusyPoll, s.busy[li].report(ifaceName(e.cfg.Ifaces, li)))
		}
	}
	return out
}

// MarkClosed stops Snapshot from reading kernel stats of links about to be closed.
func (e *Engine) MarkClosed() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
}
