package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// TCPConn is a TCP connection on the netchan stack, a net.Conn. Its shard (the one that owns
// its 4-tuple) runs the protocol; the user's goroutines meet it only at the two byte rings
// (receive and send), which a mutex guards, and through notify channels. A write wakes the
// shard (ShardInfo.Wake) once per batch of writes, not once per call.
type TCPConn struct {
	h      *Host
	st     *Stack
	shard  int
	local  netip.AddrPort
	remote netip.AddrPort
	ifc    int
	nh     [4]byte
	lst    *TCPListener // until accepted; shard-only
	cc     CongestionControl
	app    TCPApp // serves the connection on its shard (ListenTCPApp); shard-only
	tcb    tcb    // shard-only

	mu    sync.Mutex
	rbuf  []byte
	rhead int
	rlen  int
	sbuf  []byte
	shead int
	slen  int
	sfin  bool  // the user closed the sending side: FIN after the data
	abort bool  // Close with unread data: RST
	eof   bool  // the peer's FIN arrived after all data
	err   error // how the connection failed

	rnotify, wnotify chan struct{}
	closeCh          chan struct{} // closed by Close
	doneCh           chan struct{} // closed when the connection leaves the shard
	estCh            chan struct{} // closed when the handshake completes (or fails)
	estOnce          sync.Once
	doneOnce         sync.Once
	userClosed       atomic.Bool
	poked            atomic.Bool
	noDelay          atomic.Bool
	rdeadline        deadline
	wdeadline        deadline
	rwndSent         atomic.Uint32
	pub              connPub
	laddr, raddr     atomic.Pointer[net.TCPAddr] // LocalAddr and RemoteAddr, made once

	// Keepalive settings: the user writes them, the shard reads them (kaDirty: re-arm).
	kaOn, kaDirty   atomic.Bool
	kaIdle, kaIntvl atomic.Int64
	kaCount         atomic.Int32
}

// connPub holds the figures the shard publishes for ConnStats.
type connPub struct {
	state                               atomic.Uint32
	srtt, rttvar, rto                   atomic.Int64
	cwnd, ssthresh, mss                 atomic.Uint32
	retransmits, sackedBytes, fastRetrs atomic.Uint64
}

// newConn makes a connection with congestion control cc (resolved).
func (h *Host) newConn(local, remote netip.AddrPort, cc CongestionControl) *TCPConn {
	cfg := &h.tcp.cfg
	c := &TCPConn{h: h, local: local, remote: remote, cc: cc, rbuf: make([]byte, cfg.RecvBuffer), sbuf: make([]byte, cfg.SendBuffer),
		rnotify: make(chan struct{}, 1), wnotify: make(chan struct{}, 1), closeCh: make(chan struct{}),
		doneCh: make(chan struct{}), estCh: make(chan struct{})}
	c.tcb.idx = -1
	c.tcb.lastOOO = -1
	c.tcb.cc.algo = newCongestionControl(cc)
	c.noDelay.Store(true) // as Go's net package
	c.kaOn.Store(cfg.KeepAlive > 0)
	c.kaIdle.Store(int64(defaultKeepAlive))
	if cfg.KeepAlive > 0 {
		c.kaIdle.Store(int64(cfg.KeepAlive))
	}
	c.kaIntvl.Store(int64(cfg.KeepAliveInterval))
	c.kaCount.Store(int32(cfg.KeepAliveCount))
	return c
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// rxStore copies payload (starting at seq, at or after rcvNxt) into the receive ring, merges
// out-of-order ranges and publishes what became contiguous. It runs on the shard.
func (c *TCPConn) rxStore(k *tcb, seq uint32, p []byte, maxRanges int) bool {
	off := int(seq - k.rcvNxt)
	c.mu.Lock()
	size := len(c.rbuf)
	free := size - c.rlen
	if off+len(p) > free {
		if off >= free {
			c.mu.Unlock()
			return false
		}
		p = p[:free-off]
	}
	if off > 0 {
		var idx int
		n := addRange(k.ooo[:maxRanges], k.nooo, seq, seq+uint32(len(p)), &idx)
		if idx < 0 {
			c.mu.Unlock()
			return false
		}
		k.nooo, k.lastOOO = n, idx
	}
	pos := (c.rhead + c.rlen + off) & (size - 1)
	m := copy(c.rbuf[pos:], p)
	copy(c.rbuf, p[m:])
	if off == 0 {
		next := seq + uint32(len(p))
		j := 0
		for j < k.nooo && seqLEQ(k.ooo[j].start, next) {
			next = seqMax(next, k.ooo[j].end)
			j++
		}
		if j > 0 {
			copy(k.ooo[:], k.ooo[j:k.nooo])
			k.nooo -= j
			k.lastOOO = -1
		}
		c.rlen += int(next - k.rcvNxt)
		k.rcvNxt = next
	}
	c.mu.Unlock()
	if off == 0 {
		notify(c.rnotify)
		c.appReady()
	}
	return true
}

// copySend copies len(dst) bytes from offset off of the send ring (shard side; the bytes
// were published under the mutex before the shard read slen).
func (c *TCPConn) copySend(dst []byte, off int) {
	size := len(c.sbuf)
	pos := (c.shead + off) & (size - 1)
	m := copy(dst, c.sbuf[pos:])
	copy(dst[m:], c.sbuf)
}

// freeSend drops n acknowledged bytes from the send ring (shard side).
func (c *TCPConn) freeSend(n int) {
	c.mu.Lock()
	n = min(n, c.slen)
	c.shead = (c.shead + n) & (len(c.sbuf) - 1)
	c.slen -= n
	c.mu.Unlock()
	notify(c.wnotify)
	c.appReady()
}

func (c *TCPConn) setEOF() {
	c.mu.Lock()
	c.eof = true
	c.mu.Unlock()
	notify(c.rnotify)
	c.appReady()
}

func (c *TCPConn) setErr(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *TCPConn) terminate(error) {
	c.doneOnce.Do(func() { close(c.doneCh) })
	c.estOnce.Do(func() { close(c.estCh) })
	notify(c.rnotify)
	notify(c.wnotify)
	c.appReady()
}

func (c *TCPConn) signalEstablished() { c.estOnce.Do(func() { close(c.estCh) }) }

func (c *TCPConn) publishState() { c.pub.state.Store(uint32(c.tcb.state)) }

func (c *TCPConn) publishStats() {
	k := &c.tcb
	p := &c.pub
	p.srtt.Store(k.rtt.srtt)
	p.rttvar.Store(k.rtt.rttvar)
	p.rto.Store(k.rtt.timeout())
	p.cwnd.Store(k.cc.cwnd)
	p.ssthresh.Store(k.cc.ssthresh)
	p.mss.Store(k.mss)
	p.retransmits.Store(k.retransmits)
	p.sackedBytes.Store(k.sackedBytes)
}

// poke tells the connection's shard that the user changed something (data to send, room in
// the receive ring, a close). Many pokes before the shard's next pass cost one wake.
func (c *TCPConn) poke() {
	if c.poked.Swap(true) {
		return
	}
	s := c.st
	s.tcp.pokeMu.Lock()
	s.tcp.pokeQ = append(s.tcp.pokeQ, c)
	s.tcp.pokeMu.Unlock()
	s.tcp.pokeAny.Store(true)
	if s.wake != nil {
		s.wake()
	}
}

func (c *TCPConn) wait(ch chan struct{}, deadline *deadline) error {
	return waitSocket(ch, c.closeCh, c.doneCh, deadline)
}

// Read implements net.Conn.
func (c *TCPConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.userClosed.Load() {
			return 0, c.opErr("read", net.ErrClosed)
		}
		if err := c.rdeadline.check(); err != nil {
			return 0, c.opErr("read", err) // as a kernel socket: even with data waiting
		}
		n, err, empty := c.tryRead(p)
		if !empty {
			return n, err
		}
		if err := c.wait(c.rnotify, &c.rdeadline); err != nil {
			return 0, c.opErr("read", err)
		}
	}
}

// Write implements net.Conn: it copies p into the send ring, blocking while the ring is full.
func (c *TCPConn) Write(p []byte) (int, error) {
	n := 0
	for {
		if c.userClosed.Load() {
			return n, c.opErr("write", net.ErrClosed)
		}
		if err := c.wdeadline.check(); err != nil {
			return n, c.opErr("write", err) // as a kernel socket: even with room in the ring
		}
		k, err := c.tryWrite(p[n:])
		if k > 0 {
			n += k
			c.poke()
		}
		if err != nil {
			return n, err
		}
		if n == len(p) {
			return n, nil
		}
		select {
		case <-c.doneCh:
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			if err == nil {
				err = syscall.EPIPE
			}
			return n, c.opErr("write", err)
		default:
		}
		if err := c.wait(c.wnotify, &c.wdeadline); err != nil {
			return n, c.opErr("write", err)
		}
	}
}

// CloseWrite sends a FIN after the data written so far; reading goes on.
func (c *TCPConn) CloseWrite() error {
	if c.userClosed.Load() {
		return c.opErr("close", net.ErrClosed)
	}
	c.mu.Lock()
	c.sfin = true
	c.mu.Unlock()
	c.poke()
	return nil
}

// Close implements net.Conn: written data is still delivered and a FIN follows (the
// connection finishes in the background); with unread received data, a RST goes instead
// (RFC 2525, as Linux does).
func (c *TCPConn) Close() error {
	if c.userClosed.Swap(true) {
		return c.opErr("close", net.ErrClosed)
	}
	close(c.closeCh)
	c.rdeadline.stop()
	c.wdeadline.stop()
	c.mu.Lock()
	c.sfin = true
	if c.rlen > 0 {
		c.abort = true
	}
	c.mu.Unlock()
	if c.st != nil {
		c.poke()
	}
	return nil
}

// LocalAddr implements net.Conn.
func (c *TCPConn) LocalAddr() net.Addr { return cachedAddr(&c.laddr, c.local) }

// RemoteAddr implements net.Conn.
func (c *TCPConn) RemoteAddr() net.Addr { return cachedAddr(&c.raddr, c.remote) }

// cachedAddr returns *p, made from a on first use: net/http asks for the addresses (through
// errors, which carry them) on every request, and a new TCPAddr each time was garbage.
func cachedAddr(p *atomic.Pointer[net.TCPAddr], a netip.AddrPort) *net.TCPAddr {
	if t := p.Load(); t != nil {
		return t
	}
	t := net.TCPAddrFromAddrPort(a)
	p.Store(t)
	return t
}

// SetDeadline implements net.Conn.
func (c *TCPConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (c *TCPConn) SetReadDeadline(t time.Time) error {
	c.rdeadline.set(t, c.rnotify)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *TCPConn) SetWriteDeadline(t time.Time) error {
	c.wdeadline.set(t, c.wnotify)
	return nil
}

// SetNoDelay turns Nagle's algorithm off (true, the default, as in Go's net package) or on.
func (c *TCPConn) SetNoDelay(on bool) error {
	c.noDelay.Store(on)
	return nil
}

// SetKeepAlive turns keepalive probes on or off (as net.TCPConn); the idle time, interval
// and count stay as they were (TCPConfig's, or 15 s, 15 s and 9).
func (c *TCPConn) SetKeepAlive(on bool) error {
	c.kaOn.Store(on)
	c.kaChanged()
	return nil
}

// SetKeepAlivePeriod sets the idle time before the first keepalive probe (as net.TCPConn).
func (c *TCPConn) SetKeepAlivePeriod(d time.Duration) error {
	if d > 0 {
		c.kaIdle.Store(int64(d))
		c.kaChanged()
	}
	return nil
}

// SetKeepAliveConfig sets keepalive as net.TCPConn.SetKeepAliveConfig does: Enable turns it
// on or off; a zero Idle, Interval or Count takes the default (TCPConfig's, or 15 s, 15 s and
// 9), a negative one leaves the current value.
func (c *TCPConn) SetKeepAliveConfig(kc net.KeepAliveConfig) error {
	cfg := &c.h.tcp.cfg
	switch {
	case kc.Idle == 0 && cfg.KeepAlive > 0:
		c.kaIdle.Store(int64(cfg.KeepAlive))
	case kc.Idle == 0:
		c.kaIdle.Store(int64(defaultKeepAlive))
	case kc.Idle > 0:
		c.kaIdle.Store(int64(kc.Idle))
	}
	switch {
	case kc.Interval == 0:
		c.kaIntvl.Store(int64(cfg.KeepAliveInterval))
	case kc.Interval > 0:
		c.kaIntvl.Store(int64(kc.Interval))
	}
	switch {
	case kc.Count == 0:
		c.kaCount.Store(int32(cfg.KeepAliveCount))
	case kc.Count > 0:
		c.kaCount.Store(int32(min(kc.Count, 1<<30)))
	}
	c.kaOn.Store(kc.Enable)
	c.kaChanged()
	return nil
}

// kaChanged has the shard re-arm the keepalive timer.
func (c *TCPConn) kaChanged() {
	c.kaDirty.Store(true)
	if c.st != nil {
		c.poke()
	}
}

func (c *TCPConn) opErr(op string, err error) error {
	if err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// ConnStats describes one TCP connection, for `netchan status`.
type ConnStats struct {
	Shard       int           `json:"shard"`
	Local       string        `json:"local"`
	Remote      string        `json:"remote"`
	State       string        `json:"state"`
	SRTT        time.Duration `json:"srtt_ns"`
	RTTVar      time.Duration `json:"rttvar_ns"`
	RTO         time.Duration `json:"rto_ns"`
	MSS         uint32        `json:"mss"`
	Cwnd        uint32        `json:"cwnd"`
	Ssthresh    uint32        `json:"ssthresh"`
	Retransmits uint64        `json:"retransmits"`
	SACKedBytes uint64        `json:"sacked_bytes"`
	// CongestionControl is the connection's algorithm.
	CongestionControl CongestionControl `json:"congestion_control"`
}

// Stats returns the connection's figures; safe from any goroutine.
func (c *TCPConn) Stats() ConnStats {
	p := &c.pub
	return ConnStats{Shard: c.shard, Local: c.local.String(), Remote: c.remote.String(), State: tcpState(p.state.Load()).String(),
		SRTT: time.Duration(p.srtt.Load()), RTTVar: time.Duration(p.rttvar.Load()), RTO: time.Duration(p.rto.Load()),
		MSS: p.mss.Load(), Cwnd: p.cwnd.Load(), Ssthresh: p.ssthresh.Load(), Retransmits: p.retransmits.Load(),
		SACKedBytes: p.sackedBytes.Load(), CongestionControl: c.cc}
}

// TCPConns lists the live connections of every shard (TIME_WAIT included).
func (h *Host) TCPConns() []ConnStats {
	h.tcp.mu.Lock()
	conns := make([]*TCPConn, 0, len(h.tcp.conns))
	for c := range h.tcp.conns {
		conns = append(conns, c)
	}
	h.tcp.mu.Unlock()
	out := make([]ConnStats, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.Stats())
	}
	return out
}

// TCPListener is a listening TCP socket, a net.Listener that spans all shards: every shard
// has it in its flow tree, the shard that owns a new connection's 4-tuple runs its handshake,
// and established connections meet in one accept queue.
type TCPListener struct {
	h       *Host
	id      uint32
	local   netip.AddrPort
	backlog int
	cc      CongestionControl // its connections' (resolved)

	mu       sync.Mutex
	q        []*TCPConn
	halfOpen int

	newApp func(shard int) TCPApp // ListenTCPApp: connections go to apps, not Accept

	notify   chan struct{}
	closed   atomic.Bool
	closeCh  chan struct{}
	deadline deadline
}

func (l *TCPListener) reserve() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.q)+l.halfOpen >= l.backlog {
		return false
	}
	l.halfOpen++
	return true
}

func (l *TCPListener) unreserve() {
	l.mu.Lock()
	l.halfOpen--
	l.mu.Unlock()
}

func (l *TCPListener) enqueue(c *TCPConn) bool {
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		return false
	}
	l.q = append(l.q, c)
	l.mu.Unlock()
	notify(l.notify)
	return true
}

// TCPSocketConfig tunes the connections of one listener or one dial; its zero value leaves
// everything to the Host's TCPConfig.
type TCPSocketConfig struct {
	// CongestionControl is the algorithm (empty: TCPConfig.CongestionControl).
	CongestionControl CongestionControl
}

// ListenTCP opens a listener on laddr (an unspecified address means all of ours) with an
// accept queue of backlog connections (0: Config.TCP.Backlog). It returns once every running
// shard has it.
func (h *Host) ListenTCP(laddr netip.AddrPort, backlog int) (*TCPListener, error) {
	return h.ListenTCPWith(laddr, backlog, TCPSocketConfig{})
}

// ListenTCPWith is ListenTCP whose connections take sc.
func (h *Host) ListenTCPWith(laddr netip.AddrPort, backlog int, sc TCPSocketConfig) (*TCPListener, error) {
	l, wg, err := h.listenTCPConfig(laddr, backlog, nil, sc)
	if err != nil {
		return nil, err
	}
	waitGroup(wg, time.Second)
	return l, nil
}

func waitGroup(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func (h *Host) listenTCP(laddr netip.AddrPort, backlog int) (*TCPListener, *sync.WaitGroup, error) {
	return h.listenTCPWith(laddr, backlog, nil)
}

func (h *Host) listenTCPWith(laddr netip.AddrPort, backlog int, newApp func(shard int) TCPApp) (*TCPListener, *sync.WaitGroup, error) {
	return h.listenTCPConfig(laddr, backlog, newApp, TCPSocketConfig{})
}

func (h *Host) listenTCPConfig(laddr netip.AddrPort, backlog int, newApp func(shard int) TCPApp, sc TCPSocketConfig) (*TCPListener, *sync.WaitGroup, error) {
	cc, err := sc.CongestionControl.resolve(h.tcp.cfg.CongestionControl)
	if err != nil {
		return nil, nil, fmt.Errorf("listen tcp %v: %w", laddr, err)
	}
	if a := laddr.Addr(); a.IsValid() && !a.IsUnspecified() {
		if !a.Is4() {
			return nil, nil, fmt.Errorf("listen tcp %v: IPv4 only", laddr)
		}
		ours := false
		for i := range h.addrs {
			ours = ours || h.isOurs(i, ipKey(a.As4()))
		}
		if !ours {
			return nil, nil, fmt.Errorf("listen tcp %v: not one of this instance's addresses", laddr)
		}
	} else {
		laddr = netip.AddrPortFrom(netip.IPv4Unspecified(), laddr.Port())
	}
	if laddr.Port() == 0 {
		return nil, nil, fmt.Errorf("listen tcp %v: give a port", laddr)
	}
	if backlog <= 0 {
		backlog = h.tcp.cfg.Backlog
	}
	th := &h.tcp
	th.mu.Lock()
	if th.ports[laddr.Port()] > 0 {
		th.mu.Unlock()
		return nil, nil, fmt.Errorf("listen tcp %v: %w", laddr, ErrPortInUse)
	}
	var id uint32
	for {
		th.nextID++
		if th.lslots[th.nextID%maxSockets].Load() == nil {
			id = th.nextID % maxSockets
			break
		}
	}
	l := &TCPListener{h: h, id: id, local: laddr, backlog: backlog, cc: cc, notify: make(chan struct{}, 1), closeCh: make(chan struct{}), newApp: newApp}
	th.ports[laddr.Port()]++
	th.listeners[id] = l
	th.lslots[id].Store(l)
	th.mu.Unlock()
	return l, h.tcpControlAll(tcpCtl{listen: l}), nil
}

// tcpControlAll queues m on every running shard.
func (h *Host) tcpControlAll(m tcpCtl) *sync.WaitGroup {
	h.mu.Lock()
	stacks := append([]*Stack(nil), h.stacks...)
	h.mu.Unlock()
	wg := &sync.WaitGroup{}
	for _, s := range stacks {
		if s == nil {
			continue
		}
		wg.Add(1)
		m.done = wg
		s.tcpQueue(m)
	}
	return wg
}

func (s *Stack) tcpQueue(m tcpCtl) {
	s.tcp.ctlMu.Lock()
	s.tcp.ctl = append(s.tcp.ctl, m)
	s.tcp.ctlMu.Unlock()
	s.tcp.ctlAny.Store(true)
	if s.wake != nil {
		s.wake()
	}
}

// tcpStart registers the listeners opened before the shard started.
func (s *Stack) tcpStart() {
	th := &s.h.tcp
	th.mu.Lock()
	ls := make([]*TCPListener, 0, len(th.listeners))
	for _, l := range th.listeners {
		ls = append(ls, l)
	}
	th.mu.Unlock()
	for _, l := range ls {
		s.tcpQueue(tcpCtl{listen: l})
	}
}

// Listen is ListenTCP for a "host:port" string, like net.Listen("tcp", address).
func (h *Host) Listen(address string) (net.Listener, error) {
	ap, err := parseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %q: %w", address, err)
	}
	return h.ListenTCP(ap, 0)
}

func parseAddrPort(address string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(address)
	if err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, port, e := net.SplitHostPort(address)
	if e != nil || host != "" {
		return netip.AddrPort{}, err
	}
	return netip.ParseAddrPort("0.0.0.0:" + port)
}

// Accept implements net.Listener.
func (l *TCPListener) Accept() (net.Conn, error) { return l.AcceptTCP() }

// AcceptTCP waits for the next established connection.
func (l *TCPListener) AcceptTCP() (*TCPConn, error) {
	for {
		if l.closed.Load() {
			return nil, l.opErr(net.ErrClosed)
		}
		l.mu.Lock()
		if len(l.q) > 0 {
			c := l.q[0]
			l.q[0] = nil
			l.q = l.q[1:]
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		// A closed listener is reported at the top of the loop.
		if err := waitSocket(l.notify, l.closeCh, nil, &l.deadline); err != nil && err != errClosed {
			return nil, l.opErr(err)
		}
	}
}

// SetDeadline sets the deadline for Accept.
func (l *TCPListener) SetDeadline(t time.Time) error {
	l.deadline.set(t, l.notify)
	return nil
}

// Close implements net.Listener: it stops accepting and resets queued connections.
func (l *TCPListener) Close() error {
	if l.closed.Swap(true) {
		return l.opErr(net.ErrClosed)
	}
	close(l.closeCh)
	l.deadline.stop()
	th := &l.h.tcp
	th.mu.Lock()
	th.ports[l.local.Port()]--
	delete(th.listeners, l.id)
	th.lslots[l.id].CompareAndSwap(l, nil)
	th.mu.Unlock()
	l.h.tcpControlAll(tcpCtl{listen: l, unlisten: true})
	l.mu.Lock()
	q := l.q
	l.q = nil
	l.mu.Unlock()
	for _, c := range q {
		c.mu.Lock()
		c.abort = true
		c.mu.Unlock()
		c.userClosed.Store(true)
		close(c.closeCh)
		c.poke()
	}
	return nil
}

// Addr implements net.Listener.
func (l *TCPListener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.local) }

func (l *TCPListener) opErr(err error) error {
	return &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
}

// ErrNoShards is returned by Dial before any shard runs the stack.
var ErrNoShards = errors.New("stack: no shard runs this host's stack yet (start the shards first)")

// DialTCP opens a connection to raddr from one of the shards (chosen in turn); the source
// port is picked so that this shard owns the connection's 4-tuple.
func (h *Host) DialTCP(ctx context.Context, raddr netip.AddrPort) (*TCPConn, error) {
	return h.DialTCPWith(ctx, raddr, TCPSocketConfig{})
}

// DialTCPWith is DialTCP for a connection that takes sc.
func (h *Host) DialTCPWith(ctx context.Context, raddr netip.AddrPort, sc TCPSocketConfig) (*TCPConn, error) {
	c, err := h.dialAsyncConfig(0, raddr, sc)
	if err != nil {
		return nil, err
	}
	select {
	case <-c.estCh:
	case <-ctx.Done():
		c.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(raddr), Err: ctx.Err()}
	}
	c.mu.Lock()
	err = c.err
	c.mu.Unlock()
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(raddr), Err: err}
	}
	if tcpState(c.pub.state.Load()) < stEstablished {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(raddr), Err: syscall.ECONNREFUSED}
	}
	return c, nil
}

// dialAsync starts a connection and returns before the handshake.
func (h *Host) dialAsync(raddr netip.AddrPort) (*TCPConn, error) { return h.dialAsyncFrom(0, raddr) }

// dialAsyncFrom is dialAsync from local port lport (0: an ephemeral port the shard picks).
// With a given port the dial goes to the shard that owns the 4-tuple (tcpOwner), and fails
// with EADDRNOTAVAIL there if the 4-tuple is taken. Unexported: the tests use it for a
// simultaneous open (RFC 9293 §3.5), where each side dials the other's port.
func (h *Host) dialAsyncFrom(lport uint16, raddr netip.AddrPort) (*TCPConn, error) {
	return h.dialAsyncConfig(lport, raddr, TCPSocketConfig{})
}

func (h *Host) dialAsyncConfig(lport uint16, raddr netip.AddrPort, sc TCPSocketConfig) (*TCPConn, error) {
	cc, err := sc.CongestionControl.resolve(h.tcp.cfg.CongestionControl)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %v: %w", raddr, err)
	}
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	if !raddr.Addr().Is4() {
		return nil, fmt.Errorf("dial tcp %v: IPv4 only", raddr)
	}
	_, _, src, ok := h.routes.Lookup(raddr.Addr().As4())
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(raddr), Err: syscall.ENETUNREACH}
	}
	h.mu.Lock()
	var live []*Stack
	for _, s := range h.stacks {
		if s != nil {
			live = append(live, s)
		}
	}
	h.mu.Unlock()
	if len(live) == 0 {
		return nil, ErrNoShards
	}
	s := live[int(h.tcp.dialRR.Add(1))%len(live)]
	if lport != 0 {
		o := h.tcpOwner(src, raddr.Addr().As4(), lport, raddr.Port(), s.shards)
		for _, st := range live {
			if st.shard == o {
				s = st
			}
		}
	}
	c := h.newConn(netip.AddrPortFrom(netip.AddrFrom4(src), lport), raddr, cc)
	c.st = s
	c.shard = s.shard
	s.tcpQueue(tcpCtl{dial: c})
	return c, nil
}

// Dial is DialTCP for a "host:port" string, like net.Dial("tcp", address).
func (h *Host) Dial(ctx context.Context, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %q: %w", address, err)
	}
	return h.DialTCP(ctx, ap)
}

var (
	_ net.Conn     = (*TCPConn)(nil)
	_ net.Listener = (*TCPListener)(nil)
)
