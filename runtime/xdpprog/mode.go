package xdpprog

import (
	"fmt"
	"strings"
)

// Mode is how the program is attached to an interface.
type Mode int

const (
	// ModeAuto tries native (driver) mode and falls back to generic mode,
	// with a log line that says why.
	ModeAuto Mode = iota
	// ModeNative attaches in the driver's receive path (XDP_FLAGS_DRV_MODE).
	ModeNative
	// ModeGeneric attaches after the kernel has built an skb
	// (XDP_FLAGS_SKB_MODE): works on every device, slower.
	ModeGeneric
)

// String returns "auto", "native" or "generic".
func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// ParseMode parses "auto", "native" or "generic" (case-insensitive; "drv"
// and "skb", the names ip-link uses, are accepted too, and "" means auto so
// that an unset flag or config field picks the default).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "auto", "":
		return ModeAuto, nil
	case "native", "drv", "driver":
		return ModeNative, nil
	case "generic", "skb":
		return ModeGeneric, nil
	}
	return 0, fmt.Errorf("xdpprog: unknown XDP mode %q: use auto, native or generic", s)
}
