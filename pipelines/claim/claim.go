// Package claim owns netchan's claim grammar: the one way to say which received packets netchan
// takes from an interface, used by the --claim flags, by config files and by netchannel specs.
// Everything a claim does not take stays with the kernel, which may own the same address.
//
// A claim is one of:
//
//	all                      every IPv4 packet (see kernel addresses below)
//	198.18.0.0/24            IPv4 packets to a destination prefix
//	198.18.0.1               the same as 198.18.0.1/32
//	udp:9999                 UDP to destination port 9999, any destination address
//	udp:9000-9099            UDP to a destination port range (inclusive)
//	udp:198.18.0.1:9999      UDP to port 9999 of 198.18.0.1 only (also with a range)
//	tcp:...                  the same forms for TCP
//	udp:198.18.0.1:9999<-203.0.113.0/24:*
//	                         a flow spec: UDP to 198.18.0.1 port 9999 from any port of
//	                         203.0.113.0/24 (see Flow specs)
//	proto:N                  every IPv4 packet of IP protocol N (0-255; icmp, tcp, udp by name)
//	arp:198.18.0.1           ARP whose target address is 198.18.0.1
//
// # Flow specs
//
// A netchannel claims flows, not only destinations: a flow spec names the local side (the
// packet's destination) and, after <-, the remote side (its source). Each address is one
// address, a prefix or *, each port one port or *:
//
//	udp:198.18.0.0/24:9999           UDP to port 9999 of any address in 198.18.0.0/24
//	tcp:198.18.0.1:80<-203.0.113.7:* TCP to 198.18.0.1:80 from any port of 203.0.113.7
//	udp:*<-198.51.100.0/24:53        UDP from port 53 of 198.51.100.0/24, to any local port
//
// Flow specs are TCP or UDP (a flow is told by its ports) and take one port or any, not a
// range. A flow spec that only names a local address (or none) and port is a port claim and is
// written as one: Parse("udp:198.18.0.1:9999<-*:*") is udp:198.18.0.1:9999. Flow specs match
// unfragmented packets and first fragments only: a later fragment carries no ports.
//
// arp: is for netchan's own stack, which answers ARP for the addresses it serves; users rarely
// write it. Keywords are case-insensitive; ports are decimal, 0-65535. IPv6 is not supported.
//
// Use [Parse] for one claim and [ParseList] for a flag given several times or a comma-separated
// list; code builds rules with [All], [Prefix], [Ports], [Proto] and [ARP] and checks them with
// [Rule.Validate]. [Rule.String] writes a rule back in the grammar (and Parse reads it back to
// the same Rule), so status output and config files use the same words. A Rule is a comparable
// value: it can be a map key.
//
// # Kernel addresses
//
// When the interface carries kernel IPv4 addresses, traffic to them is not taken by a broad
// claim: packets addressed to one of the interface's kernel addresses or its directed
// broadcast, to 255.255.255.255, or to a multicast group (224.0.0.0/4) are taken only by a claim
// that names them: a port claim (udp:/tcp:, with or without an address), a flow spec, proto:N,
// or the /32 of that very address. all and shorter prefixes leave them to the kernel, so that `all` on a
// management interface does not take the SSH session, ARP-less neighbours or routing protocols
// with it. The XDP program (package runtime/xdpprog) enforces this rule; this package only
// describes claims.
package claim

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Kind is what a Rule matches on.
type Kind uint8

const (
	// KindNone is the zero Rule's kind: it claims nothing and is not valid.
	KindNone Kind = iota
	// KindAll: every IPv4 packet.
	KindAll
	// KindPrefix: IPv4 packets whose destination is in a prefix.
	KindPrefix
	// KindPorts: TCP or UDP packets to a destination port range, optionally to one address.
	KindPorts
	// KindProto: every IPv4 packet of one IP protocol.
	KindProto
	// KindARP: ARP packets whose target protocol address is one address.
	KindARP
	// KindFlow: TCP or UDP flows by local and remote address (each one address, a prefix or
	// any) and port (each one port or any); see Flow specs in the package doc.
	KindFlow
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindAll:
		return "all"
	case KindPrefix:
		return "prefix"
	case KindPorts:
		return "ports"
	case KindProto:
		return "proto"
	case KindARP:
		return "arp"
	case KindFlow:
		return "flow"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// IP protocol numbers with ports.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Grammar is the short form of the grammar that errors show.
const Grammar = "claims look like all, 198.18.0.0/24, udp:[ADDR:]PORT[-PORT], tcp:[ADDR:]PORT[-PORT], proto:N, udp:LOCAL[/N]:PORT<-REMOTE[/N]:PORT (* for any)"

// ErrInvalid is wrapped by every error of Parse, ParseList and Rule.Validate (errors.Is).
var ErrInvalid = errors.New("invalid claim")

// Error is a claim that could not be parsed or is not valid.
type Error struct {
	Claim  string // the text as given (or the rule's String)
	Reason string // what is wrong
}

func (e *Error) Error() string {
	return fmt.Sprintf("claim %q: %s; %s", e.Claim, e.Reason, Grammar)
}

// Unwrap returns ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Rule is one claim. The zero Rule claims nothing (KindNone). Rules are built by Parse or the
// constructors, compare with ==, and can be map keys: equal rules claim the same packets and
// are written the same way by String.
type Rule struct {
	kind   Kind
	proto  uint8        // KindPorts (6 or 17), KindProto, KindFlow (6 or 17)
	prefix netip.Prefix // KindPrefix, KindFlow's local prefix (invalid: any); masked
	addr   netip.Addr   // KindPorts (invalid: any address), KindARP
	lo, hi uint16       // KindPorts; KindFlow's local port in lo
	// KindFlow only.
	remote      netip.Prefix // masked; invalid: any
	rport       uint16
	anyLocalPt  bool
	anyRemotePt bool
}

// All claims every IPv4 packet (but see the kernel-address rule in the package doc).
func All() Rule { return Rule{kind: KindAll} }

// Prefix claims IPv4 packets whose destination is inside p; host bits are cleared
// (198.18.0.7/24 is 198.18.0.0/24).
func Prefix(p netip.Prefix) Rule {
	if p.IsValid() && p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return Rule{kind: KindPrefix, prefix: p.Masked()}
}

// Ports claims TCP (proto 6) or UDP (proto 17) packets whose destination port is in lo..hi
// inclusive and, if addr is valid, whose destination address is addr. An invalid (zero) addr
// means any destination address.
func Ports(proto uint8, addr netip.Addr, lo, hi uint16) Rule {
	return Rule{kind: KindPorts, proto: proto, addr: addr.Unmap(), lo: lo, hi: hi}
}

// Proto claims every IPv4 packet of IP protocol n (1 ICMP, 6 TCP, 17 UDP, ...).
func Proto(n uint8) Rule { return Rule{kind: KindProto, proto: n} }

// ARP claims ARP packets (requests and replies) whose target protocol address is target.
func ARP(target netip.Addr) Rule { return Rule{kind: KindARP, addr: target.Unmap()} }

// Flow returns the rule for a flow spec (see Flow specs in the package doc): protocol proto (6
// or 17), local (destination) prefix and port, remote (source) prefix and port. An invalid or
// /0 prefix means any address; a nil port means any port. Host bits of the prefixes are cleared.
// A spec that names no remote and one local port, on one local address or any, is the same set
// of packets as a port rule, and Flow returns that Ports rule, so equal sets compare equal.
func Flow(proto uint8, local netip.Prefix, localPort *uint16, remote netip.Prefix, remotePort *uint16) Rule {
	norm := func(p netip.Prefix) netip.Prefix {
		if !p.IsValid() {
			return netip.Prefix{}
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Bits() == 0 {
			return netip.Prefix{}
		}
		return p.Masked()
	}
	local, remote = norm(local), norm(remote)
	r := Rule{kind: KindFlow, proto: proto, prefix: local, remote: remote}
	if localPort == nil {
		r.anyLocalPt = true
	} else {
		r.lo, r.hi = *localPort, *localPort
	}
	if remotePort == nil {
		r.anyRemotePt = true
	} else {
		r.rport = *remotePort
	}
	if !remote.IsValid() && r.anyRemotePt && !r.anyLocalPt && (!local.IsValid() || local.Bits() == local.Addr().BitLen()) &&
		(proto == ProtoTCP || proto == ProtoUDP) {
		var a netip.Addr
		if local.IsValid() {
			a = local.Addr()
		}
		return Ports(proto, a, r.lo, r.lo)
	}
	return r
}

// Local returns a KindFlow rule's local (destination) prefix, invalid for any; for a
// KindPorts rule, its address as a /32 (invalid for any).
func (r Rule) Local() netip.Prefix {
	if r.kind == KindPorts {
		if r.addr.IsValid() {
			return netip.PrefixFrom(r.addr, 32)
		}
		return netip.Prefix{}
	}
	return r.prefix
}

// LocalPort returns a KindFlow rule's local port and whether it names one (false: any).
func (r Rule) LocalPort() (uint16, bool) { return r.lo, !r.anyLocalPt }

// Remote returns a KindFlow rule's remote (source) prefix, invalid for any.
func (r Rule) Remote() netip.Prefix { return r.remote }

// RemotePort returns a KindFlow rule's remote port and whether it names one (false: any).
func (r Rule) RemotePort() (uint16, bool) { return r.rport, !r.anyRemotePt }

// Kind returns what the rule matches on.
func (r Rule) Kind() Kind { return r.kind }

// IsZero reports whether r is the zero Rule.
func (r Rule) IsZero() bool { return r == Rule{} }

// Proto returns the IP protocol of a KindPorts or KindProto rule, 0 for the other kinds.
func (r Rule) Proto() uint8 { return r.proto }

// Prefix returns the destination prefix of a KindPrefix rule (of a KindFlow rule: its local
// prefix), the zero Prefix otherwise.
func (r Rule) Prefix() netip.Prefix { return r.prefix }

// Addr returns the destination address of a KindPorts rule (invalid when it takes any
// address) or the target of a KindARP rule.
func (r Rule) Addr() netip.Addr { return r.addr }

// Ports returns the inclusive destination port range of a KindPorts rule.
func (r Rule) Ports() (lo, hi uint16) { return r.lo, r.hi }

// Validate reports a rule that the constructors were given nonsense for (an IPv6 prefix, ports
// of ICMP, an empty range, ...); Parse only returns valid rules.
func (r Rule) Validate() error {
	bad := func(format string, args ...any) error {
		return &Error{Claim: r.String(), Reason: fmt.Sprintf(format, args...)}
	}
	switch r.kind {
	case KindAll, KindProto:
		return nil
	case KindPrefix:
		if !r.prefix.IsValid() {
			return bad("no prefix")
		}
		if !r.prefix.Addr().Is4() {
			return bad("IPv6 is not supported: only IPv4 prefixes can be claimed")
		}
		return nil
	case KindPorts:
		if r.proto != ProtoTCP && r.proto != ProtoUDP {
			return bad("protocol %d has no ports: only tcp (6) and udp (17) do; use proto:%d for every packet of it", r.proto, r.proto)
		}
		if r.addr.IsValid() && !r.addr.Is4() {
			return bad("IPv6 is not supported: the address must be IPv4")
		}
		if r.lo > r.hi {
			return bad("port range %d-%d is empty: the first port must not be above the last", r.lo, r.hi)
		}
		return nil
	case KindARP:
		if !r.addr.Is4() {
			return bad("ARP targets are IPv4 addresses")
		}
		return nil
	case KindFlow:
		if r.proto != ProtoTCP && r.proto != ProtoUDP {
			return bad("a flow spec is TCP or UDP (flows are told by their ports), not protocol %d", r.proto)
		}
		for _, p := range []netip.Prefix{r.prefix, r.remote} {
			if p.IsValid() && !p.Addr().Is4() {
				return bad("IPv6 is not supported: flow specs take IPv4 prefixes")
			}
		}
		return nil
	}
	return bad("the zero Rule claims nothing: build rules with Parse or the constructors")
}

// String writes the rule in the grammar; Parse reads it back to the same Rule.
func (r Rule) String() string {
	switch r.kind {
	case KindAll:
		return "all"
	case KindPrefix:
		if !r.prefix.IsValid() {
			return "invalid-prefix"
		}
		return r.prefix.String()
	case KindPorts:
		var b strings.Builder
		switch r.proto {
		case ProtoTCP:
			b.WriteString("tcp:")
		case ProtoUDP:
			b.WriteString("udp:")
		default:
			fmt.Fprintf(&b, "ports-of-proto-%d:", r.proto)
		}
		if r.addr.IsValid() {
			b.WriteString(r.addr.String())
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(int(r.lo)))
		if r.hi != r.lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(r.hi)))
		}
		return b.String()
	case KindProto:
		if name, ok := protoNames[r.proto]; ok {
			return "proto:" + name
		}
		return "proto:" + strconv.Itoa(int(r.proto))
	case KindARP:
		return "arp:" + r.addr.String()
	case KindFlow:
		return r.flowString()
	}
	return "none"
}

// flowString writes a KindFlow rule: PROTO:LOCAL:PORT<-REMOTE:PORT, leaving out what is any
// where the grammar allows (a local address, the whole remote side).
func (r Rule) flowString() string {
	var b strings.Builder
	switch r.proto {
	case ProtoTCP:
		b.WriteString("tcp:")
	case ProtoUDP:
		b.WriteString("udp:")
	default:
		fmt.Fprintf(&b, "flow-of-proto-%d:", r.proto)
	}
	port := func(p uint16, any bool) string {
		if any {
			return "*"
		}
		return strconv.Itoa(int(p))
	}
	pfx := func(p netip.Prefix) string {
		if !p.IsValid() {
			return "*"
		}
		if p.Bits() == p.Addr().BitLen() {
			return p.Addr().String()
		}
		return p.String()
	}
	switch {
	case r.prefix.IsValid():
		b.WriteString(pfx(r.prefix) + ":" + port(r.lo, r.anyLocalPt))
	case r.anyLocalPt:
		b.WriteString("*")
	default:
		b.WriteString(port(r.lo, false))
	}
	if r.remote.IsValid() || !r.anyRemotePt {
		b.WriteString("<-" + pfx(r.remote) + ":" + port(r.rport, r.anyRemotePt))
	}
	return b.String()
}

// MarshalText writes String, so that rules read well in JSON status and config files.
func (r Rule) MarshalText() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return []byte(r.String()), nil
}

// UnmarshalText parses text with Parse.
func (r *Rule) UnmarshalText(text []byte) error {
	p, err := Parse(string(text))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// Compare orders rules by kind, then protocol, prefix or address, then ports; it is 0 only for
// equal rules.
func Compare(a, b Rule) int {
	if c := cmp.Compare(a.kind, b.kind); c != 0 {
		return c
	}
	if c := cmp.Compare(a.proto, b.proto); c != 0 {
		return c
	}
	if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.prefix.Bits(), b.prefix.Bits()); c != 0 {
		return c
	}
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.lo, b.lo); c != 0 {
		return c
	}
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	if c := a.remote.Addr().Compare(b.remote.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.remote.Bits(), b.remote.Bits()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.rport, b.rport); c != 0 {
		return c
	}
	if c := compareBool(a.anyLocalPt, b.anyLocalPt); c != 0 {
		return c
	}
	return compareBool(a.anyRemotePt, b.anyRemotePt)
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

var protoNames = map[uint8]string{1: "icmp", ProtoTCP: "tcp", ProtoUDP: "udp"}

var protoNumbers = map[string]uint8{"icmp": 1, "tcp": ProtoTCP, "udp": ProtoUDP}

// Parse reads one claim (see the package doc for the grammar). Surrounding spaces are ignored;
// keywords are case-insensitive. Errors wrap ErrInvalid, say what is wrong and show the grammar.
func Parse(s string) (Rule, error) {
	in := s
	bad := func(format string, args ...any) (Rule, error) {
		return Rule{}, &Error{Claim: in, Reason: fmt.Sprintf(format, args...)}
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return bad("empty claim")
	}
	lower := strings.ToLower(s)
	if lower == "all" {
		return All(), nil
	}
	if kw, rest, ok := strings.Cut(lower, ":"); ok {
		switch kw {
		case "udp", "tcp":
			return parsePorts(in, protoNumbers[kw], rest)
		case "proto", "protocol":
			if rest == "" {
				return bad("no protocol after proto: (write proto:N with N 0-255, or proto:icmp)")
			}
			if n, ok := protoNumbers[rest]; ok {
				return Proto(n), nil
			}
			n, err := strconv.ParseUint(rest, 10, 64)
			if err != nil {
				return bad("protocol %q is not a number 0-255 or one of icmp, tcp, udp", rest)
			}
			if n > 255 {
				return bad("protocol %d is out of range 0-255", n)
			}
			return Proto(uint8(n)), nil
		case "arp":
			a, err := netip.ParseAddr(rest)
			if err != nil {
				return bad("ARP target %q is not an IPv4 address", rest)
			}
			if !a.Is4() {
				return bad("IPv6 is not supported: ARP targets are IPv4 addresses")
			}
			return ARP(a), nil
		}
		if isIPv6(s) {
			return bad("IPv6 is not supported: claims take IPv4 traffic only")
		}
		return bad("unknown kind %q", kw)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return bad("not an IPv4 prefix (like 198.18.0.0/24)")
		}
		if !p.Addr().Is4() {
			return bad("IPv6 is not supported: claims take IPv4 traffic only")
		}
		if p.Masked() != p {
			return bad("host bits are set: the prefix is %v (write that), or write %v alone for the one address", p.Masked(), p.Addr())
		}
		return Prefix(p), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if _, err := strconv.ParseUint(s, 10, 16); err == nil {
			return bad("a bare number is not a claim: write udp:%s or tcp:%s for a port, proto:%s for a protocol", s, s, s)
		}
		return bad("not a claim")
	}
	if !a.Is4() {
		return bad("IPv6 is not supported: claims take IPv4 traffic only")
	}
	return Prefix(netip.PrefixFrom(a, 32)), nil
}

func isIPv6(s string) bool {
	s = strings.Trim(s, "[]")
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Is6()
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr().Is6()
	}
	return false
}

// parsePorts reads [ADDR:]PORT[-PORT] after "udp:" or "tcp:".
func parsePorts(in string, proto uint8, rest string) (Rule, error) {
	bad := func(format string, args ...any) (Rule, error) {
		return Rule{}, &Error{Claim: in, Reason: fmt.Sprintf(format, args...)}
	}
	name := protoNames[proto]
	if rest == "" {
		return bad("no port after %s: (write %s:PORT, %s:LO-HI or %s:ADDR:PORT)", name, name, name, name)
	}
	if strings.Contains(rest, "<-") || strings.Contains(rest, "*") || strings.Contains(rest, "/") {
		return parseFlow(in, proto, rest)
	}
	if strings.HasPrefix(rest, "[") || strings.Count(rest, ":") > 1 {
		return bad("IPv6 is not supported: the address must be IPv4 (%s:198.18.0.1:PORT)", name)
	}
	var addr netip.Addr
	if a, ports, ok := strings.Cut(rest, ":"); ok {
		if strings.Contains(a, "/") {
			return bad("%q is a prefix: a port claim names one address (or none, for any)", a)
		}
		var err error
		if addr, err = netip.ParseAddr(a); err != nil {
			return bad("%q is not an IPv4 address", a)
		}
		if !addr.Is4() {
			return bad("IPv6 is not supported: the address must be IPv4")
		}
		rest = ports
	}
	loS, hiS, isRange := strings.Cut(rest, "-")
	lo, err := parsePort(loS)
	if err != nil {
		return bad("%v", err)
	}
	hi := lo
	if isRange {
		if hi, err = parsePort(hiS); err != nil {
			return bad("%v", err)
		}
		if lo > hi {
			return bad("port range %d-%d is empty: the first port must not be above the last", lo, hi)
		}
	}
	return Ports(proto, addr, lo, hi), nil
}

// parseFlow reads a flow spec after "udp:" or "tcp:": LOCAL[<-REMOTE], LOCAL being PORT, * or
// ADDR[/N]:PORT (either part may be *), REMOTE being ADDR[/N] or * with an optional :PORT or :*.
func parseFlow(in string, proto uint8, rest string) (Rule, error) {
	bad := func(format string, args ...any) (Rule, error) {
		return Rule{}, &Error{Claim: in, Reason: fmt.Sprintf(format, args...)}
	}
	port := func(s, side string) (*uint16, error) {
		if s == "*" {
			return nil, nil
		}
		if strings.Contains(s, "-") {
			return nil, fmt.Errorf("a flow spec names one %s port or *, not a range", side)
		}
		p, err := parsePort(s)
		if err != nil {
			return nil, err
		}
		return &p, nil
	}
	addr := func(s, side string) (netip.Prefix, error) {
		if s == "*" {
			return netip.Prefix{}, nil
		}
		if strings.HasPrefix(s, "[") {
			return netip.Prefix{}, errors.New("IPv6 is not supported: flow specs take IPv4 addresses")
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil || !p.Addr().Is4() {
				return netip.Prefix{}, fmt.Errorf("%s prefix %q is not an IPv4 prefix (like 203.0.113.0/24)", side, s)
			}
			if p.Masked() != p {
				return netip.Prefix{}, fmt.Errorf("host bits are set in the %s prefix: write %v", side, p.Masked())
			}
			return p, nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return netip.Prefix{}, fmt.Errorf("%s address %q is not an IPv4 address", side, s)
		}
		return netip.PrefixFrom(a, 32), nil
	}
	localS, remoteS, hasRemote := strings.Cut(rest, "<-")
	var local netip.Prefix
	var lport *uint16
	var err error
	if a, p, ok := strings.Cut(localS, ":"); ok {
		if local, err = addr(a, "local"); err != nil {
			return bad("%v", err)
		}
		if lport, err = port(p, "local"); err != nil {
			return bad("%v", err)
		}
	} else if lport, err = port(localS, "local"); err != nil {
		return bad("%v (the local side is PORT, * or ADDR[/N]:PORT)", err)
	}
	var remote netip.Prefix
	var rport *uint16
	if hasRemote {
		a, p, ok := strings.Cut(remoteS, ":")
		if remote, err = addr(a, "remote"); err != nil {
			return bad("%v", err)
		}
		if ok {
			if rport, err = port(p, "remote"); err != nil {
				return bad("%v", err)
			}
		}
	}
	return Flow(proto, local, lport, remote, rport), nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("a port is missing")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, fmt.Errorf("port %s is out of range 0-65535", s)
		}
		return 0, fmt.Errorf("port %q is not a decimal number", s)
	}
	if n > 65535 {
		return 0, fmt.Errorf("port %d is out of range 0-65535", n)
	}
	return uint16(n), nil
}

// ParseList parses claims given one per string (a repeated flag, a config list), each of which
// may itself be a comma-separated list: ["udp:53,tcp:53", "all"] gives three rules in that
// order. An empty item is an error. Duplicates are kept: claiming a rule twice is harmless.
func ParseList(ss []string) ([]Rule, error) {
	var rules []Rule
	for _, s := range ss {
		for item := range strings.SplitSeq(s, ",") {
			r, err := Parse(item)
			if err != nil {
				if strings.TrimSpace(item) == "" && s != item {
					return nil, &Error{Claim: s, Reason: "an empty item in a comma-separated list"}
				}
				return nil, err
			}
			rules = append(rules, r)
		}
	}
	return rules, nil
}
