package afxdp

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/runtime/caps"
)

// requireRoot fails a test that needs root, except under -short (the unit phase of ./test.sh,
// which may run unprivileged), where it steps aside and says so.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if testing.Short() {
		t.Skip("needs root (AF_XDP sockets, capabilities): runs in the lab phase of ./test.sh")
	}
	t.Fatal("needs root: AF_XDP sockets and lowering capabilities (run as root, e.g. sudo go test ...)")
}

func xdpSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket(AF_XDP): %v", err)
	}
	return fd
}

// TestBusyPollOptions: setBusyPoll sets the three options on an AF_XDP socket as root, and
// without CAP_NET_ADMIN it fails with an error that errors.Is both ErrBusyPoll and
// ErrPermission and says what to do.
func TestBusyPollOptions(t *testing.T) {
	requireRoot(t)
	fd := xdpSocket(t)
	defer unix.Close(fd)
	if err := setBusyPoll(fd, BusyPoll{On: true, Budget: 48}); err != nil {
		t.Fatalf("as root: %v", err)
	}
	for _, o := range []struct {
		name     string
		opt, val int
	}{{"SO_BUSY_POLL", unix.SO_BUSY_POLL, busyPollUsecs}, {"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1}} {
		// SO_BUSY_POLL_BUDGET cannot be read back: getsockopt gives ENOPROTOOPT (Linux 6.18).
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.opt); err != nil || v != o.val {
			t.Errorf("%s = %d (%v), want %d", o.name, v, err, o.val)
		}
	}
	var err error
	perr := caps.Probe(^caps.Set(1<<caps.NetAdmin), func() error {
		fd := xdpSocket(t)
		defer unix.Close(fd)
		err = setBusyPoll(fd, BusyPoll{On: true, Budget: DefaultBusyPollBudget})
		return nil
	})
	if perr != nil {
		t.Fatalf("lowering CAP_NET_ADMIN: %v", perr)
	}
	if !errors.Is(err, ErrBusyPoll) || !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") ||
		!strings.Contains(err.Error(), "SO_PREFER_BUSY_POLL") || !strings.Contains(err.Error(), "turn busy polling off") {
		t.Errorf("without CAP_NET_ADMIN: %v", err)
	}
}

// TestBusyPollBudgetRange: Open refuses a budget the kernel would (EINVAL above 65535) before
// it touches anything.
func TestBusyPollBudgetRange(t *testing.T) {
	for _, b := range []int{-1, 65536} {
		_, err := Open(Config{Ifaces: []string{"nonexistent0"}, BusyPoll: BusyPoll{On: true, Budget: b}})
		if err == nil || !strings.Contains(err.Error(), "1..65535") {
			t.Errorf("budget %d: %v", b, err)
		}
	}
}
