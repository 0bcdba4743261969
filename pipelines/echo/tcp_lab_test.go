package echo_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/stack"
)

func init() {
	nschild.Register("xferclient", xferClientMain)
	nschild.Register("xferserver", xferServerMain)
	nschild.Register("echoclients", echoClientsMain)
}

// The transfer protocol of the lab tests: the client sends 'U' or 'D' and an 8-byte length N.
// U: the client sends N bytes of xferPattern and the server answers with their SHA-256.
// D: the server sends N bytes of xferPattern and closes; the client checks their SHA-256.
func xferPattern(off int, p []byte) {
	for i := range p {
		j := off + i
		p[i] = byte(j*7 + j>>11)
	}
}

type patternSrc struct{ off, n int }

func (r *patternSrc) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	k := min(len(p), r.n-r.off)
	xferPattern(r.off, p[:k])
	r.off += k
	return k, nil
}

func patternSHA(n int) []byte {
	h := sha256.New()
	io.CopyBuffer(h, &patternSrc{n: n}, make([]byte, 1<<20))
	return h.Sum(nil)
}

type closeWriter interface{ CloseWrite() error }

// xferClient runs one transfer on c and checks it.
func xferClient(c net.Conn, mode byte, n int, want []byte) error {
	var hdr [9]byte
	hdr[0] = mode
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	switch mode {
	case 'U':
		if _, err := io.CopyBuffer(c, &patternSrc{n: n}, make([]byte, 256<<10)); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		sum := make([]byte, 32)
		if _, err := io.ReadFull(c, sum); err != nil {
			return fmt.Errorf("reading the server's SHA-256: %w", err)
		}
		if !bytes.Equal(sum, want) {
			return fmt.Errorf("server's SHA-256 %x, want %x", sum, want)
		}
	case 'D':
		h := sha256.New()
		got, err := io.CopyBuffer(h, c, make([]byte, 256<<10))
		if err != nil {
			return fmt.Errorf("download after %d bytes: %w", got, err)
		}
		if int(got) != n || !bytes.Equal(h.Sum(nil), want) {
			return fmt.Errorf("downloaded %d of %d bytes, SHA-256 %x, want %x", got, n, h.Sum(nil), want)
		}
	}
	return nil
}

// xferServe serves one transfer on c.
func xferServe(c net.Conn) error {
	defer c.Close()
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint64(hdr[1:]))
	switch hdr[0] {
	case 'U':
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.LimitReader(c, int64(n)), make([]byte, 256<<10)); err != nil {
			return err
		}
		_, err := c.Write(h.Sum(nil))
		if cw, ok := c.(closeWriter); ok {
			cw.CloseWrite()
		}
		io.Copy(io.Discard, c) // until the client closes
		return err
	case 'D':
		_, err := io.CopyBuffer(c, &patternSrc{n: n}, make([]byte, 256<<10))
		if cw, ok := c.(closeWriter); ok {
			cw.CloseWrite()
		}
		io.Copy(io.Discard, c)
		return err
	}
	return fmt.Errorf("bad mode %q", hdr[0])
}

// xferClientMain (kernel side): addr mode n → transfers and prints the time taken.
func xferClientMain(args []string) error {
	n := atoi(args[2])
	c, err := net.DialTimeout("tcp4", args[0], 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	if err := xferClient(c, args[1][0], n, patternSHA(n)); err != nil {
		return err
	}
	fmt.Println(time.Since(start).Seconds())
	return nil
}

// xferServerMain (kernel side): addr count → serves count transfers.
func xferServerMain(args []string) error {
	l, err := net.Listen("tcp4", args[0])
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Fprintln(os.Stderr, "listening")
	var wg sync.WaitGroup
	errs := make(chan error, atoi(args[1]))
	for range atoi(args[1]) {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- xferServe(c) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// echoClientsMain (kernel side): addr conns bytes → that many concurrent echo connections,
// every byte checked.
func echoClientsMain(args []string) error {
	addr, conns, size := args[0], atoi(args[1]), atoi(args[2])
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp4", addr, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			want := make([]byte, size)
			xferPattern(i*1000003, want)
			go func() {
				c.Write(want)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- fmt.Errorf("connection %d: %w after %d bytes", i, err, len(got))
				return
			}
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("connection %d: echo of %d bytes differs (%d back)", i, size, len(got))
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func runChild(t *testing.T, ns string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := nschild.Command(ctx, ns, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v in %s: %v\n%s%s", name, args, ns, err, out, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// serveXfer runs the transfer server on netchan's listener on port.
func serveXfer(t *testing.T, e *echo.Echo, port uint16) {
	t.Helper()
	l, err := e.Host.ListenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), port), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				if err := xferServe(c); err != nil {
					t.Errorf("netchan transfer server: %v", err)
				}
			}()
		}
	}()
}

// startKernelServer starts the kernel transfer server in ns for count transfers.
func startKernelServer(t *testing.T, ns, addr string, count int) *exec.Cmd {
	t.Helper()
	srv := nschild.Command(context.Background(), ns, "xferserver", addr, strconv.Itoa(count))
	stderr, _ := srv.StderrPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stderr).ReadString('\n')
	if !strings.Contains(line, "listening") {
		srv.Process.Kill()
		t.Fatalf("kernel server: %q", line)
	}
	go io.Copy(io.Discard, stderr)
	return srv
}

// dialXfer runs one transfer from netchan's side against addr.
func dialXfer(t *testing.T, e *echo.Echo, addr string, mode byte, n int, limit time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.Host.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	start := time.Now()
	if err := xferClient(c, mode, n, patternSHA(n)); err != nil {
		t.Fatalf("netchan → %s %c %d bytes: %v (conn %+v)", addr, mode, n, err, c.(*stack.TCPConn).Stats())
	}
	return time.Since(start)
}

func secs(s string) time.Duration {
	f, _ := strconv.ParseFloat(s, 64)
	return time.Duration(f * float64(time.Second))
}

// TestLabTCP: the Linux kernel as client and as server of netchan's TCP, on two queues (two
// shards), netchan's interface without a kernel address: 100 MB each way checked by SHA-256,
// curl fetching 10 MB over HTTP, 200 concurrent echo connections, options on the wire.
func TestLabTCP(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 2})
	ep := l.Netchan[0]
	peer := ep.Peer
	noKernelIPv4(t, ep.Iface)
	e, _ := startEcho(t, ep, stack.Config{})
	serveXfer(t, e, 5001)
	ours := ep.Addr.Addr().String()
	var before stack.TCPStats
	size := 100 << 20
	if testing.Short() {
		size = 10 << 20
	}

	before = e.Host.Stats().TCP
	// Capture SYNs in the peer's namespace while the first connection opens; a capture that
	// comes out empty (tcpdump on a loaded machine) is repeated around a small transfer.
	syn, synack := captureSYNs(t, peer, func() {
		t.Run("linux-client-upload", func(t *testing.T) {
			d := secs(runChild(t, peer.NS, 2*time.Minute, "xferclient", ours+":5001", "U", strconv.Itoa(size)))
			t.Logf("Linux → netchan %d MB in %v (%.0f Mbit/s)", size>>20, d, float64(size)*8/d.Seconds()/1e6)
		})
	})
	logTCPDelta(t, "linux-client-upload", before, e.Host.Stats().TCP)
	for try := 0; try < 2 && !(syn && synack); try++ {
		syn, synack = captureSYNs(t, peer, func() { runChild(t, peer.NS, time.Minute, "xferclient", ours+":5001", "U", "1024") })
	}
	if !syn || !synack {
		t.Errorf("capture holds SYN %v, SYN-ACK %v; want both", syn, synack)
	}

	before = e.Host.Stats().TCP
	t.Run("linux-client-download", func(t *testing.T) {
		d := secs(runChild(t, peer.NS, 2*time.Minute, "xferclient", ours+":5001", "D", strconv.Itoa(size)))
		t.Logf("netchan → Linux %d MB in %v (%.0f Mbit/s)", size>>20, d, float64(size)*8/d.Seconds()/1e6)
	})
	logTCPDelta(t, "linux-client-download", before, e.Host.Stats().TCP)
	before = e.Host.Stats().TCP
	t.Run("netchan-client", func(t *testing.T) {
		srv := startKernelServer(t, peer.NS, peer.Addr.Addr().String()+":6001", 2)
		to := peer.Addr.Addr().String() + ":6001"
		d := dialXfer(t, e, to, 'U', size, time.Minute)
		t.Logf("netchan client → Linux server %d MB in %v", size>>20, d)
		d = dialXfer(t, e, to, 'D', size, time.Minute)
		t.Logf("Linux server → netchan client %d MB in %v", size>>20, d)
		if err := srv.Wait(); err != nil {
			t.Fatalf("kernel server: %v", err)
		}
	})
	logTCPDelta(t, "netchan-client", before, e.Host.Stats().TCP)
	before = e.Host.Stats().TCP
	t.Run("curl", func(t *testing.T) {
		n := 10000000
		start := time.Now()
		out, err := exec.Command("ip", "netns", "exec", peer.NS, "bash", "-c",
			"set -o pipefail; curl -sS --max-time 60 http://"+ours+"/bytes/"+strconv.Itoa(n)+" | sha256sum").CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		h := sha256.New()
		b := make([]byte, n)
		for i := range b {
			b[i] = echo.BytesPattern(i)
		}
		h.Write(b)
		if want := hex.EncodeToString(h.Sum(nil)); !strings.HasPrefix(string(out), want) {
			t.Fatalf("curl body SHA-256 %s, want %s", out, want)
		}
		t.Logf("curl /bytes/%d in %v", n, time.Since(start))
	})
	logTCPDelta(t, "curl", before, e.Host.Stats().TCP)
	before = e.Host.Stats().TCP
	t.Run("echo-200", func(t *testing.T) {
		start := time.Now()
		runChild(t, peer.NS, 2*time.Minute, "echoclients", ours+":7", "200", "50000")
		t.Logf("200 concurrent echo connections × 50,000 bytes in %v", time.Since(start))
	})
	logTCPDelta(t, "echo-200", before, e.Host.Stats().TCP)
	st := e.Host.Stats().TCP
	t.Logf("TCP counters: %+v", st)
	if st.PassiveOpens < 203 || st.ActiveOpens < 2 {
		t.Errorf("TCP counters: %+v", st)
	}
	shardsSeen := map[int]bool{}
	for _, c := range e.Host.TCPConns() {
		shardsSeen[c.Shard] = true
	}
	t.Logf("connections left: %d on shards %v", len(e.Host.TCPConns()), shardsSeen)
}

// logTCPDelta logs what a subtest cost in RTOs, probes and rejected segments: in a run
// without loss these should stay near zero, and when a busy machine stalls a shard they show
// where (spurious RTOs, then reordering that PAWS rejects).
func logTCPDelta(t *testing.T, name string, a, b stack.TCPStats) {
	t.Logf("%s: retransmits %d, fast %d, tail loss probes %d, timeouts %d (spurious %d), PAWS rejected %d, out of order %d, duplicates %d",
		name, b.Retransmits-a.Retransmits, b.FastRetransmits-a.FastRetransmits, b.TailLossProbes-a.TailLossProbes,
		b.Timeouts-a.Timeouts, b.SpuriousRTOs-a.SpuriousRTOs, b.PAWSRejected-a.PAWSRejected, b.OOOSegments-a.OOOSegments,
		b.DupSegments-a.DupSegments)
}

// pcapPackets reads a little-endian pcap file and decodes its frames.
func pcapPackets(t *testing.T, file string) []gopacket.Packet {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil || len(raw) < 24 || binary.LittleEndian.Uint32(raw) != 0xa1b2c3d4 {
		t.Fatalf("capture: not a little-endian pcap file (%v, %d bytes)", err, len(raw))
	}
	var out []gopacket.Packet
	for off := 24; off+16 <= len(raw); {
		n := int(binary.LittleEndian.Uint32(raw[off+8:]))
		if off+16+n > len(raw) {
			break
		}
		out = append(out, gopacket.NewPacket(raw[off+16:off+16+n], layers.LayerTypeEthernet, gopacket.Default))
		off += 16 + n
	}
	return out
}

// checkSYNOptions reads the capture and checks MSS, WS, TS and SACK-permitted in the SYN
// and in the SYN-ACK.
func checkSYNOptions(t *testing.T, file string) (syn, synack bool) {
	t.Helper()
	for _, p := range pcapPackets(t, file) {
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil || !tcp.SYN {
			continue
		}
		kinds := map[layers.TCPOptionKind]bool{}
		for _, o := range tcp.Options {
			kinds[o.OptionType] = true
		}
		all := kinds[layers.TCPOptionKindMSS] && kinds[layers.TCPOptionKindWindowScale] &&
			kinds[layers.TCPOptionKindTimestamps] && kinds[layers.TCPOptionKindSACKPermitted]
		if !all {
			t.Errorf("SYN (ack %v) options %v: want MSS, WS, TS, SACK-permitted", tcp.ACK, tcp.Options)
		}
		if tcp.ACK {
			synack = true
		} else {
			syn = true
		}
	}
	return syn, synack
}

// sackBlocks counts, per sender address, the captured segments that carry SACK blocks, and
// checks that every block is well formed (left edge below right edge, above the ACK; a first
// block below the ACK is a D-SACK, RFC 2883).
func sackBlocks(t *testing.T, file string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, p := range pcapPackets(t, file) {
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip == nil || tcp == nil {
			continue
		}
		for _, o := range tcp.Options {
			if o.OptionType != layers.TCPOptionKindSACK {
				continue
			}
			if len(o.OptionData) == 0 || len(o.OptionData)%8 != 0 {
				t.Errorf("SACK option from %v with %d bytes of blocks", ip.SrcIP, len(o.OptionData))
				continue
			}
			for j, b := 0, o.OptionData; len(b) >= 8; j, b = j+1, b[8:] {
				left, right := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
				if j == 0 && int32(right-left) > 0 && int32(right-tcp.Ack) <= 0 {
					continue // a D-SACK (RFC 2883): duplicate data below the ACK, first block only
				}
				if int32(right-left) <= 0 || int32(left-tcp.Ack) <= 0 {
					t.Errorf("SACK block [%d, %d) from %v with ACK %d: want ACK < left < right", left, right, ip.SrcIP, tcp.Ack)
				}
			}
			n[ip.SrcIP.String()]++
		}
	}
	return n
}

// capturePeer runs tcpdump in the peer's namespace around fn (headers only) and returns the
// capture file.
func capturePeer(t *testing.T, peer lab.Host, filter string, fn func()) string {
	t.Helper()
	pcap := filepath.Join(t.TempDir(), "peer.pcap")
	// --immediate-mode: without it libpcap hands packets over a ring block at a time, after
	// up to a second, and tcpdump stopped 300 ms after fn had received but not written them
	// ("0 packets captured, 2 packets received by filter").
	dump := exec.Command("ip", "netns", "exec", peer.NS, "tcpdump", "--immediate-mode", "-U", "-n", "-s", "128", "-B", "16384", "-i", peer.Iface, "-w", pcap, filter)
	dumpErr, _ := dump.StderrPipe()
	if err := dump.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	if line, _ := bufio.NewReader(dumpErr).ReadString('\n'); !strings.Contains(line, "listening") {
		t.Fatalf("tcpdump: %q", line)
	}
	var tail bytes.Buffer // tcpdump's summary: packets captured, received, dropped
	copied := make(chan struct{})
	go func() { io.Copy(&tail, dumpErr); close(copied) }()
	time.Sleep(200 * time.Millisecond)
	fn()
	time.Sleep(300 * time.Millisecond)
	dump.Process.Signal(os.Interrupt)
	<-copied
	dump.Wait()
	t.Logf("tcpdump in %s (%s): %s", peer.NS, filter, strings.Join(strings.Fields(tail.String()), " "))
	return pcap
}

// captureSYNs runs tcpdump in the peer's namespace around fn and checks the SYNs it saw.
func captureSYNs(t *testing.T, peer lab.Host, fn func()) (syn, synack bool) {
	t.Helper()
	return checkSYNOptions(t, capturePeer(t, peer, "tcp[tcpflags] & tcp-syn != 0", fn))
}

// TestLabTCPLoss: 1% random loss and every 20th / 10th packet dropped by iptables in the
// router's FORWARD chain, both ways, netchan as server and as client.
func TestLabTCPLoss(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("iptables is missing: apt-get install iptables")
	}
	l := labtest.New(t, lab.Config{Layout: lab.LayoutRouted, QueueCount: 2})
	ep := l.Netchan[0]
	router := ep.Peer
	var peer lab.Host
	for _, h := range l.Hosts {
		if h.Role == "peer" {
			peer = h
		}
	}
	noKernelIPv4(t, ep.Iface)
	e, _ := startEcho(t, ep, stack.Config{Routes: []stack.Route{{Prefix: peer.Addr.Masked(), Via: router.Addr.Addr()}}})
	serveXfer(t, e, 5001)
	ours := ep.Addr.Addr().String()
	ipt := func(args ...string) {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", router.NS, "iptables"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
	}
	drops := func() string {
		out, _ := exec.Command("ip", "netns", "exec", router.NS, "iptables", "-nvxL", "FORWARD").CombinedOutput()
		return string(out)
	}
	cases := []struct {
		name  string
		rule  []string
		size  int
		limit time.Duration
	}{
		{"random-1pct", []string{"-m", "statistic", "--mode", "random", "--probability", "0.01"}, 20 << 20, 60 * time.Second},
		{"every-20th", []string{"-m", "statistic", "--mode", "nth", "--every", "20", "--packet", "0"}, 10 << 20, 60 * time.Second},
		{"every-10th", []string{"-m", "statistic", "--mode", "nth", "--every", "10", "--packet", "0"}, 10 << 20, 90 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ipt(append([]string{"-A", "FORWARD"}, append(tc.rule, "-j", "DROP")...)...)
			defer ipt("-F", "FORWARD")
			before := e.Host.Stats().TCP
			transfers := func() {
				for _, mode := range []string{"U", "D"} {
					start := time.Now()
					runChild(t, peer.NS, tc.limit+10*time.Second, "xferclient", ours+":5001", mode, strconv.Itoa(tc.size))
					if d := time.Since(start); d > tc.limit {
						t.Errorf("Linux client %s %d MB took %v, limit %v", mode, tc.size>>20, d, tc.limit)
					} else {
						t.Logf("Linux client %s %d MB: %v", mode, tc.size>>20, d)
					}
				}
			}
			if tc.name != "every-20th" {
				transfers()
			} else {
				// SACK blocks on the wire: netchan's ACKs carry them while it receives the
				// upload, Linux's while it receives the download (pure ACKs only, headers only).
				pcap := capturePeer(t, peer, "tcp port 5001 and ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) == 0", transfers)
				sacks := sackBlocks(t, pcap)
				t.Logf("captured segments with SACK blocks, by sender: %v", sacks)
				if sacks[ours] == 0 || sacks[peer.Addr.Addr().String()] == 0 {
					t.Errorf("SACK blocks under loss: %v; want segments with SACK blocks from netchan (%s) and from Linux (%s)", sacks, ours, peer.Addr.Addr())
				}
			}
			// netchan as the client of a kernel server, under the same loss.
			srv := startKernelServer(t, peer.NS, peer.Addr.Addr().String()+":6001", 2)
			to := peer.Addr.Addr().String() + ":6001"
			for _, mode := range []byte{'U', 'D'} {
				d := dialXfer(t, e, to, mode, tc.size, tc.limit)
				t.Logf("netchan client %c %d MB: %v", mode, tc.size>>20, d)
			}
			if err := srv.Wait(); err != nil {
				t.Fatalf("kernel server: %v", err)
			}
			after := e.Host.Stats().TCP
			t.Logf("retransmits %d, fast %d, lost retransmissions %d, tail loss probes %d, timeouts %d; router: %s",
				after.Retransmits-before.Retransmits, after.FastRetransmits-before.FastRetransmits,
				after.LostRetransmits-before.LostRetransmits, after.TailLossProbes-before.TailLossProbes,
				after.Timeouts-before.Timeouts, firstDropLine(drops()))
			if after.Retransmits == before.Retransmits {
				t.Errorf("no retransmissions by netchan under loss")
			}
		})
	}
}

func firstDropLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "DROP") {
			return strings.Join(strings.Fields(l), " ")
		}
	}
	return s
}

var _ = json.Marshal
