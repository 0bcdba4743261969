package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// TestTraceNATHandoff runs `netchan nat --xdp-fastpath=false` on a nat lab with 2 queues and
// sends one UDP datagram from the client on the queue whose shard does not own the client's
// flows (the NAT's owner function: the inside source's hash, as nat/lab_test.go's ownerOf):
// `netchan trace -n 1` shows where it arrived, the hand-off to the owner shard, the NAT
// stage's verdict there, and nothing else.
func TestTraceNATHandoff(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 2})
	in, outside := l.Netchan[0], l.Netchan[1]
	cli, srv := in.Peer, outside.Peer
	name := "trace" + l.Name
	startCmd(t, "nat", "--inside", in.Iface, "--inside-addr", in.Addr.String(), "--outside", outside.Iface,
		"--outside-addr", outside.Addr.String(), "--xdp-fastpath=false", "--instance", name, "--stats", "0")
	f := make([]byte, 64)
	f[12], f[13], f[14], f[23] = 0x08, 0x00, 0x45, 17
	copy(f[26:30], cli.Addr.Addr().AsSlice())
	copy(f[30:34], srv.Addr.Addr().AsSlice())
	owner := pipelines.OwnerBySource(f, 2)
	if owner < 0 {
		t.Fatalf("the NAT's owner function gives no shard for %s", cli.Addr.Addr())
	}
	queue := 1 - owner // shard i owns queue i
	cmd, stdout, stderr := startTapClient(t, "trace", "--instance", name, "-n", "1", "--filter", "udp and dst port 9999")
	// Traffic the filter does not take, first: the trace must skip it.
	send := func(dport uint16, q int, run uint32) {
		cfg := trafficgen.Config{Iface: cli.Iface, Queue: q, DstMAC: in.MAC, Src: cli.Addr.Addr(), Dst: srv.Addr.Addr(),
			SrcPort: 5000, DstPort: dport, Size: 80, Count: 1, RunID: run, Wait: 100 * time.Millisecond}
		if r := labSend(t, cli.NS, cfg); r.Sent != 1 {
			t.Fatalf("sender: %+v", r)
		}
	}
	send(9998, queue, 51)
	send(9999, queue, 52)
	waitExit(t, cmd, stderr, 20*time.Second)
	out := stdout.String()
	t.Logf("netchan trace (client %s owned by shard %d, sent on queue %d):\n%s", cli.Addr.Addr(), owner, queue, out)
	want := []string{
		fmt.Sprintf(`^packet 1: UDP %s:5000 → %s:9999, 80 bytes`, regexp.QuoteMeta(cli.Addr.Addr().String()), regexp.QuoteMeta(srv.Addr.Addr().String())),
		fmt.Sprintf(`(?m)^  shard %d  received on queue %d: the owner function gives shard %d → hand-off to shard %d \(before the pipeline\)$`, queue, queue, owner, owner),
		fmt.Sprintf(`(?m)^  shard %d  takes the hand-off`, owner),
		fmt.Sprintf(`(?m)^  shard %d  nat +(transmit on %s|to the local stack|consumed|drop \([a-z-]+\)) \(stage\)$`, owner, outside.Iface),
	}
	for _, w := range want {
		if !regexp.MustCompile(w).MatchString(out) {
			t.Errorf("the trace lacks %q", w)
		}
	}
	if strings.Contains(out, "packet 2") || strings.Contains(out, ":9998") {
		t.Errorf("the trace followed more than the one packet it was asked for")
	}
	// The path ends in a decision: the NAT stage's (transmit, consumed or a drop), or the
	// local stack's after it.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^  shard \d  \S+ +(transmit on|consumed|drop \()`).MatchString(last) {
		t.Errorf("the path does not end with a decision: %q", last)
	}
}
