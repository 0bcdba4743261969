package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// TestLabNetchannelBench runs the netchannel benchmark briefly in a lab (one round, short
// windows, two fixed rates, both modes) and checks that every variant produced
// figures, that the netchannel variant's channel received the traffic (its Stats().Received
// moved, and in echo mode it sent and the generator got replies), and that the kernel did not
// answer instead: with the channel open, the root namespace's UDP InDatagrams and NoPorts (the
// kernel's ICMP port-unreachable path) stay still.
func TestLabNetchannelBench(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("TestLabNetchannelBench needs root (namespaces, veth, XDP, AF_XDP): %v", lab.ErrNotRoot)
	}
	labtest.RequireRoot(t) // as root: runs in the lab phase (steps aside under -short, like every lab test)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	name := labtest.UniqueName(t)
	t.Cleanup(func() { lab.Down(name) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	// Two fixed rates: full load is the benchmark's, and on a busy machine an echo run at full
	// load can see no reply at all in a short window (the generator's core takes the replies).
	rates := []int{20000, 50000}
	rep, err := RunNetchannel(ctx, NetchannelOptions{Runs: 1, Warmup: 200 * time.Millisecond, Window: time.Second,
		Rates: rates, Retries: -1, QuietWait: -1, LabName: name, Generator: []string{exe}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("benchmark took %v\n%s", time.Since(start).Round(time.Millisecond), rep.Table())
	for _, mode := range []string{ModeRx, ModeEcho} {
		for _, v := range []string{Netchannel, Epoll, Mmsg, XDPDrop} {
			if v == XDPDrop && mode == ModeEcho {
				continue
			}
			for _, rate := range rates {
				f := rep.Figure(mode, v, rate)
				if f == nil || f.Runs == 0 {
					t.Errorf("%s %s %s: no figure (a failed run? see the log)", mode, v, rateName(rate))
					continue
				}
				// /proc/stat is sampled by ticks (4 ms here): in a short window a lightly loaded
				// core can show no busy tick at all, and the whole machine less the generator
				// (exact) can come out negative. The own threads' figure is exact.
				if f.PPS.Median <= 0 || f.NsPerPacket.Median < 0 || f.TaskNsPerPacket.Median <= 0 {
					t.Errorf("%s %s %s: empty figure: %.0f pkt/s, %.0f ns/pkt (own threads %.0f)", mode, v, rateName(rate),
						f.PPS.Median, f.NsPerPacket.Median, f.TaskNsPerPacket.Median)
				}
				if v != XDPDrop && f.AboveFloor == nil {
					t.Errorf("%s %s %s: no CPU above the floor", mode, v, rateName(rate))
				}
			}
		}
	}
	var netchannelRuns int
	for _, r := range rep.Runs {
		if r.Err != "" {
			t.Errorf("%s %s %s: %s", r.Mode, r.Variant, rateName(r.Rate), r.Err)
			continue
		}
		if !r.Check.OK() {
			t.Errorf("%s %s %s: counts disagree with the interface counters: %s", r.Mode, r.Variant, rateName(r.Rate), r.Check.Note)
		}
		if r.Variant != Netchannel {
			continue
		}
		netchannelRuns++
		d, ok := r.Receiver.(NetchannelCounts)
		if !ok {
			t.Errorf("%s netchannel %s: receiver detail is %T, want NetchannelCounts", r.Mode, rateName(r.Rate), r.Receiver)
			continue
		}
		t.Logf("%s netchannel %s: channel received %d, sent %d, released %d, drops %v, reads %d; kernel UDP in %d, no-port %d; generator sent %d, replies %d",
			r.Mode, rateName(r.Rate), d.Channel.Received, d.Channel.Sent, d.Channel.Released, d.Channel.Drops, d.Reads,
			d.Kernel.InDatagrams, d.Kernel.NoPorts, r.Check.GenSent, r.Check.Replies)
		if d.Channel.Received == 0 || d.Reads == 0 {
			t.Errorf("%s netchannel %s: the channel received nothing (Stats().Received %d, %d reads): the XDP program did not take the flow, or the shard did not deliver",
				r.Mode, rateName(r.Rate), d.Channel.Received, d.Reads)
		}
		// At full load the reader, sharing its core with the shard and the NAPI thread, falls
		// behind and the channel drops (counted); at the fixed rate it must get everything.
		if r.Rate != 0 && d.Channel.Received < r.Check.GenSent*9/10 {
			t.Errorf("%s netchannel %s: the channel received %d of %d sent", r.Mode, rateName(r.Rate), d.Channel.Received, r.Check.GenSent)
		}
		// Other programs' UDP in the root namespace may add a few; the bench's traffic would
		// add thousands.
		if d.Kernel.InDatagrams+d.Kernel.NoPorts > 50 {
			t.Errorf("%s netchannel %s: the kernel's UDP saw %d datagrams (%d to no port) while the channel was open: it got the channel's flow",
				r.Mode, rateName(r.Rate), d.Kernel.InDatagrams, d.Kernel.NoPorts)
		}
		if r.Mode == ModeEcho && (d.Channel.Sent == 0 || r.Check.Replies == 0 || r.Rate != 0 && r.Check.Replies < d.Channel.Received*9/10) {
			t.Errorf("echo netchannel %s: channel sent %d, the generator counted %d replies of %d received",
				rateName(r.Rate), d.Channel.Sent, r.Check.Replies, d.Channel.Received)
		}
	}
	if netchannelRuns != 2*len(rates) {
		t.Errorf("%d netchannel runs, want %d", netchannelRuns, 2*len(rates))
	}
	path, err := rep.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadNetchannelReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Figures) != len(rep.Figures) || filepath.Ext(path) != ".json" {
		t.Errorf("report read back: %d figures, want %d (%s)", len(back.Figures), len(rep.Figures), path)
	}
}
