package header

import "encoding/binary"

// TCP option kinds (RFC 9293, RFC 7323, RFC 2018).
const (
	TCPOptionEOL           = 0
	TCPOptionNOP           = 1
	TCPOptionMSS           = 2
	TCPOptionWScale        = 3
	TCPOptionSACKPermitted = 4
	TCPOptionSACK          = 5
	TCPOptionTimestamps    = 8
)

// TCPOptions are the TCP options netchan's stack understands. The Has
// fields (and NumSACK) say which were present.
type TCPOptions struct {
	MSS           uint16
	HasMSS        bool
	WScale        uint8 // as sent; RFC 7323 caps its use at 14
	HasWScale     bool
	SACKPermitted bool
	TSVal, TSEcr  uint32
	HasTS         bool
	SACK          [4][2]uint32 // left and right edge of each block
	NumSACK       int
}

// ParseTCPOptions parses the option bytes of a TCP header into o (reset
// first). It stops at an end-of-list option, skips NOPs and options of
// unknown kind, and returns false on malformed options: a length byte that
// is missing, below 2 or past the end, or a known option whose length is not
// its own (MSS 4, window scale 3, SACK-permitted 2, timestamps 10, SACK 2 +
// 8n with 1 ≤ n ≤ 4). It never panics. A repeated option overwrites the
// earlier one.
func ParseTCPOptions(opts []byte, o *TCPOptions) bool {
	*o = TCPOptions{}
	for i := 0; i < len(opts); {
		kind := opts[i]
		switch kind {
		case TCPOptionEOL:
			return true
		case TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return false
		}
		n := int(opts[i+1])
		if n < 2 || n > len(opts)-i {
			return false
		}
		body := opts[i+2 : i+n]
		switch kind {
		case TCPOptionMSS:
			if n != 4 {
				return false
			}
			o.MSS, o.HasMSS = binary.BigEndian.Uint16(body), true
		case TCPOptionWScale:
			if n != 3 {
				return false
			}
			o.WScale, o.HasWScale = body[0], true
		case TCPOptionSACKPermitted:
			if n != 2 {
				return false
			}
			o.SACKPermitted = true
		case TCPOptionTimestamps:
			if n != 10 {
				return false
			}
			o.TSVal, o.TSEcr, o.HasTS = binary.BigEndian.Uint32(body), binary.BigEndian.Uint32(body[4:]), true
		case TCPOptionSACK:
			if n < 10 || n > 2+8*len(o.SACK) || (n-2)%8 != 0 {
				return false
			}
			o.SACK, o.NumSACK = [4][2]uint32{}, (n-2)/8
			for j := range o.NumSACK {
				o.SACK[j] = [2]uint32{binary.BigEndian.Uint32(body[8*j:]), binary.BigEndian.Uint32(body[8*j+4:])}
			}
		}
		i += n
	}
	return true
}

// tcpOptionsLayout returns the encoded length of o and how many SACK blocks
// fit beside the other options in TCPMaxOptionsLen bytes.
func tcpOptionsLayout(o *TCPOptions) (n, sacks int) {
	if o.HasMSS {
		n += 4
	}
	if o.HasTS {
		n += 12 // SACK-permitted rides in the timestamps' padding
	} else if o.SACKPermitted {
		n += 4
	}
	if o.HasWScale {
		n += 4
	}
	sacks = min(max(o.NumSACK, 0), len(o.SACK))
	if sacks > 0 {
		sacks = min(sacks, (TCPMaxOptionsLen-n-4)/8)
		if sacks > 0 {
			n += 4 + 8*sacks
		}
	}
	return n, sacks
}

// TCPOptionsLen returns the number of bytes EncodeTCPOptions writes for o:
// a multiple of 4, at most TCPMaxOptionsLen.
func TCPOptionsLen(o *TCPOptions) int {
	n, _ := tcpOptionsLayout(o)
	return n
}

// EncodeTCPOptions writes o's options into b in the order and alignment
// Linux uses (MSS; SACK-permitted and timestamps, or either alone behind two
// NOPs; NOP and window scale; two NOPs and SACK blocks), so every option
// starts where Linux puts it and the length is a multiple of 4. SACK blocks
// that do not fit in TCPMaxOptionsLen bytes beside the other options are
// left out (beside timestamps alone, three fit). b must hold
// TCPOptionsLen(o) bytes. It returns the number of bytes written.
func EncodeTCPOptions(b []byte, o *TCPOptions) int {
	n, sacks := tcpOptionsLayout(o)
	b = b[:n]
	i := 0
	if o.HasMSS {
		b[i], b[i+1] = TCPOptionMSS, 4
		binary.BigEndian.PutUint16(b[i+2:], o.MSS)
		i += 4
	}
	if o.HasTS {
		if o.SACKPermitted {
			b[i], b[i+1] = TCPOptionSACKPermitted, 2
		} else {
			b[i], b[i+1] = TCPOptionNOP, TCPOptionNOP
		}
		b[i+2], b[i+3] = TCPOptionTimestamps, 10
		binary.BigEndian.PutUint32(b[i+4:], o.TSVal)
		binary.BigEndian.PutUint32(b[i+8:], o.TSEcr)
		i += 12
	} else if o.SACKPermitted {
		b[i], b[i+1], b[i+2], b[i+3] = TCPOptionNOP, TCPOptionNOP, TCPOptionSACKPermitted, 2
		i += 4
	}
	if o.HasWScale {
		b[i], b[i+1], b[i+2], b[i+3] = TCPOptionNOP, TCPOptionWScale, 3, o.WScale
		i += 4
	}
	if sacks > 0 {
		b[i], b[i+1], b[i+2], b[i+3] = TCPOptionNOP, TCPOptionNOP, TCPOptionSACK, uint8(2+8*sacks)
		i += 4
		for j := range sacks {
			binary.BigEndian.PutUint32(b[i:], o.SACK[j][0])
			binary.BigEndian.PutUint32(b[i+4:], o.SACK[j][1])
			i += 8
		}
	}
	return i
}
