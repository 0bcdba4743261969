package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

var binary string

func TestMain(m *testing.M) {
	startChildIfAsked()
	labtest.SweepStale()
	sweepSockets()
	dir, err := os.MkdirTemp("", "netchan-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "netchan")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	sweepSockets() // what the SIGKILL tests left
	os.RemoveAll(dir)
	os.Exit(code)
}

func netchanCmd(t *testing.T, ctx context.Context, args ...string) *exec.Cmd {
	t.Helper()
	return exec.CommandContext(ctx, binary, args...)
}

// TestDemoJSON runs the embedded default and checks that every shard moved traffic both ways.
func TestDemoJSON(t *testing.T) {
	labtest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := netchanCmd(t, ctx, "demo", "--json", "--duration", "2s", "--instance", labtest.UniqueName(t)).Output()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var final struct {
		Final  bool `json:"final"`
		Shards []struct {
			Shard     int    `json:"shard"`
			RxPackets uint64 `json:"rx_packets"`
			TxPackets uint64 `json:"tx_packets"`
		} `json:"shards"`
		Senders []struct {
			Result struct{ Sent, Received, Mismatched uint64 } `json:"result"`
		} `json:"senders"`
		Stack struct {
			EchoReplies uint64 `json:"icmp_echo_replies"`
		} `json:"stack"`
		Problems []string `json:"problems"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &final); err != nil || !final.Final {
		t.Fatalf("last line is not the final JSON record: %q (%v)", lines[len(lines)-1], err)
	}
	if len(lines) < 2 {
		t.Errorf("no live figures before the final record")
	}
	if len(final.Shards) != 2 {
		t.Fatalf("want 2 shards, got %d", len(final.Shards))
	}
	for _, s := range final.Shards {
		if s.RxPackets == 0 || s.TxPackets == 0 {
			t.Errorf("shard %d: rx %d tx %d", s.Shard, s.RxPackets, s.TxPackets)
		}
	}
	for i, s := range final.Senders {
		if s.Result.Received == 0 || s.Result.Mismatched != 0 {
			t.Errorf("sender %d: %+v", i, s.Result)
		}
	}
	if final.Stack.EchoReplies < 3 {
		t.Errorf("the stack answered %d pings, want 3", final.Stack.EchoReplies)
	}
	if len(final.Problems) != 0 {
		t.Errorf("problems: %v", final.Problems)
	}
}

func xdpAttached(t *testing.T, iface string) bool {
	t.Helper()
	link, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	x := link.Attrs().Xdp
	return x != nil && (x.Attached || x.ProgId != 0)
}

// startRun starts `netchan run` and waits for its ready line.
func startRun(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	return startCmd(t, "run", args...)
}

// startCmd starts a data-plane command and waits for its ready line.
func startCmd(t *testing.T, command string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	return startWith(t, command, append([]string{binary, command}, args...)...)
}

// TestSIGKILLLeavesNoProgram kills a running netchan and finds no XDP program left behind.
func TestSIGKILLLeavesNoProgram(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 2})
	iface := l.Netchan[0].Iface
	for _, mode := range []string{"native", "generic"} {
		cmd, _ := startRun(t, "--iface", iface, "--pipeline", "drop", "--xdp-mode", mode, "--stats", "0", "--instance", l.Name)
		if !xdpAttached(t, iface) {
			t.Fatalf("%s: no XDP program attached while netchan runs", mode)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		deadline := time.Now().Add(5 * time.Second)
		for xdpAttached(t, iface) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: XDP program still attached 5s after SIGKILL", mode)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err == nil {
		t.Fatalf("%s %v succeeded; want an error", name, args)
	}
	return string(out)
}

// TestErrorsSayWhatToDo checks the control-plane errors a user meets first.
func TestErrorsSayWhatToDo(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	iface := l.Netchan[0].Iface
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err == nil {
			t.Fatalf("netchan %v succeeded; want an error", args)
		}
		return string(out)
	}
	cases := []struct {
		name string
		out  string
		want []string
	}{
		{"missing interface", run("run", "--iface", "nosuch0", "--stats", "0"), []string{"no such interface", "ip link"}},
		{"queue out of range", run("run", "--iface", iface, "--queues", "3", "--stats", "0"), []string{"queue out of range", "--queues"}},
		{"bad pipeline", run("run", "--iface", iface, "--pipeline", "nope"), []string{"reflect"}},
	}
	for _, c := range cases {
		for _, w := range c.want {
			if !strings.Contains(c.out, w) {
				t.Errorf("%s: output %q lacks %q", c.name, c.out, w)
			}
		}
	}
	// A second instance (under another name) on the same interface.
	startRun(t, "--iface", iface, "--pipeline", "drop", "--stats", "0", "--instance", l.Name+"-a")
	out := run("run", "--iface", iface, "--pipeline", "drop", "--stats", "0", "--instance", l.Name+"-b")
	if !strings.Contains(out, "already attached") || !strings.Contains(out, "xdp off") {
		t.Errorf("second instance: %q", out)
	}
	// Not root: no capabilities at all.
	out = runCmd(t, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", binary, "run", "--iface", iface)
	if !strings.Contains(out, "CAP_NET_ADMIN") || !strings.Contains(out, "root") {
		t.Errorf("unprivileged: %q", out)
	}
}
