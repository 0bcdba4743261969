package caps

import (
	"fmt"
	"slices"
	"strings"
)

// More capability bits (include/uapi/linux/capability.h), for the sets DropTo keeps and
// clears.
const (
	DACOverride    = 1
	DACReadSearch  = 2
	SetPCap        = 8
	NetBindService = 10
)

// Set is a set of capabilities: bit n stands for capability n, as in the CapEff, CapPrm, ...
// lines of /proc/PID/status.
type Set uint64

// SetOf is the set of cs.
func SetOf(cs ...Cap) Set {
	var s Set
	for _, c := range cs {
		s |= 1 << c.Bit
	}
	return s
}

// Has reports whether s holds capability bit.
func (s Set) Has(bit uint) bool { return bit < 64 && s&(1<<bit) != 0 }

// Caps lists the capabilities of s in bit order.
func (s Set) Caps() []Cap {
	var out []Cap
	for b := uint(0); b < 64; b++ {
		if s.Has(b) {
			out = append(out, Cap{b, Name(b)})
		}
	}
	return out
}

// String names the capabilities of s, comma-separated, or says "none".
func (s Set) String() string {
	if s == 0 {
		return "none"
	}
	var names []string
	for _, c := range s.Caps() {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

// MarshalText writes s as String does: JSON shows the names.
func (s Set) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (s *Set) UnmarshalText(b []byte) error {
	*s = 0
	if string(b) == "none" || len(b) == 0 {
		return nil
	}
	for _, name := range strings.Split(string(b), ",") {
		bit := slices.Index(capNames[:], name)
		if bit < 0 {
			if _, err := fmt.Sscanf(name, "cap_%d", &bit); err != nil || bit < 0 || bit > 63 {
				return fmt.Errorf("caps: unknown capability %q", name)
			}
		}
		*s |= 1 << uint(bit)
	}
	return nil
}

var capNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// Name is the name of capability bit, such as CAP_NET_ADMIN ("cap_41" past the names known).
func Name(bit uint) string {
	if bit < uint(len(capNames)) {
		return capNames[bit]
	}
	return fmt.Sprintf("cap_%d", bit)
}

// Thread is one thread's capability sets and no_new_privs flag, as /proc/PID/task/TID/status
// shows them: capabilities are per thread on Linux.
type Thread struct {
	TID         int
	Inheritable Set
	Permitted   Set
	Effective   Set
	Bounding    Set
	Ambient     Set
	NoNewPrivs  bool
	SigBlk      uint64 // blocked signals, bit n-1 for signal n
}

// ParseStatus reads the capability sets, NoNewPrivs and SigBlk of a /proc/PID/status (or
// /proc/PID/task/TID/status) text.
func ParseStatus(status string) (Thread, error) {
	var t Thread
	seen := 0
	for _, line := range strings.Split(status, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var dst *Set
		switch key {
		case "CapInh":
			dst = &t.Inheritable
		case "CapPrm":
			dst = &t.Permitted
		case "CapEff":
			dst = &t.Effective
		case "CapBnd":
			dst = &t.Bounding
		case "CapAmb":
			dst = &t.Ambient
		case "NoNewPrivs":
			t.NoNewPrivs = val == "1"
			continue
		case "SigBlk":
			fmt.Sscanf(val, "%x", &t.SigBlk)
			continue
		default:
			continue
		}
		var v uint64
		if _, err := fmt.Sscanf(val, "%x", &v); err != nil {
			return t, fmt.Errorf("caps: status line %q: %w", line, err)
		}
		*dst = Set(v)
		seen++
	}
	if seen < 4 { // CapAmb is missing before Linux 4.3
		return t, fmt.Errorf("caps: no capability lines in the status text")
	}
	return t, nil
}
