package netchannel

import (
	"sync/atomic"

	"github.com/netchan/netchan/internal/spsc"
	"github.com/netchan/netchan/pipelines"
)

// desc is one frame on a lane's rings: where it is in the shard's UMEM, how long the packet is,
// its interface and, on the back ring, what the shard should do with it.
type desc struct {
	addr uint64
	n    uint32
	ifc  uint8
	op   uint8
}

// Operations on the back ring.
const (
	opRelease = iota // the reader is done with the frame: free it
	opSend           // transmit the frame on interface ifc
)

// lane joins one channel to one shard: the shard delivers on rx and stocks spare, the reader
// returns frames on back. Each ring has one producer and one consumer (see the package doc).
type lane struct {
	ch    *Channel
	shard int
	wake  func() // the shard's ShardInfo.Wake
	mem   []byte
	fmask uint64

	rx    *spsc.Ring[desc] // shard → reader: received packets
	back  *spsc.Ring[desc] // reader → shard: released frames and frames to transmit
	spare *spsc.Ring[desc] // shard → reader: empty frames for Alloc

	// Written by the reader, read by the shard.
	wantSpare atomic.Int32 // how many empty frames the reader wants stocked
	closing   atomic.Bool  // set by Close: deliver nothing more

	// Written by the shard only.
	lentN   int // frames lent to this lane and not adopted back
	removed bool
	staged  []desc // this batch's deliveries, pushed to rx at the end of Process
	room    int    // free rx entries when this batch first touched the lane
	ctr     laneCounters

	// Published by the shard for readers of status and for Close.
	lent atomic.Int64
}

// laneCounters are one lane's figures; the shard adds, any goroutine reads.
type laneCounters struct {
	received, sent, released atomic.Uint64
	bytes                    atomic.Uint64
	drops                    [numDrops]atomic.Uint64
}

// Why a channel dropped a packet: the reader's own losses, never the shard's.
const (
	dropQueueFull = iota // the channel's queue on this shard was full
	dropLendCap          // the channel had its cap of frames lent out
	dropClosing          // the channel was closing
	numDrops
)

var dropNames = [numDrops]string{"queue-full", "lend-cap", "closing"}

// Drop reasons the pipeline counts for channel drops (per stage, in status).
var (
	reasonQueueFull = pipelines.RegisterReason("netchannel-queue-full")
	reasonLendCap   = pipelines.RegisterReason("netchannel-lend-cap")
	reasonClosing   = pipelines.RegisterReason("netchannel-closing")
)

var dropReasons = [numDrops]pipelines.DropReason{reasonQueueFull, reasonLendCap, reasonClosing}

func newLane(ch *Channel, shard int, queue, lendCap int) *lane {
	backSize := pow2(lendCap)
	return &lane{ch: ch, shard: shard, rx: spsc.New[desc](pow2(queue)), back: spsc.New[desc](backSize),
		spare: spsc.New[desc](pow2(min(lendCap, maxSpare)))}
}

// maxSpare bounds the empty frames a lane keeps for Alloc.
const maxSpare = 256

func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}
