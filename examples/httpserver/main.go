// Command httpserver serves HTTP with Go's own net/http on netchan's userspace TCP/IP stack.
// It owns one IPv4 address on an interface: netchan answers ARP for it and runs its TCP on the
// shards (one per queue), the kernel keeps everything else on the interface, and an ordinary
// http.Server serves on the stack's net.Listener:
//
//	GET  /       a greeting with the client's address as netchan's TCP saw it
//	GET  /stats  JSON: every shard's counters (Instance.Snapshot) and the stack's (Host.Stats)
//	POST /echo   the request body back (at most 1 MiB)
//
// Run it as root on an interface that carries no kernel address for --addr, e.g. in netchan's
// lab, from the repository's root (README.md shows a session):
//
//	sudo go run ./cmd/netchan lab up          # ncn0 here, namespace nc-peer at 198.18.0.2/24
//	sudo go run ./examples/httpserver --iface ncn0 --addr 198.18.0.1/24
//	sudo ip netns exec nc-peer curl http://198.18.0.1/
//
// SIGINT or SIGTERM shuts the HTTP server down gracefully, stops netchan and exits 0.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/shards"
	"github.com/netchan/netchan/stack"
)

// maxEcho bounds the body POST /echo takes.
const maxEcho = 1 << 20

// app runs the host's stack on every shard. Its claims are the host's address and ARP for it,
// so the kernel keeps the interface's other traffic; its owner function names the shard that
// owns each connection (and each datagram's fragments).
func app(host *stack.Host) netchan.App {
	return netchan.App{
		Name: "httpserver",
		NewPipeline: func(shard int) *pipelines.Pipeline {
			return &pipelines.Pipeline{Stages: []pipelines.Stage{host.NewStack(shard)}}
		},
		Claims: host.Claims(),
		Owner:  host.Owner,
	}
}

// stats is the document GET /stats returns.
type stats struct {
	Shards []shards.Snapshot `json:"shards"`
	Stack  stack.Stats       `json:"stack"`
}

// newMux serves the three pages; snapshot and stackStats read the counters /stats shows.
func newMux(snapshot func() []shards.Snapshot, stackStats func() stack.Stats) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from netchan, %s\n", r.RemoteAddr)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(stats{Shards: snapshot(), Stack: stackStats()})
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEcho))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	return mux
}

func main() {
	iface := flag.String("iface", "", "interface to run on (netchan takes all its queues)")
	addr := flag.String("addr", "", "netchan's address and prefix length, e.g. 198.18.0.1/24")
	gateway := flag.String("gateway", "", "default gateway (optional)")
	port := flag.Uint("port", 80, "TCP port to serve HTTP on")
	flag.Parse()
	prefix, err := netip.ParsePrefix(*addr)
	if *iface == "" || err != nil || !prefix.Addr().Is4() || *port == 0 || *port > 65535 {
		log.Fatal("httpserver: give --iface IF --addr A.B.C.D/NN [--gateway G] [--port 1-65535]")
	}
	cfg := stack.Config{Ifaces: []stack.Iface{{Addrs: []netip.Prefix{prefix}}}}
	if *gateway != "" {
		if cfg.Gateway, err = netip.ParseAddr(*gateway); err != nil {
			log.Fatalf("httpserver: --gateway: %v", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	host, err := stack.NewHost(cfg)
	if err != nil {
		log.Fatalf("httpserver: %v", err)
	}

	in, err := netchan.Start(netchan.Config{Interfaces: []string{*iface}}, app(host))
	if err != nil {
		log.Fatalf("httpserver: %v", err)
	}
	listen := netip.AddrPortFrom(prefix.Addr(), uint16(*port))
	ln, err := host.Listen(listen.String()) // a net.Listener on netchan's TCP
	if err != nil {
		in.Stop()
		log.Fatalf("httpserver: %v", err)
	}
	srv := &http.Server{Handler: newMux(in.Snapshot, host.Stats), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Printf("httpserver: serving http://%v/ on %s (%d shards); Ctrl-C to stop", listen, *iface, in.Shards())

	var failed error // the server's own error, if it stopped before a signal came
	select {
	case <-ctx.Done():
	case failed = <-served:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Printf("httpserver: shutdown: %v", err)
	}
	if err := errors.Join(failed, in.Stop()); err != nil {
		log.Fatalf("httpserver: %v", err)
	}
	log.Print("httpserver: stopped")
}
