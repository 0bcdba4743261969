package capture

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
)

// TestTapCopyNoAllocs: the shard's side of a capture (filter, copy into the ring, a full
// ring counted) allocates nothing, and a trace's tap neither.
func TestTapCopyNoAllocs(t *testing.T) {
	f, _ := Parse("udp and dst port 9")
	r := NewRing(4, 2048)
	tap := NewTap(0, r, Select{Filter: f}, nil)
	u := udpFrame("198.18.0.2", "198.18.0.1", 20000, 9)
	p := &pipelines.Packet{Len: uint32(len(u))}
	if n := testing.AllocsPerRun(1000, func() { tap.Packet(0, pipelines.TapIn, p, u) }); n != 0 {
		t.Errorf("the capture tap allocates %v per packet", n)
	}
	if r.Matched[0].Load() != 1001 || r.Dropped[0].Load() != 1001-4 || r.Len() != 4 {
		t.Errorf("matched %d dropped %d held %d", r.Matched[0].Load(), r.Dropped[0].Load(), r.Len())
	}
	tr := &Tracer{}
	tr.Budget.Store(1 << 40)
	trap := NewTap(0, NewRing(4, 2048), Select{Filter: f, Trace: true}, tr)
	if n := testing.AllocsPerRun(1000, func() {
		trap.Packet(0, pipelines.TapIn, p, u)
		trap.Packet(0, pipelines.TapOut, p, u)
	}); n != 0 {
		t.Errorf("the trace tap allocates %v per packet", n)
	}
}

func TestRingOrder(t *testing.T) {
	r := NewRing(3, 16) // rounds to 4
	for i := 0; i < 6; i++ {
		r.Put(&Header{ID: uint64(i)}, bytes.Repeat([]byte{byte(i)}, 20))
	}
	var got []uint64
	r.Drain(func(h *Header, d []byte) {
		if len(d) != 16 || d[0] != byte(h.ID) || h.Len != 0 {
			t.Errorf("record %d: %d bytes %v", h.ID, len(d), d[:1])
		}
		got = append(got, h.ID)
	})
	if len(got) != 4 || got[0] != 0 || got[3] != 3 || r.Dropped[0].Load() != 2 {
		t.Errorf("drained %v, dropped %d", got, r.Dropped[0].Load())
	}
}

// fakeTarget runs pipelines in the test's goroutine, as shards would.
type fakeTarget struct {
	pipes []*pipelines.Pipeline
	done  chan struct{}
}

func (f *fakeTarget) Name() string                  { return "fake" }
func (f *fakeTarget) Shards() int                   { return len(f.pipes) }
func (f *fakeTarget) SetTap(i int, t pipelines.Tap) { f.pipes[i].SetTap(t) }
func (f *fakeTarget) Interfaces() []string          { return []string{"eth0", "eth1"} }
func (f *fakeTarget) Queues() []int                 { return []int{0, 1} }
func (f *fakeTarget) Done() <-chan struct{}         { return f.done }
func (f *fakeTarget) StageNames(i int) []string {
	p := f.pipes[i]
	var n []string
	for j := 0; j <= len(p.Stages); j++ {
		n = append(n, p.StageName(j))
	}
	return n
}

type bufWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *bufWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
func (w *bufWriter) Flush() error { return nil }

var reasonOdd = pipelines.RegisterReason("capture-test-odd")

// twoShards: stage "pick" on each shard drops UDP to odd ports (capture-test-odd), hands UDP
// to port 7 on shard 0 over to shard 1, and sends the rest on.
func twoShards() *fakeTarget {
	ft := &fakeTarget{done: make(chan struct{})}
	for s := 0; s < 2; s++ {
		shard := s
		pick := pipelines.Func("pick", func(p *pipelines.Packet, d []byte) {
			dport := int(d[36])<<8 | int(d[37])
			switch {
			case dport == 7 && shard == 0:
				p.Verdict, p.ToShard = pipelines.Handoff, 1
			case dport%2 == 1 && dport != 7:
				p.Verdict, p.Reason = pipelines.Drop, reasonOdd
			default:
				p.Verdict, p.OutIf = pipelines.Transmit, 1
			}
		})
		ft.pipes = append(ft.pipes, &pipelines.Pipeline{Stages: []pipelines.Stage{pipelines.Func("look", func(*pipelines.Packet, []byte) {}), pick}})
		ft.pipes[s].Start(pipelines.ShardInfo{Shard: s, Shards: 2})
	}
	return ft
}

// run passes frames through shard s's pipeline and returns the handed packets' bytes.
func (ft *fakeTarget) run(s int, frames ...[]byte) [][]byte {
	mem := make([]byte, 2048*len(frames))
	b := pipelines.NewBatch(mem, 2048, len(frames))
	for i, f := range frames {
		copy(mem[i*2048:], f)
		b.Pkts = append(b.Pkts, pipelines.Packet{Addr: uint64(i * 2048), Len: uint32(len(f))})
	}
	ft.pipes[s].Run(b)
	var handed [][]byte
	for i := range b.Pkts {
		if b.Pkts[i].Verdict == pipelines.Handoff {
			handed = append(handed, append([]byte(nil), b.Data(i)...))
		}
	}
	return handed
}

func serve(t *testing.T, ft *fakeTarget, req Request) (context.CancelFunc, chan *bufWriter) {
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *bufWriter, 1)
	w := &bufWriter{}
	go func() {
		if err := Serve(ctx, ft, req, Options{StatsEvery: 10 * time.Millisecond, Quiet: 50 * time.Millisecond}, w); err != nil {
			t.Error(err)
		}
		out <- w
	}()
	// Serve installs the taps right after it starts: wait for them.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		n := w.b.Len()
		w.mu.Unlock()
		if n > 0 {
			time.Sleep(time.Millisecond)
			return cancel, out
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("Serve did not start")
	return nil, nil
}

// TestCaptureDropsPcapng captures what every stage drops; the pcapng holds exactly the
// dropped packets with their reason as the comment and the figures in the statistics, and
// tcpdump reads it.
func TestCaptureDropsPcapng(t *testing.T) {
	ft := twoShards()
	cancel, out := serve(t, ft, Request{Drops: true, Filter: "udp"})
	var frames [][]byte
	for port := uint16(1); port <= 10; port++ {
		frames = append(frames, udpFrame("198.18.0.2", "198.18.0.1", 1000, port))
	}
	ft.run(0, frames...)
	ft.run(1, frames...)
	time.Sleep(20 * time.Millisecond)
	cancel()
	w := <-out
	var file bytes.Buffer
	sum, err := WritePcapng(&w.b, &file, "test")
	if err != nil {
		t.Fatal(err)
	}
	// odd ports but 7: 1 3 5 9 on both shards
	if sum.Written != 8 || sum.End == nil || sum.Dropped() != 0 || sum.Stats.Matched[0] != 8 {
		t.Fatalf("written %d, end %+v, stats %+v", sum.Written, sum.End, sum.Stats)
	}
	pf, err := ReadPcapng(bytes.NewReader(file.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(pf.Packets) != 8 || len(pf.Ifaces) != 2 || pf.Ifaces[1] != "eth1" {
		t.Fatalf("file: %d packets, interfaces %v", len(pf.Packets), pf.Ifaces)
	}
	for _, p := range pf.Packets {
		if !strings.Contains(p.Comment, "pick out: drop (capture-test-odd)") || len(p.Data) != 64 {
			t.Errorf("packet comment %q, %d bytes", p.Comment, len(p.Data))
		}
	}
	if s := pf.Stats[0]; s.Matched != 8 || s.Dropped != 0 || s.Delivered != 8 || s.End < s.Start {
		t.Errorf("statistics block: %+v", s)
	}
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatal("tcpdump is not installed (.ci/run installs it): it must read what capture writes")
	}
	path := filepath.Join(t.TempDir(), "drops.pcapng")
	os.WriteFile(path, file.Bytes(), 0o644)
	txt, err := exec.Command("tcpdump", "-nr", path).CombinedOutput()
	if err != nil || strings.Count(string(txt), "UDP") != 8 {
		t.Errorf("tcpdump -r: %v\n%s", err, txt)
	}
}

// TestTraceHandoff follows a packet that stage "pick" of shard 0 hands to shard 1: the trace
// shows both stages on shard 0 with their verdicts, then the same packet on shard 1.
func TestTraceHandoff(t *testing.T) {
	ft := twoShards()
	cancel, out := serve(t, ft, Request{Trace: true, Count: 1, Filter: "dst port 7"})
	defer cancel()
	ft.run(0, udpFrame("198.18.0.2", "198.18.0.1", 1000, 8)) // not traced
	handed := ft.run(0, udpFrame("198.18.0.2", "198.18.0.1", 1000, 7))
	if len(handed) != 1 {
		t.Fatalf("handed %d", len(handed))
	}
	ft.run(1, udpFrame("198.18.0.2", "198.18.0.1", 1000, 7)) // same bytes, but not handed: budget spent, not followed... unless taken as the handed one
	w := <-out
	d := NewDecoder(&w.b)
	var steps []string
	var info *Info
	ids := map[uint64]bool{}
	for {
		v, err := d.Next()
		if err != nil {
			break
		}
		switch x := v.(type) {
		case *Info:
			info = x
		case *Packet:
			steps = append(steps, info.Describe(x))
			ids[x.ID] = true
		}
	}
	want := []string{"shard 0 look in (from eth0)", "shard 0 pick in (from eth0)", "shard 0 pick out: hand-off to shard 1",
		"shard 1 look in (from eth0)", "shard 1 pick in (from eth0)", "shard 1 pick out: transmit on eth1"}
	if strings.Join(steps, "\n") != strings.Join(want, "\n") || len(ids) != 1 {
		t.Errorf("trace (%d ids):\n%s\nwant:\n%s", len(ids), strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
}
