package main

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/netchan/netchan/runtime/trafficgen"
)

const guideHeading = "### Write your first stage\n"

// guideSection returns the README's "Write your first stage" section, heading to the next
// heading of its level or above.
func guideSection(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, s, ok := strings.Cut(string(readme), "\n"+guideHeading)
	if !ok {
		t.Fatalf("README.md has no section %q", strings.TrimSpace(guideHeading))
	}
	for _, next := range []string{"\n### ", "\n## "} {
		if i := strings.Index(s, next); i >= 0 {
			s = s[:i]
		}
	}
	return s
}

// guideCode is the guide's first Go code block: the program it tells a user to save as main.go.
func guideCode(t *testing.T, section string) []byte {
	t.Helper()
	_, code, ok := strings.Cut(section, "\n```go\n")
	if !ok {
		t.Fatal("the README's guide has no ```go block")
	}
	code, _, ok = strings.Cut(code, "\n```\n")
	if !ok {
		t.Fatal("the README's guide's ```go block does not end")
	}
	return []byte(code + "\n")
}

// TestREADMEGuideIsMainGo: the program the README's guide shows is this example's main.go,
// byte for byte, so that what the guide teaches is what the tests here check.
func TestREADMEGuideIsMainGo(t *testing.T) {
	code := guideCode(t, guideSection(t))
	main, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(code, main) {
		return
	}
	cl, ml := strings.Split(string(code), "\n"), strings.Split(string(main), "\n")
	for i := 0; i < len(cl) || i < len(ml); i++ {
		var c, m string
		if i < len(cl) {
			c = cl[i]
		}
		if i < len(ml) {
			m = ml[i]
		}
		if c != m || i >= len(cl) || i >= len(ml) {
			t.Fatalf("README.md's guide and examples/firststage/main.go differ from line %d:\nREADME:  %q\nmain.go: %q\n"+
				"copy main.go into the guide's ```go block", i+1, c, m)
		}
	}
}

// The guide's commands, as its README section writes them, in the order a user runs them.
const (
	cmdModInit   = "go mod init example.com/pong"
	cmdWorkInit  = "go work init . /path/to/netchan"
	cmdBuild     = "go build"
	cmdBuildCLI  = "go build -o netchan github.com/netchan/netchan/cmd/netchan"
	cmdLabUp     = "sudo ./netchan lab up"
	cmdRun       = "sudo ./pong --iface ncn0 --port 9999"
	cmdSendPong  = "sudo ip netns exec nc-peer ./netchan lab send --iface ncp0 --dst-mac $(cat /sys/class/net/ncn0/address) --dport 9999 --count 1000 --verify"
	cmdSendOther = "sudo ip netns exec nc-peer ./netchan lab send --iface ncp0 --dst-mac $(cat /sys/class/net/ncn0/address) --dport 9998 --count 1000 --verify"
	cmdLabDown   = "sudo ./netchan lab down"
	// What the program prints, as the guide shows it.
	readyLine = "firststage: answering UDP to port 9999 on ncn0 (2 shards); Ctrl-C to stop"
	counters  = "shard 0: rx 1000 tx 1000 drops map[]\nshard 1: rx 0 tx 0 drops map[]\n"
)

// TestGuide follows the README's "Write your first stage" as a new user would, in a new module
// outside the repository: go mod init, go work init, main.go taken from the README's code
// block, go build (the program and netchan's command), a lab, the program run as root on the
// lab's netchan interface, traffic from the peer's namespace through `netchan lab send
// --verify`, SIGINT (Ctrl-C). The pongs must all come back intact, the datagrams to the
// unclaimed port must not, the program must print the counters the guide shows, exit 0 and
// leave no XDP program on the interface.
//
// The lab is the guide's (`netchan lab up`: a pair with 2 queues) under a name of the test's
// own, which labtest removes when the test ends; the guide's names (nc-peer, ncn0, ncp0) are
// replaced by that lab's.
func TestGuide(t *testing.T) {
	labtest.RequireRoot(t)
	section := guideSection(t)
	for _, c := range []string{cmdModInit, cmdWorkInit, cmdBuild, cmdBuildCLI, cmdLabUp, cmdRun, cmdSendPong, cmdSendOther, cmdLabDown,
		readyLine, "```\n" + counters + "```"} {
		if !strings.Contains(section, c) {
			t.Fatalf("the README's guide no longer says %q: update the guide or this test, together", c)
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if gomod, err := os.ReadFile(filepath.Join(root, "go.mod")); err != nil || !strings.HasPrefix(string(gomod), "module github.com/netchan/netchan\n") {
		t.Fatalf("%s is not netchan's repository (%v)", root, err)
	}

	// 1. A module, outside the repository.
	dir := filepath.Join(t.TempDir(), "pong")
	if strings.HasPrefix(dir, root+string(filepath.Separator)) {
		t.Fatalf("temporary directory %s is inside the repository %s", dir, root)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GOWORK=") && !strings.HasPrefix(e, "GOFLAGS=") {
			env = append(env, e)
		}
	}
	env = append(env, "GOTOOLCHAIN=local")
	shell := func(timeout time.Duration, command string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", command)
		cmd.Dir, cmd.Env = dir, env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s (in %s): %v\n%s%s", command, dir, err, out, stderr.Bytes())
		}
		return out
	}
	shell(time.Minute, cmdModInit)
	shell(time.Minute, strings.Replace(cmdWorkInit, "/path/to/netchan", root, 1))

	// 2. The program, from the README.
	if err := os.WriteFile(filepath.Join(dir, "main.go"), guideCode(t, section), 0o644); err != nil {
		t.Fatal(err)
	}

	// 3. Build.
	shell(5*time.Minute, cmdBuild)
	shell(5*time.Minute, cmdBuildCLI)

	// 4. The lab.
	l := labtest.New(t, lab.Config{})
	ep := l.Netchan[0]
	if ep.Iface != l.Name+"n0" || ep.Peer.Iface != l.Name+"p0" || ep.Peer.NS != l.Name+"-peer" || l.QueueCount != 2 {
		t.Fatalf("lab %s is %s, %s in %s with %d queues: the guide's names for lab nc (ncn0, ncp0 in nc-peer, 2 queues) no longer follow",
			l.Name, ep.Iface, ep.Peer.Iface, ep.Peer.NS, l.QueueCount)
	}
	ours := strings.NewReplacer("sudo ", "", "nc-peer", ep.Peer.NS, "ncn0", ep.Iface, "ncp0", ep.Peer.Iface)

	// 5. Run the program, as root (this test is).
	argv := strings.Fields(ours.Replace(cmdRun))
	prog := exec.Command(filepath.Join(dir, argv[0]), argv[1:]...)
	prog.Dir = dir
	var stderr bytes.Buffer
	prog.Stderr = &stderr
	lines := make(chan string, 16)
	stdout, err := prog.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	exited, stopped := make(chan error, 1), false
	// kill ends the program if it still runs and returns what it wrote on stderr.
	kill := func() string {
		if !stopped {
			prog.Process.Kill()
			for range lines {
			}
			<-exited
			stopped = true
		}
		return stderr.String()
	}
	t.Cleanup(func() { kill() })
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- prog.Wait() // after stdout is read to its end, as StdoutPipe asks
	}()
	select {
	case l, ok := <-lines:
		if want := ours.Replace(readyLine); !ok || l != want {
			t.Fatalf("the program's first line: %q, want %q; stderr:\n%s", l, want, kill())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the program did not say it was running within 30s; stderr:\n%s", kill())
	}

	// 6. Traffic from the peer.
	for _, s := range []struct {
		command  string
		received uint64
	}{{cmdSendPong, 1000}, {cmdSendOther, 0}} {
		out := shell(time.Minute, ours.Replace(s.command))
		r, err := trafficgen.Decode(out)
		if err != nil {
			t.Fatalf("%s: %v\n%s", s.command, err, out)
		}
		if r.Sent != 1000 || r.Received != s.received || r.Mismatched != 0 || r.Duplicates != 0 {
			t.Fatalf("%s: sent %d, got back %d intact, %d mismatched, %d duplicates; want 1000 sent and %d back intact",
				s.command, r.Sent, r.Received, r.Mismatched, r.Duplicates, s.received)
		}
	}

	// 7. Ctrl-C, and the counters.
	if err := prog.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var printed strings.Builder
	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				done = true
				break
			}
			printed.WriteString(l + "\n")
		case <-timeout:
			t.Fatalf("the program did not exit within 30s of SIGINT; it printed:\n%s\nstderr:\n%s", printed.String(), kill())
		}
	}
	err = <-exited
	stopped = true
	if err != nil {
		t.Fatalf("the program exited with %v after SIGINT, want status 0; stderr:\n%s", err, stderr.String())
	}
	if printed.String() != counters {
		t.Fatalf("after SIGINT the program printed:\n%s\nwant the guide's counters:\n%s", printed.String(), counters)
	}
	if link, err := netlink.LinkByName(ep.Iface); err != nil {
		t.Fatal(err)
	} else if x := link.Attrs().Xdp; x != nil && (x.Attached || x.ProgId != 0) {
		t.Fatalf("%s still has an XDP program (id %d) after the program exited", ep.Iface, x.ProgId)
	}
}
