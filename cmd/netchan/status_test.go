package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/netchan/netchan/cmd/netchan/control"
)

// busyPollStatus is a status whose shards section holds, for shard 0, the snapshot recorded
// from `netchan run --busy-poll` on a lab veth (TestBusyPollVethCommand; stages and kernel
// counters left out); shards 1 to 4 are written by hand, since no NIC here gives a NAPI id:
// on (one link), waiting, two links of a NAT shard (one on, one unavailable), and busy
// polling off (no busy_poll).
const busyPollStatus = `{"instance": "bp", "pid": 1, "command": "run", "uptime_seconds": 1,
 "sections": ["pipeline", "shards"],
 "pipeline": {"name": "reflect", "interfaces": ["nct3pqnn0"], "queues": [0], "xdp_modes": ["native"], "batch_size": 64, "owner": "none",
   "umem": {"frames": 4096, "frame_size": 2048, "ring_size": 2048}},
 "shards": [
  {"shard": 0, "queue": 0, "cpu": 0, "rx_packets": 2000, "rx_bytes": 200000, "tx_packets": 2000, "tx_bytes": 200000, "drops_total": 0,
   "fill_empty": 0, "tx_ring_full": 0, "polls": 48, "packets_per_poll": 41.666666666666664, "handoff_out": 0, "handoff_in": 0,
   "handoff_copies": 0, "handoff_stalls": 0, "kicks": 68, "sleeps": 45, "yields": 0, "busy_ns": 8052130, "idle_ns": 266259644,
   "busy_poll_calls": 0, "busy_poll_rx_packets": 0,
   "busy_poll": [{"iface": "nct3pqnn0", "state": "unavailable", "why": "no NAPI id: veth"}]},
  {"shard": 1, "queue": 1, "cpu": 1, "rx_packets": 5700, "busy_poll_calls": 1234, "busy_poll_rx_packets": 5678,
   "busy_poll": [{"iface": "eth1", "state": "on", "napi_id": 8193}]},
  {"shard": 2, "queue": 2, "cpu": 2, "busy_poll": [{"iface": "eth1", "state": "waiting"}]},
  {"shard": 3, "queue": 3, "cpu": 3, "rx_packets": 900, "busy_poll_calls": 40, "busy_poll_rx_packets": 800,
   "busy_poll": [{"iface": "eth1", "state": "on", "napi_id": 8196}, {"iface": "eth2", "state": "unavailable", "why": "no NAPI id after the first packets"}]},
  {"shard": 4, "queue": 4, "cpu": 4, "rx_packets": 10}
 ]}`

// TestPrintStatusBusyPoll: the status text has a line per link of every shard that busy
// polls, with the state as shards.BusyPollState says it, and the shard's polls and the
// packets they brought: on the link's line for a shard of one link, on a line of the shard's
// own for a shard of several; nothing for a shard with busy polling off.
func TestPrintStatusBusyPoll(t *testing.T) {
	st := &control.Status{Raw: []byte(busyPollStatus)}
	if err := json.Unmarshal(st.Raw, &st.Header); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(st.Raw, &st.Sections); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := printStatus(&buf, st); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Logf("status:\n%s", out)
	want := []string{
		"shard 0 queue 0 nct3pqnn0: busy polling unavailable (no NAPI id: veth)",
		"shard 1 queue 1 eth1: busy polling on (NAPI id 8193): 1234 polls brought 5678 of 5700 packets",
		"shard 2 queue 2 eth1: busy polling waiting for the first packet (it brings the NAPI id)",
		"shard 3 queue 3 eth1: busy polling on (NAPI id 8196)",
		"shard 3 queue 3 eth2: busy polling unavailable (no NAPI id after the first packets)",
		"shard 3 queue 3: 40 polls brought 800 of 900 packets (all its links)",
	}
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "busy poll") || strings.Contains(l, "polls brought") {
			got = append(got, l)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("busy-poll lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(out, "shard 4 queue 4 ") {
		t.Errorf("a line for shard 4, which does not busy poll")
	}
}
