package echo_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/stack"
)

// wrkResult is what TestLabWrk reads from wrk's report.
type wrkResult struct {
	Requests                              int
	Duration                              time.Duration
	RequestsPerSec                        float64
	Connect, Read, Write, Timeout, Non2xx int
}

var (
	wrkRequestsRE = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(us|ms|s|m|h)\b`)
	wrkSocketRE   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xxRE   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkRateRE     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
)

// parseWrk reads wrk's report. wrk prints the socket error and non-2xx lines only when one of
// their counts is not zero.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRequestsRE.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no %q line in wrk's output", "N requests in T")
	}
	r.Requests = atoi(m[1])
	f, _ := strconv.ParseFloat(m[2], 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[m[3]]
	r.Duration = time.Duration(f * float64(unit))
	if m := wrkSocketRE.FindStringSubmatch(out); m != nil {
		r.Connect, r.Read, r.Write, r.Timeout = atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4])
	}
	if m := wrkNon2xxRE.FindStringSubmatch(out); m != nil {
		r.Non2xx = atoi(m[1])
	}
	if m := wrkRateRE.FindStringSubmatch(out); m != nil {
		r.RequestsPerSec, _ = strconv.ParseFloat(m[1], 64)
	}
	return r, nil
}

func TestParseWrk(t *testing.T) {
	clean := `Running 10s test @ http://198.18.0.1/bytes/128
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.02ms  31.22ms   88.10%
    Req/Sec    15.40k     1.10k   18.02k    71.50%
  306512 requests in 10.00s, 69.56MB read
Requests/sec:  30650.12
Transfer/sec:      6.96MB
`
	r, err := parseWrk(clean)
	if err != nil || r.Requests != 306512 || r.Duration != 10*time.Second || r.RequestsPerSec != 30650.12 ||
		r.Connect+r.Read+r.Write+r.Timeout+r.Non2xx != 0 {
		t.Errorf("clean report: %+v, %v", r, err)
	}
	bad := `  1200 requests in 9.98s, 1.00MB read
  Socket errors: connect 3, read 7, write 0, timeout 12
  Non-2xx or 3xx responses: 5
Requests/sec:    120.24
`
	r, err = parseWrk(bad)
	if err != nil || r.Requests != 1200 || r.Duration != 9980*time.Millisecond || r.Connect != 3 || r.Read != 7 ||
		r.Write != 0 || r.Timeout != 12 || r.Non2xx != 5 {
		t.Errorf("report with errors: %+v, %v", r, err)
	}
	if _, err := parseWrk("unable to connect to 198.18.0.1:80 Connection refused\n"); err == nil {
		t.Error("a report without a request count parsed")
	}
}

// tickLateness runs a ticker of period until stop is closed and returns, for every tick that was
// due, how late the goroutine saw it (time.Now at the receive minus the tick's due time). The
// ticker keeps its ticks on a grid and drops those its channel has no room for, so a tick
// dropped while the goroutine could not run counts as seen at the next receive: a goroutine
// kept from running for 10 ms shows as ten late ticks, not one.
func tickLateness(period time.Duration, stop <-chan struct{}) []time.Duration {
	tk := time.NewTicker(period)
	defer tk.Stop()
	var late []time.Duration
	var t0 time.Time
	next := 0 // index on the grid t0 + i*period of the first tick not yet seen
	for {
		select {
		case <-stop:
			return late
		case v := <-tk.C: // v is when the tick was due, up to the clock reads' jitter
			now := time.Now()
			if t0.IsZero() {
				t0 = v
			}
			i := max(int((v.Sub(t0)+period/2)/period), next)
			for ; next <= i; next++ {
				late = append(late, now.Sub(t0.Add(time.Duration(next)*period)))
			}
		}
	}
}

// schedLatencies reads the Go scheduler's histogram of how long goroutines waited, runnable,
// for a thread to run them.
func schedLatencies() *metrics.Float64Histogram {
	m := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(m)
	return m[0].Value.Float64Histogram()
}

// histDelta returns the p-th percentiles (0..100) of the waits counted between a and b (upper
// bucket bounds).
func histDelta(a, b *metrics.Float64Histogram, ps ...float64) []time.Duration {
	var total uint64
	for i := range b.Counts {
		total += b.Counts[i] - a.Counts[i]
	}
	out := make([]time.Duration, len(ps))
	for j, p := range ps {
		want := uint64(float64(total)*p/100 + 0.5)
		var seen uint64
		for i := range b.Counts {
			seen += b.Counts[i] - a.Counts[i]
			if seen >= want && seen > 0 {
				out[j] = time.Duration(min(b.Buckets[i+1], 3600) * float64(time.Second))
				break
			}
		}
	}
	return out
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile returns the p-th percentile (0..100) of sorted d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d))*p/100+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

func runWrk(t *testing.T, ns string, timeout time.Duration, args ...string) (wrkResult, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "wrk"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk %s in %s: %v\n%s", strings.Join(args, " "), ns, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		t.Fatalf("wrk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return r, string(out)
}

// TestLabWrk is issue 7's acceptance check: `wrk -c 64 -d 10s` against net/http on netchan's
// listener (two queues, so two shards, one per core on a two-core machine) completes without
// an error, and while both shards carry that load a 1 ms ticker in the netchan process fires
// no more than 2 ms late at p99 (the bar), so socket users and timers are not starved
// by the shards. For comparison the test logs the same ticker in a plain Go net/http server on
// the kernel's TCP under the same load (the control): 4-7 ms on this two-core machine, where
// wrk shares the cores.
//
// The peer's kernel picks each connection's transmit queue by a per-socket hash (the lab sets no
// XPS), and on veth a packet arrives on the queue it was sent from, so 64 connections reach
// both shards; the test checks each shard's receive counter to be sure.
func TestLabWrk(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk is missing: apt-get install wrk (the HTTP load test runs it in the peer's namespace)")
	}
	const (
		conns      = 64
		duration   = 10 * time.Second
		period     = time.Millisecond
		maxP99     = 2 * time.Millisecond // the bar
		minReqs    = 20000                // a sanity floor (2,000/s), far below what two shards serve
		minShare   = 0.10                 // each shard receives at least this share of the packets
		urlPath    = "/bytes/128"
		wrkTimeout = 2 * time.Minute
	)
	l := labtest.New(t, lab.Config{Layout: lab.LayoutPair, QueueCount: 2})
	ep := l.Netchan[0]
	peer := ep.Peer
	noKernelIPv4(t, ep.Iface)
	e, in := startEcho(t, ep, stack.Config{})
	if n := in.Shards(); n != 2 {
		t.Fatalf("%d shards, want 2 (one per queue)", n)
	}
	url := "http://" + ep.Addr.Addr().String() + urlPath

	// HTTP works at all (this also resolves ARP both ways) before anything is measured.
	if r, out := runWrk(t, peer.NS, wrkTimeout, "-t", "1", "-c", "2", "-d", "1s", url); r.Requests == 0 || r.Connect+r.Read+r.Write+r.Timeout+r.Non2xx != 0 {
		t.Fatalf("warm-up run of wrk against %s: %+v\n%s", url, r, out)
	}

	// What the idle instance costs, and the same ticker on the idle instance, for the log.
	cpu0, wall0 := cpuTime(), time.Now()
	time.Sleep(time.Second)
	t.Logf("idle instance: %.1f%% of a core", 100*float64(cpuTime()-cpu0)/float64(time.Since(wall0)))
	stop := make(chan struct{})
	idleDone := make(chan []time.Duration)
	go func() { idleDone <- tickLateness(period, stop) }()
	time.Sleep(time.Second)
	close(stop)
	idle := <-idleDone
	slices.Sort(idle)

	// A 10 s window's p99 on this shared two-core machine can be spoiled by another process
	// (a concurrent build took one run to 3 ms): one more window is measured when the first
	// misses the bar, and every window is logged. Each window's own checks must pass.
	const attempts = 2
	var (
		late    []time.Duration
		elapsed time.Duration
		out     string
	)
	for attempt := 1; ; attempt++ {
		before := in.Snapshot()
		schedBefore := schedLatencies()
		tcpBefore := e.Host.Stats().TCP
		stop = make(chan struct{})
		loadDone := make(chan []time.Duration)
		go func() { loadDone <- tickLateness(period, stop) }()
		// Sample, half way through, which shards own the open connections.
		owners := make(chan map[int]int, 1)
		go func() {
			time.Sleep(duration / 2)
			m := map[int]int{}
			for _, c := range e.Host.TCPConns() {
				m[c.Shard]++
			}
			owners <- m
		}()
		start := time.Now()
		r, wrkOut := runWrk(t, peer.NS, wrkTimeout, "-t", "2", "-c", strconv.Itoa(conns), "-d", duration.String(), "--latency", url)
		elapsed = time.Since(start)
		close(stop)
		late = <-loadDone
		slices.Sort(late)
		after := in.Snapshot()
		schedAfter := schedLatencies()
		tcpAfter := e.Host.Stats().TCP

		out = wrkOut
		t.Logf("attempt %d: wrk output:\n%s", attempt, out)
		t.Logf("wrk: %d requests in %v (%.0f/s), socket errors connect %d read %d write %d timeout %d, non-2xx %d",
			r.Requests, r.Duration, r.RequestsPerSec, r.Connect, r.Read, r.Write, r.Timeout, r.Non2xx)
		t.Logf("GOMAXPROCS %d, NumCPU %d", runtime.GOMAXPROCS(0), runtime.NumCPU())
		t.Logf("ticker lateness idle (%d ticks): p50 %v p99 %v max %v", len(idle),
			percentile(idle, 50), percentile(idle, 99), percentile(idle, 100))
		t.Logf("ticker lateness under load (%d ticks in %v): p50 %v p90 %v p99 %v max %v", len(late), elapsed,
			percentile(late, 50), percentile(late, 90), percentile(late, 99), percentile(late, 100))
		sl := histDelta(schedBefore, schedAfter, 50, 99, 100)
		t.Logf("Go scheduler: goroutines waited, runnable, p50 %v p99 %v max %v (bucket bounds)", sl[0], sl[1], sl[2])
		logTCPDelta(t, "wrk", tcpBefore, tcpAfter)
		t.Logf("connections per owning shard half way through: %v", <-owners)

		var total uint64
		rx := make([]uint64, len(after))
		for i := range after {
			rx[i] = after[i].RxPackets - before[i].RxPackets
			total += rx[i]
			t.Logf("shard %d (queue %d, cpu %d): rx %d tx %d, handed out %d in %d, polls %d, sleeps %d, yields %d, drops %d",
				i, after[i].Queue, after[i].CPU, rx[i], after[i].TxPackets-before[i].TxPackets,
				after[i].HandoffOut-before[i].HandoffOut, after[i].HandoffIn-before[i].HandoffIn,
				after[i].Polls-before[i].Polls, after[i].Sleeps-before[i].Sleeps, after[i].Yields-before[i].Yields, after[i].DropsTotal-before[i].DropsTotal)
		}

		if errs := r.Connect + r.Read + r.Write + r.Timeout; errs != 0 || r.Non2xx != 0 {
			t.Errorf("wrk saw errors: socket errors connect %d, read %d, write %d, timeout %d; non-2xx or 3xx responses %d; want none",
				r.Connect, r.Read, r.Write, r.Timeout, r.Non2xx)
		}
		if r.Requests < minReqs {
			t.Errorf("wrk completed %d requests in %v; want at least %d", r.Requests, r.Duration, minReqs)
		}
		for i, n := range rx {
			if total == 0 || float64(n) < minShare*float64(total) {
				t.Errorf("shard %d received %d of %d packets under load; want both shards to carry at least %.0f%% (did the connections land on one queue?)",
					i, n, total, minShare*100)
			}
		}
		p99 := percentile(late, 99)
		if p99 <= maxP99 || attempt == attempts {
			break
		}
		t.Logf("attempt %d: ticker p99 %v is over the %v bar; measuring one more window", attempt, p99, maxP99)
	}
	if len(late) < int(duration/period)/2 {
		t.Errorf("the ticker saw %d ticks in %v; want about %d", len(late), elapsed, int(elapsed/period))
	}
	p99 := percentile(late, 99)
	ctx, cancel := context.WithTimeout(context.Background(), wrkTimeout)
	defer cancel()
	ctlOut, err := nschild.Command(ctx, peer.NS, "httpcontrol", peer.Addr.Addr().String()+":8080", strconv.Itoa(conns), duration.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("control run: %v: %s", err, ctlOut)
	}
	var ctlP99 time.Duration
	if i := strings.Index(string(ctlOut), "p99 "); i >= 0 {
		ctlP99, err = time.ParseDuration(strings.Fields(string(ctlOut[i+4:]))[0])
	}
	if err != nil || ctlP99 == 0 {
		t.Fatalf("control run: no p99 in %q (%v)", out, err)
	}
	t.Logf("control, a plain Go net/http server on the kernel's TCP under the same wrk load: %s", ctlOut)
	t.Logf("ticker p99 %v in the netchan process vs %v in the control", p99, ctlP99)
	if p99 > maxP99 {
		t.Errorf("a %v ticker in the netchan process fired %v late at p99 (p50 %v, max %v) while both shards served wrk; "+
			"want at most %v (the control, plain Go on kernel TCP under the same load, had %v)",
			period, p99, percentile(late, 50), percentile(late, 100), maxP99, ctlP99)
	}
}

func init() { nschild.Register("httpcontrol", httpControlMain) }

// httpControlMain (kernel side): addr conns duration → serves echo.HTTPHandler with
// net/http on a kernel socket, runs wrk against it with a 1 ms ticker running, and prints
// the ticker's lateness and wrk's figures.
func httpControlMain(args []string) error {
	l, err := net.Listen("tcp4", args[0])
	if err != nil {
		return err
	}
	go http.Serve(l, echo.HTTPHandler())
	stop := make(chan struct{})
	done := make(chan []time.Duration)
	go func() { done <- tickLateness(time.Millisecond, stop) }()
	out, err := exec.Command("wrk", "-t", "2", "-c", args[1], "-d", args[2], "http://"+args[0]+"/bytes/128").CombinedOutput()
	close(stop)
	late := <-done
	if err != nil {
		return fmt.Errorf("wrk: %v: %s", err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	slices.Sort(late)
	_, err = fmt.Printf("ticker p50 %v p99 %v max %v; %.0f requests/s, %d errors, GOMAXPROCS %d",
		percentile(late, 50), percentile(late, 99), percentile(late, 100), r.RequestsPerSec,
		r.Connect+r.Read+r.Write+r.Timeout+r.Non2xx, runtime.GOMAXPROCS(0))
	return err
}
