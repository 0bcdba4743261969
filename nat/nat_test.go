package nat

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack"
	"github.com/netchan/netchan/stack/header"
)

var (
	inMAC      = [6]byte{2, 0, 0, 0, 1, 1} // NAT inside interface
	outMAC     = [6]byte{2, 0, 0, 0, 2, 1} // NAT outside interface
	clientMAC  = [6]byte{2, 0, 0, 0, 1, 2}
	client2MAC = [6]byte{2, 0, 0, 0, 1, 3}
	serverMAC  = [6]byte{2, 0, 0, 0, 2, 2}
	insideAddr = netip.MustParseAddr("198.18.1.1")
	outside    = netip.MustParseAddr("198.19.0.1")
	client     = netip.MustParseAddr("198.18.1.2")
	client2    = netip.MustParseAddr("198.18.1.3")
	server     = netip.MustParseAddr("198.19.0.2")
	server2    = netip.MustParseAddr("198.19.0.3")
)

type fixture struct {
	n *NAT
	h *stagetest.Harness
}

func newFixture(t testing.TB, cfg Config, shard, shards int) *fixture {
	t.Helper()
	n := newNAT(t, cfg)
	return &fixture{n: n, h: startShard(t, n, shard, shards)}
}

// newNAT makes the test NAT: inside 198.18.1.0/24, outside 198.19.0.1, the clients and
// servers in its neighbour tables.
func newNAT(t testing.TB, cfg Config) *NAT {
	t.Helper()
	arp := []stack.StaticNeighbor{{Iface: 0, IP: client, MAC: clientMAC}, {Iface: 0, IP: client2, MAC: client2MAC},
		{Iface: 1, IP: server, MAC: serverMAC}, {Iface: 1, IP: server2, MAC: serverMAC}}
	for i := 4; i < 40; i++ { // more clients, for the tests with several shards
		arp = append(arp, stack.StaticNeighbor{Iface: 0, IP: netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), MAC: clientMAC})
	}
	host, err := stack.NewHost(stack.Config{
		Ifaces:    []stack.Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.1.1/24")}}, {Addrs: []netip.Prefix{netip.MustParsePrefix("198.19.0.1/24")}}},
		StaticARP: arp,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.InsidePrefix = netip.MustParsePrefix("198.18.1.0/24")
	cfg.InsideAddr, cfg.Outside = insideAddr, outside
	n, err := New(cfg, host)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startShard runs shard of shards over n in a harness. Its interfaces are inside, outside
// and a third that stands for hairpinIf: a hairpinned packet one shard hands to another
// carries that InIf, which the shards' runtime passes on as it is and the harness accepts
// only as an interface's index.
func startShard(t testing.TB, n *NAT, shard, shards int) *stagetest.Harness {
	t.Helper()
	h := stagetest.NewPipeline(t, n.Pipeline(shard), pipelines.ShardInfo{Shard: shard, Shards: shards,
		Ifaces: []pipelines.Interface{{Name: "in", MAC: inMAC, MTU: 1500}, {Name: "out", MAC: outMAC, MTU: 1500}, {Name: "hairpin"}}})
	if out := h.Step(); shard == 0 && len(out) != 2 { // shard 0 announces both addresses (gratuitous ARP)
		t.Fatalf("want 2 gratuitous ARPs at start, got %d", len(out))
	}
	return h
}

func mac(m [6]byte) net.HardwareAddr { return net.HardwareAddr(m[:]) }

func frame(t testing.TB, srcMAC, dstMAC [6]byte, src, dst netip.Addr, ttl uint8, l4 gopacket.SerializableLayer, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Id: 99}
	switch l := l4.(type) {
	case *layers.UDP:
		ip.Protocol = layers.IPProtocolUDP
		l.SetNetworkLayerForChecksum(ip)
	case *layers.TCP:
		ip.Protocol = layers.IPProtocolTCP
		l.SetNetworkLayerForChecksum(ip)
	case *layers.ICMPv4:
		ip.Protocol = layers.IPProtocolICMPv4
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: mac(srcMAC), DstMAC: mac(dstMAC), EthernetType: layers.EthernetTypeIPv4}, ip, l4, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func udpOut(t testing.TB, from netip.Addr, fromMAC [6]byte, sport uint16, to netip.Addr, dport uint16, ttl uint8) []byte {
	return frame(t, fromMAC, inMAC, from, to, ttl, &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, []byte("payload"))
}

func udpIn(t testing.TB, from netip.Addr, sport uint16, to netip.Addr, dport uint16) []byte {
	return frame(t, serverMAC, outMAC, from, to, 64, &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, []byte("reply"))
}

// check decodes a frame with gopacket and verifies every checksum independently.
type decoded struct {
	eth  *layers.Ethernet
	ip   *layers.IPv4
	udp  *layers.UDP
	tcp  *layers.TCP
	icmp *layers.ICMPv4
}

func check(t testing.TB, f []byte) decoded {
	t.Helper()
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	var d decoded
	d.eth, _ = p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	d.ip, _ = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	d.udp, _ = p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	d.tcp, _ = p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	d.icmp, _ = p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if d.ip == nil {
		t.Fatalf("not IPv4: %v", p)
	}
	ip, e := header.ParseIPv4(f[14:])
	if e != header.IPv4OK {
		t.Fatalf("IPv4 header: %v", e)
	}
	src, dst := ip.Src(), ip.Dst()
	switch {
	case d.udp != nil:
		if !header.UDP(ip.Payload()).ChecksumValid(src, dst) || d.udp.Checksum == 0 {
			t.Fatalf("UDP checksum does not verify")
		}
	case d.tcp != nil:
		if !header.TCP(ip.Payload()).ChecksumValid(src, dst) {
			t.Fatalf("TCP checksum does not verify")
		}
	case d.icmp != nil:
		if !header.ICMPv4(ip.Payload()).ChecksumValid() {
			t.Fatalf("ICMP checksum does not verify")
		}
	}
	// Independent of our checksum code: recompute with gopacket and compare.
	re := gopacket.NewSerializeBuffer()
	ipc := *d.ip
	var l4 gopacket.SerializableLayer
	switch {
	case d.udp != nil:
		u := *d.udp
		u.SetNetworkLayerForChecksum(&ipc)
		l4 = &u
	case d.tcp != nil:
		tc := *d.tcp
		tc.SetNetworkLayerForChecksum(&ipc)
		l4 = &tc
	case d.icmp != nil:
		ic := *d.icmp
		l4 = &ic
	}
	if err := gopacket.SerializeLayers(re, gopacket.SerializeOptions{ComputeChecksums: true}, &ipc, l4, gopacket.Payload(d.ip.LayerPayload()[len(l4.(gopacket.Layer).LayerContents()):])); err != nil {
		t.Fatal(err)
	}
	if n := int(d.ip.Length); !bytes.Equal(re.Bytes(), f[14:14+n]) {
		t.Fatalf("gopacket computes other checksums:\n got % x\nwant % x", f[14:], re.Bytes())
	}
	return d
}

func TestUDPOutAndBack(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, 53, 64)})
	if len(out) != 1 || out[0].If != Outside {
		t.Fatalf("sent %v, drops %v", out, fx.h.Drops())
	}
	d := check(t, out[0].Data)
	if !d.ip.SrcIP.Equal(outside.AsSlice()) || !d.ip.DstIP.Equal(server.AsSlice()) || d.udp.SrcPort != 5000 || d.udp.DstPort != 53 ||
		d.ip.TTL != 63 || !bytes.Equal(d.eth.DstMAC, serverMAC[:]) || !bytes.Equal(d.eth.SrcMAC, outMAC[:]) || string(d.udp.Payload) != "payload" {
		t.Fatalf("outbound: %+v %+v %+v", d.eth, d.ip, d.udp)
	}
	out = fx.h.Step(stagetest.In{If: Outside, Data: udpIn(t, server, 53, outside, 5000)})
	if len(out) != 1 || out[0].If != Inside {
		t.Fatalf("reply: sent %v, drops %v", out, fx.h.Drops())
	}
	d = check(t, out[0].Data)
	if !d.ip.SrcIP.Equal(server.AsSlice()) || !d.ip.DstIP.Equal(client.AsSlice()) || d.udp.DstPort != 5000 || d.udp.SrcPort != 53 ||
		d.ip.TTL != 63 || !bytes.Equal(d.eth.DstMAC, clientMAC[:]) || !bytes.Equal(d.eth.SrcMAC, inMAC[:]) {
		t.Fatalf("inbound: %+v %+v", d.ip, d.udp)
	}
	if st := fx.n.Stats(); st.Active != 1 || st.Created != 1 || st.Translated != 2 {
		t.Fatalf("stats %+v", st)
	}
	ms := fx.n.Mappings()
	if len(ms) != 1 || ms[0].Inside != "198.18.1.2:5000" || ms[0].External != "198.19.0.1:5000" || ms[0].Proto != "udp" {
		t.Fatalf("mappings %+v", ms)
	}
}

func TestFiltering(t *testing.T) {
	for _, f := range []Filtering{APDF, EIF} {
		fx := newFixture(t, Config{Filtering: f}, 0, 1)
		if out := fx.h.Step(stagetest.In{If: Outside, Data: udpIn(t, server, 53, outside, 5000)}); len(out) != 0 || fx.h.Drops()[0] != ReasonNoMapping {
			t.Fatalf("unsolicited: sent %d, drops %v", len(out), fx.h.Drops())
		}
		fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, 53, 64)})
		out := fx.h.Step(stagetest.In{If: Outside, Data: udpIn(t, server2, 999, outside, 5000)})
		if f == APDF && (len(out) != 0 || fx.h.Drops()[0] != ReasonFiltered) {
			t.Fatalf("APDF let a stranger in: sent %d drops %v", len(out), fx.h.Drops())
		}
		if f == EIF && len(out) != 1 {
			t.Fatalf("EIF dropped a packet to a mapped port: %v", fx.h.Drops())
		}
	}
}

func TestEndpointIndependentMappingAndConflicts(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	ext := func(f []byte) uint16 {
		out := fx.h.Step(stagetest.In{If: Inside, Data: f})
		if len(out) != 1 {
			t.Fatalf("sent %d, drops %v", len(out), fx.h.Drops())
		}
		return uint16(check(t, out[0].Data).udp.SrcPort)
	}
	a := ext(udpOut(t, client, clientMAC, 6000, server, 53, 64))
	b := ext(udpOut(t, client, clientMAC, 6000, server2, 80, 64))
	c := ext(udpOut(t, client2, client2MAC, 6000, server, 53, 64))
	if a != 6000 || b != a {
		t.Fatalf("one inside endpoint got external ports %d and %d (want 6000 both: preserved, endpoint-independent)", a, b)
	}
	if c == a {
		t.Fatalf("two inside hosts share external port %d", c)
	}
}

func TestTCPStatesAndChecksums(t *testing.T) {
	fx := newFixture(t, Config{Timeouts: Timeouts{TCPTransitory: time.Second, TCPEstablished: time.Hour}}, 0, 1)
	seg := func(in bool, flags func(*layers.TCP)) []byte {
		tc := &layers.TCP{Seq: 100, Ack: 200, Window: 1000}
		flags(tc)
		if in {
			tc.SrcPort, tc.DstPort = 80, 7000
			return frame(t, serverMAC, outMAC, server, outside, 64, tc, nil)
		}
		tc.SrcPort, tc.DstPort = 7000, 80
		tc.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 180}}}
		return frame(t, clientMAC, inMAC, client, server, 64, tc, []byte("GET /"))
	}
	out := fx.h.Step(stagetest.In{If: Inside, Data: seg(false, func(t *layers.TCP) { t.SYN = true })})
	d := check(t, out[0].Data)
	if !d.tcp.SYN || d.tcp.SrcPort != 7000 || !d.ip.SrcIP.Equal(outside.AsSlice()) {
		t.Fatalf("SYN out: %+v", d.tcp)
	}
	out = fx.h.Step(stagetest.In{If: Outside, Data: seg(true, func(t *layers.TCP) { t.SYN, t.ACK = true, true })})
	check(t, out[0].Data)
	fx.h.Step(stagetest.In{If: Inside, Data: seg(false, func(t *layers.TCP) { t.ACK = true })})
	// Established: survives past the transitory timeout.
	fx.h.Advance(2 * time.Second)
	for k := 0; k < 70; k++ {
		fx.h.Advance(20 * time.Millisecond)
		fx.h.Step()
	}
	if fx.n.Stats().Active != 1 {
		t.Fatal("established TCP mapping expired on the transitory timeout")
	}
	// A reset makes it transitory; it then expires.
	fx.h.Step(stagetest.In{If: Outside, Data: seg(true, func(t *layers.TCP) { t.RST = true })})
	fx.h.Advance(2 * time.Second)
	for k := 0; k < 70; k++ {
		fx.h.Advance(20 * time.Millisecond)
		fx.h.Step()
	}
	if st := fx.n.Stats(); st.Active != 0 || st.Expired != 1 {
		t.Fatalf("after RST and the transitory timeout: %+v", st)
	}
}

func TestICMPEchoAndErrors(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	req := frame(t, clientMAC, inMAC, client, server, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 777, Seq: 1}, []byte("ping"))
	out := fx.h.Step(stagetest.In{If: Inside, Data: req})
	d := check(t, out[0].Data)
	extID := d.icmp.Id
	if !d.ip.SrcIP.Equal(outside.AsSlice()) {
		t.Fatalf("echo out: %+v", d.ip)
	}
	rep := frame(t, serverMAC, outMAC, server, outside, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0), Id: extID, Seq: 1}, []byte("ping"))
	out = fx.h.Step(stagetest.In{If: Outside, Data: rep})
	d = check(t, out[0].Data)
	if d.icmp.Id != 777 || !d.ip.DstIP.Equal(client.AsSlice()) {
		t.Fatalf("echo back: %+v %+v", d.icmp, d.ip)
	}
	// A UDP datagram, then the server's port unreachable quoting the translated datagram.
	out = fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5555, server, 9, 64)})
	sent := out[0].Data
	quote := append([]byte(nil), sent[14:14+28]...)
	unreach := frame(t, serverMAC, outMAC, server, outside, 64, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, quote)
	out = fx.h.Step(stagetest.In{If: Outside, Data: unreach})
	if len(out) != 1 {
		t.Fatalf("ICMP error not forwarded: drops %v", fx.h.Drops())
	}
	d = check(t, out[0].Data)
	q := d.icmp.Payload
	orig := udpOut(t, client, clientMAC, 5555, server, 9, 64)
	want := append([]byte(nil), orig[14:14+28]...)
	header.IPv4(want).SetTTL(63)
	header.IPv4(want).FixChecksum()
	if !d.ip.DstIP.Equal(client.AsSlice()) || !bytes.Equal(q[:28], want) {
		t.Fatalf("quoted packet not translated back:\n got % x\nwant % x", q[:28], want)
	}
	// The quoted UDP checksum must verify for the client's view of its datagram.
	qu := gopacket.NewPacket(q, layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
	if qu.SrcPort != 5555 || qu.Checksum != binaryChecksum(orig) {
		t.Fatalf("quoted UDP header %+v", qu)
	}
}

func binaryChecksum(f []byte) uint16 { return uint16(f[14+20+6])<<8 | uint16(f[14+20+7]) }

func TestTTLExceeded(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, 53, 1)})
	if len(fx.h.Drops()) != 1 || fx.h.Drops()[0] != ReasonTTL || len(out) != 1 || out[0].If != Inside {
		t.Fatalf("drops %v, sent %v", fx.h.Drops(), out)
	}
	d := check(t, out[0].Data)
	if d.icmp.TypeCode.Type() != 11 || !d.ip.DstIP.Equal(client.AsSlice()) || !d.ip.SrcIP.Equal(insideAddr.AsSlice()) {
		t.Fatalf("time exceeded: %+v %+v", d.icmp, d.ip)
	}
}

// TestTableFullKeepsExisting drives a shard past MaxMappings: new flows of every host are
// dropped and counted, while the existing mappings keep translating both ways; an expired
// mapping makes room again.
func TestTableFullKeepsExisting(t *testing.T) {
	fx := newFixture(t, Config{MaxMappings: 2, Timeouts: Timeouts{UDP: time.Second}}, 0, 1)
	for p := uint16(1); p <= 3; p++ {
		fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 4000+p, server, 53, 64)})
	}
	if fx.n.Stats().Active != 2 || len(fx.h.Drops()) != 1 || fx.h.Drops()[0] != ReasonTableFull {
		t.Fatalf("stats %+v drops %v", fx.n.Stats(), fx.h.Drops())
	}
	if out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client2, client2MAC, 6000, server, 53, 64)}); len(out) != 0 || fx.h.Drops()[0] != ReasonTableFull {
		t.Fatalf("another host's new flow on a full table: sent %d, drops %v", len(out), fx.h.Drops())
	}
	if st := fx.n.Stats(); st.TableFullDrops != 2 || st.HostLimitDrops != 0 {
		t.Fatalf("stats %+v: want 2 table-full drops", st)
	}
	for _, p := range []uint16{4001, 4002} {
		if out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, p, server, 53, 64)}); len(out) != 1 {
			t.Fatalf("the existing mapping of port %d stopped working when the table was full: %v", p, fx.h.Drops())
		}
		out := fx.h.Step(stagetest.In{If: Outside, Data: udpIn(t, server, 53, outside, p)})
		if len(out) != 1 || check(t, out[0].Data).udp.DstPort != layers.UDPPort(p) {
			t.Fatalf("the reply to the existing mapping of port %d: sent %d, drops %v", p, len(out), fx.h.Drops())
		}
	}
	// Port 4001 goes quiet and expires; client2's new flow takes its place.
	for range 8 {
		fx.h.Advance(200 * time.Millisecond)
		fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 4002, server, 53, 64)})
	}
	if out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client2, client2MAC, 6000, server, 53, 64)}); len(out) != 1 {
		t.Fatalf("a new flow after a mapping expired: drops %v", fx.h.Drops())
	}
	if st := fx.n.Stats(); st.Active != 2 || st.Expired != 1 || st.TableFullDrops != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestExpiryReturnsPort(t *testing.T) {
	fx := newFixture(t, Config{Timeouts: Timeouts{UDP: time.Second}}, 0, 1)
	fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, 53, 64)})
	fx.h.Advance(1500 * time.Millisecond)
	fx.h.Step()
	if st := fx.n.Stats(); st.Active != 0 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The port is free again: another host gets it preserved.
	out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client2, client2MAC, 5000, server, 53, 64)})
	if check(t, out[0].Data).udp.SrcPort != 5000 {
		t.Fatal("expired port not returned to the pool")
	}
}

func TestHairpin(t *testing.T) {
	fx := newFixture(t, Config{}, 0, 1)
	fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client2, client2MAC, 7000, server, 53, 64)}) // client2 has 198.19.0.1:7000
	out := fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, outside, 7000, 64)})
	if len(out) != 1 || out[0].If != Inside {
		t.Fatalf("hairpin: sent %v drops %v", out, fx.h.Drops())
	}
	d := check(t, out[0].Data)
	if !d.ip.SrcIP.Equal(outside.AsSlice()) || d.udp.SrcPort != 5000 || !d.ip.DstIP.Equal(client2.AsSlice()) || d.udp.DstPort != 7000 ||
		!bytes.Equal(d.eth.DstMAC, client2MAC[:]) {
		t.Fatalf("hairpinned packet %+v %+v", d.ip, d.udp)
	}
}

func TestStaticForward(t *testing.T) {
	fx := newFixture(t, Config{Forwards: []Forward{{Proto: header.ProtoUDP, ExtPort: 8080, Inside: netip.AddrPortFrom(client, 80)}}}, 0, 1)
	out := fx.h.Step(stagetest.In{If: Outside, Data: udpIn(t, server, 4444, outside, 8080)})
	if len(out) != 1 {
		t.Fatalf("forward: drops %v", fx.h.Drops())
	}
	d := check(t, out[0].Data)
	if !d.ip.DstIP.Equal(client.AsSlice()) || d.udp.DstPort != 80 {
		t.Fatalf("forwarded to %v:%d", d.ip.DstIP, d.udp.DstPort)
	}
	out = fx.h.Step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 80, server, 4444, 64)})
	if d := check(t, out[0].Data); d.udp.SrcPort != 8080 {
		t.Fatalf("reply left from port %d", d.udp.SrcPort)
	}
}

func TestOwner(t *testing.T) {
	fx := newFixture(t, Config{PortLo: 1000, PortHi: 1999}, 0, 1)
	n := fx.n
	f := udpOut(t, client, clientMAC, 5000, server, 53, 64)
	o := n.Owner(f, 4)
	for p := uint16(1); p < 50; p++ {
		if n.Owner(udpOut(t, client, clientMAC, p, server2, p, 64), 4) != o {
			t.Fatal("one inside host's packets have different owners")
		}
	}
	for s := 0; s < 4; s++ {
		lo, hi := n.sliceRange(s, 4)
		for _, p := range []uint16{lo, hi} {
			if got := n.Owner(udpIn(t, server, 53, outside, p), 4); got != s {
				t.Fatalf("port %d owned by %d, slice says %d", p, got, s)
			}
		}
	}
}

func TestTranslateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; the test script runs this without -race")
	}
	fx := newFixture(t, Config{}, 0, 1)
	outF := udpOut(t, client, clientMAC, 5000, server, 53, 64)
	inF := udpIn(t, server, 53, outside, 5000)
	fx.h.Step(stagetest.In{If: Inside, Data: outF})
	pair := []stagetest.In{{If: Inside, Data: outF}, {If: Outside, Data: inF}}
	a := testing.AllocsPerRun(1000, func() {
		b := fx.h.Pass(pair...)
		if b.Pkts[0].Verdict != pipelines.Transmit || b.Pkts[1].Verdict != pipelines.Transmit {
			t.Fatal("not translated")
		}
	})
	if a != 0 {
		t.Fatalf("translating allocates %v times per pair", a)
	}
}
