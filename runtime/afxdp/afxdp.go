// Package afxdp owns netchan's AF_XDP port: one UMEM per queue index, shared by one socket per
// interface bound to that queue (XDP_SHARED_UMEM, each socket with its own fill and completion
// ring), so a frame received on one interface can be transmitted on another without a copy in
// user space. The port moves descriptors in batches and allocates nothing per packet; which
// frame is where is the caller's business (the shard keeps the free list).
//
// Open binds one queue of the given interfaces and returns the Port; its Links (one per
// interface, in Config order) are what a shard drives (they implement shards.Link), and Close
// closes the sockets and unmaps the UMEM. The XDP program that redirects packets into the
// sockets is runtime/xdpprog's, attached separately; netchan.Start does both for every queue.
// Errors wrap the sentinels below (ErrPermission, ErrQueueBusy, ...), so callers test them
// with errors.Is.
//
// Bind mode auto tries zero-copy and falls back to copy mode with a log line (veth refuses
// zero-copy). Transmit in copy mode moves at most 32 frames per kick, so Flush keeps kicking
// while the tx ring holds frames.
//
// # Busy polling
//
// With Config.BusyPoll on, Open sets preferred busy polling on every socket (SO_BUSY_POLL,
// SO_PREFER_BUSY_POLL, SO_BUSY_POLL_BUDGET, on the socket itself: Go's netpoller shares one
// epoll among all of the process's descriptors and cannot busy poll for one of them). The
// socket's own non-blocking recvfrom (Link.BusyPoll) and sendto (Link.Flush) then run the NAPI
// poll of its queue, the driver's receive and completion work, up to Budget packets, in the
// caller's system call; with napi_defer_hard_irqs and gro_flush_timeout set on the device, the
// device's interrupts stay masked while those calls keep coming (the kernel's napi.rst, "IRQ
// mitigation"), and come back once gro_flush_timeout passes without one.
//
// A busy poll finds its NAPI instance through the socket's NAPI id, which the kernel records
// from the first packet the socket receives, from the XDP receive-queue info the packet came
// with (in zero-copy mode also from the buffer pool, at the first busy-polling sendto, which
// Open makes). A socket without one gets nothing from busy polling: the call returns at once.
// Link.NAPIID reads it (SO_INCOMING_NAPI_ID):
//
//   - veth, native or generic XDP: 0, before traffic and after it (measured on Linux 6.18,
//     TestLabNAPIID), so busy polling on veth does nothing;
//   - generic XDP on any device: 0 (from the kernel's source: generic XDP runs with the
//     device's generic receive-queue info, registered without a NAPI id);
//   - a NIC in native XDP (copy or zero-copy): the id of the queue's NAPI instance, which
//     drivers register with the queue's XDP receive-queue info; in copy mode only once the
//     first packet has arrived. Not measured here: this machine has no NIC.
//
// Setting SO_PREFER_BUSY_POLL or any SO_BUSY_POLL_BUDGET needs CAP_NET_ADMIN (measured on
// 6.18: the socket's budget starts at 0, and any budget above it is checked); SO_BUSY_POLL
// needed it above net.core.busy_read on older kernels. Open sets them, at set-up; the busy
// polls afterwards check nothing.
package afxdp

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/runtime/caps"
	"github.com/netchan/netchan/runtime/internal/ethtool"
	"github.com/netchan/netchan/runtime/internal/xsk"
)

// Desc is an rx/tx descriptor: UMEM address of the packet's first byte and its length.
type Desc = xsk.Desc

// Errors that callers can test with errors.Is; the wrapping error's message says what to do.
var (
	ErrPermission      = caps.ErrPermission
	ErrNoInterface     = errors.New("no such interface")
	ErrQueueOutOfRange = errors.New("queue out of range")
	ErrQueueBusy       = errors.New("queue busy")
	ErrMemlock         = errors.New("UMEM exceeds the locked-memory limit")
	ErrBusyPoll        = errors.New("busy polling refused")
)

// BindMode chooses between zero-copy and copy mode.
type BindMode int

const (
	BindAuto BindMode = iota
	BindZeroCopy
	BindCopy
)

func (m BindMode) String() string {
	switch m {
	case BindZeroCopy:
		return "zerocopy"
	case BindCopy:
		return "copy"
	}
	return "auto"
}

// Config describes one port: a queue index and the interfaces whose queue it binds.
type Config struct {
	Queue     int
	Ifaces    []string
	NumFrames uint32 // frames in the UMEM; default 4096
	FrameSize uint32 // 2048 or 4096; default 2048
	RingSize  uint32 // entries of each ring (power of two); default 2048
	BindMode  BindMode
	// NoNeedWakeup disables XDP_USE_NEED_WAKEUP (then every poll iteration kicks).
	NoNeedWakeup bool
	// BusyPoll sets preferred busy polling on every socket (see the package doc).
	BusyPoll BusyPoll
	Logf     func(format string, args ...any)
}

// BusyPoll asks for preferred busy polling on a port's sockets. The zero value is off.
type BusyPoll struct {
	On bool
	// Budget is the most packets one busy poll lets the driver take (SO_BUSY_POLL_BUDGET,
	// 1..65535); 0 means DefaultBusyPollBudget.
	Budget int
}

// DefaultBusyPollBudget is BusyPoll.Budget's default: a shard's default batch.
const DefaultBusyPollBudget = 64

// busyPollUsecs is the SO_BUSY_POLL value set with BusyPoll. A non-blocking recvfrom or
// sendto on an AF_XDP socket polls once whatever the value (the kernel busy-loops for it only
// in blocking calls, which AF_XDP refuses); non-zero is what turns busy polling on for the
// socket. 20 µs as the kernel's xdpsock sample sets, so a blocking poll(2) on the socket by
// someone else would stay short.
const busyPollUsecs = 20

// setBusyPoll sets preferred busy polling on fd.
func setBusyPoll(fd int, bp BusyPoll) error {
	budget := bp.Budget
	if budget == 0 {
		budget = DefaultBusyPollBudget
	}
	for _, o := range []struct {
		name string
		opt  int
		val  int
	}{
		{"SO_BUSY_POLL", unix.SO_BUSY_POLL, busyPollUsecs},
		{"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1},
		{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, budget},
	} {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.val)
		switch {
		case err == nil:
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			return fmt.Errorf("%s=%d: %w: %w: preferred busy polling and its budget need CAP_NET_ADMIN: run as root or grant it, or turn busy polling off", o.name, o.val, ErrBusyPoll, ErrPermission)
		case errors.Is(err, unix.ENOPROTOOPT):
			return fmt.Errorf("%s: %w: this kernel lacks it (preferred busy polling needs Linux 5.11 or later built with CONFIG_NET_RX_BUSY_POLL): turn busy polling off", o.name, ErrBusyPoll)
		default:
			return fmt.Errorf("%s=%d: %w: %v", o.name, o.val, ErrBusyPoll, err)
		}
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.NumFrames == 0 {
		c.NumFrames = 4096
	}
	if c.FrameSize == 0 {
		c.FrameSize = 2048
	}
	if c.RingSize == 0 {
		c.RingSize = 2048
	}
	if c.Logf == nil {
		c.Logf = log.Printf
	}
	if c.BusyPoll.On && c.BusyPoll.Budget == 0 {
		c.BusyPoll.Budget = DefaultBusyPollBudget
	}
}

// Port is a UMEM and one socket per interface on one queue.
type Port struct {
	UMEM  *xsk.UMEM
	Links []*Link
	// RingSize is the entries of each of the sockets' rings.
	RingSize uint32
}

// Link is one AF_XDP socket: one interface at one queue.
type Link struct {
	Iface      string
	Ifindex    int
	Queue      int
	ZeroCopy   bool
	sock       *xsk.Socket
	needWakeup bool
	busyPoll   bool
}

// Mem is the UMEM's bytes; frame addresses index into it.
func (p *Port) Mem() []byte { return p.UMEM.Mem }

// QueueCount returns the number of receive queues of an interface, from sysfs.
func QueueCount(iface string) (int, error) {
	m, err := filepath.Glob(filepath.Join("/sys/class/net", iface, "queues", "rx-*"))
	if err != nil {
		return 0, err
	}
	if len(m) == 0 {
		if _, err := os.Stat(filepath.Join("/sys/class/net", iface)); err != nil {
			return 0, fmt.Errorf("interface %q: %w: check the name with `ip link`", iface, ErrNoInterface)
		}
		return 1, nil
	}
	return len(m), nil
}

// Driver names iface's driver as ethtool reports it (ETHTOOL_GDRVINFO): "veth", "ice",
// "mlx5_core"; "" for a device without driver information (lo). The caller's namespace.
func Driver(iface string) (string, error) {
	c, err := ethtool.RSS(iface)
	if c.Driver != "" {
		return c.Driver, nil
	}
	return "", err
}

// Open creates the UMEM and binds one socket per interface to cfg.Queue. The first interface's
// socket owns the UMEM; the others share it.
func Open(cfg Config) (port *Port, err error) {
	cfg.setDefaults()
	if len(cfg.Ifaces) == 0 {
		return nil, errors.New("afxdp: no interfaces given")
	}
	if cfg.FrameSize&(cfg.FrameSize-1) != 0 || cfg.FrameSize < 2048 {
		return nil, fmt.Errorf("afxdp: frame size %d: must be a power of two ≥ 2048", cfg.FrameSize)
	}
	if cfg.RingSize&(cfg.RingSize-1) != 0 {
		return nil, fmt.Errorf("afxdp: ring size %d: must be a power of two", cfg.RingSize)
	}
	if cfg.BusyPoll.On && (cfg.BusyPoll.Budget < 1 || cfg.BusyPoll.Budget > 65535) {
		return nil, fmt.Errorf("afxdp: busy-poll budget %d: must be 1..65535 (0 for the default, %d)", cfg.BusyPoll.Budget, DefaultBusyPollBudget)
	}
	ifaces := make([]*net.Interface, len(cfg.Ifaces))
	for i, name := range cfg.Ifaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("interface %q: %w: check the name with `ip link` (and the namespace you run in)", name, ErrNoInterface)
		}
		n, err := QueueCount(name)
		if err != nil {
			return nil, err
		}
		if cfg.Queue < 0 || cfg.Queue >= n {
			return nil, fmt.Errorf("interface %s has %d receive queues (0..%d), not queue %d: %w: choose queues within that range or add queues to the device (ethtool -L %s rx N tx N)",
				name, n, n-1, cfg.Queue, ErrQueueOutOfRange, name)
		}
		ifaces[i] = ifi
	}
	umem, err := xsk.MapUMEM(cfg.NumFrames, cfg.FrameSize)
	if err != nil {
		return nil, err
	}
	// p, not the named result: `return nil, err` clears port before the deferred cleanup runs.
	p := &Port{UMEM: umem, RingSize: cfg.RingSize}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for i, ifi := range ifaces {
		l, err := openLink(cfg, umem, ifi, p, i == 0)
		if err != nil {
			return nil, err
		}
		p.Links = append(p.Links, l)
	}
	return p, nil
}

func openLink(cfg Config, umem *xsk.UMEM, ifi *net.Interface, port *Port, owner bool) (*Link, error) {
	s, err := xsk.NewSocket()
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("opening an AF_XDP socket: %w: run as root or grant CAP_NET_RAW, CAP_NET_ADMIN and CAP_BPF", ErrPermission)
		}
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, fmt.Errorf("opening an AF_XDP socket: %v: this kernel lacks AF_XDP (CONFIG_XDP_SOCKETS)", err)
		}
		return nil, fmt.Errorf("opening an AF_XDP socket: %w", err)
	}
	l := &Link{Iface: ifi.Name, Ifindex: ifi.Index, Queue: cfg.Queue, sock: s, needWakeup: !cfg.NoNeedWakeup, busyPoll: cfg.BusyPoll.On}
	fail := func(e error) (*Link, error) { s.Close(); return nil, e }
	if l.busyPoll {
		if err := setBusyPoll(s.FD, cfg.BusyPoll); err != nil {
			return fail(fmt.Errorf("%s queue %d: %w", ifi.Name, cfg.Queue, err))
		}
	}
	if owner {
		if err := s.RegisterUMEM(umem); err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
				var lim unix.Rlimit
				unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim)
				return fail(fmt.Errorf("registering a UMEM of %d bytes (%d frames of %d) with RLIMIT_MEMLOCK %d bytes: %w: run with CAP_IPC_LOCK (root has it), raise the limit (ulimit -l / LimitMEMLOCK=), or use fewer frames",
					len(umem.Mem), umem.NumFrames, umem.FrameSize, lim.Cur, ErrMemlock))
			}
			return fail(fmt.Errorf("registering UMEM: %w", err))
		}
	}
	r := cfg.RingSize
	if err := s.SetupRings(xsk.RingSizes{Fill: r, Comp: r, Rx: r, Tx: r}); err != nil {
		return fail(fmt.Errorf("%s queue %d: %w", ifi.Name, cfg.Queue, err))
	}
	bindErr := func(err error) error {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%s queue %d already has an AF_XDP socket: %w: stop the other AF_XDP user of that queue (another netchan instance: netchan status) or choose other queues", ifi.Name, cfg.Queue, ErrQueueBusy)
		}
		return fmt.Errorf("binding AF_XDP socket to %s queue %d: %w", ifi.Name, cfg.Queue, err)
	}
	if !owner {
		if err := bindRetry(func() error { return s.Bind(ifi.Index, cfg.Queue, unix.XDP_SHARED_UMEM, port.Links[0].sock.FD) }); err != nil {
			return fail(bindErr(err))
		}
		l.bound()
		return l, nil
	}
	var wake uint16
	if l.needWakeup {
		wake = unix.XDP_USE_NEED_WAKEUP
	}
	switch cfg.BindMode {
	case BindZeroCopy:
		if err := bindRetry(func() error { return s.Bind(ifi.Index, cfg.Queue, unix.XDP_ZEROCOPY|wake, 0) }); err != nil {
			return fail(bindErr(err))
		}
	case BindCopy:
		if err := bindRetry(func() error { return s.Bind(ifi.Index, cfg.Queue, unix.XDP_COPY|wake, 0) }); err != nil {
			return fail(bindErr(err))
		}
	default:
		if err := bindRetry(func() error { return s.Bind(ifi.Index, cfg.Queue, unix.XDP_ZEROCOPY|wake, 0) }); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fail(bindErr(err))
			}
			cfg.Logf("afxdp: %s queue %d: zero-copy refused (%v); falling back to copy mode", ifi.Name, cfg.Queue, err)
			if err := s.Bind(ifi.Index, cfg.Queue, unix.XDP_COPY|wake, 0); err != nil {
				return fail(bindErr(err))
			}
		}
	}
	l.bound()
	return l, nil
}

// bound notes the bound socket's mode. A zero-copy socket that busy polls records its queue's
// NAPI id at its first busy-polling sendto: bound makes one, so NAPIID knows before traffic.
func (l *Link) bound() {
	l.ZeroCopy = l.sock.ZeroCopy()
	if l.busyPoll && l.ZeroCopy {
		l.sock.KickTx()
	}
}

// busyWait is how long bindRetry keeps trying a queue the kernel reports busy: the 3 s that
// the benchmarks, which open a queue right after closing it run after run, used to retry for
// themselves.
const busyWait = 3 * time.Second

// bindRetry runs bind, again every 10 ms for up to busyWait while the kernel reports the queue
// busy (EBUSY). An AF_XDP socket outlives its close, and its process, briefly: the kernel tears
// down the socket's buffer pool, and frees the queue, from a workqueue after the last
// reference goes. So restarting netchan right after killing it can find the queue still
// taken (the cmd test TestSIGKILLLeavesNoProgram did in 1 of 20 runs, and in none of 90 with
// the retry), as can a benchmark's next run. A queue held by a live process stays busy, and
// the error says so after busyWait.
func bindRetry(bind func() error) error {
	deadline := time.Now().Add(busyWait)
	for {
		err := bind()
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close closes every socket and unmaps the UMEM; sharing sockets close before the owner.
func (p *Port) Close() error {
	p.CloseSockets()
	if p.UMEM != nil {
		return p.UMEM.Unmap()
	}
	return nil
}

// CloseSockets closes the sockets but leaves the UMEM mapped: for a caller that cannot be sure
// nothing reads it any more (frames lent to another goroutine). The memory is then never
// unmapped.
func (p *Port) CloseSockets() error {
	for i := len(p.Links) - 1; i >= 0; i-- {
		p.Links[i].sock.Close()
	}
	p.Links = nil
	return nil
}

// FD is the socket's file descriptor, for the XSKMAP and poll(2).
func (l *Link) FD() int { return l.sock.FD }

// PollFd is the descriptor poll(2) waits on for received frames.
func (l *Link) PollFd() int { return l.sock.FD }

// Receive takes up to len(d) received descriptors.
func (l *Link) Receive(d []Desc) int { return l.sock.Rx.Dequeue(d) }

// RxReady reports whether received descriptors wait on the rx ring. It reads only the ring's
// shared indices, so any goroutine may ask while the owner sleeps.
func (l *Link) RxReady() bool { return l.sock.Rx.Outstanding() > 0 }

// Fill gives free frames to the kernel for receiving.
func (l *Link) Fill(addrs []uint64) int { return l.sock.Fill.Enqueue(addrs) }

// FillOutstanding is how many frames sit in the fill ring, not yet taken by the kernel.
func (l *Link) FillOutstanding() uint32 { return l.sock.Fill.Outstanding() }

// Complete takes up to len(addrs) frames whose transmission finished.
func (l *Link) Complete(addrs []uint64) int { return l.sock.Comp.Dequeue(addrs) }

// Transmit queues descriptors on the tx ring; the caller then calls Flush.
func (l *Link) Transmit(d []Desc) int { return l.sock.Tx.Enqueue(d) }

// maxKicks bounds one Flush: a 2048-entry ring at 32 frames per copy-mode kick takes 64.
const maxKicks = 80

// Flush kicks the kernel while the tx ring holds frames and each kick makes progress. It
// reports whether frames are still waiting, and returns how many kicks it made.
func (l *Link) Flush() (pending bool, kicks int) {
	tx := l.sock.Tx
	for kicks < maxKicks {
		left := tx.Outstanding()
		if left == 0 {
			return false, kicks
		}
		if l.needWakeup && !l.busyPoll && !tx.NeedWakeup() {
			// With busy polling every kick is also a busy poll of the queue's NAPI,
			// which may be all that runs it (interrupts deferred): kick regardless.
			return true, kicks
		}
		if err := l.sock.KickTx(); err != nil {
			return true, kicks
		}
		kicks++
		if l.ZeroCopy || tx.Outstanding() == left {
			// Zero-copy drivers drain asynchronously; no progress means the device is busy.
			return tx.Outstanding() > 0, kicks
		}
	}
	return tx.Outstanding() > 0, kicks
}

// WakeRx kicks the kernel when it asked for a wakeup to consume the fill ring.
func (l *Link) WakeRx() {
	if !l.needWakeup || l.sock.Fill.NeedWakeup() {
		l.sock.KickRx()
	}
}

// BusyPolling reports whether the socket was set up for busy polling (Config.BusyPoll).
func (l *Link) BusyPolling() bool { return l.busyPoll }

// BusyPoll runs the queue's NAPI poll once in this call (a non-blocking recvfrom on the
// socket), when the socket busy polls and has a NAPI id; otherwise the call returns at once
// (and, in zero-copy mode, wakes the driver when the fill ring asked for it). Received frames
// are on the rx ring when it returns. Call it from the owning shard only; it allocates nothing.
func (l *Link) BusyPoll() { l.sock.KickRx() }

// NAPIID is the NAPI id the kernel recorded for the socket (SO_INCOMING_NAPI_ID): the NAPI
// instance a busy poll on it runs, or 0 when it has none (see the package doc for when). Safe
// from any goroutine while the socket is open.
func (l *Link) NAPIID() (uint32, error) {
	v, err := unix.GetsockoptInt(l.sock.FD, unix.SOL_SOCKET, unix.SO_INCOMING_NAPI_ID)
	if err != nil {
		return 0, fmt.Errorf("%s queue %d: SO_INCOMING_NAPI_ID: %w", l.Iface, l.Queue, err)
	}
	return uint32(v), nil
}

// Stats are the kernel's counters for one socket.
type Stats struct {
	RxDropped, RxInvalid, TxInvalid, RxRingFull, FillRingEmpty, TxRingEmpty uint64
}

// Stats reads the kernel's counters; safe to call from any goroutine.
func (l *Link) Stats() Stats {
	st, err := l.sock.Stats()
	if err != nil {
		return Stats{}
	}
	return Stats{st.Rx_dropped, st.Rx_invalid_descs, st.Tx_invalid_descs, st.Rx_ring_full, st.Rx_fill_ring_empty_descs, st.Tx_ring_empty_descs}
}
