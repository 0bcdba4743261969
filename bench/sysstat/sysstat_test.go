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
