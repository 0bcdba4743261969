package capture

import (
	"errors"
	"fmt"
	"io"

	"github.com/netchan/netchan/pipelines"
)

// StageName names stage i of shard s ("stage N" if the Info does not know it).
func (in *Info) StageName(s, i int) string {
	if s < len(in.Stages) && i < len(in.Stages[s]) {
		return in.Stages[s][i]
	}
	return fmt.Sprintf("stage %d", i)
}

// Local reports whether stage i of shard s is the local stack.
func (in *Info) Local(s, i int) bool { return s < len(in.Stages) && i == len(in.Stages[s])-1 }

// Iface names interface i.
func (in *Info) Iface(i int) string {
	if i < len(in.Interfaces) {
		return in.Interfaces[i]
	}
	return fmt.Sprintf("if%d", i)
}

// Reason names a drop reason by the instance's table (its registered reasons included).
func (in *Info) Reason(r pipelines.DropReason) string {
	if int(r) < len(in.Reasons) {
		return in.Reasons[r]
	}
	return r.String()
}

// Verdict says what a TapOut record's verdict was, in words: "drop (nat-no-mapping)",
// "transmit on eth1", "hand-off to shard 1", "to the local stack", "consumed".
func (in *Info) Verdict(p *Packet) string {
	switch p.Verdict {
	case pipelines.Drop:
		return "drop (" + in.Reason(p.Reason) + ")"
	case pipelines.Transmit:
		return "transmit on " + in.Iface(int(p.OutIf))
	case pipelines.Handoff:
		return fmt.Sprintf("hand-off to shard %d", p.ToShard)
	case pipelines.ToStack:
		return "to the local stack"
	case pipelines.Consume:
		return "consumed"
	}
	return p.Verdict.String()
}

func (in *Info) queue(s int) string {
	if s < len(in.Queues) {
		return fmt.Sprintf(" on queue %d", in.Queues[s])
	}
	return ""
}

// Describe is one record in words, as a capture's packet comment says it:
// "shard 0 nat in (from eth0)" or "shard 0 nat out: drop (nat-no-mapping)".
func (in *Info) Describe(p *Packet) string {
	if p.Point == PointHandoff {
		return fmt.Sprintf("shard %d received it%s; the owner function gives shard %d: hand-off before the pipeline", p.Shard, in.queue(int(p.Shard)), p.ToShard)
	}
	name := in.StageName(int(p.Shard), int(p.Stage))
	if p.Point == pipelines.TapIn {
		return fmt.Sprintf("shard %d %s in (from %s)", p.Shard, name, in.Iface(int(p.InIf)))
	}
	return fmt.Sprintf("shard %d %s out: %s", p.Shard, name, in.Verdict(p))
}

// Summary is what a capture client received and wrote.
type Summary struct {
	Info    *Info
	Written uint64
	Stats   *Stats // the last figures the instance sent
	End     *End   // nil if the stream ended without one (the connection dropped)
}

// Dropped is the capture's own losses (all interfaces), by the last figures.
func (s *Summary) Dropped() uint64 {
	var n uint64
	if s.Stats != nil {
		for _, d := range s.Stats.Dropped {
			n += d
		}
	}
	return n
}

// WritePcapng reads a capture stream from r and writes it to w as pcapng: every packet with
// its record in words as the packet's comment, and at the end one statistics block per
// interface with the capture's figures (isb_filteraccept, isb_ifdrop, isb_usrdeliv). It
// returns when the stream ends; the file is complete also when the connection dropped (the
// figures are then the last the instance sent).
func WritePcapng(r io.Reader, w io.Writer, app string) (*Summary, error) {
	d := NewDecoder(r)
	v, err := d.Next()
	if err != nil {
		return nil, fmt.Errorf("capture stream: %w", err)
	}
	info, ok := v.(*Info)
	if !ok {
		return nil, errors.New("capture stream: does not start with its description")
	}
	sum := &Summary{Info: info}
	descs := make([]string, len(info.Interfaces))
	for i := range descs {
		descs[i] = fmt.Sprintf("netchan instance %s: %s; filter %s", info.Instance, info.Select, info.Filter)
	}
	pw, err := NewPcapngWriter(w, app, info.Interfaces, descs, info.Snap)
	if err != nil {
		return nil, err
	}
	var readErr error
	perIf := make([]uint64, len(info.Interfaces))
	lastNanos := info.StartNanos
loop:
	for {
		v, err := d.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = err
			}
			break
		}
		switch x := v.(type) {
		case *Packet:
			// A packet is filed under the interface it arrived on (as the figures count it);
			// one the stage transmits is marked outbound, its comment names where it leaves.
			iface, dir := int(x.InIf), DirInbound
			if x.Point == pipelines.TapOut && x.Verdict == pipelines.Transmit {
				dir = DirOutbound
			}
			if iface >= len(info.Interfaces) {
				iface = 0
			}
			if err := pw.Packet(iface, x.Nanos, x.Data, int(x.Len), info.Describe(x), dir); err != nil {
				return sum, err
			}
			sum.Written++
			if iface < len(perIf) {
				perIf[iface]++
			}
			lastNanos = x.Nanos
		case *Stats:
			sum.Stats = x
		case *End:
			sum.End = x
			break loop
		}
	}
	end := lastNanos
	if sum.Stats != nil && sum.Stats.EndNano != 0 {
		end = sum.Stats.EndNano
	}
	for i := range info.Interfaces {
		s := IfStats{Start: info.StartNanos, End: end}
		if sum.Stats != nil && i < len(sum.Stats.Matched) {
			s.Matched, s.Dropped = sum.Stats.Matched[i], sum.Stats.Dropped[i]
		}
		s.Delivered = perIf[i]
		if err := pw.Stats(i, end, s); err != nil {
			return sum, err
		}
	}
	if err := pw.Flush(); err != nil {
		return sum, err
	}
	return sum, readErr
}
