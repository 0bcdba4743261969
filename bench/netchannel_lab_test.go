package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// TestLabNetchannelBench runs the netchannel benchmark briefly in a lab (one round, short
// windows, two fixed rates, both modes) and checks that every variant produced figures (and
// xdp-drop none in echo mode, where it does not run), that the netchannel variant's channel
// received the traffic (its Stats().Received moved, and in echo mode it sent and the generator
// got replies), and that the kernel did not answer instead: with the channel open, the root
// namespace's UDP InDatagrams and NoPorts (the kernel's ICMP port-unreachable path) stay still.
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
	var progress []report.Progress
	d, err := RunNetchannel(ctx, NetchannelOptions{Runs: 1, Warmup: 200 * time.Millisecond, Window: time.Second,
		Rates: rates, Retries: -1, QuietWait: -1, LabName: name, Generator: []string{exe}, Logf: t.Logf,
		Progress: func(p report.Progress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("benchmark took %v\n%s", time.Since(start).Round(time.Millisecond), d.Table())
	// rx: netchannel, epoll, mmsg, xdp-drop; echo: the first three.
	if want := 7 * len(rates); len(d.Runs) != want || len(progress) != want || progress[len(progress)-1].Total != want {
		t.Errorf("%d runs, progress told of %d, want %d", len(d.Runs), len(progress), want)
	}
	for _, mode := range []string{ModeRx, ModeEcho} {
		for _, v := range []string{Netchannel, Epoll, Mmsg, XDPDrop} {
			for _, rate := range rates {
				c := ncCaseName(mode, rate)
				f := d.Figure(c, v)
				if v == XDPDrop && mode == ModeEcho {
					if f != nil {
						t.Errorf("%s %s: a figure of a variant that only receives", c, v)
					}
					continue
				}
				if f == nil || f.Runs == 0 {
					t.Errorf("%s %s: no figure (a failed run? see the log)", c, v)
					continue
				}
				// /proc/stat is sampled by ticks (4 ms here): in a short window a lightly loaded
				// core can show no busy tick at all, and the whole machine less the generator
				// (exact) can come out negative. The own threads' figure is exact.
				pps, ns, task := f.Stats[mPPS].Median, f.Stats[mNsPerPkt].Median, f.Stats[mTaskNsPkt].Median
				if pps <= 0 || ns < 0 || task <= 0 {
					t.Errorf("%s %s: empty figure: %.0f pkt/s, %.0f ns/pkt (own threads %.0f)", c, v, pps, ns, task)
				}
				if _, ok := f.Stats[mNsAbove]; !ok {
					t.Errorf("%s %s: no CPU above the floor", c, v)
				}
			}
		}
	}
	var netchannelRuns int
	for _, r := range d.Runs {
		if r.Err != "" {
			t.Errorf("%s %s: %s", r.Case, r.Variant, r.Err)
			continue
		}
		run, err := NetchannelDetail(r)
		if err != nil {
			t.Fatal(err)
		}
		if !run.Check.OK() {
			t.Errorf("%s %s: counts disagree with the interface counters: %s", r.Case, r.Variant, run.Check.Note)
		}
		if r.Variant != Netchannel {
			continue
		}
		netchannelRuns++
		nc, ok := run.Receiver.(NetchannelCounts)
		if !ok {
			t.Errorf("%s netchannel: receiver detail is %T, want NetchannelCounts", r.Case, run.Receiver)
			continue
		}
		t.Logf("%s netchannel: channel received %d, sent %d, released %d, drops %v, reads %d; kernel UDP in %d, no-port %d; generator sent %d, replies %d",
			r.Case, nc.Channel.Received, nc.Channel.Sent, nc.Channel.Released, nc.Channel.Drops, nc.Reads,
			nc.Kernel.InDatagrams, nc.Kernel.NoPorts, run.Check.GenSent, run.Check.Replies)
		if nc.Channel.Received == 0 || nc.Reads == 0 {
			t.Errorf("%s netchannel: the channel received nothing (Stats().Received %d, %d reads): the XDP program did not take the flow, or the shard did not deliver",
				r.Case, nc.Channel.Received, nc.Reads)
		}
		// At a fixed rate, well below what the reader takes, it must get everything.
		if nc.Channel.Received < run.Check.GenSent*9/10 {
			t.Errorf("%s netchannel: the channel received %d of %d sent", r.Case, nc.Channel.Received, run.Check.GenSent)
		}
		// Other programs' UDP in the root namespace may add a few; the bench's traffic would
		// add thousands.
		if nc.Kernel.InDatagrams+nc.Kernel.NoPorts > 50 {
			t.Errorf("%s netchannel: the kernel's UDP saw %d datagrams (%d to no port) while the channel was open: it got the channel's flow",
				r.Case, nc.Kernel.InDatagrams, nc.Kernel.NoPorts)
		}
		if run.Mode == ModeEcho && (nc.Channel.Sent == 0 || run.Check.Replies == 0 || run.Check.Replies < nc.Channel.Received*9/10) {
			t.Errorf("%s netchannel: channel sent %d, the generator counted %d replies of %d received",
				r.Case, nc.Channel.Sent, run.Check.Replies, nc.Channel.Received)
		}
	}
	if netchannelRuns != 2*len(rates) {
		t.Errorf("%d netchannel runs, want %d", netchannelRuns, 2*len(rates))
	}
	path, err := d.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	back, err := report.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Figures) != len(d.Figures) || len(back.Ratios) != len(d.Ratios) {
		t.Errorf("document read back: %d figures and %d ratios, want %d and %d (%s)", len(back.Figures), len(back.Ratios),
			len(d.Figures), len(d.Ratios), path)
	}
	// The figures above the floor come from values stored in the runs: reading the document
	// back recomputes them alike.
	for _, f := range d.Figures {
		b := back.Figure(f.Case, f.Variant)
		if b == nil || b.Stats[mNsAbove].Median != f.Stats[mNsAbove].Median {
			t.Errorf("read back: %s %s: CPU above the floor %+v, want %+v", f.Case, f.Variant, b, f.Stats[mNsAbove])
		}
	}
}
