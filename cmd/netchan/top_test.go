package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/shards"
)

// Two statuses of an instance as its control socket served them, half a second apart (by its
// uptime): the unit tests render the frame between them.
const (
	topStatusA = `{"instance":"edge1","pid":4242,"command":"nat","started":"2026-12-08T10:00:00Z","uptime_seconds":10.0,
 "sections":["pipeline","shards","tcp","nat"],
 "pipeline":{"name":"nat","interfaces":["in0","out0"],"queues":[0,1],"xdp_modes":["native","native"],"batch_size":64,"owner":"flow"},
 "shards":[
  {"shard":0,"queue":0,"cpu":0,"rx_packets":1000,"rx_bytes":60000,"tx_packets":900,"tx_bytes":54000,"drops":{"no_route":10},"drops_total":10,
   "handoff_out":100,"handoff_in":50,"busy_ns":100000000,"idle_ns":400000000,
   "stages":[{"name":"nat","calls":100,"packets":1000,"decided":1000,"ns_per_packet":80.5,"packets_per_call":10},
             {"name":"stack","calls":10,"packets":20,"decided":20,"ns_per_packet":300,"packets_per_call":2}],
   "kernel":[{"rx_dropped":5},{}]},
  {"shard":1,"queue":1,"cpu":-1,"rx_packets":0,"rx_bytes":0,"tx_packets":0,"tx_bytes":0,"drops_total":0,"busy_ns":0,"idle_ns":500000000,
   "stages":[{"name":"nat","calls":0,"packets":0,"decided":0,"ns_per_packet":0,"packets_per_call":0},
             {"name":"stack","calls":0,"packets":0,"decided":0,"ns_per_packet":0,"packets_per_call":0}]}],
 "tcp":{"conns":[
  {"shard":0,"local":"198.18.0.1:7","remote":"198.18.0.2:40000","state":"ESTABLISHED","srtt_ns":2000000,"cwnd":14600,"mss":1460,"retransmits":0},
  {"shard":1,"local":"198.18.0.1:7","remote":"198.18.0.2:40001","state":"ESTABLISHED","srtt_ns":1000000,"cwnd":29200,"mss":1460,"retransmits":3}]},
 "nat":{"stats":{"mappings_active":2,"mappings_created":2,"mappings_expired":0,"packets_translated":1000},
  "mappings":[{"shard":0,"proto":"udp","inside":"10.0.0.2:1000","external":"198.51.100.1:20000"},
              {"shard":0,"proto":"udp","inside":"10.0.0.3:1000","external":"198.51.100.1:20001"}]}}`
	topStatusB = `{"instance":"edge1","pid":4242,"command":"nat","started":"2026-12-08T10:00:00Z","uptime_seconds":10.5,
 "sections":["pipeline","shards","tcp","nat"],
 "pipeline":{"name":"nat","interfaces":["in0","out0"],"queues":[0,1],"xdp_modes":["native","native"],"batch_size":64,"owner":"flow"},
 "shards":[
  {"shard":0,"queue":0,"cpu":0,"rx_packets":21000,"rx_bytes":1260000,"tx_packets":10900,"tx_bytes":654000,"drops":{"no_route":60,"ttl_exceeded":20},"drops_total":80,
   "handoff_out":600,"handoff_in":150,"busy_ns":400000000,"idle_ns":600000000,
   "stages":[{"name":"nat","calls":1100,"packets":21000,"decided":21000,"ns_per_packet":90,"packets_per_call":19.09},
             {"name":"stack","calls":20,"packets":40,"decided":40,"ns_per_packet":300,"packets_per_call":2}],
   "kernel":[{"rx_dropped":15},{}]},
  {"shard":1,"queue":1,"cpu":-1,"rx_packets":500,"rx_bytes":30000,"tx_packets":0,"tx_bytes":0,"drops_total":0,"busy_ns":0,"idle_ns":1000000000,
   "stages":[{"name":"nat","calls":0,"packets":0,"decided":0,"ns_per_packet":0,"packets_per_call":0},
             {"name":"stack","calls":0,"packets":0,"decided":0,"ns_per_packet":0,"packets_per_call":0}]}],
 "tcp":{"conns":[
  {"shard":0,"local":"198.18.0.1:7","remote":"198.18.0.2:40000","state":"ESTABLISHED","srtt_ns":2000000,"cwnd":14600,"mss":1460,"retransmits":0},
  {"shard":1,"local":"198.18.0.1:7","remote":"198.18.0.2:40001","state":"ESTABLISHED","srtt_ns":1000000,"cwnd":29200,"mss":1460,"retransmits":3}]},
 "nat":{"stats":{"mappings_active":3,"mappings_created":3,"mappings_expired":0,"packets_translated":11000},
  "mappings":[{"shard":0,"proto":"udp","inside":"10.0.0.2:1000","external":"198.51.100.1:20000"},
              {"shard":0,"proto":"udp","inside":"10.0.0.3:1000","external":"198.51.100.1:20001"},
              {"shard":0,"proto":"udp","inside":"10.0.0.4:1000","external":"198.51.100.1:20002"}]}}`
)

// decodeTopStatus decodes a served status as control.Fetch does.
func decodeTopStatus(t *testing.T, raw string, at time.Time) *topSample {
	t.Helper()
	st := &control.Status{Raw: []byte(raw)}
	if err := json.Unmarshal(st.Raw, &st.Header); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(st.Raw, &st.Sections); err != nil {
		t.Fatal(err)
	}
	s, err := newTopSample(st, at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// shardRow finds shard n's row in a frame and returns its fields (SHARD Q CPU RX pkt/s RX
// bit/s TX pkt/s TX bit/s DROP/s HOUT/s HIN/s BUSY%).
func shardRow(screen string, n int) []string {
	in := false
	for _, l := range strings.Split(screen, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "SHARD" {
			in = true
			continue
		}
		if in && len(f) == 0 {
			return nil
		}
		if in && f[0] == strconv.Itoa(n) {
			return f
		}
	}
	return nil
}

// parseCount reads fmtCount's and fmtSI's output back.
func parseCount(s string) (float64, error) {
	mul := 1.0
	if i := strings.IndexAny(s, "kMGT"); i == len(s)-1 && i > 0 {
		mul = map[byte]float64{'k': 1e3, 'M': 1e6, 'G': 1e9, 'T': 1e12}[s[i]]
		s = s[:i]
	}
	v, err := strconv.ParseFloat(s, 64)
	return v * mul, err
}

// TestTopRender renders the frame between two recorded statuses and checks each figure
// against the counters' differences over the 0.5 s between the statuses' uptimes.
func TestTopRender(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 10, 0, 10, 0, time.UTC)
	a := decodeTopStatus(t, topStatusA, t0)
	b := decodeTopStatus(t, topStatusB, t0.Add(700*time.Millisecond)) // the client's clock is not the one used
	lines := renderTop(a, b, topFrame{Width: topWidth})
	screen := strings.Join(lines, "\n")
	t.Logf("frame:\n%s", screen)
	for i, l := range lines {
		if n := len([]rune(l)); n > 80 {
			t.Errorf("line %d has %d columns, want at most 80: %q", i, n, l)
		}
		if strings.ContainsRune(l, '\x1b') {
			t.Errorf("line %d holds an escape sequence: %q", i, l)
		}
	}
	// shard 0: rx 20000 pkts and 1.2 MB in 0.5 s; tx 10000 pkts, 600 kB; 70 drops; hand-offs
	// 500 out, 100 in; busy 300 ms of 500 ms.
	want0 := []string{"0", "0", "0", "40000", "19.2M", "20000", "9.60M", "140", "1000", "200", "60.0"}
	if got := shardRow(screen, 0); !slices.Equal(got, want0) {
		t.Errorf("shard 0 row: got %q, want %q", got, want0)
	}
	want1 := []string{"1", "1", "-", "1000", "480k", "0", "0", "0", "0", "0", "0.0"}
	if got := shardRow(screen, 1); !slices.Equal(got, want1) {
		t.Errorf("shard 1 row: got %q, want %q", got, want1)
	}
	mustContain := []string{
		"netchan top: edge1  nat nat on in0,out0  pid 4242  up 10s",
		"rates over the last 0.50s",
		"drops/s, shard 0: no_route 100, ttl_exceeded 40, kernel in0 rx_dropped 20",
		"TCP connections: 2 (by cwnd/srtt)",
		"NAT: 3 mappings, created/s 2, expired/s 0, translated pkts/s 20000, fast path 0",
	}
	for _, w := range mustContain {
		if !strings.Contains(screen, w) {
			t.Errorf("frame lacks %q", w)
		}
	}
	if strings.Contains(screen, "shard 1:") {
		t.Errorf("a drops line for shard 1, which dropped nothing")
	}
	// all: rx 41000 pkt/s
	if i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "all") }); i < 0 || strings.Fields(lines[i])[1] != "41000" {
		t.Errorf("no total row with rx 41000 pkt/s")
	}
	// stages over both shards: nat 1000 calls, 20000 packets in 0.5 s: 2000 calls/s, 40000
	// pkts/s, 20.00 pkts/call; ns/pkt is the stage's own average (90).
	stage := regexp.MustCompile(`(?m)^nat +2000 +40000 +20\.00 +90\.0 +0$`)
	if !stage.MatchString(screen) {
		t.Errorf("no nat stage row 2000 calls/s, 40000 pkts/s, 20.00 pkts/call, 90.0 ns/pkt, 0 drops/s")
	}
	if !regexp.MustCompile(`(?m)^stack +20 +40 +2\.00 +300\.0 +0$`).MatchString(screen) {
		t.Errorf("no stack stage row 20 calls/s, 40 pkts/s, 2.00 pkts/call")
	}
	// flows: the connection whose window allows more (29200 B per 1 ms) first; the new mapping first.
	i40001, i40000 := strings.Index(screen, "198.18.0.2:40001"), strings.Index(screen, "198.18.0.2:40000")
	if i40001 < 0 || i40000 < 0 || i40001 > i40000 {
		t.Errorf("TCP connections not listed by cwnd/srtt")
	}
	if !regexp.MustCompile(`(?m)^ 0 udp +10\.0\.0\.4:1000 +198\.51\.100\.1:20002 +new$`).MatchString(screen) ||
		strings.Index(screen, "10.0.0.4:1000") > strings.Index(screen, "10.0.0.2:1000") {
		t.Errorf("the mapping created in the interval is not listed first, marked new")
	}

	// A first frame (no second sample yet) has no rates; a restarted instance (another pid)
	// is shown without rates rather than with negative ones.
	first := strings.Join(renderTop(nil, a, topFrame{Width: topWidth}), "\n")
	if !strings.Contains(first, "waiting for a second sample") || !slices.Equal(shardRow(first, 0)[3:], []string{"-", "-", "-", "-", "-", "-", "-", "-"}) {
		t.Errorf("first frame:\n%s", first)
	}
	restarted := decodeTopStatus(t, strings.Replace(topStatusA, `"pid":4242`, `"pid":4243`, 1), t0)
	if got := shardRow(strings.Join(renderTop(b, restarted, topFrame{Width: topWidth}), "\n"), 0); got[3] != "-" {
		t.Errorf("rates across a restart: %q", got)
	}

	// A small terminal: lines cut to its width, the frame to its height.
	small := renderTop(a, b, topFrame{Width: 40, Height: 12, Live: true})
	if len(small) > 12 {
		t.Errorf("%d lines for a 12-row terminal", len(small))
	}
	for _, l := range small {
		if len([]rune(l)) > 40 {
			t.Errorf("line wider than 40 columns: %q", l)
		}
	}
	// The live frame's escape sequences: home, clear to end of line and of screen.
	if f := ansiFrame([]string{"a", "b"}); f != "\x1b[Ha\x1b[K\r\nb\x1b[K\x1b[J" {
		t.Errorf("ansiFrame: %q", f)
	}
}

// TestTopFormat checks the number formats a frame uses.
func TestTopFormat(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1.00k", 19200000: "19.2M", 480000: "480k", 999999: "1.00M", 2.5e9: "2.50G"} {
		if got := fmtSI(v); got != want {
			t.Errorf("fmtSI(%v) = %q, want %q", v, got, want)
		}
	}
	for v, want := range map[float64]string{0: "0", 40000: "40000", 999999: "999999", 1.5e6: "1.50M"} {
		if got := fmtCount(v); got != want {
			t.Errorf("fmtCount(%v) = %q, want %q", v, got, want)
		}
	}
}

// fakeTopInstance serves a control socket under a temporary directory whose "shards" section
// counts rate packets per second of 100-byte frames on one shard, from the server's start.
func fakeTopInstance(t *testing.T, rate float64) (*control.Server, string) {
	t.Helper()
	dir := t.TempDir()
	srv, err := control.Listen(control.Config{Dir: dir, Name: "toptest", Command: "run"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	start := time.Now()
	srv.AddSection("pipeline", func() any { return pipelineStatus{Name: "reflect", Interfaces: []string{"veth0"}, Queues: []int{0}} })
	srv.AddSection("shards", func() any {
		n := uint64(time.Since(start).Seconds() * rate)
		return []shards.Snapshot{{Shard: 0, Queue: 0, CPU: 1, RxPackets: n, RxBytes: 100 * n, TxPackets: n, TxBytes: 100 * n}}
	})
	return srv, dir
}

// TestTopOnceOverSocket runs --once's path against a served instance: one frame from two
// fetches an interval apart, the rate within 5 % of what the counters advance by (the
// server's uptime and the section's clock are read microseconds apart), no escape sequences.
func TestTopOnceOverSocket(t *testing.T) {
	const rate = 50000
	_, dir := fakeTopInstance(t, rate)
	var out strings.Builder
	if err := topOnce(&out, topOptions{Dir: dir, Instance: "toptest", Interval: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	screen := out.String()
	t.Logf("--once:\n%s", screen)
	if strings.ContainsRune(screen, '\x1b') {
		t.Errorf("--once output holds escape sequences")
	}
	row := shardRow(screen, 0)
	if len(row) < 5 {
		t.Fatalf("no row for shard 0")
	}
	rx, err := parseCount(row[3])
	if err != nil || rx < 0.95*rate || rx > 1.05*rate {
		t.Errorf("rx %s pkt/s, want %d ± 5%%", row[3], rate)
	}
	bits, err := parseCount(row[4])
	if err != nil || bits < 0.95*rate*800 || bits > 1.05*rate*800 {
		t.Errorf("rx %s bit/s, want %d ± 5%%", row[4], rate*800)
	}
	for _, l := range strings.Split(strings.TrimSuffix(screen, "\n"), "\n") {
		if len([]rune(l)) > 80 {
			t.Errorf("line wider than 80 columns: %q", l)
		}
	}
	if !strings.Contains(screen, "flows: this instance publishes none") {
		t.Errorf("no word on flows for an instance without stack or NAT")
	}
}

// TestTopInstanceGoesAway closes the instance between top's two fetches: top ends with a
// message that says so.
func TestTopInstanceGoesAway(t *testing.T) {
	srv, dir := fakeTopInstance(t, 1000)
	go func() {
		time.Sleep(100 * time.Millisecond)
		srv.Close()
	}()
	var out strings.Builder
	err := topOnce(&out, topOptions{Dir: dir, Instance: "toptest", Interval: 400 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), `instance "toptest" went away`) {
		t.Fatalf("got %v, want: instance \"toptest\" went away", err)
	}
	if out.Len() != 0 {
		t.Errorf("a frame was printed: %q", out.String())
	}
}

// tmuxPane is a detached tmux session on a server of its own, running one command.
type tmuxPane struct {
	t       *testing.T
	socket  string
	session string
}

func (p *tmuxPane) tmux(args ...string) (string, error) {
	out, err := exec.Command("tmux", append([]string{"-L", p.socket, "-f", "/dev/null"}, args...)...).CombinedOutput()
	return string(out), err
}

func (p *tmuxPane) capture() string {
	p.t.Helper()
	out, err := p.tmux("capture-pane", "-p", "-t", p.session)
	if err != nil {
		p.t.Fatalf("tmux capture-pane: %v: %s", err, out)
	}
	return out
}

// startTopPane starts `netchan top --instance NAME --interval 500ms` in a new tmux session
// (on a tmux server of the test's own, killed in cleanup) of 120 × 40, and waits for its
// shard table on the pane. When top ends, the pane says how ("top exited N") and prints the
// terminal's settings (stty -a), so that a test can see that top restored them.
func startTopPane(t *testing.T, socket, session string) *tmuxPane {
	t.Helper()
	p := &tmuxPane{t: t, socket: socket, session: session}
	cmd := fmt.Sprintf(`%s top --instance %s --interval 500ms; echo "top exited $?"; stty -a; sleep 600`, binary, socket)
	if out, err := p.tmux("new-session", "-d", "-s", p.session, "-x", "120", "-y", "40", cmd); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() { p.tmux("kill-session", "-t", session); p.tmux("kill-server") })
	deadline := time.Now().Add(10 * time.Second)
	for shardRow(p.capture(), 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no shard table on the pane after 10s:\n%s", p.capture())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

// waitExit waits for top in pane p to end with code and checks that the terminal has line
// editing and echo back.
func (p *tmuxPane) waitExit(code int, what string) string {
	p.t.Helper()
	want := fmt.Sprintf("top exited %d", code)
	deadline := time.Now().Add(5 * time.Second)
	for {
		screen := p.capture()
		if strings.Contains(screen, want) && strings.Contains(screen, "speed") {
			for _, flag := range []string{"icanon", "echo"} {
				if !regexp.MustCompile(`(^|\s)` + flag + `(\s|$)`).MatchString(screen) {
					p.t.Errorf("%s: top left the terminal without %s:\n%s", what, flag, screen)
				}
			}
			return screen
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no %q on the pane after 5s:\n%s", what, want, screen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTopLabTmux runs `netchan top` under tmux on a lab whose netchan reflects what the peer
// sends, offers a known rate, and reads the pane while it runs and after: shard 0's rx rate
// must be within 15 % of the offered rate on every read during the steady part of the run,
// change between reads, and fall to 0 after the traffic stops.
func TestTopLabTmux(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is missing: apt-get install tmux (%v)", err)
	}
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	name := l.Name + "-top"
	run, _ := startRun(t, "--iface", ep.Iface, "--pipeline", "reflect", "--xdp-mode", "native", "--stats", "0", "--instance", name)

	p := startTopPane(t, name, name)
	if screen := p.capture(); shardRow(screen, 0)[3] != "0" && shardRow(screen, 0)[3] != "-" {
		t.Errorf("rx rate before any traffic:\n%s", screen)
	}

	const offered = 20000 // frames per second
	const duration = 6 * time.Second
	var wg sync.WaitGroup
	var res trafficgen.Result
	var sendErr error
	wg.Add(1)
	go func() { // labSend's t.Fatal is for the test's goroutine: this one reports back
		defer wg.Done()
		cfg := trafficgen.Config{Iface: ep.Peer.Iface, Queue: 0, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
			SrcPort: 20000, DstPort: 9, Flows: 4, Size: 60, Duration: duration, Rate: offered, RunID: 77, Wait: 500 * time.Millisecond}
		cmd := trafficgen.Command(t.Context(), ep.Peer.NS, []string{binary, "lab", "send"}, cfg)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			sendErr = fmt.Errorf("sender: %v", err)
			return
		}
		res, sendErr = trafficgen.Decode(out)
	}()

	// Reads during the steady part: from 1.5 s in (the 500 ms window of the shown rate lies
	// wholly inside the run) to 1 s before the end.
	time.Sleep(1500 * time.Millisecond)
	var rates []float64
	var screens []string
	for start := time.Now(); time.Since(start) < duration-2500*time.Millisecond; time.Sleep(600 * time.Millisecond) {
		screen := p.capture()
		row := shardRow(screen, 0)
		if len(row) < 4 {
			t.Fatalf("no row for shard 0 on the pane:\n%s", screen)
		}
		rx, err := parseCount(row[3])
		if err != nil {
			t.Fatalf("rx rate %q on the pane is not a number:\n%s", row[3], screen)
		}
		rates, screens = append(rates, rx), append(screens, screen)
	}
	wg.Wait()
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	t.Logf("offered %d frames/s for %v: sent %d (%.0f/s); the pane's rx pkt/s for shard 0: %v", offered, duration, res.Sent, res.PPS, rates)
	t.Logf("a pane during traffic:\n%s", strings.TrimRight(screens[len(screens)/2], "\n"))
	if res.Sent < uint64(0.9*offered*duration.Seconds()) {
		t.Fatalf("the sender sent %d frames, under 90 %% of %d/s for %v: the lab could not offer the rate", res.Sent, offered, duration)
	}
	if len(rates) < 3 {
		t.Fatalf("only %d reads of the pane during traffic", len(rates))
	}
	for i, r := range rates {
		if r < 0.85*offered || r > 1.15*offered {
			t.Errorf("read %d: rx %.0f pkt/s, want %d ± 15%%:\n%s", i, r, offered, screens[i])
		}
	}
	moved := false
	for i := 1; i < len(rates); i++ {
		moved = moved || rates[i] != rates[0]
	}
	if !moved {
		t.Errorf("the rx rate did not change between reads: %v", rates)
	}

	// After: within a few intervals the shown rate is 0.
	deadline := time.Now().Add(5 * time.Second)
	for {
		screen := p.capture()
		row := shardRow(screen, 0)
		if len(row) >= 4 && row[3] == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rx rate not 0 five seconds after the traffic stopped:\n%s", screen)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// q quits and gives the terminal back; so does Ctrl-C in a second pane; a third top
	// ends with a message when the instance stops.
	p.tmux("send-keys", "-t", p.session, "q")
	p.waitExit(0, "q")
	p2 := startTopPane(t, name, name+"-2")
	p2.tmux("send-keys", "-t", p2.session, "C-c")
	p2.waitExit(0, "Ctrl-C")
	p3 := startTopPane(t, name, name+"-3")
	stopRun(run)
	screen := p3.waitExit(1, "the instance stopped")
	if !strings.Contains(screen, fmt.Sprintf("netchan top: instance %q went away", name)) {
		t.Errorf("no word that the instance went away:\n%s", screen)
	}
	t.Logf("the pane after the instance stopped:\n%s", strings.TrimRight(screen, "\n"))
}
