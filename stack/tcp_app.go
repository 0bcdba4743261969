package stack

import (
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// TCPApp serves a listener's connections on their shard's goroutine, run to completion in the
// shard's pass (the way DPDK stacks such as F-Stack or Seastar call their applications): no
// goroutine per connection and no wake-ups between the stack and the application. A request
// that arrives in a pass is answered in the same pass, and the answer carries the ACK.
//
// Ready runs on the connection's shard when something changed that the app may act on: data
// or the peer's FIN arrived, acknowledged data made room in the send ring, or the connection
// ended (TryRead then returns the error). The first call comes when the handshake completes.
// Ready must not block; it uses the connection's TryRead, TryWrite, WriteSpace, CloseWrite and
// Close, and it is the only place the app should touch the connection from.
type TCPApp interface {
	Ready(c *TCPConn)
}

// ListenTCPApp is ListenTCP for connections served by a TCPApp instead of Accept: each shard
// makes its own app with newApp(shard) when it first needs one (per-shard state, such as a
// buffer, needs no lock). Accept on the returned listener waits until Close; Close stops new
// connections and leaves the established ones to their app.
func (h *Host) ListenTCPApp(laddr netip.AddrPort, backlog int, newApp func(shard int) TCPApp) (*TCPListener, error) {
	return h.ListenTCPAppWith(laddr, backlog, newApp, TCPSocketConfig{})
}

// ListenTCPAppWith is ListenTCPApp whose connections take sc.
func (h *Host) ListenTCPAppWith(laddr netip.AddrPort, backlog int, newApp func(shard int) TCPApp, sc TCPSocketConfig) (*TCPListener, error) {
	if newApp == nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: net.TCPAddrFromAddrPort(laddr), Err: syscall.EINVAL}
	}
	l, wg, err := h.listenTCPConfig(laddr, backlog, newApp, sc)
	if err != nil {
		return nil, err
	}
	waitGroup(wg, time.Second)
	return l, nil
}

// shardApp is one shard's app for one listener.
type shardApp struct {
	l   *TCPListener
	app TCPApp
}

// tcpAppFor is the shard's app for l, made on first use.
func (s *Stack) tcpAppFor(l *TCPListener) TCPApp {
	for _, a := range s.tcp.apps {
		if a.l == l {
			return a.app
		}
	}
	app := l.newApp(s.shard)
	s.tcp.apps = append(s.tcp.apps, shardApp{l: l, app: app})
	return app
}

// tcpDropApp forgets the shard's app for a closed listener; its connections keep theirs.
func (s *Stack) tcpDropApp(l *TCPListener) {
	for i, a := range s.tcp.apps {
		if a.l == l {
			s.tcp.apps = append(s.tcp.apps[:i], s.tcp.apps[i+1:]...)
			return
		}
	}
}

// appReady queues the connection's app for a Ready call in the shard's next Originate. It runs
// on the shard.
func (c *TCPConn) appReady() {
	if c.app == nil || c.tcb.appQueued {
		return
	}
	c.tcb.appQueued = true
	c.st.tcp.ready = append(c.st.tcp.ready, c)
}

// tcpRunApps calls Ready for every connection queued since the last call. What the apps
// write is queued as pokes, which the same Originate sends.
func (s *Stack) tcpRunApps() {
	ts := &s.tcp
	list := ts.ready
	ts.ready = ts.readyBuf[:0]
	for _, c := range list {
		c.tcb.appQueued = false
		c.app.Ready(c)
	}
	clear(list)
	ts.readyBuf = list[:0]
}

// TryRead reads what has arrived without waiting: (0, nil) when nothing has, io.EOF after the
// peer's FIN and all data before it, the connection's error when it failed.
func (c *TCPConn) TryRead(p []byte) (int, error) {
	if c.userClosed.Load() {
		return 0, c.opErr("read", net.ErrClosed)
	}
	n, err, _ := c.tryRead(p)
	return n, err
}

// tryRead is one non-blocking step of Read; empty reports that Read would wait.
func (c *TCPConn) tryRead(p []byte) (n int, err error, empty bool) {
	for {
		c.mu.Lock()
		if c.rlen > 0 {
			size := len(c.rbuf)
			n = min(len(p), c.rlen)
			m := copy(p[:n], c.rbuf[c.rhead:])
			copy(p[m:n], c.rbuf)
			c.rhead = (c.rhead + n) & (size - 1)
			c.rlen -= n
			free := uint32(size - c.rlen)
			c.mu.Unlock()
			sent := c.rwndSent.Load()
			if free > sent && (free-sent >= uint32(size)/2 || (free-sent >= 1460 && sent < uint32(size)/2)) {
				c.poke() // the shard sends a window update
			}
			return n, nil, false
		}
		eof, cerr := c.eof, c.err
		c.mu.Unlock()
		if cerr != nil {
			return 0, c.opErr("read", cerr), false
		}
		if eof {
			return 0, io.EOF, false
		}
		select {
		case <-c.doneCh:
			c.mu.Lock()
			done := c.rlen == 0 && !c.eof && c.err == nil
			c.mu.Unlock()
			if done {
				return 0, io.EOF, false
			}
			continue // data, a FIN or an error arrived just before the end: take it
		default:
		}
		return 0, nil, true
	}
}

// WriteSpace is how many bytes TryWrite would take now.
func (c *TCPConn) WriteSpace() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.sfin {
		return 0
	}
	return len(c.sbuf) - c.slen
}

// TryWrite copies as much of p as fits into the send ring without waiting and returns how
// much that was; the error is Write's (closed, failed, or after CloseWrite).
func (c *TCPConn) TryWrite(p []byte) (int, error) {
	if c.userClosed.Load() {
		return 0, c.opErr("write", net.ErrClosed)
	}
	n, err := c.tryWrite(p)
	if n > 0 {
		c.poke()
	}
	return n, err
}

// tryWrite copies what fits of p into the send ring.
func (c *TCPConn) tryWrite(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.opErr("write", c.err)
	}
	if c.sfin {
		return 0, c.opErr("write", syscall.EPIPE)
	}
	size := len(c.sbuf)
	k := min(size-c.slen, len(p))
	if k == 0 {
		return 0, nil
	}
	pos := (c.shead + c.slen) & (size - 1)
	m := copy(c.sbuf[pos:], p[:k])
	copy(c.sbuf, p[m:k])
	c.slen += k
	return k, nil
}
