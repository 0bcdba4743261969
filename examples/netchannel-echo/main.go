// Command netchannel-echo echoes every UDP datagram sent to one port of an interface's kernel
// address back to its sender, from raw frames, through a netchannel: the XDP program takes
// just that flow spec, the shard lends each frame to this program's goroutine, which turns it
// around in place and sends it back — no copy, no socket. The kernel keeps the address and
// everything else: ARP, ping, its own sockets on other ports.
//
//	go run ./examples/netchannel-echo --iface IF --port 9999
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/netchannel"
)

// kernelAddr returns the interface's first kernel IPv4 address.
func kernelAddr(iface string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %q: %w", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv4 address: the echo answers on the kernel's own address (ip addr add ADDR/N dev %s)", iface, iface)
}

// echo reads batches from ch and sends each datagram back where it came from, until ctx ends
// or ch closes. It returns how many it echoed.
func echo(ctx context.Context, ch *netchannel.Channel) (uint64, error) {
	b := netchannel.NewBatch(64)
	var n uint64
	for {
		k, err := ch.Read(ctx, b)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, netchannel.ErrClosed) {
				return n, nil
			}
			return n, err
		}
		for i := 0; i < k; i++ {
			basic.TurnAround(b.Bytes(i)) // swap MACs, addresses and ports in place
		}
		n += uint64(k)
		if err := ch.Send(b); err != nil {
			return n, err
		}
	}
}

// start runs a netchannel Set on iface and opens the echo's channel on port of its kernel
// address.
func start(iface string, port uint16, logf func(string, ...any)) (*netchan.Instance, *netchannel.Set, *netchannel.Channel, error) {
	addr, err := kernelAddr(iface)
	if err != nil {
		return nil, nil, nil, err
	}
	set := netchannel.New(netchannel.Config{Logf: logf})
	// Netchannels lend frames beyond what the shard keeps for its rings: a bigger UMEM.
	in, err := netchan.Start(netchan.Config{Interfaces: []string{iface}, UMEM: netchan.UMEM{Frames: 8192}, Logf: logf}, set.App("netchannel-echo"))
	if err != nil {
		return nil, nil, nil, err
	}
	ch, err := set.Open(fmt.Sprintf("udp:%v:%d", addr, port), netchannel.Options{Name: "echo"})
	if err != nil {
		in.Stop()
		return nil, nil, nil, err
	}
	return in, set, ch, nil
}

func main() {
	iface := flag.String("iface", "", "interface whose kernel address to echo on")
	port := flag.Uint("port", 9999, "UDP port to echo")
	flag.Parse()
	if *iface == "" || *port == 0 || *port > 65535 {
		log.Fatal("give --iface IF and --port P (1-65535)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	in, _, ch, err := start(*iface, uint16(*port), log.Printf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("netchannel-echo: echoing %v on %s; Ctrl-C to stop\n", ch.Rule(), *iface)
	n, err := echo(ctx, ch)
	st := ch.Stats()
	fmt.Printf("echoed %d datagrams; channel: received %d, sent %d, drops %v\n", n, st.Received, st.Sent, st.Drops)
	if cerr := ch.Close(); cerr != nil {
		log.Print(cerr)
	}
	if serr := in.Stop(); serr != nil {
		log.Print(serr)
	}
	if err != nil {
		log.Fatal(err)
	}
}
