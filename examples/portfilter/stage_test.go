package main

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
)

// TestPortFilter runs the example's pipeline (the port filter, then reflect) on the stage
// harness, without root: UDP to the port comes back with addresses and ports swapped, UDP to
// another port and a frame that is not IPv4 UDP are dropped as not-our-port.
func TestPortFilter(t *testing.T) {
	h := stagetest.NewPipeline(t, app(7).NewPipeline(0), pipelines.ShardInfo{})
	peer, ours := netip.MustParseAddrPort("198.18.0.2:40000"), netip.MustParseAddrPort("198.18.0.1:7")
	toPort := stagetest.UDPFrame(peer, ours, []byte("ping"))
	other := stagetest.UDPFrame(peer, netip.MustParseAddrPort("198.18.0.1:8"), []byte("ping"))
	arp := make([]byte, 60)
	arp[12], arp[13] = 0x08, 0x06
	sent := h.Feed(toPort, other, arp)
	want := stagetest.UDPFrame(ours, peer, []byte("ping")) // the way back, Ethernet addresses swapped
	copy(want[0:6], toPort[6:12])
	copy(want[6:12], toPort[0:6])
	if len(sent) != 1 || !bytes.Equal(sent[0].Data, want) || sent[0].If != 0 {
		t.Fatalf("sent %d frames; want the datagram to port 7 reflected:\n got % x\nwant % x", len(sent), firstData(sent), want)
	}
	if d := h.DropCounts(); len(d) != 1 || d["not-our-port"] != 2 {
		t.Fatalf("drops %v, want 2 not-our-port", d)
	}
}

func firstData(out []stagetest.Out) []byte {
	if len(out) == 0 {
		return nil
	}
	return out[0].Data
}
