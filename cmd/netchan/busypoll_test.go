package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/netchan/netchan/runtime/caps"
	"github.com/netchan/netchan/runtime/lab"
	"github.com/netchan/netchan/runtime/lab/labtest"
	"github.com/netchan/netchan/shards"
)

// TestBusyPollVethCommand runs `netchan run --pipeline reflect --busy-poll` on a lab veth,
// where busy polling is unavailable (veth gives AF_XDP sockets no NAPI id): the run says so in
// its log before it is ready, still reflects every frame, its status (JSON and text) shows the
// link unavailable with both counters 0, the metrics have the counters at 0, and the
// privileges section lists busy polling as needing nothing once set up. `netchan doctor
// --busy-poll` (or a --config with pipeline.busy_poll.on) warns that busy polling is
// unavailable on the veth; without it the finding is info.
func TestBusyPollVethCommand(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{QueueCount: 1})
	ep := l.Netchan[0]
	name := l.Name + "-bp"
	unavailable := "busy polling unavailable: " + ep.Iface + " has no NAPI id to poll (veth"

	doctor := func(args ...string) (*doctorFinding, error) {
		t.Helper()
		out, err := exec.Command(binary, append([]string{"doctor", "--json", "--iface", ep.Iface}, args...)...).Output()
		f := finding(t, out, "busy-poll", ep.Iface)
		if f == nil || !strings.Contains(f.What, unavailable) {
			t.Fatalf("doctor %v: busy-poll finding %+v, want one saying %q", args, f, unavailable)
		}
		return f, err
	}
	if f, err := doctor(); err != nil || f.Severity != "info" {
		t.Errorf("doctor without --busy-poll: %v, %+v; want exit 0 and an info finding", err, f)
	}
	if f, err := doctor("--busy-poll"); err == nil || f.Severity != "warn" || !strings.Contains(f.Fix, "leave busy polling off on veth") {
		t.Errorf("doctor --busy-poll: %v, %+v; want exit 1 and a warning with its fix", err, f)
	}
	path := filepath.Join(t.TempDir(), "bp.json")
	if err := os.WriteFile(path, []byte(`{"interfaces": [{"name": "`+ep.Iface+`"}], "pipeline": {"busy_poll": {"on": true}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := doctor("--config", path); err == nil || f.Severity != "warn" {
		t.Errorf("doctor --config with busy_poll on: %v, %+v; want exit 1 and a warning", err, f)
	}
	if f, _ := doctor("--config", path, "--busy-poll=false"); f.Severity != "info" {
		t.Errorf("doctor --config with busy_poll on, --busy-poll=false: %+v; want info (the flag wins)", f)
	}

	cmd, stderr := startRun(t, "--iface", ep.Iface, "--pipeline", "reflect", "--xdp-mode", "native", "--stats", "0", "--instance", name,
		"--busy-poll", "--busy-poll-budget", "32", "--busy-poll-idle", "2ms", "--metrics", "127.0.0.1:0")
	const count = 2000
	sendFrames(t, l, count, 100, 51) // every frame comes back

	want := []shards.BusyPollState{{Iface: ep.Iface, State: "unavailable", Why: "no NAPI id: veth"}}
	st := readStatus(t, name)
	if len(st.Shards) != 1 || !slices.Equal(st.Shards[0].BusyPoll, want) || st.Shards[0].BusyPollCalls != 0 || st.Shards[0].BusyPollRxPackets != 0 ||
		st.Shards[0].RxPackets < count {
		t.Errorf("status: %+v; want busy_poll %+v, no busy polls, at least %d rx packets", st.Shards, want, count)
	}
	out, err := exec.Command(binary, "status", "--instance", name).Output()
	line := "shard 0 queue 0 " + ep.Iface + ": busy polling unavailable (no NAPI id: veth)\n"
	if err != nil || !strings.Contains(string(out), line) {
		t.Errorf("status text: %v; want the line %q in:\n%s", err, line, out)
	}
	m := scrape(t, metricsURL(t, name))
	for _, n := range []string{"netchan_shard_busy_poll_calls_total", "netchan_shard_busy_poll_rx_packets_total"} {
		if v := m.u(t, n, "shard=0", "queue=0"); v != 0 || m[n].GetType().String() != "COUNTER" {
			t.Errorf("%s{shard=0,queue=0} = %d (%s), want the counter at 0 on veth", n, v, m[n].GetType())
		}
	}
	var priv struct {
		Privileges struct {
			Needs []caps.Need `json:"needs"`
		} `json:"privileges"`
	}
	raw := statusInto(t, name, &priv)
	i := slices.IndexFunc(priv.Privileges.Needs, func(n caps.Need) bool { return n.Feature == caps.BusyPoll })
	if i < 0 || priv.Privileges.Needs[i].Needs != 0 || !strings.Contains(priv.Privileges.Needs[i].Why, "set at set-up") {
		t.Errorf("privileges section: want busy polling listed, needing nothing once set up:\n%s", raw)
	}

	stopAndCheck(t, cmd, stderr, name, ep.Iface)
	logged := "level=WARN msg=\"busy polling unavailable (no NAPI id: veth): its shards keep their usual loop\""
	if !strings.Contains(stderr.String(), logged) || !strings.Contains(stderr.String(), "iface="+ep.Iface) {
		t.Errorf("the run's log: want %s for %s:\n%s", logged, ep.Iface, stderr)
	}
}
