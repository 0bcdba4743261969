package xdpprog

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/runtime/caps"
)

// Sentinel errors; test with errors.Is. The returned errors also wrap the
// kernel's errno where there is one (errors.Is(err, unix.EPERM) works).
var (
	// ErrAlreadyAttached: the interface already has an XDP program, attached
	// by another netchan instance, another bpf_link owner or ip-link.
	ErrAlreadyAttached = errors.New("xdpprog: XDP program already attached")
	// ErrNoInterface: no interface has that index (in this network namespace).
	ErrNoInterface = errors.New("xdpprog: no such interface")
	// ErrPermission: the kernel refused with EPERM/EACCES; loading needs
	// CAP_BPF and CAP_NET_ADMIN (or root), attaching CAP_NET_ADMIN. It is
	// netchan's one permission error, caps.ErrPermission.
	ErrPermission = caps.ErrPermission
	// ErrNativeRefused: the driver refused a native-mode attach (ModeNative);
	// ModeAuto falls back to generic instead of returning it.
	ErrNativeRefused = errors.New("xdpprog: native XDP attach refused")
	// ErrFastFull: the fast flow table is full (Options.MaxFastFlows).
	ErrFastFull = errors.New("xdpprog: fast flow table full")
	// ErrFlowShapes: a flow spec would need a 9th distinct flow shape (protocol, prefix
	// lengths, which ports are named) while 8 are in use.
	ErrFlowShapes = errors.New("xdpprog: too many flow shapes")
	// ErrClosed: the Program was closed.
	ErrClosed = errors.New("xdpprog: program is closed")
)

// errFull is what the kernel answers an insert into a full hash map with.
var errFull = unix.E2BIG

const permHint = "run as root, or give the process CAP_BPF and CAP_NET_ADMIN"

func isPerm(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

// wrapPerm turns a permission error into ErrPermission with a hint, and
// leaves other errors alone.
func wrapPerm(what string, err error) error {
	if isPerm(err) {
		return fmt.Errorf("%w: %s: %s: %w", ErrPermission, what, permHint, err)
	}
	return fmt.Errorf("xdpprog: %s: %w", what, err)
}

// nativeHint explains the common native-mode refusals.
func nativeHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOSPC):
		return "on veth, native XDP needs at least as many rx queues as the peer has tx queues: create the pair with equal queue counts"
	case errors.Is(err, unix.ERANGE):
		return "on veth, native XDP without multi-buffer limits the peer's MTU (3506 here): lower the peer MTU"
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		return "the driver has no native XDP support"
	}
	return "the driver refused native XDP"
}
