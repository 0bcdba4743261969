package rss

import (
	"strings"
	"testing"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/internal/ethtool"
)

const all4 = ethtool.FieldIPSrc | ethtool.FieldIPDst | ethtool.FieldL4B01 | ethtool.FieldL4B23

func nic(udp ethtool.FlowFields) ethtool.RSSConfig {
	indir := make([]uint32, 128)
	for i := range indir {
		indir[i] = uint32(i % 4)
	}
	return ethtool.RSSConfig{Iface: "eth1", Driver: "ice", Supported: true, HashFunc: "toeplitz",
		Key: pipelines.MicrosoftKey[:], Indir: indir, RxRings: 4,
		TCP4: ethtool.FlowHash{Fields: all4, Known: true}, UDP4: ethtool.FlowHash{Fields: udp, Known: true}}
}

// TestFromConfig: a Toeplitz NIC becomes the owner function, with UDP ports as the NIC hashes
// them; what netchan cannot model is left to the software hash, and the line says why.
func TestFromConfig(t *testing.T) {
	r, why, err := fromConfig(nic(all4), []int{0, 1, 2, 3})
	if err != nil || r == nil || !r.UDPPorts || !strings.Contains(why, "the NIC's Toeplitz hash") {
		t.Fatalf("a Toeplitz NIC: %v, %q, %v", r, why, err)
	}
	src, dst := [4]byte{66, 9, 149, 187}, [4]byte{161, 142, 100, 80}
	if got, want := r.Queue(src, dst, 2794, 1766, true), pipelines.DefaultRETA(4).Queue(0x51ccc178); got != want {
		t.Errorf("queue %d, want %d (Microsoft's vector)", got, want)
	}
	r, why, _ = fromConfig(nic(ethtool.FieldIPSrc|ethtool.FieldIPDst), []int{0, 1})
	if r == nil || r.UDPPorts || !strings.Contains(why, "UDP on addresses only") {
		t.Errorf("UDP on addresses: %v, %q", r, why)
	}
	for name, c := range map[string]ethtool.RSSConfig{
		"no RSS":    {Iface: "veth0", Driver: "veth"},
		"xor":       func() ethtool.RSSConfig { c := nic(all4); c.HashFunc = "xor"; return c }(),
		"transform": func() ethtool.RSSConfig { c := nic(all4); c.InputXfrm = 1; return c }(),
		"tcp addrs": func() ethtool.RSSConfig {
			c := nic(all4)
			c.TCP4.Fields = ethtool.FieldIPSrc | ethtool.FieldIPDst
			return c
		}(),
	} {
		r, why, err := fromConfig(c, []int{0})
		if err != nil || r != nil || !strings.Contains(why, "software hash") {
			t.Errorf("%s: %v, %q, %v: want no RSS and a line naming the software hash", name, r, why, err)
		}
	}
}
