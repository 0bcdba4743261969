package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/shards"
)

// cmdStatus reads a running instance's status from its control socket.
func cmdStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	instance := fs.String("instance", config.DefaultInstance, "instance to read (the --instance it was started with)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	section := fs.String("section", "", "print only this section, as JSON (e.g. shards)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: give the instance with --instance NAME", fs.Arg(0))
	}
	if err := config.ValidInstance(*instance); err != nil {
		return fmt.Errorf("--instance: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if *section != "" {
		raw, err := control.FetchSection(ctx, "", *instance, *section)
		if err != nil {
			return err
		}
		return writeIndented(os.Stdout, raw)
	}
	st, err := control.Fetch(ctx, "", *instance)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeIndented(os.Stdout, st.Raw)
	}
	return printStatus(os.Stdout, st)
}

func writeIndented(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// printStatus renders a status as text: the sections it knows as tables, any other section
// (added by later commands) as indented JSON under its name.
func printStatus(w io.Writer, st *control.Status) error {
	fmt.Fprintf(w, "instance %s: netchan %s, pid %d, up %s\n", st.Instance, st.Command, st.PID,
		(time.Duration(st.Uptime * float64(time.Second))).Round(time.Second/10))
	var ps pipelineStatus
	if ok, err := st.Section("pipeline", &ps); ok && err == nil {
		fmt.Fprintf(w, "pipeline %s on %s, queues %v, xdp %s, batch %d, owner %s, umem %d × %d B per queue, rings %d\n",
			ps.Name, strings.Join(ps.Interfaces, ","), ps.Queues, strings.Join(ps.XDPModes, ","), ps.BatchSize, ps.Owner,
			ps.UMEM.Frames, ps.UMEM.FrameSize, ps.UMEM.RingSize)
	}
	var snap []shards.Snapshot
	if ok, err := st.Section("shards", &snap); ok && err == nil {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "shard\tqueue\tcpu\trx pkts\trx bytes\ttx pkts\ttx bytes\tdrops\tfill empty\ttx ring full\tpkts/poll\thand-off out\thand-off in\t")
		for _, s := range snap {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%d\t%d\t\n", s.Shard, s.Queue, s.CPU,
				s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes, s.DropsTotal, s.FillEmpty, s.TxRingFull, s.PacketsPerPoll, s.HandoffOut, s.HandoffIn)
		}
		tw.Flush()
		for _, s := range snap {
			if len(s.Drops) == 0 {
				continue
			}
			var rs []string
			for r, n := range s.Drops {
				rs = append(rs, fmt.Sprintf("%s %d", r, n))
			}
			sort.Strings(rs)
			fmt.Fprintf(w, "drops, shard %d: %s\n", s.Shard, strings.Join(rs, ", "))
		}
		printBusyPoll(w, snap)
		printStages(w, snap)
		for _, s := range snap {
			for i, k := range s.Kernel {
				if k != (shards.KernelStats{}) {
					name := fmt.Sprint(i)
					if i < len(ps.Interfaces) {
						name = ps.Interfaces[i]
					}
					fmt.Fprintf(w, "kernel, shard %d %s: rx dropped %d, rx ring full %d, fill ring empty %d, tx invalid %d, rx invalid %d\n",
						s.Shard, name, k.RxDropped, k.RxRingFull, k.FillRingEmpty, k.TxInvalid, k.RxInvalid)
				}
			}
		}
	}
	var cs []claimsStatus
	if ok, err := st.Section("claims", &cs); ok && err == nil {
		for _, c := range cs {
			var held []string
			for _, oc := range c.Claims {
				held = append(held, oc.Claim+" ("+oc.Owner+")")
			}
			fmt.Fprintf(w, "claims on %s: %s", c.Iface, strings.Join(held, ", "))
			if len(c.KernelAddrs) > 0 {
				fmt.Fprintf(w, "; the kernel's own addresses %s only if a claim names them", strings.Join(c.KernelAddrs, ", "))
			}
			fmt.Fprintln(w)
		}
	}
	var xs []xdpStatus
	if ok, err := st.Section("xdp", &xs); ok && err == nil {
		for _, x := range xs {
			fmt.Fprintf(w, "xdp %s (%s): claimed %d, passed to the kernel %d, claimed without a socket %d\n", x.Iface, x.Mode, x.Claimed, x.Passed, x.NoSocket)
		}
	}
	var ms metricsStatus
	if ok, err := st.Section("metrics", &ms); ok && err == nil {
		fmt.Fprintf(w, "metrics: %s\n", ms.URL)
	}
	var tcp tcpStatus
	if ok, err := st.Section("tcp", &tcp); ok && err == nil {
		printTCP(w, tcp)
	}
	for _, name := range st.Header.Sections {
		switch name {
		case "pipeline", "shards", "claims", "xdp", "tcp", "metrics":
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", name)
		var buf bytes.Buffer
		if err := json.Indent(&buf, st.Sections[name], "  ", "  "); err != nil {
			return err
		}
		fmt.Fprintf(w, "  %s\n", buf.String())
	}
	return nil
}

// printBusyPoll renders each shard's busy polling (docs/busy-poll.md), when it is on: a line
// per link with its state (shards.BusyPollState), and the shard's polls and the packets they
// brought. A shard of one link has them on that link's line; a shard of several, whose
// counters sum its links, on a line of its own. Nothing when busy polling is off.
func printBusyPoll(w io.Writer, snap []shards.Snapshot) {
	for _, s := range snap {
		if s.BusyPoll == nil {
			continue
		}
		counts := fmt.Sprintf("%d polls brought %d of %d packets", s.BusyPollCalls, s.BusyPollRxPackets, s.RxPackets)
		polled := s.BusyPollCalls > 0
		for _, b := range s.BusyPoll {
			fmt.Fprintf(w, "shard %d queue %d %s: busy polling %s", s.Shard, s.Queue, b.Iface, b)
			if len(s.BusyPoll) == 1 && (b.State == "on" || polled) {
				fmt.Fprintf(w, ": %s", counts)
			}
			fmt.Fprintln(w)
		}
		if len(s.BusyPoll) > 1 && polled {
			fmt.Fprintf(w, "shard %d queue %d: %s (all its links)\n", s.Shard, s.Queue, counts)
		}
	}
}

// printStages renders each shard's per-stage figures, as VPP's `show runtime` does: calls
// (with work), packets handed in, packets per call, nanoseconds per packet (sampled), packets
// decided, and drops by reason. A shard whose stages saw nothing is left out.
func printStages(w io.Writer, snap []shards.Snapshot) {
	for _, s := range snap {
		var any bool
		for _, st := range s.Stages {
			any = any || st.Calls > 0
		}
		if !any {
			continue
		}
		fmt.Fprintf(w, "\nstages, shard %d (queue %d):\n", s.Shard, s.Queue)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "stage\tcalls\tpackets\tpkts/call\tns/pkt\tdecided\tdrops")
		for _, st := range s.Stages {
			var rs []string
			for r, n := range st.Drops {
				rs = append(rs, fmt.Sprintf("%s %d", r, n))
			}
			sort.Strings(rs)
			drops := strings.Join(rs, ", ")
			if drops == "" {
				drops = "-"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.1f\t%d\t%s\n", st.Name, st.Calls, st.Packets, st.PacketsPerCall, st.NanosPerPacket, st.Decided, drops)
		}
		tw.Flush()
	}
}

// printTCP renders the "tcp" section: one line per connection with its state and the figures
// of its retransmission and congestion control.
func printTCP(w io.Writer, tcp tcpStatus) {
	fmt.Fprintf(w, "\ntcp connections: %d\n", len(tcp.Conns)+tcp.Omitted)
	if len(tcp.Conns) == 0 {
		return
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e3) }
	thresh := func(v uint32) string {
		if v >= 1<<30 { // the initial "arbitrarily high" ssthresh of RFC 5681
			return "inf"
		}
		return fmt.Sprint(v)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\tlocal\tremote\tstate\tsrtt µs\trttvar µs\trto ms\tmss\tcwnd\tssthresh\tretransmits\tsacked bytes")
	for _, c := range tcp.Conns {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%d\n", c.Shard, c.Local, c.Remote, c.State,
			us(c.SRTT), us(c.RTTVar), c.RTO.Milliseconds(), c.MSS, c.Cwnd, thresh(c.Ssthresh), c.Retransmits, c.SACKedBytes)
	}
	tw.Flush()
	if tcp.Omitted > 0 {
		fmt.Fprintf(w, "(%d more connections not listed)\n", tcp.Omitted)
	}
}
