package shards

import "github.com/netchan/netchan/runtime/afxdp"

// Link is one interface's socket on a shard's queue: an AF_XDP socket (afxdp.Link) or the
// in-memory stand-in (memport.Link). All methods are called by the owning shard only, except
// Stats.
type Link interface {
	Receive(d []afxdp.Desc) int
	Fill(addrs []uint64) int
	FillOutstanding() uint32
	Complete(addrs []uint64) int
	Transmit(d []afxdp.Desc) int
	Flush() (pending bool, kicks int)
	WakeRx()
	PollFd() int
	Stats() afxdp.Stats
}

// RxReadier is a Link that can tell, from any goroutine and without a system call, whether
// received frames wait on its rx ring. A running shard uses it to wake a sleeping one whose
// frames arrived (see shard.wakeSleepers); links without it are left to the netpoller.
type RxReadier interface {
	RxReady() bool
}

// Queue is what one shard drives: a UMEM and the links that share it.
type Queue struct {
	ID        int // the queue index on the interfaces, for status and logs
	Mem       []byte
	FrameSize uint32
	NumFrames uint32
	// RingSize is the entries of each link's tx ring, for the frames a shard keeps for itself
	// (ShardInfo.Lendable); 0 means NumFrames/4.
	RingSize uint32
	Links    []Link
}

// BusyPoller is a Link that can run its queue's NAPI poll (the driver's receive and completion
// work) inside the shard's own system call: an afxdp.Link opened with busy polling. See
// doc.go, "Busy polling".
type BusyPoller interface {
	RxReadier
	// BusyPolling reports whether the socket was set up for busy polling.
	BusyPolling() bool
	// BusyPoll runs the NAPI poll once; received frames are on the rx ring when it returns.
	BusyPoll()
	// NAPIID is the NAPI instance the kernel recorded for the socket, 0 for none (yet).
	NAPIID() (uint32, error)
}
