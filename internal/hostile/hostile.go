// Package hostile builds malformed and hostile IPv4 frames for lab tests (truncated and
// inconsistent headers at every layer, bad checksums, option overflows, teardrop, oversized
// and tiny fragments, land), and sends frames exactly as built through a packet socket, so no
// kernel stack fixes them on the way. Frames above the link's MTU cannot cross a veth; the
// fuzz targets and in-memory tests cover those.
package hostile

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/stack/header"
)

// Target says who sends the frames and to whom.
type Target struct {
	SrcMAC, DstMAC net.HardwareAddr // the sender's MAC and netchan's
	Src, Dst       netip.Addr       // the sender, and where the IPv4 packets go
	Self           netip.Addr       // netchan's own address on the link: the land frames' source and destination
	Port           uint16           // the UDP and TCP destination port
}

// Frames builds the hostile frames for t, each named for the log.
func Frames(t Target) map[string][]byte {
	eth := func(typ uint16, payload []byte) []byte {
		f := make([]byte, 14+len(payload))
		copy(f[0:6], t.DstMAC)
		copy(f[6:12], t.SrcMAC)
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
	udp := func(payload []byte, fix func(u []byte)) []byte {
		u := make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(u[0:2], 40000)
		binary.BigEndian.PutUint16(u[2:4], t.Port)
		binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
		copy(u[8:], payload)
		if fix != nil {
			fix(u)
		}
		return u
	}
	tcp := func(flags byte, dataOff int, opts []byte) []byte {
		b := make([]byte, 20+len(opts))
		binary.BigEndian.PutUint16(b[0:2], 40000)
		binary.BigEndian.PutUint16(b[2:4], t.Port)
		binary.BigEndian.PutUint32(b[4:8], 1)
		b[12] = byte(dataOff << 4)
		b[13] = flags
		binary.BigEndian.PutUint16(b[14:16], 65535)
		copy(b[20:], opts)
		return b
	}
	withTCPSum := func(b []byte, src, dst netip.Addr) []byte {
		s4, d4 := src.As4(), dst.As4()
		binary.BigEndian.PutUint16(b[16:18], header.Checksum(b, header.PseudoHeaderSum4(s4, d4, header.ProtoTCP, len(b))))
		return b
	}
	src, dst, self := t.Src, t.Dst, t.Self
	pad := make([]byte, 64)
	return map[string][]byte{
		"ip-version-6":       ipv4(17, src, dst, 1, 0, nil, udp(pad, nil), func(ip []byte) { ip[0] = 0x65 }),
		"ip-ihl-4":           ipv4(17, src, dst, 2, 0, nil, udp(pad, nil), func(ip []byte) { ip[0] = 0x44 }),
		"ip-ihl-beyond":      ipv4(17, src, dst, 3, 0, nil, udp(nil, nil), func(ip []byte) { ip[0] = 0x4f }),
		"ip-len-beyond":      ipv4(17, src, dst, 4, 0, nil, udp(pad, nil), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:4], 1500) }),
		"ip-len-short":       ipv4(17, src, dst, 5, 0, nil, udp(pad, nil), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:4], 12) }),
		"ip-bad-checksum":    ipv4(17, src, dst, 6, 0, nil, udp(pad, nil), func(ip []byte) { ip[10] ^= 0xff }),
		"ip-option-overflow": ipv4(17, src, dst, 7, 0, []byte{7, 40, 4, 0}, udp(pad, nil), nil),
		"udp-len-beyond":     ipv4(17, src, dst, 8, 0, nil, udp(pad, func(u []byte) { binary.BigEndian.PutUint16(u[4:6], 900) }), nil),
		"udp-len-short":      ipv4(17, src, dst, 9, 0, nil, udp(pad, func(u []byte) { binary.BigEndian.PutUint16(u[4:6], 3) }), nil),
		"udp-bad-checksum":   ipv4(17, src, dst, 10, 0, nil, udp(pad, func(u []byte) { u[6], u[7] = 0xde, 0xad }), nil),
		"udp-truncated":      ipv4(17, src, dst, 11, 0, nil, []byte{0x9c, 0x40, 0}, nil),
		"tcp-offset-short":   ipv4(6, src, dst, 12, 0, nil, withTCPSum(tcp(0x02, 4, nil), src, dst), nil),
		"tcp-offset-beyond":  ipv4(6, src, dst, 13, 0, nil, withTCPSum(tcp(0x02, 15, nil), src, dst), nil),
		"tcp-bad-checksum":   ipv4(6, src, dst, 14, 0, nil, tcp(0x02, 5, nil), nil),
		"tcp-syn-fin":        ipv4(6, src, dst, 15, 0, nil, withTCPSum(tcp(0x03, 5, nil), src, dst), nil),
		// The MSS option claims 40 bytes.
		"tcp-option-overflow": ipv4(6, src, dst, 16, 0, nil, withTCPSum(tcp(0x02, 6, []byte{2, 40, 5, 0xb4}), src, dst), nil),
		"tcp-truncated":       ipv4(6, src, dst, 17, 0, nil, []byte{0x9c, 0x40, 0, 7, 0, 0}, nil),
		"land-syn":            ipv4(6, self, self, 18, 0, nil, withTCPSum(tcp(0x02, 5, nil), self, self), nil),
		"icmp-truncated":      ipv4(1, src, dst, 19, 0, nil, []byte{8, 0, 0}, nil),
		"icmp-bad-checksum":   ipv4(1, src, dst, 20, 0, nil, []byte{8, 0, 0xde, 0xad, 0, 1, 0, 1, 'x'}, nil),
		// An ICMP error quoting too little of a packet to say which flow it is about.
		"icmp-error-short-quote": ipv4(1, src, dst, 24, 0, nil, icmpSum([]byte{3, 3, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 28}), nil),
		// Teardrop: the second fragment starts inside the first.
		"frag-overlap-1": ipv4(17, src, dst, 21, 0x2000, nil, udp(make([]byte, 40), nil), nil),
		"frag-overlap-2": ipv4(17, src, dst, 21, 0x0002, nil, make([]byte, 40), nil),
		// A fragment whose end passes 65535 bytes.
		"frag-oversized": ipv4(17, src, dst, 22, 0x1fff, nil, make([]byte, 64), nil),
		// A tiny first fragment: not even the UDP header.
		"frag-tiny":       ipv4(17, src, dst, 23, 0x2000, nil, []byte{0x9c, 0x40}, nil),
		"arp-truncated":   eth(0x0806, []byte{0, 1, 8, 0, 6, 4, 0, 1}),
		"arp-bad-lengths": eth(0x0806, append([]byte{0, 1, 8, 0, 7, 4, 0, 1}, make([]byte, 20)...)),
	}
}

func icmpSum(m []byte) []byte {
	binary.BigEndian.PutUint16(m[2:4], header.Checksum(m, 0))
	return m
}

// UDP is a well-formed Ethernet/IPv4/UDP frame from src (on srcMAC) to dst (on dstMAC), its
// checksums right: for floods and spoofed sources.
func UDP(srcMAC, dstMAC net.HardwareAddr, src, dst netip.AddrPort, payload []byte) []byte {
	n := header.IPv4MinLen + header.UDPLen + len(payload)
	f := make([]byte, header.EthernetLen+n)
	header.EncodeEthernet(f, [6]byte(dstMAC), [6]byte(srcMAC), header.EtherTypeIPv4)
	ip := header.EncodeIPv4(f[header.EthernetLen:], header.IPv4Fields{TotalLength: n, TTL: 64, Protocol: header.ProtoUDP, Src: src.Addr(), Dst: dst.Addr()})
	copy(ip.Payload()[header.UDPLen:], payload)
	header.EncodeUDP(ip.Payload(), src.Port(), dst.Port(), len(payload)).FixChecksum(src.Addr(), dst.Addr())
	return f
}

// WriteFrames writes frames to path, one hex frame a line: the file SendMain reads.
func WriteFrames(path string, frames ...[]byte) error {
	lines := make([]string, len(frames))
	for i, f := range frames {
		lines[i] = hex.EncodeToString(f)
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644)
}

// WriteFile writes the frames of a map (Frames) to path in the order of their sorted names,
// which it returns.
func WriteFile(path string, frames map[string][]byte) ([]string, error) {
	names := make([]string, 0, len(frames))
	for name := range frames {
		names = append(names, name)
	}
	sort.Strings(names)
	list := make([][]byte, len(names))
	for i, name := range names {
		list[i] = frames[name]
	}
	return names, WriteFrames(path, list...)
}

// SendMain is a child's main (internal/nschild) for the sender's namespace: args are the
// interface, a file of WriteFile and a repeat count; it sends every frame of the file repeat
// times through a packet socket, as it is, and prints how many it sent.
func SendMain(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("hostile: want IFACE FILE REPEAT, got %q", args)
	}
	ifi, err := net.InterfaceByName(args[0])
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	repeat, err := strconv.Atoi(args[2])
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
	var frames [][]byte
	for _, line := range strings.Fields(string(raw)) {
		f, err := hex.DecodeString(line)
		if err != nil {
			return err
		}
		frames = append(frames, f)
	}
	sent := 0
	for r := 0; r < repeat; r++ {
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return fmt.Errorf("sending a %d-byte frame: %w", len(f), err)
			}
			sent++
			if sent%64 == 0 {
				time.Sleep(time.Millisecond) // stay under the rx ring, so drops are netchan's
			}
		}
	}
	fmt.Println(sent)
	return nil
}
