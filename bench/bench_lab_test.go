package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan/bench/report"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

func TestMain(m *testing.M) {
	trafficgen.RunChildIfAsked()
	labtest.SweepStale()
	os.Exit(m.Run())
}

// TestLabBenchCounts runs both benchmarks briefly (one round, short windows) and checks that
// every run's packet counts agree with the interface counters: what the receiver counted
// plus the drops its side reports equals the receiving interface's rx_packets, what the
// generator sent equals what left its veth end (tx_packets + tx_dropped), and for reflect, what
// the receiver sent equals the interface's tx_packets and the replies the generator's XDP
// counter saw equal its interface's rx_packets; each within Tolerance (0.5%). Reflect runs the
// max phase at two frame sizes: the replies of each case must have that case's size.
func TestLabBenchCounts(t *testing.T) {
	labtest.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []Kind{KindRx, KindReflect} {
		t.Run(string(kind), func(t *testing.T) {
			name := labtest.UniqueName(t)
			t.Cleanup(func() { lab.Down(name) })
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			// rx: two queues, the AF_XDP generator on both and every receiver serving both;
			// reflect: one queue, the live-frame generator at full load, two frame sizes.
			queues, engine, sizes := 1, trafficgen.EngineXDP, []int{60, 1000}
			if kind == KindRx {
				queues, engine, sizes = 2, trafficgen.EngineAFXDP, nil
			}
			var progress []report.Progress
			d, err := Run(ctx, Options{Kind: kind, Runs: 1, Warmup: 50 * time.Millisecond, Window: 250 * time.Millisecond,
				Queues: queues, Engine: engine, Rate: 50000, Sizes: sizes, Retries: -1, LabName: name, Generator: []string{exe},
				Logf: t.Logf, Progress: func(p report.Progress) { progress = append(progress, p) }})
			if err != nil {
				t.Fatal(err)
			}
			variants := 5 // kernel, netchan, netchan-loop, asavie, xdp-drop
			if kind == KindReflect {
				variants = 4
			}
			want := variants * (1 + max(len(sizes), 1))
			if len(d.Runs) != want || len(progress) != want {
				t.Fatalf("%d runs, progress told of %d, want %d", len(d.Runs), len(progress), want)
			}
			for _, r := range d.Runs {
				if r.Err != "" {
					t.Errorf("%s %s: %s", r.Variant, r.Case, r.Err)
					continue
				}
				rec, err := RunDetail(r)
				if err != nil {
					t.Fatal(err)
				}
				c := rec.Check
				t.Logf("%s %s: gen sent %d, peer tx %d (+%d dropped), if rx %d, received %d (+%d dropped), if tx %d, sent %d, peer rx %d, replies %d",
					r.Variant, r.Case, c.GenSent, c.PeerTx, c.PeerTxDrop, c.IfRx, c.Received, c.RecvDrops, c.IfTx, c.Sent, c.PeerRx, c.Replies)
				if !c.OK() {
					t.Errorf("%s %s: counts disagree with the interface counters: %s", r.Variant, r.Case, c.Note)
				}
				// Every variant received in its window. Reflect's figure is the replies back at
				// the generator, which at full load on two cores can stall for a whole 250 ms
				// window (the generator's core also runs the replies' NAPI and falls behind: the
				// collapse bench/report's outlier rule exists for); the counts above still agree.
				collapsible := kind == KindReflect && rec.Phase != PhaseLoad
				if rec.RxPackets == 0 || rec.PPS <= 0 && !collapsible || r.Values[mPPS] != rec.PPS {
					t.Errorf("%s %s: nothing measured in the window (rx %d, %.0f pkt/s, in the document %.0f)", r.Variant, r.Case,
						rec.RxPackets, rec.PPS, r.Values[mPPS])
				}
				if rec.PPS <= 0 && collapsible {
					t.Logf("%s %s: no reply came back in the window (received %d): the full-load reflect collapse", r.Variant, r.Case, rec.RxPackets)
				}
				if !r.Used || d.Figure(r.Case, r.Variant) == nil {
					t.Errorf("%s %s: the run stands for no figure", r.Variant, r.Case)
				}
				wantSize := 60
				if r.Case == "max 1000B" {
					wantSize = 1000
				}
				if rec.Size != wantSize {
					t.Errorf("%s %s: %d-byte frames, want %d", r.Variant, r.Case, rec.Size, wantSize)
				}
				// The generator's XDP program counts the replies' bytes as they arrive: the
				// frames were the case's size on the wire (within 2%, should a stray IPv4 frame
				// of another size reach the generator's end).
				if kind == KindReflect && c.Replies > 0 {
					if avg := float64(rec.Generator.ReplyBytes) / float64(c.Replies); avg < 0.98*float64(wantSize) || avg > 1.02*float64(wantSize) {
						t.Errorf("%s %s: replies of %.0f bytes on average, want %d", r.Variant, r.Case, avg, wantSize)
					}
				}
				// Losses are accounted for, not forbidden: on a busy machine the receive core's
				// NAPI thread can fall behind even at the offered load, and veth then drops at
				// the sender (counted as its tx_dropped, which the check includes).
				if rec.Phase == PhaseLoad && (c.Received != c.GenSent || kind == KindReflect && c.Replies != c.GenSent) {
					t.Logf("%s at %d pkt/s: sent %d, received %d, replies %d (veth drops %d + %d, receiver drops %d)",
						r.Variant, rec.Offered, c.GenSent, c.Received, c.Replies, c.PeerTxDrop, c.IfTxDrop, c.RecvDrops)
				}
			}
			path, err := d.Write(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			back, err := report.Read(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(back.Figures) != len(d.Figures) || len(back.Runs) != want {
				t.Errorf("read back: %d figures, %d runs; want %d and %d", len(back.Figures), len(back.Runs), len(d.Figures), want)
			}
			t.Logf("\n%s", d.Table())
		})
	}
}
