package doctor

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/runtime/caps"
)

func TestKernel(t *testing.T) {
	for _, c := range []struct {
		release string
		want    Severity
	}{
		{"6.18.44-fc-v782", OK}, {"5.11.0", OK}, {"5.15.0-91-generic", OK}, {"6.1-rc1", OK},
		{"5.10.200", Problem}, {"4.19.0", Problem}, {"", Warn}, {"linux", Warn},
	} {
		if f := checkKernel(c.release); f.Severity != c.want {
			t.Errorf("%q: %v (%s), want %v", c.release, f.Severity, f.What, c.want)
		} else if f.Severity == Problem && f.Fix == "" {
			t.Errorf("%q: a problem without a fix", c.release)
		}
	}
}

func TestCapEff(t *testing.T) {
	status := "Name:\tnetchan\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001fffeffbfff\n"
	eff, err := caps.ParseCapEff(status)
	if err != nil || eff != 0x1fffeffbfff {
		t.Fatalf("parseCapEff = %x, %v", eff, err)
	}
	if _, err := caps.ParseCapEff("Name: x\n"); err == nil {
		t.Error("no CapEff line: no error")
	}
	// 0x1fffeffbfff lacks bit 14 (CAP_IPC_LOCK) only.
	f := checkCaps(eff, nil)
	if f.Severity != Info || !strings.Contains(f.What, "not CAP_IPC_LOCK") {
		t.Errorf("without IPC_LOCK: %+v", f)
	}
	all := uint64(1)<<caps.NetAdmin | 1<<caps.NetRaw | 1<<caps.BPF | 1<<caps.PerfMon | 1<<caps.IPCLock
	if f := checkCaps(all, nil); f.Severity != OK {
		t.Errorf("all five: %+v", f)
	}
	if f := checkCaps(all&^(1<<caps.PerfMon), nil); f.Severity != Problem || !strings.Contains(f.What, "CAP_PERFMON") {
		t.Errorf("without PERFMON (the verifier refuses the XDP program's packet-pointer arithmetic): %+v", f)
	}
	f = checkCaps(1<<caps.NetRaw|1<<caps.IPCLock, nil)
	if f.Severity != Problem || !strings.Contains(f.What, "CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON") || !strings.Contains(f.Fix, "root") {
		t.Errorf("missing NET_ADMIN and BPF: %+v", f)
	}
	if f := checkCaps(0, errors.New("no proc")); f.Severity != Warn {
		t.Errorf("unreadable: %+v", f)
	}
}

func TestMemlock(t *testing.T) {
	base := memlockInput{limit: 8 << 20, frames: 4096, frameSize: 2048, queues: 1}
	if f := checkMemlock(base); f.Severity != OK {
		t.Errorf("8 MiB in 8 MiB: %+v", f)
	}
	over := base
	over.queues = 2
	f := checkMemlock(over)
	if f.Severity != Problem || !strings.Contains(f.What, "16 MiB") || !strings.Contains(f.What, "8 MiB") ||
		!strings.Contains(f.Fix, "CAP_IPC_LOCK") || !strings.Contains(f.Fix, "ulimit -l 16384") || !strings.Contains(f.Fix, "--frames") {
		t.Errorf("16 MiB over 8 MiB: %+v", f)
	}
	over.hasIPCLock = true
	if f := checkMemlock(over); f.Severity != OK || !strings.Contains(f.What, "CAP_IPC_LOCK") {
		t.Errorf("with CAP_IPC_LOCK: %+v", f)
	}
	over.hasIPCLock, over.limit = false, unix.RLIM_INFINITY
	if f := checkMemlock(over); f.Severity != OK || !strings.Contains(f.What, "unlimited") {
		t.Errorf("unlimited: %+v", f)
	}
	over.limitErr = errors.New("x")
	if f := checkMemlock(over); f.Severity != Warn {
		t.Errorf("unreadable limit: %+v", f)
	}
}

func TestParseFeatures(t *testing.T) {
	out := `Features for nctp0:
rx-checksumming: on
tx-checksumming: on
	tx-checksum-ipv4: off [fixed]
	tx-checksum-ip-generic: on
scatter-gather: on
tcp-segmentation-offload: off
	tx-tcp-segmentation: off [requested on]
generic-segmentation-offload: on [fixed]
generic-receive-offload: off
`
	m := parseFeatures(out)
	want := map[string]bool{"tx-checksumming": true, "tx-checksum-ipv4": false, "tx-checksum-ip-generic": true,
		"tcp-segmentation-offload": false, "tx-tcp-segmentation": false, "generic-segmentation-offload": true, "generic-receive-offload": false}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
}

func TestBad(t *testing.T) {
	if Bad([]Finding{{Severity: OK}, {Severity: Info}}) {
		t.Error("ok and info are not bad")
	}
	if !Bad([]Finding{{Severity: OK}, {Severity: Warn}}) || !Bad([]Finding{{Severity: Problem}}) {
		t.Error("warn and problem are bad")
	}
	if b, _ := Problem.MarshalText(); string(b) != "problem" {
		t.Errorf("MarshalText = %s", b)
	}
}

// TestPrivilegesFindings: one info finding per thing netchan does once set up, each naming the
// commands that do it and the capabilities it needs here; what every data-plane command does
// is among the rows.
func TestPrivilegesFindings(t *testing.T) {
	fs := checkPrivileges("")
	if len(fs) != 1+len(privilegeFeatures) {
		t.Fatalf("%d findings, want a header and %d rows: %+v", len(fs), len(privilegeFeatures), fs)
	}
	for _, f := range fs {
		if f.Check != "privileges" || f.Severity != Info {
			t.Errorf("finding %+v: want check privileges, severity info", f)
		}
	}
	row := func(feature string) string {
		for _, f := range fs[1:] {
			if strings.HasPrefix(f.What, feature+" (") {
				return f.What
			}
		}
		t.Fatalf("no row for %s: %+v", feature, fs)
		return ""
	}
	for cmd, features := range AfterSetup {
		for _, feature := range features {
			if !slices.Contains(privilegeFeatures, feature) {
				t.Errorf("%s does %s once set up, which the doctor does not show", cmd, feature)
			}
			if w := row(feature); !strings.Contains(w, cmd) {
				t.Errorf("row %q does not name %s", w, cmd)
			}
		}
	}
	if w := row(caps.Neighbors); !strings.Contains(w, "CAP_NET_ADMIN") {
		t.Errorf("neighbour resolution: %q, want CAP_NET_ADMIN", w)
	}
	if w := row(caps.ReservedPorts); strings.Contains(w, "CAP_NET_ADMIN") != (os.Geteuid() != 0) {
		t.Errorf("reserved ports as uid %d: %q", os.Geteuid(), w)
	}
	if w := row(caps.Traffic); !strings.Contains(w, ": none: ") {
		t.Errorf("traffic: %q, want none", w)
	}
}
