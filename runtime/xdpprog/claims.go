package xdpprog

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Protocol numbers accepted by ClaimPorts.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// lpmKey is the key of the prefixes map: struct { u32 prefixlen; u8 addr[4]; }.
type lpmKey struct {
	Prefixlen uint32
	Addr      [4]byte
}

// ClaimAllIPv4 turns the claim of every IPv4 packet on or off. It is checked
// before every other IPv4 rule.
func (p *Program) ClaimAllIPv4(on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	return p.setFlag(cfgClaimAllIPv4, on, "ClaimAllIPv4")
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

func prefixKey(pfx netip.Prefix) (lpmKey, error) {
	if !pfx.IsValid() || !pfx.Addr().Is4() {
		return lpmKey{}, fmt.Errorf("xdpprog: prefix %v: only IPv4 prefixes (like 198.18.0.0/24) can be claimed", pfx)
	}
	pfx = pfx.Masked()
	return lpmKey{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As4()}, nil
}

// ClaimPrefix claims IPv4 packets whose destination is inside pfx (host bits
// are ignored: 198.18.0.7/24 claims 198.18.0.0/24).
func (p *Program) ClaimPrefix(pfx netip.Prefix) error {
	key, err := prefixKey(pfx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.pfxs.Update(key, uint32(1), ebpf.UpdateAny); err != nil {
		if isFull(err) {
			return fmt.Errorf("xdpprog: ClaimPrefix(%v): the prefix map is full (%d prefixes): claim wider prefixes", pfx, maxPrefixes)
		}
		return wrapPerm(fmt.Sprintf("ClaimPrefix(%v)", pfx), err)
	}
	return nil
}

// UnclaimPrefix removes a prefix claimed by ClaimPrefix (exactly that
// prefix; narrower or wider claims stay). Not an error if it was not claimed.
func (p *Program) UnclaimPrefix(pfx netip.Prefix) error {
	key, err := prefixKey(pfx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.pfxs.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return wrapPerm(fmt.Sprintf("UnclaimPrefix(%v)", pfx), err)
	}
	return nil
}

// ClaimProtocol claims every IPv4 packet of an IP protocol (1 ICMP, 6 TCP,
// 17 UDP, ...), whatever its addresses and ports.
func (p *Program) ClaimProtocol(proto uint8) error { return p.setProtocol(proto, true) }

// UnclaimProtocol removes a protocol claim.
func (p *Program) UnclaimProtocol(proto uint8) error { return p.setProtocol(proto, false) }

func (p *Program) setProtocol(proto uint8, on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	var v uint32
	if on {
		v = 1
	}
	if err := p.protos.Update(uint32(proto), v, ebpf.UpdateAny); err != nil {
		return wrapPerm(fmt.Sprintf("claim protocol %d", proto), err)
	}
	return nil
}

// ClaimPorts claims TCP (proto 6) or UDP (proto 17) packets whose
// destination port is in lo..hi inclusive. Non-first IPv4 fragments are
// never claimed by port (see the package doc).
func (p *Program) ClaimPorts(proto uint8, lo, hi uint16) error {
	return p.setPorts(proto, lo, hi, true)
}

// UnclaimPorts clears the destination ports lo..hi of TCP or UDP, whichever
// ClaimPorts calls set them.
func (p *Program) UnclaimPorts(proto uint8, lo, hi uint16) error {
	return p.setPorts(proto, lo, hi, false)
}

func (p *Program) setPorts(proto uint8, lo, hi uint16, on bool) error {
	var base int
	switch proto {
	case ProtoTCP:
		base = portBaseTCP
	case ProtoUDP:
		base = portBaseUDP
	default:
		return fmt.Errorf("xdpprog: ports of protocol %d: only TCP (6) and UDP (17) have ports; use ClaimProtocol for others", proto)
	}
	if lo > hi {
		return fmt.Errorf("xdpprog: port range %d-%d is empty: lo must be <= hi", lo, hi)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	for w := int(lo) / 64; w <= int(hi)/64; w++ {
		first, last := w*64, w*64+63
		if first < int(lo) {
			first = int(lo)
		}
		if last > int(hi) {
			last = int(hi)
		}
		var mask uint64
		for bit := first; bit <= last; bit++ {
			mask |= 1 << (bit % 64)
		}
		old := p.portBits[base+w]
		word := old &^ mask
		if on {
			word = old | mask
		}
		if word == old {
			continue
		}
		if err := p.ports.Update(uint32(base+w), word, ebpf.UpdateAny); err != nil {
			return wrapPerm(fmt.Sprintf("ports %d-%d of protocol %d", lo, hi, proto), err)
		}
		p.portBits[base+w] = word
	}
	return nil
}

// isFull reports a full map: hash maps say E2BIG, the LPM trie ENOSPC.
func isFull(err error) bool {
	return errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC)
}

func arpKey(target netip.Addr) ([4]byte, error) {
	if !target.Is4() {
		return [4]byte{}, fmt.Errorf("xdpprog: ARP target %v: ARP carries IPv4 addresses only", target)
	}
	return target.As4(), nil
}

// ClaimARP claims ARP packets (requests and replies) whose target protocol
// address is target.
func (p *Program) ClaimARP(target netip.Addr) error {
	key, err := arpKey(target)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.arp.Update(key, uint32(1), ebpf.UpdateAny); err != nil {
		if isFull(err) {
			return fmt.Errorf("xdpprog: ClaimARP(%v): the ARP map is full (%d addresses)", target, maxARPTargets)
		}
		return wrapPerm(fmt.Sprintf("ClaimARP(%v)", target), err)
	}
	return nil
}

// UnclaimARP removes an ARP claim. Not an error if it was not claimed.
func (p *Program) UnclaimARP(target netip.Addr) error {
	key, err := arpKey(target)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.arp.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return wrapPerm(fmt.Sprintf("UnclaimARP(%v)", target), err)
	}
	return nil
}
