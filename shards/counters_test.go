package shards

import "testing"

func TestTrafficSince(t *testing.T) {
	before := TrafficOf([]Snapshot{
		{RxPackets: 10, TxPackets: 4, RxBytes: 1000, Drops: map[string]uint64{"no-socket": 2}, DropsTotal: 2},
		{RxPackets: 5, TxBytes: 70},
	})
	after := TrafficOf([]Snapshot{
		{RxPackets: 17, TxPackets: 9, RxBytes: 1700, Drops: map[string]uint64{"no-socket": 2, "fault-drop": 1}, DropsTotal: 3},
		{RxPackets: 8, TxBytes: 90, Drops: map[string]uint64{"no-socket": 4}, DropsTotal: 4},
	})
	d := after.Since(before)
	if d.RxPackets != 10 || d.TxPackets != 5 || d.RxBytes != 700 || d.TxBytes != 20 || d.DropsTotal != 5 {
		t.Errorf("since: %+v", d)
	}
	if len(d.Drops) != 2 || d.Drops["no-socket"] != 4 || d.Drops["fault-drop"] != 1 {
		t.Errorf("drops since: %v", d.Drops)
	}
	if s := d.DropsString(); s != "fault-drop 1, no-socket 4" {
		t.Errorf("DropsString %q", s)
	}
	if s := (Traffic{}).DropsString(); s != "none" {
		t.Errorf("no drops: %q", s)
	}
}
