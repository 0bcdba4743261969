package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/netchan/netchan/examples/wire"
	"github.com/netchan/netchan/examples/wire/wiretest"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/stagetest"
	"github.com/netchan/netchan/stack/header"
)

func mustRules(t *testing.T, lines ...string) []Rule {
	t.Helper()
	rules, err := ParseRules(strings.NewReader(strings.Join(lines, "\n")), "test")
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

// harness runs shard shard of shards of the ACL's pipeline (wire's local stage, the ACL,
// wire's forward stage) with both neighbours resolved.
func harness(t *testing.T, a *ACL, shard, shards int) *stagetest.Harness {
	t.Helper()
	return wiretest.Harness(t, shard, shards, a.Stage(shard))
}

func newACL(t *testing.T, def Action, lines ...string) *ACL {
	t.Helper()
	a, err := New(mustRules(t, lines...), def)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var (
	cli   = netip.AddrPortFrom(wiretest.Client, 5000)
	srv   = netip.AddrPortFrom(wiretest.Server, 9999)
	other = netip.MustParseAddr("198.18.1.66")
)

// verdict feeds one frame and says what became of it: "forward" or the drop reason.
func verdict(t *testing.T, h *stagetest.Harness, in stagetest.In) string {
	t.Helper()
	out := h.Step(in)
	o := h.Outcomes()[0]
	switch {
	case o.Verdict == pipelines.Transmit && len(out) == 1:
		wiretest.CheckForwarded(t, in, out[0])
		return "forward"
	case o.Verdict == pipelines.Drop:
		return o.Reason.String()
	}
	t.Fatalf("unexpected outcomes %+v", h.Outcomes())
	return ""
}

// TestParse: rules read back to themselves; every mistake says what is wrong.
func TestParse(t *testing.T) {
	for in, want := range map[string]string{
		"deny all":  "deny all",
		"allow":     "allow all",
		"ALLOW UDP": "allow udp",
		"allow udp from 198.18.1.0/24 to 198.19.0.2 port 9999": "allow udp from 198.18.1.0/24 to 198.19.0.2 port 9999",
		"deny tcp from any port 1000-2000 to 0.0.0.0/0":        "deny tcp from any port 1000-2000",
		"allow icmp to 198.19.0.0/16":                          "allow icmp to 198.19.0.0/16",
		"deny proto 47 from 198.18.1.7/32":                     "deny proto 47 from 198.18.1.7",
		"allow ip to any":                                      "allow all",
	} {
		r, err := ParseRule(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("%q reads back as %q, want %q", in, r.String(), want)
		}
		if r2, err := ParseRule(r.String()); err != nil || r2 != r {
			t.Errorf("%q: %q does not read back to the same rule (%v)", in, r.String(), err)
		}
	}
	for in, want := range map[string]string{
		"":                                   "empty rule",
		"permit udp":                         `starts with allow or deny, not "permit"`,
		"allow udp form 198.18.1.0/24":       `"form": want from, to or the end of the rule`,
		"allow udp from":                     "from needs an address",
		"allow udp from 198.18.1.300":        `"198.18.1.300": want any, an IPv4 address or an IPv4 prefix`,
		"allow udp from 198.18.1.5/24":       "did you mean 198.18.1.0/24?",
		"allow udp to ::1":                   "want any, an IPv4 address",
		"allow icmp to any port 7":           "ports need protocol tcp or udp, and the rule's protocol is icmp",
		"allow all to any port 7":            "ports need protocol tcp or udp",
		"allow udp to any port 70000":        `port "70000": want a port (0-65535) or a range LO-HI`,
		"allow udp to any port 9-8":          `port range "9-8" is empty`,
		"allow udp to any port":              "port needs a port",
		"allow udp port 53":                  `"port" belongs to "from ADDR" or "to ADDR"`,
		"allow udp to any from any":          "from comes at most once, then to at most once",
		"allow udp to any to any":            "from comes at most once",
		"allow proto x":                      `proto "x": want a protocol number`,
		"allow proto":                        "proto needs a protocol number",
		"allow sctp":                         `"sctp": want from, to or the end of the rule (protocols: all, tcp, udp, icmp, proto N)`,
		"deny udp from any to any port 53 x": `"x": want from, to or the end`,
	} {
		_, err := ParseRule(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one that says %q", in, err, want)
		}
	}
	_, err := ParseRules(strings.NewReader("# a comment\nallow icmp # ping\n\ndeny udp to any port x\n"), "rules.txt")
	if err == nil || !strings.HasPrefix(err.Error(), `rules.txt:4: deny udp to any port x: port "x"`) {
		t.Errorf("file error: %v, want it to name rules.txt:4 and the line", err)
	}
	rules := mustRules(t, "# only comments and blanks", "", "allow icmp # ping", "deny all")
	if len(rules) != 2 || rules[0].String() != "allow icmp" || rules[1].String() != "deny all" {
		t.Errorf("rules %v", rules)
	}
}

// TestFirstMatch: the first rule that matches decides, whatever the rules after it say.
func TestFirstMatch(t *testing.T) {
	narrow, wide := "deny udp from 198.18.1.66", "allow udp from 198.18.1.0/24"
	h := harness(t, newACL(t, Deny, narrow, wide), 0, 1)
	if got := verdict(t, h, wiretest.UDP(wire.Inside, netip.AddrPortFrom(other, 5000), srv, nil)); got != "acl-rule-1" {
		t.Errorf("narrow deny first: %s, want acl-rule-1", got)
	}
	if got := verdict(t, h, wiretest.UDP(wire.Inside, cli, srv, nil)); got != "forward" {
		t.Errorf("narrow deny first, another source: %s, want forward", got)
	}
	h = harness(t, newACL(t, Deny, wide, narrow), 0, 1)
	if got := verdict(t, h, wiretest.UDP(wire.Inside, netip.AddrPortFrom(other, 5000), srv, nil)); got != "forward" {
		t.Errorf("wide allow first: %s, want forward (rule 2 never gets to match)", got)
	}
}

// TestRuleKinds: each kind of condition alone, against packets that meet it and packets that
// miss it by one field; what no rule matches gets the default.
func TestRuleKinds(t *testing.T) {
	src2 := netip.AddrPortFrom(other, 5000)
	udp := func(src, dst netip.AddrPort) stagetest.In { return wiretest.UDP(wire.Inside, src, dst, []byte("x")) }
	back := wiretest.UDP(wire.Outside, srv, cli, []byte("y"))
	frag := udp(cli, srv)
	frag.Data[20] = 0x00 // fragment offset 8 bytes: a later fragment, no ports
	frag.Data[21] = 0x01
	header.IPv4(frag.Data[header.EthernetLen:]).FixChecksum()
	cases := []struct {
		rule  string
		hit   []stagetest.In
		miss  []stagetest.In
		label string
	}{
		{"deny all", []stagetest.In{udp(cli, srv), wiretest.TCP(wire.Inside, cli, srv), wiretest.Ping(wire.Outside, wiretest.Server, wiretest.Client)}, nil, "all"},
		{"deny udp", []stagetest.In{udp(cli, srv)}, []stagetest.In{wiretest.TCP(wire.Inside, cli, srv), wiretest.Ping(wire.Inside, wiretest.Client, wiretest.Server)}, "protocol udp"},
		{"deny tcp", []stagetest.In{wiretest.TCP(wire.Inside, cli, srv)}, []stagetest.In{udp(cli, srv)}, "protocol tcp"},
		{"deny icmp", []stagetest.In{wiretest.Ping(wire.Inside, wiretest.Client, wiretest.Server)}, []stagetest.In{udp(cli, srv)}, "protocol icmp"},
		{"deny proto 17", []stagetest.In{udp(cli, srv)}, []stagetest.In{wiretest.TCP(wire.Inside, cli, srv)}, "protocol number"},
		{"deny from 198.18.1.66", []stagetest.In{udp(src2, srv)}, []stagetest.In{udp(cli, srv)}, "source address"},
		{"deny from 198.18.1.64/26", []stagetest.In{udp(src2, srv)}, []stagetest.In{udp(cli, srv)}, "source prefix"},
		{"deny to 198.19.0.0/24", []stagetest.In{udp(cli, srv)}, []stagetest.In{back}, "destination prefix"},
		{"deny to 198.19.0.2", []stagetest.In{udp(cli, srv)}, []stagetest.In{back}, "destination address"},
		{"deny udp to any port 9999", []stagetest.In{udp(cli, srv)}, []stagetest.In{udp(cli, netip.AddrPortFrom(wiretest.Server, 9998)), wiretest.TCP(wire.Inside, cli, srv), frag}, "destination port (not a later fragment)"},
		{"deny tcp to any port 9000-9999", []stagetest.In{wiretest.TCP(wire.Inside, cli, srv)}, []stagetest.In{wiretest.TCP(wire.Inside, cli, netip.AddrPortFrom(wiretest.Server, 10000)), udp(cli, srv)}, "destination port range"},
		{"deny udp from any port 5000", []stagetest.In{udp(cli, srv)}, []stagetest.In{udp(netip.AddrPortFrom(wiretest.Client, 5001), srv)}, "source port"},
		{"deny udp from 198.18.1.0/24 port 4000-6000 to 198.19.0.2 port 9999", []stagetest.In{udp(cli, srv)},
			[]stagetest.In{udp(cli, netip.AddrPortFrom(wiretest.Server, 1)), udp(netip.AddrPortFrom(wiretest.Client, 7000), srv), back}, "everything at once"},
	}
	for _, c := range cases {
		for _, def := range []Action{Allow, Deny} {
			h := harness(t, newACL(t, def, c.rule), 0, 1)
			for i, in := range c.hit {
				if got := verdict(t, h, in); got != "acl-rule-1" {
					t.Errorf("%s (%s), default %v: packet %d: %s, want acl-rule-1", c.rule, c.label, def, i, got)
				}
			}
			want := "forward"
			if def == Deny {
				want = "acl-default"
			}
			for i, in := range c.miss {
				if got := verdict(t, h, in); got != want {
					t.Errorf("%s (%s), default %v: missing packet %d: %s, want %s", c.rule, c.label, def, i, got, want)
				}
			}
		}
	}
	// An allow rule forwards what the default would deny.
	h := harness(t, newACL(t, Deny, "allow udp to any port 9999"), 0, 1)
	if got := verdict(t, h, udp(cli, srv)); got != "forward" {
		t.Errorf("allow rule: %s", got)
	}
	if got := verdict(t, h, frag); got != "acl-default" {
		t.Errorf("a later fragment against a port rule: %s, want the default", got)
	}
	// An empty rule set is the default action.
	if got := verdict(t, harness(t, newACL(t, Allow), 0, 1), udp(cli, srv)); got != "forward" {
		t.Errorf("no rules, default allow: %s", got)
	}
}

// TestCounters: every rule and the default count exactly their packets and bytes, on two
// shards, summed; the shards' drop counters agree by reason.
func TestCounters(t *testing.T) {
	a := newACL(t, Deny,
		"allow udp from 198.18.1.0/24 to 198.19.0.2 port 9999",
		"deny udp to any port 9998",
		"allow icmp")
	hs := []*stagetest.Harness{harness(t, a, 0, 2), harness(t, a, 1, 2)}
	allowed := wiretest.UDP(wire.Inside, cli, srv, make([]byte, 100))                                     // 142-byte frame
	denied := wiretest.UDP(wire.Inside, cli, netip.AddrPortFrom(wiretest.Server, 9998), make([]byte, 10)) // 52
	ping := wiretest.Ping(wire.Inside, wiretest.Client, wiretest.Server)                                  // 42
	tcp := wiretest.TCP(wire.Inside, cli, srv)                                                            // 54
	drops := map[string]int{}
	for n, h := range hs {
		for k := 0; k < 3+n; k++ { // shard 0 three passes, shard 1 four
			h.Step(allowed, allowed, denied, ping, tcp, tcp)
			if len(h.Sent()) != 3 {
				t.Fatalf("shard %d forwarded %d of 6 (%+v)", n, len(h.Sent()), h.Outcomes())
			}
			for r, c := range h.DropCounts() {
				drops[r] += c
			}
		}
	}
	const passes = 7
	want := []Counter{
		{"allow udp from 198.18.1.0/24 to 198.19.0.2 port 9999", "", 2 * passes, 2 * passes * uint64(len(allowed.Data))},
		{"deny udp to any port 9998", "acl-rule-2", passes, passes * uint64(len(denied.Data))},
		{"allow icmp", "", passes, passes * uint64(len(ping.Data))},
		{"default deny", "acl-default", 2 * passes, 2 * passes * uint64(len(tcp.Data))},
	}
	got := a.Counters()
	if len(got) != len(want) {
		t.Fatalf("counters %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("counter %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if drops["acl-rule-2"] != passes || drops["acl-default"] != 2*passes || len(drops) != 2 {
		t.Errorf("shard drops %v", drops)
	}
}

// TestTooManyReasons: a rule set with more deny rules than free drop reasons is refused with
// a message that says so (before any reason is registered).
func TestTooManyReasons(t *testing.T) {
	var lines []string
	for i := 0; i < pipelines.MaxReasons; i++ {
		lines = append(lines, "deny udp to any port 1")
	}
	before := len(pipelines.ReasonNames())
	_, err := New(mustRules(t, lines...), Deny)
	if err == nil || !strings.Contains(err.Error(), "drop reasons") {
		t.Fatalf("error %v", err)
	}
	if len(pipelines.ReasonNames()) != before {
		t.Errorf("a refused rule set registered reasons")
	}
}

// TestAllocs: filtering and forwarding a batch allocates nothing.
func TestAllocs(t *testing.T) {
	a := newACL(t, Deny, "deny udp from 198.18.1.66", "allow udp to 198.19.0.0/24 port 9000-9999", "allow icmp")
	h := harness(t, a, 0, 1)
	in := []stagetest.In{
		wiretest.UDP(wire.Inside, cli, srv, []byte("x")),
		wiretest.UDP(wire.Inside, netip.AddrPortFrom(other, 1), srv, []byte("x")),
		wiretest.Ping(wire.Inside, wiretest.Client, wiretest.Server),
		wiretest.TCP(wire.Inside, cli, srv),
	}
	if n := testing.AllocsPerRun(200, func() { h.Pass(in...) }); n != 0 {
		t.Errorf("%v allocations per pass", n)
	}
	if c := a.Counters(); c[0].Packets == 0 || c[1].Packets == 0 || c[2].Packets == 0 || c[3].Packets == 0 {
		t.Errorf("counters %+v", c)
	}
}
