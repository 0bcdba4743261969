package pipelines_test

import (
	"testing"

	"github.com/netchan/netchan/pipelines"
)

// seen counts the packets a stage was shown undecided, by first byte.
type seen struct {
	name string
	got  map[byte]int
	then func(p *pipelines.Packet, d []byte)
}

func (s *seen) Name() string { return s.name }
func (s *seen) Process(b *pipelines.Batch) {
	for i := range b.Pkts {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		d := b.Data(i)
		s.got[d[0]]++
		if s.then != nil {
			s.then(&b.Pkts[i], d)
		}
	}
}

// TestResumeAtHandingStage: a packet another shard's stage 1 handed over skips stage 0 on this
// shard and is decided by stage 1 (or a later one) as any other; one handed over before any
// stage (Resume 0), or with a Resume this pipeline has no stage for, runs from the first; the
// counters charge each stage only with what it was shown.
func TestResumeAtHandingStage(t *testing.T) {
	first := &seen{name: "count", got: map[byte]int{}}
	second := &seen{name: "nat-like", got: map[byte]int{}, then: func(p *pipelines.Packet, d []byte) {
		if d[0] >= 100 {
			p.Verdict, p.OutIf = pipelines.Transmit, 0
		}
	}}
	third := &seen{name: "last", got: map[byte]int{}, then: func(p *pipelines.Packet, d []byte) {
		p.Verdict = pipelines.Transmit
	}}
	pipe := &pipelines.Pipeline{Stages: []pipelines.Stage{first, second, third}}
	pipe.Start(pipelines.ShardInfo{Shards: 1})
	const fs = 2048
	mem := make([]byte, 16*fs)
	b := pipelines.NewBatch(mem, fs, 16)
	add := func(slot int, first byte, handed bool, resume uint8) {
		mem[slot*fs] = first
		p := pipelines.Packet{Addr: uint64(slot * fs), Len: 60, Resume: resume}
		if handed {
			b.AppendHanded(p)
		} else {
			b.Pkts = append(b.Pkts, p)
		}
	}
	add(0, 1, false, 0)  // received here: every stage from the first
	add(1, 100, true, 2) // handed by another shard's stage 1, decided by stage 1 here
	add(2, 2, true, 2)   // handed by stage 1, decided by stage 2
	add(3, 3, true, 0)   // handed before any stage (the owner function): from the first
	add(4, 4, true, 9)   // a stage this pipeline does not have: from the first
	pipe.Run(b)
	if want := map[byte]int{1: 1, 3: 1, 4: 1}; !same(first.got, want) {
		t.Errorf("stage 0 saw %v, want %v (not the packets handed over by stage 1)", first.got, want)
	}
	if want := map[byte]int{1: 1, 100: 1, 2: 1, 3: 1, 4: 1}; !same(second.got, want) {
		t.Errorf("stage 1 saw %v, want %v", second.got, want)
	}
	if want := map[byte]int{1: 1, 2: 1, 3: 1, 4: 1}; !same(third.got, want) {
		t.Errorf("stage 2 saw %v, want %v", third.got, want)
	}
	for i, p := range b.Pkts {
		if p.Verdict != pipelines.Transmit {
			t.Errorf("packet %d: verdict %v, want transmit", i, p.Verdict)
		}
	}
	if got := b.Pkts[1].By; got != 2 {
		t.Errorf("the packet stage 1 decided says By %d, want 2", got)
	}
	snap := pipe.Snapshot()
	if snap[0].Packets != 3 || snap[1].Packets != 5 || snap[2].Packets != 4 || snap[1].Decided != 1 {
		t.Errorf("stage counters %+v, %+v, %+v: want 3, 5 (1 decided), 4 packets", snap[0], snap[1], snap[2])
	}
	// Reset forgets the handed packets: the next batch runs as usual.
	b.Reset()
	add(0, 5, false, 0)
	pipe.Run(b)
	if first.got[5] != 1 {
		t.Errorf("after Reset, stage 0 did not see a received packet")
	}
}

func same(a, b map[byte]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
