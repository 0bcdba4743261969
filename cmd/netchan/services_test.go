package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
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
	var st struct {
		Stack struct {
			Stats struct {
				EchoReplies   uint64 `json:"icmp_echo_replies"`
				ARPRepliesOut uint64 `json:"arp_replies_out"`
			} `json:"stats"`
		} `json:"stack"`
	}
	raw := statusInto(t, name, &st)
	if st.Stack.Stats.EchoReplies < 3 || st.Stack.Stats.ARPRepliesOut < 1 {
		t.Fatalf("stack section: %s", raw)
	}

	// A TCP connection from the peer to the echo port, held open while status lists it.
	ours := ep.Addr.Addr().String()
	hold := exec.Command("ip", "netns", "exec", ep.Peer.NS, "bash", "-c",
		"exec 3<>/dev/tcp/"+ours+"/7 && echo hello >&3 && read -t 5 line <&3 && echo \"$line\" && sleep 30")
	stdout, _ := hold.StdoutPipe()
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Process.Kill(); hold.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "hello\n" {
		t.Fatalf("echo over TCP: got %q", line)
	}
	var tst struct {
		TCP struct {
			Conns []struct {
				Local, Remote, State string
				SRTT                 int64  `json:"srtt_ns"`
				MSS                  uint32 `json:"mss"`
				Cwnd                 uint32 `json:"cwnd"`
			} `json:"conns"`
		} `json:"tcp"`
	}
	raw = statusInto(t, name, &tst)
	found := false
	for _, c := range tst.TCP.Conns {
		if c.Local == ours+":7" && strings.HasPrefix(c.Remote, ep.Peer.Addr.Addr().String()+":") {
			found = true
			// A veth round trip takes tens of µs; SRTT must not round to nothing (it used to,
			// from 1 ms timestamp echoes of 0 ticks).
			if c.State != "ESTABLISHED" || c.SRTT < 1000 || c.SRTT > 100e6 || c.MSS == 0 || c.Cwnd == 0 {
				t.Errorf("tcp section, connection %+v: want ESTABLISHED with srtt (1 µs to 100 ms), mss and cwnd", c)
			}
		}
	}
	if !found {
		t.Fatalf("tcp section does not list the peer's connection to port 7: %s", raw)
	}
	text, err := exec.Command(binary, "status", "--instance", name).Output()
	if err != nil {
		t.Fatalf("status: %v %s", err, stderrOf(err))
	}
	if !strings.Contains(string(text), "tcp connections:") || !strings.Contains(string(text), "ESTABLISHED") {
		t.Fatalf("text status has no TCP table:\n%s", text)
	}
	t.Logf("status:\n%s", text)
}

// TestNATCommand runs `netchan nat` between the nat lab's client and server namespaces: the
// client pings the server through it and status lists the ICMP mapping.
func TestNATCommand(t *testing.T) {
	in, outside, name := startNATCommand(t, "nat")
	out, err := exec.Command("ip", "netns", "exec", in.Peer.NS, "ping", "-c", "3", "-i", "0.2", "-W", "2", outside.Peer.Addr.Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping through the NAT: %v\n%s", err, out)
	}
	var st struct {
		NAT struct {
			Stats struct {
				Translated uint64 `json:"packets_translated"`
			} `json:"stats"`
			Mappings []struct{ Proto, Inside, External string } `json:"mappings"`
		} `json:"nat"`
	}
	raw := statusInto(t, name, &st)
	if st.NAT.Stats.Translated < 6 || len(st.NAT.Mappings) != 1 || st.NAT.Mappings[0].Proto != "icmp" ||
		!strings.HasPrefix(st.NAT.Mappings[0].External, outside.Addr.Addr().String()+":") {
		t.Fatalf("nat section: %s", raw)
	}
	bad, err := exec.Command(binary, "nat", "--inside", in.Iface, "--inside-addr", "bogus", "--outside", outside.Iface, "--outside-addr", outside.Addr.String(), "--instance", name+"x").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), "--inside-addr") {
		t.Fatalf("a bad --inside-addr: %v %s", err, bad)
	}
}

// TestNATCommandFastPath runs `netchan nat` with its default XDP fast path: a UDP flow's packets after the
// first are translated by the XDP program, and status shows it in the nat and xdp sections.
func TestNATCommandFastPath(t *testing.T) {
	in, outside, name := startNATCommand(t, "natx")
	// One socket, ten datagrams to a closed port: the server's port-unreachable errors make
	// some writes fail (a connected UDP socket reports them), the others are sent.
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
		XDP []struct {
			Fast uint64 `json:"fast"`
		} `json:"xdp"`
	}
	raw := statusInto(t, name, &st)
	if st.NAT.Stats.Fast < 2 || st.NAT.Stats.FastFlows != 1 || len(st.XDP) != 2 || st.XDP[0].Fast != st.NAT.Stats.Fast {
		t.Fatalf("want the UDP flow on the fast path (at least 2 packets, 1 flow, counted on the inside program):\n%s", raw)
	}
}

// startNATCommand builds a nat lab and runs `netchan nat` on it as instance prefix+lab name;
// it returns the inside and outside endpoints and the instance name.
func startNATCommand(t *testing.T, prefix string) (in, outside lab.Endpoint, name string) {
	t.Helper()
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutNAT, QueueCount: 1})
	in, outside = l.Netchan[0], l.Netchan[1]
	name = prefix + l.Name
	startCmd(t, "nat", "--inside", in.Iface, "--inside-addr", in.Addr.String(), "--outside", outside.Iface,
		"--outside-addr", outside.Addr.String(), "--instance", name, "--stats", "0")
	return in, outside, name
}

// statusInto decodes `netchan status --instance name --json` into v and returns the raw
// document (for failure messages).
func statusInto(t *testing.T, name string, v any) []byte {
	t.Helper()
	raw, err := exec.Command(binary, "status", "--instance", name, "--json").Output()
	if err != nil {
		t.Fatalf("status: %v %s", err, stderrOf(err))
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("status: %v\n%s", err, raw)
	}
	return raw
}

// TestNATSectionCapped: the nat status section lists at most maxStatusConns mappings and says
// how many it left out.
func TestNATSectionCapped(t *testing.T) {
	ms := make([]nat.Mapping, maxStatusConns+7)
	st := natSection(nat.Stats{}, ms)
	if len(st.Mappings) != maxStatusConns || st.Omitted != 7 {
		t.Fatalf("%d mappings, %d omitted; want %d and 7", len(st.Mappings), st.Omitted, maxStatusConns)
	}
	if st := natSection(nat.Stats{}, ms[:3]); len(st.Mappings) != 3 || st.Omitted != 0 {
		t.Fatalf("3 mappings: %d listed, %d omitted", len(st.Mappings), st.Omitted)
	}
}
