package xdpprog

import (
	"bytes"
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// The fast path is tested like the claims: BPF_PROG_TEST_RUN runs the loaded program on
// frames built with gopacket, and gopacket, as an independent decoder, checks what the
// program wrote, the checksums recomputed from scratch.

var (
	fastIn  = [4]byte{198, 18, 1, 2}
	fastSrv = [4]byte{198, 19, 0, 2}
	fastOut = [4]byte{198, 19, 0, 1}
	fastMAC = [6]byte{0x02, 0, 0, 0, 0, 0x51}
	fastDst = [6]byte{0x02, 0, 0, 0, 0, 0x52}
)

func loadFast(t *testing.T) *Program {
	t.Helper()
	p := loadTest(t)
	// The test run never transmits; any interface makes bpf_redirect_map succeed.
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	must(t, p.SetFastTarget(lo.Index))
	return p
}

type l4frame struct {
	proto        layers.IPProtocol
	src, dst     [4]byte
	sport, dport uint16
	ttl          uint8
	tcpFlags     string // "S", "A", "F", "R", "PA"
	udpNoCsum    bool
	frag         bool
	ipOption     bool
	payload      []byte
}

func (f l4frame) build(t testing.TB) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: f.ttl, Protocol: f.proto, SrcIP: net.IP(f.src[:]), DstIP: net.IP(f.dst[:]), Id: 0x1234}
	if f.frag {
		ip.Flags = layers.IPv4MoreFragments
	}
	if f.ipOption {
		ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	}
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
	pl := gopacket.Payload(f.payload)
	if f.proto == layers.IPProtocolTCP {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.sport), DstPort: layers.TCPPort(f.dport), Seq: 1000, Ack: 2000, Window: 512, DataOffset: 5}
		for _, c := range f.tcpFlags {
			switch c {
			case 'S':
				tcp.SYN = true
			case 'A':
				tcp.ACK = true
			case 'F':
				tcp.FIN = true
			case 'R':
				tcp.RST = true
			case 'P':
				tcp.PSH = true
			}
		}
		must(t, tcp.SetNetworkLayerForChecksum(ip))
		return serialize(t, eth, ip, tcp, pl)
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.sport), DstPort: layers.UDPPort(f.dport)}
	must(t, udp.SetNetworkLayerForChecksum(ip))
	b := serialize(t, eth, ip, udp, pl)
	if f.udpNoCsum && !f.ipOption {
		binary.BigEndian.PutUint16(b[offUDPCsum:], 0)
	}
	return b
}

// runFast runs the program once and returns its return code, the frame it left and whether
// the Fast counter moved (and nothing else).
func runFast(t *testing.T, p *Program, frame []byte) (uint32, []byte, bool) {
	t.Helper()
	before, err := p.Stats()
	must(t, err)
	out := make([]byte, len(frame)+256)
	ret, err := p.prog.Run(&ebpf.RunOptions{Data: frame, DataOut: out, Repeat: 1})
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	after, err := p.Stats()
	must(t, err)
	fast := after.Fast - before.Fast
	if fast > 1 || after.FastNoTarget != before.FastNoTarget {
		t.Fatalf("one frame moved Fast by %d, FastNoTarget by %d", fast, after.FastNoTarget-before.FastNoTarget)
	}
	if fast == 1 && (after.Passed != before.Passed || after.Claimed != before.Claimed) {
		t.Fatalf("a fast frame was also passed or claimed: %+v -> %+v", before, after)
	}
	return ret, out[:len(frame)], fast == 1
}

// checkChecksums decodes frame with gopacket and fails unless its IPv4 and transport
// checksums equal the ones gopacket computes from scratch (a zero UDP checksum stays zero).
func checkChecksums(t *testing.T, frame []byte) gopacket.Packet {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode the output: %v", el.Error())
	}
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ipc := *ip
	ipb := gopacket.NewSerializeBuffer()
	must(t, ipc.SerializeTo(ipb, gopacket.SerializeOptions{ComputeChecksums: true}))
	if got, want := ip.Checksum, binary.BigEndian.Uint16(ipb.Bytes()[10:12]); got != want {
		t.Errorf("IPv4 checksum %#04x, recomputed %#04x", got, want)
	}
	if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		c := *tcp
		must(t, c.SetNetworkLayerForChecksum(ip))
		b := gopacket.NewSerializeBuffer()
		must(t, gopacket.SerializeLayers(b, gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(tcp.Payload)))
		if got, want := tcp.Checksum, binary.BigEndian.Uint16(b.Bytes()[16:18]); got != want {
			t.Errorf("TCP checksum %#04x, recomputed %#04x", got, want)
		}
	}
	if udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && udp.Checksum != 0 {
		c := *udp
		must(t, c.SetNetworkLayerForChecksum(ip))
		b := gopacket.NewSerializeBuffer()
		must(t, gopacket.SerializeLayers(b, gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(udp.Payload)))
		want := binary.BigEndian.Uint16(b.Bytes()[6:8])
		if got := udp.Checksum; got != want {
			t.Errorf("UDP checksum %#04x, recomputed %#04x", got, want)
		}
	}
	return pkt
}

func TestFastPathTranslates(t *testing.T) {
	p := loadFast(t)
	snat := FastFlow{Proto: 17, Src: fastIn, Dst: fastSrv, SrcPort: 5000, DstPort: 7000,
		RewriteSrc: true, Addr: fastOut, Port: 1024, SrcMAC: fastMAC, DstMAC: fastDst}
	dnat := FastFlow{Proto: 6, Src: fastSrv, Dst: fastOut, SrcPort: 80, DstPort: 2000,
		Addr: fastIn, Port: 40000, SrcMAC: fastMAC, DstMAC: fastDst}
	must(t, p.AddFast(snat))
	must(t, p.AddFast(dnat))
	must(t, p.AddFast(FastFlow{Proto: 6, Src: fastIn, Dst: fastSrv, SrcPort: 5000, DstPort: 7000,
		RewriteSrc: true, Addr: fastOut, Port: 1024, SrcMAC: fastMAC, DstMAC: fastDst}))

	cases := []struct {
		name string
		f    l4frame
		fast bool
	}{
		{"udp snat", l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 64, payload: []byte("hello")}, true},
		{"udp snat, no checksum", l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 64, udpNoCsum: true, payload: []byte("x")}, true},
		{"udp snat, ttl 2", l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 2}, true},
		{"tcp dnat, ack", l4frame{proto: 6, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 61, tcpFlags: "A", payload: make([]byte, 100)}, true},
		{"tcp dnat, psh ack", l4frame{proto: 6, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 255, tcpFlags: "PA", payload: []byte("GET /")}, true},
		{"tcp dnat, syn", l4frame{proto: 6, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 64, tcpFlags: "S"}, false},
		{"tcp dnat, fin", l4frame{proto: 6, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 64, tcpFlags: "FA"}, false},
		{"tcp dnat, rst", l4frame{proto: 6, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 64, tcpFlags: "R"}, false},
		{"udp snat, ttl 1", l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 1}, false},
		{"udp snat, fragment", l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 64, frag: true}, false},
		{"udp snat, ip options", l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 64, ipOption: true}, false},
		{"udp, other port", l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5001, dport: 7000, ttl: 64}, false},
		{"udp, key of the tcp flow", l4frame{proto: 17, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 64}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.f.build(t)
			ret, out, fast := runFast(t, p, in)
			if fast != tc.fast {
				t.Fatalf("fast = %v, want %v (return %d)", fast, tc.fast, ret)
			}
			if !fast {
				if ret != xdpPass || string(out) != string(in) {
					t.Fatalf("a frame off the fast path came out with return %d, changed=%v", ret, string(out) != string(in))
				}
				return
			}
			if ret != xdpRedirect {
				t.Fatalf("return %d, want XDP_REDIRECT (%d)", ret, xdpRedirect)
			}
			pkt := checkChecksums(t, out)
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if [6]byte(eth.SrcMAC) != fastMAC || [6]byte(eth.DstMAC) != fastDst {
				t.Errorf("MACs %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, net.HardwareAddr(fastMAC[:]), net.HardwareAddr(fastDst[:]))
			}
			ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip.TTL != tc.f.ttl-1 {
				t.Errorf("TTL %d, want %d", ip.TTL, tc.f.ttl-1)
			}
			src, dst := [4]byte(ip.SrcIP.To4()), [4]byte(ip.DstIP.To4())
			var sport, dport uint16
			if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
				sport, dport = uint16(tcp.SrcPort), uint16(tcp.DstPort)
				if tcp.Seq != 1000 || tcp.Ack != 2000 || string(tcp.Payload) != string(tc.f.payload) {
					t.Errorf("TCP sequence, ack or payload changed")
				}
			} else {
				udp := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
				sport, dport = uint16(udp.SrcPort), uint16(udp.DstPort)
				if tc.f.udpNoCsum && udp.Checksum != 0 {
					t.Errorf("a zero UDP checksum became %#04x", udp.Checksum)
				}
				if string(udp.Payload) != string(tc.f.payload) {
					t.Errorf("UDP payload changed")
				}
			}
			if tc.f.proto == 17 { // snat
				if src != fastOut || sport != 1024 || dst != fastSrv || dport != 7000 {
					t.Errorf("snat gave %v:%d -> %v:%d", src, sport, dst, dport)
				}
			} else if src != fastSrv || sport != 80 || dst != fastIn || dport != 40000 {
				t.Errorf("dnat gave %v:%d -> %v:%d", src, sport, dst, dport)
			}
		})
	}

	last, n, ok, err := p.FastSeen(17, fastIn, fastSrv, 5000, 7000)
	must(t, err)
	if !ok || n != 3 || last <= 0 {
		t.Errorf("FastSeen of the udp flow: last %d, packets %d, ok %v; want 3 packets", last, n, ok)
	}
	must(t, p.DeleteFast(17, fastIn, fastSrv, 5000, 7000))
	must(t, p.DeleteFast(17, fastIn, fastSrv, 5000, 7000)) // twice is fine
	if _, _, ok, _ := p.FastSeen(17, fastIn, fastSrv, 5000, 7000); ok {
		t.Error("FastSeen finds a deleted flow")
	}
	f := l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 64}
	if _, _, fast := runFast(t, p, f.build(t)); fast {
		t.Error("a deleted flow still takes the fast path")
	}
	// Off: installed flows stay, frames go to the claim rules.
	must(t, p.SetFastTarget(0))
	tf := l4frame{proto: 6, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 64, tcpFlags: "A"}
	if _, _, fast := runFast(t, p, tf.build(t)); fast {
		t.Error("fast path taken with the target unset")
	}
	if err := p.AddFast(FastFlow{Proto: 1}); err == nil {
		t.Error("AddFast accepted ICMP")
	}
}

// TestFastPathChecksumsRandom installs random flows and checks the checksums of random
// packets through them against gopacket's recomputation: the deltas are per flow, so every
// address and port pair is a new case.
func TestFastPathChecksumsRandom(t *testing.T) {
	p := loadFast(t)
	rng := rand.New(rand.NewPCG(5, 8))
	addr := func() (a [4]byte) {
		binary.BigEndian.PutUint32(a[:], rng.Uint32())
		return a
	}
	for i := range 300 {
		proto := []uint8{6, 17}[i%2]
		f := FastFlow{Proto: proto, Src: addr(), Dst: addr(), SrcPort: uint16(rng.Uint32()), DstPort: uint16(rng.Uint32()),
			RewriteSrc: rng.IntN(2) == 0, Addr: addr(), Port: uint16(rng.Uint32()), SrcMAC: fastMAC, DstMAC: fastDst}
		must(t, p.AddFast(f))
		pl := make([]byte, rng.IntN(64))
		for j := range pl {
			pl[j] = byte(rng.Uint32())
		}
		fr := l4frame{proto: layers.IPProtocol(proto), src: f.Src, dst: f.Dst, sport: f.SrcPort, dport: f.DstPort,
			ttl: uint8(2 + rng.IntN(254)), tcpFlags: "A", payload: pl}
		ret, out, fast := runFast(t, p, fr.build(t))
		if !fast || ret != xdpRedirect {
			t.Fatalf("flow %d (%+v) not fast: return %d", i, f, ret)
		}
		checkChecksums(t, out)
		if t.Failed() {
			t.Fatalf("flow %d: %+v", i, f)
		}
		must(t, p.DeleteFast(f.Proto, f.Src, f.Dst, f.SrcPort, f.DstPort))
	}
}

// FuzzFastPath feeds arbitrary frames to the program with two fast flows installed. Whatever
// the frame, the program either leaves it untouched (pass or claim) or takes the fast path,
// and then only for a frame the fast path may take: IPv4 with a 20-byte header, not a
// fragment, TTL above 1, UDP or TCP without SYN, FIN or RST, of an installed flow. A frame it
// translates has the new address and port, a TTL one lower, and, if its checksums held
// before, checksums that hold after (gopacket recomputes them).
func FuzzFastPath(f *testing.F) {
	requireRoot(f)
	p, err := Load(Options{Logf: f.Logf})
	if err != nil {
		f.Fatal(err)
	}
	// Under -fuzz this process only coordinates: the fuzz function runs in worker processes,
	// each with its own program, and this one's counters stay at zero.
	fuzzing := false
	if fl := flag.Lookup("test.fuzz"); fl != nil && fl.Value.String() != "" {
		fuzzing = true
	}
	f.Cleanup(func() {
		// The seeds include frames of installed flows: if none took the fast path, the
		// checks below never ran.
		if st, err := p.Stats(); err == nil && st.Fast == 0 && !fuzzing {
			f.Error("no frame took the fast path")
		}
		p.Close()
	})
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		f.Fatal(err)
	}
	flows := []FastFlow{
		{Proto: 17, Src: fastIn, Dst: fastSrv, SrcPort: 5000, DstPort: 7000, RewriteSrc: true, Addr: fastOut, Port: 1024, SrcMAC: fastMAC, DstMAC: fastDst},
		{Proto: 6, Src: fastSrv, Dst: fastOut, SrcPort: 80, DstPort: 2000, Addr: fastIn, Port: 40000, SrcMAC: fastMAC, DstMAC: fastDst},
	}
	for _, fl := range flows {
		if err := p.AddFast(fl); err != nil {
			f.Fatal(err)
		}
	}
	if err := p.SetFastTarget(lo.Index); err != nil {
		f.Fatal(err)
	}
	for _, fr := range []l4frame{
		{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 64, payload: []byte("hi")},
		{proto: 6, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 9, tcpFlags: "A", payload: []byte("data")},
		{proto: 6, src: fastSrv, dst: fastOut, sport: 80, dport: 2000, ttl: 9, tcpFlags: "S"},
		{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 1},
	} {
		f.Add(fr.build(f))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < ethLen || len(frame) > 1500 {
			return // BPF_PROG_TEST_RUN refuses what no interface delivers
		}
		act, out, err := p.TestRun(frame)
		if err != nil {
			t.Fatal(err)
		}
		if act != ActionRedirect {
			if !bytes.Equal(out, frame) {
				t.Fatalf("action %d changed the frame", act)
			}
			return
		}
		// Taken: the frame must be eligible and of an installed flow.
		if len(frame) < offL4+udpLen || binary.BigEndian.Uint16(frame[offEthType:]) != 0x0800 || frame[offIPVerIHL] != 0x45 ||
			binary.BigEndian.Uint16(frame[offIPFrag:])&0x3fff != 0 || frame[offIPTTL] <= 1 {
			t.Fatalf("fast path took an ineligible frame % x", frame[:min(len(frame), 64)])
		}
		proto := frame[offIPProto]
		if proto == 6 && (len(frame) < offL4+tcpMinLen || frame[offTCPFlag]&0x07 != 0) {
			t.Fatalf("fast path took a TCP frame with SYN, FIN or RST, or a short one")
		}
		var fl *FastFlow
		for i := range flows {
			k := &flows[i]
			if k.Proto == proto && [4]byte(frame[offIPSrc:]) == k.Src && [4]byte(frame[offIPSrc+4:]) == k.Dst &&
				binary.BigEndian.Uint16(frame[offL4:]) == k.SrcPort && binary.BigEndian.Uint16(frame[offL4+2:]) == k.DstPort {
				fl = k
			}
		}
		if fl == nil {
			t.Fatalf("fast path took a frame of no installed flow")
		}
		addrOff, portOff := offIPSrc+4, offL4+2
		if fl.RewriteSrc {
			addrOff, portOff = offIPSrc, offL4
		}
		if [4]byte(out[addrOff:]) != fl.Addr || binary.BigEndian.Uint16(out[portOff:]) != fl.Port || out[offIPTTL] != frame[offIPTTL]-1 ||
			[6]byte(out[0:]) != fl.DstMAC || [6]byte(out[6:]) != fl.SrcMAC {
			t.Fatalf("translation wrong:\n in % x\nout % x", frame[:offL4+8], out[:offL4+8])
		}
		if checksumsHold(frame) && !checksumsHold(out) {
			t.Fatalf("checksums held before the fast path and not after:\n in % x\nout % x", frame, out)
		}
	})
}

// checksumsHold reports whether a frame's IPv4 header checksum and its TCP or UDP checksum
// (a UDP checksum of 0 counts as holding) are what gopacket computes from scratch.
func checksumsHold(frame []byte) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil || pkt.ErrorLayer() != nil || int(ip.Length) != len(frame)-ethLen {
		return false
	}
	ipc := *ip
	b := gopacket.NewSerializeBuffer()
	if ipc.SerializeTo(b, gopacket.SerializeOptions{ComputeChecksums: true}) != nil || binary.BigEndian.Uint16(b.Bytes()[10:12]) != ip.Checksum {
		return false
	}
	sum := func(l gopacket.SerializableLayer, payload []byte, at int, got uint16) bool {
		b := gopacket.NewSerializeBuffer()
		if gopacket.SerializeLayers(b, gopacket.SerializeOptions{ComputeChecksums: true}, l, gopacket.Payload(payload)) != nil {
			return false
		}
		return binary.BigEndian.Uint16(b.Bytes()[at:]) == got
	}
	if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		c := *tcp
		c.SetNetworkLayerForChecksum(ip)
		return sum(&c, tcp.Payload, 16, tcp.Checksum)
	}
	if udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		if udp.Checksum == 0 {
			return true
		}
		c := *udp
		c.SetNetworkLayerForChecksum(ip)
		return sum(&c, udp.Payload, 6, udp.Checksum)
	}
	return false
}

// TestFastPathMTU: a packet longer than the target's MTU stays off the fast path (the kernel
// would refuse to redirect it); SetFastTarget takes the MTU from the interface.
func TestFastPathMTU(t *testing.T) {
	p := loadFast(t)
	must(t, p.AddFast(FastFlow{Proto: 17, Src: fastIn, Dst: fastSrv, SrcPort: 5000, DstPort: 7000,
		RewriteSrc: true, Addr: fastOut, Port: 1024, SrcMAC: fastMAC, DstMAC: fastDst}))
	var mtu uint32
	must(t, p.config.Lookup(uint32(1), &mtu))
	if lo, _ := net.InterfaceByName("lo"); mtu != uint32(lo.MTU) {
		t.Fatalf("config[1] = %d, want lo's MTU %d", mtu, lo.MTU)
	}
	must(t, p.config.Update(uint32(1), uint32(128), ebpf.UpdateAny)) // as if the target's MTU were 128
	frame := func(payload int) []byte {
		return l4frame{proto: 17, src: fastIn, dst: fastSrv, sport: 5000, dport: 7000, ttl: 64, payload: make([]byte, payload)}.build(t)
	}
	if _, _, fast := runFast(t, p, frame(128-28)); !fast {
		t.Error("a packet of exactly the MTU did not take the fast path")
	}
	if _, _, fast := runFast(t, p, frame(128-28+1)); fast {
		t.Error("a packet one byte over the MTU took the fast path")
	}
}
