package doctor

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan/runtime/lab/labtest"
)

// TestBusyPollFindings decides on recorded inputs: veth and devices without a device of their
// own cannot busy poll; a NIC wants napi_defer_hard_irqs and gro_flush_timeout set, and gets
// the commands; what stands in the way is a warning only when a run would busy poll.
func TestBusyPollFindings(t *testing.T) {
	for _, c := range []struct {
		name  string
		in    busyPollInput
		asked bool
		sev   Severity
		what  []string
		fix   string
	}{
		{"veth", busyPollInput{iface: "nctab0", kind: "veth", deferIRQs: "0", groFlush: "0"}, false, Info,
			[]string{"busy polling unavailable: nctab0 has no NAPI id to poll (veth"}, ""},
		{"veth asked", busyPollInput{iface: "nctab0", kind: "veth", deferIRQs: "0", groFlush: "0"}, true, Warn,
			[]string{"busy polling unavailable", "usual loop"}, "leave busy polling off on veth"},
		{"bridge", busyPollInput{iface: "br0", kind: "bridge"}, false, Info,
			[]string{"probably unavailable", "bridge device without a device of its own"}, ""},
		{"nic defaults", busyPollInput{iface: "eth1", kind: "device", driver: "ice", deferIRQs: "0", groFlush: "0"}, false, Info,
			[]string{"eth1 (driver ice): napi_defer_hard_irqs 0, gro_flush_timeout 0 ns", "race"},
			"echo 2 > /sys/class/net/eth1/napi_defer_hard_irqs; echo 200000 > /sys/class/net/eth1/gro_flush_timeout"},
		{"nic defaults asked", busyPollInput{iface: "eth1", kind: "device", driver: "mlx5_core", deferIRQs: "0", groFlush: "20000"}, true, Warn,
			[]string{"napi_defer_hard_irqs 0, gro_flush_timeout 20000 ns"}, "echo 2 > /sys/class/net/eth1/napi_defer_hard_irqs"},
		{"nic set", busyPollInput{iface: "eth1", kind: "device", driver: "ice", deferIRQs: "2", groFlush: "200000"}, true, OK,
			[]string{"napi_defer_hard_irqs 2, gro_flush_timeout 200000 ns", "BusyPollRxPackets", "native XDP"}, ""},
		{"old kernel", busyPollInput{iface: "eth1", kind: "device", driver: "ixgbe", groFlush: "0"}, false, Info,
			[]string{"cannot read napi_defer_hard_irqs"}, ""},
	} {
		f := checkBusyPoll(c.in, c.asked)
		if f.Check != "busy-poll" || f.Subject != c.in.iface || f.Severity != c.sev || !strings.HasPrefix(f.Fix, c.fix) || (c.fix == "" && f.Fix != "") {
			t.Errorf("%s: %+v; want severity %v, fix %q", c.name, f, c.sev, c.fix)
		}
		for _, w := range c.what {
			if !strings.Contains(f.What, w) {
				t.Errorf("%s: %q lacks %q", c.name, f.What, w)
			}
		}
	}
}

// TestBusyPollVeth: on a real veth pair the doctor reads no device and says busy polling is
// unavailable; a warning when a run would busy poll.
func TestBusyPollVeth(t *testing.T) {
	labtest.RequireRoot(t)
	a, b := "ncbpa"+labtest.UniqueName(t)[:4], "ncbpb"+labtest.UniqueName(t)[:4]
	la := netlink.NewLinkAttrs()
	la.Name = a
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: b}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() })
	in := readBusyPoll(a, "veth")
	if in.driver != "" || in.deferIRQs != "0" || in.groFlush != "0" {
		t.Errorf("read %+v; want no device, napi_defer_hard_irqs and gro_flush_timeout 0", in)
	}
	for _, asked := range []bool{false, true} {
		var got []Finding
		for _, f := range Check(context.Background(), Options{Ifaces: []string{a}, BusyPoll: asked, Helper: []string{"false"}}) {
			if f.Check == "busy-poll" {
				got = append(got, f)
			}
		}
		want := Info
		if asked {
			want = Warn
		}
		if len(got) != 1 || got[0].Severity != want || got[0].Subject != a || !strings.Contains(got[0].What, "busy polling unavailable: "+a+" has no NAPI id to poll (veth") {
			t.Errorf("busy polling asked %v: %+v; want one %v finding saying it is unavailable on veth", asked, got, want)
		}
	}
}
