// Command acl is an ACL firewall built as a bump in the wire: netchan sits between two
// interfaces, routes IPv4 between their subnets (it owns a gateway address on each, answers
// ARP and ping for them, and resolves its neighbours with its userspace stack; see package
// examples/wire), and forwards only what the rules allow. Rules match source and destination
// prefixes, protocol and ports; the first rule that matches decides, a default action decides
// the rest, and every rule counts its packets and bytes. Denied packets are dropped with a
// reason named after their rule (acl-rule-N, acl-default), counted by the shards like every
// other drop.
//
//	go run ./examples/acl --inside IF --outside IF \
//		--rule 'allow udp from 198.18.1.0/24 to 198.19.0.2 port 9999' --rule 'allow icmp'
//
// A rule reads
//
//	allow|deny [all|tcp|udp|icmp|proto N] [from ADDR [port PORTS]] [to ADDR [port PORTS]]
//
// with ADDR any, an address or a prefix, and PORTS a port or a range LO-HI (tcp and udp
// only). --rules FILE reads one rule a line (# starts a comment); --rule adds rules after the
// file's. At exit (Ctrl-C) it prints each rule's counters, summed over the shards.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/pipelines"
)

// newApp builds the ACL and the App that runs it between the interfaces [inside, outside]:
// each shard's pipeline is wire's local stage, the ACL, then wire's forward stage. No owner
// function of its own: rules keep no state per flow, so each shard filters what its queues
// receive (wire's LocalOwner gathers only the fragments of datagrams for the box itself).
func newApp(cfg wire.Config, rules []Rule, def Action) (pipelines.App, *ACL, error) {
	r, err := wire.New(cfg)
	if err != nil {
		return pipelines.App{}, nil, err
	}
	a, err := New(rules, def)
	if err != nil {
		return pipelines.App{}, nil, err
	}
	return r.App("acl", func(shard int) []pipelines.Stage { return []pipelines.Stage{a.Stage(shard)} }, nil), a, nil
}

// ruleFlag collects --rule, which may be given many times.
type ruleFlag []string

func (f *ruleFlag) String() string     { return strings.Join(*f, "; ") }
func (f *ruleFlag) Set(s string) error { *f = append(*f, s); return nil }

// loadRules reads the file (if any), then the --rule flags.
func loadRules(file string, flags []string) ([]Rule, error) {
	var rules []Rule
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if rules, err = ParseRules(f, file); err != nil {
			return nil, err
		}
	}
	for _, s := range flags {
		r, err := ParseRule(s)
		if err != nil {
			return nil, fmt.Errorf("--rule %q: %w", s, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func main() {
	wf := wire.RegisterFlags(flag.CommandLine)
	file := flag.String("rules", "", "a file of rules, one a line (# comments)")
	def := flag.String("default", "deny", "what happens to packets no rule matches: allow or deny")
	var ruleFlags ruleFlag
	flag.Var(&ruleFlags, "rule", "a rule, e.g. 'allow udp from 198.18.1.0/24 to 198.19.0.2 port 9999' (repeatable; after --rules)")
	flag.Parse()
	ifaces, cfg, err := wf.Resolve()
	if err != nil {
		log.Fatalf("acl: %v", err)
	}
	action, err := ParseAction(*def)
	if err != nil {
		log.Fatalf("acl: --default %v", err)
	}
	rules, err := loadRules(*file, ruleFlags)
	if err != nil {
		log.Fatalf("acl: %v", err)
	}
	app, acl, err := newApp(cfg, rules, action)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	in, err := netchan.Start(netchan.Config{Interfaces: ifaces}, app)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("acl: routing between %s (%v) and %s (%v) on %d shards; first match wins:\n", ifaces[0], cfg.Inside, ifaces[1], cfg.Outside, in.Shards())
	for i, r := range rules {
		fmt.Printf("  %d: %v\n", i+1, r)
	}
	fmt.Printf("  default %v\nCtrl-C to stop\n", action)
	select {
	case <-ctx.Done():
	case <-in.Done():
	}
	err = in.Stop()
	printCounters(os.Stdout, acl.Counters(), in)
	if err != nil {
		log.Fatal(err)
	}
}

func printCounters(w *os.File, cs []Counter, in *netchan.Instance) {
	fmt.Fprintln(w, "rule counters (summed over shards):")
	for i, c := range cs {
		n := fmt.Sprint(i + 1)
		if i == len(cs)-1 {
			n = "-"
		}
		reason := ""
		if c.Reason != "" {
			reason = "  dropped as " + c.Reason
		}
		fmt.Fprintf(w, "  %s: %-60s %10d packets %12d bytes%s\n", n, c.Rule, c.Packets, c.Bytes, reason)
	}
	for _, s := range in.Snapshot() {
		fmt.Fprintf(w, "shard %d: rx %d tx %d drops %v\n", s.Shard, s.RxPackets, s.TxPackets, s.Drops)
	}
}
