package echo_test

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/stack"
	"github.com/netchan/netchan/stack/header"
)

func init() { nschild.Register("rawframes", rawFramesMain) }

// rawFramesMain (peer side): iface file repeat → sends every frame of file (one hex frame per
// line) repeat times through a packet socket, as they are: no kernel stack fixes them up.
func rawFramesMain(args []string) error {
	ifi, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	repeat, _ := strconv.Atoi(args[2])
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
	sent := 0
	for r := 0; r < repeat; r++ {
		for _, line := range strings.Fields(string(raw)) {
			f, err := hex.DecodeString(line)
			if err != nil {
				return err
			}
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return fmt.Errorf("sending a %d-byte frame: %w", len(f), err)
			}
			sent++
			if sent%64 == 0 {
				time.Sleep(time.Millisecond) // stay under the rx ring, so drops are the stack's
			}
		}
	}
	fmt.Println(sent)
	return nil
}

// malformed builds hostile frames from peer (mac, addr) to netchan's address on its MAC: every
// layer truncated or inconsistent, bad checksums, option overflows, overlapping and oversized
// fragments (teardrop), a land SYN. Each is named for the log.
func malformed(peerMAC, ourMAC net.HardwareAddr, peer, ours netip.Addr) map[string][]byte {
	eth := func(typ uint16, payload []byte) []byte {
		f := make([]byte, 14+len(payload))
		copy(f[0:6], ourMAC)
		copy(f[6:12], peerMAC)
		binary.BigEndian.PutUint16(f[12:14], typ)
		copy(f[14:], payload)
		return f
	}
	ipv4 := func(proto uint8, src, dst netip.Addr, id, fragField uint16, opts, payload []byte, fix func(ip []byte)) []byte {
		ihl := 20 + len(opts)
		ip := make([]byte, ihl+len(payload))
		ip[0] = 0x40 | byte(ihl/4)
		binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)))
		binary.BigEndian.PutUint16(ip[4:6], id)
		binary.BigEndian.PutUint16(ip[6:8], fragField)
		ip[8], ip[9] = 64, proto
		s4, d4 := src.As4(), dst.As4()
		copy(ip[12:16], s4[:])
		copy(ip[16:20], d4[:])
		copy(ip[20:], opts)
		copy(ip[ihl:], payload)
		header.IPv4(ip).FixChecksum()
		if fix != nil {
			fix(ip)
		}
		return eth(0x0800, ip)
	}
	udp := func(sport, dport uint16, payload []byte, fix func(u []byte)) []byte {
		u := make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(u[0:2], sport)
		binary.BigEndian.PutUint16(u[2:4], dport)
		binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
		copy(u[8:], payload)
		if fix != nil {
			fix(u)
		}
		return u
	}
	tcp := func(flags byte, dataOff int, opts []byte, payload []byte) []byte {
		t := make([]byte, 20+len(opts)+len(payload))
		binary.BigEndian.PutUint16(t[0:2], 40000)
		binary.BigEndian.PutUint16(t[2:4], 7)
		binary.BigEndian.PutUint32(t[4:8], 1)
		t[12] = byte(dataOff << 4)
		t[13] = flags
		binary.BigEndian.PutUint16(t[14:16], 65535)
		copy(t[20:], opts)
		copy(t[20+len(opts):], payload)
		return t
	}
	withTCPSum := func(t []byte, src, dst netip.Addr) []byte {
		s4, d4 := src.As4(), dst.As4()
		sum := header.Checksum(t, header.PseudoHeaderSum4(s4, d4, header.ProtoTCP, len(t)))
		binary.BigEndian.PutUint16(t[16:18], sum)
		return t
	}
	pad := make([]byte, 64)
	fr := map[string][]byte{
		"ip-version-6":       ipv4(17, peer, ours, 1, 0, nil, udp(40000, 7, pad, nil), func(ip []byte) { ip[0] = 0x65 }),
		"ip-ihl-4":           ipv4(17, peer, ours, 2, 0, nil, udp(40000, 7, pad, nil), func(ip []byte) { ip[0] = 0x44 }),
		"ip-ihl-beyond":      ipv4(17, peer, ours, 3, 0, nil, udp(40000, 7, nil, nil), func(ip []byte) { ip[0] = 0x4f }),
		"ip-len-beyond":      ipv4(17, peer, ours, 4, 0, nil, udp(40000, 7, pad, nil), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:4], 1500) }),
		"ip-len-short":       ipv4(17, peer, ours, 5, 0, nil, udp(40000, 7, pad, nil), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:4], 12) }),
		"ip-bad-checksum":    ipv4(17, peer, ours, 6, 0, nil, udp(40000, 7, pad, nil), func(ip []byte) { ip[10] ^= 0xff }),
		"ip-option-overflow": ipv4(17, peer, ours, 7, 0, []byte{7, 40, 4, 0}, udp(40000, 7, pad, nil), nil),
		"udp-len-beyond":     ipv4(17, peer, ours, 8, 0, nil, udp(40000, 7, pad, func(u []byte) { binary.BigEndian.PutUint16(u[4:6], 900) }), nil),
		"udp-len-short":      ipv4(17, peer, ours, 9, 0, nil, udp(40000, 7, pad, func(u []byte) { binary.BigEndian.PutUint16(u[4:6], 3) }), nil),
		"udp-bad-checksum":   ipv4(17, peer, ours, 10, 0, nil, udp(40000, 7, pad, func(u []byte) { u[6], u[7] = 0xde, 0xad }), nil),
		"udp-truncated":      ipv4(17, peer, ours, 11, 0, nil, []byte{0x9c, 0x40, 0}, nil),
		"tcp-offset-short":   ipv4(6, peer, ours, 12, 0, nil, withTCPSum(tcp(0x02, 4, nil, nil), peer, ours), nil),
		"tcp-offset-beyond":  ipv4(6, peer, ours, 13, 0, nil, withTCPSum(tcp(0x02, 15, nil, nil), peer, ours), nil),
		"tcp-bad-checksum":   ipv4(6, peer, ours, 14, 0, nil, tcp(0x02, 5, nil, nil), nil),
		"tcp-syn-fin":        ipv4(6, peer, ours, 15, 0, nil, withTCPSum(tcp(0x03, 5, nil, nil), peer, ours), nil),
		"tcp-option-overflow": ipv4(6, peer, ours, 16, 0, nil,
			withTCPSum(tcp(0x02, 6, []byte{2, 40, 5, 0xb4}, nil), peer, ours), nil), // MSS option claims 40 bytes
		"tcp-truncated":     ipv4(6, peer, ours, 17, 0, nil, []byte{0x9c, 0x40, 0, 7, 0, 0}, nil),
		"land-syn":          ipv4(6, ours, ours, 18, 0, nil, withTCPSum(tcp(0x02, 5, nil, nil), ours, ours), nil),
		"icmp-truncated":    ipv4(1, peer, ours, 19, 0, nil, []byte{8, 0, 0}, nil),
		"icmp-bad-checksum": ipv4(1, peer, ours, 20, 0, nil, []byte{8, 0, 0xde, 0xad, 0, 1, 0, 1, 'x'}, nil),
		// Teardrop: the second fragment starts inside the first.
		"frag-overlap-1": ipv4(17, peer, ours, 21, 0x2000, nil, udp(40000, 7, make([]byte, 40), nil), nil),
		"frag-overlap-2": ipv4(17, peer, ours, 21, 0x0002, nil, make([]byte, 40), nil),
		// A fragment whose end passes 65535 bytes.
		"frag-oversized": ipv4(17, peer, ours, 22, 0x1fff, nil, make([]byte, 64), nil),
		// A tiny first fragment: not even the UDP header.
		"frag-tiny":       ipv4(17, peer, ours, 23, 0x2000, nil, []byte{0x9c, 0x40}, nil),
		"arp-truncated":   eth(0x0806, []byte{0, 1, 8, 0, 6, 4, 0, 1}),
		"arp-bad-lengths": eth(0x0806, append([]byte{0, 1, 8, 0, 7, 4, 0, 1}, make([]byte, 20)...)),
	}
	return fr
}

// TestLabMalformed sends hostile frames at netchan's echo host from a packet socket in the
// peer's namespace, many times over: netchan stays up, every frame that reached it is dropped
// with a named reason or answered (never left undecided), and it keeps serving ping and UDP echo.
func TestLabMalformed(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 1})
	ep := l.Netchan[0]
	peer := ep.Peer
	noKernelIPv4(t, ep.Iface)
	e, in := startEcho(t, ep, stack.Config{})
	_ = e
	frames := malformed(peer.MAC, ep.MAC, peer.Addr.Addr(), ep.Addr.Addr())
	var names []string
	var lines []string
	for name, f := range frames {
		names = append(names, name)
		lines = append(lines, hex.EncodeToString(f))
	}
	sort.Strings(names)
	file := filepath.Join(t.TempDir(), "frames.hex")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	ping(t, peer.NS, ep.Addr.Addr().String(), 2, 56) // ARP settled before counting
	before := in.Snapshot()[0]
	const repeat = 200
	out := runChild(t, peer.NS, 2*time.Minute, "rawframes", peer.Iface, file, strconv.Itoa(repeat))
	t.Logf("sent %s frames (%d kinds × %d): %s", out, len(frames), repeat, strings.Join(names, ", "))
	deadline := time.Now().Add(5 * time.Second)
	var after = in.Snapshot()[0]
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		after = in.Snapshot()[0]
		if after.RxPackets-before.RxPackets >= uint64(len(frames)*repeat)/2 {
			break
		}
	}
	rx := after.RxPackets - before.RxPackets
	drops := map[string]uint64{}
	var dropped uint64
	for r, n := range after.Drops {
		if d := n - before.Drops[r]; d > 0 {
			drops[r] = d
			dropped += d
		}
	}
	t.Logf("netchan received %d of them (the XDP program passes what it cannot parse to the kernel); dropped %d by reason %v; transmitted %d",
		rx, dropped, drops, after.TxPackets-before.TxPackets)
	if rx == 0 {
		t.Fatal("none of the malformed frames reached netchan: the test tests nothing")
	}
	if drops["no-verdict"] > 0 {
		t.Errorf("%d frames were left undecided: every drop must have a reason", drops["no-verdict"])
	}
	if dropped == 0 {
		t.Error("no drops counted for malformed frames")
	}
	// Still serving.
	ping(t, peer.NS, ep.Addr.Addr().String(), 3, 56)
	res := runChild(t, peer.NS, time.Minute, "udpclient", ep.Addr.Addr().String()+":7", "200", "512")
	if !strings.Contains(res, `"OK":200`) {
		t.Errorf("UDP echo after the malformed frames: %s", res)
	}
}
