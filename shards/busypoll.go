package shards

import (
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/netchan/netchan/pipelines"
)

// Busy-poll states of one link on one shard.
const (
	busyWaiting     int32 = iota // the socket busy polls; its NAPI id comes with its first packet
	busyOn                       // NAPI id known: the shard polls the link when its rx ring is empty
	busyUnavailable              // never polled: why says why
)

// whyNoNAPI is why a link that received packets without getting a NAPI id cannot busy poll.
const whyNoNAPI = "no NAPI id after the first packets"

// busyLink is one link's busy polling on a shard. p, on and check belong to the shard's
// goroutine; state and napi are published for Snapshot; why is set before Run or is whyNoNAPI.
type busyLink struct {
	p     BusyPoller
	on    bool // state is busyOn
	check bool // state is busyWaiting: read the NAPI id once the link has received
	state atomic.Int32
	napi  atomic.Uint32
	why   string
}

// BusyPollState is one link's busy polling on one shard, as Snapshot reports it.
type BusyPollState struct {
	Iface string `json:"iface"`
	// State is "on" (the shard polls the queue's NAPI instance NAPIID), "waiting" (the
	// kernel records the NAPI id with the socket's first packet; until then the shard runs
	// its usual loop) or "unavailable" (Why says why; the shard runs its usual loop).
	State  string `json:"state"`
	NAPIID uint32 `json:"napi_id,omitempty"`
	Why    string `json:"why,omitempty"`
}

// String is the state as status shows it: "on (NAPI id 8193)", "waiting for the first
// packet (it brings the NAPI id)", "unavailable (no NAPI id: veth)".
func (b BusyPollState) String() string {
	switch b.State {
	case "on":
		return fmt.Sprintf("on (NAPI id %d)", b.NAPIID)
	case "waiting":
		return "waiting for the first packet (it brings the NAPI id)"
	}
	return fmt.Sprintf("%s (%s)", b.State, b.Why)
}

func (b *busyLink) report(iface string) BusyPollState {
	r := BusyPollState{Iface: iface}
	switch b.state.Load() {
	case busyOn:
		r.State, r.NAPIID = "on", b.napi.Load()
	case busyWaiting:
		r.State = "waiting"
	default:
		r.State, r.Why = "unavailable", b.why
	}
	return r
}

func ifaceName(ifaces []pipelines.Interface, li int) string {
	if li < len(ifaces) && ifaces[li].Name != "" {
		return ifaces[li].Name
	}
	return fmt.Sprintf("link %d", li)
}

// initBusyPoll sets up each link's busy polling: unavailable when the caller says so or the
// link cannot busy poll, on when its socket knows its NAPI id already (zero-copy), else waiting.
func (s *shard) initBusyPoll(cfg BusyPoll, ifaces []pipelines.Interface) error {
	s.busyIdle = cfg.Idle
	s.busy = make([]busyLink, len(s.q.Links))
	for li, l := range s.q.Links {
		b := &s.busy[li]
		if li < len(cfg.Unavailable) && cfg.Unavailable[li] != "" {
			b.why = cfg.Unavailable[li]
			b.state.Store(busyUnavailable)
			continue
		}
		p, ok := l.(BusyPoller)
		if !ok || !p.BusyPolling() {
			b.why = "the link does not busy poll (not an AF_XDP socket opened with busy polling)"
			b.state.Store(busyUnavailable)
			continue
		}
		b.p = p
		id, err := p.NAPIID()
		if err != nil {
			return fmt.Errorf("shard %d: %s queue %d: %w", s.id, ifaceName(ifaces, li), s.q.ID, err)
		}
		if id != 0 {
			b.napi.Store(id)
			b.on, s.busyOn = true, true
			b.state.Store(busyOn)
			continue
		}
		b.check = true
		b.state.Store(busyWaiting)
	}
	s.ifaces = ifaces
	return nil
}

// learnNAPI runs once, in the shard, after link li's first received packets: the kernel has
// recorded the socket's NAPI id by then, or it never will.
func (s *shard) learnNAPI(li int) {
	b := &s.busy[li]
	b.check = false
	id, err := b.p.NAPIID()
	name := ifaceName(s.ifaces, li)
	if err == nil && id != 0 {
		b.napi.Store(id)
		b.on, s.busyOn = true, true
		b.state.Store(busyOn)
		s.logf("shard %d: %s queue %d: busy polling on (NAPI id %d)", s.id, name, s.q.ID, id)
		return
	}
	b.why = whyNoNAPI
	if err != nil {
		s.logf("shard %d: %s queue %d: %v", s.id, name, s.q.ID, err)
	}
	b.state.Store(busyUnavailable)
	s.logf("shard %d: %s queue %d: busy polling unavailable (%s): the shard keeps its usual loop", s.id, name, s.q.ID, whyNoNAPI)
}

// logBusyPoll says, once per interface, what busy polling does on it at start.
func (e *Engine) logBusyPoll() {
	for li := range e.cfg.Queues[0].Links {
		byState := map[string][]string{}
		for _, s := range e.shards {
			if li >= len(s.busy) {
				continue
			}
			st := s.busy[li].report("")
			key := st.State
			if st.State == "unavailable" {
				key += " (" + st.Why + ")"
			}
			q := fmt.Sprint(s.q.ID)
			if st.State == "on" {
				q += fmt.Sprintf(" (NAPI id %d)", st.NAPIID)
			}
			byState[key] = append(byState[key], q)
		}
		keys := make([]string, 0, len(byState))
		for k := range byState {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			switch {
			case k == "on":
				parts = append(parts, "on for queue "+strings.Join(byState[k], ", "))
			case k == "waiting":
				parts = append(parts, "waiting for the first packet on queue "+strings.Join(byState[k], ", ")+" (it brings the NAPI id; until then the usual loop)")
			default:
				parts = append(parts, k+" on queue "+strings.Join(byState[k], ", ")+": the usual loop there")
			}
		}
		e.cfg.Logf("shards: busy polling on %s: %s", ifaceName(e.cfg.Ifaces, li), strings.Join(parts, "; "))
	}
}
