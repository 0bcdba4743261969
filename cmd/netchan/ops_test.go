package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/shards"
)

// statusJSON is the part of `netchan status --json` the tests read.
type statusJSON struct {
	Instance string            `json:"instance"`
	PID      int               `json:"pid"`
	Command  string            `json:"command"`
	Sections []string          `json:"sections"`
	Pipeline pipelineStatus    `json:"pipeline"`
	Shards   []shards.Snapshot `json:"shards"`
	XDP      []xdpStatus       `json:"xdp"`
}

// readStatus runs `netchan status --instance NAME --json` and decodes it.
func readStatus(t *testing.T, name string) statusJSON {
	t.Helper()
	out, err := exec.Command(binary, "status", "--instance", name, "--json").Output()
	if err != nil {
		t.Fatalf("netchan status --instance %s: %v %s", name, err, stderrOf(err))
	}
	var st statusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status is not JSON: %v\n%s", err, out)
	}
	return st
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// sendFrames sends count frames of size bytes from the lab's peer to netchan's end, on queue
// 0, through the built binary's `lab send`, and checks that every one came back reflected.
func sendFrames(t *testing.T, l *lab.Lab, count uint64, size int, runID uint32) {
	t.Helper()
	ep := l.Netchan[0]
	cfg := trafficgen.Config{Iface: ep.Peer.Iface, Queue: 0, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
		SrcPort: 20000, DstPort: 9, Flows: 4, Size: size, Count: count, Rate: 20000, RunID: runID, Verify: true, Wait: 3 * time.Second}
	r := labSend(t, ep.Peer.NS, cfg)
	if r.Sent != count || r.Received != count || r.Mismatched != 0 {
		t.Fatalf("sender: sent %d, got back %d intact, %d mismatched; want %d", r.Sent, r.Received, r.Mismatched, count)
	}
}

// labSend runs the built binary's `lab send` in namespace ns with cfg and returns its result.
func labSend(t *testing.T, ns string, cfg trafficgen.Config) trafficgen.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := trafficgen.Command(ctx, ns, []string{binary, "lab", "send"}, cfg)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sender: %v", err)
	}
	r, err := trafficgen.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestStatusTwoInstances runs two instances under different names on two labs, sends a
// different known number of frames through each, and reads each one's status as JSON from
// the built binary: each instance's counters must equal what was sent to it, exactly.
func TestStatusTwoInstances(t *testing.T) {
	labtest.RequireRoot(t)
	type inst struct {
		lab   *lab.Lab
		name  string
		count uint64
		size  int
	}
	insts := []*inst{{count: 1500, size: 60}, {count: 2500, size: 200}}
	for _, in := range insts {
		in.lab = labtest.New(t, lab.Config{QueueCount: 1})
		in.name = in.lab.Name + "-st"
		startRun(t, "--iface", in.lab.Netchan[0].Iface, "--pipeline", "reflect", "--xdp-mode", "native", "--stats", "0", "--instance", in.name)
	}
	for i, in := range insts {
		st := readStatus(t, in.name)
		if st.Instance != in.name || st.Command != "run" || len(st.Shards) != 1 || st.Shards[0].RxPackets != 0 {
			t.Fatalf("instance %d before traffic: %+v", i, st)
		}
		if strings.Join(st.Pipeline.Interfaces, ",") != in.lab.Netchan[0].Iface || st.Pipeline.Name != "reflect" {
			t.Errorf("instance %d pipeline section: %+v", i, st.Pipeline)
		}
	}
	for i, in := range insts {
		sendFrames(t, in.lab, in.count, in.size, uint32(10+i))
	}
	for _, in := range insts {
		// The shard publishes its counters once per batch, right after transmitting: give the
		// last batch a moment, then demand exact figures.
		var st statusJSON
		deadline := time.Now().Add(5 * time.Second)
		for {
			st = readStatus(t, in.name)
			s := st.Shards[0]
			if s.RxPackets >= in.count && s.TxPackets >= in.count || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		s := st.Shards[0]
		bytes := in.count * uint64(in.size)
		if s.RxPackets != in.count || s.TxPackets != in.count || s.RxBytes != bytes || s.TxBytes != bytes || s.DropsTotal != 0 {
			t.Errorf("instance %s: rx %d pkts %d bytes, tx %d pkts %d bytes, drops %d; sent %d frames of %d bytes (%d bytes)",
				in.name, s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes, s.DropsTotal, in.count, in.size, bytes)
		}
		if s.Polls == 0 || s.PacketsPerPoll <= 0 {
			t.Errorf("instance %s: polls %d, packets per poll %v", in.name, s.Polls, s.PacketsPerPoll)
		}
		if len(st.XDP) != 1 || st.XDP[0].Claimed != in.count || st.XDP[0].Mode != "native" {
			t.Errorf("instance %s: xdp section %+v, want %d claimed in native mode", in.name, st.XDP, in.count)
		}
	}
	// The table names the instance and shows the count.
	out, err := exec.Command(binary, "status", "--instance", insts[1].name).Output()
	if err != nil {
		t.Fatalf("status table: %v %s", err, stderrOf(err))
	}
	if !strings.Contains(string(out), "instance "+insts[1].name) || !strings.Contains(string(out), " 2500 ") || !strings.Contains(string(out), "rx pkts") {
		t.Errorf("status table:\n%s", out)
	}
}

// TestInstanceNames: a second instance under a live name is refused and told how to choose
// another; after SIGKILL the name reads as not running (stale socket), a new instance takes
// it over, and a clean shutdown removes the socket.
func TestInstanceNames(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 2})
	iface := l.Netchan[0].Iface
	name := l.Name + "-n"
	sock := control.SocketPath("", name)
	first, _ := startRun(t, "--iface", iface, "--queues", "0", "--pipeline", "drop", "--stats", "0", "--instance", name)
	// Same name, other queue: refused for the name before anything is attached.
	out, err := exec.Command(binary, "run", "--iface", iface, "--queues", "1", "--stats", "0", "--instance", name).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already running") || !strings.Contains(string(out), "--instance NAME") ||
		!strings.Contains(string(out), fmt.Sprint(first.Process.Pid)) {
		t.Errorf("second instance under the same name: %v %q", err, out)
	}
	if st := readStatus(t, name); st.PID != first.Process.Pid {
		t.Errorf("status pid %d, want the first instance's %d", st.PID, first.Process.Pid)
	}
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("SIGKILL should leave the socket file behind for this test to mean anything: %v", err)
	}
	out, err = exec.Command(binary, "status", "--instance", name).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no netchan instance is running under the name") || !strings.Contains(string(out), "died") {
		t.Errorf("status of a killed instance: %v %q", err, out)
	}
	second, _ := startRun(t, "--iface", iface, "--pipeline", "drop", "--stats", "0", "--instance", name)
	if st := readStatus(t, name); st.PID != second.Process.Pid {
		t.Errorf("status pid %d, want the new instance's %d", st.PID, second.Process.Pid)
	}
	second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Errorf("run after SIGTERM: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after a clean shutdown: %v", err)
	}
	out, err = exec.Command(binary, "status", "--instance", name).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no netchan instance is running under the name") || !strings.Contains(string(out), "no socket") {
		t.Errorf("status after shutdown: %v %q", err, out)
	}
}

// TestMemlockError runs netchan without CAP_IPC_LOCK, with RLIMIT_MEMLOCK at 8 MiB and a UMEM
// of 32 MiB: the kernel refuses the UMEM, and the message names the limit and what to do. The
// same run with the capability (root's) works, so the capability is what made the difference.
func TestMemlockError(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	iface := l.Netchan[0].Iface
	const limit = "8388608" // 8 MiB
	args := []string{"run", "--iface", iface, "--frames", "16384", "--stats", "0", "--instance", l.Name + "-m"}
	noLock := append([]string{"--memlock=" + limit + ":" + limit, "setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", binary}, args...)
	out, err := exec.Command("prlimit", noLock...).CombinedOutput()
	if err == nil {
		t.Fatalf("run without CAP_IPC_LOCK with a 32 MiB UMEM under an 8 MiB limit succeeded: %s", out)
	}
	for _, want := range []string{"locked-memory limit", "RLIMIT_MEMLOCK " + limit, "33554432", "CAP_IPC_LOCK", "ulimit -l", "--frames", "netchan doctor"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("memlock error lacks %q:\n%s", want, out)
		}
	}
	if xdpAttached(t, iface) {
		t.Errorf("the failed run left an XDP program on %s", iface)
	}
	// The doctor, run the same way, predicts it.
	dargs := append([]string{"--memlock=" + limit + ":" + limit, "setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", binary},
		"doctor", "--iface", iface, "--frames", "16384", "--json")
	dout, err := exec.Command("prlimit", dargs...).Output()
	if err == nil {
		t.Errorf("doctor exit 0 without CAP_IPC_LOCK over the limit")
	}
	if f := finding(t, dout, "memlock", ""); f == nil || f.Severity != "problem" || !strings.Contains(f.Fix, "CAP_IPC_LOCK") {
		t.Errorf("doctor memlock finding: %+v", f)
	}
	// With CAP_IPC_LOCK (root's) the UMEM is not charged and the same run works.
	withLock := append([]string{"--memlock=" + limit + ":" + limit, binary}, append(args, "--duration", "300ms")...)
	if out, err := exec.Command("prlimit", withLock...).CombinedOutput(); err != nil {
		t.Errorf("the same run with CAP_IPC_LOCK: %v\n%s", err, out)
	}
}

type doctorFinding struct {
	Check    string `json:"check"`
	Subject  string `json:"subject"`
	Severity string `json:"severity"`
	What     string `json:"what"`
	Fix      string `json:"fix"`
}

// finding returns the first finding of check (and subject, if given) in doctor's JSON output.
func finding(t *testing.T, out []byte, check, subject string) *doctorFinding {
	t.Helper()
	var doc struct {
		OK       bool            `json:"ok"`
		Findings []doctorFinding `json:"findings"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	for i, f := range doc.Findings {
		if f.Check == check && (subject == "" || f.Subject == subject) {
			return &doc.Findings[i]
		}
	}
	return nil
}

func findings(t *testing.T, out []byte, check string) []doctorFinding {
	t.Helper()
	var doc struct {
		Findings []doctorFinding `json:"findings"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	var fs []doctorFinding
	for _, f := range doc.Findings {
		if f.Check == check {
			fs = append(fs, f)
		}
	}
	return fs
}

// TestDoctorOffload turns transmit checksum offload on at the peer of a lab veth (the peer is
// in the lab's namespace): the doctor must report it with the command that turns it off, and
// report nothing about it once it is off again.
func TestDoctorOffload(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	doctor := func() ([]byte, error) {
		return exec.Command(binary, "doctor", "--iface", ep.Iface, "--json").Output()
	}
	ethtool := func(on string) {
		t.Helper()
		if out, err := l.Command(context.Background(), ep.Peer.NS, "ethtool", "-K", ep.Peer.Iface, "tx", on).CombinedOutput(); err != nil {
			t.Fatalf("ethtool -K %s tx %s: %v %s", ep.Peer.Iface, on, err, out)
		}
	}
	offloadWarnings := func(out []byte) []doctorFinding {
		var ws []doctorFinding
		for _, f := range findings(t, out, "offload") {
			if f.Severity != "ok" {
				ws = append(ws, f)
			}
		}
		return ws
	}
	out, err := doctor()
	if err != nil {
		t.Fatalf("doctor on a fresh lab veth: %v\n%s", err, out)
	}
	if ws := offloadWarnings(out); len(ws) != 0 {
		t.Fatalf("fresh lab (offloads off): %+v", ws)
	}
	if f := finding(t, out, "offload", ep.Iface); f == nil || !strings.Contains(f.What, ep.Peer.Iface) || !strings.Contains(f.What, ep.Peer.NS) {
		t.Errorf("the doctor did not look at the peer %s in %s: %+v", ep.Peer.Iface, ep.Peer.NS, f)
	}

	ethtool("on")
	out, err = doctor()
	if err == nil {
		t.Errorf("doctor exit 0 with checksum offload on at the peer")
	}
	ws := offloadWarnings(out)
	var tx *doctorFinding
	for i, w := range ws {
		if strings.Contains(w.What, "tx-checksumming is on") {
			tx = &ws[i]
		}
	}
	wantFix := fmt.Sprintf("ip netns exec %s ethtool -K %s tx off", ep.Peer.NS, ep.Peer.Iface)
	if tx == nil || tx.Severity != "warn" || tx.Fix != wantFix || tx.Subject != ep.Iface {
		t.Errorf("with tx on: %+v, want a warning with fix %q", ws, wantFix)
	}

	ethtool("off")
	out, err = doctor()
	if err != nil {
		t.Errorf("doctor after turning it off: %v\n%s", err, out)
	}
	if ws := offloadWarnings(out); len(ws) != 0 {
		t.Errorf("after tx off: %+v", ws)
	}
}

// TestDoctorAttached: an interface held by a running instance is fine (info); the doctor names
// the instance.
func TestDoctorAttached(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	iface := l.Netchan[0].Iface
	name := l.Name + "-d"
	startRun(t, "--iface", iface, "--pipeline", "drop", "--stats", "0", "--instance", name)
	out, _ := exec.Command(binary, "doctor", "--iface", iface, "--json").Output()
	if f := finding(t, out, "xdp", iface); f == nil || f.Severity != "info" || !strings.Contains(f.What, name) {
		t.Errorf("xdp finding with netchan running: %+v", f)
	}
	out, err := exec.Command(binary, "doctor", "--iface", "nosuch0").Output()
	if err == nil || !strings.Contains(string(out), "ip link") {
		t.Errorf("doctor on a missing interface: %v %s", err, out)
	}
}

// TestRunConfigFile runs from a config file, with one flag overriding it, and reads the
// effective settings back from the status.
func TestRunConfigFile(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 2})
	ep := l.Netchan[0]
	name := l.Name + "-c"
	path := filepath.Join(t.TempDir(), "netchan.json")
	doc := fmt.Sprintf(`{
  "instance": %q,
  "interfaces": [{"name": %q, "addresses": [%q], "static_arp": [{"ip": %q, "mac": %q}]}],
  "queues": [1],
  "xdp_mode": "native",
  "pipeline": {"name": "drop", "batch_size": 32},
  "umem": {"frames": 2048, "frame_size": 4096, "ring_size": 512}
}`, name, ep.Iface, ep.Addr, ep.Peer.Addr.Addr(), ep.Peer.MAC)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	startRun(t, "--config", path, "--frames", "1024", "--stats", "0")
	st := readStatus(t, name)
	p := st.Pipeline
	if p.Name != "drop" || strings.Join(p.Interfaces, ",") != ep.Iface || len(p.Queues) != 1 || p.Queues[0] != 1 ||
		p.BatchSize != 32 || p.UMEM.Frames != 1024 || p.UMEM.FrameSize != 4096 || p.UMEM.RingSize != 512 || p.XDPModes[0] != "native" {
		t.Errorf("effective settings: %+v", p)
	}
	if len(st.Shards) != 1 || st.Shards[0].Queue != 1 {
		t.Errorf("shards: %+v", st.Shards)
	}
	// A broken file stops the run with the field named.
	os.WriteFile(path, []byte(`{"interfaces": [{"name": "x", "addresses": ["198.18.0.300/24"]}]}`), 0o644)
	out, err := exec.Command(binary, "run", "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `interfaces[0].addresses[0]: "198.18.0.300/24" is not an IPv4 prefix`) {
		t.Errorf("broken config: %v %s", err, out)
	}
}

// startChildEnv makes the test binary a child that calls netchan.Start and reports which
// sentinel errors the result matches (TestStartErrorsIs runs it without privileges).
const startChildEnv = "NETCHAN_TEST_START_CHILD"

type childResult struct {
	Err        string `json:"err"`
	Memlock    bool   `json:"memlock"`
	Permission bool   `json:"permission"`
}

func startChildIfAsked() {
	iface := os.Getenv(startChildEnv)
	if iface == "" {
		return
	}
	cfg := config.Default()
	cfg.Interfaces = []config.Interface{{Name: iface}}
	cfg.UMEM.Frames = 16384
	spec, _ := basic.ByName("drop")
	in, err := netchan.Start(netchan.Config{Interfaces: []string{iface}, UMEM: netchan.UMEM{Frames: cfg.UMEM.Frames}, Logf: func(string, ...any) {}}, spec)
	if err == nil {
		in.Stop()
	} else {
		err = memlockHint(err, cfg)
	}
	r := childResult{Memlock: errors.Is(err, afxdp.ErrMemlock), Permission: errors.Is(err, afxdp.ErrPermission)}
	if err != nil {
		r.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(0)
}

// TestStartErrorsIs checks that the control-plane errors a user meets first are Go errors
// that errors.Is recognises, with messages that say what to do: missing interface, queue out
// of range, program already attached (in this process), UMEM over RLIMIT_MEMLOCK without
// CAP_IPC_LOCK and no privileges at all (in a child process).
func TestStartErrorsIs(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	iface := l.Netchan[0].Iface
	spec, _ := basic.ByName("drop")
	opts := func(ifaces []string, queues []int) netchan.Config {
		return netchan.Config{Interfaces: ifaces, Queues: queues, Logf: func(string, ...any) {}}
	}
	_, err := netchan.Start(opts([]string{"nosuch0"}, nil), spec)
	if !errors.Is(err, afxdp.ErrNoInterface) || !strings.Contains(err.Error(), "ip link") {
		t.Errorf("missing interface: %v", err)
	}
	_, err = netchan.Start(opts([]string{iface}, []int{1}), spec)
	if !errors.Is(err, afxdp.ErrQueueOutOfRange) || !strings.Contains(err.Error(), "choose queues") {
		t.Errorf("queue out of range: %v", err)
	}
	first, err := netchan.Start(opts([]string{iface}, nil), spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = netchan.Start(opts([]string{iface}, nil), spec)
	if !errors.Is(err, xdpprog.ErrAlreadyAttached) || !strings.Contains(err.Error(), "xdp off") {
		t.Errorf("already attached: %v", err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := func(pre ...string) childResult {
		t.Helper()
		cmd := exec.Command(pre[0], append(pre[1:], exe)...)
		cmd.Env = append(os.Environ(), startChildEnv+"="+iface)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child %v: %v %s", pre, err, stderrOf(err))
		}
		var r childResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("child printed %q", out)
		}
		return r
	}
	r := child("prlimit", "--memlock=8388608:8388608", "setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock")
	if !r.Memlock || r.Permission || !strings.Contains(r.Err, "CAP_IPC_LOCK") || !strings.Contains(r.Err, "--frames") {
		t.Errorf("without CAP_IPC_LOCK: %+v", r)
	}
	r = child("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all")
	if !r.Permission || !strings.Contains(r.Err, "CAP_NET_ADMIN") || !strings.Contains(r.Err, "root") {
		t.Errorf("unprivileged: %+v", r)
	}
	r = child("prlimit", "--memlock=8388608:8388608")
	if r.Err != "" {
		t.Errorf("root with CAP_IPC_LOCK: %+v", r)
	}
}

// sweepSockets removes control sockets that killed test instances (named after their lab,
// labtest.Prefix...) left behind.
func sweepSockets() {
	if os.Geteuid() != 0 {
		return
	}
	if err := control.RemoveStale("", labtest.Prefix); err != nil {
		fmt.Fprintln(os.Stderr, "sweeping stale control sockets:", err)
	}
}

// stopRun stops a `netchan run` the way an operator does (SIGTERM), so that it removes its
// control socket, and kills it if it does not stop.
func stopRun(cmd *exec.Cmd) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
