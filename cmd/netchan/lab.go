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
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		l, err := lab.Up(context.Background(), lab.Config{Name: *name, Layout: lab.Layout(*layout), QueueCount: *queues, StaticARP: *staticARP})
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

// cmdLabSend runs the traffic generator; the lab runs it inside a namespace with ip netns exec.
func cmdLabSend(args []string) error { return trafficgen.Main(args) }
