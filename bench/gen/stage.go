package gen

import (
	"encoding/binary"
	"math"

	"github.com/netchan/netchan/pipelines"
)

// Drop reasons of the analyser: received packets that are not replies of the running trial.
var (
	ReasonForeign   = pipelines.RegisterReason("gen-foreign")   // no payload header
	ReasonStale     = pipelines.RegisterReason("gen-stale")     // a reply of another trial or run
	ReasonLate      = pipelines.RegisterReason("gen-late")      // a reply after the trial's results were taken
	ReasonMisrouted = pipelines.RegisterReason("gen-misrouted") // a reply of another shard's packet (no owner function)
)

// trial is what one measurement asks of every shard; Gen.Begin publishes it and each shard
// starts its own schedule at the first pass that sees it.
type trial struct {
	number   int
	id       uint16  // the payload's run field
	perShard float64 // packets per second per shard; 0: send nothing, only count replies
	duration int64   // ns
	drain    int64   // ns to wait for replies after the last packet
	maxLag   int64   // ns: slots due longer ago than this are skipped (Missed)
}

// shardResult is what a shard reports for a trial, copied once when the trial ends.
type shardResult struct {
	number                  int
	sent, txBytes, missed   uint64
	t0, txEnd               int64
	rxPkts, rxBytes         uint64
	stale, foreign, misrout uint64
	first, last             int64     // first and last reply times
	lateness                Histogram // how late each packet left: its pass's clock − its slot's time
	tracker                 Tracker
	hist                    Histogram
}

// shardGen is one shard's generator and analyser state, shared by its two stages; only the
// shard's goroutine touches it, except the copy it publishes under Gen.mu.
type shardGen struct {
	g             *Gen
	shard, shards int
	outIf         int
	tmpls         []template
	flowIDs       []uint16
	sizes         []int
	wake          func()

	trial     *trial
	started   bool
	published bool
	t0, stop  int64
	publishAt int64
	total     uint64 // slots of the trial
	k         uint64 // slots used (sent or missed)
	fi, si    int
	deadline  int64
	res       shardResult
}

// sync starts a new trial when Gen.Begin has published one.
func (s *shardGen) sync() {
	t := s.g.cur.Load()
	if t == s.trial {
		return
	}
	s.trial = t
	s.started, s.published = false, false
	s.k, s.total, s.fi, s.si, s.deadline = 0, 0, 0, 0, 0
	s.res = shardResult{}
	s.res.tracker.Reset()
	if t != nil {
		s.res.number = t.number
	}
}

// slotTime is when slot k is due: t0 + k/rate.
func (s *shardGen) slotTime(k uint64) int64 {
	return s.t0 + int64(math.Ceil(float64(k)*1e9/s.trial.perShard))
}

// generator is the stage that sends: an Originator paced by the batch clock.
type generator struct{ s *shardGen }

func (g *generator) Name() string                   { return "gen-tx" }
func (g *generator) Process(*pipelines.Batch)       {}
func (g *generator) Start(info pipelines.ShardInfo) { g.s.start(info) }
func (g *generator) NextDeadline() int64            { return g.s.deadline }

// Punctual makes the shard spin, rather than sleep, while the next slot is under a
// millisecond away (pipelines.Punctual): the netpoller's sleeps end on whole milliseconds,
// which left packets ~0.5 ms late at the median at 1 and 10 kpps per shard; spinning, 40-60
// ns. Below 1 kpps per shard the next slot is further away after each packet and the shard
// still sleeps (packets ~0.5 ms late at the median at 500 per second). Waking a millisecond
// early and spinning the rest was tried: with two pinned shards on the 2-core lab machine,
// shards then stalled for over 100 ms at times (1 kpps on 2 queues: 1-3% of the slots
// missed), unpinned they did not. Config.Sleep turns punctuality off.
func (g *generator) Punctual() bool { return !g.s.g.cfg.Sleep }

func (g *generator) Originate(b *pipelines.Batch) {
	s := g.s
	s.sync()
	t := s.trial
	if t == nil || s.published {
		s.deadline = 0
		return
	}
	now := b.NowNanos
	if !s.started {
		s.started = true
		s.t0, s.stop = now, now+t.duration
		s.publishAt = s.stop + t.drain
		s.res.t0 = now
		if t.perShard > 0 {
			s.total = uint64(math.Ceil(float64(t.duration) * t.perShard / 1e9))
		}
	}
	if s.k < s.total && now-s.stop >= t.maxLag {
		// Too late for the rest: a trial sends for at most its duration and maxLag.
		s.res.missed += s.total - s.k
		s.k = s.total
	}
	if s.k < s.total {
		// Slots due by now: slot k is due at t0 + k/rate, so k ≤ (now-t0)·rate.
		due := min(uint64(float64(max(now-s.t0, 0))*t.perShard/1e9)+1, s.total)
		if now-s.slotTime(s.k) > t.maxLag {
			// Fallen behind by more than maxLag: skip the slots due before now-maxLag.
			keep := uint64(float64(t.maxLag)*t.perShard/1e9) + 1
			if due > s.k+keep {
				s.res.missed += due - keep - s.k
				s.k = due - keep
			}
		}
		s.send(b, due, now)
	}
	switch {
	case s.k < s.total:
		s.deadline = max(s.slotTime(s.k), now)
		if len(b.Pkts) == cap(b.Pkts) || s.deadline == now {
			s.deadline = now // the batch was full or no frame was free: come back at once
		}
	case now < s.publishAt:
		s.deadline = s.publishAt
	default:
		s.publish()
		s.deadline = 0
	}
}

// send fills the batch with the packets of slots s.k..due-1, as far as it has room and the
// shard has free frames.
func (s *shardGen) send(b *pipelines.Batch, due uint64, now int64) {
	t := s.trial
	for s.k < due {
		n := s.sizes[s.si]
		i, d, ok := b.Alloc(n, pipelines.Transmit)
		if !ok {
			return
		}
		b.Pkts[i].OutIf = uint8(s.outIf)
		s.res.lateness.Record(now - s.slotTime(s.k))
		s.tmpls[s.fi].write(d[:cap(d)], n, Payload{Run: t.id, Shard: uint8(s.shard), Flow: s.flowIDs[s.fi],
			Seq: uint32(s.res.sent), TxTime: uint32(now)})
		s.res.sent++
		s.res.txBytes += uint64(n)
		s.res.txEnd = now
		s.k++
		if s.fi++; s.fi == len(s.tmpls) {
			s.fi = 0
		}
		if s.si++; s.si == len(s.sizes) {
			s.si = 0
		}
	}
}

func (s *shardGen) publish() {
	s.published = true
	g := s.g
	g.mu.Lock()
	g.results[s.shard] = s.res
	g.mu.Unlock()
	g.notify()
}

// analyser is the stage that counts replies of this shard's packets.
type analyser struct{ s *shardGen }

func (a *analyser) Name() string { return "gen-rx" }

func (a *analyser) Process(b *pipelines.Batch) {
	s := a.s
	s.sync()
	now := b.NowNanos
	for i := range b.Pkts {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		d := b.Data(i)
		pl, ok := payloadOf(d)
		switch {
		case !ok:
			s.res.foreign++
			b.Drop(i, ReasonForeign)
			continue
		case s.trial == nil || binary.BigEndian.Uint16(pl[2:4]) != s.trial.id:
			s.res.stale++
			b.Drop(i, ReasonStale)
			continue
		case s.published:
			b.Drop(i, ReasonLate)
			continue
		case int(pl[4]) != s.shard:
			s.res.misrout++
			b.Drop(i, ReasonMisrouted)
			continue
		}
		tr := &s.res.tracker
		tr.See(tr.Extend(binary.BigEndian.Uint32(pl[8:12])))
		s.res.hist.Record(int64(uint32(now) - binary.BigEndian.Uint32(pl[12:16])))
		if s.res.rxPkts == 0 {
			s.res.first = now
		}
		s.res.last = now
		s.res.rxPkts++
		s.res.rxBytes += uint64(len(d))
		b.Pkts[i].Verdict = pipelines.Consume
	}
}

// Owner sends a reply to the shard whose packet it answers (the payload's tx shard), so each
// sequence space is tracked by one shard; anything else stays where it arrived.
func Owner(data []byte, shards int) int {
	pl, ok := payloadOf(data)
	if !ok || int(pl[4]) >= shards {
		return -1
	}
	return int(pl[4])
}
