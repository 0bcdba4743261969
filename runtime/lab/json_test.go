package lab

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// TestJSONMACsAsText: `netchan lab up` prints the lab as JSON; its MACs must read as ip link
// shows them, not as base64 bytes.
func TestJSONMACsAsText(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	peerMAC, _ := net.ParseMAC("02:00:00:00:00:02")
	l := Lab{Name: "nc", Netchan: []Endpoint{{Iface: "ncn0", MAC: mac, Addr: netip.MustParsePrefix("198.18.0.1/24"),
		Peer: Host{Role: "peer", NS: "nc-peer", MAC: peerMAC}}}}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"MAC":"02:00:00:00:00:01"`, `"MAC":"02:00:00:00:00:02"`, `"Iface":"ncn0"`, `"NS":"nc-peer"`, `"Addr":"198.18.0.1/24"`} {
		if !strings.Contains(s, want) {
			t.Errorf("lab JSON lacks %s: %s", want, s)
		}
	}
	if strings.Count(s, `"MAC"`) != 2 {
		t.Errorf("want exactly two MAC fields: %s", s)
	}
}
