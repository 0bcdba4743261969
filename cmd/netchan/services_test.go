package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"netchan/runtime/lab"
	"netchan/runtime/lab/labtest"
)

// TestEchoCommand runs `netchan echo` on a lab interface: the peer's kernel pings netchan's
// address (ARP and ICMP answered by netchan, whose interface has no kernel address), and
// `netchan status` shows the stack section.
func TestEchoCommand(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 2})
	ep := l.Netchan[0]
	name := "echo" + l.Name
	startCmd(t, "echo", "--iface", ep.Iface, "--addr", ep.Addr.String(), "--instance", name, "--stats", "0")
	out, err := exec.Command("ip", "netns", "exec", ep.Peer.NS, "ping", "-c", "3", "-i", "0.2", "-W", "2", ep.Addr.Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	raw, err := exec.Command(binary, "status", "--instance", name, "--json").Output()
	if err != nil {
		t.Fatalf("status: %v %s", err, stderrOf(err))
	}
	var st struct {
		Stack struct {
			Stats struct {
				EchoReplies   uint64 `json:"icmp_echo_replies"`
				ARPRepliesOut uint64 `json:"arp_replies_out"`
			} `json:"stats"`
		} `json:"stack"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("status: %v\n%s", err, raw)
	}
	if st.Stack.Stats.EchoReplies < 3 || st.Stack.Stats.ARPRepliesOut < 1 {
		t.Fatalf("stack section: %s", raw)
	}
}

// TestNATCommand runs `netchan nat` between the nat lab's client and server namespaces: the
// client pings the server through it and status lists the ICMP mapping.
func TestNATCommand(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 1})
	in, outside := l.Netchan[0], l.Netchan[1]
	name := "nat" + l.Name
	startCmd(t, "nat", "--inside", in.Iface, "--inside-addr", in.Addr.String(), "--outside", outside.Iface,
		"--outside-addr", outside.Addr.String(), "--instance", name, "--stats", "0")
	out, err := exec.Command("ip", "netns", "exec", in.Peer.NS, "ping", "-c", "3", "-i", "0.2", "-W", "2", outside.Peer.Addr.Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping through the NAT: %v\n%s", err, out)
	}
	raw, err := exec.Command(binary, "status", "--instance", name, "--json").Output()
	if err != nil {
		t.Fatalf("status: %v %s", err, stderrOf(err))
	}
	var st struct {
		NAT struct {
			Stats struct {
				Translated uint64 `json:"packets_translated"`
			} `json:"stats"`
			Mappings []struct{ Proto, Inside, External string } `json:"mappings"`
		} `json:"nat"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("status: %v\n%s", err, raw)
	}
	if st.NAT.Stats.Translated < 6 || len(st.NAT.Mappings) != 1 || st.NAT.Mappings[0].Proto != "icmp" ||
		!strings.HasPrefix(st.NAT.Mappings[0].External, outside.Addr.Addr().String()+":") {
		t.Fatalf("nat section: %s", raw)
	}
	bad, err := exec.Command(binary, "nat", "--inside", in.Iface, "--inside-addr", "bogus", "--outside", outside.Iface, "--outside-addr", outside.Addr.String(), "--instance", name+"x").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), "--inside-addr") {
		t.Fatalf("a bad --inside-addr: %v %s", err, bad)
	}
}
