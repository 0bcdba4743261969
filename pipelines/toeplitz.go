package pipelines

// The Toeplitz hash is the receive-side-scaling (RSS) hash of Microsoft's NDIS specification,
// implemented by most NICs (Intel, Mellanox/NVIDIA, Broadcom, virtio-net with RSS). The NIC
// hashes a fixed selection of header fields, then picks the receive queue through its
// indirection table. netchan computes the same hash in software to know which queue (and so
// which shard) a flow arrives on, and to choose source ports whose returning packets land on
// the shard that opened the connection.

import (
	"errors"
	"fmt"
)

// MicrosoftKey is the 40-byte RSS key of Microsoft's RSS verification suite ("Verifying the RSS
// Hash Calculation"), also the default key of many NIC drivers and of DPDK.
var MicrosoftKey = [40]byte{
	0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2,
	0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
	0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4,
	0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
	0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
}

// SymmetricKey is a 40-byte key that repeats the 16-bit pattern 0x6d5a (Woo and Park, "Scalable
// TCP Session Monitoring with Symmetric Receive-side Scaling", 2012). Because the key has a
// period of 16 bits, swapping source and destination addresses (32 bits apart) and ports
// (16 bits apart) does not change the hash, so both directions of a flow land on one queue
// (set it with ethtool -X DEV hkey 6d:5a:...). The price: the IPv4-with-ports hash then depends
// only on src XOR dst and sport XOR dport, so it spreads flows less evenly than a random key.
var SymmetricKey = [40]byte{
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
}

const (
	// toeplitzMinKey is the shortest key NewToeplitz accepts: enough for the 12-byte IPv4
	// address-and-ports input.
	toeplitzMinKey = 16
	// toeplitzMaxKey bounds the tables (1 KiB per input byte); NICs use 40 or 52 bytes.
	toeplitzMaxKey = 256
)

// ErrToeplitzKey is matched (errors.Is) by NewToeplitz's error for a key of unusable length.
var ErrToeplitzKey = errors.New("pipelines: bad Toeplitz key length")

// Toeplitz computes the RSS Toeplitz hash for one key. The hash of an input is the XOR, over
// every set bit of the input (most significant bit of input[0] first), of the 32 key bits that
// start at that bit's position. Toeplitz precomputes, for each input byte offset and each byte
// value, the XOR of those key windows, so Hash costs one table load per input byte and never
// allocates. The tables are read-only after NewToeplitz, so one Toeplitz may be shared by any
// number of goroutines. The zero value is not usable.
type Toeplitz struct {
	// tab[i][b] is the hash contribution of byte value b at input offset i.
	tab [][256]uint32
}

// NewToeplitz precomputes the tables for key. The key must be at least 4 bytes longer than the
// longest input to be hashed, and at least 16 bytes (IPv4 addresses and ports) and at most 256
// bytes long. A 40-byte key (the usual size) hashes inputs of up to 36 bytes, which covers IPv6
// addresses and ports. The key is copied.
func NewToeplitz(key []byte) (*Toeplitz, error) {
	if len(key) < toeplitzMinKey || len(key) > toeplitzMaxKey {
		return nil, fmt.Errorf("%w: %d bytes; a Toeplitz key needs %d to %d bytes, 4 more than the longest input "+
			"(40 is usual; try stage.MicrosoftKey or the key ethtool -x shows)", ErrToeplitzKey, len(key), toeplitzMinKey, toeplitzMaxKey)
	}
	t := &Toeplitz{tab: make([][256]uint32, len(key)-4)}
	for i := range t.tab {
		// 40 key bits from byte i on: bit k of the input byte (counting from its MSB) selects
		// the 32-bit window that starts k bits in.
		v := uint64(key[i])<<32 | uint64(key[i+1])<<24 | uint64(key[i+2])<<16 | uint64(key[i+3])<<8 | uint64(key[i+4])
		var win [8]uint32 // win[k]: the window for the input bit of value 1<<k
		for k := range 8 {
			win[k] = uint32(v >> (k + 1))
		}
		row := &t.tab[i]
		for b := 1; b < 256; b++ {
			low := b & -b // lowest set bit
			row[b] = row[b^low] ^ win[toeplitzLog2(low)]
		}
	}
	return t, nil
}

func toeplitzLog2(x int) int {
	n := 0
	for x > 1 {
		x >>= 1
		n++
	}
	return n
}

// MaxInput returns the length of the longest input t can hash: the key length minus 4.
func (t *Toeplitz) MaxInput() int { return len(t.tab) }

// Hash returns the Toeplitz hash of input. It panics if input is longer than MaxInput (a
// programming error: RSS inputs have fixed sizes).
func (t *Toeplitz) Hash(input []byte) uint32 {
	if len(input) > len(t.tab) {
		panic("pipelines: Toeplitz input longer than the key allows (MaxInput)")
	}
	tab := t.tab[:len(input)]
	var h uint32
	for i, b := range input {
		h ^= tab[i][b]
	}
	return h
}

// HashIPv4 returns the RSS hash of type "IPv4" (NDIS_HASH_IPV4): the input is the source
// address followed by the destination address, as they appear in the IPv4 header.
func (t *Toeplitz) HashIPv4(src, dst [4]byte) uint32 {
	tab := (*[8][256]uint32)(t.tab) // NewToeplitz guarantees at least 12 rows
	return tab[0][src[0]] ^ tab[1][src[1]] ^ tab[2][src[2]] ^ tab[3][src[3]] ^
		tab[4][dst[0]] ^ tab[5][dst[1]] ^ tab[6][dst[2]] ^ tab[7][dst[3]]
}

// HashIPv4Ports returns the RSS hash of type "TCP/IPv4" (NDIS_HASH_TCP_IPV4; NICs use the same
// input for UDP when configured with ethtool -N DEV rx-flow-hash udp4 sdfn): source address,
// destination address, source port, destination port, each in network byte order, as the packet
// carries them.
func (t *Toeplitz) HashIPv4Ports(src, dst [4]byte, sport, dport uint16) uint32 {
	tab := (*[12][256]uint32)(t.tab)
	return tab[0][src[0]] ^ tab[1][src[1]] ^ tab[2][src[2]] ^ tab[3][src[3]] ^
		tab[4][dst[0]] ^ tab[5][dst[1]] ^ tab[6][dst[2]] ^ tab[7][dst[3]] ^
		tab[8][byte(sport>>8)] ^ tab[9][byte(sport)] ^
		tab[10][byte(dport>>8)] ^ tab[11][byte(dport)]
}

// RETA is an RSS indirection table: a packet with hash h goes to receive queue
// r[h % len(r)]. (NICs index with the low bits of the hash; for the power-of-two sizes they use,
// that is the same thing.) Read the device's table with ethtool -x DEV.
type RETA []uint16

// DefaultRETA returns the table Linux drivers install by default
// (ethtool_rxfh_indir_default): queues 0..queues-1 round-robin over 128 entries, or over
// queues entries if there are more than 128 queues. Devices with a different table size (see
// ethtool -x) need their own RETA. queues < 1 gives an empty table, which maps every hash to
// queue 0 (a device without RSS); queues > 65536 panics.
func DefaultRETA(queues int) RETA {
	if queues < 1 {
		return nil
	}
	if queues > 1<<16 {
		panic("pipelines: DefaultRETA: more than 65536 queues")
	}
	n := max(128, queues)
	r := make(RETA, n)
	for i := range r {
		r[i] = uint16(i % queues)
	}
	return r
}

// Queue returns the receive queue for hash: r[hash % len(r)], or 0 for an empty table.
func (r RETA) Queue(hash uint32) int {
	n := uint32(len(r))
	switch {
	case n == 0:
		return 0
	case n&(n-1) == 0:
		return int(r[hash&(n-1)])
	default:
		return int(r[hash%n])
	}
}

// has reports whether some hash maps to queue.
func (r RETA) has(queue int) bool {
	if len(r) == 0 {
		return queue == 0
	}
	for _, q := range r {
		if int(q) == queue {
			return true
		}
	}
	return false
}

// PickSourcePort chooses a local (source) port for a connection from local to remote:remotePort
// so that the packets coming back land on receive queue queue of the local NIC.
//
// The hash is the one the local NIC computes on the RETURN direction, i.e. on packets from the
// remote host to us:
//
//	HashIPv4Ports(src = remote, dst = local, sport = remotePort, dport = chosen port)
//
// and the queue is reta.Queue of that hash. The search tries ports start, start+1, ..., hi,
// then lo, ..., start-1, and returns the first that fits; a start outside [lo, hi] is folded into
// the range (lo + start % (hi-lo+1)), so callers can spread connections by passing a rotating
// or random start. It returns false if lo > hi or no port in [lo, hi] maps to queue (always so
// if reta never names queue). Ports already in use are the caller's business: call again with
// start just past the port returned. PickSourcePort does not allocate.
func (t *Toeplitz) PickSourcePort(local, remote [4]byte, remotePort, lo, hi uint16, reta RETA, queue int, start uint16) (uint16, bool) {
	if lo > hi || !reta.has(queue) {
		return 0, false
	}
	tab := (*[12][256]uint32)(t.tab)
	base := tab[0][remote[0]] ^ tab[1][remote[1]] ^ tab[2][remote[2]] ^ tab[3][remote[3]] ^
		tab[4][local[0]] ^ tab[5][local[1]] ^ tab[6][local[2]] ^ tab[7][local[3]] ^
		tab[8][byte(remotePort>>8)] ^ tab[9][byte(remotePort)]
	n := uint32(hi) - uint32(lo) + 1 // 1..65536
	off := uint32(start) % n
	if start >= lo && start <= hi {
		off = uint32(start - lo)
	}
	for i := range n {
		j := off + i
		if j >= n {
			j -= n
		}
		p := lo + uint16(j)
		if reta.Queue(base^tab[10][byte(p>>8)]^tab[11][byte(p)]) == queue {
			return p, true
		}
	}
	return 0, false
}
