package nat

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/stack/header"
)

// The fast path is checked against the shard's own path: two real XDP programs are loaded
// (not attached: BPF_PROG_TEST_RUN runs them on frames), the shard installs its flows in them,
// and for the same input frame the program's output must equal the shard's, byte for byte.

type fastFixture struct {
	*fixture
	in, out *xdpprog.Program
}

func newFastFixture(t *testing.T, cfg Config) *fastFixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test loads XDP programs into the kernel: run it as root (sudo go test ./nat/)")
	}
	fx := newFixture(t, cfg, 0, 1)
	load := func() *xdpprog.Program {
		p, err := xdpprog.Load(xdpprog.Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	ff := &fastFixture{fixture: fx, in: load(), out: load()}
	lo, err := net.InterfaceByName("lo") // the test run never transmits
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.n.enableXDPFastPath(ff.in, ff.out, lo.Index, lo.Index); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.n.Close() })
	return ff
}

// both sends frame through the shard and through the program of interface inIf; it returns
// the shard's output frame and whether the program took the fast path, failing the test when
// the program's output differs from the shard's.
func (ff *fastFixture) both(t *testing.T, inIf int, frame []byte) ([]byte, bool) {
	t.Helper()
	p := ff.in
	if inIf == Outside {
		p = ff.out
	}
	act, fast, err := p.TestRun(append([]byte(nil), frame...))
	if err != nil {
		t.Fatal(err)
	}
	out := ff.h.Step(stagetest.In{If: inIf, Data: frame})
	if len(out) > 1 {
		t.Fatalf("the shard sent %d frames for one", len(out))
	}
	if act != xdpprog.ActionRedirect {
		if !bytes.Equal(fast, frame) {
			t.Fatal("the program changed a frame it did not redirect")
		}
		if len(out) == 0 {
			return nil, false
		}
		return out[0].Data, false
	}
	if len(out) == 0 {
		t.Fatal("the fast path forwarded a frame that the shard dropped")
	}
	if !bytes.Equal(fast, out[0].Data) {
		t.Fatalf("fast path and shard disagree:\nfast  % x\nshard % x", fast, out[0].Data)
	}
	check(t, fast)
	return out[0].Data, true
}

func TestFastPathMatchesShard(t *testing.T) {
	ff := newFastFixture(t, Config{})
	out := udpOut(t, client, clientMAC, 5000, server, 53, 64)
	in := udpIn(t, server, 53, outside, 5000)
	if _, fast := ff.both(t, Inside, out); fast {
		t.Fatal("the first packet of a flow took the fast path")
	}
	if _, fast := ff.both(t, Outside, in); fast {
		t.Fatal("the first reply took the fast path")
	}
	for k := 0; k < 3; k++ {
		if _, fast := ff.both(t, Inside, out); !fast {
			t.Fatal("UDP outbound not on the fast path after the first packet")
		}
		if _, fast := ff.both(t, Outside, in); !fast {
			t.Fatal("UDP inbound not on the fast path after the first reply")
		}
	}
	// APDF: another server's packet to the same port is not installed.
	if _, fast := ff.both(t, Outside, udpIn(t, server2, 53, outside, 5000)); fast {
		t.Fatal("a packet from an endpoint the client never sent to took the fast path")
	}

	// TCP: nothing is installed before the connection is established; FIN and RST always
	// reach the shard.
	seg := func(inbound bool, set func(*layers.TCP)) []byte {
		tc := &layers.TCP{Seq: 100, Ack: 200, Window: 1000}
		set(tc)
		if inbound {
			tc.SrcPort, tc.DstPort = 80, 7000
			return frame(t, serverMAC, outMAC, server, outside, 64, tc, []byte("HTTP/1.1 200"))
		}
		tc.SrcPort, tc.DstPort = 7000, 80
		return frame(t, clientMAC, inMAC, client, server, 64, tc, []byte("GET /"))
	}
	steps := []struct {
		inbound bool
		flags   func(*layers.TCP)
		fast    bool
	}{
		{false, func(t *layers.TCP) { t.SYN = true }, false},
		{true, func(t *layers.TCP) { t.SYN, t.ACK = true, true }, false},
		{false, func(t *layers.TCP) { t.ACK = true }, false}, // establishes, installs outbound
		{false, func(t *layers.TCP) { t.ACK, t.PSH = true, true }, true},
		{true, func(t *layers.TCP) { t.ACK = true }, false}, // installs inbound
		{true, func(t *layers.TCP) { t.ACK, t.PSH = true, true }, true},
		{true, func(t *layers.TCP) { t.FIN, t.ACK = true, true }, false},
		{false, func(t *layers.TCP) { t.ACK = true }, true},
		{false, func(t *layers.TCP) { t.RST = true }, false},
	}
	for k, s := range steps {
		ifc := Inside
		if s.inbound {
			ifc = Outside
		}
		if _, fast := ff.both(t, ifc, seg(s.inbound, s.flags)); fast != s.fast {
			t.Fatalf("TCP step %d: fast %v, want %v", k, fast, s.fast)
		}
	}
	st := ff.n.Stats()
	if st.FastInstalled != 4 || st.FastActive != 4 || st.FastErrors != 0 || st.FastTranslated != 9 {
		t.Fatalf("stats %+v: want 4 flows installed and active, 9 fast packets, no errors", st)
	}
}

// TestFastPathKeepsMappingAlive runs on the real clock: packets that only the fast path sees
// keep a mapping from expiring, and when they stop, the mapping expires and its flows leave
// the programs.
func TestFastPathKeepsMappingAlive(t *testing.T) {
	ff := newFastFixture(t, Config{Timeouts: Timeouts{UDP: 300 * time.Millisecond}, MaxMappings: 1000})
	ff.n.fastMaxAge = int64(time.Hour)
	step := func(in ...stagetest.In) []stagetest.Out {
		ff.h.SetNow(pipelines.Now())
		return ff.h.Step(in...)
	}
	out := udpOut(t, client, clientMAC, 5000, server, 53, 64)
	step(stagetest.In{If: Inside, Data: out})
	step(stagetest.In{If: Outside, Data: udpIn(t, server, 53, outside, 5000)})
	if _, _, ok, _ := ff.in.FastSeen(17, client.As4(), server.As4(), 5000, 53); !ok {
		t.Fatal("outbound flow not installed")
	}
	for end := time.Now().Add(800 * time.Millisecond); time.Now().Before(end); {
		if act, _, err := ff.in.TestRun(append([]byte(nil), out...)); err != nil || act != xdpprog.ActionRedirect {
			t.Fatalf("fast path: action %d, %v", act, err)
		}
		time.Sleep(20 * time.Millisecond)
		step()
	}
	if st := ff.n.Stats(); st.Active != 1 {
		t.Fatalf("a mapping busy on the fast path expired: %+v", st)
	}
	for end := time.Now().Add(700 * time.Millisecond); time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
		step()
	}
	st := ff.n.Stats()
	if st.Active != 0 || st.Expired != 1 || st.FastActive != 0 {
		t.Fatalf("idle mapping: %+v; want it expired with its fast flows", st)
	}
	if _, _, ok, _ := ff.in.FastSeen(17, client.As4(), server.As4(), 5000, 53); ok {
		t.Fatal("the outbound flow outlived its mapping")
	}
	if _, _, ok, _ := ff.out.FastSeen(17, server.As4(), outside.As4(), 53, 5000); ok {
		t.Fatal("the inbound flow outlived its mapping")
	}
}

// TestFastPathRefreshes: a flow older than the maximum age leaves the program and the next
// packet, through the shard, installs it again.
func TestFastPathRefreshes(t *testing.T) {
	ff := newFastFixture(t, Config{MaxMappings: 1000}) // one expiry scan covers the arena
	ff.n.fastMaxAge = int64(time.Second)
	out := udpOut(t, client, clientMAC, 5000, server, 53, 64)
	ff.both(t, Inside, out)
	if _, fast := ff.both(t, Inside, out); !fast {
		t.Fatal("not installed")
	}
	for k := 0; k < 60; k++ { // the scan runs every 10 ms of the harness clock
		ff.h.Advance(20 * time.Millisecond)
		ff.h.Step()
	}
	if _, fast := ff.both(t, Inside, out); fast {
		t.Fatal("a flow past the maximum age still took the fast path")
	}
	if _, fast := ff.both(t, Inside, out); !fast {
		t.Fatal("the flow was not installed again")
	}
	if st := ff.n.Stats(); st.FastInstalled != 2 || st.FastActive != 1 || st.Active != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestFastPathEvictionSeesFastTraffic: when a mapping's endpoints are full, the one that
// gives way is the idlest counting fast-path packets, not the one the shard saw last longest
// ago.
func TestFastPathEvictionSeesFastTraffic(t *testing.T) {
	ff := newFastFixture(t, Config{})
	step := func(in ...stagetest.In) []stagetest.Out {
		ff.h.SetNow(pipelines.Now())
		return ff.h.Step(in...)
	}
	first := udpOut(t, client, clientMAC, 5000, server, 53, 64)
	for port := uint16(53); port < 53+maxDests; port++ {
		step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, port, 64)})
		time.Sleep(2 * time.Millisecond)
	}
	// Port 53, the oldest to the shard, is busy on the fast path.
	if act, _, err := ff.in.TestRun(first); err != nil || act != xdpprog.ActionRedirect {
		t.Fatalf("fast path: action %d, %v", act, err)
	}
	step(stagetest.In{If: Inside, Data: udpOut(t, client, clientMAC, 5000, server, 53+maxDests, 64)})
	installed := func(port uint16) bool {
		_, _, ok, err := ff.in.FastSeen(17, client.As4(), server.As4(), 5000, port)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !installed(53) || installed(54) || !installed(53+maxDests) {
		t.Fatalf("after the ninth endpoint: port 53 installed %v (want true), 54 %v (want false, the idlest), %d %v (want true)",
			installed(53), installed(54), 53+maxDests, installed(53+maxDests))
	}
}

// TestFastPathForwardAndEIF: a static forward's flows reach the fast path after their first
// packet each way; with endpoint-independent filtering, an endpoint the inside host never sent
// to stays on the shard's path until the host sends to it. The program's output equals the
// shard's throughout.
func TestFastPathForwardAndEIF(t *testing.T) {
	ff := newFastFixture(t, Config{Filtering: EIF, Forwards: []Forward{{Proto: header.ProtoUDP, ExtPort: 8080, Inside: netip.AddrPortFrom(client, 80)}}})
	steps := []struct {
		name   string
		inIf   int
		frame  []byte
		fast   bool
		dstOut netip.Addr
	}{
		{"forward in, first", Outside, udpIn(t, server, 4444, outside, 8080), false, client},
		{"forward in", Outside, udpIn(t, server, 4444, outside, 8080), true, client},
		{"forward reply, first", Inside, udpOut(t, client, clientMAC, 80, server, 4444, 64), false, server},
		{"forward reply", Inside, udpOut(t, client, clientMAC, 80, server, 4444, 64), true, server},
		{"dynamic out, first", Inside, udpOut(t, client, clientMAC, 5000, server, 53, 64), false, server},
		// EIF lets in an endpoint the inside host never sent to, but the mapping keeps no
		// state for it, so its packets stay on the shard's path ...
		{"eif: unsolicited endpoint", Outside, udpIn(t, server2, 999, outside, 5000), false, client},
		{"eif: unsolicited endpoint again", Outside, udpIn(t, server2, 999, outside, 5000), false, client},
		// ... until the host sends to it.
		{"eif: host answers", Inside, udpOut(t, client, clientMAC, 5000, server2, 999, 64), false, server2},
		{"eif: endpoint again, first since", Outside, udpIn(t, server2, 999, outside, 5000), false, client},
		{"eif: endpoint again", Outside, udpIn(t, server2, 999, outside, 5000), true, client},
	}
	for _, s := range steps {
		out, fast := ff.both(t, s.inIf, s.frame)
		if out == nil {
			t.Fatalf("%s: the shard dropped it (%v)", s.name, ff.h.Drops())
		}
		if fast != s.fast {
			t.Fatalf("%s: fast %v, want %v", s.name, fast, s.fast)
		}
		if d := check(t, out); !d.ip.DstIP.Equal(s.dstOut.AsSlice()) {
			t.Fatalf("%s: sent to %v, want %v", s.name, d.ip.DstIP, s.dstOut)
		}
	}
}
