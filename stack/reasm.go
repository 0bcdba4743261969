package stack

import (
	"net/netip"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// maxDatagrams bounds how many datagrams one shard reassembles at once, and maxPieces how many
// separate pieces one datagram may arrive in (a 65535-byte datagram at the 576-byte MTU every
// host must accept comes in 119 fragments).
const (
	maxDatagrams = 256
	maxPieces    = 256
)

// What the budget (Config.ReassemblyBytes) charges beyond the bytes held: a piece's slice
// header and allocation, a datagram's record.
const (
	pieceOverhead = 64
	dgramOverhead = 256
	maxIPPayload  = 65535 - header.IPv4MinLen
)

// span is a run [lo, hi) of a datagram's payload.
type span struct{ lo, hi int }

// piece is a run of a datagram's payload that has arrived, at offset off.
type piece struct {
	off  int
	data []byte
}

func (p piece) end() int { return p.off + len(p.data) }

// dgram is one datagram being reassembled.
type dgram struct {
	src, dst [4]byte
	id       uint16
	proto    uint8
	ttl      uint8
	pieces   []piece // disjoint, in offset order: what has arrived
	held     int     // payload bytes in pieces
	cost     int     // what the budget is charged: held plus the overheads
	total    int     // payload length, known once the last fragment arrived; -1 before
	first    int64   // when the first fragment arrived: the timeout runs from here
	last     uint64  // the reassembler's fragment count at its latest fragment: the idlest go first
}

// reassembler rebuilds fragmented datagrams within a memory budget and a time limit (RFC 791).
// Overlapping fragments are taken as they come, later bytes winning (RFC 5722's discard of
// the datagram is for IPv6).
//
// The budget is charged for what arrived, not for what a fragment claims: a datagram is held
// as the pieces that came (each a copy of a fragment's new bytes), so an 8-byte fragment at
// offset 65000 costs its 8 bytes and an overhead, not a 64 KiB buffer. When a fragment needs
// room, the datagrams idle longest (whose latest fragment came first) give way, each counted in
// Stats.ReasmEvicted: a flood of incomplete datagrams pushes out its own kind first, and a
// datagram whose fragments keep coming completes as long as less than the budget's worth of
// other fragments (their bytes and overheads) arrives between two of its own. A fragment that
// cannot be held at all (its datagram alone outgrows the budget) is dropped with reason
// reassembly-limit, and its datagram is given up.
type reassembler struct {
	limit   int
	used    int
	timeout int64
	list    []*dgram
	frags   uint64 // fragments taken so far (dgram.last)
	evicted int    // datagrams given up to keep within the budget, not yet counted in Stats
}

func (r *reassembler) init(limit int, timeout int64) { r.limit, r.timeout = limit, timeout }

func (r *reassembler) count() int { return len(r.list) }

func (r *reassembler) remove(k int) {
	r.used -= r.list[k].cost
	r.list = append(r.list[:k], r.list[k+1:]...)
}

// evictIdlest gives up the datagram other than keep whose latest fragment came first; false
// if there is none.
func (r *reassembler) evictIdlest(keep *dgram) bool {
	best := -1
	for k, d := range r.list {
		if d != keep && (best < 0 || d.last < r.list[best].last) {
			best = k
		}
	}
	if best < 0 {
		return false
	}
	r.remove(best)
	r.evicted++
	return true
}

// takeEvicted returns the evictions since the last call.
func (r *reassembler) takeEvicted() int {
	n := r.evicted
	r.evicted = 0
	return n
}

// add takes one fragment; it returns the whole datagram (IPv4 header and payload) once
// complete, or a drop reason for a fragment that cannot be used.
func (r *reassembler) add(ip header.IPv4, now int64) ([]byte, pipelines.DropReason) {
	src, dst, id, proto := ip.Src4(), ip.Dst4(), ip.ID(), ip.Protocol()
	var d *dgram
	k := -1
	for i, x := range r.list {
		if x.id == id && x.src == src && x.dst == dst && x.proto == proto {
			d, k = x, i
			break
		}
	}
	off, pl := ip.FragmentOffset(), ip.Payload()
	end := off + len(pl)
	bad := end > maxIPPayload || (ip.MF() && len(pl)%8 != 0)
	if d != nil && d.total >= 0 && (end > d.total || (!ip.MF() && end != d.total)) {
		bad = true // past the end, or a second, different end
	}
	if d != nil && !ip.MF() && len(d.pieces) > 0 && d.pieces[len(d.pieces)-1].end() > end {
		bad = true // an end before bytes that arrived
	}
	if bad {
		if d != nil {
			r.remove(k)
		}
		return nil, ReasonBadFragment
	}
	// What this fragment adds: the runs of [off, end) no piece holds yet.
	var buf [4]span
	newGaps, added := gaps(d, off, end, buf[:0])
	if d != nil && len(d.pieces)+len(newGaps) > maxPieces {
		r.remove(k)
		return nil, ReasonBadFragment
	}
	cost := added + pieceOverhead*len(newGaps)
	if d == nil {
		cost += dgramOverhead
	}
	for (d == nil && len(r.list) >= maxDatagrams) || r.used+cost > r.limit {
		if !r.evictIdlest(d) {
			if d != nil {
				r.dropDgram(d)
				r.evicted++
			}
			return nil, ReasonReasmLimit
		}
	}
	if d == nil {
		d = &dgram{src: src, dst: dst, id: id, proto: proto, total: -1, first: now, cost: dgramOverhead}
		r.list = append(r.list, d)
		r.used += dgramOverhead
		cost -= dgramOverhead
	}
	r.frags++
	d.last = r.frags
	if off == 0 {
		d.ttl = ip.TTL()
	}
	if !ip.MF() {
		d.total = end
	}
	// Later bytes win: overwrite what overlaps, then add the gaps as new pieces.
	for _, p := range d.pieces {
		if lo, hi := max(p.off, off), min(p.end(), end); lo < hi {
			copy(p.data[lo-p.off:hi-p.off], pl[lo-off:hi-off])
		}
	}
	for _, g := range newGaps {
		d.pieces = insertPiece(d.pieces, piece{off: g.lo, data: append([]byte(nil), pl[g.lo-off:g.hi-off]...)})
	}
	d.held += added
	d.cost += cost
	r.used += cost
	if d.total < 0 || d.held != d.total {
		return nil, 0
	}
	out := make([]byte, header.IPv4MinLen+d.total)
	header.EncodeIPv4(out, header.IPv4Fields{TotalLength: len(out), ID: id, TTL: d.ttl, Protocol: proto,
		Src: netip.AddrFrom4(src), Dst: netip.AddrFrom4(dst)})
	for _, p := range d.pieces {
		copy(out[header.IPv4MinLen+p.off:], p.data)
	}
	r.dropDgram(d)
	return out, 0
}

// gaps appends to out the runs of [off, end) that none of d's pieces holds, and returns them
// with their total length.
func gaps(d *dgram, off, end int, out []span) ([]span, int) {
	n, at := 0, off
	if d != nil {
		for _, p := range d.pieces {
			if p.end() <= at {
				continue
			}
			if p.off >= end {
				break
			}
			if p.off > at {
				out = append(out, span{at, p.off})
				n += p.off - at
			}
			at = p.end()
		}
	}
	if at < end {
		out = append(out, span{at, end})
		n += end - at
	}
	return out, n
}

// insertPiece puts p into pieces, which are disjoint and in offset order.
func insertPiece(pieces []piece, p piece) []piece {
	i := len(pieces)
	for i > 0 && pieces[i-1].off > p.off {
		i--
	}
	pieces = append(pieces, piece{})
	copy(pieces[i+1:], pieces[i:])
	pieces[i] = p
	return pieces
}

func (r *reassembler) dropDgram(d *dgram) {
	for k, x := range r.list {
		if x == d {
			r.remove(k)
			return
		}
	}
}

// expire drops datagrams older than the timeout and returns how many.
func (r *reassembler) expire(now int64) int {
	n := 0
	for k := 0; k < len(r.list); {
		if now-r.list[k].first > r.timeout {
			r.remove(k)
			n++
			continue
		}
		k++
	}
	return n
}

// deadline is when the oldest datagram expires (0: none).
func (r *reassembler) deadline() int64 {
	var d int64
	for _, x := range r.list {
		if t := x.first + r.timeout + 1; d == 0 || t < d {
			d = t
		}
	}
	return d
}
