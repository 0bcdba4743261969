package gen

import (
	"fmt"
	"net/netip"

	"github.com/netchan/netchan/pipelines"
)

// Flows lists n flows from src to dst:dstPort that differ in their source port, the first at
// srcPort and the next ones counting up, and, with addrs > 1, in their source address too:
// flow i comes from src + i%addrs. Flow i's source port is srcPort + i/addrs, so every
// (address, port) pair is distinct.
func Flows(n int, src, dst netip.Addr, srcPort, dstPort uint16, addrs int) ([]Flow, error) {
	if n < 1 {
		return nil, fmt.Errorf("gen: %d flows: ask for at least 1", n)
	}
	addrs = max(addrs, 1)
	if !src.Is4() || !dst.Is4() {
		return nil, fmt.Errorf("gen: addresses %v and %v: the generator speaks IPv4 only", src, dst)
	}
	if int(srcPort)+(n-1)/addrs > 65535 {
		return nil, fmt.Errorf("gen: %d flows from source port %d over %d addresses run past port 65535: start lower", n, srcPort, addrs)
	}
	out := make([]Flow, n)
	for i := range out {
		out[i] = Flow{Src: addAddr(src, i%addrs), Dst: dst, SrcPort: srcPort + uint16(i/addrs), DstPort: dstPort}
	}
	return out, nil
}

func addAddr(a netip.Addr, k int) netip.Addr {
	for range k {
		a = a.Next()
	}
	return a
}

// RSSFlows picks n flows from src to dst:dstPort (source ports from srcPort up, skipping
// ports) whose Toeplitz hash with key (nil: pipelines.MicrosoftKey, the usual driver
// default) sends them, through the indirection table reta, to the receiver's queues in
// turn: flow i lands on queue i % queues, so every queue gets n/queues flows (±1). The hash
// is the one a NIC computes for TCP/IPv4 (source and destination address, source and
// destination port), which NICs use for UDP too when told to (ethtool -N DEV rx-flow-hash
// udp4 sdfn); a receiver that hashes UDP over the addresses only, and ICMP always, puts all
// these flows on one queue: vary the source address (Flows with addrs > 1) instead.
// reta is the receiver's table (ethtool -x DEV); pipelines.DefaultRETA(queues) is what Linux
// drivers install. veth has no RSS: a frame arrives on the queue it was sent on.
func RSSFlows(n int, src, dst netip.Addr, srcPort, dstPort uint16, key []byte, reta pipelines.RETA, queues int) ([]Flow, error) {
	if n < 1 || queues < 1 {
		return nil, fmt.Errorf("gen: %d flows over %d queues: ask for at least one of each", n, queues)
	}
	if !src.Is4() || !dst.Is4() {
		return nil, fmt.Errorf("gen: addresses %v and %v: the generator speaks IPv4 only", src, dst)
	}
	t, reta, err := receiverRSS(key, reta, queues)
	if err != nil {
		return nil, err
	}
	s, d := src.As4(), dst.As4()
	out := make([]Flow, 0, n)
	// A port hashes to one queue, so a cursor per queue never repeats a port.
	next := make([]uint32, queues)
	for q := range next {
		next[q] = uint32(srcPort)
	}
	for len(out) < n {
		want := len(out) % queues
		p := next[want]
		for ; p <= 65535 && reta.Queue(t.HashIPv4Ports(s, d, uint16(p), dstPort)) != want; p++ {
		}
		if p > 65535 {
			return nil, fmt.Errorf("gen: no more source ports from %d up send %v->%v:%d to queue %d of %d (indirection table %v...): ask for fewer flows or check the table",
				srcPort, src, dst, dstPort, want, queues, reta[:min(len(reta), 8)])
		}
		next[want] = p + 1
		out = append(out, Flow{Src: src, Dst: dst, SrcPort: uint16(p), DstPort: dstPort})
	}
	return out, nil
}

// RSSQueues counts, for each of queues receive queues, how many flows a receiver with key
// and reta puts there (the TCP/IPv4 hash): a check of RSSFlows, or of any flow list.
func RSSQueues(flows []Flow, key []byte, reta pipelines.RETA, queues int) ([]int, error) {
	t, reta, err := receiverRSS(key, reta, queues)
	if err != nil {
		return nil, err
	}
	out := make([]int, queues)
	for _, f := range flows {
		q := reta.Queue(t.HashIPv4Ports(f.Src.As4(), f.Dst.As4(), f.SrcPort, f.DstPort))
		if q < queues {
			out[q]++
		}
	}
	return out, nil
}

// receiverRSS is the hash and indirection table of a receiver with key and reta over queues
// queues, the Microsoft key and the default table standing for nil ones.
func receiverRSS(key []byte, reta pipelines.RETA, queues int) (*pipelines.Toeplitz, pipelines.RETA, error) {
	if key == nil {
		k := pipelines.MicrosoftKey
		key = k[:]
	}
	t, err := pipelines.NewToeplitz(key)
	if err != nil {
		return nil, nil, err
	}
	if reta == nil {
		reta = pipelines.DefaultRETA(queues)
	}
	return t, reta, nil
}
