// Package kernelsock is the benchmark's kernel baseline: one UDP socket that receives in
// batches with recvmmsg(2) and either drops what it got or sends every datagram back to its
// sender with sendmmsg(2) (the kernel swaps the addresses). Its loop runs on one pinned thread
// and blocks in recvmmsg when idle (MSG_WAITFORONE: wait for the first datagram, take whatever
// else is queued), which is how a kernel UDP server is written.
package kernelsock

import (
	"errors"
	"fmt"
	"net/netip"
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
}

// Counts are the socket's figures.
type Counts struct {
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	// TxErrors are datagrams sendmmsg refused.
	TxErrors uint64 `json:"tx_errors"`
	Recvs    uint64 `json:"recv_calls"`
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
	go s.run()
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
