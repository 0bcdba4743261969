package hostnet

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ReservedPortsPath is the sysctl ReservePorts edits. It is per network
// namespace and covers TCP and UDP (and SCTP): the kernel never picks a port
// listed there as an ephemeral port (bind to port 0, connect or sendto
// from an unbound socket); a socket can still bind to it explicitly.
const ReservedPortsPath = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// reservations holds, per network namespace, the ports this process added to
// ReservedPortsPath and how many live reservations hold each of them.
var reservations = struct {
	sync.Mutex
	byNS map[nsKey]*nsReservations
}{byNS: map[nsKey]*nsReservations{}}

// nsKey identifies a network namespace: its nsfs inode.
type nsKey struct{ dev, ino uint64 }

type nsReservations struct {
	key nsKey
	// ns pins the namespace while reservations in it are live, so that its
	// inode (the key) cannot be reused by another namespace meanwhile.
	ns netns.NsHandle
	// f is ReservedPortsPath opened in that namespace: a sysctl file stays
	// bound to the namespace it was opened in, whatever thread uses it later.
	f     *os.File
	added map[uint16]int // ports this process added, by live reservations holding them
	live  int            // live reservations in this namespace
}

// ReservePorts adds ports to the kernel's reserved ports
// (ReservedPortsPath) in the calling thread's network namespace, so that the
// kernel never gives them to its own connections as ephemeral ports. Ports
// already listed there are left as they are; every other entry and range of
// the list is kept.
//
// release removes the ports this process added and that no other live
// reservation of this process holds: each port this process added is
// reference-counted over the reservations that asked for it, and the last
// one to be released removes it; a port that was listed before this process
// added it is never removed. release writes to the namespace the
// reservation was made in, from any thread; calling it again does nothing.
// If its write fails, the reservation stays and release can be called again.
// While a reservation is live it holds its namespace (a handle on it and the
// open sysctl file), so the namespace outlives its last process until then.
//
// The list is read, changed and written back whole, under a lock within
// this process; a concurrent change by another process between the read and
// the write can be lost. The kernel keeps the list as a bitmap and shows
// neighbouring ports as a range (writing 9000-9010 and adding 9011 reads back
// as 9000-9011).
func ReservePorts(ports ...uint16) (release func() error, err error) {
	ports = slices.Clone(ports)
	slices.Sort(ports)
	ports = slices.Compact(ports)
	if len(ports) > 0 && ports[0] == 0 {
		return nil, errors.New("hostnet: reserving port 0: not a port")
	}
	if len(ports) == 0 {
		return func() error { return nil }, nil
	}
	what := "reserving " + portsLabel(ports)

	reservations.Lock()
	defer reservations.Unlock()
	st, err := reservationsHere()
	if err != nil {
		return nil, fmt.Errorf("hostnet: %s: %w", what, err)
	}
	set, err := st.read()
	if err == nil {
		var held []uint16 // ports this reservation holds a reference to
		want := set
		for _, p := range ports {
			switch {
			case st.added[p] > 0: // ours already (put back if someone removed it)
				want.add(p)
				held = append(held, p)
			case set.has(p): // listed before us: not ours to hold or remove
			default:
				want.add(p)
				held = append(held, p)
			}
		}
		if want != set {
			err = st.write(&want)
		}
		if err == nil {
			for _, p := range held {
				st.added[p]++
			}
			st.live++
			r := &reservation{st: st, ports: held}
			return r.release, nil
		}
	}
	if st.live == 0 {
		st.close()
	}
	return nil, fmt.Errorf("hostnet: %s: %w", what, err)
}

type reservation struct {
	st    *nsReservations
	ports []uint16 // the ports this reservation holds a reference to
	done  bool
}

func (r *reservation) release() error {
	reservations.Lock()
	defer reservations.Unlock()
	if r.done {
		return nil
	}
	st := r.st
	var remove []uint16
	for _, p := range r.ports {
		if st.added[p] == 1 {
			remove = append(remove, p)
		}
	}
	if len(remove) > 0 {
		set, err := st.read()
		if err == nil {
			want := set
			for _, p := range remove {
				want.remove(p)
			}
			if want != set {
				err = st.write(&want)
			}
		}
		if err != nil {
			return fmt.Errorf("hostnet: releasing reserved %s: %w", portsLabel(remove), err)
		}
	}
	for _, p := range r.ports {
		if st.added[p]--; st.added[p] == 0 {
			delete(st.added, p)
		}
	}
	r.done = true
	if st.live--; st.live == 0 {
		st.close()
	}
	return nil
}

// reservationsHere returns the reservations of the calling thread's network
// namespace, opening its sysctl file if there are none yet. The caller holds
// the lock.
func reservationsHere() (*nsReservations, error) {
	// The namespace handle and the sysctl file must come from the same
	// thread: stay on this one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("finding this thread's network namespace: %w", err)
	}
	var stat unix.Stat_t
	if err := unix.Fstat(int(ns), &stat); err != nil {
		ns.Close()
		return nil, fmt.Errorf("finding this thread's network namespace: %w", err)
	}
	key := nsKey{dev: stat.Dev, ino: stat.Ino}
	if st := reservations.byNS[key]; st != nil {
		ns.Close()
		return st, nil
	}
	f, err := os.OpenFile(ReservedPortsPath, os.O_RDWR, 0)
	if err != nil {
		ns.Close()
		// Opening it for writing is where a missing right shows.
		return nil, sysctlErr("writing", err)
	}
	st := &nsReservations{key: key, ns: ns, f: f, added: map[uint16]int{}}
	reservations.byNS[key] = st
	return st, nil
}

func (st *nsReservations) close() {
	st.f.Close()
	st.ns.Close()
	delete(reservations.byNS, st.key)
}

// maxListLen bounds the list's text: every other port of 1..65535, each
// with a comma, is 196,608 bytes. The kernel returns the whole list from one
// read at offset 0 and nothing from any later offset, so it must be read in
// one go, with room to spare.
const maxListLen = 1 << 18

func (st *nsReservations) read() (portSet, error) {
	buf := make([]byte, maxListLen)
	n, err := st.f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return portSet{}, sysctlErr("reading", err)
	}
	if n == len(buf) {
		return portSet{}, fmt.Errorf("reading %s: more than %d bytes", ReservedPortsPath, len(buf))
	}
	set, err := parsePortList(string(buf[:n]))
	if err != nil {
		return portSet{}, fmt.Errorf("reading %s: %w", ReservedPortsPath, err)
	}
	return set, nil
}

// write replaces the list (a write at offset 0 replaces it, a write at a
// later offset would add to it) and reads it back to check.
func (st *nsReservations) write(set *portSet) error {
	// The trailing newline ends the last number: without it the kernel takes
	// the buffer for one cut short and leaves the last number out.
	text := set.String() + "\n"
	if _, err := st.f.WriteAt([]byte(text), 0); err != nil {
		return sysctlErr("writing", err)
	}
	got, err := st.read()
	if err != nil {
		return err
	}
	if got != *set {
		return fmt.Errorf("writing %s: wrote %q, reads back as %q", ReservedPortsPath, strings.TrimSpace(text), got.String())
	}
	return nil
}

func sysctlErr(op string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is in the message already
	}
	hint := ""
	switch {
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		hint = ": run as root or with CAP_NET_ADMIN in the namespace"
	case errors.Is(err, unix.EROFS):
		hint = ": /proc/sys is mounted read-only here (a container without privileges?)"
	case errors.Is(err, unix.ENOENT):
		hint = ": no IPv4 in this kernel, or the namespace is gone"
	}
	return fmt.Errorf("%s %s: %w%s", op, ReservedPortsPath, err, hint)
}

func portsLabel(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	if len(ports) == 1 {
		return "port " + s[0]
	}
	return "ports " + strings.Join(s, ",")
}

// portSet is a set of ports 0..65535, as the kernel keeps the reserved ports.
type portSet [65536 / 64]uint64

func (s *portSet) has(p uint16) bool { return s[p/64]&(1<<(p%64)) != 0 }
func (s *portSet) add(p uint16)      { s[p/64] |= 1 << (p % 64) }
func (s *portSet) remove(p uint16)   { s[p/64] &^= 1 << (p % 64) }

// parsePortList parses the kernel's list: ports and ranges (A-B, A <= B)
// separated by commas; blank is empty.
func parsePortList(text string) (portSet, error) {
	var s portSet
	text = strings.TrimSpace(text)
	if text == "" {
		return s, nil
	}
	for _, item := range strings.Split(text, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b := a
		if err == nil && isRange {
			b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		}
		if err != nil || b < a {
			return s, fmt.Errorf("bad entry %q (want a port or a range A-B of ports)", item)
		}
		for p := a; p <= b; p++ {
			s.add(uint16(p))
		}
	}
	return s, nil
}

// String writes the set as the kernel does: ascending, runs of neighbouring
// ports as ranges, comma-separated; "" when empty.
func (s *portSet) String() string {
	var b strings.Builder
	for p := 0; p < 65536; p++ {
		if !s.has(uint16(p)) {
			continue
		}
		q := p
		for q+1 < 65536 && s.has(uint16(q+1)) {
			q++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(p))
		if q > p {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(q))
		}
		p = q
	}
	return b.String()
}
