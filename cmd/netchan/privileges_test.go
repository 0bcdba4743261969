package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/cmd/netchan/doctor"
	"github.com/netchan/netchan/runtime/caps"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// The privilege tests run the data-plane commands in a lab, read every thread's capability
// sets from /proc/PID/task/*/status once they say ready, and then use each thing the command
// does once set up: traffic, status, a kernel address added, claims changed by reload
// (SIGHUP and `netchan reload`), the NAT's fast path, a netchannel's reserved port released at
// exit, and the stop that detaches XDP.

// keptFor is what command keeps once set up on this machine (configPath: its --config), and
// checks that it is within what any machine could make it keep: CAP_BPF or CAP_SYS_ADMIN (map
// access before Linux 5.19), CAP_DAC_READ_SEARCH (a configuration file only root's override
// can read), CAP_NET_ADMIN (reserved ports for a user that is not root).
func keptFor(t *testing.T, command, configPath string) caps.Set {
	t.Helper()
	needs := caps.NeedsFor(configPath, doctor.AfterSetup[command]...)
	var want caps.Set
	for _, c := range caps.Keep(needs) {
		want |= 1 << c.Bit
	}
	if extra := want &^ (1<<caps.BPF | 1<<caps.SysAdmin | 1<<caps.DACReadSearch | 1<<caps.NetAdmin); extra != 0 {
		t.Fatalf("%s would keep %s: more than any feature needs (%+v)", command, extra, needs)
	}
	t.Logf("%s keeps %s on this machine", command, want)
	return want
}

// checkDropped reads every thread of pid and checks that each holds exactly want (effective
// and permitted), nothing inheritable or ambient, a bounding set of want, and no_new_privs.
func checkDropped(t *testing.T, pid int, want caps.Set) {
	t.Helper()
	checkDroppedBounding(t, pid, want, want)
}

// checkDroppedBounding is checkDropped with the bounding set given.
func checkDroppedBounding(t *testing.T, pid int, want, bounding caps.Set) {
	t.Helper()
	ts, err := caps.Threads(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) < 2 {
		t.Fatalf("pid %d has %d threads: want the shards' and the runtime's", pid, len(ts))
	}
	for _, th := range ts {
		if th.Effective != want || th.Permitted != want || th.Inheritable != 0 || th.Ambient != 0 || th.Bounding != bounding || !th.NoNewPrivs {
			t.Errorf("pid %d thread %d: effective %s, permitted %s, inheritable %s, ambient %s, bounding %s, no_new_privs %v; want %s, bounding %s, no_new_privs",
				pid, th.TID, th.Effective, th.Permitted, th.Inheritable, th.Ambient, th.Bounding, th.NoNewPrivs, want, bounding)
		}
	}
	if !t.Failed() {
		t.Logf("pid %d: all %d threads hold %s, bounding %s, no_new_privs", pid, len(ts), want, bounding)
	}
}

// checkPrivilegesSection reads the status's privileges section.
func checkPrivilegesSection(t *testing.T, name string, want caps.Set) {
	t.Helper()
	var st struct {
		Privileges struct {
			Kept  string      `json:"kept"`
			Needs []caps.Need `json:"needs"`
		} `json:"privileges"`
	}
	raw := statusInto(t, name, &st)
	if st.Privileges.Kept != want.String() || len(st.Privileges.Needs) == 0 {
		t.Fatalf("privileges section: want kept %s and the needs:\n%s", want, raw)
	}
}

// stopAndCheck stops cmd with SIGTERM and checks that it exits 0 and leaves nothing behind:
// no XDP program on ifaces, no control socket.
func stopAndCheck(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer, name string, ifaces ...string) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after SIGTERM: %v\n%s", err, stderr)
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("still running 15 s after SIGTERM:\n%s", stderr)
	}
	for _, iface := range ifaces {
		if xdpAttached(t, iface) {
			t.Errorf("%s: an XDP program is still attached after the stop", iface)
		}
	}
	if _, err := os.Stat(control.SocketPath("", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket %s after the stop: %v", control.SocketPath("", name), err)
	}
}

// startWith is startCmd with another command line: argv[0] is the program (another binary, or
// setpriv running one), command the netchan command (for messages).
func startWith(t *testing.T, command string, argv ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopRun(cmd) })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "ready") {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("netchan %s exited before ready: %s", command, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("netchan %s not ready after 30s: %s", command, stderr.String())
	}
	return cmd, &stderr
}

var noCgo struct {
	once sync.Once
	path string
	err  error
}

// noCgoBinary builds netchan as the image does (CGO_ENABLED=0), where DropTo uses
// syscall.AllThreadsSyscall; the tests' own binary (go build's default) links cgo, where it
// uses its signal handler in C.
func noCgoBinary(t *testing.T) string {
	t.Helper()
	noCgo.once.Do(func() {
		noCgo.path = filepath.Join(filepath.Dir(binary), "netchan-nocgo")
		build := exec.Command("go", "build", "-o", noCgo.path, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			noCgo.err = fmt.Errorf("CGO_ENABLED=0 go build: %v\n%s", err, out)
		}
	})
	if noCgo.err != nil {
		t.Fatal(noCgo.err)
	}
	return noCgo.path
}

// cgoOf reads whether bin was built with cgo (go version -m).
func cgoOf(t *testing.T, bin string) bool {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m %s: %v", bin, err)
	}
	return strings.Contains(string(out), "CGO_ENABLED=1")
}

// runConfig writes a configuration file of `netchan run` on ep with claims.
func runConfig(t *testing.T, path, name string, ep lab.Endpoint, claims ...string) {
	t.Helper()
	cl, _ := json.Marshal(claims)
	doc := fmt.Sprintf(`{"instance": %q, "interfaces": [{"name": %q}], "claims": %s, "pipeline": {"name": "reflect"}}`, name, ep.Iface, cl)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegesRun runs `netchan run --config FILE`, built with cgo (go build's default) and
// without (as the image is): once ready, every thread holds only what run keeps (nothing, on
// a kernel of 5.19 or later run by root with a readable file); reflected traffic still
// flows; status answers; a kernel address added to the interface shows in the claims
// section (netlink, followed after the drop); SIGHUP and `netchan reload` still change the
// claims (map updates through the program's descriptors); SIGTERM detaches XDP and removes
// the control socket.
func TestPrivilegesRun(t *testing.T) {
	labtest.RequireRoot(t)
	for _, build := range []string{"cgo", "nocgo"} {
		t.Run(build, func(t *testing.T) {
			bin := binary
			if build == "nocgo" {
				bin = noCgoBinary(t)
			}
			if got := cgoOf(t, bin); got != (build == "cgo") {
				t.Fatalf("%s: built with cgo %v", bin, got)
			}
			l := labtest.New(t, lab.Config{QueueCount: 1})
			ep := l.Netchan[0]
			name := l.Name + "-pr"
			path := filepath.Join(t.TempDir(), "run.json")
			runConfig(t, path, name, ep, "udp:9")
			want := keptFor(t, "run", path)
			cmd, stderr := startWith(t, "run", bin, "run", "--config", path, "--stats", "0")
			pid := cmd.Process.Pid
			checkDropped(t, pid, want)
			checkPrivilegesSection(t, name, want)
			if !strings.Contains(stderr.String(), "dropped the capabilities") {
				t.Errorf("no log line about the drop:\n%s", stderr)
			}

			sendFrames(t, l, 1000, 100, 1)
			if st := readStatus(t, name); st.PID != pid || len(st.Shards) != 1 || st.Shards[0].RxPackets < 1000 {
				t.Fatalf("status after traffic: %+v", st)
			}

			// A kernel address added now reaches the program's deny set.
			addr := netip.MustParsePrefix("203.0.113.77/32")
			labtest.KernelAddr(t, ep.Iface, addr)
			for deadline := time.Now().Add(5 * time.Second); ; {
				var st reloadState
				raw := statusInto(t, name, &st)
				if len(st.Claims) == 1 && slices.Contains(st.Claims[0].KernelAddrs, addr.String()) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the kernel address %v added after the drop is not in the claims section:\n%s", addr, raw)
				}
				time.Sleep(50 * time.Millisecond)
			}

			// Reloads change the claims: by SIGHUP, then through the control socket.
			reload := func(trigger string, claims ...string) {
				t.Helper()
				runConfig(t, path, name, ep, claims...)
				var before reloadState
				statusInto(t, name, &before)
				if trigger == "SIGHUP" {
					if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
						t.Fatal(err)
					}
				} else if out, err := exec.Command(bin, "reload", "--instance", name).CombinedOutput(); err != nil {
					t.Fatalf("netchan reload: %v\n%s", err, out)
				}
				for deadline := time.Now().Add(10 * time.Second); ; {
					var st reloadState
					raw := statusInto(t, name, &st)
					if st.Reload.Reloads > before.Reload.Reloads {
						if r := st.Reload.Last; r == nil || !r.OK {
							t.Fatalf("%s reload failed:\n%s\n%s", trigger, raw, stderr)
						}
						if got := claimsOf(st, ep.Iface, "config"); !slices.Equal(got, claims) {
							t.Fatalf("after the %s reload: config claims %v, want %v:\n%s", trigger, got, claims, raw)
						}
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("no %s reload within 10 s:\n%s\n%s", trigger, raw, stderr)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			reload("SIGHUP", "tcp:8080", "udp:9")
			sendFrames(t, l, 500, 100, 2)
			reload("control", "tcp:8080")
			// udp:9 released: the frames now go to the kernel, none comes back.
			cfg := sendConfig(l, 200, 3)
			if r := labSend(t, ep.Peer.NS, cfg); r.Received != 0 {
				t.Fatalf("after releasing udp:9: %d of %d frames reflected, want 0", r.Received, r.Sent)
			}
			checkDropped(t, pid, want) // threads started since hold no more
			stopAndCheck(t, cmd, stderr, name, ep.Iface)
		})
	}
}

// TestPrivilegesPrivateConfig runs `netchan run` with its configuration in another user's
// private directory, which root reads only by overriding permissions: run keeps
// CAP_DAC_READ_SEARCH (and only that, on a kernel of 5.19 or later), so that SIGHUP still
// reloads the file, which a thread without it could not open.
func TestPrivilegesPrivateConfig(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	name := l.Name + "-pc"
	dir := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "run.json")
	runConfig(t, path, name, ep, "udp:9")
	for _, p := range []string{dir, path} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(path, 0o600)
	err := caps.Probe(0, func() error {
		f, err := os.Open(path)
		if err == nil {
			f.Close()
		}
		return err
	})
	if !errors.Is(err, os.ErrPermission) {
		t.Fatalf("opening %s without capabilities: %v, want permission denied (else this test shows nothing)", path, err)
	}
	want := keptFor(t, "run", path)
	if !want.Has(caps.DACReadSearch) {
		t.Fatalf("run would keep %s: want CAP_DAC_READ_SEARCH for %s", want, path)
	}
	cmd, stderr := startCmd(t, "run", "--config", path, "--stats", "0")
	checkDropped(t, cmd.Process.Pid, want)
	checkPrivilegesSection(t, name, want)
	sendFrames(t, l, 500, 100, 1)
	runConfig(t, path, name, ep, "tcp:8080", "udp:9")
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		var st reloadState
		raw := statusInto(t, name, &st)
		if r := st.Reload.Last; r != nil {
			if !r.OK || !slices.Equal(claimsOf(st, ep.Iface, "config"), []string{"tcp:8080", "udp:9"}) {
				t.Fatalf("reload of the private file: want it applied with claims [tcp:8080 udp:9]:\n%s\n%s", raw, stderr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reload within 10 s:\n%s\n%s", raw, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopAndCheck(t, cmd, stderr, name, ep.Iface)
}

// TestPrivilegesContainer runs `netchan run` as the DaemonSet's container does: root with
// exactly netchan's capabilities (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON,
// CAP_IPC_LOCK) as bounding set, no CAP_SETPCAP, and no_new_privs already set
// (allowPrivilegeEscalation: false). Without CAP_SETPCAP the bounding set stays as it is (no
// program can be run with more than it anyway, under no_new_privs); every thread still drops
// to what run keeps, and traffic and the stop work.
func TestPrivilegesContainer(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	name := l.Name + "-ct"
	want := keptFor(t, "run", "")
	container := caps.Set(1<<caps.NetAdmin | 1<<caps.NetRaw | 1<<caps.BPF | 1<<caps.PerfMon | 1<<caps.IPCLock)
	list := "-all"
	for _, c := range container.Caps() {
		list += ",+" + strings.ToLower(strings.TrimPrefix(c.Name, "CAP_"))
	}
	cmd, stderr := startWith(t, "run", "setpriv", "--bounding-set="+list, "--inh-caps=-all", "--no-new-privs",
		binary, "run", "--iface", ep.Iface, "--pipeline", "reflect", "--instance", name, "--stats", "0")
	checkDroppedBounding(t, cmd.Process.Pid, want, container)
	sendFrames(t, l, 500, 100, 1)
	readStatus(t, name)
	stopAndCheck(t, cmd, stderr, name, ep.Iface)
}

// TestPrivilegesEcho runs `netchan echo`: dropped threads, pings answered by the stack, TCP
// echo, and a clean stop.
func TestPrivilegesEcho(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 2})
	ep := l.Netchan[0]
	name := "echo" + l.Name
	want := keptFor(t, "echo", "")
	cmd, stderr := startCmd(t, "echo", "--iface", ep.Iface, "--addr", ep.Addr.String(), "--instance", name, "--stats", "0")
	checkDropped(t, cmd.Process.Pid, want)
	checkPrivilegesSection(t, name, want)
	out, err := exec.Command("ip", "netns", "exec", ep.Peer.NS, "ping", "-c", "3", "-i", "0.2", "-W", "2", ep.Addr.Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	line, err := exec.Command("ip", "netns", "exec", ep.Peer.NS, "bash", "-c",
		"exec 3<>/dev/tcp/"+ep.Addr.Addr().String()+"/7 && echo hello >&3 && read -t 5 line <&3 && echo \"$line\"").Output()
	if err != nil || string(line) != "hello\n" {
		t.Fatalf("TCP echo: %q, %v", line, err)
	}
	checkDropped(t, cmd.Process.Pid, want)
	stopAndCheck(t, cmd, stderr, name, ep.Iface)
}

// TestPrivilegesNAT runs `netchan nat` with its XDP fast path: dropped threads, a ping and a
// UDP flow through it, the flow's later packets on the fast path (installed by the shards
// after the drop: map updates), and a clean stop that detaches both programs.
func TestPrivilegesNAT(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 1})
	in, outside := l.Netchan[0], l.Netchan[1]
	name := "natp" + l.Name
	want := keptFor(t, "nat", "")
	cmd, stderr := startCmd(t, "nat", "--inside", in.Iface, "--inside-addr", in.Addr.String(), "--outside", outside.Iface,
		"--outside-addr", outside.Addr.String(), "--instance", name, "--stats", "0")
	checkDropped(t, cmd.Process.Pid, want)
	checkPrivilegesSection(t, name, want)
	if out, err := exec.Command("ip", "netns", "exec", in.Peer.NS, "ping", "-c", "3", "-i", "0.2", "-W", "2", outside.Peer.Addr.Addr().String()).CombinedOutput(); err != nil {
		t.Fatalf("ping through the NAT: %v\n%s", err, out)
	}
	script := "exec 3<>/dev/udp/" + outside.Peer.Addr.Addr().String() + "/9; for i in 1 2 3 4 5 6 7 8 9 10; do echo x >&3; sleep 0.05; done; true"
	if out, err := exec.Command("ip", "netns", "exec", in.Peer.NS, "bash", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("udp through the NAT: %v\n%s", err, out)
	}
	var st struct {
		NAT struct {
			Stats struct {
				Fast      uint64 `json:"fast_packets_translated"`
				FastFlows int64  `json:"fast_flows_active"`
			} `json:"stats"`
		} `json:"nat"`
	}
	if raw := statusInto(t, name, &st); st.NAT.Stats.Fast < 2 || st.NAT.Stats.FastFlows != 1 {
		t.Fatalf("want the UDP flow on the fast path, installed after the drop:\n%s", raw)
	}
	checkDropped(t, cmd.Process.Pid, want)
	stopAndCheck(t, cmd, stderr, name, in.Iface, outside.Iface)
}

// reservedPort reads this namespace's ip_local_reserved_ports and says whether it lists port.
func reservedPort(t *testing.T, port int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		if r == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil {
			t.Fatalf("ip_local_reserved_ports: %q", b)
		}
		if l <= port && port <= h {
			return true
		}
	}
	return false
}

// TestPrivilegesNetchannel runs `netchan netchannel --echo`: dropped threads (the channel was
// opened before: its port reserved), datagrams echoed, and at SIGTERM the channel closes and
// releases its reserved port, a write to ip_local_reserved_ports made after the drop.
func TestPrivilegesNetchannel(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	labtest.KernelAddr(t, ep.Iface, ep.Addr)
	const port = 9999
	if reservedPort(t, port) {
		t.Fatalf("port %d is reserved already: cannot see netchannel release it", port)
	}
	name := "ncp-" + l.Name
	want := keptFor(t, "netchannel", "")
	spec := fmt.Sprintf("udp:%v:%d", ep.Addr.Addr(), port)
	cmd, stderr := startCmd(t, "netchannel", "--iface", ep.Iface, "--instance", name, "--echo", spec, "--stats", "0")
	checkDropped(t, cmd.Process.Pid, want)
	checkPrivilegesSection(t, name, want)
	if !reservedPort(t, port) {
		t.Fatalf("port %d is not in ip_local_reserved_ports while the channel is open", port)
	}
	cfg := sendConfig(l, 1000, 1)
	cfg.DstPort = port
	if r := labSend(t, ep.Peer.NS, cfg); r.Sent != 1000 || r.Received != 1000 || r.Mismatched != 0 {
		t.Fatalf("to the channel: sent %d, echoed %d, mismatched %d", r.Sent, r.Received, r.Mismatched)
	}
	stopAndCheck(t, cmd, stderr, name, ep.Iface)
	if reservedPort(t, port) {
		t.Errorf("port %d is still reserved after the stop: the channel's close could not write ip_local_reserved_ports with %s\n%s", port, want, stderr)
	}
}

// sendConfig is sendFrames's traffic (count frames of 100 bytes to UDP port 9 of the lab's
// first endpoint), for a caller that wants another port or expects the frames not to return.
func sendConfig(l *lab.Lab, count uint64, runID uint32) trafficgen.Config {
	ep := l.Netchan[0]
	return trafficgen.Config{Iface: ep.Peer.Iface, Queue: 0, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
		SrcPort: 20000, DstPort: 9, Flows: 4, Size: 100, Count: count, Rate: 20000, RunID: runID, Verify: true, Wait: 2 * time.Second}
}
