// Package echo is netchan's bundled echo service on its userspace stack: ICMP echo (answered by
// the stack), UDP and TCP echo on port 7, TCP discard on port 9 and HTTP on port 80 (net/http on
// a netchan listener). NewEcho builds the stack for a configuration; App is the pipelines.App to
// start with the front door (netchan.Start); Start serves the ports until its context is done.
// WithReflect and WithFault put a reflect or a fault stage in front of the stack.
//
// The echo services do not reflect into loops. App puts a stage in front of the stack on every
// shard, Guard, that drops UDP echo requests (port 7) from the source ports of services that
// answer every datagram (LoopPorts: echo, chargen, daytime, qotd, time, ...; reason
// echo-loop-port), so that a forged datagram cannot make our echo and another service bounce
// forever, and limits each source address to a token bucket (Echo.UDPGuard; by default 1000
// datagrams a second and a burst of 1000, per shard; reason echo-rate-limit), so that a flood
// from one source neither eats the service nor comes out of it at full rate towards a
// forged victim. Only UDP echo needs this: TCP echo and discard need a handshake, which a
// forged source cannot complete, and the stack answers ICMP echo requests, never echo
// replies. Both drops are counted with their reasons in the shard's drop counters and the
// guard's stage counters (stage udp-echo-guard).
package echo

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/pipelines/fault"
	"github.com/netchan/netchan/stack"
)

// Echo is the bundled echo service set on netchan's stack: ICMP echo (answered by the stack
// itself), UDP and TCP echo on port 7, TCP discard on port 9, and HTTP on port 80 (net/http
// serving on the netchan listener; GET /bytes/N returns N bytes of BytesPattern).
type Echo struct {
	Host *stack.Host
	// RSS, if set, says how the NIC steers flows once the interfaces are attached (the queues
	// are known then); its result (nil: none) goes to Host.SetRSS before the shards start.
	RSS func(pipelines.Attached) (*pipelines.RSS, error)
	// UDPGuard configures the guard App puts in front of the stack on every shard (Guard):
	// UDP echo requests from LoopPorts are dropped, and each source address is limited to
	// Rate datagrams a second (Burst at once) on each shard. The zero value takes the
	// defaults (DefaultUDPRate, DefaultUDPBurst); Rate NoRateLimit (any negative value)
	// turns the rate limit off and keeps the loop-port check. Set it before App.
	UDPGuard GuardConfig
	udp      *stack.UDPConn
	ready    chan struct{} // closed once Serve listens on all its ports (Start waits for it)
}

// BytesPattern is the body of GET /bytes/N: byte i is i mod 251 (251 is prime, so the pattern
// does not line up with segment or buffer sizes and a misplaced block shows).
func BytesPattern(i int) byte { return byte(i % 251) }

// patternBlock holds BytesPattern from offset 0 for 256 periods of 251 bytes (62.75 KiB), built
// once and only read: a body is written as slices of it, each whole block ending on a period
// boundary, so serving /bytes/N allocates nothing per request (a 64 KiB buffer per request
// was 97% of the process's allocations under wrk, and the GC cycles they caused made
// timers and goroutines in the process late).
var patternBlock = func() []byte {
	b := make([]byte, 251*256)
	for i := range b {
		b[i] = BytesPattern(i)
	}
	return b
}()

// writePattern writes the first n bytes of BytesPattern to w.
func writePattern(w io.Writer, n int) error {
	for n > 0 {
		k, err := w.Write(patternBlock[:min(n, len(patternBlock))])
		if err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// HTTPHandler serves GET /bytes/N (at most 1 GiB) and a short text at /.
func HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n > 1<<30 {
			http.Error(w, "want /bytes/N with 0 <= N <= 1073741824", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		writePattern(w, n)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "netchan echo: GET /bytes/N returns N bytes, byte i = i mod 251\n")
	})
	return mux
}

// NewEcho builds the stack for cfg.
func NewEcho(cfg stack.Config) (*Echo, error) {
	h, err := stack.NewHost(cfg)
	if err != nil {
		return nil, err
	}
	return &Echo{Host: h, ready: make(chan struct{})}, nil
}

// App is the pipeline to run: the UDP echo guard (Guard, configured by UDPGuard), then the
// stack, on every shard, claiming our addresses and ARP for them, with fragments steered to
// one shard for reassembly.
func (e *Echo) App() pipelines.App {
	guard := e.UDPGuard
	return pipelines.App{
		Name: "echo",
		NewPipeline: func(shard int) *pipelines.Pipeline {
			return &pipelines.Pipeline{Stages: []pipelines.Stage{NewGuard(guard), e.Host.NewStack(shard)}}
		},
		Claims: e.Host.Claims(),
		Owner:  e.Host.Owner,
		AfterAttach: func(a pipelines.Attached) error {
			if e.RSS == nil {
				return nil
			}
			r, err := e.RSS(a)
			if err != nil {
				return err
			}
			e.Host.SetRSS(r) // before the shards start: it decides every connection's owner
			return nil
		},
	}
}

// WithReflect is App with a reflect stage for UDP to port in front of the stack, claiming all
// IPv4: the demo's pipeline (fast-path traffic to port reflected, the rest served by the stack).
func (e *Echo) WithReflect(port uint16) pipelines.App {
	sp := e.App()
	sp.Name = "reflect+echo"
	newStack := sp.NewPipeline
	sp.NewPipeline = func(shard int) *pipelines.Pipeline {
		p := newStack(shard)
		p.Stages = append([]pipelines.Stage{basic.ReflectUDPPort(port)}, p.Stages...)
		return p
	}
	sp.Claims = append(sp.Claims, claim.All())
	return sp
}

// WithFault is sp with a fault stage (package fault) in front of its stages on every shard:
// received packets are dropped, duplicated, reordered and corrupted as cfg says before the
// rest of the pipeline (the stack, for Echo's App) sees them. Each shard's stage draws from
// its own stream of cfg.Seed; all of them count into c (nil: counters nobody reads). For
// tests and labs: `netchan echo --fault`.
func WithFault(sp pipelines.App, cfg fault.Config, c *fault.Counters) (pipelines.App, error) {
	if err := cfg.Validate(); err != nil {
		return pipelines.App{}, err
	}
	if c == nil {
		c = new(fault.Counters)
	}
	sp.Name = "fault+" + sp.Name
	inner := sp.NewPipeline
	sp.NewPipeline = func(shard int) *pipelines.Pipeline { return fault.New(cfg, shard, c).InFront(inner(shard)) }
	return sp, nil
}

// Start runs Serve in a goroutine and returns once it listens on all its ports, with the
// channel that gets Serve's result after ctx is done. If Serve fails before it listens, Start
// returns its error.
func (e *Echo) Start(ctx context.Context) (served <-chan error, err error) {
	ch := make(chan error, 1)
	go func() { ch <- e.Serve(ctx) }()
	select {
	case <-e.ready:
		return ch, nil
	case err := <-ch:
		if err == nil {
			err = errors.New("echo: the echo service stopped before it listened")
		}
		return nil, err
	}
}

// Serve answers UDP and TCP echo on port 7, TCP discard on 9 and HTTP on 80 until ctx is done.
func (e *Echo) Serve(ctx context.Context) error {
	any := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.IPv4Unspecified(), port) }
	echo, err := e.Host.ListenTCPApp(any(7), 0, func(int) stack.TCPApp { return &echoApp{buf: make([]byte, 64<<10)} })
	if err != nil {
		return err
	}
	discard, err := e.Host.ListenTCPApp(any(9), 0, func(int) stack.TCPApp { return &echoApp{buf: make([]byte, 64<<10), discard: true} })
	if err != nil {
		echo.Close()
		return err
	}
	web, err := e.Host.ListenTCP(any(80), 0)
	if err != nil {
		echo.Close()
		discard.Close()
		return err
	}
	c, err := e.Host.ListenUDP(any(7))
	if err != nil {
		echo.Close()
		discard.Close()
		web.Close()
		return err
	}
	e.udp = c
	close(e.ready)
	srv := &http.Server{Handler: HTTPHandler()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(web) }()
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		c.Close()
		echo.Close()
		discard.Close()
		srv.Close()
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if _, err := c.WriteToUDPAddrPort(buf[:n], from); err != nil && errors.Is(err, net.ErrClosed) {
			return nil
		}
	}
}

// echoApp is TCP echo (or discard) run on the connection's shard (stack.TCPApp): a request
// that arrives in a shard pass is echoed in the same pass, with the ACK on the answer. It
// reads no more than the send ring can take, so a client that does not read its echoes
// fills our send ring, then our receive window, and is held back by TCP's flow control.
type echoApp struct {
	buf     []byte // this shard's; Ready runs only on the shard
	discard bool
}

func (a *echoApp) Ready(c *stack.TCPConn) {
	for {
		n := len(a.buf)
		if !a.discard {
			n = min(n, c.WriteSpace())
		}
		n, err := c.TryRead(a.buf[:n])
		if n > 0 && !a.discard {
			c.TryWrite(a.buf[:n]) // takes all n: only this app writes, and there was room
		}
		if err != nil {
			// The peer's FIN after everything it sent (or a failure): Close sends our FIN
			// after the echoes still in the send ring.
			c.Close()
			return
		}
		if n == 0 {
			return // nothing to read, or no room to echo it: Ready comes again when there is
		}
	}
}
