// Command netchan runs netchan's pipelines on AF_XDP, builds the namespace lab, and runs the
// demo. `netchan help` lists the commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `netchan: a sharded AF_XDP packet-processing framework

Usage:
  netchan demo [--duration 10s] [--json]        build a lab, reflect real traffic on 2 queues, show live figures
  netchan run --iface IF --pipeline NAME         run a bundled pipeline (reflect, drop, count)
              [--claim CLAIM ...] [--queues all|0,1] [--xdp-mode auto|native|generic] [--stats 1s] [--json]
              [--frames 4096] [--frame-size 2048] [--ring-size 2048] [--batch-size 64]
  netchan echo --iface IF --addr A.B.C.D/NN [--gateway G]   the stack's echo services: ARP, ping, UDP echo on 7
  netchan netchannel --iface IF --echo udp:ADDR:PORT   netchannels: each UDP flow spec echoed zero-copy, the kernel keeps the rest
  netchan nat --inside IF --inside-addr A/NN --outside IF --outside-addr B/NN [--gateway G]
              [--ports LO-HI] [--filtering eif|apdf]                      NAT44 between two interfaces
  netchan status [--instance NAME] [--json]     counters of a running instance (from /run/netchan/NAME.sock)
  netchan top [--instance NAME] [--interval 1s] [--once]   live per-shard rates, stages, flows (q quits)
  netchan doctor [--iface IF] [--busy-poll] [--json]   check kernel, capabilities, memlock, interfaces, busy polling; say what to fix
  netchan capture [--instance NAME] [--stage S] [--out|--drops] [--filter EXPR] [-c N] -w FILE
                                                 what a stage of a running instance sees, emits or drops, as pcapng
  netchan trace [--instance NAME] [-n N] [--filter EXPR]   follow N packets: each stage's verdict, hand-offs, the stack
  netchan reload [--instance NAME] [--config FILE]   re-read the config file: claims, NAT timeouts and forwards, log level (also SIGHUP)
  netchan check-config [--command run|echo|nat] FILE   validate a config file without running; prints ok or the field's error
  netchan lab up [--name nc] [--layout pair|routed|nat] [--queue-count N] [--static-arp]
  netchan lab down [--name nc]
  netchan lab send --iface IF --queue Q --dst-mac MAC ...   the lab's traffic generator (see --help)
  netchan bench all [--only rx,nat,...]          every lab scenario below, shortened: JSON, PNG plots, one summary
  netchan bench nat [--runs 5] [--rate 300000]   netchan's NAT vs Linux MASQUERADE, one NAT core
  netchan bench rx|reflect [--runs 5] [--rate 200000]  kernel vs netchan vs asavie/xdp (vs XDP_DROP) on a lab veth
  netchan bench tcp-rr [--runs 5] [--conns 16]   TCP 128-byte request/response: netchan's echo vs a Go kernel-socket echo
  netchan bench http [--runs 5]                  wrk against net/http on netchan's stack vs on kernel sockets, one server core
  netchan bench peer [--src DIR]                 netchan's TCP vs gVisor's netstack over an in-memory wire (from a source tree)
  netchan bench gen --iface IF --dst-mac MAC [--src A --dst B] [--queues N] [--size 64|--imix imix_v4_1] --rate PPS --duration D [--json]
                                                 paced traffic to a reflector: per-queue rates, loss, latency histogram
  netchan bench search --iface IF --dst-mac MAC [...] --sizes 64,512,1518 --max-rate PPS [--json]
                                                 RFC 9971 throughput search (NDR, PDR), latency at 10/50/90% of the PDR
  netchan bench netchannel [--runs 5] [--rates 10000,...,full] [--mode rx,echo]   netchannel vs epoll vs recvmmsg vs XDP_DROP, CPU/packet
  netchan bench table|plot [DIR|FILE.json...]   stored results (default bench/results) as Markdown tables, or their plots again

A claim says which packets netchan takes from the kernel: all (run's default), A.B.C.D/N,
udp:[ADDR:]PORT[-PORT], tcp:[ADDR:]PORT[-PORT], proto:N. run, echo and nat take --claim
(repeatable); traffic to the interface's own kernel addresses is taken only by a claim that
names it (a port, a protocol or its /32), and broadcast and multicast likewise.

Data-plane commands (run, echo, nat, demo) take --log-format text|json and --log-level
debug|info|warn|error (log lines on stderr through log/slog; "ready" lines on stdout), and --config FILE (JSON; schema: go doc github.com/netchan/netchan/cmd/netchan/config;
flags given on the command line override it) and --instance NAME (default "default"; the demo's is
"demo"): one instance per name, its status read with netchan status --instance NAME.

run, echo and nat take --busy-poll [--busy-poll-budget 64] [--busy-poll-idle 1ms] ("busy_poll" in
the config file's pipeline): each shard runs its queues' NAPI poll itself (preferred busy polling;
a NIC in native XDP mode; unavailable on veth and with generic XDP, where netchan says so and runs
its usual loop; docs/busy-poll.md).

capture and trace filters: udp, tcp, icmp, arp, ip, [src|dst] host A.B.C.D, [src|dst] port N,
shard N, joined with and, or, not and parentheses (e.g. "udp and dst port 9").

Run as root (AF_XDP, XDP and namespaces need CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON).
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
	case "echo":
		err = cmdEcho(os.Args[2:])
	case "netchannel":
		err = cmdNetchannel(os.Args[2:])
	case "nat":
		err = cmdNAT(os.Args[2:])
	case "demo":
		err = cmdDemo(os.Args[2:])
	case "bench":
		err = cmdBenchTop(os.Args[2:])
	case "status":
		err = cmdStatus(os.Args[2:])
	case "top":
		err = cmdTop(os.Args[2:])
	case "doctor":
		err = cmdDoctor(os.Args[2:])
	case "capture":
		err = cmdCapture(os.Args[2:])
	case "trace":
		err = cmdTrace(os.Args[2:])
	case "reload":
		err = cmdReload(os.Args[2:])
	case "check-config":
		err = cmdCheckConfig(os.Args[2:])
	case helperCommand: // hidden: what netchan runs of itself inside a namespace (helper.go)
		err = cmdHelper(os.Args[2:])
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
		if errors.Is(err, errFindings) {
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "netchan %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
