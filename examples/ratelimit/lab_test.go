package main

import (
	"encoding/binary"
	"math"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/examples/wire/wiretest"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

func TestMain(m *testing.M) {
	wiretest.RunChildIfAsked()
	labtest.SweepStale()
	os.Exit(m.Run())
}

// TestLabRateLimit runs the limiter between the lab's client and server (nat layout, two
// queues, two shards, 2000 packets/s and a burst of 200 per /24). Two senders in the client
// namespace run at once: A, the client's own /24, offers 10000 packets/s on queue 0 for a
// second; B, another /24 whose owner is shard 0 although its packets arrive on queue 1 (so
// they are handed over), offers 1000 packets/s, within its limit. Kernel UDP sockets in the
// server namespace count what arrives: A gets its burst plus the rate × its sending time
// within 5%, B gets everything, and every packet that did not arrive is counted as a
// ratelimit-exceeded drop.
func TestLabRateLimit(t *testing.T) {
	cfg := Config{Rate: 2000, Burst: 200, PrefixLen: 24}
	var lim *Limiter
	l := wiretest.StartLab(t, 2, func(w wire.Config) (pipelines.App, error) {
		app, li, err := newApp(w, cfg)
		lim = li
		return app, err
	})
	l.Prime()
	// B's prefix: the first /24 after the client's that shard 0 owns.
	var b netip.Addr
	for n := 2; n < 255 && !b.IsValid(); n++ {
		a := netip.AddrFrom4([4]byte{198, 18, byte(n), 7})
		k := a.As4()
		if OwnerOf(binary.BigEndian.Uint32(k[:])&0xffffff00, 2) == 0 {
			b = a
		}
	}
	ra, rb := l.Receive(9999), l.Receive(9998)
	const countA, countB = 10000, 150
	done := make(chan error, 1)
	var resB trafficgen.Result
	go func() {
		var err error
		resB, err = l.SendErr(trafficgen.Config{Src: b, SrcPort: 6000, DstPort: 9998, Count: countB, Rate: 1000, Queue: 1, RunID: 2})
		done <- err
	}()
	resA := l.Send(trafficgen.Config{SrcPort: 5000, DstPort: 9999, Count: countA, Rate: 10000, Queue: 0, RunID: 1})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	gotA, gotB := ra.Count(300*time.Millisecond), rb.Count(0)
	want := float64(cfg.Burst) + float64(cfg.Rate)*resA.Seconds
	t.Logf("A (%v/24): sent %d in %.3f s (%.0f/s); the server received %d; burst + rate × time = %.0f (%+.1f%%)",
		l.Client.Addr.Addr(), resA.Sent, resA.Seconds, resA.PPS, gotA, want, 100*(float64(gotA)-want)/want)
	t.Logf("B (%v/24): sent %d in %.3f s; the server received %d", b, resB.Sent, resB.Seconds, gotB)
	if math.Abs(float64(gotA)-want) > 0.05*want {
		t.Errorf("A: %d delivered, want %.0f ± 5%%", gotA, want)
	}
	if gotB != countB {
		t.Errorf("B, within its limit: %d of %d delivered", gotB, countB)
	}
	tot := lim.Totals()
	drops := l.AllDrops()
	t.Logf("limiter totals %+v; shard drops %v", tot, drops)
	if tot.Passed != uint64(gotA+gotB) {
		t.Errorf("the limiter passed %d, the server received %d", tot.Passed, gotA+gotB)
	}
	if lost := uint64(countA + countB - gotA - gotB); tot.Exceeded != lost || drops["ratelimit-exceeded"] != lost {
		t.Errorf("%d packets did not arrive; the limiter counted %d exceeded, the shards %d ratelimit-exceeded drops", lost, tot.Exceeded, drops["ratelimit-exceeded"])
	}
	if len(drops) != 1 || tot.TableFull != 0 {
		t.Errorf("drops other than ratelimit-exceeded: %v, table full %d", drops, tot.TableFull)
	}
	var handed uint64
	for _, s := range l.In.Snapshot() {
		handed += s.HandoffOut
	}
	if handed < countB {
		t.Errorf("%d packets handed between shards; B's %d arrive on shard 1's queue and belong to shard 0", handed, countB)
	}
	if err := l.In.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range lim.Prefixes() {
		t.Logf("prefix %v on shard %d: passed %d dropped %d", p.Prefix, p.Shard, p.Passed, p.Dropped)
		if p.Prefix == netip.PrefixFrom(b, 24).Masked() && (p.Shard != 0 || p.Passed != countB) {
			t.Errorf("B's prefix: %+v, want shard 0 with %d passed", p, countB)
		}
	}
	if ps := lim.Prefixes(); len(ps) != 2 {
		t.Errorf("%d prefixes in the tables, want A's and B's", len(ps))
	}
}
