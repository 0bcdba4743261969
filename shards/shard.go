package shards

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/afxdp"
)

// shard is one per-core loop. Every field except counters, sleeping and stop belongs to the
// shard's goroutine alone.
type shard struct {
	id      int
	cpu     int
	q       Queue
	mem     []byte
	mask    uint64
	nShards int
	pipe    *pipelines.Pipeline
	owner   pipelines.OwnerFunc
	batch   *pipelines.Batch
	frames  *frames
	c       *Counters
	t       tally

	rx        []afxdp.Desc
	tx        [][]afxdp.Desc
	txPending []bool
	addrs     []uint64
	fillTgt   int
	inKernel  []int // frames given to each link's fill ring and not yet received

	out     []*handoff  // out[o]: this shard → owner o (nil for itself)
	in      []*handoff  // in[s]: shard s → this one (nil for itself)
	pend    [][]handed  // packets waiting to go to owner o in this pass
	stash   [][]handed  // handed packets whose push failed; retried next pass
	stalled []time.Time // when owner o last stopped lending spare frames (zero: it lends)
	spares  []uint64
	hand    []handed
	peers   []*shard
	rxReady []RxReadier // the links that can tell from outside whether frames wait (wakeSleepers)

	efd        int      // kick writes here to wake this one
	ep         *os.File // epoll fd over the links' sockets and efd, registered with the Go netpoller
	epConn     syscall.RawConn
	epReady    func(fd uintptr) bool // readable as a method value, made once
	epEvents   [1]unix.EpollEvent
	yfd        int      // eventfd only yield writes: its readiness is the shard's place in the queue
	yf         *os.File // yfd, registered with the Go netpoller
	yConn      syscall.RawConn
	yReady     func(fd uintptr) bool // yieldReady as a method value, made once
	yParked    bool                  // yieldReady was called once in this yield
	sleeping   atomic.Bool
	kicked     atomic.Bool // ShardInfo.Wake was called since the shard last looked
	stop       atomic.Bool
	now        int64 // pipelines.Now() at the start of the current pass: one clock read per pass
	spinIdle   time.Duration
	pinned     bool // the goroutine is locked to a thread pinned to s.cpu
	originates bool
	handing    bool // a stage handed packets to other shards in this pass
	one        [1]uint64

	busy     []busyLink // per link; nil when busy polling is off (busypoll.go)
	busyOn   bool       // some link busy polls: run polls for busyIdle, not spinIdle
	busyIdle time.Duration
	ifaces   []pipelines.Interface
	logf     func(format string, args ...any)
}

// allocFrame lends a free frame to a stage that originates a packet.
func (s *shard) allocFrame() (uint64, bool) {
	if s.frames.get(s.one[:], placeBatch) == 0 {
		return 0, false
	}
	return s.one[0], true
}

// lendable is how many frames the shard can spare for stages to lend: the UMEM less the fill
// rings' share, a full tx ring per link, a batch and the spares lent to every other shard.
func (s *shard) lendable(batchSize int) int {
	ring := int(s.q.RingSize)
	if ring == 0 {
		ring = int(s.q.NumFrames) / 4
	}
	n := int(s.q.NumFrames) - len(s.q.Links)*(s.fillTgt+ring) - batchSize - (s.nShards-1)*spareTarget
	return max(n, 0)
}

// lendFrame records that a stage lent a frame of the batch out (Batch.Lend). It counts at once,
// not in apply: the borrower may give the frame back, and the stage adopt it, before the batch
// ends.
func (s *shard) lendFrame(addr uint64) {
	a := s.frames.base(addr)
	s.frames.track(a, placeBatch, placeLent)
	s.frames.moved(placeBatch, placeLent, 1)
}

// adoptFrame records that a stage took a frame it lent back into the batch (Batch.Adopt).
func (s *shard) adoptFrame(addr uint64) {
	a := s.frames.base(addr)
	s.frames.track(a, placeLent, placeBatch)
	s.frames.moved(placeLent, placeBatch, 1)
}

const (
	// sleepMax is the longest a shard sleeps without a deadline of its pipeline.
	sleepMax = 50 * time.Millisecond
	// yieldEvery is how long a busy shard runs without sleeping before it enters the Go
	// scheduler once (see doc.go): timers and goroutines queued on its P wait at most this long.
	yieldEvery = time.Millisecond
	// spinYieldGap is how long an unpinned shard spins without yielding when it has neither
	// worked nor woken a shard since its last yield (doc.go).
	spinYieldGap = 10 * time.Microsecond
	// punctualSpin: a shard spins rather than sleeps while a punctual stage's deadline is
	// nearer than this (pipelines.Punctual): the netpoller's sleeps end on whole milliseconds.
	punctualSpin = time.Millisecond
	// stallLimit is how long packets wait for an owner's spare frames before they are dropped;
	// well above the Go scheduler's 10 ms time slice, since an owner waiting for a P is not stuck.
	stallLimit = 100 * time.Millisecond
)

func (s *shard) init(batchSize int) error {
	s.mem = s.q.Mem
	s.mask = uint64(s.q.FrameSize - 1)
	s.batch = pipelines.NewBatch(s.mem, s.q.FrameSize, batchSize)
	s.batch.Shard = s.id
	s.batch.SetAllocator(s.allocFrame)
	s.batch.SetLender(s.lendFrame, s.adoptFrame)
	s.rx = make([]afxdp.Desc, batchSize)
	s.tx = make([][]afxdp.Desc, len(s.q.Links))
	for i := range s.tx {
		s.tx[i] = make([]afxdp.Desc, 0, batchSize)
	}
	s.txPending = make([]bool, len(s.q.Links))
	s.inKernel = make([]int, len(s.q.Links))
	s.addrs = make([]uint64, 512)
	s.fillTgt = int(s.q.NumFrames) / (2 * len(s.q.Links))
	s.spares = make([]uint64, batchSize)
	s.hand = make([]handed, batchSize)
	s.pend = make([][]handed, s.nShards)
	s.stash = make([][]handed, s.nShards)
	s.stalled = make([]time.Time, s.nShards)
	for i := range s.pend {
		s.pend[i] = make([]handed, 0, 2*batchSize)
		s.stash[i] = make([]handed, 0, batchSize)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("shard %d: eventfd: %w", s.id, err)
	}
	s.efd = efd
	if err := s.initSleep(); err != nil {
		unix.Close(efd)
		return fmt.Errorf("shard %d: %w", s.id, err)
	}
	if err := s.initYield(); err != nil {
		s.ep.Close()
		unix.Close(efd)
		return fmt.Errorf("shard %d: %w", s.id, err)
	}
	for _, l := range s.q.Links {
		if r, ok := l.(RxReadier); ok {
			s.rxReady = append(s.rxReady, r)
		}
	}
	return nil
}

// initSleep builds what sleep waits on: an epoll fd watching every link's socket and efd,
// registered with the Go netpoller, so a sleeping shard parks its goroutine and frees its P.
func (s *shard) initSleep() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	fds := []int{s.efd}
	for _, l := range s.q.Links {
		fds = append(fds, l.PollFd())
	}
	for _, fd := range fds {
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			unix.Close(epfd)
			return fmt.Errorf("epoll_ctl fd %d: %w", fd, err)
		}
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return err
	}
	// A non-blocking fd makes os.NewFile register it with the netpoller; without that,
	// deadlines are not supported and sleep could not time out.
	s.ep = os.NewFile(uintptr(epfd), fmt.Sprintf("shard %d epoll", s.id))
	if err := s.ep.SetReadDeadline(time.Time{}); err != nil {
		s.ep.Close()
		return fmt.Errorf("the Go netpoller does not take an epoll fd: %w", err)
	}
	if s.epConn, err = s.ep.SyscallConn(); err != nil {
		s.ep.Close()
		return err
	}
	s.epReady = s.readable
	return nil
}

// initYield makes the eventfd that yield parks on, registered with the Go netpoller.
func (s *shard) initYield() error {
	yfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	s.yfd = yfd
	s.yf = os.NewFile(uintptr(yfd), fmt.Sprintf("shard %d yield", s.id))
	if s.yConn, err = s.yf.SyscallConn(); err != nil {
		s.yf.Close()
		return err
	}
	s.yReady = s.yieldReady
	return nil
}

// yield lets every goroutine and timer queued on the shard's P run, and then the shard. A
// shard that has worked for yieldEvery without sleeping calls it (doc.go). runtime.Gosched
// would put the shard on the global run queue, which a P serves every 61st time it schedules,
// ahead of its own queue: a shard taken up that way held the P for another yieldEvery while a
// timer's goroutine (readied into the P's next slot) waited, and the socket users the shard
// woke pushed that goroutine to the back of the queue. Here the shard parks on an eventfd it
// has just written, so the netpoller readies it, and a P polls the network only once its own
// run queue and the global one are empty (or the runtime's monitor does, after 10 ms): the
// shard takes its turn after what was queued.
func (s *shard) yield() {
	s.yParked = false
	s.yConn.Read(s.yReady)
	var buf [8]byte
	unix.Read(s.yfd, buf[:])
}

// yieldReady is yield's read callback. The first time it writes the eventfd and reports not
// ready, so the goroutine parks until the netpoller reports the write; the second time, ready.
// The write is made here, not before the read: the read first forgets any readiness the
// netpoller reported earlier, and an earlier write's could be forgotten with the shard then
// parked for good.
func (s *shard) yieldReady(uintptr) bool {
	if s.yParked {
		return true
	}
	s.yParked = true
	one := [8]byte{1}
	unix.Write(s.yfd, one[:])
	return false
}

// readable reports whether anything the shard sleeps on is ready (level-triggered, no wait).
func (s *shard) readable(fd uintptr) bool {
	n, _ := unix.EpollWait(int(fd), s.epEvents[:], 0)
	return n > 0
}

// run is the shard's loop; it returns when stop is set.
func (s *shard) run() {
	lastWork := pipelines.Now()
	held := lastWork // since when the shard has held its P without sleeping or yielding
	lastSpinYield := int64(0)
	passStart, passWorked := int64(0), false // the previous pass: when it began, whether it found work
	for !s.stop.Load() {
		woke := false // a sleeping shard was readied onto this P
		if !s.pinned {
			woke = s.wakeSleepers()
		}
		if s.kicked.Load() {
			// Cleared before the pass that will see what the kick announced (kick stores
			// its news before kicked), so a kick that lands later stays set for sleep.
			s.kicked.Store(false)
		}
		worked := s.pass() // sets s.now to the pass's start
		if passStart != 0 {
			// The interval since the previous pass began is busy if that pass found work.
			if passWorked {
				s.t.busyNanos += uint64(s.now - passStart)
			} else {
				s.t.idleNanos += uint64(s.now - passStart)
			}
		}
		passStart, passWorked = s.now, worked
		if worked {
			lastWork = s.now
			if lastWork-held >= int64(yieldEvery) {
				// Not on every pass: the goroutine is locked to its thread, so a yield hands
				// the P to another thread and back through futex wake-ups (measured at 13-25%
				// of a core when done per pass). Once per yieldEvery of continuous work lets
				// the timers and goroutines queued on this P run (doc.go).
				s.yield()
				s.t.yields++
				held = pipelines.Now()
			}
			continue
		}
		idle := s.spinIdle
		if s.busyOn {
			idle = s.busyIdle
		}
		if s.now-lastWork < int64(idle) {
			if s.busyOn && s.now-held >= int64(yieldEvery) {
				// A busy-polling shard may poll for long without work (BusyPoll.Idle):
				// it yields as a working one does, so what waits on its P waits ~1 ms.
				s.yield()
				s.t.yields++
				held = pipelines.Now()
				continue
			}
			if !s.pinned && (woke || lastWork > lastSpinYield || s.now-lastSpinYield >= int64(spinYieldGap)) {
				// An unpinned shard's goroutine is not locked to its thread, so a yield is a
				// cheap trip through the run queue: socket users and timers waiting for a P
				// run now instead of after the spin (doc.go). Right after work, which may
				// have readied socket users onto this P, and otherwise every spinYieldGap.
				lastSpinYield = s.now
				runtime.Gosched()
			}
			continue
		}
		if s.originates {
			if d := s.pipe.PunctualDeadline(); d != 0 && d-s.now < int64(punctualSpin) {
				// A punctual stage's deadline is nearer than a sleep can end
				// (pipelines.Punctual): spin to it, yielding as a working shard does.
				if s.now-held >= int64(yieldEvery) {
					s.yield()
					s.t.yields++
					held = pipelines.Now()
				}
				continue
			}
		}
		s.sleep()
		lastWork = pipelines.Now()
		held = lastWork
	}
}

// wakeSleepers, run by an unpinned shard on every pass, wakes every sleeping unpinned shard
// of the process whose rx ring holds frames. A sleeping shard waits in the Go netpoller,
// which only a P with nothing else to run polls (or the runtime's monitor, every 10 ms at
// worst); an unpinned shard yields on every pass of its spin, which keeps the run queues
// busy, and frames that arrived for a sleeper waited until the spin ended: 50-100 µs per
// wake-up in bench/tcppeer at light load (p50 139 µs before, 16 µs after, at 2000
// transactions/s). It costs a load or two per sleeper. The netpoller is the process's, so
// the watch spans engines (bench/tcppeer runs one per host).
func (s *shard) wakeSleepers() (woke bool) {
	for _, p := range running.list() {
		if p == s || p.cpu >= 0 || !p.sleeping.Load() {
			continue
		}
		for _, r := range p.rxReady {
			if r.RxReady() {
				if p.sleeping.CompareAndSwap(true, false) {
					p.wakeNow()
					woke = true
				}
				break
			}
		}
	}
	return woke
}

// running lists the shards of every engine that runs, for wakeSleepers: copied on write
// (an engine starting or stopping), read with one atomic load per pass.
var running shardSet

type shardSet struct {
	mu  sync.Mutex
	cur atomic.Pointer[[]*shard]
}

func (r *shardSet) list() []*shard {
	if l := r.cur.Load(); l != nil {
		return *l
	}
	return nil
}

func (r *shardSet) add(ss []*shard) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := append(append([]*shard(nil), r.list()...), ss...)
	r.cur.Store(&l)
}

func (r *shardSet) remove(ss []*shard) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var l []*shard
	for _, s := range r.list() {
		if !slices.Contains(ss, s) {
			l = append(l, s)
		}
	}
	r.cur.Store(&l)
}

// pass runs the loop once and reports whether it found any work.
func (s *shard) pass() bool {
	// The pass's only clock read: on a VM a read costs tens of nanoseconds, a large share of
	// an empty pass, and run's spin and yield decisions use the same value.
	s.now = pipelines.Now()
	work := s.reap()
	for li, l := range s.q.Links {
		if s.txPending[li] {
			pending, kicks := l.Flush()
			s.txPending[li] = pending
			s.t.kicks += uint64(kicks)
			work = true
		}
	}
	s.refill()
	got := s.receive()
	got += s.takeHanded()
	if got > 0 || s.originates {
		s.batch.NowNanos = s.now
		if got > 0 {
			s.t.polls++
			s.pipe.Run(s.batch)
		}
		if s.originates {
			s.pipe.Originate(s.batch)
		}
		if len(s.batch.Pkts) > 0 {
			s.apply()
			work = true
		}
	}
	s.lendSpares()
	s.t.publish(s.c)
	return work || s.waiting()
}

// reap moves completed transmissions back to the free list.
func (s *shard) reap() bool {
	any := false
	for _, l := range s.q.Links {
		for {
			n := l.Complete(s.addrs)
			for _, a := range s.addrs[:n] {
				s.frames.put(a, placeKernelTx)
			}
			if n > 0 {
				any = true
			}
			if n < len(s.addrs) {
				break
			}
		}
	}
	return any
}

// refill tops each link's fill ring up to its share of the UMEM.
func (s *shard) refill() {
	for li, l := range s.q.Links {
		need := s.fillTgt - s.inKernel[li]
		if need < 32 {
			continue
		}
		if need > len(s.addrs) {
			need = len(s.addrs)
		}
		n := s.frames.get(s.addrs[:need], placeKernelRx)
		if n == 0 {
			s.t.fillEmpty++
			continue
		}
		m := l.Fill(s.addrs[:n])
		s.frames.unget(s.addrs[m:n], placeKernelRx)
		s.inKernel[li] += m
	}
}

// receive takes a batch from the links, handing packets of flows other shards own to them.
func (s *shard) receive() int {
	s.batch.Reset()
	total := 0
	// Packets waiting for an owner's spare frames hold back receiving, so a slow owner leaves
	// frames in the rx ring (where the kernel counts overflow) instead of being dropped here.
	room := cap(s.batch.Pkts)
	for o := range s.pend {
		if r := cap(s.pend[o]) - len(s.pend[o]); r < room {
			room = r
		}
	}
	if room < cap(s.batch.Pkts) {
		s.t.handoffStalls++
	}
	for li, l := range s.q.Links {
		space := cap(s.batch.Pkts) - len(s.batch.Pkts)
		if space > room-total {
			space = room - total
		}
		if space <= 0 {
			break
		}
		polled := false
		if s.busy != nil {
			// Busy polling (doc.go): an empty rx ring is refilled by running the queue's
			// NAPI poll in this system call.
			if b := &s.busy[li]; b.on && !b.p.RxReady() {
				b.p.BusyPoll()
				s.t.busyPolls++
				polled = true
			}
		}
		n := l.Receive(s.rx[:space])
		if n == 0 {
			continue
		}
		if polled {
			s.t.busyPollRx += uint64(n)
		}
		if s.busy != nil && s.busy[li].check {
			s.learnNAPI(li)
		}
		total += n
		s.inKernel[li] -= n
		s.frames.moved(placeKernelRx, placeBatch, n)
		for _, d := range s.rx[:n] {
			s.frames.track(s.frames.base(d.Addr), placeKernelRx, placeBatch)
			s.t.rxPackets++
			s.t.rxBytes += uint64(d.Len)
			if s.owner != nil {
				data := s.mem[d.Addr : d.Addr+uint64(d.Len)]
				if o := s.owner(data, s.nShards); o >= 0 && o != s.id && o < s.nShards {
					s.pipe.TapHandoff(d.Addr, data, uint8(li), o)
					s.pend[o] = append(s.pend[o], handed{addr: d.Addr, len: d.Len, inIf: uint8(li)})
					continue
				}
			}
			s.batch.Pkts = append(s.batch.Pkts, pipelines.Packet{Addr: d.Addr, Len: d.Len, InIf: uint8(li)})
		}
	}
	for o := range s.pend {
		if len(s.pend[o]) > 0 || len(s.stash[o]) > 0 {
			s.handOff(o)
		}
	}
	return len(s.batch.Pkts)
}

// handOff copies packets for owner o into o's spare frames, frees our frames, and publishes
// them to o. Packets for which o has lent no spare yet wait, in our frames, for a later pass;
// while they wait, receive takes less (see receive), and if o lends nothing for stallLimit they
// are dropped as handoff-full.
func (s *shard) handOff(o int) {
	h, peer := s.out[o], s.peers[o]
	if len(s.stash[o]) > 0 {
		n := h.pkts.Push(s.stash[o])
		s.stash[o] = append(s.stash[o][:0], s.stash[o][n:]...)
	}
	p := s.pend[o]
	want := len(p)
	if want > len(s.spares) {
		want = len(s.spares)
	}
	n := h.spare.Pop(s.spares[:want])
	for i := range p[:n] {
		src := p[i]
		dst := s.spares[i] + src.addr&s.mask
		copy(peer.mem[dst:dst+uint64(src.len)], s.mem[src.addr:src.addr+uint64(src.len)])
		s.frames.put(src.addr, placeBatch)
		p[i].addr = dst
	}
	pushed := h.pkts.Push(p[:n])
	s.stash[o] = append(s.stash[o], p[pushed:n]...)
	s.t.handoffOut += uint64(n)
	rest := copy(p, p[n:])
	// An owner that lends no frame for stallLimit is not keeping up (or is stuck): drop what
	// waits for it, counted, so it cannot hold back this shard's own flows for long.
	switch {
	case n > 0 || rest == 0:
		s.stalled[o] = time.Time{}
	case s.stalled[o].IsZero():
		s.stalled[o] = time.Now()
	case time.Since(s.stalled[o]) > stallLimit:
		for _, x := range p[:rest] {
			s.dropFrame(x.addr, pipelines.ReasonHandoffFull)
		}
		rest = 0
		s.stalled[o] = time.Time{}
	}
	s.pend[o] = p[:rest]
	if (n > 0 || rest > 0) && peer.sleeping.Load() {
		peer.wake()
	}
}

// waiting reports whether packets wait for an owner's spare frames.
func (s *shard) waiting() bool {
	for o := range s.pend {
		if len(s.pend[o]) > 0 || len(s.stash[o]) > 0 {
			return true
		}
	}
	return false
}

// takeHanded moves packets other shards handed to us into the batch.
func (s *shard) takeHanded() int {
	got := 0
	for _, h := range s.in {
		if h == nil {
			continue
		}
		space := cap(s.batch.Pkts) - len(s.batch.Pkts)
		if space == 0 {
			break
		}
		n := h.pkts.Pop(s.hand[:space])
		s.frames.moved(placeHandoff, placeBatch, n)
		for _, x := range s.hand[:n] {
			s.frames.track(s.frames.base(x.addr), placeHandoff, placeBatch)
			s.batch.AppendHanded(pipelines.Packet{Addr: x.addr, Len: x.len, Hash: x.hash, InIf: x.inIf, Resume: x.resume})
		}
		got += n
	}
	s.t.handoffIn += uint64(got)
	return got
}

// lendSpares keeps each sender's spare ring stocked, counting frames in flight back to us so
// that the hand-off ring can never overflow.
func (s *shard) lendSpares() {
	for _, h := range s.in {
		if h == nil {
			continue
		}
		want := spareTarget - int(h.spare.Len()+h.pkts.Len())
		if want < 16 {
			continue
		}
		n := s.frames.get(s.addrs[:want], placeHandoff)
		m := h.spare.Push(s.addrs[:n])
		s.frames.unget(s.addrs[m:n], placeHandoff)
	}
}

// apply carries out the pipeline's verdicts.
func (s *shard) apply() {
	for i := range s.batch.Pkts {
		p := &s.batch.Pkts[i]
		switch p.Verdict {
		case pipelines.Transmit:
			if int(p.OutIf) < len(s.tx) {
				s.tx[p.OutIf] = append(s.tx[p.OutIf], afxdp.Desc{Addr: p.Addr, Len: p.Len})
				continue
			}
			s.dropFrame(p.Addr, pipelines.ReasonNoInterface)
		case pipelines.Consume:
			s.frames.put(p.Addr, placeBatch)
		case pipelines.Lend:
			// Counted as lent by Batch.Lend already.
		case pipelines.Handoff:
			o := int(p.ToShard)
			if o >= s.nShards || o == s.id || s.out[o] == nil || len(s.pend[o]) == cap(s.pend[o]) {
				s.dropFrame(p.Addr, pipelines.ReasonHandoffFull)
				continue
			}
			h := handed{addr: p.Addr, len: p.Len, hash: p.Hash, inIf: p.InIf}
			if p.By >= 1 && int(p.By) <= len(s.pipe.Stages) {
				h.resume = p.By // a stage handed it over: the owner resumes there
			}
			s.pend[o] = append(s.pend[o], h)
			s.handing = true
		default:
			s.dropFrame(p.Addr, p.Reason)
		}
	}
	s.batch.Reset()
	if s.handing {
		s.handing = false
		for o := range s.pend {
			if len(s.pend[o]) > 0 {
				s.handOff(o)
			}
		}
	}
	for li, l := range s.q.Links {
		d := s.tx[li]
		if len(d) == 0 {
			continue
		}
		n := l.Transmit(d)
		s.frames.moved(placeBatch, placeKernelTx, n)
		for _, x := range d[:n] {
			s.frames.track(s.frames.base(x.Addr), placeBatch, placeKernelTx)
			s.t.txPackets++
			s.t.txBytes += uint64(x.Len)
		}
		if n < len(d) {
			s.t.txRingFull++
			for _, x := range d[n:] {
				s.dropFrame(x.Addr, pipelines.ReasonTxRingFull)
			}
		}
		s.tx[li] = d[:0]
		pending, kicks := l.Flush()
		s.txPending[li] = pending
		s.t.kicks += uint64(kicks)
	}
}

func (s *shard) dropFrame(addr uint64, r pipelines.DropReason) {
	s.t.drop(r)
	s.frames.put(addr, placeBatch)
}

// sleep waits for received frames, a wake from another shard or the pipeline's next deadline.
// It parks the goroutine in the Go netpoller rather than blocking in poll(2): a thread blocked
// in a system call keeps its P (until the runtime's monitor takes it back, up to 10 ms later),
// and with it the timers and runnable goroutines queued there; a parked goroutine frees it.
func (s *shard) sleep() {
	wait := sleepMax
	for _, p := range s.txPending {
		if p {
			wait = time.Millisecond
		}
	}
	if s.originates {
		if d := s.pipe.NextDeadline(); d != 0 {
			wait = min(wait, time.Duration(d-pipelines.Now()))
		}
	}
	if wait > 0 {
		// Set before sleeping is: a waker that sees sleeping and moves the deadline into the
		// past (wakeNow) does so after this, so its wake is not overwritten.
		s.ep.SetReadDeadline(time.Now().Add(wait))
	}
	s.sleeping.Store(true)
	// kick stores kicked and then loads sleeping, and this stores sleeping and then loads
	// kicked: one of the two sees the other's store, so a kick either finds the shard
	// sleeping (and wakes it) or stops it from going to sleep.
	if s.kicked.Swap(false) {
		s.sleeping.Store(false)
		return
	}
	for _, h := range s.in {
		if h != nil && h.pkts.Len() > 0 {
			s.sleeping.Store(false)
			return
		}
	}
	for _, l := range s.q.Links {
		l.WakeRx()
	}
	if wait > 0 {
		s.epConn.Read(s.epReady)
	}
	s.sleeping.Store(false)
	var buf [8]byte
	unix.Read(s.efd, buf[:])
	s.t.sleeps++
	s.t.publish(s.c)
}

// kick is ShardInfo.Wake: a stage tells the shard that it has news for the shard's next pass
// (a socket write, a control message). It costs a system call only when the shard sleeps; a
// busy or spinning shard finds the news on its own, since stages store their news before
// they kick.
func (s *shard) kick() {
	s.kicked.Store(true)
	if s.sleeping.Load() {
		s.wake()
	}
}

// wake makes a sleeping shard return from sleep. An unpinned shard (cpu < 0, fixed at New,
// so any goroutine may read it) is woken at once (wakeNow); a pinned one through its eventfd
// and the netpoller, so that its goroutine, locked to its own thread, is taken up by a P that
// polls rather than queued on the waker's P (a pinned waker spins without yielding and would
// strand it there: wrk through pinned shards fell from ~70k to ~37k requests/s when pinned
// shards woke each other directly).
func (s *shard) wake() {
	if s.cpu < 0 {
		s.wakeNow()
		return
	}
	one := [8]byte{1}
	unix.Write(s.efd, one[:])
}

// wakeNow makes a sleeping shard return from sleep at once: moving its read deadline into the
// past readies the goroutine parked on the epoll fd in the waker's goroutine, onto the
// waker's P, without waiting for a P to poll the network.
func (s *shard) wakeNow() {
	s.ep.SetReadDeadline(aLongTimeAgo)
}

var aLongTimeAgo = time.Unix(1, 0)

// returnStash gives frames of handed packets that never reached their owner back to it. It
// runs after every shard has stopped.
func (s *shard) returnStash() {
	for o, p := range s.pend {
		for _, x := range p {
			s.dropFrame(x.addr, pipelines.ReasonShutdown)
		}
		s.pend[o] = p[:0]
	}
	for o, st := range s.stash {
		for _, x := range st {
			s.peers[o].frames.put(x.addr, placeHandoff)
			s.t.drop(pipelines.ReasonShutdown)
		}
		s.stash[o] = st[:0]
	}
}

// drain runs after every shard has stopped: it frees what is left in hand-off rings, waits a
// little for transmissions to complete, and checks the frame accounting.
func (s *shard) drain(wait time.Duration) error {
	for _, h := range s.in {
		if h == nil {
			continue
		}
		for {
			n := h.pkts.Pop(s.hand)
			if n == 0 {
				break
			}
			for _, x := range s.hand[:n] {
				s.t.drop(pipelines.ReasonShutdown)
				s.frames.put(x.addr, placeHandoff)
			}
		}
		for {
			n := h.spare.Pop(s.addrs)
			if n == 0 {
				break
			}
			for _, a := range s.addrs[:n] {
				s.frames.put(a, placeHandoff)
			}
		}
	}
	deadline := time.Now().Add(wait)
	for s.frames.count[placeKernelTx] > 0 && time.Now().Before(deadline) {
		for li, l := range s.q.Links {
			pending, kicks := l.Flush()
			s.txPending[li] = pending
			s.t.kicks += uint64(kicks)
		}
		if !s.reap() {
			time.Sleep(time.Millisecond)
		}
	}
	s.t.publish(s.c)
	s.ep.Close()
	s.yf.Close()
	unix.Close(s.efd)
	return s.frames.check()
}
