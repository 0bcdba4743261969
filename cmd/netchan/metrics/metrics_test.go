package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/shards"
	"github.com/netchan/netchan/stack"
)

// collectFunc is a collector over one of the Collector's parts, so that they can be gathered
// without a running instance.
type collectFunc func(ch chan<- prometheus.Metric)

func (f collectFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }
func (f collectFunc) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(f, ch) }

// gather registers f on a pedantic registry and returns each unlabelled metric's value by
// name, and the type of every family.
func gather(t *testing.T, f collectFunc) (map[string]float64, map[string]string) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals, types := map[string]float64{}, map[string]string{}
	for _, fam := range fams {
		types[fam.GetName()] = fam.GetType().String()
		for _, m := range fam.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.Counter != nil:
				vals[fam.GetName()] = m.Counter.GetValue()
			case m.Gauge != nil:
				vals[fam.GetName()] = m.Gauge.GetValue()
			}
		}
	}
	return vals, types
}

// TestStackLimitCounters: the counters of the stack's limits are exported as counters, each
// with the value of its own field of stack.Stats (every field a different value).
func TestStackLimitCounters(t *testing.T) {
	st := stack.Stats{NeighborEvictions: 11, NeighborRefused: 12, ARPPendingFull: 13, ReasmEvicted: 14, NoRoute: 15, ReasmTimeouts: 16}
	st.TCP.ConnLimitDrops, st.TCP.HalfOpenEvicted, st.TCP.BacklogDrops = 21, 22, 23
	vals, types := gather(t, func(ch chan<- prometheus.Metric) { collectStack(ch, st, nil) })
	for name, want := range map[string]float64{
		"netchan_stack_neighbor_evictions_total":   11,
		"netchan_stack_neighbor_refused_total":     12,
		"netchan_stack_arp_pending_full_total":     13,
		"netchan_stack_reassembly_evicted_total":   14,
		"netchan_stack_no_route_total":             15,
		"netchan_stack_reassembly_timeouts_total":  16,
		"netchan_tcp_connection_limit_drops_total": 21,
		"netchan_tcp_half_open_evicted_total":      22,
		"netchan_tcp_backlog_drops_total":          23,
	} {
		if got, ok := vals[name]; !ok || got != want || types[name] != "COUNTER" {
			t.Errorf("%s = %v (present %v, type %s), want the counter %v", name, got, ok, types[name], want)
		}
	}
}

// TestNATLimitCounters: the NAT's drops at its limits are exported as counters, each with its
// own field of nat.Stats.
func TestNATLimitCounters(t *testing.T) {
	st := nat.Stats{TableFullDrops: 31, HostLimitDrops: 32, SpoofedDrops: 33, Translated: 34,
		Shards: []nat.ShardStats{{Shard: 0, Active: 2, Created: 5, Expired: 3}}}
	vals, types := gather(t, func(ch chan<- prometheus.Metric) { collectNAT(ch, st) })
	for name, want := range map[string]float64{
		"netchan_nat_table_full_drops_total":   31,
		"netchan_nat_host_limit_drops_total":   32,
		"netchan_nat_spoofed_drops_total":      33,
		"netchan_nat_translated_packets_total": 34,
	} {
		if got, ok := vals[name]; !ok || got != want || types[name] != "COUNTER" {
			t.Errorf("%s = %v (present %v, type %s), want the counter %v", name, got, ok, types[name], want)
		}
	}
	if types["netchan_nat_mappings"] != "GAUGE" || types["netchan_nat_mappings_created_total"] != "COUNTER" {
		t.Errorf("per-shard NAT metrics: types %v", types)
	}
}

// TestDescribeLimits: Describe lists the new metrics when the source has a stack and a NAT,
// and none of them without.
func TestDescribeLimits(t *testing.T) {
	described := func(src Source) string {
		ch := make(chan *prometheus.Desc, 1000)
		NewCollector(src).Describe(ch)
		close(ch)
		var all []string
		for d := range ch {
			all = append(all, d.String())
		}
		return strings.Join(all, "\n")
	}
	h, err := stack.NewHost(stack.Config{Ifaces: []stack.Iface{{}}})
	if err != nil {
		t.Fatal(err)
	}
	with, without := described(Source{Host: h, NAT: &nat.NAT{}}), described(Source{})
	for _, name := range []string{"netchan_shard_busy_poll_calls_total", "netchan_shard_busy_poll_rx_packets_total"} {
		q := `fqName: "` + name + `"`
		if !strings.Contains(with, q) || !strings.Contains(without, q) {
			t.Errorf("%s: described with a stack and a NAT %v, without them %v; want it always", name, strings.Contains(with, q), strings.Contains(without, q))
		}
	}
	for _, name := range []string{"netchan_stack_neighbor_evictions_total", "netchan_stack_neighbor_refused_total",
		"netchan_stack_arp_pending_full_total", "netchan_stack_reassembly_evicted_total", "netchan_tcp_connection_limit_drops_total",
		"netchan_tcp_half_open_evicted_total", "netchan_nat_table_full_drops_total", "netchan_nat_host_limit_drops_total", "netchan_nat_spoofed_drops_total"} {
		q := `fqName: "` + name + `"`
		if !strings.Contains(with, q) || strings.Contains(without, q) {
			t.Errorf("%s: described with a stack and a NAT %v, without them %v; want true, false", name, strings.Contains(with, q), strings.Contains(without, q))
		}
	}
}

// TestShardBusyPollCounters: a shard's busy-poll counters are exported as counters labelled
// {shard, queue} like the other per-shard counters, each with its own field of the snapshot,
// and 0 for a shard that does not busy poll.
func TestShardBusyPollCounters(t *testing.T) {
	snaps := []shards.Snapshot{
		{Shard: 0, Queue: 0, RxPackets: 5700, Polls: 90, BusyPollCalls: 1234, BusyPollRxPackets: 5678,
			BusyPoll: []shards.BusyPollState{{Iface: "eth1", State: "on", NAPIID: 8193}}},
		{Shard: 1, Queue: 3, RxPackets: 10, Polls: 2, BusyPoll: []shards.BusyPollState{{Iface: "eth1", State: "unavailable", Why: "no NAPI id: generic XDP"}}},
		{Shard: 2, Queue: 5, RxPackets: 7}, // busy polling off
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collectFunc(func(ch chan<- prometheus.Metric) {
		for _, s := range snaps {
			collectShard(ch, s, []string{"eth1"}, pipelines.ReasonNames())
		}
	}))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{} // name → "shard/queue" → value
	types := map[string]string{}
	for _, fam := range fams {
		types[fam.GetName()] = fam.GetType().String()
		for _, m := range fam.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if len(labels) != 2 || labels["shard"] == "" || labels["queue"] == "" || m.Counter == nil {
				continue
			}
			if got[fam.GetName()] == nil {
				got[fam.GetName()] = map[string]float64{}
			}
			got[fam.GetName()][labels["shard"]+"/"+labels["queue"]] = m.Counter.GetValue()
		}
	}
	for name, want := range map[string]map[string]float64{
		"netchan_shard_busy_poll_calls_total":      {"0/0": 1234, "1/3": 0, "2/5": 0},
		"netchan_shard_busy_poll_rx_packets_total": {"0/0": 5678, "1/3": 0, "2/5": 0},
		"netchan_rx_packets_total":                 {"0/0": 5700, "1/3": 10, "2/5": 7}, // the same labels as before
	} {
		if types[name] != "COUNTER" || len(got[name]) != len(want) {
			t.Errorf("%s: type %s, series %v; want a counter per shard %v", name, types[name], got[name], want)
			continue
		}
		for k, v := range want {
			if got[name][k] != v {
				t.Errorf("%s{shard/queue %s} = %v, want %v", name, k, got[name][k], v)
			}
		}
	}
}
