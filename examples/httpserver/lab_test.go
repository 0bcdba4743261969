package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// runMainEnv makes the test binary run the program itself (main, with the flags it was given)
// instead of the tests: TestLabHTTPServer runs the program as a process of its own, so that
// its flags, its signal handling and its exit status are tested too.
const runMainEnv = "HTTPSERVER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	labtest.SweepStale()
	os.Exit(m.Run())
}

// program is the example running as a process of its own.
type program struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	log    bytes.Buffer  // its standard error (its log lines)
	exited chan struct{} // closed when it has exited; err is then its exit status
	err    error
}

func (p *program) output() string { p.mu.Lock(); defer p.mu.Unlock(); return p.log.String() }

// startProgram runs the program with args and returns once it serves (or fails the test). The
// process is killed when the test ends, if it still runs.
func startProgram(t *testing.T, args ...string) *program {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &program{cmd: exec.Command(exe, args...), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), runMainEnv+"=1")
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if strings.Contains(sc.Text(), "httpserver: serving") {
				close(serving)
			}
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
			t.Logf("killed the program; it logged:\n%s", p.output())
		}
	})
	select {
	case <-serving:
	case <-p.exited:
		t.Fatalf("the program exited before it served (%v):\n%s", p.err, p.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("the program did not serve within 30 s:\n%s", p.output())
	}
	return p
}

// stop sends sig and wants the program to shut down and exit 0.
func (p *program) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("the program did not exit within 20 s of %v:\n%s", sig, p.output())
	}
	if p.err != nil || !strings.Contains(p.output(), "httpserver: stopped") {
		t.Fatalf("after %v the program exited with %v; want exit 0 after \"httpserver: stopped\":\n%s", sig, p.err, p.output())
	}
}

// curl runs curl in namespace ns and returns what it printed on standard output; err carries
// its exit status and standard error.
func curl(t *testing.T, ns string, args ...string) ([]byte, error) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("the lab test runs curl in the peer namespace: install curl (.ci/run does): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "curl", "-sS"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = errors.Join(err, errors.New(strings.TrimSpace(stderr.String())))
	}
	return out, err
}

// curlExit is curl's exit status in err (0 when err is nil, -1 when curl did not run).
func curlExit(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// TestLabHTTPServer runs the program in a pair lab, on the netchan end of the veth (which
// carries no kernel address), and has curl in the peer namespace, a Linux TCP client, fetch
// its pages: the bodies are checked byte for byte, /stats shows that netchan's shards and
// stack carried the requests, and nothing answers at netchan's address while the program does
// not run. It stops the program with SIGTERM, runs it again on another port and stops it with
// SIGINT; both times it must exit 0.
func TestLabHTTPServer(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 2})
	ep := l.Netchan[0]
	peer := ep.Peer
	ours := ep.Addr.Addr().String()

	// Only netchan can answer for ours: the interface has no kernel IPv4 address, and before
	// the program runs nothing answers at all.
	ifi, err := net.InterfaceByName(ep.Iface)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			t.Fatalf("%s carries the kernel IPv4 address %v; the lab gives netchan's interface none", ep.Iface, a)
		}
	}
	if out, err := curl(t, peer.NS, "--max-time", "2", "http://"+ours+"/"); err == nil {
		t.Fatalf("before the program runs, %s answered: %q", ours, out)
	}

	prog := startProgram(t, "--iface", ep.Iface, "--addr", ep.Addr.String())

	// GET /: the greeting names the client's address and port, as curl saw them on its side.
	out, err := curl(t, peer.NS, "--max-time", "10", "-w", "%{local_ip}:%{local_port}", "http://"+ours+"/")
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	i := bytes.LastIndexByte(out, '\n')
	if i < 0 {
		t.Fatalf("GET /: %q", out)
	}
	client := string(out[i+1:])
	if want := "hello from netchan, " + client + "\n"; string(out[:i+1]) != want || !strings.HasPrefix(client, peer.Addr.Addr().String()+":") {
		t.Fatalf("GET /: %q, want %q from %v", out[:i+1], want, peer.Addr.Addr())
	}

	// POST /echo: 300,001 random bytes come back unchanged.
	body := make([]byte, 300_001)
	rng := rand.New(rand.NewPCG(25, 80))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = curl(t, peer.NS, "--max-time", "30", "-H", "Content-Type: application/octet-stream",
		"--data-binary", "@"+file, "http://"+ours+"/echo")
	if err != nil || !bytes.Equal(out, body) {
		t.Fatalf("POST /echo: %v; %d bytes back (equal: %v), want the %d sent", err, len(out), bytes.Equal(out, body), len(body))
	}

	// GET /stats: netchan's two shards received the requests and its stack ran their TCP.
	out, err = curl(t, peer.NS, "--max-time", "10", "http://"+ours+"/stats")
	if err != nil {
		t.Fatalf("GET /stats: %v", err)
	}
	var st stats
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("GET /stats: %v: %s", err, out)
	}
	var rx, tx uint64
	for _, s := range st.Shards {
		rx += s.RxPackets
		tx += s.TxPackets
	}
	if len(st.Shards) != 2 || rx < uint64(len(body)/1460) || tx == 0 {
		t.Errorf("GET /stats: %d shards received %d packets and sent %d; want 2 shards, at least the %d segments of the echo's body",
			len(st.Shards), rx, tx, len(body)/1460)
	}
	// At least 3 passive opens: the peer's kernel may also deliver the SYN of the curl that
	// timed out above, held in its neighbour queue until netchan's gratuitous ARP resolved us.
	if tcp := st.Stack.TCP; tcp.PassiveOpens < 3 || tcp.Established < 3 || tcp.SegmentsIn < uint64(len(body)/1460) {
		t.Errorf("GET /stats: the stack counted %d passive opens, %d established, %d segments in; want the 3 connections and their segments",
			tcp.PassiveOpens, tcp.Established, tcp.SegmentsIn)
	}
	t.Logf("/stats: rx %d tx %d packets; TCP %+v", rx, tx, st.Stack.TCP)

	prog.stop(t, syscall.SIGTERM)

	// Stopped, netchan released the interface's queues: the program starts again, here on
	// another port, and its stack refuses port 80 with a reset (curl: "could not connect", 7,
	// not the timeout, 28, of an address nobody answers for).
	prog = startProgram(t, "--iface", ep.Iface, "--addr", ep.Addr.String(), "--port", "8080")
	out, err = curl(t, peer.NS, "--max-time", "10", "http://"+ours+":8080/")
	if err != nil || !strings.HasPrefix(string(out), "hello from netchan, "+peer.Addr.Addr().String()+":") {
		t.Fatalf("GET :8080/: %q, %v", out, err)
	}
	if _, err := curl(t, peer.NS, "--max-time", "5", "http://"+ours+":80/"); curlExit(err) != 7 {
		t.Errorf("GET :80/ while the program serves 8080: %v; want curl's exit status 7 (connection refused by netchan's reset)", err)
	}
	prog.stop(t, syscall.SIGINT)
}
