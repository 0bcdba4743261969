package hostnet

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inodeOf returns the inode of a socket's file, as sock_diag reports it.
func inodeOf(t testing.TB, c syscall.Conn) uint32 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return uint32(st.Ino)
}

// query runs KernelSockets in ns's thread.
type querier func(proto uint8, local string, port uint16, anyPort bool) []Socket

func queryIn(t *testing.T, run func(f func() error)) querier {
	return func(proto uint8, local string, port uint16, anyPort bool) []Socket {
		t.Helper()
		var pfx netip.Prefix
		if local != "" {
			pfx = netip.MustParsePrefix(local)
		}
		var socks []Socket
		run(func() error {
			var err error
			socks, err = KernelSockets(proto, pfx, port, anyPort)
			return err
		})
		return socks
	}
}

func inodes(socks []Socket) []uint32 {
	var ino []uint32
	for _, s := range socks {
		ino = append(ino, s.Inode)
	}
	slices.Sort(ino)
	return ino
}

func wantInodes(t *testing.T, what string, got []Socket, want ...uint32) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(inodes(got), want) {
		t.Errorf("%s: got %v, want the sockets with inodes %v", what, got, want)
	}
}

func TestKernelSocketsUDP(t *testing.T) {
	p := newPair(t)
	var any, one *net.UDPConn
	in(t, p.a, func() error {
		var err error
		if any, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: 9999}); err != nil {
			return err
		}
		one, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.addrA.AsSlice(), Port: 9998})
		return err
	})
	t.Cleanup(func() { any.Close() })
	t.Cleanup(func() { one.Close() })
	anyIno, oneIno := inodeOf(t, any), inodeOf(t, one)
	q := queryIn(t, func(f func() error) { in(t, p.a, f) })

	wantInodes(t, "udp any address, port 9999", q(ProtoUDP, "", 9999, false), anyIno)
	wantInodes(t, "udp 198.18.0.1/32 port 9999 (0.0.0.0 is on every address)", q(ProtoUDP, "198.18.0.1/32", 9999, false), anyIno)
	wantInodes(t, "udp 10.0.0.0/8 port 9999 (0.0.0.0 is on every address)", q(ProtoUDP, "10.0.0.0/8", 9999, false), anyIno)
	wantInodes(t, "udp 198.18.0.1/32 port 9998", q(ProtoUDP, "198.18.0.1/32", 9998, false), oneIno)
	wantInodes(t, "udp 198.18.0.0/24 port 9998", q(ProtoUDP, "198.18.0.0/24", 9998, false), oneIno)
	wantInodes(t, "udp 198.18.0.2/32 port 9998", q(ProtoUDP, "198.18.0.2/32", 9998, false))
	wantInodes(t, "udp 10.0.0.0/8 port 9998", q(ProtoUDP, "10.0.0.0/8", 9998, false))
	wantInodes(t, "udp port 9997", q(ProtoUDP, "", 9997, false))
	wantInodes(t, "udp any port", q(ProtoUDP, "", 0, true), anyIno, oneIno)
	wantInodes(t, "udp 198.18.0.1/32 any port", q(ProtoUDP, "198.18.0.1/32", 0, true), anyIno, oneIno)
	wantInodes(t, "udp 198.18.0.2/32 any port", q(ProtoUDP, "198.18.0.2/32", 0, true), anyIno)
	wantInodes(t, "tcp port 9999", q(ProtoTCP, "", 9999, false))
	wantInodes(t, "tcp any port", q(ProtoTCP, "", 0, true))

	socks := q(ProtoUDP, "", 9999, false)
	if len(socks) == 1 {
		s := socks[0]
		if s.Proto != ProtoUDP || s.Local != netip.MustParseAddrPort("0.0.0.0:9999") || s.State != "UNCONN" || s.UID != 0 || s.DualStack {
			t.Errorf("socket on 0.0.0.0:9999: %+v", s)
		}
		want := "udp 0.0.0.0:9999 (uid 0, inode " + itoa(anyIno) + ")"
		if s.String() != want {
			t.Errorf("String() = %q, want %q", s.String(), want)
		}
		t.Logf("as an error would name it: %v", s)
	}

	// The test process's own namespace does not have these sockets.
	for _, s := range queryIn(t, func(f func() error) {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	})(ProtoUDP, "", 0, true) {
		if s.Inode == anyIno || s.Inode == oneIno {
			t.Errorf("found %v from outside its namespace", s)
		}
	}

	if _, err := KernelSockets(1, netip.Prefix{}, 0, true); err == nil || !strings.Contains(err.Error(), "protocol 1") {
		t.Errorf("protocol 1: err = %v, want an error naming it", err)
	}
	if _, err := KernelSockets(ProtoUDP, netip.MustParsePrefix("2001:db8::/32"), 0, true); err == nil {
		t.Error("an IPv6 prefix: no error")
	}
}

func TestKernelSocketsTCP(t *testing.T) {
	p := newPair(t)
	var ln *net.TCPListener
	in(t, p.a, func() error {
		var err error
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: p.addrA.AsSlice(), Port: 8000})
		return err
	})
	t.Cleanup(func() { ln.Close() })
	// A socket that is bound and nothing else (TCP state CLOSE).
	var boundFD int
	in(t, p.a, func() error {
		var err error
		if boundFD, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(boundFD, &unix.SockaddrInet4{Port: 8001})
	})
	t.Cleanup(func() { unix.Close(boundFD) })
	var bound unix.Stat_t
	if err := unix.Fstat(boundFD, &bound); err != nil {
		t.Fatal(err)
	}

	// A connection from B to A, across the veth.
	var client *net.TCPConn
	in(t, p.b, func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(p.addrA, 8000).String(), 5*time.Second)
		if err == nil {
			client = c.(*net.TCPConn)
		}
		return err
	})
	t.Cleanup(func() { client.Close() })
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	server, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	lnIno, serverIno, clientIno := inodeOf(t, ln), inodeOf(t, server), inodeOf(t, client)
	clientAddr := client.LocalAddr().(*net.TCPAddr).AddrPort()
	clientAddr = netip.AddrPortFrom(clientAddr.Addr().Unmap(), clientAddr.Port())

	qa := queryIn(t, func(f func() error) { in(t, p.a, f) })
	qb := queryIn(t, func(f func() error) { in(t, p.b, f) })
	socks := qa(ProtoTCP, "198.18.0.1/32", 8000, false)
	wantInodes(t, "A: tcp 198.18.0.1/32 port 8000", socks, lnIno, serverIno)
	for _, s := range socks {
		switch s.Inode {
		case lnIno:
			if s.State != "LISTEN" || s.Local != netip.MustParseAddrPort("198.18.0.1:8000") || s.Remote.Port() != 0 {
				t.Errorf("listener: %+v", s)
			}
		case serverIno:
			if s.State != "ESTABLISHED" || s.Local != netip.MustParseAddrPort("198.18.0.1:8000") || s.Remote != clientAddr {
				t.Errorf("accepted connection: %+v, want remote %s", s, clientAddr)
			}
			want := "tcp 198.18.0.1:8000 -> " + clientAddr.String() + " ESTABLISHED (uid 0, inode " + itoa(serverIno) + ")"
			if s.String() != want {
				t.Errorf("String() = %q, want %q", s.String(), want)
			}
		}
		t.Logf("A: %v", s)
	}
	wantInodes(t, "A: tcp any address port 8000", qa(ProtoTCP, "", 8000, false), lnIno, serverIno)
	wantInodes(t, "A: tcp 198.18.0.2/32 port 8000", qa(ProtoTCP, "198.18.0.2/32", 8000, false))
	wantInodes(t, "A: udp 198.18.0.1/32 port 8000", qa(ProtoUDP, "198.18.0.1/32", 8000, false))
	wantInodes(t, "A: tcp port 8001 (bound only)", qa(ProtoTCP, "198.18.0.1/32", 8001, false), uint32(bound.Ino))
	if s := qa(ProtoTCP, "", 8001, false); len(s) == 1 && (s[0].State != "UNCONN" || s[0].String() != "tcp 0.0.0.0:8001 UNCONN (uid 0, inode "+itoa(uint32(bound.Ino))+")") {
		t.Errorf("bound-only socket: %v (state %q)", s[0], s[0].State)
	}
	wantInodes(t, "A: tcp any port", qa(ProtoTCP, "", 0, true), lnIno, serverIno, uint32(bound.Ino))

	// B has the client end, and nothing on port 8000.
	wantInodes(t, "B: tcp port 8000", qb(ProtoTCP, "", 8000, false))
	socks = qb(ProtoTCP, "198.18.0.2/32", clientAddr.Port(), false)
	wantInodes(t, "B: tcp client port", socks, clientIno)
	if len(socks) == 1 && (socks[0].State != "ESTABLISHED" || socks[0].Remote != netip.MustParseAddrPort("198.18.0.1:8000")) {
		t.Errorf("client: %+v", socks[0])
	}
}

// An IPv6 socket with IPV6_V6ONLY off takes IPv4 too: Go's "udp" and "tcp"
// listeners on ":P" are such sockets.
func TestKernelSocketsDualStack(t *testing.T) {
	p := newPair(t)
	var dual, v6only *net.UDPConn
	var dualLn, v6onlyLn *net.TCPListener
	in(t, p.a, func() error {
		var err error
		if dual, err = net.ListenUDP("udp", &net.UDPAddr{Port: 7777}); err != nil {
			return err
		}
		if v6only, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: 7778}); err != nil {
			return err
		}
		if dualLn, err = net.ListenTCP("tcp", &net.TCPAddr{Port: 7779}); err != nil {
			return err
		}
		v6onlyLn, err = net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6unspecified, Port: 7780})
		return err
	})
	for _, c := range []interface{ Close() error }{dual, v6only, dualLn, v6onlyLn} {
		t.Cleanup(func() { c.Close() })
	}
	var client net.Conn
	in(t, p.b, func() error {
		var err error
		client, err = net.DialTimeout("tcp4", "198.18.0.1:7779", 5*time.Second)
		return err
	})
	t.Cleanup(func() { client.Close() })
	dualLn.SetDeadline(time.Now().Add(5 * time.Second))
	server, err := dualLn.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })

	q := queryIn(t, func(f func() error) { in(t, p.a, f) })
	socks := q(ProtoUDP, "198.18.0.1/32", 7777, false)
	wantInodes(t, "udp [::]:7777 dual-stack", socks, inodeOf(t, dual))
	if len(socks) == 1 {
		s := socks[0]
		want := "udp [::]:7777 (IPv6 dual-stack, uid 0, inode " + itoa(s.Inode) + ")"
		if !s.DualStack || s.Local != netip.MustParseAddrPort("[::]:7777") || s.String() != want {
			t.Errorf("dual-stack socket: %+v, String %q, want %q", s, s.String(), want)
		}
	}
	wantInodes(t, "udp [::]:7778 IPv6 only", q(ProtoUDP, "", 7778, false))
	wantInodes(t, "tcp [::]:7780 IPv6 only", q(ProtoTCP, "", 7780, false))
	socks = q(ProtoTCP, "198.18.0.1/32", 7779, false)
	wantInodes(t, "tcp [::]:7779 dual-stack listener and its IPv4 connection", socks, inodeOf(t, dualLn), inodeOf(t, server))
	for _, s := range socks {
		if s.Inode == inodeOf(t, server) && (s.Local != netip.MustParseAddrPort("198.18.0.1:7779") || !s.DualStack ||
			s.Remote != netip.MustParseAddrPort(client.LocalAddr().String()) || s.State != "ESTABLISHED") {
			t.Errorf("connection on a dual-stack listener: %+v (client %s)", s, client.LocalAddr())
		}
		t.Logf("%v", s)
	}
}

func TestSocketString(t *testing.T) {
	for _, c := range []struct {
		s    Socket
		want string
	}{
		{Socket{Proto: ProtoUDP, Local: netip.MustParseAddrPort("0.0.0.0:9999"), Remote: netip.MustParseAddrPort("0.0.0.0:0"), State: "UNCONN", Inode: 1234},
			"udp 0.0.0.0:9999 (uid 0, inode 1234)"},
		{Socket{Proto: ProtoUDP, Local: netip.MustParseAddrPort("198.18.0.1:53"), Remote: netip.MustParseAddrPort("198.18.0.2:4000"), State: "ESTABLISHED", UID: 1000, Inode: 7, Ifindex: 3},
			"udp 198.18.0.1:53 -> 198.18.0.2:4000 ESTABLISHED (bound to ifindex 3, uid 1000, inode 7)"},
		{Socket{Proto: ProtoTCP, Local: netip.MustParseAddrPort("0.0.0.0:80"), Remote: netip.MustParseAddrPort("0.0.0.0:0"), State: "LISTEN", Inode: 9},
			"tcp 0.0.0.0:80 LISTEN (uid 0, inode 9)"},
		{Socket{Proto: ProtoTCP, Local: netip.MustParseAddrPort("[::]:80"), Remote: netip.MustParseAddrPort("[::]:0"), State: "LISTEN", Inode: 9, DualStack: true},
			"tcp [::]:80 LISTEN (IPv6 dual-stack, uid 0, inode 9)"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("String() = %q, want %q", got, c.want)
		}
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
