// Command ratelimit is a per-source-prefix token-bucket rate limiter built as a bump in the
// wire: netchan sits between two interfaces, routes IPv4 between their subnets (it owns a
// gateway address on each, answers ARP and ping for them, and resolves its neighbours with its
// userspace stack; see package examples/wire), and forwards each source prefix's packets up
// to --rate packets per second with bursts of up to --burst. The rest is dropped as
// ratelimit-exceeded, counted by the shards like every other drop.
//
//	go run ./examples/ratelimit --inside IF --outside IF --rate 1000 --burst 100 --prefix-len 24
//
// The owner function sends every packet of a source prefix to one shard (a hash of the masked
// source address), so a prefix has one bucket, on one shard, whichever queue its packets
// arrive on. Each shard keeps its buckets in a fixed table (--buckets slots); when the slots a
// new prefix may use all belong to prefixes that sent recently, its packets are dropped as
// ratelimit-table-full. Time is the batch's clock (Batch.NowNanos). At exit (Ctrl-C) it prints
// the totals and the prefixes with the most drops.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/pipelines"
)

// newApp builds the limiter and the App that runs it between the interfaces [inside,
// outside]: each shard's pipeline is wire's local stage, the limiter, then wire's forward
// stage, and the limiter's owner function pins each source prefix to one shard.
func newApp(w wire.Config, cfg Config) (pipelines.App, *Limiter, error) {
	r, err := wire.New(w)
	if err != nil {
		return pipelines.App{}, nil, err
	}
	l, err := New(cfg)
	if err != nil {
		return pipelines.App{}, nil, err
	}
	return r.App("ratelimit", func(shard int) []pipelines.Stage { return []pipelines.Stage{l.Stage(shard)} }, l.Owner), l, nil
}

func main() {
	wf := wire.RegisterFlags(flag.CommandLine)
	var cfg Config
	flag.Int64Var(&cfg.Rate, "rate", 1000, "packets per second each source prefix may send")
	flag.Int64Var(&cfg.Burst, "burst", 100, "packets a source prefix may send at once (the bucket)")
	flag.IntVar(&cfg.PrefixLen, "prefix-len", 32, "source prefix length that shares a bucket (32: per host)")
	flag.IntVar(&cfg.Buckets, "buckets", 65536, "bucket slots per shard (a power of two)")
	top := flag.Int("top", 20, "prefixes to print at exit, most drops first")
	flag.Parse()
	ifaces, w, err := wf.Resolve()
	if err != nil {
		log.Fatalf("ratelimit: %v", err)
	}
	app, lim, err := newApp(w, cfg)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	in, err := netchan.Start(netchan.Config{Interfaces: ifaces}, app)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ratelimit: routing between %s (%v) and %s (%v) on %d shards; %d packets/s, burst %d, per /%d source prefix; Ctrl-C to stop\n",
		ifaces[0], w.Inside, ifaces[1], w.Outside, in.Shards(), cfg.Rate, cfg.Burst, cfg.PrefixLen)
	select {
	case <-ctx.Done():
	case <-in.Done():
	}
	err = in.Stop()
	t := lim.Totals()
	fmt.Printf("passed %d, dropped %d (ratelimit-exceeded) + %d (ratelimit-table-full); %d prefixes in the tables, %d slots reused\n",
		t.Passed, t.Exceeded, t.TableFull, t.Prefixes, t.Reused)
	for i, p := range lim.Prefixes() { // the shards have stopped: the tables are still
		if i == *top {
			break
		}
		fmt.Printf("  %-18v shard %d: passed %10d dropped %10d\n", p.Prefix, p.Shard, p.Passed, p.Dropped)
	}
	for _, s := range in.Snapshot() {
		fmt.Printf("shard %d: rx %d tx %d handed over %d drops %v\n", s.Shard, s.RxPackets, s.TxPackets, s.HandoffOut, s.Drops)
	}
	if err != nil {
		log.Fatal(err)
	}
}
