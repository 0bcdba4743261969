package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netchan/netchan/bench/report"
)

// Pair is one subject of the comparison: two hosts of one TCP/IP stack (A 198.18.0.1 and
// B 198.18.0.2) joined by an in-memory wire, reached through net.Conn and net.Listener.
type Pair interface {
	// Listen opens a listener on host B.
	Listen(port uint16) (net.Listener, error)
	// Dial connects from host A to host B's port.
	Dial(ctx context.Context, port uint16) (net.Conn, error)
	// Wire reports what the wire carried so far.
	Wire() WireStats
	// TCPStats are the two hosts' TCP counters added up (retransmissions, timeouts, ...),
	// by each stack's own names.
	TCPStats() map[string]uint64
	// Close stops both hosts and the wire.
	Close() error
}

// WireStats counts frames on the wire, both directions together.
type WireStats struct {
	Frames uint64 `json:"frames"` // frames taken from a sender
	Lost   uint64 `json:"lost"`   // dropped on purpose (the seeded loss)
	// Overflow counts frames the receiver had no room for: netchan's wire holds them and
	// offers them again (each counted once), gVisor's channel endpoint drops them.
	Overflow uint64 `json:"overflow"`
}

func (w WireStats) sub(o WireStats) WireStats {
	return WireStats{w.Frames - o.Frames, w.Lost - o.Lost, w.Overflow - o.Overflow}
}

// dirStats are one wire direction's counters, written by its pump.
type dirStats struct{ frames, lost, overflow atomic.Uint64 }

func sumWire(d []*dirStats) WireStats {
	var w WireStats
	for _, s := range d {
		w.Frames += s.frames.Load()
		w.Lost += s.lost.Load()
		w.Overflow += s.overflow.Load()
	}
	return w
}

// loss decides, from a seeded PCG stream of its own, which frames of one direction are lost.
type loss struct {
	p   float64
	rng *rand.Rand
}

// lossDirs limits the loss to one direction: "both" (default), "ab" (A→B only: data of the
// bulk test, requests) or "ba" (B→A only: ACKs of the bulk test, responses).
var lossDirs = "both"

func newLoss(p float64, seed uint64, dir int) *loss {
	if (lossDirs == "ab" && dir != 0) || (lossDirs == "ba" && dir != 1) {
		p = 0
	}
	return &loss{p: p, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15^uint64(dir)))}
}

func (l *loss) drop() bool { return l.p > 0 && l.rng.Float64() < l.p }

// cpuTime is the process's user+system CPU time (getrusage RUSAGE_SELF).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the CPU time all processes used (the cpu line of /proc/stat: everything
// but idle and iowait), to tell how much of the machine others took during a window.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// window measures a stretch of a run: wall time, process CPU time, the other processes' CPU
// time, wire counters, and optionally a CPU profile.
type window struct {
	p       Pair
	t0      time.Time
	cpu0    time.Duration
	busy0   time.Duration
	wire0   WireStats
	profile *os.File
}

// foreign is the CPU time other processes took during a window, as a share of the machine
// (all CPUs) over its wall time.
func foreign(wall, cpu, busy time.Duration) float64 {
	f := float64(busy-cpu) / float64(wall) / float64(runtime.NumCPU())
	return max(0, f)
}

func startWindow(p Pair, profilePath string) (*window, error) {
	w := &window{p: p}
	if profilePath != "" {
		f, err := os.Create(profilePath)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		w.profile = f
	}
	w.wire0 = p.Wire()
	w.busy0 = machineBusy()
	w.cpu0 = cpuTime()
	w.t0 = time.Now()
	return w, nil
}

func (w *window) stop() (wall, cpu time.Duration, wire WireStats, others float64) {
	wall = time.Since(w.t0)
	cpu = cpuTime() - w.cpu0
	others = foreign(wall, cpu, machineBusy()-w.busy0)
	wire = w.p.Wire().sub(w.wire0)
	if w.profile != nil {
		pprof.StopCPUProfile()
		w.profile.Close()
	}
	return wall, cpu, wire, others
}

// BulkResult is one bulk transfer: one connection from A to B, the receiver reading all.
type BulkResult struct {
	Bytes      int64     `json:"bytes"`
	Seconds    float64   `json:"seconds"`
	Gbps       float64   `json:"gbit_per_s"`
	CPUSeconds float64   `json:"cpu_seconds"`
	CPUPerGB   float64   `json:"cpu_seconds_per_gb"`
	Wire       WireStats `json:"wire"`
	// Others is the share of the machine (all CPUs) that other processes used meanwhile.
	Others     float64 `json:"other_processes_cpu_share"`
	SHA256     string  `json:"sha256,omitempty"` // of the bytes received, with verify
	SentSHA256 string  `json:"sent_sha256,omitempty"`
}

// BulkOptions configure RunBulk.
type BulkOptions struct {
	Bytes   int64
	Port    uint16
	Verify  bool // send pseudo-random bytes and hash both ends (costs CPU: for tests)
	Timeout time.Duration
	Profile string // CPU profile of the measured window, if set
}

const chunk = 64 << 10

// RunBulk sends o.Bytes over one connection from A to B and measures from the first write
// to the receiver's end of file.
func RunBulk(p Pair, o BulkOptions) (BulkResult, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Port == 0 {
		o.Port = 5001
	}
	l, err := p.Listen(o.Port)
	if err != nil {
		return BulkResult{}, fmt.Errorf("listen: %w", err)
	}
	defer l.Close()
	type recvd struct {
		n   int64
		sum string
		err error
	}
	got := make(chan recvd, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- recvd{err: fmt.Errorf("accept: %w", err)}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(o.Timeout))
		var h hash.Hash
		var dst io.Writer = io.Discard
		if o.Verify {
			h = sha256.New()
			dst = h
		}
		n, err := io.CopyBuffer(dst, onlyReader{c}, make([]byte, chunk))
		r := recvd{n: n, err: err}
		if h != nil {
			r.sum = hex.EncodeToString(h.Sum(nil))
		}
		got <- r
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := p.Dial(ctx, o.Port)
	cancel()
	if err != nil {
		return BulkResult{}, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(o.Timeout))
	buf := make([]byte, chunk)
	var src *rand.ChaCha8
	var sent hash.Hash
	if o.Verify {
		src = rand.NewChaCha8([32]byte{'t', 'c', 'p', 'p', 'e', 'e', 'r'})
		sent = sha256.New()
	} else {
		for i := range buf {
			buf[i] = byte(i * 7)
		}
	}
	runtime.GC()
	w, err := startWindow(p, o.Profile)
	if err != nil {
		return BulkResult{}, err
	}
	var werr error
	for left := o.Bytes; left > 0; {
		b := buf[:min(int64(len(buf)), left)]
		if src != nil {
			src.Read(b)
			sent.Write(b)
		}
		n, err := c.Write(b)
		left -= int64(n)
		if err != nil {
			werr = fmt.Errorf("write: %w", err)
			break
		}
	}
	if werr == nil {
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			werr = cw.CloseWrite()
		} else {
			werr = errors.New("the connection has no CloseWrite")
		}
	}
	var r recvd
	if werr == nil {
		r = <-got
	}
	wall, cpu, wire, others := w.stop()
	if werr != nil {
		return BulkResult{}, werr
	}
	if r.err != nil {
		return BulkResult{}, fmt.Errorf("receive after %d bytes: %w", r.n, r.err)
	}
	if r.n != o.Bytes {
		return BulkResult{}, fmt.Errorf("received %d bytes, sent %d", r.n, o.Bytes)
	}
	res := BulkResult{Bytes: r.n, Seconds: wall.Seconds(), CPUSeconds: cpu.Seconds(), Wire: wire, Others: others, SHA256: r.sum}
	res.Gbps = float64(r.n) * 8 / wall.Seconds() / 1e9
	res.CPUPerGB = cpu.Seconds() / (float64(r.n) / 1e9)
	if sent != nil {
		res.SentSHA256 = hex.EncodeToString(sent.Sum(nil))
		if res.SentSHA256 != res.SHA256 {
			return res, fmt.Errorf("SHA-256 of the received bytes %s differs from the sent %s", res.SHA256, res.SentSHA256)
		}
	}
	return res, nil
}

// onlyReader hides WriteTo so io.CopyBuffer uses our buffer on every stack alike.
type onlyReader struct{ io.Reader }

// RRResult is one request/response run: Conns connections from A to B, each sending a request
// of Size bytes and waiting for a response of Size bytes, in a loop.
type RRResult struct {
	Conns        int     `json:"conns"`
	Size         int     `json:"size"`
	Seconds      float64 `json:"seconds"`
	Transactions int64   `json:"transactions"`
	TPS          float64 `json:"transactions_per_s"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	CPUPerTxUs   float64 `json:"cpu_us_per_transaction"`
	P50Us        float64 `json:"p50_us"`
	P99Us        float64 `json:"p99_us"`
	MaxUs        float64 `json:"max_us"`
	// Latency is the distribution at latencyQuantiles (P 1: the maximum).
	Latency []report.Quantile `json:"latency,omitempty"`
	Wire    WireStats         `json:"wire"`
	Others  float64           `json:"other_processes_cpu_share"`
}

// RROptions configure RunRR.
type RROptions struct {
	Conns    int
	Size     int
	Warmup   time.Duration
	Duration time.Duration
	// Rate, when positive, paces the clients: Rate transactions/s over all connections, each
	// connection sending on its own schedule (evenly spaced, the connections staggered); a
	// transaction that overruns its slot is followed by the next at once. Latency is still
	// measured from the request's write.
	Rate    float64
	Port    uint16
	Profile string
}

// latencyQuantiles are the points of RRResult.Latency: enough for a CDF plot, with its tail.
var latencyQuantiles = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1}

// RunRR runs the request/response test: every transaction that completes inside the measured
// window counts, with its latency (from the request's write to the response's last byte).
func RunRR(p Pair, o RROptions) (RRResult, error) {
	if o.Port == 0 {
		o.Port = 5002
	}
	l, err := p.Listen(o.Port)
	if err != nil {
		return RRResult{}, fmt.Errorf("listen: %w", err)
	}
	defer l.Close()
	var srv sync.WaitGroup
	srvErr := make(chan error, o.Conns)
	srv.Add(1)
	go func() {
		defer srv.Done()
		for range o.Conns {
			c, err := l.Accept()
			if err != nil {
				srvErr <- fmt.Errorf("accept: %w", err)
				return
			}
			srv.Add(1)
			go func() {
				defer srv.Done()
				defer c.Close()
				buf := make([]byte, o.Size)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return // the client closed
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	conns := make([]net.Conn, 0, o.Conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range o.Conns {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := p.Dial(ctx, o.Port)
		cancel()
		if err != nil {
			return RRResult{}, fmt.Errorf("dial: %w", err)
		}
		conns = append(conns, c)
	}
	const (
		warm = iota
		measure
		stop
	)
	var phase atomic.Int32
	lats := make([][]time.Duration, o.Conns)
	errs := make([]error, o.Conns)
	var cli sync.WaitGroup
	deadline := time.Now().Add(o.Warmup + o.Duration + time.Minute)
	for i, c := range conns {
		c.SetDeadline(deadline)
		lats[i] = make([]time.Duration, 0, 1<<16)
		cli.Add(1)
		go func() {
			defer cli.Done()
			req := make([]byte, o.Size)
			resp := make([]byte, o.Size)
			for k := range req {
				req[k] = byte(i + k)
			}
			var interval time.Duration
			var next time.Time
			if o.Rate > 0 {
				interval = time.Duration(float64(o.Conns) / o.Rate * float64(time.Second))
				next = time.Now().Add(interval * time.Duration(i) / time.Duration(o.Conns))
			}
			for n := 0; phase.Load() != stop; n++ {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(interval)
				}
				req[0] = byte(n)
				t0 := time.Now()
				if _, err := c.Write(req); err != nil {
					errs[i] = fmt.Errorf("conn %d: write: %w", i, err)
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					errs[i] = fmt.Errorf("conn %d: read: %w", i, err)
					return
				}
				d := time.Since(t0)
				if !bytes.Equal(req, resp) {
					errs[i] = fmt.Errorf("conn %d: transaction %d: the response differs from the request", i, n)
					return
				}
				if phase.Load() == measure {
					lats[i] = append(lats[i], d)
				}
			}
		}()
	}
	time.Sleep(o.Warmup)
	runtime.GC()
	w, err := startWindow(p, o.Profile)
	if err != nil {
		phase.Store(stop)
		cli.Wait()
		return RRResult{}, err
	}
	phase.Store(measure)
	time.Sleep(o.Duration)
	phase.Store(stop)
	wall, cpu, wire, others := w.stop()
	cli.Wait()
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	l.Close()
	srv.Wait()
	if err := errors.Join(errs...); err != nil {
		return RRResult{}, err
	}
	select {
	case err := <-srvErr:
		return RRResult{}, err
	default:
	}
	var all []time.Duration
	for _, s := range lats {
		all = append(all, s...)
	}
	if len(all) == 0 {
		return RRResult{}, errors.New("no transaction completed in the window")
	}
	slices.Sort(all)
	pct := func(q float64) float64 {
		return float64(all[min(len(all)-1, int(q*float64(len(all))))]) / 1e3
	}
	r := RRResult{Conns: o.Conns, Size: o.Size, Seconds: wall.Seconds(), Transactions: int64(len(all)),
		CPUSeconds: cpu.Seconds(), Wire: wire, Others: others, P50Us: pct(0.50), P99Us: pct(0.99), MaxUs: float64(all[len(all)-1]) / 1e3}
	for _, q := range latencyQuantiles {
		r.Latency = append(r.Latency, report.Quantile{P: q, Micros: pct(q)})
	}
	r.TPS = float64(len(all)) / wall.Seconds()
	r.CPUPerTxUs = cpu.Seconds() * 1e6 / float64(len(all))
	return r, nil
}
