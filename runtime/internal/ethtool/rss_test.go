package ethtool

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/pipelines"
)

func table(n, queues int) []uint32 {
	t := make([]uint32, n)
	for i := range t {
		t[i] = uint32(i % queues)
	}
	return t
}

const sdfn = FieldIPSrc | FieldIPDst | FieldL4B01 | FieldL4B23

func TestDescribe(t *testing.T) {
	nic := RSSConfig{Iface: "eth1", Driver: "mlx5_core", Supported: true, HashFunc: "toeplitz", HashBits: 1,
		Key: pipelines.MicrosoftKey[:], Indir: table(128, 4), RxRings: 4,
		TCP4: FlowHash{Fields: sdfn, Known: true}, UDP4: FlowHash{Fields: sdfn, Known: true}}
	udpAddrs := nic
	udpAddrs.RxRings = 8
	udpAddrs.UDP4 = FlowHash{Fields: FieldIPSrc | FieldIPDst, Known: true}
	symXor := nic
	symXor.InputXfrm = XfrmSymXor
	symXor.Key = make([]byte, 52)
	copy(symXor.Key, pipelines.MicrosoftKey[:])
	symKey := nic
	symKey.Key = pipelines.SymmetricKey[:]
	unknown := nic
	unknown.Indir = table(64, 1)
	unknown.RxRings = 0
	unknown.HashFunc = ""
	unknown.TCP4 = FlowHash{Err: unix.EOPNOTSUPP}
	unknown.UDP4 = FlowHash{Err: unix.EOPNOTSUPP}
	asym := nic
	asym.Key = pipelines.SymmetricKey[:]
	asym.TCP4 = FlowHash{Fields: FieldIPSrc | FieldIPDst | FieldL4B01, Known: true}

	for _, c := range []struct {
		name string
		c    RSSConfig
		want string
		sym  bool
	}{
		{"veth", RSSConfig{Iface: "ncv0", Driver: "veth", Reason: unix.EOPNOTSUPP}, "no RSS (veth): the owner function is the software hash", false},
		{"lo", RSSConfig{Iface: "lo"}, "no RSS (lo): the owner function is the software hash", false},
		{"nic", nic, "toeplitz, key 40 bytes, 128-entry table over 4 queues, UDP ports hashed", false},
		{"udp on addresses", udpAddrs, "toeplitz, key 40 bytes, 128-entry table over 4 of 8 queues, UDP ports not hashed (ip-src+ip-dst)", false},
		{"symmetric-xor", symXor, "toeplitz with symmetric-xor, key 52 bytes, 128-entry table over 4 queues, UDP ports hashed", true},
		{"symmetric key", symKey, "toeplitz, key 40 bytes (symmetric), 128-entry table over 4 queues, UDP ports hashed", true},
		{"not reported", unknown, "hash function not reported, key 40 bytes, 64-entry table over 1 queue, UDP hash fields not reported", false},
		{"asymmetric fields", asym, "toeplitz, key 40 bytes (symmetric), 128-entry table over 4 queues, TCP ports not hashed (ip-src+ip-dst+sport), UDP ports hashed", false},
	} {
		if got := Describe(c.c); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
		if got := c.c.Symmetric(); got != c.sym {
			t.Errorf("%s: Symmetric() = %v, want %v", c.name, got, c.sym)
		}
	}
	if !nic.UDPPortsHashed() || !nic.TCPPortsHashed() || udpAddrs.UDPPortsHashed() || unknown.UDPPortsHashed() {
		t.Errorf("UDPPortsHashed: nic %v, addresses only %v, not reported %v", nic.UDPPortsHashed(), udpAddrs.UDPPortsHashed(), unknown.UDPPortsHashed())
	}
	if q := udpAddrs.Queues(); len(q) != 4 || q[0] != 0 || q[3] != 3 {
		t.Errorf("Queues() = %v", q)
	}
}

func TestNoRSSError(t *testing.T) {
	c := RSSConfig{Iface: "ncv0", Driver: "veth", Reason: fmt.Errorf("ETHTOOL_GRSSH: %w", unix.EOPNOTSUPP)}
	err := c.Err()
	if want := "ethtool: veth has no RSS: ncv0: ETHTOOL_GRSSH: operation not supported"; err == nil || err.Error() != want {
		t.Errorf("Err() = %v, want %q", err, want)
	}
	if !errors.Is(err, ErrNoRSS) || !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("%v: errors.Is ErrNoRSS %v, EOPNOTSUPP %v", err, errors.Is(err, ErrNoRSS), errors.Is(err, unix.EOPNOTSUPP))
	}
	var nr *NoRSSError
	if !errors.As(fmt.Errorf("doctor: %w", err), &nr) || nr.Driver != "veth" {
		t.Errorf("errors.As: %v", nr)
	}
	if err := (RSSConfig{Supported: true}).Err(); err != nil {
		t.Errorf("Err() of a device with RSS = %v", err)
	}
}

// TestSymmetricKeyTiling: the key SetSymmetricRSS writes is pipelines.SymmetricKey, repeated to
// the device's key size, and a Toeplitz hash with it gives both directions the same hash.
func TestSymmetricKeyTiling(t *testing.T) {
	if k := symmetricKey(40); string(k) != string(pipelines.SymmetricKey[:]) {
		t.Errorf("symmetricKey(40) = %x", k)
	}
	if keyIs16BitPeriodic(pipelines.MicrosoftKey[:]) {
		t.Error("the Microsoft key reads as symmetric")
	}
	for _, n := range []int{40, 52} {
		k := symmetricKey(n)
		if len(k) != n || !keyIs16BitPeriodic(k) {
			t.Fatalf("symmetricKey(%d) = %x", n, k)
		}
		tz, err := pipelines.NewToeplitz(k)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []struct {
			a, b   [4]byte
			pa, pb uint16
		}{{[4]byte{10, 0, 0, 1}, [4]byte{192, 168, 7, 9}, 40000, 80}, {[4]byte{1, 2, 3, 4}, [4]byte{5, 6, 7, 8}, 1, 65535}} {
			if x, y := tz.HashIPv4Ports(f.a, f.b, f.pa, f.pb), tz.HashIPv4Ports(f.b, f.a, f.pb, f.pa); x != y {
				t.Errorf("key of %d bytes: %v:%d>%v:%d hashes %#x, the reply %#x", n, f.a, f.pa, f.b, f.pb, x, y)
			}
		}
	}
}

func TestFlowFields(t *testing.T) {
	for _, c := range []struct {
		f            FlowFields
		s            string
		ports, addrs bool
		symmetric    bool
	}{
		{0, "none", false, false, true},
		{sdfn, "ip-src+ip-dst+sport+dport", true, true, true},
		{FieldIPSrc | FieldIPDst, "ip-src+ip-dst", false, true, true},
		{FieldIPSrc, "ip-src", false, false, false},
		{FieldL2DA | FieldVLAN | FieldL3Proto | FieldGTPTEID | 1<<20, "l2da+vlan+l3-proto+gtp-teid+0x100000", false, false, true},
	} {
		if c.f.String() != c.s || c.f.Ports() != c.ports || c.f.Addresses() != c.addrs || c.f.Symmetric() != c.symmetric {
			t.Errorf("%#x: %q ports %v addresses %v symmetric %v, want %q %v %v %v", uint64(c.f),
				c.f.String(), c.f.Ports(), c.f.Addresses(), c.f.Symmetric(), c.s, c.ports, c.addrs, c.symmetric)
		}
	}
}

// vethInNS makes a namespace with a veth pair in it (a with 2 rx and 3 tx queues) and removes
// both when the test ends (deleting the namespace deletes the pair).
func vethInNS(t *testing.T) (h netns.NsHandle, a string) {
	t.Helper()
	requireRoot(t)
	const ns, b = "ncrsstest", "ncrssb0"
	a = "ncrssa0"
	exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", ns, err, out)
		}
	})
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	la := netlink.NewLinkAttrs()
	la.Name, la.NumRxQueues, la.NumTxQueues = a, 2, 3
	if err := nh.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: b}); err != nil {
		t.Fatalf("veth %s/%s in %s: %v", a, b, ns, err)
	}
	return h, a
}

// inNS runs f on a thread in namespace h, where the ioctl socket of RSS and SetSymmetricRSS is
// then made, and brings the thread back.
func inNS(t *testing.T, h netns.NsHandle, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread stays locked, so it ends with this goroutine instead of serving others.
			t.Errorf("back to the test's namespace: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	f()
}

// TestRSSVeth: veth has no RSS. The kernel answers ETHTOOL_GRSSH with EOPNOTSUPP (veth has no
// get_rxfh); RSS says so without an error, with the driver's name, and still reads the queues.
// The ethtool binary agrees. A device of another namespace is an error (ENODEV), not "no RSS".
func TestRSSVeth(t *testing.T) {
	h, a := vethInNS(t)
	var c RSSConfig
	var err error
	var hashFuncs []string
	inNS(t, h, func() {
		c, err = RSS(a)
		s, serr := open()
		if serr != nil {
			t.Fatal(serr)
		}
		defer s.close()
		hashFuncs, serr = s.stringSet(a, ethSSRSSHashFuncs, maxHashFuncs)
		if serr != nil {
			t.Errorf("ETH_SS_RSS_HASH_FUNCS of %s: %v", a, serr)
		}
	})
	if err != nil {
		t.Fatalf("RSS(%s) = %v, want no error for a device without RSS", a, err)
	}
	if c.Supported || c.Driver != "veth" || !errors.Is(c.Reason, unix.EOPNOTSUPP) || !strings.Contains(fmt.Sprint(c.Reason), "ETHTOOL_GRSSH") {
		t.Errorf("RSS(%s) = %+v, want Supported false, driver veth, reason ETHTOOL_GRSSH: EOPNOTSUPP", a, c)
	}
	if c.Key != nil || c.Indir != nil || c.HashFunc != "" || c.RxRings != 0 || c.UDP4.Known || c.UDPPortsHashed() {
		t.Errorf("RSS(%s) has RSS fields set without RSS: %+v", a, c)
	}
	if want := (Channels{MaxRX: 2, MaxTX: 3, RX: 2, TX: 3}); c.Channels != want || c.Channels.RxQueues() != 2 {
		t.Errorf("channels %+v, want %+v", c.Channels, want)
	}
	if got, want := Describe(c), "no RSS (veth): the owner function is the software hash"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	if err := c.Err(); !errors.Is(err, ErrNoRSS) || !errors.Is(err, unix.EOPNOTSUPP) ||
		err.Error() != "ethtool: veth has no RSS: ncrssa0: ETHTOOL_GRSSH: operation not supported" {
		t.Errorf("Err() = %v", err)
	}
	if strings.Join(hashFuncs, ",") != strings.Join(fallbackHashFuncs, ",") {
		t.Errorf("the kernel names the hash functions %q; this package's fallback says %q", hashFuncs, fallbackHashFuncs)
	}

	out, xerr := exec.Command("ip", "netns", "exec", "ncrsstest", "ethtool", "-x", a).CombinedOutput()
	if xerr == nil || !strings.Contains(string(out), "Operation not supported") {
		t.Errorf("ethtool -x %s (the test needs ethtool): %v %s; want it to fail with Operation not supported", a, xerr, out)
	}

	if _, err := RSS(a); !errors.Is(err, unix.ENODEV) {
		t.Errorf("RSS(%s) from outside its namespace = %v, want ENODEV", a, err)
	}
}

// TestSetSymmetricRSSVeth: asking veth for a symmetric hash fails, clearly, and the kernel's set
// path (ETHTOOL_SRSSH) refuses it as well.
func TestSetSymmetricRSSVeth(t *testing.T) {
	h, a := vethInNS(t)
	var err, raw error
	inNS(t, h, func() {
		err = SetSymmetricRSS(a)
		s, serr := open()
		if serr != nil {
			t.Fatal(serr)
		}
		defer s.close()
		raw = s.ioctl(a, rxfh{cmd: unix.ETHTOOL_SRSSH, indirSize: rxfhIndirNoChange, inputXfrm: uint8(XfrmSymXor)}.encode(nil, nil))
	})
	if err == nil || !errors.Is(err, ErrNoRSS) || !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "veth has no RSS") {
		t.Errorf("SetSymmetricRSS(%s) = %v, want \"veth has no RSS\" matching ErrNoRSS and EOPNOTSUPP", a, err)
	}
	if !errors.Is(raw, unix.EOPNOTSUPP) {
		t.Errorf("ETHTOOL_SRSSH symmetric-xor on veth = %v, want EOPNOTSUPP", raw)
	}
}
