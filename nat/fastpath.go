package nat

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/xdpprog"
	"github.com/netchan/netchan/stack/header"
)

// FastPath is a table of flows that an XDP program translates and forwards by itself
// (*xdpprog.Program is one). The NAT keeps it in step with its mappings: it installs a flow
// once the shard has forwarded one of its packets (so the next hop's MAC is known and, for
// TCP, the connection is established), reads back when the flow last saw a packet before it
// expires a mapping, and removes the flow with its mapping.
type FastPath interface {
	AddFast(xdpprog.FastFlow) error
	DeleteFast(proto uint8, src, dst [4]byte, sport, dport uint16) error
	FastSeen(proto uint8, src, dst [4]byte, sport, dport uint16) (last int64, packets uint64, ok bool, err error)
	Stats() (xdpprog.Stats, error)
}

// fastPaths are the two programs: outbound flows arrive on the inside interface, return
// traffic on the outside one.
type fastPaths struct{ in, out FastPath }

// fastMaxAge bounds how long an installed flow keeps the MAC addresses it was installed
// with: older flows are taken out (their last packet time merged into the mapping first) and
// the next packet, on the shard's path, installs them again with the neighbour table's
// current answer.
const fastMaxAge = 30 * time.Second

// Bits of dest.fast.
const (
	fastOutInstalled uint8 = 1 << iota // inside → outside, in the inside program
	fastInInstalled                    // outside → inside, in the outside program
)

// EnableFastPath hands established flows to the XDP programs of the two interfaces (see
// FastPath): inside is the program on the inside interface, outside the one on the outside
// interface, each with its fast target set to the other interface. Call it once, before or
// while the shards run.
func (n *NAT) EnableFastPath(inside, outside FastPath) {
	n.fast.Store(&fastPaths{in: inside, out: outside})
}

// EnableXDPFastPath turns on the fast path of the NAT's two XDP programs (the pipeline's
// programs on Inside and Outside, as the front door's Instance.Programs lists them; App(true) wires this, each attached to
// its interface): each redirects to the other's interface. It hands them to EnableFastPath,
// and starts counting frames that the kernel drops at the redirect (Stats.FastRedirectDrops;
// Close stops it): a veth peer without NAPI drops them silently.
func (n *NAT) EnableXDPFastPath(inside, outside *xdpprog.Program) error {
	in, out := inside.Ifindex(), outside.Ifindex()
	if in == 0 || out == 0 {
		return errors.New("nat: the fast path needs both XDP programs attached to their interfaces")
	}
	return n.enableXDPFastPath(inside, outside, in, out)
}

// enableXDPFastPath is EnableXDPFastPath with the targets given: tests run programs that
// are not attached anywhere.
func (n *NAT) enableXDPFastPath(inside, outside *xdpprog.Program, insideIfindex, outsideIfindex int) error {
	w, err := xdpprog.WatchRedirectDrops()
	if err != nil {
		return fmt.Errorf("nat: fast path: %w", err)
	}
	if err := errors.Join(w.Watch(inside), w.Watch(outside)); err != nil {
		return errors.Join(fmt.Errorf("nat: fast path: %w", err), w.Close())
	}
	if err := inside.SetFastTarget(outsideIfindex); err != nil {
		return errors.Join(fmt.Errorf("nat: fast path of the inside interface: %w", err), w.Close())
	}
	if err := outside.SetFastTarget(insideIfindex); err != nil {
		return errors.Join(fmt.Errorf("nat: fast path of the outside interface: %w", err), inside.SetFastTarget(0), w.Close())
	}
	n.mu.Lock()
	n.drops, n.xdp = w, [2]*xdpprog.Program{inside, outside}
	n.mu.Unlock()
	n.EnableFastPath(inside, outside)
	return nil
}

// checkRefusals turns the XDP fast path off for good once the kernel has refused one of its
// redirects, as a veth does whose peer runs no NAPI: those frames are lost, and every later
// frame of the flow would be too. From then on the shards carry every packet (the programs'
// targets are cleared; flows stay installed, unused, until their mappings go). Shard 0's
// expiry scan calls it, every 10 ms.
func (n *NAT) checkRefusals() {
	if n.fastOff.Load() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.drops == nil {
		return
	}
	if r, err := n.drops.Refused(); err != nil || r == 0 {
		return
	}
	n.fastOff.Store(true)
	for _, p := range n.xdp {
		p.SetFastTarget(0)
	}
}

// Close releases what EnableXDPFastPath started (the redirect-drop counter). The XDP
// programs belong to the shards' instance, which closes them.
func (n *NAT) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var err error
	if n.drops != nil {
		err = n.drops.Close()
		n.drops = nil
	}
	return err
}

// FastPathHint says what to do when the fast path was turned off (Stats.FastOff).
const FastPathHint = "the kernel refused the XDP fast path's redirects, so the shards now carry every packet: on veth, the peer of each NAT interface needs NAPI (`ethtool -K PEER gro on`, or an XDP program on it) for the fast path; or turn the fast path off from the start"

// fastEligible says whether packets of this mapping and endpoint may bypass the shard:
// UDP always, TCP once established (the program sends SYN, FIN and RST to the shard anyway).
func fastEligible(m *mapping, d *dest) bool {
	switch m.proto {
	case header.ProtoUDP:
		return true
	case header.ProtoTCP:
		return d.state == tcpEstablished
	}
	return false
}

// installFast installs the flow of packet i, which the shard has just translated and
// forwarded, if it is eligible and not yet installed. outbound tells the direction; src,
// dst, sport, dport are the packet's addresses and ports as they arrived.
func (s *Shard) installFast(b *pipelines.Batch, i int, m *mapping, d *dest, outbound bool, src, dst [4]byte, sport, dport uint16, now int64) {
	fp := s.n.fast.Load()
	if fp == nil || d == nil || !fastEligible(m, d) || s.n.fastOff.Load() {
		return
	}
	bit, table, outIf, rewrite := fastInInstalled, fp.out, Inside, m.inIP
	port := m.inPort
	if outbound {
		bit, table, outIf, rewrite, port = fastOutInstalled, fp.in, Outside, s.n.outside, m.extPort
	}
	if d.fast&bit != 0 || b.Pkts[i].Verdict != pipelines.Transmit || int(b.Pkts[i].OutIf) != outIf {
		return // installed already, or the frame waits for ARP, or it leaves by an odd route
	}
	eth := b.Data(i)
	f := xdpprog.FastFlow{Proto: m.proto, Src: src, Dst: dst, SrcPort: sport, DstPort: dport,
		RewriteSrc: outbound, Addr: rewrite, Port: port, DstMAC: [6]byte(eth[0:6]), SrcMAC: [6]byte(eth[6:12])}
	if err := table.AddFast(f); err != nil {
		s.ctr.FastErrors.Add(1)
		return
	}
	if d.fast == 0 {
		d.fastAt = now
	}
	d.fast |= bit
	s.ctr.FastInstalled.Add(1)
}

// mergeFast brings the time of the last fast-path packet of d into d.last.
func (s *Shard) mergeFast(fp *fastPaths, m *mapping, d *dest, monoToNow int64) {
	note := func(last int64, ok bool, err error) {
		if err != nil {
			s.ctr.FastErrors.Add(1)
			return
		}
		if ok && last > 0 && last+monoToNow > d.last {
			d.last = last + monoToNow
		}
	}
	if d.fast&fastOutInstalled != 0 {
		last, _, ok, err := fp.in.FastSeen(m.proto, m.inIP, d.ip, m.inPort, d.port)
		note(last, ok, err)
	}
	if d.fast&fastInInstalled != 0 {
		last, _, ok, err := fp.out.FastSeen(m.proto, d.ip, s.n.outside, d.port, m.extPort)
		note(last, ok, err)
	}
}

// dropFast removes d's flows from the fast path.
func (s *Shard) dropFast(m *mapping, d *dest) {
	fp := s.n.fast.Load()
	if fp == nil || d.fast == 0 {
		return
	}
	var err error
	if d.fast&fastOutInstalled != 0 {
		err = fp.in.DeleteFast(m.proto, m.inIP, d.ip, m.inPort, d.port)
		s.ctr.FastRemoved.Add(1)
	}
	if d.fast&fastInInstalled != 0 {
		err = errors.Join(err, fp.out.DeleteFast(m.proto, d.ip, s.n.outside, d.port, m.extPort))
		s.ctr.FastRemoved.Add(1)
	}
	if err != nil {
		s.ctr.FastErrors.Add(1)
	}
	d.fast = 0
}

// refreshFast is the expiry scan's part for one mapping: the fast path's last packet times
// are merged into endpoints that would otherwise look idle, and flows older than fastMaxAge
// are taken out to be installed afresh.
func (s *Shard) refreshFast(m *mapping, now int64, monoToNow func() int64) {
	fp := s.n.fast.Load()
	if fp == nil {
		return
	}
	for j := 0; j < m.nd; j++ {
		d := &m.dests[j]
		if d.fast == 0 {
			continue
		}
		old := now-d.fastAt > s.n.fastMaxAge
		if old || now-d.last > s.timeout(m, d) {
			s.mergeFast(fp, m, d, monoToNow())
		}
		if old {
			s.dropFast(m, d)
		}
	}
}

// monoToStage returns what to add to a CLOCK_MONOTONIC time (the XDP program's
// bpf_ktime_get_ns) to get a pipelines.Now time.
func monoToStage() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return pipelines.Now() - ts.Nano()
}
