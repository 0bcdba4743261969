package stack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/flowtree"
)

// Socket limits.
const (
	maxSockets     = 4096
	socketRxQueue  = 1024 // datagrams waiting for ReadFrom
	socketTxQueue  = 512  // datagrams waiting for a shard to send them
	maxUDPPayload  = 65507
	ephemeralFirst = 49152
)

// ErrPortInUse is returned when another socket of this host holds the address.
var ErrPortInUse = errors.New("address already in use")

type udpRegistry struct {
	mu    sync.Mutex
	slots [maxSockets]atomic.Pointer[UDPConn]
	next  uint32
	bound map[netip.AddrPort]bool
	n     atomic.Int32
}

func (r *udpRegistry) get(h flowtree.Handle) *UDPConn {
	c := r.slots[uint32(h)%maxSockets].Load()
	if c == nil || c.handle != h {
		return nil
	}
	return c
}

func (r *udpRegistry) count() int { return int(r.n.Load()) }

type rxDatagram struct {
	from netip.AddrPort
	buf  []byte
	n    int
}

type txDatagram struct {
	to  netip.AddrPort
	buf []byte
}

// UDPConn is a UDP socket on the netchan stack, a net.PacketConn. One socket spans all shards:
// any shard delivers what it receives for it; its sends leave through one shard.
type UDPConn struct {
	h      *Host
	handle flowtree.Handle
	local  netip.AddrPort
	shard  int

	rmu     sync.Mutex
	rq      []rxDatagram
	rhead   int
	rlen    int
	rnotify chan struct{}

	wmu     sync.Mutex
	wq      []txDatagram
	wnotify chan struct{}

	closed    atomic.Bool
	closeCh   chan struct{}
	rdeadline deadline
	wdeadline deadline

	icmpErrors atomic.Uint64
	lastICMP   atomic.Uint32 // type<<8 | code of the last ICMP error about this socket
	dropped    atomic.Uint64
}

// ListenUDP opens a UDP socket on laddr (an unspecified address means all of ours; port 0
// picks a free port). It returns once every running shard has registered it.
func (h *Host) ListenUDP(laddr netip.AddrPort) (*UDPConn, error) {
	if a := laddr.Addr(); a.IsValid() && !a.IsUnspecified() {
		if !a.Is4() {
			return nil, fmt.Errorf("listen udp %v: IPv4 only", laddr)
		}
		ours := false
		for i := range h.addrs {
			ours = ours || h.isOurs(i, ipKey(a.As4()))
		}
		if !ours {
			return nil, fmt.Errorf("listen udp %v: not one of this instance's addresses", laddr)
		}
	} else {
		laddr = netip.AddrPortFrom(netip.IPv4Unspecified(), laddr.Port())
	}
	r := &h.udp
	r.mu.Lock()
	if r.bound == nil {
		r.bound = map[netip.AddrPort]bool{}
	}
	inUse := func(ap netip.AddrPort) bool {
		any := netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port())
		if r.bound[ap] || r.bound[any] {
			return true
		}
		if ap.Addr().IsUnspecified() {
			for b := range r.bound {
				if b.Port() == ap.Port() {
					return true
				}
			}
		}
		return false
	}
	if laddr.Port() == 0 {
		found := false
		for p := ephemeralFirst; p <= 65535; p++ {
			if cand := netip.AddrPortFrom(laddr.Addr(), uint16(p)); !inUse(cand) {
				laddr, found = cand, true
				break
			}
		}
		if !found {
			r.mu.Unlock()
			return nil, fmt.Errorf("listen udp: no free port: %w", ErrPortInUse)
		}
	} else if inUse(laddr) {
		r.mu.Unlock()
		return nil, fmt.Errorf("listen udp %v: %w", laddr, ErrPortInUse)
	}
	if int(r.n.Load()) >= maxSockets {
		r.mu.Unlock()
		return nil, fmt.Errorf("listen udp %v: %d sockets open, the most one instance has", laddr, maxSockets)
	}
	var handle flowtree.Handle
	for {
		r.next++
		if r.next >= 1<<24 {
			r.next = 1
		}
		if r.slots[r.next%maxSockets].Load() == nil {
			handle = flowtree.Handle(r.next)
			break
		}
	}
	c := &UDPConn{h: h, handle: handle, local: laddr, rq: make([]rxDatagram, socketRxQueue),
		rnotify: make(chan struct{}, 1), wnotify: make(chan struct{}, 1), closeCh: make(chan struct{})}
	r.bound[laddr] = true
	r.slots[uint32(handle)%maxSockets].Store(c)
	r.n.Add(1)
	r.mu.Unlock()
	h.mu.Lock()
	stacks := h.stacks
	h.mu.Unlock()
	if len(stacks) > 0 {
		c.shard = int(uint32(handle) % uint32(len(stacks)))
	}
	h.control(ctlMsg{add: true, sock: c}, time.Second)
	return c, nil
}

// ListenPacket is ListenUDP for a "host:port" string, like net.ListenPacket("udp", address).
func (h *Host) ListenPacket(address string) (net.PacketConn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		if host, port, e := net.SplitHostPort(address); e == nil && host == "" {
			ap, err = netip.ParseAddrPort("0.0.0.0:" + port)
		}
		if err != nil {
			return nil, fmt.Errorf("listen udp %q: %w", address, err)
		}
	}
	return h.ListenUDP(ap)
}

// deliver is called by a shard; it copies the payload into the socket's queue.
func (c *UDPConn) deliver(from netip.AddrPort, payload []byte) bool {
	if c.closed.Load() {
		return false
	}
	c.rmu.Lock()
	if c.rlen == len(c.rq) {
		c.rmu.Unlock()
		c.dropped.Add(1)
		return false
	}
	d := &c.rq[(c.rhead+c.rlen)%len(c.rq)]
	if cap(d.buf) < len(payload) {
		n := 2048
		for n < len(payload) {
			n <<= 1
		}
		d.buf = make([]byte, n)
	}
	d.n = copy(d.buf[:cap(d.buf)], payload)
	d.from = from
	c.rlen++
	c.rmu.Unlock()
	select {
	case c.rnotify <- struct{}{}:
	default:
	}
	return true
}

func (c *UDPConn) noteICMP(typ, code uint8) {
	c.icmpErrors.Add(1)
	c.lastICMP.Store(uint32(typ)<<8 | uint32(code))
}

// ICMPErrors is how many ICMP errors arrived about this socket's datagrams, and the type and
// code of the last one.
func (c *UDPConn) ICMPErrors() (count uint64, lastType, lastCode uint8) {
	v := c.lastICMP.Load()
	return c.icmpErrors.Load(), uint8(v >> 8), uint8(v)
}

var errClosed = net.ErrClosed

func (c *UDPConn) wait(notify chan struct{}, deadline *deadline) error {
	return waitSocket(notify, c.closeCh, nil, deadline)
}

// ReadFromUDPAddrPort reads one datagram; it does not allocate.
func (c *UDPConn) ReadFromUDPAddrPort(p []byte) (int, netip.AddrPort, error) {
	for {
		if c.closed.Load() {
			return 0, netip.AddrPort{}, c.opErr("read", errClosed)
		}
		if err := c.rdeadline.check(); err != nil {
			return 0, netip.AddrPort{}, c.opErr("read", err)
		}
		c.rmu.Lock()
		if c.rlen > 0 {
			d := &c.rq[c.rhead]
			n := copy(p, d.buf[:d.n])
			from := d.from
			c.rhead = (c.rhead + 1) % len(c.rq)
			c.rlen--
			c.rmu.Unlock()
			return n, from, nil
		}
		c.rmu.Unlock()
		if err := c.wait(c.rnotify, &c.rdeadline); err != nil {
			return 0, netip.AddrPort{}, c.opErr("read", err)
		}
	}
}

// ReadFrom implements net.PacketConn.
func (c *UDPConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(p)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteToUDPAddrPort queues one datagram for sending; it blocks while the send queue is full.
func (c *UDPConn) WriteToUDPAddrPort(p []byte, to netip.AddrPort) (int, error) {
	if !to.Addr().Is4() && !to.Addr().Is4In6() {
		return 0, c.opErr("write", fmt.Errorf("destination %v: IPv4 only", to))
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	if len(p) > maxUDPPayload {
		return 0, c.opErr("write", fmt.Errorf("datagram of %d bytes: at most %d", len(p), maxUDPPayload))
	}
	for {
		if c.closed.Load() {
			return 0, c.opErr("write", errClosed)
		}
		if err := c.wdeadline.check(); err != nil {
			return 0, c.opErr("write", err)
		}
		c.wmu.Lock()
		if len(c.wq) < socketTxQueue {
			wasEmpty := len(c.wq) == 0
			c.wq = append(c.wq, txDatagram{to: to, buf: append([]byte(nil), p...)})
			c.wmu.Unlock()
			if wasEmpty {
				c.h.queueSend(c)
			}
			return len(p), nil
		}
		c.wmu.Unlock()
		if err := c.wait(c.wnotify, &c.wdeadline); err != nil {
			return 0, c.opErr("write", err)
		}
	}
}

// WriteTo implements net.PacketConn; addr must be a *net.UDPAddr.
func (c *UDPConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, c.opErr("write", fmt.Errorf("address %v is not a *net.UDPAddr", addr))
	}
	return c.WriteToUDPAddrPort(p, ua.AddrPort())
}

// takeSends hands a shard up to max queued datagrams.
func (c *UDPConn) takeSends(dst []txDatagram, max int) []txDatagram {
	c.wmu.Lock()
	n := len(c.wq)
	if n > max {
		n = max
	}
	dst = append(dst, c.wq[:n]...)
	rest := copy(c.wq, c.wq[n:])
	for i := rest; i < len(c.wq); i++ {
		c.wq[i] = txDatagram{}
	}
	c.wq = c.wq[:rest]
	c.wmu.Unlock()
	if n > 0 {
		select {
		case c.wnotify <- struct{}{}:
		default:
		}
	}
	return dst
}

// pendingSends reports whether datagrams wait.
func (c *UDPConn) pendingSends() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.wq) > 0
}

// Close unregisters the socket from every shard.
func (c *UDPConn) Close() error {
	if c.closed.Swap(true) {
		return c.opErr("close", errClosed)
	}
	close(c.closeCh)
	c.rdeadline.stop()
	c.wdeadline.stop()
	r := &c.h.udp
	r.mu.Lock()
	delete(r.bound, c.local)
	r.slots[uint32(c.handle)%maxSockets].CompareAndSwap(c, nil)
	r.n.Add(-1)
	r.mu.Unlock()
	c.h.control(ctlMsg{add: false, sock: c}, 0)
	return nil
}

// LocalAddr implements net.PacketConn.
func (c *UDPConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.local) }

// AddrPort is the socket's local address.
func (c *UDPConn) AddrPort() netip.AddrPort { return c.local }

// SetDeadline implements net.PacketConn.
func (c *UDPConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.PacketConn.
func (c *UDPConn) SetReadDeadline(t time.Time) error {
	c.rdeadline.set(t, c.rnotify)
	return nil
}

// SetWriteDeadline implements net.PacketConn.
func (c *UDPConn) SetWriteDeadline(t time.Time) error {
	c.wdeadline.set(t, c.wnotify)
	return nil
}

func (c *UDPConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Err: err}
}

var _ net.PacketConn = (*UDPConn)(nil)
