package main

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/netchan/netchan/pipelines/basic"
)

// TestTurnAround: the frame the echo turns around (basic.TurnAround) is the reply an independent decoder expects, with
// valid checksums, also with IPv4 options.
func TestTurnAround(t *testing.T) {
	for _, opts := range [][]byte{nil, {1, 1, 1, 0}} { // no options; NOPs and an end of list
		eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 0xa}, DstMAC: []byte{2, 0, 0, 0, 0, 0xb}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: netip.MustParseAddr("198.18.0.2").AsSlice(), DstIP: netip.MustParseAddr("198.18.0.1").AsSlice()}
		if opts != nil {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		}
		udp := &layers.UDP{SrcPort: 40000, DstPort: 9999}
		udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload("hello, netchannel")); err != nil {
			t.Fatal(err)
		}
		frame := bytes.Clone(buf.Bytes())
		basic.TurnAround(frame)
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		e2 := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		i2 := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		u2 := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !bytes.Equal(e2.SrcMAC, eth.DstMAC) || !bytes.Equal(e2.DstMAC, eth.SrcMAC) {
			t.Errorf("MACs not swapped: %v -> %v", e2.SrcMAC, e2.DstMAC)
		}
		if !i2.SrcIP.Equal(ip.DstIP) || !i2.DstIP.Equal(ip.SrcIP) || u2.SrcPort != 9999 || u2.DstPort != 40000 {
			t.Errorf("addresses or ports not swapped: %v:%d -> %v:%d", i2.SrcIP, u2.SrcPort, i2.DstIP, u2.DstPort)
		}
		if string(u2.Payload) != "hello, netchannel" {
			t.Errorf("payload %q", u2.Payload)
		}
		// Recompute both checksums the way a receiver checks them.
		want := bytes.Clone(frame)
		ip3 := *i2
		u3 := *u2
		u3.SetNetworkLayerForChecksum(&ip3)
		b3 := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(b3, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, e2, &ip3, &u3, gopacket.Payload(u2.Payload)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b3.Bytes(), want) {
			t.Errorf("checksums changed by the turn-around:\n got %x\nwant %x", want, b3.Bytes())
		}
	}
}
