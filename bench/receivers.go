package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/bench/asavie"
	"github.com/netchan/netchan/bench/kernelsock"
	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/trafficgen"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// Variants of the receiving side.
const (
	// Kernel is a kernel UDP socket: recvmmsg and drop (rx), or recvmmsg + sendmmsg back (reflect).
	Kernel = "kernel"
	// Netchan is netchan's port and shard loop (netchan.Start) running the drop or reflect pipeline.
	Netchan = "netchan"
	// Asavie is github.com/asavie/xdp's socket and rings, same XDP program, pipeline and sizes.
	Asavie = "asavie"
	// XDPDrop is an in-kernel XDP program that counts and drops: the ceiling of the path (rx only).
	XDPDrop = "xdp-drop"
)

// receiver is one variant, running on the receiving interface.
type receiver interface {
	counts() rcvCounts
	stop() error
}

// rcvCounts are a receiver's own figures since it started.
type rcvCounts struct {
	Rx, Tx uint64
	// Drops are packets that reached the receiver's side of the interface and were dropped
	// where the receiver can see it: the AF_XDP socket's rx-ring-full and no-fill-frame drops,
	// the UDP socket's receive-buffer drops.
	Drops  uint64
	Detail any
}

// rxSetup is what a receiver needs to know about the lab.
type rxSetup struct {
	kind   Kind
	ep     lab.Endpoint
	queues []int
	cpu    int
	opts   *Options
	logf   func(string, ...any)
	ctx    context.Context
}

func startReceiver(variant string, s rxSetup) (receiver, error) {
	switch variant {
	case Kernel, Mmsg:
		return startKernel(s, false)
	case Epoll:
		return startKernel(s, true)
	case Netchannel:
		return startNetchannel(s)
	case Netchan:
		return startNetchan(s)
	case Asavie:
		return startAsavie(s)
	case NetchanLoop:
		return startPortLoop(s)
	case XDPDrop:
		if s.kind != KindRx {
			return nil, fmt.Errorf("variant %s measures receive only", XDPDrop)
		}
		c, err := trafficgen.AttachCounter(s.ep.Index, false)
		if err != nil {
			return nil, err
		}
		return xdpDropRcv{c}, nil
	}
	return nil, fmt.Errorf("unknown variant %q (want %s, %s, %s, %s, %s, %s, %s or %s)", variant, Kernel, Netchan, NetchanLoop, Asavie, XDPDrop, Netchannel, Epoll, Mmsg)
}

func pipelineName(k Kind) string {
	if k == KindReflect {
		return "reflect"
	}
	return "drop"
}

// netchan: the shard loop on netchan's port.

type netchanRcv struct{ in *netchan.Instance }

func startNetchan(s rxSetup) (receiver, error) {
	spec, err := basic.ByName(pipelineName(s.kind))
	if err != nil {
		return nil, err
	}
	o := s.opts
	in, err := netchan.Start(netchan.Config{Interfaces: []string{s.ep.Iface}, Queues: s.queues, XDPMode: xdpprog.ModeNative,
		BatchSize: o.BatchSize, UMEM: netchan.UMEM{Frames: uint32(o.NumFrames), RingSize: uint32(o.RingSize)},
		SpinIdle: o.SpinIdle, CPUs: []int{s.cpu}, Logf: s.logf}, spec)
	if err != nil {
		return nil, err
	}
	return netchanRcv{in}, nil
}

func (r netchanRcv) counts() rcvCounts {
	var c rcvCounts
	snap := r.in.Snapshot()
	for _, s := range snap {
		c.Rx += s.RxPackets
		c.Tx += s.TxPackets
		for _, k := range s.Kernel {
			c.Drops += k.RxDropped + k.RxRingFull
		}
	}
	c.Detail = snap
	return c
}

func (r netchanRcv) stop() error { return r.in.Stop() }

// asavie: asavie/xdp's socket in netchan's XDP program, same loop shape and pipeline.

type asavieRcv struct{ d *asavie.Driver }

func startAsavie(s rxSetup) (receiver, error) {
	spec, err := basic.ByName(pipelineName(s.kind))
	if err != nil {
		return nil, err
	}
	o := s.opts
	d, err := asavie.Start(s.ep.Iface, s.queues, asavie.Options{NumFrames: o.NumFrames, FrameSize: 2048,
		RingSize: o.RingSize, BatchSize: o.BatchSize, SpinIdle: o.SpinIdle, CPU: s.cpu,
		NewPipeline: func(i int) *pipelines.Pipeline { return spec.NewPipeline(i) }, Mode: xdpprog.ModeNative, Logf: s.logf})
	if err != nil {
		return nil, err
	}
	return asavieRcv{d}, nil
}

func (r asavieRcv) counts() rcvCounts {
	c := r.d.Counts()
	return rcvCounts{Rx: c.RxPackets, Tx: c.TxPackets, Drops: c.KernelRxDropped + c.KernelRxRingFull, Detail: c}
}

func (r asavieRcv) stop() error { return r.d.Stop() }

// xdp-drop: the counting XDP program on the receiving interface.

type xdpDropRcv struct{ c *trafficgen.Counter }

func (r xdpDropRcv) counts() rcvCounts {
	n, _, _ := r.c.Count()
	return rcvCounts{Rx: n}
}

func (r xdpDropRcv) stop() error { return r.c.Close() }

// kernel: a UDP socket on netchan's interface, which gets a kernel address for this run only.

type kernelRcv struct {
	sock    *kernelsock.Socket
	undo    []func() error
	udpBase sysstat.UDPStats
}

// kernelAddr is the address netchan's end gets for a kernel run: a /32 with the peer as its
// point-to-point partner, so the root namespace gains a route to one host, not to a /24.
func kernelAddr(ep lab.Endpoint) *netlink.Addr {
	a := ep.Addr.Addr()
	p := ep.Peer.Addr.Addr()
	return &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, 32)), Peer: ipNet(netip.PrefixFrom(p, 32))}
}

// kernelEndpoint readies netchan's end ep for a kernel run: its kernelAddr, and a permanent
// neighbour entry for the peer, so replies go out without ARP. It returns what undoes each
// step taken, in the order taken, also when a later step failed.
func kernelEndpoint(ep lab.Endpoint) (undo []func() error, err error) {
	link, err := netlink.LinkByName(ep.Iface)
	if err != nil {
		return nil, err
	}
	addr := kernelAddr(ep)
	if err := netlink.AddrAdd(link, addr); err != nil {
		return nil, fmt.Errorf("kernel run: address %s on %s: %w", addr.IPNet, ep.Iface, err)
	}
	undo = append(undo, func() error { return netlink.AddrDel(link, addr) })
	neigh := &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: ep.Peer.Addr.Addr().AsSlice(), HardwareAddr: ep.Peer.MAC}
	if err := netlink.NeighSet(neigh); err != nil {
		return undo, fmt.Errorf("kernel run: neighbour entry: %w", err)
	}
	return append(undo, func() error { return netlink.NeighDel(neigh) }), nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// startKernel starts the kernel socket variant: recvmmsg/sendmmsg batches, or (epoll) one
// datagram per epoll_wait-driven recvfrom/sendto call.
func startKernel(s rxSetup, epoll bool) (_ receiver, err error) {
	r := &kernelRcv{}
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	undo, err := kernelEndpoint(s.ep)
	r.undo = append(r.undo, undo...)
	if err != nil {
		return nil, err
	}
	// veth has NAPI (and so a NAPI thread to pin) only with XDP or GRO: GRO on for this run.
	if err := ethtool(s.ctx, s.ep.Iface, "gro", "on"); err != nil {
		return nil, err
	}
	r.undo = append(r.undo, func() error { return ethtool(context.Background(), s.ep.Iface, "gro", "off") })
	if r.udpBase, err = sysstat.ReadUDPStats(); err != nil {
		return nil, err
	}
	r.sock, err = kernelsock.Start(kernelsock.Options{Addr: netip.AddrPortFrom(s.ep.Addr.Addr(), benchPort),
		Echo: s.kind == KindReflect, Batch: s.opts.BatchSize, CPU: s.cpu, Epoll: epoll})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (r *kernelRcv) counts() rcvCounts {
	c := r.sock.Counts()
	u, _ := sysstat.ReadUDPStats()
	return rcvCounts{Rx: c.RxPackets, Tx: c.TxPackets, Drops: u.RcvbufErrors - r.udpBase.RcvbufErrors, Detail: c}
}

func (r *kernelRcv) stop() error {
	var errs []error
	if r.sock != nil {
		errs = append(errs, r.sock.Stop())
		r.sock = nil
	}
	for i := len(r.undo) - 1; i >= 0; i-- {
		errs = append(errs, r.undo[i]())
	}
	r.undo = nil
	return errors.Join(errs...)
}

func ethtool(ctx context.Context, iface string, args ...string) error {
	cmd := exec.CommandContext(ctx, "ethtool", append([]string{"-K", iface}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ethtool -K %s %s: %w: %s", iface, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
