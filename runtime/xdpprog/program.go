package xdpprog

import (
	"errors"
	"fmt"
	"log"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options configures Load.
type Options struct {
	// MaxQueues is the size of the XSKMAP: receive queues 0..MaxQueues-1
	// can get a socket. Default 64.
	MaxQueues int
	// MaxFastFlows sizes the fast flow table (FastFlow). Default DefaultMaxFastFlows.
	MaxFastFlows int
	// Logf receives the few control-plane log lines (the native → generic
	// fallback). Default log.Printf.
	Logf func(format string, args ...any)
}

// DefaultMaxQueues is the XSKMAP size when Options.MaxQueues is zero.
const DefaultMaxQueues = 64

// maxMaxQueues bounds Options.MaxQueues (the kernel caps a device at 4096
// queues, include/linux/netdevice.h).
const maxMaxQueues = 4096

// Program is netchan's XDP program and its maps, loaded in the kernel and
// attached to at most one interface. Its methods are safe for concurrent use.
type Program struct {
	opts Options

	mu       sync.Mutex
	closed   bool
	coll     *ebpf.Collection
	prog     *ebpf.Program
	xsks     *ebpf.Map
	ctrs     *ebpf.Map
	config   *ebpf.Map
	pfxs     *ebpf.Map
	protos   *ebpf.Map
	ports    *ebpf.Map
	arp      *ebpf.Map
	fast     *ebpf.Map
	fastDev  *ebpf.Map
	deny     *ebpf.Map
	addrPort *ebpf.Map
	// The flow specs' maps (flows.go).
	flowShapes *ebpf.Map
	flowMap    *ebpf.Map

	cfg       uint32               // shadow of config[0]
	portBits  [numPortWords]uint64 // shadow of the ports map
	claims    claimState           // who holds which rule (claims.go)
	denySet   map[[4]byte]struct{} // shadow of the deny map
	kernelPfx []netip.Prefix       // as last given to SetKernelAddrs
	link      link.Link            // nil when not attached
	ifindex   int                  // attached interface
	mode      Mode                 // mode actually used
}

// Load assembles the XDP program and loads it and its maps into the kernel.
// Nothing is attached yet: call Attach. All rules start empty, so the
// program passes everything to the kernel until something is claimed.
func Load(opts Options) (*Program, error) {
	if opts.MaxQueues == 0 {
		opts.MaxQueues = DefaultMaxQueues
	}
	if opts.MaxQueues < 1 || opts.MaxQueues > maxMaxQueues {
		return nil, fmt.Errorf("xdpprog: Options.MaxQueues %d out of range: use 1..%d (0 for %d)",
			opts.MaxQueues, maxMaxQueues, DefaultMaxQueues)
	}
	if opts.MaxFastFlows == 0 {
		opts.MaxFastFlows = DefaultMaxFastFlows
	}
	if opts.MaxFastFlows < 1 {
		return nil, fmt.Errorf("xdpprog: Options.MaxFastFlows %d: use a positive size (0 for %d)", opts.MaxFastFlows, DefaultMaxFastFlows)
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}

	coll, err := ebpf.NewCollection(collectionSpec(opts.MaxQueues, opts.MaxFastFlows))
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			// A bug in this package, not in the caller's setup: show the log.
			return nil, fmt.Errorf("xdpprog: the kernel verifier rejected the XDP program (a netchan bug, please report it with this log): %+v", verr)
		}
		return nil, wrapPerm("loading the XDP program and its maps", err)
	}
	p := &Program{
		opts:     opts,
		coll:     coll,
		prog:     coll.Programs[progName],
		xsks:     coll.Maps[mapXSKs],
		ctrs:     coll.Maps[mapCounters],
		config:   coll.Maps[mapConfig],
		pfxs:     coll.Maps[mapPrefixes],
		protos:   coll.Maps[mapProtos],
		ports:    coll.Maps[mapPorts],
		arp:      coll.Maps[mapARP],
		fast:     coll.Maps[mapFast],
		fastDev:  coll.Maps[mapFastDev],
		deny:     coll.Maps[mapDeny],
		addrPort: coll.Maps[mapAddrPort],
		denySet:  map[[4]byte]struct{}{},

		flowShapes: coll.Maps[mapShapes],
		flowMap:    coll.Maps[mapFlows],
	}
	return p, nil
}

// Attach attaches the program to the interface through a bpf_link, so the
// kernel detaches it when the link's last fd closes: on Close, or when the
// process dies, even by SIGKILL. It returns the mode actually used.
//
// ModeAuto tries native mode first and, if the driver refuses, logs why and
// attaches in generic mode. ModeNative returns ErrNativeRefused instead.
// An interface that already has an XDP program gives ErrAlreadyAttached, a
// missing one ErrNoInterface, a lack of privilege ErrPermission.
// A Program attaches to one interface only (its XSKMAP is keyed by queue).
func (p *Program) Attach(ifindex int, mode Mode) (Mode, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, ErrClosed
	}
	if p.link != nil {
		return 0, fmt.Errorf("xdpprog: this Program is already attached to ifindex %d (%s mode): Load one Program per interface",
			p.ifindex, p.mode)
	}
	if mode != ModeAuto && mode != ModeNative && mode != ModeGeneric {
		return 0, fmt.Errorf("xdpprog: invalid mode %v: use ModeAuto, ModeNative or ModeGeneric", mode)
	}
	if ifindex < 1 {
		return 0, fmt.Errorf("%w: ifindex %d (interface indices start at 1)", ErrNoInterface, ifindex)
	}
	name, err := checkInterface(ifindex)
	if err != nil {
		return 0, err
	}

	var l link.Link
	var nativeErr error
	used := mode
	switch mode {
	case ModeNative, ModeAuto:
		l, err = link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: ifindex, Flags: link.XDPDriverMode})
		if err == nil {
			used = ModeNative
			break
		}
		if cerr := classifyAttachErr(ifindex, name, "native", err); cerr != nil {
			return 0, cerr
		}
		if mode == ModeNative {
			return 0, fmt.Errorf("%w on %s (ifindex %d): %s; use generic or auto mode: %w",
				ErrNativeRefused, name, ifindex, nativeHint(err), err)
		}
		nativeErr = err
		p.opts.Logf("xdpprog: native XDP attach on %s (ifindex %d) refused: %s (%v); falling back to generic mode, which is slower",
			name, ifindex, nativeHint(err), err)
		fallthrough
	case ModeGeneric:
		l, err = link.AttachXDP(link.XDPOptions{Program: p.prog, Interface: ifindex, Flags: link.XDPGenericMode})
		if err != nil {
			if cerr := classifyAttachErr(ifindex, name, "generic", err); cerr != nil {
				return 0, cerr
			}
			if nativeErr != nil {
				return 0, fmt.Errorf("xdpprog: generic XDP attach on %s (ifindex %d) failed: %w (native was refused too: %v)", name, ifindex, err, nativeErr)
			}
			return 0, fmt.Errorf("xdpprog: generic XDP attach on %s (ifindex %d) failed: %w", name, ifindex, err)
		}
		used = ModeGeneric
	}
	p.link, p.ifindex, p.mode = l, ifindex, used
	return used, nil
}

// Ifindex returns the interface the program is attached to, 0 if none.
func (p *Program) Ifindex() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.link == nil {
		return 0
	}
	return p.ifindex
}

// checkInterface returns the interface's name, ErrNoInterface if there is
// none, or ErrAlreadyAttached if it already has an XDP program.
func checkInterface(ifindex int) (string, error) {
	lnk, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return "", fmt.Errorf("%w: no interface has index %d in this network namespace (run the attaching process inside the interface's namespace, e.g. with `ip netns exec`)",
				ErrNoInterface, ifindex)
		}
		return "", wrapPerm(fmt.Sprintf("looking up ifindex %d", ifindex), err)
	}
	name := lnk.Attrs().Name
	if x := lnk.Attrs().Xdp; x != nil && (x.Attached || x.ProgId != 0) {
		return name, alreadyAttached(ifindex, name, x)
	}
	return name, nil
}

// classifyAttachErr maps the attach errors that are not "the driver refused
// this mode" to sentinels; it returns nil for a refusal.
func classifyAttachErr(ifindex int, name, mode string, err error) error {
	switch {
	case isPerm(err):
		return fmt.Errorf("%w: attaching XDP in %s mode to %s (ifindex %d): %s: %w",
			ErrPermission, mode, name, ifindex, permHint, err)
	case errors.Is(err, unix.ENODEV):
		return fmt.Errorf("%w: ifindex %d (%s) disappeared: %w", ErrNoInterface, ifindex, name, err)
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
		// Someone attached between our check and our attach, or the other
		// mode is in use (native and generic cannot be active together).
		var x *netlink.LinkXdp
		if lnk, lerr := netlink.LinkByIndex(ifindex); lerr == nil {
			x = lnk.Attrs().Xdp
		}
		return fmt.Errorf("%w (%v)", alreadyAttached(ifindex, name, x), err)
	}
	return nil
}

func alreadyAttached(ifindex int, name string, x *netlink.LinkXdp) error {
	who := "an XDP program"
	if x != nil && x.ProgId != 0 {
		who = fmt.Sprintf("XDP program id %d (%s mode)", x.ProgId, attachModeName(x.AttachMode))
	}
	return fmt.Errorf("%w: %s (ifindex %d) has %s: stop the other netchan instance (`bpftool link` shows who holds an XDP bpf_link), or remove a program attached by ip/netlink with `ip link set dev %s xdp off`",
		ErrAlreadyAttached, name, ifindex, who, name)
}

func attachModeName(m uint32) string {
	switch m {
	case 1: // XDP_ATTACHED_DRV
		return "native"
	case 2: // XDP_ATTACHED_SKB
		return "generic"
	case 3: // XDP_ATTACHED_HW
		return "offload"
	case 4: // XDP_ATTACHED_MULTI
		return "multiple"
	}
	return "unknown"
}

// Close detaches the program (closing its bpf_link) and closes the program
// and its maps. The AF_XDP sockets registered with it are not closed.
// Calling Close again returns nil.
func (p *Program) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	if p.link != nil {
		if err := p.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("xdpprog: detaching from ifindex %d: %w", p.ifindex, err))
		}
		p.link = nil
	}
	p.coll.Close()
	return errors.Join(errs...)
}

// RegisterSocket makes XSKMAP[queue] = fd: claimed frames received on that
// queue go to this AF_XDP socket. The socket should be bound to the same
// interface and queue (a redirect to a socket bound elsewhere is dropped).
// Register it after bind: the kernel (6.18) accepts an unbound AF_XDP socket
// here, and frames redirected to it are dropped instead of falling back to
// the kernel.
func (p *Program) RegisterSocket(queue int, fd int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkQueue(queue); err != nil {
		return err
	}
	if fd < 0 {
		return fmt.Errorf("xdpprog: RegisterSocket(queue %d): invalid fd %d", queue, fd)
	}
	if err := p.xsks.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSOCK) || errors.Is(err, unix.EBADF) {
			return fmt.Errorf("xdpprog: RegisterSocket(queue %d): fd %d is not an AF_XDP socket: %w", queue, fd, err)
		}
		return wrapPerm(fmt.Sprintf("RegisterSocket(queue %d, fd %d)", queue, fd), err)
	}
	return nil
}

// UnregisterSocket removes the socket of a queue; claimed frames of that
// queue then fall back to the kernel (counted as NoSocket). Removing a queue
// that has no socket is not an error.
func (p *Program) UnregisterSocket(queue int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkQueue(queue); err != nil {
		return err
	}
	if err := p.xsks.Delete(uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return wrapPerm(fmt.Sprintf("UnregisterSocket(queue %d)", queue), err)
	}
	return nil
}

func (p *Program) checkQueue(queue int) error {
	if p.closed {
		return ErrClosed
	}
	if queue < 0 || queue >= p.opts.MaxQueues {
		return fmt.Errorf("xdpprog: queue %d out of range 0..%d: raise Options.MaxQueues", queue, p.opts.MaxQueues-1)
	}
	return nil
}
