package gen

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteText writes r as a table: one row per queue and a total, rates in packets/s and
// Mbit/s (frame bytes without the FCS; "wire" adds preamble, FCS and gap), loss, reordering,
// duplicates and latency percentiles.
func (r *Result) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "%s, frames %s bytes (without FCS), %d flows, %d queues: asked %.0f packets/s for %v, measured over %.3f s\n",
		r.Proto, r.Sizes, r.Flows, len(r.Queues), r.Load, r.Duration, r.Seconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "queue\ttx pkts\ttx pps\ttx Mbit/s\twire Mbit/s\tmissed\tbehind\trx pkts\trx pps\tlost\tloss %\treord\tdup\tp50\tp90\tp99\tp99.9\tmax\t")
	row := func(name string, s Stats) {
		l := s.Latency
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%d\t%v\t%d\t%.0f\t%d\t%.4f\t%d\t%d\t%v\t%v\t%v\t%v\t%v\t\n", name,
			s.TxPackets, s.TxPPS, s.TxBPS/1e6, s.TxWireBPS/1e6, s.Missed, short(s.Behind), s.RxPackets, s.RxPPS,
			s.Lost, 100*s.LossRatio, s.Reordered, s.Duplicates, short(l.P50), short(l.P90), short(l.P99), short(l.P999), short(l.Max))
	}
	for _, q := range r.Queues {
		row(fmt.Sprint(q.Queue), q)
	}
	row("total", r.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Total.Latency.Samples > 0 {
		fmt.Fprintf(w, "latency: %s, %s timestamps, %d samples, within 0.8%% (HDR-style buckets)\n", r.Total.Latency.Kind, r.Total.Latency.Clock, r.Total.Latency.Samples)
	}
	if r.HasExternal {
		fmt.Fprintf(w, "receiver counted %d packets\n", r.External)
	}
	if r.Stale+r.Foreign > 0 {
		_, err := fmt.Fprintf(w, "other frames: %d of other trials or runs, %d without our payload\n", r.Stale, r.Foreign)
		return err
	}
	return nil
}

func short(d time.Duration) time.Duration {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}
