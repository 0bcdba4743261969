package bench

import (
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/cpu"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// NetchanLoop is netchan's AF_XDP port (runtime/afxdp) without the shard: a dedicated tight
// loop that receives a batch and puts the frames straight back on the fill ring (rx) or swaps
// addresses and transmits them (reflect). Next to Netchan it shows what the shard loop costs on
// top of the port.
const NetchanLoop = "netchan-loop"

type portLoop struct {
	prog  *xdpprog.Program
	ports []*afxdp.Port
	spin  time.Duration
	batch int
	echo  bool
	cpu   int

	rx, tx, drops atomic.Uint64
	stopped       atomic.Bool
	done          chan struct{}
	err           error
}

func startPortLoop(s rxSetup) (_ receiver, err error) {
	o := s.opts
	ifi, err := net.InterfaceByName(s.ep.Iface)
	if err != nil {
		return nil, err
	}
	p := &portLoop{spin: o.SpinIdle, batch: o.BatchSize, echo: s.kind == KindReflect, cpu: s.cpu, done: make(chan struct{})}
	if p.spin == 0 {
		p.spin = 50 * time.Microsecond
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.prog, err = xdpprog.Load(xdpprog.Options{Logf: s.logf}); err != nil {
		return nil, err
	}
	if err := p.prog.ClaimAllIPv4(true); err != nil {
		return nil, err
	}
	if _, err := p.prog.Attach(ifi.Index, xdpprog.ModeNative); err != nil {
		return nil, err
	}
	for _, q := range s.queues {
		port, err := afxdp.Open(afxdp.Config{Queue: q, Ifaces: []string{s.ep.Iface}, NumFrames: uint32(o.NumFrames),
			RingSize: uint32(o.RingSize), Logf: s.logf})
		if err != nil {
			return nil, err
		}
		p.ports = append(p.ports, port)
		if err := p.prog.RegisterSocket(q, port.Links[0].FD()); err != nil {
			return nil, err
		}
	}
	go p.run()
	return p, nil
}

// loopQueue is one port's state in the loop.
type loopQueue struct {
	l       *afxdp.Link
	mem     []byte
	free    []uint64
	rx      []afxdp.Desc
	comp    []uint64
	inFill  int
	fillTgt int
	mask    uint64
	pending bool
}

func (p *portLoop) run() {
	defer close(p.done)
	unpin, err := cpu.Pin(p.cpu)
	if err != nil {
		p.err = err
		return
	}
	defer unpin()
	var qs []*loopQueue
	var fds []unix.PollFd
	for _, port := range p.ports {
		n := int(port.UMEM.NumFrames)
		q := &loopQueue{l: port.Links[0], mem: port.Mem(), free: make([]uint64, 0, n), rx: make([]afxdp.Desc, p.batch),
			comp: make([]uint64, 512), fillTgt: n / 2, mask: uint64(port.UMEM.FrameSize - 1)}
		for i := n - 1; i >= 0; i-- {
			q.free = append(q.free, uint64(i)*uint64(port.UMEM.FrameSize))
		}
		qs = append(qs, q)
		fds = append(fds, unix.PollFd{Fd: int32(q.l.PollFd()), Events: unix.POLLIN})
	}
	last := time.Now()
	for !p.stopped.Load() {
		work := false
		for _, q := range qs {
			if p.pass(q) {
				work = true
			}
		}
		if work {
			last = time.Now()
			continue
		}
		if time.Since(last) < p.spin {
			runtime.Gosched()
			continue
		}
		for _, q := range qs {
			q.l.WakeRx()
		}
		unix.Poll(fds, 50)
		last = time.Now()
	}
}

func (p *portLoop) pass(q *loopQueue) bool {
	work := false
	if n := q.l.Complete(q.comp); n > 0 {
		q.free = append(q.free, q.comp[:n]...)
		work = true
	}
	if q.pending {
		q.pending, _ = q.l.Flush()
	}
	if need := q.fillTgt - q.inFill; need >= 32 && len(q.free) > 0 {
		need = min(need, len(q.free))
		m := q.l.Fill(q.free[len(q.free)-need:])
		q.free = q.free[:len(q.free)-m]
		q.inFill += m
	}
	n := q.l.Receive(q.rx)
	if n == 0 {
		return work
	}
	q.inFill -= n
	p.rx.Add(uint64(n))
	if !p.echo {
		for _, d := range q.rx[:n] {
			q.free = append(q.free, d.Addr&^q.mask)
		}
		p.drops.Add(uint64(n))
		return true
	}
	for _, d := range q.rx[:n] {
		swap(q.mem[d.Addr : d.Addr+uint64(d.Len)])
	}
	m := q.l.Transmit(q.rx[:n])
	for _, d := range q.rx[m:n] {
		q.free = append(q.free, d.Addr&^q.mask)
	}
	p.tx.Add(uint64(m))
	q.pending, _ = q.l.Flush()
	return true
}

// swap reflects an Ethernet/IPv4/UDP frame as the reflect pipeline does (no checks: the
// benchmark's frames are all UDP with a 20-byte IPv4 header).
func swap(b []byte) {
	if len(b) < 38 {
		return
	}
	var t [6]byte
	copy(t[:], b[0:6])
	copy(b[0:6], b[6:12])
	copy(b[6:12], t[:])
	copy(t[:4], b[26:30])
	copy(b[26:30], b[30:34])
	copy(b[30:34], t[:4])
	copy(t[:2], b[34:36])
	copy(b[34:36], b[36:38])
	copy(b[36:38], t[:2])
}

func (p *portLoop) counts() rcvCounts {
	var c rcvCounts
	c.Rx, c.Tx = p.rx.Load(), p.tx.Load()
	for _, port := range p.ports {
		st := port.Links[0].Stats()
		c.Drops += st.RxDropped + st.RxRingFull
	}
	return c
}

func (p *portLoop) stop() error {
	if !p.stopped.Swap(true) {
		<-p.done
	}
	return errors.Join(p.err, p.close())
}

func (p *portLoop) close() error {
	var errs []error
	if p.prog != nil {
		errs = append(errs, p.prog.Close())
		p.prog = nil
	}
	for _, port := range p.ports {
		errs = append(errs, port.Close())
	}
	p.ports = nil
	return errors.Join(errs...)
}
