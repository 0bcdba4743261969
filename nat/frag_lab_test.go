package nat_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/stack/header"
)

func init() {
	nschild.Register("frag-echo", fragEcho)
	nschild.Register("frag-send", fragSend)
}

// fragSize is the UDP payload of the lab's datagrams: 8 KB, six fragments at MTU 1500.
const fragSize = 8192

// fragDatagram is datagram seq: its number, then bytes that depend on it and their place.
func fragDatagram(seq int) []byte {
	p := make([]byte, fragSize)
	binary.BigEndian.PutUint32(p, uint32(seq))
	for i := 4; i < len(p); i++ {
		p[i] = byte(i*131+seq*7) ^ byte(i>>8)
	}
	return p
}

// rawFragments sends a UDP datagram from a raw socket as IPv4 fragments of at most 1500 bytes,
// in a shuffled order whose first fragment is never first, so the NAT always sees fragments
// before their datagram's first.
func rawFragments(fd int, rng *rand.Rand, src netip.AddrPort, dst netip.AddrPort, payload []byte) error {
	udp := make([]byte, header.UDPLen+len(payload))
	header.EncodeUDP(udp, src.Port(), dst.Port(), len(payload))
	copy(udp[header.UDPLen:], payload)
	header.UDP(udp).FixChecksum(src.Addr(), dst.Addr())
	id := uint16(rng.Uint32() | 1)
	const chunk = 1480
	var frags [][]byte
	for off := 0; off < len(udp); off += chunk {
		end := min(off+chunk, len(udp))
		f := make([]byte, header.IPv4MinLen+end-off)
		header.EncodeIPv4(f, header.IPv4Fields{TotalLength: len(f), ID: id, MF: end < len(udp), FragmentOffset: off,
			TTL: 64, Protocol: header.ProtoUDP, Src: src.Addr(), Dst: dst.Addr()})
		copy(f[header.IPv4MinLen:], udp[off:end])
		frags = append(frags, f)
	}
	perm := rng.Perm(len(frags))
	if perm[0] == 0 {
		perm[0], perm[len(perm)-1] = perm[len(perm)-1], perm[0]
	}
	to := &unix.SockaddrInet4{Addr: dst.Addr().As4()}
	for _, k := range perm {
		if err := unix.Sendto(fd, frags[k], 0, to); err != nil {
			return fmt.Errorf("raw send of fragment %d: %w", k, err)
		}
	}
	return nil
}

func rawSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) // IP_HDRINCL implied
	if err != nil {
		return -1, fmt.Errorf("raw socket: %w", err)
	}
	return fd, nil
}

// fragResult is what the lab's fragment children report.
type fragResult struct {
	Sent, OK, Bad int
	From          map[string]int `json:",omitempty"`
}

// fragEcho (server side) receives args[1] datagrams on args[0], checks each byte for byte,
// and echoes it: through its UDP socket (the kernel fragments it in order) or, with args[2]
// "shuffle", in shuffled fragments from a raw socket with source address args[3]. It prints
// how many were whole and whom they came from.
func fragEcho(args []string) error {
	c, err := net.ListenPacket("udp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	n, shuffle := atoi(args[1]), args[2] == "shuffle"
	self := netip.AddrPortFrom(netip.MustParseAddr(args[3]), uint16(c.LocalAddr().(*net.UDPAddr).Port))
	fd := -1
	if shuffle {
		if fd, err = rawSocket(); err != nil {
			return err
		}
		defer unix.Close(fd)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	fmt.Fprintln(os.Stderr, "listening")
	res := fragResult{From: map[string]int{}}
	buf := make([]byte, 65536)
	for res.OK+res.Bad < n {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			break
		}
		d := buf[:k]
		if k == fragSize && bytes.Equal(d, fragDatagram(int(binary.BigEndian.Uint32(d)))) {
			res.OK++
		} else {
			res.Bad++
		}
		ua := from.(*net.UDPAddr)
		res.From[ua.IP.String()]++
		if shuffle {
			to := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ua.IP.To4())), uint16(ua.Port))
			if err := rawFragments(fd, rng, self, to, d); err != nil {
				return err
			}
		} else if _, err := c.WriteTo(d, from); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// fragSend (client side) sends args[1] datagrams to args[0], one at a time, each as a UDP
// datagram (the kernel fragments it) or, with args[2] "shuffle", in shuffled fragments from a
// raw socket with source address args[3] and the UDP socket's port; it waits for each echo
// (5 s at most, for a loaded machine; no retry) and counts those that come back byte for
// byte. After three losses in a row it stops (Sent says how far it got).
func fragSend(args []string) error {
	c, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	defer c.Close()
	srv, err := netip.ParseAddrPort(args[0])
	if err != nil {
		return err
	}
	n, shuffle := atoi(args[1]), args[2] == "shuffle"
	self := netip.AddrPortFrom(netip.MustParseAddr(args[3]), uint16(c.LocalAddr().(*net.UDPAddr).Port))
	fd := -1
	if shuffle {
		if fd, err = rawSocket(); err != nil {
			return err
		}
		defer unix.Close(fd)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var res fragResult
	buf := make([]byte, 65536)
	for seq, lost := 0, 0; seq < n && lost < 3; seq++ {
		p := fragDatagram(seq)
		if shuffle {
			err = rawFragments(fd, rng, self, srv, p)
		} else {
			_, err = c.WriteTo(p, net.UDPAddrFromAddrPort(srv))
		}
		if err != nil {
			return err
		}
		res.Sent++
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		lost++
		for {
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				break // lost
			}
			if bytes.Equal(buf[:k], p) {
				res.OK++
				lost = 0
				break
			}
			if k >= 4 && int(binary.BigEndian.Uint32(buf)) < seq {
				continue // a late echo of an earlier one
			}
			res.Bad++
			lost = 0
			break
		}
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// TestLabNATFragments: 8 KB UDP datagrams (six fragments each at MTU 1500) from the client
// through the NAT to a server that echoes them, 50 each way, checked byte for byte at both
// ends: first as the kernels fragment them, then with every datagram's fragments sent in a
// shuffled order (first fragment never first) from raw sockets on both sides. Two queues and
// two shards, so fragments meet at their datagram's owner and are handed to the mapping's.
func TestLabNATFragments(t *testing.T) {
	labtest.RequireRoot(t)
	nl := startNAT(t, 2, nat.Config{})
	for _, mode := range []string{"kernel", "shuffle"} {
		fragRun(t, nl, mode)
	}
}

// TestLabNATFragmentsFastPath: with the XDP fast path on, the shards install each UDP flow
// after its first fragment; the programs must leave every fragment to the shards (a
// non-first fragment has no ports: rewriting it as a flow's packet would corrupt its
// payload), so the datagrams still arrive byte for byte, and no frame took the fast path.
func TestLabNATFragmentsFastPath(t *testing.T) {
	labtest.RequireRoot(t)
	nl := startNAT(t, 2, nat.Config{}, true)
	fragRun(t, nl, "kernel")
	if st := nl.n.Stats(); st.FastInstalled == 0 || st.FastTranslated != 0 {
		t.Errorf("fast path: %d flows installed (want some), %d frames translated by the programs (want none: all were fragments)", st.FastInstalled, st.FastTranslated)
	}
}

// fragRun sends 50 datagrams each way (fragSend to fragEcho) in mode "kernel" or
// "shuffle" and checks that all arrive whole, from the outside address, and that netchan
// translated every fragment.
func fragRun(t *testing.T, nl *natLab, mode string) {
	t.Helper()
	outside := nl.l.Netchan[1].Addr.Addr().String()
	srv, cli := nl.srv.Addr.Addr().String(), nl.cli.Addr.Addr().String()
	const n = 50
	before, dropsBefore := nl.n.Stats(), natDrops(nl)
	cmd, out := serve(t, nl.srv.NS, "frag-echo", "0.0.0.0:9999", strconv.Itoa(n), mode, srv)
	var sent fragResult
	if err := json.Unmarshal([]byte(run(t, nl.cli.NS, "frag-send", srv+":9999", strconv.Itoa(n), mode, cli)), &sent); err != nil {
		t.Fatalf("%s: client: %v", mode, err)
	}
	cmd.Wait()
	var got fragResult
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%s: server said %q: %v", mode, out.String(), err)
	}
	f, f0 := nl.n.Stats().Fragments, before.Fragments
	t.Logf("%s: server got %d of %d whole (%d bad) from %v; client got %d of %d echoes back whole (%d bad); fragments in %d, translated %d, IDs rewritten %d, held %d, released %d, timeouts %d, over limits %d; NAT drops %v",
		mode, got.OK, n, got.Bad, got.From, sent.OK, sent.Sent, sent.Bad, f.In-f0.In, f.Translated-f0.Translated, f.IDs-f0.IDs,
		f.Held-f0.Held, f.Released-f0.Released, f.Timeouts-f0.Timeouts, f.BufferFull+f.SourceLimit+f.TableFull-f0.BufferFull-f0.SourceLimit-f0.TableFull,
		diffDrops(dropsBefore, natDrops(nl)))
	if got.OK != n || got.Bad != 0 || got.From[outside] != n {
		t.Errorf("%s: the server got %d of %d datagrams whole (%d bad), from %v; want all from the outside address %s", mode, got.OK, n, got.Bad, got.From, outside)
	}
	if sent.Sent != n || sent.OK != n || sent.Bad != 0 {
		t.Errorf("%s: the client sent %d of %d datagrams (it stops after 3 losses in a row) and got %d echoes back whole (%d bad)", mode, sent.Sent, n, sent.OK, sent.Bad)
	}
	if t.Failed() {
		for _, h := range []lab.Host{nl.cli, nl.srv} {
			snmp, _ := exec.Command("ip", "netns", "exec", h.NS, "sh", "-c", "grep -A1 '^Ip:' /proc/net/snmp; grep -A1 '^Udp:' /proc/net/snmp; ip -s link show "+h.Iface).CombinedOutput()
			t.Logf("%s (%s):\n%s", h.Role, h.NS, snmp)
		}
		st := nl.n.Stats()
		t.Logf("NAT stats %+v; shards %+v", st, nl.in.Snapshot())
	}
	// netchan did it: it translated every fragment both ways, gave each outbound datagram a
	// new ID, and (shuffled) held early fragments until their first fragment came.
	if d := f.Translated - f0.Translated; d < 2*n*6 {
		t.Errorf("%s: %d fragments translated, want at least %d", mode, d, 2*n*6)
	}
	if d := f.IDs - f0.IDs; d < n {
		t.Errorf("%s: %d IDs rewritten, want at least %d", mode, d, n)
	}
	if d := f.Held - f0.Held; mode == "shuffle" && d < n {
		t.Errorf("shuffled: %d fragments held for their first fragment, want at least %d", d, n)
	}
	if f.Released-f0.Released != f.Held-f0.Held || f.HeldNow != 0 {
		t.Errorf("%s: held %d, released %d, held now %d", mode, f.Held-f0.Held, f.Released-f0.Released, f.HeldNow)
	}
}

// natDrops is the instance's drop counters by reason.
func natDrops(nl *natLab) map[string]uint64 {
	m := map[string]uint64{}
	for _, s := range nl.in.Snapshot() {
		for r, n := range s.Drops {
			m[r] += n
		}
	}
	return m
}

func diffDrops(before, after map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for r, n := range after {
		if n > before[r] {
			d[r] = n - before[r]
		}
	}
	return d
}
