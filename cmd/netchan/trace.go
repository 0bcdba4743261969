package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"

	"github.com/netchan/netchan/cmd/netchan/capture"
	"github.com/netchan/netchan/cmd/netchan/config"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// cmdTrace follows packets through a running instance and prints each one's path.
func cmdTrace(args []string) error {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	instance := fs.String("instance", config.DefaultInstance, "instance to trace (the --instance it was started with)")
	n := fs.Int("n", 1, "packets to follow")
	filter := fs.String("filter", "", `which packets (as capture's --filter, e.g. "udp and dst port 9"), matched when they meet the first stage`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (the filter goes in --filter \"...\")", fs.Arg(0))
	}
	if *n < 1 {
		return errors.New("-n wants at least 1 packet")
	}
	if _, err := capture.Parse(*filter); err != nil {
		return err
	}
	st, stop, err := openTap(*instance, capture.Request{Filter: *filter, Trace: true, Count: *n, Snap: 256})
	if err != nil {
		return err
	}
	defer st.Close()
	defer stop()
	fmt.Fprintf(os.Stderr, "netchan trace: following %d packet(s) matching %s on instance %s; Ctrl-C to stop\n", *n, orAll(*filter), *instance)
	return printTrace(os.Stdout, capture.NewDecoder(st))
}

func orAll(f string) string {
	if f == "" {
		return "anything"
	}
	return f
}

// tracedPacket is one followed packet's records, in order.
type tracedPacket struct {
	id    uint64
	steps []capture.Packet
}

// printTrace reads a trace stream to its end and prints every packet's path.
func printTrace(w io.Writer, d *capture.Decoder) error {
	var info *capture.Info
	var order []*tracedPacket
	byID := map[uint64]*tracedPacket{}
	var stats *capture.Stats
	var end *capture.End
loop:
	for {
		v, err := d.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
		switch x := v.(type) {
		case *capture.Info:
			info = x
		case *capture.Packet:
			tp := byID[x.ID]
			if tp == nil {
				tp = &tracedPacket{id: x.ID}
				byID[x.ID] = tp
				order = append(order, tp)
			}
			c := *x
			c.Data = append([]byte(nil), x.Data...)
			tp.steps = append(tp.steps, c)
		case *capture.Stats:
			stats = x
		case *capture.End:
			end = x
			break loop
		}
	}
	if info == nil {
		return errors.New("the instance sent no trace")
	}
	for i, tp := range order {
		printPath(w, info, i+1, tp)
	}
	if stats != nil && stats.XDPFast > 0 {
		fmt.Fprintf(w, "xdp fast path: %d packets were handled by the XDP programs while tracing (flows on the NAT's fast path: no shard saw them, so no stage could trace them)\n", stats.XDPFast)
	}
	if stats != nil {
		var lost uint64
		for _, d := range stats.Dropped {
			lost += d
		}
		if lost > 0 {
			fmt.Fprintf(w, "(%d steps could not be kept: the trace's rings were full)\n", lost)
		}
	}
	if len(order) == 0 {
		fmt.Fprintln(w, "no packet matched")
	}
	if end == nil {
		return errors.New("the connection to the instance dropped before the trace ended")
	}
	return nil
}

// summary is a packet in one line: protocol, addresses and ports.
func summary(b []byte, n uint32) string {
	ip, ok := header.IPv4InFrame(b)
	if !ok {
		if len(b) >= 14 && b[12] == 0x08 && b[13] == 0x06 {
			return fmt.Sprintf("ARP, %d bytes", n)
		}
		return fmt.Sprintf("%d bytes", n)
	}
	src, dst := netip.AddrFrom4(ip.Src4()), netip.AddrFrom4(ip.Dst4())
	switch ip.Protocol() {
	case header.ProtoUDP, header.ProtoTCP:
		proto := "UDP"
		if ip.Protocol() == header.ProtoTCP {
			proto = "TCP"
		}
		if sp, dp, ok := ip.Ports(); ok {
			return fmt.Sprintf("%s %s:%d → %s:%d, %d bytes", proto, src, sp, dst, dp, n)
		}
		return fmt.Sprintf("%s %s → %s, %d bytes", proto, src, dst, n)
	case header.ProtoICMP:
		return fmt.Sprintf("ICMP %s → %s, %d bytes", src, dst, n)
	}
	return fmt.Sprintf("IPv4 proto %d %s → %s, %d bytes", ip.Protocol(), src, dst, n)
}

// printPath prints one packet's path: where it arrived, each stage it met with its verdict
// (a stage that saw it and did not decide passed it on), hand-offs between shards, and the
// stack's decision.
func printPath(w io.Writer, info *capture.Info, n int, tp *tracedPacket) {
	// The instance drains the shards' rings one after the other, so a packet's steps arrive
	// grouped by shard, not in the order they happened: a hand-off to a lower shard would
	// print before its cause. Their times put them back in order.
	sort.SliceStable(tp.steps, func(i, j int) bool { return tp.steps[i].Nanos < tp.steps[j].Nanos })
	first := tp.steps[0]
	fmt.Fprintf(w, "packet %d: %s (id %016x)\n", n, summary(first.Data, first.Len), tp.id)
	var lastIn *capture.Packet
	pendingIn := func() {
		if lastIn != nil {
			name := info.StageName(int(lastIn.Shard), int(lastIn.Stage))
			fmt.Fprintf(w, "  shard %d  %-10s continue (did not decide)\n", lastIn.Shard, name)
			lastIn = nil
		}
	}
	final := false
	for i := range tp.steps {
		s := &tp.steps[i]
		switch {
		case s.Point == capture.PointHandoff:
			fmt.Fprintf(w, "  shard %d  received%s: the owner function gives shard %d → hand-off to shard %d (before the pipeline)\n",
				s.Shard, queueOf(info, int(s.Shard)), s.ToShard, s.ToShard)
		case s.Point == pipelines.TapIn:
			pendingIn()
			if s.Stage == 0 {
				from := "received" + queueOf(info, int(s.Shard)) + " from " + info.Iface(int(s.InIf))
				if i > 0 {
					from = "takes the hand-off (copied into its frames)"
				}
				fmt.Fprintf(w, "  shard %d  %s\n", s.Shard, from)
			}
			c := *s
			lastIn = &c
		case s.Point == pipelines.TapOut:
			if lastIn != nil && lastIn.Stage == s.Stage && lastIn.Shard == s.Shard {
				lastIn = nil
			} else {
				pendingIn()
			}
			name := info.StageName(int(s.Shard), int(s.Stage))
			what := "stage"
			if info.Local(int(s.Shard), int(s.Stage)) {
				what = "the local stack"
			}
			fmt.Fprintf(w, "  shard %d  %-10s %s (%s)\n", s.Shard, name, info.Verdict(s), what)
			final = s.Verdict != pipelines.Handoff && s.Verdict != pipelines.ToStack
		}
	}
	if lastIn != nil {
		name := info.StageName(int(lastIn.Shard), int(lastIn.Stage))
		fmt.Fprintf(w, "  shard %d  %-10s did not decide: dropped at the pipeline's end (no-verdict)\n", lastIn.Shard, name)
		final = true
	}
	if !final {
		fmt.Fprintln(w, "  (the trace ended before the packet's last step)")
	}
}

func queueOf(info *capture.Info, shard int) string {
	if shard < len(info.Queues) {
		return fmt.Sprintf(" on queue %d", info.Queues[shard])
	}
	return ""
}
