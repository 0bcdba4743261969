// Command firststage is a first custom stage on netchan: a UDP "pong". A UDP datagram to
// --port is answered by sending the same frame back to its sender, with the Ethernet and IPv4
// addresses and the UDP ports swapped in place; anything else the program receives is
// dropped and counted under its own reason, "not-pong". It claims only UDP to --port, so
// everything else on the interface stays with the kernel. Ctrl-C prints each shard's counters
// and stops.
//
//	sudo go run ./examples/firststage --iface IF --port 9999
//
// The README's "Write your first stage" runs it against the lab, step by step.
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
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/stack/header"
)

// The stage is the 29 lines from notPong's comment to the end of pong, comments and blank line
// included, written with pipelines.Func: the single-packet adapter, which calls the function
// for every packet that no stage has decided yet.

// notPong is this program's own drop reason: the counters show it by name.
var notPong = pipelines.RegisterReason("not-pong")

// pong sends UDP datagrams to port back where they came from. Swapping the addresses and the
// ports keeps both checksums valid: a checksum is a sum, and a sum does not depend on order.
func pong(port uint16) pipelines.Stage {
	return pipelines.Func("pong", func(p *pipelines.Packet, frame []byte) {
		ip, ok := header.IPv4InFrame(frame)
		if !ok || ip.Protocol() != header.ProtoUDP || ip.IsFragment() {
			p.Verdict, p.Reason = pipelines.Drop, notPong // not a whole UDP datagram
			return
		}
		sport, dport, ok := ip.Ports()
		if !ok || dport != port {
			p.Verdict, p.Reason = pipelines.Drop, notPong // claimed, but not for us
			return
		}
		eth, udp := header.Ethernet(frame), header.UDP(ip.Payload())
		srcMAC, dstMAC := eth.Src(), eth.Dst()
		eth.SetSrc(dstMAC)
		eth.SetDst(srcMAC)
		srcIP, dstIP := ip.Src4(), ip.Dst4()
		ip.SetSrc4(dstIP)
		ip.SetDst4(srcIP)
		udp.SetSrcPort(dport)
		udp.SetDstPort(sport)
		p.Verdict, p.OutIf = pipelines.Transmit, p.InIf // out of the interface it came in on
	})
}

// app is what netchan runs: the pong stage on every shard, and one claim, UDP to port, so the
// XDP program leaves everything else to the kernel.
func app(port uint16) netchan.App {
	return netchan.App{
		Name:   "firststage",
		Claims: []claim.Rule{claim.Ports(header.ProtoUDP, netip.Addr{}, port, port)},
		NewPipeline: func(int) *pipelines.Pipeline {
			return &pipelines.Pipeline{Stages: []pipelines.Stage{pong(port)}}
		},
	}
}

func main() {
	iface := flag.String("iface", "", "interface to run on (the lab's: see `netchan lab up`)")
	port := flag.Uint("port", 9999, "UDP port to answer")
	flag.Parse()
	if *iface == "" || *port == 0 || *port > 65535 {
		log.Fatal("firststage: give --iface IF and a --port from 1 to 65535")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	in, err := netchan.Start(netchan.Config{Interfaces: []string{*iface}}, app(uint16(*port)))
	if err != nil {
		log.Fatal(err) // errors say what to do: run as root, a missing interface, memlock
	}
	fmt.Printf("firststage: answering UDP to port %d on %s (%d shards); Ctrl-C to stop\n", *port, *iface, in.Shards())
	select {
	case <-ctx.Done():
	case <-in.Done(): // the shards failed: Stop below says why
	}
	for _, s := range in.Snapshot() {
		fmt.Printf("shard %d: rx %d tx %d drops %v\n", s.Shard, s.RxPackets, s.TxPackets, s.Drops)
	}
	if err := in.Stop(); err != nil {
		log.Fatal(err)
	}
}
