package flowtree

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

const (
	tcp = 6
	udp = 17
)

func flow(proto uint8, local string, lport uint16, remote string, rport uint16) Key {
	return Key{Proto: proto, LocalAddr: a4(local), LocalPort: lport, RemoteAddr: a4(remote), RemotePort: rport}
}

func TestMatchOrder(t *testing.T) {
	tr := New(16)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.InsertListener(tcp, netip.Addr{}, 80, 1))                   // any address
	must(tr.InsertListener(tcp, a4("198.18.0.1"), 80, 2))               // one address
	must(tr.Insert(flow(tcp, "198.18.0.1", 80, "198.18.1.9", 4000), 3)) // one flow
	must(tr.InsertListener(udp, a4("0.0.0.0"), 53, 4))                  // 0.0.0.0 is any too
	must(tr.Insert(flow(udp, "198.18.0.1", 53, "0.0.0.0", 0), 5))       // odd but exact: not a listener

	for _, c := range []struct {
		name   string
		proto  uint8
		local  string
		lport  uint16
		remote string
		rport  uint16
		want   Handle
		ok     bool
	}{
		{"exact flow", tcp, "198.18.0.1", 80, "198.18.1.9", 4000, 3, true},
		{"other remote port: bound listener", tcp, "198.18.0.1", 80, "198.18.1.9", 4001, 2, true},
		{"other remote: bound listener", tcp, "198.18.0.1", 80, "198.18.1.8", 4000, 2, true},
		{"other local address: any listener", tcp, "198.18.0.2", 80, "198.18.1.9", 4000, 1, true},
		{"local 0.0.0.0: any listener", tcp, "0.0.0.0", 80, "198.18.1.9", 4000, 1, true},
		{"other port: nothing", tcp, "198.18.0.1", 81, "198.18.1.9", 4000, 0, false},
		{"other protocol: nothing", 1, "198.18.0.1", 80, "198.18.1.9", 4000, 0, false},
		{"udp any listener", udp, "198.18.0.7", 53, "198.18.1.9", 5000, 4, true},
		{"udp exact flow with zero remote", udp, "198.18.0.1", 53, "0.0.0.0", 0, 5, true},
		{"udp zero remote elsewhere: listener", udp, "198.18.0.2", 53, "0.0.0.0", 0, 4, true},
	} {
		h, ok := tr.Lookup(c.proto, a4(c.local).As4(), a4(c.remote).As4(), c.lport, c.rport)
		if h != c.want || ok != c.ok {
			t.Errorf("%s: Lookup = %d, %v; want %d, %v", c.name, h, ok, c.want, c.ok)
		}
	}

	if h, ok := tr.Get(ListenerKey(tcp, netip.Addr{}, 80)); h != 1 || !ok {
		t.Errorf("Get(any listener) = %d, %v", h, ok)
	}
	if _, ok := tr.Get(flow(tcp, "198.18.0.2", 80, "198.18.1.9", 4000)); ok {
		t.Errorf("Get falls back to a listener; it must not")
	}
	if !tr.DeleteListener(tcp, a4("0.0.0.0"), 80) || tr.DeleteListener(tcp, netip.Addr{}, 80) {
		t.Errorf("DeleteListener(any) did not delete exactly once")
	}
	if _, ok := tr.Lookup(tcp, a4("198.18.0.2").As4(), a4("198.18.1.9").As4(), 80, 4000); ok {
		t.Errorf("any listener still matches after DeleteListener")
	}
	if tr.Len() != 4 {
		t.Errorf("Len = %d, want 4", tr.Len())
	}
	checkTree(t, tr)
}

func TestErrors(t *testing.T) {
	tr := New(2)
	k1 := flow(tcp, "198.18.0.1", 1, "198.18.0.2", 2)
	k2 := flow(tcp, "198.18.0.1", 1, "198.18.0.2", 3)
	k3 := flow(tcp, "198.18.0.1", 1, "198.18.0.2", 4)
	if err := tr.Insert(k1, 1); err != nil {
		t.Fatal(err)
	}
	err := tr.Insert(k1, 9)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "Replace") {
		t.Errorf("duplicate Insert: %v, want ErrExists that mentions Replace", err)
	}
	if err := tr.Insert(k2, 2); err != nil {
		t.Fatal(err)
	}
	err = tr.Insert(k3, 3)
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "raise the capacity") ||
		!strings.Contains(err.Error(), k3.String()) {
		t.Errorf("Insert into a full tree: %v, want ErrFull naming the key and the fix", err)
	}
	if err := tr.InsertListener(tcp, netip.Addr{}, 1, 3); !errors.Is(err, ErrFull) {
		t.Errorf("InsertListener into a full tree: %v, want ErrFull", err)
	}
	// A NAT mapping is two entries: after freeing one slot only one side fits.
	tr.Delete(k2)
	if err := tr.Insert(k2, 2); err != nil {
		t.Errorf("Insert after Delete: %v", err)
	}

	for _, k := range []Key{
		{Proto: tcp, LocalAddr: a4("2001:db8::1"), LocalPort: 1, RemoteAddr: a4("198.18.0.2"), RemotePort: 2},
		{Proto: tcp, LocalAddr: a4("198.18.0.1"), LocalPort: 1, RemoteAddr: a4("2001:db8::2"), RemotePort: 2},
		{Proto: tcp, LocalAddr: a4("198.18.0.1"), LocalPort: 1}, // listener form
		{Proto: tcp, LocalPort: 1, RemoteAddr: a4("198.18.0.2"), RemotePort: 2},
	} {
		if err := New(4).Insert(k, 1); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Insert(%v): %v, want ErrInvalidKey", k, err)
		}
	}
	if err := New(4).InsertListener(tcp, a4("2001:db8::1"), 1, 1); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("InsertListener(IPv6): %v, want ErrInvalidKey", err)
	}
	// IPv4-mapped IPv6 addresses are IPv4.
	tr = New(4)
	if err := tr.Insert(Key{Proto: tcp, LocalAddr: a4("::ffff:198.18.0.1"), LocalPort: 1, RemoteAddr: a4("::ffff:198.18.0.2"), RemotePort: 2}, 7); err != nil {
		t.Errorf("Insert(4in6): %v", err)
	}
	if h, ok := tr.Get(flow(tcp, "198.18.0.1", 1, "198.18.0.2", 2)); h != 7 || !ok {
		t.Errorf("Get after 4in6 insert = %d, %v", h, ok)
	}
}

func TestNewPanics(t *testing.T) {
	for _, c := range []int{0, -1, MaxCapacity + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%d) did not panic", c)
				}
			}()
			New(c)
		}()
	}
}

func TestEmptyTree(t *testing.T) {
	tr := New(1)
	if _, ok := tr.Lookup(0, [4]byte{}, [4]byte{}, 0, 0); ok {
		t.Error("Lookup in an empty tree matched")
	}
	// The all-zero key (protocol 0, listener on any address, port 0) is the
	// same bit pattern as the unused slot 0; it must still behave.
	zero := ListenerKey(0, netip.Addr{}, 0)
	if tr.Replace(zero, 1) || tr.Delete(zero) {
		t.Error("Replace or Delete succeeded on an empty tree")
	}
	if _, ok := tr.Get(zero); ok {
		t.Error("Get(zero key) matched in an empty tree")
	}
	if err := tr.InsertListener(0, netip.Addr{}, 0, 5); err != nil {
		t.Fatal(err)
	}
	if h, ok := tr.Lookup(0, [4]byte{1, 2, 3, 4}, [4]byte{}, 0, 9); h != 5 || !ok {
		t.Errorf("Lookup = %d, %v; want the zero-key listener", h, ok)
	}
	n := 0
	tr.Ascend(func(k Key, h Handle) bool {
		n++
		if k != zero || h != 5 {
			t.Errorf("Ascend gave %v=%d", k, h)
		}
		return true
	})
	if n != 1 || !tr.Delete(zero) || tr.Len() != 0 {
		t.Errorf("zero key: %d visits, Len %d", n, tr.Len())
	}
}

func TestAscendOrderAndStop(t *testing.T) {
	tr := New(1000)
	var want []Key
	for i := range 300 {
		k := flow(tcp, "198.18.0.1", uint16(i%3), "198.18.1.1", uint16(1000-i))
		if err := tr.Insert(k, Handle(i)); err != nil {
			t.Fatal(err)
		}
		want = append(want, k)
	}
	n := 0
	var last key
	tr.Ascend(func(k Key, h Handle) bool {
		q, _ := k.encode()
		if n > 0 && !last.less(&q) {
			t.Fatalf("Ascend out of order: %v after %x", k, last)
		}
		last = q
		n++
		return n < 200 // stop in the middle of the fourth batch
	})
	if n != 200 {
		t.Errorf("Ascend visited %d entries after fn returned false at 200", n)
	}
	// The callback may modify the tree (on the writer's goroutine).
	tr.Ascend(func(k Key, _ Handle) bool {
		if !tr.Delete(k) {
			t.Fatalf("Delete(%v) from inside Ascend failed", k)
		}
		return true
	})
	if tr.Len() != 0 {
		t.Errorf("Len %d after deleting everything from Ascend", tr.Len())
	}
	checkTree(t, tr)
}

func TestPrefixes(t *testing.T) {
	tr := New(100)
	keys := []Key{
		ListenerKey(tcp, netip.Addr{}, 22),
		ListenerKey(tcp, a4("198.18.0.1"), 80),
		flow(tcp, "198.18.0.1", 80, "203.0.113.5", 1),
		flow(tcp, "198.18.0.1", 80, "198.18.7.1", 2),
		flow(tcp, "198.18.0.200", 443, "203.0.113.6", 3),
		flow(tcp, "198.18.1.1", 443, "203.0.113.7", 4),
		flow(udp, "198.18.0.1", 53, "203.0.113.5", 5),
	}
	for i, k := range keys {
		var err error
		if k.IsListener() {
			err = tr.InsertListener(k.Proto, k.LocalAddr, k.LocalPort, Handle(i))
		} else {
			err = tr.Insert(k, Handle(i))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	keysOf := func(walk func(func(Key, Handle) bool)) []Key {
		var out []Key
		for _, e := range collectAll(walk) {
			out = append(out, e.k)
		}
		return out
	}
	pfx := netip.MustParsePrefix
	for _, c := range []struct {
		name string
		walk func(func(Key, Handle) bool)
		want []int
	}{
		{"all", tr.Ascend, []int{0, 1, 3, 2, 4, 5, 6}},
		{"tcp", func(f func(Key, Handle) bool) { tr.AscendProto(tcp, f) }, []int{0, 1, 3, 2, 4, 5}},
		{"udp", func(f func(Key, Handle) bool) { tr.AscendProto(udp, f) }, []int{6}},
		{"tcp /32", func(f func(Key, Handle) bool) { tr.AscendPrefix(tcp, pfx("198.18.0.1/32"), f) }, []int{1, 3, 2}},
		{"tcp /24", func(f func(Key, Handle) bool) { tr.AscendPrefix(tcp, pfx("198.18.0.77/24"), f) }, []int{1, 3, 2, 4}},
		{"tcp /16", func(f func(Key, Handle) bool) { tr.AscendPrefix(tcp, pfx("198.18.0.0/16"), f) }, []int{1, 3, 2, 4, 5}},
		{"tcp /0", func(f func(Key, Handle) bool) { tr.AscendPrefix(tcp, pfx("0.0.0.0/0"), f) }, []int{0, 1, 3, 2, 4, 5}},
		{"ipv6 prefix", func(f func(Key, Handle) bool) { tr.AscendPrefix(tcp, pfx("::/0"), f) }, nil},
		{"remote /24", func(f func(Key, Handle) bool) { tr.AscendRemotePrefix(tcp, pfx("203.0.113.0/24"), f) }, []int{2, 4, 5}},
		{"remote /32", func(f func(Key, Handle) bool) { tr.AscendRemotePrefix(udp, pfx("203.0.113.5/32"), f) }, []int{6}},
		{"remote /0 skips listeners", func(f func(Key, Handle) bool) { tr.AscendRemotePrefix(tcp, pfx("0.0.0.0/0"), f) }, []int{3, 2, 4, 5}},
	} {
		got := keysOf(c.walk)
		var want []Key
		for _, i := range c.want {
			want = append(want, keys[i])
		}
		if len(got) != len(want) {
			t.Errorf("%s: got %v, want %v", c.name, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: got %v, want %v", c.name, got, want)
				break
			}
		}
	}
}

func TestReplace(t *testing.T) {
	tr := New(4)
	k := flow(tcp, "198.18.0.1", 1, "198.18.0.2", 2)
	if tr.Replace(k, 1) {
		t.Error("Replace of a missing key succeeded")
	}
	tr.Insert(k, 1)
	if !tr.Replace(k, 2) {
		t.Error("Replace of a present key failed")
	}
	if h, _ := tr.Get(k); h != 2 {
		t.Errorf("handle after Replace = %d, want 2", h)
	}
}

func TestBytes(t *testing.T) {
	// The documented cost at New: 32 bytes per entry and 52 per slack slot
	// for the leaves, the crit-bit tree and the limbo lists, plus the lookup
	// tries' starting arena (a tiny node per 8 entries, a small one per 128,
	// a big one per 2048) and the wide root (two slots per entry).
	for _, c := range []int{1 << 10, 1 << 16, 1 << 20} {
		tr := New(c)
		s := slack(c)
		want := 32*c + 52*s + 24 + tinyBytes*(64+c/8) + smallBytes*(16+c/128) + bigBytes*(4+c/2048) + 4<<wideBits(c)
		if got := tr.Bytes(); got != want {
			t.Errorf("capacity %d: Bytes %d, want %d", c, got, want)
		}
	}
}

func TestLookupAllocs(t *testing.T) {
	tr := New(1024)
	tr.InsertListener(tcp, netip.Addr{}, 80, 1)
	for i := range 500 {
		tr.Insert(flow(tcp, "198.18.0.1", 80, "198.18.1.1", uint16(i)), Handle(i))
	}
	tr.InsertSpec(Spec{Proto: tcp, Local: netip.MustParsePrefix("198.18.0.0/16"), LocalPort: 8080, Remote: netip.MustParsePrefix("198.18.1.0/24"), AnyRemotePort: true}, 9)
	local, remote := a4("198.18.0.1").As4(), a4("198.18.1.1").As4()
	var sink Handle
	for name, f := range map[string]func(){
		"hit":      func() { h, _ := tr.Lookup(tcp, local, remote, 80, 7); sink += h },
		"listener": func() { h, _ := tr.Lookup(tcp, local, remote, 80, 9999); sink += h },
		"miss":     func() { h, _ := tr.Lookup(udp, local, remote, 80, 7); sink += h },
		"spec":     func() { h, _ := tr.Lookup(tcp, local, remote, 8080, 7); sink += h },
		"getspec":  func() { h, _ := tr.GetSpec(ListenerSpec(tcp, netip.Addr{}, 80)); sink += h },
		"get":      func() { h, _ := tr.Get(flow(tcp, "198.18.0.1", 80, "198.18.1.1", 7)); sink += h },
		"ascend": func() {
			tr.AscendPrefix(tcp, netip.MustParsePrefix("198.18.0.0/24"), func(_ Key, h Handle) bool { sink += h; return true })
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, n)
		}
	}
	// Writes do not allocate either once the arena has room.
	k := flow(tcp, "198.18.0.9", 1, "198.18.1.1", 1)
	if n := testing.AllocsPerRun(100, func() { tr.Insert(k, 1); tr.Delete(k) }); n != 0 {
		t.Errorf("insert+delete: %v allocations per run, want 0", n)
	}
	_ = sink
}

// TestDocDiagram builds the example of the package doc and checks that the
// tree has the shape drawn there.
func TestDocDiagram(t *testing.T) {
	tr := New(8)
	tr.InsertListener(tcp, a4("198.18.0.1"), 80, 1)
	tr.Insert(flow(udp, "198.18.0.1", 53, "198.18.7.7", 1234), 2)
	tr.Insert(flow(tcp, "198.18.0.1", 80, "198.18.9.9", 4000), 3)
	root := tr.root.Load()
	if root&leafFlag != 0 || root&bitMask != 3 {
		t.Fatalf("root link %#x, want a node testing bit 3", root)
	}
	n2 := tr.nodes[root>>8].child[0].Load()
	l2 := tr.nodes[root>>8].child[1].Load()
	if n2&leafFlag != 0 || n2&bitMask != 63 || l2&leafFlag == 0 {
		t.Fatalf("root children %#x, %#x: want a node testing bit 63 and a leaf", n2, l2)
	}
	for d, want := range []Handle{1, 3} {
		l := tr.nodes[n2>>8].child[d].Load()
		if l&leafFlag == 0 || Handle(tr.leaves[l>>8].h.Load()) != want {
			t.Errorf("n2.child[%d] = %#x, want the leaf with handle %d", d, l, want)
		}
	}
	if Handle(tr.leaves[l2>>8].h.Load()) != 2 {
		t.Errorf("root.child[1] is not the UDP flow")
	}
}

// TestDocDiagramTries checks the tries drawn in the package doc for the same
// entries.
func TestDocDiagramTries(t *testing.T) {
	tr := New(8)
	tr.InsertListener(tcp, a4("198.18.0.1"), 80, 1)
	tr.Insert(flow(udp, "198.18.0.1", 53, "198.18.7.7", 1234), 2)
	tr.Insert(flow(tcp, "198.18.0.1", 80, "198.18.9.9", 4000), 3)
	// New(8) has a wide root of 2^8 slots: the remote port's low byte.
	for b, want := range map[uint32]Handle{0xa0: 3, 0xd2: 2} {
		if l := tr.wide[b]; l&kindMask != kLeaf || Handle(tr.leaves[linkIdx(l)].h.Load()) != want {
			t.Errorf("wide slot %#x = %#x: want the leaf with handle %d", b, l, want)
		}
	}
	if l := tr.shapes[1].root; l&kindMask != kLeaf || Handle(tr.leaves[linkIdx(l)].h.Load()) != 1 {
		t.Errorf("listener trie root %#x, want the listener's leaf", l)
	}
	if tr.shapes[2].root != 0 || tr.order.Load() != 0x21 {
		t.Errorf("probe order %#x, want connections then listeners (0x21)", tr.order.Load())
	}
}
