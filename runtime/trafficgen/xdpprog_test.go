package trafficgen

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/internal/testpkt"
)

// loadOrSkip loads a collection; without the privilege to load BPF programs the test is
// skipped (it runs as root in ./test.sh).
func loadOrSkip(t *testing.T, spec *ebpf.CollectionSpec) *ebpf.Collection {
	t.Helper()
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		if os.Geteuid() != 0 && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) {
			t.Skipf("loading BPF needs privileges: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Close() })
	return coll
}

func testConfig() Config {
	return Config{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.1"),
		SrcPort: 40000, DstPort: 9, Flows: 1, Size: 60, RunID: 1}
}

// TestLiveProgram runs the live-frame program in ordinary BPF_PROG_RUN mode: each run must
// return XDP_TX and leave a frame whose source port is the next flow's and whose checksums an
// independent decoder accepts.
func TestLiveProgram(t *testing.T) {
	const flows = 3
	c := testConfig()
	coll := loadOrSkip(t, liveSpec(c.SrcPort, flows, 0))
	prog := coll.Programs[liveProg]
	for _, size := range []int{60, 61, 200} {
		c.Size = size
		in := make([]byte, 2048)
		in = in[:c.Build(in, 0)]
		setLiveHeader(t, coll, in)
		orig := append([]byte(nil), in[:34]...) // Ethernet and IPv4 headers
		// What a receiver that rewrites in place leaves in a recycled page: the program
		// must send the headers from its template, not these.
		in[26], in[22], in[0] = 10, 1, 0xee
		for i := 0; i < 2*flows; i++ {
			out := make([]byte, len(in))
			ret, err := prog.Run(&ebpf.RunOptions{Data: in, DataOut: out})
			if err != nil {
				t.Fatal(err)
			}
			if ret != 3 {
				t.Fatalf("returned %d, want XDP_TX (3)", ret)
			}
			u, ok := testpkt.DecodeUDP(out)
			if !ok {
				t.Fatalf("size %d run %d: the rewritten frame's checksums are wrong", size, i)
			}
			if string(out[:34]) != string(orig) {
				t.Fatalf("size %d run %d: headers not restored from the template: % x", size, i, out[:42])
			}
			if u.SrcPort != c.SrcPort+uint16(i%flows) && size == 60 {
				// The per-CPU counter keeps counting across sizes; check the sequence once.
				t.Fatalf("run %d: source port %d, want %d", i, u.SrcPort, c.SrcPort+uint16(i%flows))
			}
		}
	}
}

func setLiveHeader(t *testing.T, coll *ebpf.Collection, frame []byte) {
	t.Helper()
	hdr := make([]byte, liveHdrLen+6)
	copy(hdr, frame[:liveHdrLen])
	if err := coll.Maps[liveHdrMap].Update(uint32(0), hdr, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
}

// TestLivePacing: a paced live program sends a burst of livePaceBurst frames, drops the
// ones that come before the next burst is due, and sends the next burst once the clock has
// reached it.
func TestLivePacing(t *testing.T) {
	c := testConfig()
	const period = 20 * time.Millisecond // one burst's time
	coll := loadOrSkip(t, liveSpec(c.SrcPort, 1, uint64(period/livePaceBurst)))
	prog := coll.Programs[liveProg]
	in := make([]byte, 2048)
	in = in[:c.Build(in, 0)]
	setLiveHeader(t, coll, in)
	runOnce := func() uint32 {
		ret, err := prog.Run(&ebpf.RunOptions{Data: in})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	burst := func(what string) {
		for i := 0; i < livePaceBurst; i++ {
			if r := runOnce(); r != 3 {
				t.Fatalf("%s, frame %d: %d, want XDP_TX (3)", what, i+1, r)
			}
		}
		for i := 0; i < 5; i++ {
			if r := runOnce(); r != 1 {
				t.Fatalf("%s done, frame %d: %d, want XDP_DROP (1)", what, i+1, r)
			}
		}
	}
	burst("first burst")
	time.Sleep(period + 5*time.Millisecond)
	burst("second burst")
}

// TestCounterProgram: IPv4 frames are counted and dropped, ARP passes uncounted.
func TestCounterProgram(t *testing.T) {
	c := testConfig()
	coll := loadOrSkip(t, counterSpec())
	prog := coll.Programs[counterProg]
	ip := make([]byte, 2048)
	ip = ip[:c.Build(ip, 0)]
	arp := append([]byte(nil), ip...)
	arp[12], arp[13] = 0x08, 0x06
	for i := 0; i < 3; i++ {
		if ret, err := prog.Run(&ebpf.RunOptions{Data: ip}); err != nil || ret != 1 {
			t.Fatalf("IPv4 frame: returned %d, %v; want XDP_DROP (1)", ret, err)
		}
	}
	if ret, err := prog.Run(&ebpf.RunOptions{Data: arp}); err != nil || ret != 2 {
		t.Fatalf("ARP frame: returned %d, %v; want XDP_PASS (2)", ret, err)
	}
	ctr := &Counter{coll: coll}
	n, b, err := ctr.Count()
	if err != nil || n != 3 || b != 3*uint64(len(ip)) {
		t.Fatalf("counted %d frames, %d bytes (%v); want 3, %d", n, b, err, 3*len(ip))
	}
}
