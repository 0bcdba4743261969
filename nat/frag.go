package nat

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// Fragmented datagrams (RFC 4787 REQ-14; doc.go, "Fragments"). Only a datagram's first
// fragment carries its ports, so the first fragment decides, as an unfragmented packet would be
// decided, what happens to the whole datagram (a fragAction), and the shard remembers that
// decision under the datagram's (source, destination, protocol, IP ID, direction) until the
// datagram is complete or FragmentLimits.Timeout has passed. Fragments that arrive before their
// first fragment are copied out and held, within per-source and per-shard limits, and sent on
// when the first fragment has decided; if it never comes they are dropped at the timeout.

// FragmentLimits bound what a shard keeps of fragmented datagrams; zero fields take the
// defaults. A shard's fragment memory is at most Held frames' worth (Held × the UMEM frame
// size) plus Datagrams small records.
type FragmentLimits struct {
	// Timeout is how long a shard keeps what it knows of a datagram, counted from the first of
	// its fragments to arrive: the decision of its first fragment, and the fragments held
	// waiting for it (default 5 s).
	Timeout time.Duration
	// Held bounds the early fragments (those that come before their datagram's first
	// fragment) a shard holds at once (default 256).
	Held int
	// HeldPerSource bounds the early fragments a shard holds from one source address (default
	// 64: a whole 64 KiB datagram in 1500-byte fragments).
	HeldPerSource int
	// Datagrams bounds the fragmented datagrams a shard tracks at once (default 1024).
	Datagrams int
}

// withDefaults fills the zero limits; negative ones are errors.
func (l FragmentLimits) withDefaults() (FragmentLimits, error) {
	if l.Timeout < 0 || l.Held < 0 || l.HeldPerSource < 0 || l.Datagrams < 0 {
		return l, fmt.Errorf("nat: fragment limits %+v: want positive values (0: the default)", l)
	}
	if l.Timeout == 0 {
		l.Timeout = 5 * time.Second
	}
	if l.Held == 0 {
		l.Held = 256
	}
	if l.HeldPerSource == 0 {
		l.HeldPerSource = 64
	}
	if l.Datagrams == 0 {
		l.Datagrams = 1024
	}
	return l, nil
}

// Drop reasons of fragments.
var (
	// ReasonFragTimeout: an early fragment whose datagram's first fragment did not come
	// within FragmentLimits.Timeout.
	ReasonFragTimeout = pipelines.RegisterReason("nat-frag-timeout")
	// ReasonFragBufferFull: an early fragment over FragmentLimits.Held or HeldPerSource.
	ReasonFragBufferFull = pipelines.RegisterReason("nat-frag-buffer-full")
	// ReasonFragTableFull: a fragment of a new datagram while the shard tracks
	// FragmentLimits.Datagrams of them.
	ReasonFragTableFull = pipelines.RegisterReason("nat-frag-table-full")
)

// FragmentStats are the NAT's fragment figures, summed over shards (doc.go, "Fragments").
type FragmentStats struct {
	In         uint64 `json:"in"`         // fragments received, both directions
	Translated uint64 `json:"translated"` // fragments translated (a hairpinned one twice)
	// IDs counts the outbound datagrams given a new IP ID (one per first fragment).
	IDs uint64 `json:"ids_rewritten"`
	// Held counts early fragments held for their datagram's first fragment, Released those
	// sent on once it came; HeldNow and DatagramsNow are what the shards hold now.
	Held         uint64 `json:"held"`
	Released     uint64 `json:"released"`
	HeldNow      int64  `json:"held_now"`
	DatagramsNow int64  `json:"datagrams_now"`
	// Drops: held fragments whose first fragment never came (nat-frag-timeout), early
	// fragments over Held (BufferFull) or HeldPerSource (SourceLimit), both
	// nat-frag-buffer-full; fragments of new datagrams over Datagrams
	// (nat-frag-table-full); malformed fragments (nat-bad-fragment).
	Timeouts    uint64 `json:"timeouts"`
	BufferFull  uint64 `json:"buffer_full"`
	SourceLimit uint64 `json:"source_limit"`
	TableFull   uint64 `json:"table_full"`
	Bad         uint64 `json:"bad"`
}

// fragCounters are one shard's fragment figures; its shard writes them, anyone reads them.
type fragCounters struct {
	in, translated, ids, held, released, timeouts, bufferFull, sourceLimit, tableFull, bad atomic.Uint64
	heldNow, datagramsNow                                                                  atomic.Int64
}

func (c *fragCounters) addTo(st *FragmentStats) {
	st.In += c.in.Load()
	st.Translated += c.translated.Load()
	st.IDs += c.ids.Load()
	st.Held += c.held.Load()
	st.Released += c.released.Load()
	st.HeldNow += c.heldNow.Load()
	st.DatagramsNow += c.datagramsNow.Load()
	st.Timeouts += c.timeouts.Load()
	st.BufferFull += c.bufferFull.Load()
	st.SourceLimit += c.sourceLimit.Load()
	st.TableFull += c.tableFull.Load()
	st.Bad += c.bad.Load()
}

// fragKey names one datagram at one shard: its addresses, protocol and IP ID as it arrives,
// and its direction (in: towards the inside; the two halves of a hairpin are two datagrams).
type fragKey struct {
	src, dst [4]byte
	id       uint16
	proto    uint8
	in       bool
}

// fragKind is what a datagram's first fragment decided for its other fragments.
type fragKind uint8

const (
	actNone fragKind = iota // not decided yet: the first fragment has not come
	actOut                  // translate the source to the outside address and the ID to id
	actIn                   // translate the destination to addr
	actHand                 // hand to shard, which owns the mapping
	actDrop                 // drop with reason
)

type fragAction struct {
	kind    fragKind
	hairpin bool  // actOut: then on to the inbound half, at shard; actIn: no TTL decrement
	shard   uint8 // actHand, and actOut with hairpin
	reason  pipelines.DropReason
	id      uint16  // actOut: the datagram's new IP ID
	addr    [4]byte // actIn: the inside host
}

func dropAction(r pipelines.DropReason) fragAction { return fragAction{kind: actDrop, reason: r} }

type fragSpan struct{ lo, hi int32 }

// maxFragSpans bounds the disjoint byte ranges a datagram's record follows; a datagram
// whose fragments come more scattered than that is kept until its timeout.
const maxFragSpans = 16

// maxIPPayload is the largest payload of an IPv4 datagram.
const maxIPPayload = 65535 - header.IPv4MinLen

type fragEntry struct {
	key   fragKey
	act   fragAction
	used  bool
	first int64 // when the first of its fragments to arrive came
	// Which payload bytes have passed, to forget the datagram once all have: total is the
	// payload length, known from the last fragment (-1 before); untracked gives up on it
	// (too scattered, or inconsistent), leaving it to the timeout.
	total     int32
	spans     [maxFragSpans]fragSpan
	nspan     uint8
	untracked bool
	// The early fragments held, in arrival order (indexes of fragTable.slots; -1: none).
	heldHead, heldTail, nheld int32
	prev, next                int32 // arrival order of datagrams, oldest first; -1 ends
}

// heldFrag is one early fragment's copy: the whole frame, and the interface it came in on.
type heldFrag struct {
	data []byte
	inIf uint8
	src  [4]byte
	next int32
}

// fragRelease is a held fragment on its way out, with what its first fragment decided.
type fragRelease struct {
	slot int32
	act  fragAction
}

// fragTable is one shard's fragment state; only its shard touches it.
type fragTable struct {
	timeout  int64
	lim      FragmentLimits
	entries  []fragEntry
	freeE    []int32
	index    map[fragKey]int32
	head     int32 // oldest datagram, -1: none
	tail     int32
	slots    []heldFrag
	freeS    []int32
	perSrc   map[[4]byte]int32
	rel      []fragRelease // held fragments to send on, from relHead
	relHead  int
	slotSize int
	idCtr    [256]uint16
}

func (t *fragTable) init(lim FragmentLimits) {
	t.lim, t.timeout = lim, int64(lim.Timeout)
	t.entries = make([]fragEntry, lim.Datagrams)
	t.freeE = make([]int32, lim.Datagrams)
	for i := range t.freeE {
		t.freeE[i] = int32(lim.Datagrams - 1 - i)
	}
	t.index = make(map[fragKey]int32, lim.Datagrams)
	t.head, t.tail = -1, -1
	t.slots = make([]heldFrag, lim.Held)
	t.freeS = make([]int32, lim.Held)
	for i := range t.freeS {
		t.freeS[i] = int32(lim.Held - 1 - i)
	}
	t.perSrc = make(map[[4]byte]int32, lim.Held)
	t.rel = make([]fragRelease, 0, lim.Held)
	t.slotSize = 2048
	// Each (destination, protocol) bucket's IDs start at a random point (RFC 7739: IDs
	// should not be predictable from outside).
	for i := range t.idCtr {
		t.idCtr[i] = uint16(rand.Uint32())
	}
}

func (t *fragTable) lookup(k fragKey) (int32, bool) {
	ei, ok := t.index[k]
	return ei, ok
}

// add starts a record for datagram k; false when the table is full.
func (t *fragTable) add(k fragKey, now int64) (int32, bool) {
	if len(t.freeE) == 0 {
		return 0, false
	}
	ei := t.freeE[len(t.freeE)-1]
	t.freeE = t.freeE[:len(t.freeE)-1]
	t.entries[ei] = fragEntry{key: k, used: true, first: now, total: -1, heldHead: -1, heldTail: -1, prev: t.tail, next: -1}
	if t.tail >= 0 {
		t.entries[t.tail].next = ei
	} else {
		t.head = ei
	}
	t.tail = ei
	t.index[k] = ei
	return ei, true
}

// remove forgets datagram ei; its held fragments must be gone (released or dropped).
func (t *fragTable) remove(ei int32) {
	e := &t.entries[ei]
	if e.prev >= 0 {
		t.entries[e.prev].next = e.next
	} else {
		t.head = e.next
	}
	if e.next >= 0 {
		t.entries[e.next].prev = e.prev
	} else {
		t.tail = e.prev
	}
	delete(t.index, e.key)
	*e = fragEntry{}
	t.freeE = append(t.freeE, ei)
}

// hold copies an early fragment (its whole frame) into a free slot of datagram ei; it returns
// the counter and reason of a drop when a limit is reached.
func (t *fragTable) hold(ei int32, frame []byte, inIf uint8, c *fragCounters) pipelines.DropReason {
	e := &t.entries[ei]
	if len(t.freeS) == 0 {
		c.bufferFull.Add(1)
		return ReasonFragBufferFull
	}
	if t.perSrc[e.key.src] >= int32(t.lim.HeldPerSource) {
		c.sourceLimit.Add(1)
		return ReasonFragBufferFull
	}
	si := t.freeS[len(t.freeS)-1]
	t.freeS = t.freeS[:len(t.freeS)-1]
	sl := &t.slots[si]
	if cap(sl.data) < len(frame) {
		sl.data = make([]byte, 0, max(len(frame), t.slotSize))
	}
	sl.data = append(sl.data[:0], frame...)
	sl.inIf, sl.src, sl.next = inIf, e.key.src, -1
	if e.heldTail >= 0 {
		t.slots[e.heldTail].next = si
	} else {
		e.heldHead = si
	}
	e.heldTail = si
	e.nheld++
	t.perSrc[e.key.src]++
	c.held.Add(1)
	c.heldNow.Add(1)
	return 0
}

// unheld takes slot si off its source's count (it is leaving the buffer).
func (t *fragTable) unheld(si int32) {
	src := t.slots[si].src
	if n := t.perSrc[src] - 1; n > 0 {
		t.perSrc[src] = n
	} else {
		delete(t.perSrc, src)
	}
}

func (t *fragTable) freeSlot(si int32, c *fragCounters) {
	t.freeS = append(t.freeS, si)
	c.heldNow.Add(-1)
}

// release queues datagram ei's held fragments to be sent on with its decision.
func (t *fragTable) release(ei int32) {
	e := &t.entries[ei]
	for si := e.heldHead; si >= 0; si = t.slots[si].next {
		t.unheld(si)
		if len(t.rel) == cap(t.rel) && t.relHead > 0 {
			n := copy(t.rel, t.rel[t.relHead:])
			t.rel, t.relHead = t.rel[:n], 0
		}
		t.rel = append(t.rel, fragRelease{slot: si, act: e.act})
	}
	e.heldHead, e.heldTail, e.nheld = -1, -1, 0
}

// cover records that payload bytes off..end of datagram e passed (last: the fragment without
// MF); true once every byte has.
func (e *fragEntry) cover(off, end int, last bool) bool {
	if last {
		if e.total >= 0 && int(e.total) != end {
			e.untracked = true
		}
		e.total = int32(end)
	}
	if e.untracked {
		return false
	}
	s := fragSpan{int32(off), int32(end)}
	var out [maxFragSpans + 1]fragSpan
	n, placed := 0, false
	for _, h := range e.spans[:e.nspan] {
		switch {
		case h.hi < s.lo:
			out[n] = h
			n++
		case s.hi < h.lo:
			if !placed {
				out[n] = s
				n++
				placed = true
			}
			out[n] = h
			n++
		default: // overlapping or touching: merge into s
			s.lo, s.hi = min(s.lo, h.lo), max(s.hi, h.hi)
		}
	}
	if !placed {
		out[n] = s
		n++
	}
	if n > maxFragSpans {
		e.untracked = true
		return false
	}
	copy(e.spans[:], out[:n])
	e.nspan = uint8(n)
	return e.total >= 0 && n == 1 && e.spans[0].lo == 0 && e.spans[0].hi == e.total
}

// newID is the IP ID of the next outbound fragmented datagram to dst: a counter per bucket
// of (destination, protocol), and each shard takes the IDs congruent to its index modulo the
// shard count, so no two datagrams the shards send to one remote within 65536/shards
// datagrams share an ID (RFC 6864).
func (t *fragTable) newID(dst [4]byte, proto uint8, shard, shards int) uint16 {
	if shards < 1 {
		shards = 1
	}
	h := (be32(dst)*0x9e3779b1 ^ uint32(proto)*0x85ebca6b) >> 24
	per := 65536 / shards
	c := int(t.idCtr[h]) % per
	t.idCtr[h] = uint16((c + 1) % per)
	return uint16(c*shards + shard)
}

// fragOwner is the shard that owns a fragment from outside: one chosen from its datagram's
// addresses, protocol and IP ID, which every fragment of the datagram carries.
func fragOwner(ip header.IPv4, shards int) int {
	k := binary.BigEndian.Uint32(ip[12:16]) ^ binary.BigEndian.Uint32(ip[16:20])*31 ^
		uint32(ip.ID())*0x9e3779b1 ^ uint32(ip.Protocol())<<24
	k ^= k >> 16
	k *= 0x7feb352d
	k ^= k >> 15
	k *= 0x846ca68b
	k ^= k >> 16
	return int(k % uint32(shards))
}

// fragment takes a fragment the shard owns (Process found it fragmented) to the direction
// it goes in.
func (s *Shard) fragment(b *pipelines.Batch, i int, ip header.IPv4, now int64) {
	s.fctr.in.Add(1)
	dst, inIf := ip.Dst4(), int(b.Pkts[i].InIf)
	switch { // (Process took the hairpin's second half, and spoofed sources)
	case dst == s.n.inside:
		b.ToStack(i) // to the NAT box: the stack reassembles
	case inIf == Inside:
		s.fragIn(b, i, ip, false, now)
	case dst != s.n.outside:
		b.Drop(i, ReasonNotForUs)
	default:
		s.fragIn(b, i, ip, true, now)
	}
}

// fragIn handles fragment i of a datagram going in (towards the inside) or out: its first
// fragment is translated as a whole packet would be and decides for the others; the others
// follow that decision, or wait for it.
func (s *Shard) fragIn(b *pipelines.Batch, i int, ip header.IPv4, in bool, now int64) {
	t := &s.frag
	off, n, proto := ip.FragmentOffset(), len(ip.Payload()), ip.Protocol()
	end := off + n
	// Fragments that cannot be part of a datagram, and TCP fragments that would overlap the
	// TCP header written by the first (RFC 1858), are dropped.
	if end > maxIPPayload || (ip.MF() && (n == 0 || n%8 != 0)) || (proto == header.ProtoTCP && off > 0 && off < header.TCPMinLen) {
		s.fctr.bad.Add(1)
		b.Drop(i, ReasonFragment)
		return
	}
	k := fragKey{src: ip.Src4(), dst: ip.Dst4(), id: ip.ID(), proto: proto, in: in}
	ei, ok := t.lookup(k)
	if !ok {
		if ei, ok = t.add(k, now); !ok {
			s.fctr.tableFull.Add(1)
			b.Drop(i, ReasonFragTableFull)
			return
		}
		s.fctr.datagramsNow.Add(1)
	}
	e := &t.entries[ei] // the table never moves its entries
	switch {
	case off == 0: // the first fragment, or a copy of it
		var a fragAction
		if in {
			a = s.inbound(b, i, ip, now, true)
		} else {
			a = s.outbound(b, i, ip, now, e)
		}
		if a.kind == actOut || a.kind == actIn {
			s.fctr.translated.Add(1)
		}
		if a.kind == actOut {
			s.fctr.ids.Add(1)
		}
		e.act = a
		t.release(ei)
	case e.act.kind != actNone:
		s.applyFrag(b, i, ip, e.act, now)
	default:
		if r := t.hold(ei, b.Data(i)[:header.EthernetLen+len(ip)], b.Pkts[i].InIf, &s.fctr); r != 0 {
			b.Drop(i, r)
			if e.nheld == 0 {
				t.remove(ei)
				s.fctr.datagramsNow.Add(-1)
			}
			return
		}
		b.Pkts[i].Verdict = pipelines.Consume // a copy is held
	}
	if e.cover(off, end, !ip.MF()) && e.act.kind != actNone {
		t.remove(ei)
		s.fctr.datagramsNow.Add(-1)
	}
}

// applyFrag does to fragment i (not a first fragment) what its datagram's first fragment
// decided.
func (s *Shard) applyFrag(b *pipelines.Batch, i int, ip header.IPv4, a fragAction, now int64) {
	switch a.kind {
	case actDrop:
		b.Drop(i, a.reason)
	case actHand:
		b.HandTo(i, int(a.shard))
	case actOut:
		if !decTTL(ip) {
			b.Drop(i, ReasonTTL)
			return
		}
		setSrcID(ip, s.n.outside, a.id)
		s.n.ctr.Translated.Add(1)
		s.fctr.translated.Add(1)
		if a.hairpin {
			if int(a.shard) != s.id {
				b.Pkts[i].InIf = hairpinIf
				b.HandTo(i, int(a.shard))
				return
			}
			s.fragIn(b, i, ip, true, now)
			return
		}
		s.st.Forward(b, i)
	case actIn:
		if !a.hairpin && !decTTL(ip) { // a hairpinned packet had its TTL lowered on the way out
			b.Drop(i, ReasonTTL)
			return
		}
		old := ip.Dst4()
		ip.SetDst4(a.addr)
		ip.SetChecksum(header.UpdateChecksum32(ip.Checksum(), old, a.addr))
		s.n.ctr.Translated.Add(1)
		s.fctr.translated.Add(1)
		s.st.Forward(b, i)
	default:
		b.Drop(i, ReasonFragment)
	}
}

// setSrcID writes a fragment's new source address and IP ID, updating the header checksum.
func setSrcID(ip header.IPv4, src [4]byte, id uint16) {
	old := ip.Src4()
	ip.SetSrc4(src)
	c := header.UpdateChecksum32(ip.Checksum(), old, src)
	oid := ip.ID()
	ip.SetID(id)
	ip.SetChecksum(header.UpdateChecksum16(c, oid, id))
}

// setID gives a first fragment its datagram's new IP ID.
func setID(ip header.IPv4, id uint16) {
	oid := ip.ID()
	ip.SetID(id)
	ip.SetChecksum(header.UpdateChecksum16(ip.Checksum(), oid, id))
}

// flushFrags sends on the held fragments whose first fragment has decided, in new frames of
// the batch, as long as it has room (the rest wait for the next pass).
func (s *Shard) flushFrags(b *pipelines.Batch) {
	t := &s.frag
	for t.relHead < len(t.rel) {
		r := t.rel[t.relHead]
		sl := &t.slots[r.slot]
		j, d, ok := b.Alloc(len(sl.data), pipelines.Drop)
		if !ok {
			break
		}
		t.relHead++ // before applying: a hairpin's inbound half may queue more
		copy(d, sl.data)
		b.Pkts[j].InIf = sl.inIf
		t.freeSlot(r.slot, &s.fctr)
		s.fctr.released.Add(1)
		s.applyFrag(b, j, header.IPv4(d[header.EthernetLen:]), r.act, b.NowNanos)
	}
	if t.relHead == len(t.rel) {
		t.rel, t.relHead = t.rel[:0], 0
	}
}

// expireFrags forgets datagrams older than the timeout; their held fragments are dropped as
// nat-frag-timeout, each in a frame of the batch so that the shard counts the drop (while the
// batch has no room, the next pass does it).
func (s *Shard) expireFrags(b *pipelines.Batch, now int64) {
	t := &s.frag
	for t.head >= 0 {
		ei := t.head
		e := &t.entries[ei]
		if now-e.first <= t.timeout || int(e.nheld) > b.Room() {
			return
		}
		for si := e.heldHead; si >= 0; si = t.slots[si].next {
			sl := &t.slots[si]
			if j, d, ok := b.Alloc(len(sl.data), pipelines.Drop); ok {
				copy(d, sl.data)
				b.Pkts[j].InIf = sl.inIf
				b.Drop(j, ReasonFragTimeout)
			}
			s.fctr.timeouts.Add(1)
			t.unheld(si)
			t.freeSlot(si, &s.fctr)
		}
		t.remove(ei)
		s.fctr.datagramsNow.Add(-1)
	}
}

// fragOriginate is the Originate part of fragments: held fragments to send on, and
// datagrams to forget.
func (s *Shard) fragOriginate(b *pipelines.Batch, now int64) {
	if s.frag.relHead < len(s.frag.rel) {
		s.flushFrags(b)
	}
	s.expireFrags(b, now)
}

// fragDeadline is when the shard wants its next pass for fragments: at once while held
// fragments wait to be sent on, else when the oldest datagram expires (0: none).
func (s *Shard) fragDeadline() int64 {
	t := &s.frag
	if t.relHead < len(t.rel) {
		return 1
	}
	if t.head >= 0 {
		return t.entries[t.head].first + t.timeout + 1
	}
	return 0
}
