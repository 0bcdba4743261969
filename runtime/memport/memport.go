// Package memport is an in-memory stand-in for an AF_XDP port: the same four rings over
// ordinary memory, with the kernel's side played by the caller (Inject puts a frame on the rx
// ring, Drain takes frames off the tx ring). Shards run on it unchanged, so unit tests, fuzzing
// and race tests exercise the real loop without a kernel. An eventfd stands in for the socket's
// poll(2) readiness.
package memport

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/internal/xsk"
)

// Port is a UMEM in ordinary memory and one Link per simulated interface.
type Port struct {
	Mem       []byte
	FrameSize uint32
	NumFrames uint32
	Links     []*Link
}

// Link is one simulated interface at one queue.
type Link struct {
	mem       []byte
	frameSize uint32
	efd       int

	// shard side
	fill, comp *xsk.AddrRing
	rx, tx     *xsk.DescRing

	// kernel side, serialised by mu so any goroutine may inject or drain
	mu           sync.Mutex
	kFill, kComp *xsk.AddrRing
	kRx, kTx     *xsk.DescRing
	one          [1]uint64
	desc         [1]xsk.Desc

	// InjectDrops counts frames Inject could not deliver (no fill frame or rx ring full).
	InjectDrops atomic.Uint64
}

// New makes a port of ifaces links sharing one UMEM of numFrames frames.
func New(ifaces int, numFrames, frameSize, ringSize uint32) *Port {
	p := &Port{Mem: make([]byte, int(numFrames)*int(frameSize)), FrameSize: frameSize, NumFrames: numFrames}
	for i := 0; i < ifaces; i++ {
		fill, comp := xsk.NewMemAddrRing(int(ringSize)), xsk.NewMemAddrRing(int(ringSize))
		rx, tx := xsk.NewMemDescRing(int(ringSize)), xsk.NewMemDescRing(int(ringSize))
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			panic("memport: eventfd: " + err.Error())
		}
		p.Links = append(p.Links, &Link{
			mem: p.Mem, frameSize: frameSize, efd: efd,
			fill: fill.AddrView(), comp: comp.AddrView(), rx: rx.DescView(), tx: tx.DescView(),
			kFill: fill.AddrView(), kComp: comp.AddrView(), kRx: rx.DescView(), kTx: tx.DescView(),
		})
	}
	return p
}

// Close releases the links' eventfds.
func (p *Port) Close() {
	for _, l := range p.Links {
		unix.Close(l.efd)
	}
}

// Receive takes up to len(d) received descriptors. When the ring is empty it clears the
// eventfd before looking once more, so an Inject that races with going to sleep still wakes
// the next poll.
func (l *Link) Receive(d []afxdp.Desc) int {
	if n := l.rx.Dequeue(d); n > 0 {
		return n
	}
	var buf [8]byte
	unix.Read(l.efd, buf[:])
	return l.rx.Dequeue(d)
}

// RxReady reports whether received descriptors wait on the rx ring (any goroutine may ask).
func (l *Link) RxReady() bool { return l.rx.Outstanding() > 0 }

// Fill gives free frames for receiving.
func (l *Link) Fill(addrs []uint64) int { return l.fill.Enqueue(addrs) }

// FillOutstanding is how many frames wait in the fill ring.
func (l *Link) FillOutstanding() uint32 { return l.fill.Outstanding() }

// Complete takes frames whose transmission finished.
func (l *Link) Complete(addrs []uint64) int { return l.comp.Dequeue(addrs) }

// Transmit queues descriptors for Drain.
func (l *Link) Transmit(d []afxdp.Desc) int { return l.tx.Enqueue(d) }

// Flush has nothing to kick: frames wait until the test drains them.
func (l *Link) Flush() (pending bool, kicks int) { return l.tx.Outstanding() > 0, 0 }

// WakeRx does nothing; the stand-in kernel needs no wakeup.
func (l *Link) WakeRx() {}

// PollFd is an eventfd that Inject signals.
func (l *Link) PollFd() int { return l.efd }

// Stats has no kernel counters to report.
func (l *Link) Stats() afxdp.Stats { return afxdp.Stats{RxDropped: l.InjectDrops.Load()} }

// Inject plays the kernel receiving frame: it takes a frame from the fill ring, copies the
// bytes in at the copy-mode headroom offset, and publishes it on the rx ring.
func (l *Link) Inject(frame []byte) bool {
	const headroom = 256
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(frame)+headroom > int(l.frameSize) || l.kRx.Outstanding() >= l.kRx.Size() {
		l.InjectDrops.Add(1)
		return false
	}
	if l.kFill.Dequeue(l.one[:]) == 0 {
		l.InjectDrops.Add(1)
		return false
	}
	addr := l.one[0] + headroom
	copy(l.mem[addr:], frame)
	l.desc[0] = xsk.Desc{Addr: addr, Len: uint32(len(frame))}
	if l.kRx.Enqueue(l.desc[:]) != 1 {
		panic("memport: rx ring full after check")
	}
	var one = [8]byte{1}
	unix.Write(l.efd, one[:])
	return true
}

// Drain plays the kernel transmitting: it hands each queued frame's bytes to fn (valid only
// during the call) and completes it. It returns the number drained.
func (l *Link) Drain(fn func(data []byte)) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	// Like the kernel, stop taking from the tx ring while the completion ring is full.
	for l.kComp.Outstanding() < l.kComp.Size() && l.kTx.Dequeue(l.desc[:]) == 1 {
		d := l.desc[0]
		if fn != nil {
			fn(l.mem[d.Addr : d.Addr+uint64(d.Len)])
		}
		l.one[0] = d.Addr &^ uint64(l.frameSize-1)
		l.kComp.Enqueue(l.one[:])
		n++
	}
	return n
}
