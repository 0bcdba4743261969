package shards

import (
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/netchan/netchan/pipelines"
)

// Counters are one shard's figures. The shard adds to them once per batch; any goroutine may
// read them.
type Counters struct {
	RxPackets, RxBytes atomic.Uint64
	TxPackets, TxBytes atomic.Uint64
	Drops              [pipelines.MaxReasons]atomic.Uint64
	FillEmpty          atomic.Uint64 // passes where a fill ring wanted frames and the free list had none
	TxRingFull         atomic.Uint64 // passes where a tx ring refused frames
	Polls              atomic.Uint64 // loop passes that received at least one packet
	HandoffOut         atomic.Uint64 // packets this shard handed to their owner
	HandoffIn          atomic.Uint64 // packets other shards handed to this one
	HandoffCopies      atomic.Uint64 // frames copied for hand-off (one per handed packet)
	HandoffStalls      atomic.Uint64 // passes that received less because an owner had no spare frames
	Kicks              atomic.Uint64 // sendto() kicks of tx rings
	Sleeps             atomic.Uint64 // times the shard slept (parked until traffic, a wake or a deadline)
	Yields             atomic.Uint64 // times a busy shard entered the Go scheduler (see doc.go)
	// BusyPollCalls counts busy polls: recvfrom calls that ran a link's NAPI poll because
	// its rx ring was empty (doc.go, "Busy polling").
	BusyPollCalls atomic.Uint64
	// BusyPollRxPackets counts packets a link's receive took in the same pass, right after a
	// busy poll of that link had found its rx ring empty: the packets the busy poll brought
	// (with interrupts deferred, nothing else runs the queue's NAPI meanwhile).
	BusyPollRxPackets atomic.Uint64
	// BusyNanos and IdleNanos split the shard's running time by whether the pass that began
	// an interval found work (the time until the next pass is busy) or not (idle: spinning
	// without work and sleeping); VPP's vector rate and DPDK's busy-polling ratio in one pair.
	BusyNanos, IdleNanos atomic.Uint64
}

// tally accumulates one pass's counts in plain fields before they are published.
type tally struct {
	rxPackets, rxBytes, txPackets, txBytes uint64
	drops                                  [pipelines.MaxReasons]uint64
	anyDrop                                bool
	fillEmpty, txRingFull, polls           uint64
	handoffOut, handoffIn, kicks, sleeps   uint64
	handoffStalls                          uint64
	yields                                 uint64
	busyPolls, busyPollRx                  uint64
	busyNanos, idleNanos                   uint64
}

func (t *tally) drop(r pipelines.DropReason) {
	t.drops[r]++
	t.anyDrop = true
}

func addIf(c *atomic.Uint64, v uint64) {
	if v != 0 {
		c.Add(v)
	}
}

// publish adds the tally to the shared counters and clears it.
func (t *tally) publish(c *Counters) {
	addIf(&c.RxPackets, t.rxPackets)
	addIf(&c.RxBytes, t.rxBytes)
	addIf(&c.TxPackets, t.txPackets)
	addIf(&c.TxBytes, t.txBytes)
	if t.anyDrop {
		for i, v := range t.drops {
			addIf(&c.Drops[i], v)
		}
	}
	addIf(&c.FillEmpty, t.fillEmpty)
	addIf(&c.TxRingFull, t.txRingFull)
	addIf(&c.Polls, t.polls)
	addIf(&c.HandoffOut, t.handoffOut)
	addIf(&c.HandoffCopies, t.handoffOut)
	addIf(&c.HandoffIn, t.handoffIn)
	addIf(&c.HandoffStalls, t.handoffStalls)
	addIf(&c.Kicks, t.kicks)
	addIf(&c.Sleeps, t.sleeps)
	addIf(&c.Yields, t.yields)
	addIf(&c.BusyPollCalls, t.busyPolls)
	addIf(&c.BusyPollRxPackets, t.busyPollRx)
	addIf(&c.BusyNanos, t.busyNanos)
	addIf(&c.IdleNanos, t.idleNanos)
	*t = tally{}
}

// Snapshot is a plain copy of a shard's counters, for status output and tests.
type Snapshot struct {
	Shard          int               `json:"shard"`
	Queue          int               `json:"queue"`
	CPU            int               `json:"cpu"`
	RxPackets      uint64            `json:"rx_packets"`
	RxBytes        uint64            `json:"rx_bytes"`
	TxPackets      uint64            `json:"tx_packets"`
	TxBytes        uint64            `json:"tx_bytes"`
	Drops          map[string]uint64 `json:"drops,omitempty"`
	DropsTotal     uint64            `json:"drops_total"`
	FillEmpty      uint64            `json:"fill_empty"`
	TxRingFull     uint64            `json:"tx_ring_full"`
	Polls          uint64            `json:"polls"`
	PacketsPerPoll float64           `json:"packets_per_poll"`
	HandoffOut     uint64            `json:"handoff_out"`
	HandoffIn      uint64            `json:"handoff_in"`
	HandoffCopies  uint64            `json:"handoff_copies"`
	HandoffStalls  uint64            `json:"handoff_stalls"`
	Kicks          uint64            `json:"kicks"`
	Sleeps         uint64            `json:"sleeps"`
	Yields         uint64            `json:"yields"`
	BusyNanos      uint64            `json:"busy_ns"`
	IdleNanos      uint64            `json:"idle_ns"`
	// BusyPollCalls and BusyPollRxPackets: see Counters. Zero unless busy polling is on.
	BusyPollCalls     uint64 `json:"busy_poll_calls"`
	BusyPollRxPackets uint64 `json:"busy_poll_rx_packets"`
	// BusyPoll is each link's busy polling (nil when busy polling is off), in link order.
	BusyPoll []BusyPollState `json:"busy_poll,omitempty"`
	// Stages are the pipeline's per-stage figures (the local stack last).
	Stages []pipelines.StageSnapshot `json:"stages,omitempty"`
	// Kernel holds the kernel's per-socket counters, one entry per link.
	Kernel []KernelStats `json:"kernel,omitempty"`
}

// KernelStats are the kernel's XDP_STATISTICS for one socket.
type KernelStats struct {
	RxDropped     uint64 `json:"rx_dropped"`
	RxRingFull    uint64 `json:"rx_ring_full"`
	FillRingEmpty uint64 `json:"fill_ring_empty"`
	TxInvalid     uint64 `json:"tx_invalid"`
	RxInvalid     uint64 `json:"rx_invalid"`
}

func (c *Counters) snapshot() Snapshot {
	s := Snapshot{
		RxPackets: c.RxPackets.Load(), RxBytes: c.RxBytes.Load(),
		TxPackets: c.TxPackets.Load(), TxBytes: c.TxBytes.Load(),
		FillEmpty: c.FillEmpty.Load(), TxRingFull: c.TxRingFull.Load(), Polls: c.Polls.Load(),
		HandoffOut: c.HandoffOut.Load(), HandoffIn: c.HandoffIn.Load(), HandoffCopies: c.HandoffCopies.Load(),
		HandoffStalls: c.HandoffStalls.Load(),
		Kicks:         c.Kicks.Load(), Sleeps: c.Sleeps.Load(), Yields: c.Yields.Load(),
		BusyNanos: c.BusyNanos.Load(), IdleNanos: c.IdleNanos.Load(),
		BusyPollCalls: c.BusyPollCalls.Load(), BusyPollRxPackets: c.BusyPollRxPackets.Load(),
	}
	names := pipelines.ReasonNames()
	for i := range c.Drops {
		if v := c.Drops[i].Load(); v != 0 {
			if s.Drops == nil {
				s.Drops = map[string]uint64{}
			}
			name := fmt.Sprintf("reason%d", i)
			if i < len(names) {
				name = names[i]
			}
			s.Drops[name] = v
			s.DropsTotal += v
		}
	}
	if s.Polls > 0 {
		s.PacketsPerPoll = float64(s.RxPackets) / float64(s.Polls)
	}
	return s
}

// Traffic is an instance's packet, byte and drop counts, summed over its shards: what
// TrafficOf gives for one moment and Since for what happened between two.
type Traffic struct {
	RxPackets, RxBytes, TxPackets, TxBytes uint64
	Drops                                  map[string]uint64 // by reason; only reasons seen
	DropsTotal                             uint64
}

// TrafficOf sums the shards' snapshots.
func TrafficOf(snaps []Snapshot) Traffic {
	t := Traffic{Drops: map[string]uint64{}}
	for _, s := range snaps {
		t.RxPackets += s.RxPackets
		t.RxBytes += s.RxBytes
		t.TxPackets += s.TxPackets
		t.TxBytes += s.TxBytes
		for r, n := range s.Drops {
			t.Drops[r] += n
		}
		t.DropsTotal += s.DropsTotal
	}
	return t
}

// Since is what t counted after before (both of one instance): each count less before's.
func (t Traffic) Since(before Traffic) Traffic {
	d := Traffic{RxPackets: t.RxPackets - before.RxPackets, RxBytes: t.RxBytes - before.RxBytes,
		TxPackets: t.TxPackets - before.TxPackets, TxBytes: t.TxBytes - before.TxBytes,
		DropsTotal: t.DropsTotal - before.DropsTotal, Drops: map[string]uint64{}}
	for r, n := range t.Drops {
		if n > before.Drops[r] {
			d.Drops[r] = n - before.Drops[r]
		}
	}
	return d
}

// DropsString lists the drops by reason, sorted by reason: "fault-drop 12, no-socket 3", or
// "none".
func (t Traffic) DropsString() string {
	if len(t.Drops) == 0 {
		return "none"
	}
	reasons := make([]string, 0, len(t.Drops))
	for r := range t.Drops {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	var b strings.Builder
	for i, r := range reasons {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", r, t.Drops[r])
	}
	return b.String()
}
