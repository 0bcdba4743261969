package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netchan/netchan/bench/sysstat"
	"github.com/netchan/netchan/runtime/trafficgen"
)

// The request/response client of `netchan bench tcp-rr`: a Go program on kernel sockets, run in the
// lab's peer namespace as a child process (the netchan binary, or a test binary, re-executed
// under `ip netns exec` with RRClientEnv set). It opens --conns TCP connections to --addr, and
// each connection writes --size bytes and reads the same number back, checks every byte
// against what it sent, and starts over, until it is told to stop.
//
// The parent steers it over stdin: the client writes "rr: connected" to stderr once every
// connection is up (the warm-up starts), and then reads "start" (the measured window opens:
// transactions and their latencies count from here) and "stop" (the window closes, the
// connections finish their transaction and close). The result goes to stdout as JSON.

// RRClientEnv marks a process started as the request/response client.
const RRClientEnv = "NETCHAN_RR_CLIENT"

// rrConnected is the line the client writes to stderr when every connection is up.
const rrConnected = "rr: connected"

// RunRRClientIfAsked runs the client with args and exits when RRClientEnv is set; a test binary
// calls it from init (before TestMain) with os.Args[1:], the netchan binary first thing in
// `netchan bench tcp-rr` with the arguments after "tcp-rr".
func RunRRClientIfAsked(args []string) {
	if os.Getenv(RRClientEnv) == "" {
		return
	}
	if err := RRClientMain(args); err != nil {
		fmt.Fprintln(os.Stderr, "rr client:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// RRClientResult is what the client reports.
type RRClientResult struct {
	Conns int `json:"conns"`
	Size  int `json:"size"`
	CPU   int `json:"cpu"` // -1: not pinned
	// Seconds is the measured window as the client saw it (from "start" to "stop").
	Seconds float64 `json:"seconds"`
	// Transactions completed inside the window; Total over the whole run (warm-up included).
	Transactions uint64 `json:"transactions"`
	Total        uint64 `json:"total_transactions"`
	// BytesChecked are the echoed bytes compared with what was sent (every byte of every
	// transaction of the run: Total × Size when all is well); Mismatches counts transactions
	// whose echo differed.
	BytesChecked  uint64 `json:"bytes_checked"`
	Mismatches    uint64 `json:"mismatches"`
	FirstMismatch string `json:"first_mismatch,omitempty"`
	// Errors are connection errors (one per connection at most).
	Errors []string `json:"errors,omitempty"`
	// Latency of the window's transactions (write to last byte read), in microseconds.
	P50  float64 `json:"p50_us"`
	P90  float64 `json:"p90_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p999_us"`
	Max  float64 `json:"max_us"`
	Mean float64 `json:"mean_us"`
	// CPUNs is the run time of the client's threads in the window.
	CPUNs int64 `json:"cpu_ns"`
	// TCP is the client namespace's TCP counters over the window (only the client uses TCP
	// there), Whole over the whole run (first dial to last close).
	TCP      TCPSNMP `json:"tcp"`
	TCPWhole TCPSNMP `json:"tcp_whole"`
}

// RRClientMain runs the client (see the top of rrclient.go).
func RRClientMain(args []string) error {
	fs := flag.NewFlagSet("rr client", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address:port")
	conns := fs.Int("conns", 16, "connections")
	size := fs.Int("size", 128, "bytes per request and per response")
	cpu := fs.Int("cpu", -1, "pin every thread to this CPU (-1: no pinning)")
	dialFor := fs.Duration("dial-timeout", 10*time.Second, "keep trying to connect this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *conns < 1 || *size < 16 {
		return errors.New("want --addr, --conns >= 1, --size >= 16")
	}
	if *cpu >= 0 {
		if err := trafficgen.PinProcess([]int{*cpu}); err != nil {
			return err
		}
		runtime.GOMAXPROCS(1)
	} else {
		// Not pinned: every CPU, whatever mask the parent (a server confined to its own CPUs
		// for the run) passed on.
		cpus, err := machineCPUs()
		if err != nil {
			return err
		}
		if err := trafficgen.PinProcess(cpus); err != nil {
			return err
		}
		runtime.GOMAXPROCS(len(cpus))
	}
	res := RRClientResult{Conns: *conns, Size: *size, CPU: *cpu}
	tcp0, _ := readTCPSNMP()
	ws := make([]*rrWorker, *conns)
	defer func() {
		for _, w := range ws {
			if w != nil {
				w.c.Close()
			}
		}
	}()
	deadline := time.Now().Add(*dialFor)
	for i := range ws {
		for {
			c, err := net.DialTimeout("tcp4", *addr, time.Second)
			if err == nil {
				ws[i] = &rrWorker{id: i, c: c}
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("connection %d to %s: %w", i, *addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var phase atomic.Int32 // 0 warm-up, 1 measuring, 2 stopping
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(&phase, *size) }()
	}
	fmt.Fprintln(os.Stderr, rrConnected)

	var t0, t1 time.Time
	var cpu0, cpu1 int64
	var tcpA, tcpB TCPSNMP
	sc := bufio.NewScanner(os.Stdin)
	started := false
read:
	for sc.Scan() {
		switch sc.Text() {
		case "start":
			tcpA, _ = readTCPSNMP()
			cpu0, t0 = sysstat.ProcessRunNs(), time.Now()
			phase.Store(1)
			started = true
		case "stop":
			break read
		}
	}
	// stdin closed without "stop" (the parent went away) stops the run too.
	phase.Store(2)
	if started {
		t1, cpu1 = time.Now(), sysstat.ProcessRunNs()
		tcpB, _ = readTCPSNMP()
	}
	// A connection waiting for a response the server never sends would hold the run: give
	// every one a few seconds to finish its transaction.
	for _, w := range ws {
		w.c.SetDeadline(time.Now().Add(3 * time.Second))
	}
	wg.Wait()
	for _, w := range ws {
		w.c.Close()
	}
	time.Sleep(50 * time.Millisecond) // the FINs and their ACKs
	tcp1, _ := readTCPSNMP()
	res.TCPWhole = tcp1.sub(tcp0)

	var h rrHist
	for _, w := range ws {
		res.Transactions += w.txns
		res.Total += w.total
		res.BytesChecked += w.checked
		res.Mismatches += w.bad
		if res.FirstMismatch == "" {
			res.FirstMismatch = w.firstBad
		}
		if w.err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("connection %d: %v", w.id, w.err))
		}
		h.merge(&w.hist)
	}
	if started {
		res.Seconds = t1.Sub(t0).Seconds()
		res.CPUNs = cpu1 - cpu0
		res.TCP = tcpB.sub(tcpA)
	}
	res.P50, res.P90, res.P99, res.P999 = h.quantile(0.50), h.quantile(0.90), h.quantile(0.99), h.quantile(0.999)
	res.Max, res.Mean = float64(h.max)/1e3, h.mean()/1e3
	return json.NewEncoder(os.Stdout).Encode(res)
}

// rrWorker is one connection's loop; its fields are read only after it returns.
type rrWorker struct {
	id       int
	c        net.Conn
	hist     rrHist
	txns     uint64 // in the window
	total    uint64
	checked  uint64
	bad      uint64
	firstBad string
	err      error
}

func (w *rrWorker) run(phase *atomic.Int32, size int) {
	req, resp := make([]byte, size), make([]byte, size)
	for seq := uint64(0); phase.Load() < 2; seq++ {
		rrFill(req, w.id, seq)
		t0 := time.Now()
		if _, err := w.c.Write(req); err != nil {
			w.fail(phase, err)
			return
		}
		if _, err := io.ReadFull(w.c, resp); err != nil {
			w.fail(phase, err)
			return
		}
		lat := time.Since(t0)
		w.total++
		w.checked += uint64(size)
		if !bytes.Equal(req, resp) {
			w.bad++
			if w.firstBad == "" {
				i := 0
				for i < size && req[i] == resp[i] {
					i++
				}
				w.firstBad = fmt.Sprintf("connection %d transaction %d: byte %d is %#02x, sent %#02x", w.id, seq, i, resp[i], req[i])
			}
		}
		if phase.Load() == 1 {
			w.txns++
			w.hist.add(int64(lat))
		}
	}
}

func (w *rrWorker) fail(phase *atomic.Int32, err error) {
	w.err = err
	if phase.Load() == 2 {
		w.err = fmt.Errorf("after stop: %w", err)
	}
}

// rrFill writes a request that differs from every other one on the connection and from every
// other connection's: the connection and sequence number first, then bytes derived from them.
func rrFill(b []byte, conn int, seq uint64) {
	binary.BigEndian.PutUint32(b[0:], uint32(conn))
	binary.BigEndian.PutUint64(b[4:], seq)
	x := byte(seq*131 + uint64(conn)*17)
	for i := 12; i < len(b); i++ {
		b[i] = x + byte(i*7)
	}
}

// rrHist is a log-linear latency histogram in nanoseconds: exact below 128 ns, then 64 buckets
// per power of two (1.6% wide).
type rrHist struct {
	b   [64 * 64]uint64
	n   uint64
	sum float64
	max int64
}

func rrBucket(v int64) int {
	if v < 128 {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 7 // v>>e is in [64, 128)
	return min((e+1)<<6+int(v>>e)-64, 64*64-1)
}

// rrBucketMid is the middle of bucket i, in nanoseconds.
func rrBucketMid(i int) float64 {
	if i < 128 {
		return float64(i)
	}
	e := i>>6 - 1
	low := int64(i&63+64) << e
	return float64(low) + float64(int64(1)<<e)/2
}

func (h *rrHist) add(v int64) {
	h.b[rrBucket(v)]++
	h.n++
	h.sum += float64(v)
	h.max = max(h.max, v)
}

func (h *rrHist) merge(o *rrHist) {
	for i, c := range o.b {
		h.b[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

func (h *rrHist) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// quantile returns the q-quantile in microseconds.
func (h *rrHist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	want := uint64(q*float64(h.n) + 0.5)
	want = max(want, 1)
	var cum uint64
	for i, c := range h.b {
		cum += c
		if cum >= want {
			return rrBucketMid(i) / 1e3
		}
	}
	return float64(h.max) / 1e3
}
