// Package caps owns netchan's one privilege check and its one permission error. Every part
// of netchan that the kernel can refuse for lack of privilege (loading and attaching the XDP
// program, opening AF_XDP sockets, the control socket) wraps ErrPermission, so a caller tests
// for all of them with errors.Is(err, caps.ErrPermission); Check runs before anything is set
// up, so a missing capability is reported once and first.
//
// Once set up, netchan needs little: NeedsFor says what each thing it still does needs on
// this machine (probing, with Probe, where the kernel, the user or a file decides), and
// DropTo drops every thread of the process to that for good (Threads reads them back).
package caps

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ErrPermission means the process lacks a privilege netchan needs.
var ErrPermission = errors.New("permission denied")

// Capability bits (include/uapi/linux/capability.h).
const (
	NetAdmin = 12
	NetRaw   = 13
	IPCLock  = 14
	SysAdmin = 21
	PerfMon  = 38
	BPF      = 39
)

// Needed are the capabilities a data plane needs: attaching XDP (CAP_NET_ADMIN), AF_XDP
// sockets (CAP_NET_RAW), loading BPF (CAP_BPF) and the packet-pointer arithmetic of the XDP
// program, which the verifier allows only with CAP_PERFMON (CAP_SYS_ADMIN stands for both
// CAP_BPF and CAP_PERFMON, as kernels before 5.8 required it instead). CAP_IPC_LOCK is
// optional: without it the UMEM counts against RLIMIT_MEMLOCK.
var Needed = []Cap{{NetAdmin, "CAP_NET_ADMIN"}, {NetRaw, "CAP_NET_RAW"}, {BPF, "CAP_BPF"}, {PerfMon, "CAP_PERFMON"}}

// Cap is one capability.
type Cap struct {
	Bit  uint
	Name string
}

// Effective reads the process's effective capability set.
func Effective() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	return ParseCapEff(string(b))
}

// ParseCapEff reads the CapEff line of a /proc/PID/status text.
func ParseCapEff(status string) (uint64, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

// Missing names the capabilities of want that the effective set eff lacks.
func Missing(eff uint64, want []Cap) []string {
	var out []string
	for _, c := range want {
		if eff&(1<<c.Bit) == 0 {
			out = append(out, c.Name)
		}
	}
	return out
}

// Check returns an error wrapping ErrPermission that names every needed capability the
// process lacks, and nil when it has them all (or when the set cannot be read: the kernel
// then has the last word, and its refusal wraps ErrPermission too).
func Check() error {
	eff, err := Effective()
	if err != nil {
		return nil
	}
	missing := Missing(eff, Needed)
	if eff&(1<<SysAdmin) != 0 {
		missing = slices.DeleteFunc(missing, func(name string) bool { return name == "CAP_BPF" || name == "CAP_PERFMON" })
	}
	if len(missing) > 0 {
		return fmt.Errorf("netchan needs %s: %w: run as root (sudo) or grant the capabilities with setcap or as ambient capabilities",
			strings.Join(missing, ", "), ErrPermission)
	}
	return nil
}
