package netchannel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines/claim"
)

// ErrClosed is returned by a channel's methods after Close (and by Read when Close interrupts
// it).
var ErrClosed = errors.New("netchannel: channel closed")

// ErrFramesLent is wrapped by Close when the reader still holds frames after the close timeout.
var ErrFramesLent = errors.New("netchannel: frames still lent")

// Channel is one netchannel: the packets of the flows its spec names, delivered to one reader
// goroutine in batches of views into the UMEM. A Channel's methods are for one goroutine at a
// time (the reader); Close may also come from another goroutine, and then interrupts a Read.
type Channel struct {
	set     *Set
	id      int
	h       flowtree.Handle
	name    string
	rule    claim.Rule
	spec    flowtree.Spec
	lendCap int
	queue   int
	lanes   []*lane
	owner   string // the XDP claim's owner

	rmu       sync.Mutex // the reader's side of the rings: Read's pops, Release, Send, Alloc, Close's drain
	next      int        // the lane Read starts at (round robin)
	allocLane int
	sleeping  atomic.Bool
	wakeCh    chan struct{}
	closeCh   chan struct{}
	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
	held      atomic.Int64 // frames the reader holds: read or allocated, not yet released or sent
	lanesDone atomic.Int32
	allDone   chan struct{}
	unreserve func() error
	debugHeld map[uint64]struct{} // debug mode: frames the reader holds, by lane<<48|addr
	one       [1]desc             // giveBack's push buffer, under rmu
}

// notify wakes a reader that sleeps in Read; the shard calls it after delivering. Only a
// sleeping reader costs a channel send.
func (c *Channel) notify() {
	if c.sleeping.Load() && c.sleeping.CompareAndSwap(true, false) {
		select {
		case c.wakeCh <- struct{}{}:
		default:
		}
	}
}

// laneDone is called by a shard when the lane is out of its tree and has nothing lent.
func (c *Channel) laneDone(*lane) {
	if int(c.lanesDone.Add(1)) == len(c.lanes) {
		close(c.allDone)
	}
}

// Name is the channel's name (Options.Name, or its spec).
func (c *Channel) Name() string { return c.name }

// Rule is the channel's flow spec.
func (c *Channel) Rule() claim.Rule { return c.rule }

// Batch is a reader's batch of packet views; make one with NewBatch and reuse it. A view is
// valid from the Read (or Alloc) that filled it until the Release or Send that empties the
// batch; the bytes are the UMEM frame itself.
type Batch struct {
	d     []desc
	lanes []*lane
	n     int
}

// NewBatch makes a batch for up to size packets.
func NewBatch(size int) *Batch {
	if size <= 0 {
		size = 64
	}
	return &Batch{d: make([]desc, size), lanes: make([]*lane, size)}
}

// Len is the number of packets in the batch.
func (b *Batch) Len() int { return b.n }

func (b *Batch) check(i int) {
	if i < 0 || i >= b.n {
		panic(fmt.Sprintf("netchannel: view %d of a batch of %d: used after Release or Send, or never read", i, b.n))
	}
}

// Bytes is packet i's bytes in the UMEM frame: no copy. Its capacity runs to the end of the
// frame, so SetLen may grow the packet within it.
func (b *Batch) Bytes(i int) []byte {
	b.check(i)
	d, ln := &b.d[i], b.lanes[i]
	end := (d.addr | ln.fmask) + 1
	return ln.mem[d.addr : d.addr+uint64(d.n) : end]
}

// SetLen sets packet i's length (for Send); it must stay within the frame.
func (b *Batch) SetLen(i, n int) {
	b.check(i)
	d, ln := &b.d[i], b.lanes[i]
	if n < 0 || uint64(n) > (d.addr|ln.fmask)+1-d.addr {
		panic("netchannel: packet length beyond its frame")
	}
	d.n = uint32(n)
}

// Shard is the shard that owns packet i's frame (and transmits it on Send).
func (b *Batch) Shard(i int) int { b.check(i); return b.lanes[i].shard }

// Iface is the index of the interface packet i arrived on, or will be sent on.
func (b *Batch) Iface(i int) int { b.check(i); return int(b.d[i].ifc) }

// SetIface makes Send transmit packet i on interface ifc (an index of the App's interfaces).
func (b *Batch) SetIface(i, ifc int) { b.check(i); b.d[i].ifc = uint8(ifc) }

// Addr is packet i's address in its shard's UMEM.
func (b *Batch) Addr(i int) uint64 { b.check(i); return b.d[i].addr }

// Read waits until packets arrive, the context ends or the channel closes, and fills b (which
// must be empty: Release or Send it first) with up to its size. It blocks without spinning:
// the shard wakes a sleeping reader once per batch it delivers.
func (c *Channel) Read(ctx context.Context, b *Batch) (int, error) {
	for {
		if c.closing.Load() {
			return 0, ErrClosed
		}
		n, err := c.TryRead(b)
		if n > 0 || err != nil {
			return n, err
		}
		c.sleeping.Store(true)
		// The shard pushes and then loads sleeping; this stores sleeping and then looks at
		// the rings: one of the two sees the other, so no delivery is missed.
		if c.pending() {
			c.sleeping.Store(false)
			continue
		}
		select {
		case <-c.wakeCh:
		case <-ctx.Done():
			c.sleeping.Store(false)
			return 0, ctx.Err()
		case <-c.closeCh:
			c.sleeping.Store(false)
			return 0, ErrClosed
		}
	}
}

func (c *Channel) pending() bool {
	for _, ln := range c.lanes {
		if ln.rx.Len() > 0 {
			return true
		}
	}
	return false
}

// TryRead fills b with what has arrived, without waiting; 0 when nothing has.
func (c *Channel) TryRead(b *Batch) (int, error) {
	if b.n != 0 {
		return 0, errors.New("netchannel: Read into a batch that holds packets: Release or Send it first")
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closing.Load() {
		return 0, ErrClosed
	}
	nl := len(c.lanes)
	for k := 0; k < nl && b.n < len(b.d); k++ {
		ln := c.lanes[(c.next+k)%nl]
		got := ln.rx.Pop(b.d[b.n:])
		for j := b.n; j < b.n+got; j++ {
			b.lanes[j] = ln
			c.debugTake(ln, b.d[j].addr)
		}
		b.n += got
	}
	c.next = (c.next + 1) % nl
	c.held.Add(int64(b.n))
	return b.n, nil
}

// Release gives every frame of b back to its shard and empties b.
func (c *Channel) Release(b *Batch) { c.giveBack(b, opRelease) }

// Send hands every packet of b to its shard, which transmits it on its interface (the one it
// arrived on unless SetIface changed it), and empties b. A received view turned around in place
// is a zero-copy echo. The frames are the shard's again: a full tx ring drops (counted by the
// shard as tx-ring-full), it does not block.
func (c *Channel) Send(b *Batch) error {
	if c.closing.Load() && c.set.stopped.Load() {
		c.giveBack(b, opRelease)
		return ErrClosed
	}
	c.giveBack(b, opSend)
	return nil
}

func (c *Channel) giveBack(b *Batch, op uint8) {
	if b.n == 0 {
		return
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	var last *lane
	for i := 0; i < b.n; i++ {
		ln := b.lanes[i]
		d := b.d[i]
		d.op = op
		c.debugGive(ln, d.addr, op == opRelease)
		c.one[0] = d
		if ln.back.Push(c.one[:]) != 1 {
			// The back ring holds the lane's whole cap of lent frames, so this is a bug.
			panic("netchannel: back ring full")
		}
		if ln != last && last != nil {
			last.wake()
		}
		last = ln
		b.lanes[i] = nil
	}
	c.held.Add(-int64(b.n))
	b.n = 0
	last.wake()
}

// Alloc adds up to n empty frames to b for packets of the reader's own (SetLen, write, Send);
// it returns how many it added. Frames come from the channel's send shard (Options.SendShard),
// which keeps up to n of them ready from the first call on: the first call may return 0 (try
// again after a moment). Allocated frames count against the channel's cap.
func (c *Channel) Alloc(b *Batch, n int) int {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closing.Load() {
		return 0
	}
	ln := c.lanes[c.allocLane]
	if want := int32(min(n, ln.spare.Size())); ln.wantSpare.Load() < want {
		ln.wantSpare.Store(want)
		ln.wake()
	}
	n = min(n, len(b.d)-b.n)
	got := ln.spare.Pop(b.d[b.n : b.n+n])
	for j := b.n; j < b.n+got; j++ {
		b.lanes[j] = ln
		b.d[j].n, b.d[j].ifc = 0, 0
		c.debugTake(ln, b.d[j].addr)
	}
	b.n += got
	c.held.Add(int64(got))
	if got > 0 {
		ln.wake() // restock
	}
	return got
}

// Close stops the channel: the XDP program stops claiming its flows (they go to the kernel
// again), the shards stop delivering, what was queued and not read goes back, and Close waits
// (up to Config.CloseTimeout) until the reader has released or sent every frame it holds. A
// Read blocked in another goroutine returns ErrClosed. Close a channel before stopping its
// instance; Stop closes what is still open.
func (c *Channel) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Channel) close() error {
	c.closing.Store(true)
	close(c.closeCh)
	for _, ln := range c.lanes {
		ln.closing.Store(true)
	}
	var errs []error
	if err := c.set.unclaim(c); err != nil {
		errs = append(errs, err)
	}
	timeout := c.set.cfg.CloseTimeout
	deadline := time.Now().Add(timeout)
	if !c.set.stopped.Load() {
		dones := make([]chan error, len(c.lanes))
		for i, st := range c.set.stages {
			dones[i] = make(chan error, 1)
			st.do(op{spec: c.spec, h: c.h, done: dones[i]})
		}
		for _, d := range dones {
			select {
			case <-d:
			case <-c.set.stoppedCh:
			case <-time.After(time.Until(deadline)):
			}
		}
	}
	// The reader can no longer pop (closing is set, and rmu orders this after any pop in
	// progress): give back what it never took, and the empty frames.
	c.rmu.Lock()
	var d [64]desc
	for _, ln := range c.lanes {
		for _, r := range []interface{ Pop([]desc) int }{ln.rx, ln.spare} {
			for {
				n := r.Pop(d[:])
				if n == 0 {
					break
				}
				for j := range d[:n] {
					d[j].op = opRelease
				}
				ln.back.Push(d[:n])
			}
		}
		ln.wake()
	}
	c.rmu.Unlock()
	if err := c.waitReturned(deadline); err != nil {
		errs = append(errs, err)
	}
	if c.unreserve != nil {
		errs = append(errs, c.unreserve())
	}
	c.set.forget(c)
	return errors.Join(errs...)
}

// waitReturned waits until every lane is done (the shards took every frame back) or, once the
// shards have stopped, until the reader holds nothing.
func (c *Channel) waitReturned(deadline time.Time) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.set.stopped.Load() {
			if c.held.Load() == 0 {
				return nil
			}
		} else {
			select {
			case <-c.allDone:
				return nil
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: channel %s: the reader holds %d frames %v after Close began: Release or Send every batch before Close",
				ErrFramesLent, c.name, c.held.Load(), c.set.cfg.CloseTimeout)
		}
		select {
		case <-c.allDone:
		case <-tick.C:
		}
	}
}

// debugTake and debugGive track, in debug mode, which frames the reader holds, so a frame
// released twice or never read is caught where it happens, and poison a released frame so a
// reader that kept its bytes sees garbage rather than a plausible packet.
func (c *Channel) debugTake(ln *lane, addr uint64) {
	if c.debugHeld == nil {
		return
	}
	c.debugHeld[uint64(ln.shard)<<48|addr&^ln.fmask] = struct{}{}
}

func (c *Channel) debugGive(ln *lane, addr uint64, poison bool) {
	if c.debugHeld == nil {
		return
	}
	k := uint64(ln.shard)<<48 | addr&^ln.fmask
	if _, ok := c.debugHeld[k]; !ok {
		panic(fmt.Sprintf("netchannel: frame %#x of shard %d given back but not held: released twice, or a view used after release", addr, ln.shard))
	}
	delete(c.debugHeld, k)
	if poison {
		f := ln.mem[addr&^ln.fmask : (addr|ln.fmask)+1]
		for i := range f {
			f[i] = 0xdb
		}
	}
}

// Stats are a channel's figures, summed over its shards.
type Stats struct {
	Name     string            `json:"name"`
	Spec     string            `json:"spec"`
	Received uint64            `json:"received"`
	Bytes    uint64            `json:"bytes"`
	Sent     uint64            `json:"sent"`
	Released uint64            `json:"released"`
	Drops    map[string]uint64 `json:"drops,omitempty"`
	// Lent is how many frames the shards count as lent to the channel (queued, held by the
	// reader, stocked for Alloc, or on their way back); Held how many the reader holds.
	Lent       int64 `json:"lent"`
	Held       int64 `json:"held"`
	QueueLimit int   `json:"queue_limit"`
	LendCap    int   `json:"lend_cap"`
	Shards     int   `json:"shards"`
}

// Stats reads the channel's counters; any goroutine may call it.
func (c *Channel) Stats() Stats {
	s := Stats{Name: c.name, Spec: c.rule.String(), Held: c.held.Load(), QueueLimit: c.queue, LendCap: c.lendCap, Shards: len(c.lanes)}
	for _, ln := range c.lanes {
		s.Received += ln.ctr.received.Load()
		s.Bytes += ln.ctr.bytes.Load()
		s.Sent += ln.ctr.sent.Load()
		s.Released += ln.ctr.released.Load()
		s.Lent += ln.lent.Load()
		for r := range ln.ctr.drops {
			if n := ln.ctr.drops[r].Load(); n > 0 {
				if s.Drops == nil {
					s.Drops = map[string]uint64{}
				}
				s.Drops[dropNames[r]] += n
			}
		}
	}
	return s
}
