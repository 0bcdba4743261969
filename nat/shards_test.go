package nat

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// multi is one NAT with several shards, each run by its own harness, wired as the shards'
// runtime wires them: a frame received from a wire goes to the shard NAT.Owner names (or
// stays at the queue it came in on when Owner names none), and a packet a shard hands over
// goes to the shard it names, without Owner.
type multi struct {
	t testing.TB
	n *NAT
	h []*stagetest.Harness
	// Of the last send: the drops over all shards, the hand-offs, and the shards that ran
	// in order (at[0] got the frame from the wire).
	drops  []pipelines.DropReason
	handed int
	at     []int
}

// sent is a frame a shard transmitted.
type sent struct {
	shard int
	stagetest.Out
}

func newMulti(t testing.TB, cfg Config, shards int) *multi {
	t.Helper()
	m := &multi{t: t, n: newNAT(t, cfg)}
	for s := 0; s < shards; s++ {
		m.h = append(m.h, startShard(t, m.n, s, shards))
	}
	return m
}

// send receives frame f on interface ifc at queue q and runs the shards until no packet is
// left in a hand-off; it returns what they transmitted.
func (m *multi) send(q, ifc int, f []byte) []sent {
	m.t.Helper()
	type job struct {
		shard int
		in    stagetest.In
	}
	m.drops, m.handed, m.at = nil, 0, nil
	o := m.n.Owner(f, len(m.h))
	if o < 0 {
		o = q
	}
	jobs := []job{{o, stagetest.In{If: ifc, Data: f}}}
	var out []sent
	for len(jobs) > 0 {
		j := jobs[0]
		jobs = jobs[1:]
		if m.at = append(m.at, j.shard); len(m.at) > 8 {
			m.t.Fatalf("a packet went round the shards %v", m.at)
		}
		for _, x := range m.h[j.shard].Step(j.in) {
			out = append(out, sent{j.shard, x})
		}
		m.drops = append(m.drops, m.h[j.shard].Drops()...)
		for _, hd := range m.h[j.shard].Handed() {
			m.handed++
			jobs = append(jobs, job{hd.Shard, hd.In})
		}
	}
	return out
}

// tick moves every shard's clock on by d and runs a pass of each (expiry, forwards).
func (m *multi) tick(d time.Duration) {
	for _, h := range m.h {
		h.Advance(d)
		h.Step()
	}
}

// one sends f and wants exactly one frame out of interface ifc.
func (m *multi) one(q, in int, f []byte, out int) (decoded, int) {
	m.t.Helper()
	o := m.send(q, in, f)
	if len(o) != 1 || o[0].If != out {
		m.t.Fatalf("sent %d frames %v, want one on interface %d; drops %v, shards %v", len(o), o, out, m.drops, m.at)
	}
	return check(m.t, o[0].Data), o[0].shard
}

// hostsOf lists the test's inside hosts (198.18.1.2-39) by the shard that owns them.
func hostsOf(n *NAT, shards int) [][]netip.Addr {
	by := make([][]netip.Addr, shards)
	for i := 2; i < 40; i++ {
		a := netip.AddrFrom4([4]byte{198, 18, 1, byte(i)})
		o := max(n.hostOwner(a.As4(), shards), 0)
		by[o] = append(by[o], a)
	}
	return by
}

// TestPortPreservationShards: with 2 and 4 shards, every inside host keeps its inside port
// as its external port, whichever shard owns the host and whichever shard's slice the port
// lies in, and the replies reach the owning shard by Owner.
func TestPortPreservationShards(t *testing.T) {
	for _, shards := range []int{2, 4} {
		t.Run(fmt.Sprint(shards), func(t *testing.T) {
			m := newMulti(t, Config{}, shards)
			by := hostsOf(m.n, shards)
			type flow struct {
				host  netip.Addr
				shard int
				port  uint16
			}
			var flows []flow
			foreign := make([]int, shards) // flows whose port lies in another shard's slice
			k := 0
			for s, hosts := range by {
				for _, h := range hosts[:3] {
					for j := 0; j < 4; j++ {
						p := uint16(1024 + (k*7919)%64500) // spread over every slice
						k++
						flows = append(flows, flow{h, s, p})
						if m.n.sliceOf(p, shards) != s {
							foreign[s]++
						}
					}
				}
			}
			for s, f := range foreign {
				if f == 0 {
					t.Fatalf("shard %d got no port of another slice: the test shows nothing", s)
				}
			}
			for _, f := range flows {
				d, at := m.one(0, Inside, udpOut(t, f.host, clientMAC, f.port, server, 53, 64), Outside)
				if at != f.shard || uint16(d.udp.SrcPort) != f.port || !d.ip.SrcIP.Equal(outside.AsSlice()) {
					t.Fatalf("%v:%d (shard %d) left shard %d from %v:%d", f.host, f.port, f.shard, at, d.ip.SrcIP, d.udp.SrcPort)
				}
			}
			for i, f := range flows {
				q := i % shards // the reply comes in on any queue
				d, at := m.one(q, Outside, udpIn(t, server, 53, outside, f.port), Inside)
				if at != f.shard || m.at[0] != f.shard || !d.ip.DstIP.Equal(f.host.AsSlice()) || uint16(d.udp.DstPort) != f.port {
					t.Fatalf("reply to port %d reached %v:%d at shard %d (path %v), want %v:%d at shard %d",
						f.port, d.ip.DstIP, d.udp.DstPort, at, m.at, f.host, f.port, f.shard)
				}
			}
			if st := m.n.Stats(); st.Active != int64(len(flows)) || st.Translated != uint64(2*len(flows)) {
				t.Fatalf("stats %+v, want %d mappings and %d packets translated", st, len(flows), 2*len(flows))
			}
		})
	}
}

// TestPortConflictAcrossShards: hosts of two shards ask for one port; the first keeps it,
// the other gets another, and both flows work both ways. When the first mapping expires,
// the port is free for the other shard's host.
func TestPortConflictAcrossShards(t *testing.T) {
	m := newMulti(t, Config{Timeouts: Timeouts{UDP: time.Second}, MaxMappings: 1000}, 2)
	by := hostsOf(m.n, 2)
	a, b := by[0][0], by[1][0]
	const port = 40000 // in shard 1's slice
	da, _ := m.one(0, Inside, udpOut(t, a, clientMAC, port, server, 53, 64), Outside)
	db, _ := m.one(0, Inside, udpOut(t, b, clientMAC, port, server, 53, 64), Outside)
	extB := uint16(db.udp.SrcPort)
	if da.udp.SrcPort != port || extB == port || extB < 33280 {
		t.Fatalf("A (shard 0) got %d, B (shard 1) got %d: want A %d and B another port of its slice", da.udp.SrcPort, extB, port)
	}
	for _, c := range []struct {
		host netip.Addr
		ext  uint16
	}{{a, port}, {b, extB}} {
		d, _ := m.one(1, Outside, udpIn(t, server, 53, outside, c.ext), Inside)
		if !d.ip.DstIP.Equal(c.host.AsSlice()) || d.udp.DstPort != port {
			t.Fatalf("reply to %d reached %v:%d, want %v:%d", c.ext, d.ip.DstIP, d.udp.DstPort, c.host, port)
		}
	}
	// A's mapping expires (B keeps sending); B's next new flow from that port keeps it.
	for i := 0; i < 8; i++ {
		m.tick(200 * time.Millisecond)
		m.one(0, Inside, udpOut(t, b, clientMAC, port, server, 53, 64), Outside)
	}
	if o := m.n.portOwner(header.ProtoUDP, port, 2); o != 1 || m.n.ports[protoIdx(header.ProtoUDP)][port].Load() != 0 {
		t.Fatalf("port %d after A's mapping expired: owner %d, table %d; want free, owned by its slice (1)", port, o, m.n.ports[1][port].Load())
	}
	d, at := m.one(0, Inside, udpOut(t, b, clientMAC, port+1, server, 53, 64), Outside)
	if d.udp.SrcPort != port+1 || at != 1 {
		t.Fatalf("B's new flow from %d left from %d at shard %d", port+1, d.udp.SrcPort, at)
	}
	d, _ = m.one(0, Inside, udpOut(t, by[1][1], clientMAC, port, server, 53, 64), Outside)
	if d.udp.SrcPort != port {
		t.Fatalf("another host of shard 1 asked for the freed port %d and got %d", port, d.udp.SrcPort)
	}
}

// TestPortClaimRace: two shards, in two goroutines, make mappings for the same 4096 inside
// ports at once. Every port goes to exactly one of them, no external port is given twice,
// and the port table agrees with the mappings.
func TestPortClaimRace(t *testing.T) {
	m := newMulti(t, Config{MaxMappingsPerHost: -1}, 2)
	by := hostsOf(m.n, 2)
	hosts := [2]netip.Addr{by[0][0], by[1][0]}
	const first, count = 10000, 4096
	var in [2][][]stagetest.In // built first, so that the two shards run side by side
	for s := range 2 {
		for p := first; p < first+count; p += 8 {
			var b []stagetest.In
			for q := p; q < p+8; q++ {
				b = append(b, stagetest.In{If: Inside, Data: udpOut(t, hosts[s], clientMAC, uint16(q), server, 53, 64)})
			}
			in[s] = append(in[s], b)
		}
	}
	var wg, ready sync.WaitGroup
	var drops [2]int
	ready.Add(2)
	for s := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			ready.Wait()
			for _, b := range in[s] {
				if out := m.h[s].Step(b...); len(out) != len(b) {
					drops[s] += len(b) - len(out)
				}
			}
		}()
	}
	wg.Wait()
	if drops != [2]int{} {
		t.Fatalf("drops %v", drops)
	}
	ms := m.n.Mappings()
	if len(ms) != 2*count {
		t.Fatalf("%d mappings, want %d", len(ms), 2*count)
	}
	ext := map[uint16]int{}
	preserved := map[uint16]int{}
	for _, mp := range ms {
		in, out := netip.MustParseAddrPort(mp.Inside), netip.MustParseAddrPort(mp.External)
		if prev, dup := ext[out.Port()]; dup {
			t.Fatalf("external port %d given twice (shards %d and %d)", out.Port(), prev, mp.Shard)
		}
		ext[out.Port()] = mp.Shard
		if in.Port() == out.Port() {
			preserved[in.Port()]++
		}
		if v := m.n.ports[protoIdx(header.ProtoUDP)][out.Port()].Load(); int(v) != mp.Shard+1 {
			t.Fatalf("port %d: table says %d, the mapping is shard %d's", out.Port(), v, mp.Shard)
		}
	}
	for p := first; p < first+count; p++ {
		if preserved[uint16(p)] != 1 {
			t.Fatalf("inside port %d kept as external port by %d hosts, want 1", p, preserved[uint16(p)])
		}
	}
	held := 0
	for p := range 65536 {
		if m.n.ports[protoIdx(header.ProtoUDP)][p].Load() != 0 {
			held++
		}
	}
	if held != 2*count {
		t.Fatalf("%d ports held in the table, %d mappings", held, 2*count)
	}
}

// TestHairpinAcrossShards: the mapping a hairpinned packet is for may live at another shard;
// the packet is translated at its sender's shard and handed to the shard that holds the
// destination port, which delivers it.
func TestHairpinAcrossShards(t *testing.T) {
	m := newMulti(t, Config{}, 2)
	by := hostsOf(m.n, 2)
	a, b := by[0][0], by[1][0]
	// B (shard 1) keeps port 5000, which lies in shard 0's slice.
	if d, _ := m.one(0, Inside, udpOut(t, b, clientMAC, 5000, server, 53, 64), Outside); d.udp.SrcPort != 5000 {
		t.Fatalf("B's port 5000 left as %d", d.udp.SrcPort)
	}
	d, at := m.one(0, Inside, udpOut(t, a, clientMAC, 6000, outside, 5000, 64), Inside)
	if m.at[0] != 0 || at != 1 || m.handed != 1 {
		t.Fatalf("the hairpinned packet went %v (handed %d), want shard 0 then shard 1", m.at, m.handed)
	}
	if !d.ip.DstIP.Equal(b.AsSlice()) || d.udp.DstPort != 5000 || !d.ip.SrcIP.Equal(outside.AsSlice()) || d.udp.SrcPort != 6000 {
		t.Fatalf("hairpinned packet %v:%d → %v:%d", d.ip.SrcIP, d.udp.SrcPort, d.ip.DstIP, d.udp.DstPort)
	}
	// The same bytes from the wire (an inside host forging the hand-off) are dropped.
	f := udpOut(t, a, clientMAC, 6000, outside, 5000, 64)
	ip := header.IPv4(f[header.EthernetLen:])
	rewrite(ip, true, outside.As4(), 6000)
	if o := m.send(1, Inside, f); len(o) != 0 || len(m.drops) != 1 || m.drops[0] != ReasonSpoofed {
		t.Fatalf("a forged hairpin half: sent %d, drops %v", len(o), m.drops)
	}
}

// TestStaticForwardShards: with 2 and 4 shards, forwards to hosts of every shard work from
// outside whatever queue the packets come in on, the inside endpoints' replies leave from
// the forwarded port, a host of another shard reaches a forward by hairpin, and SetForwards
// moves a forward's port from a host of one shard to a host of another.
func TestStaticForwardShards(t *testing.T) {
	for _, shards := range []int{2, 4} {
		t.Run(fmt.Sprint(shards), func(t *testing.T) {
			n := newNAT(t, Config{})
			by := hostsOf(n, shards)
			var fw []Forward
			for s := range shards {
				fw = append(fw, Forward{Proto: header.ProtoUDP, ExtPort: uint16(8000 + s), Inside: netip.AddrPortFrom(by[s][0], 80)},
					Forward{Proto: header.ProtoTCP, ExtPort: uint16(2000 + s), Inside: netip.AddrPortFrom(by[s][1], 22)})
			}
			cfg := Config{Forwards: fw, MaxMappings: 1000}
			m := newMulti(t, cfg, shards)
			if st := m.n.Stats(); st.Active != int64(len(fw)) || st.ForwardsPending != 0 {
				t.Fatalf("stats %+v: want each of the %d forwards installed once", st, len(fw))
			}
			for _, f := range fw {
				want := m.n.hostOwner(f.Inside.Addr().As4(), shards)
				if o := m.n.portOwner(f.Proto, f.ExtPort, shards); o != want {
					t.Fatalf("forward %v: port owned by %d, its host by %d", f, o, want)
				}
			}
			for _, f := range fw {
				s := m.n.hostOwner(f.Inside.Addr().As4(), shards)
				for q := range shards {
					var in []byte
					if f.Proto == header.ProtoUDP {
						in = udpIn(t, server, 4444, outside, f.ExtPort)
					} else {
						in = frame(t, serverMAC, outMAC, server, outside, 64, &layers.TCP{SrcPort: 4444, DstPort: layers.TCPPort(f.ExtPort), SYN: true, Seq: 1, Window: 1000}, nil)
					}
					d, at := m.one(q, Outside, in, Inside)
					if at != s || !d.ip.DstIP.Equal(f.Inside.Addr().AsSlice()) {
						t.Fatalf("forward %v from queue %d: reached %v at shard %d, want shard %d", f, q, d.ip.DstIP, at, s)
					}
					if (d.udp != nil && uint16(d.udp.DstPort) != f.Inside.Port()) || (d.tcp != nil && uint16(d.tcp.DstPort) != f.Inside.Port()) {
						t.Fatalf("forward %v: reached port %v%v", f, d.udp, d.tcp)
					}
				}
				var rep []byte
				if f.Proto == header.ProtoUDP {
					rep = udpOut(t, f.Inside.Addr(), clientMAC, f.Inside.Port(), server, 4444, 64)
				} else {
					rep = frame(t, clientMAC, inMAC, f.Inside.Addr(), server, 64, &layers.TCP{SrcPort: layers.TCPPort(f.Inside.Port()), DstPort: 4444, SYN: true, ACK: true, Seq: 7, Ack: 2, Window: 1000}, nil)
				}
				d, at := m.one(0, Inside, rep, Outside)
				sport := uint16(0)
				if d.udp != nil {
					sport = uint16(d.udp.SrcPort)
				} else {
					sport = uint16(d.tcp.SrcPort)
				}
				if at != s || sport != f.ExtPort || !d.ip.SrcIP.Equal(outside.AsSlice()) {
					t.Fatalf("forward %v: the inside endpoint's reply left shard %d from %v:%d", f, at, d.ip.SrcIP, sport)
				}
			}
			// Hairpin: a host of the last shard reaches shard 0's UDP forward.
			d, _ := m.one(0, Inside, udpOut(t, by[shards-1][2], clientMAC, 3333, outside, 8000, 64), Inside)
			if !d.ip.DstIP.Equal(by[0][0].AsSlice()) || d.udp.DstPort != 80 {
				t.Fatalf("hairpin to forward 8000 reached %v:%d", d.ip.DstIP, d.udp.DstPort)
			}
			// Reload: port 8000 moves to a host of the last shard.
			moved := slicesClone(fw)
			moved[0].Inside = netip.AddrPortFrom(by[shards-1][3], 8080)
			if err := m.n.SetForwards(moved); err != nil {
				t.Fatal(err)
			}
			for range 3 { // the old owner frees the port at its scan, the new one then takes it
				m.tick(20 * time.Millisecond)
			}
			if st := m.n.Stats(); st.ForwardsPending != 0 {
				t.Fatalf("after the move: %+v", st)
			}
			d, at := m.one(0, Outside, udpIn(t, server, 4444, outside, 8000), Inside)
			if at != shards-1 || !d.ip.DstIP.Equal(by[shards-1][3].AsSlice()) || d.udp.DstPort != 8080 {
				t.Fatalf("moved forward reached %v:%d at shard %d", d.ip.DstIP, d.udp.DstPort, at)
			}
		})
	}
}

func slicesClone(f []Forward) []Forward { return append([]Forward(nil), f...) }

// TestHostLimit: one inside host drives past MaxMappingsPerHost (all protocols together;
// its static forward does not count): its new flows are dropped and counted, while its
// existing mappings and another host's flow keep translating both ways; once its mappings
// expire it may make new ones. With one shard both hosts share it; with two they have one
// each.
func TestHostLimit(t *testing.T) {
	for _, shards := range []int{1, 2} {
		t.Run(fmt.Sprint(shards), func(t *testing.T) {
			n := newNAT(t, Config{})
			by := hostsOf(n, shards)
			a, b := by[0][0], by[0][1]
			if shards == 2 {
				b = by[1][0]
			}
			cfg := Config{MaxMappingsPerHost: 3, MaxMappings: 1000, Timeouts: Timeouts{UDP: time.Second, ICMP: time.Second},
				Forwards: []Forward{{Proto: header.ProtoUDP, ExtPort: 8080, Inside: netip.AddrPortFrom(a, 80)}}}
			m := newMulti(t, cfg, shards)
			m.one(0, Inside, udpOut(t, b, client2MAC, 6000, server, 53, 64), Outside) // B's flow, before A's flood
			for p := uint16(4001); p <= 4003; p++ {
				if d, _ := m.one(0, Inside, udpOut(t, a, clientMAC, p, server, 53, 64), Outside); d.udp.SrcPort != layers.UDPPort(p) {
					t.Fatalf("A's flow %d left from %d", p, d.udp.SrcPort)
				}
			}
			over := [][]byte{udpOut(t, a, clientMAC, 4004, server, 53, 64), udpOut(t, a, clientMAC, 4005, server2, 53, 64),
				frame(t, clientMAC, inMAC, a, server, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 9, Seq: 1}, []byte("ping"))}
			for _, f := range over {
				if o := m.send(0, Inside, f); len(o) != 0 || len(m.drops) != 1 || m.drops[0] != ReasonHostLimit {
					t.Fatalf("A's new flow over the limit: sent %d, drops %v", len(o), m.drops)
				}
			}
			if st := m.n.Stats(); st.HostLimitDrops != 3 || st.TableFullDrops != 0 || st.Active != 5 {
				t.Fatalf("stats %+v: want 3 host-limit drops, 5 mappings (A 3, B 1, the forward)", st)
			}
			// A's existing mappings, its forward and B's flow work both ways; B still makes new flows.
			m.one(0, Inside, udpOut(t, a, clientMAC, 4002, server, 53, 64), Outside)
			if d, _ := m.one(0, Outside, udpIn(t, server, 53, outside, 4002), Inside); !d.ip.DstIP.Equal(a.AsSlice()) {
				t.Fatalf("reply to A reached %v", d.ip.DstIP)
			}
			m.one(0, Outside, udpIn(t, server2, 1, outside, 8080), Inside)
			m.one(0, Inside, udpOut(t, b, client2MAC, 6000, server, 53, 64), Outside)
			if d, _ := m.one(0, Outside, udpIn(t, server, 53, outside, 6000), Inside); !d.ip.DstIP.Equal(b.AsSlice()) {
				t.Fatalf("reply to B reached %v", d.ip.DstIP)
			}
			m.one(0, Inside, udpOut(t, b, client2MAC, 6001, server, 53, 64), Outside)
			// A's mappings expire; then A gets three again, and no more.
			for range 6 {
				m.tick(300 * time.Millisecond)
			}
			if st := m.n.Stats(); st.Active != 1 {
				t.Fatalf("after the timeout: %+v, want only the forward", st)
			}
			for p := uint16(5001); p <= 5003; p++ {
				m.one(0, Inside, udpOut(t, a, clientMAC, p, server, 53, 64), Outside)
			}
			if o := m.send(0, Inside, udpOut(t, a, clientMAC, 5004, server, 53, 64)); len(o) != 0 || m.drops[0] != ReasonHostLimit {
				t.Fatalf("A's fourth flow after expiry: sent %d, drops %v", len(o), m.drops)
			}
			if st := m.n.Stats(); st.HostLimitDrops != 4 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestHostCounts checks the per-host table against a map over random increments and
// decrements of hosts that collide in it.
func TestHostCounts(t *testing.T) {
	var h hostCounts
	h.init(64) // 128 slots
	want := map[uint32]uint32{}
	x := uint32(1)
	for i := 0; i < 200000; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		ip := 0xc6120100 + x%97 // 97 hosts share 128 slots
		if x&(1<<20) != 0 && want[ip] > 0 {
			h.dec(ip)
			if want[ip]--; want[ip] == 0 {
				delete(want, ip)
			}
		} else if len(want) < 64 || want[ip] > 0 {
			h.inc(ip)
			want[ip]++
		}
		if i%1000 == 0 {
			if h.hosts() != len(want) {
				t.Fatalf("step %d: %d hosts in the table, %d counted", i, h.hosts(), len(want))
			}
			for ip, n := range want {
				if got := h.get(ip); got != n {
					t.Fatalf("step %d: host %x has %d, want %d", i, ip, got, n)
				}
			}
		}
	}
}

// TestSpoofedSources: packets whose source cannot be their sender's are dropped and counted
// before anything translates them or the NAT's stack sees them (RFC 2827, RFC 3704).
func TestSpoofedSources(t *testing.T) {
	fx := newFixture(t, Config{Filtering: EIF}, 0, 1) // EIF: a mapped port takes packets from anyone
	fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, 53, 64)})
	a := netip.MustParseAddr
	ping := func(src, dst netip.Addr, m1, m2 [6]byte) []byte {
		return frame(t, m1, m2, src, dst, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, []byte("ping"))
	}
	frag := func(src netip.Addr) []byte {
		return fragUDP(t, serverMAC, outMAC, src, 53, outside, 5000, 7, pattern(3000, 1))[1]
	}
	for _, c := range []struct {
		name string
		ifc  int
		f    []byte
		want pipelines.DropReason // 0: passes
	}{
		{"outside: a remote host", Outside, udpIn(t, server, 53, outside, 5000), 0},
		{"outside: the inside network", Outside, udpIn(t, client2, 53, outside, 5000), ReasonSpoofed},
		{"outside: the outside address (land)", Outside, udpIn(t, outside, 5000, outside, 5000), ReasonSpoofed},
		{"outside: the inside address", Outside, udpIn(t, insideAddr, 53, outside, 5000), ReasonSpoofed},
		{"outside: 0/8", Outside, udpIn(t, a("0.1.2.3"), 53, outside, 5000), ReasonSpoofed},
		{"outside: loopback", Outside, udpIn(t, a("127.0.0.1"), 53, outside, 5000), ReasonSpoofed},
		{"outside: multicast", Outside, udpIn(t, a("224.0.0.251"), 53, outside, 5000), ReasonSpoofed},
		{"outside: 240/4", Outside, udpIn(t, a("240.0.0.1"), 53, outside, 5000), ReasonSpoofed},
		{"outside: broadcast", Outside, udpIn(t, a("255.255.255.255"), 53, outside, 5000), ReasonSpoofed},
		{"outside: loopback pings the NAT", Outside, ping(a("127.0.0.1"), outside, serverMAC, outMAC), ReasonSpoofed},
		{"outside: a fragment from the inside network", Outside, frag(client2), ReasonSpoofed},
		{"inside: a host", Inside, udpOut(t, client, clientMAC, 5000, server, 53, 64), 0},
		{"inside: the inside address", Inside, udpOut(t, insideAddr, clientMAC, 5000, server, 53, 64), ReasonSpoofed},
		{"inside: the outside address", Inside, udpOut(t, outside, clientMAC, 5000, server, 53, 64), ReasonSpoofed},
		{"inside: the outside address to itself (a forged hairpin)", Inside, udpOut(t, outside, clientMAC, 53, outside, 5000, 64), ReasonSpoofed},
		{"inside: the network address", Inside, udpOut(t, a("198.18.1.0"), clientMAC, 5000, server, 53, 64), ReasonSpoofed},
		{"inside: the broadcast address", Inside, udpOut(t, a("198.18.1.255"), clientMAC, 5000, server, 53, 64), ReasonSpoofed},
		{"inside: 0.0.0.0", Inside, udpOut(t, a("0.0.0.0"), clientMAC, 68, server, 67, 64), ReasonSpoofed},
		{"inside: loopback pings the NAT", Inside, ping(a("127.0.0.1"), insideAddr, clientMAC, inMAC), ReasonSpoofed},
		{"inside: multicast", Inside, udpOut(t, a("239.1.1.1"), clientMAC, 5000, server, 53, 64), ReasonSpoofed},
		{"inside: another network", Inside, udpOut(t, a("10.0.0.1"), clientMAC, 5000, server, 53, 64), ReasonNotInside},
	} {
		before := fx.n.Stats()
		out := fx.h.Step(stagetest.In{If: c.ifc, Data: c.f})
		st := fx.n.Stats()
		if c.want == 0 {
			if len(out) != 1 || len(fx.h.Drops()) != 0 {
				t.Errorf("%s: sent %d, drops %v; want it translated", c.name, len(out), fx.h.Drops())
			}
			continue
		}
		if len(out) != 0 || len(fx.h.Drops()) != 1 || fx.h.Drops()[0] != c.want {
			t.Errorf("%s: sent %d, drops %v; want one drop %v", c.name, len(out), fx.h.Drops(), c.want)
		}
		wantSpoofed := before.SpoofedDrops
		if c.want == ReasonSpoofed {
			wantSpoofed++
		}
		if st.SpoofedDrops != wantSpoofed || st.Active != 1 || st.Translated != before.Translated {
			t.Errorf("%s: stats %+v, before %+v", c.name, st, before)
		}
	}
	// A /31 inside network has no network or broadcast address: both are hosts (RFC 3021).
	n31, err := New(Config{InsidePrefix: netip.MustParsePrefix("198.18.1.0/31"), InsideAddr: a("198.18.1.0"), Outside: outside}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := n31.spoofed(a("198.18.1.1").As4(), Inside); r != 0 {
		t.Errorf("/31: the other host is %v", r)
	}
}

// TestNewMappingAllocs: making a mapping (the per-host count, the port claim, the flow tree)
// and dropping spoofed packets allocate nothing.
func TestNewMappingAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; the test script runs this without -race")
	}
	fx := newFixture(t, Config{}, 0, 1)
	const runs = 500
	var frames [][]byte
	for i := range runs + 1 { // AllocsPerRun runs once more to warm up
		frames = append(frames, udpOut(t, netip.AddrFrom4([4]byte{198, 18, 1, byte(2 + i%30)}), clientMAC, uint16(20000+i), server, 53, 64))
	}
	spoofed := udpIn(t, client, 53, outside, 20000)
	k := 0
	a := testing.AllocsPerRun(runs, func() {
		b := fx.h.Pass(stagetest.In{If: Inside, Data: frames[k]}, stagetest.In{If: Outside, Data: spoofed})
		k++
		if b.Pkts[0].Verdict != pipelines.Transmit || b.Pkts[1].Reason != ReasonSpoofed {
			t.Fatalf("not translated: %v %v", b.Pkts[0].Verdict, b.Pkts[0].Reason)
		}
	})
	if a != 0 {
		t.Fatalf("a new mapping allocates %v times", a)
	}
	if st := fx.n.Stats(); st.Active != runs+1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPortsExhaustedAcrossShards: a shard whose slice is full takes ports of the other
// slices, claimed in the table so that replies find it; once every port is taken, new flows
// of either shard are dropped as nat-table-full while the existing ones keep working, and a
// port freed by expiry serves again.
func TestPortsExhaustedAcrossShards(t *testing.T) {
	m := newMulti(t, Config{PortLo: 20000, PortHi: 20003, MaxMappings: 100, Timeouts: Timeouts{UDP: time.Second}}, 2)
	by := hostsOf(m.n, 2)
	a, b := by[0][0], by[1][0]
	got := map[uint16]bool{}
	for p := uint16(1); p <= 4; p++ { // inside ports outside the range: none kept
		d, at := m.one(0, Inside, udpOut(t, a, clientMAC, p, server, 53, 64), Outside)
		if at != 0 {
			t.Fatalf("A's flow left shard %d", at)
		}
		got[uint16(d.udp.SrcPort)] = true
	}
	for p := uint16(20000); p <= 20003; p++ {
		if !got[p] {
			t.Fatalf("A (shard 0, slice 20000-20001) got ports %v, want all of 20000-20003", got)
		}
	}
	for _, f := range [][]byte{udpOut(t, a, clientMAC, 5, server, 53, 64), udpOut(t, b, clientMAC, 6, server, 53, 64)} {
		if o := m.send(0, Inside, f); len(o) != 0 || len(m.drops) != 1 || m.drops[0] != ReasonTableFull {
			t.Fatalf("a new flow with every port taken: sent %d, drops %v", len(o), m.drops)
		}
	}
	if st := m.n.Stats(); st.TableFullDrops != 2 || st.Active != 4 {
		t.Fatalf("stats %+v", st)
	}
	for p := uint16(20000); p <= 20003; p++ {
		d, at := m.one(1, Outside, udpIn(t, server, 53, outside, p), Inside)
		if at != 0 || !d.ip.DstIP.Equal(a.AsSlice()) {
			t.Fatalf("reply to %d reached %v at shard %d", p, d.ip.DstIP, at)
		}
	}
	// A's mappings expire; B's new flow takes a port of its own slice.
	for range 8 {
		m.tick(200 * time.Millisecond)
	}
	d, at := m.one(0, Inside, udpOut(t, b, clientMAC, 7, server, 53, 64), Outside)
	if at != 1 || d.udp.SrcPort < 20002 {
		t.Fatalf("B's flow after expiry left shard %d from %d", at, d.udp.SrcPort)
	}
}
