package xdpprog

import "fmt"

// Stats are the program's counters, summed over CPUs, since Load.
type Stats struct {
	// Passed counts frames no rule claimed: XDP_PASS to the kernel.
	Passed uint64
	// Claimed counts frames a rule claimed: a redirect to the queue's socket
	// was attempted.
	Claimed uint64
	// NoSocket counts claimed frames whose queue had no registered socket:
	// they fell back to XDP_PASS and went to the kernel. A redirect that the
	// kernel drops later (socket bound to another queue, rx ring full) is
	// not seen here: the socket's own statistics show it.
	NoSocket uint64

	// Claimed frames by the rule that claimed them (they add up to Claimed). AddrPort counts
	// the address-qualified port rules (udp:198.18.0.1:53), Port those without an address,
	// Flow the flow specs (udp:198.18.0.1:53<-203.0.113.0/24:*).
	ARP, AllIPv4, Prefix, Protocol, Port, AddrPort, Flow uint64

	// FlowFragment counts non-first fragments of TCP and UDP seen while a flow spec is held:
	// they carry no ports, so no flow spec takes them, and they went on through the other
	// rules (usually to the kernel). Traffic that may fragment is better claimed by prefix.
	FlowFragment uint64

	// KernelDst counts IPv4 frames to a kernel destination: an address in the deny set
	// (SetKernelAddrs), 255.255.255.255 or multicast. all and wider prefixes do not take
	// them; the rules that name them may (they are counted there too), the rest pass.
	// Frames a flow spec claims are not counted: that rule comes before the check.
	KernelDst uint64

	// Fast counts frames of fast flows (FastFlow) that the program rewrote and redirected
	// to the fast target itself; FastNoTarget those of them dropped because no target was
	// set. A redirect the kernel refuses later (into a veth whose peer has neither an XDP
	// program nor GRO on) is not seen here: RedirectDrops counts those.
	Fast, FastNoTarget uint64
}

// Stats reads and sums the per-CPU counters. Each counter is read
// atomically per CPU, not all of them at one instant.
func (p *Program) Stats() (Stats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Stats{}, ErrClosed
	}
	var sums [numCounters]uint64
	var percpu []uint64
	for i := range sums {
		if err := p.ctrs.Lookup(uint32(i), &percpu); err != nil {
			return Stats{}, fmt.Errorf("xdpprog: reading counter %d: %w", i, err)
		}
		for _, v := range percpu {
			sums[i] += v
		}
	}
	return Stats{
		Passed:   sums[ctrPassed],
		Claimed:  sums[ctrClaimed],
		NoSocket: sums[ctrNoSocket],
		ARP:      sums[ctrARP],
		AllIPv4:  sums[ctrAllIPv4],
		Prefix:   sums[ctrPrefix],
		Protocol: sums[ctrProtocol],
		Port:     sums[ctrPort],
		AddrPort: sums[ctrAddrPort],
		Flow:     sums[ctrFlow],

		FlowFragment: sums[ctrFlowFragment],

		KernelDst: sums[ctrKernelDst],

		Fast:         sums[ctrFast],
		FastNoTarget: sums[ctrFastNoTarget],
	}, nil
}
