package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// scraped is one scrape of /metrics, parsed.
type scraped map[string]*dto.MetricFamily

// metricsURL reads the instance's metrics endpoint from its status ("metrics" section).
func metricsURL(t *testing.T, name string) string {
	t.Helper()
	var st struct {
		Metrics metricsStatus `json:"metrics"`
	}
	raw := statusInto(t, name, &st)
	if !strings.HasPrefix(st.Metrics.URL, "http://127.0.0.1:") {
		t.Fatalf("status has no metrics section with the endpoint:\n%s", raw)
	}
	return st.Metrics.URL
}

// scrape GETs url and parses the Prometheus text format.
func scrape(t *testing.T, url string) scraped {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: not the Prometheus text format: %v", url, err)
	}
	return fams
}

// sum adds the samples of family name whose labels include match ("k=v" pairs); a family that
// is missing is a test failure, not a zero.
func (s scraped) sum(t *testing.T, name string, match ...string) float64 {
	t.Helper()
	f, ok := s[name]
	if !ok {
		t.Fatalf("the scrape has no %s", name)
	}
	var v float64
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for _, kv := range match {
			k, want, _ := strings.Cut(kv, "=")
			ok = ok && labels[k] == want
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Untyped != nil:
			v += m.Untyped.GetValue()
		}
	}
	return v
}

// u is sum as an integer count.
func (s scraped) u(t *testing.T, name string, match ...string) uint64 {
	t.Helper()
	return uint64(s.sum(t, name, match...))
}

// settle scrapes until the figures named by key stop moving (two scrapes 50 ms apart agree)
// and done reports true, or 5 s pass; it returns the last scrape. Shards publish their
// counters once per batch, so the last batch may land a moment after the sender stopped.
func settle(t *testing.T, url string, key func(scraped) string, done func(scraped) bool) scraped {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	prev := scrape(t, url)
	for {
		time.Sleep(50 * time.Millisecond)
		cur := scrape(t, url)
		if key(cur) == key(prev) && done(cur) || time.Now().After(deadline) {
			return cur
		}
		prev = cur
	}
}

// TestMetricsRun runs `netchan run --metrics` (reflect, one queue) on a lab, sends a known
// number of frames, stops, scrapes the endpoint and finds exactly what was sent: received and
// transmitted packets and bytes, the reflect stage's packets and decisions, the XDP program's
// claims, no drops; and the text status shows the per-stage table.
func TestMetricsRun(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	name := l.Name + "-mr"
	started := time.Now()
	startRun(t, "--iface", ep.Iface, "--pipeline", "reflect", "--xdp-mode", "native", "--stats", "0", "--instance", name, "--metrics", "127.0.0.1:0")
	url := metricsURL(t, name)
	before := scrape(t, url)
	if rx := before.u(t, "netchan_rx_packets_total"); rx != 0 {
		t.Fatalf("rx %d before any traffic", rx)
	}
	if v := before.sum(t, "netchan_info", "app=reflect", "name="+name); v != 1 {
		t.Errorf("netchan_info{app=reflect,name=%s} = %v, want 1", name, v)
	}
	const count, size = 3000, 100
	sendFrames(t, l, count, size, 31)
	s := settle(t, url, func(s scraped) string {
		return fmt.Sprint(s.u(t, "netchan_rx_packets_total"), s.u(t, "netchan_tx_packets_total"))
	}, func(s scraped) bool {
		return s.u(t, "netchan_rx_packets_total") >= count && s.u(t, "netchan_tx_packets_total") >= count
	})
	q := []string{"shard=0", "queue=0"}
	stage := append(q[:2:2], "stage=reflect")
	sock := []string{"interface=" + ep.Iface, "queue=0"}
	checks := []struct {
		name  string
		match []string
		want  uint64
	}{
		{"netchan_rx_packets_total", q, count},
		{"netchan_rx_bytes_total", q, count * size},
		{"netchan_tx_packets_total", q, count},
		{"netchan_tx_bytes_total", q, count * size},
		{"netchan_drops_total", nil, 0},
		{"netchan_handoff_out_packets_total", nil, 0},
		{"netchan_stage_packets_total", stage, count},
		{"netchan_stage_decided_packets_total", stage, count},
		{"netchan_stage_packets_total", []string{"stage=local"}, 0},
		{"netchan_xdp_claimed_packets_total", []string{"interface=" + ep.Iface}, count},
		{"netchan_xdp_no_socket_packets_total", nil, 0},
		{"netchan_kernel_rx_dropped_total", sock, 0},
		{"netchan_kernel_tx_invalid_total", sock, 0},
	}
	for _, c := range checks {
		if got := s.u(t, c.name, c.match...); got != c.want {
			t.Errorf("%s%v = %d, want %d (sent %d frames of %d bytes)", c.name, c.match, got, c.want, count, size)
		}
	}
	if f, ok := s["netchan_stage_drops_total"]; ok { // a stage's drops appear with the first one
		t.Errorf("stage drops: %v", f)
	}
	calls := s.u(t, "netchan_stage_calls_total", stage...)
	polls := s.u(t, "netchan_polls_total", q...)
	perCall := s.sum(t, "netchan_stage_packets_per_call", stage...)
	perPoll := s.sum(t, "netchan_packets_per_poll", q...)
	if calls == 0 || calls > count || calls != polls || perCall < 1 || perPoll < 1 {
		t.Errorf("reflect: %d calls, %.2f packets per call; %d polls, %.2f packets per poll: want 1 to %d calls, one per poll", calls, perCall, polls, perPoll, count)
	}
	// The clock is read on every 16th call: with over 16 calls the stage has a time per
	// packet, and reflecting a frame takes well under a millisecond.
	if sec := s.sum(t, "netchan_stage_seconds_per_packet", stage...); calls >= 16 && (sec <= 0 || sec > 1e-3) {
		t.Errorf("reflect: %g seconds per packet over %d calls", sec, calls)
	}
	// The shard worked for the frames and waited between them: both times are there, and
	// together they are no more than the instance has run.
	busy, idle := s.sum(t, "netchan_shard_busy_seconds_total", q...), s.sum(t, "netchan_shard_idle_seconds_total", q...)
	if busy <= 0 || idle <= 0 || busy+idle > time.Since(started).Seconds() {
		t.Errorf("shard busy %gs, idle %gs, in a run of %v", busy, idle, time.Since(started))
	}
	t.Logf("after %d frames: %d calls of reflect (%.1f packets per call, %.0f ns per packet)", count, calls, perCall,
		s.sum(t, "netchan_stage_seconds_per_packet", stage...)*1e9)

	// The status table shows the same figures per stage.
	out, err := exec.Command(binary, "status", "--instance", name).Output()
	if err != nil {
		t.Fatalf("status: %v %s", err, stderrOf(err))
	}
	row := regexp.MustCompile(`(?m)^reflect\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+(\d+)\s+-$`).FindStringSubmatch(string(out))
	if !strings.Contains(string(out), "stages, shard 0 (queue 0):") || row == nil || row[1] != strconv.FormatUint(calls, 10) ||
		row[2] != strconv.Itoa(count) || row[3] != strconv.Itoa(count) || !strings.Contains(string(out), "metrics: "+url) {
		t.Errorf("status table: want a stage table with reflect's %d calls and %d packets, and the metrics URL:\n%s", calls, count, out)
	}
}

// TestMetricsEcho runs `netchan echo --metrics` on one queue, has the peer's kernel ping it,
// and accounts for every packet exactly: what netchan received is the pings and the ARP the
// stack counted, what it sent is the echo replies, its ARP replies and requests, and the one
// gratuitous ARP shard 0 sends for its address on start; the stack stage saw every received
// packet and the XDP program claimed each one. A TCP connection held open then shows under
// netchan_tcp_connections{state="ESTABLISHED"}.
func TestMetricsEcho(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	name := l.Name + "-me"
	startCmd(t, "echo", "--iface", ep.Iface, "--addr", ep.Addr.String(), "--instance", name, "--stats", "0", "--metrics", "127.0.0.1:0")
	url := metricsURL(t, name)
	const pings = 10
	out, err := exec.Command("ip", "netns", "exec", ep.Peer.NS, "ping", "-c", strconv.Itoa(pings), "-i", "0.05", "-W", "2", ep.Addr.Addr().String()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d packets transmitted, %d received", pings, pings)) {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	key := func(s scraped) string {
		return fmt.Sprint(s.u(t, "netchan_rx_packets_total"), s.u(t, "netchan_tx_packets_total"),
			s.u(t, "netchan_stack_arp_requests_received_total"), s.u(t, "netchan_stack_icmp_echo_replies_sent_total"))
	}
	s := settle(t, url, key, func(s scraped) bool { return s.u(t, "netchan_stack_icmp_echo_replies_sent_total") >= pings })
	arpIn := s.u(t, "netchan_stack_arp_requests_received_total") + s.u(t, "netchan_stack_arp_replies_received_total")
	arpOut := s.u(t, "netchan_stack_arp_replies_sent_total") + s.u(t, "netchan_stack_arp_requests_sent_total")
	const garp = 1 // shard 0's gratuitous ARP for the one address
	rx, tx := s.u(t, "netchan_rx_packets_total"), s.u(t, "netchan_tx_packets_total")
	t.Logf("%d pings: rx %d (ARP in %d), tx %d (ARP out %d + %d gratuitous)", pings, rx, arpIn, tx, arpOut, garp)
	if replies := s.u(t, "netchan_stack_icmp_echo_replies_sent_total"); replies != pings {
		t.Errorf("echo replies %d, want %d", replies, pings)
	}
	if rx != pings+arpIn {
		t.Errorf("rx %d packets, want %d pings + %d ARP = %d", rx, pings, arpIn, pings+arpIn)
	}
	if tx != pings+arpOut+garp {
		t.Errorf("tx %d packets, want %d echo replies + %d ARP + %d gratuitous ARP = %d", tx, pings, arpOut, garp, pings+arpOut+garp)
	}
	if arpIn == 0 && arpOut == 0 {
		t.Logf("the peer resolved netchan's address from its gratuitous ARP")
	}
	for _, c := range []struct {
		name  string
		match []string
		want  uint64
	}{
		{"netchan_stage_packets_total", []string{"stage=stack"}, rx},
		{"netchan_stage_decided_packets_total", []string{"stage=stack"}, rx},
		{"netchan_xdp_claimed_packets_total", []string{"interface=" + ep.Iface}, rx},
		{"netchan_drops_total", nil, 0},
		{"netchan_tcp_connections", nil, 0},
	} {
		if got := s.u(t, c.name, c.match...); got != c.want {
			t.Errorf("%s%v = %d, want %d", c.name, c.match, got, c.want)
		}
	}

	// A TCP connection to the echo port, held open while we scrape.
	hold := exec.Command("ip", "netns", "exec", ep.Peer.NS, "bash", "-c",
		"exec 3<>/dev/tcp/"+ep.Addr.Addr().String()+"/7 && echo hello >&3 && read -t 5 line <&3 && echo \"$line\" && sleep 30")
	stdout, _ := hold.StdoutPipe()
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Process.Kill(); hold.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "hello\n" {
		t.Fatalf("echo over TCP: got %q", line)
	}
	s = scrape(t, url)
	if est := s.u(t, "netchan_tcp_connections", "state=ESTABLISHED"); est != 1 || s.u(t, "netchan_tcp_connections") != 1 ||
		s.u(t, "netchan_tcp_passive_opens_total") != 1 {
		t.Errorf("with one TCP connection open: %d ESTABLISHED of %d connections, %d passive opens; want 1, 1, 1",
			est, s.u(t, "netchan_tcp_connections"), s.u(t, "netchan_tcp_passive_opens_total"))
	}
	if n := len(s["netchan_tcp_connections"].Metric); n != 10 {
		t.Errorf("netchan_tcp_connections has %d series, want one per TCP state (10)", n)
	}
}

// TestMetricsNAT runs `netchan nat --metrics` with the fast path off and one mapping per
// inside host; the inside host pings the server through it, and the scrape shows the one ICMP
// mapping and the translations. Three UDP datagrams, each of a new flow of the host, are then
// dropped at the per-host limit: netchan_nat_host_limit_drops_total counts each.
func TestMetricsNAT(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 1})
	in, outside := l.Netchan[0], l.Netchan[1]
	name := "mn" + l.Name
	startCmd(t, "nat", "--inside", in.Iface, "--inside-addr", in.Addr.String(), "--outside", outside.Iface,
		"--outside-addr", outside.Addr.String(), "--instance", name, "--stats", "0", "--xdp-fastpath=false", "--metrics", "127.0.0.1:0",
		"--max-mappings-per-host", "1")
	url := metricsURL(t, name)
	const pings = 3
	out, err := exec.Command("ip", "netns", "exec", in.Peer.NS, "ping", "-c", strconv.Itoa(pings), "-i", "0.2", "-W", "2", outside.Peer.Addr.Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping through the NAT: %v\n%s", err, out)
	}
	s := settle(t, url, func(s scraped) string { return fmt.Sprint(s.u(t, "netchan_nat_translated_packets_total")) },
		func(s scraped) bool { return s.u(t, "netchan_nat_translated_packets_total") >= 2*pings })
	if m, tr := s.u(t, "netchan_nat_mappings"), s.u(t, "netchan_nat_translated_packets_total"); m != 1 || tr != 2*pings {
		t.Errorf("nat: %d mappings, %d packets translated; want 1 (the ping's) and %d (each echo and its reply)", m, tr, 2*pings)
	}
	if c := s.u(t, "netchan_nat_mappings_created_total"); c != 1 {
		t.Errorf("nat: %d mappings created, want 1", c)
	}
	if off := s.u(t, "netchan_nat_fast_path_off"); off != 0 || s.u(t, "netchan_xdp_fast_packets_total") != 0 {
		t.Errorf("nat with --xdp-fastpath=false: fast path off gauge %d, fast packets %d", off, s.u(t, "netchan_xdp_fast_packets_total"))
	}
	for _, iface := range []string{in.Iface, outside.Iface} {
		if c := s.u(t, "netchan_xdp_claimed_packets_total", "interface="+iface); c < pings {
			t.Errorf("xdp on %s claimed %d packets, want at least %d", iface, c, pings)
		}
	}
	for _, m := range []string{"netchan_nat_host_limit_drops_total", "netchan_nat_table_full_drops_total", "netchan_nat_spoofed_drops_total"} {
		if n := s.u(t, m); n != 0 {
			t.Errorf("%s = %d before any flow beyond the limit, want 0", m, n)
		}
	}

	// Three datagrams from three sockets: three new flows of a host that holds its one mapping.
	const flows = 3
	send := fmt.Sprintf("for i in $(seq %d); do echo x >/dev/udp/%s/9999; done", flows, outside.Peer.Addr.Addr())
	if out, err := exec.Command("ip", "netns", "exec", in.Peer.NS, "bash", "-c", send).CombinedOutput(); err != nil {
		t.Fatalf("UDP from the inside host: %v\n%s", err, out)
	}
	s = settle(t, url, func(s scraped) string { return fmt.Sprint(s.u(t, "netchan_nat_host_limit_drops_total")) },
		func(s scraped) bool { return s.u(t, "netchan_nat_host_limit_drops_total") >= flows })
	if n, r := s.u(t, "netchan_nat_host_limit_drops_total"), s.u(t, "netchan_drops_total", "reason=nat-host-limit"); n != flows || r != flows {
		t.Errorf("UDP flows beyond --max-mappings-per-host 1: netchan_nat_host_limit_drops_total %d, drops of reason nat-host-limit %d; want %d each", n, r, flows)
	}
	if m, c := s.u(t, "netchan_nat_mappings"), s.u(t, "netchan_nat_mappings_created_total"); m != 1 || c != 1 {
		t.Errorf("after the refused flows: %d mappings, %d created; want the ping's 1 and 1", m, c)
	}
	if n := s.u(t, "netchan_nat_table_full_drops_total"); n != 0 {
		t.Errorf("netchan_nat_table_full_drops_total = %d, want 0 (the host's limit, not the table, refused the flows)", n)
	}
}

// TestMetricsStackLimits runs `netchan echo --config FILE` whose "stack" section allows one
// TCP connection per shard (one shard): with a connection to the echo port held open, a
// second client's SYNs are dropped at the limit, counted by
// netchan_tcp_connection_limit_drops_total as by the drop reason tcp-connection-limit; once
// the first connection is gone a new client is served. The other limits' counters are there,
// at 0.
func TestMetricsStackLimits(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	name := l.Name + "-ml"
	path := filepath.Join(t.TempDir(), "echo.json")
	doc := fmt.Sprintf(`{"instance": %q, "interfaces": [{"name": %q, "addresses": [%q]}], "queues": [0],
  "stack": {"neighbor_table_size": 64, "arp_pending_hops": 8, "tcp": {"max_connections": 1, "backlog": 4}}}`, name, ep.Iface, ep.Addr)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	startCmd(t, "echo", "--config", path, "--stats", "0", "--metrics", "127.0.0.1:0")
	url := metricsURL(t, name)
	addr := ep.Addr.Addr().String()

	hold := exec.Command("ip", "netns", "exec", ep.Peer.NS, "bash", "-c",
		"exec 3<>/dev/tcp/"+addr+"/7 && echo hello >&3 && read -t 5 line <&3 && echo \"$line\" && sleep 30")
	stdout, _ := hold.StdoutPipe()
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Process.Kill(); hold.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "hello\n" {
		t.Fatalf("echo over TCP: got %q", line)
	}
	s := scrape(t, url)
	for _, m := range []string{"netchan_tcp_connection_limit_drops_total", "netchan_tcp_half_open_evicted_total", "netchan_stack_neighbor_evictions_total",
		"netchan_stack_neighbor_refused_total", "netchan_stack_arp_pending_full_total", "netchan_stack_reassembly_evicted_total"} {
		if n := s.u(t, m); n != 0 {
			t.Errorf("%s = %d with one connection, want 0", m, n)
		}
	}

	// A second client, for 2.5 s: its SYNs (Linux sends one, and again after 1 s) are dropped.
	connect := func(seconds string) error {
		return exec.Command("ip", "netns", "exec", ep.Peer.NS, "timeout", seconds, "bash", "-c",
			"exec 3<>/dev/tcp/"+addr+"/7 && echo again >&3 && read -t 2 line <&3 && [ \"$line\" = again ]").Run()
	}
	if err := connect("2.5"); err == nil {
		t.Fatalf("a second connection was served with stack.tcp.max_connections 1")
	}
	s = settle(t, url, func(s scraped) string { return fmt.Sprint(s.u(t, "netchan_tcp_connection_limit_drops_total")) },
		func(s scraped) bool { return s.u(t, "netchan_tcp_connection_limit_drops_total") >= 1 })
	drops, byReason := s.u(t, "netchan_tcp_connection_limit_drops_total"), s.u(t, "netchan_drops_total", "reason=tcp-connection-limit")
	t.Logf("the second client's SYNs dropped at the limit: %d", drops)
	if drops < 1 || drops != byReason {
		t.Errorf("netchan_tcp_connection_limit_drops_total %d, drops of reason tcp-connection-limit %d: want the same count, at least 1", drops, byReason)
	}
	if est := s.u(t, "netchan_tcp_connections", "state=ESTABLISHED"); est != 1 {
		t.Errorf("%d connections ESTABLISHED, want the first one", est)
	}

	// The first connection gone, a new client is served.
	hold.Process.Kill()
	hold.Wait()
	for deadline := time.Now().Add(10 * time.Second); scrape(t, url).u(t, "netchan_tcp_connections") != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first connection still there 10 s after its client went: %d connections", scrape(t, url).u(t, "netchan_tcp_connections"))
		}
	}
	if err := connect("5"); err != nil {
		t.Errorf("a new client after the first connection closed: %v", err)
	}
}

// TestMetricsFlag: --metrics on an address that cannot be had fails the command, naming the flag.
func TestMetricsFlag(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	out, err := exec.Command(binary, "run", "--iface", l.Netchan[0].Iface, "--stats", "0", "--instance", l.Name+"-mf", "--metrics", "192.0.2.1:1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--metrics") {
		t.Errorf("--metrics on an address not ours: %v\n%s", err, out)
	}
	if xdpAttached(t, l.Netchan[0].Iface) {
		t.Errorf("the failed run left its XDP program attached")
	}
}
