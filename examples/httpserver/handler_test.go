package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/memport"
	"github.com/netchan/netchan/shards"
	"github.com/netchan/netchan/stack"
)

// fakeStats are counters for the handler tests: one shard, one passive open.
func fakeStats() ([]shards.Snapshot, stack.Stats) {
	var st stack.Stats
	st.TCP.PassiveOpens = 1
	return []shards.Snapshot{{Shard: 0, RxPackets: 7, TxPackets: 5}}, st
}

// TestHandlers runs the mux as an http.Handler, with no network at all.
func TestHandlers(t *testing.T) {
	snaps, st := fakeStats()
	mux := newMux(func() []shards.Snapshot { return snaps }, func() stack.Stats { return st })
	serve := func(method, target string, body io.Reader) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, body)
		req.RemoteAddr = "198.18.0.2:40000"
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec
	}

	if rec := serve("GET", "/", nil); rec.Code != 200 || rec.Body.String() != "hello from netchan, 198.18.0.2:40000\n" {
		t.Errorf("GET /: %d %q", rec.Code, rec.Body)
	}

	rec := serve("GET", "/stats", nil)
	var got stats
	if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != 200 || err != nil {
		t.Fatalf("GET /stats: %d %v: %s", rec.Code, err, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /stats: Content-Type %q", ct)
	}
	if len(got.Shards) != 1 || got.Shards[0].RxPackets != 7 || got.Shards[0].TxPackets != 5 || got.Stack.TCP.PassiveOpens != 1 {
		t.Errorf("GET /stats: %+v", got)
	}

	body := make([]byte, 100_001)
	for i := range body {
		body[i] = byte(i * 7)
	}
	if rec := serve("POST", "/echo", bytes.NewReader(body)); rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), body) {
		t.Errorf("POST /echo: %d, %d bytes back, want the %d sent", rec.Code, rec.Body.Len(), len(body))
	}
	if rec := serve("POST", "/echo", bytes.NewReader(make([]byte, maxEcho+1))); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("POST /echo with %d bytes: %d, want 413", maxEcho+1, rec.Code)
	}
	if rec := serve("GET", "/echo", nil); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /echo: %d, want 405", rec.Code)
	}
	if rec := serve("GET", "/nothing", nil); rec.Code != http.StatusNotFound {
		t.Errorf("GET /nothing: %d, want 404", rec.Code)
	}
}

// wire is two netchan hosts in memory, without root: each runs its stack on one shard (the
// production loop, shards.Engine) over an in-memory AF_XDP port (runtime/memport), and a pump
// goroutine per direction moves frames from one port's transmit ring to the other's receive
// ring. The server runs the example's App; the client is a bare stack to dial from.
type wire struct {
	server, client *stack.Host
	engine         *shards.Engine // the server's
	stop           context.CancelFunc
	wg             sync.WaitGroup
	errs           [2]error
}

var (
	serverAddr = netip.MustParsePrefix("198.18.0.1/24")
	clientAddr = netip.MustParsePrefix("198.18.0.2/24")
)

func newWire(t *testing.T) *wire {
	t.Helper()
	w := &wire{}
	var err error
	if w.server, err = stack.NewHost(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{serverAddr}}}}); err != nil {
		t.Fatal(err)
	}
	if w.client, err = stack.NewHost(stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{clientAddr}}}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	var ports [2]*memport.Port
	var engines [2]*shards.Engine
	for i, a := range []netchanApp{{app(w.server), [6]byte{2, 0, 0, 0, 0, 1}}, {app(w.client), [6]byte{2, 0, 0, 0, 0, 2}}} {
		ports[i] = memport.New(1, 4096, 2048, 2048)
		t.Cleanup(ports[i].Close)
		engines[i], err = shards.New(shards.Config{
			Queues:      []shards.Queue{{FrameSize: 2048, NumFrames: 4096, Mem: ports[i].Mem, Links: []shards.Link{ports[i].Links[0]}}},
			NewPipeline: a.app.NewPipeline,
			Owner:       a.app.Owner,
			Ifaces:      []pipelines.Interface{{Name: a.app.Name, MAC: a.mac, MTU: 1500}},
			Logf:        t.Logf,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	w.engine = engines[0]
	for i, e := range engines {
		w.wg.Add(2)
		go func() { defer w.wg.Done(); w.errs[i] = e.Run(ctx) }()
		go func() { defer w.wg.Done(); pump(ctx, ports[i].Links[0], ports[1-i].Links[0]) }()
	}
	t.Cleanup(func() {
		w.stop()
		w.wg.Wait()
		if err := errors.Join(w.errs[:]...); err != nil {
			t.Errorf("shards: %v", err)
		}
	})
	return w
}

type netchanApp struct {
	app pipelines.App
	mac [6]byte
}

// pump plays the wire from src to dst until ctx is done. Frames are copied out of src before
// they go into dst: Drain holds src's lock, Inject takes dst's, and the other direction's pump
// takes them the other way round.
func pump(ctx context.Context, src, dst *memport.Link) {
	var frames [][]byte
	for ctx.Err() == nil {
		frames = frames[:0]
		src.Drain(func(d []byte) { frames = append(frames, append([]byte(nil), d...)) })
		for _, f := range frames {
			for !dst.Inject(f) && ctx.Err() == nil { // dst's rx ring is full: wait for its shard
				time.Sleep(20 * time.Microsecond)
			}
		}
		if len(frames) == 0 {
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// TestHTTPInMemory serves the example's mux with net/http on the example's App (the stack on
// a shard, over an in-memory port) and fetches its pages with net/http's client dialling from
// a second netchan stack: real HTTP over netchan's TCP on both ends, ARP included, no root.
func TestHTTPInMemory(t *testing.T) {
	w := newWire(t)
	ln, err := w.server.Listen(netip.AddrPortFrom(serverAddr.Addr(), 80).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: newMux(w.engine.Snapshot, w.server.Stats)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()

	var mu sync.Mutex
	var locals []string // the client's end of every connection, as its stack chose it
	tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		c, err := w.client.Dial(ctx, addr)
		if err == nil {
			mu.Lock()
			locals = append(locals, c.LocalAddr().String())
			mu.Unlock()
		}
		return c, err
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "http://" + serverAddr.Addr().String()

	get := func(path string) []byte {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s, %v", path, resp.Status, err)
		}
		return b
	}

	body := get("/")
	mu.Lock()
	want := "hello from netchan, " + locals[0] + "\n"
	mu.Unlock()
	if string(body) != want || !strings.HasPrefix(want, "hello from netchan, "+clientAddr.Addr().String()+":") {
		t.Errorf("GET /: %q, want %q", body, want)
	}

	// Bodies larger than a window, in several sizes, on the kept-alive connection.
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 1460, 64 << 10, 300_001, maxEcho} {
		sent := make([]byte, n)
		for i := range sent {
			sent[i] = byte(rng.Uint32())
		}
		resp, err := client.Post(base+"/echo", "application/octet-stream", bytes.NewReader(sent))
		if err != nil {
			t.Fatalf("POST /echo (%d bytes): %v", n, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, sent) {
			t.Fatalf("POST /echo: %s, %v, %d bytes back (equal: %v), want the %d sent", resp.Status, err, len(got), bytes.Equal(got, sent), n)
		}
	}

	var st stats
	if err := json.Unmarshal(get("/stats"), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Shards) != 1 || st.Shards[0].RxPackets == 0 || st.Shards[0].TxPackets == 0 {
		t.Errorf("/stats: the server's shard counted no packets: %+v", st.Shards)
	}
	if st.Stack.TCP.PassiveOpens == 0 || st.Stack.TCP.SegmentsIn < maxEcho/1460 || st.Stack.ARPRequestsIn == 0 {
		t.Errorf("/stats: the server's stack counted %d passive opens, %d segments in, %d ARP requests in",
			st.Stack.TCP.PassiveOpens, st.Stack.TCP.SegmentsIn, st.Stack.ARPRequestsIn)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(locals) != 1 {
		t.Errorf("the client dialled %d connections (%v), want 1 kept alive", len(locals), locals)
	}
}
