// Package asavie drives github.com/asavie/xdp, an independent AF_XDP library, for the benchmark
// only: the second driver that netchan's own port is measured against.
//
// asavie supplies the socket, its UMEM and its four rings; everything around them is netchan's,
// so that the comparison measures the ring code and not the surroundings:
//   - the XDP program is netchan's (xdpprog, claiming all IPv4), attached through a bpf_link, and
//     asavie's socket is registered into its XSKMAP. asavie's own program is attached by netlink,
//     outlives a crashed process and its Detach hangs in generic mode on veth (LAB-NOTES);
//   - frame count, frame size, ring sizes and batch size are the caller's (the benchmark passes
//     netchan's: 4096 frames of 2048 bytes, 2048-entry rings, batches of 64), not asavie's
//     defaults (128 frames, 64-entry rings);
//   - the loop has the shard's shape: spin while work arrives (runtime.Gosched on empty passes),
//     sleep in poll(2) after SpinIdle without work; the packets of a batch run through the same
//     pipelines.Pipeline as in a shard (reflect or drop).
//
// What is asavie's and measured as such: Fill/GetDescs (a linear scan of a []bool for free
// frames), Receive, Transmit (one sendto kick per call; copy mode sends at most 32 frames per
// kick, so while its tx ring holds frames the loop calls Transmit again on the next pass),
// Complete, and plain loads and stores on the ring indices. asavie binds with its default flags
// (no XDP_USE_NEED_WAKEUP; veth falls back to copy mode).
package asavie

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asavie/xdp"
	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/cpu"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// Options configure the driver; zero values take netchan's port defaults.
type Options struct {
	NumFrames int           // default 4096
	FrameSize int           // default 2048
	RingSize  int           // every ring; default 2048
	BatchSize int           // default 64
	SpinIdle  time.Duration // default 50µs, as a shard
	// CPU pins the loop's thread (-1: no pinning).
	CPU int
	// NewPipeline builds the pipeline for the socket of queue index i; nil drops everything.
	NewPipeline func(i int) *pipelines.Pipeline
	Mode        xdpprog.Mode // default native
	Logf        func(string, ...any)
}

func (o *Options) defaults() {
	if o.NumFrames == 0 {
		o.NumFrames = 4096
	}
	if o.FrameSize == 0 {
		o.FrameSize = 2048
	}
	if o.RingSize == 0 {
		o.RingSize = 2048
	}
	if o.BatchSize == 0 {
		o.BatchSize = 64
	}
	if o.SpinIdle == 0 {
		o.SpinIdle = 50 * time.Microsecond
	}
	if o.Mode == xdpprog.ModeAuto {
		o.Mode = xdpprog.ModeNative
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// Counts are the driver's figures.
type Counts struct {
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	// Dropped are packets the pipeline dropped (all of them for rx-drop).
	Dropped uint64 `json:"dropped"`
	// TxRingFull are packets to transmit that asavie's Transmit did not take (tx ring full).
	TxRingFull uint64 `json:"tx_ring_full"`
	Kicks      uint64 `json:"kicks"`
	Sleeps     uint64 `json:"sleeps"`
	// Kernel: the sockets' XDP_STATISTICS, summed.
	KernelRxDropped     uint64 `json:"kernel_rx_dropped"`
	KernelRxRingFull    uint64 `json:"kernel_rx_ring_full"`
	KernelFillRingEmpty uint64 `json:"kernel_fill_ring_empty"`
}

// Driver is asavie sockets on some queues of one interface, served by one loop.
type Driver struct {
	opts  Options
	prog  *xdpprog.Program
	socks []*sock
	stop  atomic.Bool
	done  chan struct{}
	err   error

	rx, tx, dropped, txFull, kicks, sleeps atomic.Uint64
}

type sock struct {
	x     *xdp.Socket
	pipe  *pipelines.Pipeline
	batch *pipelines.Batch
	out   []xdp.Desc
}

// Start loads and attaches netchan's XDP program (claiming all IPv4) on iface, opens one asavie
// socket per queue, registers them, and starts the loop.
func Start(iface string, queues []int, o Options) (_ *Driver, err error) {
	o.defaults()
	if len(queues) == 0 {
		return nil, errors.New("asavie: no queues")
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("asavie: interface %q: %w", iface, err)
	}
	d := &Driver{opts: o, done: make(chan struct{})}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.prog, err = xdpprog.Load(xdpprog.Options{Logf: o.Logf}); err != nil {
		return nil, err
	}
	if err := d.prog.ClaimAllIPv4(true); err != nil {
		return nil, err
	}
	if _, err := d.prog.Attach(ifi.Index, o.Mode); err != nil {
		return nil, err
	}
	so := &xdp.SocketOptions{NumFrames: o.NumFrames, FrameSize: o.FrameSize,
		FillRingNumDescs: o.RingSize, CompletionRingNumDescs: o.RingSize, RxRingNumDescs: o.RingSize, TxRingNumDescs: o.RingSize}
	for i, q := range queues {
		x, err := newSocket(ifi.Index, q, so)
		if err != nil {
			return nil, fmt.Errorf("asavie: socket on %s queue %d: %w", iface, q, err)
		}
		s := &sock{x: x, out: make([]xdp.Desc, 0, o.BatchSize)}
		d.socks = append(d.socks, s)
		if err := d.prog.RegisterSocket(q, x.FD()); err != nil {
			return nil, err
		}
		if o.NewPipeline != nil {
			s.pipe = o.NewPipeline(i)
			// asavie keeps its UMEM private; a descriptor spanning all of it returns all of it.
			mem := x.GetFrame(xdp.Desc{Addr: 0, Len: uint32(o.NumFrames * o.FrameSize)})
			s.batch = pipelines.NewBatch(mem, uint32(o.FrameSize), o.BatchSize)
		}
	}
	go d.run()
	return d, nil
}

// newSocket retries a bind that finds the queue busy for a while: a closed AF_XDP socket frees
// its queue from a kernel workqueue, a little after close returns.
func newSocket(ifindex, q int, so *xdp.SocketOptions) (*xdp.Socket, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		x, err := xdp.NewSocket(ifindex, q, so)
		if err == nil || !strings.Contains(err.Error(), unix.EBUSY.Error()) || time.Now().After(deadline) {
			return x, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *Driver) run() {
	defer close(d.done)
	if d.opts.CPU >= 0 {
		unpin, err := cpu.Pin(d.opts.CPU)
		if err != nil {
			d.err = err
			return
		}
		defer unpin()
	}
	fds := make([]unix.PollFd, len(d.socks))
	for i, s := range d.socks {
		fds[i] = unix.PollFd{Fd: int32(s.x.FD()), Events: unix.POLLIN}
	}
	lastWork := time.Now()
	for !d.stop.Load() {
		work, txPending := false, false
		for _, s := range d.socks {
			w, p := d.pass(s)
			work = work || w
			txPending = txPending || p
		}
		if work {
			lastWork = time.Now()
			continue
		}
		if time.Since(lastWork) < d.opts.SpinIdle {
			runtime.Gosched()
			continue
		}
		timeout := 50
		if txPending {
			timeout = 1
		}
		unix.Poll(fds, timeout)
		d.sleeps.Add(1)
		lastWork = time.Now()
	}
}

// pass serves one socket once: completions, fill, one batch. It reports whether it found work
// and whether frames wait in the tx ring.
func (d *Driver) pass(s *sock) (work, txPending bool) {
	x := s.x
	if n := x.NumCompleted(); n > 0 {
		x.Complete(n)
		work = true
	}
	if free := x.NumFreeFillSlots(); free >= 32 {
		x.Fill(x.GetDescs(free))
	}
	// Frames still in the tx ring (copy mode moved only 32 per kick): kick again.
	if x.NumFreeTxSlots() < d.opts.RingSize {
		x.Transmit(nil)
		d.kicks.Add(1)
		work = true
	}
	n := x.NumReceived()
	if n > d.opts.BatchSize {
		n = d.opts.BatchSize
	}
	if n == 0 {
		return work, x.NumFreeTxSlots() < d.opts.RingSize
	}
	descs := x.Receive(n)
	d.rx.Add(uint64(len(descs)))
	if s.pipe == nil {
		d.dropped.Add(uint64(len(descs)))
		return true, false
	}
	b := s.batch
	b.Reset()
	for _, de := range descs {
		b.Pkts = append(b.Pkts, pipelines.Packet{Addr: de.Addr, Len: de.Len})
	}
	s.pipe.Run(b)
	out := s.out[:0]
	var drops uint64
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict == pipelines.Transmit {
			out = append(out, xdp.Desc{Addr: p.Addr, Len: p.Len})
		} else {
			drops++
		}
	}
	b.Reset()
	if len(out) > 0 {
		m := x.Transmit(out)
		d.kicks.Add(1)
		d.tx.Add(uint64(m))
		if m < len(out) {
			d.txFull.Add(uint64(len(out) - m))
		}
	}
	if drops > 0 {
		d.dropped.Add(drops)
	}
	return true, false
}

// Counts reads the driver's counters and the sockets' kernel statistics; safe while it runs.
func (d *Driver) Counts() Counts {
	c := Counts{RxPackets: d.rx.Load(), TxPackets: d.tx.Load(), Dropped: d.dropped.Load(),
		TxRingFull: d.txFull.Load(), Kicks: d.kicks.Load(), Sleeps: d.sleeps.Load()}
	for _, s := range d.socks {
		st, err := s.x.Stats() // reads XDP_STATISTICS (and ring words, harmlessly)
		if err != nil {
			continue
		}
		c.KernelRxDropped += st.KernelStats.Rx_dropped
		c.KernelRxRingFull += st.KernelStats.Rx_ring_full
		c.KernelFillRingEmpty += st.KernelStats.Rx_fill_ring_empty_descs
	}
	return c
}

// Stop ends the loop, closes the sockets and detaches the program.
func (d *Driver) Stop() error {
	if d.stop.Swap(true) {
		return nil
	}
	<-d.done
	return errors.Join(d.err, d.close())
}

func (d *Driver) close() error {
	var errs []error
	if d.prog != nil {
		errs = append(errs, d.prog.Close())
	}
	for _, s := range d.socks {
		errs = append(errs, closeSocket(s.x))
	}
	d.socks = nil
	return errors.Join(errs...)
}

// closeSocket closes an asavie socket and unmaps its four rings, which asavie's Close leaves
// mapped: a mapping holds the socket's file open, so without this the socket is never released
// and its queue stays busy (EBUSY on the next bind) until the process exits.
func closeSocket(x *xdp.Socket) error {
	var st unix.Stat_t
	statErr := unix.Fstat(x.FD(), &st)
	err := x.Close()
	if statErr != nil {
		return errors.Join(err, statErr)
	}
	return errors.Join(err, unmapSocket(st.Ino))
}

// unmapSocket unmaps every mapping of this process whose file is socket inode ino.
func unmapSocket(ino uint64) error {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	want := fmt.Sprintf("socket:[%d]", ino)
	var errs []error
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != want {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MUNMAP, uintptr(a), uintptr(e-a), 0); errno != 0 {
			errs = append(errs, fmt.Errorf("munmap %s: %w", f[0], errno))
		}
	}
	return errors.Join(errs...)
}
