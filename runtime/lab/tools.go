package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/netchan/netchan/runtime/internal/ethtool"
	"github.com/netchan/netchan/stack/header"
)

// Offloads returns the offloads of iface, a device in this process's namespace, by the names
// `ethtool -k` prints ("tx-checksumming", "tcp-segmentation-offload",
// "generic-segmentation-offload", "generic-receive-offload", ...), read through the ethtool
// ioctl. A name is on when any kernel feature it stands for is active, as ethtool shows it.
func Offloads(iface string) (map[string]bool, error) {
	return ethtool.Get(iface)
}

// OffloadNames lists the names Offloads may return, in `ethtool -k`'s order.
func OffloadNames() []string {
	names := make([]string, len(ethtool.Offloads))
	for i, o := range ethtool.Offloads {
		names[i] = o.Name
	}
	return names
}

// ErrNoReply is returned (wrapped) by Ping when no echo request was answered.
var ErrNoReply = errors.New("no echo reply")

// pingPayload is the ICMP data size ping(8) sends by default: with the 8-byte header, 64 bytes.
const pingPayload = 56

// Ping sends count ICMP echo requests to dst (IPv4) from this process's namespace, one every
// interval, through a raw ICMP socket (CAP_NET_RAW), and waits up to wait for each answer. For
// every reply whose identifier, sequence number, checksum and data match what was sent it writes
// a line as ping(8) does ("64 bytes from A: icmp_seq=1 ttl=64 time=0.210 ms"), then a summary.
// It returns the number of replies, and an error wrapping ErrNoReply if there were none.
func Ping(ctx context.Context, w io.Writer, dst netip.Addr, count int, interval, wait time.Duration) (int, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("lab: ping %v: only IPv4", dst)
	}
	if count < 1 {
		count = 1
	}
	conn, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return 0, fmt.Errorf("lab: ping: opening a raw ICMP socket (needs CAP_NET_RAW): %w", err)
	}
	c := conn.(*net.IPConn)
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	id := uint16(os.Getpid())
	var data [pingPayload]byte
	rand.Read(data[:])
	to := &net.IPAddr{IP: dst.AsSlice()}
	fmt.Fprintf(w, "PING %v %d(%d) bytes of data.\n", dst, pingPayload, pingPayload+28)
	replies := 0
	start := time.Now()
	buf := make([]byte, 1500)
	for seq := 1; seq <= count; seq++ {
		if seq > 1 {
			select {
			case <-ctx.Done():
				return replies, ctx.Err()
			case <-time.After(time.Until(start.Add(time.Duration(seq-1) * interval))):
			}
		}
		req := echoMessage(8, id, uint16(seq), data[:])
		sent := time.Now()
		if _, err := c.WriteTo(req, to); err != nil {
			return replies, fmt.Errorf("lab: ping %v: %w", dst, err)
		}
		c.SetReadDeadline(sent.Add(wait))
		for {
			n, _, _, from, err := c.ReadMsgIP(buf, nil)
			if err != nil {
				if ctx.Err() != nil {
					return replies, ctx.Err()
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // no answer to this one
				}
				return replies, fmt.Errorf("lab: ping %v: %w", dst, err)
			}
			ttl, msg, ok := ipv4Payload(buf[:n])
			if !ok || !from.IP.Equal(to.IP) || len(msg) != len(req) || header.Checksum(msg, 0) != 0 {
				continue
			}
			if msg[0] != 0 || msg[1] != 0 || binary.BigEndian.Uint16(msg[4:]) != id || binary.BigEndian.Uint16(msg[6:]) != uint16(seq) || string(msg[8:]) != string(data[:]) {
				continue // someone else's, a request, or not the data we sent
			}
			replies++
			rtt := time.Since(sent)
			fmt.Fprintf(w, "%d bytes from %v: icmp_seq=%d ttl=%d time=%.3f ms\n", len(msg), dst, seq, ttl, float64(rtt.Microseconds())/1000)
			break
		}
	}
	loss := 100 * (count - replies) / count
	fmt.Fprintf(w, "\n--- %v ping statistics ---\n%d packets transmitted, %d received, %d%% packet loss\n", dst, count, replies, loss)
	if replies == 0 {
		return 0, fmt.Errorf("lab: ping %v: %w to %d request(s)", dst, ErrNoReply, count)
	}
	return replies, nil
}

// echoMessage builds an ICMP echo (typ 8) or echo reply (typ 0) with its checksum.
func echoMessage(typ byte, id, seq uint16, data []byte) []byte {
	m := make([]byte, 8+len(data))
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], data)
	binary.BigEndian.PutUint16(m[2:], header.Checksum(m, 0))
	return m
}

// ipv4Payload splits what a raw IPv4 socket reads into the header's TTL and the payload.
func ipv4Payload(b []byte) (ttl int, payload []byte, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return 0, nil, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return 0, nil, false
	}
	return int(b[8]), b[ihl:], true
}
