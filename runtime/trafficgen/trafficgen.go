// Package trafficgen is netchan's small traffic generator for the lab: it transmits UDP frames
// through an AF_XDP socket bound to one chosen queue (on veth the receiver sees them on the
// same queue index, which a kernel socket cannot promise), at a rate, for a count or a duration.
// With Verify it also captures what comes back on the interface (AF_PACKET) and checks that
// each frame is byte for byte the reflection of one it sent.
//
// Frames are deterministic: frame seq of run id is always the same bytes, so the receiver can
// rebuild what it sent instead of remembering it.
//
// For benchmarks it grows: Queues sends on several queues of the interface from one process
// (one AF_XDP socket and UMEM per queue, bursts taken round-robin; kernel UDP senders spread
// unevenly over veth queues, an AF_XDP sender does not); Static builds each UMEM frame once and
// resends it unchanged, so the sender's core spends its time in the kernel's transmit path and
// not in building frames; CPUs pins the whole process; CountReplies attaches a counting XDP
// program (see Counter) to the sender's own interface, so replies are counted and dropped in the
// driver of the sending side, on threaded NAPI pinned with the sender, instead of climbing the
// peer's kernel stack on the receiver's core; Engine EngineXDP sends with XDP_TX in live-frame
// mode instead of AF_XDP, several times faster (see EngineXDP).
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

	"github.com/netchan/netchan/runtime/afxdp"
)

// Config describes one sender.
type Config struct {
	Iface    string
	Queue    int
	SrcMAC   net.HardwareAddr // default: the interface's address
	DstMAC   net.HardwareAddr
	Src      netip.Addr
	Dst      netip.Addr
	SrcPort  uint16        // first source port; flow f uses SrcPort+f
	DstPort  uint16        //
	Flows    int           // distinct source ports (default 1)
	Size     int           // frame size without FCS, ≥ 60 (default 60)
	Count    uint64        // frames to send (0: until Duration)
	Duration time.Duration // 0: until Count
	Rate     int           // frames per second over all queues (0: as fast as possible)
	RunID    uint32        // tells this run's frames from others'
	Verify   bool          // capture and check reflected frames
	// Receive turns the run into a receiver only: it captures frames of RunID that arrive
	// forwarded (Ethernet addresses rewritten, the rest as sent) until Count arrive or Wait
	// passes, and sends nothing.
	Receive bool
	Wait    time.Duration // how long to wait for reflections after sending (default 2s)
	// Queues, when not empty, replaces Queue: one socket per queue, bursts round-robin.
	Queues []int
	// Static builds frame i once into UMEM frame i and resends it unchanged: sequence numbers
	// repeat every NumFrames frames, so it cannot be combined with Verify.
	Static bool
	// CPUs pins every thread of the process to these CPUs (empty: no pinning).
	CPUs []int
	// CountReplies attaches the counting XDP program (Counter) to Iface in native mode for the
	// run, turns threaded NAPI on and pins the interface's NAPI threads to the process's CPUs;
	// Result.Replies is what it counted (every IPv4 frame that arrived; ARP still reaches the
	// kernel). After sending it waits (up to Wait) until replies stop arriving.
	CountReplies bool
	// Announce prints "trafficgen: sending" on stderr when the first burst has gone out.
	Announce bool
	// Engine is EngineAFXDP ("" too) or EngineXDP.
	Engine string
	Logf   func(string, ...any)
}

// Result is what one run did.
type Result struct {
	Iface string `json:"iface"`
	// Engine is the engine that sent: EngineAFXDP when EngineXDP was asked for and the
	// kernel refused live frames.
	Engine     string  `json:"engine"`
	Queue      int     `json:"queue"`
	Queues     []int   `json:"queues,omitempty"`
	Sent       uint64  `json:"sent"`
	SendErrors uint64  `json:"send_dropped"`
	Received   uint64  `json:"received"`
	Mismatched uint64  `json:"mismatched"`
	Duplicates uint64  `json:"duplicates"`
	Seconds    float64 `json:"seconds"`
	PPS        float64 `json:"pps"`
	// TxRingFull counts bursts that did not fit the tx ring whole (the rest waited for the next
	// pass; nothing is dropped).
	TxRingFull uint64 `json:"tx_ring_full,omitempty"`
	// Replies and ReplyBytes are what the counting XDP program counted (CountReplies).
	Replies    uint64 `json:"replies,omitempty"`
	ReplyBytes uint64 `json:"reply_bytes,omitempty"`
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
	if c.Count == 0 && c.Duration == 0 && !c.Receive {
		return Result{}, errors.New("trafficgen: give a count or a duration")
	}
	if c.Static && c.Verify {
		return Result{}, errors.New("trafficgen: static frames repeat their sequence numbers: they cannot be verified")
	}
	switch c.Engine {
	case "", EngineAFXDP:
	case EngineXDP:
		if c.Verify {
			return Result{}, errors.New("trafficgen: the xdp engine sends one frame over and over: it cannot be verified")
		}
	default:
		return Result{}, fmt.Errorf("trafficgen: engine %q: want %s or %s", c.Engine, EngineAFXDP, EngineXDP)
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
	if err := PinProcess(c.CPUs); err != nil {
		return Result{}, err
	}
	queues := c.Queues
	if len(queues) == 0 {
		queues = []int{c.Queue}
	}
	res := Result{Iface: c.Iface, Queue: queues[0], Engine: c.Engine}
	if res.Engine == "" {
		res.Engine = EngineAFXDP
	}
	if len(c.Queues) > 0 {
		res.Queues = c.Queues
	}
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
	var counter *Counter
	if c.CountReplies {
		if counter, err = AttachCounter(ifi.Index, false); err != nil {
			return res, err
		}
		defer counter.Close()
		if err := SetThreadedNAPI(c.Iface); err != nil {
			return res, err
		}
		if _, err := PinNAPIThreads(c.Iface, ProcessCPUs()); err != nil {
			return res, err
		}
	}
	if c.Engine == EngineXDP {
		start := time.Now()
		err := sendLive(ctx, &c, ifi, &res)
		switch {
		case errors.Is(err, errLiveRefused):
			// Say so where a person reads it: the figures are AF_XDP's from here on.
			fmt.Fprintf(os.Stderr, "trafficgen: %v; sending with AF_XDP on queue(s) %v instead\n", err, queues)
			c.Engine, res.Engine = EngineAFXDP, EngineAFXDP
		case err != nil:
			return res, err
		default:
			res.Seconds = time.Since(start).Seconds()
			res.PPS = float64(res.Sent) / res.Seconds
			return res, waitReplies(&c, counter, &res)
		}
	}
	var txqs []*txQueue
	defer func() {
		for _, q := range txqs {
			q.port.Close()
		}
	}()
	for _, q := range queues {
		port, err := afxdp.Open(afxdp.Config{Queue: q, Ifaces: []string{c.Iface}, NumFrames: 4096, RingSize: 2048, Logf: c.Logf})
		if err != nil {
			return res, err
		}
		txqs = append(txqs, newTxQueue(&c, port))
	}
	start := time.Now()
	send(ctx, &c, txqs, &res)
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
	return res, waitReplies(&c, counter, &res)
}

// waitReplies waits until the reply counter has not moved for 200ms (or Wait passes) and
// records what it counted.
func waitReplies(c *Config, counter *Counter, res *Result) error {
	if counter == nil {
		return nil
	}
	deadline := time.Now().Add(c.Wait)
	last, _, _ := counter.Count()
	still := 0
	for time.Now().Before(deadline) && still < 4 {
		time.Sleep(50 * time.Millisecond)
		n, _, err := counter.Count()
		if err != nil {
			break
		}
		if n == last {
			still++
		} else {
			still = 0
		}
		last = n
	}
	var err error
	res.Replies, res.ReplyBytes, err = counter.Count()
	return err
}

// txQueue is one queue's socket, its free frames and the frames built but not yet accepted by
// the tx ring.
type txQueue struct {
	port    *afxdp.Port
	link    *afxdp.Link
	free    []uint64
	pending []afxdp.Desc
	comp    []uint64
	static  []uint32 // Static: length of the frame built in UMEM frame i
}

func newTxQueue(c *Config, port *afxdp.Port) *txQueue {
	fs := uint64(port.UMEM.FrameSize)
	n := int(port.UMEM.NumFrames)
	q := &txQueue{port: port, link: port.Links[0], free: make([]uint64, 0, n),
		pending: make([]afxdp.Desc, 0, 256), comp: make([]uint64, 256)}
	mem := port.Mem()
	if c.Static {
		q.static = make([]uint32, n)
	}
	for i := n - 1; i >= 0; i-- {
		a := uint64(i) * fs
		q.free = append(q.free, a)
		if c.Static {
			q.static[i] = uint32(c.Build(mem[a:a+fs], uint64(i)))
		}
	}
	return q
}

// burst completes finished frames, builds up to want new ones and offers everything pending to
// the tx ring, then kicks. It returns how many frames the ring accepted.
func (q *txQueue) burst(c *Config, seq *uint64, want int, res *Result) int {
	n := q.link.Complete(q.comp)
	q.free = append(q.free, q.comp[:n]...)
	if want > len(q.free) {
		want = len(q.free)
	}
	if room := cap(q.pending) - len(q.pending); want > room {
		want = room
	}
	mem := q.port.Mem()
	fs := uint64(q.port.UMEM.FrameSize)
	for i := 0; i < want; i++ {
		a := q.free[len(q.free)-1]
		q.free = q.free[:len(q.free)-1]
		var ln uint32
		if q.static != nil {
			ln = q.static[a/fs]
		} else {
			ln = uint32(c.Build(mem[a:a+fs], *seq))
		}
		q.pending = append(q.pending, afxdp.Desc{Addr: a, Len: ln})
		*seq++
	}
	m := 0
	if len(q.pending) > 0 {
		m = q.link.Transmit(q.pending)
		if m < len(q.pending) {
			res.TxRingFull++
		}
		q.pending = append(q.pending[:0], q.pending[m:]...)
	}
	q.link.Flush()
	return m
}

// drain gives the last frames time to leave before the socket closes.
func (q *txQueue) drain(deadline time.Time) {
	for len(q.pending) > 0 && time.Now().Before(deadline) {
		m := q.link.Transmit(q.pending)
		q.pending = append(q.pending[:0], q.pending[m:]...)
		q.link.Flush()
	}
	for len(q.free) < int(q.port.UMEM.NumFrames)-len(q.pending) && time.Now().Before(deadline) {
		q.link.Flush()
		n := q.link.Complete(q.comp)
		q.free = append(q.free, q.comp[:n]...)
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

func send(ctx context.Context, c *Config, qs []*txQueue, res *Result) {
	var seq uint64 // frames built
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
	announced := !c.Announce
	for i := 0; ; i++ {
		if i&63 == 0 && ctx.Err() != nil {
			break
		}
		if c.Count > 0 && seq >= c.Count {
			break
		}
		if !end.IsZero() && time.Now().After(end) {
			break
		}
		want := burst
		if c.Count > 0 && c.Count-seq < uint64(want) {
			want = int(c.Count - seq)
		}
		q := qs[i%len(qs)]
		res.Sent += uint64(q.burst(c, &seq, want, res))
		if !announced && res.Sent > 0 {
			fmt.Fprintln(os.Stderr, "trafficgen: sending")
			announced = true
		}
		if interval > 0 {
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
	}
	// Frames built but not yet accepted by a full ring still go out.
	deadline := time.Now().Add(time.Second)
	for _, q := range qs {
		before := len(q.pending)
		q.drain(deadline)
		res.Sent += uint64(before - len(q.pending))
		res.SendErrors += uint64(len(q.pending))
		res.SendErrors += q.link.Stats().TxInvalid
	}
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
