package shards

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
)

// handToOwner is a stage that hands each packet to the shard OwnerBySource names (as NAT hands
// a hairpinned packet to its mapping's owner) and lets the packets it owns through.
type handToOwner struct{ shards int }

func (handToOwner) Name() string { return "hand-to-owner" }
func (h handToOwner) Process(b *pipelines.Batch) {
	for i := range b.Pkts {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		if o := pipelines.OwnerBySource(b.Data(i), h.shards); o != b.Shard {
			b.HandTo(i, o)
		}
	}
}

// TestMemStageHandoffResumes runs two shards whose pipeline counts every packet (stage 0), hands
// those of the other shard over (stage 1) and reflects (stage 2). Everything arrives on shard
// 0: shard 1's pipeline must resume the handed packets at stage 1, so its counting stage sees
// none of them, and every packet still comes back reflected, from its owner's port.
func TestMemStageHandoffResumes(t *testing.T) {
	qs, ps := memQueues(t, 2, 1024)
	var counted [2]atomic.Int64
	newPipe := func(shard int) *pipelines.Pipeline {
		count := pipelines.Func("count", func(*pipelines.Packet, []byte) { counted[shard].Add(1) })
		return &pipelines.Pipeline{Stages: []pipelines.Stage{count, handToOwner{shards: 2}, basic.Reflect()}}
	}
	// The owner function keeps every packet where it arrives (shard 0; an Owner also sets up
	// the hand-off rings), so only the stage hands over.
	keep := func([]byte, int) int { return 0 }
	e, err := New(Config{Queues: qs, NewPipeline: newPipe, Owner: keep, Debug: true, SpinIdle: 20 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	const total = 1000
	owners := [2]int{}
	for i := 0; i < total; i++ {
		owners[pipelines.OwnerBySource(frameFor(i).Build(), 2)]++
	}
	if owners[0] == 0 || owners[1] == 0 {
		t.Fatalf("test frames all map to one owner: %v", owners)
	}
	gotOn := [2]int{}
	drain := func() {
		for i, p := range ps {
			p.Links[0].Drain(func([]byte) { gotOn[i]++ })
		}
	}
	for i := 0; i < total; i++ {
		f := frameFor(i).Build()
		deadline := time.Now().Add(5 * time.Second)
		for !ps[0].Links[0].Inject(f) {
			drain()
			if time.Now().After(deadline) {
				t.Fatalf("could not inject frame %d", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for gotOn[0]+gotOn[1] < total && time.Now().Before(deadline) {
		drain()
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if gotOn != owners {
		t.Errorf("reflected frames left shard 0/1: %v, owners say %v", gotOn, owners)
	}
	if c0, c1 := counted[0].Load(), counted[1].Load(); c0 != total || c1 != 0 {
		t.Errorf("the counting stage saw %d packets on shard 0 and %d on shard 1, want %d and 0 (the owner resumes at the stage that handed over)", c0, c1, total)
	}
	snaps := e.Snapshot()
	if snaps[0].HandoffOut != uint64(owners[1]) || snaps[1].HandoffIn != uint64(owners[1]) {
		t.Errorf("hand-off counters out=%d in=%d, want %d", snaps[0].HandoffOut, snaps[1].HandoffIn, owners[1])
	}
	for i, pl := range e.FramePlaces() {
		if pl["batch"] != 0 || pl["handoff"] != 0 || pl["kernel-tx"] != 0 {
			t.Errorf("shard %d frames not home after shutdown: %v", i, pl)
		}
	}
}
