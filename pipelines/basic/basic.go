// Package basic holds netchan's simplest bundled apps, each one stage: reflect (swap Ethernet,
// IPv4 and TCP/UDP addresses and send each packet back where it came from), drop (count and
// drop) and count (count per protocol, then drop), plus ReflectUDPPort, the demo's fast path.
// ByName returns one as a pipelines.App claiming all IPv4 (the default of `netchan run`); the
// stages compose with any other pipeline.
package basic

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/stack/header"
)

// Names lists the bundled pipelines.
func Names() []string {
	n := make([]string, 0, len(bundled))
	for k := range bundled {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

var bundled = map[string]func() pipelines.App{
	"reflect": func() pipelines.App {
		return pipelines.App{Name: "reflect", NewPipeline: func(int) *pipelines.Pipeline { return &pipelines.Pipeline{Stages: []pipelines.Stage{Reflect()}} }}
	},
	"drop": func() pipelines.App {
		return pipelines.App{Name: "drop", NewPipeline: func(int) *pipelines.Pipeline { return &pipelines.Pipeline{Stages: []pipelines.Stage{Drop()}} }}
	},
	"count": func() pipelines.App {
		c := &ProtoCounts{}
		return pipelines.App{Name: "count", NewPipeline: func(int) *pipelines.Pipeline {
			return &pipelines.Pipeline{Stages: []pipelines.Stage{c.Stage(), Drop()}}
		}}
	},
}

// ByName returns a bundled pipeline claiming all IPv4 (and nothing else) by default.
func ByName(name string) (pipelines.App, error) {
	f, ok := bundled[name]
	if !ok {
		return pipelines.App{}, fmt.Errorf("no pipeline %q: choose one of %v", name, Names())
	}
	s := f()
	s.Claims = []claim.Rule{claim.All()}
	return s, nil
}

// Reflect swaps the Ethernet addresses, the IPv4 addresses and the TCP/UDP ports of each packet
// and transmits it on the interface it arrived on. Swapping leaves the IPv4 and L4 checksums
// valid (the one's-complement sum does not depend on order). Frames that are not IPv4 are
// reflected at the Ethernet layer only; frames shorter than an Ethernet header are dropped.
func Reflect() pipelines.Stage { return pipelines.Func("reflect", reflect) }

func reflect(p *pipelines.Packet, d []byte) {
	if !TurnAround(d) {
		p.Verdict, p.Reason = pipelines.Drop, pipelines.ReasonMalformed
		return
	}
	p.Verdict, p.OutIf = pipelines.Transmit, p.InIf
}

// TurnAround makes a received frame its own reply in place, as Reflect does: it swaps the
// Ethernet addresses and, for IPv4, the addresses and the TCP/UDP ports; the checksums stay
// valid. It reports false for a frame shorter than an Ethernet header (left unchanged). A
// netchannel reader uses it to echo without a copy.
func TurnAround(d []byte) bool {
	if len(d) < 14 {
		return false
	}
	var mac [6]byte
	copy(mac[:], d[0:6])
	copy(d[0:6], d[6:12])
	copy(d[6:12], mac[:])
	if ip, ok := header.IPv4InFrame(d); ok {
		src, dst := ip.Src4(), ip.Dst4()
		ip.SetSrc4(dst)
		ip.SetDst4(src)
		proto := ip.Protocol()
		if sp, dp, ok := ip.Ports(); ok && (proto == header.ProtoTCP || proto == header.ProtoUDP) {
			l4 := ip.Payload()
			binary.BigEndian.PutUint16(l4[0:2], dp)
			binary.BigEndian.PutUint16(l4[2:4], sp)
		}
	}
	return true
}

// Drop drops every packet with reason "dropped".
func Drop() pipelines.Stage {
	return pipelines.Func("drop", func(p *pipelines.Packet, _ []byte) {
		p.Verdict, p.Reason = pipelines.Drop, pipelines.ReasonDropped
	})
}

// ProtoCounts counts packets by kind across all shards (each shard adds once per batch).
type ProtoCounts struct {
	ARP, IPv4, TCP, UDP, ICMP, Other atomic.Uint64
}

// Stage returns a stage that counts into c and leaves verdicts alone.
func (c *ProtoCounts) Stage() pipelines.Stage { return &countStage{c: c} }

type countStage struct{ c *ProtoCounts }

func (s *countStage) Name() string { return "count" }

func (s *countStage) Process(b *pipelines.Batch) {
	var arp, ip4, tcp, udp, icmp, other uint64
	for i := range b.Pkts {
		if b.Pkts[i].Verdict != pipelines.Continue {
			continue
		}
		d := b.Data(i)
		if len(d) < 14 {
			other++
			continue
		}
		switch binary.BigEndian.Uint16(d[12:14]) {
		case header.EtherTypeARP:
			arp++
		case header.EtherTypeIPv4:
			ip4++
			if ip, ok := header.IPv4InFrame(d); ok {
				switch ip.Protocol() {
				case header.ProtoTCP:
					tcp++
				case header.ProtoUDP:
					udp++
				case header.ProtoICMP:
					icmp++
				}
			}
		default:
			other++
		}
	}
	add := func(c *atomic.Uint64, v uint64) {
		if v != 0 {
			c.Add(v)
		}
	}
	add(&s.c.ARP, arp)
	add(&s.c.IPv4, ip4)
	add(&s.c.TCP, tcp)
	add(&s.c.UDP, udp)
	add(&s.c.ICMP, icmp)
	add(&s.c.Other, other)
}

// ReflectUDPPort reflects UDP datagrams to one destination port (as Reflect does) and leaves
// every other packet undecided for the stages after it.
func ReflectUDPPort(port uint16) pipelines.Stage {
	return pipelines.Func("reflect-udp-port", func(p *pipelines.Packet, d []byte) {
		ip, ok := header.IPv4InFrame(d)
		if !ok || ip.Protocol() != header.ProtoUDP {
			return
		}
		if _, dp, ok := ip.Ports(); ok && dp == port {
			reflect(p, d)
		}
	})
}
