package netchannel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/testpkt"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/memport"
	"github.com/netchan/netchan/shards"
)

var (
	macPeer = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	macUs   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
	addrUs  = netip.MustParseAddr("198.18.0.1")
)

// pause lets other goroutines run while a test polls. Not time.Sleep: on these in-memory
// ports the shard keeps working while its tx ring holds frames (nothing completes them until
// the test drains), and a test goroutine's 1 ms sleep was seen to take 10 s then, with the
// unpinned shard spinning on one of the two Ps (not explained yet; see the closing note of
// the netchannel issue).
func pause() { runtime.Gosched() }

// rig is a Set on shards over in-memory ports: the real shard loop, no kernel.
type rig struct {
	set    *Set
	ports  []*memport.Port
	engine *shards.Engine
	cancel context.CancelFunc
	done   chan error
}

func newRig(t *testing.T, nShards int, frames uint32, cfg Config) *rig {
	t.Helper()
	cfg.Debug = true
	r := &rig{set: New(cfg), done: make(chan error, 1)}
	var qs []shards.Queue
	for i := 0; i < nShards; i++ {
		p := memport.New(1, frames, 2048, 512)
		t.Cleanup(p.Close)
		r.ports = append(r.ports, p)
		qs = append(qs, shards.Queue{ID: i, Mem: p.Mem, FrameSize: p.FrameSize, NumFrames: p.NumFrames, RingSize: 512, Links: []shards.Link{p.Links[0]}})
	}
	app := r.set.App("test")
	e, err := shards.New(shards.Config{Queues: qs, NewPipeline: app.NewPipeline, Debug: true, SpinIdle: 20 * time.Microsecond,
		Ifaces: []pipelines.Interface{{Name: "mem0", MTU: 1500}}})
	if err != nil {
		t.Fatal(err)
	}
	r.engine = e
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- e.Run(ctx) }()
	return r
}

// stop stops the shards, shuts the Set down and checks that every frame is back in its place.
func (r *rig) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("engine: %v", err)
	}
	if err := r.set.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for i, pl := range r.engine.FramePlaces() {
		if pl["lent"] != 0 || pl["batch"] != 0 || pl["handoff"] != 0 {
			t.Errorf("shard %d: frames left out after stop: %v", i, pl)
		}
	}
}

func udpFrame(srcPort, dstPort uint16, payload string) []byte {
	return testpkt.UDP{SrcMAC: macPeer, DstMAC: macUs, SrcIP: netip.MustParseAddr("203.0.113.7"), DstIP: addrUs,
		SrcPort: srcPort, DstPort: dstPort, Payload: []byte(payload)}.Build()
}

// inject puts frames on shard i's rx ring, retrying while the shard has no fill frame yet.
func (r *rig) inject(t *testing.T, shard int, frame []byte) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !r.ports[shard].Links[0].Inject(frame) {
		if time.Now().After(deadline) {
			t.Fatal("inject: the shard gives no fill frames")
		}
		pause()
	}
}

// turnAround swaps a UDP/IPv4/Ethernet frame's MACs, addresses and ports in place; the
// checksums stay valid (the sums do not change when fields swap).
func turnAround(f []byte) {
	var mac [6]byte
	copy(mac[:], f[0:6])
	copy(f[0:6], f[6:12])
	copy(f[6:12], mac[:])
	var a [4]byte
	copy(a[:], f[26:30])
	copy(f[26:30], f[30:34])
	copy(f[30:34], a[:])
	var p [2]byte
	copy(p[:], f[34:36])
	copy(f[34:36], f[36:38])
	copy(f[36:38], p[:])
}

// TestEchoZeroCopy runs the zero-copy echo on the shard loop: every datagram to the channel's
// port comes back turned around, byte-exact; the bytes the reader sees are the UMEM frame
// itself; a packet of another port is left to the pipeline (dropped as no-verdict here).
func TestEchoZeroCopy(t *testing.T) {
	// The queue holds all the test sends, so nothing is lost however the reader is scheduled.
	r := newRig(t, 1, 4096, Config{QueueLimit: 1024, LendCap: 1024})
	ch, err := r.set.Open("udp:198.18.0.1:9999", Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	b := NewBatch(32)
	got := 0
	echoed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for got < n {
			k, err := ch.Read(ctx, b)
			if err != nil {
				echoed <- err
				return
			}
			for i := 0; i < k; i++ {
				v := b.Bytes(i)
				mem := r.ports[b.Shard(i)].Mem
				if &v[0] != &mem[b.Addr(i)] {
					echoed <- fmt.Errorf("view %d is not the UMEM frame", i)
					return
				}
				turnAround(v)
			}
			got += k
			ch.Send(b)
		}
		echoed <- nil
	}()
	var out [][]byte
	var sent [][]byte
	r.inject(t, 0, udpFrame(5000, 7777, "not a channel's"))
	for i := 0; i < n; i++ {
		f := udpFrame(uint16(10000+i%100), 9999, fmt.Sprintf("datagram %04d", i))
		sent = append(sent, f)
		r.inject(t, 0, f)
		if i%64 == 63 {
			r.ports[0].Links[0].Drain(func(d []byte) { out = append(out, bytes.Clone(d)) })
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	iters := 0
	for len(out) < n && time.Now().Before(deadline) {
		iters++
		r.ports[0].Links[0].Drain(func(d []byte) { out = append(out, bytes.Clone(d)) })
		pause()
	}
	t.Logf("%d drain passes", iters)
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
	if len(out) != n {
		t.Fatalf("%d of %d echoes came out; channel %+v, shard %+v, port drops %d, drained now %d", len(out), n, ch.Stats(), r.engine.Snapshot()[0], r.ports[0].Links[0].InjectDrops.Load(), r.ports[0].Links[0].Drain(nil))
	}
	for i := range out {
		want := bytes.Clone(sent[i])
		turnAround(want)
		if !bytes.Equal(out[i], want) {
			t.Fatalf("echo %d differs:\n got %x\nwant %x", i, out[i], want)
		}
	}
	st := ch.Stats()
	if st.Received != n || st.Sent != n || st.Held != 0 {
		t.Errorf("stats %+v: want %d received and sent, none held", st, n)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Read(context.Background(), b); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v, want ErrClosed", err)
	}
	snap := r.engine.Snapshot()[0]
	if snap.Drops["no-verdict"] != 1 {
		t.Errorf("the packet of no channel: drops %v, want one no-verdict", snap.Drops)
	}
	r.stop(t)
}

// TestSlowReader: a reader that stops reading hits its channel's cap, its packets are dropped
// and counted as its own, another channel on the same shard keeps all its traffic, and Close
// gives every frame back.
func TestSlowReader(t *testing.T) {
	r := newRig(t, 1, 8192, Config{QueueLimit: 64, LendCap: 128})
	slow, err := r.set.Open("udp:198.18.0.1:1111", Options{Name: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	// The fast channel's queue holds the whole test's traffic, so it loses nothing however
	// the scheduler treats its reader.
	fast, err := r.set.Open("udp:198.18.0.1:2222<-203.0.113.7:*", Options{Name: "fast", QueueLimit: 2048, LendCap: 2048})
	if err != nil {
		t.Fatal(err)
	}
	// The slow reader reads one batch and then sits on it.
	sb := NewBatch(16)
	const total = 2000
	var wg sync.WaitGroup
	wg.Add(1)
	fastGot := 0
	go func() {
		defer wg.Done()
		b := NewBatch(64)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for fastGot < total {
			k, err := fast.Read(ctx, b)
			if err != nil {
				t.Errorf("fast reader: %v after %d", err, fastGot)
				return
			}
			fastGot += k
			fast.Release(b)
		}
	}()
	for i := 0; i < total; i++ {
		r.inject(t, 0, udpFrame(uint16(20000+i%7), 1111, "slow"))
		r.inject(t, 0, udpFrame(uint16(20000+i%7), 2222, "fast"))
		if i == 10 {
			if _, err := slow.Read(context.Background(), sb); err != nil {
				t.Fatal(err)
			}
		}
		if i%32 == 0 {
			time.Sleep(200 * time.Microsecond) // let the fast reader keep up with the injector
		}
	}
	wg.Wait()
	if fastGot != total {
		t.Fatalf("the fast channel got %d of %d: %+v; slow %+v; shard %+v", fastGot, total, fast.Stats(), slow.Stats(), r.engine.Snapshot()[0])
	}
	st := slow.Stats()
	if st.Received != 64+uint64(sb.Len()) || st.Drops["queue-full"] == 0 {
		t.Errorf("slow channel %+v: want its queue (64) received and the rest dropped as queue-full", st)
	}
	if st.Received+st.Drops["queue-full"]+st.Drops["lend-cap"] != total {
		t.Errorf("slow channel: received %d + drops %v != %d sent", st.Received, st.Drops, total)
	}
	if fs := fast.Stats(); len(fs.Drops) != 0 {
		t.Errorf("the fast channel lost packets: %v", fs.Drops)
	}
	// Close while the slow reader still holds its batch: it times out and says so ...
	r.set.cfg.CloseTimeout = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- slow.Close() }()
	time.Sleep(50 * time.Millisecond)
	// ... unless the reader releases within the timeout, as here.
	slow.Release(sb)
	if err := <-done; err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := fast.Close(); err != nil {
		t.Fatal(err)
	}
	r.stop(t)
}

// TestCloseTimeout: Close returns ErrFramesLent when the reader keeps its frames.
func TestCloseTimeout(t *testing.T) {
	r := newRig(t, 1, 4096, Config{CloseTimeout: 100 * time.Millisecond})
	ch, err := r.set.Open("udp:9", Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.inject(t, 0, udpFrame(1, 9, "x"))
	b := NewBatch(4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ch.Read(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := ch.Close(); !errors.Is(err, ErrFramesLent) {
		t.Fatalf("Close with a held frame: %v, want ErrFramesLent", err)
	}
	ch.Release(b) // late, but the shard still takes it back
	deadline := time.Now().Add(2 * time.Second)
	for ch.Stats().Lent != 0 && time.Now().Before(deadline) {
		pause()
	}
	r.stop(t)
}

// TestMostSpecificWins: of two channels whose specs both match, the more specific gets the
// packet; a spec as specific as an open one that overlaps it is refused.
func TestMostSpecificWins(t *testing.T) {
	r := newRig(t, 1, 8192, Config{LendCap: 256})
	wide, err := r.set.Open("udp:198.18.0.0/24:53", Options{})
	if err != nil {
		t.Fatal(err)
	}
	narrow, err := r.set.Open("udp:198.18.0.1:53<-203.0.113.0/24:*", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.set.Open("udp:198.18.0.1:53<-203.0.113.0/24:*", Options{}); err == nil {
		t.Error("a second channel for the same spec opened")
	}
	r.inject(t, 0, udpFrame(4000, 53, "to the narrow one"))
	other := testpkt.UDP{SrcMAC: macPeer, DstMAC: macUs, SrcIP: netip.MustParseAddr("192.0.2.9"), DstIP: netip.MustParseAddr("198.18.0.77"),
		SrcPort: 4000, DstPort: 53, Payload: []byte("to the wide one")}.Build()
	r.inject(t, 0, other)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		ch   *Channel
		want string
	}{{narrow, "to the narrow one"}, {wide, "to the wide one"}} {
		b := NewBatch(4)
		k, err := tc.ch.Read(ctx, b)
		if err != nil || k != 1 {
			t.Fatalf("%s: %d, %v", tc.ch.Name(), k, err)
		}
		if got := strings.TrimRight(string(b.Bytes(0)[42:]), "\x00"); got != tc.want { // frames are padded to 60 bytes
			t.Errorf("%s got %q, want %q", tc.ch.Name(), got, tc.want)
		}
		tc.ch.Release(b)
	}
	wide.Close()
	narrow.Close()
	r.stop(t)
}

// TestFragments: a first fragment matches by its ports and is delivered; a later fragment
// carries no ports, is counted and left to the pipeline.
func TestFragments(t *testing.T) {
	r := newRig(t, 1, 4096, Config{})
	ch, err := r.set.Open("udp:198.18.0.1:9999", Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := udpFrame(5000, 9999, "first fragment, more follow")
	binary.BigEndian.PutUint16(first[20:22], 0x2000) // MF, offset 0
	later := udpFrame(5000, 9999, "a later fragment")
	binary.BigEndian.PutUint16(later[20:22], 0x0003) // offset 24 bytes
	r.inject(t, 0, first)
	r.inject(t, 0, later)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b := NewBatch(4)
	if k, err := ch.Read(ctx, b); err != nil || k != 1 {
		t.Fatalf("read: %d, %v", k, err)
	}
	ch.Release(b)
	deadline := time.Now().Add(2 * time.Second)
	for r.set.Fragments() != 1 && time.Now().Before(deadline) {
		pause()
	}
	if n := r.set.Fragments(); n != 1 {
		t.Errorf("fragments counted: %d, want 1", n)
	}
	if st := ch.Stats(); st.Received != 1 {
		t.Errorf("received %d, want only the first fragment", st.Received)
	}
	ch.Close()
	r.stop(t)
}

// TestLendCapMustFit: Open refuses a cap the UMEM cannot lend.
func TestLendCapMustFit(t *testing.T) {
	r := newRig(t, 1, 4096, Config{})
	_, err := r.set.Open("udp:9", Options{LendCap: 100000})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("does not fit shard 0")) {
		t.Errorf("a cap of 100000 frames in a UMEM of 4096: %v", err)
	}
	r.stop(t)
}

// TestAllocSend: frames from Alloc carry the reader's own packets out.
func TestAllocSend(t *testing.T) {
	r := newRig(t, 1, 4096, Config{})
	ch, err := r.set.Open("udp:198.18.0.1:*<-203.0.113.7:53", Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatch(8)
	deadline := time.Now().Add(2 * time.Second)
	for b.Len() < 8 && time.Now().Before(deadline) {
		ch.Alloc(b, 8-b.Len())
		pause()
	}
	if b.Len() != 8 {
		t.Fatalf("Alloc gave %d frames", b.Len())
	}
	for i := 0; i < b.Len(); i++ {
		f := udpFrame(53, uint16(30000+i), "query")
		turnAround(f)
		b.SetLen(i, len(f))
		copy(b.Bytes(i), f)
	}
	ch.Send(b)
	var out int
	for out < 8 && time.Now().Before(deadline) {
		out += r.ports[0].Links[0].Drain(nil)
		pause()
	}
	if out != 8 {
		t.Fatalf("%d of 8 sent", out)
	}
	ch.Close()
	r.stop(t)
}

// TestNoAllocs: reading, releasing and sending a batch allocate nothing.
func TestNoAllocs(t *testing.T) {
	r := newRig(t, 1, 4096, Config{})
	r.set.cfg.Debug = false
	ch, err := r.set.Open("udp:198.18.0.1:9999", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ch.debugHeld = nil
	if raceEnabled {
		// The race detector's instrumentation allocates; the assertion holds without it
		// (test.sh runs this package both ways).
		t.Log("the race detector allocates: only the cycle runs here, the count is checked without -race")
	}
	frame := udpFrame(5000, 9999, "allocs")
	b := NewBatch(16)
	ctx := context.Background()
	cycle := func(send bool) {
		for i := 0; i < 8; i++ {
			r.ports[0].Links[0].Inject(frame)
		}
		got := 0
		for got < 8 {
			k, err := ch.Read(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			got += k
			if send {
				ch.Send(b)
			} else {
				ch.Release(b)
			}
		}
		r.ports[0].Links[0].Drain(nil)
	}
	cycle(true) // warm up
	if a := testing.AllocsPerRun(200, func() { cycle(false) }); a != 0 && !raceEnabled {
		t.Errorf("read + release: %.1f allocations per round of 8 packets", a)
	}
	if a := testing.AllocsPerRun(200, func() { cycle(true) }); a != 0 && !raceEnabled {
		t.Errorf("read + send: %.1f allocations per round of 8 packets", a)
	}
	ch.Close()
	r.stop(t)
}

// TestDoubleReleaseCaught: in debug mode a frame given back twice panics at the second give.
func TestDoubleReleaseCaught(t *testing.T) {
	r := newRig(t, 1, 4096, Config{})
	ch, err := r.set.Open("udp:9", Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.inject(t, 0, udpFrame(1, 9, "x"))
	b := NewBatch(4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ch.Read(ctx, b); err != nil {
		t.Fatal(err)
	}
	copyOfBatch := *b
	copyOfBatch.d = append([]desc(nil), b.d...)
	copyOfBatch.lanes = append([]*lane(nil), b.lanes...)
	view := b.Bytes(0)
	ch.Release(b)
	if view[0] != 0xdb {
		t.Error("a released frame was not poisoned in debug mode")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("releasing a frame twice did not panic")
			}
		}()
		ch.Release(&copyOfBatch)
	}()
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a view used after Release did not panic")
			}
		}()
		_ = b.Bytes(0)
	}()
	ch.Close()
	r.stop(t)
}

// TestTwoShards: a channel whose flows arrive on two queues has a lane on each shard; the
// reader merges them, order holds per flow, and each frame sent goes out of the queue of the
// shard that owns it.
func TestTwoShards(t *testing.T) {
	r := newRig(t, 2, 4096, Config{QueueLimit: 1024, LendCap: 1024})
	ch, err := r.set.Open("udp:198.18.0.1:9999", Options{})
	if err != nil {
		t.Fatal(err)
	}
	const per = 200 // 400 per shard: the tx ring (512) holds them all, however late the test drains
	type flow struct {
		shard int
		port  uint16
	}
	flows := []flow{{0, 1000}, {1, 2000}, {0, 3000}, {1, 4000}}
	next := map[uint16]int{}
	done := make(chan error, 1)
	go func() {
		b := NewBatch(32)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got := 0
		for got < per*len(flows) {
			k, err := ch.Read(ctx, b)
			if err != nil {
				done <- err
				return
			}
			for i := 0; i < k; i++ {
				f := b.Bytes(i)
				src := binary.BigEndian.Uint16(f[34:36])
				seq := int(binary.BigEndian.Uint16(f[42:44]))
				want := flows[slices.IndexFunc(flows, func(x flow) bool { return x.port == src })].shard
				if b.Shard(i) != want {
					done <- fmt.Errorf("flow %d came from shard %d, sent on %d", src, b.Shard(i), want)
					return
				}
				if seq != next[src] {
					done <- fmt.Errorf("flow %d: packet %d after %d", src, seq, next[src]-1)
					return
				}
				next[src]++
			}
			got += k
			ch.Send(b)
		}
		done <- nil
	}()
	out := make([]int, 2)
	for s := 0; s < per; s++ {
		for _, f := range flows {
			p := make([]byte, 2)
			binary.BigEndian.PutUint16(p, uint16(s))
			r.inject(t, f.shard, udpFrame(f.port, 9999, string(p)))
		}
		for sh := range out {
			out[sh] += r.ports[sh].Links[0].Drain(nil)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for out[0]+out[1] < per*len(flows) && time.Now().Before(deadline) {
		for sh := range out {
			out[sh] += r.ports[sh].Links[0].Drain(nil)
		}
		pause()
	}
	if out[0] != 2*per || out[1] != 2*per {
		t.Errorf("sent out of shard 0: %d, shard 1: %d; want %d each; shard drops %v, %v", out[0], out[1], 2*per,
			r.engine.Snapshot()[0].Drops, r.engine.Snapshot()[1].Drops)
	}
	ch.Close()
	r.stop(t)
}
