package netchan_test

import (
	"fmt"
	"log"
	"net/http"
	"net/netip"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack"
)

// Serve HTTP with net/http on netchan's userspace TCP/IP stack, at 198.18.0.1 on eth1: the
// App runs the stack on every shard and claims only the address and ARP for it, so the kernel
// keeps the rest of eth1. A complete program, with counters and graceful shutdown, is
// examples/httpserver.
func ExampleStart_stack() {
	host, err := stack.NewHost(stack.Config{
		Ifaces: []stack.Iface{{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}}},
	})
	if err != nil {
		log.Fatal(err)
	}
	app := netchan.App{
		Name: "http",
		NewPipeline: func(shard int) *pipelines.Pipeline {
			return &pipelines.Pipeline{Stages: []pipelines.Stage{host.NewStack(shard)}}
		},
		Claims: host.Claims(), // 198.18.0.1/32 and ARP for it
		Owner:  host.Owner,    // each connection's segments go to the shard that owns it
	}
	in, err := netchan.Start(netchan.Config{Interfaces: []string{"eth1"}}, app)
	if err != nil {
		log.Fatal(err)
	}

	ln, err := host.Listen("198.18.0.1:80") // a net.Listener on netchan's TCP, once the shards run
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from netchan, %s\n", r.RemoteAddr) // the client as netchan's TCP saw it
	})
	err = http.Serve(ln, mux) // until the listener fails or is closed
	log.Print(err)
	if err := in.Stop(); err != nil {
		log.Fatal(err)
	}
}
