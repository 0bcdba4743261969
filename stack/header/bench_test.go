package header

import (
	"strconv"
	"testing"
)

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{20, 64, 1500, 9000} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				sinkU64 += uint64(Checksum(buf, 0))
			}
		})
	}
}

// BenchmarkParseTCPFrame is the stack's input path for one segment:
// Ethernet, IPv4 (with header checksum), TCP, options and TCP checksum.
func BenchmarkParseTCPFrame(b *testing.B) {
	frame := mustHex(fxTCPHTTPGet)
	for b.Loop() {
		e, _ := ParseEthernet(frame)
		h, _ := ParseIPv4(e.Payload())
		s, _ := ParseTCP(h.Payload())
		var o TCPOptions
		sinkBool = ParseTCPOptions(s.Options(), &o) && s.ChecksumValid(h.Src(), h.Dst())
	}
}

// BenchmarkNATRewrite is a source NAT rewrite of a TCP segment: address and
// port, with incremental checksum updates.
func BenchmarkNATRewrite(b *testing.B) {
	frame := mustHex(fxTCPHTTPGet)
	h, _ := ParseIPv4(frame[EthernetLen:])
	s, _ := ParseTCP(h.Payload())
	addrs := [2][4]byte{{198, 18, 0, 1}, {198, 19, 0, 1}}
	ports := [2]uint16{32774, 40000}
	i := 0
	for b.Loop() {
		old, new := addrs[i&1], addrs[(i+1)&1]
		h.SetSrc4(new)
		h.SetChecksum(UpdateChecksum32(h.Checksum(), old, new))
		s.SetChecksum(UpdateChecksum32(s.Checksum(), old, new))
		s.SetSrcPort(ports[(i+1)&1])
		s.SetChecksum(UpdateChecksum16(s.Checksum(), ports[i&1], ports[(i+1)&1]))
		i++
	}
	if !s.ChecksumValid(h.Src(), h.Dst()) || h.ComputeChecksum() != h.Checksum() {
		b.Fatal("checksums do not verify after the rewrites")
	}
}
