package bench

import (
	"context"
	"os"
	"testing"
	"time"

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
// every figure's packet counts agree with the interface counters: what the receiver counted
// plus the drops its side reports equals the receiving interface's rx_packets, what the
// generator sent equals what left its veth end (tx_packets + tx_dropped), and for reflect, what
// the receiver sent equals the interface's tx_packets and the replies the generator's XDP
// counter saw equal its interface's rx_packets; each within Tolerance (0.5%). At the offered
// load (well below every receiver's capacity) nothing may be lost at all.
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
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			// rx: two queues, the AF_XDP generator on both and every receiver serving both;
			// reflect: one queue, the live-frame generator at full load.
			queues, engine := 1, trafficgen.EngineXDP
			if kind == KindRx {
				queues, engine = 2, trafficgen.EngineAFXDP
			}
			rep, err := Run(ctx, Options{Kind: kind, Runs: 1, Warmup: 50 * time.Millisecond, Window: 250 * time.Millisecond,
				Queues: queues, Engine: engine, Rate: 50000, Retries: -1, LabName: name, Generator: []string{exe}, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			want := 5 // kernel, netchan, netchan-loop, asavie, xdp-drop
			if kind == KindReflect {
				want = 4
			}
			if len(rep.Runs) != 2*want {
				t.Fatalf("%d runs, want %d", len(rep.Runs), 2*want)
			}
			for _, r := range rep.Runs {
				c := r.Check
				t.Logf("%s %s: gen sent %d, peer tx %d (+%d dropped), if rx %d, received %d (+%d dropped), if tx %d, sent %d, peer rx %d, replies %d",
					r.Variant, r.Phase, c.GenSent, c.PeerTx, c.PeerTxDrop, c.IfRx, c.Received, c.RecvDrops, c.IfTx, c.Sent, c.PeerRx, c.Replies)
				if r.Err != "" {
					t.Errorf("%s %s: %s", r.Variant, r.Phase, r.Err)
					continue
				}
				if !c.OK() {
					t.Errorf("%s %s: counts disagree with the interface counters: %s", r.Variant, r.Phase, c.Note)
				}
				if r.RxPackets == 0 || r.PPS <= 0 {
					t.Errorf("%s %s: nothing measured in the window (rx %d, %.0f pkt/s)", r.Variant, r.Phase, r.RxPackets, r.PPS)
				}
				// Losses are accounted for, not forbidden: on a busy machine the receive core's
				// NAPI thread can fall behind even at the offered load, and veth then drops at
				// the sender (counted as its tx_dropped, which the check includes).
				if r.Phase == PhaseLoad && (c.Received != c.GenSent || kind == KindReflect && c.Replies != c.GenSent) {
					t.Logf("%s at %d pkt/s: sent %d, received %d, replies %d (veth drops %d + %d, receiver drops %d)",
						r.Variant, r.Offered, c.GenSent, c.Received, c.Replies, c.PeerTxDrop, c.IfTxDrop, c.RecvDrops)
				}
			}
			if _, err := rep.Write(t.TempDir()); err != nil {
				t.Fatal(err)
			}
		})
	}
}
