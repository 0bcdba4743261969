package flowtree

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

// FuzzOps reads a sequence of operations from the input and checks each
// against the map model. The first two bytes pick a small capacity and
// slack, so that the tree fills up and recycles often; then each operation
// is three bytes: what to do, and which key from small per-field tables (so
// that keys collide and listeners shadow flows).
//
//	go test -run '^$' -fuzz FuzzOps -fuzztime 1m ./flowtree/
func FuzzOps(f *testing.F) {
	f.Add([]byte{8, 1, 0, 0, 0, 6, 0, 0, 3, 0, 0, 6, 0, 0})
	f.Add([]byte{2, 0, 0, 1, 2, 2, 3, 4, 0, 5, 6, 7, 1, 1, 6, 2, 2, 7, 0xff, 0xff})
	f.Add([]byte{30, 3, 0, 0xaa, 0x55, 0, 0x55, 0xaa, 2, 0, 0x0f, 6, 0xaa, 0x5f, 7, 1, 0, 7, 2, 0x40, 4, 0xaa, 0x55})

	protos := []uint8{6, 17}
	laddrs := []netip.Addr{a4("198.18.0.1"), a4("198.18.0.2"), a4("198.18.1.1"), a4("0.0.0.0")}
	lports := []uint16{80, 443, 0, 65535}
	raddrs := []netip.Addr{a4("198.18.0.1"), a4("203.0.113.5"), a4("0.0.0.0"), a4("255.255.255.255")}
	rports := []uint16{1, 80, 0, 65535}
	prefixes := []int{0, 8, 16, 24, 32}

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		capacity, slack := 1+int(data[0]%64), 1+int(data[1]%8)
		tr, m := newTree(capacity, slack), newModel()
		for op, data := 0, data[2:]; len(data) >= 3; op, data = op+1, data[3:] {
			sel := uint16(data[1])<<8 | uint16(data[2])
			k := Key{Proto: protos[sel&1], LocalAddr: laddrs[sel>>1&3], LocalPort: lports[sel>>3&3],
				RemoteAddr: raddrs[sel>>5&3], RemotePort: rports[sel>>7&3]}
			h := Handle(op)
			switch data[0] % 8 {
			case 0, 1, 2: // insert a flow, or a listener
				if data[0]%8 == 2 {
					k = ListenerKey(k.Proto, k.LocalAddr, k.LocalPort)
				}
				var err error
				if k.IsListener() {
					err = tr.InsertListener(k.Proto, k.LocalAddr, k.LocalPort, h)
				} else {
					err = tr.Insert(k, h)
				}
				_, exists := m.m[k]
				switch {
				case exists && !errors.Is(err, ErrExists):
					t.Fatalf("op %d: insert %v (present): %v", op, k, err)
				case !exists && len(m.m) == capacity && !errors.Is(err, ErrFull):
					t.Fatalf("op %d: insert %v (full): %v", op, k, err)
				case !exists && len(m.m) < capacity:
					if err != nil {
						t.Fatalf("op %d: insert %v: %v", op, k, err)
					}
					m.insert(k, h)
				}
			case 3, 4: // delete a flow or a listener
				if data[0]%8 == 4 {
					k = ListenerKey(k.Proto, k.LocalAddr, k.LocalPort)
				}
				_, want := m.m[k]
				if got := tr.Delete(k); got != want {
					t.Fatalf("op %d: Delete(%v) = %v, want %v", op, k, got, want)
				}
				if want {
					m.delete(k)
				}
			case 5:
				_, want := m.m[k]
				if got := tr.Replace(k, h); got != want {
					t.Fatalf("op %d: Replace(%v) = %v, want %v", op, k, got, want)
				}
				if want {
					m.m[k] = h
				}
			case 6:
				wh, wok := m.lookup(k.Proto, k.LocalAddr, k.RemoteAddr, k.LocalPort, k.RemotePort)
				gh, gok := tr.Lookup(k.Proto, k.LocalAddr.As4(), k.RemoteAddr.As4(), k.LocalPort, k.RemotePort)
				if gh != wh || gok != wok {
					t.Fatalf("op %d: Lookup(%v) = %d, %v; want %d, %v", op, k, gh, gok, wh, wok)
				}
			case 7:
				p := netip.PrefixFrom(k.LocalAddr, prefixes[int(sel>>9&7)%len(prefixes)]).Masked()
				r := netip.PrefixFrom(k.RemoteAddr, p.Bits()).Masked()
				sameKVs(t, fmt.Sprintf("op %d: AscendPrefix(%d, %v)", op, k.Proto, p),
					collectAll(func(fn func(Key, Handle) bool) { tr.AscendPrefix(k.Proto, p, fn) }),
					m.sorted(func(e Key) bool { return e.Proto == k.Proto && inPrefix(e.LocalAddr, p) }))
				sameKVs(t, fmt.Sprintf("op %d: AscendRemotePrefix(%d, %v)", op, k.Proto, r),
					collectAll(func(fn func(Key, Handle) bool) { tr.AscendRemotePrefix(k.Proto, r, fn) }),
					m.sorted(func(e Key) bool { return e.Proto == k.Proto && inPrefix(e.RemoteAddr, r) }))
			}
			if tr.Len() != len(m.m) {
				t.Fatalf("op %d: Len %d, want %d", op, tr.Len(), len(m.m))
			}
		}
		checkTree(t, tr)
		sameKVs(t, "final Ascend", collectAll(tr.Ascend), m.sorted(func(Key) bool { return true }))
	})
}
