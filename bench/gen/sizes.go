package gen

import (
	"fmt"
	"strconv"
	"strings"
)

// Sizes is the repeating pattern of frame sizes a shard sends: packet k of a shard has size
// Sizes[k % len(Sizes)]. Sizes are Ethernet frame lengths without the FCS (see MinFrame); a
// fixed pattern makes every run send the same frames.
type Sizes []int

// IMIXv4_1 is CSIT's IMIX_v4_1, 28×64, 16×570 and 4×1518 bytes counted with the FCS, that is
// 60, 566 and 1514 here, interleaved by smooth weighted round robin into a 48-frame pattern
// rather than sent in runs of one size: average 349.83 bytes here, 353.83
// with the FCS.
var IMIXv4_1 = imix([]int{60, 566, 1514}, []int{28, 16, 4})

// imix interleaves sizes by weight with smooth weighted round robin (each step every size
// gains its weight, the largest total is sent and loses the sum of the weights).
func imix(sizes, weights []int) Sizes {
	total := 0
	for _, w := range weights {
		total += w
	}
	cur := make([]int, len(sizes))
	out := make(Sizes, 0, total)
	for range total {
		best := 0
		for i := range cur {
			cur[i] += weights[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, sizes[best])
	}
	return out
}

// ParseSizes reads a frame size ("60"), a comma-separated list repeated in order
// ("60,566,1514"), or an IMIX by name ("imix_v4_1", "imix"). Sizes are without the FCS;
// a size written with an "fcs" suffix ("64fcs") counts it and loses 4 bytes here.
func ParseSizes(s string) (Sizes, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "imix_v4_1", "imix-v4-1", "imix":
		return append(Sizes(nil), IMIXv4_1...), nil
	case "":
		return Sizes{MinFrame}, nil
	}
	var out Sizes
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		fcs := strings.HasSuffix(f, "fcs")
		n, err := strconv.Atoi(strings.TrimSuffix(f, "fcs"))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("gen: frame size %q: want a number of bytes (without the FCS; 64fcs for RFC 2544's 64), a list like 60,566,1514 or imix_v4_1", f)
		}
		if fcs {
			n -= FCSLen
		}
		out = append(out, n)
	}
	return out, nil
}

// Check reports an error unless every size fits proto and an MTU of mtu (frame at most
// mtu+14 bytes).
func (z Sizes) Check(p Proto, mtu int) error {
	if len(z) == 0 {
		return fmt.Errorf("gen: no frame sizes")
	}
	for _, n := range z {
		if n < p.MinFrame() {
			return fmt.Errorf("gen: a %d-byte %s frame cannot carry the %d-byte payload header: %s frames start at %d bytes (without the FCS; %d with it)",
				n, p, PayloadLen, p, p.MinFrame(), p.MinFrame()+FCSLen)
		}
		if mtu > 0 && n > mtu+14 {
			return fmt.Errorf("gen: a %d-byte frame is over the MTU %d (at most %d bytes without the FCS): raise the MTU or send smaller frames", n, mtu, mtu+14)
		}
	}
	return nil
}

// Mean is the average frame size of the pattern (without the FCS).
func (z Sizes) Mean() float64 {
	if len(z) == 0 {
		return 0
	}
	s := 0
	for _, n := range z {
		s += n
	}
	return float64(s) / float64(len(z))
}

func (z Sizes) String() string {
	if len(z) == len(IMIXv4_1) {
		same := true
		for i := range z {
			same = same && z[i] == IMIXv4_1[i]
		}
		if same {
			return "imix_v4_1"
		}
	}
	var b strings.Builder
	for i, n := range z {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}
