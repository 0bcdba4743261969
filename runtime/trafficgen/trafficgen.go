// Package trafficgen is netchan's small traffic generator for the lab: it transmits UDP frames
// through an AF_XDP socket bound to one chosen queue (on veth the receiver sees them on the
// same queue index, which a kernel socket cannot promise), at a rate, for a count or a duration.
// With Verify it also captures what comes back on the interface (AF_PACKET) and checks that
// each frame is byte for byte the reflection of one it sent.
//
// Frames are deterministic: frame seq of run id is always the same bytes, so the receiver can
// rebuild what it sent instead of remembering it.
package trafficgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"netchan/runtime/afxdp"
)

// Config describes one sender.
type Config struct {
	Iface    string
	Queue    int
	SrcMAC   net.HardwareAddr // default: the interface's address
	DstMAC   net.HardwareAddr
	Src      netip.Addr
	Dst      netip.Addr
	SrcPort  uint16 // first source port; flow f uses SrcPort+f
	DstPort  uint16
	Flows    int           // distinct source ports (default 1)
	Size     int           // frame size without FCS, ≥ 60 (default 60)
	Count    uint64        // frames to send (0: until Duration)
	Duration time.Duration // 0: until Count
	Rate     int           // frames per second (0: as fast as possible)
	RunID    uint32        // tells this run's frames from others'
	Verify   bool          // capture and check reflected frames
	// Receive turns the run into a receiver only: it captures frames of RunID that arrive
	// forwarded (Ethernet addresses rewritten, the rest as sent) until Count arrive or Wait
	// passes, and sends nothing.
	Receive bool
	Wait    time.Duration // how long to wait for reflections after sending (default 2s)
	Logf    func(string, ...any)
}

// Result is what one run did.
type Result struct {
	Iface      string  `json:"iface"`
	Queue      int     `json:"queue"`
	Sent       uint64  `json:"sent"`
	SendErrors uint64  `json:"send_dropped"`
	Received   uint64  `json:"received"`
	Mismatched uint64  `json:"mismatched"`
	Duplicates uint64  `json:"duplicates"`
	Seconds    float64 `json:"seconds"`
	PPS        float64 `json:"pps"`
}

const magic = 0x4e43484e // "NCHN"

const headerLen = 14 + 20 + 8

// payloadOff is where the generator's marker (magic, run id, seq) starts in a frame.
const payloadOff = headerLen

// Build writes frame seq of this config into buf and returns its length.
func (c *Config) Build(buf []byte, seq uint64) int {
	size := c.Size
	if size < 60 {
		size = 60
	}
	b := buf[:size]
	for i := range b {
		b[i] = 0
	}
	copy(b[0:6], c.DstMAC)
	copy(b[6:12], c.SrcMAC)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[14:34]
	ipLen := size - 14
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen))
	binary.BigEndian.PutUint16(ip[4:6], uint16(seq))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000)
	ip[8] = 64
	ip[9] = 17
	s4, d4 := c.Src.As4(), c.Dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], ^sum(0, ip))
	udp := b[34:]
	flows := c.Flows
	if flows < 1 {
		flows = 1
	}
	binary.BigEndian.PutUint16(udp[0:2], c.SrcPort+uint16(seq%uint64(flows)))
	binary.BigEndian.PutUint16(udp[2:4], c.DstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(ipLen-20))
	pl := udp[8:]
	if len(pl) >= 16 {
		binary.BigEndian.PutUint32(pl[0:4], magic)
		binary.BigEndian.PutUint32(pl[4:8], c.RunID)
		binary.BigEndian.PutUint64(pl[8:16], seq)
		for i := 16; i < len(pl); i++ {
			pl[i] = byte(seq) + byte(i)
		}
	}
	var ph [12]byte
	copy(ph[0:4], s4[:])
	copy(ph[4:8], d4[:])
	ph[9] = 17
	binary.BigEndian.PutUint16(ph[10:12], uint16(ipLen-20))
	cs := ^sum(uint32(sum(0, ph[:])), udp)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:8], cs)
	return size
}

// Reflect turns a frame into what the reflect pipeline sends back: Ethernet and IPv4
// addresses and UDP ports swapped; checksums stay valid.
func Reflect(b []byte) {
	var t [6]byte
	copy(t[:], b[0:6])
	copy(b[0:6], b[6:12])
	copy(b[6:12], t[:])
	copy(t[:4], b[26:30])
	copy(b[26:30], b[30:34])
	copy(b[30:34], t[:4])
	copy(t[:2], b[34:36])
	copy(b[34:36], b[36:38])
	copy(b[36:38], t[:2])
}

func sum(s uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// Run sends as configured and, with Verify, checks the reflections.
func Run(ctx context.Context, c Config) (Result, error) {
	if c.Count == 0 && c.Duration == 0 {
		return Result{}, errors.New("trafficgen: give a count or a duration")
	}
	ifi, err := net.InterfaceByName(c.Iface)
	if err != nil {
		return Result{}, fmt.Errorf("interface %q: %w", c.Iface, afxdp.ErrNoInterface)
	}
	if c.SrcMAC == nil {
		c.SrcMAC = ifi.HardwareAddr
	}
	if c.Wait == 0 {
		c.Wait = 2 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	res := Result{Iface: c.Iface, Queue: c.Queue}
	if c.Receive {
		return receive(&c, ifi.Index)
	}
	var cap *capture
	if c.Verify {
		if cap, err = openCapture(ifi.Index, &c); err != nil {
			return res, err
		}
		defer cap.close()
		go cap.run()
	}
	port, err := afxdp.Open(afxdp.Config{Queue: c.Queue, Ifaces: []string{c.Iface}, NumFrames: 4096, RingSize: 2048, Logf: c.Logf})
	if err != nil {
		return res, err
	}
	defer port.Close()
	start := time.Now()
	if err := send(ctx, &c, port, &res); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	if res.Seconds > 0 {
		res.PPS = float64(res.Sent) / res.Seconds
	}
	if cap != nil {
		deadline := time.Now().Add(c.Wait)
		for time.Now().Before(deadline) && cap.received.Load() < res.Sent {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // let duplicates, if any, show up
		res.Received = cap.received.Load()
		res.Mismatched = cap.mismatched.Load()
		res.Duplicates = cap.duplicates.Load()
	}
	return res, nil
}

func send(ctx context.Context, c *Config, port *afxdp.Port, res *Result) error {
	l := port.Links[0]
	mem := port.Mem()
	fs := uint64(port.UMEM.FrameSize)
	free := make([]uint64, 0, port.UMEM.NumFrames)
	for i := uint64(0); i < uint64(port.UMEM.NumFrames); i++ {
		free = append(free, i*fs)
	}
	comp := make([]uint64, 256)
	descs := make([]afxdp.Desc, 0, 64)
	var seq uint64
	start := time.Now()
	end := time.Time{}
	if c.Duration > 0 {
		end = start.Add(c.Duration)
	}
	burst := 64
	var interval time.Duration
	if c.Rate > 0 {
		if c.Rate < 64*100 {
			burst = (c.Rate + 99) / 100
		}
		interval = time.Duration(float64(time.Second) * float64(burst) / float64(c.Rate))
	}
	next := start
	for {
		if ctx.Err() != nil {
			break
		}
		if c.Count > 0 && seq >= c.Count {
			break
		}
		if !end.IsZero() && time.Now().After(end) {
			break
		}
		n := l.Complete(comp)
		free = append(free, comp[:n]...)
		want := burst
		if c.Count > 0 && c.Count-seq < uint64(want) {
			want = int(c.Count - seq)
		}
		if want > len(free) {
			want = len(free)
		}
		descs = descs[:0]
		for i := 0; i < want; i++ {
			a := free[len(free)-1]
			free = free[:len(free)-1]
			ln := c.Build(mem[a:a+fs], seq)
			descs = append(descs, afxdp.Desc{Addr: a, Len: uint32(ln)})
			seq++
		}
		m := l.Transmit(descs)
		for _, d := range descs[m:] {
			free = append(free, d.Addr)
			res.SendErrors++
		}
		res.Sent += uint64(m)
		l.Flush()
		if interval > 0 {
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
	}
	// Let the last frames leave before the socket closes.
	deadline := time.Now().Add(time.Second)
	for len(free) < int(port.UMEM.NumFrames) && time.Now().Before(deadline) {
		l.Flush()
		n := l.Complete(comp)
		free = append(free, comp[:n]...)
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	st := l.Stats()
	res.SendErrors += st.TxInvalid
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// receive captures forwarded frames until Count have arrived or Wait has passed.
func receive(c *Config, ifindex int) (Result, error) {
	res := Result{Iface: c.Iface, Queue: c.Queue}
	cap, err := openCapture(ifindex, c)
	if err != nil {
		return res, err
	}
	defer cap.close()
	go cap.run()
	fmt.Fprintln(os.Stderr, "trafficgen: listening")
	start := time.Now()
	deadline := start.Add(c.Wait)
	for time.Now().Before(deadline) && (c.Count == 0 || cap.received.Load() < c.Count) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	res.Seconds = time.Since(start).Seconds()
	res.Received, res.Mismatched, res.Duplicates = cap.received.Load(), cap.mismatched.Load(), cap.duplicates.Load()
	return res, nil
}
