package ethtool

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestPatterns: each word stands for the kernel features ethtool's own table gives it.
func TestPatterns(t *testing.T) {
	for _, c := range []struct {
		word  string
		in    []string
		notIn []string
	}{
		{"tx", []string{"tx-checksum-ipv4", "tx-checksum-ip-generic", "tx-checksum-ipv6", "tx-checksum-sctp", "tx-checksum-fcoe-crc"}, []string{"rx-checksum", "tx-generic-segmentation"}},
		{"tso", []string{"tx-tcp-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation", "tx-tcp-accecn-segmentation"}, []string{"tx-udp-segmentation", "tx-generic-segmentation"}},
		{"gso", []string{"tx-generic-segmentation"}, []string{"tx-tcp-segmentation"}},
		{"gro", []string{"rx-gro"}, []string{"rx-gro-hw", "rx-gro-list", "rx-udp-gro-forwarding"}},
	} {
		o, err := lookup(c.word)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range c.in {
			if !o.matches(name) {
				t.Errorf("%s does not cover %s", c.word, name)
			}
		}
		for _, name := range c.notIn {
			if o.matches(name) {
				t.Errorf("%s covers %s", c.word, name)
			}
		}
	}
	if _, err := lookup("bogus"); !errors.Is(err, ErrUnknownWord) {
		t.Errorf("lookup(bogus) = %v", err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates a veth pair and a namespace: run it as root")
	}
}

// TestVethMove sets offloads on both ends of a veth pair, compares them with what the ethtool
// binary (installed for tests by .ci/run) sees, then moves one end into a namespace and checks
// that it kept them: the lab relies on that to configure its namespaces' ends without running
// anything inside them.
func TestVethMove(t *testing.T) {
	requireRoot(t)
	const a, b, ns = "ncetha0", "ncethb0", "ncethtest"
	netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}})
	exec.Command("ip", "netns", "del", ns).Run()
	la := netlink.NewLinkAttrs()
	la.Name = a
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: b}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}}) })
	want := map[string]bool{"tx": false, "tso": false, "gso": false, "gro": true}
	for _, dev := range []string{a, b} {
		if err := Set(dev, want); err != nil {
			t.Fatal(err)
		}
	}
	check := func(where string, got map[string]bool) {
		t.Helper()
		for w, on := range want {
			o, _ := lookup(w)
			if v, ok := got[o.Name]; !ok || v != on {
				t.Errorf("%s: %s = %v (present %v), want %v", where, o.Name, v, ok, on)
			}
		}
	}
	got, err := Get(a)
	if err != nil {
		t.Fatal(err)
	}
	check(a, got)
	if out, err := exec.Command("ethtool", "-k", a).Output(); err == nil {
		check("ethtool -k "+a, parseK(string(out)))
	} else {
		t.Logf("ethtool -k %s: %v (comparison skipped)", a, err)
	}

	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := netlink.LinkByName(b)
	if err == nil {
		err = netlink.LinkSetNsFd(link, int(h))
	}
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "ethtool", "-k", b).CombinedOutput()
	if err != nil {
		t.Fatalf("ethtool -k %s in %s (the test needs ethtool): %v %s", b, ns, err, out)
	}
	check(b+" after the move to "+ns, parseK(string(out)))
	if _, err := Get(b); err == nil {
		t.Errorf("Get(%s) found the device after it left this namespace", b)
	}
}

func parseK(out string) map[string]bool {
	m := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		name, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok {
			val = strings.TrimSpace(val)
			m[name] = val == "on" || strings.HasPrefix(val, "on ")
		}
	}
	return m
}
