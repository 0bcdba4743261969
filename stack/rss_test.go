package stack

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines"
)

// TestRSSDialPort: with the NIC's RSS set, a connection dialled from shard 1 of 2 gets a source
// port whose replies the NIC steers to shard 1's queue, and the SYN-ACK coming back is taken
// on that shard (not handed off); the owner function agrees.
func TestRSSDialPort(t *testing.T) {
	hs := newHarness(t, Config{StaticARP: []StaticNeighbor{{IP: peerIP, MAC: peerMAC}}}, 1, 2)
	rss, err := pipelines.NewRSS(pipelines.MicrosoftKey[:], pipelines.DefaultRETA(2), []int{0, 1}, true, "test")
	if err != nil {
		t.Fatal(err)
	}
	hs.h.SetRSS(rss)
	local := netip.MustParseAddr("198.18.0.1")
	for i := 0; i < 20; i++ {
		c, err := hs.h.dialAsync(netip.AddrPortFrom(peerIP, 80))
		if err != nil {
			t.Fatal(err)
		}
		out := hs.step()
		if len(out) != 1 {
			t.Fatalf("dial %d: %d frames out, want the SYN", i, len(out))
		}
		syn := decode(out[0]).Layer(layers.LayerTypeTCP).(*layers.TCP)
		lp := uint16(syn.SrcPort)
		if got := rss.ShardOf(peerIP.As4(), local.As4(), 80, lp, true); got != 1 {
			t.Fatalf("dial %d: source port %d: the NIC steers its replies to shard %d, not the dialling shard 1", i, lp, got)
		}
		ipl := ipLayer(peerIP, local, layers.IPProtocolTCP)
		tcp := &layers.TCP{SrcPort: 80, DstPort: layers.TCPPort(lp), SYN: true, ACK: true, Seq: 1000, Ack: syn.Seq + 1, Window: 65535}
		tcp.SetNetworkLayerForChecksum(ipl)
		synack := serialize(t, ethLayer(peerMAC, ourMAC, layers.EthernetTypeIPv4), ipl, tcp)
		if o := hs.h.Owner(synack, 2); o != 1 {
			t.Fatalf("dial %d: the owner function gives the SYN-ACK to shard %d", i, o)
		}
		if hs.step(synack); len(hs.drops) != 0 || c.tcb.state != stEstablished {
			t.Fatalf("dial %d: after the SYN-ACK: drops %v, state %v", i, hs.drops, c.tcb.state)
		}
	}
}
