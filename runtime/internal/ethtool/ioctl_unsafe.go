package ethtool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	ethSSFeatures     = 4  // ETH_SS_FEATURES: the string set of netdev feature names
	ethSSRSSHashFuncs = 5  // ETH_SS_RSS_HASH_FUNCS: "toeplitz", "xor", "crc32" (bit i = string i)
	gstringLen        = 32 // ETH_GSTRING_LEN
	maxFeatures       = 1024
)

// ifreq is struct ifreq with its union used as ifr_data (40 bytes on 64-bit).
type ifreq struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// sock is an AF_INET datagram socket, the handle SIOCETHTOOL goes through. It belongs to the
// namespace of the thread that opened it, which in a process that never calls setns is the
// process's.
type sock struct{ fd int }

func open() (sock, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return sock{}, fmt.Errorf("ethtool: socket: %w", err)
	}
	return sock{fd}, nil
}

func (s sock) close() { unix.Close(s.fd) }

// ioctl runs SIOCETHTOOL on iface with buf as the command (its first word is the ETHTOOL_*
// command). buf is a heap slice the kernel reads and writes in place.
func (s sock) ioctl(iface string, buf []byte) error {
	if len(iface) >= unix.IFNAMSIZ || len(iface) == 0 {
		return fmt.Errorf("interface name %q: %w", iface, unix.EINVAL)
	}
	var ifr ifreq
	copy(ifr.name[:], iface)
	ifr.data = unsafe.Pointer(&buf[0])
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(s.fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(buf)
	if errno != 0 {
		return errno
	}
	return nil
}

var ne = binary.NativeEndian

// featureNames: the kernel's feature names (index = bit of netdev_features_t).
func (s sock) featureNames(iface string) ([]string, error) {
	return s.stringSet(iface, ethSSFeatures, maxFeatures)
}

// stringSet: ETHTOOL_GSSET_INFO for the number of strings in set (an ETH_SS_* value),
// ETHTOOL_GSTRINGS for the strings. A set the device does not have gives none and no error.
func (s sock) stringSet(iface string, set uint32, limit int) ([]string, error) {
	// struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }
	info := make([]byte, 24)
	ne.PutUint32(info[0:], unix.ETHTOOL_GSSET_INFO)
	ne.PutUint64(info[8:], 1<<set)
	if err := s.ioctl(iface, info); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %w", err)
	}
	if ne.Uint64(info[8:])&(1<<set) == 0 {
		return nil, nil
	}
	n := int(ne.Uint32(info[16:]))
	if n > limit {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %d strings in set %d, more than the %d expected", n, set, limit)
	}
	// struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
	gs := make([]byte, 12+n*gstringLen)
	ne.PutUint32(gs[0:], unix.ETHTOOL_GSTRINGS)
	ne.PutUint32(gs[4:], set)
	ne.PutUint32(gs[8:], uint32(n))
	if err := s.ioctl(iface, gs); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSTRINGS: %w", err)
	}
	return decodeStrings(gs, n), nil
}

// decodeStrings reads the NUL-padded ETH_GSTRING_LEN names of an ETHTOOL_GSTRINGS reply that
// asked for n of them (the kernel may give fewer in len).
func decodeStrings(gs []byte, n int) []string {
	if got := int(ne.Uint32(gs[8:])); got < n {
		n = got
	}
	names := make([]string, n)
	for i := range names {
		b := gs[12+i*gstringLen : 12+(i+1)*gstringLen]
		if j := bytes.IndexByte(b, 0); j >= 0 {
			b = b[:j]
		}
		names[i] = string(b)
	}
	return names
}

// getFeatures: ETHTOOL_GFEATURES with room for words blocks.
func (s sock) getFeatures(iface string, words int) ([]getBlock, error) {
	// struct ethtool_gfeatures { u32 cmd; u32 size; struct ethtool_get_features_block features[]; }
	buf := make([]byte, 8+16*words)
	ne.PutUint32(buf[0:], unix.ETHTOOL_GFEATURES)
	ne.PutUint32(buf[4:], uint32(words))
	if err := s.ioctl(iface, buf); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GFEATURES: %w", err)
	}
	blocks := make([]getBlock, words)
	for i := range blocks {
		b := buf[8+16*i:]
		blocks[i] = getBlock{ne.Uint32(b[0:]), ne.Uint32(b[4:]), ne.Uint32(b[8:]), ne.Uint32(b[12:])}
	}
	return blocks, nil
}

// setFeatures: ETHTOOL_SFEATURES. The kernel wants exactly its own number of blocks, which is
// the number GFEATURES needed for the names GSTRINGS gave. A positive return (some bits not
// changeable, or only wished for) is not an error here: Set reads the result back.
func (s sock) setFeatures(iface string, blocks []setBlock) error {
	// struct ethtool_sfeatures { u32 cmd; u32 size; struct ethtool_set_features_block features[]; }
	buf := make([]byte, 8+8*len(blocks))
	ne.PutUint32(buf[0:], unix.ETHTOOL_SFEATURES)
	ne.PutUint32(buf[4:], uint32(len(blocks)))
	for i, b := range blocks {
		ne.PutUint32(buf[8+8*i:], b.valid)
		ne.PutUint32(buf[12+8*i:], b.requested)
	}
	if err := s.ioctl(iface, buf); err != nil {
		return fmt.Errorf("ETHTOOL_SFEATURES: %w", err)
	}
	return nil
}
