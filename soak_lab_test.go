package netchan_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/pipelines/fault"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/shards"
	"github.com/netchan/netchan/stack"
)

// The soak: NETCHAN_SOAK sets its length (a Go duration; default soakDefault). CI runs the
// default; longer runs are for finding slow leaks by hand (NETCHAN_SOAK=30m go test -run
// TestLabSoak -timeout 40m .), and NETCHAN_SOAK_HEAPPROFILE=FILE writes a heap profile at the
// end (go tool pprof -sample_index=inuse_space).
const (
	soakEnv     = "NETCHAN_SOAK"
	soakDefault = 2 * time.Minute
	// soakHeapBound is how much HeapInuse may grow from the warmed-up start to the quiet end,
	// both after a GC. Every table of the stack and the NAT is sized when it starts, so what
	// can grow is per-connection state that churn leaves behind (buffers of connections that
	// are gone should be garbage): a leak of one 512 KiB buffer pair per connection would
	// pass this bound after about 64 connections, and the soak makes thousands.
	soakHeapBound = 32 << 20
	soakFrames    = 4096 // UMEM frames per queue, set explicitly so the accounting check knows it
)

// soakLife is what one client process did in its life; a client killed mid-life reports
// nothing (that is the point of killing it).
type soakLife struct {
	UDPSent, UDPBack, UDPBad               int
	TCPConns, TCPOK, TCPAborted, TCPFailed int
	TCPBad                                 int
	TCPBytes                               int64
	HTTPOK, HTTPFailed, HTTPBad            int
	FirstErr                               string
}

func (l *soakLife) add(o soakLife) {
	l.UDPSent += o.UDPSent
	l.UDPBack += o.UDPBack
	l.UDPBad += o.UDPBad
	l.TCPConns += o.TCPConns
	l.TCPOK += o.TCPOK
	l.TCPAborted += o.TCPAborted
	l.TCPFailed += o.TCPFailed
	l.TCPBad += o.TCPBad
	l.TCPBytes += o.TCPBytes
	l.HTTPOK += o.HTTPOK
	l.HTTPFailed += o.HTTPFailed
	l.HTTPBad += o.HTTPBad
	if l.FirstErr == "" {
		l.FirstErr = o.FirstErr
	}
}

// soakClient (in a peer namespace) makes mixed traffic to args[0] for args[4] ms: UDP echo to
// port args[1] (a new socket, so a new source port, every 20 datagrams; some datagrams
// fragmented), TCP echo connections to port args[2] (1 B to 256 KiB each, byte-checked; one in
// ten aborted with a RST half-way), and HTTP GET /bytes/N to port args[3] (0: none). args[5]
// seeds its choices. It prints its soakLife as JSON when its life ends.
func soakClient(args []string) error {
	target := args[0]
	udpPort, tcpPort, httpPort, lifeMs, seed := atoi(args[1]), atoi(args[2]), atoi(args[3]), atoi(args[4]), atoi(args[5])
	end := time.Now().Add(time.Duration(lifeMs) * time.Millisecond)
	var mu sync.Mutex
	var life soakLife
	record := func(f func(l *soakLife), err error) {
		mu.Lock()
		defer mu.Unlock()
		f(&life)
		if err != nil && life.FirstErr == "" {
			life.FirstErr = err.Error()
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(rng *rand.Rand) {
			defer wg.Done()
			for time.Now().Before(end) {
				soakTCP(rng, net.JoinHostPort(target, strconv.Itoa(tcpPort)), record)
			}
		}(rand.New(rand.NewPCG(uint64(seed), uint64(w))))
	}
	wg.Add(1)
	go func(rng *rand.Rand) {
		defer wg.Done()
		for time.Now().Before(end) {
			soakUDP(rng, net.JoinHostPort(target, strconv.Itoa(udpPort)), record)
		}
	}(rand.New(rand.NewPCG(uint64(seed), 100)))
	if httpPort != 0 {
		wg.Add(1)
		go func(rng *rand.Rand) {
			defer wg.Done()
			for time.Now().Before(end) {
				soakHTTP(rng, net.JoinHostPort(target, strconv.Itoa(httpPort)), record)
			}
		}(rand.New(rand.NewPCG(uint64(seed), 200)))
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(life)
}

// soakTCP makes one echo connection.
func soakTCP(rng *rand.Rand, addr string, record func(func(*soakLife), error)) {
	n := 1 + rng.IntN(256<<10)
	abort := rng.IntN(10) == 0
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		record(func(l *soakLife) { l.TCPConns++; l.TCPFailed++ }, fmt.Errorf("dial %s: %w", addr, err))
		return
	}
	tc := c.(*net.TCPConn)
	if abort {
		c.Write(data[:n/2])
		tc.SetLinger(0) // a RST, not a FIN: the server's connection is torn down under it
		c.Close()
		record(func(l *soakLife) { l.TCPConns++; l.TCPAborted++ }, nil)
		return
	}
	go func() { c.Write(data); tc.CloseWrite() }()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	back, err := io.ReadAll(c)
	c.Close()
	switch {
	case err != nil:
		record(func(l *soakLife) { l.TCPConns++; l.TCPFailed++ }, fmt.Errorf("echo of %d bytes from %s: %w after %d", n, addr, err, len(back)))
	case sha256.Sum256(back) != sha256.Sum256(data):
		record(func(l *soakLife) { l.TCPConns++; l.TCPBad++ }, fmt.Errorf("echo of %d bytes from %s came back as %d different bytes", n, addr, len(back)))
	default:
		record(func(l *soakLife) { l.TCPConns++; l.TCPOK++; l.TCPBytes += int64(n) }, nil)
	}
}

// soakUDP sends 20 datagrams from a new socket, each waiting for its echo. An echo that comes
// after its wait ran out is matched to its datagram (counted late), not taken for a wrong one.
func soakUDP(rng *rand.Rand, addr string, record func(func(*soakLife), error)) {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		record(func(*soakLife) {}, err)
		time.Sleep(100 * time.Millisecond)
		return
	}
	defer c.Close()
	buf := make([]byte, 70000)
	waiting := map[uint64][]byte{}
	for i := 0; i < 20; i++ {
		size := 16 + rng.IntN(1400)
		if rng.IntN(10) == 0 {
			size = 3000 // fragmented both ways
		}
		want := make([]byte, size)
		for j := range want {
			want[j] = byte(rng.Uint32())
		}
		id := rng.Uint64()
		binary.BigEndian.PutUint64(want, id) // no two datagrams alike
		waiting[id] = want
		c.Write(want)
		record(func(l *soakLife) { l.UDPSent++ }, nil)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break // lost, or late
			}
			got := buf[:n]
			var sent []byte
			if n >= 8 {
				sent = waiting[binary.BigEndian.Uint64(got)]
			}
			if !bytes.Equal(got, sent) {
				record(func(l *soakLife) { l.UDPBad++ }, fmt.Errorf("UDP echo of %d bytes: %d bytes came back that were never sent", size, n))
				continue
			}
			delete(waiting, binary.BigEndian.Uint64(got))
			record(func(l *soakLife) { l.UDPBack++ }, nil)
			if n >= 8 && binary.BigEndian.Uint64(got) == id {
				break
			}
		}
		time.Sleep(5 * time.Millisecond) // within the echo service's per-source rate limit
	}
}

// soakHTTP fetches /bytes/N from the echo service's web server and checks the body.
func soakHTTP(rng *rand.Rand, addr string, record func(func(*soakLife), error)) {
	n := rng.IntN(128 << 10)
	cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: rng.IntN(2) == 0}}
	defer cl.CloseIdleConnections()
	for k := 0; k < 1+rng.IntN(4); k++ {
		resp, err := cl.Get(fmt.Sprintf("http://%s/bytes/%d", addr, n))
		if err != nil {
			record(func(l *soakLife) { l.HTTPFailed++ }, fmt.Errorf("GET: %w", err))
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			record(func(l *soakLife) { l.HTTPFailed++ }, fmt.Errorf("GET body: %w", err))
			return
		}
		good := len(body) == n
		for i := 0; good && i < n; i++ {
			good = body[i] == echo.BytesPattern(i)
		}
		if !good {
			record(func(l *soakLife) { l.HTTPBad++ }, fmt.Errorf("GET /bytes/%d: %d bytes, not the pattern", n, len(body)))
			return
		}
		record(func(l *soakLife) { l.HTTPOK++ }, nil)
	}
}

// soakServer (in the NAT lab's outside host) echoes UDP and TCP on args[0] until killed.
func soakServer(args []string) error {
	uc, err := net.ListenPacket("udp4", args[0])
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp4", args[0])
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 70000)
		for {
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(buf[:n], from)
		}
	}()
	fmt.Fprintln(os.Stderr, "listening")
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// soakSide is one lab of the soak: an instance, the namespace its clients run in, what they
// talk to, and what their lives reported.
type soakSide struct {
	name      string
	in        *netchan.Instance
	clientNS  string
	target    string
	udp, tcp  int
	http      int
	mu        sync.Mutex
	total     soakLife
	completed int
	killed    int
}

// life runs one client for d; when kill is set it is killed (SIGKILL: a restart of the
// peer's application, its connections left to netchan to clean up) at a random point.
func (s *soakSide) life(t *testing.T, d time.Duration, kill bool, seed int) (soakLife, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	cmd := nschild.Command(ctx, s.clientNS, "soak-client", s.target, strconv.Itoa(s.udp), strconv.Itoa(s.tcp),
		strconv.Itoa(s.http), strconv.Itoa(int(d/time.Millisecond)), strconv.Itoa(seed))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Errorf("%s: client: %v", s.name, err)
		return soakLife{}, false
	}
	if kill {
		time.AfterFunc(time.Duration(rand.Int64N(int64(d))), func() { cmd.Process.Signal(syscall.SIGKILL) })
	}
	err := cmd.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if kill && err != nil {
		s.killed++
		return soakLife{}, false
	}
	if err != nil {
		t.Errorf("%s: client: %v\n%s", s.name, err, errb.String())
		return soakLife{}, false
	}
	var l soakLife
	if err := json.Unmarshal(out.Bytes(), &l); err != nil {
		t.Errorf("%s: client printed %q: %v", s.name, out.String(), err)
		return soakLife{}, false
	}
	s.completed++
	s.total.add(l)
	return l, true
}

// TestLabSoak: mixed traffic through the echo service and the NAT at once, each in its own
// lab with two queues and two shards, with 1% of received frames dropped at random (a fault
// stage in front of each pipeline), connection churn (thousands of short TCP connections, one
// in ten aborted by RST, a new UDP source port every 20 datagrams, NAT mappings expiring and
// their ports reused) and restarts of the peers (a third of the client processes killed at a
// random moment, the NAT's server killed and started again half-way). No byte may come back
// wrong; a last client life after it all must be served in full. Afterwards: HeapInuse after
// a GC within soakHeapBound of its warmed-up start, each shard's frames all in the free list
// or the fill ring and adding up to its UMEM, and the goroutines back to their number before
// the instances started. The figures are printed.
func TestLabSoak(t *testing.T) {
	labtest.RequireRoot(t)
	length := soakDefault
	if v := os.Getenv(soakEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 30*time.Second {
			t.Fatalf("%s=%q: want a Go duration of at least 30s", soakEnv, v)
		}
		length = d
	}
	el := labtest.New(t, lab.Config{QueueCount: 2})
	nl := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 2})
	goroutinesBefore := runtime.NumGoroutine()
	var faults fault.Counters
	loss := fault.Config{Seed: 28, Drop: 0.01}

	// The echo service on the pair lab.
	ep := el.Netchan[0]
	e, err := echo.NewEcho(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{ep.Addr}}}})
	if err != nil {
		t.Fatal(err)
	}
	echoApp, err := echo.WithFault(e.App(), loss, &faults)
	if err != nil {
		t.Fatal(err)
	}
	cfg := netchan.Config{Interfaces: []string{ep.Iface}, XDPMode: xdpprog.ModeNative, Debug: true}
	cfg.UMEM.Frames = soakFrames
	echoIn, err := netchan.Start(cfg, echoApp)
	if err != nil {
		t.Fatal(err)
	}
	stopped := map[*netchan.Instance]bool{}
	t.Cleanup(func() {
		if !stopped[echoIn] {
			echoIn.Stop()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served, err := e.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The NAT on the NAT lab, with short timeouts so that mappings expire and ports come back
	// during the soak, and its XDP fast path on, so that flows move into the programs and out.
	inside, outside := nl.Netchan[0], nl.Netchan[1]
	host, err := stack.NewHost(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{inside.Addr}}, {Addrs: []netip.Prefix{outside.Addr}}}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := nat.New(nat.Config{InsidePrefix: inside.Addr.Masked(), InsideAddr: inside.Addr.Addr(), Outside: outside.Addr.Addr(),
		Timeouts: nat.Timeouts{UDP: 3 * time.Second, TCPTransitory: 5 * time.Second}}, host)
	if err != nil {
		t.Fatal(err)
	}
	natApp, err := echo.WithFault(n.App(true), loss, &faults)
	if err != nil {
		t.Fatal(err)
	}
	cfg = netchan.Config{Interfaces: []string{inside.Iface, outside.Iface}, XDPMode: xdpprog.ModeNative, Debug: true}
	cfg.UMEM.Frames = soakFrames
	natIn, err := netchan.Start(cfg, natApp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !stopped[natIn] {
			natIn.Stop()
		}
	})
	const serverPort = 7007
	server := outside.Peer.Addr.Addr().String()
	startServer := func() *exec.Cmd {
		cmd := nschild.Command(context.Background(), outside.Peer.NS, "soak-server", fmt.Sprintf("%s:%d", server, serverPort))
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		k, _ := stderr.Read(buf)
		if !strings.Contains(string(buf[:k]), "listening") {
			cmd.Process.Kill()
			t.Fatalf("soak server: %q", buf[:k])
		}
		return cmd
	}
	srv := startServer()
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })

	sides := []*soakSide{
		{name: "echo", in: echoIn, clientNS: ep.Peer.NS, target: ep.Addr.Addr().String(), udp: 7, tcp: 7, http: 80},
		{name: "nat", in: natIn, clientNS: inside.Peer.NS, target: server, udp: serverPort, tcp: serverPort},
	}
	seed := 0
	round := func(d time.Duration, kill bool) {
		var wg sync.WaitGroup
		for _, s := range sides {
			for c := 0; c < 2; c++ {
				seed++
				wg.Add(1)
				go func(s *soakSide, kill bool, seed int) {
					defer wg.Done()
					s.life(t, d, kill, seed)
				}(s, kill && c == 0 && rand.IntN(3) == 0, seed)
			}
		}
		wg.Wait()
	}

	// Warm up (every path once: connections, fragments, mappings, fast-path flows), then the
	// heap's starting point.
	round(3*time.Second, false)
	heapStart := heapInuse()
	start := time.Now()
	restarted := false
	for time.Since(start) < length {
		d := time.Duration(4+rand.IntN(9)) * time.Second
		if !restarted && time.Since(start) > length/2 {
			// The NAT's server goes away and comes back: its connections die under the
			// NAT's mappings, which must time out; new ones must work.
			srv.Process.Kill()
			srv.Wait()
			time.Sleep(time.Second)
			srv = startServer()
			restarted = true
		}
		round(d, true)
	}
	// A last life per side, nothing killed: everything served in full.
	for _, s := range sides {
		seed++
		l, ok := s.life(t, 5*time.Second, false, seed)
		if !ok {
			continue
		}
		if l.TCPFailed != 0 || l.TCPOK == 0 || l.HTTPFailed != 0 || l.UDPBack < l.UDPSent*9/10 {
			t.Errorf("%s: the last client after the soak was not served in full: %+v", s.name, l)
		}
	}
	// Quiet: connections closed, aborted ones reset, mappings expiring.
	time.Sleep(3 * time.Second)
	heapEnd := heapInuse()
	states := map[string]int{}
	for _, c := range e.Host.TCPConns() {
		states[c.State]++
	}
	t.Logf("echo: TCP connections at the end, by state: %v", states)
	if f := os.Getenv(soakEnv + "_HEAPPROFILE"); f != "" {
		writeHeapProfile(t, f)
	}

	for _, s := range sides {
		tot := s.total
		t.Logf("%s: %d client lives completed, %d killed; TCP %d connections: %d echoed byte-exact (%d MiB), %d aborted by RST, %d failed, %d wrong; UDP %d sent, %d echoed, %d wrong; HTTP %d ok, %d failed, %d wrong",
			s.name, s.completed, s.killed, tot.TCPConns, tot.TCPOK, tot.TCPBytes>>20, tot.TCPAborted, tot.TCPFailed, tot.TCPBad,
			tot.UDPSent, tot.UDPBack, tot.UDPBad, tot.HTTPOK, tot.HTTPFailed, tot.HTTPBad)
		if tot.FirstErr != "" {
			t.Logf("%s: first client error: %s", s.name, tot.FirstErr)
		}
		if tot.TCPBad+tot.UDPBad+tot.HTTPBad != 0 {
			t.Errorf("%s: bytes came back wrong (TCP %d, UDP %d, HTTP %d)", s.name, tot.TCPBad, tot.UDPBad, tot.HTTPBad)
		}
		if tot.TCPOK == 0 || tot.UDPBack == 0 {
			t.Errorf("%s: nothing was served", s.name)
		}
		tr := shards.TrafficOf(s.in.Snapshot())
		t.Logf("%s: frames received %d, sent %d; drops by reason: %s", s.name, tr.RxPackets, tr.TxPackets, tr.DropsString())
	}
	ns := n.Stats()
	t.Logf("nat: mappings created %d, expired %d, active %d; fast path: %d packets, %d flows installed",
		ns.Created, ns.Expired, ns.Active, ns.FastTranslated, ns.FastInstalled)
	t.Logf("faults: %+v", faults.Snapshot())
	t.Logf("heap in use after GC: %.1f MiB at the start, %.1f MiB at the end (bound +%d MiB)",
		float64(heapStart)/(1<<20), float64(heapEnd)/(1<<20), soakHeapBound>>20)
	if heapEnd > heapStart+soakHeapBound {
		t.Errorf("heap grew from %d to %d bytes over the soak, more than %d", heapStart, heapEnd, soakHeapBound)
	}
	if ns.Expired == 0 {
		t.Errorf("no NAT mapping expired: the churn did not reach the expiry path")
	}

	// Shut down and account for every frame.
	cancel()
	if err := <-served; err != nil {
		t.Errorf("echo service: %v", err)
	}
	for _, s := range sides {
		stopped[s.in] = true
		if err := s.in.Stop(); err != nil {
			t.Errorf("%s: stop: %v", s.name, err)
		}
		for i, pl := range s.in.FramePlaces() {
			sum := 0
			for _, k := range pl {
				sum += k
			}
			home := pl["free"] + pl["kernel-rx"]
			t.Logf("%s: shard %d frames: %v (add up to %d of %d)", s.name, i, pl, sum, soakFrames)
			if sum != soakFrames || home != soakFrames {
				t.Errorf("%s: shard %d frames after stop: %v; want all %d in free or kernel-rx", s.name, i, pl, soakFrames)
			}
		}
	}
	var after int
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = runtime.NumGoroutine()
		if after <= goroutinesBefore || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("goroutines: %d before the instances started, %d after they stopped", goroutinesBefore, after)
	if after > goroutinesBefore {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines leaked:\n%s", after-goroutinesBefore, buf[:runtime.Stack(buf, true)])
	}
}

// writeHeapProfile writes the heap profile (what is live after the soak) to file: set
// NETCHAN_SOAK_HEAPPROFILE=FILE to see what holds the heap when the bound fails.
func writeHeapProfile(t *testing.T, file string) {
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
