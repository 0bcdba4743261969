package stack

import (
	"net/netip"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// maxDatagrams bounds how many datagrams one shard reassembles at once.
const maxDatagrams = 256

const maxIPPayload = 65535 - header.IPv4MinLen

type span struct{ lo, hi int }

// dgram is one datagram being reassembled.
type dgram struct {
	src, dst [4]byte
	id       uint16
	proto    uint8
	ttl      uint8
	data     []byte
	have     []span // received byte ranges, sorted and merged
	total    int    // payload length, known once the last fragment arrived; -1 before
	first    int64
}

// reassembler rebuilds fragmented datagrams within a memory budget and a time limit (RFC 791,
// with the overlap handling of RFC 5722 relaxed to "later bytes win", as Linux does for IPv4).
type reassembler struct {
	limit   int
	used    int
	timeout int64
	list    []*dgram
}

func (r *reassembler) init(limit int, timeout int64) { r.limit, r.timeout = limit, timeout }

func (r *reassembler) count() int { return len(r.list) }

func (r *reassembler) remove(k int) {
	r.used -= cap(r.list[k].data)
	r.list = append(r.list[:k], r.list[k+1:]...)
}

// evictOldest drops the oldest datagram other than keep; false if there is none.
func (r *reassembler) evictOldest(keep *dgram) bool {
	best := -1
	for k, d := range r.list {
		if d != keep && (best < 0 || d.first < r.list[best].first) {
			best = k
		}
	}
	if best < 0 {
		return false
	}
	r.remove(best)
	return true
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
	bad := end > maxIPPayload || (ip.MF() && len(pl)%8 != 0) || (!ip.MF() && d != nil && d.total >= 0 && d.total != end)
	if d != nil && d.total >= 0 && end > d.total {
		bad = true
	}
	if bad {
		if d != nil {
			r.remove(k)
		}
		return nil, ReasonBadFragment
	}
	if d == nil {
		if len(r.list) >= maxDatagrams && !r.evictOldest(nil) {
			return nil, ReasonReasmLimit
		}
		d = &dgram{src: src, dst: dst, id: id, proto: proto, total: -1, first: now}
		r.list = append(r.list, d)
	}
	if off == 0 {
		d.ttl = ip.TTL()
	}
	if !ip.MF() {
		d.total = end
	}
	if end > len(d.data) {
		if end > cap(d.data) {
			n := 2048
			for n < end {
				n <<= 1
			}
			if n > maxIPPayload {
				n = maxIPPayload
			}
			for r.used+n-cap(d.data) > r.limit {
				if !r.evictOldest(d) {
					r.dropDgram(d)
					return nil, ReasonReasmLimit
				}
			}
			grown := make([]byte, len(d.data), n)
			copy(grown, d.data)
			r.used += n - cap(d.data)
			d.data = grown
		}
		d.data = d.data[:end]
	}
	copy(d.data[off:end], pl)
	d.have = addSpan(d.have, span{off, end})
	if d.total < 0 || len(d.have) != 1 || d.have[0].lo != 0 || d.have[0].hi != d.total {
		return nil, 0
	}
	out := make([]byte, header.IPv4MinLen+d.total)
	header.EncodeIPv4(out, header.IPv4Fields{TotalLength: len(out), ID: id, TTL: d.ttl, Protocol: proto,
		Src: netip.AddrFrom4(src), Dst: netip.AddrFrom4(dst)})
	copy(out[header.IPv4MinLen:], d.data[:d.total])
	r.dropDgram(d)
	return out, 0
}

func (r *reassembler) dropDgram(d *dgram) {
	for k, x := range r.list {
		if x == d {
			r.remove(k)
			return
		}
	}
}

// addSpan inserts s into sorted, merged spans.
func addSpan(have []span, s span) []span {
	out := have[:0:0]
	placed := false
	for _, h := range have {
		switch {
		case h.hi < s.lo:
			out = append(out, h)
		case s.hi < h.lo:
			if !placed {
				out = append(out, s)
				placed = true
			}
			out = append(out, h)
		default: // overlapping or touching: merge into s
			if h.lo < s.lo {
				s.lo = h.lo
			}
			if h.hi > s.hi {
				s.hi = h.hi
			}
		}
	}
	if !placed {
		out = append(out, s)
	}
	return out
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
