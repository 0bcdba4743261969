package flowtree

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrent runs lookups and walks on several goroutines while one
// writer inserts, deletes and replaces. Handles encode the key they belong
// to (index<<8 | version), so a reader can tell a right answer (the old or
// the new handle of that key, or the listener behind it) from garbage: a torn
// entry, a recycled leaf or a wrong path all show up as a handle of another
// key or a miss where the key or its listener was present throughout.
func TestConcurrent(t *testing.T) {
	writes := 1_000_000
	if testing.Short() {
		writes = 60_000
	}
	for _, slack := range []int{1, 64} {
		t.Run(fmt.Sprintf("slack%d", slack), func(t *testing.T) { runConcurrent(t, slack, writes) })
	}
}

type probe struct {
	k             Key
	local, remote [4]byte
	stable        bool // never deleted: must always be found
	listened      bool // a listener that is never deleted backs this flow
}

const listenerHandle = Handle(1<<24 - 1)

func runConcurrent(t *testing.T, slack, writes int) {
	const nStable, nChurn, readers = 300, 1200, 3
	tr := newTree(nStable+nChurn+1, slack)
	r := rand.New(rand.NewPCG(1, uint64(slack)))
	if err := tr.InsertListener(tcp, a4("198.18.0.1"), 80, listenerHandle); err != nil {
		t.Fatal(err)
	}
	probes := make([]probe, nStable+nChurn)
	index := map[Key]int{}
	for i := range probes {
		var k Key
		for {
			lport := uint16(80)
			if r.IntN(2) == 0 {
				lport = uint16(1 + r.IntN(3))
			}
			k = Key{Proto: tcp, LocalAddr: a4("198.18.0.1"), LocalPort: lport,
				RemoteAddr: addrFrom(0xc6120000 | r.Uint32()&0x1ffff), RemotePort: uint16(r.Uint32())}
			if _, dup := index[k]; !dup {
				break
			}
		}
		index[k] = i
		probes[i] = probe{k: k, local: k.LocalAddr.As4(), remote: k.RemoteAddr.As4(),
			stable: i < nStable, listened: k.LocalPort == 80}
		if err := tr.Insert(k, Handle(i<<8)); err != nil {
			t.Fatal(err)
		}
	}

	var done atomic.Bool
	var wg sync.WaitGroup
	var lookups, walks atomic.Int64
	errs := make(chan error, readers+1)
	var started sync.WaitGroup // the writer waits for the readers to run
	started.Add(readers)
	for g := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			n := 0
			for ; !done.Load(); n++ {
				if n == 0 {
					started.Done()
				}
				i := r.IntN(len(probes))
				p := &probes[i]
				h, ok := tr.Lookup(tcp, p.local, p.remote, p.k.LocalPort, p.k.RemotePort)
				switch {
				case ok && int(h>>8) == i:
				case ok && h == listenerHandle && p.listened && !p.stable:
				case !ok && !p.stable && !p.listened:
				default:
					errs <- fmt.Errorf("Lookup(%v) = %#x, %v: not an old or new answer for key %d", p.k, h, ok, i)
					return
				}
			}
			lookups.Add(int64(n))
		}()
	}
	wg.Add(1)
	go func() { // walks: ordered, consistent handles, every stable key once
		defer wg.Done()
		for !done.Load() {
			stable := 0
			var last Key
			first, bad := true, error(nil)
			tr.Ascend(func(k Key, h Handle) bool {
				if !first {
					qa, _ := last.encode()
					qb, _ := k.encode()
					if !qa.less(&qb) {
						bad = fmt.Errorf("Ascend: %v after %v", k, last)
						return false
					}
				}
				first, last = false, k
				if k.IsListener() {
					if h != listenerHandle {
						bad = fmt.Errorf("Ascend: listener %v has handle %#x", k, h)
					}
					return bad == nil
				}
				i, known := index[k]
				if !known || int(h>>8) != i {
					bad = fmt.Errorf("Ascend: %v has handle %#x, key index %d", k, h, i)
					return false
				}
				if i < nStable {
					stable++
				}
				return true
			})
			if bad == nil && stable != nStable {
				bad = fmt.Errorf("Ascend saw %d of the %d stable keys", stable, nStable)
			}
			if bad != nil {
				errs <- bad
				return
			}
			walks.Add(1)
		}
	}()

	started.Wait()
	present := make([]bool, len(probes))
	for i := range present {
		present[i] = true
	}
	for range writes {
		i := r.IntN(len(probes))
		p := &probes[i]
		h := Handle(i<<8 | r.IntN(256))
		switch {
		case p.stable:
			if !tr.Replace(p.k, h) {
				t.Errorf("Replace(%v) of a stable key failed", p.k)
			}
		case present[i]:
			if !tr.Delete(p.k) {
				t.Errorf("Delete(%v) of a present key failed", p.k)
			}
			present[i] = false
		default:
			if err := tr.Insert(p.k, h); err != nil {
				t.Error(err)
			}
			present[i] = true
		}
		if len(errs) > 0 || t.Failed() {
			break
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkTree(t, tr)
	t.Logf("%d writes, %d recycles, %d lookups, %d walks", writes, tr.recycles, lookups.Load(), walks.Load())
	if tr.recycles == 0 || lookups.Load() == 0 {
		t.Errorf("the test did not exercise recycling under readers")
	}
}

// TestConcurrentPrefixWalk checks walks of one /32 while the writer churns
// flows of other addresses around it: the stable subtree must come out whole.
func TestConcurrentPrefixWalk(t *testing.T) {
	writes := 500_000
	if testing.Short() {
		writes = 30_000
	}
	tr := newTree(4000, 4)
	mine := netip.MustParsePrefix("198.18.0.7/32")
	for i := range 100 {
		tr.Insert(Key{Proto: tcp, LocalAddr: mine.Addr(), LocalPort: 80, RemoteAddr: addrFrom(uint32(i)), RemotePort: 1}, Handle(i))
	}
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	var bad atomic.Value
	go func() {
		defer wg.Done()
		for !done.Load() {
			n := 0
			tr.AscendPrefix(tcp, mine, func(k Key, h Handle) bool {
				if k.LocalAddr != mine.Addr() || h != Handle(n) {
					bad.Store(fmt.Sprintf("AscendPrefix: entry %d is %v=%d", n, k, h))
				}
				n++
				return true
			})
			if n != 100 {
				bad.Store(fmt.Sprintf("AscendPrefix saw %d of 100 entries", n))
			}
		}
	}()
	r := rand.New(rand.NewPCG(3, 3))
	var live []Key
	for range writes {
		if len(live) > 0 && (len(live) > 3000 || r.IntN(2) == 0) {
			j := r.IntN(len(live))
			tr.Delete(live[j])
			live[j] = live[len(live)-1]
			live = live[:len(live)-1]
			continue
		}
		// Neighbours on both sides of 198.18.0.7 in key order.
		k := Key{Proto: tcp, LocalAddr: addrFrom(0xc6120000 | uint32(r.IntN(16))), LocalPort: uint16(r.IntN(100)),
			RemoteAddr: addrFrom(r.Uint32()), RemotePort: 2}
		if k.LocalAddr == mine.Addr() {
			continue
		}
		if tr.Insert(k, 0) == nil {
			live = append(live, k)
		}
	}
	done.Store(true)
	wg.Wait()
	if msg := bad.Load(); msg != nil {
		t.Fatal(msg)
	}
}

// TestConcurrentShapes runs lookups while the writer grows the connection
// trie through arena growth up to its size (and nodes through every kind), and
// inserts and deletes specs of many shapes, so that shape slots are assigned,
// emptied and reused and the probe order changes. The readers' packets match
// only stable entries, whose answers must never change: a stable flow, a
// stable /16 spec on port 80, or the stable any-address listener behind it.
func TestConcurrentShapes(t *testing.T) {
	n := 1 << 16
	if testing.Short() {
		n = 1 << 12
	}
	tr := newTree(n+200, 64)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const lisH, specH = Handle(1 << 30), Handle(1<<30 + 1)
	must(tr.InsertListener(tcp, netip.Addr{}, 80, lisH))
	must(tr.InsertSpec(Spec{Proto: tcp, Local: netip.MustParsePrefix("198.18.0.0/16"), LocalPort: 80, AnyRemotePort: true}, specH))
	stable := make([]Key, 100)
	for i := range stable {
		stable[i] = Key{Proto: tcp, LocalAddr: a4("198.18.0.1"), LocalPort: 80, RemoteAddr: addrFrom(0xcb007100 + uint32(i)), RemotePort: uint16(1000 + i)}
		must(tr.Insert(stable[i], Handle(i)))
	}
	var done atomic.Bool
	var wg sync.WaitGroup
	var started sync.WaitGroup
	errs := make(chan error, 2)
	started.Add(2)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 3))
			for i := 0; !done.Load(); i++ {
				if i == 0 {
					started.Done()
				}
				var want Handle
				var local, remote [4]byte
				var rport uint16
				switch r.IntN(3) {
				case 0:
					j := r.IntN(len(stable))
					local, remote, rport, want = stable[j].LocalAddr.As4(), stable[j].RemoteAddr.As4(), stable[j].RemotePort, Handle(j)
				case 1:
					local, remote, rport, want = [4]byte{198, 18, 7, 7}, addrFrom(r.Uint32()).As4(), uint16(r.Uint32()), specH
				default:
					local, remote, rport, want = [4]byte{10, 0, 0, 1}, addrFrom(r.Uint32()).As4(), uint16(r.Uint32()), lisH
				}
				if h, ok := tr.Lookup(tcp, local, remote, 80, rport); !ok || h != want {
					errs <- fmt.Errorf("Lookup(%v:80<-%v:%d) = %d, %v; want %d", local, remote, rport, h, ok, want)
					return
				}
			}
		}()
	}
	started.Wait()
	r := rand.New(rand.NewPCG(9, 9))
	var specs []Spec
	for i := range n {
		// Connections on port 81 that nobody looks up, growing the trie.
		k := Key{Proto: tcp, LocalAddr: a4("198.18.0.1"), LocalPort: 81, RemoteAddr: addrFrom(r.Uint32()), RemotePort: uint16(r.Uint32())}
		if err := tr.Insert(k, 0); err != nil && !errors.Is(err, ErrExists) {
			t.Fatal(err)
		}
		if i%16 == 0 { // specs of changing shapes on other ports
			s := Spec{Proto: tcp, Local: netip.PrefixFrom(a4("198.18.0.0"), 1+r.IntN(31)), LocalPort: uint16(9000 + r.IntN(50)),
				Remote: netip.PrefixFrom(addrFrom(r.Uint32()), r.IntN(33)), AnyRemotePort: r.IntN(2) == 0, RemotePort: 5}
			if tr.InsertSpec(s, 7) == nil {
				specs = append(specs, s)
			}
			if len(specs) > 20 || (len(specs) > 0 && r.IntN(2) == 0) {
				j := r.IntN(len(specs))
				if !tr.DeleteSpec(specs[j]) {
					t.Fatalf("DeleteSpec(%v) failed", specs[j])
				}
				specs = slices.Delete(specs, j, j+1)
			}
		}
		if len(errs) > 0 {
			break
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkTree(t, tr)
}
