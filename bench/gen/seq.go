package gen

// seqWindow is how many sequence numbers below the highest seen a tracker remembers: a
// packet arriving later than that is counted reordered and late (it cannot be told from a
// duplicate any more).
const seqWindow = 1 << 14

// Tracker follows one sequence space (one sending shard's packets, numbered 0, 1, 2, ...):
// which numbers arrived, in a bitmap window of seqWindow numbers below the highest seen.
// It counts, as RFC 4737 defines them, reordered packets (arrived after a higher number had)
// and duplicates (a number seen before, within the window). Lost packets are what was sent
// minus the distinct numbers that arrived (Unique). Pointer-free; does not allocate.
type Tracker struct {
	bits       [seqWindow / 64]uint64
	hi         int64 // highest sequence number seen (-1: none)
	Unique     uint64
	Reordered  uint64
	Duplicates uint64
	// Late counts packets that arrived more than seqWindow numbers behind the highest seen
	// (also counted in Reordered and Unique: assumed not to be duplicates).
	Late uint64
}

// Reset empties t.
func (t *Tracker) Reset() {
	clear(t.bits[:])
	t.hi, t.Unique, t.Reordered, t.Duplicates, t.Late = -1, 0, 0, 0, 0
}

// Extend turns a 32-bit wire sequence number into the 64-bit one nearest the highest seen.
func (t *Tracker) Extend(wire uint32) int64 {
	if t.hi < 0 {
		return int64(wire)
	}
	s := t.hi + int64(int32(wire-uint32(t.hi)))
	if s < 0 {
		return int64(wire)
	}
	return s
}

// See records the arrival of sequence number s.
func (t *Tracker) See(s int64) {
	switch {
	case s > t.hi:
		// Clear the bits of the numbers the window moves over, then mark s.
		if s-t.hi >= seqWindow || t.hi < 0 {
			clear(t.bits[:])
		} else {
			for x := t.hi + 1; x < s; x++ {
				if x&63 == 0 && s-x >= 64 {
					t.bits[(x%seqWindow)/64] = 0
					x += 63
					continue
				}
				t.bits[(x%seqWindow)/64] &^= 1 << (x & 63)
			}
		}
		t.hi = s
		t.bits[(s%seqWindow)/64] |= 1 << (s & 63)
		t.Unique++
	case t.hi-s >= seqWindow:
		t.Late++
		t.Reordered++
		t.Unique++
	default:
		w, m := &t.bits[(s%seqWindow)/64], uint64(1)<<(s&63)
		if *w&m != 0 {
			t.Duplicates++
			return
		}
		*w |= m
		t.Reordered++
		t.Unique++
	}
}
