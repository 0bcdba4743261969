package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/pipelines/netchannel"
	"github.com/netchan/netchan/runtime/cpu"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/shards"
)

// Variants of the netchannel benchmark (RunNetchannel); xdp-drop (XDPDrop) is its floor.
const (
	// Netchannel is netchan.Start with a netchannel.Set's App and one channel for the bench
	// port (udp:ADDR:9) on an interface that keeps its kernel address; one reader goroutine
	// pinned to the receive core reads batches and releases them (rx), or turns each view
	// around in place and sends the batch back (reflect).
	Netchannel = "netchannel"
	// Epoll is a kernel UDP socket driven by epoll_wait + recvfrom (+ sendto), one datagram
	// per call, on one locked and pinned thread (kernelsock with Epoll).
	Epoll = "epoll"
	// Mmsg is the kernel variant under the netchannel benchmark's name: recvmmsg (+ sendmmsg)
	// batches.
	Mmsg = "mmsg"
)

// netchannelFrames is the UMEM the netchannel variant gets when Options.NumFrames is less: a
// channel's default lend cap (1024 frames) does not fit the default 4096 (see the
// netchannel package doc).
const netchannelFrames = 8192

// NetchannelCounts is the netchannel variant's receiver detail in a run's record.
type NetchannelCounts struct {
	Channel netchannel.Stats    `json:"channel"`
	Shards  []shards.Snapshot   `json:"shards"`
	Reads   uint64              `json:"reads"` // Read calls that returned packets
	Kernel  NetchannelKernelUDP `json:"kernel_udp"`
}

// NetchannelKernelUDP is what the root namespace's kernel UDP counted since the variant started:
// with the channel open, the kernel must see none of the bench port's datagrams (InDatagrams
// and NoPorts stay still; it would answer NoPorts with ICMP port unreachable).
type NetchannelKernelUDP struct {
	InDatagrams  uint64 `json:"in_datagrams"`
	NoPorts      uint64 `json:"no_ports"`
	OutDatagrams uint64 `json:"out_datagrams"`
}

type netchannelRcv struct {
	in      *netchan.Instance
	ch      *netchannel.Channel
	undo    []func() error
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	reads   atomic.Uint64
	udpBase sysstat.UDPStats
}

// startNetchannel gives the receiving interface its kernel address (as a real host has), starts
// netchan with a netchannel Set on it, opens one channel for the bench port and starts the
// reader.
func startNetchannel(s rxSetup) (_ receiver, err error) {
	o := s.opts
	r := &netchannelRcv{done: make(chan struct{})}
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	undo, err := kernelEndpoint(s.ep)
	r.undo = append(r.undo, undo...)
	if err != nil {
		return nil, err
	}
	if r.udpBase, err = sysstat.ReadUDPStats(); err != nil {
		return nil, err
	}
	frames := max(o.NumFrames, netchannelFrames)
	set := netchannel.New(netchannel.Config{Logf: s.logf})
	r.in, err = netchan.Start(netchan.Config{Interfaces: []string{s.ep.Iface}, Queues: s.queues, XDPMode: xdpprog.ModeNative,
		BatchSize: o.BatchSize, UMEM: netchan.UMEM{Frames: uint32(frames), RingSize: uint32(o.RingSize)},
		SpinIdle: o.SpinIdle, CPUs: []int{s.cpu}, Logf: s.logf}, set.App("bench-netchannel"))
	if err != nil {
		return nil, err
	}
	spec := fmt.Sprintf("udp:%s:%d", s.ep.Addr.Addr(), benchPort)
	if r.ch, err = set.Open(spec, netchannel.Options{Name: "bench"}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.read(ctx, s.cpu, o.BatchSize, s.kind == KindReflect)
	return r, nil
}

// read is the reader goroutine: Read a batch, then Release it, or swap every packet's
// addresses and ports in place and Send the batch back out.
func (r *netchannelRcv) read(ctx context.Context, core, batch int, echo bool) {
	defer close(r.done)
	unpin, err := cpu.Pin(core)
	if err != nil {
		r.err = err
		return
	}
	defer unpin()
	b := netchannel.NewBatch(batch)
	for {
		n, err := r.ch.Read(ctx, b)
		if err != nil {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, netchannel.ErrClosed) {
				r.err = err
			}
			return
		}
		r.reads.Add(1)
		if !echo {
			r.ch.Release(b)
			continue
		}
		for i := 0; i < n; i++ {
			swap(b.Bytes(i))
		}
		if err := r.ch.Send(b); err != nil {
			r.err = err
			return
		}
	}
}

func (r *netchannelRcv) counts() rcvCounts {
	var c rcvCounts
	d := NetchannelCounts{Shards: r.in.Snapshot()}
	if r.ch != nil {
		d.Channel = r.ch.Stats()
	}
	d.Reads = r.reads.Load()
	c.Rx = d.Channel.Received
	for _, s := range d.Shards {
		c.Tx += s.TxPackets
		// Drops on the way in: every shard drop but the transmit side's (echo's frames that
		// found the tx ring full were received, and counted, already).
		c.Drops += s.DropsTotal - s.Drops["tx-ring-full"] - s.Drops["no-interface"]
		for _, k := range s.Kernel {
			c.Drops += k.RxDropped + k.RxRingFull
		}
	}
	if u, err := sysstat.ReadUDPStats(); err == nil {
		d.Kernel = NetchannelKernelUDP{InDatagrams: u.InDatagrams - r.udpBase.InDatagrams,
			NoPorts: u.NoPorts - r.udpBase.NoPorts, OutDatagrams: u.OutDatagrams - r.udpBase.OutDatagrams}
	}
	c.Detail = d
	return c
}

func (r *netchannelRcv) stop() error {
	var errs []error
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
		errs = append(errs, r.err)
	}
	if r.ch != nil {
		errs = append(errs, r.ch.Close())
	}
	if r.in != nil {
		errs = append(errs, r.in.Stop())
		r.in = nil
	}
	for i := len(r.undo) - 1; i >= 0; i-- {
		errs = append(errs, r.undo[i]())
	}
	r.undo = nil
	return errors.Join(errs...)
}
