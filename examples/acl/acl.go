package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/stack/header"
)

// Action is what a rule does with the packets it matches.
type Action uint8

const (
	Deny Action = iota
	Allow
)

func (a Action) String() string {
	if a == Allow {
		return "allow"
	}
	return "deny"
}

// ParseAction reads "allow" or "deny".
func ParseAction(s string) (Action, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	}
	return 0, fmt.Errorf("%q: want allow or deny", s)
}

// Ports is an inclusive port range; the zero value (Set false) matches every port.
type Ports struct {
	Lo, Hi uint16
	Set    bool
}

func (p Ports) String() string {
	if p.Lo == p.Hi {
		return strconv.Itoa(int(p.Lo))
	}
	return fmt.Sprintf("%d-%d", p.Lo, p.Hi)
}

// Rule is one line of the rule set:
//
//	allow|deny [PROTO] [from ADDR [port PORTS]] [to ADDR [port PORTS]]
//
// PROTO is all (the default; also ip), tcp, udp, icmp or "proto N"; ADDR is any, an IPv4
// address or an IPv4 prefix; PORTS is a port or an inclusive range LO-HI, for tcp and udp
// only. "from ... port" is the source port, "to ... port" the destination port.
type Rule struct {
	Action   Action
	Proto    uint8        // 0: every protocol
	Src, Dst netip.Prefix // the zero Prefix: any
	SrcPorts Ports
	DstPorts Ports
}

func protoName(p uint8) string {
	switch p {
	case 0:
		return "all"
	case header.ProtoTCP:
		return "tcp"
	case header.ProtoUDP:
		return "udp"
	case header.ProtoICMP:
		return "icmp"
	}
	return fmt.Sprintf("proto %d", p)
}

func addrString(p netip.Prefix) string {
	switch {
	case !p.IsValid():
		return "any"
	case p.Bits() == 32:
		return p.Addr().String()
	}
	return p.String()
}

// String writes the rule back in the syntax ParseRule reads.
func (r Rule) String() string {
	s := r.Action.String() + " " + protoName(r.Proto)
	if r.Src.IsValid() || r.SrcPorts.Set {
		s += " from " + addrString(r.Src)
		if r.SrcPorts.Set {
			s += " port " + r.SrcPorts.String()
		}
	}
	if r.Dst.IsValid() || r.DstPorts.Set {
		s += " to " + addrString(r.Dst)
		if r.DstPorts.Set {
			s += " port " + r.DstPorts.String()
		}
	}
	return s
}

// ParseRule reads one rule; its error says which word is wrong and what was expected.
func ParseRule(s string) (Rule, error) {
	w := strings.Fields(strings.ToLower(s))
	var r Rule
	if len(w) == 0 {
		return r, errors.New("empty rule: want allow|deny [PROTO] [from ADDR [port PORTS]] [to ADDR [port PORTS]]")
	}
	var err error
	if r.Action, err = ParseAction(w[0]); err != nil {
		return r, fmt.Errorf("a rule starts with allow or deny, not %q", w[0])
	}
	w = w[1:]
	if len(w) > 0 {
		switch w[0] {
		case "all", "ip":
			w = w[1:]
		case "tcp":
			r.Proto, w = header.ProtoTCP, w[1:]
		case "udp":
			r.Proto, w = header.ProtoUDP, w[1:]
		case "icmp":
			r.Proto, w = header.ProtoICMP, w[1:]
		case "proto":
			if len(w) < 2 {
				return r, errors.New("proto needs a protocol number (0-255)")
			}
			n, err := strconv.ParseUint(w[1], 10, 8)
			if err != nil {
				return r, fmt.Errorf("proto %q: want a protocol number (0-255)", w[1])
			}
			r.Proto, w = uint8(n), w[2:]
		}
	}
	var seenFrom, seenTo bool
	for len(w) > 0 {
		dir := w[0]
		var addr *netip.Prefix
		var ports *Ports
		switch {
		case dir == "from" && !seenFrom && !seenTo:
			seenFrom, addr, ports = true, &r.Src, &r.SrcPorts
		case dir == "to" && !seenTo:
			seenTo, addr, ports = true, &r.Dst, &r.DstPorts
		case dir == "from" || dir == "to":
			return r, fmt.Errorf("%q: from comes at most once, then to at most once", dir)
		case dir == "port":
			return r, errors.New(`"port" belongs to "from ADDR" or "to ADDR" (write "to any port 53")`)
		default:
			return r, fmt.Errorf("%q: want from, to or the end of the rule (protocols: all, tcp, udp, icmp, proto N)", dir)
		}
		if len(w) < 2 {
			return r, fmt.Errorf("%s needs an address: any, A.B.C.D or A.B.C.D/N", dir)
		}
		if *addr, err = parseAddr(w[1]); err != nil {
			return r, fmt.Errorf("%s %s", dir, err)
		}
		w = w[2:]
		if len(w) > 0 && w[0] == "port" {
			if len(w) < 2 {
				return r, errors.New("port needs a port or a range LO-HI")
			}
			if r.Proto != header.ProtoTCP && r.Proto != header.ProtoUDP {
				return r, fmt.Errorf("port %s: ports need protocol tcp or udp, and the rule's protocol is %s", w[1], protoName(r.Proto))
			}
			if *ports, err = parsePorts(w[1]); err != nil {
				return r, err
			}
			w = w[2:]
		}
	}
	return r, nil
}

func parseAddr(s string) (netip.Prefix, error) {
	if s == "any" {
		return netip.Prefix{}, nil
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return netip.Prefix{}, fmt.Errorf("%q: want any, an IPv4 address or an IPv4 prefix", s)
		}
		return netip.PrefixFrom(a, 32), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return p, fmt.Errorf("%q: want any, an IPv4 address or an IPv4 prefix", s)
	}
	if p.Masked() != p {
		return p, fmt.Errorf("%s has bits set past /%d: did you mean %v?", s, p.Bits(), p.Masked())
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, nil // 0.0.0.0/0 is any
	}
	return p, nil
}

func parsePorts(s string) (Ports, error) {
	lo, hi, rng := strings.Cut(s, "-")
	if !rng {
		hi = lo
	}
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil {
		return Ports{}, fmt.Errorf("port %q: want a port (0-65535) or a range LO-HI", s)
	}
	if l > h {
		return Ports{}, fmt.Errorf("port range %q is empty", s)
	}
	return Ports{Lo: uint16(l), Hi: uint16(h), Set: true}, nil
}

// ParseRules reads one rule a line; blank lines and text after # are ignored. An error names
// the source (a file name) and the line.
func ParseRules(r io.Reader, source string) ([]Rule, error) {
	var rules []Rule
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if strings.TrimSpace(line) == "" {
			continue
		}
		rule, err := ParseRule(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", source, n, strings.TrimSpace(line), err)
		}
		rules = append(rules, rule)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return rules, nil
}

// matcher is a rule compiled for the packet path: masks and ranges, no pointers.
type matcher struct {
	srcNet, srcMask, dstNet, dstMask uint32
	sLo, sHi, dLo, dHi               uint16
	proto                            uint8
	ports                            bool // a port range is set: only packets with readable ports match
}

func prefixBits(p netip.Prefix) (net, mask uint32) {
	if !p.IsValid() || p.Bits() == 0 {
		return 0, 0
	}
	mask = ^uint32(0) << (32 - p.Bits())
	a := p.Addr().As4()
	return binary.BigEndian.Uint32(a[:]) & mask, mask
}

func compile(r Rule) matcher {
	m := matcher{proto: r.Proto, sHi: 0xffff, dHi: 0xffff, ports: r.SrcPorts.Set || r.DstPorts.Set}
	m.srcNet, m.srcMask = prefixBits(r.Src)
	m.dstNet, m.dstMask = prefixBits(r.Dst)
	if r.SrcPorts.Set {
		m.sLo, m.sHi = r.SrcPorts.Lo, r.SrcPorts.Hi
	}
	if r.DstPorts.Set {
		m.dLo, m.dHi = r.DstPorts.Lo, r.DstPorts.Hi
	}
	return m
}

func (m *matcher) match(src, dst uint32, proto uint8, sport, dport uint16, portsOK bool) bool {
	return src&m.srcMask == m.srcNet && dst&m.dstMask == m.dstNet && (m.proto == 0 || m.proto == proto) &&
		(!m.ports || portsOK && sport >= m.sLo && sport <= m.sHi && dport >= m.dLo && dport <= m.dHi)
}

// ACL is a rule set with its counters; each shard runs its own Stage over it.
type ACL struct {
	rules   []Rule
	match   []matcher
	deny    []bool                 // per rule, and the default last
	reasons []pipelines.DropReason // per deny rule and a denying default; ReasonNone for allows

	mu     sync.Mutex
	shards []*shardStage
}

// ReasonName is the drop reason of deny rule n (1-based, in rule order), or of the default
// action when n is 0.
func ReasonName(n int) string {
	if n == 0 {
		return "acl-default"
	}
	return fmt.Sprintf("acl-rule-%d", n)
}

// New compiles rules (first match wins; def decides what no rule matches) and registers a
// drop reason per deny rule. Reasons are a process-wide table of pipelines.MaxReasons names,
// so a rule set with more deny rules than free reasons is refused.
func New(rules []Rule, def Action) (*ACL, error) {
	a := &ACL{rules: rules}
	known := map[string]bool{}
	for _, n := range pipelines.ReasonNames() {
		known[n] = true
	}
	need := 0
	for i, r := range rules {
		if r.Action == Deny && !known[ReasonName(i+1)] {
			need++
		}
	}
	if def == Deny && !known[ReasonName(0)] {
		need++
	}
	if free := pipelines.MaxReasons - len(known); need > free {
		return nil, fmt.Errorf("acl: the deny rules need %d drop reasons of their own and only %d are free (pipelines.MaxReasons = %d): merge deny rules",
			need, free, pipelines.MaxReasons)
	}
	for i, r := range rules {
		a.match = append(a.match, compile(r))
		a.deny = append(a.deny, r.Action == Deny)
		reason := pipelines.ReasonNone
		if r.Action == Deny {
			reason = pipelines.RegisterReason(ReasonName(i + 1))
		}
		a.reasons = append(a.reasons, reason)
	}
	a.deny = append(a.deny, def == Deny)
	reason := pipelines.ReasonNone
	if def == Deny {
		reason = pipelines.RegisterReason(ReasonName(0))
	}
	a.reasons = append(a.reasons, reason)
	return a, nil
}

// Rules are the rule set, in order.
func (a *ACL) Rules() []Rule { return a.rules }

// Stage makes shard's ACL stage. It sees the transit IPv4 packets that package wire's local
// stage lets through and drops what a deny rule (or a denying default) matches; the rest it
// leaves to the forward stage.
func (a *ACL) Stage(shard int) pipelines.Stage {
	n := len(a.match) + 1
	s := &shardStage{a: a, local: make([]count, n), pub: make([]pubCount, n), marked: make([]bool, n), touched: make([]int32, 0, n)}
	a.mu.Lock()
	a.shards = append(a.shards, s)
	a.mu.Unlock()
	return s
}

// Counter is one rule's figures: the packets it matched and their bytes (whole Ethernet
// frames, as received).
type Counter struct {
	Rule    string // the rule as ParseRule reads it, or "default allow|deny"
	Reason  string // the drop reason of a deny rule ("" for allow rules)
	Packets uint64
	Bytes   uint64
}

// Counters sums every shard's counters: one per rule in order, then the default action's.
// Safe while the shards run (each shard publishes its figures at the end of every batch).
func (a *ACL) Counters() []Counter {
	out := make([]Counter, len(a.deny))
	for i := range out {
		if i < len(a.rules) {
			out[i].Rule = a.rules[i].String()
		} else if a.deny[i] {
			out[i].Rule = "default deny"
		} else {
			out[i].Rule = "default allow"
		}
		if a.deny[i] {
			out[i].Reason = a.reasons[i].String()
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.shards {
		for i := range out {
			out[i].Packets += s.pub[i].packets.Load()
			out[i].Bytes += s.pub[i].bytes.Load()
		}
	}
	return out
}

type count struct{ packets, bytes uint64 }

type pubCount struct{ packets, bytes atomic.Uint64 }

// shardStage is one shard's ACL: the shared compiled rules and the shard's own counters,
// counted in plain memory during a batch and published (atomic stores) once at its end.
type shardStage struct {
	a       *ACL
	local   []count
	pub     []pubCount
	marked  []bool
	touched []int32
}

func (*shardStage) Name() string { return "acl" }

func (s *shardStage) Process(b *pipelines.Batch) {
	a := s.a
	for i := range b.Pkts {
		p := &b.Pkts[i]
		if p.Verdict != pipelines.Continue {
			continue
		}
		ip, ok := header.IPv4InFrame(b.Data(i))
		if !ok {
			continue // package wire's local stage passes only IPv4 on; the rest is not ours
		}
		src4, dst4 := ip.Src4(), ip.Dst4()
		src, dst := binary.BigEndian.Uint32(src4[:]), binary.BigEndian.Uint32(dst4[:])
		proto := ip.Protocol()
		sport, dport, portsOK := ip.Ports()
		if proto != header.ProtoTCP && proto != header.ProtoUDP {
			portsOK = false
		}
		r := len(a.match) // the default
		for k := range a.match {
			if a.match[k].match(src, dst, proto, sport, dport, portsOK) {
				r = k
				break
			}
		}
		c := &s.local[r]
		c.packets++
		c.bytes += uint64(p.Len)
		if !s.marked[r] {
			s.marked[r] = true
			s.touched = append(s.touched, int32(r))
		}
		if a.deny[r] {
			b.Drop(i, a.reasons[r])
		}
	}
	for _, r := range s.touched {
		s.pub[r].packets.Store(s.local[r].packets)
		s.pub[r].bytes.Store(s.local[r].bytes)
		s.marked[r] = false
	}
	s.touched = s.touched[:0]
}
