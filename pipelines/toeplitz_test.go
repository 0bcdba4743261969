package pipelines

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

// toeplitzVectors are the IPv4 rows of Microsoft's RSS verification suite ("Verifying the RSS
// Hash Calculation", Windows driver documentation), computed with MicrosoftKey. The same table
// appears as "RSS Verification Suite" in Intel's 82599 datasheet (section 7.1.2.8.3) and in
// DPDK's app/test/test_thash.c. The published table lists the destination first, then the
// source; the hash inputs are source then destination.
var toeplitzVectors = []struct {
	dst         [4]byte
	dport       uint16
	src         [4]byte
	sport       uint16
	ipv4        uint32 // hash of src, dst
	ipv4WithTCP uint32 // hash of src, dst, sport, dport
}{
	{[4]byte{161, 142, 100, 80}, 1766, [4]byte{66, 9, 149, 187}, 2794, 0x323e8fc2, 0x51ccc178},
	{[4]byte{65, 69, 140, 83}, 4739, [4]byte{199, 92, 111, 2}, 14230, 0xd718262a, 0xc626b0ea},
	{[4]byte{12, 22, 207, 184}, 38024, [4]byte{24, 19, 198, 95}, 12898, 0xd2d0a5de, 0x5c2b394a},
	{[4]byte{209, 142, 163, 6}, 2217, [4]byte{38, 27, 205, 30}, 48228, 0x82989176, 0xafc7327f},
	{[4]byte{202, 188, 127, 2}, 1303, [4]byte{153, 39, 163, 191}, 44251, 0x5d1809c5, 0x10e828a2},
}

// toeplitzRef is the hash exactly as the specification's pseudocode states it: for each input
// bit from the left, if it is 1, XOR in the left-most 32 bits of the key, then shift the key left
// by one bit. It is slow and obviously right; the tables are checked against it.
func toeplitzRef(key, input []byte) uint32 {
	keyBit := func(j int) uint32 {
		if j/8 >= len(key) {
			panic("toeplitzRef: key too short")
		}
		return uint32(key[j/8]>>(7-j%8)) & 1
	}
	var result uint32
	for j := range 8 * len(input) {
		if input[j/8]>>(7-j%8)&1 == 0 {
			continue
		}
		var window uint32
		for k := range 32 {
			window = window<<1 | keyBit(j+k)
		}
		result ^= window
	}
	return result
}

func toeplitzInput(src, dst [4]byte, sport, dport uint16) []byte {
	b := make([]byte, 0, 12)
	b = append(b, src[:]...)
	b = append(b, dst[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func mustToeplitz(tb testing.TB, key []byte) *Toeplitz {
	tb.Helper()
	tz, err := NewToeplitz(key)
	if err != nil {
		tb.Fatal(err)
	}
	return tz
}

func TestToeplitzMicrosoftVectors(t *testing.T) {
	tz := mustToeplitz(t, MicrosoftKey[:])
	for _, v := range toeplitzVectors {
		in := toeplitzInput(v.src, v.dst, v.sport, v.dport)
		checks := []struct {
			what      string
			got, want uint32
		}{
			{"HashIPv4", tz.HashIPv4(v.src, v.dst), v.ipv4},
			{"HashIPv4Ports", tz.HashIPv4Ports(v.src, v.dst, v.sport, v.dport), v.ipv4WithTCP},
			{"Hash(8 bytes)", tz.Hash(in[:8]), v.ipv4},
			{"Hash(12 bytes)", tz.Hash(in), v.ipv4WithTCP},
			{"reference(8 bytes)", toeplitzRef(MicrosoftKey[:], in[:8]), v.ipv4},
			{"reference(12 bytes)", toeplitzRef(MicrosoftKey[:], in), v.ipv4WithTCP},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("src %v:%d dst %v:%d: %s = %#08x, want %#08x", v.src, v.sport, v.dst, v.dport, c.what, c.got, c.want)
			}
		}
	}
}

func TestToeplitzKeyLength(t *testing.T) {
	for _, n := range []int{0, 4, 15, 257} {
		if _, err := NewToeplitz(make([]byte, n)); !errors.Is(err, ErrToeplitzKey) {
			t.Errorf("NewToeplitz(%d-byte key) error = %v, want ErrToeplitzKey", n, err)
		}
	}
	for _, n := range []int{16, 40, 52, 256} {
		tz, err := NewToeplitz(make([]byte, n))
		if err != nil {
			t.Errorf("NewToeplitz(%d-byte key): %v", n, err)
			continue
		}
		if tz.MaxInput() != n-4 {
			t.Errorf("%d-byte key: MaxInput() = %d, want %d", n, tz.MaxInput(), n-4)
		}
	}
	// The key is copied: changing the caller's slice afterwards changes nothing.
	key := MicrosoftKey
	tz := mustToeplitz(t, key[:])
	key[0] ^= 0xff
	v := toeplitzVectors[0]
	if got := tz.HashIPv4Ports(v.src, v.dst, v.sport, v.dport); got != v.ipv4WithTCP {
		t.Errorf("hash changed after the key slice was modified: %#08x", got)
	}
}

func TestToeplitzHashTooLongPanics(t *testing.T) {
	tz := mustToeplitz(t, MicrosoftKey[:])
	if got := tz.Hash(make([]byte, 36)); got != 0 {
		t.Errorf("hash of 36 zero bytes = %#x, want 0", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("Hash of 37 bytes with a 40-byte key did not panic")
		}
	}()
	tz.Hash(make([]byte, 37))
}

func TestToeplitzRandomAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 2000
	if testing.Short() {
		n = 300
	}
	for range n {
		key := make([]byte, 16+rng.IntN(48))
		for i := range key {
			key[i] = byte(rng.Uint32())
		}
		tz := mustToeplitz(t, key)
		in := make([]byte, rng.IntN(len(key)-3))
		for i := range in {
			in[i] = byte(rng.Uint32())
		}
		if got, want := tz.Hash(in), toeplitzRef(key, in); got != want {
			t.Fatalf("key %x input %x: Hash = %#08x, reference = %#08x", key, in, got, want)
		}
	}
}

func TestToeplitzSymmetricKey(t *testing.T) {
	tz := mustToeplitz(t, SymmetricKey[:])
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		var a, b [4]byte
		binary.BigEndian.PutUint32(a[:], rng.Uint32())
		binary.BigEndian.PutUint32(b[:], rng.Uint32())
		pa, pb := uint16(rng.Uint32()), uint16(rng.Uint32())
		if x, y := tz.HashIPv4Ports(a, b, pa, pb), tz.HashIPv4Ports(b, a, pb, pa); x != y {
			t.Fatalf("%v:%d -> %v:%d hashes to %#08x, the reverse to %#08x", a, pa, b, pb, x, y)
		}
		if x, y := tz.HashIPv4(a, b), tz.HashIPv4(b, a); x != y {
			t.Fatalf("%v -> %v hashes to %#08x, the reverse to %#08x", a, b, x, y)
		}
	}
}

func TestDefaultRETA(t *testing.T) {
	tests := []struct {
		queues  int
		wantLen int
	}{
		{0, 0}, {1, 128}, {2, 128}, {3, 128}, {16, 128}, {128, 128}, {200, 200},
	}
	for _, tt := range tests {
		r := DefaultRETA(tt.queues)
		if len(r) != tt.wantLen {
			t.Errorf("DefaultRETA(%d) has %d entries, want %d", tt.queues, len(r), tt.wantLen)
		}
		for i, q := range r {
			if int(q) != i%tt.queues {
				t.Fatalf("DefaultRETA(%d)[%d] = %d, want %d", tt.queues, i, q, i%tt.queues)
			}
		}
	}
	if q := RETA(nil).Queue(0xdeadbeef); q != 0 {
		t.Errorf("empty RETA: Queue = %d, want 0", q)
	}
	for _, r := range []RETA{DefaultRETA(4), {0, 1, 2}, {5}, DefaultRETA(200)} {
		for _, h := range []uint32{0, 1, 127, 128, 129, 0xdeadbeef, 0xffffffff} {
			if got, want := r.Queue(h), int(r[h%uint32(len(r))]); got != want {
				t.Errorf("RETA of %d entries: Queue(%#x) = %d, want %d", len(r), h, got, want)
			}
		}
	}
}

// pickRef is PickSourcePort written out the slow way: try every port in search order.
func pickRef(tz *Toeplitz, local, remote [4]byte, remotePort, lo, hi uint16, reta RETA, queue int, start uint16) (uint16, bool) {
	if lo > hi {
		return 0, false
	}
	n := int(hi) - int(lo) + 1
	first := int(start) - int(lo)
	if start < lo || start > hi {
		first = int(start) % n
	}
	for i := range n {
		p := uint16(int(lo) + (first+i)%n)
		if reta.Queue(tz.HashIPv4Ports(remote, local, remotePort, p)) == queue {
			return p, true
		}
	}
	return 0, false
}

func TestToeplitzPickSourcePort(t *testing.T) {
	tz := mustToeplitz(t, MicrosoftKey[:])
	local := [4]byte{198, 18, 0, 1}
	remote := [4]byte{198, 19, 0, 2}
	const rport = 80

	// A port that lands on queue 1 of 2 and one that does not, for the one-port ranges.
	reta2 := DefaultRETA(2)
	on1, ok1 := pickRef(tz, local, remote, rport, 40000, 40100, reta2, 1, 40000)
	on0, ok0 := pickRef(tz, local, remote, rport, 40000, 40100, reta2, 0, 40000)
	if !ok0 || !ok1 {
		t.Fatal("no port in 40000-40100 for one of the two queues")
	}

	tests := []struct {
		name      string
		lo, hi    uint16
		reta      RETA
		queue     int
		start     uint16
		wantFound bool
	}{
		{name: "2 queues, queue 0", lo: 32768, hi: 60999, reta: reta2, queue: 0, start: 32768, wantFound: true},
		{name: "2 queues, queue 1", lo: 32768, hi: 60999, reta: reta2, queue: 1, start: 32768, wantFound: true},
		{name: "4 queues, queue 3, mid start", lo: 1024, hi: 65535, reta: DefaultRETA(4), queue: 3, start: 50000, wantFound: true},
		{name: "16 queues, queue 15", lo: 1024, hi: 65535, reta: DefaultRETA(16), queue: 15, start: 65535, wantFound: true},
		{name: "full port range", lo: 0, hi: 65535, reta: DefaultRETA(8), queue: 5, start: 0, wantFound: true},
		{name: "one port that fits", lo: on1, hi: on1, reta: reta2, queue: 1, start: on1, wantFound: true},
		{name: "one port that does not fit", lo: on0, hi: on0, reta: reta2, queue: 1, start: on0, wantFound: false},
		{name: "start below range folds in", lo: 40000, hi: 40100, reta: reta2, queue: 1, start: 7, wantFound: true},
		{name: "start above range folds in", lo: 40000, hi: 40100, reta: reta2, queue: 0, start: 65000, wantFound: true},
		{name: "queue not in table", lo: 1024, hi: 65535, reta: DefaultRETA(4), queue: 4, start: 1024, wantFound: false},
		{name: "negative queue", lo: 1024, hi: 65535, reta: DefaultRETA(4), queue: -1, start: 1024, wantFound: false},
		{name: "empty range", lo: 2000, hi: 1999, reta: reta2, queue: 0, start: 2000, wantFound: false},
		{name: "no RSS, queue 0", lo: 1024, hi: 2048, reta: nil, queue: 0, start: 1500, wantFound: true},
		{name: "no RSS, queue 1", lo: 1024, hi: 2048, reta: nil, queue: 1, start: 1500, wantFound: false},
		{name: "uneven table", lo: 1024, hi: 65535, reta: RETA{0, 1, 2, 0, 1}, queue: 2, start: 9999, wantFound: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := tz.PickSourcePort(local, remote, rport, tt.lo, tt.hi, tt.reta, tt.queue, tt.start)
			if ok != tt.wantFound {
				t.Fatalf("PickSourcePort = %d, %v; want found = %v", p, ok, tt.wantFound)
			}
			wantP, wantOK := pickRef(tz, local, remote, rport, tt.lo, tt.hi, tt.reta, tt.queue, tt.start)
			if p != wantP || ok != wantOK {
				t.Errorf("PickSourcePort = %d, %v; the first fit in search order is %d, %v", p, ok, wantP, wantOK)
			}
			if !ok {
				return
			}
			if p < tt.lo || p > tt.hi {
				t.Errorf("port %d outside [%d, %d]", p, tt.lo, tt.hi)
			}
			// The receiving side hashes the returning packet: remote -> local, sport = remote port.
			h := tz.HashIPv4Ports(remote, local, rport, p)
			if q := tt.reta.Queue(h); q != tt.queue {
				t.Errorf("port %d: returning packets hash to %#08x, queue %d, want queue %d", p, h, q, tt.queue)
			}
		})
	}
}

func TestToeplitzPickSourcePortSpreads(t *testing.T) {
	// Successive calls, each starting past the last port, hand out distinct ports that all fit.
	tz := mustToeplitz(t, MicrosoftKey[:])
	reta := DefaultRETA(4)
	local, remote := [4]byte{198, 18, 0, 1}, [4]byte{198, 19, 0, 2}
	seen := map[uint16]bool{}
	start := uint16(49152)
	for range 200 {
		p, ok := tz.PickSourcePort(local, remote, 443, 49152, 65535, reta, 2, start)
		if !ok {
			t.Fatal("no port found")
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if q := reta.Queue(tz.HashIPv4Ports(remote, local, 443, p)); q != 2 {
			t.Fatalf("port %d lands on queue %d", p, q)
		}
		start = p + 1
	}
}

func TestToeplitzAllocs(t *testing.T) {
	tz := mustToeplitz(t, MicrosoftKey[:])
	v := toeplitzVectors[0]
	in := toeplitzInput(v.src, v.dst, v.sport, v.dport)
	reta := DefaultRETA(4)
	var sink uint32
	checks := map[string]func(){
		"Hash":          func() { sink ^= tz.Hash(in) },
		"HashIPv4":      func() { sink ^= tz.HashIPv4(v.src, v.dst) },
		"HashIPv4Ports": func() { sink ^= tz.HashIPv4Ports(v.src, v.dst, v.sport, v.dport) },
		"RETA.Queue":    func() { sink ^= uint32(reta.Queue(sink)) },
		"PickSourcePort": func() {
			p, _ := tz.PickSourcePort(v.dst, v.src, v.sport, 1024, 65535, reta, 3, 5000)
			sink ^= uint32(p)
		},
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
	_ = sink
}

func BenchmarkToeplitzHashIPv4Ports(b *testing.B) {
	tz := mustToeplitz(b, MicrosoftKey[:])
	src, dst := [4]byte{198, 18, 0, 1}, [4]byte{198, 19, 0, 2}
	var h uint32
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h ^= tz.HashIPv4Ports(src, dst, uint16(i), 443)
	}
	_ = h
}

func BenchmarkToeplitzHash36(b *testing.B) {
	tz := mustToeplitz(b, MicrosoftKey[:])
	in := make([]byte, 36) // IPv6 addresses and ports
	var h uint32
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		in[35] = byte(i)
		h ^= tz.Hash(in)
	}
	_ = h
}

func BenchmarkToeplitzPickSourcePort(b *testing.B) {
	tz := mustToeplitz(b, MicrosoftKey[:])
	reta := DefaultRETA(16)
	local, remote := [4]byte{198, 18, 0, 1}, [4]byte{198, 19, 0, 2}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, ok := tz.PickSourcePort(local, remote, 443, 1024, 65535, reta, i%16, uint16(i)); !ok {
			b.Fatal("no port")
		}
	}
}

// FuzzToeplitzHash checks the table-driven hash against the bit-by-bit reference for arbitrary
// keys and inputs, and the fixed-layout helpers against Hash.
func FuzzToeplitzHash(f *testing.F) {
	for _, v := range toeplitzVectors {
		f.Add(MicrosoftKey[:], toeplitzInput(v.src, v.dst, v.sport, v.dport))
	}
	f.Add(SymmetricKey[:], make([]byte, 36))
	f.Add([]byte{}, []byte{0xff})
	f.Add(make([]byte, 300), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, key, input []byte) {
		if len(key) < toeplitzMinKey {
			key = append(key, MicrosoftKey[:toeplitzMinKey-len(key)]...)
		}
		key = key[:min(len(key), toeplitzMaxKey)]
		input = input[:min(len(input), len(key)-4)]
		tz, err := NewToeplitz(key)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tz.Hash(input), toeplitzRef(key, input); got != want {
			t.Fatalf("key %x input %x: Hash = %#08x, reference = %#08x", key, input, got, want)
		}
		if len(input) >= 12 {
			src, dst := [4]byte(input[0:4]), [4]byte(input[4:8])
			sport, dport := binary.BigEndian.Uint16(input[8:]), binary.BigEndian.Uint16(input[10:])
			if got, want := tz.HashIPv4(src, dst), tz.Hash(input[:8]); got != want {
				t.Fatalf("HashIPv4 = %#08x, Hash of 8 bytes = %#08x", got, want)
			}
			if got, want := tz.HashIPv4Ports(src, dst, sport, dport), tz.Hash(input[:12]); got != want {
				t.Fatalf("HashIPv4Ports = %#08x, Hash of 12 bytes = %#08x", got, want)
			}
		}
	})
}
