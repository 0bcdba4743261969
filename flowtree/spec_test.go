package flowtree

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// nspec is the model's normal form of a Spec: what it matches, spelled out.
type nspec struct {
	anyProto     bool
	proto        uint8
	lbits, rbits int // 0: any, 32: exact
	la, ra       uint32
	anyLP, anyRP bool
	lp, rp       uint16
}

func normSpec(s Spec) nspec {
	n := nspec{anyProto: s.AnyProto, anyLP: s.AnyLocalPort, anyRP: s.AnyRemotePort}
	if !n.anyProto {
		n.proto = s.Proto
	}
	if !n.anyLP {
		n.lp = s.LocalPort
	}
	if !n.anyRP {
		n.rp = s.RemotePort
	}
	if s.Local.IsValid() {
		n.lbits = s.Local.Bits()
		n.la, _ = addr4(s.Local.Masked().Addr())
	}
	if s.Remote.IsValid() {
		n.rbits = s.Remote.Bits()
		n.ra, _ = addr4(s.Remote.Masked().Addr())
	}
	// The documented listener rule: in a listener's shape, local 0.0.0.0 is any.
	if !n.anyProto && !n.anyLP && n.anyRP && n.rbits == 0 && n.lbits == 32 && n.la == 0 {
		n.lbits = 0
	}
	return n
}

func (n nspec) shape() [5]int {
	b := func(any bool) int {
		if any {
			return 0
		}
		return 1
	}
	return [5]int{b(n.anyProto), n.lbits, b(n.anyLP), n.rbits, b(n.anyRP)}
}

// rank is the documented order: exact fields, then total prefix length.
func (n nspec) rank() [2]int {
	e := 0
	for _, x := range []bool{!n.anyProto, n.lbits == 32, !n.anyLP, n.rbits == 32, !n.anyRP} {
		if x {
			e++
		}
	}
	return [2]int{e, n.lbits + n.rbits}
}

// fixed reports whether n has one of the three shapes of connections and
// listeners, which do not count against the shape limit.
func (n nspec) fixed() bool {
	full := !n.anyProto && !n.anyLP
	return full && (!n.anyRP && n.lbits == 32 && n.rbits == 32 || n.anyRP && n.rbits == 0 && (n.lbits == 0 || n.lbits == 32))
}

func inPfx(a, p uint32, bits int) bool { return bits == 0 || a>>(32-bits) == p>>(32-bits) }

func (n nspec) matches(proto uint8, la, ra uint32, lp, rp uint16) bool {
	return (n.anyProto || n.proto == proto) && inPfx(la, n.la, n.lbits) && inPfx(ra, n.ra, n.rbits) &&
		(n.anyLP || n.lp == lp) && (n.anyRP || n.rp == rp)
}

func (n nspec) overlaps(o nspec) bool {
	b := min(n.lbits, o.lbits)
	c := min(n.rbits, o.rbits)
	return (n.anyProto || o.anyProto || n.proto == o.proto) && inPfx(n.la, o.la, b) && inPfx(n.ra, o.ra, c) &&
		(n.anyLP || o.anyLP || n.lp == o.lp) && (n.anyRP || o.anyRP || n.rp == o.rp)
}

type specModel struct {
	m        map[nspec]Handle
	capacity int
}

// lookup returns the most specific match, failing the test if two entries
// of the best rank match (the tree must have refused one of them).
func (m *specModel) lookup(t testing.TB, proto uint8, la, ra uint32, lp, rp uint16) (Handle, bool) {
	var best nspec
	var h Handle
	found := false
	for n, v := range m.m {
		if !n.matches(proto, la, ra, lp, rp) {
			continue
		}
		switch {
		case !found || cmpRank(n.rank(), best.rank()) > 0:
			best, h, found = n, v, true
		case cmpRank(n.rank(), best.rank()) == 0:
			t.Fatalf("model: %+v and %+v both match with the same rank", n, best)
		}
	}
	return h, found
}

func cmpRank(a, b [2]int) int {
	if a[0] != b[0] {
		return a[0] - b[0]
	}
	return a[1] - b[1]
}

// wantInsert returns the error InsertSpec must return (a sentinel), or nil.
func (m *specModel) wantInsert(n nspec) error {
	used := map[[5]int]bool{}
	for e := range m.m {
		if !e.fixed() {
			used[e.shape()] = true
		}
	}
	if !n.fixed() && !used[n.shape()] && len(used) >= maxShapes-3 {
		return ErrTooManyShapes
	}
	if _, ok := m.m[n]; ok {
		return ErrExists
	}
	if len(m.m) >= m.capacity {
		return ErrFull
	}
	for e := range m.m {
		if e.shape() != n.shape() && e.rank() == n.rank() && e.overlaps(n) {
			return ErrAmbiguous
		}
	}
	return nil
}

// specGen draws specs and packets from small value sets, so that specs
// overlap, tie in rank and shadow each other, with every field exact, a
// prefix or any.
type specGen struct {
	protos []uint8
	addrs  []netip.Addr
	bits   []int
	ports  []uint16
}

var defaultSpecGen = specGen{
	protos: []uint8{6, 17},
	addrs:  []netip.Addr{a4("198.18.0.1"), a4("198.18.0.2"), a4("198.18.1.1"), a4("10.0.0.1"), a4("0.0.0.0"), a4("198.19.255.255")},
	bits:   []int{0, 16, 24, 32, 32, 32, 8, 32},
	ports:  []uint16{80, 443, 0, 65535},
}

// spec builds a spec from the bits of sel.
func (g *specGen) spec(sel uint32) Spec {
	s := Spec{
		Proto:         g.protos[sel&1],
		AnyProto:      sel>>1&7 == 0,
		Local:         netip.PrefixFrom(g.addrs[int(sel>>4)%len(g.addrs)], g.bits[int(sel>>7)%len(g.bits)]),
		LocalPort:     g.ports[sel>>10&3],
		AnyLocalPort:  sel>>12&3 == 0,
		Remote:        netip.PrefixFrom(g.addrs[int(sel>>14)%len(g.addrs)], g.bits[int(sel>>17)%len(g.bits)]),
		RemotePort:    g.ports[sel>>20&3],
		AnyRemotePort: sel>>22&1 == 0,
	}
	if sel>>23&3 == 0 { // a connection
		s.AnyProto, s.AnyLocalPort, s.AnyRemotePort = false, false, false
		s.Local, s.Remote = prefix32(s.Local.Addr()), prefix32(s.Remote.Addr())
	}
	if sel>>25&3 == 0 { // a listener
		s.AnyProto, s.AnyLocalPort, s.AnyRemotePort, s.Remote = false, false, true, netip.Prefix{}
		if sel>>27&1 == 0 {
			s.Local = netip.Prefix{}
		} else {
			s.Local = prefix32(s.Local.Addr())
		}
	}
	if sel>>28&7 == 0 {
		s.Local = netip.Prefix{} // the zero Prefix: any
	}
	return s
}

func (g *specGen) packet(sel uint32) (proto uint8, la, ra uint32, lp, rp uint16) {
	a := func(i uint32) uint32 {
		x, _ := addr4(g.addrs[int(i)%len(g.addrs)])
		if i/8%4 == 0 {
			x ^= 1 << (i / 32 % 32) // a neighbour, inside or outside prefixes
		}
		return x
	}
	return g.protos[sel&1], a(sel >> 1 & 0xff), a(sel >> 9 & 0xff), g.ports[sel>>17&3], g.ports[sel>>19&3]
}

// step applies one operation, chosen by op, to the tree and the model.
func (m *specModel) step(t testing.TB, tr *Tree, g *specGen, opn int, op uint8, sel uint32, h Handle) {
	s := g.spec(sel)
	n := normSpec(s)
	switch op % 8 {
	case 0, 1, 2: // insert
		err := tr.InsertSpec(s, h)
		want := m.wantInsert(n)
		if want == nil && err == nil {
			m.m[n] = h
		} else if want == nil || !errors.Is(err, want) {
			t.Fatalf("op %d: InsertSpec(%v) = %v, want %v", opn, s, err, want)
		}
		if errors.Is(err, ErrAmbiguous) && !strings.Contains(err.Error(), "as specific") {
			t.Fatalf("op %d: ambiguity error does not explain itself: %v", opn, err)
		}
	case 3, 4: // delete, mostly a present spec
		if len(m.m) > 0 && op%2 == 0 {
			keys := make([]nspec, 0, len(m.m))
			for k := range m.m {
				keys = append(keys, k)
			}
			slices.SortFunc(keys, func(a, b nspec) int { return slices.Compare(a.words(), b.words()) })
			n = keys[int(sel)%len(keys)]
			s = specOfN(n)
		}
		_, want := m.m[n]
		if got := tr.DeleteSpec(s); got != want {
			t.Fatalf("op %d: DeleteSpec(%v) = %v, want %v", opn, s, got, want)
		}
		delete(m.m, n)
	case 5: // replace and get
		_, want := m.m[n]
		if got := tr.ReplaceSpec(s, h); got != want {
			t.Fatalf("op %d: ReplaceSpec(%v) = %v, want %v", opn, s, got, want)
		}
		if want {
			m.m[n] = h
		}
		gh, gok := tr.GetSpec(s)
		if wh, wok := m.m[n]; gh != wh || gok != wok {
			t.Fatalf("op %d: GetSpec(%v) = %d, %v; want %d, %v", opn, s, gh, gok, wh, wok)
		}
	default: // lookups
		for i := range uint32(4) {
			proto, la, ra, lp, rp := g.packet(sel*4 + i*0x9e3779b9)
			wh, wok := m.lookup(t, proto, la, ra, lp, rp)
			gh, gok := tr.Lookup(proto, addrFrom(la).As4(), addrFrom(ra).As4(), lp, rp)
			if gh != wh || gok != wok {
				t.Fatalf("op %d: Lookup(%d %v:%d<-%v:%d) = %d, %v; want %d, %v", opn, proto, addrFrom(la), lp,
					addrFrom(ra), rp, gh, gok, wh, wok)
			}
		}
	}
	if tr.Len() != len(m.m) {
		t.Fatalf("op %d: Len %d, want %d", opn, tr.Len(), len(m.m))
	}
}

// words is n as numbers, for a deterministic order of the model's entries.
func (n nspec) words() []uint64 {
	b := func(x bool) uint64 {
		if x {
			return 1
		}
		return 0
	}
	return []uint64{b(n.anyProto), uint64(n.proto), uint64(n.lbits), uint64(n.la), b(n.anyLP), uint64(n.lp),
		uint64(n.rbits), uint64(n.ra), b(n.anyRP), uint64(n.rp)}
}

func specOfN(n nspec) Spec {
	s := Spec{Proto: n.proto, AnyProto: n.anyProto, LocalPort: n.lp, AnyLocalPort: n.anyLP, RemotePort: n.rp, AnyRemotePort: n.anyRP}
	if n.lbits > 0 {
		s.Local = netip.PrefixFrom(addrFrom(n.la), n.lbits)
	}
	if n.rbits > 0 {
		s.Remote = netip.PrefixFrom(addrFrom(n.ra), n.rbits)
	}
	return s
}

// checkSpecs compares Specs with the model.
func (m *specModel) checkSpecs(t testing.TB, tr *Tree) {
	t.Helper()
	seen := 0
	tr.Specs(func(s Spec, h Handle) bool {
		n := normSpec(s)
		if wh, ok := m.m[n]; !ok || wh != h {
			t.Fatalf("Specs gave %v=%d; model has %d, %v", s, h, wh, ok)
		}
		seen++
		return true
	})
	if seen != len(m.m) {
		t.Fatalf("Specs gave %d entries, model has %d", seen, len(m.m))
	}
}

// TestSpecModel runs random spec operations (every field exact, a prefix or
// any; connections and listeners among them) against the model, which spells
// out the most-specific rule and the ambiguity rule of the package doc.
func TestSpecModel(t *testing.T) {
	ops := 300_000
	if testing.Short() {
		ops = 30_000
	}
	for _, c := range []struct{ capacity, slack int }{{40, 1}, {150, 8}} {
		t.Run(fmt.Sprintf("cap%d", c.capacity), func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(uint64(c.capacity), 17))
			tr := newTree(c.capacity, c.slack)
			m := &specModel{m: map[nspec]Handle{}, capacity: c.capacity}
			outcomes := map[error]int{}
			shapes := map[[5]int]bool{}
			for op := range ops {
				code, sel := uint8(r.IntN(8)), r.Uint32()
				if code < 3 {
					n := normSpec(defaultSpecGen.spec(sel))
					err := m.wantInsert(n)
					outcomes[err]++
					if err == nil {
						shapes[n.shape()] = true
					}
				}
				m.step(t, tr, &defaultSpecGen, op, code, sel, Handle(op))
				if op%5000 == 0 {
					checkTree(t, tr)
					m.checkSpecs(t, tr)
				}
			}
			checkTree(t, tr)
			m.checkSpecs(t, tr)
			t.Logf("insert outcomes %v, %d shapes inserted", outcomes, len(shapes))
			for _, e := range []error{nil, ErrExists, ErrAmbiguous, ErrFull, ErrTooManyShapes} {
				if outcomes[e] == 0 {
					t.Errorf("no insert ended with %v: the test does not cover it", e)
				}
			}
		})
	}
}

// TestSpecOrder checks the documented order on a hand-made table.
func TestSpecOrder(t *testing.T) {
	tr := New(64)
	pfx := netip.MustParsePrefix
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.InsertListener(tcp, netip.Addr{}, 80, 1))                                                                                        // 2 exact, 0 bits
	must(tr.InsertSpec(Spec{Proto: tcp, Local: pfx("198.18.0.0/24"), LocalPort: 80, AnyRemotePort: true}, 2))                                // 2, 24
	must(tr.InsertSpec(Spec{Proto: tcp, Local: pfx("198.18.0.0/16"), LocalPort: 80, AnyRemotePort: true}, 3))                                // 2, 16
	must(tr.InsertListener(tcp, a4("198.18.0.1"), 80, 4))                                                                                    // 3, 32
	must(tr.InsertSpec(Spec{Proto: tcp, Local: pfx("198.18.0.1/32"), LocalPort: 80, Remote: pfx("203.0.113.0/24"), AnyRemotePort: true}, 5)) // 3, 56
	must(tr.InsertSpec(Spec{AnyProto: true, AnyLocalPort: true, AnyRemotePort: true}, 6))                                                    // catch-all
	must(tr.Insert(flow(tcp, "198.18.0.1", 80, "203.0.113.9", 999), 7))                                                                      // 5
	// Same rank as the /24 spec (2 exact, 24 bits) and overlapping it: refused.
	err := tr.InsertSpec(Spec{Proto: tcp, LocalPort: 80, Remote: pfx("203.0.113.0/24"), AnyRemotePort: true}, 8)
	if !errors.Is(err, ErrAmbiguous) {
		t.Errorf("overlapping spec of equal rank: %v, want ErrAmbiguous", err)
	}
	// Same rank but disjoint (another port): accepted.
	must(tr.InsertSpec(Spec{Proto: tcp, LocalPort: 81, Remote: pfx("203.0.113.0/24"), AnyRemotePort: true}, 9))
	for _, c := range []struct {
		local, remote string
		lport, rport  uint16
		proto         uint8
		want          Handle
	}{
		{"198.18.0.1", "203.0.113.9", 80, 999, tcp, 7},
		{"198.18.0.1", "203.0.113.9", 80, 998, tcp, 5},
		{"198.18.0.1", "203.0.114.9", 80, 998, tcp, 4},
		{"198.18.0.2", "203.0.114.9", 80, 998, tcp, 2},
		{"198.18.1.2", "203.0.114.9", 80, 998, tcp, 3},
		{"198.19.1.2", "203.0.114.9", 80, 998, tcp, 1},
		{"198.19.1.2", "203.0.113.1", 81, 998, tcp, 9},
		{"198.19.1.2", "203.0.114.9", 81, 998, tcp, 6},
		{"198.18.0.1", "203.0.113.9", 80, 999, udp, 6},
	} {
		h, ok := tr.Lookup(c.proto, a4(c.local).As4(), a4(c.remote).As4(), c.lport, c.rport)
		if !ok || h != c.want {
			t.Errorf("Lookup(%d %s:%d<-%s:%d) = %d, %v; want %d", c.proto, c.local, c.lport, c.remote, c.rport, h, ok, c.want)
		}
	}
	checkTree(t, tr)
	// Walks still report connections and listeners only.
	n := 0
	tr.Ascend(func(Key, Handle) bool { n++; return true })
	if n != 3 {
		t.Errorf("Ascend saw %d entries, want 3 (a flow and two listeners)", n)
	}
	// The listener spec and InsertListener are the same entry.
	if err := tr.InsertSpec(ListenerSpec(tcp, a4("198.18.0.1"), 80), 10); !errors.Is(err, ErrExists) {
		t.Errorf("InsertSpec of a present listener: %v, want ErrExists", err)
	}
	if h, ok := tr.GetSpec(ExactSpec(flow(tcp, "198.18.0.1", 80, "203.0.113.9", 999))); !ok || h != 7 {
		t.Errorf("GetSpec(exact) = %d, %v", h, ok)
	}
}

// TestTooManyShapes fills every shape slot, then frees one.
func TestTooManyShapes(t *testing.T) {
	tr := New(64)
	var specs []Spec
	for i := range maxShapes - 3 {
		s := Spec{Proto: tcp, Local: netip.PrefixFrom(a4("198.18.0.0"), 8+i), LocalPort: 80, AnyRemotePort: true}
		if err := tr.InsertSpec(s, Handle(i)); err != nil {
			t.Fatal(err)
		}
		specs = append(specs, s)
	}
	extra := Spec{Proto: tcp, Local: netip.PrefixFrom(a4("198.18.0.0"), 30), LocalPort: 80, AnyRemotePort: true}
	if err := tr.InsertSpec(extra, 99); !errors.Is(err, ErrTooManyShapes) {
		t.Fatalf("16th shape: %v, want ErrTooManyShapes", err)
	}
	// Connections and listeners always have their shapes.
	if err := tr.InsertListener(tcp, netip.Addr{}, 80, 50); err != nil {
		t.Fatal(err)
	}
	tr.DeleteSpec(specs[3])
	if err := tr.InsertSpec(extra, 99); err != nil {
		t.Fatalf("after freeing a shape: %v", err)
	}
	if h, ok := tr.Lookup(tcp, a4("198.18.0.1").As4(), a4("1.2.3.4").As4(), 80, 1); !ok || h != 99 {
		t.Errorf("Lookup = %d, %v; want the /30 spec", h, ok)
	}
	checkTree(t, tr)
}

// FuzzSpecs drives the spec model from the input: the first two bytes pick
// a small capacity and slack, then each operation is five bytes (what to do,
// and 32 bits that pick the spec or the packets).
//
//	go test -run '^$' -fuzz FuzzSpecs -fuzztime 1m ./flowtree/
func FuzzSpecs(f *testing.F) {
	f.Add([]byte{8, 1, 0, 1, 2, 3, 4, 7, 1, 2, 3, 4, 0, 0xff, 0, 0, 0, 7, 0xff, 0, 0, 0})
	f.Add([]byte{30, 3, 0, 0x55, 0xaa, 0x55, 0xaa, 1, 0xaa, 0x55, 0xaa, 0x55, 6, 0, 0, 0, 0, 3, 0x55, 0xaa, 0x55, 0xaa})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		capacity, slack := 1+int(data[0]%64), 1+int(data[1]%8)
		tr := newTree(capacity, slack)
		m := &specModel{m: map[nspec]Handle{}, capacity: capacity}
		for op, data := 0, data[2:]; len(data) >= 5; op, data = op+1, data[5:] {
			sel := uint32(data[1])<<24 | uint32(data[2])<<16 | uint32(data[3])<<8 | uint32(data[4])
			m.step(t, tr, &defaultSpecGen, op, data[0], sel, Handle(op))
		}
		checkTree(t, tr)
		m.checkSpecs(t, tr)
	})
}
