package xdpprog

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/netchan/netchan/pipelines/claim"
	"golang.org/x/sys/unix"
)

// Protocol numbers accepted by ClaimPorts.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// DirectOwner is the owner of the claims made through the methods that name no owner
// (ClaimAllIPv4, ClaimPrefix, ClaimPorts, ClaimProtocol, ClaimARP and their Unclaim
// counterparts). Those keep set semantics among themselves; claims of other owners are never
// removed by them.
const DirectOwner = "direct"

// MaxAddrPortRange bounds the port range of one address-qualified port claim
// (udp:198.18.0.1:9000-9999): the program looks such claims up port by port in a hash map.
// Ranges without an address are not bounded (they are bitmaps).
const MaxAddrPortRange = 1024

// ErrNotClaimed: Unclaim of a rule the owner does not hold.
var ErrNotClaimed = errors.New("xdpprog: not claimed by this owner")

// OwnedClaim is one rule held by one owner (Program.Claims).
type OwnedClaim struct {
	Owner string
	Rule  claim.Rule
}

func (c OwnedClaim) String() string { return c.Owner + ": " + c.Rule.String() }

// lpmKey is the key of the prefixes map: struct { u32 prefixlen; u8 addr[4]; }.
type lpmKey struct {
	Prefixlen uint32
	Addr      [4]byte
}

// addrPortKey is the key of the address-qualified port map.
type addrPortKey [addrPortKeySize]byte

func newAddrPortKey(proto uint8, addr netip.Addr, port uint16) addrPortKey {
	var k addrPortKey
	a := addr.As4()
	copy(k[0:4], a[:])
	binary.BigEndian.PutUint16(k[4:6], port)
	k[6] = proto
	return k
}

// claimState is the Go side of the claim maps: who holds what. The BPF maps hold the union.
type claimState struct {
	held      map[string]map[claim.Rule]struct{} // owner → rules
	refs      map[claim.Rule]int                 // rule → number of owners holding it
	addrPorts map[addrPortKey]struct{}           // shadow of the address-qualified port map
	flows     map[claim.Rule]flowKey             // installed flow specs: shadow of the flow map
	shapes    [maxFlowShapes]shapeSlot           // shadow of the shapes map (flows.go)
}

func (s *claimState) init() {
	if s.held == nil {
		s.held = map[string]map[claim.Rule]struct{}{}
		s.refs = map[claim.Rule]int{}
		s.addrPorts = map[addrPortKey]struct{}{}
		s.flows = map[claim.Rule]flowKey{}
	}
}

// hold records that owner holds r; it reports whether that is new.
func (s *claimState) hold(owner string, r claim.Rule) bool {
	s.init()
	rules := s.held[owner]
	if rules == nil {
		rules = map[claim.Rule]struct{}{}
		s.held[owner] = rules
	}
	if _, ok := rules[r]; ok {
		return false
	}
	rules[r] = struct{}{}
	s.refs[r]++
	return true
}

// drop removes owner's hold of r; it reports whether owner held it.
func (s *claimState) drop(owner string, r claim.Rule) bool {
	rules := s.held[owner]
	if _, ok := rules[r]; !ok {
		return false
	}
	delete(rules, r)
	if len(rules) == 0 {
		delete(s.held, owner)
	}
	if s.refs[r]--; s.refs[r] <= 0 {
		delete(s.refs, r)
	}
	return true
}

func checkRule(owner string, r claim.Rule) error {
	if owner == "" {
		return fmt.Errorf("xdpprog: claim %v: the owner is empty: name who claims (a pipeline, a netchannel) so that its claims can be released", r)
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("xdpprog: %w", err)
	}
	if r.Kind() == claim.KindPorts && r.Addr().IsValid() {
		if lo, hi := r.Ports(); int(hi)-int(lo)+1 > MaxAddrPortRange {
			return fmt.Errorf("xdpprog: claim %v: a port range with an address may span at most %d ports (this one spans %d): claim the ports without an address, or a /32 prefix of the address",
				r, MaxAddrPortRange, int(hi)-int(lo)+1)
		}
	}
	return nil
}

// Claim makes owner hold rule r: the packets r names are redirected to netchan while at least
// one owner holds a rule that takes them. Claiming a rule the owner already holds is not an
// error (an owner holds a rule or not; it does not count). Rules of different owners are
// independent: the same port, overlapping ranges, the same prefix or all, claimed by two
// owners, stay claimed until both let go. Kernel destinations (SetKernelAddrs) are taken only
// by rules that name them (see the package doc).
func (p *Program) Claim(owner string, r claim.Rule) error {
	if err := checkRule(owner, r); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	return p.claimLocked(owner, r)
}

func (p *Program) claimLocked(owner string, r claim.Rule) error {
	if !p.claims.hold(owner, r) {
		return nil
	}
	if p.claims.refs[r] > 1 {
		return nil
	}
	if err := p.sync(r); err != nil {
		p.claims.drop(owner, r)
		if rerr := p.sync(r); rerr != nil {
			err = errors.Join(err, fmt.Errorf("xdpprog: undoing the partial claim %v: %w", r, rerr))
		}
		return fmt.Errorf("xdpprog: %s claiming %v: %w", owner, r, err)
	}
	return nil
}

// Unclaim drops owner's hold of r (exactly that rule: a narrower or wider one stays). Its
// packets stay claimed while another owner holds the same rule, or another rule takes them.
// A rule the owner does not hold gives an error wrapping ErrNotClaimed.
func (p *Program) Unclaim(owner string, r claim.Rule) error {
	if err := checkRule(owner, r); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	return p.unclaimLocked(owner, r)
}

func (p *Program) unclaimLocked(owner string, r claim.Rule) error {
	if !p.claims.drop(owner, r) {
		return fmt.Errorf("%w: %s does not hold %v", ErrNotClaimed, owner, r)
	}
	if p.claims.refs[r] > 0 {
		return nil
	}
	if err := p.sync(r); err != nil {
		// Keep the Go side in step with what the maps still hold.
		p.claims.hold(owner, r)
		if rerr := p.sync(r); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("xdpprog: %s unclaiming %v: %w", owner, r, err)
	}
	return nil
}

// ReleaseOwner drops every rule owner holds (an owner that holds nothing is not an error).
func (p *Program) ReleaseOwner(owner string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	rules := make([]claim.Rule, 0, len(p.claims.held[owner]))
	for r := range p.claims.held[owner] {
		rules = append(rules, r)
	}
	var errs []error
	for _, r := range rules {
		if err := p.unclaimLocked(owner, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Claims lists every rule with its owner, sorted by owner and then rule (claim.Compare).
func (p *Program) Claims() []OwnedClaim {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []OwnedClaim
	for owner, rules := range p.claims.held {
		for r := range rules {
			out = append(out, OwnedClaim{Owner: owner, Rule: r})
		}
	}
	slices.SortFunc(out, func(a, b OwnedClaim) int {
		if c := cmp.Compare(a.Owner, b.Owner); c != 0 {
			return c
		}
		return claim.Compare(a.Rule, b.Rule)
	})
	return out
}

// sync makes the BPF maps agree with the held rules over everything r covers. The caller
// holds p.mu.
func (p *Program) sync(r claim.Rule) error {
	held := p.claims.refs[r] > 0
	switch r.Kind() {
	case claim.KindAll:
		return p.setFlag(cfgClaimAllIPv4, held, "claim all")
	case claim.KindPrefix:
		pfx := r.Prefix()
		key := lpmKey{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As4()}
		if held {
			if err := p.pfxs.Update(key, uint32(pfx.Bits()), ebpf.UpdateAny); err != nil {
				if isFull(err) {
					return fmt.Errorf("the prefix map is full (%d prefixes): claim wider prefixes: %w", maxPrefixes, err)
				}
				return wrapPerm(fmt.Sprintf("claim %v", r), err)
			}
			return nil
		}
		if err := p.pfxs.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return wrapPerm(fmt.Sprintf("unclaim %v", r), err)
		}
		return nil
	case claim.KindProto:
		var v uint32
		if held {
			v = 1
		}
		if err := p.protos.Update(uint32(r.Proto()), v, ebpf.UpdateAny); err != nil {
			return wrapPerm(fmt.Sprintf("claim %v", r), err)
		}
		return nil
	case claim.KindARP:
		key := r.Addr().As4()
		if held {
			if err := p.arp.Update(key, uint32(1), ebpf.UpdateAny); err != nil {
				if isFull(err) {
					return fmt.Errorf("the ARP map is full (%d addresses): %w", maxARPTargets, err)
				}
				return wrapPerm(fmt.Sprintf("claim %v", r), err)
			}
			return nil
		}
		if err := p.arp.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return wrapPerm(fmt.Sprintf("unclaim %v", r), err)
		}
		return nil
	case claim.KindPorts:
		lo, hi := r.Ports()
		if r.Addr().IsValid() {
			return p.syncAddrPorts(r.Proto(), r.Addr(), lo, hi)
		}
		return p.syncPortWords(r.Proto(), lo, hi)
	case claim.KindFlow:
		return p.syncFlow(r)
	}
	return fmt.Errorf("claim %v: unknown kind", r)
}

// syncPortWords rewrites the bitmap words of proto that cover lo..hi from every held port
// rule without an address. A word is written whole, so a packet racing the write sees the old
// or the new word; a range spanning several words can be seen half written.
func (p *Program) syncPortWords(proto uint8, lo, hi uint16) error {
	base := portBaseTCP
	if proto == ProtoUDP {
		base = portBaseUDP
	}
	wlo, whi := int(lo)/64, int(hi)/64
	want := make([]uint64, whi-wlo+1)
	for r := range p.claims.refs {
		if r.Kind() != claim.KindPorts || r.Proto() != proto || r.Addr().IsValid() {
			continue
		}
		rlo, rhi := r.Ports()
		first, last := max(int(rlo), wlo*64), min(int(rhi), whi*64+63)
		for w := first / 64; first <= last && w <= last/64; w++ {
			a, b := max(first, w*64), min(last, w*64+63)
			want[w-wlo] |= bitRange(a%64, b%64)
		}
	}
	for i, word := range want {
		idx := base + wlo + i
		if p.portBits[idx] == word {
			continue
		}
		if err := p.ports.Update(uint32(idx), word, ebpf.UpdateAny); err != nil {
			return wrapPerm(fmt.Sprintf("writing the port bitmap of protocol %d", proto), err)
		}
		p.portBits[idx] = word
	}
	return nil
}

// bitRange returns a word with bits a..b (0 <= a <= b <= 63) set.
func bitRange(a, b int) uint64 {
	if b-a == 63 {
		return ^uint64(0)
	}
	return (1<<(b-a+1) - 1) << a
}

// syncAddrPorts makes the address-qualified port map hold (proto, addr, port) for every port
// in lo..hi that a held rule names.
func (p *Program) syncAddrPorts(proto uint8, addr netip.Addr, lo, hi uint16) error {
	p.claims.init()
	var ranges [][2]int
	for r := range p.claims.refs {
		if r.Kind() == claim.KindPorts && r.Proto() == proto && r.Addr() == addr {
			rlo, rhi := r.Ports()
			ranges = append(ranges, [2]int{int(rlo), int(rhi)})
		}
	}
	for port := int(lo); port <= int(hi); port++ {
		want := false
		for _, rg := range ranges {
			if rg[0] <= port && port <= rg[1] {
				want = true
				break
			}
		}
		k := newAddrPortKey(proto, addr, uint16(port))
		_, have := p.claims.addrPorts[k]
		switch {
		case want && !have:
			if err := p.addrPort.Update(k[:], uint32(1), ebpf.UpdateAny); err != nil {
				if isFull(err) {
					return fmt.Errorf("the address-qualified port map is full (%d ports over all such claims): claim ports without an address, or a /32 prefix: %w", maxAddrPorts, err)
				}
				return wrapPerm("writing the address-qualified port map", err)
			}
			p.claims.addrPorts[k] = struct{}{}
		case !want && have:
			if err := p.addrPort.Delete(k[:]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return wrapPerm("deleting from the address-qualified port map", err)
			}
			delete(p.claims.addrPorts, k)
		}
	}
	return nil
}

// isFull reports a full map: hash maps say E2BIG, the LPM trie ENOSPC.
func isFull(err error) bool {
	return errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC)
}

// The methods below claim as DirectOwner, with set semantics: they predate owned claims.

// claimDirect and unclaimDirect are Claim and Unclaim as DirectOwner; unclaimDirect ignores
// a rule that is not held.
func (p *Program) claimDirect(r claim.Rule) error { return p.Claim(DirectOwner, r) }

func (p *Program) unclaimDirect(r claim.Rule) error {
	if err := p.Unclaim(DirectOwner, r); err != nil && !errors.Is(err, ErrNotClaimed) {
		return err
	}
	return nil
}

// ClaimAllIPv4 turns DirectOwner's claim of every IPv4 packet (claim.All) on or off. It is
// checked before the other IPv4 rules, after the kernel-destination check.
func (p *Program) ClaimAllIPv4(on bool) error {
	if on {
		return p.claimDirect(claim.All())
	}
	return p.unclaimDirect(claim.All())
}

// setFlag sets or clears one bit of config[0] and its shadow; what names the operation in
// an error. The caller holds p.mu.
func (p *Program) setFlag(bit uint32, on bool, what string) error {
	cfg := p.cfg &^ bit
	if on {
		cfg |= bit
	}
	if err := p.config.Update(uint32(0), cfg, ebpf.UpdateAny); err != nil {
		return wrapPerm(what, err)
	}
	p.cfg = cfg
	return nil
}

func checkPrefix(pfx netip.Prefix) error {
	if !pfx.IsValid() || !pfx.Addr().Is4() {
		return fmt.Errorf("xdpprog: prefix %v: only IPv4 prefixes (like 198.18.0.0/24) can be claimed", pfx)
	}
	return nil
}

// ClaimPrefix claims, as DirectOwner, IPv4 packets whose destination is inside pfx (host bits
// are ignored: 198.18.0.7/24 claims 198.18.0.0/24).
func (p *Program) ClaimPrefix(pfx netip.Prefix) error {
	if err := checkPrefix(pfx); err != nil {
		return err
	}
	return p.claimDirect(claim.Prefix(pfx))
}

// UnclaimPrefix removes a prefix claimed by ClaimPrefix (exactly that
// prefix; narrower or wider claims stay). Not an error if it was not claimed.
func (p *Program) UnclaimPrefix(pfx netip.Prefix) error {
	if err := checkPrefix(pfx); err != nil {
		return err
	}
	return p.unclaimDirect(claim.Prefix(pfx))
}

// ClaimProtocol claims, as DirectOwner, every IPv4 packet of an IP protocol (1 ICMP, 6 TCP,
// 17 UDP, ...), whatever its addresses and ports.
func (p *Program) ClaimProtocol(proto uint8) error { return p.claimDirect(claim.Proto(proto)) }

// UnclaimProtocol removes DirectOwner's protocol claim.
func (p *Program) UnclaimProtocol(proto uint8) error { return p.unclaimDirect(claim.Proto(proto)) }

// ClaimPorts claims, as DirectOwner, TCP (proto 6) or UDP (proto 17) packets whose
// destination port is in lo..hi inclusive. Non-first IPv4 fragments are never claimed by port
// (see the package doc).
func (p *Program) ClaimPorts(proto uint8, lo, hi uint16) error {
	return p.claimDirect(claim.Ports(proto, netip.Addr{}, lo, hi))
}

// UnclaimPorts clears the destination ports lo..hi of TCP or UDP from DirectOwner's port
// claims, whichever ClaimPorts calls set them (a claimed range is cut around lo..hi). Ports
// that other owners claim stay claimed.
func (p *Program) UnclaimPorts(proto uint8, lo, hi uint16) error {
	cut := claim.Ports(proto, netip.Addr{}, lo, hi)
	if err := cut.Validate(); err != nil {
		return fmt.Errorf("xdpprog: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	var cuts []claim.Rule
	for r := range p.claims.held[DirectOwner] {
		if r.Kind() != claim.KindPorts || r.Proto() != proto || r.Addr().IsValid() {
			continue
		}
		if rlo, rhi := r.Ports(); rhi >= lo && rlo <= hi {
			cuts = append(cuts, r)
		}
	}
	var errs []error
	for _, r := range cuts {
		rlo, rhi := r.Ports()
		// The pieces left over go in first, so that they are never unclaimed on the way.
		if rlo < lo {
			if err := p.claimLocked(DirectOwner, claim.Ports(proto, netip.Addr{}, rlo, lo-1)); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if rhi > hi {
			if err := p.claimLocked(DirectOwner, claim.Ports(proto, netip.Addr{}, hi+1, rhi)); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := p.unclaimLocked(DirectOwner, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func checkARP(target netip.Addr) error {
	if !target.Is4() {
		return fmt.Errorf("xdpprog: ARP target %v: ARP carries IPv4 addresses only", target)
	}
	return nil
}

// ClaimARP claims, as DirectOwner, ARP packets (requests and replies) whose target protocol
// address is target.
func (p *Program) ClaimARP(target netip.Addr) error {
	if err := checkARP(target); err != nil {
		return err
	}
	return p.claimDirect(claim.ARP(target))
}

// UnclaimARP removes DirectOwner's ARP claim. Not an error if it was not claimed.
func (p *Program) UnclaimARP(target netip.Addr) error {
	if err := checkARP(target); err != nil {
		return err
	}
	return p.unclaimDirect(claim.ARP(target))
}
