package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// TestNetchannelCommand runs `netchan netchannel --echo` on the kernel's own address of a lab
// interface: 1000 datagrams sent to the spec come back turned around, datagrams to another port
// stay with the kernel, and status shows the channel's figures exactly.
func TestNetchannelCommand(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	labtest.KernelAddr(t, ep.Iface, ep.Addr)
	name := "nc-" + l.Name
	spec := fmt.Sprintf("udp:%v:9999", ep.Addr.Addr())
	startCmd(t, "netchannel", "--iface", ep.Iface, "--instance", name, "--echo", spec, "--stats", "0")
	send := func(port uint16, runID uint32) trafficgen.Result {
		cfg := trafficgen.Config{Iface: ep.Peer.Iface, DstMAC: ep.MAC, Src: ep.Peer.Addr.Addr(), Dst: ep.Addr.Addr(),
			SrcPort: 20000, DstPort: port, Flows: 4, Count: 1000, Rate: 20000, RunID: runID, Verify: true, Wait: 2 * time.Second}
		return labSend(t, ep.Peer.NS, cfg)
	}
	if r := send(9999, 1); r.Sent != 1000 || r.Received != 1000 || r.Mismatched != 0 {
		t.Fatalf("to the spec: sent %d, echoed %d, mismatched %d", r.Sent, r.Received, r.Mismatched)
	}
	if r := send(9998, 2); r.Received != 0 {
		t.Fatalf("to another port: %d echoed, want 0 (the kernel's)", r.Received)
	}
	raw, err := exec.Command(binary, "status", "--instance", name, "--section", "netchannels").Output()
	if err != nil {
		t.Fatalf("status --section netchannels: %v %s", err, stderrOf(err))
	}
	var ns netchannelStatus
	if err := json.Unmarshal(raw, &ns); err != nil {
		t.Fatalf("netchannels section: %v: %s", err, raw)
	}
	if len(ns.Channels) != 1 {
		t.Fatalf("netchannels section: %+v", ns)
	}
	c := ns.Channels[0]
	if c.Spec != spec || c.Received != 1000 || c.Sent != 1000 || len(c.Drops) != 0 || c.Held != 0 {
		t.Errorf("channel %+v: want %s, 1000 received and sent, no drops, none held", c, spec)
	}
	text, err := exec.Command(binary, "status", "--instance", name).Output()
	if err != nil {
		t.Fatalf("status: %v %s", err, stderrOf(err))
	}
	if out := string(text); !strings.Contains(out, "netchannels:") || !strings.Contains(out, spec) {
		t.Errorf("status does not show the channel:\n%s", out)
	}
}
