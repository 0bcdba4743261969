package xdpprog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Lab tests: real veth pairs and network namespaces. Every name starts with
// "ncx" (other lab tests on this machine use "nct"/"ncl"), every address is
// in 198.18.0.0/15, and everything is removed by t.Cleanup, failed or not.
//
// Code that must live in a namespace runs as a re-exec of this test binary
// (TestHelperProcess) started with `ip netns exec`, never by switching a
// goroutine's thread.

const helperEnv = "NCX_XDPPROG_HELPER"

var nameSeq atomic.Int32

// ncxName returns a fresh interface or namespace name, at most 15 bytes.
func ncxName(kind string) string {
	return fmt.Sprintf("ncx%d%s%d", os.Getpid()%100000, kind, nameSeq.Add(1))
}

func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNetns creates a network namespace and deletes it in t.Cleanup.
func newNetns(t *testing.T) string {
	t.Helper()
	name := ncxName("n")
	ipCmd(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// newVeth creates veth a (in this namespace) with peer b inside peerNS,
// with the given queue counts, and returns a's ifindex. a is deleted in
// t.Cleanup (which removes b too); deleting peerNS also removes the pair.
func newVeth(t *testing.T, a, b, peerNS string, txA, rxA, txB, rxB int) int {
	t.Helper()
	nsf, err := os.Open("/run/netns/" + peerNS)
	if err != nil {
		t.Fatalf("open namespace %s: %v", peerNS, err)
	}
	defer nsf.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.NumTxQueues, attrs.NumRxQueues = a, txA, rxA
	v := netlink.NewVeth(attrs)
	v.PeerName = b
	v.PeerNumTxQueues, v.PeerNumRxQueues = uint32(txB), uint32(rxB)
	v.PeerNamespace = netlink.NsFd(nsf.Fd())
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatalf("create veth %s/%s: %v", a, b, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(a); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("cleanup: delete %s: %v", a, err)
			}
		}
	})
	l, err := netlink.LinkByName(a)
	if err != nil {
		t.Fatalf("veth %s: %v", a, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", a, err)
	}
	ipCmd(t, "-n", peerNS, "link", "set", "dev", b, "up")
	return l.Attrs().Index
}

// xdpProg returns the id and attach mode (1 native, 2 generic) of the XDP
// program on an interface of this namespace, 0 when there is none.
func xdpProg(t *testing.T, ifindex int) (id, mode uint32) {
	t.Helper()
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		t.Fatalf("LinkByIndex(%d): %v", ifindex, err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId, x.AttachMode
	}
	return 0, 0
}

func waitDetached(t *testing.T, ifindex int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		id, _ := xdpProg(t, ifindex)
		if id == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("XDP program id %d is still attached to ifindex %d after %v", id, ifindex, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func progID(t *testing.T, p *Program) uint32 {
	t.Helper()
	info, err := p.prog.Info()
	if err != nil {
		t.Fatalf("program info: %v", err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("kernel gave no program id")
	}
	return uint32(id)
}

var modeFlags = map[Mode]uint32{ModeNative: 1, ModeGeneric: 2} // XDP_ATTACHED_DRV, _SKB

// TestAttach attaches to a real veth in native, generic and auto mode, and
// checks what netlink sees, that a second Program is refused with
// ErrAlreadyAttached (also against a netlink-attached program), and that
// Close detaches.
func TestAttach(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	a, b := ncxName("a"), ncxName("b")
	idx := newVeth(t, a, b, ns, 1, 1, 1, 1)

	for _, mode := range []Mode{ModeNative, ModeGeneric, ModeAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			p := loadTest(t)
			used, err := p.Attach(idx, mode)
			if err != nil {
				t.Fatalf("Attach(%s, %s): %v", a, mode, err)
			}
			want := mode
			if mode == ModeAuto {
				want = ModeNative // veth supports native XDP
			}
			if used != want {
				t.Fatalf("Attach(%s) used %s, want %s", mode, used, want)
			}
			id, how := xdpProg(t, idx)
			if id != progID(t, p) || how != modeFlags[want] {
				t.Fatalf("netlink shows program id %d mode %d, want id %d mode %d", id, how, progID(t, p), modeFlags[want])
			}

			if _, err := p.Attach(idx, mode); err == nil {
				t.Fatal("attaching the same Program twice: no error")
			}
			p2 := loadTest(t)
			for _, m := range []Mode{ModeAuto, ModeNative, ModeGeneric} {
				_, err := p2.Attach(idx, m)
				if !errors.Is(err, ErrAlreadyAttached) {
					t.Fatalf("second Program, %s mode: %v, want ErrAlreadyAttached", m, err)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("id %d", id)) || !strings.Contains(err.Error(), "xdp off") {
					t.Errorf("error should name program id %d and the way out: %v", id, err)
				}
			}
			t.Logf("second Program: %v", func() error { _, err := p2.Attach(idx, ModeAuto); return err }())

			if err := p.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			waitDetached(t, idx, time.Second)
			// The interface is free again.
			if _, err := p2.Attach(idx, mode); err != nil {
				t.Fatalf("attach after the first Program closed: %v", err)
			}
			must(t, p2.Close())
			waitDetached(t, idx, time.Second)
		})
	}

	t.Run("netlink-attached program", func(t *testing.T) {
		other := loadTest(t)
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetXdpFdWithFlags(l, other.prog.FD(), unix.XDP_FLAGS_SKB_MODE); err != nil {
			t.Fatalf("attach by netlink: %v", err)
		}
		t.Cleanup(func() {
			if err := netlink.LinkSetXdpFdWithFlags(l, -1, unix.XDP_FLAGS_SKB_MODE); err != nil {
				t.Errorf("cleanup: detach netlink program from %s: %v", a, err)
			}
		})
		p := loadTest(t)
		for _, m := range []Mode{ModeAuto, ModeNative, ModeGeneric} {
			if _, err := p.Attach(idx, m); !errors.Is(err, ErrAlreadyAttached) {
				t.Fatalf("%s mode over a netlink-attached program: %v, want ErrAlreadyAttached", m, err)
			}
		}
	})

	t.Run("no interface", func(t *testing.T) {
		p := loadTest(t)
		for _, ifindex := range []int{0, 1 << 30} {
			if _, err := p.Attach(ifindex, ModeAuto); !errors.Is(err, ErrNoInterface) {
				t.Errorf("Attach(ifindex %d): %v, want ErrNoInterface", ifindex, err)
			}
		}
	})
}

// TestAttachNativeRefused makes native attach fail on purpose (a veth with
// fewer rx queues than its peer has tx queues: ENOSPC) and checks that
// ModeNative returns ErrNativeRefused while ModeAuto falls back to generic
// with a log line that says why.
func TestAttachNativeRefused(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	a, b := ncxName("a"), ncxName("b")
	idx := newVeth(t, a, b, ns, 1, 1, 2, 2)

	p := loadTest(t)
	_, err := p.Attach(idx, ModeNative)
	if !errors.Is(err, ErrNativeRefused) {
		t.Fatalf("native attach with 1 rx queue against 2 peer tx queues: %v, want ErrNativeRefused", err)
	}
	t.Logf("ModeNative: %v", err)
	if id, _ := xdpProg(t, idx); id != 0 {
		t.Fatalf("program %d attached after a refused attach", id)
	}

	var mu sync.Mutex
	var logs []string
	p2, err := Load(Options{Logf: func(f string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, fmt.Sprintf(f, args...))
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p2.Close() })
	used, err := p2.Attach(idx, ModeAuto)
	if err != nil || used != ModeGeneric {
		t.Fatalf("ModeAuto: used %v, err %v; want generic fallback", used, err)
	}
	mu.Lock()
	t.Logf("fallback log: %q", logs)
	if len(logs) != 1 || !strings.Contains(logs[0], "falling back to generic") || !strings.Contains(logs[0], a) {
		t.Errorf("want one log line naming %s and the fallback, got %q", a, logs)
	}
	mu.Unlock()
	if id, how := xdpProg(t, idx); id != progID(t, p2) || how != modeFlags[ModeGeneric] {
		t.Fatalf("netlink: id %d mode %d, want id %d generic", id, how, progID(t, p2))
	}
}

// child is a re-exec of this test binary running TestHelperProcess.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func helperCmd(t *testing.T, ctx context.Context, netns, role string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable: %v", err)
	}
	args := []string{exe, "-test.run=^TestHelperProcess$", "-test.timeout=2m"}
	if netns != "" {
		args = append([]string{"ip", "netns", "exec", netns}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), append([]string{helperEnv + "=" + role}, env...)...)
	return cmd
}

// startChild starts a long-lived helper; it is SIGKILLed in t.Cleanup if it
// is still running.
func startChild(t *testing.T, netns, role string, env ...string) *child {
	t.Helper()
	cmd := helperCmd(t, context.Background(), netns, role, env...)
	c := &child{cmd: cmd, lines: make(chan string, 16), stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// expect waits for a stdout line starting with prefix.
func (c *child) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				<-c.done
				t.Fatalf("helper exited (%v) before printing %q; stderr:\n%s", c.cmd.ProcessState, prefix, c.stderr)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
			if strings.HasPrefix(line, "error:") {
				t.Fatalf("helper: %s; stderr:\n%s", line, c.stderr)
			}
		case <-timeout:
			t.Fatalf("no %q line from the helper within 30s; stderr:\n%s", prefix, c.stderr)
		}
	}
}

func (c *child) stats(t *testing.T) Stats {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "stats\n"); err != nil {
		t.Fatalf("ask helper for stats: %v", err)
	}
	line := c.expect(t, "stats ")
	var s Stats
	if _, err := fmt.Sscanf(line, "stats passed=%d claimed=%d nosocket=%d prefix=%d",
		&s.Passed, &s.Claimed, &s.NoSocket, &s.Prefix); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	return s
}

// TestSIGKILLDetaches attaches from a child process and SIGKILLs it: the
// kernel must release the bpf_link and detach the program by itself.
func TestSIGKILLDetaches(t *testing.T) {
	requireRoot(t)
	for _, mode := range []Mode{ModeNative, ModeGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			ns := newNetns(t)
			a, b := ncxName("a"), ncxName("b")
			idx := newVeth(t, a, b, ns, 1, 1, 1, 1)

			c := startChild(t, "", "attach", "NCX_IFNAME="+a, "NCX_MODE="+mode.String())
			line := c.expect(t, "attached ")
			if f := strings.Fields(line); len(f) < 2 || f[1] != mode.String() {
				t.Fatalf("helper says %q, want mode %s", line, mode)
			}
			id, how := xdpProg(t, idx)
			if id == 0 || how != modeFlags[mode] {
				t.Fatalf("after the helper attached: program id %d mode %d on %s", id, how, a)
			}
			if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("SIGKILL: %v", err)
			}
			<-c.done
			waitDetached(t, idx, 5*time.Second)
			t.Logf("program %d (%s) detached by the kernel after SIGKILL", id, mode)
		})
	}
}

// TestUnclaimedTrafficReachesKernel puts a veth between two namespaces,
// attaches the program from a helper inside namespace A (claiming only
// 198.18.0.100/32), and pings the kernel address 198.18.0.1 from namespace
// B: the echoes must come back while the program is attached, and the
// Passed counter must move. Then frames for the claimed address must move
// Claimed (and NoSocket: no socket is registered). The pinger is an ICMP
// echo client of our own (a re-exec in namespace B), so the test needs no
// ping binary; ICMP is checksummed in software, so transmit checksum offload
// does not matter here.
func TestUnclaimedTrafficReachesKernel(t *testing.T) {
	requireRoot(t)
	for _, mode := range []Mode{ModeNative, ModeGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			nsA, nsB, a, b := addressedPair(t)

			c := startChild(t, nsA, "attach", "NCX_IFNAME="+a, "NCX_MODE="+mode.String(),
				"NCX_CLAIM=198.18.0.100/32")
			f := strings.Fields(c.expect(t, "attached "))
			if len(f) != 3 || f[1] != mode.String() {
				t.Fatalf("helper attached %q, want mode %s", f, mode)
			}
			mac := f[2]
			if out := ipCmd(t, "-n", nsA, "link", "show", "dev", a); !strings.Contains(out, "prog/xdp") {
				t.Fatalf("no XDP program on %s in %s:\n%s", a, nsA, out)
			}

			before := c.stats(t)
			if out := runHelper(t, nsB, "ping", "NCX_TARGET=198.18.0.1", "NCX_COUNT=3", "NCX_WAIT_MS=2000"); out != "replies 3" {
				t.Fatalf("ping 198.18.0.1 from %s with the program attached: %q, want 3 replies", nsB, out)
			}
			after := c.stats(t)
			t.Logf("%s mode, ping to the kernel address: %+v -> %+v", mode, before, after)
			if after.Passed < before.Passed+3 {
				t.Errorf("Passed moved by %d, want >= 3 (the echo requests)", after.Passed-before.Passed)
			}
			if after.Claimed != before.Claimed {
				t.Errorf("Claimed moved by %d for unclaimed traffic", after.Claimed-before.Claimed)
			}

			// Frames to the claimed address: claimed, and with no socket
			// registered they fall back to the kernel (which has no such
			// address, so no reply).
			ipCmd(t, "-n", nsB, "neigh", "replace", "198.18.0.100", "lladdr", mac, "dev", b, "nud", "permanent")
			runHelper(t, nsB, "ping", "NCX_TARGET=198.18.0.100", "NCX_COUNT=2", "NCX_WAIT_MS=200")
			claimed := c.stats(t)
			t.Logf("%s mode, ping to the claimed address: %+v", mode, claimed)
			if claimed.Claimed < after.Claimed+2 || claimed.Prefix < after.Prefix+2 || claimed.NoSocket < after.NoSocket+2 {
				t.Errorf("2 echoes to 198.18.0.100: Claimed +%d, Prefix +%d, NoSocket +%d; want +2 each",
					claimed.Claimed-after.Claimed, claimed.Prefix-after.Prefix, claimed.NoSocket-after.NoSocket)
			}

			// Closing the Program detaches it.
			c.stdin.Close()
			c.expect(t, "closed")
			<-c.done
			if !c.cmd.ProcessState.Success() {
				t.Fatalf("helper: %v; stderr:\n%s", c.cmd.ProcessState, c.stderr)
			}
			if out := ipCmd(t, "-n", nsA, "link", "show", "dev", a); strings.Contains(out, "prog/xdp") {
				t.Fatalf("XDP program still on %s after Close:\n%s", a, out)
			}
		})
	}
}

// runHelper runs a short-lived helper and returns its last stdout line.
func runHelper(t *testing.T, netns, role string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := helperCmd(t, ctx, netns, role, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if err != nil || strings.HasPrefix(last, "error:") {
		t.Fatalf("helper %s in %s: %v: %s; stderr:\n%s", role, netns, err, out, stderr.String())
	}
	return last
}

// TestHelperProcess is not a test: the lab tests re-execute the test binary
// with NCX_XDPPROG_HELPER set to run one of the roles below in a child
// process (inside a namespace, or to be killed). Run directly, it does
// nothing.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		return
	}
	var err error
	switch role {
	case "attach":
		err = helperAttach()
	case "ping":
		err = helperPing()
	case "owners":
		err = helperOwners()
	case "udpsend":
		err = helperUDPSend()
	case "follow":
		err = helperFollow()
	default:
		err = fmt.Errorf("unknown helper role %q", role)
	}
	if err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// helperAttach loads and attaches the program to NCX_IFNAME in NCX_MODE,
// claims NCX_CLAIM if set, prints "attached MODE MAC", answers "stats"
// lines on stdin, and closes the program at EOF.
func helperAttach() error {
	ifi, err := net.InterfaceByName(os.Getenv("NCX_IFNAME"))
	if err != nil {
		return err
	}
	mode, err := ParseMode(os.Getenv("NCX_MODE"))
	if err != nil {
		return err
	}
	p, err := Load(Options{})
	if err != nil {
		return err
	}
	if c := os.Getenv("NCX_CLAIM"); c != "" {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			return err
		}
		if err := p.ClaimPrefix(pfx); err != nil {
			return err
		}
	}
	used, err := p.Attach(ifi.Index, mode)
	if err != nil {
		return err
	}
	fmt.Printf("attached %s %s\n", used, ifi.HardwareAddr)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "stats" {
			continue
		}
		s, err := p.Stats()
		if err != nil {
			return err
		}
		fmt.Printf("stats passed=%d claimed=%d nosocket=%d prefix=%d\n", s.Passed, s.Claimed, s.NoSocket, s.Prefix)
	}
	if err := p.Close(); err != nil {
		return err
	}
	fmt.Println("closed")
	return nil
}

// helperPing sends NCX_COUNT ICMP echo requests to NCX_TARGET, one at a
// time, waiting up to NCX_WAIT_MS for each reply, and prints "replies N".
func helperPing() error {
	target, err := netip.ParseAddr(os.Getenv("NCX_TARGET"))
	if err != nil || !target.Is4() {
		return fmt.Errorf("NCX_TARGET %q: want an IPv4 address", os.Getenv("NCX_TARGET"))
	}
	count, err := strconv.Atoi(os.Getenv("NCX_COUNT"))
	if err != nil {
		return err
	}
	waitMS, err := strconv.Atoi(os.Getenv("NCX_WAIT_MS"))
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("raw ICMP socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	id := uint16(os.Getpid())
	to := &unix.SockaddrInet4{Addr: target.As4()}
	buf := make([]byte, 1500)
	replies := 0
	for seq := 1; seq <= count; seq++ {
		req := make([]byte, 8+16)
		req[0] = 8 // echo request
		binary.BigEndian.PutUint16(req[4:], id)
		binary.BigEndian.PutUint16(req[6:], uint16(seq))
		copy(req[8:], "netchan xdpprog!")
		binary.BigEndian.PutUint16(req[2:], inetChecksum(req))
		if err := unix.Sendto(fd, req, 0, to); err != nil {
			return fmt.Errorf("send echo %d: %w", seq, err)
		}
		deadline := time.Now().Add(time.Duration(waitMS) * time.Millisecond)
		for time.Now().Before(deadline) {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				return fmt.Errorf("receive: %w", err)
			}
			sa, ok := from.(*unix.SockaddrInet4)
			if !ok || sa.Addr != target.As4() || n < 20 {
				continue
			}
			ihl := int(buf[0]&0xf) * 4
			if n < ihl+8 {
				continue
			}
			icmp := buf[ihl:n]
			if icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id && binary.BigEndian.Uint16(icmp[6:]) == uint16(seq) {
				replies++
				break
			}
		}
	}
	fmt.Printf("replies %d\n", replies)
	return nil
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// addressedPair makes two namespaces joined by a veth pair of two queues each way (equal
// queue counts, or native attach fails with ENOSPC): end a in nsA with the kernel address
// 198.18.0.1/24, end b in nsB with 198.18.0.2/24, both up.
func addressedPair(t *testing.T) (nsA, nsB, a, b string) {
	t.Helper()
	nsA, nsB = newNetns(t), newNetns(t)
	a, b = ncxName("a"), ncxName("b")
	newVeth(t, a, b, nsB, 2, 2, 2, 2)
	la, err := netlink.LinkByName(a)
	if err != nil {
		t.Fatal(err)
	}
	fa, err := os.Open("/run/netns/" + nsA)
	if err != nil {
		t.Fatal(err)
	}
	err = netlink.LinkSetNsFd(la, int(fa.Fd()))
	fa.Close()
	if err != nil {
		t.Fatalf("move %s to %s: %v", a, nsA, err)
	}
	ipCmd(t, "-n", nsA, "addr", "add", "198.18.0.1/24", "dev", a)
	ipCmd(t, "-n", nsA, "link", "set", "dev", a, "up")
	ipCmd(t, "-n", nsA, "link", "set", "dev", "lo", "up")
	ipCmd(t, "-n", nsB, "addr", "add", "198.18.0.2/24", "dev", b)
	ipCmd(t, "-n", nsB, "link", "set", "dev", "lo", "up")
	return nsA, nsB, a, b
}
