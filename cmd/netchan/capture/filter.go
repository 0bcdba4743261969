package capture

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/netchan/netchan/stack/header"
)

// Filter is a compiled filter expression. Match evaluates it on a frame's bytes without
// allocating. The zero Filter (and a nil *Filter) matches everything.
//
// The grammar, a small subset of tcpdump's:
//
//	expr    = and { ("or" | "||") and }
//	and     = unary { ("and" | "&&") unary }
//	unary   = ("not" | "!") unary | "(" expr ")" | prim
//	prim    = "ip" | "udp" | "tcp" | "icmp" | "arp"
//	        | [ "src" | "dst" ] "host" A.B.C.D
//	        | [ "src" | "dst" ] "port" N
//	        | "shard" N
//
// host matches an IPv4 packet's source or destination address (src/dst: only that one) and an
// ARP packet's sender or target protocol address; port matches a TCP or UDP port of an
// unfragmented packet or a first fragment; shard matches packets on shard N (the netchannel:
// one queue of every interface).
type Filter struct {
	expr  string
	nodes []node
	root  int
}

type kind uint8

const (
	kOr kind = iota
	kAnd
	kNot
	kIP
	kProto // IPv4 with protocol proto
	kARP
	kHost
	kPort
	kShard
)

type dir uint8

const (
	either dir = iota
	src
	dst
)

type node struct {
	k     kind
	d     dir
	a, b  int // children
	proto uint8
	addr  [4]byte
	n     uint16
}

// String is the expression the filter was parsed from.
func (f *Filter) String() string {
	if f == nil || f.expr == "" {
		return "(all)"
	}
	return f.expr
}

// Match reports whether the frame (an Ethernet frame) on shard matches.
func (f *Filter) Match(frame []byte, shard int) bool {
	if f == nil || len(f.nodes) == 0 {
		return true
	}
	return f.eval(f.root, frame, shard)
}

func (f *Filter) eval(i int, frame []byte, shard int) bool {
	n := &f.nodes[i]
	switch n.k {
	case kOr:
		return f.eval(n.a, frame, shard) || f.eval(n.b, frame, shard)
	case kAnd:
		return f.eval(n.a, frame, shard) && f.eval(n.b, frame, shard)
	case kNot:
		return !f.eval(n.a, frame, shard)
	case kShard:
		return shard == int(n.n)
	case kARP:
		return len(frame) >= header.EthernetLen && binary.BigEndian.Uint16(frame[12:14]) == 0x0806
	}
	if n.k == kHost && len(frame) >= header.EthernetLen+header.ARPLen && binary.BigEndian.Uint16(frame[12:14]) == 0x0806 {
		if a, ok := header.ParseARP(frame[header.EthernetLen:]); ok {
			return n.d != dst && a.SenderIP4() == n.addr || n.d != src && a.TargetIP4() == n.addr
		}
		return false
	}
	ip, ok := header.IPv4InFrame(frame)
	if !ok {
		return false
	}
	switch n.k {
	case kIP:
		return true
	case kProto:
		return ip.Protocol() == n.proto
	case kHost:
		return n.d != dst && ip.Src4() == n.addr || n.d != src && ip.Dst4() == n.addr
	case kPort:
		if p := ip.Protocol(); p != header.ProtoUDP && p != header.ProtoTCP {
			return false
		}
		sp, dp, ok := ip.Ports()
		return ok && (n.d != dst && sp == n.n || n.d != src && dp == n.n)
	}
	return false
}

// SyntaxError says where an expression went wrong.
type SyntaxError struct {
	Expr string
	Pos  int    // byte offset of the offending token in Expr (len(Expr): at the end)
	Msg  string // what was wrong and what was expected
}

func (e *SyntaxError) Error() string {
	at := "at the end"
	if e.Pos < len(e.Expr) {
		tok := e.Expr[e.Pos:]
		if i := strings.IndexAny(tok, " \t()"); i > 0 {
			tok = tok[:i]
		} else if i == 0 {
			tok = tok[:1]
		}
		at = fmt.Sprintf("at %q (offset %d)", tok, e.Pos)
	}
	return fmt.Sprintf("filter %q: %s: %s", e.Expr, at, e.Msg)
}

type token struct {
	s   string
	pos int
}

func tokenize(expr string) []token {
	var toks []token
	i := 0
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '(' || c == ')' || c == '!':
			toks = append(toks, token{expr[i : i+1], i})
			i++
		case strings.HasPrefix(expr[i:], "&&") || strings.HasPrefix(expr[i:], "||"):
			toks = append(toks, token{expr[i : i+2], i})
			i += 2
		default:
			j := i
			for j < len(expr) && !strings.ContainsRune(" \t\n()!&|", rune(expr[j])) {
				j++
			}
			if j == i { // a lone '&' or '|'
				j++
			}
			toks = append(toks, token{expr[i:j], i})
			i = j
		}
	}
	return toks
}

type parser struct {
	expr  string
	toks  []token
	i     int
	nodes []node
	depth int
}

// maxDepth bounds nesting, so a hostile expression cannot exhaust the stack (parse or Match).
const maxDepth = 64

// Parse compiles an expression; the empty expression matches everything.
func Parse(expr string) (*Filter, error) {
	p := &parser{expr: expr, toks: tokenize(expr)}
	if len(p.toks) == 0 {
		return &Filter{}, nil
	}
	root, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		t := p.toks[p.i]
		if t.s == ")" {
			return nil, p.errAt(t.pos, "a ')' without its '('")
		}
		return nil, p.errAt(t.pos, "expected 'and', 'or' or the end of the expression")
	}
	return &Filter{expr: strings.TrimSpace(expr), nodes: p.nodes, root: root}, nil
}

func (p *parser) errAt(pos int, msg string) error {
	return &SyntaxError{Expr: p.expr, Pos: pos, Msg: msg}
}

func (p *parser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i].s
	}
	return ""
}

func (p *parser) pos() int {
	if p.i < len(p.toks) {
		return p.toks[p.i].pos
	}
	return len(p.expr)
}

func (p *parser) add(n node) int { p.nodes = append(p.nodes, n); return len(p.nodes) - 1 }

func (p *parser) or() (int, error) {
	a, err := p.and()
	if err != nil {
		return 0, err
	}
	for t := p.peek(); t == "or" || t == "||"; t = p.peek() {
		p.i++
		b, err := p.and()
		if err != nil {
			return 0, err
		}
		a = p.add(node{k: kOr, a: a, b: b})
	}
	return a, nil
}

func (p *parser) and() (int, error) {
	a, err := p.unary()
	if err != nil {
		return 0, err
	}
	for t := p.peek(); t == "and" || t == "&&"; t = p.peek() {
		p.i++
		b, err := p.unary()
		if err != nil {
			return 0, err
		}
		a = p.add(node{k: kAnd, a: a, b: b})
	}
	return a, nil
}

const primitives = "a primitive (ip, udp, tcp, icmp, arp, [src|dst] host A.B.C.D, [src|dst] port N, shard N), 'not' or '('"

func (p *parser) unary() (int, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return 0, p.errAt(p.pos(), fmt.Sprintf("nested more than %d deep", maxDepth))
	}
	pos := p.pos()
	switch t := p.peek(); t {
	case "":
		return 0, p.errAt(pos, "expected "+primitives)
	case "not", "!":
		p.i++
		a, err := p.unary()
		if err != nil {
			return 0, err
		}
		return p.add(node{k: kNot, a: a}), nil
	case "(":
		p.i++
		a, err := p.or()
		if err != nil {
			return 0, err
		}
		if p.peek() != ")" {
			return 0, p.errAt(p.pos(), "expected ')' to close the '(' at offset "+strconv.Itoa(pos))
		}
		p.i++
		return a, nil
	case "ip":
		p.i++
		return p.add(node{k: kIP}), nil
	case "udp", "tcp", "icmp":
		p.i++
		proto := map[string]uint8{"udp": header.ProtoUDP, "tcp": header.ProtoTCP, "icmp": header.ProtoICMP}[t]
		return p.add(node{k: kProto, proto: proto}), nil
	case "arp":
		p.i++
		return p.add(node{k: kARP}), nil
	case "shard":
		p.i++
		v, err := p.number("shard", 255)
		if err != nil {
			return 0, err
		}
		return p.add(node{k: kShard, n: v}), nil
	}
	d := either
	switch p.peek() {
	case "src":
		d = src
		p.i++
	case "dst":
		d = dst
		p.i++
	}
	switch t := p.peek(); t {
	case "host":
		p.i++
		vpos, v := p.pos(), p.peek()
		a, err := netip.ParseAddr(v)
		if v == "" || err != nil || !a.Is4() {
			return 0, p.errAt(vpos, "host wants an IPv4 address such as 198.18.0.1")
		}
		p.i++
		return p.add(node{k: kHost, d: d, addr: a.As4()}), nil
	case "port":
		p.i++
		v, err := p.number("port", 65535)
		if err != nil {
			return 0, err
		}
		return p.add(node{k: kPort, d: d, n: v}), nil
	}
	if d != either {
		return 0, p.errAt(p.pos(), "expected 'host' or 'port' after src/dst")
	}
	return 0, p.errAt(pos, "expected "+primitives)
}

func (p *parser) number(what string, max int) (uint16, error) {
	vpos, v := p.pos(), p.peek()
	n, err := strconv.Atoi(v)
	if v == "" || err != nil || n < 0 || n > max {
		return 0, p.errAt(vpos, fmt.Sprintf("%s wants a number from 0 to %d", what, max))
	}
	p.i++
	return uint16(n), nil
}
