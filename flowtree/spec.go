package flowtree

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
)

// Spec describes a set of flows by shape: each of the five fields is exact
// or any, and each address may also be a prefix. Spec is how netchannels
// claim flows; Insert and InsertListener are shorthands for the three shapes
// of connections and listeners.
//
// A zero Prefix (or a /0) means any address; a /32 is exact. A spec whose
// shape is a listener's (protocol, local address or any, local port, remote
// address and port any) is a listener: InsertListener and InsertSpec make the
// same entry, and as for listeners an exact local address 0.0.0.0 means any.
// IPv4-mapped IPv6 prefixes are not accepted.
type Spec struct {
	Proto         uint8
	AnyProto      bool
	Local         netip.Prefix
	LocalPort     uint16
	AnyLocalPort  bool
	Remote        netip.Prefix
	RemotePort    uint16
	AnyRemotePort bool
}

// ExactSpec returns the spec of one exact flow, the entry Insert(k) makes.
func ExactSpec(k Key) Spec {
	return Spec{Proto: k.Proto, Local: prefix32(k.LocalAddr), LocalPort: k.LocalPort,
		Remote: prefix32(k.RemoteAddr), RemotePort: k.RemotePort}
}

// ListenerSpec returns the spec of a listener, the entry
// InsertListener(proto, local, port) makes. A zero local Addr or 0.0.0.0 means
// any local address.
func ListenerSpec(proto uint8, local netip.Addr, port uint16) Spec {
	s := Spec{Proto: proto, LocalPort: port, AnyRemotePort: true}
	if local.IsValid() && !local.IsUnspecified() {
		s.Local = prefix32(local)
	}
	return s
}

func prefix32(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// String formats s as "proto local:port<-remote:port" with * for any field.
func (s Spec) String() string {
	f := func(any bool, v uint16) string {
		if any {
			return "*"
		}
		return fmt.Sprint(v)
	}
	p := func(x netip.Prefix) string {
		if !x.IsValid() || x.Bits() == 0 {
			return "*"
		}
		if x.Bits() == x.Addr().BitLen() {
			return x.Addr().String()
		}
		return x.Masked().String()
	}
	proto := f(s.AnyProto, uint16(s.Proto))
	return fmt.Sprintf("%s %s:%s<-%s:%s", proto, p(s.Local), f(s.AnyLocalPort, s.LocalPort), p(s.Remote), f(s.AnyRemotePort, s.RemotePort))
}

// ErrAmbiguous means an InsertSpec whose flows overlap those of an entry
// that is as specific (see the package doc): a packet in both would have two
// owners.
var ErrAmbiguous = errors.New("flowtree: spec is ambiguous")

// ErrTooManyShapes means an insert whose shape would be the 16th in use.
var ErrTooManyShapes = errors.New("flowtree: too many shapes in use")

// A shape descriptor (desc) says which fields a trie matches:
//
//	bit 0 proto exact, bit 1 local port exact, bit 2 remote port exact,
//	bits 3-8 local prefix length, bits 9-14 remote prefix length,
//	bits 15-16 kind (0 listener, 1 exact flow, 2 other spec)
const (
	dProto   = 1
	dLPort   = 2
	dRPort   = 4
	dLShift  = 3
	dRShift  = 9
	dKShift  = 15
	kindSpec = 2

	// maxShapes is how many shapes may be in use at once: the probe order
	// is packed in one 64-bit word, four bits per shape.
	maxShapes = 15

	descExact    = dProto | dLPort | dRPort | 32<<dLShift | 32<<dRShift | kindExact<<dKShift
	descListener = dProto | dLPort | 32<<dLShift | kindListener<<dKShift
	descAnyLis   = dProto | dLPort | kindListener<<dKShift
)

// fields is a flow key with the fields a shape does not match zeroed.
type fields struct {
	proto  uint8
	la, ra uint32
	lp, rp uint16
}

func prefixMask(bits uint32) uint32 { return ^uint32(0) << (32 - bits) }

// mask zeroes the fields that shape d does not match.
func (f fields) mask(d uint32) fields {
	f.proto &= uint8(0 - d&dProto)
	f.lp &= uint16(0 - (d>>1)&1)
	f.rp &= uint16(0 - (d>>2)&1)
	f.la &= prefixMask(d >> dLShift & 63)
	f.ra &= prefixMask(d >> dRShift & 63)
	return f
}

func (f *fields) key(d uint32) key {
	return makeKey(f.proto, f.la, f.lp, f.ra, f.rp, d>>dKShift&3)
}

// tkey returns the trie form of the entry (d, f), its kind included.
func (f *fields) tkey(d uint32) (uint64, uint64) {
	k0, k1 := tkey(f.proto, f.la, f.lp, f.ra, f.rp)
	return k0, k1 | uint64(d>>dKShift&3)<<16
}

// set assigns shape d to the slot: its descriptor and the masks lookups
// apply to a packet's key before they probe the slot's trie.
func (s *shapeSlot) set(d uint32) {
	all := fields{proto: 0xff, la: ^uint32(0), ra: ^uint32(0), lp: 0xffff, rp: 0xffff}
	m := all.mask(d)
	m0, m1 := tkey(m.proto, m.la, m.lp, m.ra, m.rp)
	atomic.StoreUint64(&s.m0, m0)
	atomic.StoreUint64(&s.m1, m1)
	atomic.StoreUint64(&s.kind, uint64(d>>dKShift&3)<<16)
	atomic.StoreUint32(&s.desc, d)
}

func fieldsOf(q *key) fields {
	return fields{proto: q.proto(), la: q.laddr(), lp: q.lport(), ra: q.raddr(), rp: q.rport()}
}

// rank orders shapes from the most specific: first by the number of exact
// fields (an address is exact at /32), then by the total prefix length of
// the two addresses.
func rank(d uint32) uint32 {
	lb, rb := d>>dLShift&63, d>>dRShift&63
	n := d&1 + d>>1&1 + d>>2&1
	if lb == 32 {
		n++
	}
	if rb == 32 {
		n++
	}
	return n<<8 | (lb + rb)
}

// encode returns the shape and the masked fields of s.
func (s Spec) encode() (uint32, fields, error) {
	var d uint32
	var f fields
	if !s.AnyProto {
		d |= dProto
		f.proto = s.Proto
	}
	if !s.AnyLocalPort {
		d |= dLPort
		f.lp = s.LocalPort
	}
	if !s.AnyRemotePort {
		d |= dRPort
		f.rp = s.RemotePort
	}
	pfx := func(p netip.Prefix) (uint32, uint32, error) {
		if !p.IsValid() {
			return 0, 0, nil
		}
		if !p.Addr().Is4() {
			return 0, 0, fmt.Errorf("%w: %v: prefixes must be IPv4", ErrInvalidKey, s)
		}
		a, _ := addr4(p.Masked().Addr())
		return a, uint32(p.Bits()), nil
	}
	la, lb, err := pfx(s.Local)
	if err != nil {
		return 0, f, err
	}
	ra, rb, err := pfx(s.Remote)
	if err != nil {
		return 0, f, err
	}
	f.la, f.ra = la, ra
	kind := uint32(kindSpec)
	switch {
	case d == dProto|dLPort|dRPort && lb == 32 && rb == 32:
		kind = kindExact
	case d == dProto|dLPort && rb == 0 && (lb == 32 || lb == 0):
		kind = kindListener
		if la == 0 {
			lb = 0 // 0.0.0.0 is any, as for InsertListener
		}
	}
	d |= lb<<dLShift | rb<<dRShift | kind<<dKShift
	return d, f, nil
}

// specOf returns the spec of the entry with shape d and key q.
func specOf(d uint32, q *key) Spec {
	f := fieldsOf(q)
	s := Spec{Proto: f.proto, AnyProto: d&dProto == 0, LocalPort: f.lp, AnyLocalPort: d&dLPort == 0,
		RemotePort: f.rp, AnyRemotePort: d&dRPort == 0}
	if lb := int(d >> dLShift & 63); lb > 0 {
		s.Local = netip.PrefixFrom(addrFrom(f.la), lb)
	}
	if rb := int(d >> dRShift & 63); rb > 0 {
		s.Remote = netip.PrefixFrom(addrFrom(f.ra), rb)
	}
	return s
}

// InsertSpec adds an entry for the flows of s. Errors wrap ErrExists (the
// same spec is there), ErrAmbiguous (s overlaps an entry that is as
// specific), ErrFull, ErrTooManyShapes or ErrInvalidKey.
func (t *Tree) InsertSpec(s Spec, h Handle) error {
	d, f, err := s.encode()
	if err != nil {
		return err
	}
	return t.insertErr(d, f, h)
}

// DeleteSpec removes the entry of s and reports whether there was one.
func (t *Tree) DeleteSpec(s Spec) bool {
	d, f, err := s.encode()
	if err != nil {
		return false
	}
	return t.delete(d, f)
}

// ReplaceSpec sets the handle of the entry of s and reports whether there
// was one. Concurrent readers see the old or the new handle.
func (t *Tree) ReplaceSpec(s Spec, h Handle) bool {
	d, f, err := s.encode()
	if err != nil {
		return false
	}
	return t.replace(d, f, h)
}

// GetSpec returns the handle of the entry of exactly s, without looking at
// other shapes. Like Lookup it is safe to call concurrently with the writer.
func (t *Tree) GetSpec(s Spec) (Handle, bool) {
	d, f, err := s.encode()
	if err != nil {
		return 0, false
	}
	return t.get(d, f)
}

// Specs calls fn for every entry, connections and listeners included, as a
// Spec, shape by shape from the most specific, in no order within a shape.
// Unlike Ascend it must run on the writer's goroutine, and fn must not
// modify the tree.
func (t *Tree) Specs(fn func(Spec, Handle) bool) {
	for o := t.order.Load(); o != 0; o >>= 4 {
		sl := &t.shapes[o&15-1]
		d := sl.desc
		if !t.shapeLeaves(int(o&15-1), func(li uint32) bool {
			q := t.leaves[li].key()
			return fn(specOf(d, &q), Handle(t.leaves[li].h.Load()))
		}) {
			return
		}
	}
}

// slotFor returns the slot of shape d, assigning one if create is set.
func (t *Tree) slotFor(d uint32, create bool) (int, error) {
	switch d {
	case descExact:
		return 0, nil
	case descListener:
		return 1, nil
	case descAnyLis:
		return 2, nil
	}
	for i := range t.shapes {
		if t.shapeUsed[i] && t.shapes[i].desc == d {
			return i, nil
		}
	}
	if !create {
		return -1, nil
	}
	free := -1
	for i := range t.shapes {
		if !t.shapeUsed[i] {
			free = i
			break
		}
	}
	if free < 0 {
		for i := 3; i < maxShapes; i++ { // an assigned shape with no entries
			if t.shapeN[i] == 0 {
				free = i
				break
			}
		}
		if free < 0 {
			return -1, ErrTooManyShapes
		}
		// A reader that loaded an older probe order may still probe this
		// slot: make it retry.
		t.gen.Add(1)
	}
	t.shapeUsed[free] = true
	t.shapes[free].set(d)
	return free, nil
}

// publishOrder stores the probe order: the shapes with entries, most
// specific first.
func (t *Tree) publishOrder() {
	var buf [maxShapes]int
	in := buf[:0]
	for i := range t.shapes {
		if t.shapeN[i] > 0 {
			in = append(in, i)
		}
	}
	slices.SortStableFunc(in, func(a, b int) int {
		return int(rank(t.shapes[b].desc)) - int(rank(t.shapes[a].desc))
	})
	var o uint64
	for j := len(in) - 1; j >= 0; j-- {
		o = o<<4 | uint64(in[j]+1)
	}
	t.order.Store(o)
}

// ambiguous returns an entry of another shape as specific as d that
// overlaps the flows (d, f), if there is one. It walks those shapes' tries:
// such shapes are rare (connections and the two listener shapes all differ
// in rank), and this runs on inserts only.
func (t *Tree) ambiguous(d uint32, f fields) (Spec, bool) {
	if t.specShapes == 0 && d>>dKShift&3 != kindSpec || d == descExact {
		return Spec{}, false // the built-in shapes never tie with each other
	}
	r := rank(d)
	var found Spec
	var hit bool
	for i := range t.shapes {
		od := t.shapes[i].desc
		if t.shapeN[i] == 0 || od == d || rank(od) != r {
			continue
		}
		common := d & od & (dProto | dLPort | dRPort)
		common |= min(d>>dLShift&63, od>>dLShift&63)<<dLShift | min(d>>dRShift&63, od>>dRShift&63)<<dRShift
		mine := f.mask(common)
		t.shapeLeaves(i, func(li uint32) bool {
			q := t.leaves[li].key()
			if fieldsOf(&q).mask(common) == mine {
				found, hit = specOf(od, &q), true
				return false
			}
			return true
		})
		if hit {
			return found, true
		}
	}
	return found, false
}
