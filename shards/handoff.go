package shards

import "github.com/netchan/netchan/internal/spsc"

// handed is a packet copied into a frame of the owner's UMEM.
type handed struct {
	addr uint64
	len  uint32
	hash uint32
	inIf uint8
	// resume is 1 + the index of the stage that handed the packet over (0: the owner
	// function did, before any stage): the owner's pipeline resumes there.
	resume uint8
}

// handoff joins a sending shard to an owner: the owner lends spare frames of its UMEM on spare,
// the sender returns them filled on pkts.
type handoff struct {
	pkts  *spsc.Ring[handed]
	spare *spsc.Ring[uint64]
}

const (
	handoffRing = 256
	spareTarget = 128
)

func newHandoff() *handoff {
	return &handoff{pkts: spsc.New[handed](handoffRing), spare: spsc.New[uint64](handoffRing)}
}
