package doctor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

// helperArg makes the test binary act as the doctor's offload helper (what `netchan _helper
// offloads` is in the real binary): the tests start it in a lab namespace with `ip netns exec`.
const helperArg = "doctor-offloads-helper"

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == helperArg {
		if err := WriteOffloads(os.Stdout, os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	labtest.SweepStale()
	os.Exit(m.Run())
}

func testHelper(t *testing.T) []string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, helperArg}
}

// offloadFindings runs the interface checks on iface and returns its offload findings.
func offloadFindings(t *testing.T, iface string, helper []string) []Finding {
	t.Helper()
	var out []Finding
	for _, f := range checkInterface(context.Background(), iface, nil, nil, helper) {
		if f.Check == "offload" {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no offload finding for %s", iface)
	}
	return out
}

// TestPeerInNamespace: the peer of a lab veth is in the lab's namespace; the doctor reads its
// offloads through the helper run there (no ethtool binary), and says what to turn off.
func TestPeerInNamespace(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	fs := offloadFindings(t, ep.Iface, testHelper(t))
	if len(fs) != 1 || fs[0].Severity != OK || !strings.Contains(fs[0].What, ep.Peer.Iface) || !strings.Contains(fs[0].What, ep.Peer.NS) {
		t.Fatalf("fresh lab (offloads off at the peer): %+v", fs)
	}

	// The test may use the ethtool binary to turn an offload on.
	if out, err := l.Command(context.Background(), ep.Peer.NS, "ethtool", "-K", ep.Peer.Iface, "tx", "on").CombinedOutput(); err != nil {
		t.Fatalf("ethtool -K tx on (the test needs ethtool): %v %s", err, out)
	}
	fs = offloadFindings(t, ep.Iface, testHelper(t))
	want := fmt.Sprintf("ip netns exec %s ethtool -K %s tx off", ep.Peer.NS, ep.Peer.Iface)
	if len(fs) != 1 || fs[0].Severity != Warn || fs[0].Fix != want || !strings.Contains(fs[0].What, "tx-checksumming is on") {
		t.Errorf("tx on at the peer: %+v, want one warning with fix %q", fs, want)
	}

	// A helper that fails is a warning that says how to check by hand.
	fs = offloadFindings(t, ep.Iface, []string{"false"})
	if len(fs) != 1 || fs[0].Severity != Warn || !strings.Contains(fs[0].What, "cannot read the offloads") || !strings.Contains(fs[0].Fix, "ethtool -k") {
		t.Errorf("failing helper: %+v", fs)
	}
}

// TestPeerHere: a veth whose peer is in this namespace is read directly, without a helper.
func TestPeerHere(t *testing.T) {
	labtest.RequireRoot(t)
	a, b := "ncdoc"+labtest.UniqueName(t)[:4], "ncdop"+labtest.UniqueName(t)[:4]
	la := netlink.NewLinkAttrs()
	la.Name = a
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: b}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() })
	// A new veth has transmit checksum offload, TSO and GSO on.
	fs := offloadFindings(t, a, nil)
	var words []string
	for _, f := range fs {
		if f.Severity == Warn {
			words = append(words, f.Fix)
		}
	}
	if want := []string{"ethtool -K " + b + " tx off", "ethtool -K " + b + " tso off", "ethtool -K " + b + " gso off"}; strings.Join(words, "|") != strings.Join(want, "|") {
		t.Errorf("fixes %q, want %q", words, want)
	}
}

// TestRSSOnVeth: veth has no RSS; the doctor says so and names the owner function that runs.
func TestRSSOnVeth(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 2})
	ep := l.Netchan[0]
	var got []Finding
	for _, f := range checkInterface(context.Background(), ep.Iface, nil, nil, testHelper(t)) {
		if f.Check == "rss" {
			got = append(got, f)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0].What, "RSS unavailable") || !strings.Contains(got[0].What, "veth") ||
		!strings.Contains(got[0].What, "software hash") {
		t.Fatalf("rss findings on a veth: %+v; want one saying RSS is unavailable on veth and the software hash runs", got)
	}
	t.Logf("%s: %s", got[0].Severity, got[0].What)
}
