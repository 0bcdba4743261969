package nat_test

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/hostile"
	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/shards"
)

func init() { nschild.Register("hostile", hostile.SendMain) }

// TestLabNATMalformed sends hostile frames (internal/hostile) at the NAT from both sides, many
// times over: from the inside host towards the outside server through the NAT, and from the
// outside server to the NAT's outside address, with spoofed sources besides. The NAT stays up,
// leaves no frame undecided (each is dropped with a named reason, or translated and sent on),
// and translates a normal flow afterwards as before.
func TestLabNATMalformed(t *testing.T) {
	nl := startNAT(t, 1, nat.Config{})
	inside, outside := nl.l.Netchan[0], nl.l.Netchan[1]
	server := nl.srv.Addr.Addr()
	serve(t, nl.srv.NS, "udp-reporter", server.String()+":9000")
	ext := strings.TrimSpace(run(t, nl.cli.NS, "udp-send", "5000", server.String()+":9000"))
	if !strings.Contains(ext, outside.Addr.Addr().String()) {
		t.Fatalf("before: the server saw %s, want the NAT's outside address", ext)
	}

	fromInside := hostile.Frames(hostile.Target{SrcMAC: nl.cli.MAC, DstMAC: inside.MAC, Src: nl.cli.Addr.Addr(), Dst: server,
		Self: inside.Addr.Addr(), Port: 9000})
	fromOutside := hostile.Frames(hostile.Target{SrcMAC: nl.srv.MAC, DstMAC: outside.MAC, Src: server, Dst: outside.Addr.Addr(),
		Self: outside.Addr.Addr(), Port: 5000})
	// Spoofed sources, well formed otherwise: an inside address arriving from outside, the
	// NAT's own outside address, a loopback and a multicast source, to the mapping of port 5000.
	for name, src := range map[string]netip.Addr{"spoof-inside-source": nl.cli.Addr.Addr(), "spoof-own-source": outside.Addr.Addr(),
		"spoof-loopback-source": netip.MustParseAddr("127.0.0.1"), "spoof-multicast-source": netip.MustParseAddr("224.0.0.9")} {
		fromOutside[name] = hostile.UDP(nl.srv.MAC, outside.MAC, netip.AddrPortFrom(src, 9000), netip.AddrPortFrom(outside.Addr.Addr(), 5000), make([]byte, 16))
	}
	// From inside: a source outside the inside prefix.
	fromInside["spoof-outside-source"] = hostile.UDP(nl.cli.MAC, inside.MAC, netip.MustParseAddrPort("203.0.113.9:5001"), netip.AddrPortFrom(server, 9000), make([]byte, 16))

	before := shards.TrafficOf(nl.in.Snapshot())
	const repeat = 200
	dir := t.TempDir()
	for _, side := range []struct {
		name      string
		ns, iface string
		frames    map[string][]byte
	}{{"inside", nl.cli.NS, nl.cli.Iface, fromInside}, {"outside", nl.srv.NS, nl.srv.Iface, fromOutside}} {
		file := filepath.Join(dir, side.name+".hex")
		names, err := hostile.WriteFile(file, side.frames)
		if err != nil {
			t.Fatal(err)
		}
		out := run(t, side.ns, "hostile", side.iface, file, strconv.Itoa(repeat))
		t.Logf("from the %s: sent %s frames (%d kinds × %d): %s", side.name, strings.TrimSpace(out), len(names), repeat, strings.Join(names, ", "))
	}
	sent := uint64((len(fromInside) + len(fromOutside)) * repeat)
	var d shards.Traffic
	deadline := time.Now().Add(10 * time.Second) // nat.FragmentLimits.Timeout is 5 s
	for {
		d = shards.TrafficOf(nl.in.Snapshot()).Since(before)
		// Done when every frame received is accounted for (early fragments are held until
		// their datagram's timeout, then counted), or the time is up.
		if d.RxPackets >= sent/2 && d.DropsTotal+d.TxPackets >= d.RxPackets || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	rx, tx, dropped, drops := d.RxPackets, d.TxPackets, d.DropsTotal, d.Drops
	t.Logf("the NAT received %d of %d (the XDP program passes what it cannot parse to the kernel), dropped %d: %s; sent on %d",
		rx, sent, dropped, d.DropsString(), tx)
	if rx == 0 {
		t.Fatal("none of the hostile frames reached the NAT: the test tests nothing")
	}
	if drops["no-verdict"] > 0 {
		t.Errorf("%d frames were left undecided: every drop must have a reason", drops["no-verdict"])
	}
	if dropped == 0 {
		t.Error("no drops counted for hostile frames")
	}
	if dropped+tx < rx {
		t.Errorf("received %d, but only %d were dropped with a reason or sent on", rx, dropped+tx)
	}
	if st := nl.n.Stats(); st.Active > 16 {
		t.Errorf("%d mappings after the hostile frames: malformed packets made mappings", st.Active)
	}
	// Still translating: a new flow and the old one.
	for _, port := range []string{"5000", "5002"} {
		if got := run(t, nl.cli.NS, "udp-send", port, server.String()+":9000"); !strings.Contains(got, outside.Addr.Addr().String()) {
			t.Errorf("after: from port %s the server saw %s", port, got)
		}
	}
}
