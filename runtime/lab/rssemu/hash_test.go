package rssemu

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/netchan/netchan/pipelines"
)

// The program's hash and queue are checked against pipelines.Toeplitz and RETA.Queue with
// BPF_PROG_TEST_RUN on crafted frames: the test variant of the program writes the queue
// mapping it sets to skb->mark too (the test run reports mark back, not queue_mapping) and
// returns the hash.

// requireRoot fails (never skips) a test that needs root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test loads BPF programs: run it as root, e.g. `sudo go test ./runtime/lab/rssemu/`")
	}
}

// msVectors are the IPv4 rows of Microsoft's RSS verification suite with pipelines.MicrosoftKey
// (the same rows as pipelines' own test): hash of (src, dst) and of (src, dst, sport, dport).
var msVectors = []struct {
	src         [4]byte
	sport       uint16
	dst         [4]byte
	dport       uint16
	ipv4        uint32
	ipv4WithTCP uint32
}{
	{[4]byte{66, 9, 149, 187}, 2794, [4]byte{161, 142, 100, 80}, 1766, 0x323e8fc2, 0x51ccc178},
	{[4]byte{199, 92, 111, 2}, 14230, [4]byte{65, 69, 140, 83}, 4739, 0xd718262a, 0xc626b0ea},
	{[4]byte{24, 19, 198, 95}, 12898, [4]byte{12, 22, 207, 184}, 38024, 0xd2d0a5de, 0x5c2b394a},
	{[4]byte{38, 27, 205, 30}, 48228, [4]byte{209, 142, 163, 6}, 2217, 0x82989176, 0xafc7327f},
	{[4]byte{153, 39, 163, 191}, 44251, [4]byte{202, 188, 127, 2}, 1303, 0x5d1809c5, 0x10e828a2},
}

// pkt describes a test frame.
type pkt struct {
	etherType    uint16
	version      byte // 4 unless set
	ihl          byte // 5 unless set
	proto        byte
	frag         uint16 // flags and offset field, host order
	src, dst     [4]byte
	sport, dport uint16
	noL4         bool // end the frame after the IPv4 header
}

func (p pkt) frame() []byte {
	if p.etherType == 0 {
		p.etherType = 0x0800
	}
	if p.version == 0 {
		p.version = 4
	}
	if p.ihl == 0 {
		p.ihl = 5
	}
	b := make([]byte, 14, 128)
	copy(b, []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], p.etherType)
	ip := make([]byte, int(p.ihl)*4)
	ip[0] = p.version<<4 | p.ihl
	ip[8] = 64
	ip[9] = p.proto
	binary.BigEndian.PutUint16(ip[6:], p.frag)
	copy(ip[12:], p.src[:])
	copy(ip[16:], p.dst[:])
	for i := 20; i < len(ip); i++ {
		ip[i] = 1 // NOP options
	}
	b = append(b, ip...)
	if !p.noL4 {
		l4 := make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		b = append(b, l4...)
	}
	binary.BigEndian.PutUint16(b[14+2:], uint16(len(b)-14))
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

// want returns what the program must do with p: whether it sets a queue, the hash and the
// queue, computed by pipelines.
func (p pkt) want(tz *pipelines.Toeplitz, reta pipelines.RETA) (set bool, hash uint32, queue int) {
	if (p.etherType != 0 && p.etherType != 0x0800) || (p.version != 0 && p.version != 4) || (p.ihl != 0 && p.ihl < 5) {
		return false, 0, 0
	}
	if (p.proto == 6 || p.proto == 17) && p.frag&0x3fff == 0 && !p.noL4 {
		hash = tz.HashIPv4Ports(p.src, p.dst, p.sport, p.dport)
	} else {
		hash = tz.HashIPv4(p.src, p.dst)
	}
	return true, hash, reta.Queue(hash)
}

type testProg struct {
	coll *ebpf.Collection
	tz   *pipelines.Toeplitz
	reta pipelines.RETA
}

func loadTestProg(t *testing.T, key []byte, reta pipelines.RETA) *testProg {
	t.Helper()
	requireRoot(t)
	coll, err := load(key, reta, testRun)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Close() })
	tz, err := pipelines.NewToeplitz(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testProg{coll, tz, reta}
}

// run runs the program on p's frame; it returns the queue mapping it wrote (0: none) and its
// return value.
func (tp *testProg) run(t *testing.T, p pkt) (mapping uint32, ret uint32) {
	t.Helper()
	var ctxOut [256]byte
	ret, err := tp.coll.Programs[progName].Run(&ebpf.RunOptions{Data: p.frame(), ContextOut: &ctxOut})
	if err != nil {
		t.Fatalf("test run of %+v: %v", p, err)
	}
	return binary.NativeEndian.Uint32(ctxOut[skbMark:]), ret
}

func (tp *testProg) check(t *testing.T, p pkt) {
	t.Helper()
	set, hash, queue := p.want(tp.tz, tp.reta)
	mapping, ret := tp.run(t, p)
	switch {
	case !set && (mapping != 0 || ret != uint32(0xffffffff)):
		t.Errorf("%+v: program set queue mapping %d (returned %#x), want it left alone", p, mapping, ret)
	case set && (ret != hash || mapping != uint32(queue)+1):
		t.Errorf("%+v: hash %#08x queue mapping %d, want hash %#08x, queue %d (mapping %d)", p, ret, mapping, hash, queue, queue+1)
	}
}

// TestHashMicrosoftVectors: the program's hash of the published vectors, TCP (four fields)
// and ICMP (addresses only), is the published one.
func TestHashMicrosoftVectors(t *testing.T) {
	reta := pipelines.DefaultRETA(4)
	tp := loadTestProg(t, pipelines.MicrosoftKey[:], reta)
	for _, v := range msVectors {
		for _, c := range []struct {
			proto byte
			hash  uint32
		}{{6, v.ipv4WithTCP}, {17, v.ipv4WithTCP}, {1, v.ipv4}} {
			p := pkt{proto: c.proto, src: v.src, dst: v.dst, sport: v.sport, dport: v.dport}
			mapping, ret := tp.run(t, p)
			if ret != c.hash || mapping != uint32(reta.Queue(c.hash))+1 {
				t.Errorf("%v:%d -> %v:%d proto %d: hash %#08x mapping %d, want %#08x mapping %d",
					v.src, v.sport, v.dst, v.dport, c.proto, ret, mapping, c.hash, reta.Queue(c.hash)+1)
			}
		}
	}
}

// TestHashMatchesToeplitz: over random tuples, keys and tables, the program's hash and queue
// are pipelines.Toeplitz's and RETA.Queue's; fragments, other protocols and short packets
// hash on the addresses; non-IPv4 is left alone.
func TestHashMatchesToeplitz(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 1))
	randomKey := make([]byte, 40)
	for i := range randomKey {
		randomKey[i] = byte(rng.Uint32())
	}
	for _, c := range []struct {
		name string
		key  []byte
		reta pipelines.RETA
	}{
		{"microsoft/default2", pipelines.MicrosoftKey[:], pipelines.DefaultRETA(2)},
		{"symmetric/default4", pipelines.SymmetricKey[:], pipelines.DefaultRETA(4)},
		{"random/odd", randomKey, pipelines.RETA{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5}},
		{"random/empty", randomKey, nil},
		{"shortkey/default16", randomKey[:16], pipelines.DefaultRETA(16)},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp := loadTestProg(t, c.key, c.reta)
			addr := func() (a [4]byte) {
				binary.BigEndian.PutUint32(a[:], rng.Uint32())
				return a
			}
			for range 500 {
				p := pkt{proto: []byte{6, 17}[rng.IntN(2)], src: addr(), dst: addr(),
					sport: uint16(rng.Uint32()), dport: uint16(rng.Uint32())}
				tp.check(t, p)
				p.ihl = byte(6 + rng.IntN(10)) // with IP options: the ports move
				tp.check(t, p)
			}
			base := pkt{proto: 17, src: addr(), dst: addr(), sport: 4242, dport: 53}
			for _, p := range []pkt{
				base,
				{proto: 1, src: base.src, dst: base.dst}, // ICMP
				{proto: 132, src: base.src, dst: base.dst, sport: 1, dport: 2},              // SCTP: no ports
				{proto: 17, frag: 0x2000, src: base.src, dst: base.dst, sport: 1, dport: 2}, // MF
				{proto: 6, frag: 0x00b9, src: base.src, dst: base.dst, sport: 1, dport: 2},  // offset
				{proto: 6, frag: 0x4000, src: base.src, dst: base.dst, sport: 1, dport: 2},  // DF only
				{proto: 6, src: base.src, dst: base.dst, noL4: true, ihl: 15},               // no room for ports
				{etherType: 0x0806, proto: 17, src: base.src, dst: base.dst},                // ARP
				{etherType: 0x86dd, proto: 17, src: base.src, dst: base.dst},                // IPv6
				{version: 6, proto: 17, src: base.src, dst: base.dst},                       // bad version
				{ihl: 4, proto: 17, src: base.src, dst: base.dst},                           // bad IHL
			} {
				tp.check(t, p)
			}
		})
	}
}

// TestTableIsToeplitz: the table the program reads gives pipelines.Toeplitz's hash (no root
// needed: the table is built in Go).
func TestTableIsToeplitz(t *testing.T) {
	tz, err := pipelines.NewToeplitz(pipelines.MicrosoftKey[:])
	if err != nil {
		t.Fatal(err)
	}
	tab := table(tz, 7)
	rng := rand.New(rand.NewPCG(1, 19))
	for range 1000 {
		var in [12]byte
		for i := range in {
			in[i] = byte(rng.Uint32())
		}
		var h uint32
		for i, b := range in {
			h ^= binary.NativeEndian.Uint32(tab[i*tabRow+int(b)*4:])
		}
		if want := tz.Hash(in[:]); h != want {
			t.Fatalf("%x: table hash %#08x, want %#08x", in, h, want)
		}
	}
	if n := binary.NativeEndian.Uint32(tab[tabRETALen:]); n != 7 {
		t.Errorf("RETA length in the table %d, want 7", n)
	}
}
