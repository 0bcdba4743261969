// Package metrics serves a running netchan instance's figures to Prometheus: `netchan run`,
// `echo`, `nat` and `demo` call Listen with --metrics ADDR, and GET /metrics on it answers in
// the Prometheus text format.
//
// The Collector reads snapshots at scrape time and keeps nothing between scrapes: the shards'
// counters (Instance.Snapshot: atomics the shards publish once per batch, with the pipeline's
// per-stage counters and the kernel's AF_XDP statistics of every socket), the XDP programs'
// own counters (Instance.XDPStats: BPF map reads), and, when the instance runs them, the
// stack's counters and TCP connections (stack.Host.Stats, TCPConns) and the NAT's
// (nat.NAT.Stats). None of these takes a lock a shard holds on its fast path: TCPConns takes
// the stack's connection-table lock, which shards take only to open or close a connection (a
// scrape of many connections delays those briefly); the shard pass stays free of allocations
// with metrics on.
//
// Names and units follow Prometheus conventions: counters end in _total, times are in seconds.
// Labels are bounded: shard and queue (one value per shard), interface (the instance's
// interfaces), stage (the pipeline's stage names, the local stack last), reason (the drop
// reasons, at most pipelines.MaxReasons), state (the TCP states). Nothing is labelled by flow.
//
// Per shard ({shard, queue}; a shard owns that queue of every interface):
//
//	netchan_rx_packets_total, netchan_rx_bytes_total, netchan_tx_packets_total, netchan_tx_bytes_total
//	netchan_drops_total{reason}
//	netchan_handoff_out_packets_total, netchan_handoff_in_packets_total, netchan_handoff_stalls_total
//	netchan_fill_empty_passes_total, netchan_tx_ring_full_passes_total, netchan_tx_kicks_total
//	netchan_polls_total, netchan_sleeps_total, netchan_yields_total, netchan_packets_per_poll
//	netchan_shard_busy_poll_calls_total, netchan_shard_busy_poll_rx_packets_total
//	netchan_shard_info{cpu}
//
// Per stage of each shard ({shard, queue, stage}; VPP's `show runtime`):
//
//	netchan_stage_calls_total, netchan_stage_packets_total, netchan_stage_decided_packets_total
//	netchan_stage_drops_total{reason}, netchan_stage_seconds_per_packet, netchan_stage_packets_per_call
//
// Per AF_XDP socket ({interface, queue}; the kernel's XDP_STATISTICS):
//
//	netchan_kernel_rx_dropped_total, netchan_kernel_rx_ring_full_total,
//	netchan_kernel_fill_ring_empty_total, netchan_kernel_tx_invalid_total, netchan_kernel_rx_invalid_total
//
// Per interface ({interface}; the XDP program's own counters):
//
//	netchan_xdp_claimed_packets_total, netchan_xdp_passed_packets_total,
//	netchan_xdp_no_socket_packets_total, netchan_xdp_kernel_dst_packets_total,
//	netchan_xdp_flow_fragment_packets_total,
//	netchan_xdp_fast_packets_total, netchan_xdp_fast_no_target_packets_total
//
// With the stack: netchan_stack_… counters (ARP, ICMP, UDP, fragments, routes: see stackCounters),
// netchan_tcp_… counters and netchan_tcp_connections{state}; the drops at the stack's limits
// among them: netchan_stack_neighbor_evictions_total, netchan_stack_neighbor_refused_total,
// netchan_stack_arp_pending_full_total, netchan_stack_reassembly_evicted_total,
// netchan_tcp_backlog_drops_total, netchan_tcp_connection_limit_drops_total,
// netchan_tcp_half_open_evicted_total. With the NAT: netchan_nat_mappings{shard},
// netchan_nat_mappings_created_total{shard}, netchan_nat_mappings_expired_total{shard},
// netchan_nat_translated_packets_total, netchan_nat_icmp_errors_translated_total,
// netchan_nat_fast_translated_packets_total, netchan_nat_fast_flows, netchan_nat_fast_path_off,
// and the drops at its limits: netchan_nat_table_full_drops_total,
// netchan_nat_host_limit_drops_total, netchan_nat_spoofed_drops_total. And
// netchan_info{app, name}.
//
// With busy polling on (docs/busy-poll.md), netchan_shard_busy_poll_calls_total counts a
// shard's busy polls and netchan_shard_busy_poll_rx_packets_total the packets they brought;
// the second close to netchan_rx_packets_total means the polls, not the interrupts, do the
// queue's receive work. Both stay 0 with busy polling off or unavailable (veth, generic XDP).
//
// Busy and idle time per shard: netchan_shard_busy_seconds_total and
// netchan_shard_idle_seconds_total (the time after a pass that found work, and after one that
// did not: spinning without work and sleeping). The time a stage takes is exported per packet
// (netchan_stage_seconds_per_packet); the process's CPU time is process_cpu_seconds_total.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/shards"
	"github.com/netchan/netchan/stack"
)

// Source is what a scrape reads: the running instance and, when it has them, its stack and NAT.
type Source struct {
	// Name is the instance's name (--instance), exported as netchan_info's name label.
	Name     string
	Instance *netchan.Instance
	// Host is the stack the instance runs, or nil.
	Host *stack.Host
	// NAT is the NAT the instance runs, or nil.
	NAT *nat.NAT
}

// TCPStates are the TCP states netchan_tcp_connections reports, every one on every scrape (0
// when no connection is in it).
var TCPStates = []string{"CLOSED", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
	"CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"}

const ns = "netchan"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

var (
	shardLabels  = []string{"shard", "queue"}
	stageLabels  = []string{"shard", "queue", "stage"}
	socketLabels = []string{"interface", "queue"}
	ifaceLabels  = []string{"interface"}
)

// shardCounter is one counter of shards.Snapshot.
type shardCounter struct {
	d   *prometheus.Desc
	get func(s *shardSnap) uint64
}

type shardSnap = struct {
	RxPackets, RxBytes, TxPackets, TxBytes              uint64
	HandoffOut, HandoffIn, HandoffStalls                uint64
	FillEmpty, TxRingFull, Kicks, Polls, Sleeps, Yields uint64
	BusyNanos, IdleNanos                                uint64
	BusyPollCalls, BusyPollRxPackets                    uint64
}

var shardCounters = []shardCounter{
	{desc("rx_packets_total", "Packets the shard received from its AF_XDP sockets.", shardLabels...), func(s *shardSnap) uint64 { return s.RxPackets }},
	{desc("rx_bytes_total", "Bytes of the packets the shard received.", shardLabels...), func(s *shardSnap) uint64 { return s.RxBytes }},
	{desc("tx_packets_total", "Packets the shard transmitted.", shardLabels...), func(s *shardSnap) uint64 { return s.TxPackets }},
	{desc("tx_bytes_total", "Bytes of the packets the shard transmitted.", shardLabels...), func(s *shardSnap) uint64 { return s.TxBytes }},
	{desc("handoff_out_packets_total", "Packets the shard handed to the shard owning their flow (each copied into a frame the owner lent).", shardLabels...), func(s *shardSnap) uint64 { return s.HandoffOut }},
	{desc("handoff_in_packets_total", "Packets other shards handed to this one.", shardLabels...), func(s *shardSnap) uint64 { return s.HandoffIn }},
	{desc("handoff_stalls_total", "Passes that received less because an owner had no spare frames.", shardLabels...), func(s *shardSnap) uint64 { return s.HandoffStalls }},
	{desc("fill_empty_passes_total", "Passes where a fill ring wanted frames and the shard's free list had none.", shardLabels...), func(s *shardSnap) uint64 { return s.FillEmpty }},
	{desc("tx_ring_full_passes_total", "Passes where a tx ring refused frames.", shardLabels...), func(s *shardSnap) uint64 { return s.TxRingFull }},
	{desc("tx_kicks_total", "sendto() wake-ups of the tx rings.", shardLabels...), func(s *shardSnap) uint64 { return s.Kicks }},
	{desc("polls_total", "Shard passes that received at least one packet.", shardLabels...), func(s *shardSnap) uint64 { return s.Polls }},
	{desc("sleeps_total", "Times the shard slept (parked until traffic, a wake-up or a deadline).", shardLabels...), func(s *shardSnap) uint64 { return s.Sleeps }},
	{desc("yields_total", "Times a busy shard entered the Go scheduler.", shardLabels...), func(s *shardSnap) uint64 { return s.Yields }},
	{desc("shard_busy_poll_calls_total", "Busy polls the shard made: recvfrom calls that ran a queue's NAPI poll because its rx ring was empty (busy polling on).", shardLabels...), func(s *shardSnap) uint64 { return s.BusyPollCalls }},
	{desc("shard_busy_poll_rx_packets_total", "Packets a link's receive took right after a busy poll of that link had found its rx ring empty: the packets the polls brought.", shardLabels...), func(s *shardSnap) uint64 { return s.BusyPollRxPackets }},
}

var (
	dropsDesc         = desc("drops_total", "Packets the shard dropped, by reason.", "shard", "queue", "reason")
	busyDesc          = desc("shard_busy_seconds_total", "Time after passes of the shard that found work.", shardLabels...)
	idleDesc          = desc("shard_idle_seconds_total", "Time after passes of the shard that found none: spinning without work and sleeping.", shardLabels...)
	perPollDesc       = desc("packets_per_poll", "Packets received per receiving pass since start (rx_packets_total / polls_total).", shardLabels...)
	shardInfoDesc     = desc("shard_info", "The CPU each shard is pinned to (-1: not pinned); always 1.", "shard", "queue", "cpu")
	infoDesc          = desc("info", "The application the instance runs and the instance's name; always 1.", "app", "name")
	stageCallsDesc    = desc("stage_calls_total", "Calls of the stage with at least one undecided packet.", stageLabels...)
	stagePacketsDesc  = desc("stage_packets_total", "Packets handed to the stage (undecided when it was called).", stageLabels...)
	stageDecidedDesc  = desc("stage_decided_packets_total", "Packets the stage gave a verdict.", stageLabels...)
	stageDropsDesc    = desc("stage_drops_total", "Packets the stage dropped, by reason.", "shard", "queue", "stage", "reason")
	stageSecondsDesc  = desc("stage_seconds_per_packet", "The stage's time per packet handed in, measured on every 16th call (pipelines.TimeSample).", stageLabels...)
	stagePerCallDesc  = desc("stage_packets_per_call", "Packets handed to the stage per call (VPP's vectors per call).", stageLabels...)
	kRxDroppedDesc    = desc("kernel_rx_dropped_total", "Frames the kernel dropped for the AF_XDP socket (XDP_STATISTICS rx_dropped).", socketLabels...)
	kRxRingFullDesc   = desc("kernel_rx_ring_full_total", "Frames dropped because the socket's rx ring was full.", socketLabels...)
	kFillEmptyDesc    = desc("kernel_fill_ring_empty_total", "Times the kernel found the socket's fill ring empty.", socketLabels...)
	kTxInvalidDesc    = desc("kernel_tx_invalid_total", "Invalid descriptors the kernel found on the socket's tx ring.", socketLabels...)
	kRxInvalidDesc    = desc("kernel_rx_invalid_total", "Invalid descriptors the kernel dropped on receive.", socketLabels...)
	xClaimedDesc      = desc("xdp_claimed_packets_total", "Frames the XDP program claimed for the AF_XDP sockets.", ifaceLabels...)
	xPassedDesc       = desc("xdp_passed_packets_total", "Frames no claim took: XDP_PASS to the kernel.", ifaceLabels...)
	xNoSocketDesc     = desc("xdp_no_socket_packets_total", "Claimed frames whose queue had no socket (passed to the kernel).", ifaceLabels...)
	xKernelDstDesc    = desc("xdp_kernel_dst_packets_total", "IPv4 frames to a kernel address, broadcast or multicast.", ifaceLabels...)
	xFlowFragDesc     = desc("xdp_flow_fragment_packets_total", "Non-first TCP/UDP fragments seen while a flow spec was held: they carry no ports, so no flow spec took them.", ifaceLabels...)
	xFastDesc         = desc("xdp_fast_packets_total", "Frames of fast flows the XDP program rewrote and redirected itself (the NAT's fast path).", ifaceLabels...)
	xFastNoTargetDesc = desc("xdp_fast_no_target_packets_total", "Frames of fast flows dropped because no redirect target was set.", ifaceLabels...)
	tcpConnsDesc      = desc("tcp_connections", "TCP connections of the stack, by state.", "state")
	udpSocketsDesc    = desc("stack_udp_sockets", "Open UDP sockets of the stack.")
	natMappingsDesc   = desc("nat_mappings", "NAT mappings in use, per shard.", "shard")
	natCreatedDesc    = desc("nat_mappings_created_total", "NAT mappings created, per shard.", "shard")
	natExpiredDesc    = desc("nat_mappings_expired_total", "NAT mappings expired, per shard.", "shard")
	natTransDesc      = desc("nat_translated_packets_total", "Packets the NAT's shards translated.")
	natICMPDesc       = desc("nat_icmp_errors_translated_total", "ICMP errors the NAT translated.")
	natFastTransDesc  = desc("nat_fast_translated_packets_total", "Packets the XDP fast path translated by itself.")
	natFastFlowsDesc  = desc("nat_fast_flows", "Flows installed in the XDP fast path now.")
	natFastOffDesc    = desc("nat_fast_path_off", "1 when the NAT turned its XDP fast path off because the kernel refused its redirects.")
	natTableFullDesc  = desc("nat_table_full_drops_total", "Packets the NAT dropped because no new mapping could be made: the shard's mappings (max_mappings) or the protocol's external ports were all taken (reason nat-table-full).")
	natHostLimitDesc  = desc("nat_host_limit_drops_total", "Packets the NAT dropped because their inside host held max_mappings_per_host mappings (reason nat-host-limit).")
	natSpoofedDesc    = desc("nat_spoofed_drops_total", "Packets the NAT dropped for a source address that cannot be their sender's (reason nat-spoofed-source).")
)

// stackCounter is one counter of stack.Stats.
type stackCounter struct {
	d   *prometheus.Desc
	get func(s *stack.Stats) uint64
}

var stackCounters = []stackCounter{
	{desc("stack_arp_requests_received_total", "ARP requests the stack received."), func(s *stack.Stats) uint64 { return s.ARPRequestsIn }},
	{desc("stack_arp_replies_sent_total", "ARP replies the stack sent."), func(s *stack.Stats) uint64 { return s.ARPRepliesOut }},
	{desc("stack_arp_requests_sent_total", "ARP requests the stack sent."), func(s *stack.Stats) uint64 { return s.ARPRequestsOut }},
	{desc("stack_arp_replies_received_total", "ARP replies the stack received."), func(s *stack.Stats) uint64 { return s.ARPRepliesIn }},
	{desc("stack_arp_timeouts_total", "ARP resolutions that timed out."), func(s *stack.Stats) uint64 { return s.ARPTimeouts }},
	{desc("stack_icmp_echo_replies_sent_total", "ICMP echo replies the stack sent (one per echo request answered)."), func(s *stack.Stats) uint64 { return s.EchoReplies }},
	{desc("stack_icmp_port_unreachable_sent_total", "ICMP port unreachable messages the stack sent."), func(s *stack.Stats) uint64 { return s.PortUnreachOut }},
	{desc("stack_icmp_errors_received_total", "ICMP errors the stack received."), func(s *stack.Stats) uint64 { return s.ICMPErrorsIn }},
	{desc("stack_udp_received_datagrams_total", "UDP datagrams the stack received."), func(s *stack.Stats) uint64 { return s.UDPIn }},
	{desc("stack_udp_delivered_datagrams_total", "UDP datagrams delivered to a socket."), func(s *stack.Stats) uint64 { return s.UDPDelivered }},
	{desc("stack_udp_sent_datagrams_total", "UDP datagrams the stack sent."), func(s *stack.Stats) uint64 { return s.UDPOut }},
	{desc("stack_fragments_received_total", "IPv4 fragments the stack received."), func(s *stack.Stats) uint64 { return s.FragmentsIn }},
	{desc("stack_reassembled_datagrams_total", "IPv4 datagrams reassembled from fragments."), func(s *stack.Stats) uint64 { return s.Reassembled }},
	{desc("stack_reassembly_timeouts_total", "Reassemblies that timed out."), func(s *stack.Stats) uint64 { return s.ReasmTimeouts }},
	{desc("stack_fragments_sent_total", "IPv4 fragments the stack sent."), func(s *stack.Stats) uint64 { return s.FragmentsOut }},
	{desc("stack_no_route_total", "Packets the stack could not route."), func(s *stack.Stats) uint64 { return s.NoRoute }},
	{desc("tcp_segments_received_total", "TCP segments the stack received."), func(s *stack.Stats) uint64 { return s.TCP.SegmentsIn }},
	{desc("tcp_segments_sent_total", "TCP segments the stack sent."), func(s *stack.Stats) uint64 { return s.TCP.SegmentsOut }},
	{desc("tcp_retransmits_total", "TCP segments retransmitted."), func(s *stack.Stats) uint64 { return s.TCP.Retransmits }},
	{desc("tcp_fast_retransmits_total", "TCP fast retransmissions."), func(s *stack.Stats) uint64 { return s.TCP.FastRetransmits }},
	{desc("tcp_timeouts_total", "TCP retransmission timeouts."), func(s *stack.Stats) uint64 { return s.TCP.Timeouts }},
	{desc("tcp_active_opens_total", "TCP connections the stack opened."), func(s *stack.Stats) uint64 { return s.TCP.ActiveOpens }},
	{desc("tcp_passive_opens_total", "TCP connections the stack accepted a SYN for."), func(s *stack.Stats) uint64 { return s.TCP.PassiveOpens }},
	{desc("tcp_established_total", "TCP connections that reached ESTABLISHED."), func(s *stack.Stats) uint64 { return s.TCP.Established }},
	{desc("tcp_resets_received_total", "TCP resets received."), func(s *stack.Stats) uint64 { return s.TCP.ResetsIn }},
	{desc("tcp_resets_sent_total", "TCP resets sent."), func(s *stack.Stats) uint64 { return s.TCP.ResetsOut }},
	{desc("tcp_backlog_drops_total", "TCP connections dropped because a listener's backlog was full."), func(s *stack.Stats) uint64 { return s.TCP.BacklogDrops }},
	{desc("stack_neighbor_evictions_total", "Learned neighbour entries replaced by a new address because their window of the table was full (stack.neighbor_table_size)."), func(s *stack.Stats) uint64 { return s.NeighborEvictions }},
	{desc("stack_neighbor_refused_total", "Neighbour addresses not learned because their window of the table held only static entries."), func(s *stack.Stats) uint64 { return s.NeighborRefused }},
	{desc("stack_arp_pending_full_total", "Datagrams dropped because the shard's queue of datagrams waiting for ARP had no room (stack.arp_pending_hops, arp_pending_per_hop)."), func(s *stack.Stats) uint64 { return s.ARPPendingFull }},
	{desc("stack_reassembly_evicted_total", "Incomplete datagrams given up to keep the shard's fragments within stack.reassembly_bytes."), func(s *stack.Stats) uint64 { return s.ReasmEvicted }},
	{desc("tcp_connection_limit_drops_total", "TCP SYNs dropped because the shard held stack.tcp.max_connections connections (reason tcp-connection-limit)."), func(s *stack.Stats) uint64 { return s.TCP.ConnLimitDrops }},
	{desc("tcp_half_open_evicted_total", "Half-open TCP connections given up for a new SYN when a listener's backlog was full and their SYN-ACK had gone unanswered for an RTO."), func(s *stack.Stats) uint64 { return s.TCP.HalfOpenEvicted }},
}

// Collector is a prometheus.Collector over a Source: every Collect reads fresh snapshots.
type Collector struct{ src Source }

// NewCollector returns the collector for src.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// Describe sends every metric's description (the stack's and the NAT's only when src has them).
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, sc := range shardCounters {
		ch <- sc.d
	}
	for _, d := range []*prometheus.Desc{dropsDesc, busyDesc, idleDesc, perPollDesc, shardInfoDesc, infoDesc,
		stageCallsDesc, stagePacketsDesc, stageDecidedDesc, stageDropsDesc, stageSecondsDesc, stagePerCallDesc,
		kRxDroppedDesc, kRxRingFullDesc, kFillEmptyDesc, kTxInvalidDesc, kRxInvalidDesc,
		xClaimedDesc, xPassedDesc, xNoSocketDesc, xKernelDstDesc, xFlowFragDesc, xFastDesc, xFastNoTargetDesc} {
		ch <- d
	}
	if c.src.Host != nil {
		for _, sc := range stackCounters {
			ch <- sc.d
		}
		ch <- tcpConnsDesc
		ch <- udpSocketsDesc
	}
	if c.src.NAT != nil {
		for _, d := range []*prometheus.Desc{natMappingsDesc, natCreatedDesc, natExpiredDesc, natTransDesc, natICMPDesc, natFastTransDesc, natFastFlowsDesc, natFastOffDesc,
			natTableFullDesc, natHostLimitDesc, natSpoofedDesc} {
			ch <- d
		}
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func fcounter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// Collect reads the snapshots and sends every metric.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	in := c.src.Instance
	gauge(ch, infoDesc, 1, in.Name(), c.src.Name)
	ifaces := in.Interfaces()
	reasons := pipelines.ReasonNames()
	for _, s := range in.Snapshot() {
		collectShard(ch, s, ifaces, reasons)
	}
	for i, x := range in.XDPStats() {
		iface := strconv.Itoa(i)
		if i < len(ifaces) {
			iface = ifaces[i]
		}
		counter(ch, xClaimedDesc, x.Claimed, iface)
		counter(ch, xPassedDesc, x.Passed, iface)
		counter(ch, xNoSocketDesc, x.NoSocket, iface)
		counter(ch, xKernelDstDesc, x.KernelDst, iface)
		counter(ch, xFlowFragDesc, x.FlowFragment, iface)
		counter(ch, xFastDesc, x.Fast, iface)
		counter(ch, xFastNoTargetDesc, x.FastNoTarget, iface)
	}
	if h := c.src.Host; h != nil {
		collectStack(ch, h.Stats(), h.TCPConns())
	}
	if n := c.src.NAT; n != nil {
		collectNAT(ch, n.Stats())
	}
}

// collectShard sends one shard's metrics: its counters, drops, stages and its sockets' kernel
// counters (ifaces names the sockets; reasons are the drop reasons known).
func collectShard(ch chan<- prometheus.Metric, s shards.Snapshot, ifaces, reasons []string) {
	sh, q := strconv.Itoa(s.Shard), strconv.Itoa(s.Queue)
	ss := shardSnap{RxPackets: s.RxPackets, RxBytes: s.RxBytes, TxPackets: s.TxPackets, TxBytes: s.TxBytes,
		HandoffOut: s.HandoffOut, HandoffIn: s.HandoffIn, HandoffStalls: s.HandoffStalls,
		FillEmpty: s.FillEmpty, TxRingFull: s.TxRingFull, Kicks: s.Kicks, Polls: s.Polls, Sleeps: s.Sleeps, Yields: s.Yields,
		BusyNanos: s.BusyNanos, IdleNanos: s.IdleNanos, BusyPollCalls: s.BusyPollCalls, BusyPollRxPackets: s.BusyPollRxPackets}
	for _, sc := range shardCounters {
		counter(ch, sc.d, sc.get(&ss), sh, q)
	}
	fcounter(ch, busyDesc, float64(ss.BusyNanos)/1e9, sh, q)
	fcounter(ch, idleDesc, float64(ss.IdleNanos)/1e9, sh, q)
	gauge(ch, perPollDesc, s.PacketsPerPoll, sh, q)
	gauge(ch, shardInfoDesc, 1, sh, q, strconv.Itoa(s.CPU))
	// Every known reason, zero included, so that a rate over the first drop of a kind
	// works; "none" is not a reason a packet is dropped for.
	for _, r := range reasons[1:] {
		counter(ch, dropsDesc, s.Drops[r], sh, q, r)
	}
	for r, n := range s.Drops { // a reason registered after ReasonNames was read
		if !known(reasons[1:], r) {
			counter(ch, dropsDesc, n, sh, q, r)
		}
	}
	seen := map[string]int{}
	for _, st := range s.Stages {
		name := st.Name
		if seen[name]++; seen[name] > 1 { // two stages of one name: keep the series apart
			name = fmt.Sprintf("%s#%d", name, seen[name])
		}
		counter(ch, stageCallsDesc, st.Calls, sh, q, name)
		counter(ch, stagePacketsDesc, st.Packets, sh, q, name)
		counter(ch, stageDecidedDesc, st.Decided, sh, q, name)
		gauge(ch, stageSecondsDesc, st.NanosPerPacket/1e9, sh, q, name)
		gauge(ch, stagePerCallDesc, st.PacketsPerCall, sh, q, name)
		for r, n := range st.Drops {
			counter(ch, stageDropsDesc, n, sh, q, name, r)
		}
	}
	for i, k := range s.Kernel {
		iface := strconv.Itoa(i)
		if i < len(ifaces) {
			iface = ifaces[i]
		}
		counter(ch, kRxDroppedDesc, k.RxDropped, iface, q)
		counter(ch, kRxRingFullDesc, k.RxRingFull, iface, q)
		counter(ch, kFillEmptyDesc, k.FillRingEmpty, iface, q)
		counter(ch, kTxInvalidDesc, k.TxInvalid, iface, q)
		counter(ch, kRxInvalidDesc, k.RxInvalid, iface, q)
	}
}

// collectStack sends the stack's metrics: its counters and its connections by state.
func collectStack(ch chan<- prometheus.Metric, st stack.Stats, conns []stack.ConnStats) {
	for _, sc := range stackCounters {
		counter(ch, sc.d, sc.get(&st))
	}
	gauge(ch, udpSocketsDesc, float64(st.Sockets))
	byState := map[string]int{}
	for _, cs := range conns {
		byState[cs.State]++
	}
	for _, state := range TCPStates {
		gauge(ch, tcpConnsDesc, float64(byState[state]), state)
		delete(byState, state)
	}
	for state, n := range byState { // a state this list does not know
		gauge(ch, tcpConnsDesc, float64(n), state)
	}
}

// collectNAT sends the NAT's metrics.
func collectNAT(ch chan<- prometheus.Metric, st nat.Stats) {
	for _, s := range st.Shards {
		sh := strconv.Itoa(s.Shard)
		gauge(ch, natMappingsDesc, float64(s.Active), sh)
		counter(ch, natCreatedDesc, uint64(s.Created), sh)
		counter(ch, natExpiredDesc, uint64(s.Expired), sh)
	}
	counter(ch, natTransDesc, st.Translated)
	counter(ch, natICMPDesc, st.ICMPErrorsTranslated)
	counter(ch, natFastTransDesc, st.FastTranslated)
	gauge(ch, natFastFlowsDesc, float64(st.FastActive))
	off := 0.0
	if st.FastOff {
		off = 1
	}
	gauge(ch, natFastOffDesc, off)
	counter(ch, natTableFullDesc, st.TableFullDrops)
	counter(ch, natHostLimitDesc, st.HostLimitDrops)
	counter(ch, natSpoofedDesc, st.SpoofedDrops)
}

func known(names []string, n string) bool {
	for _, m := range names {
		if m == n {
			return true
		}
	}
	return false
}

// NewRegistry returns a registry with src's Collector, the Go runtime's collector and the
// process collector (process_cpu_seconds_total and the like).
func NewRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server serves /metrics over HTTP.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen listens on addr (host:port; port 0 picks one) and serves src's registry on /metrics
// until Close.
func Listen(addr string, src Source) (*Server, error) {
	if src.Instance == nil {
		return nil, errors.New("metrics: no instance")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(NewRegistry(src), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "netchan: metrics at /metrics")
	})
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is the address the server listens on (with the port it picked for port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the metrics endpoint's URL.
func (s *Server) URL() string { return "http://" + s.Addr() + "/metrics" }

// Close stops serving.
func (s *Server) Close() error { return s.srv.Close() }
