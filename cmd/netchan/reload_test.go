package main

import (
	"bufio"
	"bytes"
	"context"
	be "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// The reload test's traffic runs in the lab's namespaces as children of the test binary
// (nschild): registered here, run before TestMain when the binary is such a child.
func init() {
	nschild.Register("udp-count", udpCount)
	nschild.Register("udp-stream", udpStream)
	nschild.RunIfChild()
}

// udpCount (server side) answers "w" datagrams (so the client knows its flow is established
// both ways) and counts the others, each carrying a sequence number; 3 s after the last one
// it prints {"received": N, "distinct": D, "max": M} and exits. args: listen address.
func udpCount(args []string) error {
	c, err := net.ListenPacket("udp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(os.Stderr, "listening")
	seen := map[uint64]bool{}
	var received, max uint64
	idle := 60 * time.Second
	buf := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			break
		}
		if n == 1 && buf[0] == 'w' {
			c.WriteTo([]byte("w"), from)
			continue
		}
		if n < 8 {
			continue
		}
		seq := be.BigEndian.Uint64(buf[:8])
		received++
		seen[seq] = true
		if seq > max {
			max = seq
		}
		idle = 3 * time.Second
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]uint64{"received": received, "distinct": uint64(len(seen)), "max": max})
}

// udpStream (client side) establishes its flow (sends "w" until the server answers through
// the NAT), says "established" on stderr, then sends COUNT datagrams numbered 1..COUNT at RATE
// per second from the same socket and prints {"sent": N}. args: server address, count, rate.
func udpStream(args []string) error {
	count, _ := strconv.Atoi(args[1])
	rate, _ := strconv.Atoi(args[2])
	c, err := net.Dial("udp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Now().After(deadline) {
			return errors.New("no answer through the NAT in 20s")
		}
		c.Write([]byte("w"))
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && n == 1 && buf[0] == 'w' {
			break
		}
	}
	fmt.Fprintln(os.Stderr, "established")
	msg := make([]byte, 64)
	start := time.Now()
	sent := 0
	for i := 1; i <= count; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		be.BigEndian.PutUint64(msg, uint64(i))
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("datagram %d: %w", i, err)
		}
		sent++
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]int{"sent": sent})
}

// natReloadConfig is a configuration file of `netchan nat` on the lab's endpoints.
func natReloadConfig(t *testing.T, path, name string, in, out lab.Endpoint, udpTimeout string, claims []string, extra string) {
	t.Helper()
	cl, _ := json.Marshal(claims)
	doc := fmt.Sprintf(`{
  "instance": %q,
  "interfaces": [{"name": %q, "addresses": [%q]}, {"name": %q, "addresses": [%q]}],
  "claims": %s,
  "pipeline": {"options": {"timeouts": {"udp": %q, "tcp_transitory": "3m"}}}%s
}
`, name, in.Iface, in.Addr, out.Iface, out.Addr, cl, udpTimeout, extra)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// reloadState is the part of the status the reload test reads.
type reloadState struct {
	Started time.Time `json:"started"`
	PID     int       `json:"pid"`
	Reload  struct {
		Config  string   `json:"config"`
		Claims  []string `json:"claims"`
		Reloads int      `json:"reloads"`
		Options struct {
			NAT struct {
				Timeouts struct {
					UDP           string `json:"udp"`
					TCPTransitory string `json:"tcp_transitory"`
				} `json:"timeouts"`
			} `json:"nat"`
		} `json:"options"`
		Last *reloadResult `json:"last"`
	} `json:"reload"`
	Claims   []claimsStatus `json:"claims"`
	Pipeline pipelineStatus `json:"pipeline"`
}

func progID(t *testing.T, iface string) uint32 {
	t.Helper()
	link, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	if x := link.Attrs().Xdp; x != nil {
		return x.ProgId
	}
	return 0
}

// claimsOf lists iface's claims of owner in the claims section.
func claimsOf(st reloadState, iface, owner string) []string {
	var out []string
	for _, ic := range st.Claims {
		if ic.Iface != iface {
			continue
		}
		for _, c := range ic.Claims {
			if c.Owner == owner {
				out = append(out, c.Claim)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestReloadNATDuringTraffic runs `netchan nat --config FILE` with a UDP flow through it,
// changes the UDP timeout and the configuration's claims in the file and sends SIGHUP while
// the flow runs, then asks `netchan reload` to apply a bad file and one that changes the UMEM:
// every datagram arrives (exact count), the XDP programs keep their ids, the process its
// sockets and UMEMs (same pid and start, counters never reset), status shows the new timeout
// and claims, and the refused reloads name the field and leave them.
func TestReloadNATDuringTraffic(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 1})
	in, out := l.Netchan[0], l.Netchan[1]
	name := "reload" + l.Name
	dir := t.TempDir()
	path := filepath.Join(dir, "nat.json")
	natReloadConfig(t, path, name, in, out, "5m", []string{"udp:5353"}, "")
	startCmd(t, "nat", "--config", path, "--stats", "0")

	progs := [2]uint32{progID(t, in.Iface), progID(t, out.Iface)}
	if progs[0] == 0 || progs[1] == 0 {
		t.Fatalf("no XDP program on %s or %s: ids %v", in.Iface, out.Iface, progs)
	}
	var before reloadState
	raw := statusInto(t, name, &before)
	if before.Reload.Options.NAT.Timeouts.UDP != "5m0s" || !slices.Equal(before.Reload.Claims, []string{"udp:5353"}) ||
		!slices.Equal(claimsOf(before, in.Iface, "config"), []string{"udp:5353"}) || !slices.Contains(claimsOf(before, in.Iface, "nat"), "all") {
		t.Fatalf("status at start: want UDP timeout 5m, udp:5353 owned by config, all by nat:\n%s", raw)
	}

	// The flow: established first (its mapping made by the shards, the first packets waiting
	// for ARP), then counted: 6000 datagrams at 1000/s, across the reloads.
	const count, rate = 6000, 1000
	server := out.Peer.Addr.Addr().String() + ":7000"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := nschild.Command(ctx, out.Peer.NS, "udp-count", server)
	var srvOut, srvErr bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(200 * time.Millisecond) // the server binds
	cli := nschild.Command(ctx, in.Peer.NS, "udp-stream", server, strconv.Itoa(count), strconv.Itoa(rate))
	var cliOut bytes.Buffer
	cli.Stdout = &cliOut
	cliErr, _ := cli.StderrPipe()
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cli.Process.Kill(); cli.Wait() }()
	line, _ := bufio.NewReader(cliErr).ReadString('\n')
	if strings.TrimSpace(line) != "established" {
		t.Fatalf("client: %q; server: %s", line, srvErr.String())
	}
	go func() { bufio.NewReader(cliErr).WriteTo(&bytes.Buffer{}) }()

	// Reload 1, by SIGHUP: UDP timeout 5m → 2m, claims udp:5353 → tcp:8080.
	time.Sleep(time.Second)
	natReloadConfig(t, path, name, in, out, "2m", []string{"tcp:8080"}, "")
	pid := before.PID
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var after reloadState
	for deadline := time.Now().Add(10 * time.Second); ; {
		raw = statusInto(t, name, &after)
		if after.Reload.Last != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := after.Reload.Last; r == nil || !r.OK || r.Trigger != "SIGHUP" || after.Reload.Reloads != 1 {
		t.Fatalf("after SIGHUP: want one applied reload:\n%s", raw)
	}
	t.Logf("SIGHUP reload: %v", after.Reload.Last.Changes)
	wantNew := func(st reloadState, raw []byte, when string) {
		t.Helper()
		if st.Reload.Options.NAT.Timeouts.UDP != "2m0s" || st.Reload.Options.NAT.Timeouts.TCPTransitory != "3m0s" || !slices.Equal(st.Reload.Claims, []string{"tcp:8080"}) {
			t.Fatalf("%s: want UDP timeout 2m and claims [tcp:8080] in the reload section:\n%s", when, raw)
		}
		for _, iface := range []string{in.Iface, out.Iface} {
			if got := claimsOf(st, iface, "config"); !slices.Equal(got, []string{"tcp:8080"}) || !slices.Contains(claimsOf(st, iface, "nat"), "all") {
				t.Fatalf("%s: %s's claims: config %v (want [tcp:8080]), nat %v (want all kept):\n%s", when, iface, got, claimsOf(st, iface, "nat"), raw)
			}
		}
	}
	wantNew(after, raw, "after SIGHUP")
	changes := strings.Join(after.Reload.Last.Changes, "\n")
	for _, w := range []string{"claims added: tcp:8080", "claims released: udp:5353", "pipeline.options.timeouts.udp: 5m0s → 2m0s"} {
		if !strings.Contains(changes, w) {
			t.Errorf("the reload's changes do not say %q: %v", w, after.Reload.Last.Changes)
		}
	}

	// Reload 2, through the control socket: a bad claim, and a new UDP timeout beside it.
	bad := filepath.Join(dir, "bad.json")
	natReloadConfig(t, bad, name, in, out, "7m", []string{"tcp:8080", "udp:99999"}, "")
	msg, err := exec.Command(binary, "reload", "--instance", name, "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "claims[1]") {
		t.Fatalf("reload of a bad file: %v, want exit 1 naming claims[1]: %s", err, msg)
	}
	t.Logf("bad file: %s", bytes.TrimSpace(msg))
	// Reload 3: a file that changes the UMEM: needs a restart.
	umem := filepath.Join(dir, "umem.json")
	natReloadConfig(t, umem, name, in, out, "7m", []string{"tcp:8080"}, `,
  "umem": {"frames": 8192}`)
	msg, err = exec.Command(binary, "reload", "--instance", name, "--config", umem).CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "umem") || !strings.Contains(string(msg), "needs a restart") {
		t.Fatalf("reload changing the UMEM: %v, want exit 1 naming umem and a restart: %s", err, msg)
	}
	t.Logf("UMEM change: %s", bytes.TrimSpace(msg))
	var refused reloadState
	raw = statusInto(t, name, &refused)
	wantNew(refused, raw, "after the refused reloads")
	if r := refused.Reload.Last; r == nil || r.OK || r.Field != "umem" || r.Trigger != "control" || refused.Reload.Reloads != 1 || refused.Reload.Config != path {
		t.Fatalf("after the refused reloads: want the last refused on umem, one applied, the file still %s:\n%s", path, raw)
	}

	// The flow's end: every datagram arrived.
	if err := cli.Wait(); err != nil {
		t.Fatalf("client: %v", err)
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("server: %v %s", err, srvErr.String())
	}
	var sent struct{ Sent int }
	var got struct{ Received, Distinct, Max int }
	if json.Unmarshal(cliOut.Bytes(), &sent) != nil || json.Unmarshal(srvOut.Bytes(), &got) != nil {
		t.Fatalf("client %q, server %q", cliOut.String(), srvOut.String())
	}
	t.Logf("sent %d, received %d (%d distinct, highest %d)", sent.Sent, got.Received, got.Distinct, got.Max)
	if sent.Sent != count || got.Received != count || got.Distinct != count || got.Max != count {
		t.Fatalf("datagrams: sent %d, received %d, %d distinct, highest %d; want all %d, once each", sent.Sent, got.Received, got.Distinct, got.Max, count)
	}

	// The same programs, process, sockets and UMEMs.
	if now := [2]uint32{progID(t, in.Iface), progID(t, out.Iface)}; now != progs {
		t.Fatalf("XDP program ids %v before the reloads, %v after: want them unchanged", progs, now)
	}
	var end reloadState
	raw = statusInto(t, name, &end)
	if end.PID != before.PID || !end.Started.Equal(before.Started) || end.Pipeline.UMEM != before.Pipeline.UMEM {
		t.Fatalf("the instance changed: pid %d → %d, started %v → %v, umem %+v → %+v", before.PID, end.PID, before.Started, end.Started, before.Pipeline.UMEM, end.Pipeline.UMEM)
	}
	wantNew(end, raw, "at the end")

	// A reload without --config re-reads the instance's file: nothing to change.
	msg, err = exec.Command(binary, "reload", "--instance", name).CombinedOutput()
	if err != nil || !strings.Contains(string(msg), "no change") {
		t.Fatalf("reload of the unchanged file: %v %s", err, msg)
	}
}

// TestCheckConfig checks files without running anything: ok, or the field's error, exit 1.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	check := func(doc string, args ...string) (string, error) {
		path := filepath.Join(dir, "c.json")
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(binary, append(append([]string{"check-config"}, args...), path)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for _, c := range []struct {
		doc  string
		args []string
	}{
		{`{"interfaces": [{"name": "eth1"}], "claims": ["udp:9999"], "pipeline": {"name": "drop"}}`, nil},
		{`{"claims": ["udp:53"], "pipeline": {"options": {"ports": "2000-3000", "timeouts": {"udp": "30s"},
		   "forwards": [{"proto": "tcp", "port": 2222, "inside": "198.18.1.2:22"}]}}}`, nil},
		{`{"interfaces": [{"name": "eth1", "addresses": ["198.18.0.1/24"]}]}`, []string{"--command", "echo"}},
	} {
		if out, err := check(c.doc, c.args...); err != nil || out != "ok" {
			t.Errorf("check-config %v %s: %v %q, want ok", c.args, c.doc, err, out)
		}
	}
	for _, c := range []struct {
		doc, field string
	}{
		{`{"claims": ["udp:9999", "udp:99999"]}`, "claims[1]"},
		{`{"umem": {"frame_size": 1000}}`, "umem.frame_size"},
		{`{"pipeline": {"options": {"timeouts": {"udp": "-5s"}}}}`, "pipeline.options.timeouts.udp"},
		{`{"pipeline": {"options": {"ports": "9-2"}}}`, "pipeline.options.ports"},
		{`{"pipeline": {"options": {"nope": 1}}}`, "pipeline.options"},
		{`{"interfaces": [{"name": "a", "addresses": ["198.18.1.1/24"]}, {"name": "b", "addresses": ["198.19.0.1/24"]}],
		   "pipeline": {"options": {"forwards": [{"proto": "udp", "port": 53, "inside": "10.0.0.1:53"}]}}}`, "pipeline.options.forwards"},
		{`{"log": {"format": "xml"}}`, "log.format"},
	} {
		out, err := check(c.doc)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, c.field) || strings.Contains(out, "ok\n") {
			t.Errorf("check-config %s: %v %q, want exit 1 naming %s", c.doc, err, out, c.field)
		}
	}
}

// TestLogAdapter: the library's log lines reach slog with their component, interface, queue
// and shard as attributes, and the instance on every record.
func TestLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	defer slog.SetDefault(old)
	slog.SetDefault(newLogger(&buf, config.Log{Format: "json", Level: "info"}, "edge1", "nat"))
	logf := slogf([]string{"nc0", "nc1"})
	logf("netchan: %s: %s claims %s; the kernel keeps %s", "nc0", "nat", "all", "the rest")
	logf("afxdp: %s queue %d: zero-copy refused (%v); falling back to copy mode", "nc1", 3, "EOPNOTSUPP")
	logf("xdpprog: native XDP attach on %s (ifindex %d) refused", "nc1", 7)
	logf("shard %d: not pinned: %v", 2, "EINVAL")
	logf("eth9: something about an interface not ours")
	slog.Debug("not shown at info")
	var recs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		if m["instance"] != "edge1" || m["command"] != "nat" {
			t.Errorf("record without the instance: %v", m)
		}
		recs = append(recs, m)
	}
	if len(recs) != 5 {
		t.Fatalf("want 5 records, got %d:\n%s", len(recs), buf.String())
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "nat claims all; the kernel keeps the rest", "iface": "nc0"},
		{"level": "WARN", "component": "afxdp", "iface": "nc1", "queue": 3.0},
		{"level": "WARN", "component": "xdpprog", "iface": "nc1"},
		{"level": "WARN", "shard": 2.0, "msg": "not pinned: EINVAL"},
		{"level": "INFO", "msg": "eth9: something about an interface not ours"},
	}
	for i, w := range want {
		for k, v := range w {
			if recs[i][k] != v {
				t.Errorf("record %d: %s = %v, want %v (%v)", i, k, recs[i][k], v, recs[i])
			}
		}
	}
	if _, ok := recs[4]["iface"]; ok {
		t.Errorf("an interface not the instance's became an attribute: %v", recs[4])
	}
}

// TestLogJSON runs `netchan run --log-format json`: stderr is JSON lines carrying the
// instance (the start with its interfaces and queues, the claims), stdout keeps its ready line.
func TestLogJSON(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 2})
	iface := l.Netchan[0].Iface
	cmd, stderr := startRun(t, "--iface", iface, "--pipeline", "drop", "--claim", "udp:9999", "--stats", "0", "--instance", l.Name, "--log-format", "json")
	time.Sleep(200 * time.Millisecond)
	stopRun(cmd)
	var started, claims bool
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stderr line is not JSON: %q\n%s", line, stderr.String())
		}
		if m["instance"] != l.Name || m["command"] != "run" {
			t.Errorf("record without instance and command: %v", m)
		}
		switch m["msg"] {
		case "started":
			started = m["pipeline"] == "drop" && fmt.Sprint(m["interfaces"]) == "["+iface+"]" && fmt.Sprint(m["queues"]) == "[0 1]"
		case "claims of the configuration":
			claims = fmt.Sprint(m["claims"]) == "[udp:9999]" && m["owner"] == "config"
		}
	}
	if !started || !claims {
		t.Fatalf("want a started record (pipeline, interfaces, queues) and the configuration's claims:\n%s", stderr.String())
	}
}
