package sysstat

import (
	"strings"
	"testing"
)

// The load average reads as "1.23 0.98 0.77 2/345 6789": reports record it per run.
func TestLoadavg(t *testing.T) {
	f := strings.Fields(Loadavg())
	if len(f) != 5 || !strings.Contains(f[3], "/") {
		t.Fatalf("Loadavg() = %q, want the five fields of /proc/loadavg", Loadavg())
	}
}

// /proc/net/snmp's Tcp and Udp lines pair names with values.
func TestReadSNMP(t *testing.T) {
	for _, proto := range []string{"Tcp", "Udp"} {
		m, err := ReadSNMP(proto)
		if err != nil {
			t.Fatal(err)
		}
		key := map[string]string{"Tcp": "InSegs", "Udp": "InDatagrams"}[proto]
		if _, ok := m[key]; !ok || len(m) < 5 {
			t.Fatalf("ReadSNMP(%q) = %v: want %s among its counters", proto, m, key)
		}
	}
}
