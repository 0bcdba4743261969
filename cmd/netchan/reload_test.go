package main

import (
	"bufio"
	"bytes"
	"context"
	be "encoding/binary"
	"encoding/json"
	"errors"
	"flag"
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
	"github.com/netchan/netchan/stack"
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
		{`{"interfaces": [{"name": "eth1", "addresses": ["198.18.0.1/24"]}], "stack": {"reassembly_bytes": 1048576, "reassembly_timeout": "10s",
		   "neighbor_table_size": 4096, "arp_pending_hops": 16, "arp_pending_per_hop": 8, "tcp": {"max_connections": 1000, "backlog": 512, "max_time_wait": 200}}}`,
			[]string{"--command", "echo"}},
		{`{"pipeline": {"options": {"max_mappings": 1000, "max_mappings_per_host": -1}}, "stack": {"neighbor_table_size": 65536}}`, nil},
		{`{"interfaces": [{"name": "eth1"}], "pipeline": {"busy_poll": {"on": true, "budget": 64, "idle": "1ms"}}}`, nil},
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
		{`{"stack": {"arp_pending_hops": 100000}}`, "stack.arp_pending_hops"},
		{`{"stack": {"tcp": {"max_connections": -1}}}`, "stack.tcp.max_connections"},
		{`{"pipeline": {"options": {"max_mappings_per_host": -2}}}`, "pipeline.options.max_mappings_per_host"},
		{`{"pipeline": {"options": {"max_mappings": -1}}}`, "pipeline.options.max_mappings"},
		{`{"pipeline": {"busy_poll": {"on": true, "budget": 65536}}}`, "pipeline.busy_poll.budget"},
		{`{"pipeline": {"busy_poll": {"on": true, "idle": "-1ms"}}}`, "pipeline.busy_poll.idle"},
	} {
		out, err := check(c.doc)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, c.field) || strings.Contains(out, "ok\n") {
			t.Errorf("check-config %s: %v %q, want exit 1 naming %s", c.doc, err, out, c.field)
		}
	}
}

// TestReloadRestartOnly: a reload is refused, the field named and nothing changed, when the
// file changes a limit of the stack ("stack"), pipeline.busy_poll, or the NAT's max_mappings or
// max_mappings_per_host, which the running instance cannot change; a bad value of one is
// refused as the file's error. The reload runs up to its refusal without an instance (the
// refusals come before it is touched); the NAT's options with a flag over them are checked
// at the NAT's part of the reload (prepare), which changes nothing.
func TestReloadRestartOnly(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	refused := func(r *reloader, path, field, what string) {
		t.Helper()
		res := r.reload(path, "test")
		if res.OK || res.Field != field || !strings.Contains(res.Error, what) {
			t.Errorf("reload of %s: ok %v, field %q, error %q; want refused on %s saying %q", filepath.Base(path), res.OK, res.Field, res.Error, field, what)
		}
	}

	// echo: the stack's limits.
	echoDoc := func(stack string) string {
		return `{"interfaces": [{"name": "eth1", "addresses": ["198.18.0.1/24"]}], "stack": ` + stack + `}`
	}
	start := write("echo.json", echoDoc(`{"neighbor_table_size": 256, "tcp": {"max_connections": 100}}`))
	cfg, err := config.Load(start)
	if err != nil {
		t.Fatal(err)
	}
	r := &reloader{s: reloadSetup{command: "echo", fs: flag.NewFlagSet("echo", flag.ContinueOnError)}, running: *cfg, path: start}
	for _, c := range []struct{ name, stack, field string }{
		{"conns.json", `{"neighbor_table_size": 256, "tcp": {"max_connections": 200}}`, "stack.tcp.max_connections"},
		{"neigh.json", `{"tcp": {"max_connections": 100}}`, "stack.neighbor_table_size"},
		{"reasm.json", `{"neighbor_table_size": 256, "reassembly_timeout": "10s", "tcp": {"max_connections": 100}}`, "stack.reassembly_timeout"},
		{"pending.json", `{"neighbor_table_size": 256, "arp_pending_per_hop": 4, "tcp": {"max_connections": 100}}`, "stack.arp_pending_per_hop"},
	} {
		refused(r, write(c.name, echoDoc(c.stack)), c.field, "needs a restart")
	}
	refused(r, write("bad.json", echoDoc(`{"neighbor_table_size": 256, "arp_pending_hops": -3, "tcp": {"max_connections": 100}}`)),
		"stack.arp_pending_hops", "-3: want 1..4096")
	if r.reloads != 0 || r.path != start || r.running.Stack != cfg.Stack {
		t.Errorf("after refused reloads: %d applied, file %s, stack %+v; want none, %s, %+v", r.reloads, r.path, r.running.Stack, start, cfg.Stack)
	}
	same, _ := config.Load(write("same.json", echoDoc(`{"neighbor_table_size": 256, "tcp": {"max_connections": 100}}`)))
	if err := restartOnly(cfg, same); err != nil {
		t.Errorf("the same limits: %v", err)
	}

	// run: pipeline.busy_poll, each of its fields; given by flag (--busy-poll ...), it keeps
	// the flag's value over a file without it.
	runDoc := func(busy string) string {
		return `{"interfaces": [{"name": "eth1"}], "pipeline": {"busy_poll": ` + busy + `}}`
	}
	start = write("run.json", runDoc(`{"on": true, "budget": 32, "idle": "2ms"}`))
	if cfg, err = config.Load(start); err != nil {
		t.Fatal(err)
	}
	if want := (config.BusyPoll{On: true, Budget: 32, Idle: 2 * time.Millisecond}); cfg.Pipeline.BusyPoll != want {
		t.Fatalf("busy_poll from the file: %+v, want %+v", cfg.Pipeline.BusyPoll, want)
	}
	r = &reloader{s: reloadSetup{command: "run", fs: flag.NewFlagSet("run", flag.ContinueOnError)}, running: *cfg, path: start}
	for _, c := range []struct{ name, busy, field string }{
		{"busyoff.json", `{"on": false, "budget": 32, "idle": "2ms"}`, "pipeline.busy_poll.on"},
		{"busybudget.json", `{"on": true, "budget": 64, "idle": "2ms"}`, "pipeline.busy_poll.budget"},
		{"busyidle.json", `{"on": true, "budget": 32}`, "pipeline.busy_poll.idle"},
	} {
		refused(r, write(c.name, runDoc(c.busy)), c.field, "needs a restart (the AF_XDP sockets' busy-poll options are set at set-up")
	}
	refused(r, write("busybad.json", runDoc(`{"on": true, "budget": 70000, "idle": "2ms"}`)), "pipeline.busy_poll.budget", "70000: want 1..65535")
	if r.reloads != 0 || r.running.Pipeline.BusyPoll != cfg.Pipeline.BusyPoll {
		t.Errorf("after refused reloads: %d applied, busy_poll %+v; want none, %+v", r.reloads, r.running.Pipeline.BusyPoll, cfg.Pipeline.BusyPoll)
	}
	if same, _ := config.Load(write("busysame.json", runDoc(`{"on": true, "budget": 32, "idle": "2ms"}`))); restartOnly(cfg, same) != nil {
		t.Errorf("the same busy_poll: %v", restartOnly(cfg, same))
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cf := config.RegisterFlags(fs, config.FlagOptions{Interfaces: true, BusyPoll: true})
	if err := fs.Parse([]string{"--config", write("nobusy.json", `{"interfaces": [{"name": "eth1"}]}`), "--busy-poll", "--busy-poll-budget", "16", "--busy-poll-idle", "500us"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err = cf.Resolve(); err != nil {
		t.Fatal(err)
	}
	if want := (config.BusyPoll{On: true, Budget: 16, Idle: 500 * time.Microsecond}); cfg.Pipeline.BusyPoll != want {
		t.Fatalf("busy polling by flag: %+v, want %+v", cfg.Pipeline.BusyPoll, want)
	}
	r = &reloader{s: reloadSetup{command: "run", fs: fs}, running: *cfg, path: cf.Path()}
	reread, _ := config.Load(cf.Path())
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	r.keepFlags(reread, set)
	if err := restartOnly(cfg, reread); err != nil || reread.Pipeline.BusyPoll != cfg.Pipeline.BusyPoll {
		t.Errorf("busy polling set by flags, the file without it: %v, busy_poll %+v", err, reread.Pipeline.BusyPoll)
	}
	if without, _ := config.Load(cf.Path()); restartOnly(cfg, without) == nil {
		t.Errorf("busy polling set at start, a file without it and no flags: accepted, want a restart refused")
	}

	// nat: max_mappings and max_mappings_per_host.
	natDoc := func(options string) string {
		return `{"interfaces": [{"name": "in0", "addresses": ["198.18.0.1/24"]}, {"name": "out0", "addresses": ["198.19.0.1/24"]}],
		  "pipeline": {"options": ` + options + `}}`
	}
	start = write("nat.json", natDoc(`{"max_mappings": 1000, "max_mappings_per_host": 100, "timeouts": {"udp": "5m"}}`))
	if cfg, err = config.Load(start); err != nil {
		t.Fatal(err)
	}
	var opt natOptions
	if err := cfg.Pipeline.DecodeOptions(&opt); err != nil {
		t.Fatal(err)
	}
	st, err := newNATReload(nil, cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	r = &reloader{s: reloadSetup{command: "nat", fs: flag.NewFlagSet("nat", flag.ContinueOnError), stage: st}, running: *cfg, path: start}
	refused(r, write("perhost.json", natDoc(`{"max_mappings": 1000, "max_mappings_per_host": 200, "timeouts": {"udp": "5m"}}`)),
		"pipeline.options.max_mappings_per_host", "needs a restart")
	refused(r, write("nolimit.json", natDoc(`{"max_mappings": 1000, "max_mappings_per_host": -1, "timeouts": {"udp": "5m"}}`)),
		"pipeline.options.max_mappings_per_host", "needs a restart")
	refused(r, write("arena.json", natDoc(`{"max_mappings": 2000, "max_mappings_per_host": 100, "timeouts": {"udp": "5m"}}`)),
		"pipeline.options.max_mappings", "needs a restart")
	refused(r, write("natbad.json", natDoc(`{"max_mappings": 1000, "max_mappings_per_host": -2, "timeouts": {"udp": "5m"}}`)),
		"pipeline.options.max_mappings_per_host", "want a count of mappings per inside host")
	refused(r, write("natstack.json", `{"interfaces": [{"name": "in0", "addresses": ["198.18.0.1/24"]}, {"name": "out0", "addresses": ["198.19.0.1/24"]}],
		  "pipeline": {"options": {"max_mappings": 1000, "max_mappings_per_host": 100, "timeouts": {"udp": "5m"}}}, "stack": {"neighbor_table_size": 64}}`),
		"stack.neighbor_table_size", "needs a restart")
	if r.reloads != 0 || st.conf.MaxMappingsPerHost != 100 || st.conf.MaxMappings != 1000 {
		t.Errorf("after refused reloads: %d applied, NAT config %d mappings, %d per host; want none, 1000, 100", r.reloads, st.conf.MaxMappings, st.conf.MaxMappingsPerHost)
	}
	// What may change passes the NAT's part: a new timeout.
	next, _ := config.Load(write("timeout.json", natDoc(`{"max_mappings": 1000, "max_mappings_per_host": 100, "timeouts": {"udp": "2m"}}`)))
	if _, err := st.prepare(next, nil); err != nil {
		t.Errorf("a new UDP timeout: %v", err)
	}
	// Set by flag, the limits keep the flag's values: a file without them changes nothing.
	started, _ := config.Load(write("flags.json", natDoc(`{"timeouts": {"udp": "5m"}}`)))
	fopt := natOptions{MaxMappings: 1000, MaxMappingsPerHost: 100} // --max-mappings 1000 --max-mappings-per-host 100
	fopt.Timeouts.UDP = "5m"
	fst, err := newNATReload(nil, started, fopt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fst.prepare(started, map[string]bool{"max-mappings": true, "max-mappings-per-host": true}); err != nil {
		t.Errorf("limits set by flags, a file without them: %v", err)
	}
	if _, err := fst.prepare(started, nil); err == nil || !strings.Contains(err.Error(), "needs a restart") {
		t.Errorf("limits set at start, a file without them and no flags: %v, want a restart refused", err)
	}
}

// TestStackConfigLimits: the "stack" section reaches the stack's configuration.
func TestStackConfigLimits(t *testing.T) {
	cfg, err := config.Parse(strings.NewReader(`{"interfaces": [{"name": "eth1", "addresses": ["198.18.0.1/24"]}],
	  "stack": {"reassembly_bytes": 1048576, "reassembly_timeout": "10s", "neighbor_table_size": 4096, "arp_pending_hops": 16,
	  "arp_pending_per_hop": 8, "tcp": {"max_connections": 1000, "backlog": 512, "max_time_wait": 200}}}`))
	if err != nil {
		t.Fatal(err)
	}
	sc := stackConfig(cfg)
	if sc.ReassemblyBytes != 1<<20 || sc.ReassemblyTimeout != 10*time.Second || sc.NeighborTableSize != 4096 || sc.ARPPendingHops != 16 ||
		sc.ARPPendingPerHop != 8 || sc.TCP.MaxConns != 1000 || sc.TCP.Backlog != 512 || sc.TCP.MaxTimeWait != 200 || len(sc.Ifaces) != 1 {
		t.Errorf("stack config %+v", sc)
	}
	if _, err := stack.NewHost(sc); err != nil {
		t.Errorf("the stack refuses the limits: %v", err)
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
	logf("netchan: %s: busy polling unavailable (%s): its shards keep their usual loop", "nc0", "no NAPI id: veth")
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
	if len(recs) != 6 {
		t.Fatalf("want 6 records, got %d:\n%s", len(recs), buf.String())
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "nat claims all; the kernel keeps the rest", "iface": "nc0"},
		{"level": "WARN", "component": "afxdp", "iface": "nc1", "queue": 3.0},
		{"level": "WARN", "component": "xdpprog", "iface": "nc1"},
		{"level": "WARN", "shard": 2.0, "msg": "not pinned: EINVAL"},
		{"level": "INFO", "msg": "eth9: something about an interface not ours"},
		{"level": "WARN", "iface": "nc0", "msg": "busy polling unavailable (no NAPI id: veth): its shards keep their usual loop"}, // asked for, not done
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
