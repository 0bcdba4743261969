package shards_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/shards"
)

// TestLabBusyPollVeth: busy polling asked for on a lab veth does nothing, and says so. Through
// the front door (native and generic XDP) Start logs it unavailable before any packet, the
// shards report every link unavailable and never poll, and reflect works as usual. The engine
// alone, on busy-polling sockets and told nothing, finds out from the first packets: the
// kernel recorded no NAPI id, so the link becomes unavailable and is never polled.
func TestLabBusyPollVeth(t *testing.T) {
	labtest.RequireRoot(t)
	const count = 500
	check := func(t *testing.T, snap []shards.Snapshot, res []trafficgen.Result, why string) {
		t.Helper()
		for _, r := range res {
			if r.Sent != count || r.Received != count {
				t.Errorf("sent %d, got back %d", r.Sent, r.Received)
			}
		}
		for _, s := range snap {
			if len(s.BusyPoll) != 1 || s.BusyPoll[0].String() != "unavailable ("+why+")" {
				t.Errorf("shard %d: busy polling %+v, want unavailable (%s)", s.Shard, s.BusyPoll, why)
			}
			if s.BusyPollCalls != 0 || s.BusyPollRxPackets != 0 || s.RxPackets < count {
				t.Errorf("shard %d: %d busy polls brought %d; rx %d", s.Shard, s.BusyPollCalls, s.BusyPollRxPackets, s.RxPackets)
			}
		}
	}
	for _, c := range []struct {
		mode xdpprog.Mode
		why  string
	}{{xdpprog.ModeNative, "no NAPI id: veth"}, {xdpprog.ModeGeneric, "no NAPI id: generic XDP"}} {
		t.Run("start/"+c.mode.String(), func(t *testing.T) {
			l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 1})
			ep := l.Netchan[0]
			var lg logLines
			spec, _ := basic.ByName("reflect")
			in := start(t, netchan.Config{Interfaces: []string{ep.Iface}, Queues: []int{0}, XDPMode: c.mode, Debug: true,
				BusyPoll: netchan.BusyPoll{On: true}, Logf: lg.logf}, spec)
			want := fmt.Sprintf("netchan: %s: busy polling unavailable (%s): its shards keep their usual loop", ep.Iface, c.why)
			if !strings.Contains(lg.String(), want) || !strings.Contains(lg.String(), "shards: busy polling on "+ep.Iface+": unavailable ("+c.why+")") {
				t.Errorf("logs %q lack %q and the shards' line", lg.String(), want)
			}
			res := send(t, l, []int{0}, c.mode, count, 2)
			snap := in.Snapshot()
			if err := in.Stop(); err != nil {
				t.Fatal(err)
			}
			check(t, snap, res, c.why)
		})
	}
	t.Run("engine", func(t *testing.T) {
		l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 1})
		ep := l.Netchan[0]
		ifi, err := net.InterfaceByName(ep.Iface)
		if err != nil {
			t.Fatal(err)
		}
		prog, err := xdpprog.Load(xdpprog.Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		defer prog.Close()
		if err := prog.Claim("test", claim.All()); err != nil {
			t.Fatal(err)
		}
		if _, err := prog.Attach(ifi.Index, xdpprog.ModeNative); err != nil {
			t.Fatal(err)
		}
		port, err := afxdp.Open(afxdp.Config{Queue: 0, Ifaces: []string{ep.Iface}, BusyPoll: afxdp.BusyPoll{On: true}, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		defer port.Close()
		if err := prog.RegisterSocket(0, port.Links[0].FD()); err != nil {
			t.Fatal(err)
		}
		var lg logLines
		e, err := shards.New(shards.Config{Queues: []shards.Queue{{ID: 0, Mem: port.Mem(), FrameSize: port.UMEM.FrameSize,
			NumFrames: port.UMEM.NumFrames, RingSize: port.RingSize, Links: []shards.Link{port.Links[0]}}},
			NewPipeline: func(int) *pipelines.Pipeline { return &pipelines.Pipeline{Stages: []pipelines.Stage{basic.Reflect()}} },
			Debug:       true, Logf: lg.logf, Ifaces: []pipelines.Interface{{Name: ep.Iface}}, BusyPoll: shards.BusyPoll{On: true}})
		if err != nil {
			t.Fatal(err)
		}
		if s := e.Snapshot()[0].BusyPoll[0].String(); !strings.HasPrefix(s, "waiting") {
			t.Fatalf("before traffic: %s", s)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		res := send(t, l, []int{0}, xdpprog.ModeNative, count, 2)
		snap := e.Snapshot()
		e.MarkClosed()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		check(t, snap, res, "no NAPI id after the first packets")
		if want := "busy polling unavailable (no NAPI id after the first packets): the shard keeps its usual loop"; !strings.Contains(lg.String(), want) {
			t.Errorf("logs %q lack %q", lg.String(), want)
		}
	})
}

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(f string, a ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(f, a...))
	l.mu.Unlock()
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
