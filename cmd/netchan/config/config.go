// Package config reads netchan's configuration file: one JSON document that says which
// interfaces an instance runs on, which queues it owns, the addresses, routes and static ARP
// entries the stack and the NAT use, the pipeline and its options, and the UMEM size. Every
// data-plane command takes it with --config FILE; a flag given on the command line overrides
// the file's value (Flags.Resolve does this, using flag.Visit, so a flag left at its default
// does not).
//
// # Schema
//
//	{
//	  "instance":   "edge1",                // control socket /run/netchan/edge1.sock (default "default")
//	  "interfaces": [                        // at least one, for `netchan run`
//	    {
//	      "name":       "eth1",              // as `ip link` shows it
//	      "addresses":  ["198.18.0.1/24"],   // IPv4 address/prefix length netchan owns on it
//	      "static_arp": [{"ip": "198.18.0.2", "mac": "02:00:00:00:00:02"}]  // on a subnet of its addresses
//	    }
//	  ],
//	  "queues":   "all",                     // or a list of queue numbers: [0, 1]
//	  "claims":   ["udp:9999", "tcp:198.18.0.1:80"], // what netchan takes from the kernel (go doc .../pipelines/claim)
//	  "xdp_mode": "auto",                    // auto (native, else generic), native, generic
//	  "routes":   [{"prefix": "198.19.0.0/16", "via": "198.18.0.254"}], // via: on an interface's subnet
//	  "gateway":  "198.18.0.254",            // default route; on an interface's subnet
//	  "pipeline": {
//	    "name":       "reflect",             // a bundled pipeline (netchan help)
//	    "batch_size": 64,                    // packets per pass, 1..512
//	    "owner":      "",                    // "" (the pipeline's choice), "none", "flow": which shard owns a flow
//	    "pin":        true,                  // pin each shard to a core
//	    "spin_idle":  "50us",                // spin this long without work before sleeping in poll(2)
//	    "busy_poll":  {"on": false, "budget": 64, "idle": "1ms"}, // preferred busy polling (docs/busy-poll.md)
//	    "options":    {}                     // the pipeline's own options (the bundled ones take none)
//	  },
//	  "umem": {"frames": 4096, "frame_size": 2048, "ring_size": 2048}, // per queue
//	  "log":  {"format": "text", "level": "info"}, // stderr, through log/slog: text or json; debug, info, warn, error
//	  "stack": {                             // the stack's limits (echo, nat, demo); 0 or absent: the default
//	    "reassembly_bytes":    4194304,      // fragment buffers per shard: 0 (4 MiB) or 65536..1073741824
//	    "reassembly_timeout":  "30s",        // incomplete datagrams dropped after: 100ms..5m
//	    "neighbor_table_size": 1024,         // neighbour entries per interface: 16..1048576, rounded up to a power of two
//	    "arp_pending_hops":    64,           // next hops each shard resolves at once: 1..4096
//	    "arp_pending_per_hop": 32,           // datagrams waiting for each: 1..1024
//	    "tcp": {
//	      "max_connections": 16384,          // per shard, TIME_WAIT included: 1..16384
//	      "backlog":         128,            // a listener's connections not yet accepted: 1..65535
//	      "max_time_wait":   4096            // TIME_WAIT connections per shard: 1..16384
//	    }
//	  }
//	}
//
// Every field is optional; unknown fields are errors (a misspelt field must not be silently
// ignored). Parse decodes and validates into typed values (netip.Prefix, netip.Addr,
// net.HardwareAddr, xdpprog.Mode), and every error names the field and says what is wrong:
//
//	config: interfaces[0].addresses[1]: "198.18.0.300/24" is not an IPv4 prefix (want ADDRESS/BITS such as 198.18.0.1/24)
//
// Addresses, routes, the gateway and static ARP entries are checked for consistency here (no
// address on two interfaces, every next hop and ARP entry on a configured subnet) and are
// consumed by the pipelines that have a stack (echo, nat); the bundled reflect, drop and count
// pipelines do not use them. So is "stack": the limits of the stack's tables (go doc
// github.com/netchan/netchan/stack Config and TCPConfig, whose defaults apply to a field left
// out or 0); a reload cannot change them.
//
// "pipeline.busy_poll" turns on preferred busy polling (netchan.Config.BusyPoll;
// docs/busy-poll.md): "budget" is the most packets one busy poll takes (0..65535; 0 or left
// out: 64), "idle" how long a shard polls without work before it sleeps (≥ 0; 0 or left out:
// 1ms). It helps only on a NIC in native XDP mode; on veth and with generic XDP the instance
// says busy polling is unavailable and runs its usual loop. Setting it up needs CAP_NET_ADMIN;
// a reload cannot change it.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// DefaultInstance names an instance when neither --instance nor the file names one.
const DefaultInstance = "default"

// Defaults of the UMEM, per queue (the values afxdp uses when given zero).
const (
	DefaultFrames    = 4096
	DefaultFrameSize = 2048
	DefaultRingSize  = 2048
	DefaultBatchSize = 64
	MaxBatchSize     = 512
)

// ErrInvalid is wrapped by every validation error; errors.As gives the *FieldError.
var ErrInvalid = errors.New("invalid configuration")

// FieldError is a problem with one field: Field is its path (interfaces[0].addresses[1]).
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "config: " + e.Field + ": " + e.Msg }

// Unwrap lets errors.Is(err, ErrInvalid) work.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Config is a validated configuration.
type Config struct {
	Instance   string
	Interfaces []Interface
	Queues     []int // nil: all queues
	// Claims say which packets netchan takes from the kernel, in the grammar of package claim.
	// run: they replace the pipeline's default (all); echo and nat: they add to the stack's
	// and the NAT's own claims. Empty: the pipeline's claims alone.
	Claims   []claim.Rule
	XDPMode  xdpprog.Mode
	Routes   []Route
	Gateway  netip.Addr // zero: none
	Pipeline Pipeline
	UMEM     UMEM
	Log      Log
	// Stack holds the stack's limits ("stack"; 0: the stack's default).
	Stack Stack
}

// Stack holds the limits of the stack that echo, nat and demo run, as stack.Config and
// stack.TCPConfig take them: 0 leaves the stack's default.
type Stack struct {
	ReassemblyBytes   int           // per shard (stack default 4 MiB)
	ReassemblyTimeout time.Duration // (30 s)
	NeighborTableSize int           // per interface (1024)
	ARPPendingHops    int           // per shard (64)
	ARPPendingPerHop  int           // (32)
	TCP               StackTCP
}

// StackTCP holds the TCP limits of the stack.
type StackTCP struct {
	MaxConns    int // per shard, TIME_WAIT included (16384)
	Backlog     int // a listener's default backlog (128)
	MaxTimeWait int // per shard (4096)
}

// Limits of the "stack" fields (0 is always the stack's default).
const (
	MinReassemblyBytes   = 64 << 10
	MaxReassemblyBytes   = 1 << 30
	MinReassemblyTimeout = 100 * time.Millisecond
	MaxReassemblyTimeout = 5 * time.Minute
	MinNeighborTableSize = 16
	MaxNeighborTableSize = 1 << 20
	MaxARPPendingHops    = 4096
	MaxARPPendingPerHop  = 1024
	MaxTCPConns          = 16384
	MaxTCPBacklog        = 65535
	MaxTCPTimeWait       = 16384
)

// Log says how the instance logs (to stderr, through log/slog).
type Log struct {
	Format string // "text" (default) or "json"
	Level  string // "debug", "info" (default), "warn" or "error"
}

// Interface is one interface of the pipeline.
type Interface struct {
	Name      string
	Addresses []netip.Prefix
	StaticARP []Neighbor
}

// Neighbor is a static ARP entry.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// Route sends Prefix to the next hop Via.
type Route struct {
	Prefix netip.Prefix
	Via    netip.Addr
}

// Pipeline names the pipeline and its shard settings.
type Pipeline struct {
	Name      string
	BatchSize int
	Owner     string // "", "none" or "flow"
	Pin       bool
	SpinIdle  time.Duration // 0: the shards' default
	// BusyPoll is "busy_poll": preferred busy polling (netchan.Config.BusyPoll).
	BusyPoll BusyPoll
	// Options holds the pipeline's own options, undecoded; DecodeOptions reads them.
	Options json.RawMessage
}

// BusyPoll is "pipeline.busy_poll", as netchan.BusyPoll takes it: 0 leaves the library's
// default.
type BusyPoll struct {
	On     bool
	Budget int           // packets one busy poll takes, 0..MaxBusyPollBudget (0: 64)
	Idle   time.Duration // a shard polls this long without work before it sleeps, ≥ 0 (0: 1ms)
}

// MaxBusyPollBudget is the largest pipeline.busy_poll.budget (SO_BUSY_POLL_BUDGET's bound).
const MaxBusyPollBudget = 65535

// UMEM sizes each queue's frame area and rings.
type UMEM struct {
	Frames    uint32
	FrameSize uint32
	RingSize  uint32
}

// Bytes is the size of one queue's UMEM.
func (u UMEM) Bytes() uint64 { return uint64(u.Frames) * uint64(u.FrameSize) }

// Default returns the configuration of a run without a file.
func Default() *Config {
	return &Config{
		Instance: DefaultInstance,
		Pipeline: Pipeline{Name: "reflect", BatchSize: DefaultBatchSize, Pin: true},
		UMEM:     UMEM{Frames: DefaultFrames, FrameSize: DefaultFrameSize, RingSize: DefaultRingSize},
		Log:      Log{Format: "text", Level: "info"},
	}
}

// InterfaceNames lists the interfaces in order.
func (c *Config) InterfaceNames() []string {
	var n []string
	for _, i := range c.Interfaces {
		n = append(n, i.Name)
	}
	return n
}

// file is the JSON document as written.
type file struct {
	Instance   *string         `json:"instance"`
	Interfaces []fileInterface `json:"interfaces"`
	Queues     json.RawMessage `json:"queues"`
	Claims     []string        `json:"claims"`
	XDPMode    *string         `json:"xdp_mode"`
	Routes     []fileRoute     `json:"routes"`
	Gateway    *string         `json:"gateway"`
	Pipeline   *filePipeline   `json:"pipeline"`
	UMEM       *fileUMEM       `json:"umem"`
	Log        *fileLog        `json:"log"`
	Stack      *fileStack      `json:"stack"`
}

type fileStack struct {
	ReassemblyBytes   int     `json:"reassembly_bytes"`
	ReassemblyTimeout *string `json:"reassembly_timeout"`
	NeighborTableSize int     `json:"neighbor_table_size"`
	ARPPendingHops    int     `json:"arp_pending_hops"`
	ARPPendingPerHop  int     `json:"arp_pending_per_hop"`
	TCP               *struct {
		MaxConns    int `json:"max_connections"`
		Backlog     int `json:"backlog"`
		MaxTimeWait int `json:"max_time_wait"`
	} `json:"tcp"`
}

type fileLog struct {
	Format *string `json:"format"`
	Level  *string `json:"level"`
}

type fileInterface struct {
	Name      string         `json:"name"`
	Addresses []string       `json:"addresses"`
	StaticARP []fileNeighbor `json:"static_arp"`
}

type fileNeighbor struct {
	IP  string `json:"ip"`
	MAC string `json:"mac"`
}

type fileRoute struct {
	Prefix string `json:"prefix"`
	Via    string `json:"via"`
}

type filePipeline struct {
	Name      *string         `json:"name"`
	BatchSize *int            `json:"batch_size"`
	Owner     *string         `json:"owner"`
	Pin       *bool           `json:"pin"`
	SpinIdle  *string         `json:"spin_idle"`
	BusyPoll  *fileBusyPoll   `json:"busy_poll"`
	Options   json.RawMessage `json:"options"`
}

type fileBusyPoll struct {
	On     *bool   `json:"on"`
	Budget *int    `json:"budget"`
	Idle   *string `json:"idle"`
}

type fileUMEM struct {
	Frames    *int64 `json:"frames"`
	FrameSize *int64 `json:"frame_size"`
	RingSize  *int64 `json:"ring_size"`
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads one JSON document and validates it on top of Default().
func Parse(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, jsonError(data, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("config: more than one JSON value in the file: want one object: %w", ErrInvalid)
	}
	c := Default()
	if err := f.apply(c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// jsonError turns encoding/json's errors into ones that name the field or the line.
func jsonError(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(data, syn.Offset)
		return fmt.Errorf("config: line %d column %d: %v: %w", line, col, syn, ErrInvalid)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(top level)"
		}
		return fieldErr(field, "got a JSON %s, want %s", typ.Value, jsonKind(typ.Type.String()))
	case errors.Is(err, io.EOF):
		return fmt.Errorf("config: the file is empty: want a JSON object: %w", ErrInvalid)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return fmt.Errorf("config: unknown field %s: check its spelling against the schema (go doc github.com/netchan/netchan/cmd/netchan/config): %w", name, ErrInvalid)
	}
	return fmt.Errorf("config: %v: %w", err, ErrInvalid)
}

func jsonKind(goType string) string {
	switch {
	case strings.Contains(goType, "string"):
		return "a string"
	case strings.Contains(goType, "int"):
		return "an integer"
	case strings.Contains(goType, "bool"):
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	}
	return "an object"
}

func position(data []byte, off int64) (line, col int) {
	line, col = 1, 1
	for i := 0; i < int(off) && i < len(data); i++ {
		if data[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

func (f *file) apply(c *Config) error {
	if f.Instance != nil {
		c.Instance = *f.Instance
	}
	for i, s := range f.Claims {
		r, err := claim.Parse(s)
		if err != nil {
			return fieldErr(fmt.Sprintf("claims[%d]", i), "%v", err)
		}
		c.Claims = append(c.Claims, r)
	}
	for i, fi := range f.Interfaces {
		field := fmt.Sprintf("interfaces[%d]", i)
		iface := Interface{Name: fi.Name}
		for j, a := range fi.Addresses {
			p, err := parsePrefix(fmt.Sprintf("%s.addresses[%d]", field, j), a)
			if err != nil {
				return err
			}
			iface.Addresses = append(iface.Addresses, p)
		}
		for j, n := range fi.StaticARP {
			nf := fmt.Sprintf("%s.static_arp[%d]", field, j)
			ip, err := parseAddr(nf+".ip", n.IP)
			if err != nil {
				return err
			}
			mac, err := parseMAC(nf+".mac", n.MAC)
			if err != nil {
				return err
			}
			iface.StaticARP = append(iface.StaticARP, Neighbor{IP: ip, MAC: mac})
		}
		c.Interfaces = append(c.Interfaces, iface)
	}
	if len(f.Queues) > 0 {
		q, err := parseQueuesJSON(f.Queues)
		if err != nil {
			return err
		}
		c.Queues = q
	}
	if f.XDPMode != nil {
		m, err := xdpprog.ParseMode(*f.XDPMode)
		if err != nil {
			return fieldErr("xdp_mode", "%q: want auto, native or generic", *f.XDPMode)
		}
		c.XDPMode = m
	}
	for i, r := range f.Routes {
		field := fmt.Sprintf("routes[%d]", i)
		p, err := parsePrefix(field+".prefix", r.Prefix)
		if err != nil {
			return err
		}
		if p.Masked() != p {
			return fieldErr(field+".prefix", "%q has host bits set: did you mean %s?", r.Prefix, p.Masked())
		}
		via, err := parseAddr(field+".via", r.Via)
		if err != nil {
			return err
		}
		c.Routes = append(c.Routes, Route{Prefix: p, Via: via})
	}
	if f.Gateway != nil {
		gw, err := parseAddr("gateway", *f.Gateway)
		if err != nil {
			return err
		}
		c.Gateway = gw
	}
	if p := f.Pipeline; p != nil {
		if p.Name != nil {
			c.Pipeline.Name = *p.Name
		}
		if p.BatchSize != nil {
			c.Pipeline.BatchSize = *p.BatchSize
		}
		if p.Owner != nil {
			c.Pipeline.Owner = *p.Owner
		}
		if p.Pin != nil {
			c.Pipeline.Pin = *p.Pin
		}
		if p.SpinIdle != nil {
			d, err := time.ParseDuration(*p.SpinIdle)
			if err != nil {
				return fieldErr("pipeline.spin_idle", "%q is not a duration (want e.g. \"50us\" or \"1ms\")", *p.SpinIdle)
			}
			c.Pipeline.SpinIdle = d
		}
		if b := p.BusyPoll; b != nil {
			if b.On != nil {
				c.Pipeline.BusyPoll.On = *b.On
			}
			if b.Budget != nil {
				c.Pipeline.BusyPoll.Budget = *b.Budget
			}
			if b.Idle != nil && *b.Idle != "" {
				d, err := time.ParseDuration(*b.Idle)
				if err != nil {
					return fieldErr("pipeline.busy_poll.idle", "%q is not a duration (want e.g. \"1ms\" or \"200us\"; leave it out for the default, 1ms)", *b.Idle)
				}
				c.Pipeline.BusyPoll.Idle = d
			}
		}
		if len(p.Options) > 0 && string(p.Options) != "null" {
			if t := bytes.TrimSpace(p.Options); len(t) == 0 || t[0] != '{' {
				return fieldErr("pipeline.options", "want an object, got %s", p.Options)
			}
			c.Pipeline.Options = p.Options
		}
	}
	if u := f.UMEM; u != nil {
		set := func(field string, v *int64, dst *uint32) error {
			if v == nil {
				return nil
			}
			if *v <= 0 || *v > 1<<31 {
				return fieldErr(field, "%d: want a positive number", *v)
			}
			*dst = uint32(*v)
			return nil
		}
		if err := errors.Join(set("umem.frames", u.Frames, &c.UMEM.Frames),
			set("umem.frame_size", u.FrameSize, &c.UMEM.FrameSize),
			set("umem.ring_size", u.RingSize, &c.UMEM.RingSize)); err != nil {
			return err
		}
	}
	if l := f.Log; l != nil {
		if l.Format != nil {
			c.Log.Format = *l.Format
		}
		if l.Level != nil {
			c.Log.Level = *l.Level
		}
	}
	if s := f.Stack; s != nil {
		c.Stack.ReassemblyBytes, c.Stack.NeighborTableSize = s.ReassemblyBytes, s.NeighborTableSize
		c.Stack.ARPPendingHops, c.Stack.ARPPendingPerHop = s.ARPPendingHops, s.ARPPendingPerHop
		if s.ReassemblyTimeout != nil && *s.ReassemblyTimeout != "" {
			d, err := time.ParseDuration(*s.ReassemblyTimeout)
			if err != nil {
				return fieldErr("stack.reassembly_timeout", "%q is not a duration (want e.g. \"30s\"; leave it out for the default, 30s)", *s.ReassemblyTimeout)
			}
			c.Stack.ReassemblyTimeout = d
		}
		if t := s.TCP; t != nil {
			c.Stack.TCP = StackTCP{MaxConns: t.MaxConns, Backlog: t.Backlog, MaxTimeWait: t.MaxTimeWait}
		}
	}
	return nil
}

func parsePrefix(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fieldErr(field, "%q is not an IPv4 prefix (want ADDRESS/BITS such as 198.18.0.1/24)", s)
	}
	return p, nil
}

func parseAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fieldErr(field, "%q is not an IPv4 address (want e.g. 198.18.0.2)", s)
	}
	return a, nil
}

func parseMAC(field, s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fieldErr(field, "%q is not an Ethernet address (want six hex bytes such as 02:00:00:00:00:02)", s)
	}
	if mac[0]&1 != 0 {
		return nil, fieldErr(field, "%s is a multicast or broadcast address: a neighbour needs a unicast address", mac)
	}
	if bytes.Equal(mac, make([]byte, 6)) {
		return nil, fieldErr(field, "%s is the zero address: give the neighbour's real address", mac)
	}
	return mac, nil
}

func parseQueuesJSON(raw json.RawMessage) ([]int, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "all" {
			return nil, nil
		}
		q, err := ParseQueues(s)
		if err != nil {
			return nil, fieldErr("queues", "%q: want \"all\" or a list of queue numbers such as [0, 1]", s)
		}
		return q, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fieldErr("queues", "%s: want \"all\" or a list of queue numbers such as [0, 1]", raw)
	}
	if len(list) == 0 {
		return nil, fieldErr("queues", "the list is empty: give queue numbers such as [0, 1], or \"all\"")
	}
	if err := checkQueues(list); err != nil {
		return nil, fieldErr("queues", "%v", err)
	}
	return list, nil
}

// ParseQueues reads "all" (nil) or a comma-separated list such as "0,1", as --queues takes.
func ParseQueues(s string) ([]int, error) {
	if s == "all" || s == "" {
		return nil, nil
	}
	var qs []int
	for _, f := range strings.Split(s, ",") {
		q, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q is not a queue number", strings.TrimSpace(f))
		}
		qs = append(qs, q)
	}
	if err := checkQueues(qs); err != nil {
		return nil, err
	}
	return qs, nil
}

func checkQueues(qs []int) error {
	seen := map[int]bool{}
	for _, q := range qs {
		if q < 0 {
			return fmt.Errorf("queue %d: queue numbers start at 0", q)
		}
		if seen[q] {
			return fmt.Errorf("queue %d is listed twice", q)
		}
		seen[q] = true
	}
	return nil
}

// ValidInstance checks an instance name: 1..32 characters of a-z, A-Z, 0-9, '-', '_' and '.',
// not starting with '.' (it names the file /run/netchan/NAME.sock).
func ValidInstance(name string) error {
	if name == "" || len(name) > 32 {
		return fmt.Errorf("instance name %q: want 1..32 characters", name)
	}
	if name[0] == '.' {
		return fmt.Errorf("instance name %q: may not start with '.'", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("instance name %q: use only letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// Validate checks the values and how they fit together; Parse calls it, and the commands call
// it again after flags were merged in.
func (c *Config) Validate() error {
	if err := ValidInstance(c.Instance); err != nil {
		return fieldErr("instance", "%v", err)
	}
	names := map[string]int{}
	owner := map[netip.Addr]string{}
	for i, iface := range c.Interfaces {
		field := fmt.Sprintf("interfaces[%d]", i)
		if iface.Name == "" {
			return fieldErr(field+".name", "missing: name the interface as `ip link` shows it")
		}
		if len(iface.Name) > 15 || strings.ContainsAny(iface.Name, "/ \t\n:") {
			return fieldErr(field+".name", "%q is not an interface name (at most 15 characters, no '/', ':' or spaces)", iface.Name)
		}
		if j, dup := names[iface.Name]; dup {
			return fieldErr(field+".name", "%q is already interfaces[%d]", iface.Name, j)
		}
		names[iface.Name] = i
		for j, a := range iface.Addresses {
			af := fmt.Sprintf("%s.addresses[%d]", field, j)
			if a.Bits() == 0 || a.Addr().IsUnspecified() || a.Addr().IsMulticast() || a.Addr() == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				return fieldErr(af, "%s cannot be an interface address", a)
			}
			if a.Bits() <= 30 && (a.Addr() == a.Masked().Addr() || a.Addr() == lastAddr(a)) {
				return fieldErr(af, "%s is the network or broadcast address of its subnet: pick a host address", a)
			}
			if other, dup := owner[a.Addr()]; dup {
				return fieldErr(af, "%s is already on %s", a.Addr(), other)
			}
			owner[a.Addr()] = iface.Name
		}
		for j, n := range iface.StaticARP {
			nf := fmt.Sprintf("%s.static_arp[%d].ip", field, j)
			if !onSubnet(iface.Addresses, n.IP) {
				return fieldErr(nf, "%s is not on a subnet of %s (its addresses: %v): a neighbour must be on-link", n.IP, iface.Name, prefixes(iface.Addresses))
			}
			if _, own := owner[n.IP]; own {
				return fieldErr(nf, "%s is netchan's own address", n.IP)
			}
		}
	}
	for i, r := range c.Routes {
		field := fmt.Sprintf("routes[%d].via", i)
		if _, ok := c.InterfaceFor(r.Via); !ok {
			return fieldErr(field, "%s is not on any interface's subnet (interfaces[].addresses): a next hop must be on-link", r.Via)
		}
		for j := 0; j < i; j++ {
			if c.Routes[j].Prefix == r.Prefix {
				return fieldErr(fmt.Sprintf("routes[%d].prefix", i), "%s is already routes[%d]", r.Prefix, j)
			}
		}
	}
	if c.Gateway.IsValid() {
		if _, ok := c.InterfaceFor(c.Gateway); !ok {
			return fieldErr("gateway", "%s is not on any interface's subnet (interfaces[].addresses): a gateway must be on-link", c.Gateway)
		}
	}
	if _, err := basic.ByName(c.Pipeline.Name); err != nil {
		return fieldErr("pipeline.name", "%q is not a pipeline: choose one of %v", c.Pipeline.Name, basic.Names())
	}
	if b := c.Pipeline.BatchSize; b < 1 || b > MaxBatchSize {
		return fieldErr("pipeline.batch_size", "%d: want 1..%d", b, MaxBatchSize)
	}
	switch c.Pipeline.Owner {
	case "", "none", "flow":
	default:
		return fieldErr("pipeline.owner", "%q: want \"none\" (each shard keeps what it receives) or \"flow\" (hand packets to the shard that owns their flow)", c.Pipeline.Owner)
	}
	if c.Pipeline.SpinIdle < 0 || c.Pipeline.SpinIdle > time.Second {
		return fieldErr("pipeline.spin_idle", "%v: want 0..1s", c.Pipeline.SpinIdle)
	}
	if b := c.Pipeline.BusyPoll.Budget; b < 0 || b > MaxBusyPollBudget {
		return fieldErr("pipeline.busy_poll.budget", "%d: want 1..%d packets a busy poll takes, or 0 (or leave it out) for the default, 64", b, MaxBusyPollBudget)
	}
	if d := c.Pipeline.BusyPoll.Idle; d < 0 {
		return fieldErr("pipeline.busy_poll.idle", "%v: want a duration of 0 or more, such as \"1ms\" (0 or left out: the default, 1ms)", d)
	}
	u := c.UMEM
	if u.FrameSize != 2048 && u.FrameSize != 4096 {
		return fieldErr("umem.frame_size", "%d: want 2048 or 4096", u.FrameSize)
	}
	if u.RingSize < 64 || u.RingSize > 1<<16 || u.RingSize&(u.RingSize-1) != 0 {
		return fieldErr("umem.ring_size", "%d: want a power of two from 64 to 65536", u.RingSize)
	}
	if u.Frames < 64 || u.Frames > 1<<20 {
		return fieldErr("umem.frames", "%d: want 64..%d frames per queue", u.Frames, 1<<20)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fieldErr("log.format", "%q: want text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fieldErr("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	return c.Stack.validate()
}

// validate checks the stack's limits: each 0 (the stack's default) or within its bounds.
func (s Stack) validate() error {
	count := func(field string, v, lo, hi int, unit, def string) error {
		if v == 0 || v >= lo && v <= hi {
			return nil
		}
		return fieldErr("stack."+field, "%d: want %d..%d %s, or 0 (or leave it out) for the default, %s", v, lo, hi, unit, def)
	}
	if err := errors.Join(
		count("reassembly_bytes", s.ReassemblyBytes, MinReassemblyBytes, MaxReassemblyBytes, "bytes per shard", "4 MiB"),
		count("neighbor_table_size", s.NeighborTableSize, MinNeighborTableSize, MaxNeighborTableSize, "entries per interface", "1024"),
		count("arp_pending_hops", s.ARPPendingHops, 1, MaxARPPendingHops, "next hops per shard", "64"),
		count("arp_pending_per_hop", s.ARPPendingPerHop, 1, MaxARPPendingPerHop, "datagrams per next hop", "32"),
		count("tcp.max_connections", s.TCP.MaxConns, 1, MaxTCPConns, "connections per shard", "16384"),
		count("tcp.backlog", s.TCP.Backlog, 1, MaxTCPBacklog, "connections per listener", "128"),
		count("tcp.max_time_wait", s.TCP.MaxTimeWait, 1, MaxTCPTimeWait, "TIME_WAIT connections per shard", "4096"),
	); err != nil {
		return err
	}
	if d := s.ReassemblyTimeout; d != 0 && (d < MinReassemblyTimeout || d > MaxReassemblyTimeout) {
		return fieldErr("stack.reassembly_timeout", "%v: want %v..%v, or leave it out for the default, 30s", d, MinReassemblyTimeout, MaxReassemblyTimeout)
	}
	return nil
}

// InterfaceFor returns the interface whose subnet holds a.
func (c *Config) InterfaceFor(a netip.Addr) (string, bool) {
	for _, iface := range c.Interfaces {
		if onSubnet(iface.Addresses, a) {
			return iface.Name, true
		}
	}
	return "", false
}

func onSubnet(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func prefixes(ps []netip.Prefix) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	if s == nil {
		s = []string{"none"}
	}
	return s
}

// DecodeOptions decodes the pipeline's options into v, refusing unknown fields; a pipeline
// without options passes a pointer to an empty struct.
func (p Pipeline) DecodeOptions(v any) error {
	if len(p.Options) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(p.Options))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			return fieldErr("pipeline.options", "pipeline %s has no option %s", p.Name, strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return fieldErr("pipeline.options", "%v", err)
	}
	return nil
}
