package config

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/xdpprog"
)

const valid = `{
  "instance": "edge1",
  "interfaces": [
    {"name": "nc0", "addresses": ["198.18.0.1/24"],
     "static_arp": [{"ip": "198.18.0.2", "mac": "02:00:00:00:00:02"}]},
    {"name": "nc1", "addresses": ["198.19.0.1/24", "198.19.1.1/24"]}
  ],
  "queues": [0, 1],
  "xdp_mode": "native",
  "routes": [{"prefix": "198.18.128.0/17", "via": "198.19.0.254"}],
  "gateway": "198.18.0.254",
  "pipeline": {"name": "drop", "batch_size": 32, "owner": "flow", "pin": false, "spin_idle": "1ms", "options": {}},
  "umem": {"frames": 8192, "frame_size": 4096, "ring_size": 1024}
}`

func TestValid(t *testing.T) {
	c, err := Parse(strings.NewReader(valid))
	if err != nil {
		t.Fatal(err)
	}
	pfx, ip := netip.MustParsePrefix, netip.MustParseAddr
	if c.Instance != "edge1" || len(c.Interfaces) != 2 || c.XDPMode != xdpprog.ModeNative || c.Gateway != ip("198.18.0.254") {
		t.Fatalf("parsed %+v", c)
	}
	i0, i1 := c.Interfaces[0], c.Interfaces[1]
	if i0.Name != "nc0" || len(i0.Addresses) != 1 || i0.Addresses[0] != pfx("198.18.0.1/24") {
		t.Errorf("interfaces[0] = %+v", i0)
	}
	if len(i0.StaticARP) != 1 || i0.StaticARP[0].IP != ip("198.18.0.2") || i0.StaticARP[0].MAC.String() != "02:00:00:00:00:02" {
		t.Errorf("static ARP = %+v", i0.StaticARP)
	}
	if len(i1.Addresses) != 2 || i1.Addresses[1] != pfx("198.19.1.1/24") || i1.StaticARP != nil {
		t.Errorf("interfaces[1] = %+v", i1)
	}
	if len(c.Queues) != 2 || c.Queues[0] != 0 || c.Queues[1] != 1 {
		t.Errorf("queues = %v", c.Queues)
	}
	if len(c.Routes) != 1 || c.Routes[0].Prefix != pfx("198.18.128.0/17") || c.Routes[0].Via != ip("198.19.0.254") {
		t.Errorf("routes = %+v", c.Routes)
	}
	if via, _ := c.InterfaceFor(c.Routes[0].Via); via != "nc1" {
		t.Errorf("route next hop on %q, want nc1", via)
	}
	p := c.Pipeline
	if p.Name != "drop" || p.BatchSize != 32 || p.Owner != "flow" || p.Pin || p.SpinIdle != time.Millisecond {
		t.Errorf("pipeline = %+v", p)
	}
	if err := p.DecodeOptions(&struct{}{}); err != nil {
		t.Errorf("empty options: %v", err)
	}
	if c.UMEM != (UMEM{Frames: 8192, FrameSize: 4096, RingSize: 1024}) || c.UMEM.Bytes() != 32<<20 {
		t.Errorf("umem = %+v", c.UMEM)
	}
	if n := c.InterfaceNames(); strings.Join(n, ",") != "nc0,nc1" {
		t.Errorf("names = %v", n)
	}
}

// TestEmptyObject: every field is optional and takes Default's value.
func TestEmptyObject(t *testing.T) {
	c, err := Parse(strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Instance != d.Instance || c.UMEM != d.UMEM || c.Pipeline.Name != "reflect" || c.Queues != nil || len(c.Interfaces) != 0 {
		t.Fatalf("got %+v, want the defaults %+v", c, d)
	}
	c, err = Parse(strings.NewReader(`{"queues": "all"}`))
	if err != nil || c.Queues != nil {
		t.Fatalf("queues all: %v %v", c.Queues, err)
	}
}

// TestInvalid: each broken file gets its own error, naming the field and what is wrong.
func TestInvalid(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"syntax", "{\n  \"instance\": \"a\",\n  \"queues\": [0,,1]\n}", []string{"line 3", "invalid character"}},
		{"empty file", ``, []string{"empty"}},
		{"two documents", `{} {}`, []string{"more than one JSON value"}},
		{"unknown field", `{"interface": []}`, []string{`unknown field "interface"`, "spelling"}},
		{"unknown nested field", `{"umem": {"frame": 10}}`, []string{`unknown field "frame"`}},
		{"wrong type", `{"instance": 5}`, []string{"instance", "number", "want a string"}},
		{"bad instance", `{"instance": "a/b"}`, []string{"config: instance:", "letters, digits"}},
		{"bad prefix", `{"interfaces": [{"name": "nc0", "addresses": ["198.18.0.1/24", "198.18.0.300/24"]}]}`,
			[]string{`config: interfaces[0].addresses[1]: "198.18.0.300/24" is not an IPv4 prefix`}},
		{"ipv6 prefix", `{"interfaces": [{"name": "nc0", "addresses": ["2001:db8::1/64"]}]}`, []string{"interfaces[0].addresses[0]", "not an IPv4 prefix"}},
		{"network address", `{"interfaces": [{"name": "nc0", "addresses": ["198.18.0.0/24"]}]}`, []string{"interfaces[0].addresses[0]", "network or broadcast"}},
		{"missing name", `{"interfaces": [{"addresses": ["198.18.0.1/24"]}]}`, []string{"interfaces[0].name: missing"}},
		{"long name", `{"interfaces": [{"name": "abcdefghijklmnop"}]}`, []string{"interfaces[0].name", "at most 15"}},
		{"duplicate interface", `{"interfaces": [{"name": "nc0"}, {"name": "nc0"}]}`, []string{"interfaces[1].name", "already interfaces[0]"}},
		{"address on two interfaces", `{"interfaces": [{"name": "a", "addresses": ["198.18.0.1/24"]}, {"name": "b", "addresses": ["198.18.0.1/16"]}]}`,
			[]string{"interfaces[1].addresses[0]", "already on a"}},
		{"bad mac", `{"interfaces": [{"name": "nc0", "addresses": ["198.18.0.1/24"], "static_arp": [{"ip": "198.18.0.2", "mac": "02:00:00:00:02"}]}]}`,
			[]string{"interfaces[0].static_arp[0].mac", "not an Ethernet address"}},
		{"multicast mac", `{"interfaces": [{"name": "nc0", "addresses": ["198.18.0.1/24"], "static_arp": [{"ip": "198.18.0.2", "mac": "ff:ff:ff:ff:ff:ff"}]}]}`,
			[]string{"interfaces[0].static_arp[0].mac", "unicast"}},
		{"arp off-link", `{"interfaces": [{"name": "nc0", "addresses": ["198.18.0.1/24"], "static_arp": [{"ip": "198.18.1.2", "mac": "02:00:00:00:00:02"}]}]}`,
			[]string{"interfaces[0].static_arp[0].ip", "not on a subnet of nc0"}},
		{"arp bad ip", `{"interfaces": [{"name": "nc0", "static_arp": [{"ip": "nope", "mac": "02:00:00:00:00:02"}]}]}`,
			[]string{"interfaces[0].static_arp[0].ip", `"nope" is not an IPv4 address`}},
		{"queues word", `{"queues": "some"}`, []string{"queues", `want "all" or a list`}},
		{"queues negative", `{"queues": [0, -1]}`, []string{"queues", "start at 0"}},
		{"queues twice", `{"queues": [1, 1]}`, []string{"queues", "listed twice"}},
		{"queues empty", `{"queues": []}`, []string{"queues", "empty"}},
		{"xdp mode", `{"xdp_mode": "fast"}`, []string{"xdp_mode", `"fast"`, "auto, native or generic"}},
		{"route host bits", `{"routes": [{"prefix": "198.19.0.1/16", "via": "198.18.0.254"}]}`, []string{"routes[0].prefix", "host bits", "198.19.0.0/16"}},
		{"route off-link", `{"interfaces": [{"name": "nc0", "addresses": ["198.18.0.1/24"]}], "routes": [{"prefix": "198.19.0.0/16", "via": "198.20.0.1"}]}`,
			[]string{"routes[0].via", "not on any interface's subnet"}},
		{"route twice", `{"interfaces": [{"name": "nc0", "addresses": ["198.18.0.1/24"]}], "routes": [{"prefix": "198.19.0.0/16", "via": "198.18.0.2"}, {"prefix": "198.19.0.0/16", "via": "198.18.0.3"}]}`,
			[]string{"routes[1].prefix", "already routes[0]"}},
		{"gateway off-link", `{"interfaces": [{"name": "nc0", "addresses": ["198.18.0.1/24"]}], "gateway": "198.18.1.1"}`, []string{"gateway", "on-link"}},
		{"gateway not ip", `{"gateway": "198.18.1"}`, []string{"gateway", "not an IPv4 address"}},
		{"pipeline name", `{"pipeline": {"name": "teleport"}}`, []string{"pipeline.name", `"teleport" is not a pipeline`, "reflect"}},
		{"batch size", `{"pipeline": {"batch_size": 0}}`, []string{"pipeline.batch_size", "1..512"}},
		{"owner", `{"pipeline": {"owner": "random"}}`, []string{"pipeline.owner", `"random"`}},
		{"spin idle", `{"pipeline": {"spin_idle": "fast"}}`, []string{"pipeline.spin_idle", "not a duration"}},
		{"options not object", `{"pipeline": {"options": [1]}}`, []string{"pipeline.options", "want an object"}},
		{"frame size", `{"umem": {"frame_size": 3000}}`, []string{"umem.frame_size", "2048 or 4096"}},
		{"ring size", `{"umem": {"ring_size": 1000}}`, []string{"umem.ring_size", "power of two"}},
		{"frames zero", `{"umem": {"frames": 0}}`, []string{"umem.frames", "positive"}},
		{"frames small", `{"umem": {"frames": 10}}`, []string{"umem.frames", "64.."}},
		{"reassembly bytes small", `{"stack": {"reassembly_bytes": 1000}}`, []string{"config: stack.reassembly_bytes: 1000", "65536..1073741824 bytes per shard", "0 (or leave it out) for the default, 4 MiB"}},
		{"neighbour table large", `{"stack": {"neighbor_table_size": 2000000}}`, []string{"config: stack.neighbor_table_size: 2000000", "16..1048576 entries per interface"}},
		{"arp pending hops negative", `{"stack": {"arp_pending_hops": -1}}`, []string{"config: stack.arp_pending_hops: -1", "1..4096"}},
		{"arp pending per hop large", `{"stack": {"arp_pending_per_hop": 5000}}`, []string{"config: stack.arp_pending_per_hop", "1..1024"}},
		{"tcp max connections", `{"stack": {"tcp": {"max_connections": 20000}}}`, []string{"config: stack.tcp.max_connections: 20000", "1..16384 connections per shard"}},
		{"tcp backlog negative", `{"stack": {"tcp": {"backlog": -5}}}`, []string{"config: stack.tcp.backlog: -5", "1..65535"}},
		{"tcp max time wait", `{"stack": {"tcp": {"max_time_wait": 1000000}}}`, []string{"config: stack.tcp.max_time_wait", "1..16384"}},
		{"tcp backlog type", `{"stack": {"tcp": {"backlog": "big"}}}`, []string{"stack.tcp.backlog", "want an integer"}},
		{"reassembly timeout", `{"stack": {"reassembly_timeout": "forever"}}`, []string{"config: stack.reassembly_timeout", "not a duration"}},
		{"reassembly timeout long", `{"stack": {"reassembly_timeout": "1h"}}`, []string{"config: stack.reassembly_timeout: 1h0m0s", "100ms..5m0s"}},
		{"stack misspelt", `{"stack": {"neighbour_table_size": 64}}`, []string{`unknown field "neighbour_table_size"`}},
	}
	seen := map[string]string{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(c.doc))
			if err == nil {
				t.Fatalf("%s: parsed; want an error", c.doc)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if other, dup := seen[err.Error()]; dup {
				t.Errorf("same error as case %q: %q", other, err)
			}
			seen[err.Error()] = c.name
		})
	}
}

func TestFieldErrorAs(t *testing.T) {
	_, err := Parse(strings.NewReader(`{"umem": {"ring_size": 3}}`))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "umem.ring_size" {
		t.Fatalf("errors.As: %v (%#v)", err, fe)
	}
}

func TestDecodeOptions(t *testing.T) {
	c, err := Parse(strings.NewReader(`{"pipeline": {"name": "reflect", "options": {"ttl": 3}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pipeline.DecodeOptions(&struct{}{}); err == nil || !strings.Contains(err.Error(), `pipeline reflect has no option "ttl"`) {
		t.Errorf("unknown option: %v", err)
	}
	var o struct {
		TTL int `json:"ttl"`
	}
	if err := c.Pipeline.DecodeOptions(&o); err != nil || o.TTL != 3 {
		t.Errorf("known option: %v %+v", err, o)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "netchan.json")
	if err := os.WriteFile(path, []byte(valid), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(path); err != nil || c.Instance != "edge1" {
		t.Fatalf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(path, []byte(`{"xdp_mode": 1}`), 0o644)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "xdp_mode") {
		t.Errorf("bad file: error %v should name the file and the field", err)
	}
}

// TestFlagsOverride: a flag set on the command line wins over the file; a flag left at its
// default does not.
func TestFlagsOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(path, []byte(valid), 0o644)
	resolve := func(args ...string) (*Config, error) {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		f := RegisterFlags(fs, FlagOptions{Interfaces: true})
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f.Resolve()
	}
	c, err := resolve("--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if c.UMEM.Frames != 8192 || c.Instance != "edge1" || c.Pipeline.Name != "drop" || len(c.Queues) != 2 || c.XDPMode != xdpprog.ModeNative {
		t.Fatalf("file values not kept when no flag is set: %+v", c)
	}
	c, err = resolve("--config", path, "--frames", "16384", "--instance", "other", "--pipeline", "reflect",
		"--queues", "all", "--xdp-mode", "generic", "--iface", "nc1", "--iface", "nc0", "--iface", "x0", "--batch-size", "16")
	if err != nil {
		t.Fatal(err)
	}
	if c.UMEM.Frames != 16384 || c.UMEM.FrameSize != 4096 || c.Instance != "other" || c.Pipeline.Name != "reflect" ||
		c.Queues != nil || c.XDPMode != xdpprog.ModeGeneric || c.Pipeline.BatchSize != 16 {
		t.Fatalf("flags did not override: %+v", c)
	}
	if strings.Join(c.InterfaceNames(), ",") != "nc1,nc0,x0" || len(c.Interfaces[0].Addresses) != 2 || len(c.Interfaces[1].StaticARP) != 1 || len(c.Interfaces[2].Addresses) != 0 {
		t.Errorf("--iface: %+v (nc1 and nc0 keep the file's addresses)", c.Interfaces)
	}
	// Without nc0 the file's gateway is off-link: the merged result is validated too.
	if _, err := resolve("--config", path, "--iface", "nc1"); err == nil || !strings.Contains(err.Error(), "gateway") {
		t.Errorf("--iface nc1 alone: %v, want the gateway error", err)
	}
	c, err = resolve()
	if err != nil || c.Instance != DefaultInstance || c.UMEM.Frames != DefaultFrames || c.Pipeline.Name != "reflect" {
		t.Fatalf("no file, no flags: %+v %v", c, err)
	}
	// A bad value set by flag is reported under the flag's name.
	if _, err := resolve("--frame-size", "1000"); err == nil || !strings.HasPrefix(err.Error(), "--frame-size: ") || !errors.Is(err, ErrInvalid) {
		t.Errorf("--frame-size 1000: %v", err)
	}
	if _, err := resolve("--queues", "0,x"); err == nil || !strings.Contains(err.Error(), "--queues") || !errors.Is(err, afxdp.ErrQueueOutOfRange) {
		t.Errorf("--queues 0,x: %v", err)
	}
	if _, err := resolve("--instance", "../etc"); err == nil || !strings.HasPrefix(err.Error(), "--instance: ") {
		t.Errorf("--instance ../etc: %v", err)
	}
	// The demo's default name applies only when neither flag nor file gives one.
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	f := RegisterFlags(fs, FlagOptions{DefaultInstance: "demo"})
	fs.Parse(nil)
	if c, err := f.Resolve(); err != nil || c.Instance != "demo" {
		t.Errorf("demo default: %+v %v", c, err)
	}
	if fs.Lookup("iface") != nil || fs.Lookup("queues") != nil {
		t.Errorf("demo has --iface or --queues")
	}
}

func TestParseQueues(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
		bad  bool
	}{{"all", nil, false}, {"", nil, false}, {"0", []int{0}, false}, {"0, 2,1", []int{0, 2, 1}, false},
		{"a", nil, true}, {"-1", nil, true}, {"1,1", nil, true}, {"0,", nil, true}} {
		got, err := ParseQueues(c.in)
		if (err != nil) != c.bad || len(got) != len(c.want) {
			t.Errorf("ParseQueues(%q) = %v, %v", c.in, got, err)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("ParseQueues(%q) = %v", c.in, got)
			}
		}
	}
}

// TestLogOptions: the log format and level from the file, overridden by --log-format and
// --log-level; bad values name the field or the flag.
func TestLogOptions(t *testing.T) {
	c, err := Parse(strings.NewReader(`{"log": {"format": "json", "level": "debug"}}`))
	if err != nil || c.Log != (Log{Format: "json", Level: "debug"}) {
		t.Fatalf("log from the file: %+v %v", c, err)
	}
	if c, err := Parse(strings.NewReader(`{}`)); err != nil || c.Log != (Log{Format: "text", Level: "info"}) {
		t.Fatalf("log defaults: %+v %v", c, err)
	}
	if _, err := Parse(strings.NewReader(`{"log": {"format": "xml"}}`)); err == nil || !strings.Contains(err.Error(), "config: log.format:") {
		t.Errorf("bad log.format: %v", err)
	}
	if _, err := Parse(strings.NewReader(`{"log": {"level": "loud"}}`)); err == nil || !strings.Contains(err.Error(), "config: log.level:") {
		t.Errorf("bad log.level: %v", err)
	}
	path := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(path, []byte(`{"log": {"format": "json", "level": "warn"}}`), 0o644)
	resolve := func(args ...string) (*Config, error) {
		fs := flag.NewFlagSet("nat", flag.ContinueOnError)
		f := RegisterFlags(fs, FlagOptions{})
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f.Resolve()
	}
	if c, err := resolve("--config", path, "--log-level", "error"); err != nil || c.Log != (Log{Format: "json", Level: "error"}) {
		t.Fatalf("--log-level over the file: %+v %v", c, err)
	}
	if _, err := resolve("--log-format", "yaml"); err == nil || !strings.HasPrefix(err.Error(), "--log-format: ") {
		t.Errorf("--log-format yaml: %v", err)
	}
}

// TestStackLimits: the "stack" section's limits, 0 or left out for the stack's defaults.
func TestStackLimits(t *testing.T) {
	c, err := Parse(strings.NewReader(`{"stack": {"reassembly_bytes": 1048576, "reassembly_timeout": "10s", "neighbor_table_size": 4096,
	  "arp_pending_hops": 16, "arp_pending_per_hop": 8, "tcp": {"max_connections": 1000, "backlog": 512, "max_time_wait": 200}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Stack{ReassemblyBytes: 1 << 20, ReassemblyTimeout: 10 * time.Second, NeighborTableSize: 4096, ARPPendingHops: 16, ARPPendingPerHop: 8,
		TCP: StackTCP{MaxConns: 1000, Backlog: 512, MaxTimeWait: 200}}
	if c.Stack != want {
		t.Errorf("stack = %+v, want %+v", c.Stack, want)
	}
	for _, doc := range []string{`{}`, `{"stack": {}}`, `{"stack": {"reassembly_bytes": 0, "reassembly_timeout": "", "tcp": {}}}`} {
		if c, err := Parse(strings.NewReader(doc)); err != nil || c.Stack != (Stack{}) {
			t.Errorf("%s: stack %+v, %v; want the zero Stack (the stack's defaults)", doc, c.Stack, err)
		}
	}
	// The bounds themselves are allowed.
	if _, err := Parse(strings.NewReader(`{"stack": {"reassembly_bytes": 65536, "reassembly_timeout": "5m", "neighbor_table_size": 1048576,
	  "arp_pending_hops": 4096, "arp_pending_per_hop": 1, "tcp": {"max_connections": 16384, "backlog": 65535, "max_time_wait": 1}}}`)); err != nil {
		t.Errorf("limits at their bounds: %v", err)
	}
	// Validate checks a Stack set in code too (the commands validate again after flags).
	c = Default()
	c.Stack.NeighborTableSize = 8
	var fe *FieldError
	if err := c.Validate(); !errors.As(err, &fe) || fe.Field != "stack.neighbor_table_size" {
		t.Errorf("Validate with neighbor_table_size 8: %v", err)
	}
}

// TestBusyPoll: "pipeline.busy_poll" from the file, its defaults, its bounds (errors naming the
// field, or the flag that set it), and --busy-poll, --busy-poll-budget, --busy-poll-idle over
// the file; only the commands that ask for them have the flags.
func TestBusyPoll(t *testing.T) {
	c, err := Parse(strings.NewReader(`{"pipeline": {"busy_poll": {"on": true, "budget": 128, "idle": "250us"}}}`))
	if want := (BusyPoll{On: true, Budget: 128, Idle: 250 * time.Microsecond}); err != nil || c.Pipeline.BusyPoll != want {
		t.Fatalf("busy_poll from the file: %+v %v, want %+v", c.Pipeline.BusyPoll, err, want)
	}
	for _, doc := range []string{`{}`, `{"pipeline": {"busy_poll": {}}}`, `{"pipeline": {"busy_poll": {"on": false, "budget": 0, "idle": ""}}}`} {
		if c, err := Parse(strings.NewReader(doc)); err != nil || c.Pipeline.BusyPoll != (BusyPoll{}) {
			t.Errorf("%s: busy_poll %+v, %v; want off with the defaults", doc, c.Pipeline.BusyPoll, err)
		}
	}
	if c, err := Parse(strings.NewReader(`{"pipeline": {"busy_poll": {"on": true, "budget": 65535, "idle": "10m"}}}`)); err != nil || c.Pipeline.BusyPoll.Budget != 65535 {
		t.Errorf("the largest budget, a long idle: %+v %v", c, err)
	}
	for _, c := range []struct{ doc, field, what string }{
		{`{"pipeline": {"busy_poll": {"on": true, "budget": 65536}}}`, "pipeline.busy_poll.budget", "65536: want 1..65535"},
		{`{"pipeline": {"busy_poll": {"budget": -1}}}`, "pipeline.busy_poll.budget", "or 0 (or leave it out) for the default, 64"},
		{`{"pipeline": {"busy_poll": {"idle": "-1ms"}}}`, "pipeline.busy_poll.idle", "want a duration of 0 or more"},
		{`{"pipeline": {"busy_poll": {"idle": "soon"}}}`, "pipeline.busy_poll.idle", `"soon" is not a duration`},
		{`{"pipeline": {"busy_poll": {"on": "yes"}}}`, "pipeline.busy_poll.on", "want true or false"},
		{`{"pipeline": {"busy_poll": {"budgett": 8}}}`, `"budgett"`, "check its spelling"},
	} {
		_, err := Parse(strings.NewReader(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), c.what) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v; want an error naming %s saying %q", c.doc, err, c.field, c.what)
		}
	}

	path := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(path, []byte(`{"pipeline": {"busy_poll": {"on": true, "budget": 32, "idle": "2ms"}}}`), 0o644)
	resolve := func(o FlagOptions, args ...string) (*Config, error) {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f := RegisterFlags(fs, o)
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		return f.Resolve()
	}
	bp := FlagOptions{BusyPoll: true}
	for _, c := range []struct {
		args []string
		want BusyPoll
	}{
		{[]string{"--config", path}, BusyPoll{On: true, Budget: 32, Idle: 2 * time.Millisecond}},
		{[]string{"--config", path, "--busy-poll=false"}, BusyPoll{Budget: 32, Idle: 2 * time.Millisecond}},
		{[]string{"--config", path, "--busy-poll-budget", "8", "--busy-poll-idle", "100us"}, BusyPoll{On: true, Budget: 8, Idle: 100 * time.Microsecond}},
		{[]string{"--busy-poll"}, BusyPoll{On: true}},
		{nil, BusyPoll{}},
	} {
		if c2, err := resolve(bp, c.args...); err != nil || c2.Pipeline.BusyPoll != c.want {
			t.Errorf("%v: busy_poll %+v %v, want %+v", c.args, c2, err, c.want)
		}
	}
	if _, err := resolve(bp, "--busy-poll", "--busy-poll-budget", "100000"); err == nil || !strings.HasPrefix(err.Error(), "--busy-poll-budget: 100000: want 1..65535") {
		t.Errorf("--busy-poll-budget 100000: %v", err)
	}
	if _, err := resolve(bp, "--busy-poll-idle", "-5ms"); err == nil || !strings.HasPrefix(err.Error(), "--busy-poll-idle: ") {
		t.Errorf("--busy-poll-idle -5ms: %v", err)
	}
	if _, err := resolve(FlagOptions{Interfaces: true}, "--busy-poll"); err == nil {
		t.Errorf("--busy-poll accepted by a command that did not ask for it")
	}
}
