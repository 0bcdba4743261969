package hostnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Protocol numbers KernelSockets takes.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Socket is one of the kernel's sockets, as sock_diag reports it.
type Socket struct {
	Proto uint8 // ProtoTCP or ProtoUDP
	// Local is the address and port the socket is bound to: 0.0.0.0:P for one
	// bound to every IPv4 address, [::]:P for a dual-stack IPv6 socket bound
	// to every address. An IPv6 socket's IPv4-mapped address is given as
	// IPv4 (and DualStack is set).
	Local netip.AddrPort
	// Remote is the peer of a connected socket; 0.0.0.0:0 (or [::]:0) if
	// it is not connected.
	Remote netip.AddrPort
	// State is the TCP state (LISTEN, ESTABLISHED, SYN_SENT, CLOSE_WAIT,
	// ...); UNCONN for a socket that is bound but neither listening nor
	// connected (every unconnected UDP socket), ESTABLISHED for a connected
	// UDP socket.
	State string
	// Inode is the socket's inode, as /proc/PID/fd shows it (socket:[INODE]);
	// 0 for a TCP connection the application has not accepted yet.
	Inode uint32
	UID   uint32
	// Ifindex is the device the socket is bound to (SO_BINDTODEVICE), 0 if none.
	Ifindex int
	// DualStack marks an IPv6 socket that takes IPv4 too (IPV6_V6ONLY off):
	// what Go's net.Listen("tcp", ":P") and net.ListenUDP("udp", ...) make.
	DualStack bool
}

// String names the socket for an error message, as in
// "udp 0.0.0.0:9999 (uid 0, inode 1234)" or
// "tcp 198.18.0.1:8000 -> 198.18.0.2:41000 ESTABLISHED (uid 0, inode 5678)".
func (s Socket) String() string {
	var b strings.Builder
	switch s.Proto {
	case ProtoTCP:
		b.WriteString("tcp ")
	case ProtoUDP:
		b.WriteString("udp ")
	default:
		b.WriteString("proto " + strconv.Itoa(int(s.Proto)) + " ")
	}
	b.WriteString(s.Local.String())
	if r := s.Remote; r.Port() != 0 || (r.Addr().IsValid() && !r.Addr().IsUnspecified()) {
		b.WriteString(" -> " + r.String())
	}
	if s.State != "" && (s.Proto != ProtoUDP || s.State != "UNCONN") {
		b.WriteString(" " + s.State)
	}
	b.WriteString(" (")
	if s.DualStack {
		b.WriteString("IPv6 dual-stack, ")
	}
	if s.Ifindex != 0 {
		fmt.Fprintf(&b, "bound to ifindex %d, ", s.Ifindex)
	}
	fmt.Fprintf(&b, "uid %d, inode %d)", s.UID, s.Inode)
	return b.String()
}

// KernelSockets returns the kernel's sockets of protocol proto (ProtoTCP or
// ProtoUDP) that take IPv4 traffic to an address in local on port
// localPort (on any port if anyPort), in the calling thread's network
// namespace.
//
// An invalid local (the zero netip.Prefix) means any address; local must
// otherwise be an IPv4 prefix. A socket bound to 0.0.0.0 is on every
// address, and so is a dual-stack IPv6 socket bound to [::]; an IPv6 socket
// bound to an IPv4-mapped address is on that address; IPv6-only sockets and
// sockets on IPv6 addresses are not reported.
//
// For TCP every state but TIME_WAIT is reported: listeners, connections in
// any state, and sockets that are only bound (UNCONN; kernels before 6.8
// do not list these). A TIME_WAIT entry has no owner left (no inode, uid 0)
// and holds a 4-tuple, not the port; request sockets (a listener's
// half-open connections) are not reported either, their listener is. For UDP
// every socket is reported, connected or not.
//
// The sockets come from sock_diag (NETLINK_INET_DIAG), one dump per address
// family; a dump the kernel reports as interrupted is retried.
func KernelSockets(proto uint8, local netip.Prefix, localPort uint16, anyPort bool) ([]Socket, error) {
	if proto != ProtoTCP && proto != ProtoUDP {
		return nil, fmt.Errorf("hostnet: KernelSockets: protocol %d: want %d (TCP) or %d (UDP)", proto, ProtoTCP, ProtoUDP)
	}
	if local.IsValid() && !local.Addr().Is4() {
		return nil, fmt.Errorf("hostnet: KernelSockets: %s is not an IPv4 prefix", local)
	}
	var out []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := diagDump(family, proto)
		if err != nil {
			return nil, fmt.Errorf("hostnet: listing the kernel's %s sockets (sock_diag, %s): %w",
				protoName(proto), familyName(family), err)
		}
		for _, d := range socks {
			if s, ok := d.ipv4View(); ok && (anyPort || s.Local.Port() == localPort) && onPrefix(s.Local.Addr(), local) {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// onPrefix reports whether a socket bound to a is on an address in p.
func onPrefix(a netip.Addr, p netip.Prefix) bool {
	return !p.IsValid() || a.IsUnspecified() || p.Contains(a)
}

// diagSocket is one inet_diag_msg with what KernelSockets needs of its attributes.
type diagSocket struct {
	family, state   uint8
	src, dst        netip.AddrPort
	ifindex         uint32
	uid, inode      uint32
	v6only, v6known bool
	proto           uint8
}

// ipv4View returns the socket as KernelSockets reports it, and false for a
// socket that takes no IPv4 traffic.
func (d diagSocket) ipv4View() (Socket, bool) {
	s := Socket{Proto: d.proto, Local: d.src, Remote: d.dst, State: stateName(d.state),
		Inode: d.inode, UID: d.uid, Ifindex: int(d.ifindex)}
	if d.family == unix.AF_INET {
		return s, true
	}
	// IPV6_V6ONLY is reported only for listening and unbound-or-bound
	// (CLOSE) sockets; a connected socket shows by its address which
	// family it carries. A missing attribute counts as dual-stack, the
	// kernel's default (net.ipv6.bindv6only=0).
	if d.v6known && d.v6only {
		return Socket{}, false
	}
	a := d.src.Addr()
	switch {
	case a.IsUnspecified():
	case a.Is4In6():
		s.Local = netip.AddrPortFrom(a.Unmap(), d.src.Port())
		if r := d.dst.Addr(); r.Is4In6() {
			s.Remote = netip.AddrPortFrom(r.Unmap(), d.dst.Port())
		}
	default:
		return Socket{}, false
	}
	s.DualStack = true
	return s, true
}

const (
	sizeofDiagReq = 56 // struct inet_diag_req_v2
	sizeofDiagMsg = 72 // struct inet_diag_msg
	// Every TCP state but TIME_WAIT (6) and NEW_SYN_RECV (12, request
	// sockets), and BOUND_INACTIVE (13): since Linux 6.8 this pseudo-state asks
	// for sockets that are bound but neither listening nor connected, which
	// live in no table a dump reads otherwise. UDP sockets are CLOSE (7) or
	// ESTABLISHED (1).
	diagStates = 0xfff&^(1<<6) | 1<<13
	dumpTries  = 5
)

// diagReq is struct inet_diag_req_v2 for a dump: family, protocol and states;
// no extensions, an empty socket id.
type diagReq struct {
	family, proto uint8
	states        uint32
}

func (r *diagReq) Len() int { return sizeofDiagReq }

func (r *diagReq) Serialize() []byte {
	b := make([]byte, sizeofDiagReq)
	b[0], b[1] = r.family, r.proto
	binary.NativeEndian.PutUint32(b[4:8], r.states)
	return b
}

// diagDump dumps the sockets of one family and protocol in the calling
// thread's namespace (the netlink socket is opened on this thread).
func diagDump(family, proto uint8) ([]diagSocket, error) {
	var err error
	for try := 0; try < dumpTries; try++ {
		var socks []diagSocket
		var parseErr error
		req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		req.AddData(&diagReq{family: family, proto: proto, states: diagStates})
		err = req.ExecuteIter(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY, func(msg []byte) bool {
			d, err := parseDiagMsg(msg)
			if err != nil {
				parseErr = err
				return false
			}
			d.proto = proto
			socks = append(socks, d)
			return true
		})
		if parseErr != nil {
			return nil, parseErr
		}
		if err == nil {
			return socks, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w %d times in a row", err, dumpTries)
}

// parseDiagMsg decodes struct inet_diag_msg and its INET_DIAG_SKV6ONLY attribute.
func parseDiagMsg(b []byte) (diagSocket, error) {
	if len(b) < sizeofDiagMsg {
		return diagSocket{}, fmt.Errorf("sock_diag message of %d bytes, want at least %d", len(b), sizeofDiagMsg)
	}
	d := diagSocket{family: b[0], state: b[1]}
	sport := binary.BigEndian.Uint16(b[4:6])
	dport := binary.BigEndian.Uint16(b[6:8])
	var src, dst netip.Addr
	switch d.family {
	case unix.AF_INET:
		src = netip.AddrFrom4([4]byte(b[8:12]))
		dst = netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return diagSocket{}, fmt.Errorf("sock_diag message for address family %d", d.family)
	}
	d.src, d.dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	d.ifindex = binary.NativeEndian.Uint32(b[40:44])
	d.uid = binary.NativeEndian.Uint32(b[64:68])
	d.inode = binary.NativeEndian.Uint32(b[68:72])
	attrs, err := nl.ParseRouteAttr(b[sizeofDiagMsg:])
	if err != nil {
		return diagSocket{}, fmt.Errorf("sock_diag attributes: %w", err)
	}
	for _, a := range attrs {
		if a.Attr.Type == netlink.INET_DIAG_SKV6ONLY && len(a.Value) >= 1 {
			d.v6known, d.v6only = true, a.Value[0] != 0
		}
	}
	return d, nil
}

var tcpStates = [...]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
	6: "TIME_WAIT", 7: "UNCONN", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
	12: "NEW_SYN_RECV", 13: "UNCONN", // BOUND_INACTIVE
}

func stateName(st uint8) string {
	if int(st) < len(tcpStates) && tcpStates[st] != "" {
		return tcpStates[st]
	}
	return "state " + strconv.Itoa(int(st))
}

func protoName(proto uint8) string {
	switch proto {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	}
	return "protocol " + strconv.Itoa(int(proto))
}

func familyName(family uint8) string {
	if family == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}
