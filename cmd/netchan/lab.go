package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/trafficgen"
)

func cmdLab(args []string) error {
	if len(args) == 0 {
		return errors.New("lab: say up, down or send")
	}
	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("lab up", flag.ContinueOnError)
		name := fs.String("name", lab.DefaultName, "lab name (1-7 chars a-z0-9); every namespace and link name starts with it")
		layout := fs.String("layout", "pair", "pair (netchan — peer), routed (netchan — router — peer), nat (client — netchan — server)")
		queues := fs.Int("queue-count", lab.DefaultQueueCount, "rx and tx queues on every veth")
		staticARP := fs.Bool("static-arp", false, "give kernel hosts permanent ARP entries for netchan's addresses")
		var rss labRSSFlag
		fs.Var(&rss, "rss", "emulate a NIC's RSS: kernel hosts send each IPv4 flow on the queue of its Toeplitz hash (Microsoft key; --rss=symmetric: symmetric key); run netchan in native XDP mode")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("unexpected argument %q (--rss takes its key with =: --rss=symmetric)", fs.Arg(0))
		}
		l, err := lab.Up(context.Background(), lab.Config{Name: *name, Layout: lab.Layout(*layout), QueueCount: *queues, StaticARP: *staticARP, RSS: lab.RSS(rss)})
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(l)
	case "down":
		fs := flag.NewFlagSet("lab down", flag.ContinueOnError)
		name := fs.String("name", lab.DefaultName, "lab name")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return lab.Down(*name)
	case "send":
		return cmdLabSend(args[1:])
	}
	return fmt.Errorf("lab: unknown subcommand %q: say up, down or send", args[0])
}

// labRSSFlag is --rss: a boolean flag (--rss means the Microsoft key) that also takes a key name
// (--rss=symmetric).
type labRSSFlag lab.RSS

func (f *labRSSFlag) String() string { return string(*f) }

func (f *labRSSFlag) IsBoolFlag() bool { return true }

func (f *labRSSFlag) Set(s string) error {
	switch s {
	case "true":
		*f = labRSSFlag(lab.RSSMicrosoft)
	case "false", "off":
		*f = labRSSFlag(lab.RSSOff)
	case string(lab.RSSMicrosoft), string(lab.RSSSymmetric):
		*f = labRSSFlag(s)
	default:
		return fmt.Errorf("want %s or %s", lab.RSSMicrosoft, lab.RSSSymmetric)
	}
	return nil
}

// cmdLabSend runs the traffic generator; the lab runs it inside a namespace with ip netns exec.
func cmdLabSend(args []string) error { return trafficgen.Main(args) }
