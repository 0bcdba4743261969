package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan/cmd/netchan/capture"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/stack/header"
)

// startTapClient starts `netchan capture` or `netchan trace` and waits until it says it is
// capturing (the instance installed its taps before it answered). It returns the command and
// its standard output and error.
func startTapClient(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout bytes.Buffer
	stderr := &syncBuffer{eof: make(chan struct{})}
	cmd.Stdout = &stdout
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	ready := make(chan bool, 1)
	go func() {
		defer close(stderr.eof)
		sc := bufio.NewScanner(pr)
		said := false
		for sc.Scan() {
			stderr.WriteLine(sc.Text())
			if !said && (strings.Contains(sc.Text(), "capturing") || strings.Contains(sc.Text(), "following")) {
				said = true
				ready <- true
			}
		}
		if !said {
			ready <- false
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("netchan %s did not start: %s", args[0], stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("netchan %s: no ready line in 10s: %s", args[0], stderr.String())
	}
	return cmd, &stdout, stderr
}

type syncBuffer struct {
	eof chan struct{} // closed when the client's standard error ended
	mu  sync.Mutex
	b   strings.Builder
}

func (s *syncBuffer) WriteLine(l string) { s.mu.Lock(); s.b.WriteString(l + "\n"); s.mu.Unlock() }
func (s *syncBuffer) String() string     { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// waitExit waits for a client to end by itself.
func waitExit(t *testing.T, cmd *exec.Cmd, stderr *syncBuffer, within time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		select {
		case <-stderr.eof:
		case <-time.After(5 * time.Second):
		}
		if err != nil {
			t.Fatalf("netchan %s: %v\n%s", cmd.Args[1], err, stderr.String())
		}
	case <-time.After(within):
		cmd.Process.Kill()
		t.Fatalf("netchan %s did not end within %v:\n%s", cmd.Args[1], within, stderr.String())
	}
}

// interrupt stops a client as an operator does (Ctrl-C) and waits for it.
func interrupt(t *testing.T, cmd *exec.Cmd, stderr *syncBuffer) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGINT)
	waitExit(t, cmd, stderr, 15*time.Second)
}

func readPcapng(t *testing.T, path string) *capture.PcapngFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pf, err := capture.ReadPcapng(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pf
}

// tcpdumpCount runs tcpdump -r on the file and returns how many packets it printed.
func tcpdumpCount(t *testing.T, path string) (int, string) {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatal("tcpdump is not installed (.ci/run installs it): the test reads the capture with it")
	}
	out, err := exec.Command("tcpdump", "-nn", "-r", path).Output()
	if err != nil {
		t.Fatalf("tcpdump -r %s: %v %s", path, err, stderrOf(err))
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return 0, s
	}
	return len(strings.Split(s, "\n")), s
}

// TestCaptureSteadyFiltered runs `netchan run` (reflect) on a lab, captures "udp and dst
// port 9" while N frames to port 9 and M to port 10 (both reflected and checked) go through,
// stops the capture with Ctrl-C and finds exactly the N frames in the file, which tcpdump
// reads; then a capture with -c K ends by itself with exactly K.
func TestCaptureSteadyFiltered(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	name := l.Name + "-cap"
	startRun(t, "--iface", ep.Iface, "--pipeline", "reflect", "--stats", "0", "--instance", name)
	const n, m = 700, 500
	path := filepath.Join(t.TempDir(), "steady.pcapng")
	cmd, _, stderr := startTapClient(t, "capture", "--instance", name, "--filter", "udp and dst port 9", "-w", path)
	send := func(dport uint16, count uint64, run uint32) {
		cfg := trafficgen.Config{Iface: ep.Peer.Iface, Queue: 0, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
			SrcPort: 20000, DstPort: dport, Flows: 4, Size: 90, Count: count, Rate: 20000, RunID: run, Verify: true, Wait: 3 * time.Second}
		r := labSend(t, ep.Peer.NS, cfg)
		if r.Sent != count || r.Received != count || r.Mismatched != 0 {
			t.Fatalf("to port %d: sent %d, got back %d intact, %d mismatched", dport, r.Sent, r.Received, r.Mismatched)
		}
	}
	send(10, m/2, 31)
	send(9, n, 32)
	send(10, m/2, 33)
	interrupt(t, cmd, stderr)
	pf := readPcapng(t, path)
	if len(pf.Packets) != n {
		t.Fatalf("the capture holds %d packets, want exactly %d\n%s", len(pf.Packets), n, stderr.String())
	}
	for i, p := range pf.Packets {
		ip, ok := header.IPv4InFrame(p.Data)
		_, dport, _ := ip.Ports()
		if !ok || ip.Protocol() != header.ProtoUDP || dport != 9 || len(p.Data) != 90 || p.OrigLen != 90 || !strings.Contains(p.Comment, "reflect in") {
			t.Fatalf("packet %d: %d bytes, comment %q, %x", i, len(p.Data), p.Comment, p.Data)
		}
	}
	if s := pf.Stats[0]; s.Matched != n || s.Dropped != 0 || s.Delivered != n {
		t.Errorf("statistics: %+v, want %d selected, 0 lost, %d written", s, n, n)
	}
	got, txt := tcpdumpCount(t, path)
	if got != n || strings.Count(txt, ".9: UDP") != n {
		t.Errorf("tcpdump -r shows %d packets (want %d):\n%.2000s", got, n, txt)
	}
	t.Logf("capture: %s", strings.TrimSpace(stderr.String()))

	// -c K: the capture ends by itself after K packets.
	const k = 123
	path2 := filepath.Join(t.TempDir(), "count.pcapng")
	cmd2, _, stderr2 := startTapClient(t, "capture", "--instance", name, "--filter", "dst port 9", "-c", fmt.Sprint(k), "-w", path2)
	send(9, 300, 34)
	waitExit(t, cmd2, stderr2, 15*time.Second)
	if pf := readPcapng(t, path2); len(pf.Packets) != k {
		t.Errorf("-c %d: the file holds %d packets", k, len(pf.Packets))
	}
	if got, _ := tcpdumpCount(t, path2); got != k {
		t.Errorf("-c %d: tcpdump shows %d", k, got)
	}
	if !strings.Contains(stderr2.String(), "(count)") {
		t.Errorf("-c: %s", stderr2.String())
	}
	// Bad requests are refused with the reason.
	out, err := exec.Command(binary, "capture", "--instance", name, "--filter", "udp and", "-w", path2).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "expected a primitive") {
		t.Errorf("bad filter: %v %s", err, out)
	}
	out, err = exec.Command(binary, "capture", "--instance", name, "--stage", "nosuch", "-w", path2).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `no stage "nosuch"`) || !strings.Contains(string(out), "reflect") {
		t.Errorf("bad stage: %v %s", err, out)
	}
}

// TestCaptureOnOffNoLoss sends a long verified run (every reflection checked) through
// `netchan run` on two queues while captures start and stop again and again, with small
// rings so that a capture may lose packets of its own: every frame comes back, and every
// capture's figures add up (selected = written + could not keep).
func TestCaptureOnOffNoLoss(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 2})
	ep := l.Netchan[0]
	name := l.Name + "-onoff"
	startRun(t, "--iface", ep.Iface, "--pipeline", "reflect", "--stats", "0", "--instance", name)
	const count = 60000
	cfg := trafficgen.Config{Iface: ep.Peer.Iface, Queues: []int{0, 1}, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
		SrcPort: 20000, DstPort: 9, Flows: 8, Size: 60, Count: count, Rate: 30000, RunID: 41, Verify: true, Wait: 3 * time.Second}
	res := make(chan trafficgen.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := trafficgen.Command(ctx, ep.Peer.NS, []string{binary, "lab", "send"}, cfg)
		out, err := c.Output()
		if err != nil {
			t.Errorf("sender: %v %s", err, stderrOf(err))
			res <- trafficgen.Result{}
			return
		}
		r, err := trafficgen.Decode(out)
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	time.Sleep(200 * time.Millisecond)
	var captures, written, lost uint64
	deadline := time.Now().Add(1500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("onoff%d.pcapng", i))
		args := []string{"capture", "--instance", name, "--slots", "16", "-w", path}
		if i%2 == 1 {
			args = append(args, "--filter", "udp and dst port 9 and shard 1")
		}
		cmd, _, stderr := startTapClient(t, args...)
		time.Sleep(time.Duration(50+30*(i%4)) * time.Millisecond)
		interrupt(t, cmd, stderr)
		pf := readPcapng(t, path)
		var sel, drop, deliv uint64
		for _, s := range pf.Stats {
			sel, drop, deliv = sel+s.Matched, drop+s.Dropped, deliv+s.Delivered
		}
		if deliv != uint64(len(pf.Packets)) || sel != deliv+drop {
			t.Errorf("capture %d: %d packets in the file; figures: selected %d, written %d, could not keep %d (selected must be written + not kept)",
				i, len(pf.Packets), sel, deliv, drop)
		}
		if !strings.Contains(stderr.String(), fmt.Sprintf("could not keep %d", drop)) {
			t.Errorf("capture %d does not report its losses (%d): %s", i, drop, stderr.String())
		}
		captures++
		written += deliv
		lost += drop
	}
	r := <-res
	if r.Sent != count || r.Received != count || r.Mismatched != 0 {
		t.Fatalf("with captures going on and off: sent %d, got back %d intact, %d mismatched; want all %d", r.Sent, r.Received, r.Mismatched, count)
	}
	if written == 0 {
		t.Errorf("%d captures wrote nothing", captures)
	}
	t.Logf("%d frames all reflected intact; %d captures on and off: %d packets written, %d the captures could not keep (counted)", count, captures, written, lost)
}
