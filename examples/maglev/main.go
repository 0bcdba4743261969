// Command maglev is an L4 load balancer on netchan: a Maglev lookup table (Eisenbud et al.,
// NSDI 2016) picks a backend for each new TCP or UDP flow to a virtual IP (VIP), a connection
// table per shard keeps every tracked flow on its backend when the backend set changes, and
// frames reach the backend by direct server return: the load balancer rewrites only the
// Ethernet destination (as IPVS's DR mode does) and the backend, which holds the VIP on its
// loopback, answers the client itself.
//
//	go run ./examples/maglev --iface IF --vip 198.18.0.100 --backends FILE
//
// FILE lists one backend per line, "NAME MAC" (# starts a comment); send SIGHUP to reload it.
// The table (table.go: NewTable, Table.Lookup) is plain Go that tests and other programs can use
// on its own; the stage and the backend set are in lb.go. See README.md for the design and the
// measured remap fractions.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/netchan/netchan"
)

// parseBackends reads "NAME MAC" lines; blank lines and text after # are ignored.
func parseBackends(r io.Reader) ([]Backend, error) {
	var bs []Backend
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"NAME MAC\", got %q", n, strings.TrimSpace(line))
		}
		hw, err := net.ParseMAC(f[1])
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("line %d: %q is not an Ethernet MAC address", n, f[1])
		}
		b := Backend{Name: f[0]}
		copy(b.MAC[:], hw)
		bs = append(bs, b)
	}
	return bs, sc.Err()
}

func readBackends(path string) ([]Backend, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bs, err := parseBackends(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return bs, nil
}

func printTable(lb *LB) {
	t := lb.Table()
	counts := t.Counts()
	for i, b := range lb.Backends() {
		fmt.Printf("  %-16s %s  %d of %d slots\n", b.Name, b.MAC, counts[i], t.Size())
	}
}

func main() {
	iface := flag.String("iface", "", "interface the VIP's traffic arrives on (clients and backends on its L2 segment)")
	vipFlag := flag.String("vip", "", "virtual IPv4 address")
	file := flag.String("backends", "", `backends file: one "NAME MAC" per line; SIGHUP reloads it`)
	size := flag.Int("table-size", DefaultTableSize, "Maglev table size (a prime)")
	conns := flag.Int("conns", 65536, "connection table capacity per shard")
	idle := flag.Duration("idle", 5*time.Minute, "idle time after which a connection entry expires")
	flag.Parse()
	if *iface == "" || *vipFlag == "" || *file == "" {
		log.Fatal("give --iface, --vip and --backends")
	}
	vip, err := netip.ParseAddr(*vipFlag)
	if err != nil {
		log.Fatalf("--vip: %v", err)
	}
	backends, err := readBackends(*file)
	if err != nil {
		log.Fatal(err)
	}
	lb, err := NewLB(vip, backends, Options{TableSize: *size, Conns: *conns, Idle: *idle})
	if err != nil {
		log.Fatal(err)
	}
	// Signals are caught before Start, so that one arriving during the start does not kill the
	// process with the XDP programs half attached.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	in, err := netchan.Start(netchan.Config{Interfaces: []string{*iface}}, lb.App())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("maglev: VIP %v on %s, %d shards; Ctrl-C to stop, SIGHUP reloads %s\n", vip, *iface, in.Shards(), *file)
	printTable(lb)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-in.Done():
			break loop
		case <-hup:
			bs, err := readBackends(*file)
			if err == nil {
				err = lb.SetBackends(bs)
			}
			if err != nil {
				log.Printf("reload: %v (the old backend set stays)", err)
				continue
			}
			fmt.Println("maglev: backends reloaded")
			printTable(lb)
		}
	}
	fmt.Printf("maglev: %+v\n", lb.Stats())
	for _, s := range in.Snapshot() {
		fmt.Printf("shard %d: rx %d tx %d drops %v\n", s.Shard, s.RxPackets, s.TxPackets, s.Drops)
	}
	if err := in.Stop(); err != nil {
		log.Fatal(err)
	}
}
