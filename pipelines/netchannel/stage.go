package netchannel

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/netchan/netchan/flowtree"
	"github.com/netchan/netchan/pipelines"
)

// stage is a Set's stage on one shard: it finds each packet's channel in the shard's flow
// tree and lends the frame to the channel's lane, and on every pass it takes back what the
// readers returned (Originate). Everything but ops and the counters belongs to the shard.
type stage struct {
	set   *Set
	shard int
	info  pipelines.ShardInfo
	tree  *flowtree.Tree
	lanes []*lane // by flow tree handle
	live  []*lane // lanes with an entry or lent frames: what Originate looks at
	touch []*lane // lanes this batch delivered to
	buf   []desc

	mu      sync.Mutex
	ops     []op
	pending atomic.Bool
	started chan struct{}

	fragments atomic.Uint64 // non-first IPv4 fragments seen (they carry no ports)
}

// op is a change of the shard's flow tree, made on the shard's goroutine.
type op struct {
	insert bool
	spec   flowtree.Spec
	h      flowtree.Handle
	ln     *lane
	done   chan error
}

func newStage(set *Set, shard int) *stage {
	return &stage{set: set, shard: shard, tree: flowtree.New(set.cfg.MaxChannels),
		lanes: make([]*lane, set.cfg.MaxChannels), buf: make([]desc, 64), started: make(chan struct{})}
}

func (st *stage) Name() string { return "netchannel" }

// Start records the shard's facts; the Set waits for it before opening channels.
func (st *stage) Start(info pipelines.ShardInfo) {
	st.info = info
	close(st.started)
}

// Process lends every packet whose flow has a channel to that channel's lane. Packets of no
// channel stay undecided for the stages after it.
func (st *stage) Process(b *pipelines.Batch) {
	if st.tree.Len() == 0 {
		return
	}
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != pipelines.Continue {
			continue
		}
		data := b.Data(i)
		h, ok := st.lookup(data)
		if !ok {
			continue
		}
		ln := st.lanes[h]
		if ln == nil || ln.removed || ln.closing.Load() {
			b.Drop(i, reasonClosing)
			if ln != nil {
				ln.ctr.drops[dropClosing].Add(1)
			}
			continue
		}
		if ln.lentN >= ln.ch.lendCap {
			b.Drop(i, reasonLendCap)
			ln.ctr.drops[dropLendCap].Add(1)
			continue
		}
		if len(ln.staged) == 0 {
			// The reader only makes room, so what is free now is free at deliver.
			ln.room = ln.rx.Size() - int(ln.rx.Len())
		}
		if len(ln.staged) >= ln.room {
			b.Drop(i, reasonQueueFull)
			ln.ctr.drops[dropQueueFull].Add(1)
			continue
		}
		if len(ln.staged) == 0 {
			st.touch = append(st.touch, ln)
		}
		if !b.Lend(i) {
			continue // a shard that cannot lend (no engine): leave it to the pipeline
		}
		ln.lentN++
		ln.staged = append(ln.staged, desc{addr: p.Addr, n: p.Len, ifc: p.InIf})
	}
	for _, ln := range st.touch {
		st.deliver(ln)
	}
	st.touch = st.touch[:0]
}

// lookup finds the channel of an Ethernet/IPv4 TCP or UDP packet. Non-first fragments carry
// no ports and are counted, never delivered.
func (st *stage) lookup(data []byte) (flowtree.Handle, bool) {
	if len(data) < 14+20 || data[12] != 0x08 || data[13] != 0x00 {
		return 0, false
	}
	ip := data[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl+4 {
		return 0, false
	}
	proto := ip[9]
	if proto != 6 && proto != 17 {
		return 0, false
	}
	if binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
		st.fragments.Add(1)
		return 0, false
	}
	l4 := ip[ihl:]
	return st.tree.Lookup(proto, [4]byte(ip[16:20]), [4]byte(ip[12:16]),
		binary.BigEndian.Uint16(l4[2:4]), binary.BigEndian.Uint16(l4[0:2]))
}

// deliver pushes a lane's staged packets onto its rx ring (Process made sure they fit) and
// wakes a sleeping reader, once per batch.
func (st *stage) deliver(ln *lane) {
	var bytes uint64
	for _, d := range ln.staged {
		bytes += uint64(d.n)
	}
	n := ln.rx.Push(ln.staged)
	if n != len(ln.staged) {
		panic("netchannel: rx ring overflow") // room was checked, and only the reader pops
	}
	ln.staged = ln.staged[:0]
	if n > 0 {
		ln.ctr.received.Add(uint64(n))
		ln.ctr.bytes.Add(bytes)
		ln.lent.Store(int64(ln.lentN))
		ln.ch.notify()
	}
}

// Originate applies the Set's pending tree changes and takes back what readers returned:
// released frames are freed, frames to send are transmitted, and the lanes that asked for
// empty frames get them.
func (st *stage) Originate(b *pipelines.Batch) {
	if st.pending.Load() {
		st.applyOps()
	}
	keep := st.live[:0]
	for _, ln := range st.live {
		st.takeBack(b, ln)
		st.stockSpares(b, ln)
		if ln.removed && ln.lentN == 0 {
			ln.ch.laneDone(ln)
			continue
		}
		keep = append(keep, ln)
	}
	clear(st.live[len(keep):])
	st.live = keep
}

func (st *stage) NextDeadline() int64 { return 0 }

func (st *stage) applyOps() {
	st.mu.Lock()
	ops := st.ops
	st.ops = nil
	st.pending.Store(false)
	st.mu.Unlock()
	for _, o := range ops {
		if o.insert {
			err := st.tree.InsertSpec(o.spec, o.h)
			if err == nil {
				st.lanes[o.h] = o.ln
				st.live = append(st.live, o.ln)
			}
			o.done <- err
			continue
		}
		st.tree.DeleteSpec(o.spec)
		if ln := st.lanes[o.h]; ln != nil {
			ln.removed = true
			st.lanes[o.h] = nil
		}
		o.done <- nil
	}
}

// do queues a tree change for the shard's goroutine and wakes the shard.
func (st *stage) do(o op) {
	st.mu.Lock()
	st.ops = append(st.ops, o)
	st.pending.Store(true)
	st.mu.Unlock()
	if st.info.Wake != nil { // a harness without a shard loop runs passes on its own
		st.info.Wake()
	}
}

// takeBack adopts the frames a lane's reader returned.
func (st *stage) takeBack(b *pipelines.Batch, ln *lane) {
	room := b.Room()
	if room == 0 {
		return
	}
	n := ln.back.Pop(st.buf[:min(room, len(st.buf))])
	var sent, released uint64
	for _, d := range st.buf[:n] {
		v := pipelines.Consume
		if d.op == opSend {
			v = pipelines.Transmit
		}
		i, ok := b.Adopt(d.addr, d.n, d.ifc, v)
		if !ok { // cannot happen: room was checked; keep the accounting honest anyway
			panic("netchannel: batch refused an adopted frame")
		}
		if d.op == opSend {
			b.Pkts[i].OutIf = d.ifc
			sent++
		} else {
			released++
		}
	}
	if n > 0 {
		ln.lentN -= n
		ln.lent.Store(int64(ln.lentN))
		ln.ctr.sent.Add(sent)
		ln.ctr.released.Add(released)
	}
}

// stockSpares lends empty frames to a lane whose reader allocates, within its cap.
func (st *stage) stockSpares(b *pipelines.Batch, ln *lane) {
	want := int(ln.wantSpare.Load()) - int(ln.spare.Len())
	if want <= 0 || ln.removed {
		return
	}
	want = min(want, ln.ch.lendCap-ln.lentN, ln.spare.Size()-int(ln.spare.Len()), len(st.buf))
	got := 0
	for ; got < want; got++ {
		i, _, ok := b.Alloc(0, pipelines.Lend)
		if !ok {
			break
		}
		st.buf[got] = desc{addr: b.Pkts[i].Addr}
	}
	if got == 0 {
		return
	}
	if n := ln.spare.Push(st.buf[:got]); n != got {
		panic("netchannel: spare ring overflow") // want was bounded by its free room
	}
	ln.lentN += got
	ln.lent.Store(int64(ln.lentN))
}
