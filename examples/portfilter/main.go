// Command portfilter shows how to run a pipeline of your own on netchan: a custom stage that
// reflects UDP packets to one port and drops the rest with a reason of its own, counted per
// shard like every other drop.
//
//	go run ./examples/portfilter --iface IF --port 7
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/stack/header"
)

// notOurPort is this program's own drop reason; it shows up by name in the counters.
var notOurPort = pipelines.RegisterReason("not-our-port")

// portFilter is a stage written as a whole-batch loop: it keeps UDP packets to port and drops
// everything else still undecided.
type portFilter struct{ port uint16 }

func (f portFilter) Name() string { return "port-filter" }

func (f portFilter) Process(b *pipelines.Batch) {
	for i := range b.Pkts {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		ip, ok := header.IPv4InFrame(b.Data(i))
		if !ok || ip.Protocol() != 17 {
			b.Drop(i, notOurPort)
			continue
		}
		if _, dst, ok := ip.Ports(); !ok || dst != f.port {
			b.Drop(i, notOurPort)
		}
	}
}

// app builds the App: the custom stage, then the bundled reflect stage; the XDP program
// claims only UDP to the port, so everything else stays with the kernel.
func app(port uint16) netchan.App {
	return netchan.App{
		Name:   "portfilter",
		Claims: []claim.Rule{claim.Ports(17, netip.Addr{}, port, port)},
		NewPipeline: func(int) *pipelines.Pipeline {
			return &pipelines.Pipeline{Stages: []pipelines.Stage{portFilter{port}, basic.Reflect()}}
		},
	}
}

func main() {
	iface := flag.String("iface", "", "interface")
	port := flag.Uint("port", 7, "UDP port to reflect")
	flag.Parse()
	if *iface == "" {
		log.Fatal("give --iface")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	in, err := netchan.Start(netchan.Config{Interfaces: []string{*iface}}, app(uint16(*port)))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("portfilter: running; Ctrl-C to stop")
	<-ctx.Done()
	for _, s := range in.Snapshot() {
		fmt.Printf("shard %d: rx %d tx %d drops %v\n", s.Shard, s.RxPackets, s.TxPackets, s.Drops)
	}
	if err := in.Stop(); err != nil {
		log.Fatal(err)
	}
}
