// Command netchan runs netchan's pipelines on AF_XDP, builds the namespace lab, and runs the
// demo. `netchan help` lists the commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"netchan/runtime/afxdp"
	"netchan/runtime/xdpprog"
)

const usage = `netchan: a sharded AF_XDP packet-processing framework

Usage:
  netchan demo [--duration 10s] [--json]        build a lab, reflect real traffic on 2 queues, show live figures
  netchan run --iface IF --pipeline NAME         run a bundled pipeline (reflect, drop, count)
              [--queues all|0,1] [--xdp-mode auto|native|generic] [--stats 1s] [--json]
  netchan lab up [--name nc] [--layout pair|routed|nat] [--queue-count N] [--static-arp]
  netchan lab down [--name nc]
  netchan lab send --iface IF --queue Q --dst-mac MAC ...   the lab's traffic generator (see --help)

Run as root (AF_XDP, XDP and namespaces need CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:])
	case "lab":
		err = cmdLab(os.Args[2:])
	case "demo":
		err = cmdDemo(os.Args[2:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "netchan: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "netchan %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// dataPlaneFlags are shared by every command that runs shards.
type dataPlaneFlags struct {
	queues  string
	xdpMode string
}

func (d *dataPlaneFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.queues, "queues", "all", "queues to own, one shard each: all, or a list such as 0,1")
	fs.StringVar(&d.xdpMode, "xdp-mode", "auto", "XDP attach mode: auto (native, else generic), native, generic")
}

func (d *dataPlaneFlags) parse() (queues []int, mode xdpprog.Mode, err error) {
	if mode, err = xdpprog.ParseMode(d.xdpMode); err != nil {
		return nil, 0, err
	}
	if d.queues == "all" || d.queues == "" {
		return nil, mode, nil
	}
	for _, f := range strings.Split(d.queues, ",") {
		q, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || q < 0 {
			return nil, 0, fmt.Errorf("--queues %q: want all or a comma-separated list of queue numbers: %w", d.queues, afxdp.ErrQueueOutOfRange)
		}
		queues = append(queues, q)
	}
	return queues, mode, nil
}
