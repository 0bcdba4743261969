package hostnet

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const reservedKey = "net/ipv4/ip_local_reserved_ports"

// reserveIn calls ReservePorts on a thread in ns.
func reserveIn(t *testing.T, ns netns.NsHandle, ports ...uint16) func() error {
	t.Helper()
	var release func() error
	in(t, ns, func() error {
		var err error
		release, err = ReservePorts(ports...)
		return err
	})
	return release
}

// keepReserved sets the namespace's list to preset for the test and puts
// back what it was when the test ends.
func keepReserved(t *testing.T, ns netns.NsHandle, preset string) {
	t.Helper()
	orig := sysctl(t, ns, reservedKey)
	t.Cleanup(func() { setSysctl(t, ns, reservedKey, orig) })
	setSysctl(t, ns, reservedKey, preset)
	if got := sysctl(t, ns, reservedKey); got != preset {
		t.Fatalf("preset %q reads back as %q", preset, got)
	}
}

func hostReserved(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(ReservedPortsPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestReservePorts(t *testing.T) {
	ns := newNS(t)
	keepReserved(t, ns, "8080,9000-9010")
	host := hostReserved(t)
	want := func(what, list string) {
		t.Helper()
		if got := sysctl(t, ns, reservedKey); got != list {
			t.Errorf("%s: reserved ports %q, want %q", what, got, list)
		}
	}
	release := func(what string, r func() error) {
		t.Helper()
		// Released from this goroutine, not in ns: release writes to the
		// namespace the reservation was made in.
		if err := r(); err != nil {
			t.Fatalf("%s: release: %v", what, err)
		}
	}

	r1 := reserveIn(t, ns, 9999, 8080) // 8080 is listed already
	want("r1 reserves 9999 and 8080", "8080,9000-9010,9999")
	r2 := reserveIn(t, ns, 20000, 9999, 20000)
	want("r2 reserves 9999 and 20000", "8080,9000-9010,9999,20000")
	release("r2", r2)
	want("r2 released (r1 still holds 9999)", "8080,9000-9010,9999")
	release("r2 again", r2)
	want("r2 released twice", "8080,9000-9010,9999")
	r3 := reserveIn(t, ns, 9011)
	want("r3 reserves 9011 (the kernel shows it with 9000-9010 as one range)", "8080,9000-9011,9999")
	release("r3", r3)
	want("r3 released", "8080,9000-9010,9999")
	release("r1", r1)
	want("r1 released (8080 was there before, it stays)", "8080,9000-9010")

	// The first of two overlapping reservations to be released is not the
	// last holder: the port stays until the second goes.
	ra := reserveIn(t, ns, 30000, 30001)
	rb := reserveIn(t, ns, 30001, 30002)
	want("ra and rb", "8080,9000-9010,30000-30002")
	release("ra", ra)
	want("ra released", "8080,9000-9010,30001-30002")
	release("rb", rb)
	want("rb released", "8080,9000-9010")

	// A port of ours that someone else removed is put back by the next
	// reservation that asks for it.
	rc := reserveIn(t, ns, 31000)
	setSysctl(t, ns, reservedKey, "8080,9000-9010")
	rd := reserveIn(t, ns, 31000)
	want("rd puts 31000 back", "8080,9000-9010,31000")
	release("rc", rc)
	want("rc released", "8080,9000-9010,31000")
	release("rd", rd)
	want("rd released", "8080,9000-9010")

	in(t, ns, func() error {
		if _, err := ReservePorts(0); err == nil || !strings.Contains(err.Error(), "port 0") {
			t.Errorf("ReservePorts(0): err = %v, want an error naming port 0", err)
		}
		r, err := ReservePorts()
		if err == nil {
			err = r()
		}
		return err
	})
	want("nothing reserved", "8080,9000-9010")

	reservations.Lock()
	left := len(reservations.byNS)
	reservations.Unlock()
	if left != 0 {
		t.Errorf("%d namespaces still have live reservations after every release", left)
	}
	if got := hostReserved(t); got != host {
		t.Errorf("the test process's own namespace changed: %q, was %q", got, host)
	}
}

// With the ephemeral range cut to 40000-40003 and 40001 reserved, UDP
// sockets that connect without binding never get 40001: not one at a time,
// and not when it is the only port left.
func TestReservePortsEphemeralUDP(t *testing.T) {
	p := newPair(t)
	keepReserved(t, p.a, "")
	origRange := sysctl(t, p.a, "net/ipv4/ip_local_port_range")
	t.Cleanup(func() { setSysctl(t, p.a, "net/ipv4/ip_local_port_range", origRange) })
	setSysctl(t, p.a, "net/ipv4/ip_local_port_range", "40000 40003")
	release := reserveIn(t, p.a, 40001)
	defer func() {
		if release != nil {
			release()
		}
	}()
	if got := sysctl(t, p.a, reservedKey); got != "40001" {
		t.Fatalf("reserved ports %q, want 40001", got)
	}

	// connect() on a UDP socket picks the local port; nothing is sent.
	dst := &net.UDPAddr{IP: p.addrB.AsSlice(), Port: 9}
	dial := func() (*net.UDPConn, error) {
		var c *net.UDPConn
		err := onThreadIn(p.a, func() error {
			var err error
			c, err = net.DialUDP("udp4", nil, dst)
			return err
		})
		return c, err
	}
	port := func(c *net.UDPConn) uint16 { return c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }
	seen := map[uint16]int{}
	for i := 0; i < 50; i++ {
		c, err := dial()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		seen[port(c)]++
		c.Close()
	}
	t.Logf("local ports of 50 dials: %v", seen)
	if seen[40001] != 0 {
		t.Errorf("the kernel gave the reserved port 40001 %d times", seen[40001])
	}
	var open []*net.UDPConn
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	got := map[uint16]bool{}
	for i := 0; i < 3; i++ {
		c, err := dial()
		if err != nil {
			t.Fatalf("dial %d of 3 at once: %v", i, err)
		}
		open = append(open, c)
		got[port(c)] = true
	}
	if !got[40000] || !got[40002] || !got[40003] {
		t.Errorf("three sockets at once got ports %v, want 40000, 40002 and 40003", got)
	}
	if c, err := dial(); err == nil {
		open = append(open, c)
		t.Errorf("a fourth socket got port %d while 40001 is reserved", port(c))
	} else {
		t.Logf("fourth socket while 40001 is reserved: %v", err)
	}
	// Released, 40001 is the kernel's to give again.
	if err := release(); err != nil {
		t.Fatal(err)
	}
	release = nil
	c, err := dial()
	if err != nil {
		t.Fatalf("dial after release: %v", err)
	}
	open = append(open, c)
	if port(c) != 40001 {
		t.Errorf("after release the only free port 40001 was not given: got %d", port(c))
	}
}

// Without the right to write the sysctl, the error says what to do.
func TestReservePortsPermissionError(t *testing.T) {
	ns := newNS(t)
	keepReserved(t, ns, "8080")
	var rerr error
	in(t, ns, func() error {
		// Drop to uid 65534 on this thread only (the raw syscall, not
		// syscall.Setresuid, which changes every thread); the saved uid
		// stays 0, so the thread can come back. If it cannot, it stays
		// locked and onThreadIn's goroutine ends with it: the runtime
		// discards the thread.
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
			runtime.UnlockOSThread()
			return e
		}
		_, rerr = ReservePorts(9999)
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			return e
		}
		runtime.UnlockOSThread()
		return nil
	})
	t.Logf("as uid 65534: %v", rerr)
	if rerr == nil {
		t.Fatal("ReservePorts as uid 65534 succeeded")
	}
	for _, want := range []string{"reserving port 9999", ReservedPortsPath, "permission denied", "run as root or with CAP_NET_ADMIN in the namespace"} {
		if !strings.Contains(rerr.Error(), want) {
			t.Errorf("error %q does not say %q", rerr, want)
		}
	}
	if !errors.Is(rerr, fs.ErrPermission) {
		t.Errorf("error %q is not fs.ErrPermission", rerr)
	}
	if got := sysctl(t, ns, reservedKey); got != "8080" {
		t.Errorf("reserved ports %q after a failed reservation, want 8080", got)
	}
}

func TestPortList(t *testing.T) {
	for _, c := range []struct{ in, out string }{
		{"", ""},
		{"\n", ""},
		{"8080,9000-9010\n", "8080,9000-9010"},
		{"3,1,2", "1-3"},
		{"5-5", "5"},
		{"0,65535", "0,65535"},
		{"100-200,150-250,7", "7,100-250"},
		{" 10 , 20 - 22 ", "10,20-22"},
	} {
		s, err := parsePortList(c.in)
		if err != nil {
			t.Errorf("parse %q: %v", c.in, err)
			continue
		}
		if got := s.String(); got != c.out {
			t.Errorf("parse %q: written back as %q, want %q", c.in, got, c.out)
		}
	}
	for _, bad := range []string{"x", "1,,2", "9-1", "65536", "-3", "1-", "1-2-3"} {
		if _, err := parsePortList(bad); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
	var all portSet
	for p := 0; p < 65536; p += 2 {
		all.add(uint16(p))
	}
	if n := len(all.String()); n > maxListLen {
		t.Errorf("every other port takes %d bytes, more than the %d read", n, maxListLen)
	}
}
