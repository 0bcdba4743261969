// Package kernelsock is the benchmark's kernel baseline: one UDP socket that receives in
// batches with recvmmsg(2) and either drops what it got or sends every datagram back to its
// sender with sendmmsg(2) (the kernel swaps the addresses). Its loop runs on one pinned thread
// and blocks in recvmmsg when idle (MSG_WAITFORONE: wait for the first datagram, take whatever
// else is queued), which is how a kernel UDP server is written.
//
// With Options.Epoll the loop is the classic one-packet-per-call server instead, the
// baseline of Polyakov's netchannel paper: epoll_wait(2) for readability, then recvfrom(2)
// one datagram per call until EAGAIN (and sendto(2) each one back when echoing), through
// golang.org/x/sys/unix on a locked, pinned thread (not Go's netpoller).
package kernelsock

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/runtime/cpu"
)

// Options configure a socket.
type Options struct {
	Addr  netip.AddrPort // IPv4 address and port to bind
	Echo  bool           // send every datagram back (else drop)
	Batch int            // datagrams per recvmmsg (default 64)
	// BufBytes sets SO_RCVBUFFORCE and SO_SNDBUFFORCE (default 8 MiB; the kernel's default
	// 208 KiB holds a few hundred datagrams and drops bursts).
	BufBytes int
	CPU      int // pin the loop's thread (-1: no pinning)
	// Epoll: epoll_wait + recvfrom (+ sendto), one datagram per call, instead of
	// recvmmsg/sendmmsg batches.
	Epoll bool
}

// Counts are the socket's figures.
type Counts struct {
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	// TxErrors are datagrams sendmmsg refused.
	TxErrors uint64 `json:"tx_errors"`
	// Recvs are recvmmsg calls that returned datagrams, or (Epoll) epoll_wait calls that
	// returned the socket readable.
	Recvs uint64 `json:"recv_calls"`
}

// Socket is a running receiver.
type Socket struct {
	fd                   int
	opts                 Options
	rx, tx, txErr, recvs atomic.Uint64
	stop                 atomic.Bool
	done                 chan struct{}
	err                  error
}

// Start opens, binds and starts the socket's loop.
func Start(o Options) (*Socket, error) {
	if !o.Addr.Addr().Is4() {
		return nil, fmt.Errorf("kernelsock: %v is not an IPv4 address", o.Addr)
	}
	if o.Batch == 0 {
		o.Batch = 64
	}
	if o.BufBytes == 0 {
		o.BufBytes = 8 << 20
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kernelsock: socket: %w", err)
	}
	s := &Socket{fd: fd, opts: o, done: make(chan struct{})}
	fail := func(err error) (*Socket, error) { unix.Close(fd); return nil, err }
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.BufBytes); err != nil {
		return fail(fmt.Errorf("kernelsock: SO_RCVBUFFORCE: %w", err))
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, o.BufBytes); err != nil {
		return fail(fmt.Errorf("kernelsock: SO_SNDBUFFORCE: %w", err))
	}
	tv := unix.NsecToTimeval(100e6) // recvmmsg returns EAGAIN after 100 ms idle: check stop
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(o.Addr.Port()), Addr: o.Addr.Addr().As4()}); err != nil {
		return fail(fmt.Errorf("kernelsock: bind %v: %w (is the address on an interface?)", o.Addr, err))
	}
	if o.Epoll {
		go s.runEpoll()
	} else {
		go s.run()
	}
	return s, nil
}

func (s *Socket) run() {
	defer close(s.done)
	if s.opts.CPU >= 0 {
		unpin, err := cpu.Pin(s.opts.CPU)
		if err != nil {
			s.err = err
			return
		}
		defer unpin()
	}
	m := newMmsgs(s.opts.Batch, 2048)
	for !s.stop.Load() {
		n, err := m.recv(s.fd, unix.MSG_WAITFORONE)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			s.err = fmt.Errorf("kernelsock: recvmmsg: %w", err)
			return
		}
		s.recvs.Add(1)
		s.rx.Add(uint64(n))
		if !s.opts.Echo {
			continue
		}
		sent := 0
		for sent < n {
			k, err := m.sendBack(s.fd, sent, n)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				s.txErr.Add(uint64(n - sent))
				break
			}
			sent += k
		}
		s.tx.Add(uint64(sent))
	}
}

// runEpoll is the one-datagram-per-call loop: wait in epoll_wait until the socket is
// readable, then recvfrom (MSG_DONTWAIT) one datagram per call until EAGAIN, each sent back
// with one blocking sendto when echoing. Counters are published every 64 datagrams and at
// EAGAIN.
func (s *Socket) runEpoll() {
	defer close(s.done)
	if s.opts.CPU >= 0 {
		unpin, err := cpu.Pin(s.opts.CPU)
		if err != nil {
			s.err = err
			return
		}
		defer unpin()
	} else {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		s.err = fmt.Errorf("kernelsock: epoll_create1: %w", err)
		return
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.fd)}); err != nil {
		s.err = fmt.Errorf("kernelsock: epoll_ctl: %w", err)
		return
	}
	events := make([]unix.EpollEvent, 1)
	buf := make([]byte, 2048)
	for !s.stop.Load() {
		n, err := unix.EpollWait(ep, events, 100) // 100 ms idle: check stop
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			s.err = fmt.Errorf("kernelsock: epoll_wait: %w", err)
			return
		}
		if n == 0 {
			continue
		}
		var rx, tx, txErr uint64
		for {
			m, from, err := unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if !errors.Is(err, unix.EAGAIN) {
					s.err = fmt.Errorf("kernelsock: recvfrom: %w", err)
				}
				break
			}
			rx++
			if s.opts.Echo && from != nil {
				if err := unix.Sendto(s.fd, buf[:m], 0, from); err != nil {
					txErr++
				} else {
					tx++
				}
			}
			if rx == 64 { // under load the socket never runs dry: publish as we go
				s.rx.Add(rx)
				s.tx.Add(tx)
				s.txErr.Add(txErr)
				rx, tx, txErr = 0, 0, 0
			}
		}
		s.recvs.Add(1)
		s.rx.Add(rx)
		s.tx.Add(tx)
		s.txErr.Add(txErr)
		if s.err != nil {
			return
		}
	}
}

// Counts reads the counters; safe while the loop runs.
func (s *Socket) Counts() Counts {
	return Counts{RxPackets: s.rx.Load(), TxPackets: s.tx.Load(), TxErrors: s.txErr.Load(), Recvs: s.recvs.Load()}
}

// Stop ends the loop (within 100 ms) and closes the socket.
func (s *Socket) Stop() error {
	if s.stop.Swap(true) {
		return nil
	}
	<-s.done
	return errors.Join(s.err, unix.Close(s.fd))
}
