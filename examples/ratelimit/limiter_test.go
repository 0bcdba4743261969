package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/examples/wire/wiretest"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

func newLimiter(t *testing.T, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// harness runs shard shard of shards of the limiter's pipeline (wire's local stage, the
// limiter, wire's forward stage) with both neighbours resolved, on the harness's fake clock.
func harness(t *testing.T, l *Limiter, shard, shards int) *stagetest.Harness {
	t.Helper()
	return wiretest.Harness(t, shard, shards, l.Stage(shard))
}

var srv = netip.AddrPortFrom(wiretest.Server, 9999)

func from(addr string) stagetest.In {
	return wiretest.UDP(wire.Inside, netip.AddrPortFrom(netip.MustParseAddr(addr), 5000), srv, []byte("x"))
}

func frames(n int, addr string) []stagetest.In {
	in := make([]stagetest.In, n)
	for i := range in {
		in[i] = from(addr)
	}
	return in
}

// step feeds the frames and counts what was forwarded and what was dropped by reason.
func step(t *testing.T, h *stagetest.Harness, in ...stagetest.In) (sent int, drops map[string]int) {
	t.Helper()
	out := h.Step(in...)
	for _, o := range out {
		if o.If != wire.Outside {
			t.Fatalf("forwarded on interface %d", o.If)
		}
	}
	return len(out), h.DropCounts()
}

// TestBurstAndRefill: a burst passes up to the bucket size and the rest drops; the fake clock
// refills the bucket at the rate, never past its size.
func TestBurstAndRefill(t *testing.T) {
	l := newLimiter(t, Config{Rate: 1000, Burst: 10, PrefixLen: 32})
	h := harness(t, l, 0, 1)
	if sent, drops := step(t, h, frames(15, "198.18.1.2")...); sent != 10 || drops["ratelimit-exceeded"] != 5 {
		t.Fatalf("burst of 15 into a bucket of 10: %d forwarded, drops %v", sent, drops)
	}
	wiretest.CheckForwarded(t, from("198.18.1.2"), h.Sent()[0])
	for _, c := range []struct {
		wait       time.Duration
		offer, get int
	}{
		{0, 3, 0},                         // empty, no time passed
		{time.Millisecond, 3, 1},          // 1 ms at 1000/s: one token
		{3500 * time.Microsecond, 5, 3},   // 3.5 ms: three tokens, half a token left
		{500 * time.Microsecond, 2, 1},    // the half and another half
		{999 * time.Microsecond, 2, 0},    // 0.999 of a token is not a token
		{time.Microsecond, 2, 1},          // now it is
		{time.Minute, 30, 10},             // a long quiet time fills the bucket, no more (the stack keeps neighbours 5 minutes)
		{20 * time.Millisecond, 30, 10},   // 20 ms would be 20 tokens: still the bucket's 10
		{10 * time.Millisecond, 10, 10},   // exactly full again
		{100 * time.Microsecond, 10, 0},   // a tenth of a token
		{-time.Second, 10, 0},             // a clock that goes back refills nothing
		{1100 * time.Millisecond, 12, 10}, // (from the earlier time: full)
	} {
		h.Advance(c.wait)
		sent, drops := step(t, h, frames(c.offer, "198.18.1.2")...)
		if sent != c.get || drops["ratelimit-exceeded"] != c.offer-c.get {
			t.Fatalf("after %v more: offered %d, forwarded %d (drops %v), want %d", c.wait, c.offer, sent, drops, c.get)
		}
	}
	tot := l.Totals()
	if tot.Passed != 10+0+1+3+1+0+1+10+10+10+0+0+10 || tot.Exceeded != 5+3+2+2+1+2+1+20+20+0+10+10+2 || tot.Prefixes != 1 {
		t.Errorf("totals %+v", tot)
	}
	ps := l.Prefixes()
	if len(ps) != 1 || ps[0].Prefix != netip.MustParsePrefix("198.18.1.2/32") || ps[0].Passed != tot.Passed || ps[0].Dropped != tot.Exceeded {
		t.Errorf("prefixes %+v, totals %+v", ps, tot)
	}
}

// TestSustainedRate: offered 10 times the rate for a simulated second, in batches every
// millisecond, a prefix gets its burst plus the rate × the time, exactly.
func TestSustainedRate(t *testing.T) {
	l := newLimiter(t, Config{Rate: 2000, Burst: 50, PrefixLen: 32})
	h := harness(t, l, 0, 1)
	in := frames(20, "198.18.1.2") // 20 per ms: 20000/s
	total := 0
	for ms := 0; ms <= 1000; ms++ {
		sent, _ := step(t, h, in...)
		total += sent
		h.Advance(time.Millisecond)
	}
	if want := 50 + 2000; total != want {
		t.Errorf("forwarded %d in 1 s at 20000/s offered, want burst + rate × 1 s = %d", total, want)
	}
}

// TestPrefixesIndependent: prefixes have buckets of their own; addresses inside one prefix
// share one.
func TestPrefixesIndependent(t *testing.T) {
	h := harness(t, newLimiter(t, Config{Rate: 10, Burst: 5, PrefixLen: 24}), 0, 1)
	in := append(append(frames(4, "198.18.1.2"), frames(4, "198.18.1.3")...), frames(4, "198.18.2.2")...)
	sent, drops := step(t, h, in...)
	if sent != 9 || drops["ratelimit-exceeded"] != 3 {
		t.Fatalf("/24: forwarded %d (drops %v), want 5 of 198.18.1.0/24's 8 and all 4 of 198.18.2.0/24", sent, drops)
	}
	for i, o := range h.Outcomes()[:12] {
		want := pipelines.Transmit
		if i >= 5 && i < 8 {
			want = pipelines.Drop
		}
		if o.Verdict != want {
			t.Errorf("packet %d: %v, want %v", i, o.Verdict, want)
		}
	}
	// Per host: each address has its own bucket; one exhausted does not touch the other.
	h = harness(t, newLimiter(t, Config{Rate: 10, Burst: 5, PrefixLen: 32}), 0, 1)
	if sent, _ := step(t, h, frames(20, "198.18.1.2")...); sent != 5 {
		t.Fatalf("first host: %d", sent)
	}
	if sent, _ := step(t, h, frames(5, "198.18.1.3")...); sent != 5 {
		t.Fatalf("second host after the first was exhausted: %d of 5 forwarded", sent)
	}
}

// TestOwner: the owner function maps every address of a prefix to one shard, whatever the
// rest of the packet; prefixes spread over the shards; ARP stays where it arrived. Fed to the
// shards it names, two shards give a prefix one bucket between them.
func TestOwner(t *testing.T) {
	l := newLimiter(t, Config{Rate: 10, Burst: 5, PrefixLen: 24})
	for _, shards := range []int{2, 3, 4, 8} {
		seen := map[int]bool{}
		for net := 0; net < 64; net++ {
			owner := -2
			for host := 0; host < 256; host += 7 {
				addr := netip.AddrFrom4([4]byte{198, 18, byte(net), byte(host)})
				for _, in := range []stagetest.In{
					wiretest.UDP(wire.Inside, netip.AddrPortFrom(addr, uint16(host)), srv, nil),
					wiretest.TCP(wire.Outside, netip.AddrPortFrom(addr, 80), netip.AddrPortFrom(wiretest.Client, uint16(net))),
				} {
					o := l.Owner(in.Data, shards)
					if owner == -2 {
						owner = o
					}
					if o != owner || o < 0 || o >= shards {
						t.Fatalf("%d shards: %v → shard %d, but its /24 → shard %d", shards, addr, o, owner)
					}
				}
			}
			seen[owner] = true
		}
		if len(seen) != shards {
			t.Errorf("%d shards: 64 prefixes used only shards %v", shards, seen)
		}
	}
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	if o := l.Owner(arp, 4); o != -1 {
		t.Errorf("ARP → shard %d, want -1", o)
	}
	if o := l.Owner(from("198.18.1.2").Data, 1); o != -1 {
		t.Errorf("one shard: %d, want -1", o)
	}

	// Packets of one prefix arriving on both shards' queues, delivered to the owner as the
	// shards' hand-off does: one bucket of 5, not two.
	hs := []*stagetest.Harness{harness(t, l, 0, 2), harness(t, l, 1, 2)}
	total := 0
	for k := 0; k < 10; k++ {
		in := from("198.18.1." + string(rune('2'+k%2)))
		sent, _ := step(t, hs[l.Owner(in.Data, 2)], in)
		total += sent
	}
	if total != 5 {
		t.Errorf("one prefix over two shards forwarded %d, want the one bucket's 5", total)
	}
}

// TestTableFull: a new prefix finds no slot while every slot it may use belongs to a prefix
// that sent within the fill time, and is dropped as ratelimit-table-full; once those buckets
// have refilled, their slots are taken over.
func TestTableFull(t *testing.T) {
	l := newLimiter(t, Config{Rate: 100, Burst: 10, PrefixLen: 32, Buckets: 8}) // 8 slots: one probe window
	h := harness(t, l, 0, 1)
	var in []stagetest.In
	for i := 0; i < 8; i++ {
		in = append(in, from("198.18.1."+itoa(10+i)))
	}
	if sent, _ := step(t, h, in...); sent != 8 {
		t.Fatalf("8 prefixes into 8 slots: %d forwarded", sent)
	}
	if sent, drops := step(t, h, from("198.18.1.99")); sent != 0 || drops["ratelimit-table-full"] != 1 {
		t.Fatalf("a ninth prefix: forwarded %d, drops %v", sent, drops)
	}
	h.Advance(99 * time.Millisecond) // 9.9 of the buckets' 10 tokens: not yet full
	if _, drops := step(t, h, from("198.18.1.99")); drops["ratelimit-table-full"] != 1 {
		t.Fatalf("before the fill time: drops %v", drops)
	}
	h.Advance(time.Millisecond) // full: a slot is taken over
	if sent, _ := step(t, h, from("198.18.1.99")); sent != 1 {
		t.Fatalf("after the fill time: %d forwarded", sent)
	}
	if tot := l.Totals(); tot.TableFull != 2 || tot.Reused != 1 || tot.Prefixes != 8 || tot.Passed != 9 {
		t.Errorf("totals %+v", tot)
	}
}

func itoa(n int) string {
	s := ""
	for ; n > 0 || s == ""; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

// TestConfig: limits out of range are refused with the range.
func TestConfig(t *testing.T) {
	ok := Config{Rate: 1, Burst: 1, PrefixLen: 24}
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Rate = 0 }, "rate 0 packets/s: want 1 to"},
		{func(c *Config) { c.Burst = 0 }, "burst 0 packets: want 1 to"},
		{func(c *Config) { c.Burst = 1 << 25 }, "burst"},
		{func(c *Config) { c.PrefixLen = 33 }, "prefix length 33: want 1 to 32"},
		{func(c *Config) { c.PrefixLen = 0 }, "prefix length 0"},
		{func(c *Config) { c.Buckets = 1000 }, "1000 buckets per shard: want a power of two"},
		{func(c *Config) { c.Buckets = 4 }, "4 buckets"},
	} {
		cfg := ok
		c.mod(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", cfg, err, c.want)
		}
	}
	if l, err := New(ok); err != nil || l.Config().Buckets != 65536 {
		t.Errorf("defaults: %v %+v", err, l)
	}
}

// TestAllocs: limiting and forwarding a batch, new prefixes included, allocates nothing.
func TestAllocs(t *testing.T) {
	l := newLimiter(t, Config{Rate: 1000, Burst: 10, PrefixLen: 32})
	h := harness(t, l, 0, 1)
	in := append(frames(20, "198.18.1.2"), from("198.18.1.3"), from("198.18.2.3"))
	k := 0
	n := testing.AllocsPerRun(200, func() {
		in[len(in)-1].Data[29] = byte(k) // a new source prefix now and then
		header.IPv4(in[len(in)-1].Data[header.EthernetLen:]).FixChecksum()
		k++
		h.Advance(time.Millisecond)
		h.Pass(in...)
	})
	if n != 0 {
		t.Errorf("%v allocations per pass", n)
	}
	if tot := l.Totals(); tot.Passed == 0 || tot.Exceeded == 0 || tot.Prefixes < 100 {
		t.Errorf("totals %+v", tot)
	}
}
