package pipelines

import "testing"

type originatorAt struct {
	deadline int64
	punctual bool
}

func (o *originatorAt) Name() string        { return "at" }
func (o *originatorAt) Process(*Batch)      {}
func (o *originatorAt) Originate(*Batch)    {}
func (o *originatorAt) NextDeadline() int64 { return o.deadline }

type punctualAt struct{ originatorAt }

func (p *punctualAt) Punctual() bool { return p.punctual }

// PunctualDeadline takes only the stages that are Punctual and say so now; NextDeadline takes
// every originator.
func TestPunctualDeadline(t *testing.T) {
	loose := &originatorAt{deadline: 100}
	off := &punctualAt{originatorAt{deadline: 150, punctual: false}}
	on := &punctualAt{originatorAt{deadline: 300, punctual: true}}
	p := &Pipeline{Stages: []Stage{loose, off, on}}
	p.Start(ShardInfo{Shards: 1})
	if d := p.NextDeadline(); d != 100 {
		t.Errorf("NextDeadline %d, want 100", d)
	}
	if d := p.PunctualDeadline(); d != 300 {
		t.Errorf("PunctualDeadline %d, want 300 (the punctual stage's)", d)
	}
	on.punctual = false
	if d := p.PunctualDeadline(); d != 0 {
		t.Errorf("PunctualDeadline %d with no punctual stage, want 0", d)
	}
}
