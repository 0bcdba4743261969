package trafficgen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// capture reads frames arriving on the interface through an AF_PACKET socket and checks the
// generator's own reflected frames.
type capture struct {
	fd                               int
	cfg                              *Config
	received, mismatched, duplicates atomic.Uint64
	seen                             map[uint64]bool
	done                             chan struct{}
}

func openCapture(ifindex int, c *Config) (*capture, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return nil, fmt.Errorf("capture socket: %w (needs CAP_NET_RAW)", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("capture bind: %w", err)
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	return &capture{fd: fd, cfg: c, seen: map[uint64]bool{}, done: make(chan struct{})}, nil
}

func (c *capture) run() {
	buf := make([]byte, 4096)
	want := make([]byte, 4096)
	for {
		select {
		case <-c.done:
			return
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := buf[:n]
		if n < payloadOff+16 || binary.BigEndian.Uint32(f[payloadOff:]) != magic || binary.BigEndian.Uint32(f[payloadOff+4:]) != c.cfg.RunID {
			continue
		}
		seq := binary.BigEndian.Uint64(f[payloadOff+8:])
		m := c.cfg.Build(want, seq)
		var ok bool
		if c.cfg.Receive {
			// Forwarded: new Ethernet addresses, everything from the EtherType on as sent.
			ok = n == m && bytes.Equal(f[12:], want[12:m])
		} else {
			Reflect(want[:m])
			ok = bytes.Equal(f, want[:m])
		}
		if !ok {
			c.mismatched.Add(1)
			continue
		}
		if c.seen[seq] {
			c.duplicates.Add(1)
			continue
		}
		c.seen[seq] = true
		c.received.Add(1)
	}
}

func (c *capture) close() {
	close(c.done)
	time.Sleep(150 * time.Millisecond)
	unix.Close(c.fd)
}
