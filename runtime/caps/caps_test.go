package caps

import (
	"errors"
	"testing"
)

func TestParseCapEff(t *testing.T) {
	eff, err := ParseCapEff("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n")
	if err != nil || eff != 0x1ffffffffff {
		t.Fatalf("ParseCapEff = %x, %v", eff, err)
	}
	if _, err := ParseCapEff("Name: x\n"); err == nil {
		t.Fatal("no CapEff line: want an error")
	}
}

func TestMissing(t *testing.T) {
	all := uint64(1)<<NetAdmin | 1<<NetRaw | 1<<BPF | 1<<PerfMon
	if m := Missing(all, Needed); len(m) != 0 {
		t.Fatalf("all needed held: missing %v", m)
	}
	if m := Missing(1<<NetRaw, Needed); len(m) != 3 || m[0] != "CAP_NET_ADMIN" || m[1] != "CAP_BPF" || m[2] != "CAP_PERFMON" {
		t.Fatalf("only CAP_NET_RAW: missing %v", m)
	}
}

func TestCheckWrapsErrPermission(t *testing.T) {
	err := Check()
	eff, rerr := Effective()
	if rerr != nil {
		t.Fatal(rerr)
	}
	held := eff&(1<<NetAdmin) != 0 && eff&(1<<NetRaw) != 0 && (eff&(1<<BPF) != 0 && eff&(1<<PerfMon) != 0 || eff&(1<<SysAdmin) != 0)
	if held != (err == nil) {
		t.Fatalf("effective set %x: Check() = %v", eff, err)
	}
	if err != nil && !errors.Is(err, ErrPermission) {
		t.Fatalf("Check() = %v: does not wrap ErrPermission", err)
	}
}
