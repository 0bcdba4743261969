package capture

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/netchan/netchan/pipelines"
)

// Target is the running instance a capture or trace taps (a *netchan.Instance is one).
type Target interface {
	Name() string
	Shards() int
	SetTap(shard int, t pipelines.Tap)
	StageNames(shard int) []string
	Interfaces() []string
	Queues() []int
	Done() <-chan struct{}
}

// Request is what a client asks for; it travels as the stream's query parameters.
type Request struct {
	Filter string
	// Stage names the stage (its name or index; "" the first, or with Drops every stage).
	Stage string
	Out   bool // what the stage emits, not what it sees
	Drops bool // what the stage drops
	Trace bool
	// Count: a capture ends after sending this many packets (0: no limit); a trace follows
	// this many packets (0: 1).
	Count int
	Snap  int // bytes kept of each packet (default and maximum 4096)
	Slots int // ring slots per shard (default 1024)
}

// Values encodes the request.
func (r Request) Values() url.Values {
	v := url.Values{}
	v.Set("filter", r.Filter)
	v.Set("stage", r.Stage)
	v.Set("out", strconv.FormatBool(r.Out))
	v.Set("drops", strconv.FormatBool(r.Drops))
	v.Set("trace", strconv.FormatBool(r.Trace))
	v.Set("count", strconv.Itoa(r.Count))
	v.Set("snap", strconv.Itoa(r.Snap))
	v.Set("slots", strconv.Itoa(r.Slots))
	return v
}

// ParseRequest decodes a request.
func ParseRequest(v url.Values) (Request, error) {
	r := Request{Filter: v.Get("filter"), Stage: v.Get("stage")}
	var errs []error
	b := func(name string) bool {
		s := v.Get(name)
		if s == "" {
			return false
		}
		x, err := strconv.ParseBool(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, s))
		}
		return x
	}
	n := func(name string) int {
		s := v.Get(name)
		if s == "" {
			return 0
		}
		x, err := strconv.Atoi(s)
		if err != nil || x < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a number ≥ 0", name, s))
		}
		return x
	}
	r.Out, r.Drops, r.Trace = b("out"), b("drops"), b("trace")
	r.Count, r.Snap, r.Slots = n("count"), n("snap"), n("slots")
	if r.Out && r.Drops {
		errs = append(errs, errors.New("choose what the stage emits (out) or what it drops (drops), not both"))
	}
	return r, errors.Join(errs...)
}

// MaxSnap is the most bytes a record keeps of a packet.
const MaxSnap = 4096

// Options are the server's side of a stream.
type Options struct {
	// XDPFast, if set, reads the XDP programs' count of packets they handled themselves.
	XDPFast func() uint64
	// StatsEvery is how often running Stats are sent (default 250ms).
	StatsEvery time.Duration
	// Quiet is how long a trace that has all its packets waits for more of their steps
	// before it ends (default 300ms).
	Quiet time.Duration
}

// stageIndex resolves a stage given by name or index against a shard's stage names.
func stageIndex(s string, names []string) (int, error) {
	if i, err := strconv.Atoi(s); err == nil {
		if i < 0 || i >= len(names) {
			return 0, fmt.Errorf("stage %d: the pipeline has stages 0 to %d (%v, the local stack last)", i, len(names)-1, names)
		}
		return i, nil
	}
	for i, n := range names {
		if n == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no stage %q: the pipeline's stages are %v (the local stack last)", s, names)
}

// Serve runs one capture or trace on t: it installs a tap on every shard, sends what they
// keep to enc, and removes the taps when the request is done (its count reached, its trace
// complete), ctx ends or t stops. Errors in the request are returned before anything is sent.
// The shards never wait for it: a ring that is full counts what it could not keep, and the
// Stats (sent every StatsEvery and at the end) say how many.
func Serve(ctx context.Context, t Target, req Request, opt Options, w StreamWriter) error {
	f, err := Parse(req.Filter)
	if err != nil {
		return err
	}
	names := t.StageNames(0)
	sel := Select{Filter: f, Stage: 0, Out: req.Out, Drops: req.Drops, Trace: req.Trace}
	what := ""
	switch {
	case req.Trace:
		what = "trace: every stage of packets that match at the first stage"
	case req.Stage == "" && req.Drops:
		sel.Stage, what = -1, "what every stage drops"
	default:
		if req.Stage != "" {
			if sel.Stage, err = stageIndex(req.Stage, names); err != nil {
				return err
			}
		}
		verb := "sees"
		if req.Out {
			verb = "emits"
		} else if req.Drops {
			verb = "drops"
		}
		what = fmt.Sprintf("what stage %d (%s) %s", sel.Stage, names[sel.Stage], verb)
	}
	snap, slots := req.Snap, req.Slots
	if snap <= 0 || snap > MaxSnap {
		snap = MaxSnap
	}
	if slots <= 0 {
		slots = 1024
	}
	if slots > 1<<16 {
		return fmt.Errorf("slots %d: at most 65536 per shard", slots)
	}
	if opt.StatsEvery <= 0 {
		opt.StatsEvery = 250 * time.Millisecond
	}
	if opt.Quiet <= 0 {
		opt.Quiet = 300 * time.Millisecond
	}
	n := t.Shards()
	info := &Info{Instance: t.Name(), Trace: req.Trace, Interfaces: t.Interfaces(), Shards: n, Queues: t.Queues(),
		Reasons: pipelines.ReasonNames(), Filter: f.String(), Select: what, Snap: snap, StartNanos: time.Now().UnixNano()}
	for i := 0; i < n; i++ {
		info.Stages = append(info.Stages, t.StageNames(i))
	}
	var tr *Tracer
	if req.Trace {
		tr = &Tracer{}
		budget := req.Count
		if budget <= 0 {
			budget = 1
		}
		tr.Budget.Store(int64(budget))
	}
	rings := make([]*Ring, n)
	for i := range rings {
		rings[i] = NewRing(slots, snap)
	}
	var fast0 uint64
	if opt.XDPFast != nil {
		fast0 = opt.XDPFast()
	}
	enc := NewEncoder(w)
	if err := enc.Info(info); err != nil {
		return err
	}
	for i := range rings {
		t.SetTap(i, NewTap(i, rings[i], sel, tr))
	}
	removed := false
	remove := func() {
		if !removed {
			for i := range rings {
				t.SetTap(i, nil)
			}
			removed = true
		}
	}
	defer remove()

	var sent uint64
	limit := uint64(0)
	if !req.Trace && req.Count > 0 {
		limit = uint64(req.Count)
	}
	drain := func() int {
		got := 0
		for _, r := range rings {
			got += r.Drain(func(h *Header, data []byte) {
				if limit > 0 && sent >= limit {
					return
				}
				enc.Packet(h, data)
				sent++
			})
		}
		return got
	}
	stats := func(final bool) *Stats {
		s := &Stats{Matched: make([]uint64, len(info.Interfaces)), Dropped: make([]uint64, len(info.Interfaces)), Sent: sent, Final: final}
		for _, r := range rings {
			for i := range s.Matched {
				s.Matched[i] += r.Matched[ifIndex(uint8(i))].Load()
				s.Dropped[i] += r.Dropped[ifIndex(uint8(i))].Load()
			}
		}
		if opt.XDPFast != nil {
			s.XDPFast = opt.XDPFast() - fast0
		}
		if final {
			s.EndNano = time.Now().UnixNano()
		}
		return s
	}
	if err := enc.Flush(); err != nil {
		return err
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	lastStats, lastRecord := time.Now(), time.Now()
	why := ""
	for why == "" {
		select {
		case <-ctx.Done():
			why = "stopped"
		case <-t.Done():
			why = "instance stopped"
		case <-tick.C:
		}
		if got := drain(); got > 0 {
			lastRecord = time.Now()
		}
		if tr != nil {
			tr.Expire()
		}
		switch {
		case limit > 0 && sent >= limit:
			why = "count"
		case tr != nil && tr.Budget.Load() <= 0 && tr.Pending() == 0 && time.Since(lastRecord) > opt.Quiet:
			why = "done"
		}
		if time.Since(lastStats) >= opt.StatsEvery {
			enc.Stats(stats(false))
			lastStats = time.Now()
		}
		if err := enc.Flush(); err != nil {
			return nil // the client has gone
		}
	}
	// Remove the taps, give a run that still holds one a moment to finish, and send what
	// the rings still hold.
	remove()
	quiet := 0
	for i := 0; i < 200 && quiet < 2; i++ { // a run that still holds a tap finishes within a pass
		m := matched(rings)
		time.Sleep(2 * time.Millisecond)
		drain()
		if matched(rings) == m {
			quiet++
		} else {
			quiet = 0
		}
	}
	enc.Stats(stats(true))
	enc.End(&End{Why: why})
	enc.Flush()
	return nil
}

func matched(rings []*Ring) uint64 {
	var n uint64
	for _, r := range rings {
		for i := range r.Matched {
			n += r.Matched[i].Load()
		}
	}
	return n
}

// StreamWriter is where Serve writes: a control stream's response body.
type StreamWriter interface {
	Write([]byte) (int, error)
	Flush() error
}
