package main

import (
	"bytes"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

var (
	peer = netip.MustParseAddrPort("198.18.0.2:40000")
	ours = netip.MustParseAddrPort("198.18.0.1:9999")
)

// pongOf is what the peer must get back for a datagram from src to dst: the frame UDPFrame
// builds for the way back, Ethernet addresses swapped (from the interface to the peer).
func pongOf(src, dst netip.AddrPort, payload []byte) []byte {
	f := stagetest.UDPFrame(dst, src, payload)
	var mac [6]byte
	copy(mac[:], f[0:6])
	copy(f[0:6], f[6:12])
	copy(f[6:12], mac[:])
	return f
}

// checksumsValid parses a frame the way a receiver would and checks both checksums.
func checksumsValid(t *testing.T, f []byte) {
	t.Helper()
	eth, ok := header.ParseEthernet(f)
	if !ok {
		t.Fatalf("not an Ethernet frame: % x", f)
	}
	ip, e := header.ParseIPv4(eth.Payload())
	if e != header.IPv4OK {
		t.Fatalf("IPv4 header refused (%v): % x", e, f)
	}
	udp, ok := header.ParseUDP(ip.Payload())
	if !ok || !udp.ChecksumValid(ip.Src(), ip.Dst()) {
		t.Fatalf("UDP datagram refused or its checksum is wrong: % x", f)
	}
}

// TestPong: a datagram to the port comes back out of the interface it came in on, byte for
// byte the reflection of what was sent, with valid checksums; nothing is dropped.
func TestPong(t *testing.T) {
	h := stagetest.New(t, pong(9999))
	for _, payload := range [][]byte{nil, []byte("ping"), bytes.Repeat([]byte{0xa5}, 1400)} {
		in := stagetest.UDPFrame(peer, ours, payload)
		sent := h.Feed(in)
		if len(sent) != 1 {
			t.Fatalf("payload of %d bytes: %d frames sent, want 1 (outcomes %+v)", len(payload), len(sent), h.Outcomes())
		}
		if sent[0].If != 0 || sent[0].Originated {
			t.Errorf("sent on interface %d (originated %v), want the received frame back on interface 0", sent[0].If, sent[0].Originated)
		}
		if want := pongOf(peer, ours, payload); !bytes.Equal(sent[0].Data, want) {
			t.Fatalf("payload of %d bytes: sent\n% x\nwant\n% x", len(payload), sent[0].Data, want)
		}
		checksumsValid(t, sent[0].Data)
		if d := h.DropCounts(); len(d) != 0 {
			t.Errorf("drops %v, want none", d)
		}
	}
}

// TestPongDrops: everything else that reaches the stage is dropped with reason "not-pong",
// counted by name: UDP to another port, TCP and ICMP to the port's address, a fragment of a
// datagram to the port, an ARP frame and a frame too short for IPv4.
func TestPongDrops(t *testing.T) {
	other := stagetest.UDPFrame(peer, netip.AddrPortFrom(ours.Addr(), 9998), []byte("ping"))
	withProto := func(proto uint8) []byte {
		f := stagetest.UDPFrame(peer, ours, []byte("ping"))
		ip, _ := header.IPv4InFrame(f)
		ip.SetProtocol(proto)
		ip.FixChecksum()
		return f
	}
	fragment := stagetest.UDPFrame(peer, ours, []byte("ping"))
	ip, _ := header.IPv4InFrame(fragment)
	ip.SetFragment(false, true, 0) // the first fragment: ports are there, the rest is not
	ip.FixChecksum()
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	short := stagetest.UDPFrame(peer, ours, nil)[:30]

	h := stagetest.New(t, pong(9999))
	good := stagetest.UDPFrame(peer, ours, []byte("ping"))
	ins := [][]byte{other, withProto(header.ProtoTCP), good, withProto(header.ProtoICMP), fragment, arp, short}
	sent := h.Feed(ins...)
	if len(sent) != 1 || !bytes.Equal(sent[0].Data, pongOf(peer, ours, []byte("ping"))) {
		t.Fatalf("sent %d frames, want the one pong: %+v", len(sent), sent)
	}
	out := h.Outcomes()
	if len(out) != len(ins) {
		t.Fatalf("%d outcomes for %d frames", len(out), len(ins))
	}
	for i, o := range out {
		want, reason := pipelines.Drop, "not-pong"
		if i == 2 {
			want, reason = pipelines.Transmit, "none"
		}
		if o.Fed != i || o.Verdict != want || o.Reason.String() != reason {
			t.Errorf("frame %d: fed %d, %v %v; want %v %s", i, o.Fed, o.Verdict, o.Reason, want, reason)
		}
		if o.Verdict == pipelines.Drop && !bytes.Equal(o.Data, ins[i]) {
			t.Errorf("frame %d: dropped, but changed first:\n% x\nwas\n% x", i, o.Data, ins[i])
		}
	}
	if d := h.DropCounts(); len(d) != 1 || d["not-pong"] != 6 {
		t.Fatalf("drops %v, want map[not-pong:6]", d)
	}
	if h.FreeFrames() != stagetest.Frames {
		t.Fatalf("%d frames free after the pass, want all %d", h.FreeFrames(), stagetest.Frames)
	}
}

// TestPongAllocs: the stage allocates nothing per packet.
func TestPongAllocs(t *testing.T) {
	h := stagetest.New(t, pong(9999))
	in := make([]stagetest.In, stagetest.BatchSize)
	for i := range in {
		port := uint16(9999)
		if i%2 == 1 {
			port = 9998
		}
		in[i].Data = stagetest.UDPFrame(peer, netip.AddrPortFrom(ours.Addr(), port), []byte("ping"))
	}
	if n := testing.AllocsPerRun(100, func() { h.Pass(in...) }); n != 0 {
		t.Fatalf("%v allocations per pass of %d packets, want 0", n, len(in))
	}
}

// TestStageLines keeps the claim of main.go honest: the stage, from notPong's comment to the
// end of pong, is as many lines as the comment says, and fewer than 30.
func TestStageLines(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	first, last := -1, -1
	for i, l := range lines {
		if first < 0 && strings.HasPrefix(l, "// notPong ") {
			first = i
		}
		if first >= 0 && strings.HasPrefix(l, "func pong(") {
			for j := i; j < len(lines); j++ {
				if lines[j] == "}" {
					last = j
					break
				}
			}
			break
		}
	}
	if first < 0 || last < 0 {
		t.Fatal("main.go: cannot find the stage (notPong's comment, func pong)")
	}
	n := last - first + 1
	m := regexp.MustCompile(`The stage is the (\d+) lines from notPong's comment`).FindSubmatch(src)
	if m == nil {
		t.Fatal("main.go does not say how many lines the stage is")
	}
	if said, _ := strconv.Atoi(string(m[1])); said != n || n >= 30 {
		t.Fatalf("the stage is %d lines (%d to %d of main.go); the comment says %d; the example promises fewer than 30",
			n, first+1, last+1, said)
	}
}
