package gen

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/stagetest"
)

var (
	src    = netip.MustParseAddr("198.18.0.1")
	dst    = netip.MustParseAddr("198.18.0.2")
	dstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

func newGen(t *testing.T, cfg Config) *Gen {
	t.Helper()
	if !cfg.Src.IsValid() {
		cfg.Src = src
	}
	if !cfg.Dst.IsValid() {
		cfg.Dst = dst
	}
	if cfg.DstMAC == nil {
		cfg.DstMAC = dstMAC
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// harnesses runs g's pipeline on n shards, each in its own harness.
func harnesses(t *testing.T, g *Gen, n int) []*stagetest.Harness {
	hs := make([]*stagetest.Harness, n)
	app := g.App()
	for i := range hs {
		hs[i] = stagetest.NewPipeline(t, app.NewPipeline(i), pipelines.ShardInfo{Shard: i, Shards: n})
	}
	return hs
}

// runOut drives one harness through a whole trial (passes at each deadline), returning
// every frame it sent and the clock of the pass that sent it.
func runOut(h *stagetest.Harness) (frames [][]byte, at []int64) {
	h.Step() // the pass that starts the schedule
	for {
		for _, o := range h.Sent() {
			frames = append(frames, o.Data)
			at = append(at, h.Now())
		}
		if !h.AdvanceToDeadline() {
			return frames, at
		}
	}
}

// sendN drives one harness through its deadlines until it has sent n frames (the trial
// goes on: its replies still count).
func sendN(t *testing.T, h *stagetest.Harness, n int) (frames [][]byte) {
	t.Helper()
	h.Step()
	for {
		for _, o := range h.Sent() {
			frames = append(frames, o.Data)
		}
		if len(frames) >= n {
			return frames
		}
		if !h.AdvanceToDeadline() {
			t.Fatalf("sent %d frames of %d", len(frames), n)
		}
	}
}

// checksum is RFC 1071, written again here to check the package's.
func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func pseudo(ip *layers.IPv4, proto uint8, n int) uint32 {
	s, d := ip.SrcIP.To4(), ip.DstIP.To4()
	return (uint32(s[0])<<8 | uint32(s[1])) + (uint32(s[2])<<8 | uint32(s[3])) + (uint32(d[0])<<8 | uint32(d[1])) + (uint32(d[2])<<8 | uint32(d[3])) +
		uint32(proto) + uint32(n)
}

// TestTemplates decodes the frames of every template and size with gopacket: lengths,
// addresses, ports, flags and the payload header as sent, every checksum valid (checked
// with an RFC 1071 sum written here).
func TestTemplates(t *testing.T) {
	for _, proto := range []Proto{UDP, TCP, ICMP} {
		for _, size := range []int{proto.MinFrame(), proto.MinFrame() + 1, 128, 566, 1514} {
			g := newGen(t, Config{Proto: proto, Sizes: Sizes{size}, Flows: 3, SrcPort: 5000, DstPort: 7})
			h := harnesses(t, g, 1)[0]
			g.Begin(1e6, 10*time.Microsecond) // 10 packets
			frames, at := runOut(h)
			if len(frames) != 10 {
				t.Fatalf("%v %d: %d frames, want 10", proto, size, len(frames))
			}
			for i, f := range frames {
				if len(f) != size {
					t.Fatalf("%v: frame %d is %d bytes, want %d", proto, i, len(f), size)
				}
				p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
				eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
				ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				if eth == nil || ip == nil {
					t.Fatalf("%v %d: gopacket finds no Ethernet/IPv4: %v", proto, size, p)
				}
				if eth.SrcMAC.String() != net.HardwareAddr(stagetest.Interface.MAC[:]).String() || eth.DstMAC.String() != dstMAC.String() {
					t.Fatalf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
				}
				if int(ip.Length) != size-14 || ip.SrcIP.String() != "198.18.0.1" || ip.DstIP.String() != "198.18.0.2" || ip.TTL != 64 {
					t.Fatalf("IPv4 %+v", ip)
				}
				if checksum(f[14:34], 0) != 0 {
					t.Fatalf("%v %d: IPv4 checksum does not verify", proto, size)
				}
				l4 := f[34:]
				var payload []byte
				flow := uint16(i % 3)
				switch proto {
				case UDP:
					u, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
					if u == nil || int(u.SrcPort) != 5000+int(flow) || u.DstPort != 7 || int(u.Length) != size-34 {
						t.Fatalf("UDP %+v", u)
					}
					if checksum(l4, pseudo(ip, 17, len(l4))) != 0 || u.Checksum == 0 {
						t.Fatalf("UDP %d: checksum %#x does not verify", size, u.Checksum)
					}
					payload = u.Payload
				case TCP:
					c, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
					if c == nil || int(c.SrcPort) != 5000+int(flow) || c.DstPort != 7 || !c.ACK || c.SYN || c.RST || c.FIN || c.PSH || c.DataOffset != 5 {
						t.Fatalf("TCP %+v", c)
					}
					if checksum(l4, pseudo(ip, 6, len(l4))) != 0 {
						t.Fatalf("TCP %d: checksum does not verify", size)
					}
					payload = c.Payload
				case ICMP:
					m, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
					if m == nil || m.TypeCode.Type() != layers.ICMPv4TypeEchoRequest || m.Id != 5000+flow || m.Seq != uint16(i) {
						t.Fatalf("ICMP %+v", m)
					}
					if checksum(l4, 0) != 0 {
						t.Fatalf("ICMP %d: checksum does not verify", size)
					}
					payload = m.Payload
				}
				if len(payload) != size-proto.HeaderLen() {
					t.Fatalf("%v %d: payload %d bytes, want %d", proto, size, len(payload), size-proto.HeaderLen())
				}
				if binary.BigEndian.Uint16(payload) != Magic || payload[4] != 0 || binary.BigEndian.Uint16(payload[6:]) != flow ||
					binary.BigEndian.Uint32(payload[8:]) != uint32(i) || int(binary.BigEndian.Uint16(payload[16:])) != size {
					t.Fatalf("%v %d: payload header % x", proto, size, payload[:PayloadLen])
				}
				if slices.ContainsFunc(payload[PayloadLen:], func(b byte) bool { return b != 0 }) {
					t.Fatalf("%v %d: padding is not zeros", proto, size)
				}
				pl, ok := ParsePayload(f)
				if !ok || pl.Seq != uint32(i) || pl.Flow != flow || pl.TxTime != uint32(at[i]) || pl.Shard != 0 || int(pl.FrameLen) != size {
					t.Fatalf("ParsePayload %+v %v", pl, ok)
				}
			}
		}
	}
}

func TestSizesTooSmall(t *testing.T) {
	for _, c := range []struct {
		p    Proto
		size int
		ok   bool
	}{{UDP, 60, true}, {UDP, 59, false}, {ICMP, 60, true}, {TCP, 71, false}, {TCP, 72, true}} {
		_, err := New(Config{Src: src, Dst: dst, DstMAC: dstMAC, Proto: c.p, Sizes: Sizes{c.size}})
		if (err == nil) != c.ok {
			t.Errorf("%v %d bytes: err %v", c.p, c.size, err)
		}
	}
	if err := (Sizes{1515}).Check(UDP, 1500); err == nil {
		t.Error("1515 bytes over MTU 1500 accepted")
	}
	if err := (Sizes{1514}).Check(UDP, 1500); err != nil {
		t.Error(err)
	}
}

// TestIMIX: imix_v4_1 is 28×60, 16×566, 4×1514 (CSIT's 64/570/1518 with the FCS) in a
// 48-frame pattern, interleaved; the generator sends exactly that pattern, repeated.
func TestIMIX(t *testing.T) {
	z, err := ParseSizes("imix_v4_1")
	if err != nil {
		t.Fatal(err)
	}
	count := map[int]int{}
	for _, n := range z {
		count[n]++
	}
	if len(z) != 48 || count[60] != 28 || count[566] != 16 || count[1514] != 4 {
		t.Fatalf("imix_v4_1 %v: counts %v", z, count)
	}
	// Smooth weighted round robin, worked by hand for the first ten.
	if want := []int{60, 566, 60, 60, 566, 60, 1514, 60, 566, 60}; !slices.Equal(z[:10], want) {
		t.Fatalf("imix_v4_1 starts %v, want %v", z[:10], want)
	}
	if m := z.Mean(); math.Abs(m-16792.0/48) > 1e-9 {
		t.Fatalf("mean %v", m)
	}
	if z.String() != "imix_v4_1" {
		t.Fatalf("String %q", z.String())
	}
	for s, want := range map[string]Sizes{"60": {60}, "64fcs": {60}, "60,566,1514": {60, 566, 1514}, "": {60}} {
		if got, err := ParseSizes(s); err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseSizes(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseSizes("big"); err == nil {
		t.Error("ParseSizes(big) accepted")
	}
	g := newGen(t, Config{Sizes: z})
	h := harnesses(t, g, 1)[0]
	g.Begin(1e6, 100*time.Microsecond)
	frames, _ := runOut(h)
	if len(frames) != 100 {
		t.Fatalf("%d frames", len(frames))
	}
	for i, f := range frames {
		if len(f) != z[i%48] {
			t.Fatalf("frame %d: %d bytes, want %d", i, len(f), z[i%48])
		}
	}
}

// TestPacing: with the fake clock and a pass at every deadline the generator asks for, a
// shard sends exactly rate × 1 s packets in a simulated second, and by any moment t never
// more than the slots due by then (floor(t·rate)+1) nor more than one fewer.
func TestPacing(t *testing.T) {
	for _, rate := range []float64{1e3, 1e4, 1e6} {
		g := newGen(t, Config{})
		h := harnesses(t, g, 1)[0]
		n := g.Begin(rate, time.Second)
		t0 := h.Now()
		_, at := runOut(h)
		if len(at) != int(rate) {
			t.Fatalf("%v pps: %d packets in a second", rate, len(at))
		}
		for i, ts := range at {
			due := int(float64(ts-t0)*rate/1e9) + 1 // slots due by ts
			if i+1 > due || i+1 < due-1 {
				t.Fatalf("%v pps: packet %d sent at %v, when %d were due", rate, i, time.Duration(ts-t0), due)
			}
		}
		if rate == 1e3 && h.Passes() < 1000 {
			t.Fatalf("1 kpps: %d passes; want one per packet (the deadline wakes the shard)", h.Passes())
		}
		r, err := g.Collect(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		if l := r.Total.Lateness; l.Max != 0 || l.Samples != uint64(rate) {
			t.Fatalf("%v pps: passes at the deadlines, yet lateness %+v", rate, l)
		}
		if r.Total.TxPackets != uint64(rate) || math.Abs(r.Total.TxPPS-rate) > rate*1e-6 || r.Total.Missed != 0 {
			t.Fatalf("%v pps: result %+v", rate, r.Total)
		}
		if err := g.check(r); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPacingLateWakes: passes at random times (up to 3 ms apart) instead of at the deadlines
// still send exactly rate × time, in catch-up bursts.
func TestPacingLateWakes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, rate := range []float64{1e3, 1e4, 1e5} {
		g := newGen(t, Config{})
		h := harnesses(t, g, 1)[0]
		g.Begin(rate, time.Second)
		t0 := h.Now()
		sent := 0
		for h.NextDeadline() != 0 || sent == 0 {
			h.Step()
			sent += len(h.Sent())
			if h.Now()-t0 < int64(time.Second) {
				due := int(float64(h.Now()-t0)*rate/1e9) + 1
				if sent != due && len(h.Sent()) < stagetest.BatchSize {
					t.Fatalf("%v pps: %d sent at %v, %d due", rate, sent, time.Duration(h.Now()-t0), due)
				}
			}
			if d := h.NextDeadline(); d == 0 || d > h.Now() { // a full batch asks to come back at once
				h.Advance(time.Duration(rng.Int64N(int64(3 * time.Millisecond))))
			}
		}
		if sent != int(rate) {
			t.Fatalf("%v pps: %d sent", rate, sent)
		}
	}
}

// TestMaxLag: a shard that could not run for 50 ms skips the slots older than MaxLag
// (counted Missed) and the result says the rate was not reached.
func TestMaxLag(t *testing.T) {
	g := newGen(t, Config{MaxLag: 5 * time.Millisecond})
	h := harnesses(t, g, 1)[0]
	n := g.Begin(1e4, 100*time.Millisecond)
	h.Step()
	h.Advance(50 * time.Millisecond)
	for h.AdvanceToDeadline() {
	}
	r, err := g.Collect(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	// 1000 slots; after the stall 501 were due (0..500): slot 0 was sent before it, the last
	// 5 ms of slots (51) are sent after it, the 449 between were skipped.
	if r.Total.Missed != 449 || r.Total.TxPackets+r.Total.Missed != 1000 {
		t.Fatalf("missed %d, sent %d", r.Total.Missed, r.Total.TxPackets)
	}
	if err := g.check(r); err == nil {
		t.Fatal("no error for a rate not reached")
	}
	if r.Total.Behind != 5*time.Millisecond || r.Total.Lateness.Max != 5*time.Millisecond {
		t.Fatalf("behind %v, want 5ms (slot 450, due 45 ms in, the oldest kept, left at 50 ms)", r.Total.Behind)
	}
	// A stall past the end and MaxLag: nothing more is sent, the rest is missed.
	n = g.Begin(1e4, 10*time.Millisecond)
	h.Step()
	h.Advance(20 * time.Millisecond)
	h.Step()
	if len(h.Sent()) != 0 {
		t.Fatalf("%d sent 10 ms after the end", len(h.Sent()))
	}
	for h.AdvanceToDeadline() {
	}
	if r, _ = g.Collect(context.Background(), n); r.Total.TxPackets != 1 || r.Total.Missed != 99 {
		t.Fatalf("sent %d, missed %d", r.Total.TxPackets, r.Total.Missed)
	}
}

// reply turns a sent frame into a reflector's answer (basic.TurnAround: MACs, addresses and
// ports swapped; ICMP echo becomes a reply).
func reply(f []byte) []byte {
	r := append([]byte(nil), f...)
	basic.TurnAround(r)
	if r[23] == 1 {
		r[34] = 0 // echo reply
	}
	return r
}

// TestAnalyser feeds crafted reply streams: loss, reordering, duplicates, stale and foreign
// frames are counted exactly, and the round trip is the clock's advance.
func TestAnalyser(t *testing.T) {
	g := newGen(t, Config{Proto: ICMP})
	h := harnesses(t, g, 1)[0]
	n := g.Begin(1e6, 10*time.Microsecond)
	frames := sendN(t, h, 10) // seq 0..9

	sentAt := binary.BigEndian.Uint32(frames[9][34+8+12:])
	// Arrivals: 0 1 2 4 3 5 5 7 9 8 — 6 lost, 3 and 8 reordered, 5 duplicated.
	order := []int{0, 1, 2, 4, 3, 5, 5, 7, 9, 8}
	g2 := newGen(t, Config{Proto: ICMP}) // another run: its frames are stale here
	h2 := harnesses(t, g2, 1)[0]
	g2.Begin(1e6, time.Microsecond)
	other, _ := runOut(h2)
	h.SetNow(int64(sentAt) + 37_000) // the replies come back 37 µs after the last was sent
	var in [][]byte
	for _, i := range order {
		in = append(in, reply(frames[i]))
	}
	in = append(in, reply(other[0]), stagetest.UDPFrame(netip.AddrPortFrom(dst, 1), netip.AddrPortFrom(src, 2), []byte("hello")))
	h.Feed(in...)
	if h.Consumed() != 10 || h.DropCounts()["gen-stale"] != 1 || h.DropCounts()["gen-foreign"] != 1 {
		t.Fatalf("consumed %d, drops %v", h.Consumed(), h.DropCounts())
	}
	for h.AdvanceToDeadline() {
	}
	h.Feed(reply(frames[1])) // after the results were taken: late, not counted
	if h.DropCounts()["gen-late"] != 1 {
		t.Fatalf("drops after the trial %v", h.DropCounts())
	}
	r, err := g.Collect(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	q := r.Total
	if q.TxPackets != 10 || q.RxPackets != 10 || q.Lost != 1 || q.Reordered != 2 || q.Duplicates != 1 || r.Stale != 1 || r.Foreign != 1 {
		t.Fatalf("result %+v stale %d foreign %d", q, r.Stale, r.Foreign)
	}
	// Frame 9 was sent at sentAt; the others earlier, in the same pass or before.
	if q.Latency.Min < 37*time.Microsecond || q.Latency.Max > 37*time.Microsecond+10*time.Microsecond || q.Latency.Samples != 10 {
		t.Fatalf("latency %+v", q.Latency)
	}
}

// TestTrackerModel checks Tracker against a map on random streams: reordered (arrived after
// a higher number), duplicates (seen before) and unique counts agree exactly.
func TestTrackerModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 50 {
		var tr Tracker
		tr.Reset()
		seen := map[int64]bool{}
		var hi int64 = -1
		var reord, dup uint64
		next := int64(0)
		for range 20000 {
			var s int64
			switch x := rng.IntN(100); {
			case x < 80:
				s = next
				next++
			case x < 85:
				next += int64(rng.IntN(5)) + 1 // a gap (loss, or reordered later)
				s = next
				next++
			default:
				s = max(0, next-1-int64(rng.IntN(1+round*200))) // late or duplicate
			}
			if s > hi && next <= s {
				next = s + 1
			}
			// Wire numbers are 32 bits: start high so they wrap.
			const base = 1<<32 - 5000
			if ext := tr.Extend(uint32(s + base)); ext != s+base {
				t.Fatalf("round %d: %d extended to %d", round, s+base, ext)
			} else {
				tr.See(ext)
			}
			switch {
			case seen[s]:
				dup++
			case s < hi:
				reord++
			}
			seen[s] = true
			hi = max(hi, s)
		}
		if tr.Duplicates != dup || tr.Reordered != reord || tr.Unique != uint64(len(seen)) || tr.Late != 0 {
			t.Fatalf("round %d: tracker dup %d reord %d unique %d late %d; model %d %d %d", round, tr.Duplicates, tr.Reordered, tr.Unique, tr.Late, dup, reord, len(seen))
		}
	}
}

// TestHistogram: percentiles of known distributions are never below the exact value and at
// most HistRelError above it (exact below 256 ns); Min, Max and Mean are exact.
func TestHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	dists := map[string]func() int64{
		"uniform 1µs-1ms":  func() int64 { return 1000 + rng.Int64N(999_000) },
		"exponential 50µs": func() int64 { return int64(rng.ExpFloat64() * 50_000) },
		"small ns":         func() int64 { return rng.Int64N(300) },
		"constant 12345":   func() int64 { return 12345 },
		"log-uniform 1µs-10s": func() int64 {
			return int64(math.Exp(math.Log(1e3) + rng.Float64()*(math.Log(1e10)-math.Log(1e3))))
		},
	}
	for name, f := range dists {
		var h, a, b Histogram
		vals := make([]int64, 100_000)
		sum := 0.0
		for i := range vals {
			vals[i] = f()
			sum += float64(vals[i])
			h.Record(vals[i])
			if i%2 == 0 {
				a.Record(vals[i])
			} else {
				b.Record(vals[i])
			}
		}
		a.Add(&b)
		if a != h {
			t.Fatalf("%s: merged halves differ from the whole", name)
		}
		slices.Sort(vals)
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
			exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
			got := h.Quantile(q)
			if got < exact || float64(got-exact) > float64(exact)*HistRelError || exact < 256 && got != exact {
				t.Errorf("%s: q%v = %d, exact %d (%.3f%% off)", name, q, got, exact, 100*float64(got-exact)/float64(exact))
			}
		}
		if h.Min() != vals[0] || h.Max() != vals[len(vals)-1] || math.Abs(h.Mean()-sum/float64(len(vals))) > 1e-6*h.Mean() {
			t.Errorf("%s: min %d max %d mean %v", name, h.Min(), h.Max(), h.Mean())
		}
	}
	for i := range histBuckets { // buckets tile the range
		lo, hi := bucketRange(i)
		if bucket(lo) != i || bucket(hi) != i || i > 0 && func() bool { _, p := bucketRange(i - 1); return p+1 != lo }() {
			t.Fatalf("bucket %d: [%d,%d]", i, lo, hi)
		}
	}
}

// TestRoundTripTwoShards: two generator shards, a reflector (basic.Reflect) in between; the
// replies of both shards arrive on shard 0, which hands shard 1's to it (Owner); nothing
// lost, each shard counts its own.
func TestRoundTripTwoShards(t *testing.T) {
	g := newGen(t, Config{Flows: 4})
	hs := harnesses(t, g, 2)
	refl := stagetest.New(t, basic.Reflect())
	n := g.Begin(2e5, time.Millisecond) // 100 packets per shard
	for _, h := range hs {
		h.Step()
	}
	for range 10000 {
		var back [][]byte
		for _, h := range hs {
			for _, o := range h.Sent() {
				for _, r := range refl.Feed(o.Data) {
					back = append(back, r.Data)
				}
			}
		}
		for len(back) > 0 { // everything arrives at shard 0, which hands on shard 1's
			k := min(len(back), stagetest.BatchSize)
			for _, f := range back[:k] {
				if o := Owner(f, 2); o < 0 {
					t.Fatalf("Owner: %d", o)
				} else if o == 1 {
					hs[1].Feed(f)
				} else {
					hs[0].Feed(f)
				}
			}
			back = back[k:]
		}
		d0, d1 := hs[0].NextDeadline(), hs[1].NextDeadline()
		if d0 == 0 && d1 == 0 {
			break
		}
		next := d0
		if next == 0 || d1 != 0 && d1 < next {
			next = d1
		}
		for _, h := range hs {
			h.SetNow(max(next, h.Now()))
			h.Step()
		}
	}
	r, err := g.Collect(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	for i, q := range r.Queues {
		if q.TxPackets != 100 || q.RxPackets != 100 || q.Lost != 0 || q.Reordered != 0 || q.Duplicates != 0 {
			t.Fatalf("queue %d: %+v", i, q)
		}
	}
	if r.Total.TxPackets != 200 || r.Total.RxPackets != 200 || math.Abs(r.Total.TxPPS-2e5) > 1 {
		t.Fatalf("total %+v", r.Total)
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
	if !strings.Contains(b.String(), "total") || strings.Count(b.String(), "\n") != 6 {
		t.Fatalf("report:\n%s", b.String())
	}
}

// TestRSSFlows: the flows RSSFlows picks land evenly on the receiver's queues under the
// Microsoft key and the default table.
func TestRSSFlows(t *testing.T) {
	for _, q := range []int{1, 2, 4, 8} {
		fl, err := RSSFlows(64, src, dst, 1024, 9, nil, nil, q)
		if err != nil {
			t.Fatal(err)
		}
		per, err := RSSQueues(fl, nil, nil, q)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range per {
			if n != 64/q {
				t.Fatalf("%d queues: queue %d gets %d flows (%v)", q, i, n, per)
			}
		}
		ports := map[uint16]bool{}
		for _, f := range fl {
			ports[f.SrcPort] = true
		}
		if len(ports) != 64 {
			t.Fatalf("%d queues: repeated ports", q)
		}
	}
	g := newGen(t, Config{RSSQueues: 4, Flows: 16})
	if per, _ := RSSQueues(g.FlowList(), nil, nil, 4); !slices.Equal(per, []int{4, 4, 4, 4}) {
		t.Fatalf("Config.RSSQueues 4: flows per queue %v", per)
	}
	// Consecutive ports, for contrast: logged, not asserted (the hash is linear in the
	// port's bits, so with some keys and tables they spread evenly too; nothing promises it).
	fl, _ := Flows(64, src, dst, 1024, 9, 1)
	per, _ := RSSQueues(fl, nil, nil, 4)
	t.Logf("64 consecutive source ports over 4 queues: %v", per)
}

func TestFlowsAndClaims(t *testing.T) {
	fl, err := Flows(5, src, dst, 100, 9, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"198.18.0.1:100", "198.18.0.2:100", "198.18.0.1:101", "198.18.0.2:101", "198.18.0.1:102"}
	for i, f := range fl {
		if got := netip.AddrPortFrom(f.Src, f.SrcPort).String(); got != want[i] {
			t.Fatalf("flow %d from %s, want %s", i, got, want[i])
		}
	}
	g := newGen(t, Config{Flows: 5, SrcPort: 100, SrcAddrs: 2})
	var cl []string
	for _, c := range g.Claims() {
		cl = append(cl, c.String())
	}
	if !slices.Equal(cl, []string{"udp:198.18.0.1:100-102", "udp:198.18.0.2:100-101"}) {
		t.Fatalf("claims %v", cl)
	}
	g = newGen(t, Config{Proto: ICMP})
	if c := g.Claims(); len(c) != 1 || c[0].String() != "198.18.0.1/32" {
		t.Fatalf("ICMP claims %v", c)
	}
	if _, err := New(Config{Src: src, Dst: dst}); err == nil {
		t.Fatal("no destination MAC accepted")
	}
}

// TestForwarded: with Forwarded the App also claims the packets' destination, the packets
// themselves come back (here on a second interface), and latency is one way.
func TestForwarded(t *testing.T) {
	g := newGen(t, Config{Forwarded: true, Flows: 2, DstPort: 7})
	var cl []string
	for _, c := range g.Claims() {
		cl = append(cl, c.String())
	}
	if !slices.Equal(cl, []string{"udp:198.18.0.1:1024-1025", "udp:198.18.0.2:7"}) {
		t.Fatalf("claims %v", cl)
	}
	rx := stagetest.Interface
	rx.Name, rx.Index = "test1", 2
	h := stagetest.NewPipeline(t, g.App().NewPipeline(0), pipelines.ShardInfo{Ifaces: []pipelines.Interface{stagetest.Interface, rx}})
	n := g.Begin(1e6, 5*time.Microsecond)
	frames := sendN(t, h, 5)
	for _, o := range h.Outcomes() {
		if o.If != 0 {
			t.Fatalf("sent on interface %d", o.If)
		}
	}
	h.Advance(20 * time.Microsecond)
	var in []stagetest.In
	for _, f := range frames {
		in = append(in, stagetest.In{If: 1, Data: f}) // as sent: a cable to the second port
	}
	h.Step(in...)
	for h.AdvanceToDeadline() {
	}
	r, err := g.Collect(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if r.Total.RxPackets != 5 || r.Total.Lost != 0 || r.Total.Latency.Kind != "one-way" || r.Total.Latency.Min < 20*time.Microsecond {
		t.Fatalf("%+v", r.Total)
	}
	if _, err := New(Config{Src: src, Dst: dst, DstMAC: dstMAC, Forwarded: true, Reflector: true}); err == nil {
		t.Fatal("Forwarded and Reflector accepted together")
	}
}

// TestCollectCancelled: a cancelled Collect stops the trial: the shard sends nothing more.
func TestCollectCancelled(t *testing.T) {
	g := newGen(t, Config{})
	h := harnesses(t, g, 1)[0]
	n := g.Begin(1e3, time.Second)
	h.Step()
	if len(h.Sent()) != 1 {
		t.Fatalf("%d sent", len(h.Sent()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Collect(ctx, n); err == nil {
		t.Fatal("no error")
	}
	h.Advance(100 * time.Millisecond)
	h.Step()
	if len(h.Sent()) != 0 || h.NextDeadline() != 0 {
		t.Fatalf("%d sent after the trial stopped; deadline %d", len(h.Sent()), h.NextDeadline())
	}
	if h.Wakes() == 0 {
		t.Fatal("the shard was not woken")
	}
}

// TestCountOnlyTrial: a trial at load 0 after a sending one sends nothing and still counts
// its own replies.
func TestCountOnlyTrial(t *testing.T) {
	g := newGen(t, Config{})
	h := harnesses(t, g, 1)[0]
	n := g.Begin(1e4, time.Millisecond)
	frames := sendN(t, h, 10)
	for h.AdvanceToDeadline() {
	}
	if _, err := g.Collect(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	n = g.Begin(0, time.Millisecond)
	h.Step()
	if len(h.Sent()) != 0 {
		t.Fatalf("a load-0 trial sent %d", len(h.Sent()))
	}
	h.Feed(reply(frames[0])) // of the trial before: stale
	for h.AdvanceToDeadline() {
	}
	r, err := g.Collect(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if r.Total.TxPackets != 0 || r.Total.RxPackets != 0 || r.Stale != 1 {
		t.Fatalf("%+v, stale %d", r.Total, r.Stale)
	}
}
