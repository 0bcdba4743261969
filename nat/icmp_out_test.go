package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

// icmpErr is an ICMP error of type typ and code from src to dst quoting quote, as a frame from
// srcMAC to dstMAC; gopacket computes every checksum.
func icmpErr(t testing.TB, srcMAC, dstMAC [6]byte, src, dst netip.Addr, ttl, typ, code uint8, quote []byte) []byte {
	return frame(t, srcMAC, dstMAC, src, dst, ttl, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}, quote)
}

// oneOut runs frame f received on interface in and wants exactly one frame out of interface
// out, with nothing dropped.
func oneOut(t *testing.T, h *stagetest.Harness, in int, f []byte, out int) []byte {
	t.Helper()
	o := h.Step(stagetest.In{If: in, Data: f})
	if len(o) != 1 || o[0].If != out || len(h.Drops()) != 0 {
		t.Fatalf("sent %d frames %v, want one on interface %d; drops %v", len(o), o, out, h.Drops())
	}
	return o[0].Data
}

// sameFrame compares a frame the NAT sent with the one gopacket builds for it.
func sameFrame(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got % x\nwant % x", what, got, want)
	}
}

// checkQuote decodes the IPv4 packet an ICMP error quotes, wrapped in an Ethernet header, with
// check (every checksum verified by our code and recomputed by gopacket): for quotes of a
// whole packet.
func checkQuote(t *testing.T, quote []byte) decoded {
	t.Helper()
	f := append(make([]byte, header.EthernetLen), quote...)
	binary.BigEndian.PutUint16(f[12:14], header.EtherTypeIPv4)
	return check(t, f)
}

// TestICMPErrorOutUDP: an inside client's port unreachable about a reply it got (its socket
// closed meanwhile) leaves from the outside address to the server, quoting the reply as it
// came from the server: to the outside address and the external port, TTL one lower, every
// checksum valid. Whole quotes and 8-byte ones, and a quoted UDP checksum of 0, which stays 0.
func TestICMPErrorOutUDP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cut     int // quote this many bytes of the reply (0: all of it)
		noCksum bool
	}{{"whole", 0, false}, {"8 bytes", 28, false}, {"no UDP checksum", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, Config{}, 0, 1)
			// client:40000 keeps port 40000; the server answers from 53.
			oneOut(t, fx.h, Inside, udpOut(t, client, clientMAC, 40000, server, 53, 64), Outside)
			reply := udpIn(t, server, 53, outside, 40000)
			asSent := frame(t, serverMAC, outMAC, server, outside, 63, &layers.UDP{SrcPort: 53, DstPort: 40000}, []byte("reply"))
			if tc.noCksum {
				for _, f := range [][]byte{reply, asSent} {
					binary.BigEndian.PutUint16(f[14+20+6:], 0)
				}
			}
			got := oneOut(t, fx.h, Outside, reply, Inside)
			quote := got[header.EthernetLen:]
			want := asSent[header.EthernetLen:] // the reply as it came, TTL lowered by the NAT
			if tc.cut > 0 {
				quote, want = quote[:tc.cut], want[:tc.cut]
			}
			out := oneOut(t, fx.h, Inside, icmpErr(t, clientMAC, inMAC, client, server, 64, 3, 3, quote), Outside)
			sameFrame(t, "the port unreachable sent out", out, icmpErr(t, outMAC, serverMAC, outside, server, 63, 3, 3, want))
			d := check(t, out)
			if d.icmp.TypeCode != layers.CreateICMPv4TypeCode(3, 3) || !d.ip.SrcIP.Equal(outside.AsSlice()) || !d.ip.DstIP.Equal(server.AsSlice()) {
				t.Fatalf("outer %v → %v %v", d.ip.SrcIP, d.ip.DstIP, d.icmp.TypeCode)
			}
			switch {
			case tc.noCksum: // check wants a UDP checksum; gopacket decodes the quote alone
				q := gopacket.NewPacket(d.icmp.Payload, layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
				if q.Checksum != 0 || q.DstPort != 40000 {
					t.Fatalf("quoted UDP header %+v, want checksum 0 kept", q)
				}
			case tc.cut == 0:
				q := checkQuote(t, d.icmp.Payload)
				if !q.ip.SrcIP.Equal(server.AsSlice()) || !q.ip.DstIP.Equal(outside.AsSlice()) || q.udp.SrcPort != 53 || q.udp.DstPort != 40000 {
					t.Fatalf("quote %v:%d → %v:%d", q.ip.SrcIP, q.udp.SrcPort, q.ip.DstIP, q.udp.DstPort)
				}
			}
			if st := fx.n.Stats(); st.ICMPErrorsOut != 1 || st.ICMPErrorsTranslated != 1 || st.Translated != 2 || st.Active != 1 {
				t.Fatalf("stats %+v: want 1 ICMP error out, 2 packets translated, 1 mapping", st)
			}
		})
	}
}

// TestICMPErrorOutTCP: an ICMP error from the inside host about a TCP segment it got (here
// administratively prohibited, 3/13), quoting 8 bytes of the TCP header (no checksum) or the
// whole segment (the quoted TCP checksum is updated too).
func TestICMPErrorOutTCP(t *testing.T) {
	for _, cut := range []int{28, 0} {
		fx := newFixture(t, Config{}, 0, 1)
		syn := &layers.TCP{SrcPort: 7000, DstPort: 80, Seq: 1, SYN: true, Window: 1000}
		oneOut(t, fx.h, Inside, frame(t, clientMAC, inMAC, client, server, 64, syn, nil), Outside)
		synAck := func(ttl uint8) []byte {
			return frame(t, serverMAC, outMAC, server, outside, ttl, &layers.TCP{SrcPort: 80, DstPort: 7000, Seq: 100, Ack: 2, SYN: true, ACK: true, Window: 1000,
				Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 180}}}}, []byte("data"))
		}
		got := oneOut(t, fx.h, Outside, synAck(64), Inside)
		quote, want := got[header.EthernetLen:], synAck(63)[header.EthernetLen:]
		if cut > 0 {
			quote, want = quote[:cut], want[:cut]
		}
		out := oneOut(t, fx.h, Inside, icmpErr(t, clientMAC, inMAC, client, server, 64, 3, 13, quote), Outside)
		sameFrame(t, "the error sent out", out, icmpErr(t, outMAC, serverMAC, outside, server, 63, 3, 13, want))
		d := check(t, out)
		if cut == 0 {
			q := checkQuote(t, d.icmp.Payload)
			if !q.ip.DstIP.Equal(outside.AsSlice()) || q.tcp.DstPort != 7000 || q.tcp.SrcPort != 80 || !q.tcp.SYN || !q.tcp.ACK {
				t.Fatalf("quote %v:%d → %v:%d", q.ip.SrcIP, q.tcp.SrcPort, q.ip.DstIP, q.tcp.DstPort)
			}
		}
		if st := fx.n.Stats(); st.ICMPErrorsOut != 1 {
			t.Fatalf("stats %+v", st)
		}
	}
}

// TestICMPErrorOutEcho: a time exceeded from the inside about an echo reply to the client
// quotes the reply with the client's identifier; it leaves with the external identifier, and
// the quoted ICMP checksum updated.
func TestICMPErrorOutEcho(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	out := oneOut(t, fx.h, Inside, frame(t, clientMAC, inMAC, client, server, 64,
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 777, Seq: 1}, []byte("ping")), Outside)
	ext := check(t, out).icmp.Id
	if ext == 777 {
		t.Fatal("identifier 777, below the port range, was kept")
	}
	rep := func(ttl uint8) []byte {
		return frame(t, serverMAC, outMAC, server, outside, ttl, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0), Id: ext, Seq: 1}, []byte("ping"))
	}
	got := oneOut(t, fx.h, Outside, rep(64), Inside)
	if check(t, got).icmp.Id != 777 {
		t.Fatal("echo reply not translated back")
	}
	out = oneOut(t, fx.h, Inside, icmpErr(t, clientMAC, inMAC, client, server, 64, 11, 0, got[header.EthernetLen:]), Outside)
	sameFrame(t, "the time exceeded sent out", out, icmpErr(t, outMAC, serverMAC, outside, server, 63, 11, 0, rep(63)[header.EthernetLen:]))
	q := checkQuote(t, check(t, out).icmp.Payload)
	if q.icmp.Id != ext || q.icmp.TypeCode.Type() != 0 {
		t.Fatalf("quoted echo reply %+v", q.icmp)
	}
	if st := fx.n.Stats(); st.ICMPErrorsOut != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestICMPErrorOutDrops: errors from the inside that cannot be translated are dropped and
// counted by reason, and none as nat-unsupported; the mapping is neither refreshed nor
// removed by the errors (RFC 5508 REQ-6).
func TestICMPErrorOutDrops(t *testing.T) {
	for _, f := range []Filtering{APDF, EIF} {
		fx := newFixture(t, Config{Filtering: f, MaxMappings: 4, Timeouts: Timeouts{UDP: time.Second}}, 0, 1)
		t0 := fx.h.Now()
		oneOut(t, fx.h, Inside, udpOut(t, client, clientMAC, 40000, server, 53, 64), Outside)
		reply := oneOut(t, fx.h, Outside, udpIn(t, server, 53, outside, 40000), Inside)[header.EthernetLen:]
		quoteOf := func(change func(q []byte)) []byte {
			q := append([]byte(nil), reply...)
			change(q)
			header.IPv4(q).FixChecksum()
			return q
		}
		unreach := func(q []byte) []byte { return icmpErr(t, clientMAC, inMAC, client, server, 64, 3, 3, q) }
		badSum := unreach(reply)
		badSum[len(badSum)-1] ^= 0xff
		// An ICMP message cut to 6 bytes, in an IPv4 packet that says so.
		short := unreach(reply)[:header.EthernetLen+header.IPv4MinLen+6]
		binary.BigEndian.PutUint16(short[header.EthernetLen+2:], header.IPv4MinLen+6)
		header.IPv4(short[header.EthernetLen:]).FixChecksum()
		stranger := quoteOf(func(q []byte) { copy(q[12:16], server2.AsSlice()) })
		cases := []struct {
			name string
			f    []byte
			want pipelines.DropReason
		}{
			{"no mapping", unreach(quoteOf(func(q []byte) { binary.BigEndian.PutUint16(q[22:], 40001) })), ReasonNoMapping},
			{"quote cut inside the UDP header", unreach(reply[:27]), ReasonBadICMPQuot},
			{"quote of 10 bytes", unreach(reply[:10]), ReasonBadICMPQuot},
			{"ICMP message of 6 bytes", short, ReasonTruncated},
			{"bad ICMP checksum", badSum, ReasonBadICMPSum},
			{"quote from another host than the error's destination", icmpErr(t, clientMAC, inMAC, client, server2, 64, 3, 3, reply), ReasonBadICMPQuot},
			{"quote of a later fragment", unreach(quoteOf(func(q []byte) { binary.BigEndian.PutUint16(q[6:8], 1) })), ReasonBadICMPQuot},
			{"quote to a host off the inside network", unreach(quoteOf(func(q []byte) { copy(q[16:20], server2.AsSlice()) })), ReasonBadICMPQuot},
			{"TTL 1", icmpErr(t, clientMAC, inMAC, client, server, 1, 3, 3, reply), ReasonTTL},
			{"echo reply from the inside", frame(t, clientMAC, inMAC, client, server, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0), Id: 1}, nil), ReasonProto},
		}
		if f == APDF {
			cases = append(cases, struct {
				name string
				f    []byte
				want pipelines.DropReason
			}{"quote from a remote the mapping never sent to", icmpErr(t, clientMAC, inMAC, client, server2, 64, 3, 3, stranger), ReasonFiltered})
		}
		for _, c := range cases {
			fx.h.Advance(20 * time.Millisecond)
			if out := fx.h.Step(stagetest.In{If: Inside, Data: c.f}); len(out) != 0 || len(fx.h.Drops()) != 1 || fx.h.Drops()[0] != c.want {
				t.Fatalf("%v, %s: sent %d, drops %v, want %v", f, c.name, len(out), fx.h.Drops(), c.want)
			}
		}
		if f == EIF { // the stranger's packet could have come in: its error goes out
			out := oneOut(t, fx.h, Inside, icmpErr(t, clientMAC, inMAC, client, server2, 64, 3, 3, stranger), Outside)
			if d := check(t, out); !d.ip.DstIP.Equal(server2.AsSlice()) {
				t.Fatalf("EIF: error to %v", d.ip.DstIP)
			}
		}
		// The mapping's last packet was at 0; the errors did not refresh it: it expires a
		// second after that, not after the last error.
		st := fx.n.Stats()
		for fx.h.Now()-t0 < int64(1100*time.Millisecond) {
			fx.h.Advance(20 * time.Millisecond)
			fx.h.Step()
		}
		if st2 := fx.n.Stats(); st.Active != 1 || st2.Active != 0 || st2.Expired != 1 {
			t.Fatalf("%v: mappings before %d, after %d (expired %d): errors must not refresh the mapping", f, st.Active, st2.Active, st2.Expired)
		}
		wantOut := uint64(0)
		if f == EIF {
			wantOut = 1
		}
		if st := fx.n.Stats(); st.ICMPErrorsOut != wantOut {
			t.Fatalf("%v: %d errors out, want %d", f, st.ICMPErrorsOut, wantOut)
		}
	}
}

// TestICMPErrorOutHairpin: the client reaches client2's mapping through the outside address;
// client2's port unreachable about it goes to the outside address, and is translated out and
// back in (RFC 5508 REQ-7): the client gets it from the outside address, quoting its datagram
// as it sent it to client2's external port. With two shards, the two hosts at different
// shards, the error is translated out at client2's shard and in at the client's.
func TestICMPErrorOutHairpin(t *testing.T) {
	t.Run("one shard", func(t *testing.T) {
		fx := newFixture(t, Config{}, 0, 1)
		oneOut(t, fx.h, Inside, udpOut(t, client2, client2MAC, 7000, server, 53, 64), Outside)
		got := oneOut(t, fx.h, Inside, udpOut(t, client, clientMAC, 5000, outside, 7000, 64), Inside)
		// client2 got it from outside:5000.
		out := oneOut(t, fx.h, Inside, icmpErr(t, client2MAC, inMAC, client2, outside, 64, 3, 3, got[header.EthernetLen:]), Inside)
		want := udpOut(t, client, clientMAC, 5000, outside, 7000, 63)[header.EthernetLen:]
		sameFrame(t, "the hairpinned error", out, icmpErr(t, inMAC, clientMAC, outside, client, 63, 3, 3, want))
		if st := fx.n.Stats(); st.ICMPErrorsOut != 1 || st.ICMPErrorsTranslated != 2 {
			t.Fatalf("stats %+v: want the error counted out and in", st)
		}
	})
	t.Run("two shards", func(t *testing.T) {
		m := newMulti(t, Config{}, 2)
		by := hostsOf(m.n, 2)
		a, b := by[0][0], by[1][0]
		m.one(0, Inside, udpOut(t, b, clientMAC, 5000, server, 53, 64), Outside) // b keeps 5000, in shard 0's slice
		got := m.send(0, Inside, udpOut(t, a, clientMAC, 6000, outside, 5000, 64))
		if len(got) != 1 {
			t.Fatalf("hairpin: sent %d, drops %v", len(got), m.drops)
		}
		d, at := m.one(0, Inside, icmpErr(t, clientMAC, inMAC, b, outside, 64, 3, 3, got[0].Data[header.EthernetLen:]), Inside)
		if len(m.at) != 2 || m.at[0] != 1 || at != 0 || m.handed != 1 {
			t.Fatalf("the hairpinned error went %v (handed %d), want shard 1 then shard 0", m.at, m.handed)
		}
		q := checkQuote(t, d.icmp.Payload)
		if !d.ip.SrcIP.Equal(outside.AsSlice()) || !d.ip.DstIP.Equal(a.AsSlice()) || !q.ip.SrcIP.Equal(a.AsSlice()) || q.udp.SrcPort != 6000 ||
			!q.ip.DstIP.Equal(outside.AsSlice()) || q.udp.DstPort != 5000 || d.ip.TTL != 63 {
			t.Fatalf("error %v → %v TTL %d quoting %v:%d → %v:%d", d.ip.SrcIP, d.ip.DstIP, d.ip.TTL, q.ip.SrcIP, q.udp.SrcPort, q.ip.DstIP, q.udp.DstPort)
		}
	})
}

// TestICMPErrorOutShards: the error's sender owns it, the quoted inside host its mapping. A
// host's own error is translated at its shard; a router on the inside (another inside address,
// owned by the other shard) that sends a time exceeded about a datagram to the host hands it
// to the host's shard, which translates it.
func TestICMPErrorOutShards(t *testing.T) {
	m := newMulti(t, Config{}, 2)
	by := hostsOf(m.n, 2)
	for s := 0; s < 2; s++ {
		h, router := by[s][0], by[1-s][0]
		port := uint16(41000 + s)
		m.one(1-s, Inside, udpOut(t, h, clientMAC, port, server, 53, 64), Outside)
		got := m.send(1-s, Outside, udpIn(t, server, 53, outside, port))
		if len(got) != 1 || got[0].shard != s {
			t.Fatalf("reply: %v, drops %v", got, m.drops)
		}
		want := frame(t, serverMAC, outMAC, server, outside, 63, &layers.UDP{SrcPort: 53, DstPort: layers.UDPPort(port)}, []byte("reply"))[header.EthernetLen:]
		for _, from := range []netip.Addr{h, router} {
			o := m.send(1-s, Inside, icmpErr(t, clientMAC, inMAC, from, server, 64, 11, 0, got[0].Data[header.EthernetLen:]))
			if len(o) != 1 || o[0].If != Outside || o[0].shard != s {
				t.Fatalf("error from %v: sent %v, drops %v, shards %v", from, o, m.drops, m.at)
			}
			if from == router && (len(m.at) != 2 || m.at[0] != 1-s || m.at[1] != s || m.handed != 1) {
				t.Fatalf("the router's error went %v (handed %d), want shard %d then %d", m.at, m.handed, 1-s, s)
			}
			if from == h && (len(m.at) != 1 || m.at[0] != s) {
				t.Fatalf("the host's error went %v, want shard %d", m.at, s)
			}
			sameFrame(t, "the error sent out", o[0].Data, icmpErr(t, outMAC, serverMAC, outside, server, 63, 11, 0, want))
		}
	}
	if st := m.n.Stats(); st.ICMPErrorsOut != 4 || st.ICMPErrorsTranslated != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestICMPErrorOutAllocs: translating an error from the inside, and handing one to the quoted
// host's shard, allocate nothing.
func TestICMPErrorOutAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; the test script runs this without -race")
	}
	fx := newFixture(t, Config{}, 0, 1)
	oneOut(t, fx.h, Inside, udpOut(t, client, clientMAC, 40000, server, 53, 64), Outside)
	reply := oneOut(t, fx.h, Outside, udpIn(t, server, 53, outside, 40000), Inside)[header.EthernetLen:]
	errF := icmpErr(t, clientMAC, inMAC, client, server, 64, 3, 3, reply)
	a := testing.AllocsPerRun(1000, func() {
		b := fx.h.Pass(stagetest.In{If: Inside, Data: errF})
		if b.Pkts[0].Verdict != pipelines.Transmit {
			t.Fatalf("not translated: %v", b.Pkts[0].Reason)
		}
	})
	if a != 0 {
		t.Fatalf("translating an ICMP error from the inside allocates %v times", a)
	}

	// Two shards: an error about a host of the other shard is handed there.
	n := newNAT(t, Config{})
	h := startShard(t, n, 0, 2)
	other := hostsOf(n, 2)[1][0]
	q := append([]byte(nil), reply...)
	copy(q[16:20], other.AsSlice())
	header.IPv4(q).FixChecksum()
	handF := icmpErr(t, clientMAC, inMAC, hostsOf(n, 2)[0][0], server, 64, 3, 3, q)
	a = testing.AllocsPerRun(1000, func() {
		b := h.Pass(stagetest.In{If: Inside, Data: handF})
		if b.Pkts[0].Verdict != pipelines.Handoff || b.Pkts[0].ToShard != 1 {
			t.Fatalf("not handed to shard 1: %v %v", b.Pkts[0].Verdict, b.Pkts[0].Reason)
		}
	})
	if a != 0 {
		t.Fatalf("handing an ICMP error to the quoted host's shard allocates %v times", a)
	}
}

// TestICMPErrorInQuotes: errors from outside (the other direction, through the same quote
// rewriting): one quoting the whole translated TCP segment reaches the client with the
// segment as the client sent it, the quoted TCP checksum updated too (TTL one lower); one
// whose ICMP checksum fails is dropped and counted (RFC 5508 REQ-3).
func TestICMPErrorInQuotes(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	syn := func(src netip.Addr, ttl uint8) []byte {
		return frame(t, clientMAC, inMAC, src, server, ttl, &layers.TCP{SrcPort: 7000, DstPort: 80, Seq: 1, SYN: true, Window: 1000,
			Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 180}}}}, []byte("early data"))
	}
	sent := oneOut(t, fx.h, Inside, syn(client, 64), Outside)
	quote := sent[header.EthernetLen:]
	bad := icmpErr(t, serverMAC, outMAC, server, outside, 64, 3, 1, quote)
	bad[len(bad)-1] ^= 1
	if out := fx.h.Step(stagetest.In{If: Outside, Data: bad}); len(out) != 0 || len(fx.h.Drops()) != 1 || fx.h.Drops()[0] != ReasonBadICMPSum {
		t.Fatalf("an error with a bad ICMP checksum: sent %d, drops %v", len(out), fx.h.Drops())
	}
	out := oneOut(t, fx.h, Outside, icmpErr(t, serverMAC, outMAC, server, outside, 64, 3, 1, quote), Inside)
	sameFrame(t, "the error delivered", out, icmpErr(t, inMAC, clientMAC, server, client, 63, 3, 1, syn(client, 63)[header.EthernetLen:]))
	q := checkQuote(t, check(t, out).icmp.Payload)
	if !q.ip.SrcIP.Equal(client.AsSlice()) || q.tcp.SrcPort != 7000 || !q.tcp.SYN {
		t.Fatalf("quote %v:%d", q.ip.SrcIP, q.tcp.SrcPort)
	}
	if st := fx.n.Stats(); st.ICMPErrorsTranslated != 1 || st.ICMPErrorsOut != 0 {
		t.Fatalf("stats %+v", st)
	}
}
