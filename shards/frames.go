package shards

import "fmt"

// place is where a frame is. Every frame of a UMEM is in exactly one place.
type place uint8

const (
	placeFree     place = iota
	placeKernelRx       // fill ring, in the kernel, or on the rx ring
	placeBatch          // in the shard's current batch (a stage holds it)
	placeHandoff        // lent to another shard as a spare, or on its way back filled
	placeStack          // held by the local stack
	placeKernelTx       // tx ring, in the kernel, or on the completion ring
	placeLent           // lent by a stage (verdict Lend) to a netchannel's reader
	numPlaces
)

var placeNames = [numPlaces]string{"free", "kernel-rx", "batch", "handoff", "stack", "kernel-tx", "lent"}

func (p place) String() string { return placeNames[p] }

// frames is a shard's free list and its count of frames in every other place. With debug on it
// also records each frame's place and checks every move.
type frames struct {
	free      []uint64
	total     int
	count     [numPlaces]int
	frameBits uint
	debug     []place // per frame; nil unless debugging
	err       error   // first inconsistency found in debug mode
}

func newFrames(numFrames, frameSize uint32, debug bool) *frames {
	f := &frames{free: make([]uint64, 0, numFrames), total: int(numFrames)}
	for frameSize > 1 {
		frameSize >>= 1
		f.frameBits++
	}
	for i := int(numFrames) - 1; i >= 0; i-- {
		f.free = append(f.free, uint64(i)<<f.frameBits)
	}
	f.count[placeFree] = int(numFrames)
	if debug {
		f.debug = make([]place, numFrames)
	}
	return f
}

// base is the frame address of any address inside the frame.
func (f *frames) base(addr uint64) uint64 { return addr >> f.frameBits << f.frameBits }

// moved records that n frames went from one place to another.
func (f *frames) moved(from, to place, n int) {
	f.count[from] -= n
	f.count[to] += n
}

// track checks and records one frame's move; only in debug mode.
func (f *frames) track(addr uint64, from, to place) {
	if f.debug == nil {
		return
	}
	i := addr >> f.frameBits
	if i >= uint64(len(f.debug)) {
		f.fail(fmt.Errorf("frame address %#x outside the UMEM", addr))
		return
	}
	if f.debug[i] != from {
		f.fail(fmt.Errorf("frame %d (addr %#x) moved %s→%s but was in %s", i, addr, from, to, f.debug[i]))
	}
	f.debug[i] = to
}

func (f *frames) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

// get takes up to len(dst) frames off the free list into place to.
func (f *frames) get(dst []uint64, to place) int {
	n := len(dst)
	if n > len(f.free) {
		n = len(f.free)
	}
	copy(dst, f.free[len(f.free)-n:])
	f.free = f.free[:len(f.free)-n]
	f.moved(placeFree, to, n)
	if f.debug != nil {
		for _, a := range dst[:n] {
			f.track(a, placeFree, to)
		}
	}
	return n
}

// unget returns frames that get took but that could not be placed.
func (f *frames) unget(addrs []uint64, from place) {
	for _, a := range addrs {
		f.track(a, from, placeFree)
	}
	f.free = append(f.free, addrs...)
	f.moved(from, placeFree, len(addrs))
}

// put returns one frame (any address inside it) to the free list.
func (f *frames) put(addr uint64, from place) {
	a := f.base(addr)
	f.track(a, from, placeFree)
	f.free = append(f.free, a)
	f.moved(from, placeFree, 1)
}

// check verifies the invariant: the places add up to the UMEM, the free list matches its count,
// and (in debug mode) the per-frame record agrees with the counts.
func (f *frames) check() error {
	if f.err != nil {
		return f.err
	}
	sum := 0
	for p, n := range f.count {
		if n < 0 {
			return fmt.Errorf("frame accounting: %d frames in %s", n, place(p))
		}
		sum += n
	}
	if sum != f.total {
		return fmt.Errorf("frame accounting: places add up to %d frames, UMEM has %d (%v)", sum, f.total, f.count)
	}
	if len(f.free) != f.count[placeFree] {
		return fmt.Errorf("frame accounting: free list holds %d, count says %d", len(f.free), f.count[placeFree])
	}
	if f.debug != nil {
		var per [numPlaces]int
		for _, p := range f.debug {
			per[p]++
		}
		if per != f.count {
			return fmt.Errorf("frame accounting: per-frame record %v disagrees with counts %v", per, f.count)
		}
	}
	return nil
}

// Places reports how many frames are in each place, by name.
func (f *frames) places() map[string]int {
	m := make(map[string]int, numPlaces)
	for p, n := range f.count {
		m[place(p).String()] = n
	}
	return m
}
