package main

import (
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/runtime/afxdp"
)

// spsc is a single-producer single-consumer ring, like an AF_XDP ring: one side only pushes,
// the other only pops.
type spsc[T any] struct {
	buf  []T
	mask uint32
	_    [56]byte
	prod atomic.Uint32
	_    [60]byte
	cons atomic.Uint32
	_    [60]byte
}

func newSPSC[T any](size uint32) *spsc[T] {
	return &spsc[T]{buf: make([]T, size), mask: size - 1}
}

func (r *spsc[T]) push(src []T) int {
	p, c := r.prod.Load(), r.cons.Load()
	n := min(uint32(len(src)), uint32(len(r.buf))-(p-c))
	for i := uint32(0); i < n; i++ {
		r.buf[(p+i)&r.mask] = src[i]
	}
	r.prod.Store(p + n)
	return int(n)
}

func (r *spsc[T]) pop(dst []T) int {
	c, p := r.cons.Load(), r.prod.Load()
	n := min(uint32(len(dst)), p-c)
	for i := uint32(0); i < n; i++ {
		dst[i] = r.buf[(c+i)&r.mask]
	}
	r.cons.Store(c + n)
	return int(n)
}

func (r *spsc[T]) len() uint32 { return r.prod.Load() - r.cons.Load() }

// wireLink is an in-memory AF_XDP socket for one shard (it implements shards.Link): the four
// rings over the shard's UMEM, with the kernel's side played by the wire's pumps. Unlike
// runtime/memport it costs the shard what an AF_XDP socket in need-wakeup mode costs: a pass
// that finds nothing reads the rx ring only (no system call), and the eventfd that wakes a
// sleeping shard is written only when the shard armed it (WakeRx, just before it sleeps);
// its transmit wakes the pump as sendto(2) wakes the kernel. Each ring has one producer and
// one consumer (the shard, or one pump), so the pump copies a frame straight from the
// sender's UMEM into the receiver's: one copy per frame, as in the gVisor wire.
//
// With inline set there is no pump goroutine: the shard's own Transmit and Flush deliver
// (copy into the peer's UMEM and rx ring), as a copy-mode sendto(2) on veth does the copy
// in the sender's system call. The rings stay single-producer single-consumer: only this
// shard delivers into the peer.
type wireLink struct {
	mem       []byte
	frameSize uint32
	efd       int
	armed     atomic.Bool
	kick      chan struct{}
	inline    *wirePump // delivers in Transmit/Flush when set
	// yieldBeforeSleep calls runtime.Gosched in WakeRx, just before the shard sleeps: an
	// experiment standing in for a change to the shards' loop (see the results), off by
	// default.
	yieldBeforeSleep bool

	fill, comp *spsc[uint64]     // shard → pump, pump → shard
	rx, tx     *spsc[afxdp.Desc] // pump → shard, shard → pump
}

// newWireLink makes the rings; the completion ring holds every frame of the UMEM, so the pump
// never waits for the shard to reap.
func newWireLink(mem []byte, frameSize, numFrames, ringSize uint32) *wireLink {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		panic("tcppeer: eventfd: " + err.Error())
	}
	return &wireLink{mem: mem, frameSize: frameSize, efd: efd, kick: make(chan struct{}, 1),
		fill: newSPSC[uint64](ringSize), comp: newSPSC[uint64](numFrames),
		rx: newSPSC[afxdp.Desc](ringSize), tx: newSPSC[afxdp.Desc](ringSize)}
}

func (l *wireLink) close() { unix.Close(l.efd) }

// Shard side (shards.Link).

func (l *wireLink) Receive(d []afxdp.Desc) int { return l.rx.pop(d) }
func (l *wireLink) RxReady() bool              { return l.rx.len() > 0 }
func (l *wireLink) Fill(addrs []uint64) int    { return l.fill.push(addrs) }
func (l *wireLink) FillOutstanding() uint32    { return l.fill.len() }
func (l *wireLink) Complete(addrs []uint64) int {
	return l.comp.pop(addrs)
}

func (l *wireLink) Transmit(d []afxdp.Desc) int {
	n := l.tx.push(d)
	if l.inline != nil {
		l.inline.drain()
		return n
	}
	if n > 0 {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return n
}

// Flush has nothing left to do: Transmit kicked the pump, and a kick is never lost (the
// pump drains the tx ring after every kick), so no frame needs another kick. (Reporting
// frames still on the tx ring as pending would make the shard spin until the pump ran, and
// with as many shards as Ps the pump would wait for a P: the kernel that drains a real
// socket's tx ring needs none.)
// Inline, Flush offers again what the peer had no room for.
func (l *wireLink) Flush() (pending bool, kicks int) {
	if l.inline != nil {
		return l.inline.drain(), 0
	}
	return false, 0
}

// WakeRx runs just before the shard sleeps in poll(2): it clears the eventfd and arms it, and
// if frames arrived meanwhile it signals the eventfd itself so the poll returns at once.
func (l *wireLink) WakeRx() {
	var buf [8]byte
	if l.yieldBeforeSleep {
		runtime.Gosched()
	}
	unix.Read(l.efd, buf[:])
	l.armed.Store(true)
	if l.rx.len() > 0 && l.armed.CompareAndSwap(true, false) {
		l.signal()
	}
}

func (l *wireLink) signal() {
	one := [8]byte{1}
	unix.Write(l.efd, one[:])
}

func (l *wireLink) PollFd() int        { return l.efd }
func (l *wireLink) Stats() afxdp.Stats { return afxdp.Stats{} }

// Pump side.

// headroom is where a received frame starts in its UMEM frame, as in AF_XDP copy mode.
const headroom = 256

// wirePump moves frames from src's tx ring into dst's rx ring, one direction of the wire.
type wirePump struct {
	src, dst *wireLink
	ls       *loss
	st       *dirStats
	descs    []afxdp.Desc
	addrs    []uint64
	out      []afxdp.Desc
	held     []afxdp.Desc // taken from src.tx but not yet delivered (dst had no room)
}

func newWirePump(src, dst *wireLink, ls *loss, st *dirStats, batch int) *wirePump {
	return &wirePump{src: src, dst: dst, ls: ls, st: st, descs: make([]afxdp.Desc, batch),
		addrs: make([]uint64, batch), out: make([]afxdp.Desc, 0, batch)}
}

// step moves up to one batch and reports how many frames it took from src and whether frames
// wait for room at dst.
func (p *wirePump) step() (taken int, waiting bool) {
	descs := p.held
	if len(descs) == 0 {
		n := p.src.tx.pop(p.descs)
		if n == 0 {
			return 0, false
		}
		taken = n
		descs = p.descs[:n]
		var lost uint64
		k := 0
		for _, d := range descs {
			if p.ls.drop() {
				lost++
				p.complete(d)
				continue
			}
			descs[k] = d
			k++
		}
		descs = descs[:k]
		p.st.frames.Add(uint64(n))
		if lost > 0 {
			p.st.lost.Add(lost)
		}
	}
	// Frames for dst: one free frame from its fill ring each, and a slot in its rx ring.
	room := min(len(descs), len(p.dst.rx.buf)-int(p.dst.rx.len()))
	got := p.dst.fill.pop(p.addrs[:room])
	out := p.out[:0]
	for i, a := range p.addrs[:got] {
		d := descs[i]
		at := a + headroom
		copy(p.dst.mem[at:at+uint64(d.Len)], p.src.mem[d.Addr:d.Addr+uint64(d.Len)])
		out = append(out, afxdp.Desc{Addr: at, Len: d.Len})
		p.complete(d)
	}
	if len(out) > 0 {
		p.dst.rx.push(out)
		if p.dst.armed.Load() && p.dst.armed.CompareAndSwap(true, false) {
			p.dst.signal()
		}
	}
	if got < len(descs) {
		if len(p.held) == 0 {
			p.held = append(p.held[:0:0], descs[got:]...)
			p.st.overflow.Add(uint64(len(p.held))) // frames that had to wait, once each
		} else {
			p.held = p.held[got:]
		}
		return taken, true
	}
	p.held = nil
	return taken, false
}

// drain steps until src's tx ring is empty or dst has no room, and reports whether frames
// still wait (the inline wire's Transmit and Flush).
func (p *wirePump) drain() (waiting bool) {
	for {
		taken, waiting := p.step()
		if waiting || taken == 0 {
			return waiting
		}
	}
}

// run pumps until stop, sleeping on src's kick when src has nothing to send.
func (p *wirePump) run(stop <-chan struct{}) {
	for {
		taken, waiting := p.step()
		switch {
		case waiting:
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Microsecond):
			}
		case taken == 0:
			select {
			case <-p.src.kick:
			case <-stop:
				return
			}
		}
	}
}

// complete gives a transmitted frame back to src's shard.
func (p *wirePump) complete(d afxdp.Desc) {
	a := [1]uint64{d.Addr &^ uint64(p.src.frameSize-1)}
	if p.src.comp.push(a[:]) == 0 {
		panic("tcppeer: completion ring full, though it holds every frame")
	}
}
