package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/memport"
	"github.com/netchan/netchan/shards"
	"github.com/netchan/netchan/stack"
)

var (
	ipA  = netip.MustParseAddr("198.18.0.1")
	ipB  = netip.MustParseAddr("198.18.0.2")
	macA = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
)

// NetchanOptions size the netchan side.
type NetchanOptions struct {
	TCP       stack.TCPConfig // zero: the stack's defaults (256 KiB buffers)
	NumFrames uint32          // per host's UMEM (default 4096, as netchan.UMEM)
	RingSize  uint32          // default 2048, as netchan.UMEM
	// Memport runs the shards over runtime/memport instead of the wire's own rings: memport's
	// Receive reads its eventfd (a system call) on every pass that finds nothing, which an
	// AF_XDP socket does not, and its kernel side is serialised by a mutex per link, so the
	// pump copies each frame twice.
	Memport bool
	// SpinIdle is the shards' Config.SpinIdle (0: the engine's default, 50 µs; negative:
	// sleep in poll(2) as soon as a pass finds nothing).
	SpinIdle time.Duration
	// Inline delivers frames in the sending shard's Transmit instead of a pump goroutine
	// (see wireLink).
	Inline bool
	// YieldBeforeSleep: see wireLink (an experiment, not netchan as shipped).
	YieldBeforeSleep bool
}

// netchanPair is two netchan instances, each one shard (shards.Engine, the production loop)
// running the stack over an in-memory AF_XDP socket (wireLink, or runtime/memport), joined by
// two pump goroutines, one per direction, that move frames from one socket's tx ring to the
// other's rx ring.
type netchanPair struct {
	hosts   [2]*stack.Host
	ports   [2]*memport.Port
	links   [2]*wireLink
	engines [2]*shards.Engine
	cancel  context.CancelFunc
	runs    sync.WaitGroup
	runErr  [2]error
	pumps   sync.WaitGroup
	stop    chan struct{}
	dirs    [2]*dirStats
}

// kickLink is a memport link whose Transmit wakes the wire's pump, as sendto(2) kicks the
// kernel on an AF_XDP socket.
type kickLink struct {
	*memport.Link
	kick chan struct{}
}

func (l kickLink) Transmit(d []afxdp.Desc) int {
	n := l.Link.Transmit(d)
	if n > 0 {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return n
}

func newNetchanPair(lossP float64, seed uint64, o NetchanOptions) (*netchanPair, error) {
	if o.NumFrames == 0 {
		o.NumFrames = 4096
	}
	if o.RingSize == 0 {
		o.RingSize = 2048
	}
	p := &netchanPair{stop: make(chan struct{})}
	ips := [2]netip.Addr{ipA, ipB}
	macs := [2][6]byte{macA, macB}
	kicks := [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	for i := range 2 {
		h, err := stack.NewHost(stack.Config{
			Ifaces:    []stack.Iface{{Addrs: []netip.Prefix{netip.PrefixFrom(ips[i], 24)}, MTU: 1500}},
			StaticARP: []stack.StaticNeighbor{{IP: ips[1-i], MAC: macs[1-i]}},
			TCP:       o.TCP,
		})
		if err != nil {
			return nil, err
		}
		q := shards.Queue{ID: 0, FrameSize: 2048, NumFrames: o.NumFrames}
		if o.Memport {
			port := memport.New(1, o.NumFrames, 2048, o.RingSize)
			q.Mem, q.Links = port.Mem, []shards.Link{kickLink{port.Links[0], kicks[i]}}
			p.ports[i] = port
		} else {
			q.Mem = make([]byte, int(o.NumFrames)*2048)
			l := newWireLink(q.Mem, 2048, o.NumFrames, o.RingSize)
			l.yieldBeforeSleep = o.YieldBeforeSleep
			q.Links = []shards.Link{l}
			p.links[i] = l
		}
		e, err := shards.New(shards.Config{
			Queues: []shards.Queue{q},
			NewPipeline: func(shard int) *pipelines.Pipeline {
				return &pipelines.Pipeline{Stages: []pipelines.Stage{h.NewStack(shard)}}
			},
			Owner:    h.Owner,
			Ifaces:   []pipelines.Interface{{Name: fmt.Sprintf("wire%c", 'a'+i), MAC: macs[i], MTU: 1500}},
			Logf:     func(string, ...any) {},
			SpinIdle: o.SpinIdle,
		})
		if err != nil {
			p.release()
			return nil, err
		}
		p.hosts[i], p.engines[i] = h, e
	}
	for dir := range 2 {
		p.dirs[dir] = &dirStats{}
		p.pumps.Add(1)
		if o.Memport {
			go p.pump(p.ports[dir].Links[0], p.ports[1-dir].Links[0], kicks[dir], newLoss(lossP, seed, dir), p.dirs[dir], o.RingSize)
		} else if o.Inline {
			p.pumps.Done()
			p.links[dir].inline = newWirePump(p.links[dir], p.links[1-dir], newLoss(lossP, seed, dir), p.dirs[dir], 256)
		} else {
			wp := newWirePump(p.links[dir], p.links[1-dir], newLoss(lossP, seed, dir), p.dirs[dir], 256)
			go func() {
				defer p.pumps.Done()
				wp.run(p.stop)
			}()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for i, e := range p.engines {
		p.runs.Add(1)
		go func() {
			defer p.runs.Done()
			p.runErr[i] = e.Run(ctx)
		}()
	}
	return p, nil
}

// pump moves frames from src's tx ring to dst's rx ring until stop, losing some on purpose;
// it sleeps on src's kick when src has nothing to send. Frames are copied out of src (under
// src's lock) and then into dst (under dst's): taking both locks at once would deadlock with
// the pump of the other direction. A frame dst cannot take (its rx ring full or no frame in
// its fill ring) waits here and is offered again, so the wire loses only what the seeded
// stream says; such waits are counted as overflow.
func (p *netchanPair) pump(src, dst *memport.Link, kick chan struct{}, ls *loss, st *dirStats, ring uint32) {
	defer p.pumps.Done()
	const frameSize = 2048
	slab := make([]byte, int(ring)*frameSize)
	lens := make([]int, ring)
	var frames, lost, overflow uint64
	n := 0
	take := func(d []byte) {
		frames++
		if ls.drop() {
			lost++
			return
		}
		lens[n] = copy(slab[n*frameSize:(n+1)*frameSize], d)
		n++
	}
	for {
		if n == 0 {
			if src.Drain(take) == 0 {
				st.frames.Store(frames)
				st.lost.Store(lost)
				st.overflow.Store(overflow)
				select {
				case <-kick:
				case <-p.stop:
					return
				}
				continue
			}
		}
		i := 0
		for ; i < n; i++ {
			if !dst.Inject(slab[i*frameSize : i*frameSize+lens[i]]) {
				break
			}
		}
		if i < n {
			overflow++
			copy(slab, slab[i*frameSize:n*frameSize])
			copy(lens, lens[i:n])
			n -= i
			select {
			case <-p.stop:
				return
			case <-time.After(20 * time.Microsecond):
			}
			continue
		}
		n = 0
	}
}

func (p *netchanPair) Listen(port uint16) (net.Listener, error) {
	return p.hosts[1].ListenTCP(netip.AddrPortFrom(ipB, port), 0)
}

func (p *netchanPair) Dial(ctx context.Context, port uint16) (net.Conn, error) {
	return p.hosts[0].DialTCP(ctx, netip.AddrPortFrom(ipB, port))
}

func (p *netchanPair) Wire() WireStats { return sumWire(p.dirs[:]) }

func (p *netchanPair) Close() error {
	p.cancel()
	p.runs.Wait()
	close(p.stop)
	p.pumps.Wait()
	p.release()
	return errors.Join(p.runErr[0], p.runErr[1])
}

func (p *netchanPair) release() {
	for _, port := range p.ports {
		if port != nil {
			port.Close()
		}
	}
	for _, l := range p.links {
		if l != nil {
			l.close()
		}
	}
}

func (p *netchanPair) TCPStats() map[string]uint64 {
	out := map[string]uint64{}
	for _, h := range p.hosts {
		t := h.Stats().TCP
		for k, v := range map[string]uint64{"segments_out": t.SegmentsOut, "retransmits": t.Retransmits,
			"fast_retransmits": t.FastRetransmits, "lost_retransmits": t.LostRetransmits, "tail_loss_probes": t.TailLossProbes,
			"timeouts": t.Timeouts, "spurious_rtos": t.SpuriousRTOs, "spurious_tlps": t.SpuriousTLPs, "out_of_order_segments": t.OOOSegments,
			"duplicate_segments": t.DupSegments, "paws_rejected": t.PAWSRejected} {
			out[k] += v
		}
	}
	return out
}
