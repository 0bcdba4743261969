package nat

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// fragUDP builds a UDP datagram and splits it into fragments for an MTU of 1500 (1480
// payload bytes each), each behind an Ethernet header.
func fragUDP(t testing.TB, srcMAC, dstMAC [6]byte, src netip.Addr, sport uint16, dst netip.Addr, dport, id uint16, payload []byte) [][]byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Id: id, Protocol: layers.IPProtocolUDP}
	u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	u.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, u, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return splitIPv4(buf.Bytes(), srcMAC, dstMAC, 1500)
}

// splitIPv4 fragments a whole IPv4 packet (20-byte header) for mtu, as a sender's kernel does.
func splitIPv4(pkt []byte, srcMAC, dstMAC [6]byte, mtu int) [][]byte {
	hdr, pl := pkt[:20], pkt[20:]
	chunk := (mtu - 20) &^ 7
	var out [][]byte
	for off := 0; off < len(pl); off += chunk {
		end := min(off+chunk, len(pl))
		f := make([]byte, header.EthernetLen+20+end-off)
		header.EncodeEthernet(f, header.MAC(dstMAC), header.MAC(srcMAC), header.EtherTypeIPv4)
		ip := header.IPv4(f[header.EthernetLen:])
		copy(ip, hdr)
		copy(ip[20:], pl[off:end])
		ip.SetTotalLength(len(ip))
		ip.SetFragment(false, end < len(pl), off)
		ip.FixChecksum()
		out = append(out, f)
	}
	return out
}

// reassembled is a datagram put together from translated fragments, checked on the way.
type reassembled struct {
	src, dst     netip.Addr
	id           uint16
	sport, dport uint16
	payload      []byte
}

// reassemble puts fragments together as a receiver would, failing the test if their headers
// do not verify, disagree, or leave a hole, or if the UDP checksum of the whole does not verify.
func reassemble(t testing.TB, frames [][]byte) reassembled {
	t.Helper()
	var r reassembled
	var data []byte
	have := map[int]bool{}
	total := -1
	for k, f := range frames {
		ip, e := header.ParseIPv4(f[header.EthernetLen:])
		if e != header.IPv4OK {
			t.Fatalf("fragment %d: IPv4 header: %v", k, e)
		}
		if k == 0 {
			r.src, r.dst, r.id = ip.Src(), ip.Dst(), ip.ID()
		} else if ip.Src() != r.src || ip.Dst() != r.dst || ip.ID() != r.id {
			t.Fatalf("fragment %d is %v→%v ID %d, fragment 0 %v→%v ID %d", k, ip.Src(), ip.Dst(), ip.ID(), r.src, r.dst, r.id)
		}
		off, pl := ip.FragmentOffset(), ip.Payload()
		if need := off + len(pl); need > len(data) {
			data = append(data, make([]byte, need-len(data))...)
		}
		copy(data[off:], pl)
		for b := off; b < off+len(pl); b += 8 {
			have[b] = true
		}
		if !ip.MF() {
			total = off + len(pl)
		}
	}
	if total < 0 {
		t.Fatal("no last fragment")
	}
	for b := 0; b < total; b += 8 {
		if !have[b] {
			t.Fatalf("hole at byte %d of %d", b, total)
		}
	}
	data = data[:total]
	u := header.UDP(data)
	if !u.ChecksumValid(r.src, r.dst) {
		t.Fatalf("the reassembled datagram's UDP checksum does not verify")
	}
	r.sport, r.dport, r.payload = u.SrcPort(), u.DstPort(), data[header.UDPLen:]
	return r
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) ^ seed ^ byte(i>>8)
	}
	return p
}

// fragOrders are the orders the tests send a datagram's n fragments in.
func fragOrders(n int) map[string][]int {
	in := make([]int, n)
	for i := range in {
		in[i] = i
	}
	rev := slices.Clone(in)
	slices.Reverse(rev)
	shuf := slices.Clone(in)
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { shuf[i], shuf[j] = shuf[j], shuf[i] })
	if shuf[0] == 0 {
		shuf[0], shuf[n-1] = shuf[n-1], shuf[0]
	}
	// Every fragment twice, the first and the last among them, the copies before the datagram
	// is complete; but fragment 1, which completes it, once (a copy after it would start a
	// new datagram, held until its timeout).
	dup := []int{n - 1, n / 2, 0, n / 2, n - 1, 0}
	for i := 2; i < n-1; i++ {
		if i != n/2 {
			dup = append(dup, i, i)
		}
	}
	dup = append(dup, 1)
	return map[string][]int{"in-order": in, "reversed": rev, "shuffled": shuf, "duplicated": dup}
}

// sendFrags feeds the fragments in order, one per pass or all in one, on interface from; it
// returns what was sent, failing the test on a drop or a frame sent elsewhere than to.
func sendFrags(t *testing.T, fx *fixture, frags [][]byte, order []int, from, to int, onePass bool) [][]byte {
	t.Helper()
	var out [][]byte
	take := func(sent []stagetest.Out) {
		if d := fx.h.Drops(); len(d) != 0 {
			t.Fatalf("drops %v", d)
		}
		for _, o := range sent {
			if o.If != to {
				t.Fatalf("fragment sent on interface %d, want %d", o.If, to)
			}
			out = append(out, o.Data)
		}
	}
	if onePass {
		var in []stagetest.In
		for _, k := range order {
			in = append(in, stagetest.In{If: from, Data: frags[k]})
		}
		take(fx.h.Step(in...))
		take(fx.h.Step()) // anything left for the next pass
		return out
	}
	for _, k := range order {
		take(fx.h.Step(stagetest.In{If: from, Data: frags[k]}))
	}
	return out
}

// TestFragmentOrders: an 8 KB UDP datagram (6 fragments) out and its 8 KB answer back, the
// fragments in order, reversed, shuffled and each twice, one per pass and all in one pass:
// every fragment is translated (the copies too), the datagram reassembles byte-exact with a
// UDP checksum that verifies, and all fragments of one datagram carry one new IP ID.
func TestFragmentOrders(t *testing.T) {
	req, rep := pattern(8192, 1), pattern(8192, 2)
	outFrags := fragUDP(t, clientMAC, inMAC, client, 5000, server, 53, 99, req)
	inFrags := fragUDP(t, serverMAC, outMAC, server, 53, outside, 5000, 4321, rep)
	if len(outFrags) != 6 {
		t.Fatalf("%d fragments, want 6", len(outFrags))
	}
	for name, order := range fragOrders(len(outFrags)) {
		for _, onePass := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/one-pass=%v", name, onePass), func(t *testing.T) {
				fx := newFixture(t, Config{}, 0, 1)
				out := sendFrags(t, fx, outFrags, order, Inside, Outside, onePass)
				if len(out) != len(order) {
					t.Fatalf("out: %d fragments sent for %d received", len(out), len(order))
				}
				for _, f := range out {
					if !bytes.Equal(f[0:6], serverMAC[:]) || !bytes.Equal(f[6:12], outMAC[:]) || header.IPv4(f[14:]).TTL() != 63 {
						t.Fatalf("out: MACs % x, TTL %d", f[0:12], header.IPv4(f[14:]).TTL())
					}
				}
				r := reassemble(t, out)
				if r.src != outside || r.dst != server || r.sport != 5000 || r.dport != 53 || !bytes.Equal(r.payload, req) {
					t.Fatalf("out: %v:%d → %v:%d, %d bytes (payload equal %v)", r.src, r.sport, r.dst, r.dport, len(r.payload), bytes.Equal(r.payload, req))
				}
				back := sendFrags(t, fx, inFrags, order, Outside, Inside, onePass)
				if len(back) != len(order) {
					t.Fatalf("in: %d fragments sent for %d received", len(back), len(order))
				}
				r = reassemble(t, back)
				if r.src != server || r.dst != client || r.sport != 53 || r.dport != 5000 || r.id != 4321 || !bytes.Equal(r.payload, rep) {
					t.Fatalf("in: %v:%d → %v:%d ID %d, %d bytes (payload equal %v)", r.src, r.sport, r.dst, r.dport, r.id, len(r.payload), bytes.Equal(r.payload, rep))
				}
				st := fx.n.Stats()
				f := st.Fragments
				early := name != "in-order"
				if f.In != uint64(2*len(order)) || f.Translated != f.In || f.IDs < 1 || (f.Held > 0) != early || f.Released != f.Held ||
					f.HeldNow != 0 || f.DatagramsNow != 0 || f.Timeouts+f.BufferFull+f.SourceLimit+f.TableFull+f.Bad != 0 {
					t.Fatalf("fragment stats %+v", f)
				}
				if st.Translated != f.Translated || st.Active != 1 {
					t.Fatalf("stats %+v", st)
				}
			})
		}
	}
}

// TestFragmentTimeout: fragments whose first fragment never comes are held, then dropped at
// the timeout, counted; traffic goes on meanwhile and after.
func TestFragmentTimeout(t *testing.T) {
	fx := newFixture(t, Config{Fragments: FragmentLimits{Timeout: time.Second}}, 0, 1)
	frags := fragUDP(t, clientMAC, inMAC, client, 5000, server, 53, 7, pattern(8192, 3))
	for _, f := range frags[1:] {
		if out := fx.h.Step(stagetest.In{If: Inside, Data: f}); len(out) != 0 || fx.h.Consumed() != 1 {
			t.Fatalf("an early fragment was sent (%d) or not held: drops %v", len(out), fx.h.Drops())
		}
	}
	if f := fx.n.Stats().Fragments; f.Held != 5 || f.HeldNow != 5 || f.DatagramsNow != 1 {
		t.Fatalf("held: %+v", f)
	}
	if out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client2, client2MAC, 6000, server, 53, 64)}); len(out) != 1 {
		t.Fatalf("other traffic stopped: drops %v", fx.h.Drops())
	}
	if dl := fx.h.NextDeadline(); dl == 0 || dl > fx.h.Now()+int64(time.Second)+1 {
		t.Fatalf("next deadline %d, now %d: the held fragments' expiry is not asked for", dl, fx.h.Now())
	}
	fx.h.Advance(1100 * time.Millisecond)
	fx.h.Step()
	if n := fx.h.DropCounts()["nat-frag-timeout"]; n != 5 {
		t.Fatalf("drops at the timeout %v, want 5 nat-frag-timeout", fx.h.DropCounts())
	}
	if f := fx.n.Stats().Fragments; f.Timeouts != 5 || f.HeldNow != 0 || f.DatagramsNow != 0 || f.Released != 0 {
		t.Fatalf("after the timeout: %+v", f)
	}
	if fx.h.NextDeadline() != 0 {
		t.Fatalf("a deadline is left: %d", fx.h.NextDeadline())
	}
	if out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, 53, 64)}); len(out) != 1 {
		t.Fatalf("traffic after the timeout: drops %v", fx.h.Drops())
	}
	// Inbound the same: early fragments of an answer whose first fragment is lost.
	back := fragUDP(t, serverMAC, outMAC, server, 53, outside, 5000, 8, pattern(3000, 4))
	fx.h.Step(stagetest.In{If: Outside, Data: back[1]}, stagetest.In{If: Outside, Data: back[2]})
	fx.h.Advance(1100 * time.Millisecond)
	fx.h.Step()
	if n := fx.h.DropCounts()["nat-frag-timeout"]; n != 2 || fx.n.Stats().Fragments.Timeouts != 7 {
		t.Fatalf("inbound: drops %v, stats %+v", fx.h.DropCounts(), fx.n.Stats().Fragments)
	}
}

// TestFragmentBufferLimits: early fragments past the per-source and the per-shard limits are
// dropped and counted; datagrams whose first fragment comes first, unfragmented traffic, and
// the held datagram once its first fragment comes, go on.
func TestFragmentBufferLimits(t *testing.T) {
	fx := newFixture(t, Config{Fragments: FragmentLimits{Held: 6, HeldPerSource: 4, Datagrams: 3}}, 0, 1)
	a := fragUDP(t, clientMAC, inMAC, client, 5000, server, 53, 1, pattern(8192, 5)) // 6 fragments
	b := fragUDP(t, client2MAC, inMAC, client2, 6000, server, 53, 2, pattern(8192, 6))
	c := fragUDP(t, client2MAC, inMAC, client2, 6000, server, 53, 3, pattern(8192, 7))
	step := func(f []byte) ([]stagetest.Out, map[string]int) {
		out := fx.h.Step(stagetest.In{If: Inside, Data: f})
		return out, fx.h.DropCounts()
	}
	// client: 4 of a's 5 early fragments held, the fifth over the per-source limit.
	for k := 1; k <= 5; k++ {
		_, d := step(a[k])
		if want := k == 5; (d["nat-frag-buffer-full"] == 1) != want {
			t.Fatalf("a[%d]: drops %v", k, d)
		}
	}
	// client2: 2 more fit the shard's 6, the third not.
	for k := 1; k <= 3; k++ {
		_, d := step(b[k])
		if want := k == 3; (d["nat-frag-buffer-full"] == 1) != want {
			t.Fatalf("b[%d]: drops %v", k, d)
		}
	}
	f := fx.n.Stats().Fragments
	if f.HeldNow != 6 || f.SourceLimit != 1 || f.BufferFull != 1 {
		t.Fatalf("stats %+v", f)
	}
	// A datagram in order needs no buffer: it goes through whole.
	var sent [][]byte
	for _, fr := range c {
		out, d := step(fr)
		if len(d) != 0 || len(out) != 1 {
			t.Fatalf("in-order datagram: sent %d, drops %v", len(out), d)
		}
		sent = append(sent, out[0].Data)
	}
	reassemble(t, sent)
	if out, _ := step(udpOut(t, client, clientMAC, 7000, server, 53, 64)); len(out) != 1 {
		t.Fatal("unfragmented traffic stopped")
	}
	// A third datagram in progress fits (a and b are); a fourth is over Datagrams.
	d1 := fragUDP(t, client2MAC, inMAC, client2, 6000, server, 53, 10, pattern(3000, 8))
	d2 := fragUDP(t, client2MAC, inMAC, client2, 6000, server, 53, 11, pattern(3000, 9))
	if out, d := step(d1[0]); len(out) != 1 || len(d) != 0 {
		t.Fatalf("third datagram: drops %v", d)
	}
	if _, d := step(d2[0]); d["nat-frag-table-full"] != 1 || fx.n.Stats().Fragments.TableFull != 1 {
		t.Fatalf("fourth datagram: drops %v", d)
	}
	// a's first fragment: it and the 4 held go out.
	out, d := step(a[0])
	if len(out) != 5 || len(d) != 0 {
		t.Fatalf("a's first fragment released %d frames, drops %v", len(out), d)
	}
	if f := fx.n.Stats().Fragments; f.Released != 4 || f.HeldNow != 2 {
		t.Fatalf("after release: %+v", f)
	}
}

// TestFragmentIDs: two inside hosts send fragmented datagrams with the same IP ID to one
// server; outside they carry different IDs, one per datagram (RFC 6864). Shards take
// disjoint IDs.
func TestFragmentIDs(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	ids := map[uint16]string{}
	for _, h := range []struct {
		ip  netip.Addr
		mac [6]byte
	}{{client, clientMAC}, {client2, client2MAC}} {
		for k := 0; k < 3; k++ {
			frags := fragUDP(t, h.mac, inMAC, h.ip, 5000, server, 53, 99, pattern(4000, byte(k)))
			out := sendFrags(t, fx, frags, []int{2, 0, 1}, Inside, Outside, false)
			r := reassemble(t, out)
			who := fmt.Sprintf("%v #%d", h.ip, k)
			if prev, dup := ids[r.id]; dup {
				t.Fatalf("%s and %s both left with IP ID %d", prev, who, r.id)
			}
			ids[r.id] = who
		}
	}
	if got := fx.n.Stats().Fragments.IDs; got != 6 {
		t.Fatalf("%d IDs rewritten, want 6", got)
	}
	// Two shards: each hands out only IDs ≡ its index (mod 2).
	for shard := 0; shard < 2; shard++ {
		fx := newFixture(t, Config{}, shard, 2)
		var from netip.Addr
		for _, c := range []netip.Addr{client, client2, netip.MustParseAddr("198.18.1.4"), netip.MustParseAddr("198.18.1.5")} {
			if fx.n.Owner(udpOut(t, c, clientMAC, 1, server, 1, 64), 2) == shard {
				from = c
				break
			}
		}
		if !from.IsValid() {
			t.Fatal("no test address hashes to shard", shard)
		}
		for k := 0; k < 20; k++ {
			frags := fragUDP(t, clientMAC, inMAC, from, 5000, server, 53, 99, pattern(3000, byte(k)))
			r := reassemble(t, sendFrags(t, fx, frags, []int{0, 1, 2}, Inside, Outside, false))
			if int(r.id)%2 != shard {
				t.Fatalf("shard %d of 2 gave ID %d", shard, r.id)
			}
		}
	}
}

// TestFragmentsAcrossShards: with two shards, every fragment of an inside host's datagram
// has that host's owner, which keeps the host's port (5000, in the other shard's slice); every
// fragment of an answer from outside has one owner, chosen from the datagram (its port is in
// the first fragment only), which hands the fragments to the shard that holds the port (by
// the port table, not the slice), which translates them.
func TestFragmentsAcrossShards(t *testing.T) {
	m := newMulti(t, Config{}, 2)
	n := m.n
	own := n.hostOwner(client.As4(), 2) // the shard of client's mappings
	if n.sliceOf(5000, 2) == own {
		t.Fatalf("port 5000 lies in shard %d's slice, the client's: pick another port", own)
	}
	req := fragUDP(t, clientMAC, inMAC, client, 5000, server, 53, 99, pattern(8192, 10))
	for k, f := range req {
		if o := n.Owner(f, 2); o != own {
			t.Fatalf("outbound fragment %d owned by %d, the inside host by %d", k, o, own)
		}
	}
	var out [][]byte
	for _, k := range []int{5, 3, 1, 0, 2, 4} {
		for _, o := range m.send(0, Inside, req[k]) {
			if o.If != Outside || o.shard != own {
				t.Fatalf("fragment %d sent on interface %d by shard %d", k, o.If, o.shard)
			}
			out = append(out, o.Data)
		}
		if len(m.drops) != 0 {
			t.Fatalf("drops %v", m.drops)
		}
	}
	r := reassemble(t, out)
	if r.sport != 5000 || n.portOwner(header.ProtoUDP, 5000, 2) != own {
		t.Fatalf("external port %d (want 5000 kept), owned by %d (want %d)", r.sport, n.portOwner(header.ProtoUDP, r.sport, 2), own)
	}
	// An answer whose fragments the other shard owns.
	var rep [][]byte
	for id := uint16(1); ; id++ {
		rep = fragUDP(t, serverMAC, outMAC, server, 53, outside, 5000, id, pattern(8192, 11))
		if n.Owner(rep[0], 2) != own {
			break
		}
	}
	f := 1 - own
	for k, fr := range rep {
		if o := n.Owner(fr, 2); o != f {
			t.Fatalf("inbound fragment %d owned by %d, fragment 0 by %d", k, o, f)
		}
	}
	var back [][]byte
	handed := 0
	for _, k := range []int{4, 2, 0, 5, 1, 3} {
		for _, o := range m.send(f, Outside, rep[k]) {
			if o.If != Inside || o.shard != own {
				t.Fatalf("answer fragment %d sent on interface %d by shard %d", k, o.If, o.shard)
			}
			back = append(back, o.Data)
		}
		if len(m.drops) != 0 {
			t.Fatalf("drops %v", m.drops)
		}
		handed += m.handed
	}
	if handed != 6 {
		t.Fatalf("shard %d handed %d fragments, want 6", f, handed)
	}
	r = reassemble(t, back)
	if r.dst != client || r.dport != 5000 || !bytes.Equal(r.payload, pattern(8192, 11)) {
		t.Fatalf("answer reached %v:%d", r.dst, r.dport)
	}
}

// TestFragmentsHairpin: an inside host's fragmented datagram to another inside host's
// external address and port, fragments shuffled, reaches it translated both ways.
func TestFragmentsHairpin(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client2, client2MAC, 7000, server, 53, 64)}) // client2 has 198.19.0.1:7000
	frags := fragUDP(t, clientMAC, inMAC, client, 5000, outside, 7000, 55, pattern(8192, 12))
	out := sendFrags(t, fx, frags, []int{3, 5, 0, 1, 4, 2}, Inside, Inside, false)
	r := reassemble(t, out)
	if r.src != outside || r.sport != 5000 || r.dst != client2 || r.dport != 7000 || !bytes.Equal(r.payload, pattern(8192, 12)) {
		t.Fatalf("hairpinned datagram %v:%d → %v:%d", r.src, r.sport, r.dst, r.dport)
	}
	for _, f := range out {
		if !bytes.Equal(f[0:6], client2MAC[:]) || header.IPv4(f[14:]).TTL() != 63 {
			t.Fatalf("hairpinned fragment: MAC % x TTL %d", f[0:6], header.IPv4(f[14:]).TTL())
		}
	}
}

// TestFragmentMalformed: fragments no datagram can have, and TCP fragments that would
// overlap the TCP header (RFC 1858), are dropped and counted.
func TestFragmentMalformed(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	base := fragUDP(t, clientMAC, inMAC, client, 5000, server, 53, 9, pattern(3000, 13))
	odd := slices.Clone(base[0][:header.EthernetLen+20+13]) // MF with 13 payload bytes
	header.IPv4(odd[14:]).SetTotalLength(33)
	header.IPv4(odd[14:]).FixChecksum()
	tcp := slices.Clone(base[1])
	ip := header.IPv4(tcp[14:])
	ip.SetProtocol(header.ProtoTCP)
	ip.SetFragment(false, true, 8)
	ip.FixChecksum()
	fx.h.Step(stagetest.In{If: Inside, Data: odd}, stagetest.In{If: Inside, Data: tcp})
	if d := fx.h.DropCounts(); d["nat-bad-fragment"] != 2 || fx.n.Stats().Fragments.Bad != 2 {
		t.Fatalf("drops %v, stats %+v", d, fx.n.Stats().Fragments)
	}
}

// TestFragmentAllocs: translating a fragmented datagram in order allocates nothing.
func TestFragmentAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; the test script runs this without -race")
	}
	fx := newFixture(t, Config{}, 0, 1)
	frags := fragUDP(t, clientMAC, inMAC, client, 5000, server, 53, 99, pattern(8192, 14))
	in := make([]stagetest.In, len(frags))
	for k, f := range frags {
		in[k] = stagetest.In{If: Inside, Data: f}
	}
	fx.h.Step(in...)
	a := testing.AllocsPerRun(200, func() {
		b := fx.h.Pass(in...)
		for k := range b.Pkts {
			if b.Pkts[k].Verdict != pipelines.Transmit {
				t.Fatalf("fragment %d: %v %v", k, b.Pkts[k].Verdict, b.Pkts[k].Reason)
			}
		}
	})
	if a != 0 {
		t.Fatalf("translating a fragmented datagram allocates %v times", a)
	}
}
